//! Exponential backoff with jitter, bounded by a deadline.
//!
//! The n-th delay (counting from 0) is drawn uniformly from `[c/2, c]` where `c = initial · 2ⁿ`, capped
//! at `max` ("equal jitter"). The lower half keeps retries from hammering a node that is restarting; the
//! random upper half spreads out clients that failed at the same moment (an election ends for everyone at
//! once). Invariants: every delay is at least `initial / 2` and at most `max`; the ceiling never
//! decreases until [`Backoff::reset`].

use std::time::{Duration, Instant};

use rand::Rng;

/// The delays between the attempts of one call.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// Delays handed out since the last reset.
    attempt: u32,
}

impl Backoff {
    /// `initial` is the first ceiling, `max` the largest delay (`max < initial` is treated as
    /// `max == initial`).
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The upper bound of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        // 2^20 × any sane initial delay is past any sane max; stop doubling there to avoid overflow.
        let factor = 1u32 << self.attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, drawn from `[ceiling/2, ceiling]`.
    pub(crate) fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let low = ceiling / 2;
        let span = ceiling - low;
        let nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
        low + Duration::from_nanos(rng.gen_range(0..=nanos))
    }

    /// The next delay, or `None` if sleeping it would reach `deadline` (no time would be left to try).
    pub(crate) fn next_before<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        deadline: Instant,
    ) -> Option<Duration> {
        let delay = self.next_delay(rng);
        (Instant::now() + delay < deadline).then_some(delay)
    }

    /// Starts over from `initial` (after progress was made).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_up_to_the_max() {
        let mut b = Backoff::new(20 * MS, 1000 * MS);
        let mut rng = StdRng::seed_from_u64(1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling());
            b.next_delay(&mut rng);
        }
        let expected: Vec<Duration> = [20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]
            .iter()
            .map(|&m| m * MS)
            .collect();
        assert_eq!(ceilings, expected);
    }

    #[test]
    fn every_delay_lies_between_half_the_ceiling_and_the_ceiling() {
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::new(10 * MS, 500 * MS);
            for _ in 0..40 {
                let ceiling = b.ceiling();
                let d = b.next_delay(&mut rng);
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "{d:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
                assert!(d >= 5 * MS && d <= 500 * MS);
            }
        }
    }

    #[test]
    fn jitter_spreads_clients_out() {
        let mut delays = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let mut b = Backoff::new(100 * MS, 100 * MS);
            delays.insert(b.next_delay(&mut StdRng::seed_from_u64(seed)));
        }
        assert!(
            delays.len() > 10,
            "20 clients drew only {} distinct delays",
            delays.len()
        );
    }

    #[test]
    fn many_attempts_neither_overflow_nor_exceed_the_max() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(30));
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        // A max below the initial delay is the initial delay.
        assert_eq!(Backoff::new(50 * MS, MS).ceiling(), 50 * MS);
    }

    #[test]
    fn no_delay_is_handed_out_that_would_reach_the_deadline() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(100 * MS, 100 * MS);
        assert_eq!(b.next_before(&mut rng, Instant::now() + 10 * MS), None);
        let d = b.next_before(&mut rng, Instant::now() + Duration::from_secs(5));
        assert!(d.is_some_and(|d| d <= 100 * MS));
    }
}
