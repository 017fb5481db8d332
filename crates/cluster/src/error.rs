//! The cluster's errors.
//!
//! Calls that clients make (directly, or forwarded between nodes) answer with the wire error
//! [`ApiError`]: a forwarded call carries its handler's error back verbatim, and the router
//! reads its code (`NotLeader`, `ServiceUnavailable`) to decide where to try next. The
//! mappings of the shard's and the meta group's errors to it are here, once.
//! Starting a node (opening, joining, bootstrapping) fails with [`Error`].

use trellis_proto::{ApiError, Code};

pub type ApiResult<T> = Result<T, ApiError>;

/// Why a node could not open, join or become ready.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("meta: {0}")]
    Meta(#[from] trellis_meta::Error),
    #[error("shard: {0}")]
    Shard(#[from] trellis_shard::Error),
    #[error("storage: {0}")]
    Storage(#[from] trellis_storage::Error),
    #[error("cluster.join: {0}")]
    Join(String),
    #[error("the node is stopping")]
    Stopping,
    #[error("the node is not ready after {seconds} s: {why}")]
    NotReady { seconds: u64, why: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(Code::InternalFailure, e.to_string())
}

/// The one mapping of shard errors to AWS's exceptions and messages; no catch-all, so a new
/// variant must be placed here.
pub fn from_shard(e: trellis_shard::Error) -> ApiError {
    use trellis_shard::{Error as E, Redrive};
    match e {
        E::NotLeader { leader } => ApiError::not_leader(leader),
        E::Stopped => ApiError::new(Code::ServiceUnavailable, "the shard is restarting; retry"),
        E::Raft(why) => ApiError::new(
            Code::ServiceUnavailable,
            format!("the shard cannot commit now ({why}); retry"),
        ),
        E::ExecutionDoesNotExist { arn } => ApiError::new(
            Code::ExecutionDoesNotExist,
            format!("Execution Does Not Exist: '{arn}'"),
        ),
        E::ExecutionAlreadyExists { arn } => ApiError::new(
            Code::ExecutionAlreadyExists,
            format!("Execution Already Exists: '{arn}'"),
        ),
        E::InvalidExecutionInput { reason } => ApiError::new(
            Code::InvalidExecutionInput,
            format!("Invalid State Machine Execution Input: '{reason}'"),
        ),
        E::InvalidDefinition { reason } => ApiError::new(Code::InvalidDefinition, reason),
        E::InvalidToken { token } => {
            ApiError::new(Code::InvalidToken, format!("Invalid Token: '{token}'"))
        }
        E::TaskClosed => ApiError::new(
            Code::TaskTimedOut,
            "Task Timed Out: the task is already closed",
        ),
        E::TaskDoesNotExist => ApiError::new(Code::TaskDoesNotExist, "Task Does Not Exist"),
        E::NotRunning { arn } => ApiError::new(
            Code::ExecutionNotRedrivable,
            format!("Execution is not running: '{arn}'"),
        ),
        E::Queued { arn } => ApiError::new(
            Code::ValidationException,
            format!("Execution is queued, not running: '{arn}'"),
        ),
        e @ E::Full { .. } => ApiError::new(Code::ServiceUnavailable, e.to_string()),
        E::NotRedrivable { arn, why } => ApiError::new(
            Code::ExecutionNotRedrivable,
            match why {
                Redrive::Running => format!("Execution is RUNNING and cannot be redriven: '{arn}'"),
                Redrive::Ended(status) => format!(
                    "Execution is {} and cannot be redriven: '{arn}'",
                    status.as_str()
                ),
                Redrive::TooOld => format!(
                    "Execution closed more than 14 days ago and cannot be redriven: '{arn}'"
                ),
                Redrive::HistoryFull(n) => {
                    format!("Execution has {n} history events and cannot be redriven: '{arn}'")
                }
            },
        ),
        e @ (E::Storage(_) | E::Sled(_) | E::Json(_) | E::Corrupt(_)) => internal(e),
    }
}

/// The meta group's errors: a write on a follower says where the leader is; the rest are
/// this node's failures.
pub fn from_meta(e: trellis_meta::Error) -> ApiError {
    match e {
        trellis_meta::Error::NotLeader { leader } => ApiError::not_leader(leader),
        e => internal(e),
    }
}
