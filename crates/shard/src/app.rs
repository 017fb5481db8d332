//! The shard's replicated state: executions (with their pending timers and tasks) and
//! their histories, in the group's sled trees. Every replica applies the same entries.
//!
//! A new executor rebuilds its timer wheel, token table and activity queues from the live
//! records (`ShardApp::live`), so no index of them is kept: the `timers`, `tokens` and
//! `activities` trees of earlier versions are emptied when a replica opens, and stay in the
//! snapshot format (empty) so replicas of both versions exchange snapshots.

use openraft::LogId;
use trellis_asl::HistoryEvent;
use trellis_storage::{AppStateMachine, GroupTrees};

use crate::record::{keys, ExecRecord};
use crate::request::{ShardConfig, ShardOp, ShardRequest, ShardResponse};
use crate::Result;

const TREES: [&str; 7] = [
    "executions",
    "ids",
    "history",
    "timers",
    "tokens",
    "activities",
    "definitions",
];

/// Trees earlier versions wrote and nothing read: emptied on open.
const RETIRED: [usize; 3] = [3, 4, 5];

/// A shard's state machine.
#[derive(Clone)]
pub struct ShardApp {
    /// Execution ARN -> record.
    executions: sled::Tree,
    /// Execution id -> ARN.
    ids: sled::Tree,
    /// (execution id, event id) -> event.
    history: sled::Tree,
    /// Definition hash -> definition text.
    definitions: sled::Tree,
    all: Vec<(String, sled::Tree)>,
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

impl ShardApp {
    pub fn open(trees: &GroupTrees) -> Result<ShardApp> {
        let mut all = Vec::new();
        for name in TREES {
            all.push((name.to_string(), trees.sm_tree(name)?));
        }
        for i in RETIRED {
            all[i].1.clear()?;
        }
        let t = |i: usize| all[i].1.clone();
        Ok(ShardApp {
            executions: t(0),
            ids: t(1),
            history: t(2),
            definitions: t(6),
            all,
        })
    }

    /// Applies one op.
    pub fn apply_op(&self, op: &ShardOp) -> Result<()> {
        match op {
            ShardOp::Put {
                record,
                events,
                definition,
            } => self.put(record, events, definition.as_ref()),
        }
    }

    fn put(
        &self,
        rec: &ExecRecord,
        events: &[HistoryEvent],
        definition: Option<&(u64, String)>,
    ) -> Result<()> {
        if let Some((hash, text)) = definition {
            self.definitions
                .insert(hash.to_be_bytes(), text.as_bytes())?;
        }
        let mut history = sled::Batch::default();
        for e in events {
            history.insert(&keys::event(rec.id, e.id), json(e)?);
        }
        self.history.apply_batch(history)?;
        // No need to read (and parse) the previous record: only its existence matters.
        if !self.executions.contains_key(rec.arn.as_bytes())? {
            self.ids.insert(rec.id.to_be_bytes(), rec.arn.as_bytes())?;
        }
        self.executions.insert(rec.arn.as_bytes(), json(rec)?)?;
        Ok(())
    }

    // ------------------------------------------------------------------ reads

    /// The record of an execution, by ARN.
    pub fn record(&self, arn: &str) -> Result<Option<ExecRecord>> {
        match self.executions.get(arn.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// The ARN of an execution id.
    pub fn arn_of(&self, id: u64) -> Result<Option<String>> {
        Ok(self
            .ids
            .get(id.to_be_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The next free execution id (one past the highest stored).
    pub fn next_exec_id(&self) -> Result<u64> {
        Ok(match self.ids.last()? {
            Some((k, _)) => trellis_storage::from_be(&k).unwrap_or(0) + 1,
            None => 1,
        })
    }

    pub fn definition(&self, hash: u64) -> Result<Option<String>> {
        Ok(self
            .definitions
            .get(hash.to_be_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// History events of an execution with ids in `from..=to`, in order.
    pub fn history(&self, exec: u64, from: u64, to: u64) -> Result<Vec<HistoryEvent>> {
        self.history
            .range(keys::event(exec, from)..=keys::event(exec, to))
            .map(|kv| Ok(serde_json::from_slice(&kv?.1)?))
            .collect()
    }

    /// Every execution record, in ARN order, after `after` (exclusive), at most `limit`.
    pub fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<ExecRecord>> {
        let iter = match after {
            Some(a) => self.executions.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.executions.iter(),
        };
        iter.take(limit)
            .map(|kv| Ok(serde_json::from_slice(&kv?.1)?))
            .collect()
    }

    /// Records of executions that are not terminal, or still have messages to send.
    pub fn live(&self) -> Result<Vec<ExecRecord>> {
        let mut out = Vec::new();
        for kv in self.executions.iter() {
            let r: ExecRecord = serde_json::from_slice(&kv?.1)?;
            if !r.status.is_terminal() || !r.outbox.is_empty() {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// Snapshots hold every tree, in `trellis_storage::export_trees`'s format.
impl AppStateMachine<ShardConfig> for ShardApp {
    fn apply(
        &mut self,
        _log_id: &LogId<u64>,
        req: &ShardRequest,
    ) -> trellis_storage::Result<ShardResponse> {
        for op in &req.ops {
            self.apply_op(op)
                .map_err(|e| trellis_storage::Error::App(e.to_string()))?;
        }
        Ok(ShardResponse)
    }

    fn export(&self, out: &mut dyn std::io::Write) -> trellis_storage::Result<()> {
        trellis_storage::export_trees(self.all.iter().map(|(n, t)| (&**n, t)), out)
    }

    fn import(&mut self, input: &mut dyn std::io::Read) -> trellis_storage::Result<()> {
        trellis_storage::import_trees(input, self.all.iter().map(|(n, t)| (&**n, t)))
    }
}
