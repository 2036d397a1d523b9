//! Scoring: a rules folder compiled into an immutable [`RuleSet`], and the
//! scored contact of SPEC section 3. Pure library code: no I/O beyond reading
//! the rules folder, no HTTP types.

pub(crate) mod budget;
pub mod calls;
pub mod context;
pub mod helpers;
mod native;
pub mod pool;
pub mod rfc3339;
pub mod runtime;
pub mod tiers;
pub mod trace;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{AST, Caches, Dynamic, Engine, ImmutableString, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::payload::Contact;
use budget::Budget;
pub use calls::HistoryUse;
pub use context::{CallStatus, CallSummary, MAX_CALLS, ScoringContext};
use runtime::{CachePool, ContactUse, RunGuard, describe_runtime_error};
pub use runtime::{Limits, Points};
pub use tiers::Tiers;
pub use trace::{Lookup, RuleTrace, Status};

/// The name of the tiers file inside a rules folder.
pub const TIERS_FILE: &str = "tiers.toml";

/// One problem that keeps a rule set from loading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every problem found while loading a rule set.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct LoadError(pub Vec<CompileError>);

/// One compiled rule file.
struct Rule {
    name: Arc<str>,
    /// The file's text: a rule with the same name and text in another set
    /// (same limits) gives the same result (see [`Comparison`]).
    text: Arc<str>,
    /// The same name, as the AST's source for Rhai.
    source: ImmutableString,
    ast: AST,
    /// The rule translated for native evaluation (see native.rs), when it
    /// can be; Rhai runs it otherwise, or when the native run gives up.
    native: Option<native::NativeRule>,
    /// Whether it reads the contact's calls or first receive time.
    history: HistoryUse,
}

/// The source of a rule set: rule files by name, and `tiers.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSources {
    pub files: Vec<(String, String)>,
    pub tiers: Option<String>,
}

impl RuleSources {
    /// Reads every `*.rhai` file directly inside `dir` (hidden files, such as
    /// editors' swap files, are skipped) and `tiers.toml`.
    pub fn read_dir(dir: &Path) -> Result<Self, LoadError> {
        if !dir.is_dir() {
            return Err(LoadError(vec![CompileError {
                file: dir.display().to_string(),
                line: 0,
                column: 0,
                message: "the rules folder does not exist or is not a folder".into(),
            }]));
        }
        let io_error = |file: &Path, e: std::io::Error| {
            LoadError(vec![CompileError {
                file: file.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }])
        };
        let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_rule_file_name(&name) || !entry.path().is_file() {
                continue;
            }
            let bytes = std::fs::read(entry.path()).map_err(|e| io_error(&entry.path(), e))?;
            files.push((name, utf8_text(&entry.path(), bytes)?));
        }
        let tiers_path = dir.join(TIERS_FILE);
        let tiers = match std::fs::read(&tiers_path) {
            Ok(bytes) => Some(utf8_text(&tiers_path, bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&tiers_path, e)),
        };
        Ok(Self { files, tiers })
    }

    /// The `rules_version` a rule set compiled from these sources has: a
    /// reload can tell that nothing changed without compiling.
    pub fn version(&self) -> String {
        let mut sorted = self.clone();
        sorted.files.sort_by(|a, b| a.0.cmp(&b.0));
        version_of(&sorted)
    }
}

/// A rule file's text; bytes that are not UTF-8 are reported at their line
/// and column like any other compile error.
fn utf8_text(file: &Path, bytes: Vec<u8>) -> Result<String, LoadError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..valid]);
        let (line, column) = tiers::line_column(&text, valid);
        LoadError(vec![CompileError {
            file: file.display().to_string(),
            line,
            column,
            message: "not valid UTF-8 text (rule files and tiers.toml are UTF-8)".into(),
        }])
    })
}

/// Whether a file name is a rule file of a rules folder.
pub fn is_rule_file_name(name: &str) -> bool {
    name.ends_with(".rhai") && !name.starts_with('.') && name.len() > ".rhai".len()
}

/// A compiled, immutable rule set. Share it behind an `Arc`: scoring takes
/// `&self` and is safe from any number of threads at once.
pub struct RuleSet {
    engine: Engine,
    rules: Vec<Rule>,
    tiers: Tiers,
    /// The text `tiers` was parsed from (backtests reuse the loaded tiers).
    tiers_source: Option<Arc<str>>,
    version: String,
    limits: Limits,
    /// What the rules read of `contact`: decides how much of each contact is
    /// converted into a Rhai map.
    contact_use: ContactUse,
    caches: CachePool,
    /// Whether rules run natively where they can (on unless switched off
    /// with [`RuleSet::interpreted_only`]).
    native: bool,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("files", &self.file_names())
            .field("version", &self.version)
            .finish()
    }
}

impl RuleSet {
    /// Loads and compiles a rules folder.
    pub fn load(dir: &Path, limits: &Limits) -> Result<Self, LoadError> {
        Self::compile(RuleSources::read_dir(dir)?, limits)
    }

    /// Compiles a rule set from its sources; reports every error in it.
    pub fn compile(mut sources: RuleSources, limits: &Limits) -> Result<Self, LoadError> {
        sources.files.sort_by(|a, b| a.0.cmp(&b.0));
        let engine = runtime::build_engine(limits);
        let mut compile_scope = Scope::new();
        // Declared for strict-variables checking; never a constant here so
        // that the optimizer cannot fold a placeholder into the rules.
        compile_scope.push_dynamic("contact", Dynamic::UNIT);
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        let mut contact_use = ContactUse::None;
        for (name, text) in &sources.files {
            if !is_rule_file_name(name) || name.contains(['/', '\\']) {
                errors.push(CompileError {
                    file: name.clone(),
                    line: 0,
                    column: 0,
                    message:
                        "a rule file name must end in .rhai and name a file directly in the rules folder"
                            .into(),
                });
                continue;
            }
            match engine.compile_with_scope(&compile_scope, text) {
                Ok(mut ast) => {
                    ast.set_source(name.as_str());
                    contact_use = contact_use.union(ContactUse::of(&ast));
                    rules.push(Rule {
                        name: Arc::from(name.as_str()),
                        text: Arc::from(text.as_str()),
                        source: name.as_str().into(),
                        native: native::NativeRule::translate(&ast),
                        history: calls::history_use(&ast),
                        ast,
                    });
                }
                Err(e) => errors.push(CompileError {
                    file: name.clone(),
                    line: e.1.line().unwrap_or(0),
                    column: e.1.position().unwrap_or(0),
                    message: e.0.to_string(),
                }),
            }
        }
        let tiers = match &sources.tiers {
            None => Tiers::default(),
            Some(text) => Tiers::parse(text).unwrap_or_else(|e| {
                errors.push(CompileError {
                    file: TIERS_FILE.into(),
                    line: e.line,
                    column: e.column,
                    message: e.message,
                });
                Tiers::default()
            }),
        };
        if !errors.is_empty() {
            return Err(LoadError(errors));
        }
        Ok(Self {
            engine,
            rules,
            tiers,
            tiers_source: sources.tiers.as_deref().map(Arc::from),
            version: version_of(&sources),
            limits: limits.clone(),
            contact_use,
            caches: CachePool::default(),
            native: true,
        })
    }

    /// The same rule set with every rule run by Rhai alone: the reference
    /// the native evaluation is compared with (tests, benchmarks).
    pub fn interpreted_only(mut self) -> Self {
        self.native = false;
        self
    }

    /// How many rule files run natively (where they do not give up).
    pub fn native_rule_count(&self) -> usize {
        if !self.native {
            return 0;
        }
        self.rules.iter().filter(|r| r.native.is_some()).count()
    }

    /// Hex SHA-256 of the rule set's file names and contents.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn file_names(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.name.to_string()).collect()
    }

    /// The rule files' names and texts, in order.
    pub fn rule_texts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules.iter().map(|r| (&*r.name, &*r.text))
    }

    /// Every call of the rule API with a constant argument and every
    /// `add`/`disqualify`/`tag` call, by file and line (calls.rs).
    pub fn calls(&self) -> Vec<calls::RuleCall> {
        self.rules
            .iter()
            .flat_map(|rule| calls::of(&rule.name, &rule.ast))
            .collect()
    }

    /// Whether some rule reads the contact's history, `calls()` or
    /// `first_seen()` (SPEC 12), decided from the rules' code when they
    /// compiled: when none does, a caller need not look the history up —
    /// [`ScoringContext::at`] gives the same results.
    pub fn uses_history(&self) -> bool {
        self.history_use().any()
    }

    /// What the rule set reads of the contact's history.
    pub fn history_use(&self) -> HistoryUse {
        self.rules
            .iter()
            .fold(HistoryUse::default(), |all, rule| all.union(rule.history))
    }

    /// What each rule file reads of the contact's history, in order.
    pub fn history_use_by_rule(&self) -> Vec<(&str, HistoryUse)> {
        self.rules.iter().map(|r| (&*r.name, r.history)).collect()
    }

    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// The `tiers.toml` text this set was compiled with, if it had one.
    pub fn tiers_source(&self) -> Option<&str> {
        self.tiers_source.as_deref()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Scores one contact as of `at` (its `now` is the result's
    /// `scored_at`). `event_id` is the stored event's id (`None` in a dry
    /// run). Never fails: rule errors are reported in the result.
    pub fn score(&self, contact: &Contact, event_id: Option<String>, at: &ScoringContext) -> ScoredContact {
        self.scored_contact(contact, self.evaluate(contact, at), event_id, at)
    }

    /// The scored contact of an outcome this rule set produced as of `at`.
    pub fn scored_contact(
        &self,
        contact: &Contact,
        outcome: Outcome,
        event_id: Option<String>,
        at: &ScoringContext,
    ) -> ScoredContact {
        ScoredContact {
            kind: ScoredContact::TYPE.to_owned(),
            id: event_id,
            contact_id: contact.id.clone(),
            score: outcome.score,
            tier: outcome.tier,
            disqualified: outcome.disqualified,
            reasons: outcome.reasons,
            disqualifications: outcome.disqualifications,
            tags: outcome.tags,
            errors: outcome.errors,
            rules_version: self.version.clone(),
            // As `now()` writes it.
            scored_at: rfc3339::format_millis(rfc3339::unix_millis(at.now)),
            contact: contact.raw.clone(),
            trace: None,
        }
    }

    /// Runs every rule against a contact, as of `at`.
    pub fn evaluate(&self, contact: &Contact, at: &ScoringContext) -> Outcome {
        self.outcome(self.run_rules(contact, at, |_| None, Probe::OFF).0)
    }

    /// [`RuleSet::evaluate`], with the time each rule file took (for the
    /// time-per-rule histogram; two readings of the monotonic clock per rule).
    pub fn evaluate_timed(&self, contact: &Contact, at: &ScoringContext) -> (Outcome, Vec<(&str, Duration)>) {
        let (runs, probes) = self.run_rules(contact, at, |_| None, Probe::TIME);
        let times = self
            .rules
            .iter()
            .zip(&probes)
            .filter(|(_, probe)| probe.ran)
            .map(|(rule, probe)| (&*rule.name, probe.elapsed))
            .collect();
        (self.outcome(runs), times)
    }

    /// [`RuleSet::evaluate`] with its trace (SPEC 13): one entry per rule
    /// file, in order. Both evaluation paths record the same lookups (the
    /// rule API records them, trace.rs), so the trace is exact whichever runs.
    pub fn evaluate_traced(&self, contact: &Contact, at: &ScoringContext) -> (Outcome, Vec<RuleTrace>) {
        let probe = Probe {
            time: true,
            lookups: true,
            lines: false,
        };
        let (runs, probes) = self.run_rules(contact, at, |_| None, probe);
        let traces = self.traces(&runs, probes.into_iter().map(|p| (p.ran, p.elapsed, p.lookups)));
        (self.outcome(runs), traces)
    }

    /// The scored contact with its trace (`score --trace`, `POST /score?trace=true`).
    pub fn score_traced(&self, contact: &Contact, at: &ScoringContext) -> ScoredContact {
        let (outcome, trace) = self.evaluate_traced(contact, at);
        let mut scored = self.scored_contact(contact, outcome, None, at);
        scored.trace = Some(trace);
        scored
    }

    /// What each rule did to a contact and the lines of the `add`,
    /// `disqualify` and `tag` calls that ran (`test --coverage`). Lines are
    /// known only where Rhai runs a rule: coverage uses a rule set made
    /// with [`RuleSet::interpreted_only`], which gives the same results.
    pub fn evaluate_covered(
        &self,
        contact: &Contact,
        at: &ScoringContext,
    ) -> (Outcome, Vec<(Status, Vec<usize>)>) {
        let probe = Probe {
            time: false,
            lookups: false,
            lines: true,
        };
        let (runs, probes) = self.run_rules(contact, at, |_| None, probe);
        let lines: Vec<Vec<usize>> = probes.iter().map(|p| p.lines.clone()).collect();
        let traces = self.traces(&runs, probes.into_iter().map(|p| (p.ran, p.elapsed, Vec::new())));
        let covered = traces.into_iter().map(|t| t.status).zip(lines).collect();
        (self.outcome(runs), covered)
    }

    /// Each rule's trace entry from its run and what was recorded.
    fn traces(
        &self,
        runs: &[RuleRun],
        probes: impl Iterator<Item = (bool, Duration, Vec<Lookup>)>,
    ) -> Vec<RuleTrace> {
        self.rules
            .iter()
            .zip(runs)
            .zip(probes)
            .map(|((rule, run), (ran, elapsed, lookups))| {
                let mut points = Total::default();
                let status = match run {
                    Err(_) if !ran => Status::NotRun,
                    Err(_) => Status::Error,
                    Ok(effects) => {
                        effects.reasons.iter().for_each(|(p, _)| points.add(*p));
                        if !effects.disqualifications.is_empty() {
                            Status::Disqualified
                        } else if !effects.reasons.is_empty() {
                            Status::Added
                        } else if !effects.tags.is_empty() {
                            Status::Tagged
                        } else {
                            Status::NoEffect
                        }
                    }
                };
                RuleTrace {
                    rule: rule.name.to_string(),
                    status,
                    points: points.points(),
                    micros: trace::micros(elapsed),
                    lookups,
                }
            })
            .collect()
    }

    /// The outcome when every rule runs natively to the end; `None` when a
    /// rule cannot (not translated, or it gave up). For tests that check the
    /// native path itself, not only the combined result.
    #[doc(hidden)]
    pub fn evaluate_native_only(&self, contact: &Contact, at: &ScoringContext) -> Option<Outcome> {
        self.evaluate_native_only_traced(contact, at)
            .map(|(outcome, _)| outcome)
    }

    /// [`RuleSet::evaluate_native_only`] with the trace (times left at 0):
    /// tests compare it with the trace of Rhai alone.
    #[doc(hidden)]
    pub fn evaluate_native_only_traced(
        &self,
        contact: &Contact,
        at: &ScoringContext,
    ) -> Option<(Outcome, Vec<RuleTrace>)> {
        let budget = Budget::start(&self.limits);
        let run = RunGuard::install(contact.tree.clone(), contact.id.clone(), budget, at);
        run.record_lookups();
        let mut native_run = native::Run::new(contact.root(), &self.limits);
        let mut runs = Vec::with_capacity(self.rules.len());
        let mut lookups = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            run.begin_rule(&rule.name);
            native_run.run(rule.native.as_ref()?).ok()?;
            runs.push(Ok(run.take_effects()));
            lookups.push((true, Duration::ZERO, run.take_lookups()));
        }
        let traces = self.traces(&runs, lookups.into_iter());
        Some((self.outcome(runs), traces))
    }

    /// Runs the rules against a contact, except those `reused` already has
    /// a result for (by rule index). With a probe on, also what each rule
    /// took and recorded (one entry per rule; none when the probe is off).
    fn run_rules(
        &self,
        contact: &Contact,
        at: &ScoringContext,
        mut reused: impl FnMut(usize) -> Option<RuleRun>,
        probe: Probe,
    ) -> (Vec<RuleRun>, Vec<RuleProbe>) {
        let mut runs: Vec<Option<RuleRun>> = (0..self.rules.len()).map(&mut reused).collect();
        let mut probes = Vec::new();
        if probe.any() {
            probes.resize_with(self.rules.len(), RuleProbe::default);
        }
        if runs.iter().all(Option::is_some) {
            return (runs.into_iter().flatten().collect(), probes);
        }
        let budget = Budget::start(&self.limits);
        let run = RunGuard::install(contact.tree.clone(), contact.id.clone(), budget, at);
        if probe.lookups {
            run.record_lookups();
        }
        if probe.lines {
            run.record_effect_lines();
        }
        let mut native_run = native::Run::new(contact.root(), &self.limits);
        // Rhai's scope and caches only when a rule needs Rhai.
        let mut rhai: Option<(Scope, usize, Vec<Caches>)> = None;
        for ((index, rule), slot) in self.rules.iter().enumerate().zip(&mut runs) {
            if slot.is_some() {
                continue;
            }
            if let Some(why) = run.exhausted() {
                *slot = Some(Err(format!("not run: {}", why.describe(&self.limits))));
                continue;
            }
            let started = probe.time.then(Instant::now);
            run.begin_rule(&rule.name);
            if let Some(native) = rule.native.as_ref().filter(|_| self.native) {
                if native_run.run(native).is_ok() {
                    *slot = Some(Ok(run.take_effects()));
                    if probe.any() {
                        probes[index] = RuleProbe::of(&run, started);
                    }
                    continue;
                }
                run.begin_rule(&rule.name); // gave up: Rhai runs it afresh
            }
            let (scope, base, caches) = rhai.get_or_insert_with(|| {
                let mut scope = Scope::new();
                if let Some(value) = self.contact_use.contact(contact.root()) {
                    scope.push_constant_dynamic("contact", value);
                }
                let base = scope.len();
                (scope, base, self.caches.take(self.rules.len()))
            });
            let result = runtime::run_rule(&self.engine, scope, &rule.ast, &rule.source, &mut caches[index]);
            scope.rewind(*base);
            let effects = run.take_effects();
            *slot = Some(match result {
                Err(error) => Err(describe_runtime_error(&error, &self.limits)),
                Ok(()) => Ok(effects),
            });
            if probe.any() {
                probes[index] = RuleProbe::of(&run, started);
            }
        }
        if let Some((_, _, caches)) = rhai {
            self.caches.give_back(caches);
        }
        (runs.into_iter().flatten().collect(), probes)
    }

    /// The outcome of a contact from what each rule did, in rule order.
    fn outcome(&self, runs: Vec<RuleRun>) -> Outcome {
        let mut out = Outcome::default();
        let mut total = Total::default();
        for (rule, run) in self.rules.iter().zip(runs) {
            match run {
                Err(error) => out.errors.push(RuleFailure {
                    rule: String::from(&*rule.name),
                    error,
                }),
                Ok(effects) => {
                    for (points, reason) in effects.reasons {
                        total.add(points);
                        out.reasons.push(Reason {
                            rule: String::from(&*rule.name),
                            points,
                            reason,
                        });
                    }
                    for reason in effects.disqualifications {
                        out.disqualifications.push(Disqualification {
                            rule: String::from(&*rule.name),
                            reason,
                        });
                    }
                    for tag in effects.tags {
                        if !out.tags.contains(&tag) {
                            out.tags.push(tag);
                        }
                    }
                }
            }
        }
        out.score = self.tiers.clamp(total.points());
        out.disqualified = !out.disqualifications.is_empty();
        out.tier = if out.disqualified {
            self.tiers.disqualified_tier.clone()
        } else {
            self.tiers.tier_for(out.score).to_owned()
        };
        out
    }
}

/// What one rule did to one contact: its effects, or why it failed.
type RuleRun = Result<runtime::RuleEffects, String>;

/// What a run records besides the outcome. Off costs one test per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    time: bool,
    lookups: bool,
    lines: bool,
}

impl Probe {
    const OFF: Self = Self {
        time: false,
        lookups: false,
        lines: false,
    };
    const TIME: Self = Self {
        time: true,
        lookups: false,
        lines: false,
    };

    fn any(self) -> bool {
        self.time || self.lookups || self.lines
    }
}

/// What a probe recorded of one rule.
#[derive(Debug, Default)]
struct RuleProbe {
    /// False for a rule the budget stopped before it ran (or one reused).
    ran: bool,
    elapsed: Duration,
    lookups: Vec<Lookup>,
    lines: Vec<usize>,
}

impl RuleProbe {
    fn of(run: &RunGuard, started: Option<Instant>) -> Self {
        Self {
            ran: true,
            elapsed: started.map_or(Duration::ZERO, |s| s.elapsed()),
            lookups: run.take_lookups(),
            lines: run.take_effect_lines(),
        }
    }
}

/// Two rule sets scoring the same contacts side by side (a backtest).
///
/// Why: a candidate usually changes one or two files of a set. Each rule
/// file runs with a fresh scope and reads only the contact and the scoring
/// context (the same for both sets), so a file with the same name and text
/// in both sets (compiled with the same limits) gives the same result: it
/// runs once per contact and counts for both.
pub struct Comparison {
    baseline: Arc<RuleSet>,
    candidate: Arc<RuleSet>,
    /// For each candidate rule, the index of the identical baseline rule.
    shared: Vec<Option<usize>>,
}

impl Comparison {
    pub fn new(baseline: Arc<RuleSet>, candidate: Arc<RuleSet>) -> Self {
        let shared = candidate
            .rules
            .iter()
            .map(|rule| {
                (baseline.limits == candidate.limits)
                    .then(|| {
                        baseline
                            .rules
                            .iter()
                            .position(|b| b.name == rule.name && b.text == rule.text)
                    })
                    .flatten()
            })
            .collect();
        Self {
            baseline,
            candidate,
            shared,
        }
    }

    pub fn baseline(&self) -> &Arc<RuleSet> {
        &self.baseline
    }

    pub fn candidate(&self) -> &Arc<RuleSet> {
        &self.candidate
    }

    /// How many candidate rules are shared with the baseline.
    pub fn shared_rules(&self) -> usize {
        self.shared.iter().flatten().count()
    }

    /// The baseline's and the candidate's outcome for one contact as of
    /// `at`: the same as `baseline.evaluate` and `candidate.evaluate`, for
    /// less work.
    pub fn evaluate(&self, contact: &Contact, at: &ScoringContext) -> (Outcome, Outcome) {
        let (baseline, candidate, _) = self.evaluate_with(contact, at, Probe::OFF);
        (baseline, candidate)
    }

    /// [`Comparison::evaluate`], with the time each candidate rule file
    /// took (a shared rule's time is its baseline run's): the backtest's
    /// slowest rule files.
    pub fn evaluate_timed(
        &self,
        contact: &Contact,
        at: &ScoringContext,
    ) -> (Outcome, Outcome, Vec<Duration>) {
        self.evaluate_with(contact, at, Probe::TIME)
    }

    fn evaluate_with(
        &self,
        contact: &Contact,
        at: &ScoringContext,
        probe: Probe,
    ) -> (Outcome, Outcome, Vec<Duration>) {
        let (baseline_runs, baseline_probes) = self.baseline.run_rules(contact, at, |_| None, probe);
        let (candidate_runs, candidate_probes) = self.candidate.run_rules(
            contact,
            at,
            |i| self.shared[i].map(|b| baseline_runs[b].clone()),
            probe,
        );
        let times = candidate_probes
            .iter()
            .zip(&self.shared)
            .map(|(own, shared)| match shared {
                Some(b) => baseline_probes.get(*b).map_or(Duration::ZERO, |p| p.elapsed),
                None => own.elapsed,
            })
            .collect();
        (
            self.baseline.outcome(baseline_runs),
            self.candidate.outcome(candidate_runs),
            times,
        )
    }
}

/// Sums points in any order to the same result (SPEC 1: points add up to
/// the score). Integer points are summed exactly (in 128 bits, which no
/// number of 64-bit points can overflow); the score stays an integer while
/// it fits in 64 bits and every contribution is one, else it is the float
/// nearest the sum. A float sum saturates instead of becoming infinite, so
/// the score is always a finite JSON number.
#[derive(Default)]
struct Total {
    int: i128,
    float: Option<f64>,
}

impl Total {
    fn add(&mut self, points: Points) {
        self.float = match (points, self.float) {
            (Points::Int(i), None) => {
                self.int = self.int.saturating_add(i128::from(i));
                None
            }
            (p, None) => Some(self.int as f64 + p.as_f64()),
            (p, Some(f)) => Some(f + p.as_f64()),
        }
        .map(|f| f.clamp(f64::MIN, f64::MAX));
    }

    fn points(&self) -> Points {
        match (self.float, i64::try_from(self.int)) {
            (Some(f), _) => Points::Float(f),
            (None, Ok(i)) => Points::Int(i),
            (None, Err(_)) => Points::Float(self.int as f64),
        }
    }
}

fn version_of(sources: &RuleSources) -> String {
    let mut hasher = Sha256::new();
    for (name, text) in &sources.files {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    if let Some(tiers) = &sources.tiers {
        hasher.update(TIERS_FILE.as_bytes());
        hasher.update([0]);
        hasher.update(tiers.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// What the rules made of one contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub score: Points,
    pub tier: String,
    pub disqualified: bool,
    pub reasons: Vec<Reason>,
    pub disqualifications: Vec<Disqualification>,
    pub tags: Vec<String>,
    pub errors: Vec<RuleFailure>,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            score: Points::Int(0),
            tier: String::new(),
            disqualified: false,
            reasons: Vec::new(),
            disqualifications: Vec::new(),
            tags: Vec::new(),
            errors: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub rule: String,
    pub points: Points,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disqualification {
    pub rule: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFailure {
    pub rule: String,
    pub error: String,
}

/// The scored contact of SPEC section 3, as forwarded downstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoredContact {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
    pub contact_id: Value,
    pub score: Points,
    pub tier: String,
    pub disqualified: bool,
    pub reasons: Vec<Reason>,
    pub disqualifications: Vec<Disqualification>,
    pub tags: Vec<String>,
    pub errors: Vec<RuleFailure>,
    pub rules_version: String,
    pub scored_at: String,
    pub contact: crate::payload::RawJson,
    /// SPEC 13: per rule file, what it did and looked up; only when asked
    /// for (`score --trace`, `POST /score?trace=true`), never stored or forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<RuleTrace>>,
}

impl ScoredContact {
    pub const TYPE: &'static str = "contact.scored";
}

impl Serialize for Points {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Points::Int(i) => s.serialize_i64(i),
            Points::Float(f) => s.serialize_f64(f),
        }
    }
}

impl<'de> Deserialize<'de> for Points {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        Ok(match n.as_i64() {
            Some(i) => Points::Int(i),
            None => Points::Float(n.as_f64().unwrap_or(0.0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::payload::parse_body;

    /// The example rules (`rules/`) plus a rule that burns a few
    /// milliseconds of CPU for every contact: far inside the budget, but
    /// long enough that a thread kept waiting for a core runs past it in
    /// wall-clock time.
    fn rules_with_a_burner(limits: &Limits) -> RuleSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut sources = RuleSources::read_dir(&dir).expect("the example rules");
        sources.files.push((
            "95-burn.rhai".into(),
            "let i = 0; let sum = 0; while i < 3000 { sum += i % 7; i += 1; } if sum < 0 { add(1, \"never\") }"
                .into(),
        ));
        RuleSet::compile(sources, limits).expect("the rules compile")
    }

    fn mix(n: usize) -> Vec<Contact> {
        let text = include_str!("../../benches/data/contacts-1000-seed7.jsonl");
        text.lines()
            .take(n)
            .flat_map(|line| parse_body(line.as_bytes(), usize::MAX).expect("a mix payload"))
            .collect()
    }

    fn outcomes(rules: &RuleSet, contacts: &[Contact]) -> Vec<Outcome> {
        let at = ScoringContext::at(std::time::SystemTime::UNIX_EPOCH);
        contacts.iter().map(|c| rules.evaluate(c, &at)).collect()
    }

    /// Pins the current thread to `cpu`; false where the system refuses.
    #[cfg(target_os = "linux")]
    fn pin_to(cpu: usize) -> bool {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).is_ok()
    }

    #[cfg(not(target_os = "linux"))]
    fn pin_to(_cpu: usize) -> bool {
        false
    }

    /// A CPU this process may run on.
    #[cfg(target_os = "linux")]
    fn some_cpu() -> usize {
        rustix::thread::sched_getaffinity(None)
            .ok()
            .and_then(|set| (0..rustix::thread::CpuSet::MAX_CPU).find(|&i| set.is_set(i)))
            .unwrap_or(0)
    }

    #[cfg(not(target_os = "linux"))]
    fn some_cpu() -> usize {
        0
    }

    /// Scoring under a CPU hog gives exactly the quiet run's results (issue
    /// 19 #9): the scoring thread runs at the lowest priority, pinned to one
    /// core with busy threads of normal priority, so it gets a sliver of
    /// that core and each contact takes far longer in wall-clock time than
    /// the budget, while its CPU time stays the same. Nothing is timed: the
    /// outputs are compared.
    #[test]
    fn results_under_a_cpu_hog_are_those_of_a_quiet_run() {
        let limits = Limits {
            // Only the CPU budget is under test here; the wall-clock guard
            // is pushed out of reach.
            wall_clock_factor: 1000,
            ..Limits::default()
        };
        let rules = Arc::new(rules_with_a_burner(&limits));
        let contacts = Arc::new(mix(12));
        let quiet = outcomes(&rules, &contacts);
        for (contact, outcome) in contacts.iter().zip(&quiet) {
            assert!(
                outcome.errors.is_empty(),
                "{:?}: {:?}",
                contact.id,
                outcome.errors
            );
        }

        let cpu = some_cpu();
        let stop = Arc::new(AtomicBool::new(false));
        let hogs: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    pin_to(cpu);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        let loaded = std::thread::spawn({
            let (rules, contacts) = (rules.clone(), contacts.clone());
            move || {
                pin_to(cpu);
                let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
                outcomes(&rules, &contacts)
            }
        })
        .join();
        stop.store(true, Ordering::Relaxed);
        for hog in hogs {
            hog.join().expect("a hog thread");
        }
        let loaded = loaded.expect("the scoring thread");
        for ((contact, quiet), loaded) in contacts.iter().zip(&quiet).zip(&loaded) {
            assert_eq!(loaded, quiet, "contact {:?}", contact.id);
        }
    }

    #[test]
    fn a_rule_that_burns_cpu_is_stopped_by_the_cpu_budget() {
        let limits = Limits {
            timeout: Duration::from_millis(30),
            max_operations: u64::MAX,
            ..Limits::default()
        };
        let sources = RuleSources {
            files: vec![
                ("10-spin.rhai".into(), "add(1, \"lost\"); loop { }".into()),
                ("20-after.rhai".into(), "add(2, \"after\");".into()),
            ],
            tiers: None,
        };
        let rules = RuleSet::compile(sources, &limits).unwrap();
        let contact = &parse_body(br#"{"id": 1}"#, 1).unwrap()[0];
        let outcome = rules.evaluate(contact, &ScoringContext::at(std::time::SystemTime::now()));
        assert_eq!(outcome.score, Points::Int(0), "{outcome:?}");
        let errors: Vec<(&str, &str)> = outcome
            .errors
            .iter()
            .map(|e| (e.rule.as_str(), e.error.as_str()))
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "10-spin.rhai");
        assert!(
            errors[0]
                .1
                .starts_with("stopped: the rule set's CPU time budget of 30ms per contact"),
            "{}",
            errors[0].1
        );
        assert!(
            errors[1]
                .1
                .starts_with("not run: the rule set's CPU time budget of 30ms per contact"),
            "{}",
            errors[1].1
        );
    }

    /// 2026-11-09T12:00:00.000123456Z: rules see it to the millisecond.
    fn scoring_time() -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::new(1_794_225_600, 123_456)
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    fn call(status: CallStatus, start_time: Option<&str>, event_type: Option<&str>) -> CallSummary {
        CallSummary {
            status,
            start_time: start_time.map(str::to_owned),
            event_type: event_type.map(str::to_owned),
        }
    }

    fn one_rule(script: &str) -> RuleSet {
        let sources = RuleSources {
            files: vec![("10-rule.rhai".into(), script.into())],
            tiers: None,
        };
        RuleSet::compile(sources, &Limits::default()).unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// `type_of(v)=v` for each expression, evaluated by one rule as of `at`.
    fn probe(at: &ScoringContext, exprs: &[&str]) -> Vec<String> {
        let body: String = exprs
            .iter()
            .map(|e| format!("{{ let v = {e}; add(0, `${{type_of(v)}}=${{v}}`); }}\n"))
            .collect();
        let contact = &parse_body(br#"{"id": 1}"#, 1).unwrap()[0];
        let outcome = one_rule(&body).evaluate(contact, at);
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        outcome.reasons.into_iter().map(|r| r.reason).collect()
    }

    #[test]
    fn now_is_the_scoring_time_as_scored_at_writes_it() {
        let at = ScoringContext::at(scoring_time());
        assert_eq!(probe(&at, &["now()"]), ["string=2026-11-09T12:00:00.000Z"]);
        let contact = &parse_body(br#"{"id": 1}"#, 1).unwrap()[0];
        let scored = one_rule("add(1, now())").score(contact, None, &at);
        assert_eq!(scored.scored_at, "2026-11-09T12:00:00.000Z");
        assert_eq!(scored.reasons[0].reason, scored.scored_at);
        // Not the clock: the same context, the same text, whenever it runs.
        let epoch = ScoringContext::at(std::time::UNIX_EPOCH);
        assert_eq!(probe(&epoch, &["now()"]), ["string=1970-01-01T00:00:00.000Z"]);
    }

    #[test]
    fn days_since_counts_days_to_the_scoring_time() {
        let at = ScoringContext::at(scoring_time());
        let got = probe(
            &at,
            &[
                r#"days_since("2026-11-02T12:00:00Z")"#,
                r#"days_since("2026-11-09T00:00:00.000Z")"#,
                r#"days_since("2026-11-09T14:00:00+02:00")"#,
                r#"days_since("2026-11-09t07:00:00-05:00")"#,
                r#"days_since("2026-11-10T12:00:00Z")"#,
                r#"days_since("2025-11-09 12:00:00z")"#,
                r#"days_since(now())"#,
            ],
        );
        assert_eq!(
            got,
            [
                "f64=7.0",
                "f64=0.5",
                "f64=0.0",
                "f64=0.0",
                "f64=-1.0",
                "f64=365.0",
                "f64=0.0"
            ]
        );
    }

    #[test]
    fn days_since_of_anything_but_a_time_is_unit() {
        let at = ScoringContext::at(scoring_time());
        let exprs = [
            r#"days_since("")"#,
            r#"days_since("2026-11-09")"#,
            r#"days_since("2026-11-09T12:00:00")"#,
            r#"days_since("2026-02-30T12:00:00Z")"#,
            r#"days_since("last tuesday")"#,
            "days_since(1_794_225_600)",
            "days_since(1.5)",
            "days_since(())",
            "days_since(true)",
            "days_since('x')",
            "days_since([])",
            "days_since(#{})",
        ];
        assert_eq!(probe(&at, &exprs), vec!["()="; exprs.len()]);
    }

    #[test]
    fn first_seen_is_the_first_receive_time_or_unit() {
        let exprs = ["first_seen()", "days_since(first_seen())"];
        let fresh = ScoringContext::at(scoring_time());
        assert_eq!(
            probe(&fresh, &exprs),
            ["string=2026-11-09T12:00:00.000Z", "f64=0.0"]
        );
        let week_old = ScoringContext {
            first_seen: Some(scoring_time() - days(8)),
            ..fresh.clone()
        };
        assert_eq!(
            probe(&week_old, &exprs),
            ["string=2026-11-01T12:00:00.000Z", "f64=8.0"]
        );
        let unknown = ScoringContext {
            first_seen: None,
            ..fresh
        };
        assert_eq!(probe(&unknown, &exprs), ["()=", "()="]);
    }

    #[test]
    fn calls_are_maps_newest_first_and_at_most_a_hundred() {
        let none = ScoringContext::at(scoring_time());
        assert_eq!(probe(&none, &["calls()", "calls().len()"]), ["array=[]", "i64=0"]);
        let two = ScoringContext {
            calls: vec![
                call(
                    CallStatus::Rescheduled,
                    Some("2026-11-12T15:00:00.000Z"),
                    Some("Discovery call"),
                ),
                call(CallStatus::Canceled, None, None),
            ],
            ..none.clone()
        };
        let got = probe(
            &two,
            &[
                "calls().len()",
                "calls()[0]",
                "calls()[0].status",
                "calls()[0].start_time",
                "calls()[0].event_type",
                "calls()[1].status",
                "calls()[1].start_time",
                "calls()[1].event_type",
                "calls()[0].keys()",
            ],
        );
        assert_eq!(
            got,
            [
                "i64=2",
                r#"map=#{"event_type": "Discovery call", "start_time": "2026-11-12T15:00:00.000Z", "status": "rescheduled"}"#,
                "string=rescheduled",
                "string=2026-11-12T15:00:00.000Z",
                "string=Discovery call",
                "string=canceled",
                "()=",
                "()=",
                r#"array=["event_type", "start_time", "status"]"#,
            ]
        );
        let booked = ScoringContext {
            calls: vec![call(CallStatus::Booked, None, None)],
            ..none.clone()
        };
        assert_eq!(probe(&booked, &["calls()[0].status"]), ["string=booked"]);
        let many = ScoringContext {
            calls: (0..MAX_CALLS + 50)
                .map(|i| call(CallStatus::Booked, Some(&i.to_string()), None))
                .collect(),
            ..none
        };
        assert_eq!(
            probe(
                &many,
                &["calls().len()", "calls()[0].start_time", "calls()[-1].start_time"]
            ),
            ["i64=100", "string=0", "string=99"]
        );
        // A rule may change its copy; the next call is unchanged.
        let contact = &parse_body(br#"{"id": 1}"#, 1).unwrap()[0];
        let rule = one_rule(
            r#"let c = calls(); c[0].status = "x"; c.clear(); add(calls().len(), calls()[0].status)"#,
        );
        let outcome = rule.evaluate(contact, &two);
        assert_eq!(outcome.reasons[0].reason, "rescheduled", "{outcome:?}");
        assert_eq!(outcome.score, Points::Int(2));
    }

    #[test]
    fn a_rule_set_knows_whether_it_reads_the_history() {
        let set = |files: &[(&str, &str)]| {
            let sources = RuleSources {
                files: files
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.to_string()))
                    .collect(),
                tiers: None,
            };
            RuleSet::compile(sources, &Limits::default()).unwrap()
        };
        let plain = set(&[
            ("10-a.rhai", r#"if days_since(now()) > 1.0 { add(1, "a") }"#),
            ("20-b.rhai", r#"add(1, answer("calls"))"#),
        ]);
        assert!(!plain.uses_history());
        assert_eq!(plain.history_use(), HistoryUse::default());
        let with = set(&[
            ("10-a.rhai", r#"add(1, "a")"#),
            ("20-b.rhai", r#"if calls().is_empty() { add(-10, "no call") }"#),
            (
                "30-c.rhai",
                r#"if days_since(first_seen()) > 7.0 { add(-5, "old") }"#,
            ),
        ]);
        assert!(with.uses_history());
        let by_rule: Vec<(&str, bool, bool)> = with
            .history_use_by_rule()
            .into_iter()
            .map(|(rule, used)| (rule, used.calls, used.first_seen))
            .collect();
        assert_eq!(
            by_rule,
            [
                ("10-a.rhai", false, false),
                ("20-b.rhai", true, false),
                ("30-c.rhai", false, true),
            ]
        );
        assert!(
            RuleSet::load(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
                &Limits::default()
            )
            .unwrap()
            .history_use()
                == HistoryUse::default()
        );
    }

    #[test]
    fn a_comparison_scores_both_sets_as_of_the_same_context() {
        let rule =
            r#"if days_since(first_seen()) > 7.0 && calls().is_empty() { add(-30, "no call in a week") }"#;
        let baseline = Arc::new(one_rule(rule));
        let candidate = Arc::new(one_rule(rule));
        let comparison = Comparison::new(baseline.clone(), candidate);
        assert_eq!(comparison.shared_rules(), 1);
        let contact = &parse_body(br#"{"id": 1}"#, 1).unwrap()[0];
        let old = ScoringContext {
            first_seen: Some(scoring_time() - days(8)),
            ..ScoringContext::at(scoring_time())
        };
        let (b, c) = comparison.evaluate(contact, &old);
        assert_eq!((b.score, c.score), (Points::Int(-30), Points::Int(-30)));
        assert_eq!(b, baseline.evaluate(contact, &old));
        let (b, _) = comparison.evaluate(contact, &ScoringContext::at(scoring_time()));
        assert_eq!(b.score, Points::Int(0));
    }
}
