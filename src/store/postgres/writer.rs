//! The writer task: every ingest and delivery record of this instance in
//! group commits (see the module doc of [`super`]).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use futures_util::future::{try_join, try_join_all};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Statement};

use super::pool::{PgError, connect, describe, transient};
use super::sql::{
    COUNT, FIND_FIRST_EVENTS, FIND_HOOK, HEARTBEAT, INSERT_EVENTS, INSERT_HOOK, LINK_BY_EMAIL, LINK_BY_REF,
    LINK_OF_EMAIL, LINK_OF_REF, RECORD_ATTEMPTS, REPAIR_KEY, UPSERT_KEYS, lock_contacts_sql,
};
use super::tls::MakeRustls;
use super::{MAX_GROUP, OP_TIMEOUT, TRANSIENT_RETRIES};
use crate::store::reply::{Done, ReplyTo};
use crate::store::{
    AttemptLog, AttemptOutcome, Enqueued, EventSummary, HookSummary, ItemStored, NewEvent, NewHook, NewItem,
    OutcomeColumns, Retention, contact_id_of, key_digest, now_ms, tally, tally_hooks,
};

/// What one queued write does.
pub(super) enum Work {
    Enqueue {
        items: Vec<NewItem>,
    },
    Record {
        seq: i64,
        destination: String,
        claim: i64,
        outcome: AttemptOutcome,
        attempt: AttemptLog,
    },
    Touch,
}

pub(super) struct WriteOp {
    pub(super) work: Work,
    pub(super) reply: ReplyTo,
}

/// Splits items into layers such that no layer holds one key twice: the
/// n-th occurrence of a key goes to layer n. Each layer lists item indexes
/// sorted by key (the order locks are taken in, the same on every instance).
fn layers<K: Ord + Hash + Clone>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<K, usize> = HashMap::new();
    let mut layers: Vec<Vec<usize>> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let n = seen.entry(key.clone()).or_insert(0);
        if layers.len() <= *n {
            layers.push(Vec::new());
        }
        layers[*n].push(i);
        *n += 1;
    }
    for layer in &mut layers {
        layer.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
    }
    layers
}

/// The writer's connection and its statements.
pub(super) struct WriterConn {
    client: Client,
    upsert_keys: Statement,
    insert_events: Statement,
    find_first: Statement,
    repair_key: Statement,
    record: Statement,
    heartbeat: Statement,
    count: Statement,
    lock_contacts: Statement,
    link_by_ref: Statement,
    link_by_email: Statement,
}

impl WriterConn {
    async fn open(config: &Config, tls: &MakeRustls) -> Result<Self, String> {
        let client = connect(config, tls).await?;
        let lock_contacts = lock_contacts_sql();
        let prepared = try_join_all(
            [
                UPSERT_KEYS,
                INSERT_EVENTS,
                FIND_FIRST_EVENTS,
                REPAIR_KEY,
                RECORD_ATTEMPTS,
                HEARTBEAT,
                COUNT,
                &lock_contacts,
                LINK_BY_REF,
                LINK_BY_EMAIL,
            ]
            .map(|sql| client.prepare(sql)),
        )
        .await
        .map_err(|e| format!("cannot prepare the writer's statements: {}", describe(&e)))?;
        let mut it = prepared.into_iter();
        let mut next = || it.next().expect("ten statements");
        Ok(Self {
            upsert_keys: next(),
            insert_events: next(),
            find_first: next(),
            repair_key: next(),
            record: next(),
            heartbeat: next(),
            count: next(),
            lock_contacts: next(),
            link_by_ref: next(),
            link_by_email: next(),
            client,
        })
    }
}

/// Why a transaction failed.
enum TxError {
    /// The connection is gone or unusable: every operation fails now.
    Connection(String),
    /// A deadlock or serialization failure: run it again.
    Transient(String),
    /// A statement failed: one of the operations is at fault.
    Statement(String),
}

pub(super) struct Writer {
    pub(super) config: Config,
    pub(super) tls: MakeRustls,
    pub(super) conn: Option<WriterConn>,
    pub(super) retention: Retention,
    pub(super) instance: String,
    pub(super) started_at: i64,
}

/// One event of a group, flattened.
struct Flat<'a> {
    op: usize,
    /// Its place among the operation's items.
    pos: usize,
    event: &'a NewEvent,
    key: [u8; 16],
}

fn parse_number(text: &str) -> serde_json::Number {
    serde_json::from_str(text).unwrap_or_else(|_| 0.into())
}

/// The event stored first under a key.
fn summary_of(row: &Row) -> EventSummary {
    EventSummary {
        id: row.get(1),
        contact_id: contact_id_of(row.get(2)),
        score: parse_number(row.get(3)),
        tier: row.get(4),
        disqualified: row.get(5),
    }
}

/// The columns of [`INSERT_EVENTS`].
#[derive(Default)]
struct EventColumns<'a> {
    id: Vec<&'a str>,
    contact_key: Vec<&'a str>,
    received_at: Vec<i64>,
    score: Vec<String>,
    tier: Vec<&'a str>,
    disqualified: Vec<bool>,
    rules_version: Vec<&'a str>,
    body: Vec<&'a str>,
    email: Vec<Option<&'a str>>,
    kind: Vec<&'static str>,
    /// (event id, destination) of each delivery.
    delivery_event: Vec<&'a str>,
    delivery_destination: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, flat: &Flat<'a>) {
        let e = flat.event;
        self.id.push(&e.event_id);
        self.contact_key.push(&e.contact_key);
        self.received_at.push(e.received_at);
        self.score.push(e.score.to_string());
        self.tier.push(&e.tier);
        self.disqualified.push(e.disqualified);
        self.rules_version.push(&e.rules_version);
        self.body.push(&e.body);
        self.email.push(e.email.as_deref());
        self.kind.push(if e.supersedes.is_some() {
            "rescored"
        } else {
            "contact"
        });
        for destination in &e.destinations {
            self.delivery_event.push(&e.event_id);
            self.delivery_destination.push(destination);
        }
    }

    fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.id,
            &self.contact_key,
            &self.received_at,
            &self.score,
            &self.tier,
            &self.disqualified,
            &self.rules_version,
            &self.body,
            &self.delivery_event,
            &self.delivery_destination,
            &self.email,
            &self.kind,
        ]
    }
}

/// The columns of [`RECORD_ATTEMPTS`].
#[derive(Default)]
struct RecordColumns<'a> {
    seq: Vec<i64>,
    destination: Vec<&'a str>,
    status: Vec<&'static str>,
    last_status: Vec<Option<i32>>,
    error: Vec<Option<&'a str>>,
    next_attempt_at: Vec<Option<i64>>,
    delivered_at: Vec<Option<i64>>,
    claim: Vec<i64>,
    at: Vec<i64>,
    latency_ms: Vec<i64>,
    response_body: Vec<Option<&'a str>>,
    attempt_status: Vec<Option<i32>>,
    attempt_error: Vec<Option<&'a str>>,
}

/// One attempt to record: which delivery, under which claim, and how it went.
struct Record<'a> {
    seq: i64,
    destination: &'a str,
    claim: i64,
    outcome: &'a AttemptOutcome,
    attempt: &'a AttemptLog,
}

impl<'a> RecordColumns<'a> {
    fn push(&mut self, record: &Record<'a>, now: i64) {
        let OutcomeColumns {
            status,
            last_status,
            last_error: error,
            next_attempt_at,
            delivered_at,
        } = record.outcome.columns(now);
        self.seq.push(record.seq);
        self.destination.push(record.destination);
        self.status.push(status);
        self.last_status.push(last_status.map(i32::from));
        self.error.push(error);
        self.next_attempt_at.push(next_attempt_at);
        self.delivered_at.push(delivered_at);
        self.claim.push(record.claim);
        self.at.push(record.attempt.at);
        self.latency_ms
            .push(record.attempt.latency_ms.min(i64::MAX as u64) as i64);
        self.response_body.push(record.attempt.response_body.as_deref());
        self.attempt_status.push(record.attempt.status.map(i32::from));
        self.attempt_error.push(record.attempt.error.as_deref());
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.seq,
            &self.destination,
            &self.status,
            &self.last_status,
            &self.error,
            &self.next_attempt_at,
            &self.delivered_at,
            &self.claim,
            &self.at,
            &self.latency_ms,
            &self.response_body,
            &self.attempt_status,
            &self.attempt_error,
        ]
    }
}

impl Writer {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.recv().await {
            group.push(first);
            // Whatever queued while the last transaction ran joins this one.
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            // A caller that gave up (its deadline passed) is not written for.
            group.retain(|op| !op.reply.is_closed());
            if !group.is_empty() {
                self.apply_group(&mut group).await;
            }
            group.clear();
        }
    }

    /// Applies the group in one transaction; should a statement fail, each
    /// operation is applied again alone, so that one bad operation never
    /// fails the others.
    async fn apply_group(&mut self, group: &mut Vec<WriteOp>) {
        let works: Vec<&Work> = group.iter().map(|op| &op.work).collect();
        let result = self.transaction_with_retries(&works).await;
        let failure = match result {
            Ok(done) => {
                for (op, done) in group.drain(..).zip(done) {
                    done.send(op.reply);
                }
                return;
            }
            Err(TxError::Statement(e)) if group.len() > 1 => {
                tracing::warn!(error = %e, operations = group.len(), "a grouped write failed; applying its operations one by one");
                None
            }
            Err(TxError::Connection(e) | TxError::Transient(e) | TxError::Statement(e)) => Some(e),
        };
        if let Some(e) = failure {
            for op in group.drain(..) {
                Done::Failed(e.clone()).send(op.reply);
            }
            return;
        }
        for op in group.drain(..) {
            let result = self.transaction_with_retries(&[&op.work]).await;
            let done = match result {
                Ok(mut done) => done.pop().unwrap_or(Done::Unit),
                Err(TxError::Connection(e) | TxError::Transient(e) | TxError::Statement(e)) => {
                    Done::Failed(e)
                }
            };
            done.send(op.reply);
        }
    }

    async fn transaction_with_retries(&mut self, works: &[&Work]) -> Result<Vec<Done>, TxError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transaction(works).await {
                Err(TxError::Transient(e)) if attempt < TRANSIENT_RETRIES => {
                    tracing::debug!(error = %e, attempt, "a write transaction lost a lock race; running it again");
                }
                other => return other,
            }
        }
    }

    async fn transaction(&mut self, works: &[&Work]) -> Result<Vec<Done>, TxError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(
                WriterConn::open(&self.config, &self.tls)
                    .await
                    .map_err(TxError::Connection)?,
            );
        }
        let conn = self.conn.as_ref().expect("connected above");
        let window_start = now_ms() - self.retention.dedupe_window.as_millis().min(i64::MAX as u128) as i64;
        let heartbeat = (self.instance.as_str(), self.started_at);
        let result = tokio::time::timeout(OP_TIMEOUT, apply(conn, works, window_start, heartbeat)).await;
        match result {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => {
                let text = describe(&e);
                if conn.client.is_closed() || e.as_db_error().is_none() {
                    self.conn = None;
                    return Err(TxError::Connection(format!(
                        "lost the connection to PostgreSQL: {text}"
                    )));
                }
                if conn.client.batch_execute("ROLLBACK").await.is_err() {
                    self.conn = None;
                    return Err(TxError::Connection(text));
                }
                Err(if transient(&e) {
                    TxError::Transient(text)
                } else {
                    TxError::Statement(text)
                })
            }
            Err(_) => {
                // The transaction's state is unknown: drop the connection
                // (the server rolls back what did not commit).
                self.conn = None;
                Err(TxError::Connection("PostgreSQL did not answer in time".into()))
            }
        }
    }
}

/// One transaction for a group of operations; see the module doc.
async fn apply(
    conn: &WriterConn,
    works: &[&Work],
    window_start: i64,
    heartbeat: (&str, i64),
) -> Result<Vec<Done>, PgError> {
    let now = now_ms();
    let client = &conn.client;

    // Flatten: records, events, touches.
    let mut records: Vec<Record> = Vec::new();
    let mut flats: Vec<Flat> = Vec::new();
    let mut hooks: Vec<(usize, usize, &NewHook)> = Vec::new();
    let mut rescored: Vec<Flat> = Vec::new();
    let mut touch = false;
    for (op, work) in works.iter().enumerate() {
        match work {
            Work::Enqueue { items } => {
                for (pos, item) in items.iter().enumerate() {
                    match item {
                        NewItem::Event(event) => {
                            let flat = Flat {
                                op,
                                pos,
                                event,
                                key: key_digest(&event.idempotency_key),
                            };
                            match event.supersedes {
                                Some(_) => rescored.push(flat),
                                None => flats.push(flat),
                            }
                        }
                        NewItem::Hook(hook) => hooks.push((op, pos, hook)),
                    }
                }
            }
            Work::Record {
                seq,
                destination,
                claim,
                outcome,
                attempt,
            } => records.push(Record {
                seq: *seq,
                destination,
                claim: *claim,
                outcome,
                attempt,
            }),
            Work::Touch => touch = true,
        }
    }

    // Round trip 1: BEGIN, the delivery records (event rows locked in id
    // order), the idempotency keys (key rows locked in key order).
    let record_ids: Vec<(i64, &str)> = records.iter().map(|r| (r.seq, r.destination)).collect();
    let record_columns: Vec<RecordColumns> = layers(&record_ids)
        .into_iter()
        .map(|layer| {
            let mut columns = RecordColumns::default();
            for i in layer {
                columns.push(&records[i], now);
            }
            columns
        })
        .collect();
    let record_params: Vec<[&(dyn ToSql + Sync); 13]> =
        record_columns.iter().map(RecordColumns::params).collect();
    let flat_keys: Vec<[u8; 16]> = flats.iter().map(|f| f.key).collect();
    let key_layers = layers(&flat_keys);
    type KeyColumns<'a> = (Vec<&'a [u8]>, Vec<&'a str>, Vec<i64>);
    let key_columns: Vec<KeyColumns> = key_layers
        .iter()
        .map(|layer| {
            (
                layer.iter().map(|&i| &flats[i].key[..]).collect(),
                layer.iter().map(|&i| flats[i].event.event_id.as_str()).collect(),
                layer.iter().map(|&i| flats[i].event.received_at).collect(),
            )
        })
        .collect();
    let key_params: Vec<[&(dyn ToSql + Sync); 4]> = key_columns
        .iter()
        .map(|(k, e, c)| -> [&(dyn ToSql + Sync); 4] { [k, e, c, &window_start] })
        .collect();
    // The contacts' locks, and those of the emails, contact references and
    // keys of hooks: a hook and the contact it links to are never written
    // by two instances at once (so neither misses the other's row).
    let mut lock_names: Vec<String> = flats.iter().map(|f| f.event.contact_key.clone()).collect();
    for flat in &flats {
        if let Some(email) = &flat.event.email {
            lock_names.push(format!("@{email}"));
        }
    }
    for flat in &rescored {
        lock_names.push(flat.event.contact_key.clone());
    }
    for (_, _, hook) in &hooks {
        lock_names.push(format!("#{}", hex::encode(key_digest(&hook.idempotency_key))));
        if let Some(email) = &hook.email {
            lock_names.push(format!("@{email}"));
        }
        if let Some(reference) = &hook.contact_ref {
            lock_names.push(reference.clone());
            lock_names.push(serde_json::Value::String(reference.clone()).to_string());
        }
    }
    let lock_params: [&(dyn ToSql + Sync); 1] = [&lock_names];
    let mut round_one = Vec::new();
    // First the contacts' locks (before any key or row lock, in the same
    // order everywhere, so no two writers deadlock), then the records.
    if !lock_names.is_empty() {
        round_one.push(client.query(&conn.lock_contacts, &lock_params));
    }
    let lock_results = usize::from(!lock_names.is_empty());
    for params in &record_params {
        round_one.push(client.query(&conn.record, params));
    }
    for params in &key_params {
        round_one.push(client.query(&conn.upsert_keys, params));
    }
    let (_, results) = try_join(client.batch_execute("BEGIN"), try_join_all(round_one)).await?;
    let mut owned = vec![false; flats.len()];
    for (layer, rows) in key_layers
        .iter()
        .zip(&results[lock_results + record_params.len()..])
    {
        let taken: HashSet<&[u8]> = rows.iter().map(|r| r.get::<_, &[u8]>(0)).collect();
        for &i in layer {
            owned[i] = taken.contains(&flats[i].key[..]);
        }
    }

    // Round trip 2: the new events (in arrival order: per-contact order),
    // the first events of the duplicates, the heartbeat; COMMIT too when
    // no duplicate can need a repair.
    let mut columns = EventColumns::default();
    for (i, flat) in flats.iter().enumerate() {
        if owned[i] {
            columns.push(flat);
        }
    }
    let dup_keys: Vec<[u8; 16]> = {
        let mut seen = HashSet::new();
        flats
            .iter()
            .zip(&owned)
            .filter(|(f, owned)| !**owned && seen.insert(f.key))
            .map(|(f, _)| f.key)
            .collect()
    };
    let event_params = columns.params();
    let dup_key_refs: Vec<&[u8]> = dup_keys.iter().map(|k| &k[..]).collect();
    let dup_params: [&(dyn ToSql + Sync); 1] = [&dup_key_refs];
    let heartbeat_params: [&(dyn ToSql + Sync); 3] = [&heartbeat.0, &heartbeat.1, &now];
    let counts = tally(flats.iter().zip(&owned).map(|(f, owned)| (f.event, *owned)), now);
    let count_columns: (Vec<i64>, Vec<&str>, Vec<&str>, Vec<i64>) = (
        counts.iter().map(|c| c.0).collect(),
        counts.iter().map(|c| c.1).collect(),
        counts.iter().map(|c| c.2.as_str()).collect(),
        counts.iter().map(|c| c.3).collect(),
    );
    let count_params: [&(dyn ToSql + Sync); 5] = [
        &count_columns.0,
        &count_columns.1,
        &count_columns.2,
        &count_columns.3,
        &heartbeat.0,
    ];
    // Hooks that were waiting for these contacts (SPEC 11 "Linking"); the
    // last event of an email in the group wins, as in arrival order.
    let mut links_by_ref: HashMap<String, &str> = HashMap::new();
    let mut links_by_email: HashMap<&str, &str> = HashMap::new();
    for (i, flat) in flats.iter().enumerate() {
        if owned[i] {
            let key = flat.event.contact_key.as_str();
            links_by_ref.insert(crate::payload::loose_key(key).into_owned(), key);
            if let Some(email) = &flat.event.email {
                links_by_email.insert(email, key);
            }
        }
    }
    let ref_columns: (Vec<&str>, Vec<&str>) = links_by_ref.iter().map(|(r, k)| (*k, r.as_str())).unzip();
    let email_columns: (Vec<&str>, Vec<&str>) = links_by_email.iter().map(|(e, k)| (*k, *e)).unzip();
    let ref_params: [&(dyn ToSql + Sync); 2] = [&ref_columns.0, &ref_columns.1];
    let email_params: [&(dyn ToSql + Sync); 2] = [&email_columns.0, &email_columns.1];
    let mut round_two = Vec::new();
    if !columns.is_empty() {
        round_two.push(client.query(&conn.insert_events, &event_params));
        round_two.push(client.query(&conn.link_by_ref, &ref_params));
        if !email_columns.0.is_empty() {
            round_two.push(client.query(&conn.link_by_email, &email_params));
        }
    }
    if touch {
        round_two.push(client.query(&conn.heartbeat, &heartbeat_params));
    }
    if !counts.is_empty() {
        round_two.push(client.query(&conn.count, &count_params));
    }
    let find_index = round_two.len();
    if !dup_keys.is_empty() {
        round_two.push(client.query(&conn.find_first, &dup_params));
    }
    let commit_now = dup_keys.is_empty() && hooks.is_empty() && rescored.is_empty();
    let results = if commit_now {
        try_join(try_join_all(round_two), client.batch_execute("COMMIT"))
            .await?
            .0
    } else {
        try_join_all(round_two).await?
    };
    let mut firsts: HashMap<[u8; 16], EventSummary> = HashMap::new();
    if !dup_keys.is_empty() {
        for row in &results[find_index] {
            if let Ok(key) = <[u8; 16]>::try_from(row.get::<_, &[u8]>(0)) {
                firsts.insert(key, summary_of(row));
            }
        }
        // A key whose first event is gone (only when the retention was set
        // shorter than the dedupe window): the first such event takes it.
        let mut repaired = EventColumns::default();
        let mut repairs: Vec<([u8; 16], &str, i64)> = Vec::new();
        for (i, flat) in flats.iter().enumerate() {
            if !owned[i] && !firsts.contains_key(&flat.key) {
                owned[i] = true;
                firsts.insert(flat.key, flat.event.summary());
                repaired.push(flat);
                repairs.push((flat.key, &flat.event.event_id, flat.event.received_at));
            }
        }
        if !repairs.is_empty() {
            for (key, event_id, created_at) in &repairs {
                let key = &key[..];
                let params: [&(dyn ToSql + Sync); 3] = [&key, event_id, created_at];
                client.execute(&conn.repair_key, &params).await?;
            }
            client.query(&conn.insert_events, &repaired.params()).await?;
        }
    }
    // Hooks are few: one after the other, after the group's contacts (so a
    // hook finds a contact sent in the same request).
    // Rescored events (SPEC 12): each only while the event it was computed
    // from is still its contact's newest (the contact is locked above).
    let mut rescored_answers = Vec::with_capacity(rescored.len());
    for flat in &rescored {
        rescored_answers.push(put_rescored(conn, flat, window_start).await?);
    }
    if rescored_answers.iter().any(|a| matches!(a, Enqueued::Stored(_))) {
        let stored = rescored
            .iter()
            .zip(&rescored_answers)
            .map(|(f, a)| (f.event, matches!(a, Enqueued::Stored(_))));
        add_counts(conn, &tally(stored, now), heartbeat.0).await?;
    }
    let mut hook_answers = Vec::with_capacity(hooks.len());
    for (_, _, hook) in &hooks {
        hook_answers.push(put_hook(client, hook, window_start).await?);
    }
    if !hooks.is_empty() {
        let counts = tally_hooks(
            hooks
                .iter()
                .zip(&hook_answers)
                .map(|((_, _, h), a)| (*h, !a.duplicate)),
            now,
        );
        add_counts(conn, &counts, heartbeat.0).await?;
    }
    if !commit_now {
        client.batch_execute("COMMIT").await?;
    }

    // The answers, per operation and in input order.
    let mut answers: Vec<Vec<Option<ItemStored>>> = works
        .iter()
        .map(|w| match w {
            Work::Enqueue { items } => vec![None; items.len()],
            _ => Vec::new(),
        })
        .collect();
    for (i, flat) in flats.iter().enumerate() {
        let answer = match firsts.get(&flat.key) {
            Some(first) if !owned[i] => Enqueued::Duplicate(first.clone()),
            _ => Enqueued::Stored(flat.event.summary()),
        };
        answers[flat.op][flat.pos] = Some(ItemStored::Event(answer));
    }
    for (flat, answer) in rescored.iter().zip(rescored_answers) {
        answers[flat.op][flat.pos] = Some(ItemStored::Event(answer));
    }
    for ((op, pos, _), answer) in hooks.iter().zip(hook_answers) {
        answers[*op][*pos] = Some(ItemStored::Hook(answer));
    }
    Ok(works
        .iter()
        .zip(answers)
        .map(|(w, answers)| match w {
            Work::Enqueue { .. } => Done::Enqueued(answers.into_iter().flatten().collect()),
            _ => Done::Unit,
        })
        .collect())
}

/// Adds counter increments (see `store::tally`) to this instance's rows.
async fn add_counts(
    conn: &WriterConn,
    counts: &[(i64, &'static str, String, i64)],
    instance: &str,
) -> Result<(), PgError> {
    let columns: (Vec<i64>, Vec<&str>, Vec<&str>, Vec<i64>) = (
        counts.iter().map(|c| c.0).collect(),
        counts.iter().map(|c| c.1).collect(),
        counts.iter().map(|c| c.2.as_str()).collect(),
        counts.iter().map(|c| c.3).collect(),
    );
    let params: [&(dyn ToSql + Sync); 5] = [&columns.0, &columns.1, &columns.2, &columns.3, &instance];
    conn.client.query(&conn.count, &params).await?;
    Ok(())
}

/// Stores one rescored event, unless a newer event of its contact exists or
/// its key (job and contact) was used already.
async fn put_rescored(conn: &WriterConn, flat: &Flat<'_>, window_start: i64) -> Result<Enqueued, PgError> {
    let client = &conn.client;
    let event = flat.event;
    let key = &flat.key[..];
    let keys: [&(dyn ToSql + Sync); 4] = [
        &vec![key],
        &vec![event.event_id.as_str()],
        &vec![event.received_at],
        &window_start,
    ];
    if client.query(&conn.upsert_keys, &keys).await?.is_empty() {
        let first = client.query(&conn.find_first, &[&vec![key]]).await?;
        return Ok(match first.first() {
            Some(row) => Enqueued::Duplicate(summary_of(row)),
            None => Enqueued::Superseded,
        });
    }
    let newest: Option<i64> = client
        .query_one(
            "SELECT max(seq) FROM leadscore_events WHERE contact_key = $1",
            &[&event.contact_key],
        )
        .await?
        .get(0);
    if newest != event.supersedes {
        // The key stays taken: this job will not try the contact again.
        return Ok(Enqueued::Superseded);
    }
    let mut columns = EventColumns::default();
    columns.push(flat);
    client.query(&conn.insert_events, &columns.params()).await?;
    Ok(Enqueued::Stored(event.summary()))
}

/// Stores one hook (or finds the one it duplicates), linked to its contact
/// when known: the one its `contactId` names, else the latest with its email.
async fn put_hook(client: &Client, hook: &NewHook, window_start: i64) -> Result<HookSummary, PgError> {
    let key = key_digest(&hook.idempotency_key);
    let key = &key[..];
    if let Some(first) = client.query_opt(FIND_HOOK, &[&key, &window_start]).await? {
        let kind: &str = first.get(1);
        let contact_key: Option<&str> = first.get(2);
        return Ok(HookSummary {
            kind: crate::payload::HookKind::parse(kind).unwrap_or(hook.kind),
            id: first.get(0),
            contact_id: contact_key.map_or(serde_json::Value::Null, contact_id_of),
            contact_key: contact_key.map(str::to_owned),
            duplicate: true,
        });
    }
    let mut contact_key: Option<String> = None;
    if hook.kind != crate::payload::HookKind::Unknown {
        if let Some(reference) = &hook.contact_ref {
            let quoted = serde_json::Value::String(reference.clone()).to_string();
            contact_key = client
                .query_opt(LINK_OF_REF, &[reference, &quoted])
                .await?
                .map(|row| row.get(0));
        }
        if contact_key.is_none()
            && let Some(email) = &hook.email
        {
            contact_key = client
                .query_opt(LINK_OF_EMAIL, &[email])
                .await?
                .map(|row| row.get(0));
        }
    }
    let sale = hook.sale;
    client
        .execute(
            INSERT_HOOK,
            &[
                &hook.id,
                &hook.kind.as_str(),
                &key,
                &hook.received_at,
                &contact_key,
                &hook.contact_ref,
                &hook.email,
                &hook.own_id,
                &hook.call_status,
                &hook.call_start,
                &hook.call_type,
                &hook.call_outcome,
                &sale,
                &hook.revenue,
                &hook.body,
            ],
        )
        .await?;
    Ok(HookSummary {
        kind: hook.kind,
        id: hook.id.clone(),
        contact_id: contact_key
            .as_deref()
            .map_or(serde_json::Value::Null, contact_id_of),
        contact_key,
        duplicate: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_separate_repeated_keys_and_sort_each() {
        let keys = ["b", "a", "b", "c", "b", "a"];
        assert_eq!(layers(&keys), vec![vec![1, 0, 3], vec![5, 2], vec![4]]);
        assert!(layers::<u8>(&[]).is_empty());
    }
}
