//! PostgreSQL for the store, cluster and serve suites: a fresh schema per
//! test in the database `LEADSCORE_TEST_POSTGRES_URL` names (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`), dropped when the test ends.
//! Unset: the PostgreSQL part of a suite is skipped, and says so once
//! ([`super::skipped`]).

use std::io::Write as _;
use std::sync::Once;

pub const ENV: &str = "LEADSCORE_TEST_POSTGRES_URL";

/// The database URL under test, or `None` (and a note on stderr, once).
pub fn base_url() -> Option<String> {
    match std::env::var(ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            super::skipped(
                "the PostgreSQL tests",
                &format!("{ENV} is not set (e.g. {ENV}=postgres://postgres@127.0.0.1:5432/test)"),
            );
            None
        }
    }
}

/// A schema of one test's own; dropped (with everything in it) on drop.
pub struct Schema {
    base: String,
    pub name: String,
}

fn with_param(base: &str, param: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{param}")
}

impl Schema {
    /// A new schema name (`<prefix>_<uuid>`) in the database under test;
    /// the store creates the schema. `None` (said once) without one.
    pub fn fresh(prefix: &str) -> Option<Self> {
        Some(Self::new(&base_url()?, prefix))
    }

    /// A new schema name in the database `base` names (created if missing).
    pub fn new(base: &str, prefix: &str) -> Self {
        ensure_database(base);
        Self {
            base: base.to_owned(),
            name: format!("{prefix}_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// The store URL with `?schema=`.
    pub fn url(&self) -> String {
        with_param(&self.base, &format!("schema={}", self.name))
    }

    /// The store URL selecting the schema through the connection's search path.
    pub fn options_url(&self) -> String {
        with_param(&self.base, &format!("options=-csearch_path%3D{}", self.name))
    }

    /// A plain connection to the test database, search path on the schema.
    pub async fn client(&self) -> tokio_postgres::Client {
        let config: tokio_postgres::Config = self.base.parse().expect("a PostgreSQL URL");
        let (client, connection) = config
            .clone()
            .options(format!("-c search_path={}", self.name))
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.base));
        tokio::spawn(connection);
        client
    }
}

/// Runs `work` on a thread with a runtime of its own (callers may be inside
/// or outside a runtime).
fn on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(work)
    })
    .join()
}

/// Creates the test database when it does not exist yet (a fresh CI
/// machine), through the server's `postgres` database.
fn ensure_database(base: &str) {
    static ONCE: Once = Once::new();
    let base = base.to_owned();
    ONCE.call_once(move || {
        let outcome = on_own_runtime(async move {
            let config: tokio_postgres::Config = base.parse()?;
            match config.connect(tokio_postgres::NoTls).await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {
                    let name = config.get_dbname().unwrap_or("test").replace('"', "\"\"");
                    let (client, connection) = config
                        .clone()
                        .dbname("postgres")
                        .connect(tokio_postgres::NoTls)
                        .await?;
                    tokio::spawn(connection);
                    match client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await {
                        // Another test binary created it meanwhile.
                        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                            Ok(())
                        }
                        other => other,
                    }
                }
                Err(e) => Err(e),
            }
        });
        if let Ok(Err(e)) = outcome {
            let _ = writeln!(std::io::stderr(), "the test database is not usable: {e}");
        }
    });
}

impl Drop for Schema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let dropped = on_own_runtime(async move {
            let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await
        });
        if let Ok(Err(e)) = dropped {
            let _ = writeln!(std::io::stderr(), "could not drop test schema {}: {e}", self.name);
        }
    }
}

/// A short dedupe window and a week of retention, for store tests.
pub fn retention() -> leadscore::store::Retention {
    leadscore::store::Retention {
        dedupe_window: std::time::Duration::from_secs(3600),
        retention: std::time::Duration::from_secs(7 * 86400),
    }
}

/// A scored event of `contact` with idempotency key `key`, received now.
pub fn event(id: &str, contact: i64, key: &str) -> leadscore::store::NewEvent {
    leadscore::store::NewEvent {
        event_id: id.into(),
        idempotency_key: key.into(),
        contact_key: contact.to_string(),
        contact_id: serde_json::json!(contact),
        received_at: leadscore::store::now_ms(),
        score: 42.into(),
        tier: "warm".into(),
        disqualified: false,
        rules_version: "v1".into(),
        body: serde_json::json!({"type": "contact.scored", "id": id, "contact_id": contact}).to_string(),
        error_rules: Vec::new(),
        email: None,
        supersedes: None,
        destinations: vec![leadscore::store::DEFAULT_DESTINATION.to_owned()],
    }
}

/// The events without deliveries (as when nothing forwards).
pub fn unforwarded(mut events: Vec<leadscore::store::NewEvent>) -> Vec<leadscore::store::NewEvent> {
    for event in &mut events {
        event.destinations.clear();
    }
    events
}

/// An attempt's log entry, as the delivery worker writes one.
pub fn attempt_log() -> leadscore::store::AttemptLog {
    leadscore::store::AttemptLog {
        at: leadscore::store::now_ms(),
        status: Some(200),
        error: None,
        latency_ms: 3,
        response_body: Some("ok".into()),
    }
}
