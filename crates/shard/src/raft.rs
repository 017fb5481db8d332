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

/// Raft timing of shard groups. A heartbeat every 200 ms. openraft 0.9 followers wait for
/// the leader lease (`election_timeout_max`, 0.9 s) plus an election timeout (0.5–0.9 s)
/// after the last heartbeat before they call an election, so a dead leader's shards have a
/// new one 1.4–1.8 s after it died, plus the election round.
/// A snapshot is taken every `snapshot_logs` entries (default 5,000), and a fifth of that
/// is kept in the log after it.
/// Most entries in one AppendEntries message. With entries of at most
/// `peer_max_message_bytes / MAX_APPEND_ENTRIES` bytes (see
/// [`crate::executor::ExecutorConfig::max_entry_bytes`] and
/// [`crate::request::split_by_bytes`]) every append fits in a peer message.
pub const MAX_APPEND_ENTRIES: u64 = 64;

pub fn raft_config(cluster: &str, snapshot_logs: u64) -> Result<Arc<openraft::Config>> {
    let cfg = openraft::Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: 200,
        election_timeout_min: 500,
        election_timeout_max: 900,
        // Small appends: openraft gives an AppendEntries one heartbeat interval to answer,
        // so a follower catching up gets many small appends, not a few that time out.
        max_payload_entries: MAX_APPEND_ENTRIES,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs.max(10)),
        max_in_snapshot_log_to_keep: snapshot_logs.max(10) / 5,
        ..Default::default()
    };
    Ok(Arc::new(
        cfg.validate().map_err(|e| Error::Raft(e.to_string()))?,
    ))
}

/// How long a leader keeps executing without hearing from a quorum. openraft's followers
/// refuse to vote for another candidate until this long (`election_timeout_max`, its leader
/// lease) after the leader's last heartbeat, so no other leader can exist before it ends.
pub const LEADER_LEASE: Duration = Duration::from_millis(900);

/// Opens this node's replica of shard group `group` (not initialized: see [`initialize`]).
pub async fn open<N>(
    db: &NodeDb,
    group: u64,
    node: u64,
    network: N,
    snapshot_logs: u64,
) -> Result<(ShardRaft, ShardApp)>
where
    N: openraft::network::RaftNetworkFactory<ShardConfig>,
{
    let trees = db.group(group)?;
    let app = ShardApp::open(&trees)?;
    let sm = StateMachineStore::open(trees.clone(), app.clone())?;
    let log = LogStore::<ShardConfig>::new(trees);
    let raft = Raft::new(
        node,
        raft_config(&format!("shard-{group}"), snapshot_logs)?,
        network,
        log,
        sm,
    )
    .await
    .map_err(|e| Error::Raft(e.to_string()))?;
    Ok((raft, app))
}

/// Initializes a new group with `members` as its voters; a group initialized before is left
/// as it is.
pub async fn initialize(raft: &ShardRaft, members: BTreeMap<u64, BasicNode>) -> Result<()> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    if !initialized {
        raft.initialize(members)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
    }
    Ok(())
}

/// Opens (or creates) shard group `group` on a single-node cluster whose only voter is
/// `node`, and waits until this node leads it.
pub async fn open_single_node(
    db: &NodeDb,
    group: u64,
    node: u64,
    addr: &str,
) -> Result<(ShardRaft, ShardApp)> {
    let (raft, app) = open(db, group, node, NoPeers::default(), 5_000).await?;
    initialize(&raft, BTreeMap::from([(node, BasicNode::new(addr))])).await?;
    raft.wait(Some(Duration::from_secs(30)))
        .current_leader(node, "this node leads the shard")
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    wait_applied(&raft).await?;
    Ok((raft, app))
}

/// Waits until everything in the local log is applied (the executor reads committed state).
pub async fn wait_applied(raft: &ShardRaft) -> Result<()> {
    let m = raft.metrics().borrow().clone();
    if let Some(last) = m.last_log_index {
        raft.wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(Some(last), "log applied")
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
    }
    Ok(())
}
