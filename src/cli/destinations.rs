//! `leadscore destinations check` and `leadscore destinations preview`
//! (SPEC 10): validate the destinations file; show the request a
//! destination would get for scored contacts, secrets masked, nothing sent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};

use super::{DEFAULT_DESTINATIONS_FILE, RuleArgs};
use crate::destinations::{Defaults, Destinations};
use crate::payload;
use crate::score::ScoringContext;

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Validate the destinations file: every problem with file:line:column.
    Check(FileArgs),
    /// Score the contacts in FILEs with --rules and print the request
    /// destination NAME would get for each (secrets masked; nothing is sent).
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The destinations file.
    #[arg(long, env = "LEADSCORE_DESTINATIONS", default_value = DEFAULT_DESTINATIONS_FILE)]
    pub destinations: PathBuf,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub file: FileArgs,
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Print one JSON object per request instead of the HTTP text.
    #[arg(long)]
    pub json: bool,
    /// The destination.
    pub name: String,
    /// Payload files: a JSON array or object per file.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(command: DestinationsCommand) -> ExitCode {
    match command {
        DestinationsCommand::Check(args) => match load(&args, &Defaults::default()) {
            Ok(set) => {
                for warning in &set.warnings {
                    eprintln!("warning: {warning}");
                }
                for destination in set.iter() {
                    let when = destination.when.as_ref().map_or("every event", |w| w.text());
                    println!(
                        "{}: {} to {} ({when})",
                        destination.name,
                        destination.template_name(),
                        destination.display_url()
                    );
                }
                println!(
                    "{}: {} destination(s), OK",
                    args.destinations.display(),
                    set.list.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        DestinationsCommand::Preview(args) => preview(&args),
    }
}

fn load(args: &FileArgs, defaults: &Defaults) -> Result<Destinations, ExitCode> {
    Destinations::load(
        &args.destinations,
        defaults,
        &crate::destinations::config::process_env,
    )
    .map_err(|e| {
        for error in &e.0 {
            eprintln!("{error}");
        }
        eprintln!(
            "error: {} did not load ({} problem(s))",
            args.destinations.display(),
            e.0.len()
        );
        ExitCode::from(2)
    })
}

fn preview(args: &PreviewArgs) -> ExitCode {
    let defaults = Defaults {
        rule_limits: args.rules.limits(),
        ..Defaults::default()
    };
    let set = match load(&args.file, &defaults) {
        Ok(set) => set,
        Err(code) => return code,
    };
    let Some(destination) = set.get(&args.name) else {
        let names: Vec<&str> = set.iter().map(|d| d.name.as_str()).collect();
        eprintln!(
            "error: {} has no destination {:?} (it has: {})",
            args.file.destinations.display(),
            args.name,
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let rules = match args.rules.load_or_report() {
        Ok(rules) => rules,
        Err(code) => return code,
    };
    let mut failed = false;
    for file in &args.files {
        let contacts = match std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| payload::parse_body(&bytes, usize::MAX).map_err(|e| e.to_string()))
        {
            Ok(contacts) => contacts,
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                failed = true;
                continue;
            }
        };
        for contact in &contacts {
            let scored = rules.score(contact, None, &ScoringContext::at(SystemTime::now()));
            let event = serde_json::to_value(&scored).unwrap_or_default();
            match crate::destinations::preview::preview(destination, &event, SystemTime::now()) {
                Ok(request) if args.json => {
                    println!("{}", serde_json::to_string(&request).unwrap_or_default())
                }
                Ok(request) => println!("{request}"),
                Err(e) => {
                    eprintln!("error: contact {}: {e}", contact.id_text());
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
