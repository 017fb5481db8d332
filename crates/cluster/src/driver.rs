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
//!   `cluster.down_after_seconds` is down and its replicas are re-created elsewhere; one
//!   silent for `cluster.decommission_after_seconds` is gone, and decommissioned
//!   (`Membership::decommission`). A new meta leader starts every node's clock afresh.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use trellis_meta::placement::{self, NodeState, NodeView, ShardRecord, ShardView, Step};
use trellis_meta::Table;
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;

use crate::router::Router;
use crate::{from_meta, ApiResult, Core};

/// Placement steps in flight at once.
const BUDGET: usize = 4;

/// How long a leader transfer's target has to win its election before the old leader
/// speaks again (a few election rounds; openraft's election timeout here is well under it).
pub const TRANSFER_WINDOW: Duration = Duration::from_secs(3);

/// The most log entries a transfer's target may trail the leader by.
const TRANSFER_MAX_BEHIND: u64 = 100;

/// Each control call of a transfer.
const CONTROL_CALL: Duration = Duration::from_secs(1);

/// The placement driver's state: when each node last answered a ping (meaningful on the
/// meta leader), and the shards with a step in flight.
pub struct Driver {
    core: Arc<Core>,
    router: Arc<Router>,
    last_seen: Mutex<HashMap<u64, Instant>>,
    moving: Mutex<HashSet<u32>>,
}

impl Driver {
    pub(crate) fn new(core: Arc<Core>, router: Arc<Router>) -> Driver {
        Driver {
            core,
            router,
            last_seen: Default::default(),
            moving: Default::default(),
        }
    }

    fn id(&self) -> u64 {
        self.core.id()
    }

    fn last_seen(&self) -> MutexGuard<'_, HashMap<u64, Instant>> {
        self.last_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shards with a step in flight.
    fn moving(&self) -> MutexGuard<'_, HashSet<u32>> {
        self.moving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every node's liveness (another node drives placement; a later turn as meta
    /// leader starts every clock afresh).
    pub(crate) fn forget_liveness(&self) {
        self.last_seen().clear();
    }

    /// One round of the driver on the meta leader, its steps started.
    pub(crate) async fn tick(self: &Arc<Self>, views: &[NodeView]) {
        let placed = self.core.meta.shard_map().is_ok_and(|m| !m.is_empty());
        if !placed {
            return;
        }
        match self.placement_tick(views).await {
            Ok(steps) => self.launch(steps),
            Err(e) => tracing::debug!(node_id = self.id(), error = %e, "placement"),
        }
    }

    /// The steps due now (on the meta leader).
    async fn placement_tick(&self, views: &[NodeView]) -> ApiResult<Vec<Step>> {
        let paused = self.paused();
        let map = self.core.meta.shard_map().map_err(from_meta)?;
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
            views,
            &shard_views,
            self.core.settings.cluster.replication_factor as usize,
            budget,
        ))
    }

    /// The nodes with their liveness as this (meta leader) node sees it: each is pinged.
    pub(crate) async fn node_views(&self) -> ApiResult<Vec<NodeView>> {
        let nodes = self.core.meta.nodes().map_err(from_meta)?;
        let pings = nodes.iter().map(|n| async move {
            n.state == NodeState::Removed
                || self.router.ping(n.id, Duration::from_millis(800)).await
        });
        let alive = join_all(pings).await;
        let cfg = &self.core.settings.cluster;
        let grace = Duration::from_secs(cfg.down_after_seconds);
        let gone_after = Duration::from_secs(cfg.decommission_after_seconds);
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
                let silent = now.duration_since(*last);
                NodeView {
                    down: silent > grace,
                    gone: !gone_after.is_zero() && silent > gone_after,
                    id: n.id,
                    zone: n.zone,
                    state: n.state,
                    alive,
                }
            })
            .collect())
    }

    /// Whether an operator paused placement.
    /// Shards with a move or leader transfer this driver runs.
    pub fn moving_now(&self) -> Vec<u32> {
        self.moving().iter().copied().collect()
    }

    pub fn paused(&self) -> bool {
        self.core
            .meta
            .app
            .get(Table::Settings, "placementPaused")
            .ok()
            .flatten()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// Starts the steps in the background (each shard at most once at a time).
    fn launch(self: &Arc<Self>, steps: Vec<Step>) {
        for step in steps {
            if !self.moving().insert(step.shard()) {
                continue;
            }
            let driver = self.clone();
            tokio::spawn(async move {
                tracing::info!(node_id = driver.id(), step = ?step, "placement step");
                if let Err(e) = driver.run_step(&step).await {
                    tracing::warn!(node_id = driver.id(), step = ?step, error = %e, "placement step failed");
                }
                driver.moving().remove(&step.shard());
            });
        }
    }

    async fn run_step(&self, step: &Step) -> ApiResult<()> {
        match *step {
            Step::Move { shard, from, to } => self.move_replica(shard, from, Some(to)).await,
            Step::Remove { shard, from } => self.move_replica(shard, Some(from), None).await,
            Step::TransferLeader { shard, from, to } => self.transfer_leader(shard, from, to).await,
        }
    }

    /// Changes the shard map's record of `shard` as a compare-and-set.
    async fn update_shard(
        &self,
        shard: u32,
        mut change: impl FnMut(&mut ShardRecord) -> ApiResult<()>,
    ) -> ApiResult<ShardRecord> {
        self.core
            .update::<ShardRecord>(&placement::shard_key(shard), |cur| {
                let mut rec = cur.ok_or_else(|| {
                    ApiError::new(
                        Code::ResourceNotFound,
                        format!("Resource Not Found: 'shard {shard}'"),
                    )
                })?;
                change(&mut rec)?;
                Ok(rec)
            })
            .await
    }

    /// Adds a replica on `to` and/or removes the one on `from`.
    async fn move_replica(&self, shard: u32, from: Option<u64>, to: Option<u64>) -> ApiResult<()> {
        let rec = self.core.shard_record(shard)?;
        let mut voters: BTreeSet<u64> = rec.replicas.iter().copied().collect();
        if let Some(f) = from {
            voters.remove(&f);
        }
        let mut add_addr = String::new();
        if let Some(t) = to {
            voters.insert(t);
            add_addr = self
                .core
                .meta
                .nodes()
                .map_err(from_meta)?
                .into_iter()
                .find(|n| n.id == t)
                .map(|n| n.peer().to_string())
                .ok_or_else(|| ApiError::new(Code::ValidationException, format!("no node {t}")))?;
            // The step was planned from `rec`: it applies only to those replicas.
            self.update_shard(shard, |now| {
                if now.replicas != rec.replicas {
                    return Err(ApiError::new(
                        Code::ConflictException,
                        format!("shard {shard}'s replicas changed while a step was planned"),
                    ));
                }
                now.learners = vec![t];
                now.epoch += 1;
                Ok(())
            })
            .await?;
        }
        let req = rpb::ShardControl {
            shard,
            action: rpb::ShardAction::Change as i32,
            add: to.unwrap_or(0),
            add_addr,
            voters: voters.iter().copied().collect(),
        };
        let changed = self.router.on_shard(shard, req).await;
        self.update_shard(shard, |rec| {
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
            Ok(())
        })
        .await?;
        changed.map(drop)
    }

    /// Hands the leadership of `shard` from `from` to `to`: the leader's messages to all but
    /// the target are dropped (one transfer per shard at a time), the other replicas stop
    /// calling elections, and the target calls elections until it wins or
    /// [`TRANSFER_WINDOW`] ends; then everything is undone (a fallback when the target did
    /// not win: the old leader goes on).
    async fn transfer_leader(&self, shard: u32, from: u64, to: u64) -> ApiResult<()> {
        let rec = self.core.shard_record(shard)?;
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
        // Each control call is bounded: a frozen node must not hold the shard muted.
        let control = |node: u64, action: rpb::ShardAction| async move {
            let req = rpb::ShardControl {
                shard,
                action: action as i32,
                add: to,
                ..Default::default()
            };
            match tokio::time::timeout(CONTROL_CALL, self.router.call(node, req)).await {
                Ok(r) => r,
                Err(_) => Err(ApiError::new(
                    Code::ServiceUnavailable,
                    format!("node {node} did not answer in time"),
                )),
            }
        };
        // Only to a replica that has the leader's log (a node that has just restarted may
        // still be catching up, and could not win the election): a later round tries again.
        let lag = control(from, rpb::ShardAction::Lag).await?;
        if lag.behind > TRANSFER_MAX_BEHIND {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                format!(
                    "node {to} trails shard {shard}'s log by {} entries; not handing it the \
                     leadership yet",
                    lag.behind
                ),
            ));
        }
        // The leader stops speaking to all but the target (which stays caught up, and with
        // the leader still makes a quorum of three); the others stop calling elections, and
        // vote for the target once the leader's lease has run out.
        control(from, rpb::ShardAction::Mute).await?;
        for o in &others {
            let _ = control(*o, rpb::ShardAction::ElectOff).await;
        }
        // A short window: if the target has not won by then, the old leader speaks again at
        // once and keeps leading (its term is unchanged unless the target called an
        // election, in which case the shard holds one more election, no longer).
        let deadline = Instant::now() + TRANSFER_WINDOW;
        let mut result = Err(ApiError::new(
            Code::ServiceUnavailable,
            format!(
                "node {to} did not take the leadership of shard {shard} within {TRANSFER_WINDOW:?}; \
                 node {from} leads on"
            ),
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
        if result.is_err() {
            tracing::warn!(shard_id = shard, from, to, "leader transfer fell back");
        }
        let _ = control(from, rpb::ShardAction::Unmute).await;
        for o in &others {
            let _ = control(*o, rpb::ShardAction::ElectOn).await;
        }
        result
    }

    // ------------------------------------------------------------ operator calls

    pub(crate) async fn set_paused_here(&self, paused: bool) -> ApiResult<()> {
        self.core
            .put(Table::Settings, "placementPaused", json!(paused))
            .await
    }

    /// The steps due now, started; for `trellisctl shards rebalance`.
    pub(crate) async fn rebalance_here(self: &Arc<Self>) -> ApiResult<pb::RebalanceResponse> {
        let views = self.node_views().await?;
        let steps = self.placement_tick(&views).await?;
        let lines = steps.iter().map(describe).collect();
        self.launch(steps);
        let mut moving: Vec<u32> = self.moving().iter().copied().collect();
        moving.sort_unstable();
        Ok(pb::RebalanceResponse {
            steps: lines,
            paused: self.paused(),
            moving,
        })
    }

    /// Every shard: the map's replica set and epoch, with its leader's view.
    pub async fn list_shards(&self) -> ApiResult<pb::ListShardsResponse> {
        self.shard_views(true).await
    }

    /// [`Driver::list_shards`]; without `count_live` the leaders do not count their live
    /// executions (the placement driver asks every second and needs only the leaders).
    async fn shard_views(&self, count_live: bool) -> ApiResult<pb::ListShardsResponse> {
        let map = self.core.meta.shard_map().map_err(from_meta)?;
        let req = rpb::LocalShardsRequest { count_live };
        let reports: Vec<(u64, pb::ListShardsResponse)> = self
            .router
            .fan_out(req, Some(Duration::from_secs(2)))
            .await
            .into_iter()
            .filter_map(|(n, r)| Some((n, r.ok()?)))
            .collect();
        let shards = map
            .into_iter()
            .map(|s| {
                // The leader's report of itself, if it answered.
                let lead = reports
                    .iter()
                    .flat_map(|(n, r)| r.shards.iter().filter(move |x| x.leader == *n))
                    .filter(|x| x.id == s.id)
                    .max_by_key(|x| x.term)
                    .cloned();
                let mut out = lead.unwrap_or(pb::Shard {
                    id: s.id,
                    ..Default::default()
                });
                out.replicas = s.replicas;
                out.epoch = s.epoch;
                out
            })
            .collect();
        Ok(pb::ListShardsResponse { shards })
    }

    pub async fn set_placement(&self, paused: bool) -> ApiResult<()> {
        self.router
            .on_meta(pb::SetPlacementRequest { paused })
            .await
            .map(drop)
    }

    pub async fn rebalance(&self) -> ApiResult<pb::RebalanceResponse> {
        self.router.on_meta(rpb::RebalanceRequest {}).await
    }

    /// Runs one operator-requested step on the meta leader and waits for it.
    async fn operator_step(&self, step: trellis_meta::placement::Step) -> ApiResult<()> {
        let shard = step.shard();
        if !self.moving().insert(shard) {
            return Err(ApiError::new(
                Code::ConflictException,
                format!("shard {shard} is already changing; retry when it is done"),
            ));
        }
        let r = self.run_step(&step).await;
        self.moving().remove(&shard);
        r
    }

    pub async fn move_shard(&self, r: pb::MoveShardRequest) -> ApiResult<()> {
        self.router.on_meta(r).await.map(drop)
    }

    /// Moves a replica of a shard, on the meta leader.
    pub(crate) async fn move_shard_here(&self, r: pb::MoveShardRequest) -> ApiResult<()> {
        let rec = self
            .core
            .meta
            .shard_map()
            .map_err(from_meta)?
            .into_iter()
            .find(|s| s.id == r.shard)
            .ok_or_else(|| {
                ApiError::new(
                    Code::ResourceNotFound,
                    format!("Resource Not Found: 'shard {}'", r.shard),
                )
            })?;
        if !rec.replicas.contains(&r.from) {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("node {} holds no replica of shard {}", r.from, r.shard),
            ));
        }
        if rec.replicas.contains(&r.to) {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("node {} already holds a replica of shard {}", r.to, r.shard),
            ));
        }
        let up = self
            .core
            .meta
            .nodes()
            .map_err(from_meta)?
            .into_iter()
            .any(|n| n.id == r.to && n.state == NodeState::Up);
        if !up {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("node {} is not an UP member", r.to),
            ));
        }
        let leader = self.leader_of(r.shard).await?;
        if leader == r.from {
            // A replica never moves off its leader: the leadership goes first.
            let to = rec
                .replicas
                .iter()
                .copied()
                .find(|x| *x != r.from)
                .unwrap_or(r.to);
            self.operator_step(Step::TransferLeader {
                shard: r.shard,
                from: r.from,
                to,
            })
            .await?;
        }
        self.operator_step(Step::Move {
            shard: r.shard,
            from: Some(r.from),
            to: r.to,
        })
        .await
    }

    /// The leader of `shard` as the shard views report it (0: none now).
    async fn leader_of(&self, shard: u32) -> ApiResult<u64> {
        self.list_shards()
            .await?
            .shards
            .into_iter()
            .find(|s| s.id == shard)
            .map(|s| s.leader)
            .ok_or_else(|| {
                ApiError::new(
                    Code::ResourceNotFound,
                    format!("Resource Not Found: 'shard {shard}'"),
                )
            })
    }

    pub async fn transfer_shard_leader(&self, r: pb::TransferShardLeaderRequest) -> ApiResult<()> {
        self.router.on_meta(r).await.map(drop)
    }

    /// Hands a shard's leadership to another replica, on the meta leader.
    pub(crate) async fn transfer_shard_leader_here(
        &self,
        r: pb::TransferShardLeaderRequest,
    ) -> ApiResult<()> {
        let leader = self.leader_of(r.shard).await?;
        if leader == r.to {
            return Ok(());
        }
        self.operator_step(Step::TransferLeader {
            shard: r.shard,
            from: leader,
            to: r.to,
        })
        .await
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
