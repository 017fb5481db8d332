//! `trellis-cluster`: a node as a member of a Trellis cluster.
//!
//! The parts, each owning its state, wired by [`Cluster`]:
//!
//! * [`Core`]: what they share: this node's settings, its meta replica, its database, the
//!   Raft [`transport`], and the [`shards::ShardTable`] (its replicas and the leader cache).
//! * [`router::Router`]: runs a call where it can be served (the shard's leader, the meta
//!   leader, a given node), over the peer directory in the meta group.
//! * [`host::Host`]: this node's shard replicas: opens and closes them as the shard map
//!   says, and runs a shard's executor while this node leads it.
//! * [`membership::Membership`]: joining, bootstrapping, admitting nodes, the meta leader's
//!   duties, node states.
//! * [`driver::Driver`]: the placement driver (liveness, moves in flight), on the meta
//!   leader.
//! * [`admission::Admission`]: the per-state-machine concurrency cap, enforced by the meta
//!   leader.
//!
//! Calls between nodes are typed ([`calls`]); the API's calls come back into the API layer
//! through the [`Api`] trait that `trellis-server` implements. This crate never depends on
//! `trellis-server`.

pub mod admission;
pub mod backup;
pub mod calls;
pub mod config;
pub mod driver;
mod error;
pub mod host;
pub mod mail;
pub mod membership;
pub mod retry;
pub mod router;
pub mod service;
pub mod shards;
pub mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde_json::Value;
use trellis_meta::placement::{NodeState, ShardRecord};
use trellis_meta::records::Record;
use trellis_meta::{Condition, Meta, MetaOp, Table, Written};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};
use trellis_shard::token::TokenKey;
use trellis_storage::NodeDb;

pub use calls::{Api, Forward, Served};
pub use config::{ClusterConfig, Member, Settings};
pub use error::{from_meta, from_shard, internal, ApiResult, Error, Result};

use admission::Admission;
use backup::Backups;
use driver::Driver;
use host::Host;
use mail::Mail;
use membership::Membership;
use retry::Backoff;
use router::Router;
use shards::ShardTable;
use transport::Transport;

/// What the parts share. Read-mostly; each part keeps its own state itself.
/// The meta setting that holds the cluster's task-token key (hex).
pub const TOKEN_KEY: &str = "taskTokenKey";

pub struct Core {
    pub settings: Settings,
    pub meta: Meta,
    pub db: NodeDb,
    pub transport: Arc<Transport>,
    /// This node's replicas of the shards, and the leader cache.
    pub shards: ShardTable,
    stopping: AtomicBool,
}

impl Core {
    pub fn id(&self) -> u64 {
        self.settings.member.id
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The shard map's record of `shard`.
    pub fn shard_record(&self, shard: u32) -> ApiResult<ShardRecord> {
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

    /// The cluster's task-token key, once a meta leader has made it.
    pub fn token_key(&self) -> ApiResult<Option<TokenKey>> {
        let v = self
            .meta
            .app
            .get(Table::Settings, TOKEN_KEY)
            .map_err(from_meta)?;
        match v {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(TokenKey::from_hex)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::new(
                        Code::ServiceUnavailable,
                        "the task-token key in meta is unreadable",
                    )
                }),
        }
    }

    /// Writes one meta value unconditionally (on the meta leader): for a setting whose
    /// last writer wins (placement paused or not), never for a read-modify-write.
    pub async fn put(&self, table: Table, key: impl Into<String>, value: Value) -> ApiResult<()> {
        let key = key.into();
        self.meta
            .write(vec![MetaOp::Put { table, key, value }])
            .await
            .map_err(from_meta)
    }

    /// Changes one record as a compare-and-set (on the meta leader): reads it, lets
    /// `change` decide the new record from what it read (`None`: absent), and writes it only
    /// if the record is still as read, which the meta state machine checks as it applies
    /// the entry; decides again when another write got in between. `change` may refuse with
    /// an error, which is returned.
    pub async fn update<R: Record>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<R>) -> ApiResult<R>,
    ) -> ApiResult<R> {
        let mut retry =
            Backoff::new(Duration::from_millis(4), Duration::from_millis(32), 64).jittered();
        while retry.begin() {
            let read = self.meta.app.read::<R>(key).map_err(from_meta)?;
            let condition = match &read {
                Some(r) => r.unchanged(),
                None => Condition::absent::<R>(key),
            };
            let new = change(read.map(|r| r.record))?;
            if new.key() != key {
                return Err(internal(format!(
                    "a change of record {key} made record {}",
                    new.key()
                )));
            }
            let op = MetaOp::put(&new).map_err(from_meta)?;
            match self
                .meta
                .write_if(vec![condition], vec![op])
                .await
                .map_err(from_meta)?
            {
                Written::Applied => return Ok(new),
                Written::Conflict(_) => retry.pause().await,
            }
        }
        Err(ApiError::new(
            Code::ConflictException,
            format!("the meta record {key} kept changing; retry"),
        ))
    }

    /// The other members, for fan-out calls.
    pub fn other_nodes(&self) -> Vec<u64> {
        self.meta
            .nodes()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.id != self.id() && n.state != NodeState::Removed)
            .map(|n| n.id)
            .collect()
    }
}

/// A node's membership of the cluster: the parts, built and wired.
pub struct Cluster {
    core: Arc<Core>,
    router: Arc<Router>,
    host: Arc<Host>,
    membership: Arc<Membership>,
    driver: Arc<Driver>,
    admission: Arc<Admission>,
    mail: Arc<Mail>,
    backups: Backups,
    api: OnceLock<Weak<dyn Api>>,
    bootstrapped: AtomicBool,
}

impl Cluster {
    /// Opens this node's meta replica over `db` and builds the parts. The node's executors
    /// run tasks with `connectors`; the cluster's metrics go into `metrics`. Nothing is
    /// served or joined yet: serve the peer port ([`service::Service`]), bind the API
    /// ([`Cluster::bind_api`]), then call [`Cluster::bootstrap`].
    pub async fn open(
        settings: Settings,
        db: NodeDb,
        connectors: Arc<dyn trellis_shard::executor::Connectors>,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Result<Arc<Cluster>> {
        let shard_metrics = Arc::new(trellis_shard::metrics::Metrics::register(metrics));
        let snapshot_chunks = prometheus_client::metrics::counter::Counter::default();
        metrics.register(
            "trellis_raft_snapshot_chunks_received",
            "Raft snapshot chunks received (a replica too far behind catches up by snapshot)",
            snapshot_chunks.clone(),
        );
        let id = settings.member.id;
        let transport = Transport::new(
            id,
            settings.cluster.peer_max_message_bytes,
            snapshot_chunks,
            settings.peer_tls.clone(),
        );
        metrics.register(
            "trellis_forward_deadline_exceeded",
            "Calls this node forwarded that got no answer within their deadline (the target was tried no longer; the next candidate was)",
            transport.forward_timeouts().clone(),
        );
        let meta = Meta::open(&db, id, transport.network(0)).await?;
        transport.register(0, Arc::new(meta.raft.clone()));
        let core = Arc::new(Core {
            settings,
            meta,
            db,
            transport,
            shards: ShardTable::default(),
            stopping: AtomicBool::new(false),
        });
        let cluster = Arc::new_cyclic(|this: &Weak<Cluster>| {
            let router = Arc::new(Router::new(core.clone(), this.clone()));
            let admission = Arc::new(Admission::new(core.clone(), router.clone()));
            let mail = Arc::new(Mail::new(core.clone(), router.clone()));
            let host = Arc::new(Host::new(
                core.clone(),
                connectors,
                mail.clone(),
                shard_metrics,
                admission.kicker(),
            ));
            Cluster {
                backups: Backups::new(core.clone(), router.clone(), mail.clone()),
                membership: Arc::new(Membership::new(core.clone(), router.clone())),
                driver: Arc::new(Driver::new(core.clone(), router.clone())),
                core,
                router,
                host,
                admission,
                mail,
                api: OnceLock::new(),
                bootstrapped: AtomicBool::new(false),
            }
        });
        cluster.admission.spawn();
        Ok(cluster)
    }

    /// Where the API's forwarded calls go on this node (set once).
    pub fn bind_api(&self, api: Weak<dyn Api>) {
        let _ = self.api.set(api);
    }

    /// The API layer, to serve an API call that landed here.
    pub(crate) fn api(&self) -> ApiResult<Arc<dyn Api>> {
        self.api
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| ApiError::new(Code::ServiceUnavailable, "the node is not serving"))
    }

    pub fn id(&self) -> u64 {
        self.core.id()
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn meta(&self) -> &Meta {
        &self.core.meta
    }

    pub fn shards(&self) -> &ShardTable {
        &self.core.shards
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn driver(&self) -> &Arc<Driver> {
        &self.driver
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn backups(&self) -> &Backups {
        &self.backups
    }

    /// The cluster's shard count (0 until this node knows the shard map).
    pub fn shard_count(&self) -> u32 {
        self.core.shards.count()
    }

    /// Joins or bootstraps the cluster, then opens this node's shard replicas. Returns once
    /// the shard map exists and every local replica is open; leaders follow shortly.
    pub async fn bootstrap(self: &Arc<Self>) -> Result<()> {
        if self.bootstrapped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.membership.join_or_bootstrap().await?;
        // The meta leader's duties run wherever the meta leader is.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut round = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                round += 1;
                let Some(c) = weak.upgrade() else { return };
                if c.core.stopping() {
                    return;
                }
                if c.core.meta.leader() != Some(c.id()) {
                    // Another node drives placement; a later turn here starts afresh.
                    c.driver.forget_liveness();
                    // A node removed while it runs hears nothing more from the meta group
                    // (its replica may still name the old leader): every 10 s it asks.
                    if round.is_multiple_of(33) {
                        c.membership.check_still_member().await;
                    }
                    continue;
                }
                if let Err(e) = c.membership.meta_duties().await {
                    tracing::debug!(node_id = c.id(), error = %e, "meta duties");
                }
                if !round.is_multiple_of(3) {
                    continue;
                }
                match c.driver.node_views().await {
                    Ok(views) => {
                        if let Err(e) = c.membership.adjust_voters(&views).await {
                            tracing::debug!(node_id = c.id(), error = %e, "meta voters");
                        }
                        if let Err(e) = c.membership.decommission(&views).await {
                            tracing::debug!(node_id = c.id(), error = %e, "decommission");
                        }
                        c.driver.tick(&views).await;
                    }
                    Err(e) => tracing::debug!(node_id = c.id(), error = %e, "node liveness"),
                }
                c.membership
                    .step_down_if_leaving(!c.core.shards.led().is_empty());
            }
        });
        // A restarted node's hand-off is over.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(c) = weak.upgrade() {
                c.membership.announce().await;
            }
        });
        // Wait for the shard map, then keep the local replicas in line with it.
        loop {
            if self.core.stopping() {
                return Err(Error::Stopping);
            }
            if !self.core.meta.whole_shard_map()?.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.host.reconcile().await?;
        let host = Arc::downgrade(&self.host);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(host) = host.upgrade() else { return };
                if host.stopping() {
                    return;
                }
                if let Err(e) = host.reconcile().await {
                    tracing::warn!(node_id = host.id(), error = %e, "shard reconcile");
                }
            }
        });
        Ok(())
    }

    /// Waits until the node is ready ([`Cluster::readiness`]).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let why = match self.readiness() {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NotReady {
                    seconds: timeout.as_secs(),
                    why,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether this node can serve, or why not (`/readyz`): the meta group has a leader,
    /// and this node's shard replicas are caught up ([`Host::readiness`]).
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if self.core.meta.leader().is_none() {
            return Err("the meta group has no leader".into());
        }
        self.host.readiness()
    }

    /// Stops every Raft group and flushes the store.
    pub async fn shutdown(&self) {
        self.core.stopping.store(true, Ordering::Relaxed);
        self.host.shutdown().await;
        let _ = self.core.meta.raft.shutdown().await;
        let _ = self.core.db.flush().await;
    }

    /// The detector's findings on every shard, from every node.
    pub async fn doctor(&self) -> ApiResult<pb::DoctorReport> {
        let mut out = pb::DoctorReport::default();
        for (_, r) in self.router.fan_out(rpb::DoctorRequest {}, None).await {
            let r = r?;
            out.scanned_executions += r.scanned_executions;
            out.findings.extend(r.findings);
        }
        Ok(out)
    }

    /// The members with their state and shard counts.
    pub async fn list_nodes(&self) -> ApiResult<Vec<pb::Node>> {
        let shards = self.driver.list_shards().await?.shards;
        self.membership.list_nodes(&shards).await
    }

    /// Health: leaderless and under-replicated shards.
    pub async fn status(&self) -> ApiResult<pb::ClusterStatusResponse> {
        let shards = self.driver.list_shards().await?.shards;
        let nodes = self.membership.list_nodes(&shards).await?;
        let live: Vec<u64> = nodes
            .iter()
            .filter(|n| matches!(n.state.as_str(), "UP" | "DRAINING" | "RESTARTING"))
            .map(|n| n.id)
            .collect();
        let cfg = &self.core.settings.cluster;
        // The replicas a shard should have: a down member still counts (its replicas are
        // missing until it returns or is replaced).
        let members = nodes.iter().filter(|n| n.state != "REMOVED").count();
        let rf = (cfg.replication_factor as usize).min(members.max(1));
        let leaderless: Vec<u32> = shards
            .iter()
            .filter(|s| s.leader == 0)
            .map(|s| s.id)
            .collect();
        let under: Vec<u32> = shards
            .iter()
            .filter(|s| s.replicas.iter().filter(|r| live.contains(r)).count() < rf)
            .map(|s| s.id)
            .collect();
        let health = if !leaderless.is_empty() {
            "UNAVAILABLE"
        } else if !under.is_empty() {
            "DEGRADED"
        } else {
            "HEALTHY"
        };
        Ok(pb::ClusterStatusResponse {
            node_id: self.id(),
            meta_leader: self.core.meta.leader().unwrap_or(0),
            shard_count: self.shard_count(),
            meta_voters: nodes
                .iter()
                .filter(|n| n.meta_voter)
                .map(|n| n.id)
                .collect(),
            nodes,
            under_replicated: under,
            leaderless,
            health: health.into(),
            replication_factor: cfg.replication_factor,
            placement_paused: self.driver.paused(),
            moving: {
                // A replica being added shows in the map (a learner); a move or transfer
                // the driver runs shows in its own set (on the meta leader, where it runs).
                let mut moving: std::collections::BTreeSet<u32> = self
                    .core
                    .meta
                    .shard_map()
                    .unwrap_or_default()
                    .iter()
                    .filter(|s| !s.learners.is_empty())
                    .map(|s| s.id)
                    .collect();
                moving.extend(self.driver.moving_now());
                moving.into_iter().collect()
            },
        })
    }

    /// Fault injection: cuts this node off from `nodes` (both directions); empty heals.
    pub fn partition(&self, nodes: Vec<u64>) -> ApiResult<()> {
        if !self.core.settings.cluster.fault_injection {
            return Err(ApiError::new(
                Code::ValidationException,
                "fault injection is off on this node (cluster.fault_injection)",
            ));
        }
        tracing::warn!(node_id = self.id(), blocked = ?nodes, "fault injection: partition");
        self.core.transport.block(nodes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn core(dir: &std::path::Path) -> Core {
        let db = NodeDb::open(dir).unwrap();
        let meta = Meta::open_single_node(&db, 1, "127.0.0.1:1").await.unwrap();
        Core {
            settings: Settings::default(),
            meta,
            db,
            transport: Transport::new(1, 1 << 20, Default::default(), None),
            shards: ShardTable::default(),
            stopping: AtomicBool::new(false),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_updates_of_one_record_all_apply() {
        let dir = tempfile::tempdir().unwrap();
        let core = Arc::new(core(dir.path()).await);
        let key = trellis_meta::placement::shard_key(7);
        let first = ShardRecord {
            id: 7,
            replicas: vec![1],
            epoch: 0,
            learners: Vec::new(),
        };
        core.update::<ShardRecord>(&key, |cur| {
            assert!(cur.is_none(), "absent at first");
            Ok(first.clone())
        })
        .await
        .unwrap();
        // 24 writers each add one to the epoch from what they read: a blind write would
        // lose increments; compare-and-set decides again after each lost race.
        let writers = (0..24).map(|_| {
            let core = core.clone();
            let key = key.clone();
            tokio::spawn(async move {
                core.update::<ShardRecord>(&key, |cur| {
                    let mut r = cur.expect("present");
                    r.epoch += 1;
                    Ok(r)
                })
                .await
            })
        });
        for w in futures::future::join_all(writers).await {
            w.unwrap().unwrap();
        }
        let now = core.meta.app.record::<ShardRecord>(&key).unwrap().unwrap();
        assert_eq!(now.epoch, 24);
    }

    #[tokio::test]
    async fn an_update_that_refuses_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path()).await;
        let key = trellis_meta::placement::node_key(3);
        let refused = core
            .update::<trellis_meta::placement::NodeRecord>(&key, |_| {
                Err(ApiError::new(Code::ResourceNotFound, "no node 3"))
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code, Code::ResourceNotFound);
        assert!(core
            .meta
            .app
            .record::<trellis_meta::placement::NodeRecord>(&key)
            .unwrap()
            .is_none());
    }
}
