//! Retention: the leader deletes closed executions once their time has come, at a bounded
//! rate, through the shard's log ([`ShardOp::Expire`]), so every replica deletes the same.

use std::time::Duration;

use super::Executor;
use crate::request::{Expiry, ShardOp};
use crate::Result;

/// How long closed executions are kept, and how fast they are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// How long a closed execution is kept unless its state machine sets its own period;
    /// `None`: for ever (AWS: 90 days).
    pub keep: Option<Duration>,
    /// The most closed executions one shard deletes per second.
    pub per_second: u32,
    /// How often the leader looks for executions due.
    pub interval: Duration,
}

/// AWS keeps closed executions for 90 days.
pub const AWS_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: Some(AWS_RETENTION),
            per_second: 500,
            interval: Duration::from_secs(1),
        }
    }
}

impl RetentionConfig {
    /// Deletions one sweep may propose: a second's worth per second of interval.
    pub fn budget(&self) -> usize {
        let per_ms = f64::from(self.per_second) / 1000.0;
        ((per_ms * self.interval.as_millis() as f64).ceil() as usize).max(1)
    }
}

impl Executor {
    /// Queues the deletion of closed executions that are due (at most one sweep's budget)
    /// into the batch being built; returns how many are due in all that it saw. Executions
    /// that are live again (redriven) or still have messages to send are left: a stale index
    /// entry goes with the deletion of the ones due, and an execution whose messages wait is
    /// indexed again when they are delivered.
    pub(super) fn sweep(&mut self, now: i64) -> Result<usize> {
        let cfg = &self.cfg.retention;
        let budget = cfg.budget();
        let stopped_by = cfg
            .keep
            .map(|k| now.saturating_sub(i64::try_from(k.as_millis()).unwrap_or(i64::MAX)));
        // Look a little further than the budget, so executions that wait do not starve the
        // ones behind them.
        let due = self
            .app
            .closed_due(stopped_by, now, budget.saturating_mul(2))?;
        let seen = due.len();
        let mut expiring = Vec::new();
        for e in due {
            if expiring.len() >= budget {
                break;
            }
            if self.by_arn.contains_key(&e.arn) || self.mail.contains_key(&e.key.id()) {
                continue;
            }
            expiring.push(e);
        }
        self.expiring.extend(expiring);
        let m = &self.cfg.metrics;
        m.expiry_due.inc_by(seen as i64 - self.due_reported);
        self.due_reported = seen as i64;
        Ok(seen)
    }

    /// The op deleting what [`Executor::sweep`] queued, if anything; it goes last in its
    /// batch, after the records the batch writes.
    pub(super) fn expire_op(&mut self) -> Option<(ShardOp, usize)> {
        if self.expiring.is_empty() {
            return None;
        }
        let executions: Vec<Expiry> = std::mem::take(&mut self.expiring);
        let n = executions.len();
        Some((ShardOp::Expire { executions }, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_rate_over_the_interval_and_at_least_one() {
        let mut c = RetentionConfig::default();
        assert_eq!(c.budget(), 500);
        c.interval = Duration::from_millis(100);
        assert_eq!(c.budget(), 50);
        c.per_second = 1;
        assert_eq!(c.budget(), 1);
        c.per_second = 0;
        assert_eq!(c.budget(), 1);
    }
}
