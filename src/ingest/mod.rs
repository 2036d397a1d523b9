//! Ingest: a webhook body becomes scored, durably stored events (SPEC 1, 4,
//! 4.1). Independent of HTTP: the HTTP layer hands in the body and the
//! sender's delivery id and maps [`IngestError`] to a status.

pub mod auth;
pub mod hooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::deliver::manager::Routes;
use crate::destinations::{Destinations, Selection};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::payload::{self, Contact, Element, JsonNode, PayloadError};
use crate::reload::LiveRules;
use crate::score::pool::ScoringPool;
use crate::score::{Points, RuleSet, ScoredContact, ScoringContext};
use crate::store::{
    ContactHistory, Enqueued, EventSummary, HookSummary, ItemStored, NewEvent, NewItem, Store, StoreError,
    now_ms,
};
use crate::telemetry;

/// The headers a sender may carry its delivery id in (SPEC 4.1), in order.
pub const DELIVERY_ID_HEADERS: [&str; 3] = ["webhook-id", "idempotency-key", "x-webhook-id"];

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// One contact's line in the ingest answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactResult {
    pub contact_id: Value,
    pub id: String,
    pub score: serde_json::Number,
    pub tier: String,
    pub disqualified: bool,
    pub duplicate: bool,
}

/// A call's, outcome's or unknown hook's line in the ingest answer (SPEC 11).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookResult {
    pub kind: &'static str,
    pub contact_id: Value,
    pub id: String,
    pub duplicate: bool,
    /// The linked contact's key (not answered; a rescore uses it).
    #[serde(skip)]
    pub contact_key: Option<String>,
}

/// One element's line in the ingest answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResultLine {
    Contact(ContactResult),
    Hook(HookResult),
}

impl ResultLine {
    /// The stored event's or hook's id (the first one's for a duplicate).
    pub fn id(&self) -> &str {
        match self {
            Self::Contact(c) => &c.id,
            Self::Hook(h) => &h.id,
        }
    }

    /// A contact's line; `None` for a hook's.
    pub fn contact(&self) -> Option<&ContactResult> {
        match self {
            Self::Contact(c) => Some(c),
            Self::Hook(_) => None,
        }
    }
}

/// The `200` body of `POST /webhooks/iclosed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestReply {
    /// Elements stored as new (contacts, calls, outcomes, unknown hooks).
    pub accepted: usize,
    /// Elements recognised as duplicates (not stored or forwarded again).
    pub duplicates: usize,
    pub results: Vec<ResultLine>,
}

pub struct Ingest {
    pub rules: Arc<LiveRules>,
    pub store: Arc<dyn Store>,
    /// The destinations in force: which select each event (SPEC 10), and
    /// the wake-ups of their workers.
    pub routes: Arc<Routes>,
    pub max_contacts: usize,
    /// Where rules run (off the async executor).
    pub pool: ScoringPool,
}

impl Ingest {
    /// Parses, scores and durably stores every contact of a body. Returns
    /// only once the store has committed them.
    pub async fn ingest(&self, body: Bytes, delivery_id: Option<String>) -> Result<IngestReply, IngestError> {
        let rules = self.rules.current();
        let max_contacts = self.max_contacts;
        let destinations = self.routes.current();
        let received_at = now_ms();
        // Rules that read `first_seen()` or `calls()` see what the store
        // knows of each contact: read first (the body is parsed twice then;
        // rule sets without them pay nothing).
        let histories = match rules.uses_history() {
            true => {
                let text = body.clone();
                let keys = self
                    .pool
                    .run(move || contact_keys(&text, max_contacts))
                    .await
                    .map_err(|e| IngestError::Internal(e.to_string()))??;
                self.store.contact_histories(keys, received_at).await?
            }
            false => HashMap::new(),
        };
        let prepared = self
            .pool
            .run(move || {
                let request = Request {
                    body: &body,
                    max_contacts,
                    delivery_id: delivery_id.as_deref(),
                    received_at,
                    histories: &histories,
                };
                prepare(&rules, &request, &destinations)
            })
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))??;
        let timings: Vec<_> = prepared.iter().map(|p| p.1).collect();
        let items: Vec<NewItem> = prepared.into_iter().map(|p| p.0).collect();
        let mut selected: Vec<String> = items
            .iter()
            .filter_map(|item| match item {
                NewItem::Event(e) => Some(e.destinations.iter().cloned()),
                NewItem::Hook(_) => None,
            })
            .flatten()
            .collect();
        let stored = self.store.store_items(items).await?;
        let mut reply = IngestReply {
            accepted: 0,
            duplicates: 0,
            results: Vec::with_capacity(stored.len()),
        };
        for (outcome, scoring) in stored.into_iter().zip(timings) {
            let line = match outcome {
                ItemStored::Event(Enqueued::Stored(s)) => result_line(s, false, scoring),
                ItemStored::Event(Enqueued::Duplicate(s)) => result_line(s, true, scoring),
                ItemStored::Hook(hook) => hook_line(hook),
                // Only rescored events have a condition to fail.
                ItemStored::Event(Enqueued::Superseded) => {
                    return Err(IngestError::Internal("a received contact was not stored".into()));
                }
            };
            let duplicate = match &line {
                ResultLine::Contact(c) => c.duplicate,
                ResultLine::Hook(h) => h.duplicate,
            };
            if duplicate {
                reply.duplicates += 1;
            } else {
                reply.accepted += 1;
            }
            reply.results.push(line);
        }
        if reply.accepted > 0 {
            selected.sort_unstable();
            selected.dedup();
            for destination in &selected {
                self.routes.wake(destination);
            }
        }
        Ok(reply)
    }

    /// `POST /score`: the same checks, scored with the live rules, nothing
    /// stored; with `trace`, each result has its trace (SPEC 13).
    pub async fn dry_run(&self, body: Bytes, trace: bool) -> Result<Vec<ScoredContact>, IngestError> {
        let rules = self.rules.current();
        let max_contacts = self.max_contacts;
        self.pool
            .run(move || {
                let contacts = payload::parse_body(&body, max_contacts)?;
                Ok(contacts
                    .iter()
                    .map(|c| {
                        // SPEC 12: the current time, no calls, first seen now.
                        let at = ScoringContext::at(SystemTime::now());
                        match trace {
                            true => rules.score_traced(c, &at),
                            false => rules.score(c, None, &at),
                        }
                    })
                    .collect())
            })
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?
    }
}

fn hook_line(hook: HookSummary) -> ResultLine {
    telemetry::hook_received(hook.kind.as_str(), &hook.id, &hook.contact_id, hook.duplicate);
    ResultLine::Hook(HookResult {
        kind: hook.kind.as_str(),
        contact_id: hook.contact_id,
        id: hook.id,
        duplicate: hook.duplicate,
        contact_key: hook.contact_key,
    })
}

fn result_line(summary: EventSummary, duplicate: bool, scoring: std::time::Duration) -> ResultLine {
    let contact_text = match &summary.contact_id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    telemetry::contact_ingested(
        &contact_text,
        &summary.id,
        &summary.score,
        &summary.tier,
        duplicate,
        scoring,
    );
    ResultLine::Contact(ContactResult {
        contact_id: summary.contact_id,
        id: summary.id,
        score: summary.score,
        tier: summary.tier,
        disqualified: summary.disqualified,
        duplicate,
    })
}

/// The keys and emails of a body's contacts (blocking: parses it).
fn contact_keys(body: &[u8], max_contacts: usize) -> Result<Vec<(String, Option<String>)>, PayloadError> {
    Ok(payload::parse_webhook(body, max_contacts)?
        .into_iter()
        .filter_map(|element| match element {
            Element::Contact(contact) => {
                let email = contact.email();
                Some((contact.key, email))
            }
            Element::Hook(_) => None,
        })
        .collect())
}

/// One webhook request as [`prepare`] takes it.
struct Request<'a> {
    body: &'a [u8],
    max_contacts: usize,
    delivery_id: Option<&'a str>,
    /// When it was received (unix ms): the scoring time (SPEC 12).
    received_at: i64,
    /// What the store knows of its contacts, when the rules read it.
    histories: &'a HashMap<String, ContactHistory>,
}

/// Parses a body and scores its contacts into events; calls, outcomes and
/// unknown hooks become hooks to store (blocking: runs the rules).
fn prepare(
    rules: &RuleSet,
    request: &Request<'_>,
    destinations: &Destinations,
) -> Result<Vec<(NewItem, std::time::Duration)>, PayloadError> {
    let Request {
        body,
        max_contacts,
        delivery_id,
        received_at,
        histories,
    } = *request;
    let elements = payload::parse_webhook(body, max_contacts)?;
    let now = crate::time::from_unix_ms(received_at);
    Ok(elements
        .iter()
        .map(|element| {
            let contact = match element {
                Element::Contact(contact) => contact,
                Element::Hook(hook) => {
                    let hook = hooks::new_hook(hook, delivery_id, received_at);
                    return (NewItem::Hook(hook), std::time::Duration::ZERO);
                }
            };
            let started = Instant::now();
            let event_id = new_event_id();
            let at = crate::rescore::context_of(histories.get(&contact.key), now);
            let scored = if telemetry::sample_rule_times() {
                let (outcome, times) = rules.evaluate_timed(contact, &at);
                telemetry::rule_times(&times);
                rules.scored_contact(contact, outcome, Some(event_id.clone()), &at)
            } else {
                rules.score(contact, Some(event_id.clone()), &at)
            };
            let elapsed = started.elapsed();
            telemetry::scoring_time(elapsed);
            for failure in &scored.errors {
                telemetry::rule_error(&failure.rule, &contact.id_text(), &failure.error);
            }
            let contact_key = contact.key.clone();
            let event = NewEvent {
                idempotency_key: idempotency_key(contact, &contact_key, delivery_id),
                event_id,
                contact_key,
                contact_id: contact.id.clone(),
                received_at,
                score: score_number(scored.score),
                tier: scored.tier.clone(),
                disqualified: scored.disqualified,
                rules_version: scored.rules_version.clone(),
                body: serde_json::to_string(&scored).unwrap_or_default(),
                error_rules: scored.errors.iter().map(|e| e.rule.clone()).collect(),
                destinations: select(destinations, &scored),
                email: contact.email(),
                supersedes: None,
            };
            (NewItem::Event(event), elapsed)
        })
        .collect())
}

/// The destinations that take a scored event (SPEC 10): evaluated here,
/// where the event is scored, so that its deliveries commit with it. The
/// event is turned into a value only when some destination has a `when`.
fn select(destinations: &Destinations, scored: &ScoredContact) -> Vec<String> {
    if destinations.iter().all(|d| d.when.is_none()) {
        return destinations.iter().map(|d| d.name.clone()).collect();
    }
    select_event(destinations, &serde_json::to_value(scored).unwrap_or_default())
}

/// The destinations whose `when` selects this event (a `when` that fails
/// selects it, and is counted).
pub fn select_event(destinations: &Destinations, event: &Value) -> Vec<String> {
    destinations
        .iter()
        .filter(|destination| match destination.select(event) {
            Selection::Selected => true,
            Selection::NotSelected => false,
            Selection::SelectedAfterError(error) => {
                telemetry::when_failed(&destination.name, &error);
                true
            }
        })
        .map(|destination| destination.name.clone())
        .collect()
}

/// A new event id: `evt_` and a time-ordered UUID (v7) in hex. Its random
/// part comes from the thread's generator (`uuid::Uuid::now_v7` asks the
/// kernel for it: a system call per event).
pub fn new_event_id() -> String {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &rand::random::<[u8; 10]>()).into_uuid();
    format!("evt_{}", uuid.simple())
}

pub fn score_number(points: Points) -> serde_json::Number {
    match points {
        Points::Int(i) => i.into(),
        Points::Float(f) => serde_json::Number::from_f64(f).unwrap_or_else(|| 0.into()),
    }
}

/// SPEC 4.1: the sender's delivery id combined with the contact id, else a
/// digest of the contact's canonical JSON.
pub fn idempotency_key(contact: &Contact, contact_key: &str, delivery_id: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    match delivery_id {
        Some(id) => {
            hasher.update(b"delivery\0");
            hasher.update(id.as_bytes());
            hasher.update(b"\0");
            hasher.update(contact_key.as_bytes());
        }
        None => {
            hasher.update(b"content\0");
            // The canonical JSON writes numbers as 64-bit floats: an id that
            // one cannot hold exactly goes in by its exact text as well.
            if contact.id.as_number().is_some_and(serde_json::Number::is_f64) {
                hasher.update(contact_key.as_bytes());
                hasher.update(b"\0");
            }
            // Written out first and hashed in one call: hashing the many
            // small pieces one by one cost several times as much.
            let mut canonical = Vec::with_capacity(contact.raw.get().len());
            write_canonical(contact.root(), &mut canonical);
            hasher.update(&canonical);
        }
    }
    hex::encode(hasher.finalize())
}

/// Writes the canonical JSON of a value (object keys sorted, no spaces), so
/// that key order and layout do not change the digest.
pub(crate) fn write_canonical(value: JsonNode<'_>, out: &mut Vec<u8>) {
    write_canonical_with(value, out, &mut Vec::new());
}

/// [`write_canonical`] with one buffer for the sorted keys of every object
/// (each object's keys sit at its end while it is written): a vector per
/// object and a serializer per string were most of the digest's time.
/// Keys are sorted by their first eight bytes as one number, then (on a
/// tie) by the whole text: the same order as comparing the texts, with
/// most comparisons one instruction instead of a `memcmp` call.
fn write_canonical_with<'a>(
    value: JsonNode<'a>,
    out: &mut Vec<u8>,
    keys: &mut Vec<(u64, &'a str, JsonNode<'a>)>,
) {
    if let Some(members) = value.members() {
        let start = keys.len();
        keys.extend(members.map(|(k, v)| (key_head(k), k, v)));
        keys[start..].sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        out.push(b'{');
        for i in start..keys.len() {
            let (_, key, item) = keys[i];
            if i > start {
                out.push(b',');
            }
            write_string(key, out);
            out.push(b':');
            write_canonical_with(item, out, keys);
        }
        keys.truncate(start);
        out.push(b'}');
    } else if let Some(items) = value.items() {
        out.push(b'[');
        for (i, item) in items.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_canonical_with(item, out, keys);
        }
        out.push(b']');
    } else if let Some(text) = value.as_str() {
        write_string(text, out);
    } else if let Some(n) = value.as_number() {
        // A number is its value, however it was written: `1`, `1.0`, `1e0`
        // and `-0` are the integer they equal (exactly representable up to
        // 2^53; larger floats keep serde_json's shortest form).
        match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                out.extend_from_slice((f as i64).to_string().as_bytes());
            }
            _ => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        }
    } else {
        out.extend_from_slice(match value.as_bool() {
            Some(true) => b"true",
            Some(false) => b"false",
            None => b"null",
        });
    }
}

/// A key's first eight bytes (zeros after a shorter one) as a big-endian
/// number: numbers compare as the bytes do, and a shorter key sorts before
/// any longer one it begins.
fn key_head(key: &str) -> u64 {
    let mut head = [0u8; 8];
    let n = key.len().min(8);
    head[..n].copy_from_slice(&key.as_bytes()[..n]);
    u64::from_be_bytes(head)
}

/// A JSON string exactly as serde_json writes it: most need no escape
/// (serde_json escapes only `"`, `\` and control characters), so those are
/// copied as they are.
fn write_string(text: &str, out: &mut Vec<u8>) {
    if needs_escape(text.as_bytes()) {
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Whether a string has a byte JSON must escape: a control character, `"`
/// or a backslash. Eight bytes at a time, as one 64-bit word (a byte-wise
/// `any` was half of the digest's time on contacts of long strings; a
/// 16-byte fold, which the compiler did not vectorize, cost about 12
/// instructions a byte: BENCHMARKS.md, session 14). In `any_below`, a
/// byte's high bit ends up set when that byte is below `n`; a borrow can
/// only spill into the bytes above one that is, so "some byte is" is exact.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Some byte of `word` is below `n` (for n ≤ 128).
    let any_below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let any_equal = |word: u64, b: u8| any_below(word ^ (ONES * u64::from(b)), 1);
    let mut words = bytes.chunks_exact(8);
    let found = words.by_ref().any(|chunk| {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        (any_below(word, 0x20) | any_equal(word, b'"') | any_equal(word, b'\\')) != 0
    });
    found
        || words
            .remainder()
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_found_anywhere_in_a_string() {
        for len in [0, 1, 15, 16, 17, 40] {
            let plain = "a".repeat(len);
            assert!(!needs_escape(plain.as_bytes()), "{len}");
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}'] {
                    let mut text: Vec<char> = plain.chars().collect();
                    text[at] = special;
                    let text: String = text.into_iter().collect();
                    assert!(needs_escape(text.as_bytes()), "{len} {at} {special:?}");
                }
            }
        }
        assert!(!needs_escape("ünïcödé ✓ </script>".as_bytes()));
    }

    #[test]
    fn every_byte_value_is_judged_as_serde_json_escapes_it() {
        for len in [1, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let escaped = byte < 0x20 || byte == b'"' || byte == b'\\';
                    assert_eq!(needs_escape(&bytes), escaped, "{len} {at} {byte:#04x}");
                    // A NUL is found beside any byte (no borrow hides it).
                    bytes[(at + 1) % len] = 0x00;
                    assert!(needs_escape(&bytes), "{len} {at} {byte:#04x} beside a NUL");
                }
            }
        }
    }

    fn contact(text: &str) -> Contact {
        payload::parse_body(text.as_bytes(), 10).unwrap().remove(0)
    }

    #[test]
    fn content_keys_ignore_layout_and_key_order() {
        let a = contact(r#"{"id": 1, "status": "POTENTIAL", "q": {"a": 1, "b": [1, 2]}}"#);
        let b = contact(r#"{"q":{"b":[1,2],"a":1},"status":"POTENTIAL","id":1}"#);
        let c = contact(r#"{"id": 1, "status": "QUALIFIED", "q": {"a": 1, "b": [1, 2]}}"#);
        assert_eq!(idempotency_key(&a, "1", None), idempotency_key(&b, "1", None));
        assert_ne!(idempotency_key(&a, "1", None), idempotency_key(&c, "1", None));
    }

    #[test]
    fn canonical_json_is_what_serde_json_writes_for_sorted_keys() {
        let text = r#"{"z": [1, -2, 3.5, 1e300, true, null, "a\"b\\c\u0001\n", {"b": {}, "a": []}],
                       "a": "ünïcödé ✓ </script>", "m": {"y": 2, "x": {"k": "v"}}, "": 0,
                       "first_utm_source": 1, "first_utm_medium": 2, "first_ut": 3, "first_u": 4,
                       "first_ut\u0000": 5, "first_utm": 6, "ünïcödé": 7, "ü": 8, "zzzzzzzzz": 9,
                       "zzzzzzzz": 10, "~": 11, "\u007f": 12}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let mut ours = Vec::new();
        write_canonical(payload::JsonTree::parse(text).unwrap().root(), &mut ours);
        // serde_json without preserved order would sort; sort by hand here.
        fn sorted(value: &Value) -> Value {
            match value {
                Value::Object(map) => {
                    let mut entries: Vec<_> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
                }
                Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
                other => other.clone(),
            }
        }
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(&sorted(&value)).unwrap()
        );
        // Real contacts too: the digest of a stored contact must not change
        // from one version to the next, or dedupe would miss a retry sent
        // across an upgrade.
        for line in include_str!("../../benches/data/contacts-1000-seed7.jsonl").lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            let mut ours = Vec::new();
            write_canonical(payload::JsonTree::parse(line).unwrap().root(), &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&sorted(&value)).unwrap()
            );
        }
    }

    #[test]
    fn content_keys_compare_numbers_by_value() {
        let key = |text: &str| idempotency_key(&contact(text), "1", None);
        let one = key(r#"{"id": 1, "n": 1}"#);
        assert_eq!(key(r#"{"id": 1, "n": 1.0}"#), one);
        assert_eq!(key(r#"{"id": 1, "n": 1e0}"#), one);
        assert_eq!(key(r#"{"id": 1, "n": 10e-1}"#), one);
        assert_ne!(key(r#"{"id": 1, "n": 1.5}"#), one);
        assert_eq!(key(r#"{"id": 1, "n": 1.5}"#), key(r#"{"id": 1, "n": 15e-1}"#));
        assert_eq!(key(r#"{"id": 1, "n": -0.0}"#), key(r#"{"id": 1, "n": 0}"#));
        assert_eq!(key(r#"{"id": 1, "n": 1e300}"#), key(r#"{"id": 1, "n": 1.0e300}"#));
    }

    #[test]
    fn event_ids_are_time_ordered_uuids() {
        let before = uuid::Uuid::now_v7();
        let id = new_event_id();
        let parsed = uuid::Uuid::parse_str(id.strip_prefix("evt_").unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        let (secs, _) = parsed.get_timestamp().unwrap().to_unix();
        let (before_secs, _) = before.get_timestamp().unwrap().to_unix();
        assert!(
            secs >= before_secs && secs <= before_secs + 5,
            "{secs} vs {before_secs}"
        );
        assert_ne!(new_event_id(), new_event_id());
    }

    #[test]
    fn delivery_ids_combine_with_the_contact() {
        let a = contact(r#"{"id": 1}"#);
        let b = contact(r#"{"id": 2}"#);
        assert_eq!(
            idempotency_key(&a, "1", Some("msg_1")),
            idempotency_key(&a, "1", Some("msg_1"))
        );
        assert_ne!(
            idempotency_key(&a, "1", Some("msg_1")),
            idempotency_key(&b, "2", Some("msg_1"))
        );
        assert_ne!(
            idempotency_key(&a, "1", Some("msg_1")),
            idempotency_key(&a, "1", Some("msg_2"))
        );
        assert_ne!(
            idempotency_key(&a, "1", Some("msg_1")),
            idempotency_key(&a, "1", None)
        );
    }
}
