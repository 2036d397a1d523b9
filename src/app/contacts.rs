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

/// The newest `limit` contact events, newest first; with `email`, the
/// latest event of each contact whose email it is (trimmed,
/// case-insensitive: SPEC 10 `GET /contacts?email=`).
pub async fn recent(
    store: &dyn Store,
    limit: usize,
    email: Option<&str>,
) -> Result<Vec<ContactEntry>, AppError> {
    let events = match email {
        Some(text) => match crate::ingest::hooks::normal_email(text) {
            Some(email) => store.contacts_by_email(&email, limit).await?,
            None => return Err(AppError::parameter("email", "is empty")),
        },
        None => store.recent_events(limit).await?,
    };
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

/// Most events one contact timeline shows.
pub const MAX_TIMELINE_EVENTS: usize = 1000;

/// `GET /contacts/{id}` (SPEC 10 "Contact timeline").
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub contact_id: Value,
    pub first_seen: String,
    pub events: Vec<TimelineEvent>,
    pub deliveries: Vec<TimelineDelivery>,
    /// The contact's calls and outcomes (SPEC 11), oldest first.
    pub calls: Vec<TimelineCall>,
    pub outcomes: Vec<TimelineOutcome>,
}

/// One call hook linked to the contact.
#[derive(Debug, Serialize)]
pub struct TimelineCall {
    pub id: String,
    pub received_at: String,
    /// iClosed's `event.uuid`: a booking, its reschedule and its
    /// cancellation share it.
    pub call_id: Option<String>,
    /// `booked`, `rescheduled` or `canceled`.
    pub status: Option<String>,
    pub start_time: Option<String>,
    pub event_type: Option<String>,
}

/// One outcome hook linked to the contact.
#[derive(Debug, Serialize)]
pub struct TimelineOutcome {
    pub id: String,
    pub received_at: String,
    /// iClosed's `uuid` of the outcome.
    pub outcome_id: Option<String>,
    pub call_outcome: Option<String>,
    pub sale: bool,
    pub revenue: f64,
}

/// Most calls and outcomes one contact timeline shows.
const MAX_TIMELINE_HOOKS: usize = 1000;

#[derive(Debug, Serialize)]
pub struct TimelineEvent {
    pub id: String,
    pub kind: String,
    #[serde(rename = "type")]
    pub event_type: Value,
    pub received_at: String,
    pub score: Value,
    pub tier: Value,
    pub rules_version: Value,
    pub reasons: Value,
    /// A rescored event's cause (SPEC 12): `rules`, `schedule`, `call` or
    /// `manual`; absent for other events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Value>,
    /// A rescored event's previous result: `{score, tier, rules_version,
    /// scored_at}`; absent for other events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct TimelineDelivery {
    pub id: String,
    pub destination: String,
    pub status: crate::store::DeliveryStatus,
    pub attempts: Vec<crate::store::AttemptInfo>,
}

/// The stored keys a contact id given in a path may have: a number's (by
/// value, as ingest keys it) and a string's.
fn keys_of(id: &str) -> Vec<String> {
    let mut keys = Vec::new();
    if let Ok(raw) = RawValue::from_string(format!("{{\"id\":{id}}}"))
        && let Ok(parsed) = crate::payload::parse_json::<Value>(raw.get())
        && parsed["id"].is_number()
    {
        keys.push(crate::payload::id_key(&parsed["id"], &raw.into()));
    }
    keys.push(Value::String(id.to_owned()).to_string());
    keys
}

/// A contact's events, deliveries and attempts; `NotFound` when no event
/// of it is stored.
pub async fn timeline(store: &dyn Store, id: &str) -> Result<Timeline, AppError> {
    for key in keys_of(id) {
        let found = store.contact_timeline(&key, MAX_TIMELINE_EVENTS).await?;
        if found.events.is_empty() {
            continue;
        }
        let events: Vec<TimelineEvent> = found
            .events
            .iter()
            .map(|event| {
                let body: Value = crate::payload::parse_json(&event.body).unwrap_or_default();
                TimelineEvent {
                    id: event.id.clone(),
                    // A received contact, or a rescore of it (SPEC 12).
                    kind: match body["type"].as_str() {
                        Some("contact.rescored") => "rescored",
                        _ => "contact",
                    }
                    .to_owned(),
                    event_type: body["type"].clone(),
                    received_at: crate::time::format_ms(event.received_at),
                    score: body["score"].clone(),
                    tier: body["tier"].clone(),
                    rules_version: body["rules_version"].clone(),
                    reasons: body["reasons"].clone(),
                    cause: body.get("cause").cloned(),
                    previous: body.get("previous").cloned(),
                }
            })
            .collect();
        let deliveries = found
            .deliveries
            .into_iter()
            .map(|delivery| TimelineDelivery {
                attempts: found
                    .attempts
                    .iter()
                    .filter(|(event, attempt)| {
                        *event == delivery.id && attempt.destination == delivery.destination
                    })
                    .map(|(_, attempt)| attempt.clone())
                    .collect(),
                id: delivery.id,
                destination: delivery.destination,
                status: delivery.status,
            })
            .collect();
        // As received, with its JSON type (SPEC 3).
        let contact_id = crate::payload::parse_json::<Value>(&found.events[0].body)
            .map(|body| body["contact_id"].clone())
            .unwrap_or(Value::Null);
        let mut calls = Vec::new();
        let mut outcomes = Vec::new();
        for hook in store.contact_hooks(&key, MAX_TIMELINE_HOOKS).await? {
            let received_at = crate::time::format_ms(hook.received_at);
            match hook.kind {
                crate::payload::HookKind::Call => calls.push(TimelineCall {
                    id: hook.id,
                    received_at,
                    call_id: hook.own_id,
                    status: hook.call_status,
                    start_time: hook.call_start,
                    event_type: hook.call_type,
                }),
                crate::payload::HookKind::Outcome => outcomes.push(TimelineOutcome {
                    id: hook.id,
                    received_at,
                    outcome_id: hook.own_id,
                    call_outcome: hook.call_outcome,
                    sale: hook.sale,
                    revenue: hook.revenue,
                }),
                crate::payload::HookKind::Unknown => {}
            }
        }
        return Ok(Timeline {
            contact_id,
            first_seen: events[0].received_at.clone(),
            events,
            deliveries,
            calls,
            outcomes,
        });
    }
    Err(AppError::NotFound(format!("no contact with id {id:?}")))
}
