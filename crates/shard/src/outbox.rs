//! Messages between shards, exactly once.
//!
//! A shard that must tell another shard something (start a child execution, a child's end
//! to its parent, stop a child) writes a [`Message`] into the sending execution's record, in
//! the same Raft entry as the step that caused it: it is durable exactly when its cause is.
//! After that entry commits, the executor on the sender's leader hands the record's pending
//! messages to a [`Mailer`], which delivers them to the leaders of the receiving shards; a
//! receiver applies them in order and answers once the entry that applies them has
//! committed. Only then does the sender drop them from the record (another entry). A
//! message whose delivery did not complete is sent again, by this leader after a back-off,
//! or by the next one, which finds it in the record.
//!
//! So a message may arrive twice, and every receiver is idempotent by construction: a
//! child start names its execution (an existing one is left alone), a child's end is
//! ignored unless its parent still waits for that child, a stop of an execution that is not
//! running changes nothing. The invariants are written down in `docs/architecture.md`.

use serde::{Deserialize, Serialize};
use trellis_asl::exec::{ChildRequest, Outcome};
use trellis_asl::HistoryEvent;

use crate::executor::BoxFuture;

/// What one shard tells another, about the execution [`Message::target`] names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Start a DISTRIBUTED Map's child execution.
    StartChild {
        parent_arn: String,
        request: ChildRequest,
        /// The parent's own retention (milliseconds), which its children keep.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_ms: Option<u64>,
    },
    /// A child execution ended: feed its parent. A spread iteration or branch sends its
    /// history, which its parent writes into its own.
    ChildFinished {
        parent_arn: String,
        child_id: u64,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<HistoryEvent>,
    },
    /// The parent no longer waits for this child (its Map Run failed or was aborted).
    StopChild { child_arn: String },
}

impl Message {
    /// The execution the message is for: its shard receives it.
    pub fn target(&self) -> &str {
        match self {
            Message::StartChild { request, .. } => &request.execution_arn,
            Message::ChildFinished { parent_arn, .. } => parent_arn,
            Message::StopChild { child_arn } => child_arn,
        }
    }
}

/// A message waiting in its sender's record: `seq` orders the record's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub seq: u64,
    pub message: Message,
}

/// A child execution's parent, kept in the child's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentLink {
    pub arn: String,
    pub child_id: u64,
    /// The Map Run of a DISTRIBUTED Map's child; empty for a spread iteration or branch.
    pub map_run_arn: String,
    /// A spread iteration or branch: its history goes back with its end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline: bool,
}

/// Delivers messages to the leaders of the shards their targets live on.
pub trait Mailer: Send + Sync + 'static {
    /// Resolves `Ok` once every message is applied by its receiver, committed there;
    /// messages for one shard are applied in the order given. `Err` says why not (no
    /// leader, unreachable); the sender tries again.
    fn send(&self, messages: Vec<Message>) -> BoxFuture<'static, Result<(), String>>;
}

/// A mailer for a node that sends nothing: delivering fails, so messages wait in their
/// records. Executors that run children as frames never write any.
pub struct NoMail;

impl Mailer for NoMail {
    fn send(&self, messages: Vec<Message>) -> BoxFuture<'static, Result<(), String>> {
        let n = messages.len();
        Box::pin(async move { Err(format!("no mailer: {n} messages not sent")) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use trellis_asl::ExecStatus;

    fn child(arn: &str) -> ChildRequest {
        ChildRequest {
            child_id: 3,
            execution_arn: arn.into(),
            name: "n".into(),
            state_machine_arn: "arn:aws:states:us-east-1:1:stateMachine:M/L".into(),
            index: 2,
            input: json!({"a": 1}),
            definition: "{}".into(),
            origin: trellis_asl::exec::ChildOrigin::MapRun {
                map_run_arn: "arn:aws:states:us-east-1:1:mapRun:M/L:x".into(),
                express: false,
            },
            sharding: Default::default(),
            redrive: false,
        }
    }

    #[test]
    fn a_message_goes_to_the_shard_of_the_execution_it_is_about() {
        let start = Message::StartChild {
            parent_arn: "p".into(),
            request: child("c"),
            retention_ms: None,
        };
        assert_eq!(start.target(), "c");
        let end = Message::ChildFinished {
            parent_arn: "p".into(),
            child_id: 3,
            outcome: Outcome {
                status: ExecStatus::Succeeded,
                output: Some(json!(1)),
                error: None,
                cause: None,
            },
            events: Vec::new(),
        };
        assert_eq!(end.target(), "p");
        let stop = Message::StopChild {
            child_arn: "c".into(),
        };
        assert_eq!(stop.target(), "c");
        // They survive the record's encoding unchanged.
        for m in [start, end, stop] {
            let o = Outgoing { seq: 7, message: m };
            let back: Outgoing = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
            assert_eq!(back, o);
        }
    }
}
