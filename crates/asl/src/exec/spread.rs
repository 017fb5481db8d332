//! Inline Map iterations and Parallel branches spread as child executions by the sharding
//! policy: whether a state spreads, starting a child in its parent's name, writing its
//! history into the parent's when it ends, and failing the state once the others stopped.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::*;
use crate::definition::State;
use crate::error::names;

impl Execution {
    /// Whether a state's children spread as child executions: the host runs them, the
    /// state's frame writes history (a silent one runs inside a child run as frames) and
    /// the sharding policy says so for this many children.
    pub(super) fn spreads(&self, fid: FrameId, st: &State, children: usize) -> bool {
        self.st.limits.child_executions
            && !self.frame(fid).silent
            && self.st.sharding.spreads(&st.name, children)
    }

    /// A spread iteration's or branch's (execution ARN, state machine ARN, name):
    /// `…:execution:{machine}/{parent}:{state}-{index}-{child id}`.
    pub(super) fn inline_child_identity(
        &self,
        state: &str,
        index: usize,
        child_id: u64,
    ) -> (String, String, String) {
        let info = &self.st.info;
        let (prefix, own) = info
            .execution_arn
            .split_once(":execution:")
            .unwrap_or(("arn:aws:states:us-east-1:000000000000", &info.execution_arn));
        let (machine, own_name) = own.rsplit_once(':').unwrap_or((own, &info.name));
        let slug: String = state
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let name = format!("{slug}-{index}-{child_id}");
        let child_machine = format!("{machine}/{own_name}");
        (
            format!("{prefix}:execution:{child_machine}:{name}"),
            format!("{prefix}:stateMachine:{child_machine}"),
            name,
        )
    }

    /// The ARN of the child execution `child_id` that slot `slot` of frame `fid` awaits.
    pub(super) fn child_arn(&self, fid: FrameId, slot: usize, child_id: u64) -> String {
        let run = match &self.active(fid).waiting {
            Waiting::Children(c) => c.run.as_ref().map(|r| r.arn.clone()),
            _ => None,
        };
        match run {
            Some(map_run_arn) => Self::child_identity(&map_run_arn, slot).0,
            None => {
                let name = &self.current_state(fid).0.name;
                self.inline_child_identity(name, slot, child_id).0
            }
        }
    }

    /// Asks the host to run an inline Map's iteration or a Parallel's branch as a child
    /// execution of its own. Its id comes from this execution, the state, the index and a
    /// counter (a state entered again starts new children), so it hashes to a shard of its
    /// own; it runs in this execution's name and sees the variables visible here. Returns
    /// its child id.
    pub(super) fn start_inline_child(
        &mut self,
        fid: FrameId,
        st: &State,
        block: BlockId,
        index: usize,
        input: Value,
    ) -> u64 {
        let child_id = self.await_child(fid, index);
        let (execution_arn, state_machine_arn, name) =
            self.inline_child_identity(&st.name, index, child_id);
        let info = &self.st.info;
        let mut scope = match &info.scope {
            Some(p) => p.clone(),
            None => Box::new(ParentScope {
                execution_arn: info.execution_arn.clone(),
                name: info.name.clone(),
                state_machine_arn: info.state_machine_arn.clone(),
                state_machine_name: info.state_machine_name.clone(),
                role_arn: info.role_arn.clone(),
                input: info.input.clone(),
                start_ms: self.st.start_ms,
                redrive_count: info.redrive_count,
                variables: Map::new(),
            }),
        };
        scope.variables = self.visible_vars(fid);
        self.out.commands.push(Command::StartChild(ChildRequest {
            child_id,
            execution_arn,
            state_machine_arn,
            name,
            index,
            input,
            definition: self.block_source(block),
            origin: ChildOrigin::Inline { scope },
            sharding: self.st.sharding.clone(),
            redrive: false,
        }));
        child_id
    }

    /// The variables a frame sees: its own, then its parents' up to its scope's root, an
    /// inner one hiding an outer one of the same name.
    fn visible_vars(&self, mut fid: FrameId) -> Map<String, Value> {
        let mut out = Map::new();
        loop {
            let f = self.frame(fid);
            for (k, v) in &f.vars {
                if !out.contains_key(k) {
                    out.insert(k.clone(), v.clone());
                }
            }
            match &f.parent {
                Some(p) if !f.scope_root => fid = p.frame,
                _ => return out,
            }
        }
    }

    /// Writes a spread child's history into this one's, after `from` (the iteration's
    /// `MapIterationStarted`, the `ParallelStateStarted`), as the inline state would have
    /// written it: its `Execution*` events are left out, the others get ids of this history
    /// and keep their order, links and times. Returns the id of the child's last event.
    fn splice(&mut self, from: u64, events: Vec<HistoryEvent>) -> u64 {
        let mut ids: HashMap<u64, u64> = HashMap::new();
        let mut last = from;
        let mut ended = None;
        for e in events {
            let prev = ids.get(&e.previous_event_id).copied().unwrap_or(from);
            match e.event_type {
                EventType::ExecutionStarted => {
                    ids.insert(e.id, from);
                    continue;
                }
                EventType::ExecutionSucceeded
                | EventType::ExecutionFailed
                | EventType::ExecutionAborted
                | EventType::ExecutionTimedOut => {
                    // `ExecutionAborted` follows no event: the last one is the branch's.
                    ended = (e.previous_event_id != 0).then_some(prev);
                    continue;
                }
                _ => {}
            }
            let details = e.details;
            let id = self.write_event(prev, e.timestamp_ms, e.event_type, || details);
            ids.insert(e.id, id);
            last = id;
        }
        ended.unwrap_or(last)
    }

    /// A spread iteration or branch ended: its history joins this one's, then the state
    /// goes on as it does when an inline frame ends (`frame_done`, `frame_failed`). When
    /// one fails, the others are stopped and the state fails once they have all reported,
    /// so their aborted states are in the history before the state's failure, as inline.
    pub(super) fn inline_child_finished(
        &mut self,
        fid: FrameId,
        slot: usize,
        o: Outcome,
        events: Vec<HistoryEvent>,
        env: &mut dyn Env,
    ) {
        let (from, is_map, failing) = {
            let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                return;
            };
            let from = c.spread.as_mut().and_then(|s| s.remove(&slot));
            (from.unwrap_or(c.last_event), c.is_map, c.failing.is_some())
        };
        let last = self.splice(from, events);
        let name = self.current_state(fid).0.name.clone();
        let iteration =
            |n: String| details([("name", Value::String(n)), ("index", Value::from(slot))]);
        let ty = match o.status {
            ExecStatus::Succeeded => EventType::MapIterationSucceeded,
            ExecStatus::Aborted if failing => EventType::MapIterationAborted,
            _ => EventType::MapIterationFailed,
        };
        let last = if is_map {
            self.emit_for(fid, last, ty, || iteration(name))
        } else {
            last
        };
        if failing {
            // An aborted iteration's end is what the state's failure follows; a branch's
            // is not (as inline). One that succeeded meanwhile need not run on a redrive.
            if is_map {
                self.frame_mut(fid).prev = last;
            }
            if o.status == ExecStatus::Succeeded {
                if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                    c.keep(slot, o.output.unwrap_or(Value::Null));
                }
            }
            return self.fail_when_stopped(fid, env);
        }
        if o.status == ExecStatus::Succeeded {
            if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                c.keep(slot, o.output.unwrap_or(Value::Null));
                c.done += 1;
                c.last_event = last;
            }
            return self.settle(fid, env);
        }
        // Failed, timed out, or stopped from outside (StopExecution on its ARN).
        let f = Failure {
            error: o
                .error
                .or_else(|| (o.status == ExecStatus::TimedOut).then(|| names::TIMEOUT.to_string())),
            cause: o.cause,
            heartbeat: false,
        };
        self.frame_mut(fid).prev = last;
        let running: Vec<(usize, u64)> = match &mut self.active_mut(fid).waiting {
            Waiting::Children(c) => {
                c.failing = Some(f);
                c.remote.iter().map(|(s, c)| (*s, *c)).collect()
            }
            _ => Vec::new(),
        };
        for (slot, child_id) in running {
            let child_arn = self.child_arn(fid, slot, child_id);
            self.out.commands.push(Command::StopChild {
                child_id,
                child_arn,
            });
        }
        self.fail_when_stopped(fid, env);
    }

    /// A spread state's child failed: once no other child runs, the state fails.
    fn fail_when_stopped(&mut self, fid: FrameId, env: &mut dyn Env) {
        let (f, is_map) = match &mut self.active_mut(fid).waiting {
            Waiting::Children(c) if c.remote.is_empty() => (c.failing.take(), c.is_map),
            _ => return,
        };
        let Some(f) = f else { return };
        self.keep_for_redrive(fid);
        self.active_mut(fid).waiting = Waiting::Nothing;
        let ty = if is_map {
            EventType::MapStateFailed
        } else {
            EventType::ParallelStateFailed
        };
        self.emit(Some(fid), ty, || None);
        self.state_failed(fid, f, env);
    }
}
