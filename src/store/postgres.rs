//! The shared store: PostgreSQL, for several instances behind one load
//! balancer (`--store postgres://USER@HOST/DB`).
//!
//! Same contract as the SQLite store, built for many writers:
//!
//! - **Ingest** goes through one writer task per instance. Every write that
//!   arrives while a transaction is running joins the next one (group
//!   commit: under load one commit serves many requests, with no added wait
//!   when idle). A group is a handful of pipelined, array-valued statements:
//!   idempotency keys first (`INSERT … ON CONFLICT DO UPDATE … WHERE
//!   expired`, in key order so that two instances never deadlock), then the
//!   new events and the look-up of the duplicates' first events, then
//!   `COMMIT`; each request is answered once its group committed.
//! - **Duplicates across instances**: the key table's primary key makes the
//!   second of two concurrent inserts wait for the first to commit, and then
//!   see its key (a duplicate) — or, when the key is older than the dedupe
//!   window, take it over for a new event.
//! - **Delivery** claims with `FOR UPDATE SKIP LOCKED` and a lease
//!   (`claimed_until`); a contact's event is claimed only when no other
//!   event of the contact is pending earlier or claimed, re-checked under a
//!   per-contact advisory lock (`pg_try_advisory_xact_lock`) after the
//!   candidates were picked, so two instances never deliver one contact out
//!   of order (a lease that runs out hands the delivery to another instance).
//! - **Schema**: versioned migrations in `leadscore_schema_migrations`,
//!   applied at open under a transaction-scoped advisory lock, so instances
//!   may start together. The tables live in the schema named by `?schema=`
//!   (created when missing) or by the first entry of the connection's
//!   `search_path` (`?options=-csearch_path%3Dname`).
//! - **Connections**: the writer's own connection plus a small pool for
//!   claims, listings and maintenance; a lost connection fails the requests
//!   it carried (`Unavailable`, 503) and is replaced on the next use.
//!
//! No TLS to the database yet (`NoTls`; `sslmode=require` is refused).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt, try_join, try_join_all};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, oneshot};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::{
    AttemptOutcome, ClaimedDelivery, Counters, DeliveryCounts, DeliveryInfo, DeliveryStatus, Enqueued,
    EventSummary, EventWindow, NewEvent, Pruned, Requeue, Retention, Store, StoreError, StoreResult,
    StoredEvent, contact_id_of, format_ms, now_ms, redact_url, tally,
};

/// Connections of the pool (besides the writer's) unless `?pool_size=` says.
const DEFAULT_POOL_SIZE: usize = 4;
/// Connect timeout when the URL sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP keepalive idle time when the URL sets none.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// How long an ingest waits for its commit before answering 503: inside
/// iClosed's 5-second limit. The sender retries; should the commit have
/// happened after all, the retry is answered as a duplicate.
const ENQUEUE_DEADLINE: Duration = Duration::from_secs(4);
/// The longest one transaction (or pool operation) may take before its
/// connection is dropped as broken.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pool connection.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Most operations one writer transaction takes.
const MAX_GROUP: usize = 512;
/// Attempts of a transaction that lost a deadlock or serialization check.
const TRANSIENT_RETRIES: usize = 3;
/// Rows one prune statement deletes at most (short transactions).
const PRUNE_BATCH: i64 = 10_000;
/// Advisory locks: migrations take (this, hashtext(schema)) in the
/// two-key space; claims take a contact's 64-bit hash (of schema and
/// contact, seeded with [`LOCK_CONTACT`]) in the one-key space, so that
/// schemas sharing a database do not lock each other's contacts.
const LOCK_MIGRATIONS: i32 = 0x4c53_0001;
const LOCK_CONTACT: i64 = 0x4c53_0002;

/// The schema's versions, applied in order, each once, in one transaction
/// with the bookkeeping row. Never edit a released entry: add one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "events, idempotency keys, instances",
        r#"
CREATE TABLE leadscore_events (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              text NOT NULL UNIQUE,
    contact_key     text NOT NULL,
    received_at     bigint NOT NULL,
    score           text NOT NULL,
    tier            text NOT NULL,
    disqualified    boolean NOT NULL,
    rules_version   text NOT NULL,
    body            text NOT NULL,
    -- NULL when the event is not forwarded
    delivery        text CHECK (delivery IN ('pending', 'dead', 'delivered')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint,
    last_status     integer,
    last_error      text,
    delivered_at    bigint,
    claimed_until   bigint
);
CREATE INDEX leadscore_events_pending_contact ON leadscore_events (contact_key, seq) WHERE delivery = 'pending';
CREATE INDEX leadscore_events_pending_due ON leadscore_events (next_attempt_at, seq) WHERE delivery = 'pending';
CREATE INDEX leadscore_events_dead ON leadscore_events (seq) WHERE delivery = 'dead';
CREATE INDEX leadscore_events_delivered ON leadscore_events (seq) WHERE delivery = 'delivered';
CREATE INDEX leadscore_events_received ON leadscore_events USING brin (received_at);
-- One row per idempotency key (16 bytes of its SHA-256): the event stored
-- first, and when (the event's received_at). Older than the dedupe window:
-- expired, taken over by the next event with the key.
CREATE TABLE leadscore_idempotency_keys (
    key        bytea PRIMARY KEY,
    event_id   text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX leadscore_idempotency_keys_created ON leadscore_idempotency_keys USING brin (created_at);
-- The instances using this schema, for operators (seen_at: last readiness check).
CREATE TABLE leadscore_instances (
    id         text PRIMARY KEY,
    started_at bigint NOT NULL,
    seen_at    bigint NOT NULL
);
"#,
    ),
    (
        2,
        "backtest index, per-minute counters",
        r#"
-- A contact's latest event (backtests, SPEC 8) for delivered ones too.
CREATE INDEX leadscore_events_contact ON leadscore_events (contact_key, seq);
-- Per-minute counts behind GET /stats, one row set per instance so that
-- instances never wait for each other's counter rows.
CREATE TABLE leadscore_counters (
    minute   bigint NOT NULL,
    what     text NOT NULL,
    name     text NOT NULL,
    instance text NOT NULL,
    count    bigint NOT NULL,
    PRIMARY KEY (minute, what, name, instance)
);
"#,
    ),
];

// ------------------------------------------------------------------ the SQL

const COUNT: &str = "
INSERT INTO leadscore_counters AS c (minute, what, name, instance, count)
SELECT u.minute, u.what, u.name, $5, u.count
FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[]) AS u(minute, what, name, count)
ON CONFLICT (minute, what, name, instance) DO UPDATE SET count = c.count + excluded.count";

/// The events of an [`EventWindow`] after $1: received since $3 up to the
/// snapshot $2 and, unless $4, only a contact's latest event.
const WINDOW_FILTER: &str = "e.seq > $1 AND e.seq <= $2 AND e.received_at >= $3
    AND ($4 OR NOT EXISTS (
        SELECT 1 FROM leadscore_events l WHERE l.contact_key = e.contact_key AND l.seq > e.seq AND l.seq <= $2))";

const UPSERT_KEYS: &str = "
INSERT INTO leadscore_idempotency_keys AS k (key, event_id, created_at)
SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[])
ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, created_at = excluded.created_at
    WHERE k.created_at < $4
RETURNING k.key";

const INSERT_EVENTS: &str = "
INSERT INTO leadscore_events (id, contact_key, received_at, score, tier, disqualified, rules_version, body,
                              delivery, next_attempt_at)
SELECT id, contact_key, received_at, score, tier, disqualified, rules_version, body, delivery, received_at
FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::text[],
            $9::text[]) WITH ORDINALITY
     AS u(id, contact_key, received_at, score, tier, disqualified, rules_version, body, delivery, ord)
ORDER BY ord";

const FIND_FIRST_EVENTS: &str = "
SELECT k.key, e.id, e.contact_key, e.score, e.tier, e.disqualified
FROM leadscore_idempotency_keys k JOIN leadscore_events e ON e.id = k.event_id
WHERE k.key = ANY($1::bytea[])";

/// Points a key whose first event is gone (pruned against the rules) at a new event.
const REPAIR_KEY: &str = "
UPDATE leadscore_idempotency_keys SET event_id = $2, created_at = $3 WHERE key = $1";

const RECORD_ATTEMPTS: &str = "
UPDATE leadscore_events e
SET delivery = u.delivery, attempts = e.attempts + 1, last_status = u.status, last_error = u.error,
    next_attempt_at = coalesce(u.next_attempt_at, e.next_attempt_at),
    delivered_at = coalesce(u.delivered_at, e.delivered_at), claimed_until = NULL
FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::int8[])
     AS u(id, delivery, status, error, next_attempt_at, delivered_at)
WHERE e.id = u.id AND e.delivery = 'pending'";

const HEARTBEAT: &str = "
INSERT INTO leadscore_instances (id, started_at, seen_at) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at";

/// Due, unclaimed, and no other event of the contact pending earlier or
/// claimed now ($1 = now).
const CLAIMABLE: &str = "
    d.delivery = 'pending' AND d.next_attempt_at <= $1
    AND (d.claimed_until IS NULL OR d.claimed_until <= $1)
    AND NOT EXISTS (
        SELECT 1 FROM leadscore_events o
        WHERE o.contact_key = d.contact_key AND o.delivery = 'pending' AND o.seq <> d.seq
          AND (o.seq < d.seq OR o.claimed_until > $1))";

fn claim_pick_sql() -> String {
    format!(
        "WITH c AS MATERIALIZED (
            SELECT d.seq, d.contact_key FROM leadscore_events d
            WHERE {CLAIMABLE}
            ORDER BY d.next_attempt_at, d.seq
            LIMIT $2
            FOR UPDATE OF d SKIP LOCKED)
         SELECT seq FROM c
         WHERE pg_try_advisory_xact_lock(hashtextextended(current_schema() || ' ' || contact_key, {LOCK_CONTACT}))"
    )
}

fn claim_take_sql() -> String {
    format!(
        "UPDATE leadscore_events d SET claimed_until = $2
         WHERE d.seq = ANY($3::int8[]) AND {CLAIMABLE}
         RETURNING d.seq, d.id, d.contact_key, d.attempts, d.body"
    )
}

// ------------------------------------------------------------- the settings

/// What the store URL says.
#[derive(Clone)]
struct Settings {
    config: Config,
    /// `?schema=`: created when missing and put first in the search path.
    schema: Option<String>,
    pool_size: usize,
}

fn invalid(url: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidUrl {
        url: redact_url(url),
        reason: reason.into(),
    }
}

/// Parses a `postgres://` URL: libpq's parameters as tokio-postgres reads
/// them, plus `schema=NAME` and `pool_size=N`, which are ours.
fn parse_url(url: &str) -> StoreResult<Settings> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut kept = Vec::new();
    let mut schema = None;
    let mut pool_size = DEFAULT_POOL_SIZE;
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        match key {
            "schema" => {
                let name = decoded();
                let valid = !name.is_empty()
                    && name.len() <= 63
                    && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    return Err(invalid(
                        url,
                        format!("schema {name:?} is not a plain lower-case name (a-z, 0-9, _; at most 63)"),
                    ));
                }
                schema = Some(name);
            }
            "pool_size" => {
                pool_size = decoded()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| invalid(url, "pool_size must be a number from 1 to 64"))?;
            }
            _ => kept.push(pair),
        }
    }
    let libpq_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: Config = libpq_url
        .parse()
        .map_err(|e: tokio_postgres::Error| invalid(url, e.to_string()))?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(invalid(
            url,
            "sslmode=require: this build connects to PostgreSQL without TLS (use a private network or a local proxy)",
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if !url.contains("keepalives_idle=") {
        // Notice a connection a firewall or NAT dropped silently within a
        // minute or two, not after libpq's default two hours.
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_application_name().is_none() {
        config.application_name("leadscore");
    }
    if let Some(name) = &schema {
        let options = match config.get_options() {
            Some(existing) if !existing.trim().is_empty() => format!("{existing} -c search_path={name}"),
            _ => format!("-c search_path={name}"),
        };
        config.options(options);
    }
    Ok(Settings {
        config,
        schema,
        pool_size,
    })
}

// ------------------------------------------------------------------ errors

type PgError = tokio_postgres::Error;

/// A database error in words: the server's message when there is one.
fn describe(e: &PgError) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "PostgreSQL {} ({}): {}",
            db.severity(),
            db.code().code(),
            db.message()
        );
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A deadlock or serialization failure: the transaction may simply run again.
fn transient(e: &PgError) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

async fn connect(config: &Config) -> Result<Client, String> {
    let connecting = config.connect(NoTls);
    let limit = config.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT) + Duration::from_secs(1);
    let (client, connection) = match tokio::time::timeout(limit, connecting).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(format!("cannot connect to PostgreSQL: {}", describe(&e))),
        Err(_) => return Err("cannot connect to PostgreSQL: timed out".into()),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

// -------------------------------------------------------------------- pool

/// A connection with its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    async fn prepare(&mut self, sql: &str) -> Result<Statement, PgError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// A few connections, opened when needed and dropped when broken.
struct Pool {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take().filter(|c| !c.client.is_closed()) {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}

impl Pool {
    fn new(config: Config, size: usize) -> Self {
        Self {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
        }
    }

    async fn get(&self) -> StoreResult<Pooled<'_>> {
        let permit = tokio::time::timeout(POOL_WAIT, self.permits.acquire())
            .await
            .map_err(|_| unavailable("no PostgreSQL connection became free in time"))?
            .map_err(unavailable)?;
        let idle = loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(conn) if conn.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match idle {
            Some(conn) => conn,
            None => Conn {
                client: connect(&self.config).await.map_err(unavailable)?,
                statements: HashMap::new(),
            },
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self,
            _permit: permit,
        })
    }

    /// Runs `work` on a pooled connection within [`OP_TIMEOUT`]; a
    /// connection that failed or timed out is dropped, not reused.
    async fn run<T>(
        &self,
        what: &str,
        work: impl for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, PgError>>,
    ) -> StoreResult<T> {
        let mut pooled = self.get().await?;
        let conn = pooled.conn.as_mut().expect("present until dropped");
        let result = tokio::time::timeout(OP_TIMEOUT, work(conn)).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                pooled.conn = None;
                Err(unavailable(format!("{what}: {}", describe(&e))))
            }
            Err(_) => {
                pooled.conn = None;
                Err(unavailable(format!("{what}: PostgreSQL did not answer in time")))
            }
        }
    }
}

// ------------------------------------------------------------------ store

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// What one queued write does.
enum Work {
    Enqueue {
        events: Vec<NewEvent>,
        forward: bool,
    },
    Record {
        event_id: String,
        outcome: AttemptOutcome,
    },
    Touch,
}

enum ReplyTo {
    Enqueued(Reply<Vec<Enqueued>>),
    Unit(Reply<()>),
}

impl ReplyTo {
    fn is_closed(&self) -> bool {
        match self {
            Self::Enqueued(r) => r.is_closed(),
            Self::Unit(r) => r.is_closed(),
        }
    }

    fn send(self, result: Result<Done, String>) {
        match (self, result) {
            (Self::Enqueued(r), Ok(Done::Enqueued(v))) => drop(r.send(Ok(v))),
            (Self::Unit(r), Ok(Done::Unit)) => drop(r.send(Ok(()))),
            (Self::Enqueued(r), Err(e)) => drop(r.send(Err(unavailable(e)))),
            (Self::Unit(r), Err(e)) => drop(r.send(Err(unavailable(e)))),
            (Self::Enqueued(r), Ok(_)) => drop(r.send(Err(unavailable("internal error: wrong reply")))),
            (Self::Unit(r), Ok(_)) => drop(r.send(Err(unavailable("internal error: wrong reply")))),
        }
    }
}

struct WriteOp {
    work: Work,
    reply: ReplyTo,
}

/// The result of one operation once its transaction committed.
enum Done {
    Enqueued(Vec<Enqueued>),
    Unit,
}

pub struct PostgresStore {
    writer: mpsc::UnboundedSender<WriteOp>,
    pool: Arc<Pool>,
    retention: Retention,
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and starts the writer.
    pub async fn open(url: &str, retention: Retention) -> StoreResult<Self> {
        let settings = parse_url(url)?;
        let pool = Arc::new(Pool::new(settings.config.clone(), settings.pool_size));
        let schema = settings.schema.clone();
        pool.run("cannot prepare the schema", move |conn| {
            migrate(conn, schema).boxed()
        })
        .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            config: settings.config,
            conn: None,
            retention,
            instance: format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple()),
            started_at: now_ms(),
        };
        tokio::spawn(writer.run(rx));
        Ok(Self {
            writer: tx,
            pool,
            retention,
        })
    }

    async fn write<T>(&self, work: Work, reply_to: impl FnOnce(Reply<T>) -> ReplyTo) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteOp {
                work,
                reply: reply_to(reply),
            })
            .map_err(|_| unavailable("the writer has stopped"))?;
        answer.await.map_err(|_| unavailable("the writer has stopped"))?
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "leadscore".into())
}

/// `"name"`, for SQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The first schema of a `search_path` value, unquoted; `None` for `$user`.
fn first_in_search_path(path: &str) -> Option<String> {
    let first = path.split(',').next()?.trim();
    let name = match first.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => first.to_lowercase(),
    };
    (!name.is_empty() && name != "$user").then_some(name)
}

/// Creates the schema when missing and applies the migrations not yet
/// applied, in one transaction under an advisory lock (instances starting
/// together wait for each other).
async fn migrate(conn: &mut Conn, schema: Option<String>) -> Result<(), PgError> {
    let path: String = conn
        .client
        .query_one("SELECT current_setting('search_path')", &[])
        .await?
        .get(0);
    let target = schema.or_else(|| first_in_search_path(&path));
    let tx = conn.client.transaction().await?;
    let lock_name = match &target {
        Some(name) => name.clone(),
        None => tx
            .query_one("SELECT coalesce(current_schema(), '')", &[])
            .await?
            .get(0),
    };
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_MIGRATIONS, &lock_name],
    )
    .await?;
    if let Some(name) = &target {
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[name],
            )
            .await?
            .get(0);
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(name)))
                .await?;
            tracing::info!(schema = %name, "created the PostgreSQL schema");
        }
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS leadscore_schema_migrations (
             version     integer PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: HashSet<i32> = tx
        .query("SELECT version FROM leadscore_schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(unknown) = applied.iter().copied().filter(|v| *v > newest).max() {
        // Surfaces as `Unavailable` with this text through `describe`'s caller.
        tracing::error!(
            version = unknown,
            known = newest,
            "the database schema is newer than this build; upgrade leadscore"
        );
        tx.batch_execute(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'the leadscore schema is at version {unknown}, newer than this build knows ({newest}); run a newer leadscore'; END $$"
        ))
        .await?;
    }
    for (version, description, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO leadscore_schema_migrations (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .await?;
        tracing::info!(version, description, "applied a schema migration");
    }
    tx.commit().await
}

#[async_trait]
impl Store for PostgresStore {
    async fn enqueue(&self, events: Vec<NewEvent>, forward: bool) -> StoreResult<Vec<Enqueued>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let write = self.write(Work::Enqueue { events, forward }, ReplyTo::Enqueued);
        match tokio::time::timeout(ENQUEUE_DEADLINE, write).await {
            Ok(result) => result,
            Err(_) => Err(unavailable("PostgreSQL did not commit in time")),
        }
    }

    async fn claim_due(&self, limit: usize, lease: Duration) -> StoreResult<Vec<ClaimedDelivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.pool
            .run("cannot claim deliveries", move |conn| {
                claim(conn, limit, lease).boxed()
            })
            .await
    }

    async fn record_attempt(&self, event_id: &str, outcome: AttemptOutcome) -> StoreResult<()> {
        let event_id = event_id.to_owned();
        self.write(Work::Record { event_id, outcome }, ReplyTo::Unit)
            .await
    }

    async fn list_deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryInfo>> {
        // The status as a literal, so that the planner uses its partial index.
        let filter = match status {
            None => "delivery IS NOT NULL".to_owned(),
            Some(s) => format!("delivery = '{}'", s.as_str()),
        };
        let sql = format!(
            "SELECT id, contact_key, delivery, attempts, last_status, last_error,
                    next_attempt_at, received_at, delivered_at
             FROM leadscore_events WHERE {filter} ORDER BY seq DESC LIMIT $1"
        );
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .run("cannot list deliveries", move |conn| {
                async move {
                    let statement = conn.prepare(&sql).await?;
                    let rows = conn.client.query(&statement, &[&limit]).await?;
                    Ok(rows.iter().map(delivery_info).collect())
                }
                .boxed()
            })
            .await
    }

    async fn requeue(&self, event_id: &str) -> StoreResult<Requeue> {
        let id = event_id.to_owned();
        self.pool
            .run("cannot requeue the delivery", move |conn| {
                async move {
                    let statement = conn
                        .prepare(
                            "UPDATE leadscore_events
                             SET delivery = 'pending', attempts = 0, next_attempt_at = $1, claimed_until = NULL
                             WHERE delivery = 'dead' AND id = $2",
                        )
                        .await?;
                    if conn.client.execute(&statement, &[&now_ms(), &id]).await? > 0 {
                        return Ok(Requeue::Requeued);
                    }
                    let exists: bool = conn
                        .client
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM leadscore_events WHERE id = $1 AND delivery IS NOT NULL)",
                            &[&id],
                        )
                        .await?
                        .get(0);
                    Ok(if exists {
                        Requeue::NotDead
                    } else {
                        Requeue::Unknown
                    })
                }
                .boxed()
            })
            .await
    }

    async fn requeue_dead(&self) -> StoreResult<u64> {
        self.pool
            .run("cannot requeue dead deliveries", |conn| {
                async move {
                    conn.client
                        .execute(
                            "UPDATE leadscore_events
                             SET delivery = 'pending', attempts = 0, next_attempt_at = $1, claimed_until = NULL
                             WHERE delivery = 'dead'",
                            &[&now_ms()],
                        )
                        .await
                }
                .boxed()
            })
            .await
    }

    async fn delivery_counts(&self) -> StoreResult<DeliveryCounts> {
        self.pool
            .run("cannot count deliveries", |conn| {
                async move {
                    // Three index-only scans of the partial indexes.
                    let statement = conn
                        .prepare(
                            "SELECT (SELECT count(*) FROM leadscore_events WHERE delivery = 'pending'),
                                    (SELECT count(*) FROM leadscore_events WHERE delivery = 'dead'),
                                    (SELECT count(*) FROM leadscore_events WHERE delivery = 'delivered')",
                        )
                        .await?;
                    let row = conn.client.query_one(&statement, &[]).await?;
                    let count = |i: usize| row.get::<_, i64>(i).max(0) as u64;
                    Ok(DeliveryCounts {
                        pending: count(0),
                        dead: count(1),
                        delivered: count(2),
                    })
                }
                .boxed()
            })
            .await
    }

    async fn prune(&self) -> StoreResult<Pruned> {
        let retention = self.retention;
        self.pool
            .run("cannot prune", move |conn| prune(conn, retention).boxed())
            .await
    }

    async fn check_writable(&self) -> StoreResult<()> {
        let write = self.write(Work::Touch, ReplyTo::Unit);
        match tokio::time::timeout(ENQUEUE_DEADLINE, write).await {
            Ok(result) => result,
            Err(_) => Err(unavailable("PostgreSQL did not commit in time")),
        }
    }

    async fn last_seq(&self) -> StoreResult<i64> {
        self.pool
            .run("cannot read the events", |conn| {
                async move {
                    let row = conn
                        .client
                        .query_one("SELECT COALESCE(MAX(seq), 0) FROM leadscore_events", &[])
                        .await?;
                    Ok(row.get::<_, i64>(0))
                }
                .boxed()
            })
            .await
    }

    async fn count_events(&self, window: EventWindow) -> StoreResult<u64> {
        self.pool
            .run("cannot count the events", move |conn| {
                async move {
                    let sql = format!("SELECT count(*) FROM leadscore_events e WHERE {WINDOW_FILTER}");
                    let statement = conn.prepare(&sql).await?;
                    let row = conn
                        .client
                        .query_one(
                            &statement,
                            &[&0i64, &window.up_to_seq, &window.since_ms, &window.all_events],
                        )
                        .await?;
                    Ok(row.get::<_, i64>(0).max(0) as u64)
                }
                .boxed()
            })
            .await
    }

    async fn scan_events(
        &self,
        window: EventWindow,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .run("cannot read the events", move |conn| {
                async move {
                    let sql = format!(
                        "SELECT seq, id, received_at, body FROM leadscore_events e WHERE {WINDOW_FILTER}
                         ORDER BY seq LIMIT $5"
                    );
                    let statement = conn.prepare(&sql).await?;
                    let rows = conn
                        .client
                        .query(
                            &statement,
                            &[
                                &after_seq,
                                &window.up_to_seq,
                                &window.since_ms,
                                &window.all_events,
                                &limit,
                            ],
                        )
                        .await?;
                    Ok(rows.iter().map(stored_event).collect())
                }
                .boxed()
            })
            .await
    }

    async fn recent_events(&self, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .run("cannot read the events", move |conn| {
                async move {
                    let statement = conn
                        .prepare(
                            "SELECT seq, id, received_at, body FROM leadscore_events ORDER BY seq DESC LIMIT $1",
                        )
                        .await?;
                    let rows = conn.client.query(&statement, &[&limit]).await?;
                    Ok(rows.iter().map(stored_event).collect())
                }
                .boxed()
            })
            .await
    }

    async fn counters(&self, since_ms: i64) -> StoreResult<Counters> {
        let since = since_ms.div_euclid(60_000) * 60_000;
        self.pool
            .run("cannot read the counters", move |conn| {
                async move {
                    let statement = conn
                        .prepare(
                            "SELECT minute, what, name, sum(count)::int8 FROM leadscore_counters
                             WHERE minute >= $1 GROUP BY minute, what, name ORDER BY minute",
                        )
                        .await?;
                    let rows = conn.client.query(&statement, &[&since]).await?;
                    Ok(Counters {
                        rows: rows
                            .iter()
                            .map(|r| (r.get(0), r.get(1), r.get(2), r.get::<_, i64>(3).max(0) as u64))
                            .collect(),
                    })
                }
                .boxed()
            })
            .await
    }

    // `release_stale_claims` keeps the default: other instances may hold
    // the claims found at start; their leases run out instead.
}

fn parse_number(text: &str) -> serde_json::Number {
    serde_json::from_str(text).unwrap_or_else(|_| 0.into())
}

fn stored_event(row: &Row) -> StoredEvent {
    StoredEvent {
        seq: row.get(0),
        id: row.get(1),
        received_at: row.get(2),
        body: row.get(3),
    }
}

fn delivery_info(row: &Row) -> DeliveryInfo {
    let status = DeliveryStatus::parse(row.get(2)).unwrap_or(DeliveryStatus::Pending);
    DeliveryInfo {
        id: row.get(0),
        contact_id: contact_id_of(row.get(1)),
        status,
        attempts: row.get::<_, i32>(3).max(0) as u32,
        last_status: row
            .get::<_, Option<i32>>(4)
            .map(|s| s.clamp(0, u16::MAX as i32) as u16),
        last_error: row.get(5),
        next_attempt_at: match status {
            DeliveryStatus::Pending => row.get::<_, Option<i64>>(6).map(format_ms),
            _ => None,
        },
        created_at: format_ms(row.get(7)),
        delivered_at: row.get::<_, Option<i64>>(8).map(format_ms),
    }
}

async fn claim(conn: &mut Conn, limit: usize, lease: Duration) -> Result<Vec<ClaimedDelivery>, PgError> {
    let pick = conn.prepare(&claim_pick_sql()).await?;
    let take = conn.prepare(&claim_take_sql()).await?;
    let now = now_ms();
    let until = now.saturating_add(lease.as_millis().min(i64::MAX as u128) as i64);
    let tx = conn.client.transaction().await?;
    // Candidates, row-locked (others skip them) and contact-locked (others
    // skip the contact) until this transaction ends...
    let seqs: Vec<i64> = tx
        .query(&pick, &[&now, &(limit as i64)])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if seqs.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    // ...then checked again with a snapshot taken after the locks: a claim
    // of the same contact that another instance committed in between counts.
    let rows = tx.query(&take, &[&now, &until, &seqs]).await?;
    tx.commit().await?;
    let mut claimed: Vec<(i64, ClaimedDelivery)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                ClaimedDelivery {
                    event_id: r.get(1),
                    contact_key: r.get(2),
                    attempts: r.get::<_, i32>(3).max(0) as u32,
                    body: r.get(4),
                },
            )
        })
        .collect();
    claimed.sort_by_key(|(seq, _)| *seq);
    Ok(claimed.into_iter().map(|(_, d)| d).collect())
}

/// Deletes, in short batches, events older than the retention whose
/// delivery is done (or that were never forwarded), idempotency keys older
/// than the dedupe window (expired: they no longer count), and instances
/// not seen within the retention.
async fn prune(conn: &mut Conn, retention: Retention) -> Result<Pruned, PgError> {
    let now = now_ms();
    let cutoff = now - retention.retention.as_millis().min(i64::MAX as u128) as i64;
    let window_start = now - retention.dedupe_window.as_millis().min(i64::MAX as u128) as i64;
    // The conditions stand on the deleted rows too, so that a row changed
    // meanwhile (a key taken over by a new event) is checked again, not deleted.
    let events_sql = "DELETE FROM leadscore_events
                      WHERE received_at < $1 AND (delivery IS NULL OR delivery = 'delivered')
                        AND seq IN (SELECT seq FROM leadscore_events
                                    WHERE received_at < $1 AND (delivery IS NULL OR delivery = 'delivered')
                                    LIMIT $2)";
    let keys_sql = "DELETE FROM leadscore_idempotency_keys
                    WHERE created_at < $1
                      AND key IN (SELECT key FROM leadscore_idempotency_keys WHERE created_at < $1 LIMIT $2)";
    let mut events = 0;
    loop {
        let n = conn.client.execute(events_sql, &[&cutoff, &PRUNE_BATCH]).await?;
        events += n;
        if n < PRUNE_BATCH as u64 {
            break;
        }
    }
    while conn
        .client
        .execute(keys_sql, &[&window_start, &PRUNE_BATCH])
        .await?
        >= PRUNE_BATCH as u64
    {}
    conn.client
        .execute("DELETE FROM leadscore_instances WHERE seen_at < $1", &[&cutoff])
        .await?;
    conn.client
        .execute("DELETE FROM leadscore_counters WHERE minute < $1", &[&cutoff])
        .await?;
    Ok(Pruned { events })
}

// ------------------------------------------------------------------ writer

/// The stored form of an idempotency key: 16 bytes of its SHA-256 (as in
/// the SQLite store).
fn key_digest(key: &str) -> [u8; 16] {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
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
struct WriterConn {
    client: Client,
    upsert_keys: Statement,
    insert_events: Statement,
    find_first: Statement,
    repair_key: Statement,
    record: Statement,
    heartbeat: Statement,
    count: Statement,
}

impl WriterConn {
    async fn open(config: &Config) -> Result<Self, String> {
        let client = connect(config).await?;
        let prepared = try_join_all(
            [
                UPSERT_KEYS,
                INSERT_EVENTS,
                FIND_FIRST_EVENTS,
                REPAIR_KEY,
                RECORD_ATTEMPTS,
                HEARTBEAT,
                COUNT,
            ]
            .map(|sql| client.prepare(sql)),
        )
        .await
        .map_err(|e| format!("cannot prepare the writer's statements: {}", describe(&e)))?;
        let mut it = prepared.into_iter();
        let mut next = || it.next().expect("seven statements");
        Ok(Self {
            upsert_keys: next(),
            insert_events: next(),
            find_first: next(),
            repair_key: next(),
            record: next(),
            heartbeat: next(),
            count: next(),
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

struct Writer {
    config: Config,
    conn: Option<WriterConn>,
    retention: Retention,
    instance: String,
    started_at: i64,
}

/// One event of a group, flattened.
struct Flat<'a> {
    op: usize,
    event: &'a NewEvent,
    forward: bool,
    key: [u8; 16],
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

fn summary_of_new(event: &NewEvent) -> EventSummary {
    EventSummary {
        contact_id: event.contact_id.clone(),
        id: event.event_id.clone(),
        score: event.score.clone(),
        tier: event.tier.clone(),
        disqualified: event.disqualified,
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
    delivery: Vec<Option<&'static str>>,
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
        self.delivery.push(flat.forward.then_some("pending"));
    }

    fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.id,
            &self.contact_key,
            &self.received_at,
            &self.score,
            &self.tier,
            &self.disqualified,
            &self.rules_version,
            &self.body,
            &self.delivery,
        ]
    }
}

/// The columns of [`RECORD_ATTEMPTS`].
#[derive(Default)]
struct RecordColumns<'a> {
    id: Vec<&'a str>,
    delivery: Vec<&'static str>,
    status: Vec<Option<i32>>,
    error: Vec<Option<&'a str>>,
    next_attempt_at: Vec<Option<i64>>,
    delivered_at: Vec<Option<i64>>,
}

impl<'a> RecordColumns<'a> {
    fn push(&mut self, id: &'a str, outcome: &'a AttemptOutcome, now: i64) {
        self.id.push(id);
        match outcome {
            AttemptOutcome::Delivered { status } => {
                self.delivery.push("delivered");
                self.status.push(Some(i32::from(*status)));
                self.error.push(None);
                self.next_attempt_at.push(None);
                self.delivered_at.push(Some(now));
            }
            AttemptOutcome::Retry {
                next_attempt_at,
                status,
                error,
            } => {
                self.delivery.push("pending");
                self.status.push(status.map(i32::from));
                self.error.push(Some(error));
                self.next_attempt_at.push(Some(*next_attempt_at));
                self.delivered_at.push(None);
            }
            AttemptOutcome::Dead { status, error } => {
                self.delivery.push("dead");
                self.status.push(status.map(i32::from));
                self.error.push(Some(error));
                self.next_attempt_at.push(None);
                self.delivered_at.push(None);
            }
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.id,
            &self.delivery,
            &self.status,
            &self.error,
            &self.next_attempt_at,
            &self.delivered_at,
        ]
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
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
                    op.reply.send(Ok(done));
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
                op.reply.send(Err(e.clone()));
            }
            return;
        }
        for op in group.drain(..) {
            let result = self.transaction_with_retries(&[&op.work]).await;
            op.reply.send(match result {
                Ok(mut done) => Ok(done.pop().unwrap_or(Done::Unit)),
                Err(TxError::Connection(e) | TxError::Transient(e) | TxError::Statement(e)) => Err(e),
            });
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
                WriterConn::open(&self.config)
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
    let mut records: Vec<(&str, &AttemptOutcome)> = Vec::new();
    let mut flats: Vec<Flat> = Vec::new();
    let mut touch = false;
    for (op, work) in works.iter().enumerate() {
        match work {
            Work::Enqueue { events, forward } => flats.extend(events.iter().map(|event| Flat {
                op,
                event,
                forward: *forward,
                key: key_digest(&event.idempotency_key),
            })),
            Work::Record { event_id, outcome } => records.push((event_id.as_str(), outcome)),
            Work::Touch => touch = true,
        }
    }

    // Round trip 1: BEGIN, the delivery records (event rows locked in id
    // order), the idempotency keys (key rows locked in key order).
    let record_ids: Vec<&str> = records.iter().map(|(id, _)| *id).collect();
    let record_columns: Vec<RecordColumns> = layers(&record_ids)
        .into_iter()
        .map(|layer| {
            let mut columns = RecordColumns::default();
            for i in layer {
                columns.push(records[i].0, records[i].1, now);
            }
            columns
        })
        .collect();
    let record_params: Vec<[&(dyn ToSql + Sync); 6]> =
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
    let mut round_one = Vec::new();
    for params in &record_params {
        round_one.push(client.query(&conn.record, params));
    }
    for params in &key_params {
        round_one.push(client.query(&conn.upsert_keys, params));
    }
    let (_, results) = try_join(client.batch_execute("BEGIN"), try_join_all(round_one)).await?;
    let mut owned = vec![false; flats.len()];
    for (layer, rows) in key_layers.iter().zip(&results[record_params.len()..]) {
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
    let mut round_two = Vec::new();
    if !columns.is_empty() {
        round_two.push(client.query(&conn.insert_events, &event_params));
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
    let results = if dup_keys.is_empty() {
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
                firsts.insert(flat.key, summary_of_new(flat.event));
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
        client.batch_execute("COMMIT").await?;
    }

    // The answers, per operation and in input order.
    let mut done: Vec<Done> = works
        .iter()
        .map(|w| match w {
            Work::Enqueue { events, .. } => Done::Enqueued(Vec::with_capacity(events.len())),
            _ => Done::Unit,
        })
        .collect();
    for (i, flat) in flats.iter().enumerate() {
        let answer = match firsts.get(&flat.key) {
            Some(first) if !owned[i] => Enqueued::Duplicate(first.clone()),
            _ => Enqueued::Stored(summary_of_new(flat.event)),
        };
        if let Done::Enqueued(list) = &mut done[flat.op] {
            list.push(answer);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_libpq_parameters_and_take_ours() {
        let s =
            parse_url("postgres://u:pw@db.example:5433/leads?schema=blue_1&pool_size=7&connect_timeout=9")
                .unwrap();
        assert_eq!(s.schema.as_deref(), Some("blue_1"));
        assert_eq!(s.pool_size, 7);
        assert_eq!(s.config.get_dbname(), Some("leads"));
        assert_eq!(s.config.get_options(), Some("-c search_path=blue_1"));
        assert_eq!(s.config.get_connect_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(s.config.get_application_name(), Some("leadscore"));
        assert_eq!(s.config.get_keepalives_idle(), KEEPALIVE_IDLE);
        let s = parse_url("postgresql://u@h/db?options=-csearch_path%3Dxyz").unwrap();
        assert_eq!(s.schema, None);
        assert_eq!(s.config.get_options(), Some("-csearch_path=xyz"));
        assert_eq!(s.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        for (url, expected) in [
            ("postgres://u@h/db?schema=Bad-Name", "not a plain lower-case name"),
            ("postgres://u@h/db?pool_size=0", "pool_size"),
            ("postgres://u:secret@h/db?sslmode=require", "without TLS"),
            ("postgres://u@h/db?nonsense=1", "nonsense"),
        ] {
            let e = parse_url(url).err().expect(url).to_string();
            assert!(e.contains(expected), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn search_paths_name_their_first_schema() {
        assert_eq!(first_in_search_path("xyz, public").as_deref(), Some("xyz"));
        assert_eq!(
            first_in_search_path("\"My \"\"S\"\"\", public").as_deref(),
            Some("My \"S\"")
        );
        assert_eq!(first_in_search_path("\"$user\", public"), None);
        assert_eq!(first_in_search_path("Upper").as_deref(), Some("upper"));
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn layers_separate_repeated_keys_and_sort_each() {
        let keys = ["b", "a", "b", "c", "b", "a"];
        assert_eq!(layers(&keys), vec![vec![1, 0, 3], vec![5, 2], vec![4]]);
        assert!(layers::<u8>(&[]).is_empty());
    }
}
