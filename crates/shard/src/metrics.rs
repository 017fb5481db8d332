//! The executors' metrics. The node owns the Prometheus registry and registers one
//! [`Metrics`] in it ([`Metrics::register`]); every executor it runs counts into that one,
//! handed over in its [`crate::executor::ExecutorConfig`]. Nothing here is global.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::record::Status;

/// One label, e.g. `status="SUCCEEDED"`.
type Label = [(&'static str, &'static str); 1];

/// What the executors of one node count.
#[derive(Debug)]
pub struct Metrics {
    pub started: Counter,
    finished: Family<Label, Counter>,
    pub transitions: Counter,
    /// Standard executions running on the shards this node leads.
    pub running: Gauge,
    /// Of those, the ones waiting on timers only, kept out of memory (parked).
    pub parked: Gauge,
    /// Activity tasks queued and not taken by a worker.
    pub activity_backlog: Gauge,
    findings: Family<Label, Counter>,
    /// Executions per proposal.
    pub batch_size: Histogram,
    /// Seconds from proposing an entry until it is applied.
    pub apply_seconds: Histogram,
    /// Bytes of JSON per shard Raft entry proposed.
    pub entry_bytes: Histogram,
    /// Seconds a timer fired after its due time.
    pub timer_lag_seconds: Histogram,
    /// Messages to other shards written and not yet acknowledged ([`crate::outbox`]).
    pub outbox: Gauge,
    /// Seconds from handing an execution's messages to the mailer until they are applied.
    pub delivery_seconds: Histogram,
    /// Deliveries refused because the receiving shard ran as many executions as it may.
    pub deliveries_refused: Counter,
    /// DISTRIBUTED Map children started and finished on the shards this node leads.
    pub children_started: Counter,
    pub children_finished: Counter,
    /// Closed executions deleted by retention on the shards this node leads.
    pub expired: Counter,
    /// Closed executions found due for deletion and not yet deleted, at the last sweep of
    /// each shard this node leads (summed): more than a sweep's budget means retention is
    /// behind.
    pub expiry_due: Gauge,
}

const SIZES: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const BYTES: [f64; 9] = [
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];
const SECONDS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The kinds of detector findings.
pub const FINDINGS: [&str; 4] = [
    "STUCK_EXECUTION",
    "OVERDUE_TIMER",
    "UNDELIVERED_TASK",
    "EXPIRED_TOKEN",
];

impl Default for Metrics {
    /// Metrics that count but are not exposed (tests, tools).
    fn default() -> Self {
        Metrics {
            started: Counter::default(),
            finished: Family::default(),
            transitions: Counter::default(),
            running: Gauge::default(),
            parked: Gauge::default(),
            activity_backlog: Gauge::default(),
            findings: Family::default(),
            batch_size: Histogram::new(SIZES),
            apply_seconds: Histogram::new(SECONDS),
            entry_bytes: Histogram::new(BYTES),
            timer_lag_seconds: Histogram::new(SECONDS),
            outbox: Gauge::default(),
            delivery_seconds: Histogram::new(SECONDS),
            deliveries_refused: Counter::default(),
            children_started: Counter::default(),
            children_finished: Counter::default(),
            expired: Counter::default(),
            expiry_due: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Metrics registered in `registry` under their `trellis_` names.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "trellis_executions_started",
            "Standard executions started",
            m.started.clone(),
        );
        registry.register(
            "trellis_executions_finished",
            "Standard executions finished, by status",
            m.finished.clone(),
        );
        registry.register(
            "trellis_executions_running",
            "Standard executions running on shards this node leads",
            m.running.clone(),
        );
        registry.register(
            "trellis_executions_parked",
            "Running executions waiting on timers only, kept out of memory until one fires",
            m.parked.clone(),
        );
        registry.register(
            "trellis_state_transitions",
            "States entered",
            m.transitions.clone(),
        );
        registry.register(
            "trellis_activity_backlog",
            "Activity tasks queued and not taken by a worker",
            m.activity_backlog.clone(),
        );
        registry.register(
            "trellis_detector_findings",
            "What the stuck-execution detector found, by kind",
            m.findings.clone(),
        );
        registry.register(
            "trellis_proposal_batch_executions",
            "Executions per shard Raft proposal",
            m.batch_size.clone(),
        );
        registry.register(
            "trellis_raft_apply_seconds",
            "Time from proposing a shard entry to its apply",
            m.apply_seconds.clone(),
        );
        registry.register(
            "trellis_raft_entry_bytes",
            "Bytes of JSON per shard Raft entry proposed",
            m.entry_bytes.clone(),
        );
        registry.register(
            "trellis_timer_lag_seconds",
            "How late timers fire after their due time",
            m.timer_lag_seconds.clone(),
        );
        registry.register(
            "trellis_outbox_messages",
            "Messages to other shards not yet acknowledged, on shards this node leads",
            m.outbox.clone(),
        );
        registry.register(
            "trellis_outbox_delivery_seconds",
            "Time from sending an execution's messages to their receivers' commit",
            m.delivery_seconds.clone(),
        );
        registry.register(
            "trellis_outbox_deliveries_refused",
            "Deliveries a shard this node leads refused: it ran as many executions as it may",
            m.deliveries_refused.clone(),
        );
        registry.register(
            "trellis_map_children_started",
            "DISTRIBUTED Map child executions started on shards this node leads",
            m.children_started.clone(),
        );
        registry.register(
            "trellis_map_children_finished",
            "DISTRIBUTED Map child executions ended on shards this node leads",
            m.children_finished.clone(),
        );
        registry.register(
            "trellis_executions_expired",
            "Closed executions deleted by retention on shards this node leads",
            m.expired.clone(),
        );
        registry.register(
            "trellis_retention_due",
            "Closed executions past their retention and not yet deleted, on shards this node leads (as many as one sweep looks at)",
            m.expiry_due.clone(),
        );
        // Every label value shows from the start, at 0.
        for s in [
            Status::Succeeded,
            Status::Failed,
            Status::TimedOut,
            Status::Aborted,
        ] {
            drop(m.finished.get_or_create(&[("status", s.as_str())]));
        }
        for k in FINDINGS {
            drop(m.findings.get_or_create(&[("kind", k)]));
        }
        m
    }

    /// An execution ended with `status`.
    pub fn finished(&self, status: Status) {
        self.finished
            .get_or_create(&[("status", status.as_str())])
            .inc();
    }

    /// The detector found a `kind` (one of [`FINDINGS`]).
    pub fn finding(&self, kind: &'static str) {
        self.findings.get_or_create(&[("kind", kind)]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_keeps_the_metric_names() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.started.inc();
        m.finished(Status::Succeeded);
        m.running.inc();
        m.finding("OVERDUE_TIMER");
        m.apply_seconds.observe(0.002);
        m.outbox.inc_by(3);
        m.children_started.inc();
        m.expired.inc_by(2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "trellis_executions_started_total 1",
            "trellis_executions_finished_total{status=\"SUCCEEDED\"} 1",
            "trellis_executions_finished_total{status=\"FAILED\"} 0",
            "trellis_executions_running 1",
            "trellis_detector_findings_total{kind=\"OVERDUE_TIMER\"} 1",
            "trellis_raft_apply_seconds_count 1",
            "trellis_outbox_messages 3",
            "trellis_map_children_started_total 1",
            "trellis_map_children_finished_total 0",
            "trellis_executions_expired_total 2",
            "trellis_retention_due 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} is not in:\n{text}");
        }
    }
}
