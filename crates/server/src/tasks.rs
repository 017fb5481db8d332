//! Task connectors of a node: `http:invoke`, Lambda functions played by HTTP endpoints
//! (`[functions]` in the config), nested executions (`states:startExecution`), and the
//! callback pattern. Activities never reach here: the shard queues them for
//! `GetActivityTask`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use trellis_asl::definition::{Pattern, Resource};
use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;
use trellis_shard::executor::{BoxFuture, Connectors, Fence};

use trellis_proto::v1 as pb;

use crate::connectors::{call_function, failed, http_invoke};
use crate::node::Node;

/// The connectors of a node. Cheap to clone.
#[derive(Clone)]
pub struct NodeConnectors {
    functions: Arc<HashMap<String, String>>,
    /// The node, for nested executions (bound once the node exists).
    node: Arc<OnceLock<Weak<Node>>>,
}

impl NodeConnectors {
    pub fn new(functions: impl IntoIterator<Item = (String, String)>) -> Self {
        NodeConnectors {
            functions: Arc::new(functions.into_iter().collect()),
            node: Arc::new(OnceLock::new()),
        }
    }

    /// Lets `states:startExecution` tasks start executions on `node`.
    pub fn bind(&self, node: Weak<Node>) {
        let _ = self.node.set(node);
    }

    /// `arn:aws:states:::states:startExecution[.sync|.sync:2|.waitForTaskToken]`.
    async fn nested(&self, t: TaskRequest, pattern: Pattern) -> Input {
        let id = t.task_id;
        let Some(node) = self.node.get().and_then(Weak::upgrade) else {
            return failed(id, "States.Runtime", "the node is shutting down");
        };
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
        let express = node
            .describe_state_machine(machine)
            .map(|m| m.r#type == pb::StateMachineType::Express as i32)
            .unwrap_or(false);
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
            return match node.start_sync_execution(req).await {
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
        let started = match node.start_execution(req).await {
            Ok(s) => s,
            Err(e) => return child_error(e),
        };
        let start_out =
            json!({"ExecutionArn": started.execution_arn, "StartDate": started.start_date});
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
                let mut wait = Duration::from_millis(20);
                loop {
                    match node.describe_execution(&started.execution_arn).await {
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
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Runs one task to its result (blocking I/O; called on the blocking pool).
    fn run(&self, t: &TaskRequest, fence: Option<&str>) -> Input {
        let id = t.task_id;
        let lambda = |name: &str, payload: &Value| {
            call_function(&self.functions, id, name, payload, t.timeout_seconds, fence)
        };
        match &t.resource {
            Resource::Service {
                service,
                action,
                pattern,
            } if service == "lambda" && action == "invoke" => {
                let name = t
                    .parameters
                    .get("FunctionName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let payload = t.parameters.get("Payload").cloned().unwrap_or(json!({}));
                match lambda(name, &payload) {
                    Ok(v) => {
                        let output =
                            json!({"ExecutedVersion": "$LATEST", "Payload": v, "StatusCode": 200});
                        if *pattern == Pattern::WaitForTaskToken {
                            // The function has the token; the result comes through it.
                            Input::TaskSubmitted {
                                task_id: id,
                                output,
                            }
                        } else {
                            Input::TaskSucceeded {
                                task_id: id,
                                output,
                            }
                        }
                    }
                    Err(input) => input,
                }
            }
            Resource::Lambda { arn } => match lambda(arn, &t.parameters) {
                Ok(v) => Input::TaskSucceeded {
                    task_id: id,
                    output: v,
                },
                Err(input) => input,
            },
            Resource::Service {
                service,
                action,
                pattern: Pattern::RequestResponse,
            } if service == "http" && action == "invoke" => http_invoke(t, fence),
            // Any other integration with a task token: nothing to call here; whoever holds
            // the token (from the state's parameters) answers it.
            Resource::Service {
                pattern: Pattern::WaitForTaskToken,
                ..
            } => Input::TaskSubmitted {
                task_id: id,
                output: json!({}),
            },
            _ => failed(
                id,
                "States.Runtime",
                format!(
                    "Trellis has no connector for {} (see docs/compatibility.md)",
                    t.resource_arn
                ),
            ),
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

impl Connectors for NodeConnectors {
    fn invoke(&self, t: TaskRequest, fence: Fence) -> BoxFuture<'static, Input> {
        let me = self.clone();
        Box::pin(async move {
            if let Resource::Service {
                service,
                action,
                pattern,
            } = &t.resource
            {
                if service == "states" && action == "startExecution" {
                    let pattern = *pattern;
                    return me.nested(t, pattern).await;
                }
            }
            let id = t.task_id;
            // Term 0: an Express execution, which runs outside any shard.
            let fence = (fence.term > 0).then(|| fence.to_string());
            match tokio::task::spawn_blocking(move || me.run(&t, fence.as_deref())).await {
                Ok(input) => input,
                Err(e) => failed(id, "States.Runtime", format!("the connector failed: {e}")),
            }
        })
    }
}
