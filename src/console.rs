//! The web console of SPEC 9: its embedded assets at `/`, and the endpoints
//! only the console needs (`GET /console/config`, `GET`/`PUT`/`DELETE
//! /rules/{file}`). The assets are built from `console/` (Vite) into
//! `console/dist/` and committed, so building the binary needs no Node.js.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::http::{App, BodyKind, json_reply, read_body, reject};
use crate::rule_files::{self, RuleFileError};

const INDEX_HTML: &str = include_str!("../console/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../console/dist/assets/app.js");
const APP_CSS: &[u8] = include_bytes!("../console/dist/assets/app.css");

/// Scripts only from this origin (no inline or remote script at all); the
/// only network access is this engine's own API.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's routes. `admin` passes only requests with the admin token
/// (when one is configured).
pub fn routes(app: Arc<App>, admin: BoxedFilter<(Arc<App>,)>) -> BoxedFilter<(Response,)> {
    let index = warp::path::end()
        .and(crate::http::get_or_head())
        .map(|| asset(INDEX_HTML.as_bytes(), "text/html; charset=utf-8", "no-cache"));
    let js = warp::path!("assets" / "app.js")
        .and(crate::http::get_or_head())
        .map(|| asset(APP_JS, "text/javascript; charset=utf-8", "no-cache"));
    let css = warp::path!("assets" / "app.css")
        .and(crate::http::get_or_head())
        .map(|| asset(APP_CSS, "text/css; charset=utf-8", "no-cache"));
    let config = warp::path!("console" / "config")
        .and(crate::http::get_or_head())
        .map(move || {
            json_reply(
                StatusCode::OK,
                &json!({
                    "admin_token_required": app.admin_token.is_some(),
                    "allow_rule_edits": app.allow_rule_edits,
                }),
            )
        });
    let read = warp::path!("rules" / String)
        .and(crate::http::get_or_head())
        .and(admin.clone())
        .and_then(handle_read);
    let edit = admin.and_then(|app: Arc<App>| async move {
        if app.allow_rule_edits {
            Ok(app)
        } else {
            Err(reject(
                StatusCode::FORBIDDEN,
                "rule files cannot be changed through the API: start leadscore with --allow-rule-edits",
            ))
        }
    });
    let save = warp::path!("rules" / String)
        .and(warp::put())
        .and(edit.clone())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(
            |file: String, app: Arc<App>, headers: HeaderMap, body| async move {
                let name = file_name(&file)?;
                rule_files::check_name(&name).map_err(to_rejection)?;
                let body = read_body(&headers, body, app.max_body, BodyKind::Any).await?;
                let text = String::from_utf8(body.to_vec())
                    .map_err(|_| reject(StatusCode::BAD_REQUEST, "a rule file must be UTF-8 text"))?;
                handle_change(app, name, Some(text)).await
            },
        );
    let delete = warp::path!("rules" / String)
        .and(warp::delete())
        .and(edit)
        .and_then(|file: String, app: Arc<App>| async move {
            let name = file_name(&file)?;
            handle_change(app, name, None).await
        });
    index
        .or(js)
        .unify()
        .or(css)
        .unify()
        .or(config)
        .unify()
        .or(read)
        .unify()
        .or(save)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

fn asset(body: &'static [u8], content_type: &'static str, cache: &'static str) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The path segment, percent-decoded (warp hands it over as sent).
fn file_name(segment: &str) -> Result<String, Rejection> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    reject(
                        StatusCode::BAD_REQUEST,
                        "invalid percent-encoding in the file name",
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| reject(StatusCode::BAD_REQUEST, "the file name is not UTF-8"))
}

fn to_rejection(e: RuleFileError) -> Rejection {
    let status = match &e {
        RuleFileError::BadName(_) => StatusCode::BAD_REQUEST,
        RuleFileError::NotFound(_) => StatusCode::NOT_FOUND,
        RuleFileError::Compile(_) => StatusCode::UNPROCESSABLE_ENTITY,
        RuleFileError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "rule file request failed");
    }
    reject(status, e.to_string())
}

async fn handle_read(file: String, app: Arc<App>) -> Result<Response, Rejection> {
    let name = file_name(&file)?;
    let dir = app.rules.dir().to_path_buf();
    let lookup = name.clone();
    let content = tokio::task::spawn_blocking(move || rule_files::read(&dir, &lookup))
        .await
        .map_err(|e| reject(StatusCode::INTERNAL_SERVER_ERROR, format!("reading failed: {e}")))?
        .map_err(to_rejection)?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({"file": name, "content": content}),
    ))
}

/// Saves (`Some(text)`) or deletes (`None`) a file, then reloads the live
/// rules, so the change is in force when the answer is sent.
async fn handle_change(app: Arc<App>, name: String, text: Option<String>) -> Result<Response, Rejection> {
    let live = app.rules.clone();
    let file = name.clone();
    let deleting = text.is_none();
    let outcome = tokio::task::spawn_blocking(move || {
        let dir = live.dir().to_path_buf();
        let limits = live.limits().clone();
        match &text {
            Some(text) => rule_files::save(&dir, &file, text, &limits),
            None => rule_files::delete(&dir, &file, &limits),
        }?;
        // The watcher would reload too; doing it here makes the change live
        // before the answer. A failure here means the folder changed under
        // us meanwhile: the previous set stays, as with any broken change.
        if let Err(errors) = live.reload() {
            tracing::warn!(file = %file, errors = errors.len(), "rule folder did not reload after a console change");
        }
        Ok::<_, RuleFileError>(())
    })
    .await
    .map_err(|e| reject(StatusCode::INTERNAL_SERVER_ERROR, format!("the change failed: {e}")))?;
    match outcome {
        Ok(()) => {
            let version = app.rules.current().version().to_owned();
            tracing::info!(file = %name, deleted = deleting, rules_version = %version, "rule file changed through the API");
            let body = if deleting {
                json!({"file": name, "deleted": true, "rules_version": version})
            } else {
                json!({"file": name, "rules_version": version})
            };
            Ok(json_reply(StatusCode::OK, &body))
        }
        Err(RuleFileError::Compile(errors)) => {
            let message = RuleFileError::Compile(errors.clone()).to_string();
            Ok(json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"error": message, "errors": errors}),
            ))
        }
        Err(e) => Err(to_rejection(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_percent_decoded() {
        assert_eq!(file_name("10-role.rhai").unwrap(), "10-role.rhai");
        assert_eq!(file_name("my%20rule.rhai").unwrap(), "my rule.rhai");
        assert_eq!(file_name("..%2Fx.rhai").unwrap(), "../x.rhai");
        assert!(file_name("bad%zz").is_err());
        assert!(file_name("%ff.rhai").is_err());
    }
}
