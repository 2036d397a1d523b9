//! What a contact is scored against besides the rules and the contact
//! itself (SPEC 12): the scoring time, the time the contact's first event
//! was received, and its calls. Rules read them through `now()`,
//! `days_since(t)`, `first_seen()` and `calls()`.
//!
//! Why an explicit value and not the clock: the same contact, rules and
//! context give the same result, on any machine and at any later time, so
//! a backtest can score an event as of its receive time (what the engine
//! knew then) and a rule test can pin the time. Who scores decides the
//! time:
//!
//! | path | `now` | `first_seen` | `calls` |
//! | --- | --- | --- | --- |
//! | ingest | the receive time | the contact's first receive time | its calls received before |
//! | backtest of stored events | each event's receive time | | |
//! | `POST /score`, `leadscore score` | the current time | = now | none |
//! | rule tests | `now` of the test, else the current time | `first_seen`, else = now | `calls`, else none |

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// `calls()` returns at most this many calls, the newest: a contact with a
/// long history cannot make a rule's array (or its scoring) large.
pub const MAX_CALLS: usize = 100;

/// The time and history a contact is scored against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoringContext {
    /// The scoring time: `now()`, and the result's `scored_at`. Rules see
    /// it to the millisecond.
    pub now: SystemTime,
    /// When the contact's first event was received: `first_seen()` (`()`
    /// when unknown).
    pub first_seen: Option<SystemTime>,
    /// The contact's calls received before `now`, one per call, newest
    /// first; rules see the first [`MAX_CALLS`].
    pub calls: Vec<CallSummary>,
}

impl ScoringContext {
    /// Scoring at `now` with no history: no calls, first seen now (a dry
    /// run, `POST /score`, and until the store provides them, ingest).
    pub fn at(now: SystemTime) -> Self {
        Self {
            now,
            first_seen: Some(now),
            calls: Vec::new(),
        }
    }
}

/// One call of a contact, from its latest call hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSummary {
    pub status: CallStatus,
    /// `event.utc_start_time` as received.
    #[serde(default)]
    pub start_time: Option<String>,
    /// `event_type.name`.
    #[serde(default)]
    pub event_type: Option<String>,
}

/// Where a call stands after its latest hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    Booked,
    Rescheduled,
    Canceled,
}

impl CallStatus {
    /// The text a rule sees as `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booked => "booked",
            Self::Rescheduled => "rescheduled",
            Self::Canceled => "canceled",
        }
    }
}
