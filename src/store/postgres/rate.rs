//! A destination's rate limit shared by every instance on the store (SPEC
//! 10: a CRM's quota is per account, not per instance): the start times of
//! its last requests and its `429` pause, in one row taken `FOR UPDATE`,
//! on the database's clock (the one clock the instances share).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::FutureExt;

use super::pool::Pool;
use crate::destinations::rate::{RateGate, RateLimit};

/// How long a request waits when the store cannot be asked: the quota is
/// the receiver's, so no request starts uncounted.
const UNAVAILABLE_WAIT: Duration = Duration::from_secs(1);

pub(super) struct SharedRateGate {
    pub(super) pool: Arc<Pool>,
    pub(super) destination: String,
    pub(super) limit: RateLimit,
}

const ENSURE_ROW: &str =
    "INSERT INTO leadscore_rate_windows (destination) VALUES ($1) ON CONFLICT (destination) DO NOTHING";
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::int8";

#[async_trait::async_trait]
impl RateGate for SharedRateGate {
    async fn try_acquire(&self) -> Result<(), Duration> {
        let destination = self.destination.clone();
        let (n, period_ms) = (
            self.limit.n as usize,
            self.limit.period.as_millis().min(i64::MAX as u128) as i64,
        );
        let taken = self
            .pool
            .run("cannot take a rate slot", move |conn| {
                async move {
                    let tx = conn.client.transaction().await?;
                    tx.execute(ENSURE_ROW, &[&destination]).await?;
                    let row = tx
                        .query_one(
                            &format!(
                                "SELECT started, paused_until, {NOW_MS} FROM leadscore_rate_windows
                                 WHERE destination = $1 FOR UPDATE"
                            ),
                            &[&destination],
                        )
                        .await?;
                    let (mut started, paused_until, now): (Vec<i64>, i64, i64) =
                        (row.get(0), row.get(1), row.get(2));
                    if paused_until > now {
                        tx.commit().await?;
                        return Ok(Err(paused_until - now));
                    }
                    started.retain(|&at| now - at < period_ms);
                    let answer = if started.len() < n {
                        started.push(now);
                        Ok(())
                    } else {
                        Err(started[0] + period_ms - now)
                    };
                    tx.execute(
                        "UPDATE leadscore_rate_windows SET started = $2 WHERE destination = $1",
                        &[&destination, &started],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(answer)
                }
                .boxed()
            })
            .await;
        match taken {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait_ms)) => Err(Duration::from_millis(wait_ms.max(1) as u64)),
            Err(e) => {
                tracing::warn!(destination = %self.destination, error = %e, "cannot reach the shared rate limit; waiting");
                Err(UNAVAILABLE_WAIT)
            }
        }
    }

    async fn pause_for(&self, wait: Duration) {
        let destination = self.destination.clone();
        let wait_ms = wait.min(crate::deliver::MAX_RETRY_AFTER).as_millis() as i64;
        let paused = self
            .pool
            .run("cannot pause the destination", move |conn| {
                async move {
                    conn.client
                        .execute(
                            &format!(
                                "INSERT INTO leadscore_rate_windows AS w (destination, paused_until)
                                 VALUES ($1, {NOW_MS} + $2)
                                 ON CONFLICT (destination) DO UPDATE
                                 SET paused_until = greatest(w.paused_until, excluded.paused_until)"
                            ),
                            &[&destination, &wait_ms],
                        )
                        .await
                        .map(drop)
                }
                .boxed()
            })
            .await;
        if let Err(e) = paused {
            tracing::warn!(destination = %self.destination, error = %e, "cannot share a destination's pause");
        }
    }
}
