//! `leadscore backtest` (SPEC 8): a candidate rules folder against the
//! stored history, printed as a table (or JSON), optionally a CSV per contact.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};

use super::{RuleArgs, StoreRetentionArgs, runtime};
use crate::app::backtest::{self as use_case, Against};
use crate::backtest::{self, Backtest, Baseline, Compared, Progress, Report};
use crate::store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The candidate rules folder (the rule change to try).
    #[arg(long)]
    pub candidate: PathBuf,
    /// The baseline: the rules folder in use (`--rules`).
    #[command(flatten)]
    pub rules: RuleArgs,
    #[command(flatten)]
    pub store: StoreRetentionArgs,
    /// Contacts received since this long ago (`30d`) or this RFC 3339 time.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Every stored event, not only the latest of each contact.
    #[arg(long)]
    pub all_events: bool,
    /// What the candidate is compared with.
    #[arg(long, value_enum, default_value = "rules")]
    pub against: Against,
    /// How many changed contacts to list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Output: a table for people, or one JSON document.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Also write one row per contact to this CSV file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Scoring threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
}

pub fn run(args: &BacktestArgs) -> ExitCode {
    let candidate = match (RuleArgs {
        rules: args.candidate.clone(),
        ..args.rules.clone()
    })
    .load_or_report()
    {
        Ok(set) => Arc::new(set),
        Err(code) => return code,
    };
    let baseline = match args.against {
        Against::Rules => match args.rules.load_or_report() {
            Ok(set) => Baseline::Rules(Arc::new(set)),
            Err(code) => return code,
        },
        Against::Stored => Baseline::Stored,
    };
    if let Err(e) = crate::time::parse_since(&args.since, SystemTime::now()) {
        eprintln!("error: --since: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = use_case::check_top(Some(args.top)) {
        eprintln!("error: --{e}");
        return ExitCode::from(2);
    }
    let csv = match &args.csv {
        None => None,
        Some(path) => match CsvFile::create(path) {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let shared = match &baseline {
        Baseline::Rules(b) => {
            Some(crate::score::Comparison::new(b.clone(), candidate.clone()).shared_rules())
        }
        Baseline::Stored => None,
    };
    let rule_files = candidate.file_names().len();
    let result = runtime.block_on(async {
        let store = store::open_existing(&args.store.store, args.store.retention()).await?;
        let source =
            use_case::stored_history(store, &args.since, args.all_events, args.store.retention, None)?;
        let progress = Arc::new(Progress::default());
        let bar = ProgressBar::start(progress.clone());
        let job = Backtest {
            source,
            baseline,
            candidate,
            top: args.top,
            threads: args
                .threads
                .map_or_else(backtest::default_threads, |n| n as usize),
            background: false,
            trace: false,
            as_of: None,
        };
        let on_row = csv.as_ref().map(|csv| csv.writer());
        let report = use_case::run(job, progress, on_row).await;
        bar.finish();
        anyhow::Ok(report?)
    });
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(csv) = csv
        && let Err(e) = csv.finish()
    {
        eprintln!("error: cannot write the CSV file: {e}");
        return ExitCode::FAILURE;
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Format::Table => print!(
            "{}",
            table(&report, args.all_events, shared.map(|s| (s, rule_files)))
        ),
    }
    ExitCode::SUCCESS
}

/// The report as text for a terminal.
pub fn table(report: &Report, all_events: bool, shared: Option<(usize, usize)>) -> String {
    let mut out = String::new();
    let w = &mut out;
    use std::fmt::Write as _;
    let _ = writeln!(
        w,
        "Backtest of {} contact{} received since {} ({}), in {} ms",
        report.contacts,
        if report.contacts == 1 { "" } else { "s" },
        report.since.as_deref().unwrap_or("-"),
        if all_events {
            "every event"
        } else {
            "latest event of each contact"
        },
        report.duration_ms
    );
    let _ = writeln!(
        w,
        "baseline  {}\ncandidate {}{}",
        short(&report.baseline.rules_version),
        short(&report.candidate.rules_version),
        shared.map_or(String::new(), |(s, n)| format!(
            "  ({s} of {n} rule files as in the baseline)"
        ))
    );
    let tiers: Vec<&String> = report
        .tiers
        .candidate
        .keys()
        .chain(report.tiers.baseline.keys())
        .fold(Vec::new(), |mut v, t| {
            if !v.contains(&t) {
                v.push(t);
            }
            v
        });
    let count = |map: &serde_json::Map<String, serde_json::Value>, t: &str| {
        map.get(t).and_then(|v| v.as_u64()).unwrap_or(0)
    };
    let width = tiers.iter().map(|t| t.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        w,
        "\n{:<width$}  {:>9}  {:>9}  {:>7}",
        "TIER", "BASELINE", "CANDIDATE", "CHANGE"
    );
    for t in &tiers {
        let (b, c) = (
            count(&report.tiers.baseline, t),
            count(&report.tiers.candidate, t),
        );
        let _ = writeln!(w, "{t:<width$}  {b:>9}  {c:>9}  {:>+7}", c as i64 - b as i64);
    }
    let _ = writeln!(
        w,
        "\nTRANSITIONS (rows: baseline tier, columns: candidate tier; diagonal: unchanged)"
    );
    let col = tiers.iter().map(|t| t.len()).max().unwrap_or(4).max(6);
    let _ = write!(w, "{:<width$}", "");
    for t in &tiers {
        let _ = write!(w, "  {t:>col$}");
    }
    let _ = writeln!(w);
    for from in &tiers {
        let _ = write!(w, "{from:<width$}");
        let leaving: u64 = report
            .transitions
            .iter()
            .filter(|t| &&t.from == from)
            .map(|t| t.count)
            .sum();
        for to in &tiers {
            let n = if from == to {
                count(&report.tiers.baseline, from).saturating_sub(leaving)
            } else {
                report
                    .transitions
                    .iter()
                    .find(|t| &&t.from == from && &&t.to == to)
                    .map_or(0, |t| t.count)
            };
            let _ = write!(w, "  {n:>col$}");
        }
        let _ = writeln!(w);
    }
    let d = &report.score_delta;
    let _ = writeln!(
        w,
        "\nSCORE CHANGE  mean {}  p50 {}  p90 {}  min {}  max {}",
        d.mean, d.p50, d.p90, d.min, d.max
    );
    if report.changed.is_empty() {
        let _ = writeln!(w, "\nNo contact changes tier or score.");
    } else {
        let _ = writeln!(w, "\nTOP CHANGES");
        let _ = writeln!(
            w,
            "{:<16}  {:<20}  {:<20}  REASONS",
            "CONTACT", "BASELINE", "CANDIDATE"
        );
        for c in &report.changed {
            let side = |s: &backtest::Side| {
                format!(
                    "{} {}",
                    serde_json::to_string(&s.score).unwrap_or_default(),
                    s.tier
                )
            };
            // A reason in both lists kept its text and changed its points.
            let reasons: Vec<String> = c
                .reasons_added
                .iter()
                .map(|r| match c.reasons_removed.contains(r) {
                    true => format!("~ {r} (other points)"),
                    false => format!("+ {r}"),
                })
                .chain(
                    c.reasons_removed
                        .iter()
                        .filter(|r| !c.reasons_added.contains(r))
                        .map(|r| format!("- {r}")),
                )
                .collect();
            let _ = writeln!(
                w,
                "{:<16}  {:<20}  {:<20}  {}",
                c.contact_id.to_string(),
                side(&c.baseline),
                side(&c.candidate),
                reasons.join("; ")
            );
        }
    }
    if let Some(outcomes) = &report.outcomes {
        let _ = write!(w, "\n{}", crate::outcomes::format_against(outcomes));
    }
    if !report.errors.is_empty() {
        let _ = writeln!(w, "\nRULE ERRORS (candidate)");
        for e in &report.errors {
            let _ = writeln!(w, "{}  {} contact(s), e.g. {}", e.rule, e.count, e.example);
        }
    }
    if !report.slowest_rules.is_empty() {
        let _ = writeln!(w, "\nSLOWEST RULE FILES (candidate, mean per contact)");
        for r in &report.slowest_rules {
            let _ = writeln!(
                w,
                "{:<28}  {:>9.2} µs  {:>5.1} %",
                r.rule, r.mean_micros, r.share_percent
            );
        }
    }
    out
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// The CSV of one row per contact; rows come from the report thread.
struct CsvFile {
    out: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
    error: Arc<Mutex<Option<std::io::Error>>>,
}

impl CsvFile {
    fn create(path: &std::path::Path) -> std::io::Result<Self> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(
            out,
            "contact_id,baseline_score,baseline_tier,candidate_score,candidate_tier"
        )?;
        Ok(Self {
            out: Arc::new(Mutex::new(out)),
            error: Arc::default(),
        })
    }

    fn writer(&self) -> backtest::RowSink {
        let out = self.out.clone();
        let error = self.error.clone();
        Box::new(move |c: &Compared| {
            let id = match &c.contact_id {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let line = format!(
                "{},{},{},{},{}",
                csv_field(&id),
                serde_json::to_string(&c.baseline.score).unwrap_or_default(),
                csv_field(&c.baseline.tier),
                serde_json::to_string(&c.candidate.score).unwrap_or_default(),
                csv_field(&c.candidate.tier)
            );
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = writeln!(out, "{line}") {
                error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            }
        })
    }

    fn finish(self) -> std::io::Result<()> {
        if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        self.out.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// RFC 4180: quoted when it holds a comma, quote or line break.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// A progress bar on stderr when it is a terminal and the run takes more
/// than a second.
struct ProgressBar {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressBar {
    fn start(progress: Arc<Progress>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if !matches!(
                stopped.recv_timeout(Duration::from_secs(1)),
                Err(RecvTimeoutError::Timeout)
            ) {
                return;
            }
            let bar = indicatif::ProgressBar::new(progress.total());
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} contacts  {per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            loop {
                bar.set_length(progress.total());
                bar.set_position(progress.done());
                if !matches!(
                    stopped.recv_timeout(Duration::from_millis(100)),
                    Err(RecvTimeoutError::Timeout)
                ) {
                    break;
                }
            }
            bar.finish_and_clear();
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
