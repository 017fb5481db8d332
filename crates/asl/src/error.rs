//! Errors of the `asl` crate.
//!
//! Two kinds of failure live here:
//! * [`Error`]: the crate's API failed (a definition that does not parse, an input that is not
//!   JSON). These never reach a running execution.
//! * [`Failure`]: an ASL runtime error (`States.Runtime`, `States.TaskFailed`, a custom error
//!   from a Fail state ...). Failures flow through Retry/Catch and end up in history events.

use crate::validate::Diagnostic;

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The definition is not valid; every problem found is listed.
    #[error("invalid state machine definition: {}", crate::validate::summary(.0))]
    InvalidDefinition(Vec<Diagnostic>),
    /// A JSON document could not be parsed.
    #[error("invalid json: {0}")]
    Json(#[from] serde_json::Error),
    /// The in-memory [`crate::driver::Driver`] could not bring an execution to its end.
    #[error("{0}")]
    Driver(String),
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Error names predefined by the States language (checklist §4).
pub mod names {
    pub const ALL: &str = "States.ALL";
    pub const TIMEOUT: &str = "States.Timeout";
    pub const HEARTBEAT_TIMEOUT: &str = "States.HeartbeatTimeout";
    pub const TASK_FAILED: &str = "States.TaskFailed";
    pub const PERMISSIONS: &str = "States.Permissions";
    pub const RESULT_PATH_MATCH_FAILURE: &str = "States.ResultPathMatchFailure";
    pub const PARAMETER_PATH_FAILURE: &str = "States.ParameterPathFailure";
    pub const BRANCH_FAILED: &str = "States.BranchFailed";
    pub const NO_CHOICE_MATCHED: &str = "States.NoChoiceMatched";
    pub const INTRINSIC_FAILURE: &str = "States.IntrinsicFailure";
    pub const EXCEED_TOLERATED_FAILURE_THRESHOLD: &str = "States.ExceedToleratedFailureThreshold";
    pub const ITEM_READER_FAILED: &str = "States.ItemReaderFailed";
    pub const RESULT_WRITER_FAILED: &str = "States.ResultWriterFailed";
    pub const QUERY_EVALUATION_ERROR: &str = "States.QueryEvaluationError";
    pub const DATA_LIMIT_EXCEEDED: &str = "States.DataLimitExceeded";
    pub const RUNTIME: &str = "States.Runtime";

    /// Every predefined name; other names starting with `States.` are reserved.
    pub const PREDEFINED: [&str; 16] = [
        ALL,
        TIMEOUT,
        HEARTBEAT_TIMEOUT,
        TASK_FAILED,
        PERMISSIONS,
        RESULT_PATH_MATCH_FAILURE,
        PARAMETER_PATH_FAILURE,
        BRANCH_FAILED,
        NO_CHOICE_MATCHED,
        INTRINSIC_FAILURE,
        EXCEED_TOLERATED_FAILURE_THRESHOLD,
        ITEM_READER_FAILED,
        RESULT_WRITER_FAILED,
        QUERY_EVALUATION_ERROR,
        DATA_LIMIT_EXCEEDED,
        RUNTIME,
    ];
}

/// An ASL runtime error: a name that Retry/Catch match on, and a human-readable cause.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// The error name (`States.Timeout`, `MyCustomError` ...). `None` only for a Fail state
    /// without `Error`.
    pub error: Option<String>,
    /// The cause; `None` when nothing was given.
    pub cause: Option<String>,
    /// Set when a timeout was caused by a missed heartbeat: such a failure is reported as
    /// `States.Timeout` but also matches `States.HeartbeatTimeout`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heartbeat: bool,
}

impl Failure {
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Failure {
            error: Some(error.into()),
            cause: Some(cause.into()),
            heartbeat: false,
        }
    }

    pub fn runtime(cause: impl Into<String>) -> Self {
        Failure::new(names::RUNTIME, cause)
    }

    pub fn intrinsic(cause: impl Into<String>) -> Self {
        Failure::new(names::INTRINSIC_FAILURE, cause)
    }

    pub fn query(cause: impl Into<String>) -> Self {
        Failure::new(names::QUERY_EVALUATION_ERROR, cause)
    }

    pub fn error_name(&self) -> &str {
        self.error.as_deref().unwrap_or("")
    }

    /// Errors that no Retry or Catch can handle: the execution fails at once.
    pub fn is_terminal(&self) -> bool {
        matches!(self.error.as_deref(), Some(names::RUNTIME))
    }

    /// Does this failure match one `ErrorEquals` entry?
    pub fn matches(&self, name: &str) -> bool {
        let error = self.error_name();
        match name {
            // States.ALL matches everything but the terminal errors.
            names::ALL => error != names::DATA_LIMIT_EXCEEDED && !self.is_terminal(),
            // States.TaskFailed matches every failure but a timeout.
            names::TASK_FAILED => {
                error == names::TASK_FAILED
                    || (error != names::TIMEOUT
                        && error != names::DATA_LIMIT_EXCEEDED
                        && !self.is_terminal())
            }
            names::HEARTBEAT_TIMEOUT => error == names::HEARTBEAT_TIMEOUT || self.heartbeat,
            _ => error == name,
        }
    }

    /// The `{"Error": .., "Cause": ..}` object handed to a catcher.
    pub fn to_error_output(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if let Some(e) = &self.error {
            map.insert("Error".into(), serde_json::Value::String(e.clone()));
        }
        if let Some(c) = &self.cause {
            map.insert("Cause".into(), serde_json::Value::String(c.clone()));
        }
        serde_json::Value::Object(map)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.error_name(),
            self.cause.as_deref().unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        let timeout = Failure::new(names::TIMEOUT, "");
        assert!(timeout.matches(names::ALL));
        assert!(!timeout.matches(names::TASK_FAILED));
        assert!(!timeout.matches(names::HEARTBEAT_TIMEOUT));
        let hb = Failure {
            heartbeat: true,
            ..timeout.clone()
        };
        assert!(hb.matches(names::HEARTBEAT_TIMEOUT));
        assert!(hb.matches(names::TIMEOUT));
        let custom = Failure::new("MyError", "boom");
        assert!(custom.matches(names::TASK_FAILED));
        assert!(custom.matches(names::ALL));
        assert!(!custom.matches("Other"));
        let runtime = Failure::runtime("bad path");
        assert!(!runtime.matches(names::ALL));
        assert!(runtime.is_terminal());
        let limit = Failure::new(names::DATA_LIMIT_EXCEEDED, "");
        assert!(!limit.matches(names::ALL));
        assert!(limit.matches(names::DATA_LIMIT_EXCEEDED));
    }
}
