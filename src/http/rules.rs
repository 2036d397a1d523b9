//! `GET /rules` (SPEC 4) and the console's rule files, `GET`/`PUT`/`DELETE
//! /rules/{file}` (SPEC 9).

use http::{Method, StatusCode};

use crate::app::{AppError, Engine};
use crate::http::error::json_reply;
use crate::http::{BodyKind, Handled, HttpSettings, Request};

pub fn status(engine: &Engine) -> warp::reply::Response {
    json_reply(StatusCode::OK, &engine.rule_status())
}

pub async fn file(engine: &Engine, settings: &HttpSettings, request: Request) -> Handled {
    let reading = request.method == Method::GET || request.method == Method::HEAD;
    if !reading {
        // Refused before anything else is looked at when edits are off.
        engine.check_rule_edits_allowed()?;
    }
    let name = percent_decoded(request.param.as_deref().unwrap_or(""))?;
    if reading {
        let file = engine.read_rule_file(name).await?;
        return Ok(json_reply(StatusCode::OK, &file));
    }
    let text = if request.method == Method::PUT {
        crate::rule_files::check_name(&name).map_err(AppError::from)?;
        let (body, _) = request.body(settings.max_body, BodyKind::Any).await?;
        Some(
            String::from_utf8(body.to_vec())
                .map_err(|_| AppError::bad_request("a rule file must be UTF-8 text"))?,
        )
    } else {
        None
    };
    let change = engine.change_rule_file(name, text).await?;
    Ok(json_reply(StatusCode::OK, &change))
}

/// The path segment, percent-decoded (the router hands it over as sent).
fn percent_decoded(segment: &str) -> Result<String, AppError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| AppError::bad_request("invalid percent-encoding in the file name"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| AppError::bad_request("the file name is not UTF-8"))
}

/// `POST /lint` (SPEC 13): the given rule files (or the loaded ones) against
/// the stored contacts; the console shows the findings beside its editor.
pub async fn lint(engine: &Engine, settings: &HttpSettings, request: Request) -> Handled {
    let (body, _) = request.body(settings.max_body, BodyKind::Json).await?;
    let lint_request: crate::app::lint::LintRequest = if body.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        let text = std::str::from_utf8(&body).map_err(|_| AppError::bad_request("the body is not UTF-8"))?;
        crate::payload::parse_json(text)
            .map_err(|e| AppError::bad_request(format!("invalid lint request: {e}")))?
    };
    let report = engine.lint(lint_request).await?;
    Ok(json_reply(StatusCode::OK, &report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_percent_decoded() {
        assert_eq!(percent_decoded("10-role.rhai").unwrap(), "10-role.rhai");
        assert_eq!(percent_decoded("my%20rule.rhai").unwrap(), "my rule.rhai");
        assert_eq!(percent_decoded("..%2Fx.rhai").unwrap(), "../x.rhai");
        assert!(percent_decoded("bad%zz").is_err());
        assert!(percent_decoded("%ff.rhai").is_err());
    }
}
