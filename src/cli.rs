//! The `leadscore` command line (clap). Every setting has a flag and an
//! environment variable; flags win (SPEC section 7).

use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};

use crate::config::{parse_duration, parse_size};
use crate::payload::{self, PayloadError};
use crate::rule_tests;
use crate::score::{Limits, RuleSet};

#[derive(Debug, Parser)]
#[command(
    name = "leadscore",
    version,
    about = "Rules-based lead scoring for iClosed.io webhooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score payload files (or JSON lines on stdin with `-`); one scored contact per line.
    Score(ScoreArgs),
    /// Compile the rule set and report every error with file:line:column.
    Check(RuleArgs),
    /// Run the rule tests in RULES/tests/*.toml.
    Test(TestArgs),
}

/// Where the rules are and the limits they run under.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// The rules folder.
    #[arg(long, env = "LEADSCORE_RULES", default_value = "./rules")]
    pub rules: PathBuf,
    /// Wall-clock budget of the whole rule set per contact.
    #[arg(long, env = "LEADSCORE_RULE_TIMEOUT", default_value = "100ms", value_parser = parse_duration)]
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
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Test files to run instead of RULES/tests/*.toml.
    pub files: Vec<PathBuf>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Score(args)) => {
            init_cli_logging();
            score(&args)
        }
        Some(Command::Check(args)) => check(&args),
        Some(Command::Test(args)) => {
            init_cli_logging();
            test(&args)
        }
        None => {
            eprintln!(
                "error: `leadscore serve` is not available yet; use `leadscore score`, `check` or `test`"
            );
            ExitCode::from(2)
        }
    }
}

/// Logs for one-shot commands go to stderr, warnings and up unless
/// `LEADSCORE_LOG` says otherwise (rules' `print` is at debug level).
fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEADSCORE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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

fn test(args: &TestArgs) -> ExitCode {
    let rules = match args.rules.load_or_report() {
        Ok(rules) => rules,
        Err(code) => return code,
    };
    let files = if args.files.is_empty() {
        match rule_tests::test_files(&args.rules.rules) {
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
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        for outcome in rule_tests::run_file(&rules, file) {
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
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
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
    rules: &RuleSet,
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
    rules: &RuleSet,
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

fn write_scored(rules: &RuleSet, contacts: &[payload::Contact], out: &mut impl Write) -> std::io::Result<()> {
    for contact in contacts {
        let scored = rules.score(contact, None, SystemTime::now());
        serde_json::to_writer(&mut *out, &scored).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a size setting (used by `serve`).
pub fn size_arg(text: &str) -> Result<usize, String> {
    parse_size(text)
}
