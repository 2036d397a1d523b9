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
use super::sql::{HOOK_COLUMNS, WINDOW_FILTER, claim_pick_sql, claim_take_sql};
use super::url::parse_url;
use super::writer::{Work, WriteOp, Writer};
use super::{ENQUEUE_DEADLINE, PRUNE_BATCH};
use crate::store::reply::{Reply, ReplyTo};
use crate::store::{
    AttemptInfo, AttemptLog, AttemptOutcome, AttemptRow, ClaimedDelivery, ContactHistory, ContactTimeline,
    Counters, DeliveryBacklog, DeliveryCounts, DeliveryFilter, DeliveryInfo, DeliveryRow, EventWindow,
    ItemStored, NewItem, Pruned, Requeue, RescoreJob, RescoreSource, Retention, Store, StoreResult,
    StoredEvent, StoredHook, now_ms, unavailable,
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
    async fn store_items(&self, items: Vec<NewItem>) -> StoreResult<Vec<ItemStored>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let write = self.write(Work::Enqueue { items }, ReplyTo::Enqueued);
        match tokio::time::timeout(ENQUEUE_DEADLINE, write).await {
            Ok(result) => result,
            Err(_) => Err(unavailable("PostgreSQL did not commit in time")),
        }
    }

    async fn claim_due(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let destination = destination.to_owned();
        self.pool
            .run("cannot claim deliveries", move |conn| {
                claim(conn, destination, limit, lease).boxed()
            })
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
        // The status as a literal, so that the planner uses its partial index.
        let status = match filter.status {
            None => "TRUE".to_owned(),
            Some(s) => format!("d.status = '{}'", s.as_str()),
        };
        let sql = format!(
            "SELECT e.id, d.destination, d.contact_key, d.status, d.attempts, d.last_status, d.last_error,
                    d.next_attempt_at, d.created_at, d.delivered_at
             FROM leadscore_deliveries d JOIN leadscore_events e ON e.seq = d.event_seq
             WHERE {status} AND ($2::text IS NULL OR d.destination = $2)
             ORDER BY d.event_seq DESC, d.destination LIMIT $1"
        );
        let limit = limit.min(i64::MAX as usize) as i64;
        let destination = filter.destination;
        self.pool
            .run("cannot list deliveries", move |conn| {
                async move {
                    let statement = conn.prepare(&sql).await?;
                    let rows = conn.client.query(&statement, &[&limit, &destination]).await?;
                    Ok(rows.iter().map(delivery_info).collect())
                }
                .boxed()
            })
            .await
    }

    async fn requeue(&self, event_id: &str, destination: Option<&str>) -> StoreResult<Requeue> {
        let id = event_id.to_owned();
        let destination = destination.map(str::to_owned);
        self.pool
            .run("cannot requeue the delivery", move |conn| {
                async move {
                    let statement = conn
                        .prepare(
                            "UPDATE leadscore_deliveries
                             SET status = 'pending', attempts = 0, next_attempt_at = $1, claimed_until = NULL
                             WHERE status = 'dead' AND ($3::text IS NULL OR destination = $3)
                               AND event_seq = (SELECT seq FROM leadscore_events WHERE id = $2)",
                        )
                        .await?;
                    if conn
                        .client
                        .execute(&statement, &[&now_ms(), &id, &destination])
                        .await?
                        > 0
                    {
                        return Ok(Requeue::Requeued);
                    }
                    let exists: bool = conn
                        .client
                        .query_one(
                            "SELECT EXISTS (
                                 SELECT 1 FROM leadscore_deliveries d JOIN leadscore_events e ON e.seq = d.event_seq
                                 WHERE e.id = $1 AND ($2::text IS NULL OR d.destination = $2))",
                            &[&id, &destination],
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

    async fn requeue_dead(&self, destination: Option<&str>) -> StoreResult<u64> {
        let destination = destination.map(str::to_owned);
        self.pool
            .run("cannot requeue dead deliveries", move |conn| {
                async move {
                    conn.client
                        .execute(
                            "UPDATE leadscore_deliveries
                             SET status = 'pending', attempts = 0, next_attempt_at = $1, claimed_until = NULL
                             WHERE status = 'dead' AND ($2::text IS NULL OR destination = $2)",
                            &[&now_ms(), &destination],
                        )
                        .await
                }
                .boxed()
            })
            .await
    }

    async fn attempts(
        &self,
        event_id: &str,
        destination: Option<&str>,
    ) -> StoreResult<Option<Vec<AttemptInfo>>> {
        let id = event_id.to_owned();
        let destination = destination.map(str::to_owned);
        self.pool
            .run("cannot read the attempts", move |conn| {
                async move {
                    let seq: Option<i64> = conn
                        .client
                        .query_opt(
                            "SELECT d.event_seq FROM leadscore_deliveries d
                             JOIN leadscore_events e ON e.seq = d.event_seq
                             WHERE e.id = $1 AND ($2::text IS NULL OR d.destination = $2) LIMIT 1",
                            &[&id, &destination],
                        )
                        .await?
                        .map(|r| r.get(0));
                    let Some(seq) = seq else {
                        return Ok(None);
                    };
                    let rows = conn
                        .client
                        .query(
                            "SELECT destination, at, status, error, latency_ms, response_body
                             FROM leadscore_attempts
                             WHERE event_seq = $1 AND ($2::text IS NULL OR destination = $2)
                             ORDER BY at, ctid",
                            &[&seq, &destination],
                        )
                        .await?;
                    Ok(Some(
                        rows.iter()
                            .map(|row| {
                                AttemptRow {
                                    destination: row.get(0),
                                    at: row.get(1),
                                    status: row.get::<_, Option<i32>>(2).map(i64::from),
                                    error: row.get(3),
                                    latency_ms: row.get(4),
                                    response_body: row.get(5),
                                }
                                .into_info()
                            })
                            .collect(),
                    ))
                }
                .boxed()
            })
            .await
    }

    async fn discard_deliveries(&self, destination: &str) -> StoreResult<u64> {
        let destination = destination.to_owned();
        self.pool
            .run("cannot discard deliveries", move |conn| {
                async move {
                    conn.client
                        .execute(
                            "DELETE FROM leadscore_deliveries
                             WHERE destination = $1 AND status IN ('pending', 'dead')",
                            &[&destination],
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
                    // Index-only scans of the partial indexes.
                    let statement = conn
                        .prepare(
                            "SELECT (SELECT count(*) FROM leadscore_deliveries WHERE status = 'pending'),
                                    (SELECT count(*) FROM leadscore_deliveries WHERE status = 'dead'),
                                    (SELECT count(*) FROM leadscore_deliveries WHERE status = 'delivered')",
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

    async fn destination_backlogs(&self) -> StoreResult<Vec<(String, DeliveryBacklog)>> {
        self.pool
            .run("cannot count deliveries", |conn| {
                async move {
                    // Scans of the two backlog partial indexes: never of the
                    // delivered ones.
                    let statement = conn
                        .prepare(
                            "SELECT destination, sum(pending)::int8, sum(dead)::int8 FROM (
                                 SELECT destination, count(*) AS pending, 0 AS dead FROM leadscore_deliveries
                                 WHERE status = 'pending' GROUP BY destination
                                 UNION ALL
                                 SELECT destination, 0, count(*) FROM leadscore_deliveries
                                 WHERE status = 'dead' GROUP BY destination) AS backlog
                             GROUP BY destination ORDER BY destination",
                        )
                        .await?;
                    let rows = conn.client.query(&statement, &[]).await?;
                    Ok(rows
                        .iter()
                        .map(|row| {
                            (
                                row.get(0),
                                DeliveryBacklog {
                                    pending: row.get::<_, i64>(1).max(0) as u64,
                                    dead: row.get::<_, i64>(2).max(0) as u64,
                                },
                            )
                        })
                        .collect())
                }
                .boxed()
            })
            .await
    }

    /// Shared through the store when there is a limit to share; a
    /// destination without one only pauses this instance on a `429` (no
    /// round trip per request for it).
    fn rate_gate(
        &self,
        destination: &str,
        limit: Option<crate::destinations::RateLimit>,
    ) -> Arc<dyn crate::destinations::rate::RateGate> {
        match limit {
            Some(limit) => Arc::new(super::rate::SharedRateGate {
                pool: self.pool.clone(),
                destination: destination.to_owned(),
                limit,
            }),
            None => Arc::new(crate::destinations::rate::LocalRateGate::new(None)),
        }
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
                        "SELECT seq, id, received_at, body, contact_key FROM leadscore_events e WHERE {WINDOW_FILTER}
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

    async fn contact_timeline(&self, contact_key: &str, limit: usize) -> StoreResult<ContactTimeline> {
        let key = contact_key.to_owned();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .run("cannot read the contact", move |conn| {
                async move {
                    let events: Vec<StoredEvent> = conn
                        .client
                        .query(
                            "SELECT seq, id, received_at, body, contact_key FROM leadscore_events
                             WHERE contact_key = $1 ORDER BY seq LIMIT $2",
                            &[&key, &limit],
                        )
                        .await?
                        .iter()
                        .map(stored_event)
                        .collect();
                    let (first, last) = match (events.first(), events.last()) {
                        (Some(first), Some(last)) => (first.seq, last.seq),
                        _ => return Ok(ContactTimeline::default()),
                    };
                    let deliveries = conn
                        .client
                        .query(
                            "SELECT e.id, d.destination, d.contact_key, d.status, d.attempts, d.last_status,
                                    d.last_error, d.next_attempt_at, d.created_at, d.delivered_at
                             FROM leadscore_events e JOIN leadscore_deliveries d ON d.event_seq = e.seq
                             WHERE e.contact_key = $1 AND e.seq BETWEEN $2 AND $3
                             ORDER BY e.seq, d.destination",
                            &[&key, &first, &last],
                        )
                        .await?
                        .iter()
                        .map(delivery_info)
                        .collect();
                    let attempts = conn
                        .client
                        .query(
                            "SELECT e.id, a.destination, a.at, a.status, a.error, a.latency_ms, a.response_body
                             FROM leadscore_events e JOIN leadscore_attempts a ON a.event_seq = e.seq
                             WHERE e.contact_key = $1 AND e.seq BETWEEN $2 AND $3
                             ORDER BY e.seq, a.destination, a.at",
                            &[&key, &first, &last],
                        )
                        .await?
                        .iter()
                        .map(|row| {
                            (
                                row.get(0),
                                AttemptRow {
                                    destination: row.get(1),
                                    at: row.get(2),
                                    status: row.get::<_, Option<i32>>(3).map(i64::from),
                                    error: row.get(4),
                                    latency_ms: row.get(5),
                                    response_body: row.get(6),
                                }
                                .into_info(),
                            )
                        })
                        .collect();
                    Ok(ContactTimeline {
                        events,
                        deliveries,
                        attempts,
                    })
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
                            "SELECT seq, id, received_at, body, contact_key FROM leadscore_events ORDER BY seq DESC LIMIT $1",
                        )
                        .await?;
                    let rows = conn.client.query(&statement, &[&limit]).await?;
                    Ok(rows.iter().map(stored_event).collect())
                }
                .boxed()
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
        self.pool
            .run("cannot start a rescore", move |conn| {
                async move {
                    let inserted = conn
                        .client
                        .execute(
                            "INSERT INTO leadscore_rescore_jobs (id, state, cause, since_ms, up_to_seq, cursor, scored,
                                                                 changed, pushed, started_at, owner, lease_until)
                             VALUES ($1, 'running', $2, $3, $4, $5, 0, 0, 0, $6, $7, $8)
                             ON CONFLICT DO NOTHING",
                            &[
                                &job.id,
                                &job.cause,
                                &job.since_ms,
                                &job.up_to_seq,
                                &job.cursor,
                                &job.started_at,
                                &owner,
                                &lease_until,
                            ],
                        )
                        .await?;
                    if inserted == 1 {
                        return Ok(Ok(()));
                    }
                    let running = conn
                        .client
                        .query_opt("SELECT id FROM leadscore_rescore_jobs WHERE state = 'running'", &[])
                        .await?;
                    Ok(Err(running.map(|row| row.get(0)).unwrap_or_default()))
                }
                .boxed()
            })
            .await
    }

    async fn rescore_job(&self, id: &str) -> StoreResult<Option<RescoreJob>> {
        let id = id.to_owned();
        self.pool
            .run("cannot read the rescore", move |conn| {
                async move {
                    let row = conn
                        .client
                        .query_opt(
                            &format!("SELECT {JOB_COLUMNS} FROM leadscore_rescore_jobs WHERE id = $1"),
                            &[&id],
                        )
                        .await?;
                    Ok(row.as_ref().map(rescore_job))
                }
                .boxed()
            })
            .await
    }

    async fn recent_rescore_jobs(&self, limit: usize) -> StoreResult<Vec<RescoreJob>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .run("cannot read the rescores", move |conn| {
                async move {
                    let rows = conn
                        .client
                        .query(
                            &format!(
                                "SELECT {JOB_COLUMNS} FROM leadscore_rescore_jobs ORDER BY started_at DESC, id DESC
                                 LIMIT $1"
                            ),
                            &[&limit],
                        )
                        .await?;
                    Ok(rows.iter().map(rescore_job).collect())
                }
                .boxed()
            })
            .await
    }

    async fn save_rescore(&self, job: &RescoreJob, owner: &str, lease_until: i64) -> StoreResult<bool> {
        let (job, owner) = (job.clone(), owner.to_owned());
        self.pool
            .run("cannot save the rescore", move |conn| {
                async move {
                    let saved = conn
                        .client
                        .execute(
                            "UPDATE leadscore_rescore_jobs SET state = $2, cursor = $3, scored = $4, changed = $5,
                                 pushed = $6, finished_at = $7, error = $8, lease_until = $9
                             WHERE id = $1 AND state = 'running' AND owner = $10",
                            &[
                                &job.id,
                                &job.state,
                                &job.cursor,
                                &(job.scored as i64),
                                &(job.changed as i64),
                                &(job.pushed as i64),
                                &job.finished_at,
                                &job.error,
                                &lease_until,
                                &owner,
                            ],
                        )
                        .await?;
                    Ok(saved == 1)
                }
                .boxed()
            })
            .await
    }

    async fn take_over_rescore(&self, owner: &str, lease_until: i64) -> StoreResult<Option<RescoreJob>> {
        let owner = owner.to_owned();
        self.pool
            .run("cannot take over a rescore", move |conn| {
                async move {
                    let row = conn
                        .client
                        .query_opt(
                            &format!(
                                "UPDATE leadscore_rescore_jobs SET owner = $1, lease_until = $2
                                 WHERE state = 'running' AND lease_until < $3 RETURNING {JOB_COLUMNS}"
                            ),
                            &[&owner, &lease_until, &now_ms()],
                        )
                        .await?;
                    Ok(row.as_ref().map(rescore_job))
                }
                .boxed()
            })
            .await
    }

    async fn cancel_rescore(&self, id: &str) -> StoreResult<Option<RescoreJob>> {
        let id = id.to_owned();
        self.pool
            .run("cannot cancel the rescore", move |conn| {
                async move {
                    conn.client
                        .execute(
                            "UPDATE leadscore_rescore_jobs SET state = 'cancelled', finished_at = $2, owner = NULL
                             WHERE id = $1 AND state = 'running'",
                            &[&id, &now_ms()],
                        )
                        .await?;
                    let row = conn
                        .client
                        .query_opt(
                            &format!("SELECT {JOB_COLUMNS} FROM leadscore_rescore_jobs WHERE id = $1"),
                            &[&id],
                        )
                        .await?;
                    Ok(row.as_ref().map(rescore_job))
                }
                .boxed()
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
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .run("cannot read the contacts to rescore", move |conn| {
                async move {
                    let rows = conn
                        .client
                        .query(
                            "SELECT e.seq, e.contact_key, e.body, l.seq, CASE WHEN l.seq <> e.seq THEN l.body END
                             FROM leadscore_events e
                             JOIN LATERAL (SELECT m.seq, m.body FROM leadscore_events m
                                           WHERE m.contact_key = e.contact_key AND m.seq <= $2
                                           ORDER BY m.seq DESC LIMIT 1) l ON true
                             WHERE e.seq > $3 AND e.seq <= $2 AND e.kind = 'contact'
                               AND NOT EXISTS (SELECT 1 FROM leadscore_events n WHERE n.contact_key = e.contact_key
                                               AND n.seq > e.seq AND n.seq <= $2 AND n.kind = 'contact')
                               AND (SELECT f.received_at FROM leadscore_events f WHERE f.contact_key = e.contact_key
                                    ORDER BY f.seq LIMIT 1) >= $1
                             ORDER BY e.seq LIMIT $4",
                            &[&since_ms, &up_to_seq, &after_seq, &limit],
                        )
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|row| RescoreSource {
                            source_seq: row.get(0),
                            contact_key: row.get(1),
                            source_body: row.get(2),
                            latest_seq: row.get(3),
                            latest_body: row.get(4),
                        })
                        .collect())
                }
                .boxed()
            })
            .await
    }

    async fn contact_histories(
        &self,
        contacts: Vec<(String, Option<String>)>,
        until_ms: i64,
    ) -> StoreResult<std::collections::HashMap<String, ContactHistory>> {
        let contact_keys: Vec<String> = contacts.iter().map(|(key, _)| key.clone()).collect();
        let by_email: std::collections::HashMap<String, String> = contacts
            .into_iter()
            .filter_map(|(key, email)| Some((email?, key)))
            .collect();
        self.pool
            .run("cannot read the contacts' calls", move |conn| {
                async move {
                    let firsts = conn
                        .client
                        .query(
                            "SELECT k, (SELECT received_at FROM leadscore_events WHERE contact_key = k
                                        ORDER BY seq LIMIT 1)
                             FROM unnest($1::text[]) AS k",
                            &[&contact_keys],
                        )
                        .await?;
                    let mut histories: std::collections::HashMap<String, ContactHistory> = firsts
                        .iter()
                        .map(|row| {
                            let history = ContactHistory {
                                first_seen: row.get(1),
                                calls: Vec::new(),
                            };
                            (row.get::<_, String>(0), history)
                        })
                        .collect();
                    let calls = conn
                        .client
                        .query(
                            &format!(
                                "SELECT contact_key, {HOOK_COLUMNS} FROM leadscore_hooks
                                 WHERE contact_key = ANY($1::text[]) AND kind = 'call' AND received_at <= $2
                                 ORDER BY seq"
                            ),
                            &[&contact_keys, &until_ms],
                        )
                        .await?;
                    for row in &calls {
                        if let Some(history) = histories.get_mut(row.get::<_, &str>(0)) {
                            history.calls.push(stored_hook(row, 1));
                        }
                    }
                    // Calls waiting for a contact with the email of one being stored.
                    if !by_email.is_empty() {
                        let emails: Vec<&String> = by_email.keys().collect();
                        let waiting = conn
                            .client
                            .query(
                                &format!(
                                    "SELECT email, {HOOK_COLUMNS} FROM leadscore_hooks
                                     WHERE contact_key IS NULL AND email = ANY($1::text[]) AND kind = 'call'
                                       AND received_at <= $2
                                     ORDER BY seq"
                                ),
                                &[&emails, &until_ms],
                            )
                            .await?;
                        for row in &waiting {
                            let key = by_email.get(row.get::<_, &str>(0));
                            if let Some(history) = key.and_then(|key| histories.get_mut(key)) {
                                history.calls.push(stored_hook(row, 1));
                            }
                        }
                        for history in histories.values_mut() {
                            history.calls.sort_by_key(|call| call.seq);
                        }
                    }
                    Ok(histories)
                }
                .boxed()
            })
            .await
    }

    async fn contacts_by_email(&self, email: &str, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let email = email.to_owned();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .run("cannot read the contacts", move |conn| {
                async move {
                    let rows = conn
                        .client
                        .query(
                            "SELECT e.seq, e.id, e.received_at, e.body, e.contact_key FROM leadscore_events e
                             WHERE e.seq IN (SELECT max(seq) FROM leadscore_events WHERE email = $1
                                             GROUP BY contact_key)
                               AND NOT EXISTS (SELECT 1 FROM leadscore_events l
                                               WHERE l.contact_key = e.contact_key AND l.seq > e.seq)
                             ORDER BY e.seq DESC LIMIT $2",
                            &[&email, &limit],
                        )
                        .await?;
                    Ok(rows.iter().map(stored_event).collect())
                }
                .boxed()
            })
            .await
    }

    async fn contact_hooks(&self, contact_key: &str, limit: usize) -> StoreResult<Vec<StoredHook>> {
        let key = contact_key.to_owned();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .run("cannot read the contact's calls", move |conn| {
                async move {
                    let rows = conn
                        .client
                        .query(
                            &format!(
                                "SELECT {HOOK_COLUMNS} FROM leadscore_hooks WHERE contact_key = $1
                                 ORDER BY seq LIMIT $2"
                            ),
                            &[&key, &limit],
                        )
                        .await?;
                    Ok(rows.iter().map(|row| stored_hook(row, 0)).collect())
                }
                .boxed()
            })
            .await
    }

    async fn contact_outcomes(&self, since_ms: i64) -> StoreResult<Vec<crate::outcomes::ContactOutcome>> {
        self.pool
            .run("cannot read the outcomes", move |conn| {
                async move {
                    let latest = conn
                        .client
                        .query(
                            "SELECT f.contact_key, f.first_seen, e.score, e.tier, e.disqualified, e.body
                             FROM (SELECT contact_key, min(received_at) AS first_seen,
                                          max(seq) FILTER (WHERE kind = 'contact') AS last_seq
                                   FROM leadscore_events GROUP BY contact_key
                                   HAVING min(received_at) >= $1) f
                             JOIN leadscore_events e ON e.seq = f.last_seq",
                            &[&since_ms],
                        )
                        .await?;
                    let contacts = latest
                        .iter()
                        .map(|row| crate::store::outcome_row::LatestResult {
                            contact_key: row.get(0),
                            first_seen: row.get(1),
                            score: row.get::<_, &str>(2).parse().unwrap_or(0.0),
                            tier: row.get(3),
                            disqualified: row.get(4),
                            body: row.get(5),
                        })
                        .collect();
                    let hooks = conn
                        .client
                        .query(
                            &format!(
                                "SELECT h.contact_key, {HOOK_COLUMNS} FROM leadscore_hooks h
                                 WHERE h.contact_key IS NOT NULL AND h.kind IN ('call', 'outcome')
                                   AND h.contact_key IN (SELECT contact_key FROM leadscore_events
                                                         GROUP BY contact_key HAVING min(received_at) >= $1)
                                 ORDER BY h.seq"
                            ),
                            &[&since_ms],
                        )
                        .await?;
                    let hooks = hooks
                        .iter()
                        .map(|row| (row.get::<_, String>(0), stored_hook(row, 1)))
                        .collect();
                    Ok(crate::store::outcome_row::combine(contacts, hooks))
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

const JOB_COLUMNS: &str = "id, state, cause, since_ms, up_to_seq, cursor, scored, changed, pushed, started_at, \
                           finished_at, error";

fn rescore_job(row: &Row) -> RescoreJob {
    RescoreJob {
        id: row.get(0),
        state: row.get(1),
        cause: row.get(2),
        since_ms: row.get(3),
        up_to_seq: row.get(4),
        cursor: row.get(5),
        scored: row.get::<_, i64>(6).max(0) as u64,
        changed: row.get::<_, i64>(7).max(0) as u64,
        pushed: row.get::<_, i64>(8).max(0) as u64,
        started_at: row.get(9),
        finished_at: row.get(10),
        error: row.get(11),
    }
}

fn stored_hook(row: &Row, at: usize) -> StoredHook {
    let kind: &str = row.get(at + 2);
    StoredHook {
        seq: row.get(at),
        id: row.get(at + 1),
        kind: crate::payload::HookKind::parse(kind).unwrap_or(crate::payload::HookKind::Unknown),
        received_at: row.get(at + 3),
        own_id: row.get(at + 4),
        call_status: row.get(at + 5),
        call_start: row.get(at + 6),
        call_type: row.get(at + 7),
        call_outcome: row.get(at + 8),
        sale: row.get(at + 9),
        revenue: row.get(at + 10),
    }
}

fn stored_event(row: &Row) -> StoredEvent {
    StoredEvent {
        seq: row.get(0),
        id: row.get(1),
        received_at: row.get(2),
        body: row.get(3),
        contact_key: row.get(4),
    }
}

fn delivery_info(row: &Row) -> DeliveryInfo {
    DeliveryRow {
        id: row.get(0),
        destination: row.get(1),
        contact_key: row.get(2),
        status: row.get(3),
        attempts: row.get::<_, i32>(4).into(),
        last_status: row.get::<_, Option<i32>>(5).map(i64::from),
        last_error: row.get(6),
        next_attempt_at: row.get(7),
        created_at: row.get(8),
        delivered_at: row.get(9),
    }
    .into_info()
}

async fn claim(
    conn: &mut Conn,
    destination: String,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedDelivery>, PgError> {
    let pick = conn.prepare(&claim_pick_sql()).await?;
    let take = conn.prepare(&claim_take_sql()).await?;
    let now = now_ms();
    let until = now.saturating_add(lease.as_millis().min(i64::MAX as u128) as i64);
    let tx = conn.client.transaction().await?;
    // Candidates, row-locked (others skip them) and contact-locked (others
    // skip the contact) until this transaction ends...
    let seqs: Vec<i64> = tx
        .query(&pick, &[&now, &(limit as i64), &destination])
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
    let rows = tx.query(&take, &[&now, &until, &seqs, &destination]).await?;
    tx.commit().await?;
    let mut claimed: Vec<(i64, ClaimedDelivery)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                ClaimedDelivery {
                    seq: r.get(0),
                    event_id: r.get(1),
                    destination: destination.clone(),
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
    // An event goes with its finished deliveries; one with a pending or
    // dead delivery stays.
    let events_sql = "WITH gone AS (
                          DELETE FROM leadscore_events e
                          WHERE e.received_at < $1
                            AND NOT EXISTS (SELECT 1 FROM leadscore_deliveries d
                                            WHERE d.event_seq = e.seq AND d.status IN ('pending', 'dead'))
                            AND e.seq IN (
                                SELECT s.seq FROM leadscore_events s
                                WHERE s.received_at < $1
                                  AND NOT EXISTS (SELECT 1 FROM leadscore_deliveries d
                                                  WHERE d.event_seq = s.seq AND d.status IN ('pending', 'dead'))
                                LIMIT $2)
                          RETURNING e.seq),
                      deliveries AS (
                          DELETE FROM leadscore_deliveries d USING gone WHERE d.event_seq = gone.seq)
                      SELECT count(*) FROM gone";
    let attempts_sql = "DELETE FROM leadscore_attempts
                        WHERE ctid IN (SELECT ctid FROM leadscore_attempts WHERE at < $1 LIMIT $2)";
    let keys_sql = "DELETE FROM leadscore_idempotency_keys
                    WHERE created_at < $1
                      AND key IN (SELECT key FROM leadscore_idempotency_keys WHERE created_at < $1 LIMIT $2)";
    let mut events = 0;
    loop {
        let n = conn
            .client
            .query_one(events_sql, &[&cutoff, &PRUNE_BATCH])
            .await?
            .get::<_, i64>(0)
            .max(0) as u64;
        events += n;
        if n < PRUNE_BATCH as u64 {
            break;
        }
    }
    while conn
        .client
        .execute(attempts_sql, &[&cutoff, &PRUNE_BATCH])
        .await?
        >= PRUNE_BATCH as u64
    {}
    let hooks_sql = "DELETE FROM leadscore_hooks
                     WHERE seq IN (SELECT seq FROM leadscore_hooks WHERE received_at < $1 LIMIT $2)";
    while conn.client.execute(hooks_sql, &[&cutoff, &PRUNE_BATCH]).await? >= PRUNE_BATCH as u64 {}
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
