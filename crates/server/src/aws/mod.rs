//! The AWS Step Functions JSON 1.0 API (`POST /`, `X-Amz-Target: AWSStepFunctions.<Op>`),
//! so boto3, the AWS CLI and the SDKs work against a node. Also `/healthz` and `/readyz`.
//!
//! With principals configured, every request's SigV4 signature is verified first
//! ([`crate::auth::sigv4`]), then its principal's rate limits and policy ([`admit`]);
//! without, any credentials are accepted. Timestamps are epoch
//! seconds; `input`, `output` and `definition` are JSON text, as on AWS. Bodies are the
//! typed shapes of [`shapes`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use crate::node::Node;

mod admit;
mod maprun;
mod shapes;

use shapes::*;

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

/// A request body as its shape; a member of the wrong type is AWS's SerializationException.
fn parse<T: DeserializeOwned>(body: Value) -> ApiResult<T> {
    serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            Code::SerializationException,
            format!("Malformed request body: {e}"),
        )
    })
}

/// A response body as JSON text.
fn reply<T: Serialize>(out: T) -> ApiResult<String> {
    serde_json::to_string(&out).map_err(trellis_cluster::internal)
}

async fn handle(
    State(node): State<Arc<Node>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let request_id = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        node.cfg.node.id,
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut audit = admit::Audit::new(&request_id, &headers);
    let result = match admit::admit(&node, &uri, &headers, body, &mut audit).await {
        Ok(body) => dispatch(&node, &headers, &body).await,
        Err(e) => Err(e),
    };
    audit.record(result.as_ref().err());
    let (status, text) = match result {
        Ok(text) => (StatusCode::OK, text),
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

fn machine_type(t: Option<String>) -> ApiResult<pb::StateMachineType> {
    match t.as_deref().unwrap_or("STANDARD") {
        "STANDARD" => Ok(pb::StateMachineType::Standard),
        "EXPRESS" => Ok(pb::StateMachineType::Express),
        other => Err(ApiError::new(
            Code::ValidationException,
            format!("1 validation error detected: Value '{other}' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [STANDARD, EXPRESS]"),
        )),
    }
}

async fn dispatch(node: &Node, headers: &HeaderMap, body: &[u8]) -> ApiResult<String> {
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
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                Code::SerializationException,
                format!("Malformed request body: {e}"),
            )
        })?
    };
    if !body.is_object() {
        return Err(ApiError::new(
            Code::SerializationException,
            "The request body must be a JSON object",
        ));
    }
    match op {
        "CreateStateMachine" => {
            let i: CreateStateMachineInput = parse(body)?;
            let out = node
                .create_state_machine(pb::CreateStateMachineRequest {
                    name: required(i.name, "name")?,
                    definition: required(i.definition, "definition")?,
                    role_arn: required(i.role_arn, "roleArn")?,
                    r#type: machine_type(i.kind)? as i32,
                    publish: i.publish,
                    version_description: i.version_description.unwrap_or_default(),
                    settings: None,
                })
                .await?;
            reply(CreateStateMachineOutput {
                state_machine_arn: out.state_machine_arn,
                creation_date: secs(out.creation_date),
                state_machine_version_arn: out.state_machine_version_arn,
            })
        }
        "DescribeStateMachine" => {
            let i: MachineInput = parse(body)?;
            check_included_data(&i.included_data)?;
            let m =
                node.describe_state_machine(&required(i.state_machine_arn, "stateMachineArn")?)?;
            reply(describe_machine(m))
        }
        "DescribeStateMachineForExecution" => {
            let i: ExecutionInput = parse(body)?;
            check_included_data(&i.included_data)?;
            let e = node
                .describe_execution(&required(i.execution_arn, "executionArn")?)
                .await?;
            let m = node.describe_state_machine(&e.state_machine_arn)?;
            reply(DescribeStateMachineForExecutionOutput {
                state_machine_arn: m.state_machine_arn,
                name: m.name,
                definition: m.definition,
                role_arn: m.role_arn,
                logging_configuration: LOGGING_OFF,
                tracing_configuration: TRACING_OFF,
                revision_id: m.revision_id,
                description: m.description,
                update_date: secs(m.creation_date),
            })
        }
        "UpdateStateMachine" => {
            let i: UpdateStateMachineInput = parse(body)?;
            let out = node
                .update_state_machine(pb::UpdateStateMachineRequest {
                    state_machine_arn: required(i.state_machine_arn, "stateMachineArn")?,
                    definition: i.definition,
                    role_arn: i.role_arn,
                    publish: i.publish,
                    version_description: i.version_description.unwrap_or_default(),
                    settings: None,
                })
                .await?;
            reply(UpdateStateMachineOutput {
                update_date: secs(out.update_date),
                revision_id: out.revision_id,
                state_machine_version_arn: out.state_machine_version_arn,
            })
        }
        "DeleteStateMachine" => {
            let i: MachineInput = parse(body)?;
            node.delete_state_machine(&required(i.state_machine_arn, "stateMachineArn")?)
                .await?;
            reply(Empty {})
        }
        "ListStateMachines" => {
            let i: PageInput = parse(body)?;
            let out = node.list_state_machines(pb::ListStateMachinesRequest {
                max_results: i.max_results,
                next_token: i.next_token.unwrap_or_default(),
            })?;
            reply(ListStateMachinesOutput {
                state_machines: out
                    .state_machines
                    .into_iter()
                    .map(|m| StateMachineListItem {
                        state_machine_arn: m.state_machine_arn,
                        name: m.name,
                        kind: type_str(m.r#type),
                        creation_date: secs(m.creation_date),
                    })
                    .collect(),
                next_token: out.next_token,
            })
        }
        "ValidateStateMachineDefinition" => {
            let i: ValidateInput = parse(body)?;
            let out = node.validate(&pb::ValidateRequest {
                definition: required(i.definition, "definition")?,
                r#type: machine_type(i.kind)? as i32,
                severity: i.severity.unwrap_or_default(),
                max_results: i.max_results,
            })?;
            reply(ValidateOutput {
                result: out.result,
                diagnostics: out
                    .diagnostics
                    .into_iter()
                    .map(|d| Diagnostic {
                        severity: d.severity,
                        code: d.code,
                        message: d.message,
                        location: d.location,
                    })
                    .collect(),
                truncated: out.truncated,
            })
        }
        "PublishStateMachineVersion" => {
            let i: PublishVersionInput = parse(body)?;
            let out = node
                .publish_version(pb::PublishVersionRequest {
                    state_machine_arn: required(i.state_machine_arn, "stateMachineArn")?,
                    revision_id: i.revision_id.unwrap_or_default(),
                    description: i.description.unwrap_or_default(),
                })
                .await?;
            reply(PublishVersionOutput {
                creation_date: secs(out.creation_date),
                state_machine_version_arn: out.state_machine_version_arn,
            })
        }
        "ListStateMachineVersions" => {
            let i: MachineInput = parse(body)?;
            let out = node.list_versions(pb::ListVersionsRequest {
                state_machine_arn: required(i.state_machine_arn, "stateMachineArn")?,
                max_results: i.max_results,
                next_token: i.next_token.unwrap_or_default(),
            })?;
            reply(ListVersionsOutput {
                state_machine_versions: out
                    .state_machine_versions
                    .into_iter()
                    .map(|v| VersionListItem {
                        state_machine_version_arn: v.state_machine_version_arn,
                        creation_date: secs(v.creation_date),
                    })
                    .collect(),
                next_token: out.next_token,
            })
        }
        "DeleteStateMachineVersion" => {
            let i: VersionInput = parse(body)?;
            node.delete_version(&required(
                i.state_machine_version_arn,
                "stateMachineVersionArn",
            )?)
            .await?;
            reply(Empty {})
        }
        "CreateStateMachineAlias" => {
            let i: CreateAliasInput = parse(body)?;
            let out = node
                .create_alias(pb::CreateAliasRequest {
                    name: required(i.name, "name")?,
                    description: i.description.unwrap_or_default(),
                    routing_configuration: routes(required(
                        i.routing_configuration,
                        "routingConfiguration",
                    )?)?,
                })
                .await?;
            reply(CreateAliasOutput {
                state_machine_alias_arn: out.state_machine_alias_arn,
                creation_date: secs(out.creation_date),
            })
        }
        "DescribeStateMachineAlias" => {
            let i: AliasInput = parse(body)?;
            let a = node.describe_alias(&required(
                i.state_machine_alias_arn,
                "stateMachineAliasArn",
            )?)?;
            reply(DescribeAliasOutput {
                state_machine_alias_arn: a.state_machine_alias_arn,
                name: a.name,
                description: a.description,
                routing_configuration: a
                    .routing_configuration
                    .into_iter()
                    .map(|r| RouteOut {
                        state_machine_version_arn: r.state_machine_version_arn,
                        weight: r.weight,
                    })
                    .collect(),
                creation_date: secs(a.creation_date),
                update_date: secs(a.update_date),
            })
        }
        "UpdateStateMachineAlias" => {
            let i: UpdateAliasInput = parse(body)?;
            let out = node
                .update_alias(pb::UpdateAliasRequest {
                    state_machine_alias_arn: required(
                        i.state_machine_alias_arn,
                        "stateMachineAliasArn",
                    )?,
                    description: i.description,
                    routing_configuration: match i.routing_configuration {
                        Some(r) => routes(r)?,
                        None => Vec::new(),
                    },
                })
                .await?;
            reply(UpdateAliasOutput {
                update_date: secs(out.update_date),
            })
        }
        "DeleteStateMachineAlias" => {
            let i: AliasInput = parse(body)?;
            node.delete_alias(&required(
                i.state_machine_alias_arn,
                "stateMachineAliasArn",
            )?)
            .await?;
            reply(Empty {})
        }
        "ListStateMachineAliases" => {
            let i: MachineInput = parse(body)?;
            let out = node.list_aliases(pb::ListAliasesRequest {
                state_machine_arn: required(i.state_machine_arn, "stateMachineArn")?,
                max_results: i.max_results,
                next_token: i.next_token.unwrap_or_default(),
            })?;
            reply(ListAliasesOutput {
                state_machine_aliases: out
                    .state_machine_aliases
                    .into_iter()
                    .map(|a| AliasListItem {
                        state_machine_alias_arn: a.state_machine_alias_arn,
                        creation_date: secs(a.creation_date),
                    })
                    .collect(),
                next_token: out.next_token,
            })
        }
        "StartExecution" => {
            let i: StartExecutionInput = parse(body)?;
            let out = node.start_execution(start_request(i)?).await?;
            reply(StartExecutionOutput {
                execution_arn: out.execution_arn,
                start_date: secs(out.start_date),
            })
        }
        "StartSyncExecution" => {
            let i: StartExecutionInput = parse(body)?;
            let o = node.start_sync_execution(start_request(i)?).await?;
            reply(StartSyncExecutionOutput {
                execution_arn: o.execution_arn,
                state_machine_arn: o.state_machine_arn,
                name: o.name,
                start_date: secs(o.start_date),
                stop_date: secs(o.stop_date),
                status: o.status,
                input: o.input,
                input_details: INCLUDED,
                output_details: o.output.is_some().then_some(INCLUDED),
                output: o.output,
                error: o.error,
                cause: o.cause,
            })
        }
        "StopExecution" => {
            let i: StopExecutionInput = parse(body)?;
            let out = node
                .stop_execution(pb::StopExecutionRequest {
                    execution_arn: required(i.execution_arn, "executionArn")?,
                    error: i.error.unwrap_or_default(),
                    cause: i.cause.unwrap_or_default(),
                })
                .await?;
            reply(StopExecutionOutput {
                stop_date: secs(out.stop_date),
            })
        }
        "RedriveExecution" => {
            let i: ExecutionInput = parse(body)?;
            check_length(&i.client_token, "clientToken", 1, 64)?;
            let out = node
                .redrive_execution(&required(i.execution_arn, "executionArn")?)
                .await?;
            reply(RedriveExecutionOutput {
                redrive_date: secs(out.redrive_date),
            })
        }
        "DescribeExecution" => {
            let i: ExecutionInput = parse(body)?;
            check_included_data(&i.included_data)?;
            let e = node
                .describe_execution(&required(i.execution_arn, "executionArn")?)
                .await?;
            reply(describe_execution(e))
        }
        "ListExecutions" => {
            let i: ListExecutionsInput = parse(body)?;
            let redriven = match i.redrive_filter.as_deref() {
                None => None,
                Some("REDRIVEN") => Some(true),
                Some("NOT_REDRIVEN") => Some(false),
                Some(other) => {
                    return Err(ApiError::new(
                        Code::ValidationException,
                        format!("1 validation error detected: Value '{other}' at 'redriveFilter' failed to satisfy constraint: Member must satisfy enum value set: [REDRIVEN, NOT_REDRIVEN]"),
                    ))
                }
            };
            let out = node
                .list_executions(pb::ListExecutionsRequest {
                    state_machine_arn: i.state_machine_arn.unwrap_or_default(),
                    status_filter: i.status_filter.unwrap_or_default(),
                    max_results: i.max_results,
                    next_token: i.next_token.unwrap_or_default(),
                    redrive_filter_redriven: false,
                    map_run_arn: i.map_run_arn.unwrap_or_default(),
                })
                .await?;
            reply(ListExecutionsOutput {
                executions: out
                    .executions
                    .into_iter()
                    .filter(|e| redriven.is_none_or(|r| (e.redrive_count > 0) == r))
                    .map(|e| ExecutionListItem {
                        execution_arn: e.execution_arn,
                        state_machine_arn: e.state_machine_arn,
                        name: e.name,
                        status: e.status,
                        start_date: secs(e.start_date),
                        redrive_count: e.redrive_count,
                        stop_date: secs_if(e.stop_date),
                        map_run_arn: e.map_run_arn,
                    })
                    .collect(),
                next_token: out.next_token,
            })
        }
        "GetExecutionHistory" => {
            let i: HistoryInput = parse(body)?;
            let include = i.include_execution_data.unwrap_or(true);
            let out = node
                .get_execution_history(pb::GetExecutionHistoryRequest {
                    execution_arn: required(i.execution_arn, "executionArn")?,
                    max_results: i.max_results,
                    reverse_order: i.reverse_order,
                    next_token: i.next_token.unwrap_or_default(),
                    include_execution_data: include,
                })
                .await?;
            reply(HistoryOutput {
                events: out.events.iter().map(|e| event(e, include)).collect(),
                next_token: out.next_token,
            })
        }
        "CreateActivity" => {
            let i: CreateActivityInput = parse(body)?;
            let out = node.create_activity(&required(i.name, "name")?).await?;
            reply(ActivityOutput {
                activity_arn: out.activity_arn,
                creation_date: secs(out.creation_date),
            })
        }
        "DescribeActivity" => {
            let i: ActivityInput = parse(body)?;
            let a = node.describe_activity(&required(i.activity_arn, "activityArn")?)?;
            reply(ActivityItem {
                activity_arn: a.activity_arn,
                name: a.name,
                creation_date: secs(a.creation_date),
            })
        }
        "ListActivities" => {
            let i: PageInput = parse(body)?;
            let out = node.list_activities(pb::ListActivitiesRequest {
                max_results: i.max_results,
                next_token: i.next_token.unwrap_or_default(),
            })?;
            reply(ListActivitiesOutput {
                activities: out
                    .activities
                    .into_iter()
                    .map(|a| ActivityItem {
                        activity_arn: a.activity_arn,
                        name: a.name,
                        creation_date: secs(a.creation_date),
                    })
                    .collect(),
                next_token: out.next_token,
            })
        }
        "DeleteActivity" => {
            let i: ActivityInput = parse(body)?;
            node.delete_activity(&required(i.activity_arn, "activityArn")?)
                .await?;
            reply(Empty {})
        }
        "GetActivityTask" => {
            let i: ActivityInput = parse(body)?;
            let t = node
                .get_activity_task(
                    &required(i.activity_arn, "activityArn")?,
                    &i.worker_name.unwrap_or_default(),
                    Duration::from_secs(60),
                )
                .await?;
            let got = !t.task_token.is_empty();
            reply(ActivityTaskOutput {
                task_token: t.task_token,
                input: got.then_some(t.input),
            })
        }
        "SendTaskSuccess" => {
            let i: TaskInput = parse(body)?;
            node.send_task_success(
                &required(i.task_token, "taskToken")?,
                &required(i.output, "output")?,
                0,
            )
            .await?;
            reply(Empty {})
        }
        "SendTaskFailure" => {
            let i: TaskInput = parse(body)?;
            node.send_task_failure(
                &required(i.task_token, "taskToken")?,
                &i.error.unwrap_or_default(),
                &i.cause.unwrap_or_default(),
                0,
            )
            .await?;
            reply(Empty {})
        }
        "SendTaskHeartbeat" => {
            let i: TaskInput = parse(body)?;
            node.send_task_heartbeat(&required(i.task_token, "taskToken")?)
                .await?;
            reply(Empty {})
        }
        // Trellis extras, under the same target prefix.
        "PauseExecution" | "ResumeExecution" => {
            let i: ExecutionInput = parse(body)?;
            node.pause_execution(
                &required(i.execution_arn, "executionArn")?,
                op == "PauseExecution",
            )
            .await?;
            reply(Empty {})
        }
        other => match maprun::serve(node, other, body).await {
            Some(r) => r,
            None => Err(ApiError::new(
                Code::UnknownOperationException,
                format!(
                    "Trellis does not implement the operation '{other}' (see docs/compatibility.md)"
                ),
            )),
        },
    }
}

fn start_request(i: StartExecutionInput) -> ApiResult<pb::StartExecutionRequest> {
    check_length(&i.trace_header, "traceHeader", 0, 256)?;
    check_included_data(&i.included_data)?;
    Ok(pb::StartExecutionRequest {
        state_machine_arn: required(i.state_machine_arn, "stateMachineArn")?,
        name: i.name.unwrap_or_default(),
        input: i.input.unwrap_or_default(),
    })
}

fn type_str(t: i32) -> &'static str {
    if t == pb::StateMachineType::Express as i32 {
        "EXPRESS"
    } else {
        "STANDARD"
    }
}

fn routes(items: Vec<Route>) -> ApiResult<Vec<pb::RoutingConfiguration>> {
    items
        .into_iter()
        .map(|i| {
            Ok(pb::RoutingConfiguration {
                state_machine_version_arn: required(
                    i.state_machine_version_arn,
                    "routingConfiguration.member.stateMachineVersionArn",
                )?,
                weight: required(i.weight, "routingConfiguration.member.weight")?,
            })
        })
        .collect()
}

fn describe_machine(m: pb::StateMachine) -> DescribeStateMachineOutput {
    DescribeStateMachineOutput {
        kind: type_str(m.r#type),
        creation_date: secs(m.creation_date),
        state_machine_arn: m.state_machine_arn,
        name: m.name,
        status: m.status,
        definition: m.definition,
        role_arn: m.role_arn,
        logging_configuration: LOGGING_OFF,
        tracing_configuration: TRACING_OFF,
        revision_id: m.revision_id,
        description: m.description,
    }
}

fn describe_execution(e: pb::Execution) -> DescribeExecutionOutput {
    DescribeExecutionOutput {
        start_date: secs(e.start_date),
        redrive_date: secs_if(e.redrive_date),
        stop_date: secs_if(e.stop_date),
        output_details: e.output.is_some().then_some(INCLUDED),
        map_run_arn: e.map_run_arn,
        execution_arn: e.execution_arn,
        state_machine_arn: e.state_machine_arn,
        name: e.name,
        status: e.status,
        input: e.input,
        input_details: INCLUDED,
        redrive_count: e.redrive_count,
        redrive_status: e.redrive_status,
        output: e.output,
        error: e.error,
        cause: e.cause,
        redrive_status_reason: e.redrive_status_reason,
        state_machine_version_arn: e.state_machine_version_arn,
        state_machine_alias_arn: e.state_machine_alias_arn,
        paused: e.paused,
    }
}

/// A history event; without execution data, its input, output, parameters and result are
/// replaced by `…Details: {"truncated": false}` as AWS does.
fn event(e: &pb::HistoryEvent, include_data: bool) -> HistoryEvent {
    let mut details = Map::new();
    if let Ok(Value::Object(d)) = serde_json::from_str::<Value>(&e.details_json) {
        for (k, mut v) in d {
            if !include_data {
                if let Value::Object(d) = &mut v {
                    for f in ["input", "output", "parameters", "result"] {
                        if d.remove(f).is_some() {
                            d.insert(
                                format!("{f}Details"),
                                serde_json::json!({"truncated": false}),
                            );
                        }
                    }
                }
            }
            details.insert(k, v);
        }
    }
    HistoryEvent {
        timestamp: secs(e.timestamp),
        kind: e.r#type.clone(),
        id: e.id,
        previous_event_id: e.previous_event_id,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_missing_member_and_a_mistyped_one_get_aws_errors() {
        let i: StartExecutionInput = parse(json!({"name": "n"})).unwrap();
        let e = start_request(i).unwrap_err();
        assert_eq!(e.code, Code::ValidationException);
        assert!(e.message.contains("Value null at 'stateMachineArn'"), "{e}");
        let e = parse::<StartExecutionInput>(json!({"stateMachineArn": 7})).unwrap_err();
        assert_eq!(e.code, Code::SerializationException);
        let e =
            parse::<HistoryInput>(json!({"executionArn": "a", "reverseOrder": "yes"})).unwrap_err();
        assert_eq!(e.code, Code::SerializationException, "a bool is a bool");
    }

    #[test]
    fn members_aws_defines_but_trellis_does_not_act_on_are_checked_or_named() {
        let i: StartExecutionInput = parse(json!({"stateMachineArn": "a",
            "traceHeader": "x".repeat(257)}))
        .unwrap();
        assert_eq!(
            start_request(i).unwrap_err().code,
            Code::ValidationException
        );
        let i: ExecutionInput =
            parse(json!({"executionArn": "a", "includedData": "SOME"})).unwrap();
        assert!(check_included_data(&i.included_data).is_err());
        // Accepted as AWS accepts them.
        parse::<CreateStateMachineInput>(json!({"name": "n", "definition": "{}", "roleArn": "r",
            "tags": [{"key": "k", "value": "v"}], "loggingConfiguration": {"level": "OFF"},
            "tracingConfiguration": {"enabled": false}}))
        .unwrap();
    }

    #[test]
    fn responses_keep_aws_member_order_and_leave_out_empty_members() {
        let e = pb::Execution {
            execution_arn: "arn:e".into(),
            state_machine_arn: "arn:m".into(),
            name: "n".into(),
            status: "SUCCEEDED".into(),
            start_date: 1_500,
            stop_date: 2_000,
            input: "{}".into(),
            output: Some("1".into()),
            redrive_status: "NOT_REDRIVABLE".into(),
            ..Default::default()
        };
        assert_eq!(
            reply(describe_execution(e)).unwrap(),
            r#"{"executionArn":"arn:e","stateMachineArn":"arn:m","name":"n","status":"SUCCEEDED","startDate":1.5,"input":"{}","inputDetails":{"included":true},"redriveCount":0,"redriveStatus":"NOT_REDRIVABLE","stopDate":2,"output":"1","outputDetails":{"included":true}}"#
        );
        let page = ListExecutionsOutput {
            executions: Vec::new(),
            next_token: String::new(),
        };
        assert_eq!(reply(page).unwrap(), r#"{"executions":[]}"#);
        let t = ActivityTaskOutput {
            task_token: String::new(),
            input: None,
        };
        assert_eq!(reply(t).unwrap(), "{}");
    }
}
