//! The rows behind the outcomes report (SPEC 11), made the same way by
//! every store: the result stored for each contact's latest contact event,
//! combined with the calls and outcomes linked to it.

use std::collections::HashMap;

use serde::Deserialize;

use super::StoredHook;
use crate::outcomes::ContactOutcome;
use crate::payload::HookKind;

/// A contact's latest stored result, as a store reads it.
pub(crate) struct LatestResult {
    pub contact_key: String,
    pub first_seen: i64,
    pub score: f64,
    pub tier: String,
    pub disqualified: bool,
    /// The stored scored contact (SPEC 3).
    pub body: String,
}

/// The parts of a scored contact the report reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ScoredParts {
    reasons: Vec<Part>,
    disqualifications: Vec<Part>,
    tags: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Part {
    rule: String,
    reason: serde_json::Value,
}

/// One [`ContactOutcome`] per contact. A contact is booked when any call
/// hook of it was a booking or a reschedule; an outcome sent twice (same
/// `uuid`, say once per delivery id) counts once, as its latest hook says.
pub(crate) fn combine(contacts: Vec<LatestResult>, hooks: Vec<(String, StoredHook)>) -> Vec<ContactOutcome> {
    #[derive(Default)]
    struct Linked {
        booked: bool,
        with_outcome: bool,
        /// Latest hook per outcome id (or per hook, without one).
        outcomes: HashMap<String, (bool, f64)>,
    }
    let mut linked: HashMap<String, Linked> = HashMap::new();
    // `hooks` come in `seq` order: a later hook of an outcome replaces it.
    for (contact_key, hook) in hooks {
        let entry = linked.entry(contact_key).or_default();
        match hook.kind {
            HookKind::Call => {
                entry.booked |= matches!(hook.call_status.as_deref(), Some("booked" | "rescheduled"));
            }
            HookKind::Outcome => {
                entry.with_outcome = true;
                let id = hook.own_id.clone().unwrap_or_else(|| hook.id.clone());
                entry.outcomes.insert(id, (hook.sale, hook.revenue));
            }
            HookKind::Unknown => {}
        }
    }
    contacts
        .into_iter()
        .map(|contact| {
            let parts: ScoredParts = crate::payload::parse_json(&contact.body).unwrap_or_default();
            let mut reasons: Vec<(String, String)> = Vec::new();
            for part in parts.reasons {
                let reason = match part.reason {
                    serde_json::Value::String(text) => text,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                if !reasons
                    .iter()
                    .any(|(rule, text)| *rule == part.rule && *text == reason)
                {
                    reasons.push((part.rule, reason));
                }
            }
            let mut tags: Vec<String> = Vec::new();
            for tag in parts.tags {
                let tag = match tag {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                };
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
            let mut disqualified_by: Vec<String> = Vec::new();
            for part in parts.disqualifications {
                if !disqualified_by.contains(&part.rule) {
                    disqualified_by.push(part.rule);
                }
            }
            let link = linked.remove(&contact.contact_key).unwrap_or_default();
            let converted = link.outcomes.values().any(|(sale, _)| *sale);
            let revenue = link
                .outcomes
                .values()
                .filter(|(sale, _)| *sale)
                .map(|(_, value)| value)
                .sum();
            ContactOutcome {
                contact_key: contact.contact_key,
                first_seen: contact.first_seen,
                score: contact.score,
                tier: contact.tier,
                disqualified: contact.disqualified,
                reasons,
                tags,
                disqualified_by,
                booked: link.booked,
                with_outcome: link.with_outcome,
                converted,
                revenue,
            }
        })
        .collect()
}
