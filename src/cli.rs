//! The `leadscore` command line (clap). Every setting has a flag, an
//! environment variable and a key in the config file; flag, then
//! environment, then file, then default (SPEC section 7, `crate::config`).

mod backtest;
mod demo;
mod destinations;
mod report;
mod rescore;

use std::ffi::OsString;
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::app::{self, deliveries::DeliveryQuery};
use crate::config::layers::{self, Failure, Parsed};
use crate::config::{
    check_log_filter, check_store_url, parse_duration, parse_duration_list, parse_listen,
    parse_positive_duration, parse_size, parse_whsec,
};
use crate::deliver::manager::DestinationsSource;
use crate::deliver::parse_header;
use crate::destinations::{Defaults, Destination, Destinations};
use crate::ingest::auth::InboundAuth;
use crate::payload::{self, PayloadError};
use crate::rule_test_runner;
use crate::score::{Limits, RuleSet, ScoringContext};
use crate::server::DeliveryConfig;
use crate::server::ServeConfig;
use crate::store::{self, DeliveryStatus, Retention};
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "leadscore",
    version,
    about = "Rules-based lead scoring for iClosed.io webhooks"
)]
pub struct Cli {
    /// Read settings from this TOML file, each under its flag's name
    /// (`listen = "0.0.0.0:8080"`); flags and variables win over it.
    #[arg(long, global = true, env = "LEADSCORE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive iClosed webhooks, score, store and forward them (the default).
    Serve(Box<ServeArgs>),
    /// List or requeue deliveries in the store.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Score payload files (or JSON lines on stdin with `-`); one scored contact per line.
    Score(ScoreArgs),
    /// Compile the rule set and report every error with file:line:column.
    Check(RuleArgs),
    /// Run the rule tests in RULES/tests/*.toml.
    Test(TestArgs),
    /// Find what makes rules silently dead: misspelt questions, absent UTM names, rules that never fire, unreachable tiers.
    Lint(LintArgs),
    /// Try a candidate rules folder on the stored contacts: which would change tier?
    Backtest(Box<backtest::BacktestArgs>),
    /// Did the hot leads buy? Sales, sale rates and lift per tier, reason, tag and score decile.
    Report(report::ReportArgs),
    /// Score the stored contacts again and push those whose score or tier moved (or --dry-run).
    Rescore(Box<rescore::RescoreArgs>),
    /// Print the settings `serve` would run with, where each comes from, secrets masked.
    Config(Box<ServeArgs>),
    /// Generate realistic demo contacts: post them to a running engine (--url) or write JSON lines.
    Demo(demo::DemoArgs),
    /// Check the destinations file, or preview the request a destination would get.
    #[command(subcommand)]
    Destinations(destinations::DestinationsCommand),
}

/// Where the rules are and the limits they run under.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// The rules folder.
    #[arg(long, env = "LEADSCORE_RULES", default_value = "./rules")]
    pub rules: PathBuf,
    /// CPU-time budget of the whole rule set per contact (a wall-clock guard of 10 times it stays as a last resort).
    #[arg(long, env = "LEADSCORE_RULE_TIMEOUT", default_value = "100ms", value_parser = parse_positive_duration)]
    pub rule_timeout: Duration,
    /// Operations allowed per rule and contact.
    #[arg(long, env = "LEADSCORE_RULE_MAX_OPERATIONS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub rule_max_operations: u64,
}

impl RuleArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_operations: self.rule_max_operations,
            timeout: self.rule_timeout,
            ..Limits::default()
        }
    }

    /// Loads the rule set, printing every compile error on failure.
    fn load_or_report(&self) -> Result<RuleSet, ExitCode> {
        RuleSet::load(&self.rules, &self.limits()).map_err(|e| {
            for error in &e.0 {
                eprintln!("{}", located(&self.rules, error));
            }
            eprintln!(
                "error: the rule set in {} did not load ({} problem(s))",
                self.rules.display(),
                e.0.len()
            );
            ExitCode::from(2)
        })
    }
}

fn located(dir: &Path, error: &crate::score::CompileError) -> String {
    let path = if Path::new(&error.file).is_absolute() || error.line == 0 {
        PathBuf::from(&error.file)
    } else {
        dir.join(&error.file)
    };
    if error.line == 0 {
        format!("{}: {}", path.display(), error.message)
    } else {
        format!(
            "{}:{}:{}: {}",
            path.display(),
            error.line,
            error.column,
            error.message
        )
    }
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Payload files: a JSON array or object per file, or one payload per line. `-` reads stdin.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Add each result's trace: per rule file, what it did and every question or UTM value it looked up.
    #[arg(long)]
    pub trace: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Test files to run instead of RULES/tests/*.toml.
    pub files: Vec<PathBuf>,
    /// Also list, per rule file, the tests in which it had an effect, and the add/disqualify/tag calls no test reached.
    #[arg(long)]
    pub coverage: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Check the rules against the contacts in this store (`sqlite://PATH` or `postgres://...`); without it only the checks that need no store run.
    #[arg(long, env = "LEADSCORE_STORE")]
    pub store: Option<String>,
    /// Contacts received since this long ago (`30d`) or this RFC 3339 time.
    #[arg(long, default_value = app::lint::DEFAULT_SINCE)]
    pub since: String,
    /// How long the store keeps received contacts (`serve --retention`): lint reaches no further back.
    #[arg(long, env = "LEADSCORE_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub retention: Duration,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Runs the command line `args` (program name first).
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = with_default_command(args);
    let parsed = match layers::parse(Cli::command(), &args, &|name| std::env::var_os(name)) {
        Ok(parsed) => parsed,
        Err(Failure::Clap(e)) => e.exit(),
        Err(Failure::Config(errors)) => {
            for error in errors {
                eprintln!("error: {error}");
            }
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::from_arg_matches(&parsed.matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let logging = match &cli.command {
        Some(Command::Serve(_) | Command::Check(_) | Command::Config(_)) | None => Ok(()),
        Some(_) => init_cli_logging(),
    };
    if let Err(code) = logging {
        return code;
    }
    match cli.command {
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Deliveries(command)) => deliveries(command),
        Some(Command::Score(args)) => score(&args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Backtest(args)) => backtest::run(&args),
        Some(Command::Report(args)) => report::run(&args),
        Some(Command::Rescore(args)) => rescore::run(&args),
        Some(Command::Test(args)) => test(args),
        Some(Command::Lint(args)) => lint(&args),
        Some(Command::Config(args)) => show_config(&args, &parsed),
        Some(Command::Demo(args)) => demo::run(&args),
        Some(Command::Destinations(command)) => destinations::run(command),
        // `with_default_command` names `serve` whenever no subcommand is given.
        None => run([
            args.first().cloned().unwrap_or_else(|| "leadscore".into()),
            "serve".into(),
        ]),
    }
}

/// `leadscore` with no subcommand is `leadscore serve` (SPEC 7), flags
/// included: `leadscore --listen 0.0.0.0:8080` reads as
/// `leadscore serve --listen 0.0.0.0:8080`. Only the top-level `--help`
/// and `--version` stay the top level's.
pub fn with_default_command(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let text = |i: usize| args.get(i).and_then(|a| a.to_str());
    let starts_with_flag =
        text(1).is_some_and(|a| a.starts_with('-') && !matches!(a, "-h" | "--help" | "-V" | "--version"));
    // `leadscore --config FILE deliveries list`: the global flag comes first.
    let after_config = match text(1) {
        Some("--config") => text(3),
        Some(a) if a.starts_with("--config=") => text(2),
        _ => None,
    };
    let names_a_command =
        after_config.is_some_and(|name| name == "help" || Cli::command().find_subcommand(name).is_some());
    if (starts_with_flag && !names_a_command) || args.len() == 1 {
        args.insert(1.min(args.len()), "serve".into());
    }
    args
}

/// `LEADSCORE_LOG`, checked strictly (`crate::config::check_log_filter`).
fn check_env_log_filter() -> Result<(), String> {
    match std::env::var_os("LEADSCORE_LOG") {
        None => Ok(()),
        Some(value) => match value.to_str() {
            Some(text) if text.trim().is_empty() => Ok(()),
            Some(text) => check_log_filter(text),
            None => Err("LEADSCORE_LOG is not valid UTF-8".into()),
        },
    }
}

/// Logs for one-shot commands go to stderr, warnings and up unless
/// `LEADSCORE_LOG` says otherwise (rules' `print` is at debug level).
fn init_cli_logging() -> Result<(), ExitCode> {
    let filter = check_env_log_filter().and_then(|()| crate::telemetry::log_filter("warn"));
    let filter = filter.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(crate::telemetry::colour_stderr())
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}

fn check(args: &RuleArgs) -> ExitCode {
    match args.load_or_report() {
        Ok(rules) => {
            println!(
                "ok: {} rule file(s) in {}, tiers {:?}, rules_version {}",
                rules.file_names().len(),
                args.rules.display(),
                rules.tiers().names(),
                rules.version()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn test(args: TestArgs) -> ExitCode {
    let rules = match args.rules.load_or_report() {
        // Coverage needs the line of each effect call, which only Rhai's
        // calls carry; Rhai alone gives the same results (native.rs).
        Ok(rules) if args.coverage => rules.interpreted_only(),
        Ok(rules) => rules,
        Err(code) => return code,
    };
    let mut coverage = args.coverage.then(|| rule_test_runner::Coverage::new(&rules));
    let files = if args.files.is_empty() {
        match rule_test_runner::test_files(&args.rules.rules) {
            Ok(files) => files,
            Err(e) => {
                eprintln!(
                    "error: cannot list {}: {e}",
                    args.rules.rules.join("tests").display()
                );
                return ExitCode::from(2);
            }
        }
    } else {
        args.files.clone()
    };
    if files.is_empty() {
        eprintln!(
            "error: no rule tests in {}: write them in *.toml files there (see \"Testing rules\" in the README)",
            args.rules.rules.join("tests").display()
        );
        return ExitCode::from(2);
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        for outcome in rule_test_runner::run_file_covered(&rules, file, coverage.as_mut()) {
            if outcome.passed() {
                passed += 1;
                println!("ok   {} › {}", outcome.file.display(), outcome.name);
            } else {
                failed += 1;
                println!("FAIL {} › {}", outcome.file.display(), outcome.name);
                for failure in &outcome.failures {
                    println!("       {failure}");
                }
            }
        }
    }
    if let Some(coverage) = &coverage {
        print!("{}", coverage.report(&args.rules.rules));
    }
    println!("{passed} passed, {failed} failed");
    if passed + failed == 0 {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        eprintln!("error: no tests in {}", names.join(", "));
        return ExitCode::from(2);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `leadscore lint`: every finding on a line (`FILE:LINE: message`), a
/// summary line last; exit 1 when anything is found, 2 when lint could not run.
fn lint(args: &LintArgs) -> ExitCode {
    let rules = match args.rules.load_or_report() {
        Ok(rules) => std::sync::Arc::new(rules),
        Err(code) => return code,
    };
    if let Err(e) = crate::time::parse_since(&args.since, SystemTime::now()) {
        eprintln!("error: --since: {e}");
        return ExitCode::from(2);
    }
    let store_url = args.store.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if let Some(url) = store_url
        && let Err(e) = check_store_url(url)
    {
        eprintln!("error: --store {e}");
        return ExitCode::from(2);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = runtime.block_on(async {
        let store = match store_url {
            Some(url) => {
                let retention = Retention {
                    dedupe_window: DEFAULT_DEDUPE_WINDOW.min(args.retention),
                    retention: args.retention,
                };
                Some(
                    store::open_existing(url, retention)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
        app::lint::run(rules, store, &args.since, args.retention)
            .await
            .map_err(|e| e.to_string())
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for finding in &report.findings {
        let finding = crate::lint::Finding {
            file: args.rules.rules.join(&finding.file).display().to_string(),
            ..finding.clone()
        };
        println!("{finding}");
    }
    let against = match (report.contacts, &report.since) {
        (Some(n), Some(since)) => format!("{n} stored contact(s) received since {since}"),
        _ => "no store (--store): only the checks that need none ran".to_owned(),
    };
    println!("{} finding(s); checked against {against}", report.findings.len());
    if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn score(args: &ScoreArgs) -> ExitCode {
    let rules = match args.rules.load_or_report() {
        Ok(rules) => rules,
        Err(code) => return code,
    };
    let rules = Scoring {
        rules: &rules,
        trace: args.trace,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut problems = 0usize;
    for file in &args.files {
        let name = file.display().to_string();
        let result = if file.as_os_str() == "-" {
            score_stream(&rules, std::io::stdin().lock(), "stdin", &mut out, &mut problems)
        } else {
            std::fs::read(file).and_then(|bytes| score_file(&rules, &bytes, &name, &mut out, &mut problems))
        };
        if let Err(e) = result {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {name}: {e}");
            problems += 1;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A file is one JSON payload, or JSON lines when it is not.
fn score_file(
    rules: &Scoring,
    bytes: &[u8],
    name: &str,
    out: &mut impl Write,
    problems: &mut usize,
) -> std::io::Result<()> {
    match payload::parse_body(bytes, usize::MAX) {
        Ok(contacts) => write_scored(rules, &contacts, out),
        Err(PayloadError::InvalidJson(_)) if bytes.iter().filter(|&&b| b == b'\n').count() > 1 => {
            score_stream(rules, bytes, name, out, problems)
        }
        Err(e) => {
            eprintln!("error: {name}: {e}");
            *problems += 1;
            Ok(())
        }
    }
}

/// JSON lines: one payload per non-empty line.
fn score_stream(
    rules: &Scoring,
    input: impl Read,
    name: &str,
    out: &mut impl Write,
    problems: &mut usize,
) -> std::io::Result<()> {
    let reader = std::io::BufReader::with_capacity(1 << 16, input);
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match payload::parse_body(&line, usize::MAX) {
            Ok(contacts) => write_scored(rules, &contacts, out)?,
            Err(e) => {
                eprintln!("error: {name}:{}: {e}", index + 1);
                *problems += 1;
            }
        }
    }
    Ok(())
}

/// The rules `leadscore score` scores with, and whether with the trace.
struct Scoring<'a> {
    rules: &'a RuleSet,
    trace: bool,
}

fn write_scored(
    scoring: &Scoring,
    contacts: &[payload::Contact],
    out: &mut impl Write,
) -> std::io::Result<()> {
    for contact in contacts {
        // SPEC 12: the current time, no calls, first seen now.
        let at = ScoringContext::at(SystemTime::now());
        let scored = match scoring.trace {
            true => scoring.rules.score_traced(contact, &at),
            false => scoring.rules.score(contact, None, &at),
        };
        serde_json::to_writer(&mut *out, &scored).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The settings of `serve` (SPEC section 7).
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Address to listen on: IP:PORT (`0.0.0.0:8080`, `[::]:8080`) or HOST:PORT.
    #[arg(long, env = "LEADSCORE_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: String,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kept: RetentionArgs,
    /// The destinations file (SPEC 10): several downstreams, each in its own
    /// shape. Default: `./destinations.toml` when that file exists.
    #[arg(long, env = "LEADSCORE_DESTINATIONS")]
    pub destinations: Option<PathBuf>,
    /// Where scored contacts are POSTed (CRM, n8n, Zapier, ...): the
    /// one-destination shorthand. Without it or --destinations nothing is forwarded.
    #[arg(long, env = "LEADSCORE_FORWARD_URL")]
    pub forward_url: Option<String>,
    /// Standard Webhooks secret (`whsec_...`) to sign forwarded requests with.
    #[arg(long, env = "LEADSCORE_FORWARD_SECRET", hide_env_values = true)]
    pub forward_secret: Option<String>,
    /// Extra header on forwarded requests, `Name: value` (repeatable; the variable is `;`-separated).
    #[arg(
        long = "forward-header",
        env = "LEADSCORE_FORWARD_HEADERS",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub forward_headers: Vec<String>,
    /// Shared token senders must present (Bearer, X-Webhook-Token or ?token=).
    #[arg(long, env = "LEADSCORE_WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,
    /// Header carrying an HMAC-SHA256 of the raw body (with --webhook-hmac-secret).
    #[arg(long, env = "LEADSCORE_WEBHOOK_HMAC_HEADER")]
    pub webhook_hmac_header: Option<String>,
    /// Secret of the body HMAC check.
    #[arg(long, env = "LEADSCORE_WEBHOOK_HMAC_SECRET", hide_env_values = true)]
    pub webhook_hmac_secret: Option<String>,
    /// Standard Webhooks secret (`whsec_...`) senders sign with.
    #[arg(long, env = "LEADSCORE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Token the admin endpoints require as `Authorization: Bearer`.
    #[arg(long, env = "LEADSCORE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A host name the admin endpoints and the console answer without an
    /// admin token, besides loopback names and the listen address
    /// (repeatable; the variable is `,`-separated).
    #[arg(long = "allowed-host", env = "LEADSCORE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Delays before each delivery retry.
    #[arg(long, env = "LEADSCORE_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = parse_duration_list)]
    pub retry_schedule: std::vec::Vec<Duration>,
    /// How long a claimed delivery stays with one instance before another may take it.
    #[arg(long, env = "LEADSCORE_DELIVERY_LEASE", default_value = "30s", value_parser = parse_positive_duration)]
    pub delivery_lease: Duration,
    /// Largest request body.
    #[arg(long, env = "LEADSCORE_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// Most contacts in one request body.
    #[arg(long, env = "LEADSCORE_MAX_CONTACTS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_contacts: u64,
    /// Deliveries in flight at once.
    #[arg(long, env = "LEADSCORE_FORWARD_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub forward_concurrency: u64,
    /// Timeout of one delivery request.
    #[arg(long, env = "LEADSCORE_FORWARD_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub forward_timeout: Duration,
    /// Let the console save rule files (needs an admin token). The
    /// variable takes true/false, 1/0, yes/no or on/off.
    #[arg(long, env = "LEADSCORE_ALLOW_RULE_EDITS", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_rule_edits: bool,
    /// Most stored contacts one `POST /backtest` may score (a larger window is refused).
    #[arg(long, env = "LEADSCORE_BACKTEST_MAX_CONTACTS", default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub backtest_max_contacts: u64,
    /// After each rule change put in force (a reload, a console save),
    /// rescore the contacts first seen within --rescore-window and push
    /// those whose score or tier moved (SPEC 12). The variable takes
    /// true/false, 1/0, yes/no or on/off.
    #[arg(long, env = "LEADSCORE_RESCORE_ON_RELOAD", value_parser = clap::builder::BoolishValueParser::new())]
    pub rescore_on_reload: bool,
    /// Rescore this often (e.g. `1h`), so that rules reading the time
    /// (`days_since`, `now`) take effect without a new webhook. Off unless set.
    #[arg(long, env = "LEADSCORE_RESCORE_EVERY", value_parser = parse_positive_duration)]
    pub rescore_every: Option<Duration>,
    /// The contacts a reload's or the schedule's rescore covers: those first
    /// seen this long ago or later (`30d`) or since an RFC 3339 time.
    #[arg(long, env = "LEADSCORE_RESCORE_WINDOW", default_value = "30d")]
    pub rescore_window: String,
    /// Log format: `pretty` (for people) or `json` (one object per line).
    #[arg(long, env = "LEADSCORE_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 86400);
const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86400);

/// The store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `sqlite://PATH` (embedded) or `postgres://...` (shared by several instances).
    #[arg(long, env = "LEADSCORE_STORE", default_value = "sqlite://./data/leadscore.db")]
    pub store: String,
}

impl StoreArgs {
    /// What the `deliveries` commands open the store with: they neither
    /// take contacts in nor prune, so the dedupe window and the retention
    /// play no part there and have no flags.
    pub fn retention(&self) -> Retention {
        Retention {
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// How long the store keeps things (`serve`).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// A repeated delivery inside this window is a duplicate.
    #[arg(long, env = "LEADSCORE_DEDUPE_WINDOW", default_value = "7d", value_parser = parse_duration)]
    pub dedupe_window: Duration,
    /// How long received contacts, scores and delivered records are kept.
    #[arg(long, env = "LEADSCORE_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub retention: Duration,
}

impl RetentionArgs {
    pub fn retention(&self) -> Retention {
        Retention {
            dedupe_window: self.dedupe_window,
            retention: self.retention,
        }
    }
}

/// The store and its retention, which bounds how far back a backtest or a
/// report reaches.
#[derive(Debug, Clone, Args)]
pub struct StoreRetentionArgs {
    /// `sqlite://PATH` (embedded) or `postgres://...` (shared by several instances).
    #[arg(long, env = "LEADSCORE_STORE", default_value = "sqlite://./data/leadscore.db")]
    pub store: String,
    /// How long the store keeps received contacts (`serve --retention`): a
    /// backtest or a report reaches no further back.
    #[arg(long, env = "LEADSCORE_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub retention: Duration,
}

impl StoreRetentionArgs {
    /// A backtest only reads, so the dedupe window plays no part.
    pub fn retention(&self) -> Retention {
        Retention {
            dedupe_window: DEFAULT_DEDUPE_WINDOW.min(self.retention),
            retention: self.retention,
        }
    }
}

impl ServeArgs {
    /// Checks every setting; the error names the setting.
    pub fn to_config(&self) -> Result<ServeConfig, String> {
        let empty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        check_store_url(&self.store.store).map_err(|e| format!("--store {e}"))?;
        // The signing secret and the headers are checked even without
        // --forward-url, so that a mistake shows before it matters.
        let forward_secret = empty(&self.forward_secret)
            .map(|s| parse_whsec(&s).map_err(|e| format!("--forward-secret: {e}")))
            .transpose()?;
        let mut forward_headers = reqwest::header::HeaderMap::new();
        for text in self.forward_headers.iter().filter(|h| !h.trim().is_empty()) {
            let (name, value) = parse_header(text).map_err(|e| format!("--forward-header: {e}"))?;
            forward_headers.append(name, value);
        }
        let defaults = self.destination_defaults();
        let destinations_file = self.destinations_file();
        let deliveries = match (empty(&self.forward_url), destinations_file) {
            (Some(_), Some(file)) => {
                return Err(format!(
                    "--forward-url and the destinations file {} cannot be used together: --forward-url is the \
                     shorthand for one destination; write it as a [[destination]] in the file, or remove \
                     --destinations (and ./destinations.toml)",
                    file.display()
                ));
            }
            (Some(url), None) => {
                let url = reqwest::Url::parse(&url).map_err(|e| format!("--forward-url {url:?}: {e}"))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(format!(
                        "--forward-url {url}: only http and https URLs can be forwarded to"
                    ));
                }
                let destination =
                    Destination::default_from_forward(url, forward_secret, &forward_headers, &defaults);
                Some(DeliveryConfig {
                    destinations: Destinations {
                        list: vec![destination],
                        ..Default::default()
                    },
                    source: DestinationsSource::Fixed,
                    lease: self.delivery_lease,
                })
            }
            (None, Some(file)) => {
                let destinations =
                    Destinations::load(&file, &defaults, &crate::destinations::config::process_env)
                        .map_err(|e| format!("the destinations file did not load:\n{e}"))?;
                Some(DeliveryConfig {
                    destinations,
                    source: DestinationsSource::File {
                        path: file,
                        defaults,
                        env: Default::default(),
                    },
                    lease: self.delivery_lease,
                })
            }
            (None, None) => None,
        };
        // A delivery still in flight when its lease runs out can be
        // claimed and sent again by another worker: the lease must cover
        // the request (at most the destination's timeout) with as much
        // again to spare for waiting for a slot and recording the attempt
        // (issue 19 #7).
        if let Some(deliveries) = &deliveries {
            for destination in deliveries.destinations.iter() {
                if self.delivery_lease < destination.timeout.saturating_mul(2) {
                    let timeout = match deliveries.source {
                        DestinationsSource::Fixed => "--forward-timeout".to_owned(),
                        DestinationsSource::File { .. } => {
                            format!("the timeout of destination {:?}", destination.name)
                        }
                    };
                    return Err(format!(
                        "--delivery-lease ({}) must be at least twice {timeout} ({}): a delivery still \
                         in flight when its lease runs out could be sent again at the same time; raise \
                         --delivery-lease or lower {timeout}",
                        humantime::format_duration(self.delivery_lease),
                        humantime::format_duration(destination.timeout),
                    ));
                }
            }
        }
        let hmac = match (empty(&self.webhook_hmac_header), empty(&self.webhook_hmac_secret)) {
            (Some(header), Some(secret)) => {
                let name = http::HeaderName::try_from(header.to_ascii_lowercase())
                    .map_err(|_| format!("--webhook-hmac-header {header:?} is not a header name"))?;
                Some((name, secret.into_bytes()))
            }
            (None, None) => None,
            (Some(_), None) => return Err("--webhook-hmac-header needs --webhook-hmac-secret".into()),
            (None, Some(_)) => return Err("--webhook-hmac-secret needs --webhook-hmac-header".into()),
        };
        let standard_webhooks = empty(&self.webhook_secret)
            .map(|s| parse_whsec(&s).map_err(|e| format!("--webhook-secret: {e}")))
            .transpose()?;
        let admin_token = empty(&self.admin_token);
        if self.allow_rule_edits && admin_token.is_none() {
            return Err("--allow-rule-edits needs --admin-token: rule edits must never be open".into());
        }
        if self.kept.dedupe_window.is_zero() {
            return Err("--dedupe-window must be longer than 0".into());
        }
        if self.kept.retention < self.kept.dedupe_window {
            return Err("--retention must be at least as long as --dedupe-window".into());
        }
        if self.rules.rule_timeout.is_zero() {
            return Err("--rule-timeout must be longer than 0".into());
        }
        if let Err(e) = crate::time::parse_since(&self.rescore_window, std::time::SystemTime::now()) {
            return Err(format!("--rescore-window: {e}"));
        }
        Ok(ServeConfig {
            rules_dir: self.rules.rules.clone(),
            limits: self.rules.limits(),
            store_url: self.store.store.clone(),
            deliveries,
            auth: InboundAuth {
                token: empty(&self.webhook_token),
                hmac,
                standard_webhooks,
            },
            admin_token,
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            retention: self.kept.retention(),
            max_body: self.max_body,
            max_contacts: self.max_contacts as usize,
            allow_rule_edits: self.allow_rule_edits,
            backtest_max_contacts: self.backtest_max_contacts as usize,
            max_connections_per_peer: crate::server::MAX_CONNECTIONS_PER_PEER,
            rescore: crate::app::rescore::Triggers {
                on_reload: self.rescore_on_reload,
                every: self.rescore_every,
                window: self.rescore_window.clone(),
            },
        })
    }
}

impl ServeArgs {
    /// What destinations do not set themselves (SPEC 10).
    pub fn destination_defaults(&self) -> Defaults {
        Defaults {
            concurrency: self.forward_concurrency as usize,
            timeout: self.forward_timeout,
            retry_schedule: self.retry_schedule.clone(),
            rule_limits: self.rules.limits(),
        }
    }

    /// `--destinations`, else `./destinations.toml` when it exists.
    pub fn destinations_file(&self) -> Option<PathBuf> {
        self.destinations
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| {
                let default = PathBuf::from(DEFAULT_DESTINATIONS_FILE);
                default.is_file().then_some(default)
            })
    }
}

/// The destinations file read when `--destinations` is not given.
pub const DEFAULT_DESTINATIONS_FILE: &str = "destinations.toml";

/// `leadscore config`: the settings `serve` would run with and where each
/// comes from, secrets masked; then the checks `serve` makes at start.
fn show_config(args: &ServeArgs, parsed: &Parsed) -> ExitCode {
    let (matches, command) = parsed.leaf();
    match &parsed.file {
        Some(file) => println!("# leadscore serve, config file {}", file.path.display()),
        None => println!("# leadscore serve, no config file"),
    }
    for line in layers::effective(matches, command, parsed.file.as_ref()) {
        println!("{line}");
    }
    // The log filter is a variable only: no flag, no key in the file.
    match std::env::var_os("LEADSCORE_LOG").filter(|v| !v.is_empty()) {
        Some(filter) => println!(
            "# LEADSCORE_LOG = {}  # from env LEADSCORE_LOG",
            toml::Value::String(filter.to_string_lossy().into_owned())
        ),
        None => println!("# LEADSCORE_LOG = \"info\"  # from default"),
    }
    match check_env_log_filter().and_then(|()| args.to_config().map(drop)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn serve(args: ServeArgs) -> ExitCode {
    let logging = check_env_log_filter().and_then(|()| crate::telemetry::init_logging(args.log_format));
    // Held to the end: dropping it writes out the lines still queued.
    let _log_writer = match logging {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match args.to_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        // Before the port opens: a SIGTERM that comes as soon as the engine
        // answers must stop it cleanly, not kill it with the default action.
        let mut signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("error: cannot install the signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: --listen {}: cannot listen there: {e}", args.listen);
                return ExitCode::from(2);
            }
        };
        let running = match crate::server::start(config, listener).await {
            Ok(running) => running,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
        signals.wait(&running).await;
        tracing::info!("shutting down: no new requests; finishing requests and deliveries in flight");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// The signals `serve` handles: SIGTERM and SIGINT stop it, SIGHUP reloads
/// the rules. Installed once, before the port opens.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Returns on SIGTERM or SIGINT; SIGHUP reloads the rules meanwhile.
    async fn wait(&mut self, running: &crate::server::Running) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading rules");
                    running.reload_rules();
                }
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only deliveries with this status: pending, dead, delivered or skipped.
        #[arg(long, value_parser = ["pending", "dead", "delivered", "skipped"])]
        status: Option<String>,
        /// Most deliveries to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only the deliveries to this destination.
        #[arg(long)]
        destination: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Requeue a dead delivery by id, or every dead delivery with --all-dead.
    Retry {
        #[command(flatten)]
        store: StoreArgs,
        /// The delivery (event) id, `evt_...`.
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<String>,
        /// Requeue every dead delivery.
        #[arg(long)]
        all_dead: bool,
        /// Only the deliveries to this destination.
        #[arg(long)]
        destination: Option<String>,
    },
}

fn deliveries(command: DeliveriesCommand) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let store_args = match &command {
            DeliveriesCommand::List { store, .. } | DeliveriesCommand::Retry { store, .. } => store.clone(),
        };
        let store = match store::open_existing(&store_args.store, store_args.retention()).await {
            Ok(store) => store,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        match command {
            DeliveriesCommand::List {
                status,
                limit,
                destination,
                json,
                ..
            } => {
                let query = DeliveryQuery::new(status.as_deref().and_then(DeliveryStatus::parse), limit)
                    .and_then(|query| query.at(destination.as_deref()));
                let listed = match query {
                    Ok(query) => app::deliveries::list(store.as_ref(), query).await,
                    Err(e) => Err(e),
                };
                match listed {
                    Ok(list) if json => {
                        for d in list {
                            println!("{}", serde_json::to_string(&d).unwrap_or_default());
                        }
                        ExitCode::SUCCESS
                    }
                    Ok(list) => {
                        print!("{}", deliveries_table(list));
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            DeliveriesCommand::Retry { id, destination, .. } => {
                let result = match app::deliveries::destination_param(destination.as_deref()) {
                    Err(e) => Err(e),
                    Ok(destination) => match id {
                        Some(id) => app::deliveries::requeue(store.as_ref(), &id, destination).await,
                        None => app::deliveries::requeue_dead(store.as_ref(), destination).await,
                    },
                };
                match result {
                    Ok(n) => {
                        println!("requeued {n} dead deliver{}", if n == 1 { "y" } else { "ies" });
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}

/// Deliveries as a table for a terminal.
fn deliveries_table(list: Vec<store::DeliveryInfo>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:<14} {:<14} {:<9} {:>8} {:>6}  ERROR / NEXT ATTEMPT",
        "ID", "DESTINATION", "CONTACT", "STATUS", "ATTEMPTS", "LAST"
    );
    for d in list {
        let detail = match d.status {
            DeliveryStatus::Pending => format!("next {}", d.next_attempt_at.unwrap_or_default()),
            DeliveryStatus::Delivered => format!("delivered {}", d.delivered_at.unwrap_or_default()),
            DeliveryStatus::Dead => d.last_error.unwrap_or_default(),
            DeliveryStatus::Skipped => format!("skipped: {}", d.last_error.unwrap_or_default()),
        };
        let _ = writeln!(
            out,
            "{:<36} {:<14} {:<14} {:<9} {:>8} {:>6}  {}",
            d.id,
            d.destination,
            d.contact_id.to_string(),
            d.status.as_str(),
            d.attempts,
            d.last_status.map_or("-".into(), |s| s.to_string()),
            detail
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let argv = ["leadscore", "serve", "--forward-url", "http://127.0.0.1:9/hook"]
            .iter()
            .chain(flags);
        match Cli::try_parse_from(argv).expect("the flags parse").command {
            Some(Command::Serve(args)) => *args,
            other => panic!("not serve: {other:?}"),
        }
    }

    /// Issue 19 #7: a delivery still in flight when its lease runs out can be
    /// claimed and sent again, so a forward timeout that does not fit well
    /// inside the lease is refused at start, naming both settings.
    #[test]
    fn a_forward_timeout_too_close_to_the_delivery_lease_is_refused() {
        for (timeout, lease) in [("40s", "30s"), ("30s", "30s"), ("16s", "30s"), ("2s", "3s")] {
            let error = serve_args(&["--forward-timeout", timeout, "--delivery-lease", lease])
                .to_config()
                .expect_err("refused");
            assert!(
                error.contains("--forward-timeout") && error.contains("--delivery-lease"),
                "{timeout}/{lease}: {error}"
            );
            assert!(error.contains(timeout) && error.contains(lease), "{error}");
        }
        for (timeout, lease) in [("10s", "30s"), ("15s", "30s"), ("1s", "2s"), ("300ms", "30s")] {
            let config = serve_args(&["--forward-timeout", timeout, "--delivery-lease", lease])
                .to_config()
                .unwrap_or_else(|e| panic!("{timeout}/{lease}: {e}"));
            let deliveries = config.deliveries.expect("forwarding");
            assert_eq!(
                deliveries.destinations.list[0].timeout,
                parse_duration(timeout).unwrap()
            );
            assert_eq!(deliveries.lease, parse_duration(lease).unwrap());
        }
        // The defaults fit.
        assert!(serve_args(&[]).to_config().is_ok());
    }
}
