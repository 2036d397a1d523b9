//! Backtests (SPEC 8): stored contacts (or given ones) scored with a
//! candidate rule set and a baseline — the loaded rule set or the scores
//! stored at ingest — and the difference as a report. Nothing is stored or
//! forwarded. Independent of HTTP and the command line.
//!
//! One file on purpose: the scan, the scoring workers and the report
//! builder share the page and order invariants described here.
//!
//! The store is read page by page (keyset on `seq`) into a bounded channel;
//! worker threads score the pages; one aggregator folds the results, in
//! store order, into counters, a histogram of score deltas and a top-N
//! heap. Memory is bounded by the pages in flight, whatever the history.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::outcomes::{self, BacktestContact, BacktestOutcomes, ContactOutcome, SideScore};
use crate::payload::{Contact, parse_json};
use crate::score::{Comparison, Outcome, Points, Reason, RuleSet, ScoredContact, ScoringContext, Tiers};
use crate::store::{ContactHistory, EventWindow, Store, StoreError, StoredEvent};
use crate::time::{format_ms, from_unix_ms};

/// Sees every compared contact, in order (e.g. writes a CSV row).
pub type RowSink = Box<dyn FnMut(&Compared) + Send>;

/// Events read from the store at a time.
const PAGE: usize = 256;

/// What the candidate is compared with.
#[derive(Clone)]
pub enum Baseline {
    /// A rule set (the loaded one), run on the same contacts.
    Rules(Arc<RuleSet>),
    /// The scores stored at ingest time.
    Stored,
}

/// Which contacts a backtest scores.
pub enum Source {
    /// Stored events received since `since_ms`: the latest of each contact,
    /// or every event. With `max_contacts`, a larger window is refused.
    Store {
        store: Arc<dyn Store>,
        since_ms: i64,
        all_events: bool,
        max_contacts: Option<u64>,
    },
    /// Given contacts (the console's playground); the report then has
    /// `results`, both scored contacts per input.
    Contacts(Vec<Contact>),
}

pub struct Backtest {
    pub source: Source,
    pub baseline: Baseline,
    pub candidate: Arc<RuleSet>,
    /// How many changed contacts the report lists.
    pub top: usize,
    /// Scoring threads (at least 1).
    pub threads: usize,
    /// Score at the lowest CPU priority (nice 19), so that a server running
    /// the backtest answers its webhooks first (`POST /backtest`); the
    /// command line runs at normal priority.
    pub background: bool,
    /// Given contacts only: both results carry their trace (the playground).
    pub trace: bool,
    /// The scoring time of stored events: `None`, each event's receive time
    /// (what the engine knew then: no later calls); a time, that time for
    /// all (`leadscore rescore --dry-run`: what a rescore now would give).
    pub as_of: Option<SystemTime>,
}

/// Lowers the calling thread to the lowest CPU priority of normal
/// scheduling (nice 19 on Linux, where niceness is per thread): the kernel
/// then runs it only in the time other threads leave, yet it always makes
/// progress. Whether it worked; failing only leaves the thread as it was.
pub fn lower_current_thread_priority() -> bool {
    thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min).is_ok()
}

/// How far a running backtest is; shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: AtomicU64,
    pub done: AtomicU64,
}

impl Progress {
    pub fn total(&self) -> u64 {
        self.total.load(AtomicOrdering::Relaxed)
    }

    pub fn done(&self) -> u64 {
        self.done.load(AtomicOrdering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the window holds {found} contacts, more than the limit of {max} (--backtest-max-contacts); choose a later `since`"
    )]
    TooManyContacts { found: u64, max: u64 },
    #[error("`against: stored` compares with stored scores; it needs stored contacts, not given ones")]
    StoredNeedsStore,
    #[error("a scoring thread failed: {0}")]
    Internal(String),
}

/// One contact's two results, as the CSV lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    pub contact_id: Value,
    /// The contact's key (`payload::id_key`); `None` for a stored event
    /// that cannot be read.
    pub contact_key: Option<String>,
    pub baseline: Side,
    pub candidate: Side,
    pub reasons_added: Vec<String>,
    pub reasons_removed: Vec<String>,
    /// The candidate's rule failures: `(rule, error)`.
    pub candidate_errors: Vec<(String, String)>,
    /// With `against: stored`, the rules version of the stored score.
    pub stored_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub score: Points,
    pub tier: String,
    /// Ranks it last in the comparison against outcomes (SPEC 11).
    #[serde(skip)]
    pub disqualified: bool,
}

impl Compared {
    pub fn delta(&self) -> f64 {
        self.candidate.score.as_f64() - self.baseline.score.as_f64()
    }

    pub fn tier_changed(&self) -> bool {
        self.baseline.tier != self.candidate.tier
    }
}

/// The report of SPEC 8.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub contacts: u64,
    /// RFC 3339; `null` for given contacts.
    pub since: Option<String>,
    pub baseline: VersionInfo,
    pub candidate: VersionInfo,
    pub tiers: SideBySide<serde_json::Map<String, Value>>,
    pub transitions: Vec<Transition>,
    pub score_delta: DeltaStats,
    pub changed: Vec<Changed>,
    pub errors: Vec<ErrorGroup>,
    /// How many contacts have each score, before and after (the console's
    /// distribution chart), sorted by score.
    pub distribution: SideBySide<Vec<ScoreCount>>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<PairResult>>,
    /// The candidate's slowest rule files, slowest first (SPEC 13).
    pub slowest_rules: Vec<RuleTime>,
    /// Stored contacts only: both sides judged by the contacts' calls and
    /// outcomes (SPEC 11); absent when the store could not read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<BacktestOutcomes>,
}

/// How long a rule file of the candidate took per contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleTime {
    pub rule: String,
    /// Mean time per contact, in microseconds.
    pub mean_micros: f64,
    /// Its share of the time of all rule files, in percent.
    pub share_percent: f64,
}

/// How many rule files the report lists as the slowest.
pub const SLOWEST_RULES: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// The rule set's version; for stored scores the version they were
    /// scored with, or `"mixed"` when they span several.
    pub rules_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideBySide<T> {
    pub baseline: T,
    pub candidate: T,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeltaStats {
    pub mean: Value,
    pub p50: Value,
    pub p90: Value,
    pub min: Value,
    pub max: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed {
    pub contact_id: Value,
    pub baseline: Side,
    pub candidate: Side,
    pub reasons_added: Vec<String>,
    pub reasons_removed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorGroup {
    pub rule: String,
    pub count: u64,
    pub example: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreCount {
    pub score: Value,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    pub baseline: ScoredContact,
    pub candidate: ScoredContact,
}

/// Threads a backtest uses by default: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Backtest {
    /// Runs the backtest. `on_row` sees every compared contact, in store
    /// (or input) order, e.g. to write a CSV row.
    pub async fn run(
        self,
        progress: Arc<Progress>,
        on_row: Option<RowSink>,
    ) -> Result<Report, BacktestError> {
        let started = Instant::now();
        let mut scorer = Scorer::new(self.baseline.clone(), self.candidate.clone());
        scorer.as_of = self.as_of;
        let scorer = Arc::new(scorer);
        let timing = scorer.clone();
        let trace = self.trace;
        let mut builder = ReportBuilder::new(self.top, &scorer);
        let mut on_row = on_row;
        let (mut report, results) = match self.source {
            Source::Contacts(contacts) => {
                if matches!(self.baseline, Baseline::Stored) {
                    return Err(BacktestError::StoredNeedsStore);
                }
                progress
                    .total
                    .store(contacts.len() as u64, AtomicOrdering::Relaxed);
                let (builder, results) = tokio::task::spawn_blocking(move || {
                    // Given contacts have no history: scored now (SPEC 12).
                    let at = ScoringContext::at(SystemTime::now());
                    let mut results = Vec::with_capacity(contacts.len());
                    for (i, contact) in contacts.iter().enumerate() {
                        let (baseline, candidate) = scorer.outcomes(contact, &at);
                        let compared = compare(contact, &baseline, &candidate);
                        if let Some(f) = on_row.as_mut() {
                            f(&compared);
                        }
                        builder.add(i as i64, compared);
                        let Baseline::Rules(baseline_rules) = &scorer.baseline else {
                            unreachable!("checked above")
                        };
                        let mut pair = PairResult {
                            baseline: baseline_rules.scored_contact(contact, baseline, None, &at),
                            candidate: scorer.candidate.scored_contact(contact, candidate, None, &at),
                        };
                        if trace {
                            pair.baseline.trace = Some(baseline_rules.evaluate_traced(contact, &at).1);
                            pair.candidate.trace = Some(scorer.candidate.evaluate_traced(contact, &at).1);
                        }
                        results.push(pair);
                        progress.done.fetch_add(1, AtomicOrdering::Relaxed);
                    }
                    (builder, results)
                })
                .await
                .map_err(|e| BacktestError::Internal(e.to_string()))?;
                (builder.finish(None, None), Some(results))
            }
            Source::Store {
                store,
                since_ms,
                all_events,
                max_contacts,
            } => {
                let window = EventWindow {
                    since_ms,
                    all_events,
                    up_to_seq: store.last_seq().await?,
                };
                let total = store.count_events(window).await?;
                if let Some(max) = max_contacts
                    && total > max
                {
                    return Err(BacktestError::TooManyContacts { found: total, max });
                }
                progress.total.store(total, AtomicOrdering::Relaxed);
                // Read once, before the scan: calls and outcomes that arrive
                // during it are not in this snapshot either.
                let outcomes = match store.contact_outcomes(since_ms).await {
                    Ok(rows) => Some(rows),
                    Err(e) => {
                        tracing::warn!(error = %e, "the backtest goes without outcomes: the store could not read them");
                        None
                    }
                };
                builder.join_outcomes = outcomes.is_some();
                builder = scan_store(
                    store,
                    window,
                    scorer,
                    builder,
                    Workers {
                        threads: self.threads.max(1),
                        background: self.background,
                    },
                    progress,
                    on_row,
                )
                .await?;
                (builder.finish(Some(format_ms(since_ms)), outcomes), None)
            }
        };
        report.results = results;
        report.slowest_rules = timing.slowest_rules(SLOWEST_RULES);
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

/// The scoring threads of a scan.
struct Workers {
    threads: usize,
    background: bool,
}

/// Pages from the store → scoring threads → the aggregator (in order).
async fn scan_store(
    store: Arc<dyn Store>,
    window: EventWindow,
    scorer: Arc<Scorer>,
    builder: ReportBuilder,
    Workers { threads, background }: Workers,
    progress: Arc<Progress>,
    mut on_row: Option<RowSink>,
) -> Result<ReportBuilder, BacktestError> {
    type Page = (u64, Vec<StoredEvent>, HashMap<String, ContactHistory>);
    type Scored = (u64, Vec<(i64, Compared)>);
    let (page_tx, page_rx) = tokio::sync::mpsc::channel::<Page>(threads * 2);
    let page_rx = Arc::new(Mutex::new(page_rx));
    let (scored_tx, scored_rx) = std::sync::mpsc::sync_channel::<Scored>(threads * 2);
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let page_rx = page_rx.clone();
        let scored_tx = scored_tx.clone();
        let scorer = scorer.clone();
        let worker = std::thread::Builder::new()
            .name(format!("backtest-{i}"))
            .spawn(move || {
                if background && !lower_current_thread_priority() {
                    tracing::debug!("could not lower the backtest thread's priority");
                }
                loop {
                    // Held only while taking a page, not while scoring it.
                    let page = page_rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
                    let Some((index, events, histories)) = page else {
                        return;
                    };
                    let scored = events
                        .iter()
                        .map(|event| (event.seq, scorer.compare_stored(event, &histories)))
                        .collect();
                    if scored_tx.send((index, scored)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| BacktestError::Internal(e.to_string()))?;
        workers.push(worker);
    }
    drop(scored_tx);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let aggregator_progress = progress.clone();
    std::thread::Builder::new()
        .name("backtest-report".into())
        .spawn(move || {
            let mut builder = builder;
            // Pages finish out of order; fold them in store order.
            let mut waiting: BTreeMap<u64, Vec<(i64, Compared)>> = BTreeMap::new();
            let mut next = 0u64;
            for (index, scored) in scored_rx {
                waiting.insert(index, scored);
                while let Some(page) = waiting.remove(&next) {
                    let n = page.len() as u64;
                    for (seq, compared) in page {
                        if let Some(f) = on_row.as_mut() {
                            f(&compared);
                        }
                        builder.add(seq, compared);
                    }
                    aggregator_progress.done.fetch_add(n, AtomicOrdering::Relaxed);
                    next += 1;
                }
            }
            let _ = done_tx.send(builder);
        })
        .map_err(|e| BacktestError::Internal(e.to_string()))?;

    let mut after = 0i64;
    let mut index = 0u64;
    let read = loop {
        let events = match store.scan_events(window, after, PAGE).await {
            Ok(events) => events,
            Err(e) => break Err(e),
        };
        let Some(last) = events.last() else { break Ok(()) };
        after = last.seq;
        // Rules reading `first_seen()` or `calls()` see each contact's
        // history; calls later than an event's scoring time are left out
        // when it is scored.
        let histories = match scorer.uses_history() {
            true => {
                let until = match scorer.as_of {
                    Some(time) => crate::time::unix_ms(time),
                    None => events.iter().map(|e| e.received_at).max().unwrap_or(0),
                };
                let keys = events
                    .iter()
                    .filter_map(|e| Some((e.contact_key.clone()?, None)))
                    .collect();
                match store.contact_histories(keys, until).await {
                    Ok(histories) => histories,
                    Err(e) => break Err(e),
                }
            }
            false => HashMap::new(),
        };
        if page_tx.send((index, events, histories)).await.is_err() {
            break Ok(());
        }
        index += 1;
    };
    drop(page_tx);
    // Whatever happened, the workers end once the pages run out.
    let joined = tokio::task::spawn_blocking(move || workers.into_iter().all(|w| w.join().is_ok()))
        .await
        .unwrap_or(false);
    let builder = done_rx
        .await
        .map_err(|_| BacktestError::Internal("the report thread stopped".into()))?;
    read?;
    if !joined {
        return Err(BacktestError::Internal("a scoring thread panicked".into()));
    }
    Ok(builder)
}

/// Scores one contact both ways.
struct Scorer {
    baseline: Baseline,
    candidate: Arc<RuleSet>,
    comparison: Option<Comparison>,
    /// Nanoseconds each candidate rule file took, summed over the timed contacts.
    rule_nanos: Vec<AtomicU64>,
    timed_contacts: AtomicU64,
    /// Contacts scored: the first and one in [`TIME_ONE_IN`] are timed.
    scored: AtomicU64,
    /// See [`Backtest::as_of`].
    as_of: Option<SystemTime>,
}

/// Reading the clock around every rule of every contact costs about 10 %
/// on this machine's clock (BENCHMARKS.md, "Session 9"); a sample of one
/// contact in 16 ranks the rule files as well.
const TIME_ONE_IN: u64 = 16;

/// What a backtest reads of a stored scored contact.
#[derive(Deserialize)]
struct StoredScore<'a> {
    score: Points,
    tier: String,
    #[serde(default)]
    disqualified: bool,
    #[serde(default)]
    reasons: Vec<Reason>,
    #[serde(default)]
    rules_version: String,
    #[serde(borrow)]
    contact: &'a RawValue,
}

impl Scorer {
    fn new(baseline: Baseline, candidate: Arc<RuleSet>) -> Self {
        let comparison = match &baseline {
            Baseline::Rules(rules) => Some(Comparison::new(rules.clone(), candidate.clone())),
            Baseline::Stored => None,
        };
        Self {
            rule_nanos: candidate.file_names().iter().map(|_| AtomicU64::new(0)).collect(),
            timed_contacts: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            baseline,
            candidate,
            comparison,
            as_of: None,
        }
    }

    /// Whether either side's rules read a contact's history.
    fn uses_history(&self) -> bool {
        self.candidate.uses_history()
            || matches!(&self.baseline, Baseline::Rules(rules) if rules.uses_history())
    }

    /// Both outcomes of a contact, baseline rules first.
    fn outcomes(&self, contact: &Contact, at: &ScoringContext) -> (Outcome, Outcome) {
        match &self.comparison {
            Some(comparison) => self.compare(comparison, contact, at),
            None => unreachable!("only with a baseline rule set"),
        }
    }

    /// Both outcomes, timing the candidate's rule files on a sample of contacts.
    fn compare(&self, comparison: &Comparison, contact: &Contact, at: &ScoringContext) -> (Outcome, Outcome) {
        if self.time_this_one() {
            self.timed(comparison.evaluate_timed(contact, at))
        } else {
            comparison.evaluate(contact, at)
        }
    }

    fn time_this_one(&self) -> bool {
        self.scored
            .fetch_add(1, AtomicOrdering::Relaxed)
            .is_multiple_of(TIME_ONE_IN)
    }

    /// Adds the candidate's rule times of one contact to the totals.
    fn timed(&self, (baseline, candidate, times): (Outcome, Outcome, Vec<Duration>)) -> (Outcome, Outcome) {
        self.add_times(times.into_iter());
        (baseline, candidate)
    }

    fn add_times(&self, times: impl Iterator<Item = Duration>) {
        for (total, elapsed) in self.rule_nanos.iter().zip(times) {
            total.fetch_add(elapsed.as_nanos() as u64, AtomicOrdering::Relaxed);
        }
        self.timed_contacts.fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// The `n` candidate rule files that took longest, slowest first.
    fn slowest_rules(&self, n: usize) -> Vec<RuleTime> {
        let contacts = self.timed_contacts.load(AtomicOrdering::Relaxed);
        if contacts == 0 {
            return Vec::new();
        }
        let totals: Vec<u64> = self
            .rule_nanos
            .iter()
            .map(|t| t.load(AtomicOrdering::Relaxed))
            .collect();
        let all: u64 = totals.iter().sum::<u64>().max(1);
        let mut times: Vec<(String, u64)> = self.candidate.file_names().into_iter().zip(totals).collect();
        times.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        times
            .into_iter()
            .take(n)
            .map(|(rule, nanos)| RuleTime {
                rule,
                mean_micros: (nanos as f64 / contacts as f64 / 10.0).round() / 100.0,
                share_percent: (nanos as f64 * 1000.0 / all as f64).round() / 10.0,
            })
            .collect()
    }

    fn compare_stored(&self, event: &StoredEvent, histories: &HashMap<String, ContactHistory>) -> Compared {
        let stored: StoredScore = match parse_json(&event.body) {
            Ok(stored) => stored,
            Err(e) => return unreadable(event, &format!("the stored event cannot be read: {e}")),
        };
        let contact = match Contact::from_raw(stored.contact) {
            Ok(contact) => contact,
            Err(e) => return unreadable(event, &format!("the stored contact {e}")),
        };
        // As of the event's receive time, what the engine knew then (SPEC
        // 12), unless the backtest scores as of one time.
        let now = self.as_of.unwrap_or_else(|| from_unix_ms(event.received_at));
        let history = event
            .contact_key
            .as_ref()
            .and_then(|key| histories.get(key))
            .map(|history| ContactHistory {
                first_seen: history.first_seen,
                calls: history
                    .calls
                    .iter()
                    .filter(|call| call.received_at <= crate::time::unix_ms(now))
                    .cloned()
                    .collect(),
            });
        let at = crate::rescore::context_of(history.as_ref(), now);
        match &self.comparison {
            Some(comparison) => {
                let (baseline, candidate) = self.compare(comparison, &contact, &at);
                compare(&contact, &baseline, &candidate)
            }
            None => {
                let candidate = if self.time_this_one() {
                    let (candidate, times) = self.candidate.evaluate_timed(&contact, &at);
                    // Only the rules that ran are timed: place each by its name.
                    let names = self.candidate.file_names();
                    self.add_times(names.iter().map(|name| {
                        times
                            .iter()
                            .find(|(rule, _)| rule == name)
                            .map_or(Duration::ZERO, |(_, elapsed)| *elapsed)
                    }));
                    candidate
                } else {
                    self.candidate.evaluate(&contact, &at)
                };
                let baseline = Outcome {
                    score: stored.score,
                    tier: stored.tier,
                    disqualified: stored.disqualified,
                    reasons: stored.reasons,
                    ..Outcome::default()
                };
                let mut compared = compare(&contact, &baseline, &candidate);
                compared.stored_version = Some(stored.rules_version);
                compared
            }
        }
    }
}

/// A stored event that cannot be scored: counted, listed as an error.
fn unreadable(event: &StoredEvent, error: &str) -> Compared {
    let side = Side {
        score: Points::Int(0),
        tier: String::new(),
        disqualified: false,
    };
    Compared {
        contact_id: Value::String(event.id.clone()),
        contact_key: None,
        baseline: side.clone(),
        candidate: side,
        reasons_added: Vec::new(),
        reasons_removed: Vec::new(),
        candidate_errors: vec![("(stored event)".to_owned(), error.to_owned())],
        stored_version: None,
    }
}

/// One contact's difference; reasons compared as (rule, points, reason).
fn compare(contact: &Contact, baseline: &Outcome, candidate: &Outcome) -> Compared {
    let mut removed: Vec<&Reason> = baseline.reasons.iter().collect();
    let mut added = Vec::new();
    for reason in &candidate.reasons {
        match removed.iter().position(|r| *r == reason) {
            Some(i) => {
                removed.remove(i);
            }
            None => added.push(reason.reason.clone()),
        }
    }
    Compared {
        contact_id: contact.id.clone(),
        contact_key: Some(contact.key.clone()),
        baseline: Side {
            score: baseline.score,
            tier: baseline.tier.clone(),
            disqualified: baseline.disqualified,
        },
        candidate: Side {
            score: candidate.score,
            tier: candidate.tier.clone(),
            disqualified: candidate.disqualified,
        },
        reasons_added: added,
        reasons_removed: removed.into_iter().map(|r| r.reason.clone()).collect(),
        candidate_errors: candidate
            .errors
            .iter()
            .map(|e| (e.rule.clone(), e.error.clone()))
            .collect(),
        stored_version: None,
    }
}

/// An `f64` ordered totally, for histograms and heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Total(f64);

impl Eq for Total {}

impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Total {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A changed contact's rank: tier changes first, then the largest score
/// change, then the earliest in the store.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    tier_changed: bool,
    size: Total,
    earlier: Reverse<i64>,
}

struct Ranked {
    rank: Rank,
    compared: Compared,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// Folds compared contacts into a report in bounded memory: counters, a
/// count per distinct score and delta (scores are sums of rule points, so
/// there are few), and the top changes in a heap of `top` entries.
struct ReportBuilder {
    top: usize,
    contacts: u64,
    tier_order: Vec<String>,
    baseline_tier_counts: HashMap<String, u64>,
    candidate_tier_counts: HashMap<String, u64>,
    transitions: HashMap<(String, String), u64>,
    deltas: BTreeMap<Total, u64>,
    delta_sum: f64,
    baseline_scores: BTreeMap<Total, u64>,
    candidate_scores: BTreeMap<Total, u64>,
    heap: BinaryHeap<Reverse<Ranked>>,
    errors: BTreeMap<String, (u64, String)>,
    baseline_version: Option<String>,
    stored_versions: Option<String>,
    candidate_version: String,
    /// Keep each contact's latest pair, to judge both sides by outcomes.
    join_outcomes: bool,
    /// Each contact's latest pair, and where it is by key.
    pairs: Vec<BacktestContact>,
    pair_index: HashMap<String, usize>,
    /// The tiers each side's rows follow: the baseline rule set's, or for
    /// stored scores the candidate's.
    baseline_tiers: Tiers,
    candidate_tiers: Tiers,
}

impl ReportBuilder {
    fn new(top: usize, scorer: &Scorer) -> Self {
        let mut tier_order = scorer.candidate.tiers().names();
        if let Baseline::Rules(rules) = &scorer.baseline {
            for name in rules.tiers().names() {
                if !tier_order.contains(&name) {
                    tier_order.push(name);
                }
            }
        }
        Self {
            top,
            contacts: 0,
            tier_order,
            baseline_tier_counts: HashMap::new(),
            candidate_tier_counts: HashMap::new(),
            transitions: HashMap::new(),
            deltas: BTreeMap::new(),
            delta_sum: 0.0,
            baseline_scores: BTreeMap::new(),
            candidate_scores: BTreeMap::new(),
            heap: BinaryHeap::new(),
            errors: BTreeMap::new(),
            baseline_version: match &scorer.baseline {
                Baseline::Rules(rules) => Some(rules.version().to_owned()),
                Baseline::Stored => None,
            },
            stored_versions: None,
            candidate_version: scorer.candidate.version().to_owned(),
            join_outcomes: false,
            pairs: Vec::new(),
            pair_index: HashMap::new(),
            baseline_tiers: match &scorer.baseline {
                Baseline::Rules(rules) => rules.tiers().clone(),
                Baseline::Stored => scorer.candidate.tiers().clone(),
            },
            candidate_tiers: scorer.candidate.tiers().clone(),
        }
    }

    /// Keeps the contact's latest pair (store order: a later event wins).
    fn keep_pair(&mut self, compared: &Compared) {
        let Some(key) = &compared.contact_key else { return };
        let ranked = |side: &Side| SideScore {
            score: side.score.as_f64(),
            tier: side.tier.clone(),
            disqualified: side.disqualified,
        };
        let pair = BacktestContact {
            contact_key: key.clone(),
            baseline: ranked(&compared.baseline),
            candidate: ranked(&compared.candidate),
        };
        match self.pair_index.get(key) {
            Some(&i) => self.pairs[i] = pair,
            None => {
                self.pair_index.insert(key.clone(), self.pairs.len());
                self.pairs.push(pair);
            }
        }
    }

    fn add(&mut self, seq: i64, compared: Compared) {
        if let Some(version) = &compared.stored_version {
            let version = version.clone();
            self.stored_versions = match self.stored_versions.take() {
                None => Some(version),
                Some(seen) if seen == version => Some(seen),
                Some(_) => Some("mixed".to_owned()),
            };
        }
        self.contacts += 1;
        if self.join_outcomes {
            self.keep_pair(&compared);
        }
        *self
            .baseline_tier_counts
            .entry(compared.baseline.tier.clone())
            .or_default() += 1;
        *self
            .candidate_tier_counts
            .entry(compared.candidate.tier.clone())
            .or_default() += 1;
        if compared.tier_changed() {
            *self
                .transitions
                .entry((compared.baseline.tier.clone(), compared.candidate.tier.clone()))
                .or_default() += 1;
        }
        let delta = compared.delta();
        self.delta_sum += delta;
        *self.deltas.entry(Total(delta)).or_default() += 1;
        *self
            .baseline_scores
            .entry(Total(compared.baseline.score.as_f64()))
            .or_default() += 1;
        *self
            .candidate_scores
            .entry(Total(compared.candidate.score.as_f64()))
            .or_default() += 1;
        for (rule, error) in &compared.candidate_errors {
            let entry = self
                .errors
                .entry(rule.clone())
                .or_insert_with(|| (0, error.clone()));
            entry.0 += 1;
        }
        if self.top == 0 || (delta == 0.0 && !compared.tier_changed()) {
            return;
        }
        let ranked = Ranked {
            rank: Rank {
                tier_changed: compared.tier_changed(),
                size: Total(delta.abs()),
                earlier: Reverse(seq),
            },
            compared,
        };
        if self.heap.len() < self.top {
            self.heap.push(Reverse(ranked));
        } else if self.heap.peek().is_some_and(|smallest| ranked > smallest.0) {
            self.heap.pop();
            self.heap.push(Reverse(ranked));
        }
    }

    /// The report; with `outcomes` (the window's rows), both sides judged
    /// by them.
    fn finish(self, since: Option<String>, outcomes: Option<Vec<ContactOutcome>>) -> Report {
        let outcomes = outcomes.map(|rows| {
            outcomes::against_outcomes(&self.pairs, &rows, &self.baseline_tiers, &self.candidate_tiers)
        });
        let tier_counts = |counts: &HashMap<String, u64>| {
            let mut map = serde_json::Map::new();
            for name in &self.tier_order {
                map.insert(name.clone(), counts.get(name).copied().unwrap_or(0).into());
            }
            let mut others: Vec<_> = counts
                .iter()
                .filter(|(name, _)| !self.tier_order.contains(name))
                .collect();
            others.sort();
            for (name, n) in others {
                map.insert(name.clone(), (*n).into());
            }
            map
        };
        let mut transitions: Vec<Transition> = self
            .transitions
            .iter()
            .map(|((from, to), count)| Transition {
                from: from.clone(),
                to: to.clone(),
                count: *count,
            })
            .collect();
        transitions.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.from.cmp(&b.from))
                .then_with(|| a.to.cmp(&b.to))
        });
        let mut changed: Vec<Ranked> = self.heap.into_iter().map(|r| r.0).collect();
        changed.sort_by(|a, b| b.cmp(a));
        let distribution = |scores: &BTreeMap<Total, u64>| {
            scores
                .iter()
                .map(|(score, count)| ScoreCount {
                    score: number(score.0),
                    count: *count,
                })
                .collect()
        };
        Report {
            contacts: self.contacts,
            since,
            baseline: VersionInfo {
                rules_version: self.baseline_version.or(self.stored_versions).unwrap_or_default(),
            },
            candidate: VersionInfo {
                rules_version: self.candidate_version,
            },
            tiers: SideBySide {
                baseline: tier_counts(&self.baseline_tier_counts),
                candidate: tier_counts(&self.candidate_tier_counts),
            },
            transitions,
            score_delta: delta_stats(&self.deltas, self.delta_sum, self.contacts),
            changed: changed
                .into_iter()
                .map(|r| Changed {
                    contact_id: r.compared.contact_id,
                    baseline: r.compared.baseline,
                    candidate: r.compared.candidate,
                    reasons_added: r.compared.reasons_added,
                    reasons_removed: r.compared.reasons_removed,
                })
                .collect(),
            errors: self
                .errors
                .into_iter()
                .map(|(rule, (count, example))| ErrorGroup { rule, count, example })
                .collect(),
            distribution: SideBySide {
                baseline: distribution(&self.baseline_scores),
                candidate: distribution(&self.candidate_scores),
            },
            duration_ms: 0,
            results: None,
            slowest_rules: Vec::new(),
            outcomes,
        }
    }
}

/// Mean, nearest-rank p50 and p90, min and max of the score deltas.
fn delta_stats(deltas: &BTreeMap<Total, u64>, sum: f64, n: u64) -> DeltaStats {
    let quantile = |q: f64| -> f64 {
        let rank = ((q * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (delta, count) in deltas {
            seen += count;
            if seen >= rank {
                return delta.0;
            }
        }
        0.0
    };
    let mean = if n == 0 { 0.0 } else { sum / n as f64 };
    DeltaStats {
        mean: number((mean * 1000.0).round() / 1000.0),
        p50: number(quantile(0.5)),
        p90: number(quantile(0.9)),
        min: number(deltas.keys().next().map_or(0.0, |d| d.0)),
        max: number(deltas.keys().next_back().map_or(0.0, |d| d.0)),
    }
}

/// A JSON number: an integer when the value is whole.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

/// How long a backtest is expected to take still, for `Retry-After`.
pub fn remaining(progress: &Progress, elapsed: Duration) -> Duration {
    let (done, total) = (progress.done(), progress.total());
    if done == 0 || total <= done {
        return Duration::from_secs(1);
    }
    let per_contact = elapsed.as_secs_f64() / done as f64;
    Duration::from_secs_f64((per_contact * (total - done) as f64).clamp(1.0, 3600.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut deltas = BTreeMap::new();
        for (d, n) in [(-10.0, 1), (0.0, 6), (5.0, 2), (25.0, 1)] {
            deltas.insert(Total(d), n);
        }
        let stats = delta_stats(&deltas, -10.0 + 10.0 + 25.0, 10);
        assert_eq!(stats.mean, Value::from(2.5));
        assert_eq!(stats.p50, Value::from(0));
        assert_eq!(stats.p90, Value::from(5));
        assert_eq!(stats.min, Value::from(-10));
        assert_eq!(stats.max, Value::from(25));
    }

    /// SPEC 11: the backtest keeps each contact's latest pair (a later
    /// event wins; an unreadable event has no key) and judges both sides
    /// by the outcome rows of the window.
    #[test]
    fn outcomes_judge_each_contacts_latest_pair() {
        let tiers = "[[tiers]]\nname = \"hot\"\nmin_score = 50\n[[tiers]]\nname = \"cold\"\n";
        let sources = crate::score::RuleSources {
            files: vec![("10-a.rhai".into(), "add(1, \"a\");".into())],
            tiers: Some(tiers.into()),
        };
        let rules = Arc::new(RuleSet::compile(sources, &crate::score::Limits::default()).unwrap());
        let scorer = Scorer::new(Baseline::Rules(rules.clone()), rules);
        let mut builder = ReportBuilder::new(0, &scorer);
        builder.join_outcomes = true;
        let side = |score: i64, tier: &str| Side {
            score: Points::Int(score),
            tier: tier.into(),
            disqualified: false,
        };
        let pair = |key: &str, baseline: Side, candidate: Side| Compared {
            contact_id: Value::from(key.parse::<i64>().unwrap()),
            contact_key: Some(key.into()),
            baseline,
            candidate,
            reasons_added: Vec::new(),
            reasons_removed: Vec::new(),
            candidate_errors: Vec::new(),
            stored_version: None,
        };
        builder.add(1, pair("1", side(10, "cold"), side(60, "hot")));
        builder.add(2, pair("2", side(70, "hot"), side(10, "cold")));
        builder.add(3, pair("3", side(20, "cold"), side(20, "cold")));
        // Contact 1 again: its latest event counts.
        builder.add(4, pair("1", side(60, "hot"), side(15, "cold")));
        let mut unreadable = pair("4", side(99, "hot"), side(99, "hot"));
        unreadable.contact_key = None;
        builder.add(5, unreadable);
        let row = |key: &str, converted: bool| ContactOutcome {
            contact_key: key.into(),
            first_seen: 0,
            score: 0.0,
            tier: String::new(),
            disqualified: false,
            reasons: Vec::new(),
            tags: Vec::new(),
            disqualified_by: Vec::new(),
            booked: converted,
            with_outcome: converted,
            converted,
            revenue: if converted { 100.0 } else { 0.0 },
        };
        let rows = vec![row("1", true), row("2", false), row("3", false), row("4", true)];
        let report = builder.finish(Some("s".into()), Some(rows));
        let outcomes = report.outcomes.expect("outcomes");
        let counts = |side: &outcomes::SideOutcomes| -> Vec<(String, u64, u64)> {
            side.tiers
                .iter()
                .map(|t| (t.tier.clone(), t.contacts, t.sales))
                .collect()
        };
        let expected = |hot: (u64, u64), cold: (u64, u64)| {
            vec![
                ("hot".to_owned(), hot.0, hot.1),
                ("cold".to_owned(), cold.0, cold.1),
                ("disqualified".to_owned(), 0, 0),
            ]
        };
        assert_eq!(counts(&outcomes.baseline), expected((2, 1), (1, 0)));
        assert_eq!(counts(&outcomes.candidate), expected((0, 0), (3, 1)));
        // k = 2 (the baseline's hot): baseline 2 (70), 1 (60): one sale;
        // candidate 3 (20), 1 (15): one sale too.
        assert_eq!(outcomes.baseline.equal_volume.k, 2);
        assert_eq!(outcomes.baseline.equal_volume.sales, 1);
        assert_eq!(outcomes.candidate.equal_volume.sales, 1);
        assert_eq!(outcomes.verdict(), outcomes::Verdict::Same);
        // Given contacts have no outcomes.
        let builder = ReportBuilder::new(0, &scorer);
        assert!(builder.finish(None, None).outcomes.is_none());
    }

    /// The nice value of the calling thread, from /proc (Linux).
    #[cfg(target_os = "linux")]
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name (which is in parentheses): the
        // 19th field of the line is the nice value.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn background_threads_run_at_the_lowest_priority_and_others_do_not() {
        let before = own_nice();
        let lowered = std::thread::spawn(|| (lower_current_thread_priority(), own_nice()))
            .join()
            .unwrap();
        assert_eq!(lowered, (true, 19));
        // Only that thread: niceness is per thread on Linux.
        assert_eq!(own_nice(), before);
    }
}
