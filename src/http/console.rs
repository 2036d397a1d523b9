//! The web console of SPEC 9: its embedded assets at `/` and the settings
//! it reads (`GET /console/config`). The assets are built from `console/`
//! (Vite) into `console/dist/` and committed, so building the binary needs
//! no Node.js.

use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use warp::reply::Response;

use crate::app::Engine;
use crate::http::error::{HttpError, json_reply};
use crate::http::{Handled, HttpSettings, Request};

const INDEX_HTML: &str = include_str!("../../console/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../console/dist/assets/app.js");
const APP_CSS: &[u8] = include_bytes!("../../console/dist/assets/app.css");

/// Scripts only from this origin (no inline or remote script at all); the
/// only network access is this engine's own API.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn index() -> Response {
    asset_reply(INDEX_HTML.as_bytes(), "text/html; charset=utf-8")
}

pub fn asset(request: Request) -> Handled {
    match request.param.as_deref() {
        Some("app.js") => Ok(asset_reply(APP_JS, "text/javascript; charset=utf-8")),
        Some("app.css") => Ok(asset_reply(APP_CSS, "text/css; charset=utf-8")),
        _ => Err(HttpError::new(StatusCode::NOT_FOUND, "not found")),
    }
}

pub fn config(engine: &Engine, settings: &HttpSettings) -> Response {
    json_reply(
        StatusCode::OK,
        &json!({
            "admin_token_required": settings.admin_token.is_some(),
            "allow_rule_edits": engine.settings().allow_rule_edits,
        }),
    )
}

fn asset_reply(body: &'static [u8], content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
