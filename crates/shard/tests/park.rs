//! Executions waiting on timers only leave the leader's memory once committed, and come back
//! whole for whatever reaches them: their timer, a stop, a pause, a start sent again, the
//! detector, a restart.

mod common;

use std::time::Duration;

use common::{eventually, ShardNode};
use serde_json::json;
use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;
use trellis_shard::executor::{
    BoxFuture, Connectors, Control, DetectorConfig, Fence, StartRequest,
};
use trellis_shard::Status;

/// These machines call nothing.
struct NoConnectors;

impl Connectors for NoConnectors {
    fn invoke(&self, t: TaskRequest, _fence: Fence) -> BoxFuture<'static, Input> {
        panic!("no task was expected: {}", t.resource_arn)
    }
}

fn detector() -> DetectorConfig {
    DetectorConfig {
        interval: Duration::from_secs(3600),
        overdue_after: Duration::from_secs(5),
        undelivered_after: Duration::from_secs(60),
    }
}

fn waits(name: &str, seconds: u64) -> StartRequest {
    let def = json!({"StartAt": "Before", "States": {
        "Before": {"Type": "Pass", "Result": {"step": 1}, "Next": "W"},
        "W": {"Type": "Wait", "Seconds": seconds, "Next": "After"},
        "After": {"Type": "Pass", "Result": {"step": 2}, "End": true}}});
    common::start_req(name, &def, json!({"n": name}))
}

fn status(node: &ShardNode, arn: &str) -> Status {
    node.handle.app.record(arn).unwrap().unwrap().status
}

fn types(node: &ShardNode, arn: &str) -> Vec<String> {
    let rec = node.handle.app.record(arn).unwrap().unwrap();
    let events = node.handle.app.history(rec.id, 1, u64::MAX).unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=rec.last_event_id).collect::<Vec<_>>(), "{arn}");
    events
        .iter()
        .map(|e| e.event_type.as_str().to_string())
        .collect()
}

// On tokio's paused clock, which the executor's clock follows.
#[tokio::test(start_paused = true)]
async fn waiting_executions_leave_memory_and_come_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::boot(dir.path(), NoConnectors, detector()).await;
    let mut arns = Vec::new();
    for i in 0..20 {
        arns.push(
            node.handle
                .start(waits(&format!("w{i}"), 60))
                .await
                .unwrap()
                .execution_arn,
        );
    }
    eventually("all parked", || {
        (node.metrics.parked.get() == 20).then_some(())
    })
    .await;
    assert_eq!(node.metrics.running.get(), 20);

    // A start sent again finds the parked execution; another input is refused.
    let again = node.handle.start(waits("w0", 60)).await.unwrap();
    assert!(again.existed && again.execution_arn == arns[0]);
    let mut other = waits("w0", 60);
    other.input = "{\"n\":\"other\"}".into();
    assert!(node.handle.start(other).await.is_err());
    assert_eq!(node.metrics.parked.get(), 20);

    // A stop wakes it and ends it.
    let stop = Control::Stop {
        error: Some("Halt".into()),
        cause: None,
    };
    node.handle.control(&arns[1], stop).await.unwrap();
    assert_eq!(status(&node, &arns[1]), Status::Aborted);
    assert_eq!(
        types(&node, &arns[1]).last().map(String::as_str),
        Some("ExecutionAborted")
    );
    // A pause wakes it; a paused execution waiting on its timer parks again, and resumes.
    node.handle.control(&arns[2], Control::Pause).await.unwrap();
    node.handle
        .control(&arns[2], Control::Resume)
        .await
        .unwrap();
    eventually("parked again", || {
        (node.metrics.parked.get() == 19).then_some(())
    })
    .await;

    // The detector checks parked executions without loading them.
    let scan = node.handle.scan().await.unwrap();
    assert!(scan.findings.is_empty(), "{scan:?}");
    assert_eq!(scan.scanned, 19);
    assert_eq!(node.metrics.parked.get(), 19);

    // Their timers fire: each is loaded, runs to its end, with its whole history.
    tokio::time::sleep(Duration::from_secs(61)).await;
    for arn in arns.iter().filter(|a| **a != arns[1]) {
        eventually("succeeded", || {
            (status(&node, arn) == Status::Succeeded).then_some(())
        })
        .await;
        assert_eq!(
            types(&node, arn),
            [
                "ExecutionStarted",
                "PassStateEntered",
                "PassStateExited",
                "WaitStateEntered",
                "WaitStateExited",
                "PassStateEntered",
                "PassStateExited",
                "ExecutionSucceeded"
            ]
        );
        let rec = node.handle.app.record(arn).unwrap().unwrap();
        assert_eq!(rec.output.as_deref(), Some("{\"step\":2}"));
    }
    assert_eq!(node.metrics.parked.get(), 0);
    assert_eq!(node.metrics.running.get(), 0);
    node.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_parks_waiting_executions_as_it_loads_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::boot(dir.path(), NoConnectors, detector()).await;
    let a = node
        .handle
        .start(waits("a", 30))
        .await
        .unwrap()
        .execution_arn;
    let b = node
        .handle
        .start(waits("b", 3600))
        .await
        .unwrap()
        .execution_arn;
    eventually("parked", || (node.metrics.parked.get() == 2).then_some(())).await;
    node.stop().await;

    let node = common::boot(dir.path(), NoConnectors, detector()).await;
    assert_eq!(node.metrics.parked.get(), 2);
    assert_eq!(node.metrics.running.get(), 2);
    tokio::time::sleep(Duration::from_secs(31)).await;
    eventually("a succeeded", || {
        (status(&node, &a) == Status::Succeeded).then_some(())
    })
    .await;
    assert_eq!(status(&node, &b), Status::Running);
    assert_eq!(node.metrics.parked.get(), 1);
    // A timer the index lost is found by the detector, which loads the execution to re-arm it.
    node.handle.inject_drop_timers(&b).await.unwrap();
    let scan = node.handle.scan().await.unwrap();
    assert!(
        scan.findings
            .iter()
            .any(|f| f.kind == "OVERDUE_TIMER" && f.repaired),
        "{scan:?}"
    );
    node.stop().await;
}
