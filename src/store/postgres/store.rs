//! The store itself: opening it, and the `Store` methods, which run on the
//! pool except ingest and delivery records (the writer's).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;

use super::pool::{Conn, PgError, Pool};
use super::schema::migrate;
use super::sql::{WINDOW_FILTER, claim_pick_sql, claim_take_sql};
use super::url::parse_url;
use super::writer::{Work, WriteOp, Writer};
use super::{ENQUEUE_DEADLINE, PRUNE_BATCH};
use crate::store::reply::{Reply, ReplyTo};
use crate::store::{
    AttemptOutcome, ClaimedDelivery, Counters, DeliveryBacklog, DeliveryCounts, DeliveryInfo, DeliveryRow,
    DeliveryStatus, Enqueued, EventWindow, NewEvent, Pruned, Requeue, Retention, Store, StoreResult,
    StoredEvent, now_ms, unavailable,
};

pub struct PostgresStore {
    writer: mpsc::UnboundedSender<WriteOp>,
    pool: Arc<Pool>,
    retention: Retention,
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and starts the writer.
    pub async fn open(url: &str, retention: Retention) -> StoreResult<Self> {
        let settings = parse_url(url)?;
        let pool = Arc::new(Pool::new(
            settings.config.clone(),
            settings.tls.clone(),
            settings.pool_size,
        ));
        let schema = settings.schema.clone();
        pool.run_to_completion("cannot prepare the schema", move |conn| {
            migrate(conn, schema).boxed()
        })
        .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            config: settings.config,
            tls: settings.tls,
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

    async fn record_attempt(&self, delivery: &ClaimedDelivery, outcome: AttemptOutcome) -> StoreResult<()> {
        let work = Work::Record {
            event_id: delivery.event_id.clone(),
            claim: delivery.claim,
            outcome,
        };
        self.write(work, ReplyTo::Unit).await
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

    async fn delivery_backlog(&self) -> StoreResult<DeliveryBacklog> {
        self.pool
            .run("cannot count deliveries", |conn| {
                async move {
                    // Index-only scans of the two backlog partial indexes:
                    // never of the delivered events.
                    let statement = conn
                        .prepare(
                            "SELECT (SELECT count(*) FROM leadscore_events WHERE delivery = 'pending'),
                                    (SELECT count(*) FROM leadscore_events WHERE delivery = 'dead')",
                        )
                        .await?;
                    let row = conn.client.query_one(&statement, &[]).await?;
                    let count = |i: usize| row.get::<_, i64>(i).max(0) as u64;
                    Ok(DeliveryBacklog {
                        pending: count(0),
                        dead: count(1),
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

fn stored_event(row: &Row) -> StoredEvent {
    StoredEvent {
        seq: row.get(0),
        id: row.get(1),
        received_at: row.get(2),
        body: row.get(3),
    }
}

fn delivery_info(row: &Row) -> DeliveryInfo {
    DeliveryRow {
        id: row.get(0),
        contact_key: row.get(1),
        status: row.get(2),
        attempts: row.get::<_, i32>(3).into(),
        last_status: row.get::<_, Option<i32>>(4).map(i64::from),
        last_error: row.get(5),
        next_attempt_at: row.get(6),
        created_at: row.get(7),
        delivered_at: row.get(8),
    }
    .into_info()
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
                    claim: r.get(5),
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
