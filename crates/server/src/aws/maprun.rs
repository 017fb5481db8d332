//! The Map Run actions of the AWS JSON API: `DescribeMapRun`, `ListMapRuns` and
//! `UpdateMapRun`.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use trellis_cluster::ApiResult;
use trellis_proto::v1 as pb;

use super::shapes::{required, secs, secs_if};
use super::{parse, reply};
use crate::node::Node;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeMapRunInput {
    map_run_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateMapRunInput {
    map_run_arn: Option<String>,
    max_concurrency: Option<u64>,
    tolerated_failure_count: Option<u64>,
    tolerated_failure_percentage: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMapRunsInput {
    execution_arn: Option<String>,
    #[serde(default)]
    max_results: u32,
    next_token: Option<String>,
}

/// `MapRunItemCounts` and `MapRunExecutionCounts`; `resultsWritten`, `failuresNotRedrivable`
/// and `pendingRedrive` are not counted (0).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    pending: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    timed_out: u64,
    aborted: u64,
    total: u64,
    results_written: u64,
    failures_not_redrivable: u64,
    pending_redrive: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeMapRunOutput {
    map_run_arn: String,
    execution_arn: String,
    status: String,
    start_date: Number,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_date: Option<Number>,
    max_concurrency: u64,
    tolerated_failure_percentage: f64,
    tolerated_failure_count: u64,
    item_counts: Counts,
    execution_counts: Counts,
    redrive_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    redrive_date: Option<Number>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MapRunListItem {
    execution_arn: String,
    map_run_arn: String,
    state_machine_arn: String,
    start_date: Number,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_date: Option<Number>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMapRunsOutput {
    map_runs: Vec<MapRunListItem>,
    #[serde(skip_serializing_if = "String::is_empty")]
    next_token: String,
}

fn counts(c: Option<pb::MapRunCounts>) -> Counts {
    let c = c.unwrap_or_default();
    Counts {
        pending: c.pending,
        running: c.running,
        succeeded: c.succeeded,
        failed: c.failed,
        timed_out: c.timed_out,
        aborted: c.aborted,
        total: c.total,
        results_written: 0,
        failures_not_redrivable: 0,
        pending_redrive: 0,
    }
}

/// Serves a Map Run action; `None` for any other action.
pub(super) async fn serve(node: &Node, op: &str, body: Value) -> Option<ApiResult<String>> {
    Some(match op {
        "DescribeMapRun" => describe(node, body).await,
        "ListMapRuns" => list(node, body).await,
        "UpdateMapRun" => update(node, body).await,
        _ => return None,
    })
}

async fn describe(node: &Node, body: Value) -> ApiResult<String> {
    let i: DescribeMapRunInput = parse(body)?;
    let m = node
        .describe_map_run(&required(i.map_run_arn, "mapRunArn")?)
        .await?;
    reply(DescribeMapRunOutput {
        start_date: secs(m.start_date),
        stop_date: secs_if(m.stop_date),
        map_run_arn: m.map_run_arn,
        execution_arn: m.execution_arn,
        status: m.status,
        max_concurrency: m.max_concurrency,
        tolerated_failure_percentage: m.tolerated_failure_percentage,
        tolerated_failure_count: m.tolerated_failure_count,
        item_counts: counts(m.item_counts),
        execution_counts: counts(m.execution_counts),
        redrive_count: m.redrive_count,
        redrive_date: secs_if(m.redrive_date),
    })
}

async fn update(node: &Node, body: Value) -> ApiResult<String> {
    let i: UpdateMapRunInput = parse(body)?;
    node.update_map_run(pb::UpdateMapRunRequest {
        map_run_arn: required(i.map_run_arn, "mapRunArn")?,
        max_concurrency: i.max_concurrency,
        tolerated_failure_count: i.tolerated_failure_count,
        tolerated_failure_percentage: i.tolerated_failure_percentage,
        execution_arn: String::new(),
    })
    .await?;
    reply(Empty {})
}

async fn list(node: &Node, body: Value) -> ApiResult<String> {
    let i: ListMapRunsInput = parse(body)?;
    let out = node
        .list_map_runs(pb::ListMapRunsRequest {
            execution_arn: required(i.execution_arn, "executionArn")?,
            max_results: i.max_results,
            next_token: i.next_token.unwrap_or_default(),
        })
        .await?;
    reply(ListMapRunsOutput {
        map_runs: out
            .map_runs
            .into_iter()
            .map(|m| MapRunListItem {
                start_date: secs(m.start_date),
                stop_date: secs_if(m.stop_date),
                execution_arn: m.execution_arn,
                map_run_arn: m.map_run_arn,
                state_machine_arn: m.state_machine_arn,
            })
            .collect(),
        next_token: out.next_token,
    })
}
