//! The embedded store: one SQLite file in WAL mode.
//!
//! One file on purpose: every statement and the one writer thread that runs
//! them share the transaction rules described here.
//!
//! Every write goes through one writer thread that takes all the operations
//! queued when it is free, applies them in one transaction and commits once
//! (`synchronous=FULL`: the commit is on disk before anyone is answered).
//! Operations that arrive during a commit wait for the next one, so under
//! load many share a commit (throughput is not bounded by one fsync per
//! request) and a lone request never waits for company. A checkpointer
//! thread copies the log into the database file beside the writer, so a
//! commit only appends to the log. Reads use their own connection, which
//! WAL lets run beside the writer (and beside other processes such as
//! `leadscore deliveries list`).

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, named_params, params};
use tokio::sync::oneshot;

use super::emails::{self, EmailIndex};
use super::reply::{Done, PruneStep, Reply, ReplyTo};
use super::{
    AttemptInfo, AttemptLog, AttemptOutcome, AttemptRow, ClaimedDelivery, ContactHistory, ContactTimeline,
    Counters, DeliveryBacklog, DeliveryCounts, DeliveryFilter, DeliveryInfo, DeliveryRow, DeliveryStatus,
    Enqueued, EventSummary, EventWindow, HookSummary, ItemStored, NewEvent, NewHook, NewItem, OutcomeColumns,
    Pruned, Requeue, RescoreJob, RescoreSource, Retention, Store, StoreResult, StoredEvent, StoredHook,
    contact_id_of, key_digest, now_ms, packed, tally, tally_hooks, unavailable,
};

/// Most operations one transaction takes.
const MAX_GROUP: usize = 512;

/// Events one pruning step looks at: a step is one short transaction, and
/// webhooks queued meanwhile are written between two steps.
const PRUNE_SPAN: i64 = 1000;

/// How long a caller waits for its write before it is answered
/// `Unavailable` (a webhook gets `503`, well inside iClosed's 5 s). A write
/// still queued by then is dropped, never applied (nothing half-accepted).
const WRITE_DEADLINE: Duration = Duration::from_millis(3500);

/// How long a transaction waits for another process's lock (a `leadscore
/// deliveries` command, say) before it fails: inside [`WRITE_DEADLINE`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// One row per event (the scored event and its idempotency key) and one
/// per delivery of it to a destination (SPEC 10). The event row holds what
/// ingest looks up (four B-trees per event); a delivery's state changes on
/// its own small row.
const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    contact_key     TEXT NOT NULL,
    idempotency_key BLOB NOT NULL,
    received_at     INTEGER NOT NULL,
    score           TEXT NOT NULL,
    tier            TEXT NOT NULL,
    disqualified    INTEGER NOT NULL,
    rules_version   TEXT NOT NULL,
    -- The scored contact, packed (store::packed); text in rows of schema 2.
    body            TEXT NOT NULL,
    -- The contact's email, trimmed and lower-cased (schema 5; NULL before).
    email           TEXT,
    -- 'contact' (a received contact) or 'rescored' (SPEC 12).
    kind            TEXT NOT NULL DEFAULT 'contact'
    -- Files of schema 1 to 3 also have the columns of their one delivery
    -- per event (delivery, attempts, ...): copied into `deliveries` by the
    -- move to schema 4 and unused since.
);
-- A contact's events in order, with their idempotency keys: a contact's
-- latest event (backtests) and duplicates (a duplicate is always of the
-- same contact: its key covers the contact id or the whole contact).
-- Contact ids mostly grow, so new entries land at the index's end; an
-- index on the (random) key alone dirtied a page of its own for every
-- event, a third of the log written per event (BENCHMARKS.md).
CREATE INDEX IF NOT EXISTS events_contact_key ON events (contact_key, seq, idempotency_key);
-- Schema 1 had these two instead.
DROP INDEX IF EXISTS events_idempotency;
DROP INDEX IF EXISTS events_contact;
-- One delivery of an event to a destination; 'pending', 'dead' or 'delivered'.
CREATE TABLE IF NOT EXISTS deliveries (
    event_seq       INTEGER NOT NULL,
    destination     TEXT NOT NULL,
    contact_key     TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    claimed_until   INTEGER,
    PRIMARY KEY (event_seq, destination)
) WITHOUT ROWID;
-- Every attempt (SPEC 10 "Attempts"), kept for the retention by its time.
CREATE TABLE IF NOT EXISTS attempts (
    event_seq     INTEGER NOT NULL,
    destination   TEXT NOT NULL,
    at            INTEGER NOT NULL,
    status        INTEGER,
    error         TEXT,
    latency_ms    INTEGER NOT NULL,
    response_body TEXT
);
-- Per-minute counts behind GET /stats (see store::tally): small, so that
-- the overview never scans the events.
CREATE TABLE IF NOT EXISTS counters (
    minute INTEGER NOT NULL,
    what   TEXT NOT NULL,
    name   TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (minute, what, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Calls, outcomes and unknown hooks (SPEC 11), never scored or forwarded.
-- `contact_key` is the linked contact, NULL until it arrives; `contact_ref`
-- (an outcome's contactId, loose form) and `email` are what links it.
CREATE TABLE IF NOT EXISTS hooks (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    idempotency_key BLOB NOT NULL,
    received_at     INTEGER NOT NULL,
    contact_key     TEXT,
    contact_ref     TEXT,
    email           TEXT,
    own_id          TEXT,
    call_status     TEXT,
    call_start      TEXT,
    call_type       TEXT,
    call_outcome    TEXT,
    sale            INTEGER NOT NULL DEFAULT 0,
    revenue         REAL NOT NULL DEFAULT 0,
    body            TEXT NOT NULL
);
-- Rescore jobs (SPEC 12); at most one running (the unique partial index).
CREATE TABLE IF NOT EXISTS rescore_jobs (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    cause       TEXT NOT NULL,
    since_ms    INTEGER NOT NULL,
    up_to_seq   INTEGER NOT NULL,
    cursor      INTEGER NOT NULL,
    scored      INTEGER NOT NULL,
    changed     INTEGER NOT NULL,
    pushed      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT,
    owner       TEXT,
    lease_until INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rescore_jobs_running ON rescore_jobs (state) WHERE state = 'running';
"#;

/// Schema 3 → 4: each event's one delivery becomes a delivery of `default`
/// (SPEC 10); the old columns stay, unused (dropping them would rewrite the
/// whole table).
const MOVE_DELIVERIES_OUT_OF_EVENTS: &str = r#"
INSERT OR IGNORE INTO deliveries (event_seq, destination, contact_key, status, attempts, next_attempt_at,
                                  last_status, last_error, created_at, delivered_at, claimed_until)
SELECT seq, 'default', contact_key, delivery, attempts, next_attempt_at, last_status, last_error,
       received_at, delivered_at, claimed_until
FROM events WHERE delivery IS NOT NULL;
DROP INDEX IF EXISTS events_pending;
DROP INDEX IF EXISTS events_dead;
"#;

/// Indexes and the triggers that keep `delivery_totals`.
const INDEXES: &str = r#"
-- Due deliveries of a destination, and a contact's pending ones (order).
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_attempt_at, event_seq)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_contact ON deliveries (destination, contact_key, event_seq)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (event_seq) WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (event_seq, destination, at);
-- Contacts by email: the table event_emails, filled in batches
-- (store::emails); schema 5 had an index on events (email, seq).
DROP INDEX IF EXISTS events_email;
-- A contact's calls and outcomes; duplicates; hooks waiting for their contact.
CREATE INDEX IF NOT EXISTS hooks_contact ON hooks (contact_key, seq) WHERE contact_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS hooks_key ON hooks (idempotency_key);
CREATE INDEX IF NOT EXISTS hooks_waiting_ref ON hooks (contact_ref) WHERE contact_key IS NULL;
CREATE INDEX IF NOT EXISTS hooks_waiting_email ON hooks (email) WHERE contact_key IS NULL;
CREATE INDEX IF NOT EXISTS hooks_received ON hooks (received_at);
-- Deliveries by destination and status, so that GET /metrics, GET /stats
-- and GET /destinations read a few rows instead of counting deliveries:
-- new deliveries are added by the writer, one row per destination and
-- transaction (COUNT_NEW_DELIVERIES; a trigger per row cost 3 % of ingest
-- per destination), changes and deletions by triggers. Filled from the
-- deliveries once, when a file written before the table existed is opened.
CREATE TABLE IF NOT EXISTS delivery_totals (
    destination TEXT NOT NULL,
    status      TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (destination, status)
) WITHOUT ROWID;
DROP TRIGGER IF EXISTS delivery_totals_insert;
CREATE TRIGGER IF NOT EXISTS delivery_totals_update AFTER UPDATE OF status ON deliveries
    WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE delivery_totals SET count = count - 1
        WHERE destination = OLD.destination AND status = OLD.status;
    INSERT INTO delivery_totals (destination, status, count) VALUES (NEW.destination, NEW.status, 1)
        ON CONFLICT (destination, status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER IF NOT EXISTS delivery_totals_delete AFTER DELETE ON deliveries
BEGIN
    UPDATE delivery_totals SET count = count - 1
        WHERE destination = OLD.destination AND status = OLD.status;
END;
"#;

/// Adds a transaction's new pending deliveries of a destination to the totals.
const COUNT_NEW_DELIVERIES: &str =
    "INSERT INTO delivery_totals (destination, status, count) VALUES (?1, 'pending', ?2)
     ON CONFLICT (destination, status) DO UPDATE SET count = count + excluded.count";

/// Fills `delivery_totals` from the deliveries (run when it is new).
const FILL_DELIVERY_TOTALS: &str = r#"
DELETE FROM delivery_totals;
INSERT INTO delivery_totals (destination, status, count)
SELECT destination, status, COUNT(*) FROM deliveries GROUP BY destination, status;
"#;

/// 6: contacts by email in `event_emails` (store::emails); 5: calls and
/// outcomes, contact emails; 4: deliveries per destination; 3: bodies are
/// packed (store::packed); 2: one index per contact.
const SCHEMA_VERSION: u32 = 6;

/// What one queued write does.
enum Work {
    Enqueue {
        items: Vec<NewItem>,
    },
    Claim {
        destination: String,
        limit: usize,
        lease: Duration,
    },
    Record {
        seq: i64,
        destination: String,
        claim: i64,
        outcome: AttemptOutcome,
        attempt: AttemptLog,
    },
    /// Dead deliveries back to pending: of one event or all, of one
    /// destination or all.
    Requeue {
        event_id: Option<String>,
        destination: Option<String>,
    },
    Discard {
        destination: String,
    },
    /// One step of a pruning pass: the events after `after` (by `seq`).
    Prune {
        after: i64,
    },
    Touch,
    ReleaseClaims,
}

/// One queued write.
struct WriteOp {
    work: Work,
    reply: ReplyTo,
}

pub struct SqliteStore {
    writer: std_mpsc::Sender<WriteOp>,
    reader: Arc<Mutex<Connection>>,
    /// Rescore jobs' state (see [`SqliteStore::job_write`]).
    jobs: Arc<Mutex<Connection>>,
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Checkpoints are the checkpointer thread's job (see `checkpoint_loop`):
    // one run by the writer after a commit copies and syncs thousands of
    // pages, tens of milliseconds that every request waiting on the next
    // commit would feel. This threshold is only a backstop should the
    // checkpointer fall far behind.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
    // When the log restarts from its beginning, trim one that grew under a
    // burst back to this size.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // 8 MiB of page cache for the (random) idempotency-key lookups.
    conn.pragma_update(None, "cache_size", -8192)?;
    Ok(conn)
}

/// Creates the schema or brings an older file's up to date, in one
/// transaction (two processes opening a file at once do it once).
fn prepare_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let prepared = (|| {
        let version: Option<u32> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .unwrap_or(None)
            .and_then(|v| v.parse().ok());
        conn.execute_batch(TABLES)?;
        let has_event_deliveries: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'delivery'",
            [],
            |r| r.get(0),
        )?;
        if has_event_deliveries > 0 && version.is_none_or(|v| v < 4) {
            conn.execute_batch(MOVE_DELIVERIES_OUT_OF_EVENTS)?;
        }
        let has_email: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'email'",
            [],
            |r| r.get(0),
        )?;
        if has_email == 0 {
            // Events of older files keep no email: their contacts link by id.
            conn.execute_batch(
                "ALTER TABLE events ADD COLUMN email TEXT;
                 ALTER TABLE events ADD COLUMN kind TEXT NOT NULL DEFAULT 'contact';",
            )?;
        }
        let totals_exist: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'delivery_totals'
                AND sql LIKE '%destination%'",
            [],
            |r| r.get(0),
        )?;
        if totals_exist == 0 {
            // A table of an unreleased build counted by status alone.
            conn.execute_batch(
                "DROP TRIGGER IF EXISTS delivery_totals_insert; DROP TRIGGER IF EXISTS delivery_totals_update;
                 DROP TRIGGER IF EXISTS delivery_totals_delete; DROP TABLE IF EXISTS delivery_totals;",
            )?;
        }
        conn.execute_batch(INDEXES)?;
        if totals_exist == 0 {
            conn.execute_batch(FILL_DELIVERY_TOTALS)?;
        }
        index_emails(conn)?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION.to_string()],
        )?;
        Ok(())
    })();
    match prepared {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Brings `event_emails` up to the last event: all of a file's events the
/// first time (schema 5 and older), else those a stopped writer had not
/// indexed yet (their entries were still in its memory).
fn index_emails(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(emails::TABLE)?;
    let through: i64 = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
            [emails::INDEXED_THROUGH],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    conn.execute(emails::CATCH_UP, [through, i64::MAX])?;
    conn.execute(
        "INSERT INTO meta (key, value) SELECT ?1, COALESCE(MAX(seq), 0) FROM events WHERE true
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [emails::INDEXED_THROUGH],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and starts its writer.
    pub fn open(path: &Path, retention: Retention) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("cannot create folder {}: {e}", dir.display())))?;
        }
        let open_error = |e: rusqlite::Error| unavailable(format!("cannot open {}: {e}", path.display()));
        let conn = connect(path).map_err(open_error)?;
        // A file a newer version has written may hold rows this one cannot
        // read (schema 3's packed bodies, for one): refuse it before touching it.
        let existing: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
                r.get(0)
            })
            .ok();
        if let Some(version) = existing.filter(|v| !v.parse::<u32>().is_ok_and(|v| v <= SCHEMA_VERSION)) {
            return Err(unavailable(format!(
                "{} was written by a newer leadscore (store schema {version}; this version knows up to \
                 {SCHEMA_VERSION}): run that version, or point --store at another file",
                path.display()
            )));
        }
        prepare_schema(&conn).map_err(open_error)?;
        let indexed_through: i64 = conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
                [emails::INDEXED_THROUGH],
                |r| r.get(0),
            )
            .map_err(open_error)?;
        let reader = connect(path).map_err(open_error)?;
        let jobs = connect(path).map_err(open_error)?;
        let checkpointer = connect(path).map_err(open_error)?;
        let (wake_checkpointer, commits) = std_mpsc::sync_channel(1);
        conn.wal_hook(Some(note_log_size));
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &commits))
            .map_err(unavailable)?;
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    retention,
                    wake_checkpointer,
                    totals: GroupTotals::default(),
                    hooks_waiting: Default::default(),
                    emails: EmailIndex::new(indexed_through),
                    refused_bytes: None,
                }
                .run(rx)
            })
            .map_err(unavailable)?;
        Ok(Self {
            writer: tx,
            reader: Arc::new(Mutex::new(reader)),
            jobs: Arc::new(Mutex::new(jobs)),
        })
    }

    async fn write<T>(&self, work: Work, reply_to: impl FnOnce(Reply<T>) -> ReplyTo) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let op = WriteOp {
            work,
            reply: reply_to(reply),
        };
        self.writer
            .send(op)
            .map_err(|_| unavailable("the writer has stopped"))?;
        match tokio::time::timeout(WRITE_DEADLINE, answer).await {
            Ok(answer) => answer.map_err(|_| unavailable("the writer has stopped"))?,
            Err(_) => Err(unavailable(format!(
                "the store did not complete the write within {}",
                humantime::format_duration(WRITE_DEADLINE)
            ))),
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        Self::on(&self.reader, query).await
    }

    /// A rescore job's own small write, on a connection of its own: under
    /// load it waits for the writer's lock (up to [`BUSY_TIMEOUT`]), and
    /// must not hold up the reads meanwhile.
    async fn job_write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        Self::on(&self.jobs, write).await
    }

    async fn on<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&conn).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn store_items(&self, items: Vec<NewItem>) -> StoreResult<Vec<ItemStored>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.write(Work::Enqueue { items }, ReplyTo::Enqueued).await
    }

    async fn claim_due(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let destination = destination.to_owned();
        self.write(
            Work::Claim {
                destination,
                limit,
                lease,
            },
            ReplyTo::Claimed,
        )
        .await
    }

    async fn record_attempt(
        &self,
        delivery: &ClaimedDelivery,
        outcome: AttemptOutcome,
        attempt: AttemptLog,
    ) -> StoreResult<()> {
        let work = Work::Record {
            seq: delivery.seq,
            destination: delivery.destination.clone(),
            claim: delivery.claim,
            outcome,
            attempt,
        };
        self.write(work, ReplyTo::Unit).await
    }

    async fn list_deliveries(&self, filter: DeliveryFilter, limit: usize) -> StoreResult<Vec<DeliveryInfo>> {
        self.read(move |conn| {
            // Newest first: the key order finds delivered ones, the partial
            // index dead ones.
            let mut stmt = conn.prepare_cached(
                "SELECT e.id, d.destination, d.contact_key, d.status, d.attempts, d.last_status, d.last_error,
                        d.next_attempt_at, d.created_at, d.delivered_at
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq
                 WHERE (?1 IS NULL OR d.status = ?1) AND (?2 IS NULL OR d.destination = ?2)
                 ORDER BY d.event_seq DESC, d.destination LIMIT ?3",
            )?;
            let status = filter.status.map(DeliveryStatus::as_str);
            let rows = stmt.query_map(params![status, filter.destination, limit as i64], |row| {
                Ok(DeliveryRow {
                    id: row.get(0)?,
                    destination: row.get(1)?,
                    contact_key: row.get(2)?,
                    status: row.get(3)?,
                    attempts: row.get(4)?,
                    last_status: row.get(5)?,
                    last_error: row.get(6)?,
                    next_attempt_at: row.get(7)?,
                    created_at: row.get(8)?,
                    delivered_at: row.get(9)?,
                }
                .into_info())
            })?;
            rows.collect()
        })
        .await
    }

    async fn requeue(&self, event_id: &str, destination: Option<&str>) -> StoreResult<Requeue> {
        let work = Work::Requeue {
            event_id: Some(event_id.to_owned()),
            destination: destination.map(str::to_owned),
        };
        if self.write(work, ReplyTo::Count).await? > 0 {
            return Ok(Requeue::Requeued);
        }
        let (id, destination) = (event_id.to_owned(), destination.map(str::to_owned));
        let exists: i64 = self
            .read(move |conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq
                     WHERE e.id = ?1 AND (?2 IS NULL OR d.destination = ?2)",
                    params![id, destination],
                    |r| r.get(0),
                )
            })
            .await?;
        Ok(if exists > 0 {
            Requeue::NotDead
        } else {
            Requeue::Unknown
        })
    }

    async fn requeue_dead(&self, destination: Option<&str>) -> StoreResult<u64> {
        let work = Work::Requeue {
            event_id: None,
            destination: destination.map(str::to_owned),
        };
        self.write(work, ReplyTo::Count).await
    }

    async fn attempts(
        &self,
        event_id: &str,
        destination: Option<&str>,
    ) -> StoreResult<Option<Vec<AttemptInfo>>> {
        let (id, destination) = (event_id.to_owned(), destination.map(str::to_owned));
        self.read(move |conn| {
            let seq: Option<i64> = conn
                .query_row(
                    "SELECT d.event_seq FROM deliveries d JOIN events e ON e.seq = d.event_seq
                     WHERE e.id = ?1 AND (?2 IS NULL OR d.destination = ?2) LIMIT 1",
                    params![id, destination],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(seq) = seq else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT destination, at, status, error, latency_ms, response_body FROM attempts
                 WHERE event_seq = ?1 AND (?2 IS NULL OR destination = ?2)
                 ORDER BY at, rowid",
            )?;
            let rows = stmt.query_map(params![seq, destination], |row| {
                Ok(AttemptRow {
                    destination: row.get(0)?,
                    at: row.get(1)?,
                    status: row.get(2)?,
                    error: row.get(3)?,
                    latency_ms: row.get(4)?,
                    response_body: row.get(5)?,
                }
                .into_info())
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map(Some)
        })
        .await
    }

    async fn discard_deliveries(&self, destination: &str) -> StoreResult<u64> {
        let destination = destination.to_owned();
        self.write(Work::Discard { destination }, ReplyTo::Count).await
    }

    async fn delivery_counts(&self) -> StoreResult<DeliveryCounts> {
        self.read(|conn| {
            let mut counts = DeliveryCounts::default();
            for (_, status, count) in read_delivery_totals(conn)? {
                match status.as_str() {
                    "pending" => counts.pending += count,
                    "dead" => counts.dead += count,
                    "delivered" => counts.delivered += count,
                    _ => {}
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn destination_backlogs(&self) -> StoreResult<Vec<(String, DeliveryBacklog)>> {
        self.read(|conn| {
            let mut backlogs: Vec<(String, DeliveryBacklog)> = Vec::new();
            for (destination, status, count) in read_delivery_totals(conn)? {
                if backlogs.last().is_none_or(|(d, _)| *d != destination) {
                    backlogs.push((destination, DeliveryBacklog::default()));
                }
                let backlog = &mut backlogs.last_mut().expect("pushed above").1;
                match status.as_str() {
                    "pending" => backlog.pending = count,
                    "dead" => backlog.dead = count,
                    _ => {}
                }
            }
            Ok(backlogs)
        })
        .await
    }

    /// A pass of short steps (see [`PRUNE_SPAN`]) from the oldest event on.
    async fn prune(&self) -> StoreResult<Pruned> {
        let mut after = 0;
        let mut events = 0;
        loop {
            let step = self.write(Work::Prune { after }, ReplyTo::PruneStep).await?;
            events += step.deleted;
            match step.next_after {
                Some(next) => after = next,
                None => return Ok(Pruned { events }),
            }
        }
    }

    async fn release_stale_claims(&self) -> StoreResult<u64> {
        // One server uses a SQLite file, so any claim found when it starts
        // was left by an earlier run (crashed or killed): free it at once
        // instead of after its lease. Other commands (`leadscore deliveries`)
        // never call this, so they never free a running server's claims.
        self.write(Work::ReleaseClaims, ReplyTo::Count).await
    }

    async fn check_writable(&self) -> StoreResult<()> {
        self.write(Work::Touch, ReplyTo::Unit).await
    }

    async fn close(&self) -> StoreResult<bool> {
        // On a spare connection: the writer is idle by now, and this waits
        // for its lock (and for readers) at most [`BUSY_TIMEOUT`].
        self.job_write(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0))
                .map(|busy| busy == 0)
        })
        .await
    }

    async fn last_seq(&self) -> StoreResult<i64> {
        self.read(|conn| conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0)))
            .await
    }

    async fn count_events(&self, window: EventWindow) -> StoreResult<u64> {
        self.read(move |conn| {
            let sql = format!("SELECT COUNT(*) FROM events e WHERE {WINDOW_FILTER}");
            conn.prepare_cached(&sql)?.query_row(
                named_params! {
                    ":after": 0i64,
                    ":up_to": window.up_to_seq,
                    ":since": window.since_ms,
                    ":all": window.all_events,
                },
                |r| r.get::<_, i64>(0).map(|n| n as u64),
            )
        })
        .await
    }

    async fn scan_events(
        &self,
        window: EventWindow,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT seq, id, received_at, body, contact_key FROM events e WHERE {WINDOW_FILTER} ORDER BY seq LIMIT :limit"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                named_params! {
                    ":after": after_seq,
                    ":up_to": window.up_to_seq,
                    ":since": window.since_ms,
                    ":all": window.all_events,
                    ":limit": limit as i64,
                },
                stored_event,
            )?;
            rows.collect()
        })
        .await
    }

    async fn contact_timeline(&self, contact_key: &str, limit: usize) -> StoreResult<ContactTimeline> {
        let key = contact_key.to_owned();
        self.read(move |conn| {
            let mut events = conn.prepare_cached(
                "SELECT seq, id, received_at, body, contact_key FROM events WHERE contact_key = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let events: Vec<StoredEvent> = events
                .query_map(params![key, limit as i64], stored_event)?
                .collect::<rusqlite::Result<_>>()?;
            let (first, last) = match (events.first(), events.last()) {
                (Some(first), Some(last)) => (first.seq, last.seq),
                _ => return Ok(ContactTimeline::default()),
            };
            let mut deliveries = conn.prepare_cached(
                "SELECT e.id, d.destination, d.contact_key, d.status, d.attempts, d.last_status, d.last_error,
                        d.next_attempt_at, d.created_at, d.delivered_at
                 FROM events e JOIN deliveries d ON d.event_seq = e.seq
                 WHERE e.contact_key = ?1 AND e.seq BETWEEN ?2 AND ?3 ORDER BY e.seq, d.destination",
            )?;
            let deliveries = deliveries
                .query_map(params![key, first, last], |row| {
                    Ok(DeliveryRow {
                        id: row.get(0)?,
                        destination: row.get(1)?,
                        contact_key: row.get(2)?,
                        status: row.get(3)?,
                        attempts: row.get(4)?,
                        last_status: row.get(5)?,
                        last_error: row.get(6)?,
                        next_attempt_at: row.get(7)?,
                        created_at: row.get(8)?,
                        delivered_at: row.get(9)?,
                    }
                    .into_info())
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut attempts = conn.prepare_cached(
                "SELECT e.id, a.destination, a.at, a.status, a.error, a.latency_ms, a.response_body
                 FROM events e JOIN attempts a ON a.event_seq = e.seq
                 WHERE e.contact_key = ?1 AND e.seq BETWEEN ?2 AND ?3 ORDER BY e.seq, a.destination, a.at",
            )?;
            let attempts = attempts
                .query_map(params![key, first, last], |row| {
                    Ok((
                        row.get(0)?,
                        AttemptRow {
                            destination: row.get(1)?,
                            at: row.get(2)?,
                            status: row.get(3)?,
                            error: row.get(4)?,
                            latency_ms: row.get(5)?,
                            response_body: row.get(6)?,
                        }
                        .into_info(),
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(ContactTimeline {
                events,
                deliveries,
                attempts,
            })
        })
        .await
    }

    async fn recent_events(&self, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, id, received_at, body, contact_key FROM events ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], stored_event)?;
            rows.collect()
        })
        .await
    }

    async fn start_rescore(
        &self,
        job: &RescoreJob,
        owner: &str,
        lease_until: i64,
    ) -> StoreResult<Result<(), String>> {
        let (job, owner) = (job.clone(), owner.to_owned());
        // Jobs are a few tiny writes: on a connection of their own (WAL lets
        // it write between the writer's transactions), not the writer's queue.
        self.job_write(move |conn| {
            let inserted = conn.execute(
                "INSERT INTO rescore_jobs (id, state, cause, since_ms, up_to_seq, cursor, scored, changed, pushed,
                                           started_at, owner, lease_until)
                 VALUES (?1, 'running', ?2, ?3, ?4, ?5, 0, 0, 0, ?6, ?7, ?8)
                 ON CONFLICT DO NOTHING",
                params![job.id, job.cause, job.since_ms, job.up_to_seq, job.cursor, job.started_at, owner, lease_until],
            )?;
            if inserted == 1 {
                return Ok(Ok(()));
            }
            let running: String =
                conn.query_row("SELECT id FROM rescore_jobs WHERE state = 'running'", [], |row| row.get(0))?;
            Ok(Err(running))
        })
        .await
    }

    async fn rescore_job(&self, id: &str) -> StoreResult<Option<RescoreJob>> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM rescore_jobs WHERE id = ?1"),
                [id],
                rescore_job,
            )
            .optional()
        })
        .await
    }

    async fn recent_rescore_jobs(&self, limit: usize) -> StoreResult<Vec<RescoreJob>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM rescore_jobs ORDER BY started_at DESC, id DESC LIMIT ?1"
            ))?;
            let rows = stmt.query_map([limit as i64], rescore_job)?;
            rows.collect()
        })
        .await
    }

    async fn save_rescore(&self, job: &RescoreJob, owner: &str, lease_until: i64) -> StoreResult<bool> {
        let (job, owner) = (job.clone(), owner.to_owned());
        self.job_write(move |conn| {
            let saved = conn.execute(
                "UPDATE rescore_jobs SET state = ?2, cursor = ?3, scored = ?4, changed = ?5, pushed = ?6,
                                         finished_at = ?7, error = ?8, lease_until = ?9
                 WHERE id = ?1 AND state = 'running' AND owner = ?10",
                params![
                    job.id,
                    job.state,
                    job.cursor,
                    job.scored as i64,
                    job.changed as i64,
                    job.pushed as i64,
                    job.finished_at,
                    job.error,
                    lease_until,
                    owner
                ],
            )?;
            Ok(saved == 1)
        })
        .await
    }

    async fn take_over_rescore(&self, owner: &str, lease_until: i64) -> StoreResult<Option<RescoreJob>> {
        let owner = owner.to_owned();
        let now = now_ms();
        // Asked every few seconds: a read first (it never waits for the
        // writer), the write only when there is a job to take over.
        let orphaned: bool = self
            .read(move |conn| {
                conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM rescore_jobs WHERE state = 'running' AND lease_until < ?1)",
                    [now],
                    |row| row.get(0),
                )
            })
            .await?;
        if !orphaned {
            return Ok(None);
        }
        self.job_write(move |conn| {
            conn.query_row(
                &format!(
                    "UPDATE rescore_jobs SET owner = ?1, lease_until = ?2
                     WHERE state = 'running' AND lease_until < ?3 RETURNING {JOB_COLUMNS}"
                ),
                params![owner, lease_until, now],
                rescore_job,
            )
            .optional()
        })
        .await
    }

    async fn cancel_rescore(&self, id: &str) -> StoreResult<Option<RescoreJob>> {
        let id = id.to_owned();
        self.job_write(move |conn| {
            conn.execute(
                "UPDATE rescore_jobs SET state = 'cancelled', finished_at = ?2, owner = NULL
                 WHERE id = ?1 AND state = 'running'",
                params![id, now_ms()],
            )?;
            conn.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM rescore_jobs WHERE id = ?1"),
                [id],
                rescore_job,
            )
            .optional()
        })
        .await
    }

    async fn rescore_sources(
        &self,
        since_ms: i64,
        up_to_seq: i64,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<RescoreSource>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT e.seq, e.contact_key, e.body, l.seq, CASE WHEN l.seq <> e.seq THEN l.body END
                 FROM events e
                 JOIN events l ON l.seq = (SELECT MAX(seq) FROM events m
                                           WHERE m.contact_key = e.contact_key AND m.seq <= :up_to)
                 WHERE e.seq > :after AND e.seq <= :up_to AND e.kind = 'contact'
                   AND NOT EXISTS (SELECT 1 FROM events n WHERE n.contact_key = e.contact_key
                                   AND n.seq > e.seq AND n.seq <= :up_to AND n.kind = 'contact')
                   AND (SELECT received_at FROM events f WHERE f.contact_key = e.contact_key
                        ORDER BY seq LIMIT 1) >= :since
                 ORDER BY e.seq LIMIT :limit",
            )?;
            let rows = stmt.query_map(
                named_params! {":after": after_seq, ":up_to": up_to_seq, ":since": since_ms, ":limit": limit as i64},
                |row| {
                    Ok(RescoreSource {
                        source_seq: row.get(0)?,
                        contact_key: row.get(1)?,
                        source_body: body_at(row, 2)?,
                        latest_seq: row.get(3)?,
                        latest_body: match row.get_ref(4)? {
                            rusqlite::types::ValueRef::Null => None,
                            _ => Some(body_at(row, 4)?),
                        },
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    async fn contact_histories(
        &self,
        contacts: Vec<(String, Option<String>)>,
        until_ms: i64,
    ) -> StoreResult<std::collections::HashMap<String, ContactHistory>> {
        self.read(move |conn| {
            let mut first = conn.prepare_cached(
                "SELECT received_at FROM events WHERE contact_key = ?1 ORDER BY seq LIMIT 1",
            )?;
            let mut calls = conn.prepare_cached(&format!(
                "SELECT {HOOK_COLUMNS} FROM hooks WHERE contact_key = ?1 AND kind = 'call' AND received_at <= ?2
                 UNION ALL
                 SELECT {HOOK_COLUMNS} FROM hooks WHERE contact_key IS NULL AND email = ?3 AND kind = 'call'
                     AND received_at <= ?2
                 ORDER BY seq"
            ))?;
            let mut histories = std::collections::HashMap::with_capacity(contacts.len());
            for (key, email) in contacts {
                let first_seen = first.query_row([&key], |row| row.get(0)).optional()?;
                let calls = calls
                    .query_map(params![key, until_ms, email], stored_hook)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                histories.insert(key, ContactHistory { first_seen, calls });
            }
            Ok(histories)
        })
        .await
    }

    async fn contacts_by_email(&self, email: &str, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let email = email.to_owned();
        self.read(move |conn| {
            // The newest event of each contact that had this email, then
            // only contacts whose latest event still has it.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT e.seq, e.id, e.received_at, e.body, e.contact_key FROM events e
                 WHERE e.seq IN (SELECT MAX(seq) FROM ({}) GROUP BY contact_key)
                   AND NOT EXISTS (SELECT 1 FROM events l WHERE l.contact_key = e.contact_key AND l.seq > e.seq)
                 ORDER BY e.seq DESC LIMIT ?2",
                emails::CANDIDATES
            ))?;
            let rows = stmt.query_map(params![email, limit as i64], stored_event)?;
            rows.collect()
        })
        .await
    }

    async fn contact_hooks(&self, contact_key: &str, limit: usize) -> StoreResult<Vec<StoredHook>> {
        let key = contact_key.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {HOOK_COLUMNS} FROM hooks WHERE contact_key = ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![key, limit as i64], stored_hook)?;
            rows.collect()
        })
        .await
    }

    async fn contact_outcomes(&self, since_ms: i64) -> StoreResult<Vec<crate::outcomes::ContactOutcome>> {
        self.read(move |conn| {
            let mut latest = conn.prepare_cached(
                "SELECT f.contact_key, f.first_seen, e.score, e.tier, e.disqualified, e.body
                 FROM (SELECT contact_key, MIN(received_at) AS first_seen,
                              MAX(CASE WHEN kind = 'contact' THEN seq END) AS last_seq
                       FROM events GROUP BY contact_key HAVING MIN(received_at) >= ?1) f
                 JOIN events e ON e.seq = f.last_seq",
            )?;
            let mut contacts = Vec::new();
            let mut rows = latest.query([since_ms])?;
            while let Some(row) = rows.next()? {
                let score: String = row.get(2)?;
                contacts.push(super::outcome_row::LatestResult {
                    contact_key: row.get(0)?,
                    first_seen: row.get(1)?,
                    score: score.parse().unwrap_or(0.0),
                    tier: row.get(3)?,
                    disqualified: row.get(4)?,
                    body: body_at(row, 5)?,
                });
            }
            let mut hooks = conn.prepare_cached(&format!(
                "SELECT h.contact_key, {HOOK_COLUMNS} FROM hooks h
                 WHERE h.contact_key IS NOT NULL AND h.kind IN ('call', 'outcome')
                   AND h.contact_key IN (SELECT contact_key FROM events GROUP BY contact_key
                                         HAVING MIN(received_at) >= ?1)
                 ORDER BY h.seq"
            ))?;
            let hooks = hooks
                .query_map([since_ms], |row| {
                    Ok((row.get::<_, String>(0)?, stored_hook_at(row, 1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(super::outcome_row::combine(contacts, hooks))
        })
        .await
    }

    async fn counters(&self, since_ms: i64) -> StoreResult<Counters> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT minute, what, name, count FROM counters WHERE minute >= ?1 ORDER BY minute",
            )?;
            let rows = stmt.query_map([since_ms.div_euclid(60_000) * 60_000], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get::<_, i64>(3)?.max(0) as u64,
                ))
            })?;
            Ok(Counters {
                rows: rows.collect::<rusqlite::Result<_>>()?,
            })
        })
        .await
    }
}

/// The first event with an idempotency key inside the dedupe window. Reads
/// only the contact's entries of `events_contact_key`, and a row only for a
/// matching key. (The contact id is the new event's: same key, same id.)
/// Whether a hook waits for its contact by reference or by email (each
/// answered by the first entry of a partial index).
const HOOKS_WAITING: &str =
    "SELECT EXISTS (SELECT 1 FROM hooks WHERE contact_key IS NULL AND contact_ref IS NOT NULL)
     OR EXISTS (SELECT 1 FROM hooks WHERE contact_key IS NULL AND email IS NOT NULL)";

const DUPLICATE_LOOKUP: &str = "SELECT id, score, tier, disqualified FROM events
     WHERE contact_key = ?1 AND idempotency_key = ?2 AND received_at >= ?3
     ORDER BY seq LIMIT 1";

/// The events of an [`EventWindow`] after `:after`: those received since
/// `:since` up to the snapshot `:up_to`, and unless `:all`, only a contact's
/// latest event (none later in the snapshot; `events_contact_key` answers that).
const WINDOW_FILTER: &str = "e.seq > :after AND e.seq <= :up_to AND e.received_at >= :since
    AND (:all OR NOT EXISTS (
        SELECT 1 FROM events l WHERE l.contact_key = e.contact_key AND l.seq > e.seq AND l.seq <= :up_to))";

/// The columns [`rescore_job`] reads.
const JOB_COLUMNS: &str = "id, state, cause, since_ms, up_to_seq, cursor, scored, changed, pushed, started_at, \
                           finished_at, error";

fn rescore_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<RescoreJob> {
    Ok(RescoreJob {
        id: row.get(0)?,
        state: row.get(1)?,
        cause: row.get(2)?,
        since_ms: row.get(3)?,
        up_to_seq: row.get(4)?,
        cursor: row.get(5)?,
        scored: row.get::<_, i64>(6)?.max(0) as u64,
        changed: row.get::<_, i64>(7)?.max(0) as u64,
        pushed: row.get::<_, i64>(8)?.max(0) as u64,
        started_at: row.get(9)?,
        finished_at: row.get(10)?,
        error: row.get(11)?,
    })
}

/// The columns [`stored_hook`] reads.
const HOOK_COLUMNS: &str = "seq, id, kind, received_at, own_id, call_status, call_start, call_type, call_outcome, \
                            sale, revenue";

fn stored_hook(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredHook> {
    stored_hook_at(row, 0)
}

fn stored_hook_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StoredHook> {
    let kind: String = row.get(at + 2)?;
    Ok(StoredHook {
        seq: row.get(at)?,
        id: row.get(at + 1)?,
        kind: crate::payload::HookKind::parse(&kind).unwrap_or(crate::payload::HookKind::Unknown),
        received_at: row.get(at + 3)?,
        own_id: row.get(at + 4)?,
        call_status: row.get(at + 5)?,
        call_start: row.get(at + 6)?,
        call_type: row.get(at + 7)?,
        call_outcome: row.get(at + 8)?,
        sale: row.get(at + 9)?,
        revenue: row.get(at + 10)?,
    })
}

fn stored_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: row.get(0)?,
        id: row.get(1)?,
        received_at: row.get(2)?,
        body: body_at(row, 3)?,
        contact_key: row.get(4)?,
    })
}

/// The scored contact in column `index`: packed, or text in rows written
/// before schema 3.
fn body_at(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<String> {
    use rusqlite::types::{FromSqlError, Type, ValueRef};
    let damaged = |kind: Type, e: String| rusqlite::Error::FromSqlConversionFailure(index, kind, e.into());
    match row.get_ref(index)? {
        ValueRef::Blob(packed) => packed::unpack(packed).map_err(|e| damaged(Type::Blob, e)),
        ValueRef::Text(text) => {
            String::from_utf8(text.to_vec()).map_err(|e| damaged(Type::Text, e.to_string()))
        }
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            index,
            other.data_type(),
            Box::new(FromSqlError::InvalidType),
        )),
    }
}

/// A few rows, whatever the number of deliveries (see `delivery_totals`),
/// ordered by destination.
const DELIVERY_TOTALS: &str = "SELECT destination, status, count FROM delivery_totals ORDER BY destination";

fn read_delivery_totals(conn: &Connection) -> rusqlite::Result<Vec<(String, String, u64)>> {
    let mut stmt = conn.prepare_cached(DELIVERY_TOTALS)?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)?.max(0) as u64))
    })?;
    rows.collect()
}

/// What a transaction adds to the per-minute counters and the delivery
/// totals, written once when it commits: one upsert per row and commit
/// instead of one per request (a group commit holds hundreds of requests
/// under load, most of them adding to the same few rows).
#[derive(Default)]
struct GroupTotals {
    counters: std::collections::BTreeMap<(i64, &'static str, String), i64>,
    new_deliveries: std::collections::BTreeMap<String, i64>,
}

impl GroupTotals {
    /// Writes the totals (inside the transaction) and empties them.
    fn write(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let totals = std::mem::take(self);
        if !totals.new_deliveries.is_empty() {
            let mut count_deliveries = conn.prepare_cached(COUNT_NEW_DELIVERIES)?;
            for (destination, n) in totals.new_deliveries {
                count_deliveries.execute(params![destination, n])?;
            }
        }
        if !totals.counters.is_empty() {
            let mut count = conn.prepare_cached(
                "INSERT INTO counters (minute, what, name, count) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (minute, what, name) DO UPDATE SET count = count + excluded.count",
            )?;
            for ((minute, what, name), n) in totals.counters {
                count.execute(params![minute, what, name, n])?;
            }
        }
        Ok(())
    }
}

/// The writer thread: owns the write connection.
struct Writer {
    conn: Connection,
    retention: Retention,
    /// The counters and delivery totals of the open transaction.
    totals: GroupTotals,
    /// Whether a stored hook waits for its contact (SPEC 11 "Linking"), once
    /// known in the open transaction (which holds the write lock, so no one
    /// else adds one meanwhile): most of the time none does, and a new
    /// contact's two link probes are skipped.
    hooks_waiting: std::cell::Cell<Option<bool>>,
    /// Wakes the checkpointer: the log has grown past [`CHECKPOINT_AFTER_PAGES`].
    wake_checkpointer: std_mpsc::SyncSender<()>,
    /// Contacts by email not in `event_emails` yet (store::emails).
    emails: EmailIndex,
    /// The size of the last batch of contacts the store could not take (a
    /// full disk, typically), until a batch commits again. While it is set,
    /// the readiness write is a probe of that size: a tiny write can still
    /// fit on a disk that has no room for a contact.
    refused_bytes: Option<usize>,
}

/// Log size (pages) at which a commit checkpoints by itself (see `connect`
/// and [`note_log_size`]).
const WAL_BACKSTOP_PAGES: i64 = 50_000;
/// Log size (pages, 4 KiB each) from which a commit wakes the checkpointer.
/// Not every commit: the pages a commit dirties are mostly the same few
/// (a table's and an index's last pages, interior pages, counters), and a
/// checkpoint after every commit copied and synced each of them again every
/// time. From 8,000 (32 MiB of log), or [`IDLE_CHECKPOINT`] after the last
/// checkpoint, whichever comes first (both about once a second under load
/// on the bench machine): against SQLite's default of 1,000 the checkpointer's
/// CPU per webhook halved and bytes written fell a fifth, for a p99 up to
/// 2 ms higher; from 16,000 the larger sync of the database file raised
/// p99 by about 4 ms (BENCHMARKS.md, session 12).
const CHECKPOINT_AFTER_PAGES: i32 = 8000;
/// How long the checkpointer waits for a wake-up before it copies what is
/// in the log anyway: an idle store's file catches up within this, and a
/// busy one is checkpointed at the latest this long after the last time.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

thread_local! {
    /// The writer's log size after its last commit (pages), as SQLite's
    /// log hook reports it (the hook runs on the committing thread).
    static LOG_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The writer connection's log hook: remembers the log's size for
/// [`Writer::committed`], and checkpoints in the writer as the backstop
/// (registering a hook replaces `wal_autocheckpoint`'s own).
fn note_log_size(wal: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    LOG_PAGES.set(pages);
    if i64::from(pages) >= WAL_BACKSTOP_PAGES {
        wal.checkpoint()?;
    }
    Ok(())
}
/// Checkpoint passes in a row at most, should a reader's snapshot keep the
/// checkpointer from catching up.
const MAX_CHECKPOINT_PASSES: usize = 16;

/// Copies committed log pages into the database file beside the writer (a
/// passive checkpoint never blocks it) whenever the log has grown past
/// [`CHECKPOINT_AFTER_PAGES`], and after [`IDLE_CHECKPOINT`] without, so
/// that the writer's commits only ever append to the log and sync it. Ends
/// when the writer has stopped.
fn checkpoint_loop(conn: &Connection, commits: &std_mpsc::Receiver<()>) {
    loop {
        match commits.recv_timeout(IDLE_CHECKPOINT) {
            Ok(()) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // Pass after pass until the database file has caught up with the
        // log: each pass copies what was committed during the one before, so
        // they get shorter, and once the file has caught up the writer
        // restarts the log from its beginning (it would only grow otherwise).
        let mut last_copied = -1;
        for _ in 0..MAX_CHECKPOINT_PASSES {
            let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            });
            match pass {
                // Behind, and the last pass got further: go on.
                Ok((in_log, copied)) if copied < in_log && copied != last_copied => last_copied = copied,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite checkpoint failed; trying again after the next commit");
                    break;
                }
            }
        }
    }
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<WriteOp>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Ok(first) = rx.recv() {
            // No waiting for more: what queued up during the last commit is
            // the group. (A fixed wait cost 20 % of the throughput in
            // BENCHMARKS.md's ingest run.) But first the CPU is offered once
            // to whatever else is ready to run on it: on a busy core the
            // threads that score the next webhooks are, and their items join
            // this group instead of waiting for a commit of their own. Fewer,
            // larger commits: 14 % less CPU per webhook and a fifth fewer
            // bytes written with the server on one core (BENCHMARKS.md,
            // session 14); on an idle core the call returns at once.
            group.push(first);
            std::thread::yield_now();
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            self.apply_group(&mut group);
        }
    }

    /// Drops the operations whose caller stopped waiting (its deadline
    /// passed and it was answered `Unavailable`): they are never applied.
    fn drop_abandoned(group: &mut Vec<WriteOp>) {
        group.retain(|op| !op.reply.is_closed());
    }

    /// Applies queued operations in one transaction. Should one fail
    /// (which only an I/O problem or a bug makes happen), the transaction is
    /// rolled back and each operation is applied again in a transaction of
    /// its own, so one failure never takes the others' work with it and
    /// never commits half of an operation.
    fn apply_group(&mut self, group: &mut Vec<WriteOp>) {
        Self::drop_abandoned(group);
        if group.len() > 1 {
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                let message = format!("cannot start a transaction: {e}");
                for op in group.drain(..) {
                    Done::Failed(message.clone()).send(op.reply);
                }
                return;
            }
            // Starting may have waited for another process's lock.
            Self::drop_abandoned(group);
            // Each op is kept so that it can be applied again on its own.
            let ops: Vec<WriteOp> = std::mem::take(group);
            let mut results = Vec::with_capacity(ops.len());
            let mut failed = false;
            let mut replies = Vec::with_capacity(ops.len());
            for WriteOp { work, reply } in ops {
                if !failed {
                    let result = self.apply(&work);
                    failed = result.failed();
                    results.push(result);
                }
                replies.push((work, reply));
            }
            if !failed && self.commit().is_ok() {
                self.committed();
                for (result, (work, reply)) in results.into_iter().zip(replies) {
                    self.note_outcome(&work, &result);
                    result.send(reply);
                }
                return;
            }
            self.rollback();
            group.extend(replies.into_iter().map(|(work, reply)| WriteOp { work, reply }));
        }
        for WriteOp { work, reply } in group.drain(..) {
            if reply.is_closed() {
                continue;
            }
            let result = match self.conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) if reply.is_closed() => {
                    self.rollback();
                    continue;
                }
                Ok(()) => {
                    let result = self.apply(&work);
                    if result.failed() {
                        self.rollback();
                        result
                    } else if let Err(e) = self.commit() {
                        self.rollback();
                        Done::Failed(format!("commit failed: {e}"))
                    } else {
                        self.committed();
                        result
                    }
                }
                Err(e) => Done::Failed(format!("cannot start a transaction: {e}")),
            };
            self.note_outcome(&work, &result);
            result.send(reply);
        }
    }

    /// Writes the transaction's totals and commits it.
    fn commit(&mut self) -> rusqlite::Result<()> {
        self.hooks_waiting.set(None);
        self.emails.write_slice(&self.conn)?;
        self.totals.write(&self.conn)?;
        self.conn.execute_batch("COMMIT")
    }

    /// Rolls the transaction back with the totals it gathered.
    fn rollback(&mut self) {
        self.hooks_waiting.set(None);
        self.emails.rolled_back();
        self.totals = GroupTotals::default();
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// Whether some stored hook waits for its contact (by reference or email).
    fn hooks_waiting(&self) -> rusqlite::Result<bool> {
        if let Some(known) = self.hooks_waiting.get() {
            return Ok(known);
        }
        let waiting = self
            .conn
            .prepare_cached(HOOKS_WAITING)?
            .query_row([], |row| row.get(0))?;
        self.hooks_waiting.set(Some(waiting));
        Ok(waiting)
    }

    /// After each commit: a log grown past [`CHECKPOINT_AFTER_PAGES`] wakes
    /// the checkpointer (the log stops growing once it has caught up and a
    /// commit has restarted the log from its beginning).
    fn committed(&mut self) {
        self.emails.committed();
        if LOG_PAGES.get() >= CHECKPOINT_AFTER_PAGES {
            let _ = self.wake_checkpointer.try_send(());
        }
    }

    /// Remembers whether the store took the last batch of contacts, and if
    /// not, a generous size for what it would have written. A commit
    /// writes whole pages to the log: a body's own, and the pages of the
    /// table, its indexes and the counters it changes besides — about twice
    /// the body for a large one. A probe of the bodies' size alone could fit
    /// in the log space the refused commit had taken before it failed, and
    /// report a full disk writable.
    fn note_outcome(&mut self, work: &Work, result: &Done) {
        const PAGES_BESIDES_THE_BODY: usize = 4;
        if let Work::Enqueue { items } = work {
            self.refused_bytes = result.failed().then(|| {
                items
                    .iter()
                    .map(|item| match item {
                        NewItem::Event(e) => e.body.len(),
                        NewItem::Hook(h) => h.body.len(),
                    })
                    .map(|body| 2 * body + PAGES_BESIDES_THE_BODY * 4096)
                    .sum()
            });
        }
    }

    /// The readiness write: a timestamp, and after a refused batch, a probe
    /// row of the batch's size (dropped when a batch commits again).
    fn touch(&self) -> rusqlite::Result<()> {
        if let Some(bytes) = self.refused_bytes {
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('write_probe', zeroblob(?1))
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [bytes as i64],
            )?;
        }
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('touched_at', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [now_ms().to_string()],
        )?;
        Ok(())
    }

    fn apply(&mut self, work: &Work) -> Done {
        match work {
            Work::Enqueue { items } => Done::from_result(self.enqueue(items), Done::Enqueued),
            Work::Claim {
                destination,
                limit,
                lease,
            } => Done::from_result(self.claim(destination, *limit, *lease), Done::Claimed),
            Work::Record {
                seq,
                destination,
                claim,
                outcome,
                attempt,
            } => Done::from_result(self.record(*seq, destination, *claim, outcome, attempt), |()| {
                Done::Unit
            }),
            Work::Requeue {
                event_id,
                destination,
            } => Done::from_result(
                self.requeue(event_id.as_deref(), destination.as_deref()),
                Done::Count,
            ),
            Work::Discard { destination } => Done::from_result(
                self.conn.execute(
                    "DELETE FROM deliveries WHERE destination = ?1 AND status IN ('pending', 'dead')",
                    [destination],
                ),
                |n| Done::Count(n as u64),
            ),
            Work::Prune { after } => Done::from_result(self.prune_step(*after), Done::PruneStep),
            Work::ReleaseClaims => Done::from_result(
                self.conn.execute(
                    "UPDATE deliveries SET claimed_until = NULL WHERE claimed_until IS NOT NULL",
                    [],
                ),
                |n| Done::Count(n as u64),
            ),
            Work::Touch => Done::from_result(self.touch(), |()| Done::Unit),
        }
    }

    fn enqueue(&mut self, items: &[NewItem]) -> rusqlite::Result<Vec<ItemStored>> {
        if self.refused_bytes.is_some() {
            // The readiness probe's room is the contacts' again.
            self.conn
                .execute("DELETE FROM meta WHERE key = 'write_probe'", [])?;
        }
        let now = now_ms();
        let window_start = now - self.retention.dedupe_window.as_millis() as i64;
        let mut results: Vec<Option<ItemStored>> = vec![None; items.len()];
        let mut new_deliveries: std::collections::BTreeMap<&str, i64> = Default::default();
        let mut event_tally = Vec::new();
        let mut hook_tally = Vec::new();
        // Contacts first, then hooks (as PostgreSQL does): a hook finds a
        // contact sent in the same request.
        for (i, item) in items.iter().enumerate() {
            if let NewItem::Event(event) = item {
                let stored = self.put_event(event, window_start)?;
                if matches!(stored, Enqueued::Stored(_)) {
                    for destination in &event.destinations {
                        *new_deliveries.entry(destination).or_default() += 1;
                    }
                }
                event_tally.push((event, matches!(stored, Enqueued::Stored(_))));
                results[i] = Some(ItemStored::Event(stored));
            }
        }
        for (i, item) in items.iter().enumerate() {
            if let NewItem::Hook(hook) = item {
                let stored = self.put_hook(hook, window_start)?;
                hook_tally.push((hook, !stored.duplicate));
                results[i] = Some(ItemStored::Hook(stored));
            }
        }
        let results: Vec<ItemStored> = results.into_iter().flatten().collect();
        for (destination, n) in new_deliveries {
            *self
                .totals
                .new_deliveries
                .entry(destination.to_owned())
                .or_default() += n;
        }
        for (minute, what, name, n) in tally(event_tally, now)
            .into_iter()
            .chain(tally_hooks(hook_tally, now))
        {
            *self.totals.counters.entry((minute, what, name)).or_default() += n;
        }
        Ok(results)
    }

    /// Stores one scored event with its deliveries (or finds the event it
    /// duplicates), and links the hooks that were waiting for its contact.
    fn put_event(&mut self, event: &NewEvent, window_start: i64) -> rusqlite::Result<Enqueued> {
        let mut find_key = self.conn.prepare_cached(DUPLICATE_LOOKUP)?;
        let key = key_digest(&event.idempotency_key);
        let existing = find_key
            .query_row(params![event.contact_key, key, window_start], |row| {
                let score: String = row.get(1)?;
                Ok(EventSummary {
                    contact_id: event.contact_id.clone(),
                    id: row.get(0)?,
                    score: serde_json::from_str(&score).unwrap_or_else(|_| 0.into()),
                    tier: row.get(2)?,
                    disqualified: row.get(3)?,
                })
            })
            .optional()?;
        if let Some(first) = existing {
            return Ok(Enqueued::Duplicate(first));
        }
        if let Some(source) = event.supersedes {
            let newest: Option<i64> = self
                .conn
                .prepare_cached("SELECT MAX(seq) FROM events WHERE contact_key = ?1")?
                .query_row([&event.contact_key], |row| row.get(0))?;
            if newest != Some(source) {
                return Ok(Enqueued::Superseded);
            }
        }
        let mut put_event = self.conn.prepare_cached(
            "INSERT INTO events (id, contact_key, idempotency_key, received_at, score, tier, disqualified,
                                 rules_version, body, email, kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        put_event.execute(params![
            event.event_id,
            event.contact_key,
            key,
            event.received_at,
            event.score.to_string(),
            event.tier,
            event.disqualified,
            event.rules_version,
            // Packed on the writer's own thread, not on the async executor
            // (a body of 1,000 contacts is milliseconds of LZ4), and only
            // for events that are not duplicates.
            packed::pack(&event.body),
            event.email,
            if event.supersedes.is_some() {
                "rescored"
            } else {
                "contact"
            },
        ])?;
        let seq = self.conn.last_insert_rowid();
        self.emails.add(event.email.as_deref(), seq);
        let mut put_delivery = self.conn.prepare_cached(
            "INSERT INTO deliveries (event_seq, destination, contact_key, status, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
        )?;
        for destination in &event.destinations {
            put_delivery.execute(params![seq, destination, event.contact_key, event.received_at])?;
        }
        // Hooks that arrived before their contact (SPEC 11 "Linking"): two
        // probes of small partial indexes, when any hook waits at all.
        if !self.hooks_waiting()? {
            return Ok(Enqueued::Stored(event.summary()));
        }
        self.conn
            .prepare_cached(
                "UPDATE hooks SET contact_key = ?1 WHERE contact_key IS NULL AND contact_ref = ?2",
            )?
            .execute(params![
                event.contact_key,
                crate::payload::loose_key(&event.contact_key)
            ])?;
        if let Some(email) = &event.email {
            self.conn
                .prepare_cached("UPDATE hooks SET contact_key = ?1 WHERE contact_key IS NULL AND email = ?2")?
                .execute(params![event.contact_key, email])?;
        }
        Ok(Enqueued::Stored(event.summary()))
    }

    /// Stores one call, outcome or unknown hook linked to its contact when
    /// known (or finds the hook it duplicates).
    fn put_hook(&self, hook: &NewHook, window_start: i64) -> rusqlite::Result<HookSummary> {
        let key = key_digest(&hook.idempotency_key);
        let first = self
            .conn
            .prepare_cached(
                "SELECT id, kind, contact_key FROM hooks WHERE idempotency_key = ?1 AND received_at >= ?2
                 ORDER BY seq LIMIT 1",
            )?
            .query_row(params![key, window_start], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()?;
        if let Some((id, kind, contact_key)) = first {
            return Ok(HookSummary {
                kind: crate::payload::HookKind::parse(&kind).unwrap_or(hook.kind),
                id,
                contact_id: contact_key
                    .as_deref()
                    .map_or(serde_json::Value::Null, contact_id_of),
                contact_key,
                duplicate: true,
            });
        }
        let contact_key = match hook.kind {
            crate::payload::HookKind::Unknown => None,
            _ => self.link_of(hook)?,
        };
        self.conn
            .prepare_cached(
                "INSERT INTO hooks (id, kind, idempotency_key, received_at, contact_key, contact_ref, email, own_id,
                                    call_status, call_start, call_type, call_outcome, sale, revenue, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                hook.id,
                hook.kind.as_str(),
                key,
                hook.received_at,
                contact_key,
                hook.contact_ref,
                hook.email,
                hook.own_id,
                hook.call_status,
                hook.call_start,
                hook.call_type,
                hook.call_outcome,
                hook.sale,
                hook.revenue,
                hook.body,
            ])?;
        if contact_key.is_none() {
            self.hooks_waiting.set(Some(true));
        }
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

    /// The contact a hook links to (SPEC 11): the one its `contactId` names,
    /// else the one most recently received with its email.
    fn link_of(&self, hook: &NewHook) -> rusqlite::Result<Option<String>> {
        if let Some(reference) = &hook.contact_ref {
            let quoted = serde_json::Value::String(reference.clone()).to_string();
            let found = self
                .conn
                .prepare_cached(
                    "SELECT contact_key FROM events WHERE contact_key IN (?1, ?2) ORDER BY seq DESC LIMIT 1",
                )?
                .query_row(params![reference, quoted], |row| row.get(0))
                .optional()?;
            if found.is_some() {
                return Ok(found);
            }
        }
        let Some(email) = &hook.email else {
            return Ok(None);
        };
        // The newest of: this writer's events not in `event_emails` yet
        // (in memory; the event still there, with that email: a retention
        // of seconds may have pruned it), and the table's (which also holds
        // what another process stored, once a batch has indexed it).
        let in_memory: Option<(i64, String)> = match self.emails.latest(email) {
            Some(seq) => self
                .conn
                .prepare_cached("SELECT seq, contact_key FROM events WHERE seq = ?1 AND email = ?2")?
                .query_row(params![seq, email], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?,
            None => None,
        };
        let in_table: Option<(i64, String)> = self
            .conn
            .prepare_cached(
                "SELECT x.seq, e.contact_key FROM event_emails x JOIN events e ON e.seq = x.seq AND e.email = x.email
                 WHERE x.email = ?1 ORDER BY x.seq DESC LIMIT 1",
            )?
            .query_row([email], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        Ok(in_memory
            .into_iter()
            .chain(in_table)
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, key)| key))
    }

    fn claim(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> rusqlite::Result<Vec<ClaimedDelivery>> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        // Due, not claimed, no earlier pending delivery of the same contact
        // to this destination (per-contact order: the earlier one is
        // delivered or dead first) and no other one in flight there (a
        // requeued dead event waits for a later one being sent). The new
        // lease end is also the claim's token: it only grows, so a worker
        // whose lease ran out cannot record over the claim that followed
        // (see `record`).
        let mut stmt = self.conn.prepare_cached(
            "UPDATE deliveries SET claimed_until = MAX(?2, COALESCE(claimed_until, 0) + 1)
             WHERE destination = ?4 AND event_seq IN (
                SELECT d.event_seq FROM deliveries d
                WHERE d.destination = ?4 AND d.status = 'pending' AND d.next_attempt_at <= ?1
                  AND (d.claimed_until IS NULL OR d.claimed_until <= ?1)
                  AND NOT EXISTS (
                      SELECT 1 FROM deliveries other
                      WHERE other.destination = d.destination AND other.contact_key = d.contact_key
                        AND other.status = 'pending' AND other.event_seq <> d.event_seq
                        AND (other.event_seq < d.event_seq OR other.claimed_until > ?1))
                ORDER BY d.next_attempt_at, d.event_seq
                LIMIT ?3)
             RETURNING event_seq, contact_key, attempts, claimed_until",
        )?;
        let mut claimed: Vec<(i64, String, i64, i64)> = stmt
            .query_map(params![now, until, limit as i64, destination], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        claimed.sort_by_key(|(seq, ..)| *seq);
        let mut event = self
            .conn
            .prepare_cached("SELECT id, body FROM events WHERE seq = ?1")?;
        claimed
            .into_iter()
            .map(|(seq, contact_key, attempts, claim)| {
                let (event_id, body) = event.query_row([seq], |row| Ok((row.get(0)?, body_at(row, 1)?)))?;
                Ok(ClaimedDelivery {
                    seq,
                    event_id,
                    destination: destination.to_owned(),
                    contact_key,
                    attempts: attempts.clamp(0, u32::MAX as i64) as u32,
                    body,
                    claim,
                })
            })
            .collect()
    }

    /// Records an attempt made under the claim `claim`, and logs it;
    /// nothing when the claim has been lost (its lease ran out and the
    /// delivery was claimed again, or it was delivered meanwhile).
    fn record(
        &self,
        seq: i64,
        destination: &str,
        claim: i64,
        outcome: &AttemptOutcome,
        attempt: &AttemptLog,
    ) -> rusqlite::Result<()> {
        let OutcomeColumns {
            status,
            last_status,
            last_error,
            next_attempt_at,
            delivered_at,
        } = outcome.columns(now_ms());
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE deliveries SET status = ?4, attempts = attempts + 1, last_status = ?5, last_error = ?6,
                        next_attempt_at = COALESCE(?7, next_attempt_at),
                        delivered_at = COALESCE(?8, delivered_at), claimed_until = NULL
                 WHERE event_seq = ?1 AND destination = ?2 AND status = 'pending' AND claimed_until = ?3",
            )?
            .execute(params![
                seq,
                destination,
                claim,
                status,
                last_status,
                last_error,
                next_attempt_at,
                delivered_at
            ])?;
        if changed > 0 {
            self.conn
                .prepare_cached(
                    "INSERT INTO attempts (event_seq, destination, at, status, error, latency_ms, response_body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    seq,
                    destination,
                    attempt.at,
                    attempt.status,
                    attempt.error,
                    attempt.latency_ms.min(i64::MAX as u64) as i64,
                    attempt.response_body,
                ])?;
        }
        Ok(())
    }

    fn requeue(&self, event_id: Option<&str>, destination: Option<&str>) -> rusqlite::Result<u64> {
        let changed = self.conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?1, claimed_until = NULL
             WHERE status = 'dead' AND (?3 IS NULL OR destination = ?3)
               AND (?2 IS NULL OR event_seq = (SELECT seq FROM events WHERE id = ?2))",
            params![now_ms(), event_id, destination],
        )?;
        Ok(changed as u64)
    }

    /// Deletes, among the next [`PRUNE_SPAN`] events after `after`, those
    /// older than the retention whose delivery is done (or that were never
    /// forwarded); pending and dead ones stay. The pass ends at the first
    /// span with nothing that old: events are stored in the order they are
    /// received, so the later ones are younger still. Idempotency keys need
    /// no pruning of their own: a key only counts inside the dedupe window,
    /// which is never longer than the retention.
    fn prune_step(&self, after: i64) -> rusqlite::Result<PruneStep> {
        let cutoff =
            now_ms().saturating_sub(self.retention.retention.as_millis().min(i64::MAX as u128) as i64);
        let (oldest, span_end): (Option<i64>, Option<i64>) = self.conn.query_row(
            "SELECT MIN(received_at), MAX(seq)
             FROM (SELECT seq, received_at FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
            params![after, PRUNE_SPAN],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let (Some(oldest), Some(span_end)) = (oldest, span_end) else {
            self.prune_counters(cutoff)?;
            return Ok(PruneStep {
                deleted: 0,
                next_after: None,
            });
        };
        if oldest >= cutoff {
            self.prune_counters(cutoff)?;
            return Ok(PruneStep {
                deleted: 0,
                next_after: None,
            });
        }
        // First their entries by email (found from the events' own rows).
        self.conn
            .prepare_cached(
                "DELETE FROM event_emails WHERE (email, seq) IN (
                     SELECT email, seq FROM events
                     WHERE seq > ?1 AND seq <= ?2 AND received_at < ?3 AND email IS NOT NULL AND NOT EXISTS (
                         SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq AND d.status IN ('pending', 'dead')))",
            )?
            .execute(params![after, span_end, cutoff])?;
        let deleted = self
            .conn
            .prepare_cached(
                "DELETE FROM events
                 WHERE seq > ?1 AND seq <= ?2 AND received_at < ?3 AND NOT EXISTS (
                     SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq AND d.status IN ('pending', 'dead'))",
            )?
            .execute(params![after, span_end, cutoff])?;
        // A number pruned from the end is given out again: the mark of the
        // email batches stays behind the next one (store::emails).
        self.conn
            .prepare_cached(emails::MARK_NO_FURTHER_THAN_THE_EVENTS)?
            .execute([])?;
        // The deleted events' deliveries, and attempts past the retention.
        self.conn
            .prepare_cached(
                "DELETE FROM deliveries WHERE event_seq > ?1 AND event_seq <= ?2
                     AND NOT EXISTS (SELECT 1 FROM events WHERE seq = deliveries.event_seq)",
            )?
            .execute(params![after, span_end])?;
        self.conn
            .prepare_cached(
                "DELETE FROM attempts WHERE event_seq > ?1 AND event_seq <= ?2
                     AND (at < ?3 OR NOT EXISTS (SELECT 1 FROM events WHERE seq = attempts.event_seq))",
            )?
            .execute(params![after, span_end, cutoff])?;
        Ok(PruneStep {
            deleted: deleted as u64,
            next_after: Some(span_end),
        })
    }

    /// The end of a pass: counters and hooks past the retention (hooks are
    /// few beside events; a pass removes at most [`PRUNE_SPAN`] of them, so
    /// the transaction stays short, and the next pass goes on).
    fn prune_counters(&self, cutoff: i64) -> rusqlite::Result<()> {
        self.conn
            .execute("DELETE FROM counters WHERE minute < ?1", [cutoff])?;
        self.conn.execute(
            "DELETE FROM hooks WHERE seq IN (SELECT seq FROM hooks WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
            params![cutoff, PRUNE_SPAN],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite picks for a query, one detail per line.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let count = stmt.parameter_count();
        let nulls: Vec<rusqlite::types::Null> = vec![rusqlite::types::Null; count];
        let rows = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    /// issue 19 (5): `GET /metrics`, `GET /stats` and `GET /destinations`
    /// read a few rows, not the deliveries; a file from before the totals
    /// gets them filled once.
    #[test]
    fn delivery_counts_read_totals_kept_by_the_writer_and_triggers() {
        let conn = Connection::open_in_memory().unwrap();
        prepare_schema(&conn).unwrap();
        let totals = plan(&conn, DELIVERY_TOTALS);
        assert!(!totals.contains("deliveries"), "{totals}");
        let insert = |seq: i64, destination: &str, status: &str| {
            conn.execute(
                "INSERT INTO deliveries (event_seq, destination, contact_key, status, created_at)
                 VALUES (?1, ?2, '1', ?3, 0)",
                params![seq, destination, status],
            )
            .unwrap();
        };
        // What the writer adds for a new pending delivery.
        let count_new = |destination: &str| {
            conn.execute(COUNT_NEW_DELIVERIES, params![destination, 1])
                .unwrap();
        };
        let counts = |conn: &Connection| read_delivery_totals(conn).unwrap();
        let row = |d: &str, s: &str, n: u64| (d.to_owned(), s.to_owned(), n);
        // A file written before the totals existed.
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS delivery_totals_insert; DROP TRIGGER delivery_totals_update;
             DROP TRIGGER delivery_totals_delete; DROP TABLE delivery_totals;",
        )
        .unwrap();
        insert(1, "crm", "pending");
        insert(2, "crm", "delivered");
        insert(2, "slack", "delivered");
        prepare_schema(&conn).unwrap();
        let filled = vec![
            row("crm", "delivered", 1),
            row("crm", "pending", 1),
            row("slack", "delivered", 1),
        ];
        assert_eq!(counts(&conn), filled, "filled from the deliveries");
        prepare_schema(&conn).unwrap();
        assert_eq!(counts(&conn), filled, "filled once");
        // Kept by the writer and the triggers from then on.
        insert(3, "crm", "pending");
        count_new("crm");
        conn.execute("UPDATE deliveries SET status = 'dead' WHERE event_seq = 1", [])
            .unwrap();
        conn.execute("UPDATE deliveries SET attempts = 3 WHERE event_seq = 3", [])
            .unwrap();
        conn.execute(
            "DELETE FROM deliveries WHERE event_seq = 2 AND destination = 'slack'",
            [],
        )
        .unwrap();
        assert_eq!(
            counts(&conn),
            vec![
                row("crm", "dead", 1),
                row("crm", "delivered", 1),
                row("crm", "pending", 1),
                row("slack", "delivered", 0),
            ]
        );
    }

    /// Schema 4 → 5 (session 9's release): its per-row insert trigger goes
    /// (the writer counts new deliveries now), the totals it kept stay, and
    /// events gain `email` and `kind`.
    #[test]
    fn a_file_of_schema_4_loses_its_insert_trigger_and_keeps_its_totals() {
        let conn = Connection::open_in_memory().unwrap();
        prepare_schema(&conn).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER delivery_totals_insert AFTER INSERT ON deliveries
             BEGIN
                 INSERT INTO delivery_totals (destination, status, count) VALUES (NEW.destination, NEW.status, 1)
                     ON CONFLICT (destination, status) DO UPDATE SET count = count + 1;
             END;
             INSERT INTO deliveries (event_seq, destination, contact_key, status, created_at)
                 VALUES (1, 'crm', '1', 'pending', 0);
             UPDATE meta SET value = '4' WHERE key = 'schema_version';",
        )
        .unwrap();
        prepare_schema(&conn).unwrap();
        let triggers: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'delivery_totals_insert'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(triggers, 0);
        let totals = |conn: &Connection| read_delivery_totals(conn).unwrap();
        assert_eq!(totals(&conn), vec![("crm".to_owned(), "pending".to_owned(), 1)]);
        // A new delivery counts once: by the writer, not twice.
        conn.execute(
            "INSERT INTO deliveries (event_seq, destination, contact_key, status, created_at)
             VALUES (2, 'crm', '2', 'pending', 0)",
            [],
        )
        .unwrap();
        conn.execute(COUNT_NEW_DELIVERIES, params!["crm", 1]).unwrap();
        assert_eq!(totals(&conn), vec![("crm".to_owned(), "pending".to_owned(), 2)]);
        let columns: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name IN ('email', 'kind')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(columns, 2);
        let version: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, "6");
    }

    /// Schema 5 → 6: the index on `events (email)` gives way to
    /// `event_emails`, filled from the events, marked complete up to the
    /// last event.
    #[test]
    fn a_file_of_schema_5_gets_its_emails_indexed_in_their_own_table() {
        let conn = Connection::open_in_memory().unwrap();
        prepare_schema(&conn).unwrap();
        conn.execute_batch(
            "DROP TABLE event_emails;
             DELETE FROM meta WHERE key = 'emails_indexed_through';
             CREATE INDEX events_email ON events (email, seq) WHERE email IS NOT NULL;
             UPDATE meta SET value = '5' WHERE key = 'schema_version';
             INSERT INTO events (id, contact_key, idempotency_key, received_at, score, tier, disqualified,
                                 rules_version, body, email)
             VALUES ('evt_a', '1', x'01', 10, '5', 'warm', 0, 'v', '{}', 'b@x'),
                    ('evt_b', '2', x'02', 11, '5', 'warm', 0, 'v', '{}', NULL),
                    ('evt_c', '3', x'03', 12, '5', 'warm', 0, 'v', '{}', 'a@x');",
        )
        .unwrap();
        prepare_schema(&conn).unwrap();
        let entries: Vec<(String, i64)> = conn
            .prepare("SELECT email, seq FROM event_emails ORDER BY email")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(entries, [("a@x".to_owned(), 3), ("b@x".to_owned(), 1)]);
        let through: i64 = conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'emails_indexed_through'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(through, 3);
        let old_index: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_email'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_index, 0);
        // Lookups by email read the table (and the short tail by `seq`).
        let by_email = plan(
            &conn,
            &format!(
                "SELECT MAX(seq) FROM ({}) GROUP BY contact_key",
                emails::CANDIDATES
            ),
        );
        assert!(
            by_email.contains("SEARCH x USING PRIMARY KEY (email=?)"),
            "{by_email}"
        );
        assert!(
            by_email.contains("SEARCH events USING INTEGER PRIMARY KEY (rowid>?)"),
            "{by_email}"
        );
    }

    /// Schema 3 → 4: each event's delivery becomes a delivery of `default`,
    /// with its state; events without one get none.
    #[test]
    fn a_file_of_schema_3_gets_its_deliveries_moved() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE events (
                 seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, contact_key TEXT NOT NULL,
                 idempotency_key BLOB NOT NULL, received_at INTEGER NOT NULL, score TEXT NOT NULL,
                 tier TEXT NOT NULL, disqualified INTEGER NOT NULL, rules_version TEXT NOT NULL,
                 body TEXT NOT NULL, delivery TEXT, attempts INTEGER NOT NULL DEFAULT 0,
                 next_attempt_at INTEGER, last_status INTEGER, last_error TEXT, delivered_at INTEGER,
                 claimed_until INTEGER);
             CREATE INDEX events_pending ON events (next_attempt_at, seq) WHERE delivery = 'pending';
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '3');
             INSERT INTO events (id, contact_key, idempotency_key, received_at, score, tier, disqualified,
                                 rules_version, body, delivery, attempts, last_status, last_error)
             VALUES ('evt_a', '1', x'01', 10, '5', 'warm', 0, 'v', '{}', 'dead', 8, 503, 'no'),
                    ('evt_b', '2', x'02', 11, '5', 'warm', 0, 'v', '{}', NULL, 0, NULL, NULL),
                    ('evt_c', '3', x'03', 12, '5', 'warm', 0, 'v', '{}', 'delivered', 1, 200, NULL);",
        )
        .unwrap();
        prepare_schema(&conn).unwrap();
        let moved: Vec<(i64, String, String, i64, Option<i64>)> = conn
            .prepare("SELECT event_seq, destination, status, attempts, last_status FROM deliveries ORDER BY event_seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            moved,
            [
                (1, "default".into(), "dead".into(), 8, Some(503)),
                (3, "default".into(), "delivered".into(), 1, Some(200)),
            ]
        );
        let version: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, "6");
        // Opened again: nothing moved twice.
        prepare_schema(&conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn lookups_use_the_contact_index() {
        let conn = Connection::open_in_memory().unwrap();
        prepare_schema(&conn).unwrap();
        let duplicates = plan(&conn, DUPLICATE_LOOKUP);
        assert!(
            duplicates.contains("USING INDEX events_contact_key (contact_key=?)"),
            "{duplicates}"
        );
        let latest = plan(
            &conn,
            &format!("SELECT seq FROM events e WHERE {WINDOW_FILTER} ORDER BY seq LIMIT 10"),
        );
        assert!(
            latest.contains("USING COVERING INDEX events_contact_key (contact_key=? AND seq>? AND seq<?)"),
            "{latest}"
        );
        // Whether hooks wait: the first entry of each waiting index, no scan.
        let waiting = plan(&conn, HOOKS_WAITING);
        assert!(
            waiting.contains("SEARCH hooks USING INDEX hooks_waiting_ref (contact_ref>?)")
                && waiting.contains("SEARCH hooks USING INDEX hooks_waiting_email (email>?)")
                && !waiting.contains("SCAN hooks"),
            "{waiting}"
        );
    }
}
