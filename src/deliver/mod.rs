//! Forwarding scored contacts downstream (SPEC 5, 10): one worker per
//! destination claims that destination's due deliveries from the store,
//! builds each body in the destination's shape, sends it with its
//! credentials and Standard Webhooks headers, and records the outcome
//! before the slot takes the next one. Retries live in the store
//! (`attempts`, `next_attempt_at`), never in sleeping tasks.

pub mod manager;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::destinations::auth::Credentials;
use crate::destinations::body::{BodyError, Payload};
use crate::destinations::breaker::{AttemptResult, Breaker, Permit};
use crate::destinations::rate::RateGate;
use crate::destinations::{Body, BodySpec, BreakerSettings, BreakerState, Destination, Template};
use crate::store::{AttemptLog, AttemptOutcome, ClaimedDelivery, Store, StoreResult, truncate_body};
use crate::telemetry;

/// How often the worker looks for due deliveries when nothing wakes it.
const POLL: Duration = Duration::from_millis(200);
/// The longest `Retry-After` honoured: a day, about the whole default
/// schedule. A receiver asking for longer (a far-future date, an absurd
/// number of seconds) gets its retry after a day; a longer entry of the
/// schedule itself still counts in full.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

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

/// One destination's worker: its own queue (claims of its deliveries),
/// concurrency, retry schedule, credentials, rate limit and breaker
/// (SPEC 10), so that a failing, slow or rate-limited destination never
/// delays another.
pub struct Deliverer {
    store: Arc<dyn Store>,
    destination: Arc<Destination>,
    lease: Duration,
    client: reqwest::Client,
    credentials: Credentials,
    gate: Arc<dyn RateGate>,
    health: Arc<DestinationHealth>,
    wake: Arc<Notify>,
    alerts: Option<Arc<AlertSender>>,
}

/// A destination's state as `GET /destinations` shows it (per instance).
#[derive(Debug)]
pub struct DestinationHealth {
    settings: BreakerSettings,
    breaker: Mutex<Breaker>,
    last: Mutex<LastResults>,
}

#[derive(Debug, Default, Clone)]
pub struct LastResults {
    pub success_at: Option<i64>,
    pub failure_at: Option<i64>,
    pub error: Option<String>,
}

impl DestinationHealth {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            breaker: Mutex::new(Breaker::new(settings)),
            last: Mutex::new(LastResults::default()),
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        lock(&self.breaker).state(Instant::now())
    }

    pub fn last(&self) -> LastResults {
        lock(&self.last).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends alert events (SPEC 10) to the destination a failing one names:
/// built in that destination's shape and with its credentials, sent at
/// once with a few quick retries (not queued: an alert about a failure
/// matters now, and the failure is in the log and `GET /destinations` too).
pub struct AlertSender {
    target: Arc<Destination>,
    client: reqwest::Client,
    credentials: Credentials,
}

impl AlertSender {
    pub fn new(target: Arc<Destination>) -> reqwest::Result<Self> {
        let client = http_client(target.timeout)?;
        let credentials = Credentials::new(&target);
        Ok(Self {
            target,
            client,
            credentials,
        })
    }

    async fn send(&self, event: Value) {
        let id = crate::ingest::new_event_id();
        let body = match self.target.build_body(&event) {
            Ok(Body::Skip(_)) => return,
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(destination = %self.target.name, error = %e, "cannot build an alert");
                return;
            }
        };
        let Some(payload) = self.target.payload(&body) else {
            return;
        };
        for attempt in 1..=3u32 {
            let exchange = send_payload(&self.client, &self.target, &self.credentials, &id, &payload).await;
            if exchange.succeeded {
                return;
            }
            tracing::warn!(destination = %self.target.name, attempt, "an alert was not accepted");
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
    }
}

fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("leadscore/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        destination: Arc<Destination>,
        lease: Duration,
        health: Arc<DestinationHealth>,
        wake: Arc<Notify>,
        alerts: Option<Arc<AlertSender>>,
    ) -> reqwest::Result<Self> {
        let client = http_client(destination.timeout)?;
        let credentials = Credentials::new(&destination);
        let gate = store.rate_gate(&destination.name, destination.rate);
        Ok(Self {
            store,
            destination,
            lease,
            client,
            credentials,
            gate,
            health,
            wake,
            alerts,
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
    /// sending, the last claim found fewer due deliveries than it asked
    /// for, or the breaker is open (then nothing is claimed, so no retry is
    /// used up). Then a finished delivery (it may unblock a later event of
    /// its contact), a new event (the wake-up) or the poll interval
    /// (retries coming due, the breaker's cooldown ending) starts the next
    /// claim.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let concurrency = this.destination.concurrency.max(1);
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
            while sending < concurrency
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
            // Slots neither sending nor already given a claimed delivery;
            // one (the probe) while the breaker is half-open, none while open.
            let claimable = match this.health.breaker_state() {
                BreakerState::Closed => concurrency.saturating_sub(sending + ready.len()),
                BreakerState::HalfOpen => usize::from(sending + ready.len() == 0),
                BreakerState::Open => 0,
            };
            if claim && claimable > 0 && claiming.is_none() && !stopping {
                let store = this.store.clone();
                let lease = this.lease;
                let destination = this.destination.name.clone();
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
                            tracing::warn!(destination = %this.destination.name, error = %e, "cannot claim deliveries; retrying shortly");
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
        // The breaker and the rate limit first: waiting on either uses up
        // no retry. A wait longer than what is left of the lease gives the
        // delivery up unsent (its lease runs out and it is claimed again).
        let claimed_at = Instant::now();
        loop {
            let permit = lock(&self.health.breaker).permit(Instant::now());
            let wait = match permit {
                Permit::Go | Permit::Probe => match self.gate.try_acquire().await {
                    Ok(()) => break,
                    Err(wait) => wait,
                },
                Permit::Wait(wait) => wait,
            };
            if claimed_at.elapsed() + wait >= self.lease / 2 {
                return;
            }
            tokio::time::sleep(wait).await;
        }
        let started = Instant::now();
        let at = crate::store::now_ms();
        let exchange = self.exchange(&delivery).await;
        let latency = started.elapsed();
        let outcome = match &exchange.skipped {
            Some(reason) => AttemptOutcome::Skipped {
                reason: reason.clone(),
            },
            None if exchange.failed_for_good => AttemptOutcome::Dead {
                status: None,
                error: exchange.error_text(),
            },
            None => outcome_of(
                &exchange.response,
                delivery.attempts,
                &self.destination.retry_schedule,
                crate::store::now_ms(),
            ),
        };
        if let Response::Status {
            status: 429,
            retry_after: Some(wait),
        } = exchange.response
        {
            self.gate.pause_for(wait).await;
        }
        self.note(&exchange, &outcome).await;
        telemetry::delivery_attempt(
            &self.destination.name,
            &delivery.event_id,
            delivery.attempts + 1,
            reported(&outcome),
            latency,
        );
        let log = AttemptLog {
            at,
            status: match &exchange.response {
                Response::Status { status, .. } => Some(*status),
                Response::Failed(_) => None,
            },
            error: exchange.error_class.map(str::to_owned),
            latency_ms: latency.as_millis().min(u64::MAX as u128) as u64,
            response_body: exchange.body,
        };
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
            tracing::error!(destination = %self.destination.name, event_id = %delivery.event_id, error = %e, "cannot record a delivery attempt; it will be retried after its lease");
        }
    }

    /// Breaker, last results and alerts after an attempt.
    async fn note(&self, exchange: &Exchange, outcome: &AttemptOutcome) {
        if matches!(outcome, AttemptOutcome::Skipped { .. }) {
            return;
        }
        let now = crate::store::now_ms();
        let status = match &exchange.response {
            Response::Status { status, .. } => Some(*status),
            Response::Failed(_) => None,
        };
        let changes = {
            let mut breaker = lock(&self.health.breaker);
            let mut changes = Vec::new();
            changes.extend(breaker.record(AttemptResult::of(status, exchange.succeeded), Instant::now()));
            if matches!(outcome, AttemptOutcome::Dead { .. }) {
                changes.extend(breaker.delivery_died());
            }
            changes
        };
        let last_error = {
            let mut last = lock(&self.health.last);
            if exchange.succeeded {
                last.success_at = Some(now);
            } else {
                last.failure_at = Some(now);
                last.error = Some(exchange.error_text());
            }
            last.error.clone()
        };
        for change in changes {
            tracing::warn!(destination = %self.destination.name, change = ?change, "destination health changed");
            if let Some(alerts) = &self.alerts {
                let event = change.event(
                    &crate::ingest::new_event_id(),
                    &self.destination.name,
                    SystemTime::now(),
                    last_error.as_deref(),
                );
                let alerts = alerts.clone();
                tokio::spawn(async move { alerts.send(event).await });
            }
        }
    }

    /// Builds the body (the stored scored contact, or its template or
    /// transform) and sends it.
    async fn exchange(&self, delivery: &ClaimedDelivery) -> Exchange {
        let payload = match &self.destination.body {
            // The stored body as it is: byte for byte what was scored.
            BodySpec::Template(Template::ScoredContact) => Payload {
                bytes: delivery.body.as_bytes().to_vec(),
                content_type: "application/json".to_owned(),
            },
            _ => {
                let body = match crate::payload::parse_json::<Value>(&delivery.body) {
                    Ok(event) => self.destination.build_body(&event),
                    Err(e) => Err(BodyError::Transform(format!(
                        "the stored event does not parse: {e}"
                    ))),
                };
                match body {
                    Ok(Body::Skip(reason)) => return Exchange::skipped(reason),
                    Ok(body) => match self.destination.payload(&body) {
                        Some(payload) => payload,
                        None => return Exchange::skipped("nothing to send".into()),
                    },
                    Err(e) => return Exchange::failed_for_good(e.class(), e.to_string()),
                }
            }
        };
        send_payload(
            &self.client,
            &self.destination,
            &self.credentials,
            &delivery.event_id,
            &payload,
        )
        .await
    }
}

/// Sends one request, fetching a new OAuth2 token and trying once more
/// after a `401` when the destination uses one.
async fn send_payload(
    client: &reqwest::Client,
    destination: &Destination,
    credentials: &Credentials,
    event_id: &str,
    payload: &Payload,
) -> Exchange {
    let mut retried = false;
    loop {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let headers = match credentials
            .request_headers(destination, payload, event_id, &timestamp)
            .await
        {
            Ok(headers) => headers,
            Err(e) => return Exchange::failed(e.class(), e.to_string()),
        };
        let request = client
            .post(destination.url.url().clone())
            .headers(headers.headers.clone())
            .body(payload.bytes.clone());
        let exchange = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after(response.headers());
                let full = tokio::time::timeout(Duration::from_secs(1), read_body(response))
                    .await
                    .unwrap_or_default();
                let failure = destination.failed_answer(status, &full);
                let text = truncate_body(&String::from_utf8_lossy(&full));
                Exchange {
                    succeeded: (200..300).contains(&status) && failure.is_none(),
                    response: match failure {
                        // A HubSpot `207` or `2xx` with errors: failed, retried.
                        Some(error) => Response::Failed(error),
                        None => Response::Status { status, retry_after },
                    },
                    body: (!text.is_empty()).then_some(text),
                    error_class: None,
                    skipped: None,
                    failed_for_good: false,
                    answered: Some(status),
                }
            }
            // Without the URL: it can be a secret (a Slack webhook, a
            // password in it), and this text is stored, listed and logged.
            Err(e) => {
                let e = e.without_url();
                Exchange::failed(error_class(&e), describe_error(&e))
            }
        };
        if exchange.answered == Some(401) && credentials.refreshes_tokens() && !retried {
            credentials.token_rejected(&headers).await;
            retried = true;
            continue;
        }
        return exchange;
    }
}

/// What one attempt got: the answer, the start of its body and, without an
/// answer, what kind of failure it was (the attempt log's `error`).
struct Exchange {
    response: Response,
    /// A `2xx` that is not a failed attempt.
    succeeded: bool,
    body: Option<String>,
    error_class: Option<&'static str>,
    /// Nothing to send (SPEC 10): why.
    skipped: Option<String>,
    /// A transform failed: the delivery is dead at once.
    failed_for_good: bool,
    answered: Option<u16>,
}

impl Exchange {
    fn failed(class: &'static str, error: String) -> Self {
        Self {
            response: Response::Failed(error),
            succeeded: false,
            body: None,
            error_class: Some(class),
            skipped: None,
            failed_for_good: false,
            answered: None,
        }
    }

    fn failed_for_good(class: &'static str, error: String) -> Self {
        Self {
            failed_for_good: true,
            ..Self::failed(class, error)
        }
    }

    fn skipped(reason: String) -> Self {
        Self {
            response: Response::Failed(reason.clone()),
            succeeded: false,
            body: None,
            error_class: None,
            skipped: Some(reason),
            failed_for_good: false,
            answered: None,
        }
    }

    fn error_text(&self) -> String {
        match &self.response {
            Response::Status { status, .. } => format!("the receiver answered {status}"),
            Response::Failed(error) => error.clone(),
        }
    }
}

/// A response body, up to 64 KiB (a HubSpot answer is judged by its
/// `errors`; the attempt log keeps the first KiB); a body of at most that
/// size is read to its end, so that the connection can be reused.
async fn read_body(mut response: reqwest::Response) -> Vec<u8> {
    const MAX: usize = 64 * 1024;
    let mut bytes = Vec::new();
    while bytes.len() < MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX);
    bytes
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
        AttemptOutcome::Skipped { reason } => telemetry::Attempt::Skipped { reason },
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
