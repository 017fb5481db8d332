//! Retention on a real single-node Raft group over sled: closed executions are deleted
//! (record, history, index entry) once their time has come, at the configured rate, never
//! the running ones nor those whose state machine keeps them longer; ids are not given again,
//! and the index survives a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, start_req, ShardNode};
use serde_json::{json, Value};
use trellis_asl::exec::TaskRequest;
use trellis_asl::{Input, Limits};
use trellis_shard::executor::{BoxFuture, Connectors, Fence, RetentionConfig};
use trellis_shard::outbox::NoMail;
use trellis_shard::Status;

struct Echo;

impl Connectors for Echo {
    fn invoke(&self, t: TaskRequest, _: Fence) -> BoxFuture<'static, Input> {
        Box::pin(async move {
            Input::TaskSucceeded {
                task_id: t.task_id,
                output: t.parameters,
            }
        })
    }
}

/// Only the sweeps the test asks for run (a long interval); `per_second` over it is the
/// budget of one sweep.
fn retention(keep_ms: u64, budget: u32) -> RetentionConfig {
    RetentionConfig {
        keep: Some(Duration::from_millis(keep_ms)),
        per_second: budget,
        interval: Duration::from_secs(1),
    }
}

async fn boot(dir: &std::path::Path, r: RetentionConfig) -> ShardNode {
    let db = common::open_db(dir).await;
    common::start_shard_with(
        &db,
        0,
        Arc::new(Echo),
        Arc::new(NoMail),
        Limits::default(),
        Default::default(),
        common::MAX_LIVE,
        r,
    )
    .await
}

fn quick() -> Value {
    json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "B"},
        "B": {"Type": "Pass", "Result": {"done": true}, "End": true}
    }})
}

fn waits() -> Value {
    json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": true}}})
}

async fn run(node: &ShardNode, name: &str, def: &Value, keep: Option<Duration>) -> (String, u64) {
    let mut req = start_req(name, def, json!({"n": name}));
    req.retention = keep;
    let arn = node.handle.start(req).await.unwrap().execution_arn;
    let app = node.handle.app.clone();
    let id = eventually("the execution to end", || {
        app.record(&arn)
            .unwrap()
            .filter(|r| r.status == Status::Succeeded)
            .map(|r| r.id)
    })
    .await;
    (arn, id)
}

/// Waits until the closed execution `arn` stopped more than `keep_ms` ago (bounded).
async fn past_retention(app: &trellis_shard::ShardApp, arn: &str, keep_ms: i64) {
    let stop = app.record(arn).unwrap().unwrap().stop_ms.unwrap();
    for _ in 0..500 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        if now > stop + keep_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{arn} never came due");
}

/// Sweeps until nothing is due (bounded); returns how many sweeps it took.
async fn sweep_all(node: &ShardNode) -> usize {
    for n in 1..=200 {
        if node.handle.sweep_retention().await.unwrap() == 0 {
            return n;
        }
    }
    panic!("retention never caught up");
}

#[tokio::test]
async fn closed_executions_go_after_the_retention_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot(dir.path(), retention(300, 2)).await;
    let app = node.handle.app.clone();
    let mut closed = Vec::new();
    for i in 0..5 {
        closed.push(run(&node, &format!("q{i}"), &quick(), None).await);
    }
    let (kept, _) = run(&node, "kept", &quick(), Some(Duration::from_secs(3600))).await;
    let waiting = node
        .handle
        .start(start_req("w", &waits(), json!({})))
        .await
        .unwrap()
        .execution_arn;
    // Nothing is due before its time.
    assert_eq!(node.handle.sweep_retention().await.unwrap(), 0);
    assert!(app.record(&closed[0].0).unwrap().is_some());

    // Once due, each sweep deletes at most its budget (2): three sweeps for five.
    past_retention(&app, &closed[4].0, 300).await;
    let before = node.metrics.expired.get();
    assert_eq!(
        node.handle.sweep_retention().await.unwrap(),
        4,
        "twice the budget is looked at"
    );
    let gone = closed
        .iter()
        .filter(|(arn, _)| app.record(arn).unwrap().is_none())
        .count();
    assert_eq!(gone, 2, "one sweep deletes its budget");
    assert_eq!(sweep_all(&node).await, 3);
    assert_eq!(node.metrics.expired.get() - before, 5);
    for (arn, id) in &closed {
        assert!(app.record(arn).unwrap().is_none(), "{arn} is kept");
        assert!(app.history(*id, 1, u64::MAX).unwrap().is_empty());
        assert!(app.arn_of(*id).unwrap().is_none());
    }
    // The one its machine keeps for an hour, and the running one, stay.
    assert!(app.record(&kept).unwrap().is_some());
    assert_eq!(
        app.record(&waiting).unwrap().unwrap().status,
        Status::Running
    );
    // Ids are not given again, even when the highest was deleted; a deleted name may be
    // used again, as AWS allows once an execution is gone.
    let highest = closed.iter().map(|c| c.1).max().unwrap();
    let (_, again) = run(&node, "q4", &quick(), None).await;
    assert!(again > highest + 2, "id {again} after {highest}");

    // The index survives a restart: what is due is still found.
    let (late, _) = run(&node, "late", &quick(), None).await;
    drop(app);
    node.stop().await;
    let node = boot(dir.path(), retention(300, 100)).await;
    let app = node.handle.app.clone();
    past_retention(&app, &late, 300).await;
    sweep_all(&node).await;
    assert!(app.record(&late).unwrap().is_none());
    assert!(app.record(&kept).unwrap().is_some());
    assert!(app.record(&waiting).unwrap().is_some());
    node.stop().await;
}

#[tokio::test]
async fn without_a_retention_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = retention(0, 100);
    r.keep = None;
    let node = boot(dir.path(), r).await;
    let (arn, _) = run(&node, "a", &quick(), None).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(node.handle.sweep_retention().await.unwrap(), 0);
    assert!(node.handle.app.record(&arn).unwrap().is_some());
    node.stop().await;
}
