//! The one test harness of every integration suite. A suite includes it with
//!
//! ```ignore
//! #[path = "support/mod.rs"] // `../support/mod.rs` from tests/it/
//! mod support;
//! ```
//!
//! and uses the part it needs:
//!
//! - [`server`]: [`TestServer`], the library's `serve` on `127.0.0.1:0`,
//!   configured through the same flags and validation users go through
//!   (`leadscore::cli::ServeArgs` parsed by clap, then `to_config()`);
//! - [`process`]: [`Process`], the real binary, its output in a log file;
//! - [`receiver`]: [`Receiver`], an in-process downstream whose answers a
//!   test switches at run time;
//! - [`store`]: [`TestStore`], a fresh store of the kind the environment
//!   selects (SQLite, or PostgreSQL with `LEADSCORE_TEST_POSTGRES_URL`);
//! - [`pg`]: a PostgreSQL schema per test, dropped afterwards;
//! - [`pg_server`]: a throwaway PostgreSQL server a test may restart;
//! - [`rules`]: [`RulesDir`], a rules folder in a temporary folder;
//! - [`raw`]: an HTTP/1.1 client that sends exactly the bytes a test gives;
//! - [`spec`]: names the product contract fixes, written out once.
//!
//! Nothing here reads outside the repository: the default rules are the
//! repository's benchmark rule set (`benches/rules`) or its example rules
//! (`rules/`), and generated contacts come from `leadscore::demo`.
//!
//! Skips: a part of a suite that cannot run here (no PostgreSQL, no Python
//! package) calls [`skipped`], which writes one `SKIPPED: …` line straight
//! to the process's standard error. The test harness captures only what
//! `print!`/`eprint!` write, so the line shows in a plain `cargo test`
//! (and the test still counts as passed, which is why the line matters).

#![allow(dead_code, unused_imports)] // each test binary uses a part of this module

pub mod pg;
pub mod pg_server;
pub mod previous_release;
pub mod process;
pub mod raw;
pub mod receiver;
pub mod rules;
pub mod server;
pub mod spec;
pub mod store;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

pub use process::Process;
pub use receiver::{Answer, Received, Receiver};
pub use rules::RulesDir;
pub use server::{Options, Reply, TestServer, ms};
pub use store::{StoreKind, TestStore};

/// The repository's benchmark rule set: deterministic scores for the fixtures.
pub const BENCH_RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/rules");
/// The repository's example rules.
pub const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
/// iClosed `newContactCreated` payloads.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// The real binary, for the tests that run it.
pub const BIN: &str = env!("CARGO_BIN_EXE_leadscore");
/// The longest one wait for a condition may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// A Standard Webhooks secret for signing forwarded requests.
pub const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Test logs (`LEADSCORE_LOG` filter, default `warn`), shown for failing tests.
pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("LEADSCORE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Says once per test binary and `what` that something was skipped, as a
/// `SKIPPED: <suite>: <what>: <why>` line on standard error, past the test
/// harness's output capture (so a person sees it in a plain `cargo test`).
pub fn skipped(what: &str, why: &str) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(what.to_owned()) {
        let suite = env!("CARGO_CRATE_NAME");
        let _ = writeln!(std::io::stderr(), "SKIPPED: {suite}: {what}: {why}");
    }
}

// ------------------------------------------------------------------ fixtures

/// A fixture file parsed: `qualified`, `potential`, `disqualified`,
/// `single-object`, `batch`.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(FIXTURES).join(format!("contact-created-{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A call, outcome or contact-updated hook fixture (SPEC 11): `call-booked`,
/// `call-rescheduled`, `call-canceled`, `outcome-added-sale`,
/// `outcome-added-no-sale`, `contact-updated`; each a one-element array.
pub fn hook_fixture(name: &str) -> Value {
    let path = Path::new(FIXTURES).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The (first) contact object of a fixture.
pub fn contact(name: &str) -> Value {
    match fixture(name) {
        Value::Array(mut items) => items.remove(0),
        object => object,
    }
}

/// A contact of a fixture under another id (number or string).
pub fn contact_with_id(name: &str, id: impl Into<Value>) -> Value {
    let mut c = contact(name);
    c["id"] = id.into();
    c
}

/// `n` generated contacts of `seed` (`leadscore::demo`), one object each.
pub fn generated(n: usize, seed: u64) -> Vec<Value> {
    leadscore::demo::contacts(seed, n)
}

/// Milliseconds since the epoch of an RFC 3339 time as the server writes it.
pub fn rfc3339_ms(text: &str) -> i64 {
    let time = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    time.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

pub fn unix_seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

// ------------------------------------------------------------------- waiting

/// Polls `probe` until it returns `Some`, at most `timeout`; panics naming
/// `what` otherwise.
pub async fn eventually<T>(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// -------------------------------------------------------------------- clients

/// An HTTP client for loopback only (no proxy), with a bound on every request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

/// The binary with no `LEADSCORE_*` setting inherited from the environment.
pub fn leadscore() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEADSCORE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs a one-shot command of the binary off the async threads.
pub async fn run_binary(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || leadscore().args(&args).output().expect("the binary runs"))
        .await
        .expect("the command finished")
}
