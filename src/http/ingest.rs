//! `POST /webhooks/iclosed` and `POST /score` (SPEC 1, 4).

use std::time::{Instant, SystemTime};

use http::StatusCode;
use serde::Serialize;

use crate::app::Engine;
use crate::http::error::{HttpError, json_reply};
use crate::http::{BodyKind, Handled, HttpSettings, Request};
use crate::ingest::DELIVERY_ID_HEADERS;
use crate::ingest::auth::HeadCheck;

pub async fn webhook(engine: &Engine, settings: &HttpSettings, request: Request) -> Handled {
    // The headers decide first: a right token passes, and a request that no
    // configured check could pass is refused before its body is read
    // (issue 19 #4); a body signature is checked once the body is in.
    let head = settings
        .auth
        .check_head(&request.headers, request.query.as_deref(), SystemTime::now());
    if let HeadCheck::Refused(failure) = &head {
        return Err(refused(failure));
    }
    let (body, headers) = request.body(settings.max_body, BodyKind::Json).await?;
    if let HeadCheck::NeedsBody(check) = head {
        // At most one MAC per check, however many signatures were sent; a
        // large body's MAC runs on a blocking thread, not an async worker.
        let verdict = if check.should_run_blocking(body.len()) {
            let body = body.clone();
            tokio::task::spawn_blocking(move || check.verify(&body))
                .await
                .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        } else {
            check.verify(&body)
        };
        if let Err(failure) = verdict {
            return Err(refused(&failure));
        }
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
    let trace = crate::app::parse_flag("trace", request.params()?.get("trace").map(String::as_str))?;
    let (body, _) = request.body(settings.max_body, BodyKind::Json).await?;
    let results = engine.dry_run(body, trace).await?;
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
