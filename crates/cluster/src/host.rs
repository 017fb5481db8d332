//! This node's shard replicas: the host opens a Raft replica for each shard the shard map
//! gives this node (the first replica listed initializes the group), closes and deletes the
//! ones it no longer gives it, and runs a shard's executor while this node leads the shard.
//!
//! A supervisor per replica starts the executor when this node becomes the leader (after
//! applying its log) and stops it as soon as it is not: when Raft says so, or when the
//! leader cannot confirm its leadership with a quorum within the lease.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::{BasicNode, ServerState};
use trellis_meta::placement::NodeRecord;
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;
use trellis_shard::executor::{Connectors, ExecutorConfig};
use trellis_shard::metrics::Metrics;
use trellis_shard::raft::LEADER_LEASE;
use trellis_shard::Executor;

use crate::shards::Replica;
use crate::{from_shard, ApiResult, Core, Result};

/// How far a replica's applied index may trail its log while the node counts as ready.
pub const READY_LAG: u64 = 100;

/// How long a leader transfer may keep a replica muted or unable to call elections; longer
/// than the transfer's own deadline (8 s).
const TRANSFER_GUARD: Duration = Duration::from_secs(10);

/// This node's replicas and their executors.
pub struct Host {
    core: Arc<Core>,
    /// What executors run tasks with.
    connectors: Arc<dyn Connectors>,
    /// What executors send their shard messages with.
    mail: Arc<dyn trellis_shard::outbox::Mailer>,
    /// What executors count into.
    metrics: Arc<Metrics>,
    /// Tells admission that something changed (a capped execution ended, a shard got a
    /// leader here).
    kick: Arc<tokio::sync::Notify>,
}

impl Host {
    pub(crate) fn new(
        core: Arc<Core>,
        connectors: Arc<dyn Connectors>,
        mail: Arc<dyn trellis_shard::outbox::Mailer>,
        metrics: Arc<Metrics>,
        kick: Arc<tokio::sync::Notify>,
    ) -> Host {
        Host {
            core,
            connectors,
            mail,
            metrics,
            kick,
        }
    }

    pub fn id(&self) -> u64 {
        self.core.id()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.core.stopping()
    }

    /// Whether this node's replicas are ready, or why not: the node knows the shard map,
    /// every shard replica it holds knows its leader and has applied its log (within
    /// [`READY_LAG`] entries), and every shard it leads runs its executor.
    pub fn readiness(&self) -> Result<(), String> {
        let cells = self.core.shards.cells();
        if cells.is_empty() {
            return Err("the shard map is not known yet".into());
        }
        for c in cells {
            let Some(r) = c.get() else { continue };
            let m = r.raft.metrics().borrow().clone();
            let applied = m.last_applied.map_or(0, |l| l.index);
            let logged = m.last_log_index.unwrap_or(0);
            match m.current_leader {
                None => return Err(format!("shard {} has no leader", r.shard)),
                Some(l) if l == self.id() && r.handle().is_none() => {
                    return Err(format!("shard {} has no executor yet", r.shard))
                }
                _ if logged.saturating_sub(applied) > READY_LAG => {
                    return Err(format!(
                        "shard {} has applied {applied} of {logged} log entries",
                        r.shard
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Stops every replica's executor and Raft group.
    pub(crate) async fn shutdown(&self) {
        for r in self.core.shards.replicas() {
            r.set_handle(None);
            let _ = r.raft.shutdown().await;
        }
    }

    /// Runs the detector on every shard this node leads and collects what it found.
    pub async fn doctor_here(&self) -> ApiResult<pb::DoctorReport> {
        let mut out = pb::DoctorReport::default();
        for (_, h) in self.core.shards.led() {
            let r = h.scan().await.map_err(from_shard)?;
            out.scanned_executions += r.scanned;
            out.findings
                .extend(r.findings.into_iter().map(|f| pb::Finding {
                    shard: f.shard,
                    kind: f.kind.into(),
                    execution_arn: f.execution_arn,
                    detail: f.detail,
                    repaired: f.repaired,
                }));
        }
        Ok(out)
    }

    /// Opens the replicas the shard map gives this node.
    pub(crate) async fn reconcile(self: &Arc<Self>) -> Result<()> {
        let map = self.core.meta.whole_shard_map()?;
        if map.is_empty() {
            return Ok(());
        }
        let cells = self.core.shards.init(map.len() as u32);
        let nodes: BTreeMap<u64, NodeRecord> = self
            .core
            .meta
            .nodes()?
            .into_iter()
            .map(|n| (n.id, n))
            .collect();
        let mut opening = tokio::task::JoinSet::new();
        for s in map {
            let Some(cell) = cells.get(s.id as usize) else {
                continue;
            };
            let wanted = s.replicas.contains(&self.id()) || s.learners.contains(&self.id());
            if !wanted {
                if let Some(rep) = cell.get() {
                    self.close_replica(&rep).await;
                    cell.clear();
                }
                continue;
            }
            if cell.get().is_some() {
                continue;
            }
            let members: BTreeMap<u64, BasicNode> = s
                .replicas
                .iter()
                .filter_map(|r| nodes.get(r).map(|n| (*r, BasicNode::new(n.peer()))))
                .collect();
            let first = s.replicas.first() == Some(&self.id());
            let host = self.clone();
            opening.spawn(async move {
                let r = host.open_replica(s.id, first.then_some(members)).await;
                (s.id, r)
            });
        }
        while let Some(r) = opening.join_next().await {
            let Ok((shard, r)) = r else {
                continue; // the opening task panicked or was cancelled: the next pass retries
            };
            if let Err(e) = r {
                tracing::warn!(node_id = self.id(), shard_id = shard, error = %e, "cannot open shard replica");
            }
        }
        Ok(())
    }

    /// Closes a replica the shard map no longer gives this node and deletes its data.
    async fn close_replica(&self, rep: &Replica) {
        let group = u64::from(rep.shard) + 1;
        tracing::info!(
            node_id = self.id(),
            shard_id = rep.shard,
            "closing a replica moved away"
        );
        rep.set_handle(None);
        let _ = rep.raft.shutdown().await;
        self.core.transport.unregister(group);
        if let Err(e) = self.core.db.drop_group(group) {
            tracing::warn!(node_id = self.id(), shard_id = rep.shard, error = %e, "dropping a moved replica's data");
        }
    }

    async fn open_replica(
        self: &Arc<Self>,
        shard: u32,
        initialize: Option<BTreeMap<u64, BasicNode>>,
    ) -> Result<()> {
        let group = u64::from(shard) + 1;
        let (raft, app) = trellis_shard::raft::open(
            &self.core.db,
            group,
            self.id(),
            self.core.transport.network(group),
            self.core.settings.cluster.snapshot_logs,
        )
        .await?;
        self.core.transport.register(group, Arc::new(raft.clone()));
        if let Some(members) = initialize {
            trellis_shard::raft::initialize(&raft, members).await?;
        }
        let rep = Arc::new(Replica::new(shard, raft, app));
        if let Some(cell) = self.core.shards.cells().get(shard as usize) {
            cell.set(rep.clone());
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(supervise(weak, rep));
        Ok(())
    }

    /// The settings of `shard`'s executor while this node leads it in `term`; none until
    /// this node's meta replica has the cluster's task-token key.
    fn executor_config(&self, shard: u32, term: u64) -> Option<ExecutorConfig> {
        let epoch = self.core.shard_record(shard).map_or(0, |s| s.epoch);
        let token_key = match self.core.token_key() {
            Ok(Some(k)) => k,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(node_id = self.id(), shard_id = shard, error = %e, "no task-token key");
                return None;
            }
        };
        let settings = &self.core.settings;
        Some(ExecutorConfig {
            shard,
            epoch,
            term,
            region: settings.region.clone(),
            account: settings.account.clone(),
            // A DISTRIBUTED Map's children are executions of their own, on their shards.
            limits: trellis_asl::Limits {
                child_executions: true,
                max_map_run_window: settings.cluster.map_run_max_concurrency,
                ..Default::default()
            },
            max_batch: settings.cluster.max_batch,
            // Every append (up to MAX_APPEND_ENTRIES entries) fits in a peer message.
            max_entry_bytes: settings.cluster.peer_max_message_bytes
                / trellis_shard::raft::MAX_APPEND_ENTRIES as usize,
            detector: Default::default(),
            effects_before_commit: settings.cluster.breaks_fencing(),
            metrics: self.metrics.clone(),
            express_max: std::time::Duration::from_secs(settings.cluster.express_max_seconds),
            max_live: settings.cluster.max_live_per_shard,
            token_key,
            retention: settings.cluster.retention(),
        })
    }

    /// The shards this node replicates, as it sees them.
    /// With `count_live`, the shards it leads also count their live executions (a scan of
    /// each shard's live records: for operators, not for the placement driver's rounds).
    pub fn local_shards(&self, count_live: bool) -> pb::ListShardsResponse {
        let map = self.core.meta.shard_map().unwrap_or_default();
        let shards = self
            .core
            .shards
            .replicas()
            .map(|r| {
                let m = r.raft.metrics().borrow().clone();
                let leading = r.handle();
                let epoch = map
                    .iter()
                    .find(|s| s.id == r.shard)
                    .map(|s| s.epoch)
                    .unwrap_or(0);
                let lag = m
                    .replication
                    .as_ref()
                    .map(|rep| {
                        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
                        rep.values()
                            .map(|v| applied.saturating_sub(v.map(|l| l.index).unwrap_or(0)))
                            .max()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0);
                pb::Shard {
                    id: r.shard,
                    leader: m.current_leader.unwrap_or(0),
                    replicas: m.membership_config.membership().voter_ids().collect(),
                    applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                    running_executions: if count_live && leading.is_some() {
                        r.app.live_count() as u64
                    } else {
                        0
                    },
                    epoch,
                    lag,
                    term: m.current_term,
                }
            })
            .collect();
        pb::ListShardsResponse { shards }
    }

    /// Runs a placement action on this node's replica of a shard.
    pub async fn shard_control_here(
        &self,
        r: rpb::ShardControl,
    ) -> ApiResult<rpb::ShardControlReply> {
        let rep = self
            .core
            .shards
            .replica(r.shard)
            .ok_or_else(|| ApiError::not_leader(None))?;
        let group = u64::from(r.shard) + 1;
        let raft_err = |e: String| ApiError::new(Code::ServiceUnavailable, e);
        let action = rpb::ShardAction::try_from(r.action).map_err(|_| {
            ApiError::new(
                Code::ValidationException,
                format!("unknown shard action {}", r.action),
            )
        })?;
        match action {
            // Both undo themselves after a while: a driver that dies mid-transfer must not
            // leave a shard unable to elect a leader.
            rpb::ShardAction::Mute => {
                // One transfer at a time: a second (another meta leader's driver, after the
                // meta leadership moved) would undo the first's mute halfway.
                if self.core.transport.is_muted_any(group) {
                    return Err(ApiError::new(
                        Code::ServiceUnavailable,
                        format!("a leader transfer of shard {} is under way", r.shard),
                    ));
                }
                match r.add {
                    0 => self.core.transport.mute(group, true),
                    to => self.core.transport.mute_except(group, to),
                }
                let transport = self.core.transport.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(TRANSFER_GUARD).await;
                    transport.mute(group, false);
                });
            }
            rpb::ShardAction::Unmute => self.core.transport.mute(group, false),
            rpb::ShardAction::ElectOff => {
                rep.raft.runtime_config().elect(false);
                let raft = rep.raft.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(TRANSFER_GUARD).await;
                    raft.runtime_config().elect(true);
                });
            }
            rpb::ShardAction::ElectOn => rep.raft.runtime_config().elect(true),
            rpb::ShardAction::ElectNow => {
                let m = rep.raft.metrics().borrow().clone();
                // A candidate already asks for votes: a new election now would only raise
                // the term and ask again.
                if m.current_leader != Some(self.id())
                    && m.state != openraft::ServerState::Candidate
                {
                    rep.raft
                        .trigger()
                        .elect()
                        .await
                        .map_err(|e| raft_err(e.to_string()))?;
                }
            }
            rpb::ShardAction::Lag => {
                let m = rep.raft.metrics().borrow().clone();
                if m.current_leader != Some(self.id()) {
                    return Err(ApiError::not_leader(m.current_leader));
                }
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|rep| rep.get(&r.add))
                    .cloned()
                    .flatten()
                    .map_or(0, |l| l.index);
                let last = m.last_log_index.unwrap_or(0);
                return Ok(rpb::ShardControlReply {
                    leader: self.id(),
                    term: m.current_term,
                    behind: last.saturating_sub(matched),
                });
            }
            rpb::ShardAction::Change => {
                let m = rep.raft.metrics().borrow().clone();
                if m.current_leader != Some(self.id()) {
                    return Err(ApiError::not_leader(m.current_leader));
                }
                let voters: BTreeSet<u64> = r.voters.iter().copied().collect();
                if r.add != 0 {
                    if let Err(e) = rep
                        .raft
                        .add_learner(r.add, BasicNode::new(&r.add_addr), true)
                        .await
                    {
                        let _ = rep
                            .raft
                            .change_membership(
                                openraft::ChangeMembers::RemoveNodes(BTreeSet::from([r.add])),
                                false,
                            )
                            .await;
                        return Err(raft_err(format!("adding a learner: {e}")));
                    }
                }
                rep.raft
                    .change_membership(voters, false)
                    .await
                    .map_err(|e| raft_err(format!("changing the voters: {e}")))?;
            }
        }
        let m = rep.raft.metrics().borrow().clone();
        Ok(rpb::ShardControlReply {
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            behind: 0,
        })
    }
}

/// Runs the shard's executor while this node leads the shard.
async fn supervise(host: Weak<Host>, rep: Arc<Replica>) {
    // Woken by leadership and membership changes only (not by every applied entry, which
    // would wake it once per commit); the lease is checked on a timer.
    let mut server = rep.raft.server_metrics();
    let metrics = rep.raft.metrics();
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let Some(n) = host.upgrade() else { break };
        if n.stopping() {
            break;
        }
        let me = n.id();
        let m = metrics.borrow().clone();
        let mut leading = m.state == ServerState::Leader && m.current_leader == Some(me);
        // The lease: a leader that has not heard from a quorum for a lease stops executing.
        let voters = m.membership_config.membership().voter_ids().count();
        let silent = m
            .millis_since_quorum_ack
            .is_some_and(|ms| ms > LEADER_LEASE.as_millis() as u64);
        if leading && voters > 1 && silent && !n.core.settings.cluster.breaks_fencing() {
            if running.is_some() {
                tracing::warn!(
                    node_id = me,
                    shard_id = rep.shard,
                    millis_since_quorum_ack = m.millis_since_quorum_ack,
                    "lost the quorum; executor stops"
                );
            }
            leading = false;
        }
        if running.as_ref().is_some_and(|h| h.is_finished()) {
            rep.set_handle(None);
            running = None;
        }
        if leading && running.is_none() {
            let applied = trellis_shard::raft::wait_applied(&rep.raft).await;
            if let Err(e) = &applied {
                tracing::warn!(node_id = me, shard_id = rep.shard, error = %e, "new leader cannot apply its log yet");
            }
            let cfg = applied
                .is_ok()
                .then(|| n.executor_config(rep.shard, m.current_term))
                .flatten();
            if let Some(cfg) = cfg {
                match Executor::new(
                    cfg,
                    rep.app.clone(),
                    Arc::new(rep.raft.clone()),
                    n.connectors.clone(),
                    n.mail.clone(),
                ) {
                    Ok((ex, handle)) => {
                        // A capped execution ending frees a slot for a queued one.
                        let ex = ex.on_capped_end(n.kick.clone());
                        let shard = rep.shard;
                        running = Some(tokio::spawn(async move {
                            if let Err(e) = ex.run().await {
                                tracing::info!(shard_id = shard, error = %e, "shard executor stopped");
                            }
                        }));
                        rep.set_handle(Some(handle));
                        let now = rep.raft.metrics().borrow().clone();
                        // Routine (every shard at start, and at each hand-over): DEBUG.
                        tracing::debug!(
                            node_id = me,
                            shard_id = rep.shard,
                            term = m.current_term,
                            last_log_index = now.last_log_index,
                            last_applied = now.last_applied.map(|l| l.index),
                            "leading the shard"
                        );
                        // Its queued executions may be admissible now.
                        n.kick.notify_one();
                    }
                    Err(e) => {
                        tracing::error!(node_id = me, shard_id = rep.shard, error = %e, "cannot start the executor")
                    }
                }
            }
        } else if !leading {
            if let Some(h) = running.take() {
                rep.set_handle(None);
                h.abort();
                let _ = h.await;
                tracing::debug!(
                    node_id = me,
                    shard_id = rep.shard,
                    "no longer leading the shard"
                );
            }
        }
        drop(n);
        tokio::select! {
            r = server.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(LEADER_LEASE / 4) => {}
        }
    }
    rep.set_handle(None);
    if let Some(h) = running {
        h.abort();
    }
}
