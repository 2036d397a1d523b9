//! Rate limits (SPEC 10): `rate = "N/period"` lets at most N requests start
//! for a destination in any interval of that length, and a `429` with
//! `Retry-After` pauses the whole destination.
//!
//! [`RateGate`] is the seam: [`LocalRateGate`] counts within one instance
//! (SQLite); a gate shared through PostgreSQL (a CRM's quota is per
//! account, not per instance) implements the same trait. It speaks in
//! durations, not instants, because instances share no clock but the
//! database's.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest N: the local window keeps one instant per request in it.
pub const MAX_REQUESTS_PER_PERIOD: u32 = 1_000_000;

/// `N/period`, e.g. `100/10s`, `1/1s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub n: u32,
    pub period: Duration,
}

impl RateLimit {
    /// Parses `N/period` (`5/1s`, `100/10s`, `1000/1h`); `N/s` is `N/1s`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "write N/period, e.g. 100/10s or 1/1s";
        let Some((count, period)) = text.trim().split_once('/') else {
            return Err(format!("{text:?} is not a rate; {hint}"));
        };
        let n: u32 = count.trim().parse().map_err(|_| {
            format!(
                "{text:?}: {:?} is not a whole number of requests; {hint}",
                count.trim()
            )
        })?;
        if n == 0 {
            return Err(format!("{text:?}: the number of requests must be at least 1"));
        }
        if n > MAX_REQUESTS_PER_PERIOD {
            return Err(format!(
                "{text:?}: at most {MAX_REQUESTS_PER_PERIOD} requests per period"
            ));
        }
        let period = period.trim();
        // `10/s` reads as "10 per second".
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            period.to_owned()
        } else {
            format!("1{period}")
        };
        let period = crate::config::parse_positive_duration(&period)?;
        Ok(Self { n, period })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.n, humantime::format_duration(self.period))
    }
}

/// Whether a request may start now, for one destination, wherever its
/// count is kept.
#[async_trait::async_trait]
pub trait RateGate: Send + Sync {
    /// Takes a slot for one request, or says how long to wait before
    /// asking again (a full window or a pause). A shared gate that cannot
    /// reach its store answers with a short wait rather than letting the
    /// request through: the quota is the receiver's, not ours.
    async fn try_acquire(&self) -> Result<(), Duration>;

    /// A `429` with `Retry-After`: no request starts for `wait` (a longer
    /// pause already in force stays).
    async fn pause_for(&self, wait: Duration);
}

/// A sliding window over the start times of the last `n` requests.
#[derive(Debug)]
pub struct SlidingWindow {
    limit: Option<RateLimit>,
    started: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl SlidingWindow {
    /// `None`: no limit, only pauses.
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            started: VecDeque::new(),
            paused_until: None,
        }
    }

    /// Takes a slot at `now`, or the wait until one frees (or the pause ends).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        let Some(limit) = self.limit else {
            return Ok(());
        };
        while let Some(&oldest) = self.started.front()
            && now.saturating_duration_since(oldest) >= limit.period
        {
            self.started.pop_front();
        }
        if self.started.len() < limit.n as usize {
            self.started.push_back(now);
            return Ok(());
        }
        let oldest = self.started.front().copied().unwrap_or(now);
        Err((oldest + limit.period).saturating_duration_since(now))
    }

    /// No request starts before `until`; an earlier `until` never shortens
    /// a pause in force.
    pub fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }
}

/// The gate of one instance (SQLite, or a destination without a shared
/// store): a [`SlidingWindow`] on the monotonic clock.
#[derive(Debug)]
pub struct LocalRateGate(Mutex<SlidingWindow>);

impl LocalRateGate {
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self(Mutex::new(SlidingWindow::new(limit)))
    }

    fn window(&self) -> std::sync::MutexGuard<'_, SlidingWindow> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl RateGate for LocalRateGate {
    async fn try_acquire(&self) -> Result<(), Duration> {
        self.window().try_acquire(Instant::now())
    }

    async fn pause_for(&self, wait: Duration) {
        // As long as a `Retry-After` is ever honoured (a day).
        let now = Instant::now();
        let until = now + wait.min(crate::deliver::MAX_RETRY_AFTER);
        self.window().pause_until(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let rate = RateLimit::parse("100/10s").unwrap();
        assert_eq!((rate.n, rate.period), (100, Duration::from_secs(10)));
        assert_eq!(rate.to_string(), "100/10s");
        assert_eq!(RateLimit::parse(" 5 / 1s ").unwrap().to_string(), "5/1s");
        assert_eq!(RateLimit::parse("10/s").unwrap().period, Duration::from_secs(1));
        assert_eq!(RateLimit::parse("1/500ms").unwrap().to_string(), "1/500ms");
        assert_eq!(RateLimit::parse("3/m").unwrap().period, Duration::from_secs(60));
        for (bad, expected) in [
            ("100", "is not a rate"),
            ("0/1s", "must be at least 1"),
            ("-1/1s", "is not a whole number"),
            ("x/1s", "is not a whole number"),
            ("5/0s", "must be longer than 0"),
            ("5/soon", "is not a duration"),
            ("2000000/1s", "at most 1000000"),
        ] {
            let error = RateLimit::parse(bad).unwrap_err();
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn at_most_n_start_in_any_window() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut window = SlidingWindow::new(Some(RateLimit::parse("3/1s").unwrap()));
        assert_eq!(window.try_acquire(at(0)), Ok(()));
        assert_eq!(window.try_acquire(at(100)), Ok(()));
        assert_eq!(window.try_acquire(at(200)), Ok(()));
        assert_eq!(window.try_acquire(at(300)), Err(Duration::from_millis(700)));
        // The first slot frees one period after it was taken, not before.
        assert_eq!(window.try_acquire(at(999)), Err(Duration::from_millis(1)));
        assert_eq!(window.try_acquire(at(1000)), Ok(()));
        assert_eq!(window.try_acquire(at(1050)), Err(Duration::from_millis(50)));
        assert_eq!(window.try_acquire(at(1100)), Ok(()));
        // Over any 1 s interval, at most 3 starts.
        let mut free = SlidingWindow::new(None);
        assert!((0..1000).all(|i| free.try_acquire(at(i)).is_ok()));
    }

    #[test]
    fn a_pause_stops_every_request_and_is_never_shortened() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut window = SlidingWindow::new(Some(RateLimit::parse("100/1s").unwrap()));
        window.pause_until(at(5000));
        window.pause_until(at(1000));
        assert_eq!(window.try_acquire(at(0)), Err(Duration::from_secs(5)));
        assert_eq!(window.try_acquire(at(4000)), Err(Duration::from_secs(1)));
        assert_eq!(window.try_acquire(at(5000)), Ok(()));
    }

    #[tokio::test]
    async fn the_local_gate_works_through_the_trait() {
        let gate: Box<dyn RateGate> = Box::new(LocalRateGate::new(Some(RateLimit::parse("2/1h").unwrap())));
        assert_eq!(gate.try_acquire().await, Ok(()));
        assert_eq!(gate.try_acquire().await, Ok(()));
        let wait = gate.try_acquire().await.unwrap_err();
        assert!(
            wait > Duration::from_secs(3590) && wait <= Duration::from_secs(3600),
            "{wait:?}"
        );
        let paused: Box<dyn RateGate> = Box::new(LocalRateGate::new(None));
        paused.pause_for(Duration::from_secs(30)).await;
        let wait = paused.try_acquire().await.unwrap_err();
        assert!(wait > Duration::from_secs(29), "{wait:?}");
    }
}
