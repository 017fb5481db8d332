//! Cross-shard messages on real shard groups: a DISTRIBUTED Map's children run as child
//! executions on the shards their ARNs hash to; every message arrives exactly once in
//! effect, through refused deliveries, a restart and duplicates.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{boot_shards, boot_shards_with, eventually, start_req, Loopback, ShardNode};
use serde_json::{json, Value};
use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;
use trellis_shard::executor::{BoxFuture, Connectors, Control, Fence};
use trellis_shard::{shard_of, ExecRecord, Status};

const SHARDS: u32 = 4;

/// The children here run no tasks.
struct NoTasks;

impl Connectors for NoTasks {
    fn invoke(&self, t: TaskRequest, _: Fence) -> BoxFuture<'static, Input> {
        Box::pin(async move {
            Input::TaskFailed {
                task_id: t.task_id,
                error: Some("NoTasks".into()),
                cause: None,
            }
        })
    }
}

fn parent_arn(name: &str) -> String {
    format!("arn:aws:states:us-east-1:000000000000:execution:M:{name}")
}

/// A DISTRIBUTED Map over `$.items`; each child doubles `n` or, when `fail` is set, fails,
/// or, when `wait` is set, waits an hour.
fn map(extra: Value) -> Value {
    let mut state = json!({"Type": "Map", "ItemsPath": "$.items", "Label": "Run", "End": true,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "C", "States": {
                "C": {"Type": "Choice", "Choices": [
                    {"Variable": "$.fail", "BooleanEquals": true, "Next": "F"},
                    {"Variable": "$.wait", "BooleanEquals": true, "Next": "W"}], "Default": "D"},
                "F": {"Type": "Fail", "Error": "Boom", "Cause": "bad"},
                "W": {"Type": "Wait", "Seconds": 3600, "Next": "D"},
                "D": {"Type": "Pass", "Parameters": {"double.$": "States.MathAdd($.n, $.n)"}, "End": true}}}});
    for (k, v) in extra.as_object().unwrap() {
        state[k] = v.clone();
    }
    json!({"StartAt": "M", "States": {"M": state}})
}

fn items(n: i64) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"n": i, "fail": false, "wait": false}))
            .collect(),
    )
}

fn record(nodes: &[ShardNode], arn: &str) -> Option<ExecRecord> {
    nodes[shard_of(arn, SHARDS) as usize]
        .handle
        .app
        .record(arn)
        .unwrap()
}

/// Every record on every shard.
fn all_records(nodes: &[ShardNode]) -> Vec<ExecRecord> {
    nodes
        .iter()
        .flat_map(|n| n.handle.app.scan(None, 100_000).unwrap())
        .collect()
}

fn children(nodes: &[ShardNode]) -> Vec<ExecRecord> {
    all_records(nodes)
        .into_iter()
        .filter(|r| r.parent.is_some())
        .collect()
}

async fn ended(nodes: &[ShardNode], arn: &str) -> ExecRecord {
    eventually(&format!("{arn} to end"), || {
        record(nodes, arn).filter(|r| r.status.is_terminal())
    })
    .await
}

/// Waits until no record on any shard has a message left to send.
async fn outboxes_empty(nodes: &[ShardNode]) {
    eventually("every outbox to empty", || {
        all_records(nodes)
            .iter()
            .all(|r| r.outbox.is_empty())
            .then_some(())
    })
    .await;
}

fn event_types(nodes: &[ShardNode], r: &ExecRecord) -> Vec<String> {
    nodes[shard_of(&r.arn, SHARDS) as usize]
        .handle
        .app
        .history(r.id, 1, r.last_event_id)
        .unwrap()
        .iter()
        .map(|e| e.event_type.as_str().to_string())
        .collect()
}

/// Starts the execution `name` of `def` on its shard and waits for its end.
async fn run_to_end(nodes: &[ShardNode], name: &str, def: &Value, input: Value) -> ExecRecord {
    let arn = parent_arn(name);
    nodes[shard_of(&arn, SHARDS) as usize]
        .handle
        .start(start_req(name, def, input))
        .await
        .unwrap();
    ended(nodes, &arn).await
}

/// The parent succeeded with every item `{"double": 2n}` for `n` in `0..n`, in order.
fn assert_doubled(parent: &ExecRecord, n: i64) {
    assert_eq!(parent.status, Status::Succeeded, "{parent:?}");
    let want: Vec<Value> = (0..n).map(|i| json!({"double": 2 * i})).collect();
    assert_eq!(
        serde_json::from_str::<Value>(parent.output.as_deref().unwrap()).unwrap(),
        Value::Array(want)
    );
}

/// Stops execution `arn` (StopExecution, no error or cause).
async fn stop_execution(nodes: &[ShardNode], arn: &str) {
    let stop = Control::Stop {
        error: None,
        cause: None,
    };
    let shard = shard_of(arn, SHARDS) as usize;
    nodes[shard].handle.control(arn, stop).await.unwrap();
}

/// Stops every shard. The mailer's handles go first: they keep the executors' channels open.
async fn stop_all(mail: &Loopback, nodes: Vec<ShardNode>) {
    mail.handles.lock().unwrap().clear();
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_maps_children_run_on_the_shards_they_hash_to() {
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    let (_db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    let arn = parent_arn("spread");
    let def = map(json!({"MaxConcurrency": 8}));
    let parent = run_to_end(&nodes, "spread", &def, json!({"items": items(40)})).await;
    assert_doubled(&parent, 40);
    // The parent's history is the Map Run's; each child has its own.
    assert_eq!(
        event_types(&nodes, &parent),
        [
            "ExecutionStarted",
            "MapStateEntered",
            "MapStateStarted",
            "MapRunStarted",
            "MapRunSucceeded",
            "MapStateSucceeded",
            "MapStateExited",
            "ExecutionSucceeded"
        ]
    );
    let kids = children(&nodes);
    assert_eq!(kids.len(), 40);
    let mut shards = std::collections::BTreeSet::new();
    for c in &kids {
        assert_eq!(c.status, Status::Succeeded);
        assert_eq!(c.parent.as_ref().unwrap().arn, arn);
        assert!(c
            .arn
            .starts_with("arn:aws:states:us-east-1:000000000000:execution:M/Run:"));
        assert_eq!(
            c.state_machine_arn,
            "arn:aws:states:us-east-1:000000000000:stateMachine:M/Run"
        );
        // Each lives on the shard its ARN hashes to.
        assert!(nodes[shard_of(&c.arn, SHARDS) as usize]
            .handle
            .app
            .record(&c.arn)
            .unwrap()
            .is_some());
        shards.insert(shard_of(&c.arn, SHARDS));
    }
    assert!(shards.len() >= 3, "children on shards {shards:?}");
    assert_eq!(
        event_types(&nodes, &kids[0]),
        [
            "ExecutionStarted",
            "ChoiceStateEntered",
            "ChoiceStateExited",
            "PassStateEntered",
            "PassStateExited",
            "ExecutionSucceeded"
        ]
    );
    outboxes_empty(&nodes).await;
    stop_all(&mail, nodes).await;
}

/// Backpressure: a shard that runs `max_live` executions refuses child starts; they wait in
/// the parent's outbox and come again, so a map far wider than the shards' room still ends
/// with every result, and a stop reaches children whose starts were held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shard_refuses_child_starts_until_it_has_room() {
    const MAX_LIVE: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    let (_db, nodes) =
        boot_shards_with(dir.path(), SHARDS, Arc::new(NoTasks), &mail, MAX_LIVE).await;
    let live = |nodes: &[ShardNode], shard: usize| {
        nodes[shard]
            .handle
            .app
            .scan(None, 100_000)
            .unwrap()
            .iter()
            .filter(|r| !r.status.is_terminal())
            .count()
    };
    let refused = |nodes: &[ShardNode]| -> u64 {
        nodes
            .iter()
            .map(|n| n.metrics.deliveries_refused.get())
            .sum()
    };

    // 30 children at once over four shards that each run at most two executions.
    let parent = run_to_end(&nodes, "wide", &map(json!({})), json!({"items": items(30)})).await;
    assert_doubled(&parent, 30);
    assert!(refused(&nodes) > 0, "no delivery was refused");
    outboxes_empty(&nodes).await;

    // Children that wait an hour: each shard takes what it has room for, no more.
    let arn = parent_arn("held");
    let home = shard_of(&arn, SHARDS) as usize;
    let mut list = items(12);
    for it in list.as_array_mut().unwrap() {
        it["wait"] = json!(true);
    }
    let before = refused(&nodes);
    nodes[home]
        .handle
        .start(start_req("held", &map(json!({})), json!({"items": list})))
        .await
        .unwrap();
    let kids_of = |nodes: &[ShardNode], arn: &str| -> Vec<ExecRecord> {
        children(nodes)
            .into_iter()
            .filter(|c| c.parent.as_ref().unwrap().arn == arn)
            .collect()
    };
    // Four shards of room two, one of them holding the parent: at most seven children.
    eventually("the held starts to be refused again", || {
        (refused(&nodes) > before + 8).then_some(())
    })
    .await;
    let started = kids_of(&nodes, &arn).len();
    assert!((1..=7).contains(&started), "{started} children started");
    for shard in 0..SHARDS as usize {
        assert!(
            live(&nodes, shard) <= MAX_LIVE,
            "shard {shard} over its bound"
        );
    }
    // Stopping the parent stops the children that run, which makes room for the held ones,
    // which start and are stopped in turn: none is left running.
    stop_execution(&nodes, &arn).await;
    eventually("every child started and aborted", || {
        let kids = kids_of(&nodes, &arn);
        (kids.len() == 12 && kids.iter().all(|c| c.status == Status::Aborted)).then_some(())
    })
    .await;
    assert_eq!(ended(&nodes, &arn).await.status, Status::Aborted);
    outboxes_empty(&nodes).await;
    stop_all(&mail, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_wait_in_their_records_through_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    mail.refuse.store(true, Ordering::SeqCst);
    let (db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    let arn = parent_arn("restart");
    let def = map(json!({"MaxConcurrency": 5}));
    nodes[shard_of(&arn, SHARDS) as usize]
        .handle
        .start(start_req("restart", &def, json!({"items": items(12)})))
        .await
        .unwrap();
    // The first five starts are written, durable with the step that caused them.
    eventually("the child starts in the parent's record", || {
        record(&nodes, &arn).filter(|r| r.outbox.len() == 5)
    })
    .await;
    assert!(children(&nodes).is_empty());
    stop_all(&mail, nodes).await;
    drop(db);
    // Back up, with deliveries working: the new executors send what the records hold.
    mail.refuse.store(false, Ordering::SeqCst);
    let (_db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    let parent = ended(&nodes, &arn).await;
    assert_eq!(parent.status, Status::Succeeded, "{parent:?}");
    assert_eq!(
        serde_json::from_str::<Value>(parent.output.as_deref().unwrap())
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        12
    );
    assert_eq!(children(&nodes).len(), 12);
    outboxes_empty(&nodes).await;
    stop_all(&mail, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_delivered_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    mail.twice.store(true, Ordering::SeqCst);
    let (_db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    let arn = parent_arn("twice");
    let def = map(json!({"MaxConcurrency": 3}));
    nodes[shard_of(&arn, SHARDS) as usize]
        .handle
        .start(start_req("twice", &def, json!({"items": items(10)})))
        .await
        .unwrap();
    let parent = ended(&nodes, &arn).await;
    assert_eq!(parent.status, Status::Succeeded, "{parent:?}");
    let want: Vec<Value> = (0..10).map(|i| json!({"double": 2 * i})).collect();
    assert_eq!(
        serde_json::from_str::<Value>(parent.output.as_deref().unwrap()).unwrap(),
        Value::Array(want)
    );
    // One child per item: a start delivered again finds its child.
    assert_eq!(children(&nodes).len(), 10);
    outboxes_empty(&nodes).await;
    stop_all(&mail, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_map_run_and_a_stopped_parent_stop_their_children() {
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    let (_db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    // Past the tolerance: item 3 fails while the others wait; they are aborted.
    let arn = parent_arn("threshold");
    let mut list = items(6);
    for (i, it) in list.as_array_mut().unwrap().iter_mut().enumerate() {
        it["wait"] = json!(i != 3);
        it["fail"] = json!(i == 3);
    }
    nodes[shard_of(&arn, SHARDS) as usize]
        .handle
        .start(start_req(
            "threshold",
            &map(json!({})),
            json!({"items": list}),
        ))
        .await
        .unwrap();
    let parent = ended(&nodes, &arn).await;
    assert_eq!(parent.status, Status::Failed);
    assert_eq!(
        parent.error.as_deref(),
        Some("States.ExceedToleratedFailureThreshold")
    );
    let settled = eventually("the waiting children to be aborted", || {
        let kids = children(&nodes);
        (kids.len() == 6 && kids.iter().all(|c| c.status.is_terminal())).then_some(kids)
    })
    .await;
    let aborted = settled
        .iter()
        .filter(|c| c.status == Status::Aborted)
        .count();
    assert_eq!(aborted, 5, "{settled:?}");
    // StopExecution of a parent aborts its children too.
    let arn = parent_arn("stopped");
    let mut list = items(3);
    for it in list.as_array_mut().unwrap() {
        it["wait"] = json!(true);
    }
    let home = &nodes[shard_of(&arn, SHARDS) as usize].handle;
    home.start(start_req(
        "stopped",
        &map(json!({})),
        json!({"items": list}),
    ))
    .await
    .unwrap();
    eventually("three running children", || {
        let kids: Vec<ExecRecord> = children(&nodes)
            .into_iter()
            .filter(|c| c.parent.as_ref().unwrap().arn == arn)
            .collect();
        (kids.len() == 3 && kids.iter().all(|c| c.status == Status::Running)).then_some(())
    })
    .await;
    // A parent that waits for its children is not stuck.
    let report = home.scan().await.unwrap();
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.execution_arn == arn && f.kind == "STUCK_EXECUTION"),
        "{report:?}"
    );
    stop_execution(&nodes, &arn).await;
    eventually("the stopped parent's children to be aborted", || {
        let kids: Vec<ExecRecord> = children(&nodes)
            .into_iter()
            .filter(|c| c.parent.as_ref().unwrap().arn == arn)
            .collect();
        kids.iter()
            .all(|c| c.status == Status::Aborted)
            .then_some(())
    })
    .await;
    outboxes_empty(&nodes).await;
    stop_all(&mail, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_maps_and_a_timed_out_parent() {
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    let (_db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    // A Map whose children run a Map: grandchildren on their own shards too.
    let inner = map(json!({"ItemsPath": "$.inner"}));
    let outer = json!({"StartAt": "Out", "States": {"Out": {"Type": "Map", "ItemsPath": "$.outer",
        "End": true, "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "M", "States": {"M": inner["States"]["M"].clone()}}}}});
    let arn = parent_arn("nested");
    let input = json!({"outer": [{"inner": items(3)}, {"inner": items(2)}]});
    nodes[shard_of(&arn, SHARDS) as usize]
        .handle
        .start(start_req("nested", &outer, input))
        .await
        .unwrap();
    let parent = ended(&nodes, &arn).await;
    assert_eq!(parent.status, Status::Succeeded, "{parent:?}");
    assert_eq!(
        serde_json::from_str::<Value>(parent.output.as_deref().unwrap()).unwrap(),
        json!([[{"double": 0}, {"double": 2}, {"double": 4}], [{"double": 0}, {"double": 2}]])
    );
    assert_eq!(children(&nodes).len(), 2 + 5);
    // A parent that times out stops its children.
    let mut list = items(4);
    for it in list.as_array_mut().unwrap() {
        it["wait"] = json!(true);
    }
    let mut def = map(json!({}));
    def["TimeoutSeconds"] = json!(1);
    let arn = parent_arn("timeout");
    nodes[shard_of(&arn, SHARDS) as usize]
        .handle
        .start(start_req("timeout", &def, json!({"items": list})))
        .await
        .unwrap();
    assert_eq!(ended(&nodes, &arn).await.status, Status::TimedOut);
    eventually("the timed-out parent's children to be aborted", || {
        let kids: Vec<ExecRecord> = children(&nodes)
            .into_iter()
            .filter(|c| c.parent.as_ref().unwrap().arn == arn)
            .collect();
        (kids.len() == 4 && kids.iter().all(|c| c.status == Status::Aborted)).then_some(())
    })
    .await;
    outboxes_empty(&nodes).await;
    stop_all(&mail, nodes).await;
}

/// A Parallel whose branches each run an inline Map: with a policy that spreads them, each
/// branch and each iteration is a child execution on the shard its ARN hashes to, and the
/// parent's output and history are those of the same run inline (its events in another
/// interleaving). A branch that fails stops the others and fails the state after their
/// aborted states are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_branches_and_iterations_give_the_inline_output_and_history() {
    use trellis_asl::{Placement, Sharding};
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    let (_db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    let iteration = |d: &str| {
        json!({"StartAt": d, "States": {d: {"Type": "Pass",
        "Parameters": {"double.$": "States.MathAdd($.n, $.n)", "k.$": "$k"}, "End": true}}})
    };
    let def = json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Assign": {"k": "outer"}, "Next": "P"},
        "P": {"Type": "Parallel", "End": true, "Branches": [
            {"StartAt": "M1", "States": {"M1": {"Type": "Map", "ItemsPath": "$.items",
                "ItemProcessor": iteration("D1"), "End": true}}},
            {"StartAt": "M2", "States": {"M2": {"Type": "Map", "ItemsPath": "$.items",
                "MaxConcurrency": 2, "ItemProcessor": iteration("D2"), "End": true}}}]}}});
    let input = json!({"items": items(6)});
    let run = |name: &str, sharding: Sharding| {
        let mut req = start_req(name, &def, input.clone());
        req.sharding = sharding;
        let arn = parent_arn(name);
        let h = nodes[shard_of(&arn, SHARDS) as usize].handle.clone();
        async move {
            h.start(req).await.unwrap();
            arn
        }
    };
    let spread = Sharding {
        default: Placement::Spread,
        ..Default::default()
    };
    let inline = ended(&nodes, &run("inline", Sharding::default()).await).await;
    let arn = run("spread", spread.clone()).await;
    let spread_run = ended(&nodes, &arn).await;
    assert_eq!(spread_run.status, Status::Succeeded, "{spread_run:?}");
    assert_eq!(spread_run.output, inline.output);
    let out: Value = serde_json::from_str(spread_run.output.as_deref().unwrap()).unwrap();
    assert_eq!(out[1][5], json!({"double": 10, "k": "outer"}));
    // The same events, each with the same details, whatever the interleaving.
    let events = |r: &ExecRecord| {
        let mut v: Vec<String> = nodes[shard_of(&r.arn, SHARDS) as usize]
            .handle
            .app
            .history(r.id, 1, r.last_event_id)
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e.event_type.as_str(),
                    serde_json::to_string(&e.details).unwrap()
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(events(&spread_run), events(&inline));
    // Two branches and twelve iterations ran as child executions, over several shards.
    let kids: Vec<ExecRecord> = children(&nodes);
    assert_eq!(kids.len(), 2 + 12);
    assert!(kids.iter().all(|k| k.parent.as_ref().unwrap().inline));
    let shards: std::collections::BTreeSet<u32> =
        kids.iter().map(|k| shard_of(&k.arn, SHARDS)).collect();
    assert!(shards.len() >= 3, "children on shards {shards:?}");

    // One branch fails while the other waits: the waiting one is stopped, its aborted state
    // is written, then the Parallel fails with the failed branch's error.
    let def = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
        {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Boom", "Cause": "bad"}}},
        {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": true}}}]}}});
    let mut req = start_req("fails", &def, json!({}));
    req.sharding = spread;
    let arn = parent_arn("fails");
    nodes[shard_of(&arn, SHARDS) as usize]
        .handle
        .start(req)
        .await
        .unwrap();
    let failed = ended(&nodes, &arn).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.error.as_deref(), Some("Boom"));
    let types = event_types(&nodes, &failed);
    let aborted = types.iter().position(|t| t == "WaitStateAborted");
    let state_failed = types.iter().position(|t| t == "ParallelStateFailed");
    assert!(
        aborted.is_some() && aborted < state_failed,
        "aborted branch before the state's failure: {types:?}"
    );
    outboxes_empty(&nodes).await;
    stop_all(&mail, nodes).await;
}

/// Fails the first call for `n` = 3, answers `{"n": n}` otherwise; counts the calls per `n`.
#[derive(Default)]
struct FailsThreeOnce {
    calls: std::sync::Mutex<std::collections::BTreeMap<i64, u32>>,
}

impl Connectors for FailsThreeOnce {
    fn invoke(&self, t: TaskRequest, _: Fence) -> BoxFuture<'static, Input> {
        let n = t.parameters["n"].as_i64().unwrap_or(-1);
        let first = {
            let mut calls = self.calls.lock().unwrap();
            let c = calls.entry(n).or_default();
            *c += 1;
            *c == 1
        };
        Box::pin(async move {
            if n == 3 && first {
                Input::TaskFailed {
                    task_id: t.task_id,
                    error: Some("Flaky".into()),
                    cause: None,
                }
            } else {
                Input::TaskSucceeded {
                    task_id: t.task_id,
                    output: json!({"n": n}),
                }
            }
        })
    }
}

/// Redriving a parent whose Map Run failed redrives that Map Run (same ARN, `MapRunRedriven`):
/// its failed and aborted children are redriven under their ARNs, those that succeeded are
/// not run again, and those never started start. Every message is delivered twice: a
/// repeated redrive request runs no child again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_parent_redrives_its_map_run_and_only_its_unsuccessful_children() {
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    mail.twice.store(true, Ordering::SeqCst);
    let tasks = Arc::new(FailsThreeOnce::default());
    let (_db, nodes) = boot_shards(dir.path(), SHARDS, tasks.clone(), &mail).await;
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "ItemsPath": "$.items",
        "MaxConcurrency": 2, "Label": "Run", "End": true,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "T", "States": {"T": {"Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke", "Parameters": {"n.$": "$.n"}, "End": true}}}}}});
    let arn = parent_arn("redrive");
    let handle = nodes[shard_of(&arn, SHARDS) as usize].handle.clone();
    handle
        .start(start_req("redrive", &def, json!({"items": items(10)})))
        .await
        .unwrap();
    let failed = ended(&nodes, &arn).await;
    assert_eq!(failed.status, Status::Failed, "{failed:?}");
    assert_eq!(
        failed.error.as_deref(),
        Some("States.ExceedToleratedFailureThreshold")
    );
    let first_run = failed.map_runs[0].clone();
    outboxes_empty(&nodes).await;
    let before: std::collections::BTreeMap<String, ExecRecord> = children(&nodes)
        .into_iter()
        .map(|c| (c.arn.clone(), c))
        .collect();
    let ran_before: Vec<i64> = tasks.calls.lock().unwrap().keys().copied().collect();
    assert!(
        ran_before.len() < 10,
        "all ran before the failure: {ran_before:?}"
    );

    handle.redrive(&arn).await.unwrap();
    let done = eventually("the redriven parent to end", || {
        record(&nodes, &arn).filter(|r| r.status.is_terminal() && r.redrive_count == 1)
    })
    .await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    let want: Vec<Value> = (0..10).map(|n| json!({"n": n})).collect();
    assert_eq!(
        serde_json::from_str::<Value>(done.output.as_deref().unwrap()).unwrap(),
        Value::Array(want)
    );
    // The same Map Run, redriven once, all its children now succeeded.
    let run = &done.map_runs[0];
    assert_eq!(done.map_runs.len(), 1);
    assert_eq!(run.map_run_arn, first_run.map_run_arn);
    assert_eq!(run.redrive_count, 1);
    assert_eq!(run.executions.succeeded, 10, "{run:?}");
    let types = event_types(&nodes, &done);
    assert!(types.contains(&"MapRunRedriven".to_string()), "{types:?}");
    assert_eq!(types.iter().filter(|t| *t == "MapRunStarted").count(), 1);
    // One child per item: the unsuccessful ones were redriven under their ARNs.
    let after = children(&nodes);
    assert_eq!(after.len(), 10);
    for c in &after {
        assert_eq!(c.status, Status::Succeeded, "{c:?}");
        match before.get(&c.arn) {
            Some(b) if b.status == Status::Succeeded => assert_eq!(c.redrive_count, 0),
            Some(_) => assert_eq!(c.redrive_count, 1, "{c:?}"),
            None => assert_eq!(c.redrive_count, 0),
        }
    }
    // Each item's task ran once, but item 3's, which failed once.
    for (n, calls) in tasks.calls.lock().unwrap().iter() {
        let aborted_before = before
            .values()
            .any(|b| b.status == Status::Aborted && b.input.contains(&format!("\"n\":{n},")));
        if *n == 3 {
            assert_eq!(*calls, 2);
        } else if !aborted_before {
            assert_eq!(*calls, 1, "item {n}");
        }
    }
    outboxes_empty(&nodes).await;
    // A handle keeps its executor's channel open: drop it before stopping.
    drop(handle);
    stop_all(&mail, nodes).await;
}

/// EXPRESS children run in memory on their shards' leaders: no history, two writes each
/// (start, end). A restart while they wait loses their runs, and the new leaders run them
/// again from their inputs (at least once): the parent still gets every result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_children_run_in_memory_and_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mail = Loopback::default();
    let (db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    let express = |wait: u64| {
        json!({"StartAt": "M", "States": {"M": {"Type": "Map", "ItemsPath": "$.items",
            "Label": "Fast", "End": true,
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                "StartAt": "W", "States": {
                    "W": {"Type": "Wait", "Seconds": wait, "Next": "D"},
                    "D": {"Type": "Pass", "Parameters": {"double.$": "States.MathAdd($.n, $.n)"}, "End": true}}}}}})
    };
    let parent = run_to_end(&nodes, "express", &express(0), json!({"items": items(8)})).await;
    assert_doubled(&parent, 8);
    let want: Vec<Value> = (0..8).map(|i| json!({"double": 2 * i})).collect();
    let kids = children(&nodes);
    assert_eq!(kids.len(), 8);
    for k in &kids {
        assert!(k.express && k.status == Status::Succeeded, "{k:?}");
        // No history, no interpreter state.
        assert_eq!(k.last_event_id, 0);
        assert!(k.state.is_none());
    }

    // Children that wait two seconds are running in memory when every node stops.
    let arn = parent_arn("express-restart");
    nodes[shard_of(&arn, SHARDS) as usize]
        .handle
        .start(start_req(
            "express-restart",
            &express(2),
            json!({"items": items(6)}),
        ))
        .await
        .unwrap();
    eventually("the EXPRESS children to be running", || {
        let running = children(&nodes)
            .into_iter()
            .filter(|c| c.parent.as_ref().unwrap().arn == arn && c.status == Status::Running)
            .count();
        (running == 6).then_some(())
    })
    .await;
    stop_all(&mail, nodes).await;
    drop(db);
    let (_db, nodes) = boot_shards(dir.path(), SHARDS, Arc::new(NoTasks), &mail).await;
    let parent = ended(&nodes, &arn).await;
    assert_eq!(parent.status, Status::Succeeded, "{parent:?}");
    assert_eq!(
        serde_json::from_str::<Value>(parent.output.as_deref().unwrap()).unwrap(),
        Value::Array(want[..6].to_vec())
    );
    outboxes_empty(&nodes).await;
    stop_all(&mail, nodes).await;
}
