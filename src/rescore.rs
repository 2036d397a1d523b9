//! Rescoring (SPEC 12): the latest contact event of every contact in a
//! window scored again with the loaded rules at the rescore's time; a
//! contact whose score or tier moved gets a stored `contact.rescored` event,
//! delivered like any event.
//!
//! A job is durable: its record in the store holds a cursor (the `seq` of
//! the last source event done) and a lease its owner renews page by page;
//! after a crash, the job goes on from its cursor once the lease runs out
//! (another instance may take it). Each rescored event's idempotency key is
//! the job's id with the contact's, so a page done twice stores nothing
//! twice, and the store keeps an event only while its source is still the
//! contact's newest (a webhook arriving meanwhile wins).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::destinations::Destinations;
use crate::payload::Contact;
use crate::score::{CallStatus, CallSummary, RuleSet, ScoringContext};
use crate::store::{
    ContactHistory, Enqueued, NewEvent, RescoreJob, RescoreSource, Store, StoreError, StoredHook,
};

/// Contacts one page reads, scores and writes: small, so that a page's
/// write is a short transaction beside the webhooks.
pub const PAGE: usize = 500;

/// How long a job's owner holds it without renewing (a page renews it).
pub const LEASE: Duration = Duration::from_secs(15);

/// Why a rescore runs (SPEC 12 `cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Rules,
    Schedule,
    Call,
    Manual,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::Schedule => "schedule",
            Self::Call => "call",
            Self::Manual => "manual",
        }
    }
}

/// A new job record: contacts first seen since `since_ms`, events up to
/// `up_to_seq` (the store's newest now).
pub fn new_job(cause: Cause, since_ms: i64, up_to_seq: i64) -> RescoreJob {
    RescoreJob {
        id: format!("rsc_{}", crate::ingest::new_event_id().trim_start_matches("evt_")),
        state: "running".into(),
        cause: cause.as_str().into(),
        since_ms,
        up_to_seq,
        cursor: 0,
        scored: 0,
        changed: 0,
        pushed: 0,
        started_at: crate::store::now_ms(),
        finished_at: None,
        error: None,
    }
}

/// The lease end of a lease taken now.
pub fn lease_until() -> i64 {
    crate::store::now_ms() + LEASE.as_millis() as i64
}

/// The scoring context of a contact with this history at `now` (SPEC 12):
/// one call per `event.uuid` as its latest hook says, newest first.
pub fn context_of(history: Option<&ContactHistory>, now: SystemTime) -> ScoringContext {
    let Some(history) = history else {
        return ScoringContext::at(now);
    };
    // Hooks come oldest first: a later hook of a call replaces it in place,
    // the order of first sight is kept, then reversed (newest first).
    let mut order: Vec<String> = Vec::new();
    let mut latest: HashMap<String, &StoredHook> = HashMap::new();
    for hook in &history.calls {
        let call = hook.own_id.clone().unwrap_or_else(|| hook.id.clone());
        if latest.insert(call.clone(), hook).is_none() {
            order.push(call);
        }
    }
    let calls = order
        .iter()
        .rev()
        .filter_map(|call| latest.get(call))
        .map(|hook| CallSummary {
            status: match hook.call_status.as_deref() {
                Some("canceled") => CallStatus::Canceled,
                Some("rescheduled") => CallStatus::Rescheduled,
                _ => CallStatus::Booked,
            },
            start_time: hook.call_start.clone(),
            event_type: hook.call_type.clone(),
        })
        .collect();
    ScoringContext {
        now,
        // A contact without an earlier event is first seen now.
        first_seen: Some(history.first_seen.map_or(now, crate::time::from_unix_ms)),
        calls,
    }
}

/// What scoring one page decided.
pub struct PageResult {
    /// The rescored events to store (changed contacts only).
    pub events: Vec<NewEvent>,
    pub scored: u64,
    pub changed: u64,
}

/// What a rescore reads of a stored scored contact: its result, and the
/// contact as received (kept raw: parsed once, by the scorer).
#[derive(serde::Deserialize)]
struct StoredResult<'a> {
    #[serde(default)]
    score: Value,
    #[serde(default)]
    tier: Value,
    #[serde(default)]
    rules_version: Value,
    #[serde(default)]
    scored_at: Value,
    #[serde(borrow)]
    contact: Option<&'a serde_json::value::RawValue>,
}

impl StoredResult<'_> {
    /// The result as the rescored event's `previous` shows it.
    fn previous(&self) -> Value {
        serde_json::json!({
            "score": self.score,
            "tier": self.tier,
            "rules_version": self.rules_version,
            "scored_at": self.scored_at,
        })
    }
}

/// Whether two JSON scores are the same number.
fn same_score(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Scores one page of sources (blocking: runs the rules). `key_scope`
/// makes each event's idempotency key (the job id, or the hook that caused
/// a rescore of one contact).
pub fn score_page(
    rules: &RuleSet,
    destinations: &Destinations,
    sources: &[RescoreSource],
    histories: &HashMap<String, ContactHistory>,
    now: SystemTime,
    cause: Cause,
    key_scope: &str,
) -> PageResult {
    let mut result = PageResult {
        events: Vec::new(),
        scored: 0,
        changed: 0,
    };
    for source in sources {
        let Ok(stored) = crate::payload::parse_json::<StoredResult>(&source.source_body) else {
            continue;
        };
        let Some(Ok(contact)) = stored.contact.map(Contact::from_raw) else {
            continue;
        };
        result.scored += 1;
        let latest = match &source.latest_body {
            Some(body) => match crate::payload::parse_json::<StoredResult>(body) {
                Ok(latest) => latest,
                Err(_) => stored,
            },
            None => stored,
        };
        let at = context_of(histories.get(&source.contact_key), now);
        let event_id = crate::ingest::new_event_id();
        let scored = rules.score(&contact, Some(event_id.clone()), &at);
        let score = crate::ingest::score_number(scored.score);
        if same_score(&Value::Number(score.clone()), &latest.score) && latest.tier == scored.tier.as_str() {
            continue;
        }
        result.changed += 1;
        let mut body = serde_json::to_value(&scored).unwrap_or_default();
        body["type"] = "contact.rescored".into();
        body["previous"] = latest.previous();
        body["cause"] = cause.as_str().into();
        let selected = crate::ingest::select_event(destinations, &body);
        result.events.push(NewEvent {
            event_id,
            idempotency_key: idempotency_key(key_scope, &source.contact_key),
            contact_key: source.contact_key.clone(),
            contact_id: contact.id.clone(),
            received_at: crate::time::unix_ms(now),
            score,
            tier: scored.tier.clone(),
            disqualified: scored.disqualified,
            rules_version: scored.rules_version.clone(),
            body: body.to_string(),
            error_rules: scored.errors.iter().map(|e| e.rule.clone()).collect(),
            destinations: selected,
            email: contact.email(),
            supersedes: Some(source.latest_seq),
        });
    }
    result
}

/// A rescored event's key: one per job (or causing hook) and contact.
fn idempotency_key(scope: &str, contact_key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"rescore\0");
    hasher.update(scope.as_bytes());
    hasher.update(b"\0");
    hasher.update(contact_key.as_bytes());
    hex::encode(hasher.finalize())
}

/// What a job's run ended with.
#[derive(Debug)]
pub enum RunEnd {
    /// Every page done: the job is `done`.
    Done(RescoreJob),
    /// The job was cancelled or taken over: this owner stopped.
    Stopped,
}

/// Where a job gets its rules, destinations and wake-ups.
pub trait Surroundings: Send + Sync {
    fn rules(&self) -> Arc<RuleSet>;
    fn destinations(&self) -> Arc<Destinations>;
    /// Called after a page stored events for these destinations.
    fn stored(&self, destinations: &[String]);
}

/// Runs a job to its end: page by page from its cursor, scoring at low
/// priority off the async executor, saving progress (and renewing the
/// lease) after each page.
pub async fn run(
    store: &dyn Store,
    around: &dyn Surroundings,
    mut job: RescoreJob,
    owner: &str,
) -> Result<RunEnd, StoreError> {
    let cause = match job.cause.as_str() {
        "rules" => Cause::Rules,
        "schedule" => Cause::Schedule,
        "call" => Cause::Call,
        _ => Cause::Manual,
    };
    let now = crate::time::from_unix_ms(job.started_at);
    let rules = around.rules();
    loop {
        let sources = store
            .rescore_sources(job.since_ms, job.up_to_seq, job.cursor, PAGE)
            .await?;
        let Some(last) = sources.last() else {
            job.state = "done".into();
            job.finished_at = Some(crate::store::now_ms());
            return match store.save_rescore(&job, owner, lease_until()).await? {
                true => Ok(RunEnd::Done(job)),
                false => Ok(RunEnd::Stopped),
            };
        };
        let cursor = last.source_seq;
        let histories = match rules.uses_history() {
            true => {
                let keys = sources.iter().map(|s| (s.contact_key.clone(), None)).collect();
                store.contact_histories(keys, crate::time::unix_ms(now)).await?
            }
            false => HashMap::new(),
        };
        let page_rules = rules.clone();
        let destinations = around.destinations();
        let scope = job.id.clone();
        let page = low_priority(move || {
            score_page(
                &page_rules,
                &destinations,
                &sources,
                &histories,
                now,
                cause,
                &scope,
            )
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("a rescore thread failed: {e}")))?;
        let mut selected: Vec<String> = page.events.iter().flat_map(|e| e.destinations.clone()).collect();
        let stored = store.enqueue(page.events).await?;
        job.pushed += stored.iter().filter(|s| matches!(s, Enqueued::Stored(_))).count() as u64;
        job.scored += page.scored;
        job.changed += page.changed;
        job.cursor = cursor;
        selected.sort_unstable();
        selected.dedup();
        around.stored(&selected);
        if !store.save_rescore(&job, owner, lease_until()).await? {
            return Ok(RunEnd::Stopped);
        }
    }
}

/// Runs `work` on a thread of its own at the lowest priority, so that
/// scoring a rescore never takes a core from webhooks.
async fn low_priority<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rescore".into())
        .spawn(move || {
            crate::backtest::lower_current_thread_priority();
            let _ = tx.send(work());
        })
        .map_err(|e| e.to_string())?;
    rx.await.map_err(|_| "the rescore thread stopped".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, own: &str, status: &str, start: &str) -> StoredHook {
        StoredHook {
            seq: 0,
            id: id.into(),
            kind: crate::payload::HookKind::Call,
            received_at: 0,
            own_id: Some(own.into()),
            call_status: Some(status.into()),
            call_start: Some(start.into()),
            call_type: Some("Discovery".into()),
            call_outcome: None,
            sale: false,
            revenue: 0.0,
        }
    }

    #[test]
    fn calls_are_one_per_call_from_its_latest_hook_newest_first() {
        let history = ContactHistory {
            first_seen: Some(1_000),
            calls: vec![
                call("h1", "a", "booked", "t1"),
                call("h2", "b", "booked", "t2"),
                call("h3", "a", "canceled", "t1"),
            ],
        };
        let now = crate::time::from_unix_ms(5_000);
        let context = context_of(Some(&history), now);
        assert_eq!(context.now, now);
        assert_eq!(context.first_seen, Some(crate::time::from_unix_ms(1_000)));
        let calls: Vec<(CallStatus, Option<&str>)> = context
            .calls
            .iter()
            .map(|c| (c.status, c.start_time.as_deref()))
            .collect();
        assert_eq!(
            calls,
            [
                (CallStatus::Booked, Some("t2")),
                (CallStatus::Canceled, Some("t1"))
            ]
        );
    }

    #[test]
    fn scores_compare_by_value() {
        assert!(same_score(&serde_json::json!(85), &serde_json::json!(85.0)));
        assert!(!same_score(&serde_json::json!(85), &serde_json::json!(84)));
    }
}
