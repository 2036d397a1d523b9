//! Backtests as a use case (SPEC 8): what a request means — which baseline,
//! which tiers, which window of history, how many contacts at most — for
//! `POST /backtest`, the console and `leadscore backtest` alike. The scoring
//! and the report are the domain's (`crate::backtest`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::app::{AppError, Engine};
use crate::backtest::{self, Backtest, BacktestError, Baseline, Progress, Report, RowSink, Source};
use crate::score::{Limits, LoadError, RuleSet, RuleSources};
use crate::store::Store;

/// Most changed contacts one report lists.
pub const MAX_TOP: usize = 1000;
/// Changed contacts listed when the request does not say.
pub const DEFAULT_TOP: usize = 20;
/// The window when the request does not say.
pub const DEFAULT_SINCE: &str = "30d";

/// `POST /backtest`'s body (SPEC 8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// The candidate's rule files, complete: a file left out is not in it.
    pub rules: BTreeMap<String, String>,
    /// The candidate's `tiers.toml`; when left out, the loaded one.
    pub tiers: Option<String>,
    pub since: Option<String>,
    #[serde(default)]
    pub all_events: bool,
    pub against: Option<String>,
    pub top: Option<usize>,
    /// Contacts to score instead of stored ones (the playground).
    pub contacts: Option<Box<RawValue>>,
    /// With `contacts`: each result has its trace (SPEC 13), so that the
    /// playground shows what the edited rules looked up.
    #[serde(default)]
    pub trace: bool,
}

/// `rules` (the loaded rule set, or `--rules`) or `stored` (the scores
/// stored at ingest).
pub fn parse_against(text: Option<&str>) -> Result<Against, AppError> {
    match text.unwrap_or("rules") {
        "rules" => Ok(Against::Rules),
        "stored" => Ok(Against::Stored),
        other => Err(AppError::parameter(
            "against",
            format!("unknown value {other:?}; use \"rules\" or \"stored\""),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Against {
    /// Score the contacts with the loaded rules too.
    Rules,
    /// Compare with the scores stored when the contacts arrived.
    Stored,
}

pub fn check_top(top: Option<usize>) -> Result<usize, AppError> {
    let top = top.unwrap_or(DEFAULT_TOP);
    if top > MAX_TOP {
        return Err(AppError::parameter("top", format!("must be at most {MAX_TOP}")));
    }
    Ok(top)
}

/// The stored history a backtest reads: contacts received since `since`
/// (a duration back or an RFC 3339 time), never before `retention`;
/// with `max_contacts`, a larger window is refused.
pub fn stored_history(
    store: Arc<dyn Store>,
    since: &str,
    all_events: bool,
    retention: Duration,
    max_contacts: Option<usize>,
) -> Result<Source, AppError> {
    let now = SystemTime::now();
    let since = crate::time::parse_since(since, now).map_err(|e| AppError::parameter("since", e))?;
    Ok(Source::Store {
        store,
        since_ms: crate::time::window_start_ms(since, retention, now),
        all_events,
        max_contacts: max_contacts.map(|n| n as u64),
    })
}

/// Compiles a candidate given as sources, off the async executor.
pub async fn compile(sources: RuleSources, limits: Limits) -> Result<Arc<RuleSet>, AppError> {
    let compiled = tokio::task::spawn_blocking(move || RuleSet::compile(sources, &limits))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    match compiled {
        Ok(set) => Ok(Arc::new(set)),
        Err(LoadError(errors)) => Err(AppError::Unprocessable {
            message: format!(
                "the candidate rule set does not compile:\n{}",
                LoadError(errors.clone())
            ),
            errors,
        }),
    }
}

/// Runs a backtest to its report.
pub async fn run(
    job: Backtest,
    progress: Arc<Progress>,
    on_row: Option<RowSink>,
) -> Result<Report, AppError> {
    job.run(progress, on_row).await.map_err(|e| match e {
        BacktestError::Store(s) => s.into(),
        e @ BacktestError::Internal(_) => {
            tracing::error!(error = %e, "backtest failed");
            AppError::Internal(e.to_string())
        }
        e => AppError::BadRequest(e.to_string()),
    })
}

impl Engine {
    /// A backtest for the API and the console: the candidate compiled from
    /// the request (with the loaded `tiers.toml` when it gives none), against
    /// the loaded rules or the stored scores, over given contacts or stored
    /// history. History is scored at the lowest CPU priority, one backtest
    /// at a time per instance (`Busy` with the expected wait otherwise).
    pub async fn backtest(&self, request: BacktestRequest) -> Result<Report, AppError> {
        let top = check_top(request.top)?;
        let loaded = self.rules().current();
        let baseline = match parse_against(request.against.as_deref())? {
            Against::Rules => Baseline::Rules(loaded.clone()),
            Against::Stored => Baseline::Stored,
        };
        let sources = RuleSources {
            files: request.rules.into_iter().collect(),
            // The loaded set's tiers, not the folder's (which may hold a
            // change that failed to load).
            tiers: request.tiers.or_else(|| loaded.tiers_source().map(str::to_owned)),
        };
        let candidate = compile(sources, self.rules().limits().clone()).await?;
        let progress = Arc::new(Progress::default());
        let (source, _slot) = match request.contacts {
            Some(raw) => {
                if request.since.is_some() {
                    return Err(AppError::bad_request(
                        "give either `contacts` or `since`, not both",
                    ));
                }
                let contacts = crate::payload::parse_body(raw.get().as_bytes(), self.ingest.max_contacts)?;
                (Source::Contacts(contacts), None)
            }
            None => {
                let source = stored_history(
                    self.store().clone(),
                    request.since.as_deref().unwrap_or(DEFAULT_SINCE),
                    request.all_events,
                    self.settings().retention,
                    Some(self.settings().backtest_max_contacts),
                )?;
                let slot = self
                    .backtest_slot
                    .take(&progress)
                    .map_err(|wait| AppError::Busy {
                        message: format!(
                            "a backtest is running on this instance; try again in {} s",
                            wait.as_secs().max(1)
                        ),
                        retry_after: wait,
                    })?;
                (source, Some(slot))
            }
        };
        let job = Backtest {
            source,
            baseline,
            candidate,
            top,
            threads: backtest::default_threads(),
            // Webhooks first: the backtest takes the CPU time they leave.
            background: true,
            trace: request.trace,
            as_of: None,
        };
        run(job, progress, None).await
    }
}

/// One backtest over stored history at a time per instance (SPEC 8).
#[derive(Default)]
pub struct Slot(Mutex<Option<(Instant, Arc<Progress>)>>);

impl Slot {
    /// Takes the slot, or says how long the running backtest should still take.
    fn take(&self, progress: &Arc<Progress>) -> Result<SlotGuard<'_>, Duration> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((started, running)) = slot.as_ref() {
            return Err(backtest::remaining(running, started.elapsed()));
        }
        *slot = Some((Instant::now(), progress.clone()));
        Ok(SlotGuard(self))
    }
}

/// Frees the slot when the backtest ends, however it ends.
struct SlotGuard<'a>(&'a Slot);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
