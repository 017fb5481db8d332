//! The request and response bodies of the AWS Step Functions JSON API, as AWS names them.
//!
//! Requests list every member AWS defines. Members Trellis does not act on are named here
//! too, with the reason, so none is dropped without a word (`docs/compatibility.md` lists
//! them); members AWS does not define are ignored, as AWS's own servers do. Required members
//! are `Option`s checked with [`required`], so a missing one gets AWS's message. Responses
//! serialize in the order AWS writes its members; optional ones are left out when empty.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use trellis_proto::{ApiError, Code};

/// AWS's error for a missing required member.
pub fn missing(field: &str) -> ApiError {
    ApiError::new(
        Code::ValidationException,
        format!("1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"),
    )
}

/// `includedData`: ALL_DATA or METADATA_ONLY.
pub fn check_included_data(v: &Option<String>) -> Result<(), ApiError> {
    match v.as_deref() {
        None | Some("ALL_DATA" | "METADATA_ONLY") => Ok(()),
        Some(other) => Err(ApiError::new(
            Code::ValidationException,
            format!("1 validation error detected: Value '{other}' at 'includedData' failed to satisfy constraint: Member must satisfy enum value set: [ALL_DATA, METADATA_ONLY]"),
        )),
    }
}

/// A string member's length, as AWS constrains it.
pub fn check_length(
    v: &Option<String>,
    field: &str,
    min: usize,
    max: usize,
) -> Result<(), ApiError> {
    let Some(s) = v else { return Ok(()) };
    let n = s.chars().count();
    if n < min {
        return Err(ApiError::new(
            Code::ValidationException,
            format!("1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must have length greater than or equal to {min}"),
        ));
    }
    if n > max {
        return Err(ApiError::new(
            Code::ValidationException,
            format!("1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// A required member's value.
pub fn required<T>(v: Option<T>, field: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| missing(field))
}

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

/// Members accepted and not acted on: Trellis records no CloudWatch logs or X-Ray traces,
/// keeps no tags and encrypts with no KMS key (docs/compatibility.md).
#[derive(Debug, Default, Deserialize)]
pub struct NotActedOn {
    #[serde(default, rename = "loggingConfiguration")]
    pub _logging_configuration: Option<Value>,
    #[serde(default, rename = "tracingConfiguration")]
    pub _tracing_configuration: Option<Value>,
    #[serde(default, rename = "encryptionConfiguration")]
    pub _encryption_configuration: Option<Value>,
}

// ------------------------------------------------------------ requests

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateStateMachineInput {
    pub name: Option<String>,
    pub definition: Option<String>,
    pub role_arn: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub publish: bool,
    pub version_description: Option<String>,
    /// Accepted, not kept (docs/compatibility.md: tagging is not implemented).
    #[serde(default, rename = "tags")]
    pub _tags: Option<Value>,
    #[serde(flatten)]
    pub _not_acted_on: NotActedOn,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStateMachineInput {
    pub state_machine_arn: Option<String>,
    pub definition: Option<String>,
    pub role_arn: Option<String>,
    #[serde(default)]
    pub publish: bool,
    pub version_description: Option<String>,
    #[serde(flatten)]
    pub _not_acted_on: NotActedOn,
}

/// DescribeStateMachine, DeleteStateMachine, ListStateMachineVersions and
/// ListStateMachineAliases name a machine; the list calls page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineInput {
    pub state_machine_arn: Option<String>,
    #[serde(default)]
    pub max_results: u32,
    pub next_token: Option<String>,
    /// Describe's `includedData` (ALL_DATA or METADATA_ONLY, checked): Trellis has no
    /// encrypted fields to leave out, so both answer the same.
    #[serde(default)]
    pub included_data: Option<String>,
}

/// ListStateMachines and ListActivities.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInput {
    #[serde(default)]
    pub max_results: u32,
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateInput {
    pub definition: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub severity: Option<String>,
    #[serde(default)]
    pub max_results: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishVersionInput {
    pub state_machine_arn: Option<String>,
    pub revision_id: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInput {
    pub state_machine_version_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub state_machine_version_arn: Option<String>,
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAliasInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub routing_configuration: Option<Vec<Route>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAliasInput {
    pub state_machine_alias_arn: Option<String>,
    pub description: Option<String>,
    pub routing_configuration: Option<Vec<Route>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasInput {
    pub state_machine_alias_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartExecutionInput {
    pub state_machine_arn: Option<String>,
    pub name: Option<String>,
    pub input: Option<String>,
    /// Checked (at most 256 characters), not acted on: Trellis records no X-Ray traces.
    #[serde(default)]
    pub trace_header: Option<String>,
    /// StartSyncExecution's `includedData` (checked): as for Describe, both values answer
    /// the same.
    #[serde(default)]
    pub included_data: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopExecutionInput {
    pub execution_arn: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// DescribeExecution, DescribeStateMachineForExecution, RedriveExecution, and Trellis's
/// PauseExecution and ResumeExecution name an execution.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionInput {
    pub execution_arn: Option<String>,
    /// RedriveExecution's idempotency token (checked: 1 to 64 characters). A redrive of a
    /// running execution fails, so a retried redrive cannot run twice; the token is not
    /// needed for that.
    #[serde(default)]
    pub client_token: Option<String>,
    #[serde(default)]
    pub included_data: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListExecutionsInput {
    pub state_machine_arn: Option<String>,
    pub status_filter: Option<String>,
    #[serde(default)]
    pub max_results: u32,
    pub next_token: Option<String>,
    pub map_run_arn: Option<String>,
    pub redrive_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryInput {
    pub execution_arn: Option<String>,
    #[serde(default)]
    pub max_results: u32,
    #[serde(default)]
    pub reverse_order: bool,
    pub next_token: Option<String>,
    pub include_execution_data: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateActivityInput {
    pub name: Option<String>,
    /// Accepted, not kept (tagging is not implemented).
    #[serde(default, rename = "tags")]
    pub _tags: Option<Value>,
    /// Accepted, not acted on (no KMS).
    #[serde(default, rename = "encryptionConfiguration")]
    pub _encryption_configuration: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityInput {
    pub activity_arn: Option<String>,
    pub worker_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskInput {
    pub task_token: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

// ------------------------------------------------------------ responses

/// `{}`.
#[derive(Debug, Serialize)]
pub struct Empty {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateStateMachineOutput {
    pub state_machine_arn: String,
    pub creation_date: Number,
    #[serde(skip_serializing_if = "is_empty")]
    pub state_machine_version_arn: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingConfiguration {
    pub level: &'static str,
    pub include_execution_data: bool,
}

#[derive(Debug, Serialize)]
pub struct TracingConfiguration {
    pub enabled: bool,
}

/// Logging OFF and tracing off: what Trellis does.
pub const LOGGING_OFF: LoggingConfiguration = LoggingConfiguration {
    level: "OFF",
    include_execution_data: false,
};
pub const TRACING_OFF: TracingConfiguration = TracingConfiguration { enabled: false };

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeStateMachineOutput {
    pub state_machine_arn: String,
    pub name: String,
    pub status: String,
    pub definition: String,
    pub role_arn: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub creation_date: Number,
    pub logging_configuration: LoggingConfiguration,
    pub tracing_configuration: TracingConfiguration,
    #[serde(skip_serializing_if = "is_empty")]
    pub revision_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeStateMachineForExecutionOutput {
    pub state_machine_arn: String,
    pub name: String,
    pub definition: String,
    pub role_arn: String,
    pub logging_configuration: LoggingConfiguration,
    pub tracing_configuration: TracingConfiguration,
    #[serde(skip_serializing_if = "is_empty")]
    pub revision_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    pub update_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStateMachineOutput {
    pub update_date: Number,
    pub revision_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub state_machine_version_arn: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateMachineListItem {
    pub state_machine_arn: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub creation_date: Number,
}

/// The list calls' pages: the items under AWS's name for them, then the token (left out on
/// the last page).
macro_rules! pages {
    ($($name:ident { $field:ident: $item:ty })*) => {$(
        #[derive(Debug, Serialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub $field: Vec<$item>,
            #[serde(skip_serializing_if = "is_empty")]
            pub next_token: String,
        }
    )*};
}

pages! {
    ListStateMachinesOutput { state_machines: StateMachineListItem }
    ListVersionsOutput { state_machine_versions: VersionListItem }
    ListAliasesOutput { state_machine_aliases: AliasListItem }
    ListExecutionsOutput { executions: ExecutionListItem }
    HistoryOutput { events: HistoryEvent }
    ListActivitiesOutput { activities: ActivityItem }
}

#[derive(Debug, Serialize)]
pub struct Diagnostic {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub location: String,
}

#[derive(Debug, Serialize)]
pub struct ValidateOutput {
    pub result: String,
    pub diagnostics: Vec<Diagnostic>,
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishVersionOutput {
    pub creation_date: Number,
    pub state_machine_version_arn: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionListItem {
    pub state_machine_version_arn: String,
    pub creation_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAliasOutput {
    pub state_machine_alias_arn: String,
    pub creation_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteOut {
    pub state_machine_version_arn: String,
    pub weight: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeAliasOutput {
    pub state_machine_alias_arn: String,
    pub name: String,
    pub description: String,
    pub routing_configuration: Vec<RouteOut>,
    pub creation_date: Number,
    pub update_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAliasOutput {
    pub update_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasListItem {
    pub state_machine_alias_arn: String,
    pub creation_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartExecutionOutput {
    pub execution_arn: String,
    pub start_date: Number,
}

/// `{"included": true}`: the data is in the response.
#[derive(Debug, Serialize)]
pub struct Included {
    pub included: bool,
}

pub const INCLUDED: Included = Included { included: true };

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartSyncExecutionOutput {
    pub execution_arn: String,
    pub state_machine_arn: String,
    pub name: String,
    pub start_date: Number,
    pub stop_date: Number,
    pub status: String,
    pub input: String,
    pub input_details: Included,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_details: Option<Included>,
    #[serde(skip_serializing_if = "is_empty")]
    pub error: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub cause: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopExecutionOutput {
    pub stop_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveExecutionOutput {
    pub redrive_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeExecutionOutput {
    pub execution_arn: String,
    pub state_machine_arn: String,
    pub name: String,
    pub status: String,
    pub start_date: Number,
    pub input: String,
    pub input_details: Included,
    pub redrive_count: u32,
    pub redrive_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redrive_date: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_date: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_details: Option<Included>,
    /// A DISTRIBUTED Map's child: the Map Run that started it.
    #[serde(skip_serializing_if = "is_empty")]
    pub map_run_arn: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub error: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub cause: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub redrive_status_reason: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub state_machine_version_arn: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub state_machine_alias_arn: String,
    /// Trellis extra: a paused execution starts no new state until resumed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionListItem {
    pub execution_arn: String,
    pub state_machine_arn: String,
    pub name: String,
    pub status: String,
    pub start_date: Number,
    pub redrive_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_date: Option<Number>,
    #[serde(skip_serializing_if = "is_empty")]
    pub map_run_arn: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEvent {
    pub timestamp: Number,
    #[serde(rename = "type")]
    pub kind: String,
    pub id: u64,
    pub previous_event_id: u64,
    /// The one `…EventDetails` member of the event's type.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityOutput {
    pub activity_arn: String,
    pub creation_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityItem {
    pub activity_arn: String,
    pub name: String,
    pub creation_date: Number,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityTaskOutput {
    #[serde(skip_serializing_if = "is_empty")]
    pub task_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// Epoch milliseconds as AWS's epoch seconds (a JSON number with a fraction).
pub(super) fn secs(ms: i64) -> Number {
    match trellis_asl::json::number_from_f64(ms as f64 / 1000.0) {
        Value::Number(n) => n,
        // A finite f64 always makes a number; 0 stands in should that ever change.
        _ => Number::from(0),
    }
}

pub(super) fn secs_if(ms: i64) -> Option<Number> {
    (ms != 0).then(|| secs(ms))
}

/// The largest AWS API request body taken: a definition of up to 1 MiB (AWS's limit), JSON
/// escaped inside the request, and then some.
pub(super) const MAX_REQUEST_BYTES: usize = 4 << 20;

/// A request's body, or AWS's error when it cannot be taken: one whose `Content-Length` is
/// over [`MAX_REQUEST_BYTES`] is refused from its headers, before it is read; one without a
/// length is read up to the limit, not beyond.
pub(super) async fn body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::ValidationException,
            format!(
                "1 validation error detected: the request body is larger than {MAX_REQUEST_BYTES} bytes"
            ),
        )
    };
    let declared = (headers.get("content-length"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    // A chunked body over the limit, or one cut off.
    axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|e| {
            ApiError::new(
                Code::ValidationException,
                format!(
                    "The request body could not be read whole within {MAX_REQUEST_BYTES} bytes: {e}"
                ),
            )
        })
}
