//! State processing: entering states, doing their work, output processing, Retry/Catch,
//! and how a frame ends. Parallel branches and Map iterations are in `children.rs`, redrive
//! points in `redrive.rs`.

use serde_json::{Map, Value};

use super::context::Scope;
use super::*;
use crate::choice::Rule;
use crate::definition::{
    Catcher, Dynamic, Kind, PathField, Pattern, State, Text, Transition, Wait,
};
use crate::error::names;
use crate::json;
use crate::template::Template;

const MAX_WAIT_SECONDS: i64 = 2_147_483_647;

pub(super) fn seed_of(env: &mut dyn Env) -> u64 {
    env.next_u64()
}

impl Active {
    pub(super) fn eff(&self) -> &Value {
        self.input.as_ref().unwrap_or(&self.raw_input)
    }
}

impl Execution {
    pub(super) fn active(&self, fid: FrameId) -> &Active {
        self.frame(fid).active.as_ref().expect("active state")
    }

    pub(super) fn active_mut(&mut self, fid: FrameId) -> &mut Active {
        self.frame_mut(fid).active.as_mut().expect("active state")
    }

    pub(super) fn current_state(&self, fid: FrameId) -> (&State, &Active) {
        let f = self.frame(fid);
        let a = f.active.as_ref().expect("active state");
        (self.sm.state(f.block, a.state), a)
    }

    /// Prefixes a data-processing failure's cause the way AWS does.
    pub(super) fn state_error(&self, fid: FrameId, mut f: Failure) -> Failure {
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

    pub(super) fn data_failed(&mut self, fid: FrameId, f: Failure, field: &str, env: &mut dyn Env) {
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

    pub(super) fn check_size(&self, v: &Value, what: &str) -> Result<(), Failure> {
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

    pub(super) fn overflowed(&self) -> bool {
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
        // A spread iteration or branch sees the variables of its parent's state.
        let vars = match &self.st.info.scope {
            Some(p) => p.variables.clone(),
            None => Map::new(),
        };
        let var_bytes: usize = vars.values().map(json::byte_len).sum();
        self.st.var_bytes += var_bytes;
        let root = self.alloc_frame(Frame {
            block: 0,
            parent: None,
            vars,
            var_bytes,
            prev: 0,
            active: None,
            silent: false,
            scope_root: false,
            kept: None,
            rerun: None,
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

    pub(super) fn task_frame(&self, task_id: u64) -> Option<FrameId> {
        let fid = *self.st.tasks.get(&task_id)?;
        match &self.frame(fid).active.as_ref()?.waiting {
            Waiting::Task { task_id: t, .. } if *t == task_id => Some(fid),
            _ => None,
        }
    }

    pub(super) fn task_names(&self, fid: FrameId) -> (Resource, String, String) {
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

    pub(super) fn clear_task(&mut self, fid: FrameId, task_id: u64) {
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
        if let Some(fid) = self.io_frame(task_id) {
            return self.on_io_done(fid, task_id, Ok(output), env);
        }
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

    pub(super) fn emit_task_failure(
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
        if let Some(fid) = self.io_frame(task_id) {
            return self.on_io_done(fid, task_id, Err(f), env);
        }
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
    pub(super) fn effective_input(&mut self, fid: FrameId, st: &State) -> Result<(), Failure> {
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

    pub(super) fn eval_template(
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

    pub(super) fn eval_dynamic(
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
    pub(super) fn dynamic_int(
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

    pub(super) fn choose(
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

    pub(super) fn wait(&mut self, fid: FrameId, st: &State, wait: &Wait, env: &mut dyn Env) {
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

    pub(super) fn schedule_task(&mut self, fid: FrameId, st: &State, env: &mut dyn Env) {
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
            kind: TaskKind::State,
        }));
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

    pub(super) fn complete_to(
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

    pub(super) fn jsonpath_output(
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

    pub(super) fn exit_state(
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
                // A retried state runs whole again.
                self.forget_kept(fid);
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
            self.forget_kept(fid);
            return self.catch_to(fid, st, c, f, env);
        }
        self.frame_failed(fid, f, env);
    }

    pub(super) fn catch_to(
        &mut self,
        fid: FrameId,
        st: &State,
        c: &Catcher,
        f: Failure,
        env: &mut dyn Env,
    ) {
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

    pub(super) fn frame_done(&mut self, fid: FrameId, output: Value, env: &mut dyn Env) {
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
        if distributed {
            self.export_ended(parent.frame, parent.slot, "SUCCEEDED", Some(&output), None);
        }
        self.run_moved(parent.frame, parent.slot, |c| {
            c.running = c.running.saturating_sub(1);
            c.succeeded += 1;
        });
        {
            let Waiting::Children(c) = &mut self.active_mut(parent.frame).waiting else {
                return;
            };
            c.keep(parent.slot, output);
            c.running.remove(&parent.slot);
            c.done += 1;
            c.last_event = last;
        }
        self.settle(parent.frame, env);
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
        // Where it failed, for a redrive to resume it there.
        if let Some(p) = self.branch_point(fid) {
            if let Waiting::Children(c) = &mut self.active_mut(parent.frame).waiting {
                c.resume.insert(parent.slot, p);
            }
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
        self.keep_for_redrive(parent.frame);
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

    /// Stops whatever a frame is doing: cancels its task and timers, aborts its children and
    /// writes `{Type}StateAborted`.
    pub(super) fn abort_frame(&mut self, fid: FrameId) {
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
            Waiting::Writer { task_id, then } => {
                self.st.tasks.remove(&task_id);
                self.out.commands.push(Command::CancelTask { task_id });
                let (AfterWrite::Succeed { summary, .. } | AfterWrite::Fail { summary, .. }) = then;
                self.end_run(summary, MapRunStatus::Aborted);
                self.emit(Some(fid), EventType::MapRunAborted, || None);
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

pub(super) fn apply_result_path(
    rp: &PathField,
    raw_input: &Value,
    result: Value,
) -> Result<Value, Failure> {
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
