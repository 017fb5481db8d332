//! The per-state-machine cap on concurrent executions, enforced cluster-wide by the meta
//! leader.
//!
//! A capped machine's executions start `QUEUED` on their shards. Nothing but the meta
//! leader's admission rounds turns them `RUNNING`:
//!
//! 1. A round asks every node for an [`rpb::AdmissionReport`]: per capped machine, the
//!    running count and the queued executions (oldest first) of the shards whose executors
//!    it runs. Executors answer after their current batch commits, so a report describes
//!    committed state.
//! 2. For each machine with queued executions, the round admits the oldest ones that fit
//!    under the cap, each on its shard's leader. A machine is skipped while some shard's
//!    executor did not report (a leader being elected): its count is unknown.
//! 3. Rounds run one at a time, so an admission is counted by the next round's reports.
//!
//! Rounds are started by kicks: a capped start (which waits for the round, so the execution
//! it returns is already admitted when the cap allows), a capped execution ending, a node
//! starting to lead a shard; and by a timer (every second while executions wait, every 10 s
//! otherwise), which covers kicks lost with a meta leader.
//!
//! The count is exact while one meta leader runs rounds. A deposed meta leader stops
//! starting rounds when it learns of its successor; a round it had begun can still admit, so
//! in the seconds of a meta-leader change the cap can be exceeded by that round's admissions
//! at most.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use trellis_meta::records::MachineRecord;
use trellis_proto::raft as rpb;

use crate::router::Router;
use crate::{from_shard, ApiResult, Core};

/// Most queued executions one shard reports per machine.
const REPORT_QUEUED: usize = 1_000;

/// How long a capped start waits for the admission round it asked for.
const START_WAIT: Duration = Duration::from_secs(5);

/// The admission state of a node (its rounds run on the meta leader).
pub struct Admission {
    core: Arc<Core>,
    router: Arc<Router>,
    /// Something here changed: tell the meta leader.
    kick: Arc<tokio::sync::Notify>,
    /// A kick reached this node as meta leader: run a round.
    wake: Arc<tokio::sync::Notify>,
    /// Rounds begun, and (watched) rounds finished.
    begun: AtomicU64,
    finished: tokio::sync::watch::Sender<u64>,
}

impl Admission {
    pub(crate) fn new(core: Arc<Core>, router: Arc<Router>) -> Admission {
        Admission {
            core,
            router,
            kick: Default::default(),
            wake: Default::default(),
            begun: AtomicU64::new(0),
            finished: tokio::sync::watch::channel(0).0,
        }
    }

    fn id(&self) -> u64 {
        self.core.id()
    }

    /// What asks the meta leader for a round soon, without waiting for it (executors
    /// signal capped ends with it).
    pub(crate) fn kicker(&self) -> Arc<tokio::sync::Notify> {
        self.kick.clone()
    }

    /// Asks the meta leader for an admission round and waits (bounded) until it has run.
    pub async fn admit_now(&self) {
        if !self.send_kick(true, START_WAIT).await {
            // The timer round admits it later.
            tracing::debug!(node_id = self.id(), "admission round not confirmed");
        }
    }

    /// Asks the meta leader (this node or another) for a round, waiting for it with `wait`.
    /// Whether it was delivered within `limit`.
    async fn send_kick(&self, wait: bool, limit: Duration) -> bool {
        let kick = rpb::AdmissionKick { wait };
        let sent = tokio::time::timeout(limit, async {
            match self.core.meta.leader() {
                Some(l) => self.router.call(l, kick).await.map(drop),
                None => Ok(()),
            }
        })
        .await;
        matches!(sent, Ok(Ok(())))
    }

    /// On the meta leader: starts a round; with `wait`, returns once a round that began
    /// after this call has finished.
    pub(crate) async fn kick_here(&self, kick: rpb::AdmissionKick) -> ApiResult<()> {
        let want = self.begun.load(Ordering::SeqCst) + 1;
        let mut finished = self.finished.subscribe();
        self.wake.notify_one();
        if kick.wait {
            let _ = finished.wait_for(|f| *f >= want).await;
        }
        Ok(())
    }

    /// What the executors on this node hold of capped executions.
    pub(crate) async fn report_here(&self) -> rpb::AdmissionReport {
        let handles = self.core.shards.led();
        let asks = handles.iter().map(|(_, h)| async move {
            tokio::time::timeout(Duration::from_secs(2), h.capped()).await
        });
        let mut out = rpb::AdmissionReport::default();
        let mut machines: BTreeMap<String, rpb::CappedMachine> = BTreeMap::new();
        for ((shard, _), r) in handles.iter().zip(join_all(asks).await) {
            let Ok(Ok(capped)) = r else { continue };
            out.shards.push(*shard);
            for c in capped {
                let m = machines
                    .entry(c.state_machine_arn.clone())
                    .or_insert_with(|| rpb::CappedMachine {
                        state_machine_arn: c.state_machine_arn.clone(),
                        ..Default::default()
                    });
                m.running += c.running;
                m.queued
                    .extend(c.queued.into_iter().take(REPORT_QUEUED).map(
                        |(start_ms, execution_arn)| rpb::QueuedExecution {
                            start_ms,
                            execution_arn,
                        },
                    ));
            }
        }
        out.machines = machines.into_values().collect();
        out
    }

    /// Runs on every node: passes this node's kicks to the meta leader and, while this node
    /// is the meta leader, runs the admission rounds.
    pub(crate) fn spawn(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let kick = self.kick.clone();
        tokio::spawn(async move {
            loop {
                // The timeout only lets the task notice that the node is gone.
                if tokio::time::timeout(Duration::from_secs(10), kick.notified())
                    .await
                    .is_err()
                {
                    if weak.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
                let Some(a) = weak.upgrade() else { return };
                if !a.send_kick(false, Duration::from_secs(2)).await {
                    tracing::debug!(node_id = a.id(), "admission kick not delivered");
                }
            }
        });
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            let mut waiting = true;
            loop {
                let period = Duration::from_secs(if waiting { 1 } else { 10 });
                let _ = tokio::time::timeout(period, wake.notified()).await;
                let Some(a) = weak.upgrade() else { return };
                if a.core.stopping() {
                    return;
                }
                let round = a.begun.fetch_add(1, Ordering::SeqCst) + 1;
                if a.core.meta.leader() == Some(a.id()) {
                    match a.round().await {
                        Ok(w) => waiting = w,
                        Err(e) => {
                            waiting = true;
                            tracing::debug!(node_id = a.id(), error = %e, "admission round");
                        }
                    }
                }
                a.finished.send_replace(round);
            }
        });
    }

    /// One round: counts every capped machine's executions across the cluster and admits
    /// the oldest queued ones that fit. Returns whether executions still wait.
    async fn round(&self) -> ApiResult<bool> {
        let me = self.id();
        let reports: Vec<rpb::AdmissionReport> = self
            .router
            .fan_out(rpb::AdmissionReportRequest {}, Some(Duration::from_secs(2)))
            .await
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect();
        let covered: HashSet<u32> = reports
            .iter()
            .flat_map(|r| r.shards.iter().copied())
            .collect();
        let complete = covered.len() as u32 >= self.core.shards.count();
        let mut machines: BTreeMap<String, (u64, Vec<(i64, String)>)> = BTreeMap::new();
        for m in reports.into_iter().flat_map(|r| r.machines) {
            let e = machines.entry(m.state_machine_arn).or_default();
            e.0 += m.running;
            e.1.extend(m.queued.into_iter().map(|q| (q.start_ms, q.execution_arn)));
        }
        let mut waiting = false;
        let mut admit = Vec::new();
        for (machine, (running, mut queued)) in machines {
            if queued.is_empty() {
                continue;
            }
            let cap = self.cap(&machine);
            if cap > 0 && !complete {
                waiting = true;
                continue;
            }
            let room = if cap == 0 {
                queued.len()
            } else {
                cap.saturating_sub(running) as usize
            };
            queued.sort_unstable();
            waiting |= queued.len() > room;
            admit.extend(queued.into_iter().take(room).map(|(_, arn)| arn));
        }
        let admits = admit.iter().map(|arn| self.admit_execution(arn));
        for (arn, r) in admit.iter().zip(join_all(admits).await) {
            if let Err(e) = r {
                waiting = true;
                tracing::warn!(node_id = me, execution_id = %arn, error = %e, "admitting a queued execution failed");
            }
        }
        Ok(waiting)
    }

    /// Lets a queued execution run, on its shard's leader.
    async fn admit_execution(&self, arn: &str) -> ApiResult<()> {
        let shard = self.core.shards.shard_of(arn)?;
        let r = rpb::AdmitRequest {
            execution_arn: arn.to_string(),
        };
        self.router.on_shard(shard, r).await.map(drop)
    }

    pub(crate) async fn admit_here(&self, arn: &str) -> ApiResult<()> {
        self.core
            .shards
            .local(arn)?
            .admit(arn)
            .await
            .map_err(from_shard)
    }

    /// The cap of a state machine (0 = none).
    fn cap(&self, machine_arn: &str) -> u64 {
        self.core
            .meta
            .app
            .record::<MachineRecord>(machine_arn)
            .ok()
            .flatten()
            .map_or(0, |m| u64::from(m.max_concurrent_executions))
    }
}
