//! Connections: opening one (with a timeout), a few pooled ones for
//! claims, listings and maintenance, and the wording of their errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Statement};

use super::tls::MakeRustls;
use super::{CONNECT_TIMEOUT, OP_TIMEOUT, POOL_WAIT};
use crate::store::{StoreResult, unavailable};

pub(super) type PgError = tokio_postgres::Error;

/// A database error in words: the server's message when there is one.
pub(super) fn describe(e: &PgError) -> String {
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

/// A deadlock or serialization failure: the transaction may simply run again.
pub(super) fn transient(e: &PgError) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Opens a connection, TLS as the URL's `sslmode` says.
pub(super) async fn connect(config: &Config, tls: &MakeRustls) -> Result<Client, String> {
    let connecting = config.connect(tls.clone());
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
    // A scored contact is a few KB of text, which PostgreSQL compresses as
    // it stores it; its default, pglz, was a third of its CPU per webhook
    // (BENCHMARKS.md, session 11). LZ4 where the server has it (PostgreSQL
    // 14 and later, built with it), else the server's own default.
    if let Err(e) = client.batch_execute("SET default_toast_compression = lz4").await {
        tracing::debug!(error = %describe(&e), "PostgreSQL compresses stored bodies with its default method");
    }
    Ok(client)
}

/// A connection with its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    pub(super) async fn prepare(&mut self, sql: &str) -> Result<Statement, PgError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// A few connections, opened when needed and dropped when broken.
pub(super) struct Pool {
    config: Config,
    tls: MakeRustls,
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
    pub(super) fn new(config: Config, tls: MakeRustls, size: usize) -> Self {
        Self {
            config,
            tls,
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
                client: connect(&self.config, &self.tls).await.map_err(unavailable)?,
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
    pub(super) async fn run<T>(
        &self,
        what: &str,
        work: impl for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, PgError>>,
    ) -> StoreResult<T> {
        self.run_within(what, Some(OP_TIMEOUT), work).await
    }

    /// [`Pool::run`] without its deadline, for the schema migrations: an
    /// index built on a large table takes as long as it takes, and a start
    /// that gave up after [`OP_TIMEOUT`] would give up on every try.
    pub(super) async fn run_to_completion<T>(
        &self,
        what: &str,
        work: impl for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, PgError>>,
    ) -> StoreResult<T> {
        self.run_within(what, None, work).await
    }

    async fn run_within<T>(
        &self,
        what: &str,
        deadline: Option<Duration>,
        work: impl for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, PgError>>,
    ) -> StoreResult<T> {
        let mut pooled = self.get().await?;
        let conn = pooled.conn.as_mut().expect("present until dropped");
        let result = match deadline {
            Some(deadline) => tokio::time::timeout(deadline, work(conn)).await,
            None => Ok(work(conn).await),
        };
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
