//! Forwarding scored contacts downstream (SPEC 5): claim due deliveries
//! from the store, POST them with Standard Webhooks headers, record each
//! outcome before the slot takes the next one. Retries live in the store
//! (`attempts`, `next_attempt_at`), never in sleeping tasks.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::signature::WebhookSecret;
use crate::store::{AttemptLog, AttemptOutcome, ClaimedDelivery, Store, StoreResult, truncate_body};
use crate::telemetry;

/// How often the worker looks for due deliveries when nothing wakes it.
const POLL: Duration = Duration::from_millis(200);
/// The longest `Retry-After` honoured: a day, about the whole default
/// schedule. A receiver asking for longer (a far-future date, an absurd
/// number of seconds) gets its retry after a day; a longer entry of the
/// schedule itself still counts in full.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The destination's name: its deliveries are keyed by it (SPEC 10).
    pub destination: String,
    pub url: reqwest::Url,
    pub secret: Option<WebhookSecret>,
    pub headers: HeaderMap,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Delays before each retry; the delivery is dead when the last fails.
    pub retry_schedule: Vec<Duration>,
    pub lease: Duration,
}

/// Headers every forwarded request carries already (SPEC 5) or that the
/// HTTP client sets itself: an extra header must not send a second one.
const OWN_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Parses `Name: value` extra headers.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a header; write `Name: value`"))?;
    let name =
        HeaderName::try_from(name.trim()).map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    if OWN_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "{name} is set by leadscore on every forwarded request and cannot be added"
        ));
    }
    let mut value = HeaderValue::try_from(value.trim())
        .map_err(|_| format!("the value of header {name} is not valid"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// How one attempt ended, before it becomes an [`AttemptOutcome`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    Failed(String),
}

/// Decides what follows an attempt: SPEC 5's retry rules.
pub fn outcome_of(
    response: &Response,
    attempts_before: u32,
    schedule: &[Duration],
    now_ms: i64,
) -> AttemptOutcome {
    let (status, retryable, retry_after, error) = match response {
        Response::Status { status, .. } if (200..300).contains(status) => {
            return AttemptOutcome::Delivered { status: *status };
        }
        Response::Status { status, retry_after } => {
            // SPEC 5: only a 4xx other than 408/425/429 is final. Anything
            // else that is not a 2xx (a 3xx: redirects are not followed; an
            // odd 1xx) is retried until the schedule runs out (SPEC 1:
            // "with retries until the receiver answers 2xx").
            let final_answer = (400..500).contains(status) && !matches!(status, 408 | 425 | 429);
            let retryable = !final_answer;
            (
                Some(*status),
                retryable,
                *retry_after,
                format!("the receiver answered {status}"),
            )
        }
        Response::Failed(error) => (None, true, None, error.clone()),
    };
    let retry_index = attempts_before as usize;
    if !retryable {
        return AttemptOutcome::Dead { status, error };
    }
    let Some(delay) = schedule.get(retry_index) else {
        return AttemptOutcome::Dead {
            status,
            error: format!("{error}; no retries left"),
        };
    };
    // SPEC 5: `Retry-After` can lengthen the wait, never shorten it, so a
    // receiver answering `429` with `Retry-After: 1` cannot use up the
    // schedule in seconds.
    let scheduled = jitter(*delay);
    let delay = match retry_after {
        Some(wait) => scheduled.max(wait.min(MAX_RETRY_AFTER)),
        None => scheduled,
    };
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    AttemptOutcome::Retry {
        next_attempt_at: now_ms.saturating_add(delay_ms),
        status,
        error,
    }
}

/// ±20 % jitter (saturating: an absurd schedule entry must not panic).
fn jitter(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.8..=1.2);
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// `Retry-After` as seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many seconds for a u64 is still a (very) long wait.
        value.parse::<u64>().map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(SystemTime::now()).unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

pub struct Deliverer {
    store: Arc<dyn Store>,
    config: ForwardConfig,
    client: reqwest::Client,
    wake: Arc<Notify>,
}

impl Deliverer {
    pub fn new(store: Arc<dyn Store>, config: ForwardConfig, wake: Arc<Notify>) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leadscore/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            config,
            client,
            wake,
        })
    }

    /// Runs until `shutdown` turns true, then finishes the deliveries in
    /// flight and sends those already claimed (at most one per slot).
    ///
    /// A slot is one delivery task: it sends, then records the outcome, and
    /// the slot is free only when the task ends, so a delivery is always
    /// recorded before its slot takes the next one (SPEC 5). To keep the
    /// slots busy, the worker does not wait for a slot to be free before
    /// claiming its next delivery: as soon as a task has sent and its record
    /// is on its way to the store, the slot is claimable, and one claim takes
    /// as many due deliveries as there are such slots (plus idle ones). The
    /// claim then shares its commit with those records (SQLite's writer
    /// groups them) or runs beside them (PostgreSQL), and the claimed
    /// deliveries wait in `ready`, unsent, until their slots are free. A
    /// crash therefore repeats only deliveries that were sent; claimed,
    /// unsent ones are released (SQLite) or their leases run out.
    ///
    /// The worker waits only when nothing can be claimed: every slot is
    /// sending, or the last claim found fewer due deliveries than it asked
    /// for. Then a finished delivery (it may unblock a later event of its
    /// contact), a new event (the wake-up) or the poll interval (retries
    /// coming due) starts the next claim.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let concurrency = this.config.concurrency.max(1);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        // Claimed, not sent yet: each waits for a slot to be free.
        let mut ready: VecDeque<ClaimedDelivery> = VecDeque::new();
        // Tasks still sending (not yet recording): `Sent` says when one is done.
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<()>();
        let mut sending = 0usize;
        // The claim on its way (at most one), and how many it asked for.
        let mut claiming: Option<BoxFuture<'static, StoreResult<Vec<ClaimedDelivery>>>> = None;
        let mut asked = 0usize;
        // Whether to claim: false after a claim that found fewer due
        // deliveries than it asked for, until something changes.
        let mut claim = true;
        let mut stopping = *shutdown.borrow();
        loop {
            // A task counts in the set until joined: join every finished
            // one. Each said `Sent` before it ended, so count those after.
            while let Some(done) = in_flight.try_join_next() {
                log_panic(done);
                claim = true;
            }
            while sent_rx.try_recv().is_ok() {
                sending -= 1;
            }
            while in_flight.len() < concurrency
                && let Some(delivery) = ready.pop_front()
            {
                let worker = this.clone();
                let sent = Sent(Some(sent_tx.clone()));
                sending += 1;
                in_flight.spawn(async move { worker.attempt(delivery, sent).await });
            }
            if stopping && ready.is_empty() && claiming.is_none() {
                break;
            }
            // Slots neither sending nor already given a claimed delivery.
            let claimable = concurrency.saturating_sub(sending + ready.len());
            if claim && claimable > 0 && claiming.is_none() && !stopping {
                let store = this.store.clone();
                let lease = this.config.lease;
                let destination = this.config.destination.clone();
                asked = claimable;
                claiming = Some(Box::pin(async move {
                    store.claim_due(&destination, claimable, lease).await
                }));
            }
            let idle = claiming.is_none();
            let claimed = async {
                match claiming.as_mut() {
                    Some(claim) => claim.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = claimed => {
                    claiming = None;
                    match result {
                        Ok(batch) => {
                            // Fewer than asked for: nothing more is due now.
                            claim = batch.len() == asked;
                            ready.extend(batch);
                        }
                        Err(e) => {
                            claim = false;
                            tracing::warn!(error = %e, "cannot claim deliveries; retrying shortly");
                        }
                    }
                }
                Some(()) = sent_rx.recv() => sending -= 1,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    log_panic(done);
                    claim = true;
                }
                _ = this.wake.notified() => claim = true,
                _ = tokio::time::sleep(POLL), if idle => claim = true,
                changed = shutdown.changed(), if !stopping => {
                    // A dropped sender stops the worker too.
                    stopping = changed.is_err() || *shutdown.borrow();
                }
            }
        }
        // Deliveries in flight finish (bounded by the forward timeout).
        while let Some(done) = in_flight.join_next().await {
            log_panic(done);
        }
    }

    async fn attempt(&self, delivery: ClaimedDelivery, sent: Sent) {
        let started = std::time::Instant::now();
        let at = crate::store::now_ms();
        let exchange = self.send(&delivery).await;
        let latency = started.elapsed();
        let response = exchange.response;
        let outcome = outcome_of(
            &response,
            delivery.attempts,
            &self.config.retry_schedule,
            crate::store::now_ms(),
        );
        let log = AttemptLog {
            at,
            status: match &response {
                Response::Status { status, .. } => Some(*status),
                Response::Failed(_) => None,
            },
            error: exchange.error_class.map(str::to_owned),
            latency_ms: latency.as_millis().min(u64::MAX as u128) as u64,
            response_body: exchange.body,
        };
        telemetry::delivery_attempt(
            &delivery.event_id,
            delivery.attempts + 1,
            reported(&outcome),
            started.elapsed(),
        );
        // At-least-once: if this record is lost, the lease runs out and the
        // delivery is sent again. The first poll hands the record to the
        // store; only then is the slot claimable, so that a claim made for
        // it comes after the record (in SQLite's writer, in the same or a
        // later transaction).
        let mut record = std::pin::pin!(self.store.record_attempt(&delivery, outcome, log));
        let first = std::future::poll_fn(|cx| Poll::Ready(record.as_mut().poll(cx))).await;
        drop(sent);
        let result = match first {
            Poll::Ready(result) => result,
            Poll::Pending => record.await,
        };
        if let Err(e) = result {
            tracing::error!(event_id = %delivery.event_id, error = %e, "cannot record a delivery attempt; it will be retried after its lease");
        }
    }

    async fn send(&self, delivery: &ClaimedDelivery) -> Exchange {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let mut request = self
            .client
            .post(self.config.url.clone())
            .headers(self.config.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", &timestamp);
        if let Some(secret) = &self.config.secret {
            request = request.header(
                "webhook-signature",
                secret.sign(&delivery.event_id, &timestamp, delivery.body.as_bytes()),
            );
        }
        match request.body(delivery.body.clone()).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after(response.headers());
                let body = tokio::time::timeout(Duration::from_secs(1), first_bytes(response))
                    .await
                    .ok()
                    .filter(|body| !body.is_empty());
                Exchange {
                    response: Response::Status { status, retry_after },
                    body,
                    error_class: None,
                }
            }
            Err(e) => Exchange {
                response: Response::Failed(describe_error(&e)),
                body: None,
                error_class: Some(error_class(&e)),
            },
        }
    }
}

/// What one request got: the answer, the start of its body and, without an
/// answer, what kind of failure it was (the attempt log's `error`).
struct Exchange {
    response: Response,
    body: Option<String>,
    error_class: Option<&'static str>,
}

/// The first KiB of a response body (the attempt log keeps that much); a
/// body of at most that size is read to its end, so that the connection
/// can be reused.
async fn first_bytes(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() <= crate::store::ATTEMPT_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    truncate_body(&String::from_utf8_lossy(&bytes))
}

/// The attempt log's error class (SPEC 10): `timeout`, `connect`, `tls`
/// or `request`.
fn error_class(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
            return "tls";
        }
        source = cause.source();
    }
    if e.is_connect() { "connect" } else { "request" }
}

/// Tells the worker that a delivery task has sent and is recording (or
/// has ended): when dropped, so that a task that panics still says it.
struct Sent(Option<mpsc::UnboundedSender<()>>);

impl Drop for Sent {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A delivery task that panicked (a bug) is logged; its claim runs out
/// with its lease and the delivery is sent again.
fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a delivery task panicked; the delivery is retried after its lease");
    }
}

fn describe_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// An attempt's outcome as telemetry takes it (plain values).
fn reported(outcome: &AttemptOutcome) -> telemetry::Attempt<'_> {
    match outcome {
        AttemptOutcome::Delivered { status } => telemetry::Attempt::Delivered { status: *status },
        AttemptOutcome::Retry {
            next_attempt_at,
            status,
            error,
        } => telemetry::Attempt::Retry {
            status: *status,
            error,
            next_attempt_at: *next_attempt_at,
        },
        AttemptOutcome::Dead { status, error } => telemetry::Attempt::Dead {
            status: *status,
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<Duration> {
        vec![Duration::from_secs(5), Duration::from_secs(300)]
    }

    #[test]
    fn success_and_final_answers() {
        let ok = Response::Status {
            status: 204,
            retry_after: None,
        };
        assert_eq!(
            outcome_of(&ok, 0, &schedule(), 0),
            AttemptOutcome::Delivered { status: 204 }
        );
        for status in [400, 401, 404, 410, 422] {
            let r = Response::Status {
                status,
                retry_after: None,
            };
            assert!(
                matches!(outcome_of(&r, 0, &schedule(), 0), AttemptOutcome::Dead { status: Some(s), .. } if s == status)
            );
        }
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter_then_die() {
        for status in [301, 302, 307, 408, 425, 429, 500, 503] {
            let r = Response::Status {
                status,
                retry_after: None,
            };
            match outcome_of(&r, 0, &schedule(), 1_000_000) {
                AttemptOutcome::Retry {
                    next_attempt_at,
                    status: Some(s),
                    ..
                } => {
                    assert_eq!(s, status);
                    assert!(
                        (1_004_000..=1_006_000).contains(&next_attempt_at),
                        "{next_attempt_at}"
                    );
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        let network = Response::Failed("could not connect".into());
        match outcome_of(&network, 1, &schedule(), 0) {
            AttemptOutcome::Retry {
                next_attempt_at,
                status: None,
                ..
            } => {
                assert!((240_000..=360_000).contains(&next_attempt_at))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcome_of(&network, 2, &schedule(), 0),
            AttemptOutcome::Dead { .. }
        ));
    }

    #[test]
    fn a_longer_retry_after_replaces_the_scheduled_delay() {
        let r = Response::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(42)),
        };
        assert_eq!(
            outcome_of(&r, 0, &schedule(), 0),
            AttemptOutcome::Retry {
                next_attempt_at: 42_000,
                status: Some(429),
                error: "the receiver answered 429".into()
            }
        );
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            (Duration::from_secs(118)..=Duration::from_secs(120)).contains(&wait),
            "{wait:?}"
        );
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&headers),
            Some(Duration::ZERO),
            "a date in the past: retry now"
        );
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn extra_headers_parse() {
        let (name, value) = parse_header("Authorization: Bearer abc").unwrap();
        assert_eq!(name, "authorization");
        assert_eq!(value, "Bearer abc");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        for own in [
            "Content-Type: text/plain",
            "webhook-id: spoof",
            "Webhook-Signature: v1,x",
            "Host: a",
        ] {
            let error = parse_header(own).unwrap_err();
            assert!(error.contains("cannot be added"), "{own}: {error}");
        }
    }

    /// The earliest and latest next attempt (ms after `now`) over many
    /// draws of the jitter.
    fn next_attempt_range(response: &Response, attempts_before: u32, schedule: &[Duration]) -> (i64, i64) {
        let now = 1_000_000_000;
        let mut range = (i64::MAX, i64::MIN);
        for _ in 0..200 {
            match outcome_of(response, attempts_before, schedule, now) {
                AttemptOutcome::Retry { next_attempt_at, .. } => {
                    range.0 = range.0.min(next_attempt_at - now);
                    range.1 = range.1.max(next_attempt_at - now);
                }
                other => panic!("expected a retry: {other:?}"),
            }
        }
        range
    }

    #[test]
    fn a_short_retry_after_never_shortens_the_schedule() {
        // SPEC 5: the wait is the longer of the schedule's delay and Retry-After.
        let schedule = [Duration::from_secs(300), Duration::from_secs(7200)];
        for (attempts_before, scheduled) in [(0, 300_000), (1, 7_200_000)] {
            for seconds in [0, 1, 5] {
                let response = Response::Status {
                    status: 429,
                    retry_after: Some(Duration::from_secs(seconds)),
                };
                let (earliest, latest) = next_attempt_range(&response, attempts_before, &schedule);
                assert!(
                    earliest >= scheduled * 8 / 10,
                    "Retry-After: {seconds} made retry {attempts_before} wait only {earliest} ms"
                );
                assert!(latest <= scheduled * 12 / 10, "{latest}");
            }
        }
        // A longer Retry-After lengthens the wait, as asked (no jitter).
        let response = Response::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            next_attempt_range(&response, 0, &schedule),
            (3_600_000, 3_600_000)
        );
    }

    #[test]
    fn an_absurd_retry_after_is_capped() {
        let schedule = [Duration::from_secs(5)];
        for wait in [
            MAX_RETRY_AFTER + Duration::from_secs(1),
            Duration::from_secs(10 * 365 * 86400),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            let response = Response::Status {
                status: 429,
                retry_after: Some(wait),
            };
            let cap = MAX_RETRY_AFTER.as_millis() as i64;
            assert_eq!(
                next_attempt_range(&response, 0, &schedule),
                (cap, cap),
                "{wait:?}"
            );
        }
        // A schedule entry longer than the cap still counts in full.
        let long = [Duration::from_secs(48 * 3600)];
        let response = Response::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(u64::MAX)),
        };
        let (earliest, _) = next_attempt_range(&response, 0, &long);
        assert!(earliest >= 48 * 3600 * 1000 * 8 / 10, "{earliest}");
        // An HTTP date far ahead (or past the end of time) is capped too.
        let mut headers = HeaderMap::new();
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Fri, 31 Dec 9999 23:59:59 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert("retry-after", HeaderValue::from_static("99999999999999999999999"));
        assert_eq!(
            retry_after(&headers),
            Some(MAX_RETRY_AFTER),
            "too many seconds for a u64"
        );
    }

    #[test]
    fn a_huge_schedule_entry_does_not_wrap_the_next_attempt() {
        let schedule = [Duration::MAX];
        let network = Response::Failed("could not connect".into());
        match outcome_of(&network, 0, &schedule, 1_000) {
            AttemptOutcome::Retry { next_attempt_at, .. } => {
                assert!(next_attempt_at > 1_000, "{next_attempt_at}")
            }
            other => panic!("{other:?}"),
        }
    }
}
