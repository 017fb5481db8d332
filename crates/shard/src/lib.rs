//! `trellis-shard`: a shard of executions.
//!
//! * [`app::ShardApp`] is the replicated state machine: execution records, AWS history,
//!   timers, task tokens and activity queues, in the shard group's sled trees.
//! * [`executor::Executor`] runs on the shard's Raft leader. It keeps the live executions in
//!   memory, feeds them inputs (starts, task results, timers, stop/pause/resume), proposes
//!   the resulting events and records in one Raft entry per batch (group commit), and only
//!   then replies and performs side effects (task dispatch, timers).
//! * [`runner`] runs one execution in memory on tokio (Express executions, a DISTRIBUTED
//!   Map's EXPRESS children, `trellis run`).
//! * [`shard_of`] is the stable shard function.

pub mod app;
pub mod codec;
pub mod executor;
pub mod listing;
pub mod metrics;
pub mod outbox;
pub mod raft;
pub mod record;
pub mod request;
pub mod runner;
pub mod token;

pub use app::ShardApp;
pub use executor::{ActivityBacklog, Executor, ShardHandle};
pub use record::{ExecRecord, Status, TaskRecord};
pub use request::{ShardConfig, ShardOp, ShardRequest, ShardResponse};

/// The shard of an execution: `xxh3_64(execution ARN, seed 0) mod shards`. Never changes:
/// the shard count is fixed when a cluster is bootstrapped.
pub fn shard_of(execution_arn: &str, shards: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(execution_arn.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// A stable key for a definition text (its shard-local `definitions` entry).
pub fn definition_hash(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// The shard crate's error. Every variant a client can see is mapped to AWS's exception
/// once, in the server (`node::from_shard`), with a `match` that has no catch-all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Storage(#[from] trellis_storage::Error),
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// Stored state that does not read back as written (a bug, or a damaged disk).
    #[error("corrupt shard state: {0}")]
    Corrupt(String),
    /// Raft failed a call for another reason than a leader change.
    #[error("raft: {0}")]
    Raft(String),
    /// This node no longer leads the shard (or never did).
    #[error("not the shard leader")]
    NotLeader { leader: Option<u64> },
    /// The executor stopped (shutdown, or leadership lost while the request waited).
    #[error("the shard executor stopped")]
    Stopped,
    #[error("execution {arn} does not exist")]
    ExecutionDoesNotExist { arn: String },
    /// The name is taken by an execution with another input (or one that ended).
    #[error("execution {arn} already exists")]
    ExecutionAlreadyExists { arn: String },
    #[error("invalid execution input: {reason}")]
    InvalidExecutionInput { reason: String },
    #[error("invalid definition: {reason}")]
    InvalidDefinition { reason: String },
    /// Not a token of this shard's pending tasks (malformed, or an earlier attempt's).
    #[error("invalid task token {token}")]
    InvalidToken { token: String },
    /// The token's task ended (answered, timed out, aborted).
    #[error("the task of this token is closed")]
    TaskClosed,
    #[error("no task has this token")]
    TaskDoesNotExist,
    /// Pause or resume of an execution that is not running.
    #[error("execution {arn} is not running")]
    NotRunning { arn: String },
    /// Pause or resume of an execution still queued behind its machine's cap.
    #[error("execution {arn} is queued, not running")]
    Queued { arn: String },
    /// Backpressure: the shard runs as many executions as it may; it takes no more child
    /// starts until some end.
    #[error("shard {shard} runs {live} executions, as many as it may; retry")]
    Full { shard: u32, live: usize },
    #[error("execution {arn} cannot be redriven: {why}")]
    NotRedrivable { arn: String, why: Redrive },
}

/// Why an execution cannot be redriven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redrive {
    /// It is still running.
    Running,
    /// It succeeded (or its state is gone): the status it has.
    Ended(Status),
    /// It closed more than 14 days ago.
    TooOld,
    /// Its history has this many events, too many to add a redrive's.
    HistoryFull(u64),
}

impl std::fmt::Display for Redrive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Redrive::Running => f.write_str("it is running"),
            Redrive::Ended(s) => write!(f, "it is {}", s.as_str()),
            Redrive::TooOld => f.write_str("it closed more than 14 days ago"),
            Redrive::HistoryFull(n) => write!(f, "its history has {n} events"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_function_is_stable() {
        // Written down in docs/architecture.md; changing it would move every execution.
        let arn = "arn:aws:states:us-east-1:000000000000:execution:Orders:run-1";
        // Pinned values: a change of hash, seed or reduction fails here.
        let pinned: Vec<(&str, u32, u32)> = vec![
            (arn, 64, 50),
            (arn, 4096, 306),
            (
                "arn:aws:states:eu-west-1:123456789012:execution:Import:a",
                64,
                43,
            ),
            (
                "arn:aws:states:eu-west-1:123456789012:execution:Import:a",
                7,
                1,
            ),
            ("", 16, 2),
        ];
        let got: Vec<(&str, u32, u32)> = pinned
            .iter()
            .map(|(a, n, _)| (*a, *n, shard_of(a, *n)))
            .collect();
        assert_eq!(got, pinned);
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(b"abc"),
            0x78af_5f94_892f_3950,
            "xxh3-64 of 'abc' with seed 0"
        );
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            seen[shard_of(&format!("{arn}-{i}"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }
}
