//! The newest stored contacts with their scores (`GET /contacts`, the
//! console's contact picker).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::app::AppError;
use crate::app::deliveries::parse_count;
use crate::store::Store;

/// Most contacts one listing answers.
pub const MAX_LISTED: usize = 200;
const DEFAULT_LISTED: usize = 20;

/// One stored contact event, as listed.
#[derive(Debug, Serialize)]
pub struct ContactEntry {
    pub id: String,
    pub received_at: String,
    #[serde(flatten)]
    pub scored: ScoredFields,
}

/// The parts of a stored scored contact a listing shows.
#[derive(Debug, Deserialize, Serialize)]
pub struct ScoredFields {
    pub contact_id: Value,
    pub score: Value,
    pub tier: String,
    pub contact: Box<RawValue>,
}

/// `limit` as sent, validated (1 to [`MAX_LISTED`], default 20).
pub fn parse_limit(limit: Option<&str>) -> Result<usize, AppError> {
    let limit = limit.map_or(Ok(DEFAULT_LISTED), |text| parse_count("limit", text))?;
    if !(1..=MAX_LISTED).contains(&limit) {
        return Err(AppError::parameter(
            "limit",
            format!("must be between 1 and {MAX_LISTED}"),
        ));
    }
    Ok(limit)
}

/// The newest `limit` contact events, newest first.
pub async fn recent(store: &dyn Store, limit: usize) -> Result<Vec<ContactEntry>, AppError> {
    let events = store.recent_events(limit).await?;
    Ok(events
        .into_iter()
        .filter_map(|event| {
            let scored: ScoredFields = crate::payload::parse_json(&event.body).ok()?;
            Some(ContactEntry {
                id: event.id,
                received_at: crate::time::format_ms(event.received_at),
                scored,
            })
        })
        .collect())
}
