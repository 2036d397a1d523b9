//! The stores as the previous release (schema 3 on SQLite, migrations 1
//! and 2 on PostgreSQL, one delivery per event) left them, for the tests
//! that open such a store with this build. Copied verbatim from that
//! release; never edit.

#![allow(dead_code)]

/// The SQLite schema of the previous release (`schema_version` 3).
pub const SQLITE_SCHEMA_3: &str = r#"
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
    -- NULL when the event is not forwarded; else 'pending', 'dead' or 'delivered'
    delivery        TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    claimed_until   INTEGER
);
-- A contact's events in order, with their idempotency keys: per-contact
-- delivery order, a contact's latest event (backtests) and duplicates (a
-- duplicate is always of the same contact: its key covers the contact id or
-- the whole contact). Contact ids mostly grow, so new entries land at the
-- index's end; an index on the (random) key alone dirtied a page of its own
-- for every event, a third of the log written per event (BENCHMARKS.md).
CREATE INDEX IF NOT EXISTS events_contact_key ON events (contact_key, seq, idempotency_key);
-- Schema 1 had these two instead.
DROP INDEX IF EXISTS events_idempotency;
DROP INDEX IF EXISTS events_contact;
CREATE INDEX IF NOT EXISTS events_pending ON events (next_attempt_at, seq) WHERE delivery = 'pending';
CREATE INDEX IF NOT EXISTS events_dead ON events (seq) WHERE delivery = 'dead';
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
INSERT INTO meta (key, value) VALUES ('schema_version', '3');
"#;

/// PostgreSQL migrations 1 and 2 of the previous release, and their
/// bookkeeping.
pub const POSTGRES_MIGRATIONS_1_2: &str = r#"
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
CREATE TABLE leadscore_schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now());
INSERT INTO leadscore_schema_migrations (version, description) VALUES
    (1, 'events, idempotency keys, instances'), (2, 'backtest index, per-minute counters');
"#;
