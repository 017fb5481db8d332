//! The one retry helper: the pauses between attempts of anything that is tried again (a
//! routed call while a shard elects a leader, a compare-and-set write that lost a race, a
//! join while the cluster forms, a fan-out until every shard answered, an accept loop out of
//! file descriptors).
//!
//! Pauses grow linearly (`step`, `2 × step`, ...) up to `max`; with jitter each pause is
//! drawn uniformly from its upper half to its whole (so racing callers spread out but never
//! retry at once); the number of attempts is bounded unless said otherwise.

use std::time::Duration;

use rand::Rng;

/// Pauses between the attempts of one operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
    max: Duration,
    jitter: bool,
    /// Attempts allowed (`None`: unbounded; the caller bounds it another way, such as a
    /// node stopping).
    limit: Option<u32>,
    attempt: u32,
}

impl Backoff {
    /// At most `limit` attempts, pausing `step × n` (capped at `max`) before attempt `n + 1`.
    pub const fn new(step: Duration, max: Duration, limit: u32) -> Backoff {
        Backoff {
            step,
            max,
            jitter: false,
            limit: Some(limit),
            attempt: 0,
        }
    }

    /// Growing pauses for as long as the caller keeps trying (it stops another way, such
    /// as the node stopping or the awaited thing happening).
    pub const fn unbounded(step: Duration, max: Duration) -> Backoff {
        Backoff {
            step,
            max,
            jitter: false,
            limit: None,
            attempt: 0,
        }
    }

    /// The same pause every time, for as long as the caller keeps trying.
    pub const fn every(pause: Duration) -> Backoff {
        Backoff::unbounded(pause, pause)
    }

    /// Each pause drawn from its upper half, so racing callers spread out.
    pub const fn jittered(mut self) -> Backoff {
        self.jitter = true;
        self
    }

    /// Attempts begun so far (0 before the first).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts an attempt: `false` once the attempts are used up.
    pub fn begin(&mut self) -> bool {
        if self.limit.is_some_and(|l| self.attempt >= l) {
            return false;
        }
        self.attempt += 1;
        true
    }

    /// The pause after the attempt just made.
    pub fn delay(&self) -> Duration {
        let linear = self.step.saturating_mul(self.attempt.max(1)).min(self.max);
        if !self.jitter || linear.is_zero() {
            return linear;
        }
        let hi = linear.as_micros() as u64;
        Duration::from_micros(rand::thread_rng().gen_range(hi / 2..=hi))
    }

    /// Sleeps for [`Backoff::delay`].
    pub async fn pause(&self) {
        tokio::time::sleep(self.delay()).await;
    }

    /// For an unbounded poll: counts the attempt just made and sleeps before the next.
    pub async fn again(&mut self) {
        self.attempt = self.attempt.saturating_add(1);
        self.pause().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pauses_grow_linearly_to_the_cap_and_attempts_are_bounded() {
        let mut b = Backoff::new(25 * MS, 200 * MS, 10);
        let mut pauses = Vec::new();
        while b.begin() {
            pauses.push(b.delay().as_millis());
        }
        assert_eq!(pauses, [25, 50, 75, 100, 125, 150, 175, 200, 200, 200]);
        assert_eq!(b.attempts(), 10);
        assert!(!b.begin(), "no eleventh attempt");
    }

    #[test]
    fn jittered_pauses_stay_in_the_upper_half() {
        let mut b = Backoff::new(4 * MS, 32 * MS, 64).jittered();
        let mut seen = std::collections::HashSet::new();
        while b.begin() {
            let linear = (4 * MS * b.attempts()).min(32 * MS);
            let d = b.delay();
            assert!(
                d <= linear && d >= linear / 2,
                "{d:?} outside [{:?}, {linear:?}]",
                linear / 2
            );
            seen.insert(d);
        }
        assert!(seen.len() > 8, "jitter varies the pauses: {seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn again_counts_and_sleeps_the_growing_pause() {
        let mut b = Backoff::unbounded(20 * MS, 100 * MS);
        let t0 = tokio::time::Instant::now();
        for _ in 0..7 {
            b.again().await;
        }
        assert_eq!(b.attempts(), 7);
        // 20 + 40 + 60 + 80 + 100 + 100 + 100 ms, on the paused clock.
        assert_eq!(t0.elapsed(), 500 * MS);
    }

    #[test]
    fn every_pauses_the_same_without_a_bound() {
        let mut b = Backoff::every(500 * MS);
        for _ in 0..1_000 {
            assert!(b.begin());
            assert_eq!(b.delay(), 500 * MS);
        }
    }
}
