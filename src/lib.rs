//! leadscore: a rules-based lead scoring engine for iClosed.io webhooks.
//!
//! The modules follow the data flow: [`ingest`] (HTTP body → contacts via
//! [`payload`], authentication) → [`score`] (Rhai rules → scored contact,
//! hot-reloaded by [`reload`]) → [`store`] (durable events, dedupe,
//! delivery queue) → [`deliver`] (signed forwarding with retries). [`http`]
//! is the thin HTTP layer, [`server`] wires everything for `serve`, [`cli`]
//! is the command line, [`rule_tests`] runs a rule set's own tests.

// warp's nested filter types (one per route) outgrow the default limit of 128.
#![recursion_limit = "256"]

pub mod backtest;
pub mod cli;
pub mod config;
pub mod console;
pub mod deliver;
pub mod demo;
pub mod http;
pub mod ingest;
pub mod payload;
pub mod reload;
pub mod rule_files;
pub mod rule_tests;
pub mod score;
pub mod server;
pub mod signature;
pub mod store;
pub mod telemetry;
