//! Process-wide counters of every executor on the node, rendered by the node's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram with fixed upper bounds (Prometheus `le` buckets).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (i, b) in self.bounds.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{b}\"}} {}\n",
                self.buckets[i].load(Ordering::Relaxed)
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {count}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
    }
}

/// The node's executor metrics.
pub struct Metrics {
    pub started: AtomicU64,
    /// Finished executions by status: SUCCEEDED, FAILED, TIMED_OUT, ABORTED.
    pub finished: [AtomicU64; 4],
    pub transitions: AtomicU64,
    pub running: AtomicU64,
    pub activity_backlog: AtomicU64,
    /// Detector findings by kind (see [`FINDINGS`]).
    pub findings: [AtomicU64; 4],
    /// Executions per proposal.
    pub batch_size: Histogram,
    /// Seconds from proposing an entry until it is applied.
    pub apply_seconds: Histogram,
    /// Seconds a timer fired after its due time.
    pub timer_lag_seconds: Histogram,
    /// Snapshot chunks this node received from shard and meta leaders.
    pub snapshot_chunks_received: AtomicU64,
}

const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub const FINISHED: [&str; 4] = ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"];

pub const FINDINGS: [&str; 4] = [
    "STUCK_EXECUTION",
    "OVERDUE_TIMER",
    "UNDELIVERED_TASK",
    "EXPIRED_TOKEN",
];

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    M.get_or_init(|| Metrics {
        started: AtomicU64::new(0),
        finished: Default::default(),
        transitions: AtomicU64::new(0),
        running: AtomicU64::new(0),
        activity_backlog: AtomicU64::new(0),
        findings: Default::default(),
        batch_size: Histogram::new(SIZES),
        apply_seconds: Histogram::new(SECONDS),
        timer_lag_seconds: Histogram::new(SECONDS),
        snapshot_chunks_received: AtomicU64::new(0),
    })
}

impl Metrics {
    pub fn finding(&self, kind: &str) {
        if let Some(i) = FINDINGS.iter().position(|k| *k == kind) {
            self.findings[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        };
        counter(
            &mut out,
            "trellis_executions_started_total",
            "Standard executions started.",
            self.started.load(Ordering::Relaxed),
        );
        out.push_str("# HELP trellis_executions_finished_total Standard executions finished, by status.\n# TYPE trellis_executions_finished_total counter\n");
        for (i, s) in FINISHED.iter().enumerate() {
            out.push_str(&format!(
                "trellis_executions_finished_total{{status=\"{s}\"}} {}\n",
                self.finished[i].load(Ordering::Relaxed)
            ));
        }
        gauge(
            &mut out,
            "trellis_executions_running",
            "Standard executions running on shards this node leads.",
            self.running.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "trellis_raft_snapshot_chunks_received_total",
            "Raft snapshot chunks received (a replica too far behind catches up by snapshot).",
            self.snapshot_chunks_received.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "trellis_state_transitions_total",
            "States entered.",
            self.transitions.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "trellis_activity_backlog",
            "Activity tasks queued and not taken by a worker.",
            self.activity_backlog.load(Ordering::Relaxed),
        );
        out.push_str("# HELP trellis_detector_findings_total What the stuck-execution detector found, by kind.\n# TYPE trellis_detector_findings_total counter\n");
        for (i, k) in FINDINGS.iter().enumerate() {
            out.push_str(&format!(
                "trellis_detector_findings_total{{kind=\"{k}\"}} {}\n",
                self.findings[i].load(Ordering::Relaxed)
            ));
        }
        self.batch_size.render(
            "trellis_proposal_batch_executions",
            "Executions per shard Raft proposal.",
            &mut out,
        );
        self.apply_seconds.render(
            "trellis_raft_apply_seconds",
            "Time from proposing a shard entry to its apply.",
            &mut out,
        );
        self.timer_lag_seconds.render(
            "trellis_timer_lag_seconds",
            "How late timers fire after their due time.",
            &mut out,
        );
        out
    }
}
