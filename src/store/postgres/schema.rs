//! The schema: versioned migrations applied at open.

use std::collections::HashSet;

use super::LOCK_MIGRATIONS;
use super::pool::{Conn, PgError};

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
    (
        3,
        "deliveries per destination, attempts",
        r#"
-- One delivery of an event to a destination (SPEC 10).
CREATE TABLE leadscore_deliveries (
    event_seq       bigint NOT NULL,
    destination     text NOT NULL,
    contact_key     text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'dead', 'delivered', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint,
    last_status     integer,
    last_error      text,
    created_at      bigint NOT NULL,
    delivered_at    bigint,
    claimed_until   bigint,
    PRIMARY KEY (event_seq, destination)
);
-- Every event's one delivery so far becomes a delivery of `default`.
INSERT INTO leadscore_deliveries (event_seq, destination, contact_key, status, attempts, next_attempt_at,
                                  last_status, last_error, created_at, delivered_at, claimed_until)
SELECT seq, 'default', contact_key, delivery, attempts, next_attempt_at, last_status, last_error,
       received_at, delivered_at, claimed_until
FROM leadscore_events WHERE delivery IS NOT NULL;
CREATE INDEX leadscore_deliveries_due ON leadscore_deliveries (destination, next_attempt_at, event_seq)
    WHERE status = 'pending';
CREATE INDEX leadscore_deliveries_contact ON leadscore_deliveries (destination, contact_key, event_seq)
    WHERE status = 'pending';
CREATE INDEX leadscore_deliveries_dead ON leadscore_deliveries (destination, event_seq) WHERE status = 'dead';
CREATE INDEX leadscore_deliveries_delivered ON leadscore_deliveries (event_seq) WHERE status = 'delivered';
-- Every attempt, kept for the retention by its time.
CREATE TABLE leadscore_attempts (
    event_seq     bigint NOT NULL,
    destination   text NOT NULL,
    at            bigint NOT NULL,
    status        integer,
    error         text,
    latency_ms    bigint NOT NULL,
    response_body text
);
CREATE INDEX leadscore_attempts_delivery ON leadscore_attempts (event_seq, destination, at);
CREATE INDEX leadscore_attempts_at ON leadscore_attempts USING brin (at);
-- Rate limits shared by every instance: the start times (unix ms, the
-- database's clock) of a destination's last requests, and its 429 pause.
CREATE TABLE leadscore_rate_windows (
    destination  text PRIMARY KEY,
    started      bigint[] NOT NULL DEFAULT '{}',
    paused_until bigint NOT NULL DEFAULT 0
);
-- The events keep only the event (dropping columns is instant here).
DROP INDEX leadscore_events_pending_contact;
DROP INDEX leadscore_events_pending_due;
DROP INDEX leadscore_events_dead;
DROP INDEX leadscore_events_delivered;
ALTER TABLE leadscore_events
    DROP COLUMN delivery, DROP COLUMN attempts, DROP COLUMN next_attempt_at, DROP COLUMN last_status,
    DROP COLUMN last_error, DROP COLUMN delivered_at, DROP COLUMN claimed_until;
"#,
    ),
    (
        4,
        "calls and outcomes, contact emails, rescore jobs",
        r#"
-- The contact's email, trimmed and lower-cased (NULL in older rows: those
-- contacts link by id only).
ALTER TABLE leadscore_events ADD COLUMN email text;
-- 'contact' (a received contact) or 'rescored' (SPEC 12).
ALTER TABLE leadscore_events ADD COLUMN kind text NOT NULL DEFAULT 'contact';
CREATE INDEX leadscore_events_email ON leadscore_events (email, seq) WHERE email IS NOT NULL;
-- Calls, outcomes and unknown hooks (SPEC 11), never scored or forwarded;
-- contact_key is NULL until the contact arrives.
CREATE TABLE leadscore_hooks (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              text NOT NULL UNIQUE,
    kind            text NOT NULL,
    idempotency_key bytea NOT NULL,
    received_at     bigint NOT NULL,
    contact_key     text,
    contact_ref     text,
    email           text,
    own_id          text,
    call_status     text,
    call_start      text,
    call_type       text,
    call_outcome    text,
    sale            boolean NOT NULL DEFAULT false,
    revenue         double precision NOT NULL DEFAULT 0,
    body            text NOT NULL
);
CREATE INDEX leadscore_hooks_contact ON leadscore_hooks (contact_key, seq) WHERE contact_key IS NOT NULL;
CREATE INDEX leadscore_hooks_key ON leadscore_hooks (idempotency_key);
CREATE INDEX leadscore_hooks_waiting_ref ON leadscore_hooks (contact_ref) WHERE contact_key IS NULL;
CREATE INDEX leadscore_hooks_waiting_email ON leadscore_hooks (email) WHERE contact_key IS NULL;
CREATE INDEX leadscore_hooks_received ON leadscore_hooks USING brin (received_at);
-- Rescore jobs (SPEC 12): at most one running per schema, across instances.
CREATE TABLE leadscore_rescore_jobs (
    id          text PRIMARY KEY,
    state       text NOT NULL,
    cause       text NOT NULL,
    since_ms    bigint NOT NULL,
    up_to_seq   bigint NOT NULL,
    cursor      bigint NOT NULL,
    scored      bigint NOT NULL,
    changed     bigint NOT NULL,
    pushed      bigint NOT NULL,
    started_at  bigint NOT NULL,
    finished_at bigint,
    error       text,
    owner       text,
    lease_until bigint NOT NULL
);
CREATE UNIQUE INDEX leadscore_rescore_jobs_running ON leadscore_rescore_jobs (state) WHERE state = 'running';
"#,
    ),
];

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
pub(super) async fn migrate(conn: &mut Conn, schema: Option<String>) -> Result<(), PgError> {
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
        // Building an index reads the whole table: say why a start waits.
        tracing::info!(
            version,
            description,
            "applying a schema migration (on a large table this can take minutes)"
        );
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
