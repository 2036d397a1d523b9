//! Every refusal as a status and a JSON `{"error": "…"}` body, mapped from
//! the application's [`AppError`] in one place.

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::json;
use warp::reply::{Reply, Response};

use crate::app::AppError;

/// A refusal with its status.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds).
    pub retry_after: Option<Duration>,
    /// Extra fields of the body (the compile errors of a `422`).
    pub details: Option<serde_json::Value>,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }
}

impl From<AppError> for HttpError {
    fn from(e: AppError) -> Self {
        let status = match &e {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = e.to_string();
        match e {
            AppError::Busy { retry_after, .. } => Self {
                retry_after: Some(retry_after),
                ..Self::new(status, message)
            },
            AppError::Conflict { id, .. } => Self {
                details: Some(json!({ "id": id })),
                ..Self::new(status, message)
            },
            AppError::Unprocessable { errors, .. } => Self {
                details: Some(json!({ "errors": errors })),
                ..Self::new(status, message)
            },
            _ => Self::new(status, message),
        }
    }
}

impl HttpError {
    pub fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(object)) = (self.details, body.as_object_mut()) {
            object.extend(extra);
        }
        let mut reply = json_reply(self.status, &body);
        let headers = reply.headers_mut();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(http::header::RETRY_AFTER, seconds.into());
        }
        // RFC 9110: a `401` says how to authenticate; every token this
        // server takes can be sent as a Bearer token.
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"leadscore\""),
            );
        }
        reply
    }
}

pub fn json_reply(status: StatusCode, body: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}
