//! The gRPC API: any bytes as the request message of any method get a status, never a
//! panic or an INTERNAL of ours (tonic's own for undecodable protobuf is allowed).
//!
//! The input's first byte picks the method; the rest is the message (protobuf, framed as
//! gRPC frames it). Left out: GetActivityTask and StartSyncExecution (they wait by design)
//! and the Admin calls that change the cluster (drain, remove, move, partition, placement),
//! which would take the one node apart for every later input.
#![no_main]

mod common;

use axum::body::Body;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const METHODS: &[&str] = &[
    "StateMachines/CreateStateMachine",
    "StateMachines/UpdateStateMachine",
    "StateMachines/DescribeStateMachine",
    "StateMachines/ListStateMachines",
    "StateMachines/DeleteStateMachine",
    "StateMachines/ValidateStateMachineDefinition",
    "StateMachines/PublishStateMachineVersion",
    "StateMachines/ListStateMachineVersions",
    "StateMachines/DeleteStateMachineVersion",
    "StateMachines/CreateStateMachineAlias",
    "StateMachines/DescribeStateMachineAlias",
    "StateMachines/UpdateStateMachineAlias",
    "StateMachines/DeleteStateMachineAlias",
    "StateMachines/ListStateMachineAliases",
    "Executions/StartExecution",
    "Executions/StopExecution",
    "Executions/DescribeExecution",
    "Executions/ListExecutions",
    "Executions/GetExecutionHistory",
    "Executions/RedriveExecution",
    "Executions/DescribeMapRun",
    "Executions/ListMapRuns",
    "Executions/UpdateMapRun",
    "Executions/PauseExecution",
    "Executions/ResumeExecution",
    "Executions/WatchExecution",
    "Activities/CreateActivity",
    "Activities/DescribeActivity",
    "Activities/ListActivities",
    "Activities/DeleteActivity",
    "Activities/SendTaskSuccess",
    "Activities/SendTaskFailure",
    "Activities/SendTaskHeartbeat",
    "Admin/ClusterStatus",
    "Admin/ListNodes",
    "Admin/ListShards",
    "Admin/Doctor",
    "Nope/Nothing",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let method = METHODS[pick as usize % METHODS.len()];
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let req = axum::http::Request::post(format!("/trellis.v1.{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::boxed(Body::from(frame)))
        .unwrap();
    let r = common::node();
    let routes = trellis_server::grpc::routes(r.node.clone());
    r.rt.block_on(async {
        let Ok(resp) = tokio::time::timeout(common::CALL_TIMEOUT, routes.oneshot(req)).await else {
            panic!("{method} did not answer in time");
        };
        let resp = resp.unwrap();
        // A unary answer's status is in its trailers (or its headers, for an error before
        // any message); a stream (WatchExecution) is read for a moment only.
        let status = resp
            .headers()
            .get("grpc-status")
            .map(|v| v.as_bytes().to_vec());
        let message = resp
            .headers()
            .get("grpc-message")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let body = resp.into_body();
        let collected = tokio::time::timeout(
            common::CALL_TIMEOUT,
            axum::body::to_bytes(Body::new(body), 8 << 20),
        )
        .await;
        // tonic (like grpc-java) answers a message that is not valid protobuf for its type
        // with INTERNAL "failed to decode Protobuf message"; any other INTERNAL is ours.
        if status.as_deref() == Some(b"13") {
            assert!(
                message.starts_with("failed%20to%20decode")
                    || message.starts_with("failed to decode"),
                "INTERNAL from {method}: {message}"
            );
        }
        drop(collected);
    });
});
