//! `trellis-storage`: Raft storage on sled for every Raft group of a node.
//!
//! * [`NodeDb`] is the node's one `sled::Db`. Each Raft group (the meta group, every shard)
//!   gets its own trees, named `g{N}/log`, `g{N}/raft` and `g{N}/sm/<name>`.
//! * [`LogStore`] implements openraft's `RaftLogStorage`: entries are flushed to disk before
//!   openraft is told they are durable, and so is the vote.
//! * [`StateMachineStore`] implements `RaftStateMachine` around an application state machine
//!   ([`AppStateMachine`]): it applies entries, keeps the last applied log id and the
//!   membership, and builds and installs snapshots of the application's trees.
//!
//! Both are generic over an openraft type config whose entries are `openraft::Entry` and whose
//! snapshots are files (`tokio::fs::File`, under `raft-snapshots/g{N}/` in the node's directory):
//! a snapshot is streamed to disk and from disk, never held in memory whole. They pass
//! `openraft::testing::Suite` (see `tests/suite.rs`).

mod db;
mod error;
mod log;
mod network;
mod sm;
mod trees;

pub use db::{compact_into, lock_dir, DirLock, GroupTrees, NodeDb};
pub use error::{Error, Result};
pub use log::{LogStore, REPLICATION_READ_BYTES};
pub use network::NoPeers;
pub use sm::{current_snapshot, restore_group, AppStateMachine, Exported, StateMachineStore};
pub use trees::{export_trees, import_trees};

/// Encodes a u64 so that byte order is numeric order (sled keys).
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes a key written by [`be`].
pub fn from_be(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}
