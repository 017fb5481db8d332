//! What a shard stores about an execution, and the keys it stores it under.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::outbox::{Message, Outgoing, ParentLink};

/// An execution's status, as `DescribeExecution` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Held back by the state machine's concurrency cap (Trellis).
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::TimedOut => "TIMED_OUT",
            Status::Aborted => "ABORTED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "QUEUED" => Status::Queued,
            "RUNNING" => Status::Running,
            "SUCCEEDED" => Status::Succeeded,
            "FAILED" => Status::Failed,
            "TIMED_OUT" => Status::TimedOut,
            "ABORTED" => Status::Aborted,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    /// The interpreter's status for a terminal one (QUEUED and RUNNING are running).
    pub fn to_asl(self) -> trellis_asl::ExecStatus {
        use trellis_asl::ExecStatus as E;
        match self {
            Status::Queued | Status::Running => E::Running,
            Status::Succeeded => E::Succeeded,
            Status::Failed => E::Failed,
            Status::TimedOut => E::TimedOut,
            Status::Aborted => E::Aborted,
        }
    }

    pub fn from_asl(s: trellis_asl::ExecStatus) -> Status {
        use trellis_asl::ExecStatus as E;
        match s {
            E::NotStarted | E::Running => Status::Running,
            E::Succeeded => Status::Succeeded,
            E::Failed => Status::Failed,
            E::TimedOut => Status::TimedOut,
            E::Aborted => Status::Aborted,
        }
    }
}

/// A task the execution waits on, kept so a new leader can dispatch it again and so task
/// tokens can be resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub request: trellis_asl::exec::TaskRequest,
    /// `.waitForTaskToken` and activities: the token the worker answers with.
    pub token: Option<String>,
    /// Activity ARN for activity tasks.
    pub activity: Option<String>,
    /// An activity worker took it, or a callback task's invocation was submitted: it is no
    /// longer dispatched again by a new leader.
    pub started: bool,
}

/// One execution, as the shard stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRecord {
    /// Shard-local id, the prefix of its history and timer keys.
    pub id: u64,
    pub arn: String,
    pub name: String,
    pub state_machine_arn: String,
    pub version_arn: Option<String>,
    pub alias_arn: Option<String>,
    /// Key of the definition text in the shard's `definitions` tree.
    pub definition: u64,
    pub express: bool,
    /// Its state machine caps concurrent executions: it starts QUEUED and runs when the node
    /// admits it.
    #[serde(default)]
    pub capped: bool,
    pub input: String,
    pub status: Status,
    pub start_ms: i64,
    pub stop_ms: Option<i64>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub paused: bool,
    pub redrive_count: u32,
    pub redrive_ms: Option<i64>,
    /// Id of the last history event written.
    pub last_event_id: u64,
    /// Pending timers: timer id -> due time (epoch ms).
    pub timers: BTreeMap<u64, i64>,
    /// Pending tasks by task id.
    pub tasks: BTreeMap<u64, TaskRecord>,
    /// The interpreter's `ExecutionState` as JSON; `None` once it is terminal and cannot be
    /// redriven.
    pub state: Option<Box<RawValue>>,
    /// Messages to other shards not yet acknowledged, in order ([`crate::outbox`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Outgoing>,
    /// The `seq` of the next message.
    #[serde(default)]
    pub next_seq: u64,
    /// A DISTRIBUTED Map's child: its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// The Map Runs it started, as the interpreter counts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub map_runs: Vec<trellis_asl::exec::MapRunSummary>,
    /// How long it is kept once closed, when its state machine overrides the cluster's
    /// retention (milliseconds); `None`: the cluster's (`cluster.retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// The start call that made it ([`crate::executor::StartRequest::request_id`]); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub request_id: u64,
    /// The last tasks closed by an answer to their token, with the call that answered each
    /// (task id, request id), at most [`ExecRecord::ANSWERS_KEPT`]: the same call forwarded
    /// again after a lost reply finds its answer taken and succeeds again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<(u64, u64)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ExecRecord {
    /// A new execution's record, RUNNING, with nothing pending.
    pub fn new(
        id: u64,
        arn: String,
        name: String,
        state_machine_arn: String,
        definition: u64,
        input: String,
        start_ms: i64,
    ) -> ExecRecord {
        ExecRecord {
            id,
            arn,
            name,
            state_machine_arn,
            version_arn: None,
            alias_arn: None,
            definition,
            express: false,
            capped: false,
            input,
            status: Status::Running,
            start_ms,
            stop_ms: None,
            output: None,
            error: None,
            cause: None,
            paused: false,
            redrive_count: 0,
            redrive_ms: None,
            last_event_id: 0,
            timers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            state: None,
            outbox: Vec::new(),
            next_seq: 0,
            parent: None,
            map_runs: Vec::new(),
            retention_ms: None,
            request_id: 0,
            answers: Vec::new(),
        }
    }

    /// How many answered tasks a record remembers ([`ExecRecord::answers`]).
    pub const ANSWERS_KEPT: usize = 8;

    /// Whether the call `request_id` (not 0) closed task `task`.
    pub fn answered_by(&self, task: u64, request_id: u64) -> bool {
        request_id != 0 && self.answers.contains(&(task, request_id))
    }

    /// Remembers that the call `request_id` (0: not named, nothing to remember) closed
    /// task `task`, forgetting the oldest beyond [`ExecRecord::ANSWERS_KEPT`].
    pub fn answered(&mut self, task: u64, request_id: u64) {
        if request_id == 0 {
            return;
        }
        if self.answers.len() >= Self::ANSWERS_KEPT {
            self.answers.remove(0);
        }
        self.answers.push((task, request_id));
    }

    /// Whether a leader must load it: not ended, or ended with messages still to send. Such
    /// records have an entry in the shard's `live` index.
    pub fn is_live(&self) -> bool {
        !self.status.is_terminal() || !self.outbox.is_empty()
    }

    /// Whether, as committed, it can wait out of the leader's memory: running, waiting on
    /// timers only, with nothing to send, not counted under a concurrency cap, not an
    /// EXPRESS child (`executor::park`). Its `live` index entry then holds its timers, and a
    /// new leader does not read the record.
    pub fn parkable(&self) -> bool {
        self.status == Status::Running
            && !self.timers.is_empty()
            && self.tasks.is_empty()
            && self.outbox.is_empty()
            && !self.capped
            && !self.express
    }

    /// Its entry in the shard's `closed` index, once it is closed.
    pub fn closed_key(&self) -> Option<keys::Closed> {
        if !self.status.is_terminal() {
            return None;
        }
        let stop = self.stop_ms.unwrap_or(self.start_ms);
        Some(match self.retention_ms {
            None => keys::Closed::Default {
                stop_ms: stop,
                id: self.id,
            },
            Some(r) => keys::Closed::Custom {
                expire_ms: stop.saturating_add(i64::try_from(r).unwrap_or(i64::MAX)),
                id: self.id,
            },
        })
    }

    /// Queues a message to another shard; it is sent once this record commits.
    /// A redrive: RUNNING again, its end forgotten, the redrive counted; a child answers to
    /// its parent's `child_id` from now on, when one is given.
    pub fn redriven(&mut self, now: i64, child_id: Option<u64>) {
        self.status = Status::Running;
        self.stop_ms = None;
        self.output = None;
        self.error = None;
        self.cause = None;
        self.redrive_count += 1;
        self.redrive_ms = Some(now);
        if let (Some(p), Some(child_id)) = (self.parent.as_mut(), child_id) {
            p.child_id = child_id;
        }
    }

    pub fn send(&mut self, message: Message) {
        self.outbox.push(Outgoing {
            seq: self.next_seq,
            message,
        });
        self.next_seq += 1;
    }

    /// Drops the messages up to `seq` (acknowledged); how many were dropped.
    pub fn delivered(&mut self, seq: u64) -> usize {
        let before = self.outbox.len();
        self.outbox.retain(|o| o.seq > seq);
        before - self.outbox.len()
    }
}

/// Keys in the shard's trees. All integers are big-endian, so trees iterate in order.
pub mod keys {
    /// `history`: execution id + event id.
    pub fn event(exec: u64, event: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&exec.to_be_bytes());
        k[8..].copy_from_slice(&event.to_be_bytes());
        k
    }

    /// `closed`: when a closed execution may be deleted. Executions kept for the cluster's
    /// retention are ordered by their stop time, so a change of `cluster.retention` applies
    /// to them all; those whose state machine sets its own are ordered by the time they
    /// expire, computed when they close. Either way the executions due are a prefix.
    #[derive(
        Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
    )]
    pub enum Closed {
        Default { stop_ms: i64, id: u64 },
        Custom { expire_ms: i64, id: u64 },
    }

    impl Closed {
        pub const DEFAULT_TAG: u8 = 0;
        pub const CUSTOM_TAG: u8 = 1;

        pub fn id(&self) -> u64 {
            match *self {
                Closed::Default { id, .. } | Closed::Custom { id, .. } => id,
            }
        }

        /// Tag, then the time and the id, big-endian (times before 1970 sort as 0).
        pub fn to_bytes(&self) -> [u8; 17] {
            let (tag, at, id) = match *self {
                Closed::Default { stop_ms, id } => (Self::DEFAULT_TAG, stop_ms, id),
                Closed::Custom { expire_ms, id } => (Self::CUSTOM_TAG, expire_ms, id),
            };
            let mut k = [0u8; 17];
            k[0] = tag;
            k[1..9].copy_from_slice(&(at.max(0) as u64).to_be_bytes());
            k[9..].copy_from_slice(&id.to_be_bytes());
            k
        }

        pub fn from_bytes(b: &[u8]) -> Option<Closed> {
            if b.len() != 17 {
                return None;
            }
            let at = i64::try_from(u64::from_be_bytes(b[1..9].try_into().ok()?)).ok()?;
            let id = u64::from_be_bytes(b[9..].try_into().ok()?);
            match b[0] {
                Self::DEFAULT_TAG => Some(Closed::Default { stop_ms: at, id }),
                Self::CUSTOM_TAG => Some(Closed::Custom { expire_ms: at, id }),
                _ => None,
            }
        }

        /// The first key after every entry of `tag` with a time up to `at`.
        pub fn bound(tag: u8, at: i64) -> [u8; 17] {
            let mut k = [0xffu8; 17];
            k[0] = tag;
            k[1..9].copy_from_slice(&(at.max(0) as u64).to_be_bytes());
            k
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_keeps_order_and_drops_what_was_delivered() {
        let mut r = ExecRecord::new(1, "a".into(), "a".into(), "m".into(), 0, "{}".into(), 0);
        for child in ["c1", "c2", "c3"] {
            r.send(Message::StopChild {
                child_arn: child.into(),
            });
        }
        assert_eq!(
            r.outbox.iter().map(|o| o.seq).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // Acknowledged up to 1; what comes later keeps counting up.
        assert_eq!(r.delivered(1), 2);
        r.send(Message::StopChild {
            child_arn: "c4".into(),
        });
        assert_eq!(r.outbox.iter().map(|o| o.seq).collect::<Vec<_>>(), [2, 3]);
        // An acknowledgement that comes again drops nothing more.
        assert_eq!(r.delivered(1), 0);
        // An empty outbox is not written at all; an old record reads back with none.
        r.delivered(3);
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("outbox"), "{text}");
        let back: ExecRecord = serde_json::from_str(&text).unwrap();
        assert!(back.outbox.is_empty() && back.parent.is_none() && back.next_seq == 4);
    }
}
