//! State processing: entering states, doing their work, output processing, Retry/Catch,
//! Parallel branches and Map iterations.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::context::Scope;
use super::*;
use crate::choice::Rule;
use crate::definition::{
    Catcher, Dynamic, Kind, MapMode, PathField, Pattern, State, Text, Transition, Wait,
    MAX_BATCH_BYTES,
};
use crate::error::names;
use crate::json;
use crate::template::Template;

const MAX_WAIT_SECONDS: i64 = 2_147_483_647;

/// FNV-1a, 64 bits: a stable hash with no dependency, for deriving child names.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn seed_of(env: &mut dyn Env) -> u64 {
    env.next_u64()
}

impl Active {
    fn eff(&self) -> &Value {
        self.input.as_ref().unwrap_or(&self.raw_input)
    }
}

impl Execution {
    fn active(&self, fid: FrameId) -> &Active {
        self.frame(fid).active.as_ref().expect("active state")
    }

    fn active_mut(&mut self, fid: FrameId) -> &mut Active {
        self.frame_mut(fid).active.as_mut().expect("active state")
    }

    fn current_state(&self, fid: FrameId) -> (&State, &Active) {
        let f = self.frame(fid);
        let a = f.active.as_ref().expect("active state");
        (self.sm.state(f.block, a.state), a)
    }

    /// Prefixes a data-processing failure's cause the way AWS does.
    fn state_error(&self, fid: FrameId, mut f: Failure) -> Failure {
        let wrap = matches!(
            f.error.as_deref(),
            Some(
                names::RUNTIME
                    | names::INTRINSIC_FAILURE
                    | names::QUERY_EVALUATION_ERROR
                    | names::RESULT_PATH_MATCH_FAILURE
            )
        );
        if wrap {
            let (st, a) = self.current_state(fid);
            f.cause = Some(format!(
                "An error occurred while executing the state '{}' (entered at the event id #{}). {}",
                st.name,
                a.entered_id,
                f.cause.as_deref().unwrap_or("")
            ));
        }
        f
    }

    fn data_failed(&mut self, fid: FrameId, f: Failure, field: &str, env: &mut dyn Env) {
        let f = self.state_error(fid, f);
        if f.error.as_deref() == Some(names::QUERY_EVALUATION_ERROR) {
            let name = self.current_state(fid).0.name.clone();
            let (e, c) = (f.error.clone(), f.cause.clone());
            self.emit(Some(fid), EventType::EvaluationFailed, || {
                details([
                    ("error", e.map(Value::String).unwrap_or(Value::Null)),
                    ("cause", c.map(Value::String).unwrap_or(Value::Null)),
                    ("location", Value::String(field.to_string())),
                    ("state", Value::String(name)),
                ])
            });
        }
        self.state_failed(fid, f, env);
    }

    fn check_size(&self, v: &Value, what: &str) -> Result<(), Failure> {
        let n = json::byte_len(v);
        if n > self.st.limits.max_payload_bytes {
            return Err(Failure::new(
                names::DATA_LIMIT_EXCEEDED,
                format!(
                    "The {what} of size {n} bytes exceeds the maximum number of bytes service limit of {} bytes.",
                    self.st.limits.max_payload_bytes
                ),
            ));
        }
        Ok(())
    }

    fn overflowed(&self) -> bool {
        self.st.next_event_id > self.st.limits.max_history_events.saturating_add(1)
    }

    // ---- inputs -----------------------------------------------------------------------

    pub(super) fn on_start(&mut self, env: &mut dyn Env) {
        if self.st.status != ExecStatus::NotStarted {
            return;
        }
        self.st.status = ExecStatus::Running;
        self.st.start_ms = self.now;
        let info = &self.st.info;
        let input_s = info
            .input_text
            .clone()
            .unwrap_or_else(|| json::to_compact(&info.input));
        let info = info.clone_without_input();
        self.emit(None, EventType::ExecutionStarted, || {
            details([
                ("input", Value::String(input_s)),
                ("inputDetails", truncated()),
                ("roleArn", Value::String(info.role_arn)),
                (
                    "stateMachineAliasArn",
                    info.state_machine_alias_arn
                        .map(Value::String)
                        .unwrap_or(Value::Null),
                ),
                (
                    "stateMachineVersionArn",
                    info.state_machine_version_arn
                        .map(Value::String)
                        .unwrap_or(Value::Null),
                ),
            ])
        });
        if let Some(t) = self.sm.timeout_seconds {
            self.start_timer(TimerKind::Execution, self.now + (t as i64) * 1000);
        }
        let root = self.alloc_frame(Frame {
            block: 0,
            parent: None,
            vars: Map::new(),
            var_bytes: 0,
            prev: 0,
            active: None,
            silent: false,
            scope_root: false,
        });
        let input = self.st.info.input.clone();
        if let Err(f) = self.check_size(&input, "execution input") {
            return self.frame_failed(root, f, env);
        }
        let start = self.sm.block(0).start_at;
        self.st.queue.push_back(Work::Enter {
            frame: root,
            state: start,
            input,
        });
    }

    fn task_frame(&self, task_id: u64) -> Option<FrameId> {
        let fid = *self.st.tasks.get(&task_id)?;
        match &self.frame(fid).active.as_ref()?.waiting {
            Waiting::Task { task_id: t, .. } if *t == task_id => Some(fid),
            _ => None,
        }
    }

    fn task_names(&self, fid: FrameId) -> (Resource, String, String) {
        let (st, _) = self.current_state(fid);
        match &st.kind {
            Kind::Task { resource, .. } => {
                let (t, r) = resource.history_names();
                (resource.clone(), t, r)
            }
            _ => (
                Resource::Lambda { arn: String::new() },
                String::new(),
                String::new(),
            ),
        }
    }

    fn clear_task(&mut self, fid: FrameId, task_id: u64) {
        self.st.tasks.remove(&task_id);
        let a = self.active_mut(fid);
        let w = std::mem::replace(&mut a.waiting, Waiting::Nothing);
        if let Waiting::Task {
            timeout_timer,
            heartbeat_timer,
            ..
        } = w
        {
            self.cancel_timer(timeout_timer);
            self.cancel_timer(heartbeat_timer);
        }
    }

    pub(super) fn on_task_started(&mut self, task_id: u64, worker: Option<String>) {
        let Some(fid) = self.task_frame(task_id) else {
            return;
        };
        let (resource, _, _) = self.task_names(fid);
        if matches!(resource, Resource::Activity { .. }) {
            self.emit(Some(fid), EventType::ActivityStarted, || {
                details([(
                    "workerName",
                    worker.map(Value::String).unwrap_or(Value::Null),
                )])
            });
        }
        self.on_heartbeat(task_id);
    }

    pub(super) fn on_task_submitted(&mut self, task_id: u64, output: Value) {
        let Some(fid) = self.task_frame(task_id) else {
            return;
        };
        let (_, ty, res) = self.task_names(fid);
        let out = json::to_compact(&output);
        self.emit(Some(fid), EventType::TaskSubmitted, || {
            details([
                ("resourceType", Value::String(ty)),
                ("resource", Value::String(res)),
                ("output", Value::String(out)),
                ("outputDetails", truncated()),
            ])
        });
    }

    pub(super) fn on_heartbeat(&mut self, task_id: u64) {
        let Some(fid) = self.task_frame(task_id) else {
            return;
        };
        let (old, secs) = match &self.active(fid).waiting {
            Waiting::Task {
                heartbeat_timer,
                heartbeat_seconds,
                ..
            } => (*heartbeat_timer, *heartbeat_seconds),
            _ => return,
        };
        let Some(secs) = secs else { return };
        self.cancel_timer(old);
        let t = self.start_timer(TimerKind::Heartbeat(fid), self.now + secs as i64 * 1000);
        if let Waiting::Task {
            heartbeat_timer, ..
        } = &mut self.active_mut(fid).waiting
        {
            *heartbeat_timer = Some(t);
        }
    }

    pub(super) fn on_task_succeeded(&mut self, task_id: u64, output: Value, env: &mut dyn Env) {
        let Some(fid) = self.task_frame(task_id) else {
            return;
        };
        self.clear_task(fid, task_id);
        let (resource, ty, res) = self.task_names(fid);
        if let Err(f) = self.check_size(&output, "task result") {
            self.emit_task_failure(fid, &resource, ty, res, &f, false);
            return self.state_failed(fid, f, env);
        }
        let out = json::to_compact(&output);
        let event = match resource {
            Resource::Service { .. } => EventType::TaskSucceeded,
            Resource::Lambda { .. } => EventType::LambdaFunctionSucceeded,
            Resource::Activity { .. } => EventType::ActivitySucceeded,
        };
        self.emit(Some(fid), event, || {
            let mut d = Map::new();
            if event == EventType::TaskSucceeded {
                d.insert("resourceType".into(), Value::String(ty));
                d.insert("resource".into(), Value::String(res));
            }
            d.insert("output".into(), Value::String(out));
            d.insert("outputDetails".into(), truncated());
            Some(d)
        });
        self.complete(fid, output, None, env);
    }

    fn emit_task_failure(
        &mut self,
        fid: FrameId,
        resource: &Resource,
        ty: String,
        res: String,
        f: &Failure,
        timed_out: bool,
    ) {
        let event = match (resource, timed_out) {
            (Resource::Service { .. }, false) => EventType::TaskFailed,
            (Resource::Service { .. }, true) => EventType::TaskTimedOut,
            (Resource::Lambda { .. }, false) => EventType::LambdaFunctionFailed,
            (Resource::Lambda { .. }, true) => EventType::LambdaFunctionTimedOut,
            (Resource::Activity { .. }, false) => EventType::ActivityFailed,
            (Resource::Activity { .. }, true) => EventType::ActivityTimedOut,
        };
        let (e, c) = (f.error.clone(), f.cause.clone());
        self.emit(Some(fid), event, || {
            let mut d = Map::new();
            if matches!(event, EventType::TaskFailed | EventType::TaskTimedOut) {
                d.insert("resourceType".into(), Value::String(ty));
                d.insert("resource".into(), Value::String(res));
            }
            if let Some(e) = e {
                d.insert("error".into(), Value::String(e));
            }
            if let Some(c) = c {
                d.insert("cause".into(), Value::String(c));
            }
            Some(d)
        });
    }

    pub(super) fn on_task_failed(&mut self, task_id: u64, f: Failure, env: &mut dyn Env) {
        let Some(fid) = self.task_frame(task_id) else {
            return;
        };
        self.clear_task(fid, task_id);
        let (resource, ty, res) = self.task_names(fid);
        self.emit_task_failure(fid, &resource, ty, res, &f, false);
        self.state_failed(fid, f, env);
    }

    pub(super) fn on_timer(&mut self, timer_id: u64, env: &mut dyn Env) {
        let Some(kind) = self.st.timers.remove(&timer_id) else {
            return;
        };
        match kind {
            TimerKind::Execution => {
                self.capture_redrive();
                if self.st.frames.first().and_then(Option::as_ref).is_some() {
                    self.abort_frame(0);
                }
                self.emit(None, EventType::ExecutionTimedOut, || {
                    details([
                        ("error", Value::String(names::TIMEOUT.into())),
                        ("cause", Value::String("The execution timed out.".into())),
                    ])
                });
                self.finish(Outcome {
                    status: ExecStatus::TimedOut,
                    output: None,
                    error: Some(names::TIMEOUT.into()),
                    cause: Some("The execution timed out.".into()),
                });
            }
            TimerKind::Wait(fid) => {
                let ok = matches!(self.st.frames.get(fid).and_then(Option::as_ref).and_then(|f| f.active.as_ref()).map(|a| &a.waiting), Some(Waiting::Wait { timer_id: t }) if *t == timer_id);
                if ok {
                    let a = self.active_mut(fid);
                    a.waiting = Waiting::Nothing;
                    let input = a.eff().clone();
                    self.complete(fid, input, None, env);
                }
            }
            TimerKind::Retry(fid) => {
                let ok = matches!(self.st.frames.get(fid).and_then(Option::as_ref).and_then(|f| f.active.as_ref()).map(|a| &a.waiting), Some(Waiting::Retry { timer_id: t }) if *t == timer_id);
                if ok {
                    self.active_mut(fid).waiting = Waiting::Nothing;
                    self.start_work(fid, env);
                }
            }
            TimerKind::TaskTimeout(fid) | TimerKind::Heartbeat(fid) => {
                let heartbeat = matches!(kind, TimerKind::Heartbeat(_));
                let task_id = match self
                    .st
                    .frames
                    .get(fid)
                    .and_then(Option::as_ref)
                    .and_then(|f| f.active.as_ref())
                    .map(|a| &a.waiting)
                {
                    Some(Waiting::Task {
                        task_id,
                        timeout_timer,
                        heartbeat_timer,
                        ..
                    }) if (!heartbeat && *timeout_timer == Some(timer_id))
                        || (heartbeat && *heartbeat_timer == Some(timer_id)) =>
                    {
                        *task_id
                    }
                    _ => return,
                };
                self.clear_task(fid, task_id);
                self.out.commands.push(Command::CancelTask { task_id });
                let (resource, ty, res) = self.task_names(fid);
                let f = Failure {
                    error: Some(names::TIMEOUT.into()),
                    cause: None,
                    heartbeat,
                };
                self.emit_task_failure(fid, &resource, ty, res, &f, true);
                self.state_failed(fid, f, env);
            }
        }
    }

    /// Remembers the top-level state the execution is in, for a redrive.
    fn capture_redrive(&mut self) {
        let Some(root) = self.st.frames.first().and_then(Option::as_ref) else {
            return;
        };
        if root.parent.is_some() {
            return;
        }
        self.st.redrive = Some(match &root.active {
            Some(a) => RedrivePoint {
                state: a.state,
                input: a.raw_input.clone(),
                vars: root.vars.clone(),
                var_bytes: root.var_bytes,
            },
            // Not in a state (stopped between states, or failed on the execution input):
            // start over.
            None => RedrivePoint {
                state: self.sm.block(0).start_at,
                input: self.st.info.input.clone(),
                vars: root.vars.clone(),
                var_bytes: root.var_bytes,
            },
        });
    }

    /// `RedriveExecution`: `ExecutionRedriven`, then the stopped state runs again with the
    /// same input and variables.
    pub(super) fn on_redrive(&mut self) {
        let Some(point) = self.st.redrive.take() else {
            return;
        };
        self.st.status = ExecStatus::Running;
        self.st.outcome = None;
        self.st.info.redrive_count += 1;
        let count = self.st.info.redrive_count;
        let last = self.st.next_event_id.saturating_sub(1);
        let redriven = self.emit_after(None, last, EventType::ExecutionRedriven, || {
            details([("redriveCount", Value::from(count))])
        });
        if let Some(t) = self.sm.timeout_seconds {
            self.start_timer(TimerKind::Execution, self.now + (t as i64) * 1000);
        }
        // The old top-level frame was aborted when the execution ended; the new one takes
        // its place (frame 0).
        if self.st.frames.first().and_then(Option::as_ref).is_some() {
            self.release_frame(0);
        }
        let root = self.alloc_frame(Frame {
            block: 0,
            parent: None,
            vars: point.vars,
            var_bytes: point.var_bytes,
            prev: redriven,
            active: None,
            silent: false,
            scope_root: false,
        });
        self.st.var_bytes = point.var_bytes;
        self.st.queue.push_back(Work::Enter {
            frame: root,
            state: point.state,
            input: point.input,
        });
    }

    pub(super) fn on_stop(&mut self, error: Option<String>, cause: Option<String>) {
        if self.st.status == ExecStatus::NotStarted {
            self.st.status = ExecStatus::Running;
        }
        self.capture_redrive();
        if self.st.frames.first().and_then(Option::as_ref).is_some() {
            self.abort_frame(0);
        }
        let (e, c) = (error.clone(), cause.clone());
        self.emit(None, EventType::ExecutionAborted, || {
            details([
                ("error", e.map(Value::String).unwrap_or(Value::Null)),
                ("cause", c.map(Value::String).unwrap_or(Value::Null)),
            ])
        });
        self.finish(Outcome {
            status: ExecStatus::Aborted,
            output: None,
            error,
            cause,
        });
    }

    // ---- states -----------------------------------------------------------------------

    pub(super) fn enter(&mut self, fid: FrameId, sid: StateId, input: Value, env: &mut dyn Env) {
        if self.st.frames.get(fid).and_then(Option::as_ref).is_none() {
            return;
        }
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, sid);
        let record = self.st.limits.record_history;
        let input_s = if record {
            json::to_compact(&input)
        } else {
            String::new()
        };
        let name = &st.name;
        let entered_id = self.emit(Some(fid), EventType::entered(st.type_name), || {
            details([
                ("name", Value::String(name.clone())),
                ("input", Value::String(input_s)),
                ("inputDetails", truncated()),
            ])
        });
        self.frame_mut(fid).active = Some(Active {
            state: sid,
            entered_id,
            entered_ms: self.now,
            raw_input: input,
            input: None,
            retry_counts: vec![0; st.retry.len()],
            retry_count: 0,
            token: None,
            waiting: Waiting::Nothing,
        });
        if self.overflowed() {
            let f = Failure::runtime(format!(
                "The execution reached the maximum number of history events ({}).",
                self.st.limits.max_history_events
            ));
            return self.frame_failed(0, f, env);
        }
        self.start_work(fid, env);
    }

    /// Applies InputPath (JSONPath) and records the effective input.
    fn effective_input(&mut self, fid: FrameId, st: &State) -> Result<(), Failure> {
        if st.is_jsonata() {
            return Ok(());
        }
        let eff = match &st.input_path {
            PathField::Default => return Ok(()),
            PathField::Null => json::empty_object(),
            PathField::Path(p) => {
                let a = self.active(fid);
                let scope = Scope {
                    exec: self,
                    frame: fid,
                    input: &a.raw_input,
                    map_item: None,
                };
                match p.resolve(&scope) {
                    Some(v) => v.into_owned(),
                    None => return Err(p.no_results()),
                }
            }
        };
        self.active_mut(fid).input = Some(eff);
        Ok(())
    }

    fn eval_template(
        &self,
        fid: FrameId,
        st: &State,
        t: &Template,
        input: &Value,
        field: &str,
        env: &mut dyn Env,
    ) -> Result<Value, Failure> {
        if st.is_jsonata() {
            let seed = seed_of(env);
            self.with_bindings(fid, input, None, None, None, seed, |b| {
                t.eval_jsonata(b, field)
            })
        } else {
            let scope = Scope {
                exec: self,
                frame: fid,
                input,
                map_item: None,
            };
            t.eval(&scope, env)
        }
    }

    fn eval_dynamic(
        &self,
        fid: FrameId,
        st: &State,
        d: &Dynamic,
        input: &Value,
        field: &str,
        env: &mut dyn Env,
    ) -> Result<Value, Failure> {
        match d {
            Dynamic::Fixed(v) => Ok(v.clone()),
            Dynamic::Path(p) => {
                let scope = Scope {
                    exec: self,
                    frame: fid,
                    input,
                    map_item: None,
                };
                p.resolve(&scope)
                    .map(|v| v.into_owned())
                    .ok_or_else(|| p.no_results())
            }
            Dynamic::Expr(t) => self.eval_template(fid, st, t, input, field, env),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dynamic_int(
        &self,
        fid: FrameId,
        st: &State,
        d: &Dynamic,
        input: &Value,
        field: &str,
        min: i64,
        env: &mut dyn Env,
    ) -> Result<i64, Failure> {
        let v = self.eval_dynamic(fid, st, d, input, field, env)?;
        match v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }) {
            Some(n) if n >= min => Ok(n),
            _ => {
                let msg = format!("The value for the field '{field}' must be an integer of at least {min}, but was {}", json::to_compact(&v));
                Err(if matches!(d, Dynamic::Expr(_)) {
                    Failure::query(msg)
                } else {
                    Failure::runtime(msg)
                })
            }
        }
    }

    /// A DISTRIBUTED Map's tolerated failures, resolved and checked as AWS does when the
    /// state starts: a count that is a non-negative integer, a percentage that is a number
    /// from 0 to 100, either may be a string of one. A failure names the field.
    #[allow(clippy::type_complexity)]
    fn tolerance(
        &self,
        fid: FrameId,
        st: &State,
        d: &crate::definition::Distributed,
        input: &Value,
        env: &mut dyn Env,
    ) -> Result<(Option<u64>, Option<f64>), (Failure, &'static str)> {
        let mut out = (None, None);
        // What AWS says of a value of the wrong type: the path it came from, or the field.
        let not_a = |dy: &Dynamic, field: &str, kind: &str, v: &Value| {
            let msg = match dy {
                Dynamic::Path(p) => format!(
                    "The {field}Path field refers to value \"{}\" which is not a valid {kind}: {}",
                    json::to_compact(v),
                    p.as_str()
                ),
                _ => format!(
                    "The {field} field has value \"{}\" which is not a valid {kind}",
                    json::to_compact(v)
                ),
            };
            if matches!(dy, Dynamic::Expr(_)) {
                Failure::query(msg)
            } else {
                Failure::runtime(msg)
            }
        };
        if let Some(dy) = &d.tolerated_failure_count {
            const F: &str = "ToleratedFailureCount";
            let v = self
                .eval_dynamic(fid, st, dy, input, F, env)
                .map_err(|f| (f, F))?;
            // A number, or a string of one (AWS reads "1" as 1).
            let n = match &v {
                Value::String(t) => t.trim().parse::<i64>().ok(),
                _ => v
                    .as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            }
            .ok_or_else(|| (not_a(dy, F, "integer", &v), F))?;
            if n < 0 {
                return Err((
                    Failure::runtime("ToleratedFailureCount cannot be negative."),
                    F,
                ));
            }
            out.0 = Some(n as u64);
        }
        if let Some(dy) = &d.tolerated_failure_percentage {
            const F: &str = "ToleratedFailurePercentage";
            let v = self
                .eval_dynamic(fid, st, dy, input, F, env)
                .map_err(|f| (f, F))?;
            let p = match &v {
                Value::String(t) => t.trim().parse::<f64>().ok().filter(|p| p.is_finite()),
                _ => v.as_f64(),
            }
            .ok_or_else(|| (not_a(dy, F, "float", &v), F))?;
            if !(0.0..=100.0).contains(&p) {
                return Err((
                    Failure::runtime("ToleratedFailurePercentage must be between 0 and 100."),
                    F,
                ));
            }
            out.1 = Some(p);
        }
        Ok(out)
    }

    pub(super) fn start_work(&mut self, fid: FrameId, env: &mut dyn Env) {
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, self.active(fid).state);
        if let Err(f) = self.effective_input(fid, st) {
            return self.data_failed(fid, f, "InputPath", env);
        }
        match &st.kind {
            Kind::Pass { result } => {
                let a = self.active(fid);
                let r = match (st.is_jsonata(), result, &st.parameters) {
                    (false, Some(r), _) => Ok(r.clone()),
                    (false, None, Some(p)) => {
                        self.eval_template(fid, st, p, a.eff(), "Parameters", env)
                    }
                    _ => Ok(a.eff().clone()),
                };
                match r {
                    Ok(r) => self.complete(fid, r, None, env),
                    Err(f) => self.data_failed(fid, f, "Parameters", env),
                }
            }
            Kind::Succeed => {
                let v = self.active(fid).eff().clone();
                self.complete(fid, v, None, env)
            }
            Kind::Fail { error, cause } => {
                let eval = |this: &Self,
                            t: &Option<Text>,
                            field: &str,
                            env: &mut dyn Env|
                 -> Result<Option<String>, Failure> {
                    let a = this.active(fid);
                    Ok(match t {
                        None => None,
                        Some(Text::Fixed(s)) => Some(s.clone()),
                        Some(Text::Path(p)) => {
                            let scope = Scope { exec: this, frame: fid, input: a.eff(), map_item: None };
                            match p.resolve(&scope) {
                                Some(v) => match v.as_ref() {
                                    Value::String(s) => Some(s.clone()),
                                    other => return Err(Failure::runtime(format!("The value at '{}' for the field '{field}' must be a string, but was {}", p.as_str(), json::to_compact(other)))),
                                },
                                None => return Err(p.no_results()),
                            }
                        }
                        Some(Text::Intrinsic(c)) => {
                            let scope = Scope { exec: this, frame: fid, input: a.eff(), map_item: None };
                            match c.eval(&scope, env, field)? {
                                Value::String(s) => Some(s),
                                other => Some(json::to_compact(&other)),
                            }
                        }
                        Some(Text::Expr(t)) => match this.eval_template(fid, st, t, a.eff(), field, env)? {
                            Value::String(s) => Some(s),
                            other => return Err(Failure::query(format!("The JSONata expression for the field '{field}' returned an unexpected result type. Expected 'string', but was '{}'", json::type_name(&other)))),
                        },
                    })
                };
                let e = match eval(self, error, "Error", env) {
                    Ok(e) => e,
                    Err(f) => return self.data_failed(fid, f, "Error", env),
                };
                let c = match eval(self, cause, "Cause", env) {
                    Ok(c) => c,
                    Err(f) => return self.data_failed(fid, f, "Cause", env),
                };
                self.frame_failed(
                    fid,
                    Failure {
                        error: e,
                        cause: c,
                        heartbeat: false,
                    },
                    env,
                )
            }
            Kind::Choice { rules, default } => self.choose(fid, st, rules, *default, env),
            Kind::Wait { wait } => self.wait(fid, st, wait, env),
            Kind::Task { .. } => self.schedule_task(fid, st, env),
            Kind::Parallel { branches } => self.start_parallel(fid, st, branches, env),
            Kind::Map { .. } => self.start_map(fid, st, env),
        }
    }

    fn choose(
        &mut self,
        fid: FrameId,
        st: &State,
        rules: &[Rule],
        default: Option<StateId>,
        env: &mut dyn Env,
    ) {
        let mut matched = None;
        for (i, rule) in rules.iter().enumerate() {
            let a = self.active(fid);
            let r = if st.is_jsonata() {
                let seed = seed_of(env);
                self.with_bindings(fid, a.eff(), None, None, None, seed, |b| {
                    rule.condition.eval_jsonata(b)
                })
            } else {
                let scope = Scope {
                    exec: self,
                    frame: fid,
                    input: a.eff(),
                    map_item: None,
                };
                rule.condition.eval(&scope)
            };
            match r {
                Ok(true) => {
                    matched = Some(i);
                    break;
                }
                Ok(false) => {}
                Err(f) => return self.data_failed(fid, f, "Condition", env),
            }
        }
        let input = self.active(fid).eff().clone();
        match (matched, default) {
            (Some(i), _) => self.complete(fid, input, Some(&rules[i]), env),
            (None, Some(d)) => self.complete_to(fid, input, Some(d), None, env),
            (None, None) => self.state_failed(
                fid,
                Failure::new(names::NO_CHOICE_MATCHED, "No Matches!"),
                env,
            ),
        }
    }

    fn wait(&mut self, fid: FrameId, st: &State, wait: &Wait, env: &mut dyn Env) {
        let input = self.active(fid).eff().clone();
        let due = match wait {
            Wait::Seconds(d) => match self.dynamic_int(fid, st, d, &input, "Seconds", 0, env) {
                Ok(s) if s > MAX_WAIT_SECONDS => Err(Failure::runtime("Wait state delay is too long.")),
                Ok(s) => Ok(self.now + s * 1000),
                Err(f) => Err(f),
            },
            Wait::Timestamp(d) => match self.eval_dynamic(fid, st, d, &input, "Timestamp", env) {
                Ok(Value::String(s)) => match json::parse_timestamp(&s) {
                    Some(ns) => {
                        let ms = (ns / 1_000_000) as i64;
                        if ms - self.now > MAX_WAIT_SECONDS * 1000 {
                            Err(Failure::runtime("Wait state delay is too long."))
                        } else {
                            Ok(ms)
                        }
                    }
                    None => Err(Failure::runtime(format!("The value '{s}' for the field 'Timestamp' is not a valid RFC 3339 timestamp"))),
                },
                Ok(other) => Err(Failure::runtime(format!("The value for the field 'Timestamp' must be a string, but was {}", json::to_compact(&other)))),
                Err(f) => Err(f),
            },
        };
        match due {
            Ok(due) if due <= self.now => self.complete(fid, input, None, env),
            Ok(due) => {
                let t = self.start_timer(TimerKind::Wait(fid), due);
                self.active_mut(fid).waiting = Waiting::Wait { timer_id: t };
            }
            Err(f) => self.data_failed(fid, f, "Seconds", env),
        }
    }

    fn schedule_task(&mut self, fid: FrameId, st: &State, env: &mut dyn Env) {
        let Kind::Task {
            resource,
            resource_arn,
            timeout_seconds,
            heartbeat_seconds,
            credentials,
        } = &st.kind
        else {
            return;
        };
        let task_id = self.st.next_task_id;
        self.st.next_task_id += 1;
        let needs_token = matches!(
            resource,
            Resource::Activity { .. }
                | Resource::Service {
                    pattern: Pattern::WaitForTaskToken,
                    ..
                }
        );
        if needs_token {
            let token = env.task_token(&self.st.info.execution_arn, task_id);
            self.active_mut(fid).token = Some(token);
        }
        let a = self.active(fid);
        let input = a.eff().clone();
        let params = match &st.parameters {
            Some(p) => self.eval_template(fid, st, p, &input, st.parameters_field(), env),
            None => Ok(input.clone()),
        };
        let params = match params {
            Ok(p) => p,
            Err(f) => return self.data_failed(fid, f, st.parameters_field(), env),
        };
        let timeout = match timeout_seconds
            .as_ref()
            .map(|d| self.dynamic_int(fid, st, d, &input, "TimeoutSeconds", 1, env))
            .transpose()
        {
            Ok(t) => t,
            Err(f) => return self.data_failed(fid, f, "TimeoutSeconds", env),
        };
        let heartbeat = match heartbeat_seconds
            .as_ref()
            .map(|d| self.dynamic_int(fid, st, d, &input, "HeartbeatSeconds", 1, env))
            .transpose()
        {
            Ok(t) => t,
            Err(f) => return self.data_failed(fid, f, "HeartbeatSeconds", env),
        };
        let creds = match credentials
            .as_ref()
            .map(|c| self.eval_template(fid, st, c, &input, "Credentials", env))
            .transpose()
        {
            Ok(c) => c,
            Err(f) => return self.data_failed(fid, f, "Credentials", env),
        };
        let (ty, res) = resource.history_names();
        let region = self.st.info.region.clone();
        let params_s = json::to_compact(&params);
        match resource {
            Resource::Service { .. } => {
                let c = creds.clone();
                self.emit(Some(fid), EventType::TaskScheduled, || {
                    details([
                        ("resourceType", Value::String(ty.clone())),
                        ("resource", Value::String(res.clone())),
                        ("region", Value::String(region)),
                        ("parameters", Value::String(params_s)),
                        (
                            "timeoutInSeconds",
                            timeout.map(Value::from).unwrap_or(Value::Null),
                        ),
                        (
                            "heartbeatInSeconds",
                            heartbeat.map(Value::from).unwrap_or(Value::Null),
                        ),
                        ("taskCredentials", c.unwrap_or(Value::Null)),
                    ])
                });
                self.emit(Some(fid), EventType::TaskStarted, || {
                    details([
                        ("resourceType", Value::String(ty)),
                        ("resource", Value::String(res)),
                    ])
                });
            }
            Resource::Lambda { arn } => {
                let arn = arn.clone();
                self.emit(Some(fid), EventType::LambdaFunctionScheduled, || {
                    details([
                        ("resource", Value::String(arn)),
                        ("input", Value::String(params_s)),
                        ("inputDetails", truncated()),
                        (
                            "timeoutInSeconds",
                            timeout.map(Value::from).unwrap_or(Value::Null),
                        ),
                    ])
                });
                self.emit(Some(fid), EventType::LambdaFunctionStarted, || None);
            }
            Resource::Activity { arn } => {
                let arn = arn.clone();
                self.emit(Some(fid), EventType::ActivityScheduled, || {
                    details([
                        ("resource", Value::String(arn)),
                        ("input", Value::String(params_s)),
                        ("inputDetails", truncated()),
                        (
                            "timeoutInSeconds",
                            timeout.map(Value::from).unwrap_or(Value::Null),
                        ),
                        (
                            "heartbeatInSeconds",
                            heartbeat.map(Value::from).unwrap_or(Value::Null),
                        ),
                    ])
                });
            }
        }
        let timeout_timer =
            timeout.map(|t| self.start_timer(TimerKind::TaskTimeout(fid), self.now + t * 1000));
        let heartbeat_timer =
            heartbeat.map(|h| self.start_timer(TimerKind::Heartbeat(fid), self.now + h * 1000));
        self.st.tasks.insert(task_id, fid);
        let a = self.active_mut(fid);
        let token = a.token.clone();
        let attempt = a.retry_count;
        a.waiting = Waiting::Task {
            task_id,
            timeout_timer,
            heartbeat_timer,
            heartbeat_seconds: heartbeat.map(|h| h as u64),
        };
        self.out.commands.push(Command::InvokeTask(TaskRequest {
            task_id,
            execution_arn: self.st.info.execution_arn.clone(),
            state_name: st.name.clone(),
            resource: resource.clone(),
            resource_arn: resource_arn.clone(),
            parameters: params,
            timeout_seconds: timeout.map(|t| t as u64),
            heartbeat_seconds: heartbeat.map(|h| h as u64),
            token,
            credentials: creds,
            attempt,
        }));
    }

    fn start_parallel(
        &mut self,
        fid: FrameId,
        st: &State,
        branches: &[BlockId],
        env: &mut dyn Env,
    ) {
        let input = self.active(fid).eff().clone();
        let branch_input = match &st.parameters {
            Some(p) => match self.eval_template(fid, st, p, &input, st.parameters_field(), env) {
                Ok(v) => v,
                Err(f) => return self.data_failed(fid, f, "Parameters", env),
            },
            None => input,
        };
        let started = self.emit(Some(fid), EventType::ParallelStateStarted, || None);
        let mut running = BTreeMap::new();
        for (slot, block) in branches.iter().enumerate() {
            let child = self.alloc_frame(Frame {
                block: *block,
                parent: Some(Parent { frame: fid, slot }),
                vars: Map::new(),
                var_bytes: 0,
                prev: started,
                active: None,
                silent: self.frame(fid).silent,
                scope_root: false,
            });
            running.insert(slot, child);
            let start = self.sm.block(*block).start_at;
            self.st.queue.push_back(Work::Enter {
                frame: child,
                state: start,
                input: branch_input.clone(),
            });
        }
        self.active_mut(fid).waiting = Waiting::Children(Children {
            is_map: false,
            results: vec![None; branches.len()],
            running,
            next_index: branches.len(),
            items: Vec::new(),
            keys: None,
            selector_input: Value::Null,
            max_concurrency: 0,
            done: 0,
            last_event: started,
            run: None,
            preselected: false,
            remote: BTreeMap::new(),
        });
    }

    fn start_map(&mut self, fid: FrameId, st: &State, env: &mut dyn Env) {
        let Kind::Map {
            items_path,
            items,
            max_concurrency,
            mode,
            distributed,
            ..
        } = &st.kind
        else {
            return;
        };
        if *mode == MapMode::Distributed
            && (distributed.item_reader.is_some() || distributed.result_writer.is_some())
        {
            let f = Failure::runtime(
                "Distributed Map with ItemReader or ResultWriter is not supported by Trellis yet",
            );
            return self.data_failed(fid, f, "ItemReader", env);
        }
        let input = self.active(fid).eff().clone();
        let value = if st.is_jsonata() {
            match items {
                Some(t) => self.eval_template(fid, st, t, &input, "Items", env),
                None => Ok(input.clone()),
            }
        } else {
            match items_path {
                Some(p) => {
                    let scope = Scope {
                        exec: self,
                        frame: fid,
                        input: &input,
                        map_item: None,
                    };
                    p.resolve(&scope)
                        .map(|v| v.into_owned())
                        .ok_or_else(|| p.no_results())
                }
                None => Ok(input.clone()),
            }
        };
        let (list, keys) = match value {
            Ok(Value::Array(a)) => (a, None),
            Ok(Value::Object(m)) if st.is_jsonata() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                (m.into_iter().map(|(_, v)| v).collect(), Some(keys))
            }
            Ok(other) => {
                let field = if st.is_jsonata() {
                    "Items"
                } else {
                    "ItemsPath"
                };
                let msg = format!(
                    "The {field} field must point to a JSON array, but was {}",
                    json::type_name(&other)
                );
                let f = if st.is_jsonata() {
                    Failure::query(msg)
                } else {
                    Failure::runtime(msg)
                };
                return self.data_failed(fid, f, field, env);
            }
            Err(f) => {
                return self.data_failed(
                    fid,
                    f,
                    if st.is_jsonata() {
                        "Items"
                    } else {
                        "ItemsPath"
                    },
                    env,
                )
            }
        };
        let mc = match self.dynamic_int(fid, st, max_concurrency, &input, "MaxConcurrency", 0, env)
        {
            Ok(n) => n as usize,
            Err(f) => return self.data_failed(fid, f, "MaxConcurrency", env),
        };
        let mc = if mc == 0 {
            self.st.limits.inline_map_concurrency
        } else {
            mc
        };
        let length = list.len();
        let (mut list, mut run, mut preselected) = (list, None, false);
        if *mode == MapMode::Distributed {
            let (tolerated_count, tolerated_percentage) =
                match self.tolerance(fid, st, distributed, &input, env) {
                    Ok(t) => t,
                    Err((f, field)) => return self.data_failed(fid, f, field, env),
                };
            let mut sizes = Vec::new();
            if let Some(b) = &distributed.item_batcher {
                match self.batch(fid, st, b, list, keys.as_deref(), &input, env) {
                    Ok((batches, s)) => (list, sizes, preselected) = (batches, s, true),
                    Err((f, field)) => return self.data_failed(fid, f, field, env),
                }
            }
            let arn = self.map_run_arn(distributed, env);
            let children = if sizes.is_empty() {
                length as u64
            } else {
                sizes.len() as u64
            };
            // A Map Run inside a child running as frames belongs to that child, which has
            // no record of its own: it is not listed.
            let silent = self.frame(fid).silent;
            let summary = if silent {
                usize::MAX
            } else {
                self.st.map_runs.len()
            };
            let record = MapRunSummary {
                map_run_arn: arn.clone(),
                state_name: st.name.clone(),
                start_ms: self.now,
                stop_ms: None,
                status: MapRunStatus::Running,
                max_concurrency: mc as u64,
                tolerated_failure_count: tolerated_count.unwrap_or(0),
                tolerated_failure_percentage: tolerated_percentage.unwrap_or(0.0),
                items: MapRunCounts {
                    pending: length as u64,
                    total: length as u64,
                    ..Default::default()
                },
                executions: MapRunCounts {
                    pending: children,
                    total: children,
                    ..Default::default()
                },
            };
            if !silent {
                self.st.map_runs.push(record);
            }
            run = Some(MapRun {
                arn,
                summary,
                sizes,
                total_items: length as u64,
                failed_items: 0,
                tolerated_count,
                tolerated_percentage,
            });
        }
        let len = list.len();
        let mut started = self.emit(Some(fid), EventType::MapStateStarted, || {
            details([("length", Value::from(length))])
        });
        if let Some(r) = &run {
            let arn = r.arn.clone();
            started = self.emit(Some(fid), EventType::MapRunStarted, || {
                details([("mapRunArn", Value::String(arn))])
            });
        }
        if len == 0 {
            if let Some(r) = &run {
                self.end_run(r.summary, MapRunStatus::Succeeded);
                self.emit(Some(fid), EventType::MapRunSucceeded, || None);
            }
            self.emit(Some(fid), EventType::MapStateSucceeded, || None);
            return self.complete(fid, Value::Array(Vec::new()), None, env);
        }
        self.active_mut(fid).waiting = Waiting::Children(Children {
            is_map: true,
            results: vec![None; len],
            running: BTreeMap::new(),
            next_index: 0,
            items: list,
            keys,
            selector_input: input,
            max_concurrency: mc,
            done: 0,
            last_event: started,
            run,
            preselected,
            remote: BTreeMap::new(),
        });
        self.fill_map(fid, env);
    }

    /// A Map Run's ARN: `arn:{partition}:states:{region}:{account}:mapRun:{machine}/{label}:{id}`,
    /// the label a fresh UUID when the state has no `Label`.
    fn map_run_arn(&self, d: &crate::definition::Distributed, env: &mut dyn Env) -> String {
        let info = &self.st.info;
        let mut parts = info.state_machine_arn.split(':');
        let partition = parts.nth(1).filter(|p| !p.is_empty()).unwrap_or("aws");
        let account = parts.nth(2).unwrap_or("000000000000");
        let label = match &d.label {
            Some(l) => l.clone(),
            None => crate::env::uuid_v4(env),
        };
        let id = crate::env::uuid_v4(env);
        format!(
            "arn:{partition}:states:{}:{account}:mapRun:{}/{label}:{id}",
            info.region, info.state_machine_name
        )
    }

    /// Applies ItemSelector to one item (`$$.Map.Item` is the item, its index and key).
    #[allow(clippy::too_many_arguments)]
    fn select(
        &self,
        fid: FrameId,
        st: &State,
        t: &Template,
        sel: &Value,
        mi: (usize, &Value, Option<&str>),
        env: &mut dyn Env,
    ) -> Result<Value, Failure> {
        if st.is_jsonata() {
            let seed = seed_of(env);
            self.with_bindings(fid, sel, None, None, Some(mi), seed, |b| {
                t.eval_jsonata(b, "ItemSelector")
            })
        } else {
            let scope = Scope {
                exec: self,
                frame: fid,
                input: sel,
                map_item: Some(mi),
            };
            t.eval(&scope, env)
        }
    }

    /// A DISTRIBUTED Map's ItemBatcher: ItemSelector is applied to every item, then the
    /// items go, in order, into batches `{"BatchInput": ..., "Items": [...]}` of at most
    /// `MaxItemsPerBatch` items and `MaxInputBytesPerBatch` bytes of JSON (256 KiB when
    /// absent). Returns the batches and how many items each holds.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn batch(
        &self,
        fid: FrameId,
        st: &State,
        b: &crate::definition::Batcher,
        items: Vec<Value>,
        keys: Option<&[String]>,
        input: &Value,
        env: &mut dyn Env,
    ) -> Result<(Vec<Value>, Vec<u64>), (Failure, &'static str)> {
        const ITEMS: &str = "MaxItemsPerBatch";
        const BYTES: &str = "MaxInputBytesPerBatch";
        let max_items = match &b.max_items {
            Some(d) => self
                .dynamic_int(fid, st, d, input, ITEMS, 1, env)
                .map_err(|f| (f, ITEMS))? as usize,
            None => usize::MAX,
        };
        let max_bytes = match &b.max_bytes {
            Some(d) => self
                .dynamic_int(fid, st, d, input, BYTES, 1, env)
                .map_err(|f| (f, BYTES))? as u64,
            None => MAX_BATCH_BYTES,
        };
        if max_bytes > MAX_BATCH_BYTES {
            let msg = format!("The value for the field '{BYTES}' must be at most {MAX_BATCH_BYTES}, but was {max_bytes}");
            return Err((Failure::runtime(msg), BYTES));
        }
        let max_bytes = max_bytes as usize;
        let batch_input = match &b.batch_input {
            Some(t) => Some(
                self.eval_template(fid, st, t, input, "BatchInput", env)
                    .map_err(|f| (f, "BatchInput"))?,
            ),
            None => None,
        };
        let item_selector = match &st.kind {
            Kind::Map { item_selector, .. } => item_selector.as_ref(),
            _ => None,
        };
        let mut batches = super::batch::Batches::new(batch_input, max_items, max_bytes);
        for (i, item) in items.into_iter().enumerate() {
            let item = match item_selector {
                Some(t) => {
                    let key = keys.map(|k| k[i].as_str());
                    self.select(fid, st, t, input, (i, &item, key), env)
                        .map_err(|f| (f, "ItemSelector"))?
                }
                None => item,
            };
            if let Err(super::batch::TooLarge(n)) = batches.push(item) {
                let msg = format!("The item at index {i} is {n} bytes of JSON, more than a batch of at most {max_bytes} bytes ({BYTES}) can hold");
                return Err((Failure::runtime(msg), BYTES));
            }
        }
        Ok(batches.finish())
    }

    /// Starts Map iterations up to MaxConcurrency.
    fn fill_map(&mut self, fid: FrameId, env: &mut dyn Env) {
        loop {
            let sm = self.sm.clone();
            let st = sm.state(self.frame(fid).block, self.active(fid).state);
            let Kind::Map {
                processor,
                item_selector,
                ..
            } = &st.kind
            else {
                return;
            };
            let (index, item, key, distributed, preselected) = {
                let Waiting::Children(c) = &self.active(fid).waiting else {
                    return;
                };
                if c.next_index >= c.items.len()
                    || (c.max_concurrency > 0 && c.in_flight() >= c.max_concurrency)
                {
                    return;
                }
                (
                    c.next_index,
                    c.items[c.next_index].clone(),
                    c.keys.as_ref().map(|k| k[c.next_index].clone()),
                    c.run.is_some(),
                    c.preselected,
                )
            };
            if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                c.next_index += 1;
            }
            self.run_moved(fid, index, |c| {
                c.pending = c.pending.saturating_sub(1);
                c.running += 1;
            });
            let iteration_input = match item_selector.as_ref().filter(|_| !preselected) {
                None => Ok(item),
                Some(t) => {
                    let Waiting::Children(c) = &self.active(fid).waiting else {
                        return;
                    };
                    self.select(
                        fid,
                        st,
                        t,
                        &c.selector_input,
                        (index, &item, key.as_deref()),
                        env,
                    )
                }
            };
            let iteration_input = match iteration_input {
                Ok(v) => v,
                Err(f) => {
                    self.abort_children(fid);
                    if let Waiting::Children(Children { run: Some(r), .. }) =
                        &self.active(fid).waiting
                    {
                        let summary = r.summary;
                        self.end_run(summary, MapRunStatus::Failed);
                    }
                    self.emit(Some(fid), EventType::MapStateFailed, || None);
                    self.active_mut(fid).waiting = Waiting::Nothing;
                    return self.data_failed(fid, f, "ItemSelector", env);
                }
            };
            if distributed && self.st.limits.child_executions {
                self.start_child(fid, st, index, iteration_input);
                continue;
            }
            let name = st.name.clone();
            let prev = self.frame(fid).prev;
            // A DISTRIBUTED Map's child is an execution of its own: no iteration events here.
            let started = if distributed {
                prev
            } else {
                self.emit_for(fid, prev, EventType::MapIterationStarted, || {
                    details([("name", Value::String(name)), ("index", Value::from(index))])
                })
            };
            let child = self.alloc_frame(Frame {
                block: *processor,
                parent: Some(Parent {
                    frame: fid,
                    slot: index,
                }),
                vars: Map::new(),
                var_bytes: 0,
                prev: started,
                active: None,
                silent: distributed || self.frame(fid).silent,
                scope_root: distributed,
            });
            if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                c.running.insert(index, child);
            }
            let start = self.sm.block(*processor).start_at;
            self.st.queue.push_back(Work::Enter {
                frame: child,
                state: start,
                input: iteration_input,
            });
        }
    }

    // ---- completion -------------------------------------------------------------------

    /// The state's work produced `result`; run output processing and transition.
    pub(super) fn complete(
        &mut self,
        fid: FrameId,
        result: Value,
        rule: Option<&Rule>,
        env: &mut dyn Env,
    ) {
        let next = rule.map(|r| r.next);
        self.complete_to(fid, result, next, rule, env)
    }

    fn complete_to(
        &mut self,
        fid: FrameId,
        result: Value,
        next: Option<StateId>,
        rule: Option<&Rule>,
        env: &mut dyn Env,
    ) {
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, self.active(fid).state);
        let has_result = matches!(
            st.kind,
            Kind::Task { .. } | Kind::Parallel { .. } | Kind::Map { .. }
        );
        let assign_t = rule.and_then(|r| r.assign.as_ref()).or(st.assign.as_ref());
        let (output, assigned) = if st.is_jsonata() {
            let a = self.active(fid);
            let seed = seed_of(env);
            let out_t = rule.and_then(|r| r.output.as_ref()).or(st.output.as_ref());
            let res = has_result.then_some(&result);
            let r = self.with_bindings(fid, &a.raw_input, res, None, None, seed, |b| {
                let assigned = match assign_t {
                    Some(t) => Some(t.eval_jsonata(b, "Assign")?),
                    None => None,
                };
                let output = match out_t {
                    Some(t) => t.eval_jsonata(b, "Output")?,
                    None if has_result => result.clone(),
                    None => a.raw_input.clone(),
                };
                Ok::<_, Failure>((output, assigned))
            });
            match r {
                Ok(v) => v,
                Err(f) => return self.data_failed(fid, f, "Output", env),
            }
        } else {
            match self.jsonpath_output(fid, st, result, assign_t, env) {
                Ok(v) => v,
                Err((f, field)) => return self.data_failed(fid, f, field, env),
            }
        };
        if let Err(f) = self.check_size(&output, "state output") {
            return self.state_failed(fid, f, env);
        }
        let next = match next {
            Some(n) => Some(Transition::Next(n)),
            None => st.transition.clone(),
        };
        self.exit_state(fid, st, output, assigned, next, env);
    }

    fn jsonpath_output(
        &self,
        fid: FrameId,
        st: &State,
        result: Value,
        assign_t: Option<&Template>,
        env: &mut dyn Env,
    ) -> Result<(Value, Option<Value>), (Failure, &'static str)> {
        let a = self.active(fid);
        let assigned = match assign_t {
            Some(t) => {
                let scope = Scope {
                    exec: self,
                    frame: fid,
                    input: &result,
                    map_item: None,
                };
                Some(t.eval(&scope, env).map_err(|f| (f, "Assign"))?)
            }
            None => None,
        };
        let result = match &st.result_selector {
            Some(t) => {
                let scope = Scope {
                    exec: self,
                    frame: fid,
                    input: &result,
                    map_item: None,
                };
                t.eval(&scope, env).map_err(|f| (f, "ResultSelector"))?
            }
            None => result,
        };
        let has_result_path = matches!(
            st.kind,
            Kind::Pass { .. } | Kind::Task { .. } | Kind::Parallel { .. } | Kind::Map { .. }
        );
        let output = if has_result_path {
            apply_result_path(&st.result_path, &a.raw_input, result)
                .map_err(|f| (f, "ResultPath"))?
        } else {
            result
        };
        let output = match &st.output_path {
            PathField::Default => output,
            PathField::Null => json::empty_object(),
            PathField::Path(p) => {
                let scope = Scope {
                    exec: self,
                    frame: fid,
                    input: &output,
                    map_item: None,
                };
                match p.resolve(&scope) {
                    Some(v) => v.into_owned(),
                    None => return Err((p.no_results(), "OutputPath")),
                }
            }
        };
        Ok((output, assigned))
    }

    fn exit_state(
        &mut self,
        fid: FrameId,
        st: &State,
        output: Value,
        assigned: Option<Value>,
        next: Option<Transition>,
        env: &mut dyn Env,
    ) {
        let record = self.st.limits.record_history;
        let out_s = if record {
            json::to_compact(&output)
        } else {
            String::new()
        };
        let assigned_map = match assigned {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        };
        let mut sizes = Vec::new();
        if let Some(m) = &assigned_map {
            sizes.extend(m.values().map(json::byte_len));
            let total: usize = sizes.iter().sum();
            if total > self.st.limits.max_payload_bytes {
                let f = Failure::new(names::DATA_LIMIT_EXCEEDED, format!("The assigned variables of size {total} bytes exceed the maximum of {} bytes.", self.st.limits.max_payload_bytes));
                return self.state_failed(fid, f, env);
            }
            let vars = &self.frame(fid).vars;
            let replaced: usize = m
                .keys()
                .filter_map(|k| vars.get(k))
                .map(json::byte_len)
                .sum();
            let after = self.st.var_bytes + total - replaced;
            if after > self.st.limits.max_variable_bytes {
                let f = Failure::new(names::DATA_LIMIT_EXCEEDED, format!("The variables of this execution would total {after} bytes, more than the maximum of {} bytes.", self.st.limits.max_variable_bytes));
                return self.state_failed(fid, f, env);
            }
        }
        let name = st.name.clone();
        let assigned_s = assigned_map.as_ref().filter(|_| record).map(|m| {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(json::to_compact(v))))
                    .collect(),
            )
        });
        self.emit(Some(fid), EventType::exited(st.type_name), || {
            let mut d = Map::new();
            d.insert("name".into(), Value::String(name));
            d.insert("output".into(), Value::String(out_s));
            d.insert("outputDetails".into(), truncated());
            if let Some(a) = assigned_s {
                d.insert("assignedVariables".into(), a);
                d.insert("assignedVariablesDetails".into(), truncated());
            }
            Some(d)
        });
        let frame = self.frame_mut(fid);
        let mut delta: isize = 0;
        if let Some(m) = assigned_map {
            for ((k, v), size) in m.into_iter().zip(sizes) {
                if let Some(old) = frame.vars.insert(k, v) {
                    delta -= json::byte_len(&old) as isize;
                }
                delta += size as isize;
            }
        }
        frame.var_bytes = frame.var_bytes.wrapping_add_signed(delta);
        self.st.var_bytes = self.st.var_bytes.wrapping_add_signed(delta);
        let frame = self.frame_mut(fid);
        frame.active = None;
        match next {
            Some(Transition::Next(n)) => self.st.queue.push_back(Work::Enter {
                frame: fid,
                state: n,
                input: output,
            }),
            Some(Transition::End) | None => self.frame_done(fid, output, env),
        }
    }

    /// A state failed: Retry, then Catch, then fail the frame.
    pub(super) fn state_failed(&mut self, fid: FrameId, f: Failure, env: &mut dyn Env) {
        if f.is_terminal() {
            return self.frame_failed(fid, f, env);
        }
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, self.active(fid).state);
        for (i, r) in st.retry.iter().enumerate() {
            if !r.error_equals.iter().any(|e| f.matches(e)) {
                continue;
            }
            let count = self.active(fid).retry_counts[i];
            if count < r.max_attempts {
                let mut delay = r.interval_seconds * r.backoff_rate.powi(count as i32);
                if let Some(max) = r.max_delay_seconds {
                    delay = delay.min(max);
                }
                if r.jitter_full {
                    delay *= env.next_f64();
                }
                let delay_ms = (delay * 1000.0).min(9e15) as i64;
                let a = self.active_mut(fid);
                a.retry_counts[i] += 1;
                a.retry_count += 1;
                let t = self.start_timer(TimerKind::Retry(fid), self.now + delay_ms);
                self.active_mut(fid).waiting = Waiting::Retry { timer_id: t };
                return;
            }
            break;
        }
        if let Some(c) = st
            .catch
            .iter()
            .find(|c| c.error_equals.iter().any(|e| f.matches(e)))
        {
            return self.catch_to(fid, st, c, f, env);
        }
        self.frame_failed(fid, f, env);
    }

    fn catch_to(&mut self, fid: FrameId, st: &State, c: &Catcher, f: Failure, env: &mut dyn Env) {
        let error_output = f.to_error_output();
        let a = self.active(fid);
        let r = if st.is_jsonata() {
            let seed = seed_of(env);
            self.with_bindings(
                fid,
                &a.raw_input,
                None,
                Some(&error_output),
                None,
                seed,
                |b| {
                    let assigned = match &c.assign {
                        Some(t) => Some(t.eval_jsonata(b, "Assign")?),
                        None => None,
                    };
                    let output = match &c.output {
                        Some(t) => t.eval_jsonata(b, "Output")?,
                        None => error_output.clone(),
                    };
                    Ok::<_, Failure>((output, assigned))
                },
            )
        } else {
            let assigned = match &c.assign {
                Some(t) => {
                    let scope = Scope {
                        exec: self,
                        frame: fid,
                        input: &error_output,
                        map_item: None,
                    };
                    t.eval(&scope, env).map(Some)
                }
                None => Ok(None),
            };
            assigned.and_then(|assigned| {
                apply_result_path(&c.result_path, &a.raw_input, error_output.clone())
                    .map(|o| (o, assigned))
            })
        };
        match r {
            Ok((output, assigned)) => self.exit_state(
                fid,
                st,
                output,
                assigned,
                Some(Transition::Next(c.next)),
                env,
            ),
            Err(e) => {
                let e = self.state_error(fid, e);
                self.frame_failed(fid, e, env)
            }
        }
    }

    // ---- frames -----------------------------------------------------------------------

    fn frame_done(&mut self, fid: FrameId, output: Value, env: &mut dyn Env) {
        let Some(parent) = self.frame(fid).parent.clone() else {
            let out_s = json::to_compact(&output);
            self.emit(Some(fid), EventType::ExecutionSucceeded, || {
                details([
                    ("output", Value::String(out_s)),
                    ("outputDetails", truncated()),
                ])
            });
            self.release_frame(fid);
            return self.finish(Outcome {
                status: ExecStatus::Succeeded,
                output: Some(output),
                error: None,
                cause: None,
            });
        };
        let child_prev = self.frame(fid).prev;
        let (is_map, distributed) = match &self.active(parent.frame).waiting {
            Waiting::Children(c) => (c.is_map, c.run.is_some()),
            _ => (false, false),
        };
        let last = if is_map && !distributed {
            let name = self.current_state(parent.frame).0.name.clone();
            self.emit_for(
                parent.frame,
                child_prev,
                EventType::MapIterationSucceeded,
                || {
                    details([
                        ("name", Value::String(name)),
                        ("index", Value::from(parent.slot)),
                    ])
                },
            )
        } else {
            child_prev
        };
        self.release_frame(fid);
        self.run_moved(parent.frame, parent.slot, |c| {
            c.running = c.running.saturating_sub(1);
            c.succeeded += 1;
        });
        {
            let Waiting::Children(c) = &mut self.active_mut(parent.frame).waiting else {
                return;
            };
            c.results[parent.slot] = Some(output);
            c.running.remove(&parent.slot);
            c.done += 1;
            c.last_event = last;
        }
        self.settle(parent.frame, env);
    }

    /// Asks the host to start a DISTRIBUTED Map's child as an execution of its own.
    fn start_child(&mut self, fid: FrameId, st: &State, index: usize, input: Value) {
        let Kind::Map { distributed, .. } = &st.kind else {
            return;
        };
        let Waiting::Children(c) = &self.active(fid).waiting else {
            return;
        };
        let Some(run) = &c.run else { return };
        let map_run_arn = run.arn.clone();
        // arn:…:mapRun:{machine}/{label}:{id} -> the children's machine, `{machine}/{label}`.
        let machine = map_run_arn
            .split(":mapRun:")
            .nth(1)
            .and_then(|r| r.rsplit_once(':'))
            .map(|(m, _)| m.to_string())
            .unwrap_or_default();
        let prefix = map_run_arn.split(":mapRun:").next().unwrap_or_default();
        // The name comes from the Map Run and the index, not from `env`: a child's identity
        // does not depend on how the children run, and a retried start names the same child.
        let mut seed = crate::env::SplitMix64::new(fnv1a(&format!("{map_run_arn}#{index}")));
        let name = crate::env::uuid_v4(&mut seed);
        let child_id = self.st.next_child_id.max(1);
        self.st.next_child_id = child_id + 1;
        self.st.children.insert(child_id, (fid, index));
        if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
            c.remote.insert(index, child_id);
        }
        self.out.commands.push(Command::StartChild(ChildRequest {
            child_id,
            execution_arn: format!("{prefix}:execution:{machine}:{name}"),
            state_machine_arn: format!("{prefix}:stateMachine:{machine}"),
            name,
            map_run_arn,
            index,
            input,
            definition: distributed
                .processor_definition
                .as_deref()
                .unwrap_or_default()
                .to_string(),
            express: distributed.execution_type.as_deref() == Some("EXPRESS"),
        }));
    }

    /// A child execution ended: its output fills its slot, or its failure counts against
    /// the Map Run's tolerance. A child no longer awaited is ignored.
    pub(super) fn on_child_finished(&mut self, child_id: u64, o: Outcome, env: &mut dyn Env) {
        let Some((fid, slot)) = self.st.children.remove(&child_id) else {
            return;
        };
        let awaited = match self.st.frames.get_mut(fid).and_then(Option::as_mut) {
            Some(Frame {
                active: Some(a), ..
            }) => match &mut a.waiting {
                Waiting::Children(c) if c.remote.get(&slot) == Some(&child_id) => {
                    c.remote.remove(&slot);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !awaited {
            return;
        }
        if o.status == ExecStatus::Succeeded {
            self.run_moved(fid, slot, |c| {
                c.running = c.running.saturating_sub(1);
                c.succeeded += 1;
            });
            if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                c.results[slot] = Some(o.output.unwrap_or(Value::Null));
                c.done += 1;
            }
            return self.settle(fid, env);
        }
        let timed_out = o.status == ExecStatus::TimedOut;
        let error = o
            .error
            .or_else(|| timed_out.then(|| names::TIMEOUT.to_string()));
        let f = Failure {
            error,
            cause: o.cause,
            heartbeat: false,
        };
        self.child_failed(fid, slot, f, timed_out, env);
    }

    /// `UpdateMapRun`: the running Map Run gets a new window or tolerance; more children
    /// start when the window grew, and the run fails at once when its failures exceed the
    /// new tolerance.
    pub(super) fn on_update_map_run(
        &mut self,
        arn: &str,
        max_concurrency: Option<u64>,
        tolerance: (Option<u64>, Option<f64>),
        env: &mut dyn Env,
    ) {
        let found = self.st.frames.iter().position(|f| {
            matches!(f, Some(Frame { active: Some(a), .. })
                if matches!(&a.waiting, Waiting::Children(Children { run: Some(r), .. }) if r.arn == arn))
        });
        let Some(fid) = found else { return };
        let (summary, exceeded) = {
            let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                return;
            };
            if let Some(mc) = max_concurrency {
                c.max_concurrency = mc as usize;
            }
            let Some(run) = c.run.as_mut() else { return };
            if let Some(n) = tolerance.0 {
                run.tolerated_count = Some(n);
            }
            if let Some(p) = tolerance.1 {
                run.tolerated_percentage = Some(p);
            }
            (run.summary, run.exceeded())
        };
        if let Some(s) = self.st.map_runs.get_mut(summary) {
            if let Some(mc) = max_concurrency {
                s.max_concurrency = mc;
            }
            if let Some(n) = tolerance.0 {
                s.tolerated_failure_count = n;
            }
            if let Some(p) = tolerance.1 {
                s.tolerated_failure_percentage = p;
            }
        }
        if exceeded {
            return self.run_exceeded(fid, summary, env);
        }
        self.fill_map(fid, env);
    }

    /// Moves a DISTRIBUTED Map's child (and its items) from one count of its Map Run to
    /// another.
    fn run_moved(&mut self, fid: FrameId, slot: usize, change: fn(&mut MapRunCounts)) {
        let st = &mut self.st;
        let Some(Some(Frame {
            active: Some(a), ..
        })) = st.frames.get(fid)
        else {
            return;
        };
        if let Waiting::Children(Children { run: Some(run), .. }) = &a.waiting {
            run.moved(&mut st.map_runs, slot, change);
        }
    }

    /// A Map Run ended.
    fn end_run(&mut self, summary: usize, status: MapRunStatus) {
        if let Some(s) = self.st.map_runs.get_mut(summary) {
            s.status = status;
            s.stop_ms = Some(self.now);
        }
    }

    /// A child of a Parallel or Map frame ended and its result is in: start more, or, when
    /// every child is done, the state succeeds with the results in order.
    fn settle(&mut self, fid: FrameId, env: &mut dyn Env) {
        let (all_done, is_map) = match &self.active(fid).waiting {
            Waiting::Children(c) => (c.done == c.results.len(), c.is_map),
            _ => return,
        };
        if !all_done {
            if is_map {
                self.fill_map(fid, env);
            }
            return;
        }
        let w = std::mem::replace(&mut self.active_mut(fid).waiting, Waiting::Nothing);
        let Waiting::Children(c) = w else { return };
        let mut last = c.last_event;
        if let Some(r) = &c.run {
            self.end_run(r.summary, MapRunStatus::Succeeded);
            last = self.emit_after(Some(fid), last, EventType::MapRunSucceeded, || None);
        }
        let ty = if c.is_map {
            EventType::MapStateSucceeded
        } else {
            EventType::ParallelStateSucceeded
        };
        self.emit_after(Some(fid), last, ty, || None);
        let results = Value::Array(
            c.results
                .into_iter()
                .map(|r| r.unwrap_or(Value::Null))
                .collect(),
        );
        self.complete(fid, results, None, env);
    }

    /// A DISTRIBUTED Map's child failed: its items count against the tolerated failures.
    /// Within them, its place in the results holds its error and cause and the run goes
    /// on; beyond them, the other children are aborted and the state fails with
    /// `States.ExceedToleratedFailureThreshold`.
    fn child_failed(
        &mut self,
        map: FrameId,
        slot: usize,
        f: Failure,
        timed_out: bool,
        env: &mut dyn Env,
    ) {
        let parent = Parent { frame: map, slot };
        if timed_out {
            self.run_moved(map, slot, |c| {
                c.running = c.running.saturating_sub(1);
                c.timed_out += 1;
            });
        } else {
            self.run_moved(map, slot, |c| {
                c.running = c.running.saturating_sub(1);
                c.failed += 1;
            });
        }
        let exceeded = {
            let Waiting::Children(c) = &mut self.active_mut(parent.frame).waiting else {
                return;
            };
            c.results[parent.slot] = Some(f.to_error_output());
            c.done += 1;
            let Some(run) = c.run.as_mut() else { return };
            run.failed_items += run.items_of(parent.slot);
            (run.exceeded(), run.summary)
        };
        let (exceeded, summary) = exceeded;
        if !exceeded {
            return self.settle(parent.frame, env);
        }
        self.run_exceeded(parent.frame, summary, env);
    }

    /// A Map Run's failures exceed its tolerance: the children still running are aborted,
    /// `MapRunFailed`, and the state fails with `States.ExceedToleratedFailureThreshold`.
    fn run_exceeded(&mut self, map: FrameId, summary: usize, env: &mut dyn Env) {
        let parent = Parent {
            frame: map,
            slot: 0,
        };
        self.abort_children(parent.frame);
        self.end_run(summary, MapRunStatus::Failed);
        self.active_mut(parent.frame).waiting = Waiting::Nothing;
        const CAUSE: &str = "The specified tolerated failure threshold was exceeded";
        let error = names::EXCEED_TOLERATED_FAILURE_THRESHOLD;
        self.emit(Some(parent.frame), EventType::MapRunFailed, || {
            details([
                ("error", Value::String(error.into())),
                ("cause", Value::String(CAUSE.into())),
            ])
        });
        self.emit(Some(parent.frame), EventType::MapStateFailed, || None);
        self.state_failed(parent.frame, Failure::new(error, CAUSE), env);
    }

    pub(super) fn frame_failed(&mut self, fid: FrameId, f: Failure, env: &mut dyn Env) {
        let Some(parent) = self.frame(fid).parent.clone() else {
            self.capture_redrive();
            let (e, c) = (f.error.clone(), f.cause.clone());
            self.emit(Some(fid), EventType::ExecutionFailed, || {
                details([
                    ("error", e.map(Value::String).unwrap_or(Value::Null)),
                    ("cause", c.map(Value::String).unwrap_or(Value::Null)),
                ])
            });
            self.abort_frame(fid);
            return self.finish(Outcome {
                status: ExecStatus::Failed,
                output: None,
                error: f.error,
                cause: f.cause,
            });
        };
        if matches!(&self.active(parent.frame).waiting, Waiting::Children(c) if c.run.is_some()) {
            self.abort_frame(fid);
            self.release_frame(fid);
            if let Waiting::Children(c) = &mut self.active_mut(parent.frame).waiting {
                c.running.remove(&parent.slot);
            }
            return self.child_failed(parent.frame, parent.slot, f, false, env);
        }
        let child_prev = self.frame(fid).prev;
        let is_map = matches!(&self.active(parent.frame).waiting, Waiting::Children(c) if c.is_map);
        let mut last = child_prev;
        if is_map {
            let name = self.current_state(parent.frame).0.name.clone();
            last = self.emit_for(
                parent.frame,
                child_prev,
                EventType::MapIterationFailed,
                || {
                    details([
                        ("name", Value::String(name)),
                        ("index", Value::from(parent.slot)),
                    ])
                },
            );
        }
        self.abort_frame(fid);
        self.release_frame(fid);
        if let Waiting::Children(c) = &mut self.active_mut(parent.frame).waiting {
            c.running.remove(&parent.slot);
        }
        self.frame_mut(parent.frame).prev = last;
        self.abort_children(parent.frame);
        self.active_mut(parent.frame).waiting = Waiting::Nothing;
        let ty = if is_map {
            EventType::MapStateFailed
        } else {
            EventType::ParallelStateFailed
        };
        self.emit(Some(parent.frame), ty, || None);
        self.state_failed(parent.frame, f, env);
    }

    /// Aborts every running child of a Parallel/Map frame (emitting their aborted events).
    fn abort_children(&mut self, fid: FrameId) {
        let (running, iterations, remote) = match &mut self.active_mut(fid).waiting {
            Waiting::Children(c) => {
                let r: Vec<(usize, FrameId)> = std::mem::take(&mut c.running).into_iter().collect();
                (
                    r,
                    c.is_map && c.run.is_none(),
                    std::mem::take(&mut c.remote),
                )
            }
            _ => return,
        };
        let aborted = |c: &mut MapRunCounts| {
            c.running = c.running.saturating_sub(1);
            c.aborted += 1;
        };
        for (slot, child_id) in remote {
            self.run_moved(fid, slot, aborted);
            self.st.children.remove(&child_id);
            self.out.commands.push(Command::StopChild { child_id });
        }
        for (slot, _) in &running {
            self.run_moved(fid, *slot, aborted);
        }
        let name = self.current_state(fid).0.name.clone();
        for (slot, child) in running {
            self.abort_frame(child);
            if iterations {
                let prev = self.frame(child).prev;
                let n = name.clone();
                let id = self.emit_for(fid, prev, EventType::MapIterationAborted, || {
                    details([("name", Value::String(n)), ("index", Value::from(slot))])
                });
                self.frame_mut(fid).prev = id;
            }
            self.release_frame(child);
        }
    }

    /// Stops whatever a frame is doing: cancels its task and timers, aborts its children and
    /// writes `{Type}StateAborted`.
    fn abort_frame(&mut self, fid: FrameId) {
        self.st
            .queue
            .retain(|w| !matches!(w, Work::Enter { frame, .. } if *frame == fid));
        self.st
            .parked
            .retain(|w| !matches!(w, Work::Enter { frame, .. } if *frame == fid));
        let Some(state) = self.frame(fid).active.as_ref().map(|a| a.state) else {
            return;
        };
        let waiting = std::mem::replace(&mut self.active_mut(fid).waiting, Waiting::Nothing);
        let aborted = match waiting {
            Waiting::Task {
                task_id,
                timeout_timer,
                heartbeat_timer,
                ..
            } => {
                self.st.tasks.remove(&task_id);
                self.cancel_timer(timeout_timer);
                self.cancel_timer(heartbeat_timer);
                self.out.commands.push(Command::CancelTask { task_id });
                true
            }
            Waiting::Retry { timer_id } | Waiting::Wait { timer_id } => {
                self.cancel_timer(Some(timer_id));
                true
            }
            Waiting::Children(c) => {
                let run = c.run.as_ref().map(|r| r.summary);
                self.active_mut(fid).waiting = Waiting::Children(c);
                self.abort_children(fid);
                self.active_mut(fid).waiting = Waiting::Nothing;
                if let Some(summary) = run {
                    self.end_run(summary, MapRunStatus::Aborted);
                    self.emit(Some(fid), EventType::MapRunAborted, || None);
                }
                true
            }
            Waiting::Nothing => false,
        };
        if aborted {
            let ty = self.sm.state(self.frame(fid).block, state).type_name;
            self.emit(Some(fid), EventType::aborted(ty), || None);
        }
        self.frame_mut(fid).active = None;
    }
}

fn apply_result_path(rp: &PathField, raw_input: &Value, result: Value) -> Result<Value, Failure> {
    match rp {
        PathField::Default => Ok(result),
        PathField::Null => Ok(raw_input.clone()),
        PathField::Path(p) if p.is_root_only() => Ok(result),
        PathField::Path(p) => {
            let mut out = raw_input.clone();
            p.set(&mut out, result).map_err(|_| {
                Failure::new(
                    names::RESULT_PATH_MATCH_FAILURE,
                    format!(
                        "Unable to apply ResultPath \"{}\" to input \"{}\"",
                        p.as_str(),
                        json::to_compact(raw_input)
                    ),
                )
            })?;
            Ok(out)
        }
    }
}
