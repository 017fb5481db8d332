//! Nested executions: `arn:aws:states:::states:startExecution[.sync|.sync:2|.waitForTaskToken]`
//! tasks, through an [`ExecutionStarter`] (the node), never through the node's type.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{json, Value};
use trellis_asl::definition::Pattern;
use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;
use trellis_proto::v1 as pb;
use trellis_proto::ApiError;

use crate::connectors::failed;
use trellis_cluster::retry::Backoff;

type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// What a nested-execution task needs from the cluster: the API calls a client would make.
pub trait ExecutionStarter: Send + Sync + 'static {
    /// StartExecution.
    fn start(&self, r: pb::StartExecutionRequest) -> Answer<'_, pb::StartExecutionResponse>;
    /// StartSyncExecution (an Express child of a `.sync` task).
    fn start_sync(&self, r: pb::StartExecutionRequest) -> Answer<'_, pb::SyncExecutionResult>;
    /// DescribeExecution.
    fn describe<'a>(&'a self, execution_arn: &'a str) -> Answer<'a, pb::Execution>;
    /// Whether the machine (or version, or alias) is an EXPRESS one; false when unknown
    /// (its start then answers the error).
    fn is_express(&self, state_machine_arn: &str) -> bool;
}

/// `arn:aws:states:::states:startExecution[.sync|.sync:2|.waitForTaskToken]`.
pub async fn run(node: &dyn ExecutionStarter, t: &TaskRequest, pattern: Pattern) -> Input {
    let id = t.task_id;
    let p = &t.parameters;
    let Some(machine) = p.get("StateMachineArn").and_then(Value::as_str) else {
        return failed(
            id,
            "States.Runtime",
            "states:startExecution needs a 'StateMachineArn' string parameter",
        );
    };
    let input = match p.get("Input") {
        None => "{}".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    // Without a Name, one derived from the parent task, so a task dispatched again after
    // a failover starts (and finds) the same child.
    let name = match p.get("Name").and_then(Value::as_str) {
        Some(n) => n.to_string(),
        None => {
            let key = format!("{}/{}/{}", t.execution_arn, t.task_id, t.attempt);
            let h = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
            format!("{h:032x}")
        }
    };
    let sync = matches!(pattern, Pattern::Sync | Pattern::Sync2);
    let req = pb::StartExecutionRequest {
        state_machine_arn: machine.to_string(),
        name,
        input,
    };
    let express = node.is_express(machine);
    let child_error = |e: trellis_proto::ApiError| {
        failed(
            id,
            &format!(
                "StepFunctions.{}Exception",
                e.code.name().trim_end_matches("Exception")
            ),
            e.message,
        )
    };
    if sync && express {
        return match node.start_sync(req).await {
            Ok(r) => sync_result(
                id,
                pattern,
                SyncView {
                    arn: r.execution_arn,
                    machine: r.state_machine_arn,
                    name: r.name,
                    status: r.status,
                    input: r.input,
                    output: r.output,
                    error: r.error,
                    cause: r.cause,
                    start: r.start_date,
                    stop: r.stop_date,
                },
            ),
            Err(e) => child_error(e),
        };
    }
    let started = match node.start(req).await {
        Ok(s) => s,
        Err(e) => return child_error(e),
    };
    let start_out = json!({"ExecutionArn": started.execution_arn, "StartDate": started.start_date});
    match pattern {
        Pattern::RequestResponse => Input::TaskSucceeded {
            task_id: id,
            output: start_out,
        },
        Pattern::WaitForTaskToken => Input::TaskSubmitted {
            task_id: id,
            output: start_out,
        },
        Pattern::Sync | Pattern::Sync2 => {
            // Until the child ends (the task's own timeout bounds the wait).
            let mut poll = Backoff::unbounded(Duration::from_millis(20), Duration::from_secs(1));
            loop {
                match node.describe(&started.execution_arn).await {
                    Ok(d) if d.status != "RUNNING" && d.status != "QUEUED" => {
                        return sync_result(
                            id,
                            pattern,
                            SyncView {
                                arn: d.execution_arn,
                                machine: d.state_machine_arn,
                                name: d.name,
                                status: d.status,
                                input: d.input,
                                output: d.output,
                                error: d.error,
                                cause: d.cause,
                                start: d.start_date,
                                stop: d.stop_date,
                            },
                        );
                    }
                    Ok(_) => {}
                    Err(e) => return child_error(e),
                }
                poll.again().await;
            }
        }
    }
}

/// What a `.sync` task reports about its child.
struct SyncView {
    arn: String,
    machine: String,
    name: String,
    status: String,
    input: String,
    output: Option<String>,
    error: String,
    cause: String,
    start: i64,
    stop: i64,
}

/// The result of a `.sync` (JSON text) or `.sync:2` (parsed JSON) child: the child's
/// DescribeExecution. A child that did not succeed fails the task with `States.TaskFailed`,
/// the description as the cause.
fn sync_result(task_id: u64, pattern: Pattern, v: SyncView) -> Input {
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(Value::String(s.to_string()));
    let (input, output) = if pattern == Pattern::Sync2 {
        (parse(&v.input), v.output.as_deref().map(parse))
    } else {
        (
            Value::String(v.input.clone()),
            v.output.clone().map(Value::String),
        )
    };
    let mut out = json!({
        "ExecutionArn": v.arn, "Input": input, "InputDetails": {"Included": true},
        "Name": v.name, "StartDate": v.start, "StateMachineArn": v.machine,
        "Status": v.status, "StopDate": v.stop,
    });
    if let Some(o) = output {
        out["Output"] = o;
        out["OutputDetails"] = json!({"Included": true});
    }
    if v.status == "SUCCEEDED" {
        return Input::TaskSucceeded {
            task_id,
            output: out,
        };
    }
    if !v.error.is_empty() {
        out["Error"] = json!(v.error);
    }
    if !v.cause.is_empty() {
        out["Cause"] = json!(v.cause);
    }
    failed(task_id, "States.TaskFailed", out.to_string())
}
