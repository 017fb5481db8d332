//! Per-principal rate limits: token buckets, one per principal and class of call, on each
//! node. The clock is passed in, so tests need no waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateSection;

/// Which bucket a call takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// StartExecution, StartSyncExecution.
    Start,
    Other,
}

impl Class {
    pub fn of(action: &str) -> Class {
        match action {
            "states:StartExecution" | "states:StartSyncExecution" => Class::Start,
            _ => Class::Other,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of a node's principals. Bounded: one per principal the node knows and
/// class (and cleared when the principals are reloaded).
pub struct Buckets {
    cfg: RateSection,
    state: Mutex<HashMap<(String, Class), Bucket>>,
}

impl Buckets {
    pub fn new(cfg: RateSection) -> Buckets {
        Buckets {
            cfg,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `principal`'s bucket of `class`, if it has one at `now`.
    pub fn take(&self, principal: &str, class: Class, now: Instant) -> bool {
        let (burst, rate) = match class {
            Class::Start => (self.cfg.start_burst, self.cfg.start_per_second),
            Class::Other => (self.cfg.other_burst, self.cfg.other_per_second),
        };
        let (burst, rate) = (f64::from(burst), f64::from(rate));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let b = state
            .entry((principal.to_string(), class))
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now.max(b.at);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn clear(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_empties_and_refills_at_its_rate() {
        let b = Buckets::new(RateSection {
            start_burst: 5,
            start_per_second: 2,
            other_burst: 1,
            other_per_second: 1,
        });
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| b.take("a", Class::Start, t0)).count(), 5);
        // Another class and another principal have buckets of their own.
        assert!(b.take("a", Class::Other, t0) && !b.take("a", Class::Other, t0));
        assert!(b.take("b", Class::Start, t0));
        // Half a second later: one more start; after ten seconds, the burst and no more.
        assert!(b.take("a", Class::Start, t0 + Duration::from_millis(500)));
        assert!(!b.take("a", Class::Start, t0 + Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            (0..8).filter(|_| b.take("a", Class::Start, later)).count(),
            5
        );
        // A clock read out of order never adds tokens.
        assert!(!b.take("a", Class::Start, t0));
    }
}
