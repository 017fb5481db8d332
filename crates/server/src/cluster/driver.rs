//! The placement driver's actuator, on the meta leader: liveness, then the steps
//! `trellis_meta::placement::plan` asks for, one shard at a time each.
//!
//! * **Move** (add `to`, drop `from`): the shard map names `to` as a learner, so `to` opens
//!   a replica; the shard's leader adds it as a Raft learner and waits until it caught up,
//!   then makes the new voter set; the map then records the new replicas (epoch + 1) and the
//!   node left out closes its replica and deletes its data.
//! * **Transfer leader** (openraft 0.9 has no transfer): the other followers stop calling
//!   elections, the old leader stops sending for the shard, and the target calls elections
//!   until it wins, which it does once the followers' leases on the old leader end (about
//!   1.6 s); then everything is switched back on.
//! * **Liveness.** The driver pings every node each second; a node silent for
//!   `cluster.down_after_seconds` is down and its replicas are re-created elsewhere. A new
//!   meta leader starts every node's clock afresh.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use serde_json::json;
use trellis_meta::placement::{self, NodeState, NodeView, ShardRecord, ShardView, Step};
use trellis_meta::{MetaOp, Table};
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;

use crate::node::{from_meta, internal, ApiResult, Node};
use futures::future::join_all;

/// Placement steps in flight at once.
const BUDGET: usize = 4;

/// How long a leader transfer may keep a replica muted or unable to call elections; longer
/// than the transfer's own deadline (8 s).
const TRANSFER_GUARD: Duration = Duration::from_secs(10);

impl Node {
    /// One round of the driver (on the meta leader).
    pub(crate) async fn placement_tick(&self) -> ApiResult<Vec<Step>> {
        let views = self.node_views().await?;
        let paused = self.placement_paused();
        let map = self.meta.shard_map().map_err(from_meta)?;
        if map.is_empty() || paused {
            return Ok(Vec::new());
        }
        let shards = self.shard_views(false).await?.shards;
        let moving = self.moving().clone();
        let shard_views: Vec<ShardView> = map
            .iter()
            .map(|s| ShardView {
                id: s.id,
                replicas: s.replicas.clone(),
                learners: s.learners.clone(),
                leader: shards
                    .iter()
                    .find(|x| x.id == s.id)
                    .map(|x| x.leader)
                    .filter(|l| *l != 0),
                moving: moving.contains(&s.id),
            })
            .collect();
        let budget = BUDGET.saturating_sub(moving.len());
        Ok(placement::plan(
            &views,
            &shard_views,
            self.cfg.cluster.replication_factor as usize,
            budget,
        ))
    }

    /// The nodes with their liveness as this (meta leader) node sees it.
    async fn node_views(&self) -> ApiResult<Vec<NodeView>> {
        let nodes = self.meta.nodes().map_err(from_meta)?;
        let pings = nodes.iter().map(|n| async move {
            if n.id == self.id() || n.state == NodeState::Removed {
                return true;
            }
            let Ok(mut c) = self.peer_client(n.id) else {
                return false;
            };
            let ping = c.ping(rpb::PingRequest { from: self.id() });
            matches!(
                tokio::time::timeout(Duration::from_millis(800), ping).await,
                Ok(Ok(_))
            )
        });
        let alive = join_all(pings).await;
        let grace = Duration::from_secs(self.cfg.cluster.down_after_seconds);
        let now = Instant::now();
        let mut seen = self.last_seen();
        Ok(nodes
            .into_iter()
            .zip(alive)
            .map(|(n, alive)| {
                let last = seen.entry(n.id).or_insert(now);
                if alive {
                    *last = now;
                }
                NodeView {
                    down: now.duration_since(*last) > grace,
                    id: n.id,
                    zone: n.zone,
                    state: n.state,
                    alive,
                }
            })
            .collect())
    }

    pub(crate) fn placement_paused(&self) -> bool {
        self.meta
            .app
            .get(Table::Settings, "placementPaused")
            .ok()
            .flatten()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// Starts the steps in the background (each shard at most once at a time).
    pub(crate) fn launch(self: &std::sync::Arc<Self>, steps: Vec<Step>) {
        for step in steps {
            if !self.moving().insert(step.shard()) {
                continue;
            }
            let node = self.clone();
            tokio::spawn(async move {
                tracing::info!(node_id = node.id(), step = ?step, "placement step");
                if let Err(e) = node.run_step(&step).await {
                    tracing::warn!(node_id = node.id(), step = ?step, error = %e, "placement step failed");
                }
                node.moving().remove(&step.shard());
            });
        }
    }

    pub(crate) async fn run_step(&self, step: &Step) -> ApiResult<()> {
        match *step {
            Step::Move { shard, from, to } => self.move_replica(shard, from, Some(to)).await,
            Step::Remove { shard, from } => self.move_replica(shard, Some(from), None).await,
            Step::TransferLeader { shard, from, to } => self.transfer_leader(shard, from, to).await,
        }
    }

    pub(crate) fn shard_record(&self, shard: u32) -> ApiResult<ShardRecord> {
        self.meta
            .shard_map()
            .map_err(from_meta)?
            .into_iter()
            .find(|s| s.id == shard)
            .ok_or_else(|| {
                ApiError::new(
                    Code::ResourceNotFound,
                    format!("Resource Not Found: 'shard {shard}'"),
                )
            })
    }

    async fn put_shard(&self, rec: &ShardRecord) -> ApiResult<()> {
        self.meta
            .write(vec![MetaOp::Put {
                table: Table::Shards,
                key: placement::shard_key(rec.id),
                value: serde_json::to_value(rec).map_err(internal)?,
            }])
            .await
            .map_err(from_meta)
    }

    /// Adds a replica on `to` and/or removes the one on `from`.
    async fn move_replica(&self, shard: u32, from: Option<u64>, to: Option<u64>) -> ApiResult<()> {
        let mut rec = self.shard_record(shard)?;
        let mut voters: BTreeSet<u64> = rec.replicas.iter().copied().collect();
        if let Some(f) = from {
            voters.remove(&f);
        }
        let mut add_addr = String::new();
        if let Some(t) = to {
            voters.insert(t);
            add_addr = self
                .meta
                .nodes()
                .map_err(from_meta)?
                .into_iter()
                .find(|n| n.id == t)
                .map(|n| n.peer().to_string())
                .ok_or_else(|| ApiError::new(Code::ValidationException, format!("no node {t}")))?;
            rec.learners = vec![t];
            rec.epoch += 1;
            self.put_shard(&rec).await?;
        }
        let req = rpb::ShardControl {
            shard,
            action: rpb::ShardAction::Change as i32,
            add: to.unwrap_or(0),
            add_addr,
            voters: voters.iter().copied().collect(),
        };
        let changed = self.on_shard(shard, req).await;
        let mut rec = self.shard_record(shard)?;
        rec.learners.clear();
        rec.epoch += 1;
        if changed.is_ok() {
            // The map keeps the order of the old replicas; a newcomer goes last.
            let mut replicas: Vec<u64> = rec
                .replicas
                .iter()
                .copied()
                .filter(|r| voters.contains(r))
                .collect();
            let fresh: Vec<u64> = voters
                .iter()
                .copied()
                .filter(|v| !replicas.contains(v))
                .collect();
            replicas.extend(fresh);
            rec.replicas = replicas;
        }
        self.put_shard(&rec).await?;
        changed.map(drop)
    }

    /// Hands the leadership of `shard` from `from` to `to`.
    async fn transfer_leader(&self, shard: u32, from: u64, to: u64) -> ApiResult<()> {
        let rec = self.shard_record(shard)?;
        if !rec.replicas.contains(&to) {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("node {to} holds no replica of shard {shard}"),
            ));
        }
        let others: Vec<u64> = rec
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != from && *r != to)
            .collect();
        let control = |node: u64, action: rpb::ShardAction| async move {
            let req = rpb::ShardControl {
                shard,
                action: action as i32,
                ..Default::default()
            };
            if node == self.id() {
                self.shard_control_here(req).await
            } else {
                self.forward(node, req).await
            }
        };
        for o in &others {
            let _ = control(*o, rpb::ShardAction::ElectOff).await;
        }
        let _ = control(from, rpb::ShardAction::Mute).await;
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut result = Err(ApiError::new(
            Code::ServiceUnavailable,
            format!("node {to} did not take the leadership of shard {shard} in time"),
        ));
        while Instant::now() < deadline {
            match control(to, rpb::ShardAction::ElectNow).await {
                Ok(r) if r.leader == to => {
                    result = Ok(());
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let _ = control(from, rpb::ShardAction::Unmute).await;
        for o in &others {
            let _ = control(*o, rpb::ShardAction::ElectOn).await;
        }
        result
    }

    /// Runs a placement action on this node's replica of a shard.
    pub(crate) async fn shard_control_here(
        &self,
        r: rpb::ShardControl,
    ) -> ApiResult<rpb::ShardControlReply> {
        let rep = self
            .shards()
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
                self.transport.mute(group, true);
                let transport = self.transport.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(TRANSFER_GUARD).await;
                    transport.mute(group, false);
                });
            }
            rpb::ShardAction::Unmute => self.transport.mute(group, false),
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
                if m.current_leader != Some(self.id()) {
                    rep.raft
                        .trigger()
                        .elect()
                        .await
                        .map_err(|e| raft_err(e.to_string()))?;
                }
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
        })
    }

    // ------------------------------------------------------------ operator calls

    /// Sets a node's state (DRAINING, or REMOVED once it holds nothing).
    pub(crate) async fn set_node_state_here(&self, id: u64, state: NodeState) -> ApiResult<()> {
        let mut nodes = self.meta.nodes().map_err(from_meta)?;
        let Some(n) = nodes.iter_mut().find(|n| n.id == id) else {
            return Err(ApiError::new(
                Code::ResourceNotFound,
                format!("Resource Not Found: 'node {id}'"),
            ));
        };
        if state == NodeState::Removed {
            let held = self
                .meta
                .shard_map()
                .map_err(from_meta)?
                .iter()
                .filter(|s| s.replicas.contains(&id) || s.learners.contains(&id))
                .count();
            if held > 0 {
                return Err(ApiError::new(
                    Code::ValidationException,
                    format!("node {id} still holds {held} shard replicas; drain it first"),
                ));
            }
            let m = self.meta.raft.metrics().borrow().clone();
            let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
            let change = if voters.contains(&id) {
                let mut v = voters.clone();
                v.remove(&id);
                if v.is_empty() {
                    return Err(ApiError::new(
                        Code::ValidationException,
                        "cannot remove the last meta voter",
                    ));
                }
                self.meta.raft.change_membership(v, false).await
            } else {
                self.meta
                    .raft
                    .change_membership(
                        openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                        false,
                    )
                    .await
            };
            change.map_err(|e| ApiError::new(Code::ServiceUnavailable, e.to_string()))?;
        }
        n.state = state;
        let rec = n.clone();
        self.meta_put(
            Table::Nodes,
            placement::node_key(id),
            serde_json::to_value(&rec).map_err(internal)?,
        )
        .await
    }

    pub(crate) async fn set_placement_paused_here(&self, paused: bool) -> ApiResult<()> {
        self.meta_put(Table::Settings, "placementPaused", json!(paused))
            .await
    }

    /// The steps due now, started; for `trellisctl shards rebalance`.
    pub(crate) async fn rebalance_here(
        self: &std::sync::Arc<Self>,
    ) -> ApiResult<pb::RebalanceResponse> {
        let steps = self.placement_tick().await?;
        let lines = steps.iter().map(describe).collect();
        self.launch(steps);
        Ok(pb::RebalanceResponse { steps: lines })
    }

    pub(crate) fn moving(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.moving_set().lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A step as an operator reads it.
pub fn describe(s: &Step) -> String {
    match s {
        Step::Move {
            shard,
            from: Some(f),
            to,
        } => format!("move shard {shard} from node {f} to node {to}"),
        Step::Move {
            shard,
            from: None,
            to,
        } => format!("add a replica of shard {shard} on node {to}"),
        Step::Remove { shard, from } => {
            format!("remove the replica of shard {shard} on node {from}")
        }
        Step::TransferLeader { shard, from, to } => {
            format!("transfer the leadership of shard {shard} from node {from} to node {to}")
        }
    }
}
