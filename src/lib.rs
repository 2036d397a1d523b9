//! leadscore: a rules-based lead scoring engine for iClosed.io webhooks.
//!
//! The modules follow the data flow: [`ingest`] (HTTP body → contacts via
//! [`payload`], authentication) → [`score`] (Rhai rules → scored contact,
//! hot-reloaded by [`reload`]) → [`store`] (durable events, dedupe,
//! delivery queue) → [`deliver`] (signed forwarding with retries), plus
//! [`backtest`] (a candidate rule set against stored history).
//!
//! Above them, [`app`] holds the use cases that the three doors share: the
//! thin HTTP layer [`http`] (API and console), the command line [`cli`],
//! and [`server`], which wires everything for `serve`.

pub mod app;
pub mod backtest;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod demo;
pub mod destinations;
pub mod http;
pub mod ingest;
pub mod lint;
pub mod outcomes;
pub mod payload;
pub mod reload;
pub mod rescore;
pub mod rule_files;
pub mod rule_test_runner;
pub mod score;
pub mod server;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod time;
