//! leadscore: a rules-based lead scoring engine for iClosed.io webhooks.
//!
//! The modules follow the data flow: [`payload`] (webhook bodies → contacts)
//! → [`score`] (Rhai rules → scored contact). [`cli`] is the command line,
//! [`rule_tests`] runs a rule set's own tests.

pub mod cli;
pub mod config;
pub mod payload;
pub mod rule_tests;
pub mod score;
