//! The stuck-execution detector: every executor scans its live executions now and then,
//! repairs what it can and reports every finding.

use std::time::Duration;

use super::*;

/// When the detector calls something wrong.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// How often each executor scans its executions.
    pub interval: Duration,
    /// A timer this late is overdue.
    pub overdue_after: Duration,
    /// A connector task without a result for this long is dispatched again.
    pub undelivered_after: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            interval: Duration::from_secs(30),
            overdue_after: Duration::from_secs(5),
            undelivered_after: Duration::from_secs(300),
        }
    }
}

/// Something the detector found.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub shard: u32,
    /// `STUCK_EXECUTION`, `OVERDUE_TIMER`, `UNDELIVERED_TASK` or `EXPIRED_TOKEN`.
    pub kind: &'static str,
    pub execution_arn: String,
    pub detail: String,
    pub repaired: bool,
}

/// The result of one scan.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    pub scanned: u64,
    pub findings: Vec<Finding>,
}

impl Executor {
    /// The detector: looks at every live execution for what should not be, repairs what it
    /// can, and reports everything.
    ///
    /// * `STUCK_EXECUTION`: running, not paused, and waiting for nothing (no timer, no task).
    ///   Reported; nothing safe can be done automatically.
    /// * `OVERDUE_TIMER`: a pending timer past its due time by more than `overdue_after`, or
    ///   one missing from the timer wheel. Repaired: it fires (or is re-armed).
    /// * `UNDELIVERED_TASK`: a connector task whose result has not come back within
    ///   `undelivered_after`, or that was never dispatched. Repaired: dispatched again
    ///   (side effects are at-least-once).
    /// * `EXPIRED_TOKEN`: a token task (activity or callback) still pending after its
    ///   `TimeoutSeconds` without a timeout timer. Repaired: it fails with `States.Timeout`.
    pub(super) fn detect(&mut self, now: i64) -> ScanReport {
        let cfg = self.cfg.detector.clone();
        let overdue = cfg.overdue_after.as_millis() as i64;
        let undelivered = cfg.undelivered_after.as_millis() as i64;
        let parked = self.wake_for_scan(now, overdue);
        let armed: HashSet<(u64, u64)> = self.timers.iter().map(|t| (t.1, t.2)).collect();
        let mut report = ScanReport {
            scanned: parked as u64,
            ..ScanReport::default()
        };
        let mut fire = Vec::new();
        let mut rearm = Vec::new();
        let mut redispatch = Vec::new();
        let mut expire = Vec::new();
        let shard = self.cfg.shard;
        let mut ids: Vec<u64> = self.live.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(live) = self.live.get(&id) else {
                continue;
            };
            if live.rec.status.is_terminal() {
                continue;
            }
            report.scanned += 1;
            let arn = live.rec.arn.clone();
            let mut finding = |kind, detail: String, repaired| {
                report.findings.push(Finding {
                    shard,
                    kind,
                    execution_arn: arn.clone(),
                    detail,
                    repaired,
                })
            };
            let timers: Vec<u64> = live.exec.pending_timers().collect();
            let tasks: Vec<u64> = live.exec.pending_tasks().collect();
            let queued = live.rec.status == Status::Queued;
            let children = live.exec.pending_children().next().is_some();
            if timers.is_empty() && tasks.is_empty() && !children && !live.rec.paused && !queued {
                finding(
                    "STUCK_EXECUTION",
                    "running, not paused, and waiting for no timer, task or child execution".into(),
                    false,
                );
            }
            for (timer, due) in &live.rec.timers {
                if now - due > overdue {
                    finding(
                        "OVERDUE_TIMER",
                        format!("timer {timer} was due {} ms ago; fired", now - due),
                        true,
                    );
                    fire.push((id, *timer));
                } else if !armed.contains(&(id, *timer)) {
                    finding(
                        "OVERDUE_TIMER",
                        format!(
                            "timer {timer} (due in {} ms) was not armed; re-armed",
                            due - now
                        ),
                        true,
                    );
                    rearm.push((id, *timer, *due));
                }
            }
            for (task, t) in &live.rec.tasks {
                if t.activity.is_none() && !t.started {
                    match self.dispatched.get(&(id, *task)) {
                        Some(at) if now - at <= undelivered => {}
                        Some(at) => {
                            finding(
                                "UNDELIVERED_TASK",
                                format!("task {task} ({}) has had no result for {} ms; dispatched again", t.request.resource_arn, now - at),
                                true,
                            );
                            redispatch.push((id, t.request.clone()));
                        }
                        None => {
                            finding(
                                "UNDELIVERED_TASK",
                                format!(
                                    "task {task} ({}) was never dispatched; dispatched",
                                    t.request.resource_arn
                                ),
                                true,
                            );
                            redispatch.push((id, t.request.clone()));
                        }
                    }
                }
                if t.token.is_some() {
                    if let (Some(timeout), Some(at)) = (
                        t.request.timeout_seconds,
                        self.dispatched
                            .get(&(id, *task))
                            .copied()
                            .or(Some(live.rec.start_ms)),
                    ) {
                        let deadline = at + (timeout as i64) * 1000 + overdue;
                        let has_timer = !live.rec.timers.is_empty();
                        if now > deadline && !has_timer {
                            finding(
                                "EXPIRED_TOKEN",
                                format!("task {task} passed its {timeout} s timeout with no timeout timer; failed with States.Timeout"),
                                true,
                            );
                            expire.push((id, *task));
                        }
                    }
                }
            }
        }
        for (id, timer) in fire {
            self.timers.retain(|t| !(t.1 == id && t.2 == timer));
            self.feed(id, Input::TimerFired { timer_id: timer }, now);
        }
        for (id, timer, due) in rearm {
            self.timers.insert((due, id, timer));
        }
        for (id, task) in redispatch {
            self.effects.push(Effect::Dispatch(id, task));
        }
        for (id, task) in expire {
            self.feed(
                id,
                Input::TaskFailed {
                    task_id: task,
                    error: Some(trellis_asl::error::names::TIMEOUT.into()),
                    cause: Some("The task token expired (found by the detector)".into()),
                },
                now,
            );
        }
        self.dispatched.retain(|(e, t), _| {
            self.live
                .get(e)
                .is_some_and(|l| l.rec.tasks.contains_key(t))
        });
        let m = &self.cfg.metrics;
        for f in &report.findings {
            m.finding(f.kind);
        }
        report
    }
}
