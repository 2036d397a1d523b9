//! Logs and metrics. A notable occurrence is logged and counted in one
//! function here, so the log line and the metric never drift apart. The
//! functions take plain values: every stage can report without the stages
//! depending on each other through this module.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The log filter from `LEADSCORE_LOG` (tracing's `EnvFilter` syntax, e.g.
/// `info,leadscore::deliver=debug`), else `default`. A value that does not
/// parse is an error naming the variable, like every other bad setting.
pub fn log_filter(default: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    match std::env::var("LEADSCORE_LOG") {
        Ok(value) if !value.trim().is_empty() => tracing_subscriber::EnvFilter::builder()
            .parse(&value)
            .map_err(|e| format!("invalid value {value:?} for LEADSCORE_LOG: {e}")),
        _ => Ok(tracing_subscriber::EnvFilter::new(default)),
    }
}

/// Whether logs on stderr get ANSI colours: only on a terminal, and not
/// with `NO_COLOR` set (a log written to a file or a pipe stays plain text).
pub fn colour_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Log lines waiting for the log thread at most (a few MB: the memory bound
/// holds under any load); past this a logging thread waits for room, as it
/// waited for stderr before (a line is never dropped: every contact id is
/// logged).
const LOG_QUEUE_LINES: usize = 16_384;

/// Installs the server's log subscriber (`LEADSCORE_LOG` filter, default
/// `info`). Lines are written to stderr by a thread of their own (issue 24:
/// a `write` per contact on the threads that answer webhooks, and a slow
/// stderr reader would have held them up), buffered while more are queued;
/// the returned guard writes out what is queued when it is dropped.
pub fn init_logging(format: LogFormat) -> Result<tracing_appender::non_blocking::WorkerGuard, String> {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter("info")?)
        .with_ansi(colour_stderr())
        .with_writer(writer);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(guard)
}

/// The process-wide Prometheus recorder (installed once, shared by every
/// server in the process, e.g. in tests).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        // A rule file takes microseconds: buckets from 1 µs to 100 ms.
        let rule_seconds = [
            0.000_001,
            0.000_002_5,
            0.000_005,
            0.000_01,
            0.000_025,
            0.000_05,
            0.000_1,
            0.000_25,
            0.000_5,
            0.001,
            0.002_5,
            0.01,
            0.1,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(RULE_DURATION.into()), &rule_seconds)
            .expect("bucket list is not empty")
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; then ours just
        // renders nothing, which is better than refusing to start.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// A metric's handles, by its label values, kept per thread: `counter!`
/// and `histogram!` build the key, hash it and look it up in the
/// recorder's registry on every call, which for the few metrics recorded
/// per request was about 1 µs of each (BENCHMARKS.md, session 16). The
/// labels on these paths come from routes, status codes and the rules'
/// tiers, never from a request's content, so each map stays small.
struct Handles<K, H>(std::cell::RefCell<std::collections::HashMap<K, H>>);

impl<K: std::hash::Hash + Eq, H: Clone> Handles<K, H> {
    fn new() -> Self {
        Self(std::cell::RefCell::new(std::collections::HashMap::new()))
    }

    /// The handles for `key`; `make` gives the key to keep and the handles
    /// the first time.
    fn get<Q>(&self, key: &Q, make: impl FnOnce() -> (K, H)) -> H
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(handle) = self.0.borrow().get(key) {
            return handle.clone();
        }
        // The recorder is installed before the first handle is taken: a
        // handle taken without one would count nothing, for good.
        metrics_handle();
        let (key, handle) = make();
        self.0.borrow_mut().insert(key, handle.clone());
        handle
    }
}

/// One HTTP request answered.
pub fn http_request(route: &'static str, status: u16, elapsed: Duration) {
    thread_local! {
        static HANDLES: Handles<(&'static str, u16), (metrics::Counter, metrics::Histogram)> = Handles::new();
    }
    let (requests, duration) = HANDLES.with(|handles| {
        handles.get(&(route, status), || {
            let requests =
                counter!("leadscore_http_requests_total", "route" => route, "status" => status.to_string());
            let duration = histogram!("leadscore_http_request_duration_seconds", "route" => route);
            ((route, status), (requests, duration))
        })
    });
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
}

/// A connection closed at once: its peer holds its share of connections.
pub fn connection_refused(peer: std::net::IpAddr) {
    counter!("leadscore_connections_refused_total").increment(1);
    // Debug, not warn: a flood of refusals must not become a flood of logs.
    tracing::debug!(%peer, "connection refused: this peer holds the most connections one peer may");
}

/// One contact accepted by ingest.
pub fn contact_ingested(
    contact_id: &str,
    event_id: &str,
    score: &serde_json::Number,
    tier: &str,
    duplicate: bool,
    scoring: Duration,
) {
    if duplicate {
        counter!("leadscore_duplicates_total").increment(1);
        tracing::info!(contact_id, event_id, score = %score, tier, duplicate, "duplicate contact, not forwarded again");
    } else {
        thread_local! {
            static SCORED: Handles<String, (metrics::Counter, metrics::Counter)> = Handles::new();
        }
        let (received, scored) = SCORED.with(|handles| {
            handles.get(tier, || {
                let received = counter!("leadscore_contacts_received_total");
                let scored = counter!("leadscore_contacts_scored_total", "tier" => tier.to_owned());
                (tier.to_owned(), (received, scored))
            })
        });
        received.increment(1);
        scored.increment(1);
        tracing::info!(contact_id, event_id, score = %score, tier, scoring_us = scoring.as_micros() as u64, "contact scored and stored");
    }
}

/// A call, outcome or unknown hook stored (SPEC 11), or a duplicate of one.
pub fn hook_received(kind: &'static str, hook_id: &str, contact_id: &serde_json::Value, duplicate: bool) {
    if duplicate {
        counter!("leadscore_duplicates_total").increment(1);
        tracing::info!(kind, hook_id, contact_id = %contact_id, "duplicate hook, not stored again");
    } else {
        counter!("leadscore_hooks_received_total", "kind" => kind).increment(1);
        tracing::info!(kind, hook_id, contact_id = %contact_id, "hook stored");
    }
}

/// Time to score one contact.
pub fn scoring_time(elapsed: Duration) {
    thread_local! {
        static HANDLES: Handles<(), metrics::Histogram> = Handles::new();
    }
    HANDLES
        .with(|handles| handles.get(&(), || ((), histogram!("leadscore_scoring_duration_seconds"))))
        .record(elapsed.as_secs_f64());
}

/// The histogram of time per rule file (SPEC 13).
const RULE_DURATION: &str = "leadscore_rule_duration_seconds";

/// Every how many contacts a scoring thread times its rule files: the
/// clock reads and the histogram's label lookups cost about 2 µs per timed
/// contact, under 1 % of scoring when taken once in 16 (BENCHMARKS.md).
const RULE_TIME_SAMPLE: u32 = 16;

/// Whether this contact's rule files are timed: the first contact a
/// scoring thread scores, then one in [`RULE_TIME_SAMPLE`].
pub fn sample_rule_times() -> bool {
    thread_local! {
        static SCORED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    SCORED.with(|scored| {
        let n = scored.get();
        scored.set(n.wrapping_add(1));
        n.is_multiple_of(RULE_TIME_SAMPLE)
    })
}

/// The time each rule file took for one (sampled) contact.
pub fn rule_times(times: &[(&str, Duration)]) {
    for (rule, elapsed) in times {
        histogram!(RULE_DURATION, "rule" => (*rule).to_owned()).record(elapsed.as_secs_f64());
    }
}

/// A rule failed at run time for a contact.
pub fn rule_error(rule: &str, contact_id: &str, error: &str) {
    counter!("leadscore_rule_errors_total", "rule" => rule.to_owned()).increment(1);
    tracing::warn!(rule, contact_id, error, "rule failed for a contact");
}

/// A new rule set was put in force.
pub fn rules_loaded(version: &str, files: usize) {
    counter!("leadscore_rule_reloads_total").increment(1);
    tracing::info!(rules_version = version, files, "rule set loaded");
}

/// A changed rule folder did not compile; the previous set stays. Each
/// error is `(file, line, column, message)`.
pub fn rules_reload_failed<'a>(errors: impl IntoIterator<Item = (&'a str, usize, usize, &'a str)>) {
    counter!("leadscore_rule_reload_errors_total").increment(1);
    for (file, line, column, message) in errors {
        tracing::error!(
            file,
            line,
            column,
            message,
            "rule change rejected; the previous rule set stays loaded"
        );
    }
}

/// How a delivery attempt ended, as telemetry reports it.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    Delivered {
        status: u16,
    },
    Retry {
        status: Option<u16>,
        error: &'a str,
        /// Unix ms.
        next_attempt_at: i64,
    },
    Skipped {
        reason: &'a str,
    },
    Dead {
        status: Option<u16>,
        error: &'a str,
    },
}

/// A delivery attempt finished.
pub fn delivery_attempt(
    destination: &str,
    event_id: &str,
    attempt: u32,
    outcome: Attempt<'_>,
    elapsed: Duration,
) {
    let label = match outcome {
        Attempt::Delivered { .. } => "delivered",
        Attempt::Retry { .. } => "retry",
        Attempt::Dead { .. } => "dead",
        Attempt::Skipped { .. } => "skipped",
    };
    counter!("leadscore_delivery_attempts_total", "destination" => destination.to_owned(), "outcome" => label)
        .increment(1);
    histogram!("leadscore_delivery_duration_seconds", "destination" => destination.to_owned())
        .record(elapsed.as_secs_f64());
    match outcome {
        Attempt::Delivered { status } => {
            tracing::info!(destination, event_id, attempt, status, "delivered")
        }
        Attempt::Skipped { reason } => {
            tracing::info!(
                destination,
                event_id,
                attempt,
                reason,
                "nothing to send for this destination; skipped"
            )
        }
        Attempt::Retry {
            status,
            error,
            next_attempt_at,
        } => tracing::warn!(
            destination, event_id, attempt, status, error, retry_at = %crate::time::format_ms(next_attempt_at),
            "delivery failed; will retry"),
        Attempt::Dead { status, error } => tracing::error!(
            destination,
            event_id,
            attempt,
            status,
            error,
            "delivery is dead; requeue it with `leadscore deliveries retry`"
        ),
    }
}

/// A destination's `when` failed at run time: the event was selected.
pub fn when_failed(destination: &str, error: &str) {
    counter!("leadscore_when_errors_total", "destination" => destination.to_owned()).increment(1);
    tracing::warn!(
        destination,
        error,
        "a destination's `when` failed; the event is sent to it"
    );
}

/// A reload of the destinations file, and whether it loaded.
pub fn destinations_reloaded(loaded: bool) {
    match loaded {
        true => counter!("leadscore_destination_reloads_total").increment(1),
        false => counter!("leadscore_destination_reload_errors_total").increment(1),
    }
}

/// Current delivery backlog, set when metrics are scraped.
pub fn delivery_backlog(pending: u64, dead: u64) {
    gauge!("leadscore_deliveries_pending").set(pending as f64);
    gauge!("leadscore_deliveries_dead").set(dead as f64);
}
