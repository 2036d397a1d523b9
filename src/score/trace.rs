//! The trace of one contact's scoring (SPEC 13): per rule file, in order,
//! what it did (`status`), the points it added, its time, and every lookup
//! it made with what the lookup found — so that a rule author can see why
//! a rule did *not* fire (`answer("What is your roll")` matched nothing).
//!
//! Why lookups are recorded in the run state (runtime.rs) and not by either
//! evaluation path: both paths call the same rule API functions, so they
//! record the same lookups by construction; a native run that gives up is
//! run again by Rhai, and its lookups are cleared with its effects.
//! Recording is off (a `None`) unless a trace is asked for.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::helpers::{AnswerLookup, Match};
use super::runtime::Points;

/// A rule's strongest effect on one contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The rule failed at run time: its effects were dropped.
    #[serde(rename = "error")]
    Error,
    #[serde(rename = "disqualified")]
    Disqualified,
    #[serde(rename = "added")]
    Added,
    #[serde(rename = "tagged")]
    Tagged,
    #[serde(rename = "no effect")]
    NoEffect,
    /// The rule set's budget ran out before this rule.
    #[serde(rename = "not run")]
    NotRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Disqualified => "disqualified",
            Self::Added => "added",
            Self::Tagged => "tagged",
            Self::NoEffect => "no effect",
            Self::NotRun => "not run",
        }
    }

    /// Whether the rule changed the result (added points, disqualified or tagged).
    pub fn had_effect(self) -> bool {
        matches!(self, Self::Disqualified | Self::Added | Self::Tagged)
    }
}

/// One rule file's line of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleTrace {
    pub rule: String,
    pub status: Status,
    /// The sum of the points the rule added (0 when it failed).
    pub points: Points,
    /// The rule's time, in microseconds.
    pub micros: f64,
    pub lookups: Vec<Lookup>,
}

/// One call of a reading function of the rule API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lookup {
    /// `answer`, `has_answer`, `utm` or `first_utm`.
    #[serde(rename = "fn")]
    pub function: String,
    /// The argument as the rule gave it.
    pub arg: String,
    /// What the call returned (text, or a boolean for `has_answer`).
    pub result: Value,
    /// The contact's question text matched (`answer`, `has_answer`) or the
    /// tracking key read (`utm`, `first_utm`); `null` when nothing matched.
    pub matched: Option<String>,
    /// `exact`, `contains` or `none` for questions; `key` (a tracking
    /// field), `custom` (a `utmKey_N`/`utmValue_N` pair) or `none` for
    /// tracking values.
    pub how: String,
}

impl Lookup {
    pub(crate) fn answer(function: &str, arg: &str, found: &AnswerLookup<'_>, result: Value) -> Self {
        Self {
            function: function.to_owned(),
            arg: arg.to_owned(),
            result,
            matched: found.question.map(str::to_owned),
            how: found.how.as_str().to_owned(),
        }
    }

    pub(crate) fn tracking(function: &str, arg: &str, found: Option<(&str, &str)>) -> Self {
        let how = match found {
            None => Match::None.as_str(),
            Some((key, _)) if key.starts_with("utmValue_") => "custom",
            Some(_) => "key",
        };
        Self {
            function: function.to_owned(),
            arg: arg.to_owned(),
            result: Value::String(found.map_or("", |(_, value)| value).to_owned()),
            matched: found.map(|(key, _)| key.to_owned()),
            how: how.to_owned(),
        }
    }
}

/// A duration as the trace's microseconds (to the nanosecond).
pub(crate) fn micros(elapsed: Duration) -> f64 {
    elapsed.as_nanos() as f64 / 1000.0
}
