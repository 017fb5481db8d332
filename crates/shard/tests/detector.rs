//! The detector finds each injected fault, and repairs what can be repaired.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{open_db, ShardNode};
use serde_json::{json, Value};
use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;
use trellis_shard::executor::{
    BoxFuture, Connectors, DetectorConfig, Fence, ScanReport, StartRequest,
};
use trellis_shard::{ShardApp, ShardHandle, ShardOp, Status};

/// Echoes parameters; when `lose_first` is set, the first call's result never comes back
/// (a lost reply), and later calls answer.
#[derive(Clone, Default)]
struct Flaky {
    lose_first: Arc<AtomicBool>,
}

impl Connectors for Flaky {
    fn invoke(&self, t: TaskRequest, _fence: Fence) -> BoxFuture<'static, Input> {
        let lose = self.lose_first.swap(false, Ordering::SeqCst);
        Box::pin(async move {
            if lose {
                std::future::pending::<()>().await;
            }
            if t.resource_arn.ends_with(".waitForTaskToken") {
                return Input::TaskSubmitted {
                    task_id: t.task_id,
                    output: json!({}),
                };
            }
            Input::TaskSucceeded {
                task_id: t.task_id,
                output: json!({"echo": t.parameters}),
            }
        })
    }
}

async fn boot(dir: &std::path::Path, connectors: Flaky) -> ShardNode {
    // Scans happen when the test asks for them.
    let detector = DetectorConfig {
        interval: Duration::from_secs(3600),
        overdue_after: Duration::from_millis(200),
        undelivered_after: Duration::from_millis(300),
    };
    common::boot(dir, connectors, detector).await
}

fn start_req(name: &str, def: Value) -> StartRequest {
    common::start_req(name, &def, json!({}))
}

/// Scans until a finding of `kind` shows up (bounded).
async fn scan_for(h: &ShardHandle, kind: &str) -> ScanReport {
    for _ in 0..500 {
        let r = h.scan().await.unwrap();
        if r.findings.iter().any(|f| f.kind == kind) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the detector never reported {kind}");
}

async fn status(app: &ShardApp, arn: &str, want: Status) {
    for _ in 0..1500 {
        if app.record(arn).unwrap().is_some_and(|r| r.status == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{arn} never reached {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_task_results_are_dispatched_again() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Flaky::default();
    flaky.lose_first.store(true, Ordering::SeqCst);
    let node = boot(dir.path(), flaky).await;
    let s = node
        .handle
        .start(start_req(
            "lost",
            json!({"StartAt": "T", "States": {"T": {"Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke", "Parameters": {"FunctionName": "f"}, "End": true}}}),
        ))
        .await
        .unwrap();
    // Nothing is wrong yet: the task was just dispatched.
    let first = node.handle.scan().await.unwrap();
    assert!(first.findings.is_empty(), "{first:?}");
    let r = scan_for(&node.handle, "UNDELIVERED_TASK").await;
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == "UNDELIVERED_TASK")
        .unwrap();
    assert!(f.repaired && f.execution_arn == s.execution_arn, "{f:?}");
    status(&node.handle.app, &s.execution_arn, Status::Succeeded).await;
    assert!(node.handle.scan().await.unwrap().findings.is_empty());
    node.stop().await;
}

// On tokio's paused clock, which the executor's clock follows: waiting past the Wait's end
// takes no real time.
#[tokio::test(start_paused = true)]
async fn lost_timers_fire_when_overdue() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot(dir.path(), Flaky::default()).await;
    let s = node
        .handle
        .start(start_req(
            "late",
            json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 2, "End": true}}}),
        ))
        .await
        .unwrap();
    node.handle
        .inject_drop_timers(&s.execution_arn)
        .await
        .unwrap();
    // Before it is due, the missing timer is re-armed; drop it again to make it overdue.
    let early = scan_for(&node.handle, "OVERDUE_TIMER").await;
    assert!(early.findings[0].detail.contains("re-armed"), "{early:?}");
    node.handle
        .inject_drop_timers(&s.execution_arn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        node.handle
            .app
            .record(&s.execution_arn)
            .unwrap()
            .unwrap()
            .status,
        Status::Running,
        "without its timer the Wait never ends"
    );
    let r = scan_for(&node.handle, "OVERDUE_TIMER").await;
    assert!(r
        .findings
        .iter()
        .any(|f| f.detail.contains("fired") && f.repaired));
    status(&node.handle.app, &s.execution_arn, Status::Succeeded).await;
    node.stop().await;
}

/// Rewrites an execution's stored record while no executor runs (a corrupted store).
async fn corrupt(dir: &std::path::Path, arn: &str, edit: impl FnOnce(&mut Value)) {
    let db = open_db(dir).await;
    let app = ShardApp::open(&db.group(1).unwrap()).unwrap();
    let mut rec = app.record(arn).unwrap().unwrap();
    let mut state: Value = serde_json::from_str(rec.state.as_ref().unwrap().get()).unwrap();
    edit(&mut state);
    rec.timers.clear();
    rec.state = Some(serde_json::value::RawValue::from_string(state.to_string()).unwrap());
    app.apply_op(&ShardOp::Put {
        record: Box::new(rec),
        events: Vec::new(),
        definition: None,
    })
    .unwrap();
    db.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_executions_and_expired_tokens_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let activity = "arn:aws:states:us-east-1:000000000000:activity:a";
    let (stuck, expired) = {
        let node = boot(dir.path(), Flaky::default()).await;
        let a = node
            .handle
            .start(start_req(
                "stuck",
                json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": true}}}),
            ))
            .await
            .unwrap();
        let b = node
            .handle
            .start(start_req(
                "expired",
                // Long enough that a loaded machine stops the node before it is due (the
                // timeout would then end the execution), short enough to expire while the
                // scans below wait for it.
                json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": activity,
                    "TimeoutSeconds": 3, "End": true}}}),
            ))
            .await
            .unwrap();
        node.stop().await;
        (a.execution_arn, b.execution_arn)
    };
    // The stuck one loses everything it waits for; the other loses its timeout timer.
    corrupt(dir.path(), &stuck, |s| {
        s["frames"] = json!([]);
        s["timers"] = json!({});
    })
    .await;
    corrupt(dir.path(), &expired, |s| s["timers"] = json!({})).await;

    let node = boot(dir.path(), Flaky::default()).await;
    let r = scan_for(&node.handle, "STUCK_EXECUTION").await;
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == "STUCK_EXECUTION")
        .unwrap();
    assert_eq!(f.execution_arn, stuck);
    assert!(!f.repaired);
    let r = scan_for(&node.handle, "EXPIRED_TOKEN").await;
    assert!(r
        .findings
        .iter()
        .any(|f| f.execution_arn == expired && f.repaired));
    status(&node.handle.app, &expired, Status::Failed).await;
    let rec = node.handle.app.record(&expired).unwrap().unwrap();
    assert_eq!(rec.error.as_deref(), Some("States.Timeout"));
    node.stop().await;
}

// On the paused clock: waiting past `undelivered_after` takes no real time.
#[tokio::test(start_paused = true)]
async fn submitted_callbacks_are_not_undelivered() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot(dir.path(), Flaky::default()).await;
    let s = node
        .handle
        .start(start_req(
            "waiting",
            json!({"StartAt": "T", "States": {"T": {"Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": "f", "Payload": {"t.$": "$$.Task.Token"}}, "End": true}}}),
        ))
        .await
        .unwrap();
    // Past `undelivered_after`, the task waits for its token, which is not a fault.
    for _ in 0..500 {
        let rec = node.handle.app.record(&s.execution_arn).unwrap().unwrap();
        if rec.tasks.values().all(|t| t.started) && !rec.tasks.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = node.handle.scan().await.unwrap();
    assert!(r.findings.is_empty(), "{r:?}");
    node.stop().await;
}
