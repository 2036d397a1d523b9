//! `GET /deliveries`, `POST /deliveries/{id}/retry`, `POST /deliveries/retry-dead`.

use http::StatusCode;
use serde_json::json;

use crate::app::Engine;
use crate::app::deliveries::DeliveryQuery;
use crate::http::error::json_reply;
use crate::http::{Handled, Request};

pub async fn list(engine: &Engine, request: Request) -> Handled {
    let params = request.params()?;
    let query = DeliveryQuery::from_params(
        params.get("status").map(String::as_str),
        params.get("limit").map(String::as_str),
    )?;
    let deliveries = engine.list_deliveries(query).await?;
    Ok(json_reply(StatusCode::OK, &json!({ "deliveries": deliveries })))
}

pub async fn retry_one(engine: &Engine, request: Request) -> Handled {
    let id = request.param.unwrap_or_default();
    let requeued = engine.requeue(&id).await?;
    Ok(json_reply(StatusCode::ACCEPTED, &json!({ "requeued": requeued })))
}

pub async fn retry_dead(engine: &Engine) -> Handled {
    let requeued = engine.requeue_dead().await?;
    Ok(json_reply(StatusCode::ACCEPTED, &json!({ "requeued": requeued })))
}
