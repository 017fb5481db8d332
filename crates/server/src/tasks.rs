//! Task connectors of a node: `http:invoke`, Lambda functions played by HTTP endpoints
//! (`[functions]` in the config), and the callback pattern. Activities never reach here:
//! the shard queues them for `GetActivityTask`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use trellis_asl::definition::{Pattern, Resource};
use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;
use trellis_shard::executor::{BoxFuture, Connectors};

use crate::connectors::{call_function, failed, http_invoke};

/// The connectors of a node. Cheap to clone.
#[derive(Clone)]
pub struct NodeConnectors {
    functions: Arc<HashMap<String, String>>,
}

impl NodeConnectors {
    pub fn new(functions: impl IntoIterator<Item = (String, String)>) -> Self {
        NodeConnectors {
            functions: Arc::new(functions.into_iter().collect()),
        }
    }

    /// Runs one task to its result (blocking I/O; called on the blocking pool).
    fn run(&self, t: &TaskRequest) -> Input {
        let id = t.task_id;
        let lambda = |name: &str, payload: &Value| {
            call_function(&self.functions, id, name, payload, t.timeout_seconds)
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
            } if service == "http" && action == "invoke" => http_invoke(t),
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

impl Connectors for NodeConnectors {
    fn invoke(&self, t: TaskRequest) -> BoxFuture<'static, Input> {
        let me = self.clone();
        Box::pin(async move {
            let id = t.task_id;
            match tokio::task::spawn_blocking(move || me.run(&t)).await {
                Ok(input) => input,
                Err(e) => failed(id, "States.Runtime", format!("the connector failed: {e}")),
            }
        })
    }
}
