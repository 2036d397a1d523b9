//! `GET /deliveries`, `DELETE /deliveries?destination=`, `POST
//! /deliveries/{id}/retry`, `POST /deliveries/retry-dead`, `GET
//! /deliveries/{id}/attempts`, `GET /destinations` (SPEC 4, 10).

use http::{Method, StatusCode};
use serde_json::json;

use crate::app::Engine;
use crate::app::deliveries::{DeliveryQuery, destination_param};
use crate::http::error::json_reply;
use crate::http::{Handled, Request};

pub async fn list(engine: &Engine, request: Request) -> Handled {
    let params = request.params()?;
    let destination = params.get("destination").map(String::as_str);
    if request.method == Method::DELETE {
        let discarded = engine.discard_deliveries(destination).await?;
        return Ok(json_reply(StatusCode::OK, &json!({ "discarded": discarded })));
    }
    let query = DeliveryQuery::from_params(
        params.get("status").map(String::as_str),
        params.get("limit").map(String::as_str),
    )?
    .at(destination)?;
    let deliveries = engine.list_deliveries(query).await?;
    Ok(json_reply(StatusCode::OK, &json!({ "deliveries": deliveries })))
}

pub async fn retry_one(engine: &Engine, request: Request) -> Handled {
    let params = request.params()?;
    let destination = destination_param(params.get("destination").map(String::as_str))?;
    let id = request.param.unwrap_or_default();
    let requeued = engine.requeue(&id, destination).await?;
    Ok(json_reply(StatusCode::ACCEPTED, &json!({ "requeued": requeued })))
}

pub async fn retry_dead(engine: &Engine, request: Request) -> Handled {
    let params = request.params()?;
    let destination = destination_param(params.get("destination").map(String::as_str))?;
    let requeued = engine.requeue_dead(destination).await?;
    Ok(json_reply(StatusCode::ACCEPTED, &json!({ "requeued": requeued })))
}

pub async fn destinations(engine: &Engine) -> Handled {
    let report = engine.destinations().await?;
    Ok(json_reply(StatusCode::OK, &report))
}

pub async fn attempts(engine: &Engine, request: Request) -> Handled {
    let params = request.params()?;
    let destination = destination_param(params.get("destination").map(String::as_str))?;
    let id = request.param.unwrap_or_default();
    let attempts = engine.attempts(&id, destination).await?;
    Ok(json_reply(StatusCode::OK, &json!({ "attempts": attempts })))
}
