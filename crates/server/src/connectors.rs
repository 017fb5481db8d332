//! Task connectors for the local runner: `arn:aws:states:::http:invoke`, Lambda (through
//! `--function NAME=URL`), and mocks. Each call returns the [`Input`] that reports its result.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use trellis_asl::definition::{Pattern, Resource};
use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;

use crate::mock::{MockCase, Mocked};

/// Where tasks go.
pub struct Connectors {
    /// Lambda function name -> HTTP endpoint.
    pub functions: HashMap<String, String>,
    pub mock: Option<MockCase>,
}

pub(crate) fn failed(task_id: u64, error: &str, cause: impl Into<String>) -> Input {
    Input::TaskFailed {
        task_id,
        error: Some(error.into()),
        cause: Some(cause.into()),
    }
}

/// The function name in a name, a function ARN or a partial ARN (`NAME[:alias]`).
pub(crate) fn function_name(s: &str) -> &str {
    match s.find(":function:") {
        Some(i) => {
            let rest = &s[i + ":function:".len()..];
            rest.split(':').next().unwrap_or(rest)
        }
        None => s.split(':').next().unwrap_or(s),
    }
}

impl Connectors {
    /// Runs a task to completion and reports its result. `None` means the result will come
    /// later from outside (a callback), which the local runner cannot receive.
    fn invoke_one(&mut self, t: &TaskRequest) -> Result<Input, String> {
        if let Some(m) = self.mock.as_mut().and_then(|m| m.next(&t.state_name)) {
            return Ok(match m {
                Mocked::Return(v) => Input::TaskSucceeded {
                    task_id: t.task_id,
                    output: v,
                },
                Mocked::Throw { error, cause } => Input::TaskFailed {
                    task_id: t.task_id,
                    error,
                    cause,
                },
            });
        }
        match &t.resource {
            Resource::Service { service, action, pattern } if service == "http" && action == "invoke" => {
                if *pattern != Pattern::RequestResponse {
                    return Err(self.callback_error(t));
                }
                Ok(http_invoke(t, None))
            }
            Resource::Service { service, action, pattern } if service == "lambda" && action == "invoke" => {
                if *pattern == Pattern::WaitForTaskToken {
                    return Err(self.callback_error(t));
                }
                let name = t.parameters.get("FunctionName").and_then(Value::as_str).unwrap_or_default();
                let payload = t.parameters.get("Payload").cloned().unwrap_or(json!({}));
                Ok(match call_function(&self.functions, t.task_id, name, &payload, t.timeout_seconds, None) {
                    Ok(v) => Input::TaskSucceeded {
                        task_id: t.task_id,
                        output: json!({"ExecutedVersion": "$LATEST", "Payload": v, "StatusCode": 200}),
                    },
                    Err(input) => input,
                })
            }
            Resource::Lambda { arn } => Ok(match call_function(&self.functions, t.task_id, arn, &t.parameters, t.timeout_seconds, None) {
                Ok(v) => Input::TaskSucceeded { task_id: t.task_id, output: v },
                Err(input) => input,
            }),
            Resource::Activity { arn } => Err(format!(
                "state '{}' waits for activity {arn}; `trellis run` has no activity workers, so mock it with --mock-config",
                t.state_name
            )),
            Resource::Service { pattern: Pattern::WaitForTaskToken, .. } => Err(self.callback_error(t)),
            Resource::Service { .. } => Ok(failed(
                t.task_id,
                "States.Runtime",
                format!("`trellis run` has no connector for {}; mock it with --mock-config", t.resource_arn),
            )),
        }
    }

    fn callback_error(&self, t: &TaskRequest) -> String {
        format!(
            "state '{}' waits for a task token callback, which `trellis run` cannot receive; mock it with --mock-config",
            t.state_name
        )
    }
}

/// The header that carries a task's [`trellis_shard::executor::Fence`] on HTTP calls.
pub(crate) const FENCE_HEADER: &str = "Trellis-Fence";

/// Calls a Lambda function played by an HTTP endpoint: POST the payload, the reply is the
/// result; a non-2xx reply fails with its `errorType` (or `Lambda.Unknown`). A node's calls
/// carry the dispatching executor's fence.
pub(crate) fn call_function(
    functions: &HashMap<String, String>,
    task_id: u64,
    name_or_arn: &str,
    payload: &Value,
    timeout: Option<u64>,
    fence: Option<&str>,
) -> Result<Value, Input> {
    let name = function_name(name_or_arn);
    let Some(url) = functions.get(name) else {
        return Err(failed(
            task_id,
            "Lambda.ResourceNotFoundException",
            format!("Function not found: {name_or_arn} (map it with --function {name}=URL)"),
        ));
    };
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(timeout.unwrap_or(60)))
        .build();
    let mut req = agent.post(url).set("Content-Type", "application/json");
    if let Some(f) = fence {
        req = req.set(FENCE_HEADER, f);
    }
    match req.send_string(&payload.to_string()) {
        Ok(resp) => {
            let body = resp.into_string().unwrap_or_default();
            Ok(serde_json::from_str(&body).unwrap_or(Value::String(body)))
        }
        Err(ureq::Error::Status(_, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let error = parsed
                .get("errorType")
                .and_then(Value::as_str)
                .unwrap_or("Lambda.Unknown")
                .to_string();
            Err(failed(task_id, &error, body))
        }
        Err(e) => Err(failed(task_id, "Lambda.ServiceException", e.to_string())),
    }
}

/// `arn:aws:states:::http:invoke`: the request the parameters describe, with AWS's result
/// shape (`Headers`, `ResponseBody`, `StatusCode`, `StatusText`). A node's calls carry the
/// dispatching executor's fence.
pub(crate) fn http_invoke(t: &TaskRequest, fence: Option<&str>) -> Input {
    let p = &t.parameters;
    let Some(endpoint) = p.get("ApiEndpoint").and_then(Value::as_str) else {
        return failed(
            t.task_id,
            "States.Runtime",
            "the http:invoke task needs an 'ApiEndpoint' string",
        );
    };
    let method = p
        .get("Method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_uppercase();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(t.timeout_seconds.unwrap_or(60)))
        .build();
    let mut req = agent.request(&method, endpoint);
    if let Some(f) = fence {
        req = req.set(FENCE_HEADER, f);
    }
    if let Some(q) = p.get("QueryParameters").and_then(Value::as_object) {
        for (k, v) in q {
            req = req.query(
                k,
                &v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
    }
    if let Some(h) = p.get("Headers").and_then(Value::as_object) {
        for (k, v) in h {
            req = req.set(
                k,
                &v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
    }
    let result = match p.get("RequestBody") {
        Some(Value::String(s)) => req.send_string(s),
        Some(body) => req
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
        None => req.call(),
    };
    let (resp, ok) = match result {
        Ok(r) => (r, true),
        Err(ureq::Error::Status(_, r)) => (r, false),
        Err(e) => return failed(t.task_id, "States.Http.Socket", e.to_string()),
    };
    let status = resp.status();
    let status_text = resp.status_text().to_string();
    let mut headers = Map::new();
    for name in resp.headers_names() {
        if let Some(v) = resp.header(&name) {
            headers.insert(name.clone(), Value::String(v.to_string()));
        }
    }
    let body = resp.into_string().unwrap_or_default();
    let body_v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let out = json!({"Headers": headers, "ResponseBody": body_v, "StatusCode": status, "StatusText": status_text});
    if ok {
        Input::TaskSucceeded {
            task_id: t.task_id,
            output: out,
        }
    } else {
        failed(
            t.task_id,
            &format!("States.Http.StatusCode.{status}"),
            out.to_string(),
        )
    }
}

impl trellis_asl::driver::Tasks for Connectors {
    fn invoke(&mut self, t: &TaskRequest) -> Result<Option<Input>, String> {
        self.invoke_one(t).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123:function:store:prod"),
            "store"
        );
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123:function:store"),
            "store"
        );
        assert_eq!(function_name("store"), "store");
        assert_eq!(function_name("store:prod"), "store");
    }
}
