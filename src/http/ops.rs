//! What operators and load balancers ask: `GET /healthz`, `/readyz`,
//! `/metrics` and `/openapi.json`, all open.

use http::StatusCode;
use serde_json::json;
use warp::reply::{Reply, Response};

use crate::app::Engine;
use crate::http::error::json_reply;

/// The OpenAPI 3 document of this interface, kept in the repository.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub fn healthz() -> Response {
    json_reply(StatusCode::OK, &json!({"status": "ok"}))
}

pub async fn readyz(engine: &Engine) -> Response {
    match engine.readiness().await {
        Ok(version) => json_reply(
            StatusCode::OK,
            &json!({"status": "ready", "rules_version": version}),
        ),
        Err(e) => json_reply(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": e.to_string()})),
    }
}

pub async fn metrics(engine: &Engine) -> Response {
    warp::reply::with_header(
        engine.metrics().await,
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response()
}

pub fn openapi() -> Response {
    warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response()
}
