//! The golden corpus: `tests/golden/*.json`, each an array of cases written from the AWS
//! documentation and the compatibility checklist.
//!
//! A case:
//! ```json
//! {"name": "...", "definition": {...}, "input": {...},
//!  "tasks": {"StateName": [{"ok": <result>} | {"error": "E", "cause": "C"} | {"timeout": true}]},
//!            // a DISTRIBUTED Map's ItemReader and ResultWriter answer under the Map's name;
//!            // "expectParameters" and "expectKind" check what a task was asked
//!  "expect": {"status": "SUCCEEDED", "output": ...} | {"status": "FAILED", "error": "...", "cause": "..."},
//!  "events": ["ExecutionStarted", ...],           // optional: the event types in order
//!  "history": [{"type": ..., "id": ..., "previousEventId": ..., "...EventDetails": {...}}], // optional
//!  "invalid": ["CODE@/location", ...]}              // for definitions that must be rejected
//! ```
//! Tasks answer in order per state; timers fire in due order on a virtual clock.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;
use trellis_asl::driver::{Driver, Tasks};
use trellis_asl::exec::{ExecutionInfo, TaskRequest};
use trellis_asl::{ExecStatus, Execution, HistoryEvent, Input, Limits, ManualEnv};

struct Case {
    file: String,
    case: Value,
}

fn load() -> Vec<Case> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
    {
        let text = std::fs::read_to_string(&f).unwrap();
        let cases: Vec<Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for case in cases {
            out.push(Case {
                file: f.file_name().unwrap().to_string_lossy().into_owned(),
                case,
            });
        }
    }
    out
}

/// Answers tasks from the case's `tasks` script, in order per state.
struct Scripted(HashMap<String, VecDeque<Value>>);

impl Tasks for Scripted {
    fn invoke(&mut self, t: &TaskRequest) -> Result<Option<Input>, String> {
        let answer = self
            .0
            .get_mut(&t.state_name)
            .and_then(VecDeque::pop_front)
            .ok_or_else(|| {
                format!(
                    "no scripted answer for task state '{}' (parameters {})",
                    t.state_name, t.parameters
                )
            })?;
        if let Some(expect) = answer.get("expectParameters") {
            if *expect != t.parameters {
                return Err(format!(
                    "task '{}' parameters: expected {expect}, got {}",
                    t.state_name, t.parameters
                ));
            }
        }
        if let Some(expect) = answer.get("expectKind") {
            let got = serde_json::to_value(&t.kind).map_err(|e| e.to_string())?;
            if *expect != got {
                return Err(format!(
                    "task '{}' kind: expected {expect}, got {got}",
                    t.state_name
                ));
            }
        }
        if let Some(v) = answer.get("ok") {
            return Ok(Some(Input::TaskSucceeded {
                task_id: t.task_id,
                output: v.clone(),
            }));
        }
        if answer.get("timeout").is_some() {
            // left pending: the timeout timer fires
            return Ok(None);
        }
        let text = |k: &str| answer.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Some(Input::TaskFailed {
            task_id: t.task_id,
            error: text("error"),
            cause: text("cause"),
        }))
    }
}

/// A history as a tree (each event under its `previousEventId`), with ids and times left
/// out and each event's followers in a canonical order: two histories with the same shape
/// differ only in how concurrent branches interleave.
fn shape(events: &[HistoryEvent]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hashes: HashMap<u64, u64> = HashMap::new();
    let mut followers: HashMap<u64, Vec<u64>> = HashMap::new();
    // An event follows one written before it: children before parents, by descending id.
    let mut sorted: Vec<&HistoryEvent> = events.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.id));
    for e in sorted {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        e.event_type.as_str().hash(&mut h);
        serde_json::to_string(&e.details).unwrap().hash(&mut h);
        let mut f = followers.remove(&e.id).unwrap_or_default();
        f.sort_unstable();
        f.hash(&mut h);
        let v = h.finish();
        hashes.insert(e.id, v);
        followers.entry(e.previous_event_id).or_default().push(v);
    }
    let mut roots = followers.remove(&0).unwrap_or_default();
    roots.sort_unstable();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    roots.hash(&mut h);
    h.finish()
}

fn dump(events: &[HistoryEvent]) -> String {
    events
        .iter()
        .map(|e| e.to_golden_json().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_case(c: &Value) -> Result<(), String> {
    let def = c["definition"].to_string();
    if let Some(want) = c.get("invalid") {
        let diags = trellis_asl::validate::validate(&def, Default::default());
        let got: Vec<String> = diags
            .iter()
            .map(|d| format!("{}@{}", d.code, d.location))
            .collect();
        for w in want.as_array().unwrap() {
            let w = w.as_str().unwrap();
            if !got.iter().any(|g| g == w) {
                return Err(format!("expected diagnostic {w}, got {got:?}"));
            }
        }
        return Ok(());
    }
    let sm = trellis_asl::parse(&def, Default::default())
        .map_err(|e| format!("definition rejected: {e}"))?;
    let input = c
        .get("input")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let info = ExecutionInfo::new("us-east-1", "123456789012", "Golden", "run-1", input);
    let mut scripts: HashMap<String, VecDeque<Value>> = HashMap::new();
    if let Some(t) = c.get("tasks").and_then(Value::as_object) {
        for (k, v) in t {
            scripts.insert(k.clone(), v.as_array().unwrap().iter().cloned().collect());
        }
    }
    // Run four times: straight through, and saving and restoring the execution state after
    // every step, as the shard does; with a DISTRIBUTED Map's children as frames, and as
    // child executions. All must give the same history.
    let mut runs = Vec::new();
    for (round_trip, child_executions) in
        [(false, false), (true, false), (false, true), (true, true)]
    {
        let limits = Limits {
            child_executions,
            ..Limits::default()
        };
        let mut exec = Execution::new(sm.clone(), info.clone(), limits);
        let mut env = ManualEnv::new(1_700_000_000_000, 42);
        let mut tasks = Scripted(scripts.clone());
        let mut driver = Driver::new().max_steps(10_000);
        if round_trip {
            driver = driver.round_trip_state();
        }
        driver
            .run(&mut exec, &mut env, &mut tasks)
            .map_err(|e| e.to_string())?;
        runs.push((exec, driver.into_history()));
    }
    // And once more with every inline Map and Parallel spread as child executions: the
    // same outcome, and the same history but for how the children's events interleave.
    let spread = {
        let limits = Limits {
            child_executions: true,
            ..Limits::default()
        };
        let policy = trellis_asl::Sharding {
            default: trellis_asl::Placement::Spread,
            ..Default::default()
        };
        let mut exec = Execution::new(sm.clone(), info.clone(), limits).with_sharding(policy);
        let mut env = ManualEnv::new(1_700_000_000_000, 42);
        let mut tasks = Scripted(scripts.clone());
        let mut driver = Driver::new().max_steps(10_000).round_trip_state();
        driver
            .run(&mut exec, &mut env, &mut tasks)
            .map_err(|e| format!("spread: {e}"))?;
        (exec, driver.into_history())
    };
    let (exec, events) = runs.remove(0);
    if spread.0.outcome() != exec.outcome() {
        return Err(format!(
            "spreading children changed the outcome: {:?} / {:?}",
            spread.0.outcome(),
            exec.outcome()
        ));
    }
    if shape(&spread.1) != shape(&events) {
        return Err(format!(
            "spreading children changed the history:\n{}\n----\n{}",
            dump(&spread.1),
            dump(&events)
        ));
    }
    // Map Runs end the same whichever way their children run (dates aside).
    let summary = |e: &Execution| -> Vec<String> {
        e.map_runs()
            .iter()
            .map(|r| {
                format!(
                    "{} {:?} {:?} {:?}",
                    r.map_run_arn, r.status, r.items, r.executions
                )
            })
            .collect()
    };
    for (i, (other, other_events)) in runs.iter().enumerate() {
        if *other_events != events
            || other.outcome() != exec.outcome()
            || summary(other) != summary(&exec)
        {
            let how = [
                "saving and restoring the execution state",
                "running children as child executions",
                "child executions with saved state",
            ][i];
            return Err(format!(
                "{how} changed the run: {:?} / {:?}",
                other.outcome(),
                exec.outcome()
            ));
        }
    }
    let outcome = exec.outcome().unwrap();
    let expect = &c["expect"];
    let status = outcome.status.as_str();
    if expect["status"] != status {
        return Err(format!(
            "status {status} (error {:?}, cause {:?}), expected {}",
            outcome.error, outcome.cause, expect["status"]
        ));
    }
    if outcome.status == ExecStatus::Succeeded {
        if let Some(o) = expect.get("output") {
            let got = outcome.output.clone().unwrap_or(Value::Null);
            // Compare text too, so key order and number form count.
            if serde_json::to_string(&got).unwrap() != serde_json::to_string(o).unwrap() {
                return Err(format!("output {got}, expected {o}"));
            }
        }
    } else {
        if let Some(e) = expect.get("error") {
            if outcome.error.as_deref() != e.as_str() {
                return Err(format!("error {:?}, expected {e}", outcome.error));
            }
        }
        if let Some(cause) = expect.get("cause") {
            if outcome.cause.as_deref() != cause.as_str() {
                return Err(format!("cause {:?}, expected {cause}", outcome.cause));
            }
        }
    }
    if let Some(want) = c.get("events") {
        let got: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let want: Vec<&str> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        if got != want {
            return Err(format!("events\n  got  {got:?}\n  want {want:?}"));
        }
    }
    if let Some(want) = c.get("history") {
        let got: Vec<Value> = events.iter().map(|e| e.to_golden_json()).collect();
        let want = want.as_array().unwrap();
        if got.len() != want.len() {
            return Err(format!(
                "history has {} events, expected {}:\n{}",
                got.len(),
                want.len(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
        for (g, w) in got.iter().zip(want) {
            if g != w {
                return Err(format!("history event\n  got  {g}\n  want {w}"));
            }
        }
    }
    Ok(())
}

#[test]
fn golden_corpus() {
    let cases = load();
    let mut failures = Vec::new();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        let name = c.case["name"].as_str().unwrap_or("?").to_string();
        assert!(names.insert(name.clone()), "duplicate case name {name}");
        if let Err(e) = run_case(&c.case) {
            failures.push(format!("{} / {name}: {e}", c.file));
        }
    }
    let with_events = cases
        .iter()
        .filter(|c| c.case.get("events").is_some() || c.case.get("history").is_some())
        .count();
    println!(
        "golden: {} cases, {} with event sequences",
        cases.len(),
        with_events
    );
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
