//! The executor on a real single-node Raft group over sled: runs, control, activities,
//! callbacks, and a restart on the same data.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, start_req, ShardNode};

use serde_json::{json, Value};
use trellis_asl::definition::{Pattern, Resource};
use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;
use trellis_shard::executor::{BoxFuture, Connectors, Control, Fence, TokenAnswer};
use trellis_shard::Status;

/// Lambda-style tasks echo their parameters; `.waitForTaskToken` tasks are submitted and
/// their tokens kept for the test to answer.
#[derive(Default, Clone)]
struct Fake {
    tokens: Arc<Mutex<Vec<String>>>,
    fences: Arc<Mutex<Vec<Fence>>>,
}

impl Connectors for Fake {
    fn invoke(&self, t: TaskRequest, fence: Fence) -> BoxFuture<'static, Input> {
        let me = self.clone();
        me.fences.lock().unwrap().push(fence);
        Box::pin(async move {
            if let Resource::Service {
                pattern: Pattern::WaitForTaskToken,
                ..
            } = t.resource
            {
                me.tokens.lock().unwrap().push(t.token.clone().unwrap());
                return Input::TaskSubmitted {
                    task_id: t.task_id,
                    output: json!({"StatusCode": 200}),
                };
            }
            Input::TaskSucceeded {
                task_id: t.task_id,
                output: json!({"echo": t.parameters}),
            }
        })
    }
}

async fn boot(dir: &std::path::Path) -> (ShardNode, Fake) {
    let fake = Fake::default();
    let node = common::boot(dir, fake.clone(), Default::default()).await;
    (node, fake)
}

const ACTIVITY: &str = "arn:aws:states:us-east-1:000000000000:activity:work";

fn machine() -> Value {
    json!({"StartAt": "Prepare", "States": {
        "Prepare": {"Type": "Pass", "Parameters": {"id.$": "$.id"}, "Next": "Call"},
        "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": "f", "Payload.$": "$"}, "ResultPath": "$.call",
                 "Next": "Pause"},
        "Pause": {"Type": "Wait", "Seconds": 1, "Next": "Work"},
        "Work": {"Type": "Task", "Resource": ACTIVITY, "ResultPath": "$.work", "Next": "Confirm"},
        "Confirm": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                    "Parameters": {"FunctionName": "f", "Payload": {"token.$": "$$.Task.Token"}},
                    "ResultPath": "$.confirm", "End": true}
    }})
}

fn check_history(node: &ShardNode, arn: &str) -> Vec<String> {
    let rec = node.handle.app.record(arn).unwrap().unwrap();
    let events = node.handle.app.history(rec.id, 1, u64::MAX).unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    let want: Vec<u64> = (1..=rec.last_event_id).collect();
    assert_eq!(ids, want, "history of {arn} has a gap or a duplicate");
    events
        .iter()
        .map(|e| e.event_type.as_str().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_tasks_timers_activities_and_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let (node, fake) = boot(dir.path()).await;
    let h = &node.handle;
    let started = h
        .start(start_req("one", &machine(), json!({"id": 7})))
        .await
        .unwrap();
    // Idempotent by name with the same input; another input is refused.
    let again = h
        .start(start_req("one", &machine(), json!({"id": 7})))
        .await
        .unwrap();
    assert_eq!(
        (&again.execution_arn, again.start_ms, again.existed),
        (&started.execution_arn, started.start_ms, true)
    );
    let other = h
        .start(start_req("one", &machine(), json!({"id": 8})))
        .await;
    assert!(matches!(
        other,
        Err(trellis_shard::Error::ExecutionAlreadyExists { .. })
    ));

    // The activity task appears after the Wait; a worker takes and answers it. A worker's
    // poll asks only shards whose backlog says a task waits: it says so before the take,
    // and no longer once the task is taken.
    eventually("a queued activity task", || {
        h.activities.any().then_some(())
    })
    .await;
    let task = h.take_activity(ACTIVITY, "worker-1").await.unwrap();
    let task = task.expect("an activity task");
    eventually("the backlog emptied by the take", || {
        (!h.activities.any()).then_some(())
    })
    .await;
    assert_eq!(serde_json::from_str::<Value>(&task.input).unwrap()["id"], 7);
    h.answer(&task.token, TokenAnswer::Success(json!("worked")), 5)
        .await
        .unwrap();
    // The same call again (its reply lost) succeeds; another answer for the closed task is
    // refused, as is one that names no call.
    h.answer(&task.token, TokenAnswer::Success(json!("worked")), 5)
        .await
        .unwrap();
    for other in [6, 0] {
        let late = h
            .answer(&task.token, TokenAnswer::Success(json!(1)), other)
            .await;
        assert!(
            matches!(late, Err(trellis_shard::Error::TaskClosed)),
            "{late:?}"
        );
    }

    let token = eventually("the callback token", || {
        fake.tokens.lock().unwrap().first().cloned()
    })
    .await;
    h.answer(&token, TokenAnswer::Success(json!({"ok": true})), 0)
        .await
        .unwrap();

    let arn = started.execution_arn.clone();
    let rec = eventually("success", || {
        h.app
            .record(&arn)
            .unwrap()
            .filter(|r| r.status == Status::Succeeded)
    })
    .await;
    let output: Value = serde_json::from_str(rec.output.as_deref().unwrap()).unwrap();
    assert_eq!(
        output,
        json!({"id": 7, "call": {"echo": {"FunctionName": "f", "Payload": {"id": 7}}},
               "work": "worked", "confirm": {"ok": true}})
    );
    let types = check_history(&node, &arn);
    assert_eq!(types.first().map(String::as_str), Some("ExecutionStarted"));
    assert!(types.contains(&"ActivityStarted".to_string()));
    assert!(types.contains(&"TaskSubmitted".to_string()));
    assert_eq!(types.last().map(String::as_str), Some("ExecutionSucceeded"));
    assert!(rec.timers.is_empty() && rec.tasks.is_empty());
    // Ended and out of memory, it still knows the call that answered its activity task.
    h.answer(&task.token, TokenAnswer::Success(json!("worked")), 5)
        .await
        .unwrap();

    // Stop, pause and resume.
    let s = h
        .start(start_req("two", &machine(), json!({"id": 2})))
        .await
        .unwrap();
    h.control(&s.execution_arn, Control::Pause).await.unwrap();
    let paused = eventually("paused", || {
        h.app.record(&s.execution_arn).unwrap().filter(|r| r.paused)
    })
    .await;
    assert_eq!(paused.status, Status::Running);
    h.control(&s.execution_arn, Control::Resume).await.unwrap();
    h.control(
        &s.execution_arn,
        Control::Stop {
            error: Some("Halt".into()),
            cause: Some("test".into()),
        },
    )
    .await
    .unwrap();
    let rec = eventually("aborted", || {
        h.app
            .record(&s.execution_arn)
            .unwrap()
            .filter(|r| r.status == Status::Aborted)
    })
    .await;
    assert_eq!(rec.error.as_deref(), Some("Halt"));
    check_history(&node, &s.execution_arn);
    let missing = h
        .control(
            "arn:aws:states:us-east-1:000000000000:execution:M:nope",
            Control::Pause,
        )
        .await;
    assert!(matches!(
        missing,
        Err(trellis_shard::Error::ExecutionDoesNotExist { .. })
    ));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_continue_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let n = 40;
    let (arns, taken, first_term) = {
        let (node, fake) = boot(dir.path()).await;
        let mut arns = Vec::new();
        for i in 0..n {
            let s = node
                .handle
                .start(start_req(&format!("r{i}"), &machine(), json!({"id": i})))
                .await
                .unwrap();
            arns.push(s.execution_arn);
        }
        // Workers take half of the activity tasks before the restart and answer them after
        // it, with the tokens they hold.
        let mut taken = Vec::new();
        while taken.len() < n / 2 {
            match node.handle.take_activity(ACTIVITY, "w").await.unwrap() {
                Some(t) => taken.push(t.token),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let term = node.raft.metrics().borrow().current_term;
        assert!(fake.fences.lock().unwrap().iter().all(|f| *f
            == Fence {
                shard: 0,
                epoch: 1,
                term
            }));
        node.stop().await;
        (arns, taken, term)
    };
    let (node, fake) = boot(dir.path()).await;
    let h = &node.handle;
    let mut answered = 0;
    for t in &taken {
        h.answer(t, TokenAnswer::Success(json!("after-restart")), 0)
            .await
            .unwrap();
        answered += 1;
    }
    let mut tokens_answered = 0;
    for _ in 0..3000 {
        if let Some(t) = h.take_activity(ACTIVITY, "w").await.unwrap() {
            h.answer(&t.token, TokenAnswer::Success(json!("after-restart")), 0)
                .await
                .unwrap();
            answered += 1;
        }
        let tokens: Vec<String> = fake.tokens.lock().unwrap().drain(..).collect();
        for t in tokens {
            h.answer(&t, TokenAnswer::Success(json!(true)), 0)
                .await
                .unwrap();
            tokens_answered += 1;
        }
        let done = arns
            .iter()
            .filter(|a| {
                h.app
                    .record(a)
                    .unwrap()
                    .is_some_and(|r| r.status.is_terminal())
            })
            .count();
        if done == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(answered, n);
    assert_eq!(tokens_answered, n);
    // Tasks dispatched again after the restart carry the leader's current term (a lone
    // voter keeps its term across a restart).
    let term = node.raft.metrics().borrow().current_term;
    let fences = fake.fences.lock().unwrap().clone();
    assert!(
        term >= first_term && !fences.is_empty(),
        "{first_term} {term}"
    );
    assert!(fences.iter().all(|f| f.term == term), "{fences:?}");
    for a in &arns {
        let rec = h.app.record(a).unwrap().unwrap();
        assert_eq!(
            rec.status,
            Status::Succeeded,
            "{a}: {:?} {:?}",
            rec.error,
            rec.cause
        );
        let out: Value = serde_json::from_str(rec.output.as_deref().unwrap()).unwrap();
        assert_eq!(out["work"], "after-restart");
        check_history(&node, a);
    }
    node.stop().await;
}

/// The node that took a StartExecution may send it to the shard's leader again after the
/// answer was lost: the same call finds the execution it made, even closed; another call of
/// the same name and input does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_sent_again_answers_for_the_execution_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _fake) = boot(dir.path()).await;
    let h = &node.handle;
    let pass = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}});
    let call = |request_id| {
        let mut r = start_req("once", &pass, json!({"n": 1}));
        r.request_id = request_id;
        r
    };
    let first = h.start(call(42)).await.unwrap();
    assert!(!first.existed);
    eventually("the execution ends", || {
        h.app
            .record(&first.execution_arn)
            .unwrap()
            .filter(|r| r.status == Status::Succeeded)
    })
    .await;
    let again = h.start(call(42)).await.unwrap();
    assert_eq!(
        (&again.execution_arn, again.start_ms, again.existed),
        (&first.execution_arn, first.start_ms, true)
    );
    for other in [43, 0] {
        assert!(
            matches!(
                h.start(call(other)).await,
                Err(trellis_shard::Error::ExecutionAlreadyExists { .. })
            ),
            "request {other}"
        );
    }
}
