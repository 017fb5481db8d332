//! Opening a shard's Raft group on this node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Raft};
use trellis_storage::{LogStore, NoPeers, NodeDb, StateMachineStore};

use crate::app::ShardApp;
use crate::request::ShardConfig;
use crate::{Error, Result};

/// A shard group's Raft instance.
pub type ShardRaft = Raft<ShardConfig>;

/// Raft timing for groups on one node; multi-node settings come with the cluster transport.
pub fn raft_config(cluster: &str) -> Result<Arc<openraft::Config>> {
    let cfg = openraft::Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Keep the log short: snapshot every 5,000 entries, keep 1,000 after it.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    Ok(Arc::new(
        cfg.validate().map_err(|e| Error::Corrupt(e.to_string()))?,
    ))
}

/// Opens (or creates) shard group `group` on a single-node cluster whose only voter is
/// `node`, and waits until this node leads it.
pub async fn open_single_node(
    db: &NodeDb,
    group: u64,
    node: u64,
    addr: &str,
) -> Result<(ShardRaft, ShardApp)> {
    let trees = db.group(group)?;
    let app = ShardApp::open(&trees)?;
    let sm = StateMachineStore::open(trees.clone(), app.clone())?;
    let log = LogStore::<ShardConfig>::new(trees);
    let raft = Raft::new(
        node,
        raft_config(&format!("shard-{group}"))?,
        NoPeers::default(),
        log,
        sm,
    )
    .await
    .map_err(|e| Error::Corrupt(format!("raft: {e}")))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::Corrupt(format!("raft: {e}")))?;
    if !initialized {
        let members = BTreeMap::from([(node, BasicNode::new(addr))]);
        raft.initialize(members)
            .await
            .map_err(|e| Error::Corrupt(format!("raft: {e}")))?;
    }
    raft.wait(Some(Duration::from_secs(30)))
        .current_leader(node, "this node leads the shard")
        .await
        .map_err(|e| Error::Corrupt(format!("raft: {e}")))?;
    // The executor reads committed state: wait until the log is applied.
    let m = raft.metrics().borrow().clone();
    if let Some(last) = m.last_log_index {
        raft.wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(Some(last), "log applied")
            .await
            .map_err(|e| Error::Corrupt(format!("raft: {e}")))?;
    }
    Ok((raft, app))
}
