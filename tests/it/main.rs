//! Integration tests of `leadscore serve` (SPEC sections 1, 3, 4, 5, 7): the
//! server on an ephemeral port against an in-process downstream receiver
//! whose answers the tests switch, plus a few tests of the real binary.
//!
//! - [`support`]: the harness shared by every integration suite
//!   (`tests/support/`: [`support::TestServer`], [`support::Receiver`],
//!   [`support::Process`], rules folders and stores in temporary folders,
//!   polling waits);
//! - [`ingest`]: the webhook, `POST /score`, refusals, admin token, metrics;
//! - [`delivery`]: forwarding, retries, dead deliveries, order, duplicates;
//! - [`destinations`]: several destinations (SPEC 10);
//! - [`faults`]: receivers that never answer or trickle their answer;
//! - [`reload`]: hot reload of the rules folder;
//! - [`process`]: the binary under SIGKILL, SIGTERM, SIGHUP and bad config;
//! - [`tools`]: tools for rule authors: trace, lint, time per rule;
//! - [`report`]: the outcomes report and backtests against outcomes.
//!
//! Run with `cargo test --test it`. The store under test is SQLite in a
//! temporary folder; the harness takes the store as a parameter
//! ([`support::TestStore`]) so that the same suite runs against PostgreSQL
//! when `LEADSCORE_TEST_POSTGRES_URL` is set (a schema per test, dropped
//! afterwards); `LEADSCORE_TEST_STORE=sqlite` keeps SQLite even then, so CI
//! runs the suite once per store. Test logs: `LEADSCORE_LOG=debug`.

mod backtest;
mod console;
mod delivery;
mod destinations;
mod faults;
mod ingest;
mod outcomes;
mod process;
mod reload;
mod report;
mod rescore;
#[path = "../support/mod.rs"]
mod support;
mod tools;
