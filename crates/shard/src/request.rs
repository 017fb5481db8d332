//! What a shard's Raft log carries.

use serde::{Deserialize, Serialize};
use trellis_asl::HistoryEvent;

use crate::record::ExecRecord;

/// One Raft entry of a shard: the transitions of many executions, proposed together (group
/// commit).
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardRequest {
    pub ops: Vec<ShardOp>,
}

/// One change. Ops carry the values to write (events, the new record), never instructions
/// to re-run, so applying one twice changes nothing.
#[derive(Debug, Serialize, Deserialize)]
pub enum ShardOp {
    /// The execution's new record and the history events written since the previous one.
    Put {
        record: Box<ExecRecord>,
        events: Vec<HistoryEvent>,
        /// The definition text, the first time an execution of it is stored on this shard.
        definition: Option<(u64, String)>,
    },
}

/// What applying an entry returns. Nothing: the proposer already knows the outcome.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ShardResponse;

openraft::declare_raft_types!(
    /// The openraft type configuration of shard groups.
    pub ShardConfig:
        D = ShardRequest,
        R = ShardResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<ShardConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);
