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
use crate::exec::{ChildRequest, Command, Execution, ExecutionInfo, Input, Outcome, TaskRequest};
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
    /// Fails when the execution waits for something nobody will deliver (a task left pending
    /// without a timeout), when `tasks` fails, or after `max_steps` steps.
    pub fn run(
        &mut self,
        exec: &mut Execution,
        clock: &mut dyn Clock,
        tasks: &mut dyn Tasks,
    ) -> Result<()> {
        while !exec.status().is_terminal() {
            match self.step_next(exec, clock)? {
                Some(actions) => {
                    for a in actions {
                        match a {
                            Action::Invoke(t) => {
                                if let Some(i) = tasks.invoke(&t).map_err(Error::Driver)? {
                                    self.inputs.push_back(i);
                                }
                            }
                            Action::StartChild(c) => {
                                let done = self.run_child(exec, c, clock, tasks)?;
                                self.inputs.push_back(done);
                            }
                            Action::Cancel(_) | Action::StopChild(_) => {}
                        }
                    }
                }
                None => {
                    let Some(at) = self.next_timer() else {
                        let pending: Vec<u64> = exec.pending_tasks().collect();
                        return Err(Error::Driver(format!(
                            "the execution is waiting for something that will never arrive \
                             (pending tasks: {pending:?})"
                        )));
                    };
                    clock.advance_to(at);
                    self.fire_next_timer();
                }
            }
        }
        Ok(())
    }

    /// Runs a child execution to its end, at once (children run one after another on the
    /// same clock and tasks), and returns its `ChildFinished`.
    fn run_child(
        &self,
        parent: &Execution,
        c: ChildRequest,
        clock: &mut dyn Clock,
        tasks: &mut dyn Tasks,
    ) -> Result<Input> {
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
        };
        let mut child = Execution::new(sm, info, parent.limits().clone());
        let mut driver = Driver::new().discard_history();
        driver.round_trip = self.round_trip;
        driver.max_steps = self.max_steps;
        driver.run(&mut child, clock, tasks)?;
        let outcome = child.outcome().cloned().unwrap_or(Outcome {
            status: child.status(),
            output: None,
            error: None,
            cause: None,
        });
        Ok(Input::ChildFinished {
            child_id: c.child_id,
            outcome,
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
                Command::StopChild { child_id } => actions.push(Action::StopChild(child_id)),
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
