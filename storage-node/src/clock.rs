//! The lock manager's clocks, and how it reads them.
//!
//! Lease expiry is a matter of elapsed time on the meta leader's monotonic clock (see `locks`). A
//! [`Clock`] is injected so tests can move it: [`SystemClock`] in production, [`ManualClock`] in unit
//! tests, [`OffsetClock`] (real time plus a step tests control) in test clusters.
//!
//! **Jumps.** A monotonic clock only moves forward, but it can move forward all at once: the process
//! was stopped (SIGSTOP, a VM paused or migrated, a suspend) or the clock source misbehaved. Time
//! that passed while this node was not running is time in which it could not apply the keep-alives
//! its holders were sending, so it must not expire leases on the strength of it. [`JumpDetector`]
//! watches consecutive readings: the node reads the clock at least every expiry tick (100 ms), so a
//! step longer than [`MAX_CLOCK_STEP`] between two readings is taken for a jump, and the clock counts
//! as *steady* only from the reading after it. The lock manager then treats the jump like a new
//! election: no lease expires until one full TTL of steady time has passed. A jump that was really
//! ordinary time (a starved runtime that skipped ticks) only delays expiry by one TTL; it never hastens
//! it.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest step between two consecutive readings that counts as time passing. The expiry loop
/// reads the clock every 100 ms; this leaves five times that for a busy runtime, and stays below the
/// SDK's safety margin (10 % of the TTL plus 500 ms), so a step that goes unnoticed is covered by it.
pub const MAX_CLOCK_STEP: Duration = Duration::from_millis(500);

/// A monotonic clock (injected, so tests can move time).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Duration;
}

/// The process's monotonic clock.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(Mutex<Duration>);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The process's monotonic clock plus an offset that tests step forward ([`OffsetClock::jump`]): time
/// passes as usual, and a jump happens exactly when the test says so.
#[derive(Debug, Default)]
pub struct OffsetClock {
    real: SystemClock,
    offset: Mutex<Duration>,
}

impl OffsetClock {
    /// Moves the clock forward by `by` at once, as a paused VM or a faulty clock source would.
    pub fn jump(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Duration {
        self.real.now() + *self.offset.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Consecutive readings of a clock, with forward jumps noticed (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpDetector {
    last: Duration,
    steady_since: Duration,
}

/// What [`JumpDetector::observe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The reading, never earlier than the one before.
    pub now: Duration,
    /// The step since the previous reading, when it was a jump.
    pub jumped: Option<Duration>,
}

impl JumpDetector {
    /// Starts from the reading `now`, steady since then.
    pub fn new(now: Duration) -> JumpDetector {
        JumpDetector {
            last: now,
            steady_since: now,
        }
    }

    /// Takes the reading `raw`.
    pub fn observe(&mut self, raw: Duration) -> Reading {
        let now = raw.max(self.last);
        let step = now - self.last;
        self.last = now;
        let jumped = (step > MAX_CLOCK_STEP).then_some(step);
        if jumped.is_some() {
            self.steady_since = now;
        }
        Reading { now, jumped }
    }

    /// The reading just after the last jump (or the first reading): time before it does not count
    /// towards any lease's expiry.
    pub fn steady_since(&self) -> Duration {
        self.steady_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn small_steps_are_time_passing_and_a_long_one_is_a_jump() {
        let mut d = JumpDetector::new(Duration::ZERO);
        for i in 1..=10u32 {
            assert_eq!(d.observe(MS * 100 * i).jumped, None);
        }
        assert_eq!(d.observe(MS * 1_000 + MAX_CLOCK_STEP).jumped, None);
        assert_eq!(d.steady_since(), Duration::ZERO);
        let r = d.observe(MS * 61_500);
        assert_eq!(r.jumped, Some(MS * 60_000));
        assert_eq!(d.steady_since(), MS * 61_500);
    }

    #[test]
    fn a_reading_never_goes_back() {
        let mut d = JumpDetector::new(MS * 500);
        assert_eq!(
            d.observe(MS * 100),
            Reading {
                now: MS * 500,
                jumped: None
            }
        );
        assert_eq!(d.observe(MS * 600).now, MS * 600);
    }

    #[test]
    fn an_offset_clock_follows_real_time_and_jumps_on_demand() {
        let clock = OffsetClock::default();
        let before = clock.now();
        clock.jump(Duration::from_secs(600));
        let after = clock.now();
        assert!(after >= before + Duration::from_secs(600));
        assert!(after < before + Duration::from_secs(660));
    }
}
