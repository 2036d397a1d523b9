//! Request bodies, after SPEC 4's checks: a JSON content type (or none), no
//! content encoding, at most the size limit (refused from `Content-Length`
//! before reading), received within [`BODY_TIMEOUT`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderMap, StatusCode};

use crate::http::error::HttpError;

/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A request body as it arrives.
pub type BodyStream = BoxStream<'static, Result<Bytes, warp::Error>>;

/// What a body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON: a JSON content type or none (`415` otherwise).
    Json,
    /// Any content type (a rule file from the console).
    Any,
}

/// Reads a request body: uncompressed (`415`), at most `max` bytes (`413`,
/// refused from `Content-Length` before reading), received within
/// [`BODY_TIMEOUT`] (`408`), and for [`BodyKind::Json`] with a JSON content
/// type or none.
pub async fn read(
    headers: &HeaderMap,
    stream: BodyStream,
    max: usize,
    kind: BodyKind,
) -> Result<Bytes, HttpError> {
    check_content_headers(headers, max, kind)?;
    match tokio::time::timeout(BODY_TIMEOUT, read_limited(stream, max)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body was not received in time",
        )),
    }
}

fn check_content_headers(headers: &HeaderMap, max: usize, kind: BodyKind) -> Result<(), HttpError> {
    if kind == BodyKind::Json
        && let Some(value) = headers.get(http::header::CONTENT_TYPE)
    {
        let text = value.to_str().unwrap_or("");
        if !is_json_content_type(text) {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type {text:?} is not JSON; send application/json"),
            ));
        }
    }
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let text = value.to_str().unwrap_or("?");
        if text
            .split(',')
            .any(|e| !e.trim().eq_ignore_ascii_case("identity"))
        {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content encoding {text:?} is not accepted; send the body uncompressed"),
            ));
        }
    }
    if let Some(length) = headers.get(http::header::CONTENT_LENGTH) {
        match length.to_str().ok().and_then(|l| l.trim().parse::<u64>().ok()) {
            Some(n) if n > max as u64 => return Err(too_large(max)),
            Some(_) => {}
            None => return Err(HttpError::new(StatusCode::BAD_REQUEST, "invalid Content-Length")),
        }
    }
    Ok(())
}

/// `application/json` and `application/*+json`, with or without parameters.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn too_large(max: usize) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the limit of {max} bytes (--max-body)"),
    )
}

async fn read_limited(mut stream: BodyStream, max: usize) -> Result<Bytes, HttpError> {
    // A body in one chunk (the common case) is handed on without a copy.
    let mut first: Option<Bytes> = None;
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")))?;
        let so_far = first.as_ref().map_or(0, Bytes::len) + body.len();
        if so_far + chunk.len() > max {
            return Err(too_large(max));
        }
        match first.take() {
            None if body.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    body.extend_from_slice(&earlier);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| body.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/cloudevents+json",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "multipart/form-data",
            "",
        ] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }
}
