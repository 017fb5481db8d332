//! The shard's replicated state: executions, history, timers, task tokens and activity
//! queues, in the group's sled trees. Every replica applies the same entries.

use openraft::LogId;
use trellis_asl::HistoryEvent;
use trellis_storage::{AppStateMachine, GroupTrees};

use crate::record::{keys, ExecRecord};
use crate::request::{ShardConfig, ShardOp, ShardRequest, ShardResponse};
use crate::{Error, Result};

const TREES: [&str; 7] = [
    "executions",
    "ids",
    "history",
    "timers",
    "tokens",
    "activities",
    "definitions",
];

/// A shard's state machine.
#[derive(Clone)]
pub struct ShardApp {
    /// Execution ARN -> record.
    executions: sled::Tree,
    /// Execution id -> ARN.
    ids: sled::Tree,
    /// (execution id, event id) -> event.
    history: sled::Tree,
    /// (due, execution id, timer id) -> ().
    timers: sled::Tree,
    /// Task token -> (execution id, task id).
    tokens: sled::Tree,
    /// (activity ARN, execution id, task id) -> () for tasks no worker has taken yet.
    activities: sled::Tree,
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
        let t = |i: usize| all[i].1.clone();
        Ok(ShardApp {
            executions: t(0),
            ids: t(1),
            history: t(2),
            timers: t(3),
            tokens: t(4),
            activities: t(5),
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
        let old = self.record(&rec.arn)?;
        let mut history = sled::Batch::default();
        for e in events {
            history.insert(&keys::event(rec.id, e.id), json(e)?);
        }
        self.history.apply_batch(history)?;

        // Index trees follow the difference between the old and the new record.
        let mut timers = sled::Batch::default();
        let mut tokens = sled::Batch::default();
        let mut activities = sled::Batch::default();
        if let Some(old) = &old {
            for (id, due) in &old.timers {
                if rec.timers.get(id) != Some(due) {
                    timers.remove(&keys::timer(*due, rec.id, *id));
                }
            }
            for (id, t) in &old.tasks {
                let now = rec.tasks.get(id);
                if let Some(tok) = &t.token {
                    if now.and_then(|n| n.token.as_ref()) != Some(tok) {
                        tokens.remove(tok.as_bytes());
                    }
                }
                if let Some(a) = &t.activity {
                    if !t.started && now.is_none_or(|n| n.started) {
                        activities.remove(keys::activity(a, rec.id, *id));
                    }
                }
            }
        }
        for (id, due) in &rec.timers {
            timers.insert(&keys::timer(*due, rec.id, *id), &[]);
        }
        for (id, t) in &rec.tasks {
            if let Some(tok) = &t.token {
                tokens.insert(tok.as_bytes(), &keys::event(rec.id, *id));
            }
            if let (Some(a), false) = (&t.activity, t.started) {
                activities.insert(keys::activity(a, rec.id, *id), &[]);
            }
        }
        let changed = match &old {
            Some(before) => before.timers != rec.timers || before.tasks != rec.tasks,
            None => !rec.timers.is_empty() || !rec.tasks.is_empty(),
        };
        if changed {
            self.timers.apply_batch(timers)?;
            self.tokens.apply_batch(tokens)?;
            self.activities.apply_batch(activities)?;
        }
        if old.is_none() {
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

    /// Records of executions that are not terminal.
    pub fn live(&self) -> Result<Vec<ExecRecord>> {
        let mut out = Vec::new();
        for kv in self.executions.iter() {
            let r: ExecRecord = serde_json::from_slice(&kv?.1)?;
            if !r.status.is_terminal() {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// (execution id, task id) of a task token.
    pub fn token(&self, token: &str) -> Result<Option<(u64, u64)>> {
        Ok(self.tokens.get(token.as_bytes())?.map(|v| {
            let n = |r: std::ops::Range<usize>| trellis_storage::from_be(&v[r]).unwrap_or(0);
            (n(0..8), n(8..16))
        }))
    }

    /// Timers due at or before `now_ms`: (due, execution id, timer id).
    pub fn due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, u64, u64)>> {
        self.timers
            .range(..=keys::timer(now_ms, u64::MAX, u64::MAX))
            .take(limit)
            .map(|kv| {
                let (k, _) = kv?;
                keys::parse_timer(&k).ok_or_else(|| Error::Corrupt("timer key".into()))
            })
            .collect()
    }

    /// Queued (not yet taken) activity tasks of an activity: (execution id, task id).
    pub fn queued_activities(&self, arn: &str, limit: usize) -> Result<Vec<(u64, u64)>> {
        let prefix = keys::activity_prefix(arn);
        self.activities
            .scan_prefix(&prefix)
            .take(limit)
            .map(|kv| {
                let (k, _) = kv?;
                let rest = &k[prefix.len()..];
                let n = |r: std::ops::Range<usize>| trellis_storage::from_be(&rest[r]).unwrap_or(0);
                Ok((n(0..8), n(8..16)))
            })
            .collect()
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
