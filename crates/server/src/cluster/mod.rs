//! The node as a cluster member: joining, the shard replicas it hosts, the executors it runs
//! where it leads, and the meta leader's duties.
//!
//! * **Bootstrap.** A node with no one to join initializes the meta group alone; every other
//!   node sends `Join` to a member, which forwards it to the meta leader, which adds the node
//!   as a learner, records it, and promotes it to voter while the meta group has fewer voters
//!   than the cluster size calls for (1, 3, then 5).
//! * **Placement.** Once `cluster.bootstrap_expect` nodes are members, the meta leader writes
//!   the shard map: `replication_factor` replicas per shard, leaders spread (see
//!   `trellis_meta::placement`).
//! * **Replicas.** Every node opens a Raft replica for each shard the map gives it; the
//!   first replica listed initializes the group.
//! * **Executors.** A supervisor per replica starts the shard's executor when this node
//!   becomes the leader (after applying its log) and stops it as soon as it is not: when
//!   Raft says so, or when the leader cannot confirm its leadership with a quorum within
//!   the lease.

pub mod admission;
pub mod api;
pub mod driver;
pub mod route;
pub mod service;
pub(crate) mod shards;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ServerState};
use serde_json::json;
use trellis_meta::placement::{self, NodeRecord, NodeState};
use trellis_meta::{MetaOp, Table};
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::raft::raft_transport_client::RaftTransportClient;
use trellis_proto::v1 as pb;
use trellis_shard::executor::ExecutorConfig;
use trellis_shard::raft::LEADER_LEASE;
use trellis_shard::Executor;

use crate::cluster::shards::Replica;
use crate::node::{ApiResult, Node};

/// How far a replica's applied index may trail its log while the node counts as ready.
pub const READY_LAG: u64 = 100;

impl Node {
    pub fn id(&self) -> u64 {
        self.cfg.node.id
    }

    /// This node's record as the meta group keeps it.
    fn node_record(&self) -> NodeRecord {
        NodeRecord {
            id: self.id(),
            grpc_addr: self.cfg.node.advertised_grpc(),
            http_addr: self.cfg.node.advertised_http(),
            peer_addr: self.cfg.node.advertised().to_string(),
            zone: self.cfg.node.zone.clone(),
            state: NodeState::Up,
        }
    }

    /// Joins or bootstraps the cluster, then opens this node's shard replicas. Returns once
    /// the shard map exists and every local replica is open; leaders follow shortly.
    pub async fn bootstrap(self: &Arc<Self>) -> anyhow::Result<()> {
        if self
            .bootstrapped
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let initialized = self
            .meta
            .raft
            .is_initialized()
            .await
            .map_err(|e| anyhow::anyhow!("meta: {e}"))?;
        let join = self.cfg.cluster.join_addrs(self.cfg.node.advertised());
        if !initialized {
            if join.is_empty() {
                tracing::info!(node_id = self.id(), "bootstrapping a new cluster");
                self.meta
                    .initialize(self.id(), self.cfg.node.advertised())
                    .await?;
            } else {
                self.join(&join).await?;
            }
        }
        // The meta leader's duties run wherever the meta leader is.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut round = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                round += 1;
                let Some(node) = weak.upgrade() else { return };
                if node.stopping() {
                    return;
                }
                if node.meta.leader() != Some(node.id()) {
                    // Another node drives placement; a later turn here starts afresh.
                    node.last_seen().clear();
                    continue;
                }
                if let Err(e) = node.meta_duties().await {
                    tracing::debug!(node_id = node.id(), error = %e, "meta duties");
                }
                if round % 3 == 0 && node.bootstrapped_map() {
                    match node.placement_tick().await {
                        Ok(steps) => node.launch(steps),
                        Err(e) => tracing::debug!(node_id = node.id(), error = %e, "placement"),
                    }
                }
            }
        });
        // Wait for the shard map, then keep the local replicas in line with it.
        loop {
            if self.stopping() {
                anyhow::bail!("stopping");
            }
            if !self.meta.shard_map()?.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.reconcile().await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(node) = weak.upgrade() else { return };
                if node.stopping() {
                    return;
                }
                if let Err(e) = node.reconcile().await {
                    tracing::warn!(node_id = node.id(), error = %e, "shard reconcile");
                }
            }
        });
        Ok(())
    }

    /// Waits until the node is ready ([`Node::readiness`]).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let why = match self.readiness() {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the node is not ready after {timeout:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether this node can serve, or why not (`/readyz`): the meta group has a leader,
    /// the node knows the shard map, every shard replica it holds knows its leader and has
    /// applied its log (within [`READY_LAG`] entries), and every shard it leads runs its
    /// executor.
    pub fn readiness(&self) -> Result<(), String> {
        if self.meta.leader().is_none() {
            return Err("the meta group has no leader".into());
        }
        if self.cells().is_empty() {
            return Err("the shard map is not known yet".into());
        }
        for c in self.cells() {
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

    async fn join(&self, addrs: &[String]) -> anyhow::Result<()> {
        let me = self.node_record();
        let mut attempt = 0u32;
        loop {
            for a in addrs {
                let mut c = match transport::channel(a) {
                    Ok(ch) => RaftTransportClient::new(ch),
                    Err(e) => anyhow::bail!("cluster.join: {e}"),
                };
                let req = rpb::JoinRequest {
                    node_id: me.id,
                    grpc_addr: me.grpc_addr.clone(),
                    http_addr: me.http_addr.clone(),
                    zone: me.zone.clone(),
                    peer_addr: me.peer_addr.clone(),
                };
                match c.join(req).await {
                    Ok(r) => {
                        tracing::info!(node_id = me.id, via = %a,
                            meta_leader = r.get_ref().meta_leader, "joined the cluster");
                        return Ok(());
                    }
                    Err(s) => {
                        if attempt % 10 == 0 {
                            tracing::info!(node_id = me.id, via = %a, error = %s.message(),
                                "cannot join yet; retrying");
                        }
                    }
                }
            }
            if self.stopping() {
                anyhow::bail!("stopping");
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Admits a node (on the meta leader; other nodes forward).
    pub(crate) async fn admit_node(&self, r: rpb::JoinRequest) -> ApiResult<rpb::JoinReply> {
        if r.node_id == 0 || r.peer_addr.is_empty() {
            return Err(ApiError::new(
                Code::ValidationException,
                "a joining node needs an id and a peer address (an older trellis?)",
            ));
        }
        let leader = self.meta.leader();
        if leader != Some(self.id()) {
            let Some(l) = leader else {
                return Err(ApiError::new(
                    Code::ServiceUnavailable,
                    "the meta group has no leader yet",
                ));
            };
            let mut c = self.peer_client(l)?;
            return c
                .join(r)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| ApiError::from_status(&s));
        }
        let nodes = self.meta.nodes().map_err(crate::node::from_meta)?;
        if let Some(n) = nodes.iter().find(|n| n.id == r.node_id) {
            if n.state == NodeState::Removed {
                return Err(ApiError::new(
                    Code::ValidationException,
                    format!(
                        "node {} was removed from this cluster; give it a new id",
                        r.node_id
                    ),
                ));
            }
        }
        let _g = self.membership_lock.lock().await;
        self.meta
            .raft
            .add_learner(r.node_id, BasicNode::new(&r.peer_addr), true)
            .await
            .map_err(|e| {
                ApiError::new(
                    Code::ServiceUnavailable,
                    format!("adding node {}: {e}", r.node_id),
                )
            })?;
        let rec = NodeRecord {
            id: r.node_id,
            grpc_addr: r.grpc_addr,
            http_addr: r.http_addr,
            peer_addr: r.peer_addr,
            zone: r.zone,
            state: NodeState::Up,
        };
        self.meta_put(
            Table::Nodes,
            placement::node_key(rec.id),
            serde_json::to_value(&rec).map_err(crate::node::internal)?,
        )
        .await?;
        tracing::info!(node_id = self.id(), joined = rec.id, addr = %rec.peer_addr, "node joined");
        Ok(rpb::JoinReply {
            meta_leader: self.id(),
            shard_count: self.shard_count(),
        })
    }

    /// What the meta leader keeps true: its own record, the shard count, the meta voters,
    /// and the first shard map.
    async fn meta_duties(&self) -> anyhow::Result<()> {
        let nodes = self.meta.nodes()?;
        if !nodes.iter().any(|n| n.id == self.id()) {
            let rec = self.node_record();
            self.meta_put(
                Table::Nodes,
                placement::node_key(rec.id),
                serde_json::to_value(&rec)?,
            )
            .await?;
            return Ok(());
        }
        if self.meta.app.get(Table::Settings, "shards")?.is_none() {
            self.meta_put(Table::Settings, "shards", json!(self.cfg.cluster.shards))
                .await?;
        }
        let up: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| n.state != NodeState::Removed)
            .collect();
        // Meta voters: grow one at a time towards the target.
        let m = self.meta.raft.metrics().borrow().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let target = placement::meta_voter_target(up.len());
        if voters.len() < target {
            let learners: Vec<u64> = m.membership_config.membership().learner_ids().collect();
            if let Some(add) = up.iter().map(|n| n.id).find(|id| learners.contains(id)) {
                let mut next: std::collections::BTreeSet<u64> = voters.iter().copied().collect();
                next.insert(add);
                tracing::info!(node_id = self.id(), voter = add, "promoting a meta voter");
                let _g = self.membership_lock.lock().await;
                self.meta
                    .raft
                    .change_membership(next, true)
                    .await
                    .map_err(|e| anyhow::anyhow!("meta membership: {e}"))?;
            }
        }
        // The first shard map, once enough nodes are here.
        if self.meta.shard_map()?.is_empty()
            && up.len() >= self.cfg.cluster.bootstrap_expect as usize
        {
            let shards = self
                .meta
                .app
                .get(Table::Settings, "shards")?
                .and_then(|v| v.as_u64())
                .unwrap_or(u64::from(self.cfg.cluster.shards)) as u32;
            let owned: Vec<NodeRecord> = up.into_iter().cloned().collect();
            let map = if self.has_single_node_shards()? {
                // A data directory from a single-node cluster: its groups stay where they are.
                (0..shards)
                    .map(|id| placement::ShardRecord {
                        id,
                        replicas: vec![self.id()],
                        epoch: 1,
                        learners: Vec::new(),
                    })
                    .collect()
            } else {
                placement::initial(shards, &owned, self.cfg.cluster.replication_factor as usize)
            };
            let mut ops = Vec::new();
            for s in &map {
                ops.push(MetaOp::Put {
                    table: Table::Shards,
                    key: placement::shard_key(s.id),
                    value: serde_json::to_value(s)?,
                });
            }
            tracing::info!(
                node_id = self.id(),
                shards,
                nodes = owned.len(),
                "placing shards"
            );
            self.meta.write(ops).await?;
        }
        Ok(())
    }

    fn bootstrapped_map(&self) -> bool {
        self.meta
            .shard_map()
            .map(|m| !m.is_empty())
            .unwrap_or(false)
    }

    /// Whether this node holds shard groups from before the shard map existed.
    fn has_single_node_shards(&self) -> anyhow::Result<bool> {
        Ok(self.db().groups().iter().any(|g| *g >= 1))
    }

    /// Opens the replicas the shard map gives this node.
    async fn reconcile(self: &Arc<Self>) -> anyhow::Result<()> {
        let map = self.meta.shard_map()?;
        if map.is_empty() {
            return Ok(());
        }
        let cells = self.shards().init(map.len() as u32);
        let nodes: BTreeMap<u64, NodeRecord> =
            self.meta.nodes()?.into_iter().map(|n| (n.id, n)).collect();
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
            let node = self.clone();
            opening.spawn(async move {
                let r = node.open_replica(s.id, first.then_some(members)).await;
                (s.id, r)
            });
        }
        while let Some(r) = opening.join_next().await {
            let (shard, r) = r?;
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
        self.transport.unregister(group);
        if let Err(e) = self.db().drop_group(group) {
            tracing::warn!(node_id = self.id(), shard_id = rep.shard, error = %e, "dropping a moved replica's data");
        }
    }

    async fn open_replica(
        self: &Arc<Self>,
        shard: u32,
        initialize: Option<BTreeMap<u64, BasicNode>>,
    ) -> anyhow::Result<()> {
        let group = u64::from(shard) + 1;
        let (raft, app) = trellis_shard::raft::open(
            self.db(),
            group,
            self.id(),
            self.transport.network(group),
            self.cfg.cluster.snapshot_logs,
        )
        .await?;
        self.transport.register(group, Arc::new(raft.clone()));
        if let Some(members) = initialize {
            trellis_shard::raft::initialize(&raft, members).await?;
        }
        let rep = Arc::new(Replica::new(shard, raft, app));
        if let Some(cell) = self.cells().get(shard as usize) {
            cell.set(rep.clone());
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(supervise(weak, rep));
        Ok(())
    }

    /// The settings of `shard`'s executor while this node leads it in `term`.
    fn executor_config(&self, shard: u32, term: u64) -> ExecutorConfig {
        let epoch = self.shard_record(shard).map_or(0, |s| s.epoch);
        ExecutorConfig {
            shard,
            epoch,
            term,
            region: self.cfg.aws.region.clone(),
            account: self.cfg.aws.account.clone(),
            limits: trellis_asl::Limits::default(),
            max_batch: self.cfg.cluster.max_batch,
            detector: Default::default(),
            effects_before_commit: self.cfg.cluster.breaks_fencing(),
            metrics: self.shard_metrics.clone(),
        }
    }

    /// The node to try first for `shard`.
    ///
    /// In order: this node when it runs the shard's executor, the leader its replica knows,
    /// the cache, then the shard map's replicas in turn; nodes in `failed` (tried by this
    /// call already) are skipped, so a stale view cannot hold a call on a dead node.
    pub(crate) fn leader_guess(&self, shard: u32, attempt: u32, failed: &[u64]) -> Option<u64> {
        let ok = |n: &u64| !failed.contains(n);
        if let Some(r) = self.shards().replica(shard) {
            if r.handle().is_some() {
                return Some(self.id());
            }
            if let Some(l) = r.raft.metrics().borrow().current_leader.filter(ok) {
                return Some(l);
            }
        }
        if let Some(l) = self.shards().cached_leader(shard).filter(ok) {
            return Some(l);
        }
        let map = self.meta.shard_map().ok()?;
        let s = map.iter().find(|s| s.id == shard)?;
        let untried: Vec<u64> = s.replicas.iter().copied().filter(ok).collect();
        let pool = if untried.is_empty() {
            &s.replicas
        } else {
            &untried
        };
        (!pool.is_empty()).then(|| pool[attempt as usize % pool.len()])
    }

    pub(crate) fn remember_leader(&self, shard: u32, node: u64) {
        self.shards().remember_leader(shard, node);
    }

    pub(crate) fn forget_leader(&self, shard: u32, node: u64) {
        self.shards().forget_leader(shard, node);
    }

    /// A client for calls to another node (its address from the meta group).
    pub(crate) fn peer_client(
        &self,
        node: u64,
    ) -> ApiResult<RaftTransportClient<tonic::transport::Channel>> {
        let addr = self
            .meta
            .app
            .get(Table::Nodes, &placement::node_key(node))
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_value::<NodeRecord>(v).ok())
            .map(|n| n.peer().to_string())
            .or_else(|| {
                let m = self.meta.raft.metrics().borrow().clone();
                m.membership_config
                    .membership()
                    .get_node(&node)
                    .map(|n| n.addr.clone())
            })
            .ok_or_else(|| {
                ApiError::new(
                    Code::ServiceUnavailable,
                    format!("node {node} is not known here"),
                )
            })?;
        self.transport
            .api_client(node, &addr)
            .map_err(|e| ApiError::new(Code::ServiceUnavailable, e))
    }

    /// The other members, for fan-out calls.
    pub(crate) fn other_nodes(&self) -> Vec<u64> {
        self.meta
            .nodes()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.id != self.id() && n.state != NodeState::Removed)
            .map(|n| n.id)
            .collect()
    }

    /// The shards this node replicates, as it sees them.
    /// With `count_live`, the shards it leads also count their live executions (a scan of
    /// each shard's live records: for operators, not for the placement driver's rounds).
    pub(crate) fn local_shards(&self, count_live: bool) -> pb::ListShardsResponse {
        let map = self.meta.shard_map().unwrap_or_default();
        let shards = self
            .cells()
            .iter()
            .filter_map(|c| c.get())
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
                        r.app.live().map(|l| l.len() as u64).unwrap_or(0)
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
}

/// Runs the shard's executor while this node leads the shard.
async fn supervise(node: std::sync::Weak<Node>, rep: Arc<Replica>) {
    // Woken by leadership and membership changes only (not by every applied entry, which
    // would wake it once per commit); the lease is checked on a timer.
    let mut server = rep.raft.server_metrics();
    let metrics = rep.raft.metrics();
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let Some(n) = node.upgrade() else { break };
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
        if leading && voters > 1 && silent && !n.cfg.cluster.breaks_fencing() {
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
            if applied.is_ok() {
                let cfg = n.executor_config(rep.shard, m.current_term);
                match Executor::new(
                    cfg,
                    rep.app.clone(),
                    Arc::new(rep.raft.clone()),
                    Arc::new(n.connectors().clone()),
                ) {
                    Ok((ex, handle)) => {
                        // A capped execution ending frees a slot for a queued one.
                        let ex = ex.on_capped_end(n.admission_kick());
                        let shard = rep.shard;
                        running = Some(tokio::spawn(async move {
                            if let Err(e) = ex.run().await {
                                tracing::info!(shard_id = shard, error = %e, "shard executor stopped");
                            }
                        }));
                        rep.set_handle(Some(handle));
                        let now = rep.raft.metrics().borrow().clone();
                        tracing::info!(
                            node_id = me,
                            shard_id = rep.shard,
                            term = m.current_term,
                            last_log_index = now.last_log_index,
                            last_applied = now.last_applied.map(|l| l.index),
                            "leading the shard"
                        );
                        // Its queued executions may be admissible now.
                        n.kick_admission();
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
                tracing::info!(
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
