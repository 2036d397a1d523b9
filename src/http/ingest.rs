//! `POST /webhooks/iclosed` and `POST /score` (SPEC 1, 4).

use std::time::{Instant, SystemTime};

use http::StatusCode;
use serde::Serialize;

use crate::app::Engine;
use crate::http::error::{HttpError, json_reply};
use crate::http::{BodyKind, Handled, HttpSettings, Request};
use crate::ingest::DELIVERY_ID_HEADERS;
use crate::ingest::auth::BeforeBody;

pub async fn webhook(engine: &Engine, settings: &HttpSettings, request: Request) -> Handled {
    // A sender that can only prove itself with a token is refused before
    // its body is read (issue 19 #4).
    let before = settings
        .auth
        .check_before_body(&request.headers, request.query.as_deref());
    if let BeforeBody::Refused(failure) = &before {
        return Err(refused(failure));
    }
    let query = request.query.clone();
    let (body, headers) = request.body(settings.max_body, BodyKind::Json).await?;
    if before == BeforeBody::NeedsBody
        && let Err(failure) = settings
            .auth
            .check(&headers, query.as_deref(), &body, SystemTime::now())
    {
        return Err(refused(&failure));
    }
    // The first of the headers with a value: an empty one counts as absent.
    let delivery_id = DELIVERY_ID_HEADERS
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_owned);
    let started = Instant::now();
    let reply = engine.ingest(body, delivery_id).await?;
    tracing::debug!(
        contacts = reply.results.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "webhook handled"
    );
    Ok(json_reply(StatusCode::OK, &reply))
}

fn refused(failure: &crate::ingest::auth::AuthFailure) -> HttpError {
    tracing::warn!(reason = %failure, "webhook refused: authentication failed");
    HttpError::new(StatusCode::UNAUTHORIZED, failure.0.clone())
}

pub async fn score(engine: &Engine, settings: &HttpSettings, request: Request) -> Handled {
    let (body, _) = request.body(settings.max_body, BodyKind::Json).await?;
    let results = engine.dry_run(body).await?;
    Ok(json_reply(StatusCode::OK, &ScoreReply { results }))
}

/// The `200` body of `POST /score`. Serialised as a struct, not through
/// `json!`: that would re-parse each contact's raw JSON into a `Value`,
/// changing it (duplicate keys, long numbers) and panicking past
/// serde_json's recursion limit (a contact nested 128 levels deep).
#[derive(Serialize)]
struct ScoreReply {
    results: Vec<crate::score::ScoredContact>,
}
