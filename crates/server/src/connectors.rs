//! The one connector set, for `trellis run` and the node alike: `arn:aws:states:::http:invoke`,
//! Lambda functions played by HTTP endpoints (`--function NAME=URL`, `[functions]`), and
//! nested executions through an [`ExecutionStarter`] (the node; `trellis run` has none).
//!
//! Calls go through one pooled HTTP client (reqwest on rustls): `http://` and `https://`
//! endpoints, verified against the system's CA roots plus an optional extra CA file.
//!
//! A Task's `TimeoutSeconds` belongs to the interpreter: its timer fires `States.Timeout`
//! (`TaskTimedOut`, `LambdaFunctionTimedOut`) and cancels the call. So a call with a timeout
//! is given a little more time than that here, and the timer always wins; a call without
//! one gives up after [`DEFAULT_CALL_TIMEOUT`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde_json::{json, Map, Value};
use trellis_asl::definition::{Pattern, Resource};
use trellis_asl::exec::{TaskKind, TaskRequest};
use trellis_asl::Input;

use crate::nested::ExecutionStarter;

/// How long a call without `TimeoutSeconds` may take.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A call with `TimeoutSeconds` gets this much longer, so the interpreter's timer fires
/// first.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// The header that carries a task's fence (`trellis_shard::executor::Fence`) on HTTP calls.
pub const FENCE_HEADER: &str = "Trellis-Fence";

/// What building the connectors can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the CA file {path} holds no usable PEM certificate: {reason}")]
    CaPem { path: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The connectors. Cheap to clone (one shared HTTP client and function map).
#[derive(Clone)]
pub struct Connectors {
    http: reqwest::Client,
    /// Lambda function name -> HTTP endpoint.
    functions: Arc<HashMap<String, String>>,
    /// Starts nested executions (`states:startExecution`), once bound.
    starter: Arc<OnceLock<Weak<dyn ExecutionStarter>>>,
    /// A DISTRIBUTED Map's ItemReader and ResultWriter.
    s3: crate::s3::S3,
}

impl Connectors {
    /// Connectors with the function map and, optionally, a PEM file of extra CA
    /// certificates to trust besides the system's.
    pub fn new(
        functions: impl IntoIterator<Item = (String, String)>,
        extra_ca: Option<&Path>,
        s3: crate::s3::S3Config,
    ) -> Result<Connectors, Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(path) = extra_ca {
            let shown = path.display().to_string();
            let pem = std::fs::read(path).map_err(|source| Error::CaFile {
                path: shown.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::CaPem {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            if certs.is_empty() {
                return Err(Error::CaPem {
                    path: shown,
                    reason: "no certificate in it".into(),
                });
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        Ok(Connectors {
            http: b.build().map_err(|e| Error::Client(e.to_string()))?,
            functions: Arc::new(functions.into_iter().collect()),
            starter: Arc::new(OnceLock::new()),
            s3: crate::s3::S3::new(s3),
        })
    }

    /// Lets `states:startExecution` tasks start executions through `starter`.
    pub fn bind(&self, starter: Weak<dyn ExecutionStarter>) {
        let _ = self.starter.set(starter);
    }

    /// Runs one task to its answer: `TaskSucceeded`, `TaskFailed`, or `TaskSubmitted` for a
    /// `.waitForTaskToken` task whose answer comes through its token. `fence` goes with HTTP
    /// calls (`Trellis-Fence`). Activities never come here: a shard queues them, and
    /// `trellis run` has no workers.
    pub async fn run_task(&self, t: TaskRequest, fence: Option<String>) -> Input {
        let id = t.task_id;
        let io = match &t.kind {
            TaskKind::State => None,
            TaskKind::ReadItems(r) => Some(self.s3.read(r).await),
            TaskKind::WriteResults(w) => Some(self.s3.write(w).await),
        };
        if let Some(r) = io {
            return match r {
                Ok(output) => Input::TaskSucceeded {
                    task_id: id,
                    output,
                },
                Err(f) => Input::TaskFailed {
                    task_id: id,
                    error: f.error,
                    cause: f.cause,
                },
            };
        }
        let fence = fence.as_deref();
        match &t.resource {
            Resource::Service {
                service,
                action,
                pattern,
            } if service == "states" && action == "startExecution" => {
                let starter = self.starter.get().and_then(Weak::upgrade);
                match starter {
                    Some(s) => crate::nested::run(s.as_ref(), &t, *pattern).await,
                    None => failed(
                        id,
                        "States.Runtime",
                        "no cluster here to start a nested execution in (`trellis run` runs one execution; mock the state with --mock-config)",
                    ),
                }
            }
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
                match self.call_function(&t, name, &payload, fence).await {
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
            Resource::Lambda { arn } => {
                match self.call_function(&t, arn, &t.parameters, fence).await {
                    Ok(v) => Input::TaskSucceeded {
                        task_id: id,
                        output: v,
                    },
                    Err(input) => input,
                }
            }
            Resource::Service {
                service,
                action,
                pattern: Pattern::RequestResponse,
            } if service == "http" && action == "invoke" => self.http_invoke(&t, fence).await,
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

    /// Calls a Lambda function played by an HTTP endpoint: POST the payload, the reply is the
    /// result; a non-2xx reply fails with its `errorType` (or `Lambda.Unknown`).
    async fn call_function(
        &self,
        t: &TaskRequest,
        name_or_arn: &str,
        payload: &Value,
        fence: Option<&str>,
    ) -> Result<Value, Input> {
        let name = function_name(name_or_arn);
        let Some(url) = self.functions.get(name) else {
            return Err(failed(
                t.task_id,
                "Lambda.ResourceNotFoundException",
                format!("Function not found: {name_or_arn} (map it with --function {name}=URL)"),
            ));
        };
        let mut req = self
            .http
            .post(url)
            .timeout(call_timeout(t))
            .header("Content-Type", "application/json")
            .body(payload.to_string());
        if let Some(f) = fence {
            req = req.header(FENCE_HEADER, f);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| failed(t.task_id, "Lambda.ServiceException", describe(&e)))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| failed(t.task_id, "Lambda.ServiceException", describe(&e)))?;
        if status.is_success() {
            return Ok(serde_json::from_str(&body).unwrap_or(Value::String(body)));
        }
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let error = parsed
            .get("errorType")
            .and_then(Value::as_str)
            .unwrap_or("Lambda.Unknown")
            .to_string();
        Err(failed(t.task_id, &error, body))
    }

    /// `arn:aws:states:::http:invoke`: the request the parameters describe, with AWS's
    /// result shape (`Headers`, `ResponseBody`, `StatusCode`, `StatusText`).
    async fn http_invoke(&self, t: &TaskRequest, fence: Option<&str>) -> Input {
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
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return failed(
                t.task_id,
                "States.Runtime",
                format!("'{method}' is not an HTTP method"),
            );
        };
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        let mut req = self.http.request(method, endpoint).timeout(call_timeout(t));
        if let Some(f) = fence {
            req = req.header(FENCE_HEADER, f);
        }
        if let Some(q) = p.get("QueryParameters").and_then(Value::as_object) {
            let pairs: Vec<(&str, String)> = q.iter().map(|(k, v)| (k.as_str(), text(v))).collect();
            req = req.query(&pairs);
        }
        if let Some(h) = p.get("Headers").and_then(Value::as_object) {
            for (k, v) in h {
                req = req.header(k.as_str(), text(v));
            }
        }
        req = match p.get("RequestBody") {
            Some(Value::String(s)) => req.body(s.clone()),
            Some(body) => req
                .header("Content-Type", "application/json")
                .body(body.to_string()),
            None => req,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return failed(t.task_id, "States.Http.Socket", describe(&e)),
        };
        let status = resp.status();
        let mut headers = Map::new();
        for (name, v) in resp.headers() {
            if let Ok(v) = v.to_str() {
                headers.insert(name.as_str().to_string(), Value::String(v.to_string()));
            }
        }
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => return failed(t.task_id, "States.Http.Socket", describe(&e)),
        };
        let body_v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        let out = json!({
            "Headers": headers,
            "ResponseBody": body_v,
            "StatusCode": status.as_u16(),
            "StatusText": status.canonical_reason().unwrap_or_default(),
        });
        if status.is_success() {
            Input::TaskSucceeded {
                task_id: t.task_id,
                output: out,
            }
        } else {
            failed(
                t.task_id,
                &format!("States.Http.StatusCode.{}", status.as_u16()),
                out.to_string(),
            )
        }
    }
}

/// How long a call may take: past the task's `TimeoutSeconds` (whose timer must fire
/// first), or [`DEFAULT_CALL_TIMEOUT`] without one.
fn call_timeout(t: &TaskRequest) -> Duration {
    match t.timeout_seconds {
        Some(s) => Duration::from_secs(s) + TIMEOUT_GRACE,
        None => DEFAULT_CALL_TIMEOUT,
    }
}

/// A transport error with its causes (reqwest's own message alone says little).
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
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

/// The shard executors run their tasks on the one connector set.
impl trellis_shard::executor::Connectors for Connectors {
    fn invoke(
        &self,
        t: TaskRequest,
        fence: trellis_shard::executor::Fence,
    ) -> trellis_shard::executor::BoxFuture<'static, Input> {
        let me = self.clone();
        // Term 0: an Express execution, which runs outside any shard.
        let fence = (fence.term > 0).then(|| fence.to_string());
        Box::pin(async move { me.run_task(t, fence).await })
    }
}

/// The one connector set, as it is, for in-memory runs (outside any shard: no fence).
impl trellis_shard::runner::Tasks for Connectors {
    fn start(
        &mut self,
        t: TaskRequest,
    ) -> Result<Option<trellis_shard::executor::BoxFuture<'static, Input>>, String> {
        let me = self.clone();
        Ok(Some(Box::pin(async move { me.run_task(t, None).await })))
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

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = Connectors::new([], Some(&missing), Default::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = Connectors::new([], Some(&junk), Default::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("junk.pem"), "{e}");
    }
}
