//! The circuit breaker of a destination (SPEC 10): after `failures`
//! consecutive failed attempts it opens — no request for `cooldown` — then
//! lets one probe through (half-open); a success closes it, a failure opens
//! it again. A `429` is the receiver's rate limit, not a failure: it does
//! not count.
//!
//! Beside the breaker the destination's health is tracked for alerts: it
//! turns *failing* when the breaker opens or a delivery dies while healthy,
//! and *recovered* at the next success after that; each change is reported
//! once ([`HealthChange`]), so the `alert` destination receives one
//! `destination.failing` and one `destination.recovered`, nothing between.
//!
//! Defaults: 10 failures, a 1-minute cooldown: a receiver down for a
//! minute or two trips it, a few stray errors do not.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

/// `breaker = { failures, cooldown }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 10,
            cooldown: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half-open"` (SPEC 10 `GET /destinations`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// Whether a request may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The breaker is closed.
    Go,
    /// The breaker is half-open and this request is its one probe.
    Probe,
    /// Open, or a probe is out: ask again after this long. Waiting here
    /// does not use up a delivery's retries.
    Wait(Duration),
}

/// How one attempt ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Success,
    Failure,
    /// A `429`: the probe (if it was one) is over, nothing counts.
    RateLimited,
}

impl AttemptResult {
    /// How the breaker counts an attempt that `succeeded` (a `2xx` that is
    /// not a failed attempt, e.g. not a HubSpot `207`) or ended with
    /// `status` (`None`: no answer, a timeout or a connection error).
    pub fn of(status: Option<u16>, succeeded: bool) -> Self {
        match (succeeded, status) {
            (true, _) => AttemptResult::Success,
            (false, Some(429)) => AttemptResult::RateLimited,
            (false, _) => AttemptResult::Failure,
        }
    }
}

/// A change of the destination's health, to send to its `alert`
/// destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthChange {
    Failing { reason: String },
    Recovered,
}

impl HealthChange {
    /// The alert event (SPEC 10): `{"type", "id", "destination", "at",
    /// "reason", "last_error"}`.
    pub fn event(&self, id: &str, destination: &str, at: SystemTime, last_error: Option<&str>) -> Value {
        let (kind, reason) = match self {
            HealthChange::Failing { reason } => ("destination.failing", Some(reason.as_str())),
            HealthChange::Recovered => ("destination.recovered", None),
        };
        json!({
            "type": kind,
            "id": id,
            "destination": destination,
            "at": crate::time::format_time(at),
            "reason": reason,
            "last_error": last_error,
        })
    }
}

/// One destination's breaker and health; the caller keeps it behind a lock.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    consecutive_failures: u32,
    /// When the breaker opened (or reopened); `None` while closed.
    opened_at: Option<Instant>,
    /// When the current probe started, while one is out.
    probe_started: Option<Instant>,
    healthy: bool,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            consecutive_failures: 0,
            opened_at: None,
            probe_started: None,
            healthy: true,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(opened) if now.saturating_duration_since(opened) < self.settings.cooldown => {
                BreakerState::Open
            }
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether the destination is healthy (no `failing` since the last
    /// success).
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Asks to start a request at `now`.
    pub fn permit(&mut self, now: Instant) -> Permit {
        match (self.state(now), self.opened_at) {
            (BreakerState::Closed, _) => Permit::Go,
            (BreakerState::Open, Some(opened)) => {
                Permit::Wait((opened + self.settings.cooldown).saturating_duration_since(now))
            }
            _ => match self.probe_started {
                // A probe whose outcome never came (its task died) is
                // given up after a cooldown, so the breaker cannot stick.
                Some(started) if now.saturating_duration_since(started) < self.settings.cooldown => {
                    Permit::Wait((started + self.settings.cooldown).saturating_duration_since(now))
                }
                _ => {
                    self.probe_started = Some(now);
                    Permit::Probe
                }
            },
        }
    }

    /// Records how an attempt ended; returns the change of health, if any.
    pub fn record(&mut self, result: AttemptResult, now: Instant) -> Option<HealthChange> {
        match result {
            AttemptResult::Success => {
                self.consecutive_failures = 0;
                self.opened_at = None;
                self.probe_started = None;
                (!std::mem::replace(&mut self.healthy, true)).then_some(HealthChange::Recovered)
            }
            AttemptResult::RateLimited => {
                self.probe_started = None;
                None
            }
            AttemptResult::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let was_probe = self.probe_started.take().is_some();
                let opens = self.opened_at.is_none() && self.consecutive_failures >= self.settings.failures;
                if opens || was_probe {
                    self.opened_at = Some(now);
                }
                if opens {
                    let reason = format!(
                        "the circuit breaker opened after {} consecutive failed attempts",
                        self.consecutive_failures
                    );
                    return self.turn_failing(reason);
                }
                None
            }
        }
    }

    /// A delivery died (a final answer, or its retries ran out).
    pub fn delivery_died(&mut self) -> Option<HealthChange> {
        self.turn_failing("a delivery died".to_owned())
    }

    fn turn_failing(&mut self, reason: String) -> Option<HealthChange> {
        std::mem::replace(&mut self.healthy, false).then_some(HealthChange::Failing { reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, cooldown_ms: u64) -> Breaker {
        Breaker::new(BreakerSettings {
            failures,
            cooldown: Duration::from_millis(cooldown_ms),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = breaker(3, 1000);
        assert_eq!(b.permit(at(0)), Permit::Go);
        assert_eq!(b.record(AttemptResult::Failure, at(0)), None);
        assert_eq!(b.record(AttemptResult::Failure, at(1)), None);
        // A success in between starts the count again.
        assert_eq!(b.record(AttemptResult::Success, at(2)), None);
        assert_eq!(b.record(AttemptResult::Failure, at(3)), None);
        assert_eq!(b.record(AttemptResult::Failure, at(4)), None);
        // A 429 does not count.
        assert_eq!(b.record(AttemptResult::RateLimited, at(5)), None);
        assert_eq!(b.state(at(5)), BreakerState::Closed);
        assert_eq!(
            b.record(AttemptResult::Failure, at(10)),
            Some(HealthChange::Failing {
                reason: "the circuit breaker opened after 3 consecutive failed attempts".into()
            })
        );
        assert_eq!(b.state(at(10)), BreakerState::Open);
        assert_eq!(b.permit(at(510)), Permit::Wait(Duration::from_millis(500)));
        assert_eq!(b.state(at(1010)), BreakerState::HalfOpen);
        assert_eq!(b.permit(at(1010)), Permit::Probe);
        assert_eq!(b.permit(at(1011)), Permit::Wait(Duration::from_millis(999)));
        // The probe fails: open again, no second `failing`.
        assert_eq!(b.record(AttemptResult::Failure, at(1100)), None);
        assert_eq!(b.state(at(1100)), BreakerState::Open);
        assert_eq!(b.permit(at(2100)), Permit::Probe);
        // The probe succeeds: closed, and one `recovered`.
        assert_eq!(
            b.record(AttemptResult::Success, at(2200)),
            Some(HealthChange::Recovered)
        );
        assert_eq!(b.state(at(2200)), BreakerState::Closed);
        assert_eq!(b.record(AttemptResult::Success, at(2300)), None);
        assert_eq!(b.permit(at(2300)), Permit::Go);
    }

    #[test]
    fn a_rate_limited_probe_lets_the_next_one_through() {
        let t0 = Instant::now();
        let mut b = breaker(1, 100);
        assert!(b.record(AttemptResult::Failure, t0).is_some());
        let later = t0 + Duration::from_millis(100);
        assert_eq!(b.permit(later), Permit::Probe);
        assert_eq!(b.record(AttemptResult::RateLimited, later), None);
        assert_eq!(b.permit(later), Permit::Probe);
        // A probe that never reports is given up after a cooldown.
        assert_eq!(b.permit(later + Duration::from_millis(100)), Permit::Probe);
    }

    #[test]
    fn a_dead_delivery_is_failing_once_and_the_next_success_recovers() {
        let t0 = Instant::now();
        let mut b = breaker(2, 1000);
        assert_eq!(
            b.delivery_died(),
            Some(HealthChange::Failing {
                reason: "a delivery died".into()
            })
        );
        assert!(!b.is_healthy());
        assert_eq!(b.delivery_died(), None);
        // The breaker opening while already failing says nothing more.
        assert_eq!(b.record(AttemptResult::Failure, t0), None);
        assert_eq!(b.record(AttemptResult::Failure, t0), None);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(
            b.record(AttemptResult::Success, t0),
            Some(HealthChange::Recovered)
        );
        assert!(b.is_healthy());
    }

    #[test]
    fn alert_events_have_the_spec_fields() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let failing = HealthChange::Failing {
            reason: "a delivery died".into(),
        };
        assert_eq!(
            failing.event("evt_9", "crm", at, Some("the receiver answered 400")),
            json!({"type": "destination.failing", "id": "evt_9", "destination": "crm",
                   "at": "2026-11-18T11:06:40.123Z", "reason": "a delivery died",
                   "last_error": "the receiver answered 400"})
        );
        assert_eq!(
            HealthChange::Recovered.event("evt_10", "crm", at, None),
            json!({"type": "destination.recovered", "id": "evt_10", "destination": "crm",
                   "at": "2026-11-18T11:06:40.123Z", "reason": null, "last_error": null})
        );
        assert_eq!(BreakerState::HalfOpen.as_str(), "half-open");
        assert_eq!(BreakerState::Open.as_str(), "open");
        assert_eq!(BreakerState::Closed.as_str(), "closed");
        assert_eq!(AttemptResult::of(Some(200), true), AttemptResult::Success);
        assert_eq!(AttemptResult::of(Some(207), false), AttemptResult::Failure);
        assert_eq!(AttemptResult::of(Some(429), false), AttemptResult::RateLimited);
        assert_eq!(AttemptResult::of(None, false), AttemptResult::Failure);
    }
}
