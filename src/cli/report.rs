//! `leadscore report` (SPEC 11): did the hot leads buy? The outcomes report
//! of a store, printed as a table (or JSON).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;

use super::backtest::Format;
use super::{StoreRetentionArgs, runtime};
use crate::app::report as use_case;
use crate::store;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The rules folder in use: its tiers.toml orders the tiers (the rule files are not read).
    #[arg(long, env = "LEADSCORE_RULES", default_value = "./rules")]
    pub rules: PathBuf,
    #[command(flatten)]
    pub store: StoreRetentionArgs,
    /// Contacts first seen since this long ago (`90d`) or this RFC 3339 time.
    #[arg(long, default_value = use_case::DEFAULT_SINCE)]
    pub since: String,
    /// Output: a table for people, or one JSON document.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn run(args: &ReportArgs) -> ExitCode {
    let tiers = match use_case::folder_tiers(&args.rules) {
        Ok(tiers) => tiers,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::time::parse_since(&args.since, SystemTime::now()) {
        eprintln!("error: --since: {e}");
        return ExitCode::from(2);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let store = store::open_existing(&args.store.store, args.store.retention()).await?;
        let report = use_case::run(store.as_ref(), tiers, &args.since, args.store.retention).await;
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
        Format::Table => print!("{}", crate::outcomes::format_table(&report)),
    }
    ExitCode::SUCCESS
}
