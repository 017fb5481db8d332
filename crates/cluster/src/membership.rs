//! Membership: how a node becomes a member, and the meta leader's care of the members.
//!
//! * **Bootstrap.** A node with no one to join initializes the meta group alone; every other
//!   node sends `Join` to a member, which forwards it to the meta leader, which adds the node
//!   as a learner, records it, and promotes it to voter while the meta group has fewer voters
//!   than the cluster size calls for (1, 3, then 5).
//! * **Placement.** Once `cluster.bootstrap_expect` nodes are members, the meta leader writes
//!   the shard map: `replication_factor` replicas per shard, leaders spread (see
//!   `trellis_meta::placement`).
//! * **Meta voters** ([`Membership::adjust_voters`]): promoted and demoted one at a time
//!   towards the target for the members that stay (`trellis_meta::voters::voter_step`), so a cluster
//!   scaled in has the quorum its size calls for.
//! * **Node states.** A node leaving for good is drained (placement moves its replicas and
//!   leaderships away, its meta vote goes to another node) and removed once it holds nothing
//!   (it leaves the meta group's membership): a decommission. A node about to restart hands
//!   off (RESTARTING: its leaderships move, its replicas stay) and sets itself UP again when
//!   it starts ([`Membership::announce`]). A node whose id was removed may join again with
//!   a new data directory (a StatefulSet scaled in, then out, reuses its ordinals).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use openraft::BasicNode;
use serde_json::json;
use tokio::sync::Mutex;
use trellis_meta::placement::{self, NodeRecord, NodeState, NodeView, ShardRecord};
use trellis_meta::voters::{voter_step, VoterStep};
use trellis_meta::{Condition, MetaOp, Table};
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::raft::raft_transport_client::RaftTransportClient;
use trellis_proto::v1 as pb;

use crate::retry::Backoff;
use crate::router::Router;
use crate::{from_meta, ApiResult, Core, Error, Result, TOKEN_KEY};

/// The meta group's Raft group id (the transport's mute switch).
const META_GROUP: u64 = 0;

/// How long a meta leader that steps down stays silent at most: an election among the others
/// takes about 2 s (leases of 0.9 s, then an election timeout).
const STEP_DOWN_GUARD: Duration = Duration::from_secs(6);

/// Joins, admissions and the members' states.
pub struct Membership {
    core: Arc<Core>,
    router: Arc<Router>,
    /// Serializes this (meta leader) node's Raft membership changes of the meta group.
    lock: Mutex<()>,
    /// Set when the meta leader says this node was removed: why, for the node to stop.
    removed: tokio::sync::watch::Sender<Option<String>>,
}

impl Membership {
    pub(crate) fn new(core: Arc<Core>, router: Arc<Router>) -> Membership {
        Membership {
            core,
            router,
            lock: Mutex::new(()),
            removed: tokio::sync::watch::channel(None).0,
        }
    }

    /// Resolves with the reason once the cluster has said this node is no member any more
    /// (it was removed, and runs on a former member's data): the node must stop.
    pub fn removed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.removed.subscribe();
        async move {
            let why = match rx.wait_for(|r| r.is_some()).await {
                Ok(r) => r.clone(),
                Err(_) => None,
            };
            match why {
                Some(why) => why,
                None => std::future::pending().await,
            }
        }
    }

    fn id(&self) -> u64 {
        self.core.id()
    }

    /// This node's record as the meta group keeps it.
    fn node_record(&self) -> NodeRecord {
        let m = &self.core.settings.member;
        NodeRecord {
            id: m.id,
            grpc_addr: m.grpc_addr.clone(),
            http_addr: m.http_addr.clone(),
            peer_addr: m.peer_addr.clone(),
            zone: m.zone.clone(),
            state: NodeState::Up,
        }
    }

    /// Makes this node a member: a new cluster of one when there is no one to join, else a
    /// join through the configured members. A node whose meta replica is initialized is a
    /// member already.
    pub(crate) async fn join_or_bootstrap(&self) -> Result<()> {
        let meta = &self.core.meta;
        let initialized = meta
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Meta(trellis_meta::Error::Raft(e.to_string())))?;
        if initialized {
            return Ok(());
        }
        let own = &self.core.settings.member.peer_addr;
        let join = self.core.settings.cluster.join_addrs(own);
        if join.is_empty() {
            tracing::info!(node_id = self.id(), "bootstrapping a new cluster");
            meta.initialize(self.id(), own).await?;
            Ok(())
        } else {
            self.join(&join).await
        }
    }

    async fn join(&self, addrs: &[String]) -> Result<()> {
        let me = self.node_record();
        // Until a member admits this node, or the node stops.
        let mut retry = Backoff::every(Duration::from_millis(500));
        loop {
            for a in addrs {
                let mut c = match self.core.transport.channel(a) {
                    Ok(ch) => RaftTransportClient::new(ch),
                    Err(e) => return Err(Error::Join(e)),
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
                        if retry.attempts().is_multiple_of(10) {
                            tracing::info!(node_id = me.id, via = %a, error = %s.message(),
                                "cannot join yet; retrying");
                        }
                    }
                }
            }
            if self.core.stopping() {
                return Err(Error::Stopping);
            }
            retry.again().await;
        }
    }

    /// Admits a node (on the meta leader; other nodes forward).
    pub async fn admit_node(&self, r: rpb::JoinRequest) -> ApiResult<rpb::JoinReply> {
        if r.node_id == 0 || r.peer_addr.is_empty() {
            return Err(ApiError::new(
                Code::ValidationException,
                "a joining node needs an id and a peer address (an older trellis?)",
            ));
        }
        let meta = &self.core.meta;
        let leader = meta.leader();
        if leader != Some(self.id()) {
            let Some(l) = leader else {
                return Err(ApiError::new(
                    Code::ServiceUnavailable,
                    "the meta group has no leader yet",
                ));
            };
            let mut c = self.router.peer_client(l)?;
            return c
                .join(r)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| ApiError::from_status(&s));
        }
        let _g = self.lock.lock().await;
        meta.raft
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
        // Only a node without meta state joins (a member restarting does not), so a removed
        // id joining again comes with a new data directory: a new member under the old id.
        // Its old replicas were moved off before it was removed, so nothing refers to it.
        self.core
            .update::<NodeRecord>(&placement::node_key(rec.id), |cur| match cur {
                Some(n) if n.state == NodeState::Removed => Ok(rec.clone()),
                // A member joining again (a new address, an interrupted join): its state
                // stays.
                Some(n) => Ok(NodeRecord {
                    state: n.state,
                    ..rec.clone()
                }),
                None => Ok(rec.clone()),
            })
            .await?;
        tracing::info!(node_id = self.id(), joined = rec.id, addr = %rec.peer_addr, "node joined");
        Ok(rpb::JoinReply {
            meta_leader: self.id(),
            shard_count: self.core.shards.count(),
        })
    }

    /// What the meta leader keeps true: its own record, the shard count, the token key, and
    /// the first shard map.
    pub(crate) async fn meta_duties(&self) -> ApiResult<()> {
        let meta = &self.core.meta;
        let cfg = &self.core.settings.cluster;
        let nodes = meta.nodes().map_err(from_meta)?;
        if !nodes.iter().any(|n| n.id == self.id()) {
            let own = self.node_record();
            self.core
                .update::<NodeRecord>(&placement::node_key(own.id), |cur| {
                    Ok(cur.unwrap_or_else(|| own.clone()))
                })
                .await?;
            return Ok(());
        }
        let shards_set = meta.app.get(Table::Settings, "shards").map_err(from_meta)?;
        if shards_set.is_none() {
            // Set once: a meta leader that lost a race to another keeps the other's count.
            let absent = Condition::Absent {
                table: Table::Settings,
                key: "shards".into(),
            };
            let op = MetaOp::Put {
                table: Table::Settings,
                key: "shards".into(),
                value: json!(cfg.shards),
            };
            meta.write_if(vec![absent], vec![op])
                .await
                .map_err(from_meta)?;
        }
        if self.core.token_key()?.is_none() {
            // The cluster's task-token key: made once by a meta leader, before the first
            // shard map (so every node that hosts a shard has it), and kept in meta.
            let key = trellis_shard::token::TokenKey::generate(&mut rand::rngs::OsRng);
            let absent = Condition::Absent {
                table: Table::Settings,
                key: TOKEN_KEY.into(),
            };
            let op = MetaOp::Put {
                table: Table::Settings,
                key: TOKEN_KEY.into(),
                value: json!(key.to_hex()),
            };
            meta.write_if(vec![absent], vec![op])
                .await
                .map_err(from_meta)?;
        }
        let up: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| n.state != NodeState::Removed)
            .collect();
        // The first shard map, once enough nodes are here.
        if meta.shard_map().map_err(from_meta)?.is_empty()
            && up.len() >= cfg.bootstrap_expect as usize
        {
            let shards = meta
                .app
                .get(Table::Settings, "shards")
                .map_err(from_meta)?
                .and_then(|v| v.as_u64())
                .unwrap_or(u64::from(cfg.shards)) as u32;
            let owned: Vec<NodeRecord> = up.into_iter().cloned().collect();
            // A data directory from a single-node cluster (shard groups from before the
            // shard map existed): its groups stay where they are.
            let single_node = self.core.db.groups().iter().any(|g| *g >= 1);
            let map = if single_node {
                (0..shards)
                    .map(|id| placement::ShardRecord {
                        id,
                        replicas: vec![self.id()],
                        epoch: 1,
                        learners: Vec::new(),
                    })
                    .collect()
            } else {
                placement::initial(shards, &owned, cfg.replication_factor as usize)
            };
            // Written once: the entry applies only while no shard has a record yet.
            let mut conditions = Vec::new();
            let mut ops = Vec::new();
            for s in &map {
                conditions.push(Condition::absent::<ShardRecord>(&placement::shard_key(
                    s.id,
                )));
                ops.push(MetaOp::put(s).map_err(from_meta)?);
            }
            tracing::info!(
                node_id = self.id(),
                shards,
                nodes = owned.len(),
                "placing shards"
            );
            meta.write_if(conditions, ops).await.map_err(from_meta)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ operator calls

    pub async fn drain_node(&self, id: u64) -> ApiResult<()> {
        let r = rpb::SetNodeStateRequest {
            node_id: id,
            state: rpb::NodeStateChange::Draining as i32,
        };
        self.router.on_meta(r).await.map(drop)
    }

    /// Before `id` restarts: its leaderships move away, its replicas stay (RESTARTING).
    pub async fn hand_off_node(&self, id: u64) -> ApiResult<()> {
        let r = rpb::SetNodeStateRequest {
            node_id: id,
            state: rpb::NodeStateChange::Restarting as i32,
        };
        self.router.on_meta(r).await.map(drop)
    }

    pub async fn remove_node(&self, id: u64) -> ApiResult<()> {
        let r = rpb::SetNodeStateRequest {
            node_id: id,
            state: rpb::NodeStateChange::Removed as i32,
        };
        self.router.on_meta(r).await.map(drop)
    }

    /// Sets a node's state: DRAINING; REMOVED once it holds nothing; RESTARTING (from UP);
    /// UP (from RESTARTING: a restarted node is back; other states stay).
    pub(crate) async fn set_node_state_here(&self, id: u64, state: NodeState) -> ApiResult<()> {
        let meta = &self.core.meta;
        let key = placement::node_key(id);
        let missing = || {
            ApiError::new(
                Code::ResourceNotFound,
                format!("Resource Not Found: 'node {id}'"),
            )
        };
        if meta
            .app
            .record::<NodeRecord>(&key)
            .map_err(from_meta)?
            .is_none()
        {
            return Err(missing());
        }
        let current = meta.app.record::<NodeRecord>(&key).map_err(from_meta)?;
        if state == NodeState::Removed && current.is_some_and(|n| n.state == NodeState::Removed) {
            return Ok(());
        }
        if state == NodeState::Removed {
            let held = meta
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
            let _g = self.lock.lock().await;
            let m = meta.raft.metrics().borrow().clone();
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
                meta.raft.change_membership(v, false).await
            } else {
                meta.raft
                    .change_membership(
                        openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                        false,
                    )
                    .await
            };
            change.map_err(|e| ApiError::new(Code::ServiceUnavailable, e.to_string()))?;
        }
        let removed = || {
            ApiError::new(
                Code::ValidationException,
                format!(
                    "node {id} was removed from this cluster: its data directory belongs to a \
                     former member; delete it to join again"
                ),
            )
        };
        self.core
            .update::<NodeRecord>(&key, |cur| {
                let mut n = cur.ok_or_else(missing)?;
                n.state = match (n.state, state) {
                    (NodeState::Removed, NodeState::Removed) => NodeState::Removed,
                    (NodeState::Removed, _) => return Err(removed()),
                    // A draining node is leaving anyway: it keeps draining.
                    (NodeState::Draining, NodeState::Restarting | NodeState::Up) => {
                        NodeState::Draining
                    }
                    (_, s) => s,
                };
                Ok(n)
            })
            .await
            .map(drop)
    }

    /// The meta leader's care of the meta voters: one promotion or demotion per call, as
    /// `trellis_meta::voters::voter_step` decides from the nodes' liveness.
    pub(crate) async fn adjust_voters(&self, views: &[NodeView]) -> ApiResult<()> {
        let meta = &self.core.meta;
        let m = meta.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let Some(step) = voter_step(views, &voters, &learners, self.id()) else {
            return Ok(());
        };
        let mut next: BTreeSet<u64> = voters.iter().copied().collect();
        match step {
            VoterStep::Promote(id) => {
                tracing::info!(node_id = self.id(), voter = id, "promoting a meta voter");
                next.insert(id);
            }
            VoterStep::Demote(id) => {
                tracing::info!(node_id = self.id(), voter = id, "demoting a meta voter");
                next.remove(&id);
            }
        }
        let _g = self.lock.lock().await;
        meta.raft.change_membership(next, true).await.map_err(|e| {
            ApiError::new(Code::ServiceUnavailable, format!("meta membership: {e}"))
        })?;
        Ok(())
    }

    /// On the meta leader: decommissions the nodes that are gone (silent for
    /// `cluster.decommission_after_seconds`: DRAINING, so placement re-creates their replicas
    /// elsewhere), and removes draining nodes that are down and hold nothing any more (a
    /// decommission whose node stopped before it could remove itself).
    pub(crate) async fn decommission(&self, views: &[NodeView]) -> ApiResult<()> {
        let map = self.core.meta.shard_map().map_err(from_meta)?;
        for v in views.iter().filter(|v| v.id != self.id()) {
            if v.gone && v.state.stays() {
                tracing::warn!(
                    node_id = self.id(),
                    decommissioned = v.id,
                    after_seconds = self.core.settings.cluster.decommission_after_seconds,
                    "a node silent for too long is decommissioned"
                );
                self.set_node_state_here(v.id, NodeState::Draining).await?;
            } else if v.state == NodeState::Draining && v.down {
                let holds = map
                    .iter()
                    .any(|s| s.replicas.contains(&v.id) || s.learners.contains(&v.id));
                if !holds {
                    tracing::info!(
                        node_id = self.id(),
                        removed = v.id,
                        "a drained node that stopped is removed"
                    );
                    self.set_node_state_here(v.id, NodeState::Removed).await?;
                }
            }
        }
        Ok(())
    }

    /// A node starting: a hand-off before its restart is over (RESTARTING becomes UP). Sent
    /// until the meta leader takes it, whatever this node's replica of the meta group says
    /// (it may not have applied the hand-off before it stopped). A node that was removed
    /// hears so, and says so.
    pub(crate) async fn announce(&self) {
        let mut retry = Backoff::every(Duration::from_millis(500));
        while !self.core.stopping() {
            let r = rpb::SetNodeStateRequest {
                node_id: self.id(),
                state: rpb::NodeStateChange::Up as i32,
            };
            // Through this node's own view of the meta leader, else through any member it
            // knows (a removed node's view never learns a leader: the group left it).
            let mut sent = self.router.on_meta(r).await;
            if sent
                .as_ref()
                .is_err_and(|e| e.code == Code::ServiceUnavailable)
            {
                for peer in self.core.other_nodes() {
                    sent = self.router.forward(peer, r).await;
                    if sent.is_ok()
                        || sent
                            .as_ref()
                            .is_err_and(|e| e.code == Code::ValidationException)
                    {
                        break;
                    }
                }
            }
            match sent {
                Ok(_) => return,
                Err(e) if e.code == Code::ValidationException => {
                    tracing::error!(node_id = self.id(), error = %e.message,
                        "this node is no member of the cluster; stopping");
                    self.removed.send_replace(Some(e.message));
                    return;
                }
                Err(e) => {
                    if retry.attempts() % 20 == 19 {
                        tracing::info!(node_id = self.id(), error = %e.message,
                            "cannot reach the meta leader yet; retrying");
                    }
                }
            }
            retry.again().await;
        }
    }

    /// On the meta leader: whether node `id` is still a member. Only an explicit REMOVED
    /// record says no (a node this leader does not know yet may be joining).
    pub(crate) fn check_member_here(&self, id: u64) -> ApiResult<()> {
        let own = self
            .core
            .meta
            .app
            .record::<NodeRecord>(&placement::node_key(id))
            .map_err(from_meta)?;
        match own {
            Some(n) if n.state == NodeState::Removed => Err(ApiError::new(
                Code::ValidationException,
                format!(
                    "node {id} was removed from this cluster: its data directory belongs to a \
                     former member; delete it to join again"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// On a node that does not lead the meta group, every 10 s: asks the others (each passes
    /// it to the meta leader) whether this node was removed while it ran; if so, it stops
    /// serving and says why ([`Membership::removed`]). A removed node's view of the cluster
    /// never changes again, so without this it would serve a stale view for ever.
    pub(crate) async fn check_still_member(&self) {
        let r = rpb::MemberCheckRequest { node_id: self.id() };
        for peer in self.core.other_nodes() {
            match self.router.forward(peer, r).await {
                Ok(_) => return,
                Err(e) if e.code == Code::ValidationException => {
                    tracing::error!(node_id = self.id(), error = %e.message,
                        "this node was removed from the cluster; stopping");
                    self.removed.send_replace(Some(e.message));
                    return;
                }
                Err(_) => {}
            }
        }
    }

    /// On the meta leader: a node that is leaving or restarting lets another node lead the
    /// meta group once it leads no shard (its own hand-off is done). It stops sending to the
    /// meta group until another node wins an election, or a guard ends.
    pub(crate) fn step_down_if_leaving(&self, leads_shards: bool) {
        let own = self
            .core
            .meta
            .app
            .record::<NodeRecord>(&placement::node_key(self.id()))
            .ok()
            .flatten();
        let leaving = own.is_some_and(|n| n.state != NodeState::Up);
        let voters = self
            .core
            .meta
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        if !leaving || leads_shards || voters < 2 {
            return;
        }
        let transport = self.core.transport.clone();
        if transport.is_muted(META_GROUP) {
            return;
        }
        tracing::info!(node_id = self.id(), "handing over the meta leadership");
        transport.mute(META_GROUP, true);
        let core = self.core.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + STEP_DOWN_GUARD;
            while tokio::time::Instant::now() < deadline && core.meta.leader() == Some(core.id()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            core.transport.mute(META_GROUP, false);
        });
    }

    /// The members with their state (DOWN when they do not answer a ping), and their
    /// counts of `shards`.
    pub async fn list_nodes(&self, shards: &[pb::Shard]) -> ApiResult<Vec<pb::Node>> {
        let nodes = self.core.meta.nodes().map_err(from_meta)?;
        let voters: Vec<u64> = {
            let m = self.core.meta.raft.metrics().borrow().clone();
            m.membership_config.membership().voter_ids().collect()
        };
        let pings = nodes
            .iter()
            .map(|n| self.router.ping(n.id, Duration::from_secs(1)));
        let alive = join_all(pings).await;
        Ok(nodes
            .into_iter()
            .zip(alive)
            .map(|(n, alive)| pb::Node {
                id: n.id,
                grpc_addr: n.grpc_addr,
                http_addr: n.http_addr,
                state: if n.state.stays() && !alive {
                    "DOWN".into()
                } else {
                    n.state.as_str().into()
                },
                leader_shards: shards.iter().filter(|s| s.leader == n.id).count() as u32,
                replica_shards: shards.iter().filter(|s| s.replicas.contains(&n.id)).count() as u32,
                zone: n.zone,
                meta_voter: voters.contains(&n.id),
            })
            .collect())
    }
}
