//! `leadscore rescore` (SPEC 12): score the stored contacts again with the
//! rules folder and store a `contact.rescored` event for each one whose
//! score or tier moved, for an engine on the same store to deliver; or,
//! with `--dry-run`, print what that would change and store nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use clap::Args;

use super::backtest::Format;
use super::{RuleArgs, StoreRetentionArgs, runtime};
use crate::app::rescore::{self as use_case, Rescorer};
use crate::backtest::{Backtest, Baseline, Progress};
use crate::destinations::{Defaults, Destination, Destinations};
use crate::rescore::{Cause, Surroundings};
use crate::score::RuleSet;
use crate::store;

#[derive(Debug, Args)]
pub struct RescoreArgs {
    /// The rules to score with (those the engine runs).
    #[command(flatten)]
    pub rules: RuleArgs,
    #[command(flatten)]
    pub store: StoreRetentionArgs,
    /// Contacts first seen since this long ago (`30d`) or this RFC 3339 time.
    #[arg(long, default_value = use_case::DEFAULT_SINCE)]
    pub since: String,
    /// Print what a rescore now would change (a backtest of the rules
    /// against the stored results, at the current time); store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The destinations file of the engine that delivers (their `when`
    /// picks the destinations of each rescored event); default
    /// `./destinations.toml` when present.
    #[arg(long, env = "LEADSCORE_DESTINATIONS")]
    pub destinations: Option<PathBuf>,
    /// Or the engine forwards to one URL (`serve --forward-url`): its one
    /// destination, `default`, gets the rescored events. Without either,
    /// they are stored and delivered to nobody.
    #[arg(
        long,
        env = "LEADSCORE_FORWARD_URL",
        hide_env_values = true,
        conflicts_with = "destinations"
    )]
    pub forward_url: Option<String>,
    /// Output: a table for people, or one JSON document.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// The rules and destinations of a command-line job; the engine on the
/// same store wakes its workers by itself (it polls for due deliveries).
struct Fixed {
    rules: Arc<RuleSet>,
    destinations: Arc<Destinations>,
}

impl Surroundings for Fixed {
    fn rules(&self) -> Arc<RuleSet> {
        self.rules.clone()
    }

    fn destinations(&self) -> Arc<Destinations> {
        self.destinations.clone()
    }

    fn stored(&self, _destinations: &[String]) {}
}

pub fn run(args: &RescoreArgs) -> ExitCode {
    let rules = match args.rules.load_or_report() {
        Ok(set) => Arc::new(set),
        Err(code) => return code,
    };
    if let Err(e) = crate::time::parse_since(&args.since, SystemTime::now()) {
        eprintln!("error: --since: {e}");
        return ExitCode::from(2);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if args.dry_run {
        return dry_run(args, rules, &runtime);
    }
    let destinations = match destinations(args) {
        Ok(destinations) => Arc::new(destinations),
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let store = store::open_existing(&args.store.store, args.store.retention()).await?;
        let rescorer = Arc::new(Rescorer {
            store,
            around: Arc::new(Fixed { rules, destinations }),
            owner: use_case::owner_name(),
            retention: args.store.retention,
        });
        anyhow::Ok(rescorer.run_here(Cause::Manual, Some(&args.since)).await?)
    });
    let job = match result {
        Ok(job) => job,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default()),
        Format::Table => println!(
            "rescore {} {}: {} contact(s) scored, {} changed, {} stored for delivery{}",
            job.id,
            job.state,
            job.scored,
            job.changed,
            job.pushed,
            match job.changed - job.pushed.min(job.changed) {
                0 => String::new(),
                n => format!(" ({n} had a newer event meanwhile)"),
            }
        ),
    }
    if job.state == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The backtest of the rules against the stored results at the current
/// time: what a rescore now would change.
fn dry_run(args: &RescoreArgs, rules: Arc<RuleSet>, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let result = runtime.block_on(async {
        let store = store::open_existing(&args.store.store, args.store.retention()).await?;
        let source =
            crate::app::backtest::stored_history(store, &args.since, false, args.store.retention, None)?;
        let job = Backtest {
            source,
            baseline: Baseline::Stored,
            candidate: rules,
            top: crate::app::backtest::DEFAULT_TOP,
            threads: crate::backtest::default_threads(),
            background: false,
            trace: false,
            as_of: Some(SystemTime::now()),
        };
        let report = crate::app::backtest::run(job, Arc::new(Progress::default()), None).await;
        anyhow::Ok(report?)
    });
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Format::Table => print!("{}", super::backtest::table(&report, false, None)),
    }
    ExitCode::SUCCESS
}

/// The destinations whose `when` picks each rescored event.
fn destinations(args: &RescoreArgs) -> Result<Destinations, ExitCode> {
    let defaults = Defaults {
        rule_limits: args.rules.limits(),
        ..Defaults::default()
    };
    let file = args
        .destinations
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| {
            let default = PathBuf::from(super::DEFAULT_DESTINATIONS_FILE);
            default.is_file().then_some(default)
        });
    match file {
        Some(path) => Destinations::load(&path, &defaults, &crate::destinations::config::process_env)
            .map_err(|e| {
                for error in &e.0 {
                    eprintln!("{error}");
                }
                eprintln!(
                    "error: {} did not load ({} problem(s))",
                    path.display(),
                    e.0.len()
                );
                ExitCode::from(2)
            }),
        // `--forward-url`'s one destination: only its name matters here.
        None if args.forward_url.as_deref().is_some_and(|u| !u.trim().is_empty()) => Ok(Destinations {
            list: vec![Destination::default_from_forward(
                "http://127.0.0.1/".parse().expect("a valid URL"),
                None,
                &Default::default(),
                &defaults,
            )],
            ..Default::default()
        }),
        None => {
            eprintln!(
                "note: no destinations file and no --forward-url: rescored events are stored, not delivered"
            );
            Ok(Destinations::default())
        }
    }
}
