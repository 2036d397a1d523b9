//! Durable storage of scored events, idempotency keys and delivery records
//! behind one [`Store`] trait; the backend is chosen from the store URL in
//! [`open`].

mod emails;
mod outcome_row;
mod packed;
pub mod postgres;
mod reply;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A scored event ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub idempotency_key: String,
    /// The contact id as JSON text (`48213`, `"abc"`): equal ids, equal keys.
    pub contact_key: String,
    pub contact_id: Value,
    pub received_at: i64,
    /// The score as a JSON number (integer or float as scored).
    pub score: serde_json::Number,
    pub tier: String,
    pub disqualified: bool,
    pub rules_version: String,
    /// The scored contact (SPEC 3), exactly as it is forwarded.
    pub body: String,
    /// The rules that failed on this contact (counted for `GET /stats`).
    pub error_rules: Vec<String>,
    /// The destinations that selected the event (SPEC 10): one pending
    /// delivery each, committed with the event.
    pub destinations: Vec<String>,
    /// The contact's email, trimmed and lower-cased: calls and outcomes
    /// without a contact id link by it (SPEC 11).
    pub email: Option<String>,
    /// A `contact.rescored` event (SPEC 12): stored only while the event at
    /// this `seq` is still the contact's newest (checked in the writing
    /// transaction, so a webhook arriving meanwhile wins).
    pub supersedes: Option<i64>,
}

impl NewEvent {
    /// What ingest answers for this event once stored.
    pub(crate) fn summary(&self) -> EventSummary {
        EventSummary {
            contact_id: self.contact_id.clone(),
            id: self.event_id.clone(),
            score: self.score.clone(),
            tier: self.tier.clone(),
            disqualified: self.disqualified,
        }
    }
}

/// A call, outcome or unknown hook ready to be stored (SPEC 11): neither
/// scored nor forwarded; kept to learn which contacts booked and bought.
#[derive(Debug, Clone, PartialEq)]
pub struct NewHook {
    /// `hook_` and a time-ordered UUID.
    pub id: String,
    pub kind: crate::payload::HookKind,
    pub idempotency_key: String,
    pub received_at: i64,
    /// The contact its `contactId` names, as a loose key
    /// (`payload::loose_key`).
    pub contact_ref: Option<String>,
    /// Its email (an outcome's `email`, a call's `invitee.email`), trimmed
    /// and lower-cased.
    pub email: Option<String>,
    /// An outcome's `uuid`, a call's `event.uuid`.
    pub own_id: Option<String>,
    /// A call's `booked`, `rescheduled` or `canceled`.
    pub call_status: Option<&'static str>,
    /// A call's `event.utc_start_time`.
    pub call_start: Option<String>,
    /// A call's `event_type.name`.
    pub call_type: Option<String>,
    /// An outcome's `callOutcome`.
    pub call_outcome: Option<String>,
    /// An outcome that is a sale (`SALE`, `PARTIAL_SALE`), and its value.
    pub sale: bool,
    pub revenue: f64,
    /// The element as received (compact).
    pub body: String,
}

/// A rescore job (SPEC 12) as stored: one runs at a time per store; its
/// owner renews a lease while it runs, and another instance (or the same one
/// after a restart) takes over a job whose lease ran out, from its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescoreJob {
    pub id: String,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// `rules`, `schedule`, `call` or `manual`.
    pub cause: String,
    /// Contacts first seen at or after this time (unix ms).
    pub since_ms: i64,
    /// The events the job looks at: up to this `seq` (its snapshot).
    pub up_to_seq: i64,
    /// The last source event done (contacts are taken in its order).
    pub cursor: i64,
    pub scored: u64,
    pub changed: u64,
    pub pushed: u64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

/// What a rescore needs of one contact: the latest contact event (its
/// source) and the latest stored result (the source itself, or a later
/// rescored event).
#[derive(Debug, Clone, PartialEq)]
pub struct RescoreSource {
    pub contact_key: String,
    pub source_seq: i64,
    /// The source's scored contact (SPEC 3), whose `contact` is rescored.
    pub source_body: String,
    pub latest_seq: i64,
    /// The latest result's scored contact when it is not the source.
    pub latest_body: Option<String>,
}

/// A contact's history as rules see it (SPEC 12 `first_seen()`, `calls()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactHistory {
    /// When its first kept event was received (unix ms).
    pub first_seen: Option<i64>,
    /// Its call hooks received up to the scoring time, oldest first.
    pub calls: Vec<StoredHook>,
}

/// One element of a request to store, in the request's order.
#[derive(Debug, Clone)]
pub enum NewItem {
    Event(NewEvent),
    Hook(NewHook),
}

/// What storing a hook did: its id (the first one's for a duplicate) and the
/// contact it is linked to (`null` until that contact arrives).
#[derive(Debug, Clone, PartialEq)]
pub struct HookSummary {
    pub kind: crate::payload::HookKind,
    pub id: String,
    pub contact_id: Value,
    /// The linked contact's key (its id's JSON text).
    pub contact_key: Option<String>,
    pub duplicate: bool,
}

/// What storing one element did.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemStored {
    Event(Enqueued),
    Hook(HookSummary),
}

/// A stored call or outcome as the contact timeline shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHook {
    pub seq: i64,
    pub id: String,
    pub kind: crate::payload::HookKind,
    pub received_at: i64,
    pub own_id: Option<String>,
    pub call_status: Option<String>,
    pub call_start: Option<String>,
    pub call_type: Option<String>,
    pub call_outcome: Option<String>,
    pub sale: bool,
    pub revenue: f64,
}

/// The destination of `--forward-url`, and of every delivery stored before
/// destinations existed (SPEC 10).
pub const DEFAULT_DESTINATION: &str = "default";

/// What ingest answers for one contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSummary {
    pub contact_id: Value,
    pub id: String,
    pub score: serde_json::Number,
    pub tier: String,
    pub disqualified: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    Stored(EventSummary),
    /// A duplicate inside the dedupe window: the event stored first.
    Duplicate(EventSummary),
    /// A rescored event not stored: the contact has a newer event than the
    /// one it was computed from.
    Superseded,
}

/// A delivery claimed by this instance, with what to send.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The event's place in the store (its deliveries are keyed by it).
    pub seq: i64,
    pub event_id: String,
    pub destination: String,
    pub contact_key: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub body: String,
    /// The claim's token (its lease end, which only grows from one claim of
    /// a delivery to the next): an attempt is recorded only while it holds.
    pub claim: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Dead,
    Delivered,
    /// Nothing was to be sent (SPEC 10: not dead).
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Dead => "dead",
            Self::Delivered => "delivered",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "dead" => Some(Self::Dead),
            "delivered" => Some(Self::Delivered),
            "skipped" => Some(Self::Skipped),
            _ => None,
        }
    }
}

/// A delivery as listed by `GET /deliveries` (SPEC 4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryInfo {
    pub id: String,
    pub destination: String,
    pub contact_id: Value,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

/// A delivery as a store reads it, times raw (unix ms): every store turns
/// its rows into [`DeliveryInfo`] the same way, through [`Self::into_info`].
pub(crate) struct DeliveryRow {
    pub id: String,
    pub destination: String,
    pub contact_key: String,
    /// The stored status text.
    pub status: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

impl DeliveryRow {
    pub(crate) fn into_info(self) -> DeliveryInfo {
        let status = DeliveryStatus::parse(&self.status).unwrap_or(DeliveryStatus::Pending);
        DeliveryInfo {
            id: self.id,
            destination: self.destination,
            contact_id: contact_id_of(&self.contact_key),
            status,
            attempts: self.attempts.clamp(0, u32::MAX as i64) as u32,
            last_status: self.last_status.map(|s| s.clamp(0, u16::MAX as i64) as u16),
            last_error: self.last_error,
            // Only a pending delivery has a next attempt.
            next_attempt_at: match status {
                DeliveryStatus::Pending => self.next_attempt_at.map(format_ms),
                _ => None,
            },
            created_at: format_ms(self.created_at),
            delivered_at: self.delivered_at.map(format_ms),
        }
    }
}

/// A logged attempt as a store reads it (time raw, unix ms).
pub(crate) struct AttemptRow {
    pub destination: String,
    pub at: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
}

impl AttemptRow {
    pub(crate) fn into_info(self) -> AttemptInfo {
        AttemptInfo {
            at: format_ms(self.at),
            destination: self.destination,
            status: self.status.map(|s| s.clamp(0, u16::MAX as i64) as u16),
            error: self.error,
            latency_ms: self.latency_ms.max(0) as u64,
            response_body: self.response_body,
        }
    }
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Delivered {
        status: u16,
    },
    /// Try again at `next_attempt_at` (unix ms).
    Retry {
        next_attempt_at: i64,
        status: Option<u16>,
        error: String,
    },
    /// No more attempts: the delivery is dead until requeued.
    Dead {
        status: Option<u16>,
        error: String,
    },
    /// Nothing to send for this destination (a HubSpot contact without an
    /// email, a transform that gave `()`): done, and not dead.
    Skipped {
        reason: String,
    },
}

/// One attempt as it is logged (SPEC 10 "Attempts").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLog {
    /// When the request started (unix ms).
    pub at: i64,
    pub status: Option<u16>,
    /// The error class and message, when there was no 2xx.
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The first 1 KiB of the response body.
    pub response_body: Option<String>,
}

/// How much of a response body an attempt keeps.
pub const ATTEMPT_BODY_BYTES: usize = 1024;

/// An attempt as `GET /deliveries/{id}/attempts` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptInfo {
    pub at: String,
    pub destination: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    pub response_body: Option<String>,
}

/// What [`Store::contact_timeline`] reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactTimeline {
    pub events: Vec<StoredEvent>,
    /// In event order, then by destination.
    pub deliveries: Vec<DeliveryInfo>,
    /// `(event id, attempt)`, oldest first per delivery.
    pub attempts: Vec<(String, AttemptInfo)>,
}

/// Which deliveries a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub destination: Option<String>,
}

/// What an [`AttemptOutcome`] writes into a delivery's row.
pub(crate) struct OutcomeColumns<'a> {
    pub status: &'static str,
    pub last_status: Option<u16>,
    pub last_error: Option<&'a str>,
    /// Kept as it was when `None`.
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
}

impl AttemptOutcome {
    pub(crate) fn columns(&self, now: i64) -> OutcomeColumns<'_> {
        let (status, last_status, last_error, next_attempt_at, delivered_at) = match self {
            Self::Delivered { status } => ("delivered", Some(*status), None, None, Some(now)),
            Self::Retry {
                next_attempt_at,
                status,
                error,
            } => (
                "pending",
                *status,
                Some(error.as_str()),
                Some(*next_attempt_at),
                None,
            ),
            Self::Dead { status, error } => ("dead", *status, Some(error.as_str()), None, None),
            Self::Skipped { reason } => ("skipped", None, Some(reason.as_str()), None, None),
        };
        OutcomeColumns {
            status,
            last_status,
            last_error,
            next_attempt_at,
            delivered_at,
        }
    }
}

/// What requeueing one delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    Requeued,
    /// The delivery exists but is not dead (pending or delivered).
    NotDead,
    Unknown,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryBacklog {
    pub pending: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub dead: u64,
    pub delivered: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events (with their delivery records) older than the retention.
    pub events: u64,
}

/// How long things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// A duplicate key older than this is a new event.
    pub dedupe_window: Duration,
    /// Events and delivered records older than this are pruned.
    pub retention: Duration,
}

/// Which stored events a backtest reads (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventWindow {
    /// Events received at or after this time (unix ms).
    pub since_ms: i64,
    /// Every event, instead of the latest event of each contact.
    pub all_events: bool,
    /// Only events up to this sequence number: the snapshot a backtest takes
    /// when it starts, so that contacts arriving meanwhile do not change
    /// which event is a contact's latest half-way through.
    pub up_to_seq: i64,
}

/// A stored event as a backtest or the console reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The store's order of arrival.
    pub seq: i64,
    pub id: String,
    pub received_at: i64,
    /// The scored contact (SPEC 3) as stored at ingest.
    pub body: String,
    /// Its contact's key (the id's JSON text), when the read gives it.
    pub contact_key: Option<String>,
}

/// Per-minute counters behind `GET /stats`, kept by every `enqueue`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// `(minute start in unix ms, what, name, count)`: `what` is one of
    /// [`COUNT_RECEIVED`] (name: the tier), [`COUNT_DUPLICATE`] (name: "")
    /// or [`COUNT_RULE_ERROR`] (name: the rule file).
    pub rows: Vec<(i64, String, String, u64)>,
}

pub const COUNT_RECEIVED: &str = "received";
pub const COUNT_DUPLICATE: &str = "duplicate";
pub const COUNT_RULE_ERROR: &str = "rule_error";
/// Stored calls, outcomes and unknown hooks (name: the kind), counted apart
/// from received contacts (SPEC 11 "Counting").
pub const COUNT_HOOK: &str = "hook";
/// Stored `contact.rescored` events (name: the tier), not received contacts.
pub const COUNT_RESCORED: &str = "rescored";
const MINUTE_MS: i64 = 60_000;

/// The counter increments one `enqueue` makes: stored events by tier, the
/// rules that failed on them, and duplicates (at the time they arrived).
/// `events` pairs each event with whether it was stored (else a duplicate).
pub(crate) fn tally<'a>(
    events: impl IntoIterator<Item = (&'a NewEvent, bool)>,
    now: i64,
) -> Vec<(i64, &'static str, String, i64)> {
    let mut counts: std::collections::BTreeMap<(i64, &'static str, String), i64> = Default::default();
    for (event, stored) in events {
        // A rescored event not stored (superseded, or this job's already)
        // is no duplicate delivery of anyone's.
        if !stored && event.supersedes.is_some() {
            continue;
        }
        match stored {
            true if event.supersedes.is_some() => {
                let minute = event.received_at.div_euclid(MINUTE_MS) * MINUTE_MS;
                *counts
                    .entry((minute, COUNT_RESCORED, event.tier.clone()))
                    .or_default() += 1;
            }
            true => {
                let minute = event.received_at.div_euclid(MINUTE_MS) * MINUTE_MS;
                *counts
                    .entry((minute, COUNT_RECEIVED, event.tier.clone()))
                    .or_default() += 1;
                for rule in &event.error_rules {
                    *counts
                        .entry((minute, COUNT_RULE_ERROR, rule.clone()))
                        .or_default() += 1;
                }
            }
            false => {
                let minute = now.div_euclid(MINUTE_MS) * MINUTE_MS;
                *counts
                    .entry((minute, COUNT_DUPLICATE, String::new()))
                    .or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|((m, what, name), n)| (m, what, name, n))
        .collect()
}

/// The counter increments of stored hooks (by kind) and their duplicates.
pub(crate) fn tally_hooks<'a>(
    hooks: impl IntoIterator<Item = (&'a NewHook, bool)>,
    now: i64,
) -> Vec<(i64, &'static str, String, i64)> {
    let mut counts: std::collections::BTreeMap<(i64, &'static str, String), i64> = Default::default();
    for (hook, stored) in hooks {
        let key = match stored {
            true => (
                hook.received_at.div_euclid(MINUTE_MS) * MINUTE_MS,
                COUNT_HOOK,
                hook.kind.as_str().to_owned(),
            ),
            false => (
                now.div_euclid(MINUTE_MS) * MINUTE_MS,
                COUNT_DUPLICATE,
                String::new(),
            ),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((m, what, name), n)| (m, what, name, n))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take the write now (the sender should retry).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The durable queue and history behind ingest and delivery.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores the events of one request in one transaction, skipping
    /// duplicates inside the dedupe window; each stored event gets a
    /// pending delivery for each of its `destinations`. Returns once durable.
    async fn enqueue(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Enqueued>> {
        let items = events.into_iter().map(NewItem::Event).collect();
        Ok(self
            .store_items(items)
            .await?
            .into_iter()
            .filter_map(|stored| match stored {
                ItemStored::Event(enqueued) => Some(enqueued),
                ItemStored::Hook(_) => None,
            })
            .collect())
    }
    /// [`Self::enqueue`] for a request that may also hold calls, outcomes
    /// and unknown hooks (SPEC 11): all in one transaction, duplicates
    /// skipped; a hook links to its contact when the contact is known, and a
    /// contact links the hooks that were waiting for it. One answer per
    /// item, in order.
    async fn store_items(&self, items: Vec<NewItem>) -> StoreResult<Vec<ItemStored>>;
    /// Claims up to `limit` due deliveries of `destination` for `lease`,
    /// oldest first, never one whose contact has an earlier pending
    /// delivery or another one in flight at that destination.
    async fn claim_due(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records the outcome of an attempt, logs the attempt and releases the
    /// claim; records nothing when the claim no longer holds (its lease ran
    /// out and the delivery was claimed again).
    async fn record_attempt(
        &self,
        delivery: &ClaimedDelivery,
        outcome: AttemptOutcome,
        attempt: AttemptLog,
    ) -> StoreResult<()>;
    /// Deliveries newest first, optionally of one status and destination.
    async fn list_deliveries(&self, filter: DeliveryFilter, limit: usize) -> StoreResult<Vec<DeliveryInfo>>;
    /// Requeues an event's dead deliveries (of one destination, or all).
    async fn requeue(&self, event_id: &str, destination: Option<&str>) -> StoreResult<Requeue>;
    /// Requeues every dead delivery (of one destination, or all); returns
    /// how many.
    async fn requeue_dead(&self, destination: Option<&str>) -> StoreResult<u64>;
    /// An event's attempts (at one destination, or all), oldest first;
    /// `None` when the event has no such delivery.
    async fn attempts(
        &self,
        event_id: &str,
        destination: Option<&str>,
    ) -> StoreResult<Option<Vec<AttemptInfo>>>;
    /// Deletes the pending and dead deliveries of a destination (one removed
    /// from the destinations file); returns how many.
    async fn discard_deliveries(&self, destination: &str) -> StoreResult<u64>;
    /// Deliveries by status, all destinations (for `GET /stats`).
    async fn delivery_counts(&self) -> StoreResult<DeliveryCounts>;
    /// Pending and dead deliveries per destination (for `GET /metrics` and
    /// `GET /destinations`): its cost never grows with the delivered ones.
    async fn destination_backlogs(&self) -> StoreResult<Vec<(String, DeliveryBacklog)>>;
    /// Pending and dead deliveries of all destinations.
    async fn delivery_backlog(&self) -> StoreResult<DeliveryBacklog> {
        let mut total = DeliveryBacklog::default();
        for (_, backlog) in self.destination_backlogs().await? {
            total.pending += backlog.pending;
            total.dead += backlog.dead;
        }
        Ok(total)
    }
    /// Deletes events older than the retention whose delivery is finished.
    async fn prune(&self) -> StoreResult<Pruned>;
    /// A real (tiny) write, for readiness.
    async fn check_writable(&self) -> StoreResult<()>;
    /// The newest event's sequence number (0 when empty).
    async fn last_seq(&self) -> StoreResult<i64>;
    /// How many events a window holds.
    async fn count_events(&self, window: EventWindow) -> StoreResult<u64>;
    /// Up to `limit` events of the window after `after_seq`, in `seq` order:
    /// a backtest pages through the window with the last `seq` it got.
    async fn scan_events(
        &self,
        window: EventWindow,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// A contact's history (SPEC 10 "Contact timeline"): its events in the
    /// order received (at most `limit`), their deliveries and attempts.
    async fn contact_timeline(&self, contact_key: &str, limit: usize) -> StoreResult<ContactTimeline>;
    /// The contacts whose latest email is `email` (trimmed, lower-cased),
    /// most recently received first: their keys and latest event.
    async fn contacts_by_email(&self, email: &str, limit: usize) -> StoreResult<Vec<StoredEvent>>;
    /// The calls and outcomes linked to a contact, oldest first.
    async fn contact_hooks(&self, contact_key: &str, limit: usize) -> StoreResult<Vec<StoredHook>>;
    /// Starts a rescore job unless one is running: `Err(id)` names the
    /// running one. `owner` holds its lease until `lease_until` (unix ms).
    async fn start_rescore(
        &self,
        job: &RescoreJob,
        owner: &str,
        lease_until: i64,
    ) -> StoreResult<Result<(), String>>;
    /// A job by id.
    async fn rescore_job(&self, id: &str) -> StoreResult<Option<RescoreJob>>;
    /// The newest jobs, newest first (the console's overview).
    async fn recent_rescore_jobs(&self, limit: usize) -> StoreResult<Vec<RescoreJob>>;
    /// Saves a running job's progress (and state, when it ends) and renews
    /// the lease; `false` when `owner` no longer holds it (it was cancelled,
    /// or taken over after the lease ran out): the owner stops.
    async fn save_rescore(&self, job: &RescoreJob, owner: &str, lease_until: i64) -> StoreResult<bool>;
    /// Takes over the running job whose lease ran out, if any.
    async fn take_over_rescore(&self, owner: &str, lease_until: i64) -> StoreResult<Option<RescoreJob>>;
    /// Cancels a running job; the job as it stands, `None` when unknown.
    async fn cancel_rescore(&self, id: &str) -> StoreResult<Option<RescoreJob>>;
    /// Up to `limit` contacts first seen at or after `since_ms`, by the `seq`
    /// of their latest contact event (after `after_seq`, up to `up_to_seq`).
    async fn rescore_sources(
        &self,
        since_ms: i64,
        up_to_seq: i64,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<RescoreSource>>;
    /// The histories of these contacts (key, and the email of one being
    /// stored now), with calls received up to `until_ms`: those linked to
    /// the contact, and with an email, those waiting for a contact with it
    /// (they link when this one is stored).
    async fn contact_histories(
        &self,
        contacts: Vec<(String, Option<String>)>,
        until_ms: i64,
    ) -> StoreResult<std::collections::HashMap<String, ContactHistory>>;
    /// The newest `limit` events, newest first (the console's contact picker).
    async fn recent_events(&self, limit: usize) -> StoreResult<Vec<StoredEvent>>;
    /// One row per contact first seen at or after `since_ms` (SPEC 11): the
    /// result stored for its latest contact event and what its linked calls
    /// and outcomes say, in no particular order.
    async fn contact_outcomes(&self, since_ms: i64) -> StoreResult<Vec<crate::outcomes::ContactOutcome>>;
    /// The per-minute counters from `since_ms` on.
    async fn counters(&self, since_ms: i64) -> StoreResult<Counters>;
    /// The rate limit of a destination (SPEC 10): counted within this
    /// process, or shared by every instance of a shared store.
    fn rate_gate(
        &self,
        _destination: &str,
        limit: Option<crate::destinations::RateLimit>,
    ) -> Arc<dyn crate::destinations::rate::RateGate> {
        Arc::new(crate::destinations::rate::LocalRateGate::new(limit))
    }
    /// Called once when `serve` starts: frees the claims a crashed earlier
    /// run left behind, where the backend can know they were that run's.
    /// SQLite (one server per file) frees them all at once; a shared store
    /// lets their leases run out instead (other instances may hold them).
    async fn release_stale_claims(&self) -> StoreResult<u64> {
        Ok(0)
    }
    /// Called once when `serve` stops, after its last write: SQLite copies
    /// its write-ahead log into the database file and empties it, so that
    /// the file alone holds every commit (a copy of it is a whole backup)
    /// and the next start has no log to read. `false` when something kept
    /// the log from being emptied (it is then kept, and read at the next
    /// start: nothing is lost). Nothing to do for a server database.
    async fn close(&self) -> StoreResult<bool> {
        Ok(true)
    }
}

/// Opens the store a URL names: `sqlite://PATH` (relative or absolute,
/// `sqlite:///abs/path`) or `postgres://…` / `postgresql://…` (libpq's
/// parameters plus `schema=NAME` and `pool_size=N`; see [`postgres`]).
pub async fn open(url: &str, retention: Retention) -> StoreResult<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.into(),
                reason: "no file path after sqlite://".into(),
            });
        }
        let store = sqlite::SqliteStore::open(std::path::Path::new(path), retention)?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PostgresStore::open(url, retention).await?;
        return Ok(Arc::new(store));
    }
    Err(StoreError::InvalidUrl {
        url: redact_url(url),
        reason: "use sqlite://PATH or postgres://USER@HOST/DB".into(),
    })
}

/// Opens a store that must exist already: the one-shot commands read what
/// `serve` stored, and a mistyped `sqlite://` path must be an error, not a
/// new empty database.
pub async fn open_existing(url: &str, retention: Retention) -> StoreResult<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://")
        && !path.is_empty()
        && !std::path::Path::new(path).exists()
    {
        return Err(StoreError::InvalidUrl {
            url: url.into(),
            reason: format!("there is no store at {path} (`leadscore serve` creates it)"),
        });
    }
    open(url, retention).await
}

/// A URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A store error the caller may retry: `Unavailable` (503 at ingest).
pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The stored form of an idempotency key: 16 bytes of its SHA-256, a dense
/// index entry with a negligible collision chance (the same in every store).
pub(crate) fn key_digest(key: &str) -> [u8; 16] {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Up to [`ATTEMPT_BODY_BYTES`] of a response body, cut at a character
/// boundary.
pub fn truncate_body(body: &str) -> String {
    let mut end = body.len().min(ATTEMPT_BODY_BYTES);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_owned()
}

/// The contact id an event's `contact_key` (the id's JSON text) stands for.
pub(crate) fn contact_id_of(contact_key: &str) -> serde_json::Value {
    serde_json::from_str(contact_key).unwrap_or_else(|_| serde_json::Value::String(contact_key.to_owned()))
}

pub use crate::time::{format_ms, now_ms};

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored score reads back as the very number that was scored
    /// (serde_json's `float_roundtrip`): without it, one in a few thousand
    /// came back one unit in the last place off, and a backtest against the
    /// stored contacts saw unchanged rules change their scores.
    #[test]
    fn stored_scores_read_back_exactly() {
        for _ in 0..200_000 {
            let score = f64::from_bits(rand::random::<u64>() >> 2) * 1e-200;
            let value = rand::random::<f64>() * 10f64.powi(rand::random::<i32>().rem_euclid(12)) + score;
            let text = serde_json::to_string(&serde_json::json!({ "score": value })).unwrap();
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["score"].as_f64(), Some(value), "{text}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
