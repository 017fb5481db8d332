//! One execution in memory, on tokio: Express executions on a node, a DISTRIBUTED Map's
//! EXPRESS children on their shard's leader, and `trellis run`.
//!
//! The loop is [`trellis_asl::driver::Driver`]'s: step with each queued input, start the
//! tasks a step asks for, then wait for whichever comes first, a task's answer or the next
//! timer. Tasks run concurrently (a Parallel's branches, a Map's iterations), and a timer
//! fires while calls are in flight, so a Task's `TimeoutSeconds` and the execution's
//! `TimeoutSeconds` end things on time; a task the interpreter gives up on is aborted.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};
use trellis_asl::driver::{Action, Clock, Driver};
use trellis_asl::exec::TaskRequest;
use trellis_asl::{Execution, Input};

use crate::executor::BoxFuture;

fn failed(task_id: u64, error: &str, cause: String) -> Input {
    Input::TaskFailed {
        task_id,
        error: Some(error.into()),
        cause: Some(cause),
    }
}

/// Starts the tasks of a run.
pub trait Tasks: Send {
    /// Starts a task: `Ok(Some(answer))` resolves to what to feed back; `Ok(None)` leaves it
    /// pending (only its timeout ends it); `Err` stops the run with that message.
    fn start(&mut self, t: TaskRequest) -> Result<Option<BoxFuture<'static, Input>>, String>;
}

/// How a run waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// While no task runs, jump the clock to the next timer instead of waiting for it
    /// (`trellis run --fast-timers`). While tasks run, timers fire on the clock as it goes.
    pub fast_timers: bool,
    /// Give up at this instant (Express executions: `cluster.express_max_seconds`).
    pub deadline: Option<tokio::time::Instant>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The execution reached a terminal status.
    Terminal,
    /// The deadline passed first; the execution is still running.
    DeadlinePassed,
}

/// Runs `exec` until it ends (or the deadline passes). Tasks still running then are
/// aborted.
pub async fn run<C: Clock + Send>(
    driver: &mut Driver,
    exec: &mut Execution,
    clock: &mut C,
    tasks: &mut dyn Tasks,
    opts: Options,
) -> Result<Ended, String> {
    let mut running: JoinSet<Input> = JoinSet::new();
    // Task id -> its running call; tokio's task id -> task id.
    let mut calls: HashMap<u64, AbortHandle> = HashMap::new();
    let mut ids: HashMap<tokio::task::Id, u64> = HashMap::new();
    let ended = loop {
        while let Some(actions) = driver.step_next(exec, clock).map_err(|e| e.to_string())? {
            for a in actions {
                match a {
                    Action::Invoke(t) => {
                        let id = t.task_id;
                        if let Some(answer) = tasks.start(t)? {
                            let h = running.spawn(answer);
                            ids.insert(h.id(), id);
                            calls.insert(id, h);
                        }
                    }
                    Action::Cancel(id) => {
                        if let Some(h) = calls.remove(&id) {
                            h.abort();
                        }
                    }
                    // This runner keeps a DISTRIBUTED Map's children inside the execution
                    // (`Limits::child_executions` is off), so none is asked for.
                    Action::StartChild(c) => {
                        return Err(format!(
                            "child execution {} asked of a runner that runs children inline",
                            c.execution_arn
                        ))
                    }
                    Action::StopChild(_) => {}
                }
            }
        }
        if exec.status().is_terminal() {
            break Ended::Terminal;
        }
        let next = driver.next_timer();
        if opts.fast_timers && running.is_empty() {
            if let Some(at) = next {
                clock.advance_to(at);
                driver.fire_next_timer();
                continue;
            }
        }
        if next.is_none() && running.is_empty() {
            let pending: Vec<u64> = exec.pending_tasks().collect();
            return Err(format!(
                "the execution is waiting for something that will never arrive (pending tasks: {pending:?})"
            ));
        }
        let timer = next.map(|at| Duration::from_millis((at - clock.now_ms()).max(0) as u64));
        let deadline = opts.deadline;
        tokio::select! {
            Some(done) = running.join_next_with_id(), if !running.is_empty() => match done {
                Ok((tid, input)) => {
                    if let Some(id) = ids.remove(&tid) {
                        calls.remove(&id);
                    }
                    driver.push(input);
                }
                Err(e) if e.is_cancelled() => {
                    ids.remove(&e.id());
                }
                Err(e) => {
                    // The connector panicked: the task fails, the run goes on.
                    if let Some(id) = ids.remove(&e.id()) {
                        calls.remove(&id);
                        driver.push(failed(id, "States.Runtime", format!("the connector failed: {e}")));
                    }
                }
            },
            _ = tokio::time::sleep(timer.unwrap_or_default()), if timer.is_some() => {
                if let Some(at) = next {
                    clock.advance_to(at);
                }
                driver.fire_next_timer();
            }
            _ = sleep_until(deadline), if deadline.is_some() => break Ended::DeadlinePassed,
        }
    };
    running.abort_all();
    Ok(ended)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use trellis_asl::exec::{ExecStatus, ExecutionInfo, Limits};
    use trellis_asl::ManualEnv;

    use super::*;

    /// Answers every task after `delay` (tokio time), echoing its parameters.
    struct Slow {
        delay: Duration,
        started: Vec<u64>,
    }

    impl Tasks for Slow {
        fn start(&mut self, t: TaskRequest) -> Result<Option<BoxFuture<'static, Input>>, String> {
            self.started.push(t.task_id);
            let delay = self.delay;
            Ok(Some(Box::pin(async move {
                tokio::time::sleep(delay).await;
                Input::TaskSucceeded {
                    task_id: t.task_id,
                    output: t.parameters,
                }
            })))
        }
    }

    /// A clock that follows tokio's (paused) time.
    struct TokioClock {
        base: tokio::time::Instant,
        env: ManualEnv,
    }

    impl TokioClock {
        fn new() -> TokioClock {
            TokioClock {
                base: tokio::time::Instant::now(),
                env: ManualEnv::new(0, 7),
            }
        }
    }

    impl trellis_asl::Entropy for TokioClock {
        fn next_u64(&mut self) -> u64 {
            self.env.next_u64()
        }
    }

    impl trellis_asl::Env for TokioClock {
        fn now_ms(&mut self) -> i64 {
            self.base.elapsed().as_millis() as i64
        }
    }

    impl Clock for TokioClock {
        fn advance_to(&mut self, _at_ms: i64) {}
    }

    fn exec(def: serde_json::Value) -> Execution {
        let sm = trellis_asl::parse(&def.to_string(), Default::default()).unwrap();
        let info = ExecutionInfo::new("us-east-1", "1", "M", "e", json!({}));
        Execution::new(sm, info, Limits::default())
    }

    const F: &str = "arn:aws:lambda:us-east-1:1:function:f";

    #[tokio::test(start_paused = true)]
    async fn a_task_timeout_fires_while_the_call_is_in_flight() {
        let mut e = exec(json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": F, "TimeoutSeconds": 2,
                  "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Caught"}], "End": true},
            "Caught": {"Type": "Pass", "Result": "caught", "End": true}}}));
        let mut tasks = Slow {
            delay: Duration::from_secs(5),
            started: vec![],
        };
        let t0 = tokio::time::Instant::now();
        let mut d = Driver::new();
        let ended = run(
            &mut d,
            &mut e,
            &mut TokioClock::new(),
            &mut tasks,
            Options::default(),
        )
        .await
        .unwrap();
        assert_eq!(ended, Ended::Terminal);
        assert_eq!(e.status(), ExecStatus::Succeeded);
        assert_eq!(e.outcome().unwrap().output, Some(json!("caught")));
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        let types: Vec<&str> = d.history().iter().map(|h| h.event_type.as_str()).collect();
        assert!(types.contains(&"LambdaFunctionTimedOut"), "{types:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_branches_run_at_once() {
        let branch = |n: &str| json!({"StartAt": n, "States": {n: {"Type": "Task", "Resource": F, "End": true}}});
        let mut e = exec(json!({"StartAt": "P", "States": {
            "P": {"Type": "Parallel", "Branches": [branch("A"), branch("B"), branch("C")], "End": true}}}));
        let mut tasks = Slow {
            delay: Duration::from_secs(3),
            started: vec![],
        };
        let t0 = tokio::time::Instant::now();
        let mut d = Driver::new();
        run(
            &mut d,
            &mut e,
            &mut TokioClock::new(),
            &mut tasks,
            Options::default(),
        )
        .await
        .unwrap();
        assert_eq!(e.status(), ExecStatus::Succeeded);
        assert_eq!(tasks.started.len(), 3);
        // One after another would take 9 s.
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_execution_timeout_ends_a_run_with_a_call_in_flight() {
        let mut e = exec(json!({"TimeoutSeconds": 1, "StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": F, "End": true}}}));
        let mut tasks = Slow {
            delay: Duration::from_secs(30),
            started: vec![],
        };
        let mut d = Driver::new();
        run(
            &mut d,
            &mut e,
            &mut TokioClock::new(),
            &mut tasks,
            Options::default(),
        )
        .await
        .unwrap();
        assert_eq!(e.status(), ExecStatus::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_stops_the_run() {
        let mut e = exec(json!({"StartAt": "W", "States": {
            "W": {"Type": "Wait", "Seconds": 600, "End": true}}}));
        let mut tasks = Slow {
            delay: Duration::ZERO,
            started: vec![],
        };
        let opts = Options {
            deadline: Some(tokio::time::Instant::now() + Duration::from_secs(10)),
            ..Default::default()
        };
        let mut d = Driver::new();
        let ended = run(&mut d, &mut e, &mut TokioClock::new(), &mut tasks, opts)
            .await
            .unwrap();
        assert_eq!(ended, Ended::DeadlinePassed);
        assert!(!e.status().is_terminal());
    }
}
