//! What reads stored history: `POST /backtest` (SPEC 8), `GET /stats` and
//! `GET /contacts` (SPEC 9), `GET /report` (SPEC 11).

use std::time::SystemTime;

use http::StatusCode;
use serde_json::json;

use crate::app::backtest::BacktestRequest;
use crate::app::{AppError, Engine, contacts, stats};
use crate::http::error::json_reply;
use crate::http::{BodyKind, Handled, HttpSettings, Request};

pub async fn backtest(engine: &Engine, settings: &HttpSettings, request: Request) -> Handled {
    let (body, _) = request.body(settings.max_body, BodyKind::Json).await?;
    let text = std::str::from_utf8(&body).map_err(|_| AppError::bad_request("the body is not UTF-8"))?;
    let request: BacktestRequest = crate::payload::parse_json(text)
        .map_err(|e| AppError::bad_request(format!("invalid backtest request: {e}")))?;
    let report = engine.backtest(request).await?;
    Ok(json_reply(StatusCode::OK, &report))
}

/// `GET /contacts/{id}`: the id percent-decoded (`%22` and the like).
pub async fn contact(engine: &Engine, request: Request) -> Handled {
    let raw = request.param.unwrap_or_default();
    let id: String = form_urlencoded::parse(format!("id={}", raw.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let timeline = contacts::timeline(engine.store().as_ref(), &id).await?;
    Ok(json_reply(StatusCode::OK, &timeline))
}

pub async fn contacts(engine: &Engine, request: Request) -> Handled {
    let params = request.params()?;
    let limit = contacts::parse_limit(params.get("limit").map(String::as_str))?;
    let email = params.get("email").map(String::as_str);
    let contacts = contacts::recent(engine.store().as_ref(), limit, email).await?;
    Ok(json_reply(StatusCode::OK, &json!({ "contacts": contacts })))
}

pub async fn stats(engine: &Engine, request: Request) -> Handled {
    let params = request.params()?;
    let window = stats::Window::from_params(
        params.get("since").map(String::as_str),
        params.get("bucket").map(String::as_str),
        SystemTime::now(),
    )?;
    let stats = stats::stats(engine.store().as_ref(), window).await?;
    Ok(json_reply(StatusCode::OK, &stats))
}

/// `GET /report?since=90d`: the outcomes report (SPEC 11).
pub async fn report(engine: &Engine, request: Request) -> Handled {
    let params = request.params()?;
    let report = engine.report(params.get("since").map(String::as_str)).await?;
    Ok(json_reply(StatusCode::OK, &report))
}
