//! The rule set's budget per contact (SPEC 2.3, `--rule-timeout`): CPU time
//! of the scoring thread, so that the same contact and rules give the same
//! result however loaded the machine is. A thread waiting for a core uses no
//! budget. Real time is only a last-resort guard, `wall_clock_factor` (10)
//! times the budget, for a thread starved of a core that long.
//!
//! Why not read the thread's CPU clock at every check: it is a system call
//! (about 0.2–0.7 µs; `CLOCK_THREAD_CPUTIME_ID` has no vDSO fast path),
//! while a whole contact scores in about 8 µs. Two facts keep reads rare
//! and the count exact:
//!
//! * a thread's CPU time grows no faster than real time, so while the CPU
//!   used at the last reading plus the real time since then is within the
//!   budget, the budget cannot have run out and the clock is not read;
//! * a reading taken on this thread less than [`REUSE`] ago (at most 1 % of
//!   the budget) stands in for the reading at the start: it can only count
//!   that sliver of time before the start as used, never less than was used.
//!
//! So a contact that scores in microseconds costs two reads of the monotonic
//! clock, and the CPU clock is read about once a millisecond per thread
//! while contacts are scored back to back.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::runtime::Limits;

/// Longest age of a CPU reading that may stand in for the one at the
/// start of a budget (also at most 1 % of the budget).
const REUSE: Duration = Duration::from_millis(1);

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exhausted {
    /// The scoring thread's CPU time reached `--rule-timeout`.
    Cpu,
    /// Real time reached `--rule-timeout × wall_clock_factor`.
    WallClock,
}

impl Exhausted {
    /// Why, as the end of a result's error: "stopped: …" or "not run: …".
    pub fn describe(self, limits: &Limits) -> String {
        let budget = humantime::format_duration(limits.timeout);
        match self {
            Self::Cpu => {
                format!("the rule set's CPU time budget of {budget} per contact ran out (--rule-timeout)")
            }
            Self::WallClock => format!(
                "the rule set ran for {} of real time, {} times its time budget of {budget} per contact \
                 (--rule-timeout): the machine is too busy to score in time",
                humantime::format_duration(wall_limit(limits)),
                limits.wall_clock_factor.max(1),
            ),
        }
    }
}

fn wall_limit(limits: &Limits) -> Duration {
    limits.timeout.saturating_mul(limits.wall_clock_factor.max(1))
}

thread_local! {
    /// This thread's last CPU reading: when, and its CPU time then.
    static LAST_READING: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

fn read_cpu_clock() -> (Instant, Duration) {
    let reading = (Instant::now(), thread_cpu_time());
    LAST_READING.with(|last| last.set(Some(reading)));
    reading
}

/// The CPU time of the calling thread.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
))]
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Elsewhere no per-thread CPU clock is used: the budget counts real time.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
)))]
pub(crate) fn thread_cpu_time() -> Duration {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// The budget of one contact on the current thread.
#[derive(Debug)]
pub(crate) struct Budget {
    cpu_limit: Duration,
    wall_limit: Duration,
    started: Instant,
    /// The thread's CPU time at the start, or at a reading shortly before.
    cpu_at_start: Duration,
    /// The last CPU reading, and the CPU used since the start by then.
    read_at: Instant,
    used_at_reading: Duration,
}

impl Budget {
    /// Starts the budget on the calling thread (it must run the rules).
    pub fn start(limits: &Limits) -> Self {
        let started = Instant::now();
        let reuse = (limits.timeout / 100).min(REUSE);
        let (read_at, cpu_at_start) = match LAST_READING.with(Cell::get) {
            Some((at, cpu)) if started.saturating_duration_since(at) <= reuse => (at, cpu),
            _ => read_cpu_clock(),
        };
        Self {
            cpu_limit: limits.timeout,
            wall_limit: wall_limit(limits),
            started,
            cpu_at_start,
            read_at,
            used_at_reading: Duration::ZERO,
        }
    }

    /// Whether a limit has run out; cheap while neither can have.
    pub fn exhausted(&mut self) -> Option<Exhausted> {
        let now = Instant::now();
        if now.saturating_duration_since(self.started) >= self.wall_limit {
            return Some(Exhausted::WallClock);
        }
        let at_most = self.used_at_reading + now.saturating_duration_since(self.read_at);
        if at_most < self.cpu_limit {
            return None;
        }
        let (read_at, cpu) = read_cpu_clock();
        self.read_at = read_at;
        self.used_at_reading = cpu.saturating_sub(self.cpu_at_start);
        (self.used_at_reading >= self.cpu_limit).then_some(Exhausted::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget_limits(timeout: Duration, wall_clock_factor: u32) -> Limits {
        Limits {
            timeout,
            wall_clock_factor,
            ..Limits::default()
        }
    }

    /// Burns CPU on this thread until `budget` runs out; how often it asked.
    fn spin_until_exhausted(budget: &mut Budget) -> (Exhausted, u64) {
        let mut checks = 0u64;
        let mut x = 1u64;
        loop {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            checks += 1;
            if let Some(why) = budget.exhausted() {
                return (why, checks);
            }
        }
    }

    #[test]
    fn the_cpu_budget_counts_this_threads_cpu_time() {
        let limits = budget_limits(Duration::from_millis(20), 1000);
        let before = thread_cpu_time();
        let mut budget = Budget::start(&limits);
        let (why, _) = spin_until_exhausted(&mut budget);
        assert_eq!(why, Exhausted::Cpu);
        let used = thread_cpu_time() - before;
        assert!(used >= Duration::from_millis(19), "stopped after {used:?} of CPU");
    }

    #[test]
    fn time_spent_off_the_cpu_does_not_count() {
        // Sleeping is time off the CPU, like waiting for a core on a busy
        // machine: 60 ms of it leave a 50 ms budget untouched.
        let limits = budget_limits(Duration::from_millis(50), 1000);
        let mut budget = Budget::start(&limits);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(budget.exhausted(), None);
    }

    #[test]
    fn the_wall_clock_guard_is_a_multiple_of_the_budget() {
        // Real time runs at least as fast as CPU time, so with a factor of
        // 1 the guard always trips first.
        let limits = budget_limits(Duration::from_millis(20), 1);
        let mut budget = Budget::start(&limits);
        assert_eq!(spin_until_exhausted(&mut budget).0, Exhausted::WallClock);
        // Off the CPU for longer than budget × factor: the guard trips.
        let four_times = budget_limits(Duration::from_millis(5), 4);
        let mut budget = Budget::start(&four_times);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(budget.exhausted(), Some(Exhausted::WallClock));
        let text = Exhausted::WallClock.describe(&four_times);
        assert!(
            text.contains("20ms of real time, 4 times its time budget of 5ms per contact"),
            "{text}"
        );
    }

    #[test]
    fn the_cpu_clock_is_read_only_when_the_budget_could_be_spent() {
        let limits = budget_limits(Duration::from_millis(100), 10);
        let mut budget = Budget::start(&limits);
        let reading = LAST_READING.with(Cell::get);
        let (read_at, _) = reading.expect("a reading");
        for _ in 0..1000 {
            assert_eq!(budget.exhausted(), None);
        }
        // (Unless this thread was kept off the CPU for the whole budget.)
        if read_at.elapsed() < limits.timeout {
            assert_eq!(
                LAST_READING.with(Cell::get),
                reading,
                "no read while within budget"
            );
        }
        // A budget started right after reuses the reading.
        let _next = Budget::start(&limits);
        if read_at.elapsed() <= REUSE {
            assert_eq!(LAST_READING.with(Cell::get), reading);
        }
    }
}
