use serde_json::json;

use super::*;
use crate::env::ManualEnv;

fn machine(def: Value) -> Arc<StateMachine> {
    crate::validate::parse(&def.to_string(), Default::default()).unwrap()
}

fn start(def: Value, input: Value) -> (Execution, ManualEnv, StepOutput) {
    let mut exec = Execution::new(
        machine(def),
        ExecutionInfo::new("us-east-1", "000000000000", "sm", "ex", input),
        Limits::default(),
    );
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let out = exec.step(Input::Start, &mut env);
    (exec, env, out)
}

fn types(out: &StepOutput) -> Vec<&'static str> {
    out.events.iter().map(|e| e.event_type.as_str()).collect()
}

#[test]
fn pass_chain() {
    let (exec, _, out) = start(
        json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.r", "Next": "B"},
            "B": {"Type": "Pass", "Parameters": {"v.$": "$.r.x", "in.$": "$$.Execution.Name"}, "End": true}
        }}),
        json!({"k": true}),
    );
    assert_eq!(
        types(&out),
        [
            "ExecutionStarted",
            "PassStateEntered",
            "PassStateExited",
            "PassStateEntered",
            "PassStateExited",
            "ExecutionSucceeded"
        ]
    );
    assert_eq!(
        exec.outcome().unwrap().output,
        Some(json!({"v": 1, "in": "ex"}))
    );
    let prev: Vec<u64> = out.events.iter().map(|e| e.previous_event_id).collect();
    assert_eq!(prev, [0, 0, 2, 3, 4, 5]);
}

#[test]
fn task_retry_then_catch() {
    let (mut exec, mut env, out) = start(
        json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Parameters": {"a.$": "$.a"},
                  "Retry": [{"ErrorEquals": ["Boom"], "MaxAttempts": 1, "IntervalSeconds": 2}],
                  "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "Done"}],
                  "End": true},
            "Done": {"Type": "Succeed"}
        }}),
        json!({"a": 5}),
    );
    let Command::InvokeTask(t) = &out.commands[0] else {
        panic!("{:?}", out.commands)
    };
    assert_eq!(t.parameters, json!({"a": 5}));
    let out = exec.step(
        Input::TaskFailed {
            task_id: t.task_id,
            error: Some("Boom".into()),
            cause: Some("x".into()),
        },
        &mut env,
    );
    let Some(Command::StartTimer {
        timer_id,
        fire_at_ms,
    }) = out.commands.first().cloned()
    else {
        panic!()
    };
    assert_eq!(fire_at_ms, env.now_ms + 2000);
    env.now_ms += 2000;
    let out = exec.step(Input::TimerFired { timer_id }, &mut env);
    let Command::InvokeTask(t2) = &out.commands[0] else {
        panic!()
    };
    assert_eq!(t2.attempt, 1);
    let out = exec.step(
        Input::TaskFailed {
            task_id: t2.task_id,
            error: Some("Boom".into()),
            cause: Some("y".into()),
        },
        &mut env,
    );
    assert_eq!(
        types(&out),
        [
            "TaskFailed",
            "TaskStateExited",
            "SucceedStateEntered",
            "SucceedStateExited",
            "ExecutionSucceeded"
        ]
    );
    assert_eq!(
        exec.outcome().unwrap().output,
        Some(json!({"a": 5, "err": {"Error": "Boom", "Cause": "y"}}))
    );
    // A late result for the first attempt is ignored.
    let out = exec.step(
        Input::TaskSucceeded {
            task_id: t.task_id,
            output: json!(1),
        },
        &mut env,
    );
    assert!(out.events.is_empty());
}

#[test]
fn parallel_and_map() {
    let (exec, _, out) = start(
        json!({"StartAt": "P", "States": {
            "P": {"Type": "Parallel", "End": true, "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": 1, "End": true}}},
                {"StartAt": "M", "States": {"M": {"Type": "Map", "ItemsPath": "$.xs", "MaxConcurrency": 1,
                    "ItemSelector": {"v.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
                    "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": true}}}, "End": true}}}
            ]}
        }}),
        json!({"xs": ["a", "b"]}),
    );
    assert_eq!(exec.status(), ExecStatus::Succeeded, "{:?}", types(&out));
    assert_eq!(
        exec.outcome().unwrap().output,
        Some(json!([1, [{"v": "a", "i": 0}, {"v": "b", "i": 1}]]))
    );
    assert!(types(&out).contains(&"MapIterationSucceeded"));
}

#[test]
fn branch_failure_aborts_siblings() {
    let (exec, _, out) = start(
        json!({"StartAt": "P", "States": {
            "P": {"Type": "Parallel", "End": true, "Branches": [
                {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 10, "End": true}}},
                {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "E", "Cause": "c"}}}
            ]}
        }}),
        json!({}),
    );
    assert_eq!(exec.status(), ExecStatus::Failed);
    let t = types(&out);
    assert!(t.contains(&"WaitStateAborted"), "{t:?}");
    assert!(t.contains(&"ParallelStateFailed"), "{t:?}");
    assert_eq!(exec.outcome().unwrap().error.as_deref(), Some("E"));
    assert!(out
        .commands
        .iter()
        .any(|c| matches!(c, Command::CancelTimer { .. })));
}

#[test]
fn stop_and_pause() {
    let (mut exec, mut env, _) = start(
        json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 5, "Next": "P"}, "P": {"Type": "Pass", "End": true}}}),
        json!({}),
    );
    let timer = exec.pending_timers().next().unwrap();
    exec.step(Input::Pause, &mut env);
    let out = exec.step(Input::TimerFired { timer_id: timer }, &mut env);
    assert_eq!(types(&out), ["WaitStateExited"]);
    assert_eq!(exec.status(), ExecStatus::Running);
    let out = exec.step(Input::Resume, &mut env);
    assert_eq!(
        types(&out),
        ["PassStateEntered", "PassStateExited", "ExecutionSucceeded"]
    );

    let (mut exec, mut env, _) = start(
        json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 5, "End": true}}}),
        json!({}),
    );
    let out = exec.step(
        Input::Stop {
            error: Some("e".into()),
            cause: None,
        },
        &mut env,
    );
    assert_eq!(types(&out), ["WaitStateAborted", "ExecutionAborted"]);
    assert_eq!(exec.status(), ExecStatus::Aborted);
}

#[test]
fn history_cap() {
    let def = json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "C"},
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsPresent": false, "Next": "A"}], "Default": "D"},
        "D": {"Type": "Succeed"}}});
    let limits = Limits {
        max_history_events: 10,
        ..Limits::default()
    };
    let mut exec = Execution::new(
        machine(def.clone()),
        ExecutionInfo::new("r", "a", "m", "n", json!({})),
        limits,
    );
    exec.step(Input::Start, &mut ManualEnv::new(0, 1));
    assert_eq!(exec.status(), ExecStatus::Failed);
    // The first state entered past the cap (event 12) fails the execution (event 13).
    assert_eq!(exec.event_count(), 13);
    assert_eq!(
        exec.outcome().unwrap().error.as_deref(),
        Some("States.Runtime")
    );
    // An unbounded cap must not overflow.
    let limits = Limits {
        max_history_events: u64::MAX,
        ..Limits::default()
    };
    let def = json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}});
    let mut exec = Execution::new(
        machine(def),
        ExecutionInfo::new("r", "a", "m", "n", json!({})),
        limits,
    );
    exec.step(Input::Start, &mut ManualEnv::new(0, 1));
    assert_eq!(exec.status(), ExecStatus::Succeeded);
}

fn run_with_limits(def: Value, input: Value, limits: Limits) -> Execution {
    let mut exec = Execution::new(
        machine(def),
        ExecutionInfo::new("us-east-1", "000000000000", "sm", "ex", input),
        limits,
    );
    exec.step(Input::Start, &mut ManualEnv::new(1_700_000_000_000, 1));
    exec
}

#[test]
fn variable_total_is_capped_per_execution() {
    let limits = Limits {
        max_variable_bytes: 100,
        ..Limits::default()
    };
    let big = "x".repeat(58); // 60 bytes as JSON
                              // Reassigning the same name replaces its size: 60 bytes live at any time.
    let ok = run_with_limits(
        json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Assign": {"v": big}, "Next": "B"},
            "B": {"Type": "Pass", "Assign": {"v": big}, "End": true}}}),
        json!({}),
        limits.clone(),
    );
    assert_eq!(ok.status(), ExecStatus::Succeeded);
    // A second name brings the total to 120 bytes.
    let over = run_with_limits(
        json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Assign": {"v": big}, "Next": "B"},
            "B": {"Type": "Pass", "Assign": {"w": big}, "End": true}}}),
        json!({}),
        limits.clone(),
    );
    let o = over.outcome().unwrap();
    assert_eq!(o.error.as_deref(), Some("States.DataLimitExceeded"));
    assert!(o.cause.as_deref().unwrap().contains("120 bytes"), "{o:?}");
    // Variables of finished Map iterations are released.
    let map = run_with_limits(
        json!({"StartAt": "M", "States": {"M": {"Type": "Map", "ItemProcessor": {
            "StartAt": "I", "States": {"I": {"Type": "Pass", "Assign": {"v.$": "$"}, "End": true}}},
            "MaxConcurrency": 1, "End": true}}}),
        json!([big, big, big]),
        limits,
    );
    assert_eq!(map.status(), ExecStatus::Succeeded);
}

#[test]
fn redrive_reruns_the_failed_state() {
    let (mut exec, mut env, out) = start(
        json!({"StartAt": "Prep", "States": {
            "Prep": {"Type": "Pass", "Assign": {"seen": "yes"}, "Next": "Call"},
            "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                     "Parameters": {"n.$": "$.n", "count.$": "$$.Execution.RedriveCount", "seen.$": "$seen"},
                     "End": true}}}),
        json!({"n": 1}),
    );
    let task = |out: &StepOutput| {
        out.commands
            .iter()
            .find_map(|c| match c {
                Command::InvokeTask(t) => Some(t.clone()),
                _ => None,
            })
            .unwrap()
    };
    let t = task(&out);
    assert_eq!(t.parameters, json!({"n": 1, "count": 0, "seen": "yes"}));
    assert!(!exec.redrivable());
    let out = exec.step(boom(t.task_id), &mut env);
    assert_eq!(exec.status(), ExecStatus::Failed);
    assert!(exec.redrivable());
    let failed_id = out.events.last().unwrap().id;
    let mut exec = reloaded(&exec);
    let out = exec.step(Input::Redrive, &mut env);
    assert_eq!(exec.status(), ExecStatus::Running);
    assert_eq!(
        types(&out),
        [
            "ExecutionRedriven",
            "TaskStateEntered",
            "TaskScheduled",
            "TaskStarted"
        ]
    );
    assert_eq!(out.events[0].previous_event_id, failed_id);
    assert_eq!(
        out.events[0].details.as_ref().unwrap()["redriveCount"],
        json!(1)
    );
    assert_eq!(out.events[1].previous_event_id, out.events[0].id);
    let t = task(&out);
    assert_eq!(t.parameters, json!({"n": 1, "count": 1, "seen": "yes"}));
    exec.step(
        Input::TaskSucceeded {
            task_id: t.task_id,
            output: json!("ok"),
        },
        &mut env,
    );
    assert_eq!(exec.status(), ExecStatus::Succeeded);
    assert!(!exec.redrivable());
    // A succeeded execution ignores Redrive.
    assert!(exec.step(Input::Redrive, &mut env).events.is_empty());
}

#[test]
fn redrive_after_stop_restarts_the_stopped_state() {
    let (mut exec, mut env, _) = start(
        json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 5, "Next": "P"},
               "P": {"Type": "Pass", "End": true}}}),
        json!({"k": 1}),
    );
    exec.step(
        Input::Stop {
            error: None,
            cause: None,
        },
        &mut env,
    );
    assert_eq!(exec.status(), ExecStatus::Aborted);
    let out = exec.step(Input::Redrive, &mut env);
    assert_eq!(types(&out), ["ExecutionRedriven", "WaitStateEntered"]);
    let timer = out
        .commands
        .iter()
        .find_map(|c| match c {
            Command::StartTimer { timer_id, .. } => Some(*timer_id),
            _ => None,
        })
        .unwrap();
    let out = exec.step(Input::TimerFired { timer_id: timer }, &mut env);
    assert_eq!(exec.status(), ExecStatus::Succeeded);
    assert_eq!(types(&out).last(), Some(&"ExecutionSucceeded"));
    assert_eq!(exec.outcome().unwrap().output, Some(json!({"k": 1})));
}

/// An execution whose DISTRIBUTED Maps run their children as child executions.
fn with_child_executions(def: Value, input: Value) -> Execution {
    let info = ExecutionInfo::new("us-east-1", "000000000000", "sm", "ex", input);
    let limits = Limits {
        child_executions: true,
        ..Limits::default()
    };
    Execution::new(machine(def), info, limits)
}

/// The commands of a step that `pick` picks.
fn picked<T>(out: &StepOutput, pick: impl Fn(&Command) -> Option<T>) -> Vec<T> {
    out.commands.iter().filter_map(pick).collect()
}

fn child_starts(out: &StepOutput) -> Vec<ChildRequest> {
    picked(out, |c| match c {
        Command::StartChild(r) => Some(r.clone()),
        _ => None,
    })
}

fn finished(status: ExecStatus, output: Option<Value>, error: Option<&str>) -> Outcome {
    Outcome {
        status,
        output,
        error: error.map(str::to_string),
        cause: error.map(|_| "c".to_string()),
    }
}

/// A DISTRIBUTED Map without MaxConcurrency runs 10,000 children at once, as AWS does (not
/// all of them: the window bounds what a Map Run keeps in flight); the Map Run reports the
/// MaxConcurrency it was given, and UpdateMapRun to 0 means the same window.
#[test]
fn a_distributed_map_without_max_concurrency_runs_ten_thousand_children_at_once() {
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map",
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}, "End": true}}});
    let items: Vec<u64> = (0..10_005).collect();
    let mut exec = with_child_executions(def, json!(items));
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let out = exec.step(Input::Start, &mut env);
    let started = child_starts(&out);
    assert_eq!(started.len(), 10_000);
    assert_eq!(exec.map_runs()[0].max_concurrency, 0);
    // Narrowed to 1 and opened again to 0: the window is 10,000 again.
    let arn = exec.map_runs()[0].map_run_arn.clone();
    let update = |mc| Input::UpdateMapRun {
        map_run_arn: arn.clone(),
        max_concurrency: Some(mc),
        tolerated_failure_count: None,
        tolerated_failure_percentage: None,
    };
    exec.step(update(1), &mut env);
    let end = |c: &ChildRequest| Input::ChildFinished {
        child_id: c.child_id,
        outcome: finished(ExecStatus::Succeeded, Some(json!(0)), None),
        events: Vec::new(),
    };
    assert!(child_starts(&exec.step(end(&started[0]), &mut env)).is_empty());
    let out = exec.step(update(0), &mut env);
    assert_eq!(child_starts(&out).len(), 1);
    assert_eq!(exec.map_runs()[0].max_concurrency, 0);
}

/// A host's cap on a Map Run's window holds whatever the MaxConcurrency (given, absent or
/// updated); a smaller MaxConcurrency still narrows it.
#[test]
fn the_hosts_cap_bounds_a_map_runs_window() {
    let run = |mc: Option<u64>| {
        let mut state = json!({"Type": "Map", "End": true,
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}});
        if let Some(mc) = mc {
            state["MaxConcurrency"] = json!(mc);
        }
        let def = json!({"StartAt": "M", "States": {"M": state}});
        let info = ExecutionInfo::new(
            "us-east-1",
            "000000000000",
            "sm",
            "ex",
            json!([1, 2, 3, 4, 5, 6]),
        );
        let limits = Limits {
            child_executions: true,
            max_map_run_window: 3,
            ..Limits::default()
        };
        let mut exec = Execution::new(machine(def), info, limits);
        let mut env = ManualEnv::new(1_700_000_000_000, 1);
        let started = child_starts(&exec.step(Input::Start, &mut env)).len();
        (exec, env, started)
    };
    assert_eq!(run(None).2, 3);
    assert_eq!(run(Some(5)).2, 3);
    assert_eq!(run(Some(2)).2, 2);
    // Widened past the cap by UpdateMapRun: still three at once; reported as given.
    let (mut exec, mut env, _) = run(Some(2));
    let arn = exec.map_runs()[0].map_run_arn.clone();
    let out = exec.step(
        Input::UpdateMapRun {
            map_run_arn: arn,
            max_concurrency: Some(100),
            tolerated_failure_count: None,
            tolerated_failure_percentage: None,
        },
        &mut env,
    );
    assert_eq!(child_starts(&out).len(), 1);
    assert_eq!(exec.map_runs()[0].max_concurrency, 100);
}

/// A DISTRIBUTED Map whose children are child executions: the window, the names, the
/// results in item order, and duplicates of a child's end ignored.
#[test]
fn distributed_children_as_child_executions() {
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "MaxConcurrency": 2,
        "Label": "Run", "ToleratedFailureCount": 1,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}, "End": true}}});
    let mut exec = with_child_executions(def, json!([10, 20, 30]));
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let out = exec.step(Input::Start, &mut env);
    let started = child_starts(&out);
    // MaxConcurrency 2: two children start, in item order, named from the Map Run.
    assert_eq!(started.iter().map(|c| c.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(started[0].input, json!(10));
    let prefix = "arn:aws:states:us-east-1:000000000000:execution:sm/Run:";
    assert!(started[0].execution_arn.starts_with(prefix), "{started:?}");
    assert_eq!(
        started[0].state_machine_arn,
        "arn:aws:states:us-east-1:000000000000:stateMachine:sm/Run"
    );
    assert_ne!(started[0].name, started[1].name);
    assert_eq!(
        started[0].definition,
        r#"{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}"#
    );
    assert_eq!(exec.pending_children().count(), 2);
    // The second ends first; the third starts in its place.
    let out = exec.step(
        Input::ChildFinished {
            child_id: started[1].child_id,
            outcome: finished(ExecStatus::Succeeded, Some(json!(21)), None),
            events: Vec::new(),
        },
        &mut env,
    );
    let third = child_starts(&out);
    assert_eq!(third.iter().map(|c| c.index).collect::<Vec<_>>(), [2]);
    // A duplicate of that end changes nothing.
    let out = exec.step(
        Input::ChildFinished {
            child_id: started[1].child_id,
            outcome: finished(ExecStatus::Succeeded, Some(json!(99)), None),
            events: Vec::new(),
        },
        &mut env,
    );
    assert!(out.events.is_empty() && out.commands.is_empty());
    // One failure is tolerated; its place holds the error.
    exec.step(
        Input::ChildFinished {
            child_id: started[0].child_id,
            outcome: finished(ExecStatus::Failed, None, Some("Boom")),
            events: Vec::new(),
        },
        &mut env,
    );
    let out = exec.step(
        Input::ChildFinished {
            child_id: third[0].child_id,
            outcome: finished(ExecStatus::Succeeded, Some(json!(31)), None),
            events: Vec::new(),
        },
        &mut env,
    );
    assert_eq!(
        types(&out),
        [
            "MapRunSucceeded",
            "MapStateSucceeded",
            "MapStateExited",
            "ExecutionSucceeded"
        ]
    );
    assert_eq!(
        exec.outcome().unwrap().output,
        Some(json!([{"Error": "Boom", "Cause": "c"}, 21, 31]))
    );
    assert_eq!(exec.pending_children().count(), 0);
    // The Map Run's summary, as DescribeMapRun shows it.
    let runs = exec.map_runs();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r.status, MapRunStatus::Succeeded);
    assert!(r.map_run_arn.contains(":mapRun:sm/Run:"));
    assert_eq!((r.state_name.as_str(), r.max_concurrency), ("M", 2));
    assert_eq!(r.tolerated_failure_count, 1);
    let want = MapRunCounts {
        succeeded: 2,
        failed: 1,
        total: 3,
        ..Default::default()
    };
    assert_eq!((&r.items, &r.executions), (&want, &want));
    assert!(r.stop_ms.is_some());
}

/// Past the tolerance, the children still running are stopped.
#[test]
fn exceeding_the_tolerance_stops_the_other_children() {
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map",
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
            "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}, "End": true}}});
    let mut exec = with_child_executions(def, json!([1, 2, 3]));
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let started = child_starts(&exec.step(Input::Start, &mut env));
    assert_eq!(started.len(), 3);
    assert!(started
        .iter()
        .all(|c| matches!(c.origin, ChildOrigin::MapRun { express: true, .. })));
    let out = exec.step(
        Input::ChildFinished {
            child_id: started[1].child_id,
            outcome: finished(ExecStatus::TimedOut, None, None),
            events: Vec::new(),
        },
        &mut env,
    );
    let stopped: Vec<(u64, String)> = picked(&out, |c| match c {
        Command::StopChild {
            child_id,
            child_arn,
        } => Some((*child_id, child_arn.clone())),
        _ => None,
    });
    // Each stop names the child as its start did.
    let want: Vec<(u64, String)> = [&started[0], &started[2]]
        .iter()
        .map(|c| (c.child_id, c.execution_arn.clone()))
        .collect();
    assert_eq!(stopped, want);
    assert_eq!(
        exec.outcome().unwrap().error.as_deref(),
        Some("States.ExceedToleratedFailureThreshold")
    );
    assert_eq!(exec.pending_children().count(), 0);
    let r = &exec.map_runs()[0];
    assert_eq!(r.status, MapRunStatus::Failed);
    assert_eq!(
        r.executions,
        MapRunCounts {
            timed_out: 1,
            aborted: 2,
            total: 3,
            ..Default::default()
        }
    );
}

/// `UpdateMapRun` widens the window (more children start) and tightens the tolerance
/// (failures past it fail the run at once).
#[test]
fn update_map_run_changes_the_window_and_the_tolerance() {
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "MaxConcurrency": 1,
        "ToleratedFailureCount": 1,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}, "End": true}}});
    let mut exec = with_child_executions(def, json!([1, 2, 3]));
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let first = child_starts(&exec.step(Input::Start, &mut env));
    assert_eq!(first.len(), 1);
    let arn = exec.map_runs()[0].map_run_arn.clone();
    let update = |max_concurrency, count| Input::UpdateMapRun {
        map_run_arn: arn.clone(),
        max_concurrency,
        tolerated_failure_count: count,
        tolerated_failure_percentage: None,
    };
    // An unknown Map Run: nothing happens.
    let other = Input::UpdateMapRun {
        map_run_arn: "arn:aws:states:us-east-1:000000000000:mapRun:sm/x:y".into(),
        max_concurrency: Some(9),
        tolerated_failure_count: None,
        tolerated_failure_percentage: None,
    };
    let out = exec.step(other, &mut env);
    assert!(out.events.is_empty() && out.commands.is_empty());
    // A wider window: the two others start.
    let more = child_starts(&exec.step(update(Some(3), None), &mut env));
    assert_eq!(more.iter().map(|c| c.index).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(exec.map_runs()[0].max_concurrency, 3);
    // One failure is within the tolerance of 1 ...
    exec.step(
        Input::ChildFinished {
            child_id: first[0].child_id,
            outcome: finished(ExecStatus::Failed, None, Some("Boom")),
            events: Vec::new(),
        },
        &mut env,
    );
    assert_eq!(exec.status(), ExecStatus::Running);
    // ... and past a tolerance of 0: the run fails and stops the others.
    let out = exec.step(update(None, Some(0)), &mut env);
    let stopped = out
        .commands
        .iter()
        .filter(|c| matches!(c, Command::StopChild { .. }))
        .count();
    assert_eq!(stopped, 2);
    assert_eq!(
        exec.outcome().unwrap().error.as_deref(),
        Some("States.ExceedToleratedFailureThreshold")
    );
    assert_eq!(exec.map_runs()[0].tolerated_failure_count, 0);
    assert_eq!(exec.map_runs()[0].status, MapRunStatus::Failed);
}

fn writes(out: &StepOutput) -> Vec<(u64, crate::export::WriteResults)> {
    out.commands
        .iter()
        .filter_map(|c| match c {
            Command::InvokeTask(TaskRequest {
                task_id,
                kind: TaskKind::WriteResults(w),
                ..
            }) => Some((*task_id, w.clone())),
            _ => None,
        })
        .collect()
}

/// A ResultWriter writes records a chunk at a time while the run goes on; a chunk still
/// being written when the run ends is written again by the last write, under the same
/// keys, before the rest and the manifest.
#[test]
fn results_are_written_in_chunks_and_the_last_write_repeats_one_in_flight() {
    let n = 2_300;
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "ItemsPath": "$.items",
        "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": "out", "Prefix": "p"}},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}, "End": true}}});
    let mut exec = with_child_executions(def, json!({"items": (0..n).collect::<Vec<_>>()}));
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let out = exec.step(Input::Start, &mut env);
    let children = child_starts(&out);
    assert_eq!(children.len(), n);
    let mut flushes = Vec::new();
    for c in &children {
        let o = finished(ExecStatus::Succeeded, Some(c.input.clone()), None);
        let out = exec.step(
            Input::ChildFinished {
                child_id: c.child_id,
                outcome: o,
                events: Vec::new(),
            },
            &mut env,
        );
        flushes.extend(writes(&out));
        // The first chunk is written; the second stays in flight to the end.
        if flushes.len() == 1 && c.index == 1_000 {
            let (id, w) = flushes[0].clone();
            let (_, written) = crate::export::files(&w);
            let out = exec.step(
                Input::TaskSucceeded {
                    task_id: id,
                    output: serde_json::to_value(written).unwrap(),
                },
                &mut env,
            );
            assert!(writes(&out).is_empty());
        }
    }
    // Chunks of 1,000: the first answered, the second in flight, then the last write.
    assert_eq!(
        flushes.len(),
        3,
        "{:?}",
        flushes
            .iter()
            .map(|f| (f.1.chunks.len(), f.1.last))
            .collect::<Vec<_>>()
    );
    let (in_flight, last) = (&flushes[1].1, &flushes[2].1);
    assert!(!in_flight.last && last.last);
    assert_eq!(last.chunks[0], in_flight.chunks[0]);
    let (files, written) = crate::export::files(last);
    let (flight_files, _) = crate::export::files(in_flight);
    assert_eq!(
        files[0], flight_files[0],
        "the chunk in flight is written again, the same"
    );
    assert_eq!(written.succeeded.len(), 3);
    let names: Vec<&str> = written
        .succeeded
        .iter()
        .map(|f| f.key.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["SUCCEEDED_0.json", "SUCCEEDED_1.json", "SUCCEEDED_2.json"]
    );
    let items: usize = flushes
        .iter()
        .skip(1)
        .chain(&flushes[..1])
        .map(|f| f.1.chunks.last().unwrap().len())
        .sum();
    assert_eq!(
        items, n,
        "every record is written once (the in-flight chunk counted once)"
    );
    assert!(
        exec.pending_tasks().count() == 1,
        "only the last write is awaited"
    );
    let out = exec.step(
        Input::TaskSucceeded {
            task_id: flushes[2].0,
            output: serde_json::to_value(written).unwrap(),
        },
        &mut env,
    );
    let Some(Command::Finish(o)) = out.commands.last() else {
        panic!("{:?}", out.commands)
    };
    assert_eq!(o.status, ExecStatus::Succeeded);
    assert_eq!(
        o.output.as_ref().unwrap()["ResultWriterDetails"]["Bucket"],
        "out"
    );
}

/// The sharding policy spreads an inline Map's iterations as child executions named after
/// the parent, the state and the index, running in the parent's name with its variables;
/// below an `auto` threshold the same Map runs inline.
#[test]
fn a_spread_inline_map_starts_child_executions_in_its_parents_name() {
    use crate::sharding::{Placement, Sharding};
    let def = json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Assign": {"x": 7}, "Next": "Fan out"},
        "Fan out": {"Type": "Map", "MaxConcurrency": 2, "ItemProcessor": {"StartAt": "P",
            "States": {"P": {"Type": "Pass", "Parameters": {"v.$": "$", "x.$": "$x",
                "id.$": "$$.Execution.Id"}, "End": true}}}, "End": true}}});
    let policy = |p| Sharding {
        default: Placement::Local,
        states: [("Fan out".to_string(), p)].into(),
    };
    // Below the threshold: inline, no child executions.
    let mut env = ManualEnv::new(0, 1);
    let mut exec = with_child_executions(def.clone(), json!([1, 2, 3]))
        .with_sharding(policy(Placement::Auto { min_children: 4 }));
    let out = exec.step(Input::Start, &mut env);
    assert!(child_starts(&out).is_empty());
    assert_eq!(exec.status(), ExecStatus::Succeeded);

    let mut exec = with_child_executions(def.clone(), json!([1, 2, 3]))
        .with_sharding(policy(Placement::Auto { min_children: 3 }));
    let out = exec.step(Input::Start, &mut env);
    let started = child_starts(&out);
    // The window holds two.
    assert_eq!(started.len(), 2);
    let c = &started[1];
    assert_eq!(
        c.execution_arn,
        "arn:aws:states:us-east-1:000000000000:execution:sm/ex:Fan_out-1-2"
    );
    assert_eq!(
        c.state_machine_arn,
        "arn:aws:states:us-east-1:000000000000:stateMachine:sm/ex"
    );
    assert_eq!(c.input, json!(2));
    let ChildOrigin::Inline { scope } = &c.origin else {
        panic!("not an inline child: {:?}", c.origin)
    };
    assert_eq!(scope.execution_arn, exec.info().execution_arn);
    assert_eq!(scope.variables.get("x"), Some(&json!(7)));
    assert_eq!(&c.sharding, exec.sharding());
    assert!(c.definition.contains("\"StartAt\":\"P\""));
    assert!(types(&out).contains(&"MapIterationStarted"));

    // The child runs in its parent's name and sees its variables.
    let sm = crate::parse(&c.definition, Default::default()).unwrap();
    let info = ExecutionInfo::new(
        "us-east-1",
        "000000000000",
        "sm/ex",
        &c.name,
        c.input.clone(),
    );
    let mut child = Execution::new(sm, info, exec.limits().clone());
    child.set_scope(scope.clone());
    let child_out = child.step(Input::Start, &mut env);
    let result = child.outcome().unwrap().output.clone().unwrap();
    assert_eq!(
        result,
        json!({"v": 2, "x": 7, "id": "arn:aws:states:us-east-1:000000000000:execution:sm:ex"})
    );
    // Its history joins the parent's after its MapIterationStarted, then the iteration
    // succeeds; a second report of the same end changes nothing.
    let mut outs = Vec::new();
    for _ in 0..2 {
        outs.push(exec.step(
            Input::ChildFinished {
                child_id: c.child_id,
                outcome: child.outcome().unwrap().clone(),
                events: child_out.events.clone(),
            },
            &mut env,
        ));
    }
    let spliced = types(&outs[0]);
    assert_eq!(
        spliced,
        [
            "PassStateEntered",
            "PassStateExited",
            "MapIterationSucceeded",
            "MapIterationStarted"
        ]
    );
    assert!(outs[1].events.is_empty() && outs[1].commands.is_empty());
    // The third child starts as the second ends.
    assert_eq!(child_starts(&outs[0]).len(), 1);
    let third = child_starts(&outs[0])[0].child_id;
    exec.step(
        Input::ChildFinished {
            child_id: started[0].child_id,
            outcome: finished(ExecStatus::Succeeded, Some(json!("one")), None),
            events: Vec::new(),
        },
        &mut env,
    );
    exec.step(
        Input::ChildFinished {
            child_id: third,
            outcome: finished(ExecStatus::Succeeded, Some(json!("three")), None),
            events: Vec::new(),
        },
        &mut env,
    );
    assert_eq!(exec.status(), ExecStatus::Succeeded);
    assert_eq!(
        exec.outcome().unwrap().output,
        Some(json!(["one", result, "three"]))
    );

    // Stopping the parent stops each spread child by the ARN it was started with.
    let mut exec =
        with_child_executions(def, json!([1, 2, 3])).with_sharding(policy(Placement::Spread));
    let started = child_starts(&exec.step(Input::Start, &mut env));
    let stop = Input::Stop {
        error: None,
        cause: None,
    };
    let stopped = picked(&exec.step(stop, &mut env), |c| match c {
        Command::StopChild { child_arn, .. } => Some(child_arn.clone()),
        _ => None,
    });
    let want: Vec<String> = started.iter().map(|c| c.execution_arn.clone()).collect();
    assert_eq!(stopped, want);
}

/// A task failing with `Boom`.
fn boom(task_id: u64) -> Input {
    Input::TaskFailed {
        task_id,
        error: Some("Boom".into()),
        cause: None,
    }
}

/// The execution rebuilt from its saved state, as the shard stores it between steps (a
/// failure and its redrive).
fn reloaded(exec: &Execution) -> Execution {
    let saved = serde_json::to_string(exec.state()).unwrap();
    Execution::from_state(
        exec.state_machine().clone(),
        serde_json::from_str(&saved).unwrap(),
    )
}

/// All task invocations a step asks for.
fn tasks_of(out: &StepOutput) -> Vec<TaskRequest> {
    picked(out, |c| match c {
        Command::InvokeTask(t) => Some(t.clone()),
        _ => None,
    })
}

/// A redrive of a failed inline Map or Parallel runs only the iterations and branches that
/// did not succeed (AWS: "reschedules and redrives only the iterations and branches that
/// failed or aborted"); the output holds every result in order.
#[test]
fn redriving_a_map_or_parallel_reruns_only_what_did_not_succeed() {
    let call = |name: &str| {
        json!({"StartAt": name, "States": {name: {"Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke", "Parameters": {"v.$": "$"}, "End": true}}})
    };
    for def in [
        json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
            "ItemProcessor": call("Call")}}}),
        json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
            {"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": 1, "End": true}}},
            call("B"),
            {"StartAt": "C", "States": {"C": {"Type": "Pass", "Result": 3, "End": true}}}]}}}),
    ] {
        let is_map = def["States"]["M"].is_object();
        let input = if is_map { json!([1, 2, 3]) } else { json!(2) };
        let (mut exec, mut env, out) = start(def, input);
        let mut calls = tasks_of(&out);
        // Item 2 (or branch B) fails; the others succeed first.
        let failing = calls.remove(if is_map { 1 } else { 0 });
        for t in calls {
            exec.step(
                Input::TaskSucceeded {
                    task_id: t.task_id,
                    output: json!(t.parameters["v"]),
                },
                &mut env,
            );
        }
        exec.step(boom(failing.task_id), &mut env);
        assert_eq!(exec.status(), ExecStatus::Failed);
        let mut exec = reloaded(&exec);
        let out = exec.step(Input::Redrive, &mut env);
        // Only the one that failed runs again.
        let again = tasks_of(&out);
        assert_eq!(again.len(), 1, "{:?}", types(&out));
        assert_eq!(again[0].parameters, json!({"v": 2}));
        if is_map {
            let started: Vec<_> = out
                .events
                .iter()
                .filter(|e| e.event_type == EventType::MapIterationStarted)
                .map(|e| e.details.as_ref().unwrap()["index"].clone())
                .collect();
            assert_eq!(started, [json!(1)]);
        }
        exec.step(
            Input::TaskSucceeded {
                task_id: again[0].task_id,
                output: json!(2),
            },
            &mut env,
        );
        assert_eq!(exec.status(), ExecStatus::Succeeded);
        assert_eq!(exec.outcome().unwrap().output, Some(json!([1, 2, 3])));
    }
}

/// The ReadItems tasks of a step: (task id, request).
fn reads(out: &StepOutput) -> Vec<u64> {
    picked(out, |c| match c {
        Command::InvokeTask(TaskRequest {
            task_id,
            kind: TaskKind::ReadItems(_),
            ..
        }) => Some(*task_id),
        _ => None,
    })
}

/// Ends the children `which` of `started` as `status` (FAILED with `Boom`).
fn end_children(
    exec: &mut Execution,
    env: &mut ManualEnv,
    started: &[ChildRequest],
    which: &[usize],
    status: ExecStatus,
) -> Vec<StepOutput> {
    let mut outs = Vec::new();
    for c in started.iter().filter(|c| which.contains(&c.index)) {
        let (output, error) = match status {
            ExecStatus::Succeeded => (Some(json!(c.index * 10)), None),
            _ => (None, Some("Boom")),
        };
        outs.push(exec.step(
            Input::ChildFinished {
                child_id: c.child_id,
                outcome: finished(status, output, error),
                events: Vec::new(),
            },
            env,
        ));
    }
    outs
}

/// A redriven Map Run that read its items reads them again and runs only the children that
/// did not succeed, under the same Map Run; the results of the others are kept in place.
#[test]
fn redriving_a_map_run_that_read_its_items_reruns_only_the_unsuccessful_children() {
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "ItemReader": {"Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSONL"}, "Parameters": {"Bucket": "b", "Key": "k"}},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}}}});
    let mut exec = with_child_executions(def, json!({}));
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let page = json!({"items": [0, 1, 2, 3], "next": null});
    let read = reads(&exec.step(Input::Start, &mut env));
    let out = exec.step(
        Input::TaskSucceeded {
            task_id: read[0],
            output: page.clone(),
        },
        &mut env,
    );
    let first = child_starts(&out);
    assert_eq!(first.len(), 4);
    end_children(&mut exec, &mut env, &first, &[0, 3], ExecStatus::Succeeded);
    end_children(&mut exec, &mut env, &first, &[1], ExecStatus::Failed);
    assert_eq!(exec.status(), ExecStatus::Failed);
    let run_arn = exec.map_runs()[0].map_run_arn.clone();

    // The redrive reads the items again; children 1 and 2 (aborted) run again.
    let out = exec.step(Input::Redrive, &mut env);
    assert!(types(&out).contains(&"MapRunRedriven"));
    let read = reads(&out);
    assert_eq!(read.len(), 1);
    let out = exec.step(
        Input::TaskSucceeded {
            task_id: read[0],
            output: page,
        },
        &mut env,
    );
    let again = child_starts(&out);
    assert_eq!(again.iter().map(|c| c.index).collect::<Vec<_>>(), [1, 2]);
    assert!(again.iter().all(|c| c.redrive));
    assert_eq!(again[0].execution_arn, first[1].execution_arn);
    assert_eq!(exec.map_runs().len(), 1);
    assert_eq!(exec.map_runs()[0].map_run_arn, run_arn);
    end_children(&mut exec, &mut env, &again, &[1, 2], ExecStatus::Succeeded);
    assert_eq!(exec.status(), ExecStatus::Succeeded);
    assert_eq!(exec.outcome().unwrap().output, Some(json!([0, 10, 20, 30])));
    let r = &exec.map_runs()[0];
    assert_eq!((r.executions.succeeded, r.executions.total), (4, 4));
    assert_eq!((r.items.pending, r.items.running), (0, 0));
    assert_eq!(r.redrive_count, 1);
}

/// A redriven Map Run whose results went to S3 reruns only the unsuccessful children, and
/// its export goes on after the files the failed attempt wrote: numbered after them, and
/// its manifest lists them all.
#[test]
fn redriving_a_map_run_that_exported_its_results_continues_its_files() {
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "ItemsPath": "$.items",
        "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": "out", "Prefix": "p"}},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}, "End": true}}});
    let mut exec = with_child_executions(def, json!({"items": [0, 1, 2, 3, 4]}));
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let first = child_starts(&exec.step(Input::Start, &mut env));
    assert_eq!(first.len(), 5);
    end_children(
        &mut exec,
        &mut env,
        &first,
        &[0, 1, 3],
        ExecStatus::Succeeded,
    );
    // Child 2 fails (none tolerated): child 4 is aborted, and the last write goes out.
    let outs = end_children(&mut exec, &mut env, &first, &[2], ExecStatus::Failed);
    let (id, w) = writes(&outs[0]).pop().expect("the last write");
    assert!(w.last);
    let (_, written) = crate::export::files(&w);
    let out = exec.step(
        Input::TaskSucceeded {
            task_id: id,
            output: serde_json::to_value(&written).unwrap(),
        },
        &mut env,
    );
    assert!(types(&out).contains(&"MapRunFailed"));
    assert_eq!(exec.status(), ExecStatus::Failed);

    let again = child_starts(&exec.step(Input::Redrive, &mut env));
    assert_eq!(again.iter().map(|c| c.index).collect::<Vec<_>>(), [2, 4]);
    let outs = end_children(&mut exec, &mut env, &again, &[2, 4], ExecStatus::Succeeded);
    let (id, w2) = writes(outs.last().unwrap())
        .pop()
        .expect("the redrive's last write");
    // Only the rerun children's records; files after the first attempt's.
    let records: Vec<usize> = w2.chunks.iter().flatten().map(|r| r.index).collect();
    assert_eq!(records, [2, 4]);
    assert_eq!(w2.written, written);
    let (files, all) = crate::export::files(&w2);
    assert_eq!(all.succeeded.len(), written.succeeded.len() + 1);
    let manifest = files
        .iter()
        .find(|(key, _)| key.ends_with("manifest.json"))
        .unwrap();
    let listed = String::from_utf8_lossy(&manifest.1).to_string();
    for f in written.succeeded.iter().chain(&all.succeeded) {
        assert!(listed.contains(&f.key), "{} not in the manifest", f.key);
    }
    exec.step(
        Input::TaskSucceeded {
            task_id: id,
            output: serde_json::to_value(&all).unwrap(),
        },
        &mut env,
    );
    assert_eq!(exec.status(), ExecStatus::Succeeded);
    let r = &exec.map_runs()[0];
    assert_eq!((r.executions.succeeded, r.executions.total), (5, 5));
}

/// Answers each call with the `n` of its `{"v": {"n": …}}` parameters.
fn answer_n(exec: &mut Execution, env: &mut ManualEnv, calls: Vec<TaskRequest>) {
    for t in calls {
        let output = json!(t.parameters["v"]["n"]);
        exec.step(
            Input::TaskSucceeded {
                task_id: t.task_id,
                output,
            },
            env,
        );
    }
}

/// A redrive resumes a failed branch where it stopped, all the way down: the Parallel
/// reruns only its failed branch, from the Map it failed in (not its first state); the Map
/// reruns only its failed iteration, from the Task that failed; what succeeded keeps its
/// result, and the variables of the resumed branch are those it had.
#[test]
fn a_redrive_resumes_nested_branches_where_they_stopped() {
    let call = |next: Value| {
        let mut t = json!({"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"v.$": "$"}});
        match next {
            Value::String(n) => t["Next"] = json!(n),
            _ => t["End"] = json!(true),
        }
        t
    };
    let def = json!({"StartAt": "Par", "States": {"Par": {"Type": "Parallel", "End": true,
        "Branches": [
            {"StartAt": "Ok", "States": {"Ok": {"Type": "Pass", "Result": "ok", "End": true}}},
            {"StartAt": "Prep", "States": {
                "Prep": {"Type": "Pass", "Assign": {"tag": "t"}, "Result": [1, 2, 3], "Next": "M"},
                "M": {"Type": "Map", "End": true, "ItemProcessor": {"StartAt": "Before",
                    "States": {"Before": {"Type": "Pass", "Next": "Call"}, "Call": call(Value::Null)}},
                    "ItemSelector": {"n.$": "$$.Map.Item.Value", "tag.$": "$tag"}}}}]}}});
    let (mut exec, mut env, out) = start(def.clone(), json!({}));
    let mut calls = tasks_of(&out);
    assert_eq!(calls.len(), 3);
    let failing = calls.remove(1);
    assert_eq!(failing.parameters, json!({"v": {"n": 2, "tag": "t"}}));
    answer_n(&mut exec, &mut env, calls);
    exec.step(boom(failing.task_id), &mut env);
    assert_eq!(exec.status(), ExecStatus::Failed);

    let mut exec = reloaded(&exec);
    let out = exec.step(Input::Redrive, &mut env);
    let entered: Vec<String> = out
        .events
        .iter()
        .filter(|e| e.event_type.as_str().ends_with("StateEntered"))
        .map(|e| {
            e.details.as_ref().unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // Neither Ok, nor Prep, nor the iteration's Before run again.
    assert_eq!(entered, ["Par", "M", "Call"], "{:?}", types(&out));
    let again = tasks_of(&out);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].parameters, failing.parameters);
    exec.step(
        Input::TaskSucceeded {
            task_id: again[0].task_id,
            output: json!(20),
        },
        &mut env,
    );
    assert_eq!(exec.status(), ExecStatus::Succeeded);
    assert_eq!(
        exec.outcome().unwrap().output,
        Some(json!(["ok", [1, 20, 3]]))
    );

    // Stopped while the iterations wait on their calls: the redrive resumes the aborted
    // ones at their Task, and keeps the one that had succeeded.
    let (mut exec, mut env, out) = start(def, json!({}));
    let calls = tasks_of(&out);
    let output = json!(calls[0].parameters["v"]["n"]);
    exec.step(
        Input::TaskSucceeded {
            task_id: calls[0].task_id,
            output,
        },
        &mut env,
    );
    let stop = Input::Stop {
        error: None,
        cause: None,
    };
    exec.step(stop, &mut env);
    assert_eq!(exec.status(), ExecStatus::Aborted);
    let mut exec = reloaded(&exec);
    let out = exec.step(Input::Redrive, &mut env);
    let again = tasks_of(&out);
    let params: Vec<Value> = again
        .iter()
        .map(|t| t.parameters["v"]["n"].clone())
        .collect();
    assert_eq!(params, [json!(2), json!(3)], "{:?}", types(&out));
    assert!(
        !types(&out).contains(&"PassStateEntered"),
        "{:?}",
        types(&out)
    );
    answer_n(&mut exec, &mut env, again);
    assert_eq!(
        exec.outcome().unwrap().output,
        Some(json!(["ok", [1, 2, 3]]))
    );
}

/// A failure a Retry takes runs the whole state again: nothing is kept for a redrive then.
#[test]
fn a_retried_map_runs_whole_and_keeps_nothing_for_a_redrive() {
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "Retry": [{"ErrorEquals": ["Boom"], "MaxAttempts": 1, "IntervalSeconds": 1}],
        "ItemProcessor": {"StartAt": "Call", "States": {"Call": {"Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke", "Parameters": {"v.$": "$"}, "End": true}}}}}});
    let (mut exec, mut env, out) = start(def, json!([1, 2]));
    let calls = tasks_of(&out);
    exec.step(
        Input::TaskSucceeded {
            task_id: calls[0].task_id,
            output: json!(1),
        },
        &mut env,
    );
    let out = exec.step(boom(calls[1].task_id), &mut env);
    let timer = out
        .commands
        .iter()
        .find_map(|c| match c {
            Command::StartTimer { timer_id, .. } => Some(*timer_id),
            _ => None,
        })
        .unwrap();
    env.now_ms += 1000;
    let out = exec.step(Input::TimerFired { timer_id: timer }, &mut env);
    // The retry runs both iterations.
    assert_eq!(tasks_of(&out).len(), 2);
}

/// What a redrive keeps reads back from state stored before it had `keeps` (its results and
/// Map Run at the top level: `results`/`run` in a kept state, `done`/`run` in a redrive
/// point).
#[test]
fn kept_reads_back_from_older_stored_state() {
    let old: Kept =
        serde_json::from_value(json!({"state": 2, "results": {"1": 5}, "run": 0})).unwrap();
    assert_eq!(old.keeps.results.get(&1), Some(&json!(5)));
    assert_eq!(old.keeps.run, Some(0));
    let again: Kept = serde_json::from_value(serde_json::to_value(&old).unwrap()).unwrap();
    assert_eq!(again.keeps.results, old.keeps.results);
    let point: RedrivePoint = serde_json::from_value(
        json!({"state": 2, "input": {}, "vars": {}, "var_bytes": 0, "done": {"0": "a"}}),
    )
    .unwrap();
    assert_eq!(point.keeps.results.get(&0), Some(&json!("a")));
}
