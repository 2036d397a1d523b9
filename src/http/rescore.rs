//! `POST /rescore`, `GET /rescore`, `GET`/`DELETE /rescore/{id}` (SPEC 12).

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::app::{AppError, Engine, rescore};
use crate::http::error::json_reply;
use crate::http::{BodyKind, Handled, HttpSettings, Request};

/// How many jobs `GET /rescore` lists.
const LISTED: usize = 10;

/// `POST /rescore`'s body: all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    since: Option<String>,
}

/// `POST /rescore` starts a job (`202` with its id, `409` with the running
/// one's); `GET /rescore` lists the newest jobs.
pub async fn jobs(engine: &Engine, settings: &HttpSettings, request: Request) -> Handled {
    if request.method == Method::GET {
        let jobs = rescore::recent(engine.store().as_ref(), LISTED).await?;
        return Ok(json_reply(StatusCode::OK, &json!({ "jobs": jobs })));
    }
    let (body, _) = request.body(settings.max_body, BodyKind::Json).await?;
    let start: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        let text = std::str::from_utf8(&body).map_err(|_| AppError::bad_request("the body is not UTF-8"))?;
        crate::payload::parse_json(text)
            .map_err(|e| AppError::bad_request(format!("invalid rescore request: {e}")))?
    };
    let job = engine.start_rescore(start.since.as_deref()).await?;
    Ok(json_reply(StatusCode::ACCEPTED, &job))
}

/// `GET /rescore/{id}`: the job's progress; `DELETE` cancels it.
pub async fn job(engine: &Engine, request: Request) -> Handled {
    let id = request.param.clone().unwrap_or_default();
    let store = engine.store().as_ref();
    let job = match request.method {
        Method::DELETE => rescore::cancel(store, &id).await?,
        _ => rescore::status(store, &id).await?,
    };
    Ok(json_reply(StatusCode::OK, &job))
}
