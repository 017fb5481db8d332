//! The AWS Step Functions JSON 1.0 API (`POST /`, `X-Amz-Target: AWSStepFunctions.<Op>`),
//! so boto3, the AWS CLI and the SDKs work against a node. Also `/healthz` and `/readyz`.
//!
//! Requests are not SigV4-verified: any credentials are accepted. Timestamps are epoch
//! seconds; `input`, `output` and `definition` are JSON text, as on AWS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use crate::node::Node;

type ApiResult<T> = Result<T, ApiError>;

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", post(handle))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(node): State<Arc<Node>>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    node.render_metrics(),
                )
            }),
        )
        .with_state(node)
}

/// 200 when the node can serve ([`Node::readiness`]), 503 with the reason until then.
async fn readyz(State(node): State<Arc<Node>>) -> Response {
    match node.readiness() {
        Ok(()) => "ok".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

fn secs(ms: i64) -> Value {
    trellis_asl::json::number_from_f64(ms as f64 / 1000.0)
}

fn missing(field: &str) -> ApiError {
    ApiError::new(
        Code::ValidationException,
        format!("1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"),
    )
}

/// Field access on a request body, with AWS's errors for missing or mistyped members.
struct Req(Map<String, Value>);

impl Req {
    fn opt(&self, k: &str) -> ApiResult<Option<String>> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::new(
                Code::SerializationException,
                format!("Unexpected value type for '{k}': expected a string"),
            )),
        }
    }

    fn s(&self, k: &str) -> ApiResult<String> {
        self.opt(k)?.ok_or_else(|| missing(k))
    }

    fn or_empty(&self, k: &str) -> ApiResult<String> {
        Ok(self.opt(k)?.unwrap_or_default())
    }

    fn u32(&self, k: &str) -> ApiResult<u32> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= u64::from(u32::MAX))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    ApiError::new(
                        Code::SerializationException,
                        format!("Unexpected value type for '{k}': expected an integer"),
                    )
                }),
        }
    }

    fn bool(&self, k: &str) -> bool {
        self.0.get(k).and_then(Value::as_bool).unwrap_or(false)
    }
}

async fn handle(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        node.cfg.node.id,
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let result = dispatch(&node, &headers, &body).await;
    let (status, text) = match result {
        Ok(v) => (StatusCode::OK, v.to_string()),
        Err(e) => {
            if e.code == Code::InternalFailure {
                tracing::error!(error = %e, "internal failure");
            }
            (
                StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                e.aws_body(),
            )
        }
    };
    let mut resp = (status, text).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

async fn dispatch(node: &Node, headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(op) = target.strip_prefix("AWSStepFunctions.") else {
        return Err(ApiError::new(
            Code::UnknownOperationException,
            format!("Unknown operation: '{target}'"),
        ));
    };
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                Code::SerializationException,
                format!("Malformed request body: {e}"),
            )
        })?
    };
    let Value::Object(map) = body else {
        return Err(ApiError::new(
            Code::SerializationException,
            "The request body must be a JSON object",
        ));
    };
    let r = Req(map);
    match op {
        "CreateStateMachine" => {
            let t = r.opt("type")?.unwrap_or_else(|| "STANDARD".into());
            let ty = match t.as_str() {
                "STANDARD" => pb::StateMachineType::Standard,
                "EXPRESS" => pb::StateMachineType::Express,
                other => {
                    return Err(ApiError::new(
                        Code::ValidationException,
                        format!("1 validation error detected: Value '{other}' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [STANDARD, EXPRESS]"),
                    ))
                }
            };
            let out = node
                .create_state_machine(pb::CreateStateMachineRequest {
                    name: r.s("name")?,
                    definition: r.s("definition")?,
                    role_arn: r.s("roleArn")?,
                    r#type: ty as i32,
                    publish: r.bool("publish"),
                    version_description: r.or_empty("versionDescription")?,
                    settings: None,
                })
                .await?;
            let mut v = json!({"stateMachineArn": out.state_machine_arn, "creationDate": secs(out.creation_date)});
            if !out.state_machine_version_arn.is_empty() {
                v["stateMachineVersionArn"] = json!(out.state_machine_version_arn);
            }
            Ok(v)
        }
        "DescribeStateMachine" => {
            let m = node.describe_state_machine(&r.s("stateMachineArn")?)?;
            Ok(machine_json(&m))
        }
        "DescribeStateMachineForExecution" => {
            let e = node.describe_execution(&r.s("executionArn")?).await?;
            let m = node.describe_state_machine(&e.state_machine_arn)?;
            let mut v = machine_json(&m);
            if let Value::Object(o) = &mut v {
                o.remove("status");
                o.remove("type");
                o.remove("creationDate");
                o.insert("updateDate".into(), secs(m.creation_date));
            }
            Ok(v)
        }
        "UpdateStateMachine" => {
            let out = node
                .update_state_machine(pb::UpdateStateMachineRequest {
                    state_machine_arn: r.s("stateMachineArn")?,
                    definition: r.opt("definition")?,
                    role_arn: r.opt("roleArn")?,
                    publish: r.bool("publish"),
                    version_description: r.or_empty("versionDescription")?,
                    settings: None,
                })
                .await?;
            let mut v = json!({"updateDate": secs(out.update_date), "revisionId": out.revision_id});
            if !out.state_machine_version_arn.is_empty() {
                v["stateMachineVersionArn"] = json!(out.state_machine_version_arn);
            }
            Ok(v)
        }
        "DeleteStateMachine" => {
            node.delete_state_machine(&r.s("stateMachineArn")?).await?;
            Ok(json!({}))
        }
        "ListStateMachines" => {
            let out = node.list_state_machines(pb::ListStateMachinesRequest {
                max_results: r.u32("maxResults")?,
                next_token: r.or_empty("nextToken")?,
            })?;
            let items: Vec<Value> = out
                .state_machines
                .iter()
                .map(|m| {
                    json!({"stateMachineArn": m.state_machine_arn, "name": m.name,
                    "type": type_str(m.r#type), "creationDate": secs(m.creation_date)})
                })
                .collect();
            Ok(with_token(json!({"stateMachines": items}), &out.next_token))
        }
        "ValidateStateMachineDefinition" => {
            let ty = match r.opt("type")?.as_deref() {
                Some("EXPRESS") => pb::StateMachineType::Express,
                _ => pb::StateMachineType::Standard,
            };
            let out = node.validate(&pb::ValidateRequest {
                definition: r.s("definition")?,
                r#type: ty as i32,
            });
            Ok(
                json!({"result": out.result, "diagnostics": out.diagnostics.iter().map(|d| json!({
                "severity": d.severity, "code": d.code, "message": d.message, "location": d.location})).collect::<Vec<_>>(),
                "truncated": out.truncated}),
            )
        }
        "PublishStateMachineVersion" => {
            let out = node
                .publish_version(pb::PublishVersionRequest {
                    state_machine_arn: r.s("stateMachineArn")?,
                    revision_id: r.or_empty("revisionId")?,
                    description: r.or_empty("description")?,
                })
                .await?;
            Ok(
                json!({"creationDate": secs(out.creation_date), "stateMachineVersionArn": out.state_machine_version_arn}),
            )
        }
        "ListStateMachineVersions" => {
            let out = node.list_versions(pb::ListVersionsRequest {
                state_machine_arn: r.s("stateMachineArn")?,
                max_results: r.u32("maxResults")?,
                next_token: r.or_empty("nextToken")?,
            })?;
            let items: Vec<Value> = out
                .state_machine_versions
                .iter()
                .map(|v| json!({"stateMachineVersionArn": v.state_machine_version_arn, "creationDate": secs(v.creation_date)}))
                .collect();
            Ok(with_token(
                json!({"stateMachineVersions": items}),
                &out.next_token,
            ))
        }
        "DeleteStateMachineVersion" => {
            node.delete_version(&r.s("stateMachineVersionArn")?).await?;
            Ok(json!({}))
        }
        "CreateStateMachineAlias" => {
            let out = node
                .create_alias(pb::CreateAliasRequest {
                    name: r.s("name")?,
                    description: r.or_empty("description")?,
                    routing_configuration: routes(&r)?,
                })
                .await?;
            Ok(
                json!({"stateMachineAliasArn": out.state_machine_alias_arn, "creationDate": secs(out.creation_date)}),
            )
        }
        "DescribeStateMachineAlias" => {
            let a = node.describe_alias(&r.s("stateMachineAliasArn")?)?;
            Ok(
                json!({"stateMachineAliasArn": a.state_machine_alias_arn, "name": a.name,
                "description": a.description,
                "routingConfiguration": a.routing_configuration.iter().map(|r| json!({
                    "stateMachineVersionArn": r.state_machine_version_arn, "weight": r.weight})).collect::<Vec<_>>(),
                "creationDate": secs(a.creation_date), "updateDate": secs(a.update_date)}),
            )
        }
        "UpdateStateMachineAlias" => {
            let out = node
                .update_alias(pb::UpdateAliasRequest {
                    state_machine_alias_arn: r.s("stateMachineAliasArn")?,
                    description: r.opt("description")?,
                    routing_configuration: if r.0.contains_key("routingConfiguration") {
                        routes(&r)?
                    } else {
                        Vec::new()
                    },
                })
                .await?;
            Ok(json!({"updateDate": secs(out.update_date)}))
        }
        "DeleteStateMachineAlias" => {
            node.delete_alias(&r.s("stateMachineAliasArn")?).await?;
            Ok(json!({}))
        }
        "ListStateMachineAliases" => {
            let out = node.list_aliases(pb::ListAliasesRequest {
                state_machine_arn: r.s("stateMachineArn")?,
                max_results: r.u32("maxResults")?,
                next_token: r.or_empty("nextToken")?,
            })?;
            let items: Vec<Value> = out
                .state_machine_aliases
                .iter()
                .map(|a| json!({"stateMachineAliasArn": a.state_machine_alias_arn, "creationDate": secs(a.creation_date)}))
                .collect();
            Ok(with_token(
                json!({"stateMachineAliases": items}),
                &out.next_token,
            ))
        }
        "StartExecution" => {
            let out = node
                .start_execution(pb::StartExecutionRequest {
                    state_machine_arn: r.s("stateMachineArn")?,
                    name: r.or_empty("name")?,
                    input: r.or_empty("input")?,
                })
                .await?;
            Ok(json!({"executionArn": out.execution_arn, "startDate": secs(out.start_date)}))
        }
        "StartSyncExecution" => {
            let o = node
                .start_sync_execution(pb::StartExecutionRequest {
                    state_machine_arn: r.s("stateMachineArn")?,
                    name: r.or_empty("name")?,
                    input: r.or_empty("input")?,
                })
                .await?;
            let mut v = json!({"executionArn": o.execution_arn, "stateMachineArn": o.state_machine_arn,
                "name": o.name, "startDate": secs(o.start_date), "stopDate": secs(o.stop_date),
                "status": o.status, "input": o.input, "inputDetails": {"included": true}});
            if let Some(out) = o.output {
                v["output"] = json!(out);
                v["outputDetails"] = json!({"included": true});
            }
            if !o.error.is_empty() {
                v["error"] = json!(o.error);
            }
            if !o.cause.is_empty() {
                v["cause"] = json!(o.cause);
            }
            Ok(v)
        }
        "StopExecution" => {
            let out = node
                .stop_execution(pb::StopExecutionRequest {
                    execution_arn: r.s("executionArn")?,
                    error: r.or_empty("error")?,
                    cause: r.or_empty("cause")?,
                })
                .await?;
            Ok(json!({"stopDate": secs(out.stop_date)}))
        }
        "RedriveExecution" => {
            let out = node.redrive_execution(&r.s("executionArn")?).await?;
            Ok(json!({"redriveDate": secs(out.redrive_date)}))
        }
        "DescribeExecution" => {
            let e = node.describe_execution(&r.s("executionArn")?).await?;
            Ok(execution_json(&e))
        }
        "ListExecutions" => {
            let arn = r.opt("stateMachineArn")?;
            if r.opt("mapRunArn")?.is_some() {
                return Err(ApiError::new(
                    Code::ValidationException,
                    "Map Runs are not supported by Trellis yet",
                ));
            }
            let out = node
                .list_executions(pb::ListExecutionsRequest {
                    state_machine_arn: arn.ok_or_else(|| missing("stateMachineArn"))?,
                    status_filter: r.or_empty("statusFilter")?,
                    max_results: r.u32("maxResults")?,
                    next_token: r.or_empty("nextToken")?,
                    redrive_filter_redriven: false,
                })
                .await?;
            let items: Vec<Value> = out
                .executions
                .iter()
                .map(|e| {
                    let mut v = json!({"executionArn": e.execution_arn, "stateMachineArn": e.state_machine_arn,
                        "name": e.name, "status": e.status, "startDate": secs(e.start_date), "redriveCount": e.redrive_count});
                    if e.stop_date != 0 {
                        v["stopDate"] = secs(e.stop_date);
                    }
                    v
                })
                .collect();
            Ok(with_token(json!({"executions": items}), &out.next_token))
        }
        "GetExecutionHistory" => {
            let include =
                r.0.get("includeExecutionData")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
            let out = node
                .get_execution_history(pb::GetExecutionHistoryRequest {
                    execution_arn: r.s("executionArn")?,
                    max_results: r.u32("maxResults")?,
                    reverse_order: r.bool("reverseOrder"),
                    next_token: r.or_empty("nextToken")?,
                    include_execution_data: include,
                })
                .await?;
            let events: Vec<Value> = out.events.iter().map(|e| event_json(e, include)).collect();
            Ok(with_token(json!({"events": events}), &out.next_token))
        }
        "CreateActivity" => {
            let out = node.create_activity(&r.s("name")?).await?;
            Ok(json!({"activityArn": out.activity_arn, "creationDate": secs(out.creation_date)}))
        }
        "DescribeActivity" => {
            let a = node.describe_activity(&r.s("activityArn")?)?;
            Ok(
                json!({"activityArn": a.activity_arn, "name": a.name, "creationDate": secs(a.creation_date)}),
            )
        }
        "ListActivities" => {
            let out = node.list_activities(pb::ListActivitiesRequest {
                max_results: r.u32("maxResults")?,
                next_token: r.or_empty("nextToken")?,
            })?;
            let items: Vec<Value> = out
                .activities
                .iter()
                .map(|a| json!({"activityArn": a.activity_arn, "name": a.name, "creationDate": secs(a.creation_date)}))
                .collect();
            Ok(with_token(json!({"activities": items}), &out.next_token))
        }
        "DeleteActivity" => {
            node.delete_activity(&r.s("activityArn")?).await?;
            Ok(json!({}))
        }
        "GetActivityTask" => {
            let t = node
                .get_activity_task(
                    &r.s("activityArn")?,
                    &r.or_empty("workerName")?,
                    Duration::from_secs(60),
                )
                .await?;
            if t.task_token.is_empty() {
                Ok(json!({}))
            } else {
                Ok(json!({"taskToken": t.task_token, "input": t.input}))
            }
        }
        "SendTaskSuccess" => {
            node.send_task_success(&r.s("taskToken")?, &r.s("output")?)
                .await?;
            Ok(json!({}))
        }
        "SendTaskFailure" => {
            node.send_task_failure(
                &r.s("taskToken")?,
                &r.or_empty("error")?,
                &r.or_empty("cause")?,
            )
            .await?;
            Ok(json!({}))
        }
        "SendTaskHeartbeat" => {
            node.send_task_heartbeat(&r.s("taskToken")?).await?;
            Ok(json!({}))
        }
        // Trellis extras, under the same target prefix.
        "PauseExecution" | "ResumeExecution" => {
            node.pause_execution(&r.s("executionArn")?, op == "PauseExecution")
                .await?;
            Ok(json!({}))
        }
        other => Err(ApiError::new(
            Code::UnknownOperationException,
            format!(
                "Trellis does not implement the operation '{other}' (see docs/compatibility.md)"
            ),
        )),
    }
}

fn with_token(mut v: Value, token: &str) -> Value {
    if !token.is_empty() {
        v["nextToken"] = json!(token);
    }
    v
}

fn type_str(t: i32) -> &'static str {
    if t == pb::StateMachineType::Express as i32 {
        "EXPRESS"
    } else {
        "STANDARD"
    }
}

fn routes(r: &Req) -> ApiResult<Vec<pb::RoutingConfiguration>> {
    let Some(Value::Array(items)) = r.0.get("routingConfiguration") else {
        return Err(missing("routingConfiguration"));
    };
    items
        .iter()
        .map(|i| {
            Ok(pb::RoutingConfiguration {
                state_machine_version_arn: i
                    .get("stateMachineVersionArn")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing("routingConfiguration.member.stateMachineVersionArn"))?
                    .to_string(),
                weight: i
                    .get("weight")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| missing("routingConfiguration.member.weight"))?
                    as u32,
            })
        })
        .collect()
}

fn machine_json(m: &pb::StateMachine) -> Value {
    let mut v = json!({"stateMachineArn": m.state_machine_arn, "name": m.name, "status": m.status,
        "definition": m.definition, "roleArn": m.role_arn, "type": type_str(m.r#type),
        "creationDate": secs(m.creation_date),
        "loggingConfiguration": {"level": "OFF", "includeExecutionData": false},
        "tracingConfiguration": {"enabled": false}});
    if !m.revision_id.is_empty() {
        v["revisionId"] = json!(m.revision_id);
    }
    if !m.description.is_empty() {
        v["description"] = json!(m.description);
    }
    v
}

fn execution_json(e: &pb::Execution) -> Value {
    let mut v = json!({"executionArn": e.execution_arn, "stateMachineArn": e.state_machine_arn,
        "name": e.name, "status": e.status, "startDate": secs(e.start_date),
        "input": e.input, "inputDetails": {"included": true}, "redriveCount": e.redrive_count,
        "redriveStatus": e.redrive_status});
    if e.redrive_date != 0 {
        v["redriveDate"] = secs(e.redrive_date);
    }
    if e.stop_date != 0 {
        v["stopDate"] = secs(e.stop_date);
    }
    if let Some(o) = &e.output {
        v["output"] = json!(o);
        v["outputDetails"] = json!({"included": true});
    }
    for (k, s) in [
        ("error", &e.error),
        ("cause", &e.cause),
        ("redriveStatusReason", &e.redrive_status_reason),
        ("stateMachineVersionArn", &e.state_machine_version_arn),
        ("stateMachineAliasArn", &e.state_machine_alias_arn),
    ] {
        if !s.is_empty() {
            v[k] = json!(s);
        }
    }
    if e.paused {
        // Trellis extra: a paused execution starts no new state until resumed.
        v["paused"] = json!(true);
    }
    v
}

fn event_json(e: &pb::HistoryEvent, include_data: bool) -> Value {
    let mut m = Map::new();
    m.insert("timestamp".into(), secs(e.timestamp));
    m.insert("type".into(), json!(e.r#type));
    m.insert("id".into(), json!(e.id));
    m.insert("previousEventId".into(), json!(e.previous_event_id));
    if let Ok(Value::Object(details)) = serde_json::from_str::<Value>(&e.details_json) {
        for (k, mut v) in details {
            if !include_data {
                if let Value::Object(d) = &mut v {
                    for f in ["input", "output", "parameters", "result"] {
                        if d.remove(f).is_some() {
                            d.insert(format!("{f}Details"), json!({"truncated": false}));
                        }
                    }
                }
            }
            m.insert(k, v);
        }
    }
    Value::Object(m)
}
