//! A single-execution, in-memory driver: it feeds an [`Execution`] its inputs, keeps its
//! timers in due order and hands tasks to the host, until the execution ends.
//!
//! Two ways to drive it, one loop underneath:
//! * [`Driver::run`] runs the whole execution synchronously, calling a [`Tasks`]
//!   implementation for each task and moving a [`Clock`] to each timer. The golden corpus
//!   and the fuzz target use it with a virtual clock.
//! * [`Driver::step_next`], [`Driver::next_timer`] and [`Driver::fire_next_timer`] are that
//!   loop's parts, for a host that runs tasks concurrently and waits for whichever comes
//!   first, a task's answer or a timer: `trellis run` and Express executions, on tokio
//!   (`crates/server/src/runner.rs`). This crate itself never waits.
//!
//! The durable shard does not use it: there, timers and tasks are replicated state.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::env::Env;
use crate::exec::{
    ChildOrigin, ChildRequest, Command, Execution, ExecutionInfo, Input, Outcome, TaskRequest,
};
use crate::history::HistoryEvent;
use crate::{Error, Result};

/// How a driver's clock reaches a timer's due time.
pub trait Clock: Env {
    /// Returns once `now_ms()` is at least `at_ms`: by sleeping, or by moving a virtual clock.
    fn advance_to(&mut self, at_ms: i64);
}

impl Clock for crate::env::ManualEnv {
    fn advance_to(&mut self, at_ms: i64) {
        self.now_ms = self.now_ms.max(at_ms);
    }
}

/// Runs the tasks an execution asks for.
pub trait Tasks {
    /// Runs one task. `Ok(Some(input))` is the task's answer (`TaskSucceeded`, `TaskFailed`
    /// ...); `Ok(None)` leaves it pending, so only its timeout can end it; `Err` stops the
    /// driver with [`Error::Driver`].
    fn invoke(&mut self, request: &TaskRequest) -> std::result::Result<Option<Input>, String>;
}

/// What the host does after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run this task and [`Driver::push`] its answer.
    Invoke(TaskRequest),
    /// The task is no longer wanted (timed out, aborted): stop it if it runs; an answer
    /// for it would be ignored anyway.
    Cancel(u64),
    /// Start this child execution (a DISTRIBUTED Map's child, with
    /// [`crate::Limits::child_executions`]) and [`Driver::push`] `ChildFinished` when it ends.
    StartChild(ChildRequest),
    /// The child is no longer wanted: stop it; its end would be ignored anyway.
    StopChild(u64),
}

/// The root execution among a driver's executions.
const ROOT: usize = 0;

/// A child execution running beside the root one.
struct Child {
    exec: Execution,
    driver: Driver,
    /// Who started it: [`ROOT`], or child `parent - 1`.
    parent: usize,
    child_id: u64,
    /// Not ended and not stopped.
    alive: bool,
}

/// Child `i` ended or was stopped: it and its own children no longer run.
fn end(kids: &mut [Child], i: usize) {
    kids[i].alive = false;
    for j in i + 1..kids.len() {
        let p = kids[j].parent;
        if p != ROOT && !kids[p - 1].alive {
            kids[j].alive = false;
        }
    }
}

/// Drives one execution to its end.
pub struct Driver {
    inputs: VecDeque<Input>,
    /// (due, timer id), in due order.
    timers: BTreeSet<(i64, u64)>,
    due: HashMap<u64, i64>,
    history: Vec<HistoryEvent>,
    keep_history: bool,
    max_steps: u64,
    steps: u64,
    round_trip: bool,
}

impl Default for Driver {
    fn default() -> Self {
        Driver::new()
    }
}

impl Driver {
    pub fn new() -> Self {
        Driver {
            inputs: VecDeque::from([Input::Start]),
            timers: BTreeSet::new(),
            due: HashMap::new(),
            history: Vec::new(),
            keep_history: true,
            max_steps: u64::MAX,
            steps: 0,
            round_trip: false,
        }
    }

    /// Stop with [`Error::Driver`] after this many steps (a guard for fuzzing and tests).
    pub fn max_steps(mut self, n: u64) -> Self {
        self.max_steps = n;
        self
    }

    /// Save the execution's state to JSON and rebuild the execution from it after every step,
    /// as a host that persists executions does. A test of [`crate::ExecutionState`].
    pub fn round_trip_state(mut self) -> Self {
        self.round_trip = true;
        self
    }

    /// Do not keep the history events (the execution may still record them).
    pub fn discard_history(mut self) -> Self {
        self.keep_history = false;
        self
    }

    /// Queues an input to deliver before the next timer fires.
    pub fn push(&mut self, input: Input) {
        self.inputs.push_back(input);
    }

    /// The events collected so far.
    pub fn history(&self) -> &[HistoryEvent] {
        &self.history
    }

    pub fn into_history(self) -> Vec<HistoryEvent> {
        self.history
    }

    /// Steps the execution until it reaches a terminal status.
    ///
    /// Child executions ([`crate::Limits::child_executions`]) run beside it on the same
    /// clock and tasks: every execution with an input is stepped before the clock moves to
    /// the earliest timer of any of them, so children interleave as frames would.
    ///
    /// Fails when the execution waits for something nobody will deliver (a task left pending
    /// without a timeout), when `tasks` fails, or after `max_steps` steps.
    pub fn run(
        &mut self,
        exec: &mut Execution,
        clock: &mut dyn Clock,
        tasks: &mut dyn Tasks,
    ) -> Result<()> {
        let mut kids: Vec<Child> = Vec::new();
        while !exec.status().is_terminal() {
            // The root, then each child in the order they started, until one had an input.
            if let Some(actions) = self.step_next(exec, clock)? {
                self.act(ROOT, actions, exec, &mut kids, tasks)?;
                continue;
            }
            let mut stepped = false;
            for i in 0..kids.len() {
                if !kids[i].alive {
                    continue;
                }
                let k = &mut kids[i];
                let Some(actions) = k.driver.step_next(&mut k.exec, clock)? else {
                    continue;
                };
                self.act(i + 1, actions, exec, &mut kids, tasks)?;
                stepped = true;
                break;
            }
            if stepped {
                continue;
            }
            // Everyone waits: the earliest timer of any of them fires.
            let mut next = self.next_timer().map(|at| (at, ROOT));
            for (i, k) in kids.iter().enumerate().filter(|(_, k)| k.alive) {
                if let Some(at) = k.driver.next_timer() {
                    if next.is_none_or(|(n, _)| at < n) {
                        next = Some((at, i + 1));
                    }
                }
            }
            let Some((at, who)) = next else {
                let pending: Vec<u64> = exec.pending_tasks().collect();
                return Err(Error::Driver(format!(
                    "the execution is waiting for something that will never arrive \
                     (pending tasks: {pending:?})"
                )));
            };
            clock.advance_to(at);
            if who == ROOT {
                self.fire_next_timer();
            } else {
                kids[who - 1].driver.fire_next_timer();
            }
        }
        Ok(())
    }

    /// Carries out what a step of execution `who` (the root, or child `who - 1`) asked for.
    fn act(
        &mut self,
        who: usize,
        actions: Vec<Action>,
        root: &Execution,
        kids: &mut Vec<Child>,
        tasks: &mut dyn Tasks,
    ) -> Result<()> {
        for a in actions {
            match a {
                Action::Invoke(t) => {
                    if let Some(i) = tasks.invoke(&t).map_err(Error::Driver)? {
                        self.push_to(who, kids, i);
                    }
                }
                Action::StartChild(c) => {
                    let parent = if who == ROOT {
                        root
                    } else {
                        &kids[who - 1].exec
                    };
                    let kid = self.child(parent, c)?;
                    kids.push(Child { parent: who, ..kid });
                }
                Action::StopChild(child_id) => {
                    // As a host does: the child is stopped, and reports its end.
                    if let Some(k) = kids
                        .iter_mut()
                        .find(|k| k.alive && k.parent == who && k.child_id == child_id)
                    {
                        k.driver.inputs.push_back(Input::Stop {
                            error: None,
                            cause: None,
                        });
                    }
                }
                Action::Cancel(_) => {}
            }
        }
        // A child that ended tells its parent, with its history when it was spread.
        if who != ROOT && kids[who - 1].exec.status().is_terminal() {
            let k = &mut kids[who - 1];
            let outcome = k.exec.outcome().cloned().unwrap_or(Outcome {
                status: k.exec.status(),
                output: None,
                error: None,
                cause: None,
            });
            let done = Input::ChildFinished {
                child_id: k.child_id,
                outcome,
                events: std::mem::take(&mut k.driver.history),
            };
            let parent = k.parent;
            end(kids, who - 1);
            self.push_to(parent, kids, done);
        }
        Ok(())
    }

    fn push_to(&mut self, who: usize, kids: &mut [Child], input: Input) {
        if who == ROOT {
            self.inputs.push_back(input);
        } else {
            kids[who - 1].driver.inputs.push_back(input);
        }
    }

    /// A child execution, ready to start on this driver's terms.
    fn child(&self, parent: &Execution, c: ChildRequest) -> Result<Child> {
        let sm = crate::parse(&c.definition, Default::default())?;
        let p = parent.info();
        let machine = c.state_machine_arn.rsplit(':').next().unwrap_or_default();
        let info = ExecutionInfo {
            execution_arn: c.execution_arn,
            name: c.name,
            state_machine_name: machine.to_string(),
            state_machine_arn: c.state_machine_arn,
            role_arn: p.role_arn.clone(),
            region: p.region.clone(),
            input: c.input,
            redrive_count: 0,
            state_machine_version_arn: None,
            state_machine_alias_arn: None,
            input_text: None,
            scope: None,
        };
        let mut exec = Execution::new(sm, info, parent.limits().clone());
        // A spread iteration or branch runs in its parent's name, and its parent writes its
        // history into its own.
        let inline = matches!(c.origin, ChildOrigin::Inline { .. });
        if let ChildOrigin::Inline { scope } = c.origin {
            exec.set_scope(scope);
        }
        let exec = exec.with_sharding(c.sharding);
        let mut driver = Driver::new();
        driver.keep_history = inline;
        driver.round_trip = self.round_trip;
        driver.max_steps = self.max_steps;
        Ok(Child {
            exec,
            driver,
            parent: ROOT,
            child_id: c.child_id,
            alive: true,
        })
    }

    /// Steps the execution with the next queued input, keeps the timers it sets, and returns
    /// what the host must do; `None` when no input is queued (the execution waits for a
    /// task's answer or a timer).
    pub fn step_next(
        &mut self,
        exec: &mut Execution,
        env: &mut dyn Env,
    ) -> Result<Option<Vec<Action>>> {
        let Some(input) = self.inputs.pop_front() else {
            return Ok(None);
        };
        self.steps += 1;
        if self.steps > self.max_steps {
            return Err(Error::Driver(format!(
                "the execution did not end within {} steps",
                self.max_steps
            )));
        }
        let out = exec.step(input, env);
        if self.round_trip {
            let saved = serde_json::to_vec(exec.state())?;
            let sm = exec.state_machine().clone();
            *exec = Execution::from_state(sm, serde_json::from_slice(&saved)?);
        }
        if self.keep_history {
            self.history.extend(out.events);
        }
        let mut actions = Vec::new();
        for cmd in out.commands {
            match cmd {
                Command::InvokeTask(t) => actions.push(Action::Invoke(t)),
                Command::CancelTask { task_id } => actions.push(Action::Cancel(task_id)),
                Command::StartTimer {
                    timer_id,
                    fire_at_ms,
                } => {
                    self.timers.insert((fire_at_ms, timer_id));
                    self.due.insert(timer_id, fire_at_ms);
                }
                Command::CancelTimer { timer_id } => {
                    if let Some(at) = self.due.remove(&timer_id) {
                        self.timers.remove(&(at, timer_id));
                    }
                }
                Command::Finish(_) => {}
                Command::StartChild(c) => actions.push(Action::StartChild(c)),
                Command::StopChild { child_id, .. } => actions.push(Action::StopChild(child_id)),
            }
        }
        Ok(Some(actions))
    }

    /// When the earliest timer is due (epoch ms).
    pub fn next_timer(&self) -> Option<i64> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Fires the earliest timer (the host's clock has reached it): its input is queued.
    /// False when there is none.
    pub fn fire_next_timer(&mut self) -> bool {
        let Some((_, timer_id)) = self.timers.pop_first() else {
            return false;
        };
        self.due.remove(&timer_id);
        self.inputs.push_back(Input::TimerFired { timer_id });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ExecStatus, ExecutionInfo, Limits};
    use crate::ManualEnv;
    use serde_json::json;

    struct Echo;
    impl Tasks for Echo {
        fn invoke(&mut self, r: &TaskRequest) -> std::result::Result<Option<Input>, String> {
            Ok(Some(Input::TaskSucceeded {
                task_id: r.task_id,
                output: r.parameters.clone(),
            }))
        }
    }

    struct Never;
    impl Tasks for Never {
        fn invoke(&mut self, _: &TaskRequest) -> std::result::Result<Option<Input>, String> {
            Ok(None)
        }
    }

    fn exec(def: serde_json::Value) -> Execution {
        let sm = crate::parse(&def.to_string(), Default::default()).unwrap();
        let info = ExecutionInfo::new("us-east-1", "1", "M", "e", json!({"a": 1}));
        Execution::new(sm, info, Limits::default())
    }

    #[test]
    fn waits_jump_a_virtual_clock() {
        let mut e = exec(json!({"StartAt": "W", "States": {
            "W": {"Type": "Wait", "Seconds": 3600, "Next": "T"},
            "T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:f", "End": true}}}));
        let mut clock = ManualEnv::new(0, 1);
        let mut d = Driver::new();
        d.run(&mut e, &mut clock, &mut Echo).unwrap();
        assert_eq!(e.status(), ExecStatus::Succeeded);
        assert_eq!(e.outcome().unwrap().output, Some(json!({"a": 1})));
        assert_eq!(clock.now_ms, 3_600_000);
        assert_eq!(
            d.history().first().unwrap().event_type.as_str(),
            "ExecutionStarted"
        );
    }

    #[test]
    fn pending_task_without_timeout_is_reported() {
        let mut e = exec(json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:f", "End": true}}}));
        let err = Driver::new()
            .run(&mut e, &mut ManualEnv::new(0, 1), &mut Never)
            .unwrap_err();
        assert!(err.to_string().contains("never arrive"), "{err}");
    }

    #[test]
    fn pending_task_with_timeout_times_out() {
        let mut e = exec(json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:f",
                  "TimeoutSeconds": 5, "End": true}}}));
        Driver::new()
            .run(&mut e, &mut ManualEnv::new(0, 1), &mut Never)
            .unwrap();
        assert_eq!(
            e.outcome().unwrap().error.as_deref(),
            Some("States.Timeout")
        );
    }

    #[test]
    fn step_limit_stops_an_endless_loop() {
        let mut e = exec(json!({"StartAt": "W", "States": {
            "W": {"Type": "Wait", "Seconds": 1, "Next": "C"},
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.a", "NumericEquals": 1, "Next": "W"}],
                  "Default": "D"},
            "D": {"Type": "Succeed"}}}));
        let err = Driver::new()
            .max_steps(50)
            .run(&mut e, &mut ManualEnv::new(0, 1), &mut Never)
            .unwrap_err();
        assert!(err.to_string().contains("50 steps"), "{err}");
    }
}
