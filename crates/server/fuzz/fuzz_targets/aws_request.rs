//! The AWS JSON API, from the body reader through the dispatcher to the node: any body
//! for any operation gets an answer, never a panic or an internal failure.
//!
//! The input's first byte picks the operation (or an unknown one); the rest is the body.
//! GetActivityTask (a 60 s long poll) and StartSyncExecution (runs an EXPRESS machine for
//! up to 5 minutes) are left out: they wait by design.
#![no_main]

mod common;

use axum::body::Body;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const OPS: &[&str] = &[
    "CreateStateMachine",
    "DescribeStateMachine",
    "DescribeStateMachineForExecution",
    "UpdateStateMachine",
    "DeleteStateMachine",
    "ListStateMachines",
    "ValidateStateMachineDefinition",
    "PublishStateMachineVersion",
    "ListStateMachineVersions",
    "DeleteStateMachineVersion",
    "CreateStateMachineAlias",
    "DescribeStateMachineAlias",
    "UpdateStateMachineAlias",
    "DeleteStateMachineAlias",
    "ListStateMachineAliases",
    "StartExecution",
    "StopExecution",
    "RedriveExecution",
    "DescribeExecution",
    "ListExecutions",
    "GetExecutionHistory",
    "CreateActivity",
    "DescribeActivity",
    "ListActivities",
    "DeleteActivity",
    "SendTaskSuccess",
    "SendTaskFailure",
    "SendTaskHeartbeat",
    "DescribeMapRun",
    "ListMapRuns",
    "UpdateMapRun",
    "TagResource",
    "NoSuchOperation",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let op = OPS[pick as usize % OPS.len()];
    let r = common::node();
    let req = axum::http::Request::post("/")
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AWSStepFunctions.{op}"))
        .body(Body::from(body.to_vec()))
        .unwrap();
    let app = trellis_server::aws::router(r.node.clone());
    let answered = r.rt.block_on(async {
        let resp = tokio::time::timeout(common::CALL_TIMEOUT, app.oneshot(req)).await;
        let resp = resp.expect("the AWS API answers in time").unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 8 << 20)
            .await
            .unwrap();
        (status, bytes)
    });
    let (status, bytes) = answered;
    assert_ne!(
        status.as_u16(),
        500,
        "internal failure for {op}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if !status.is_success() {
        let text = std::str::from_utf8(&bytes).expect("UTF-8 error body");
        assert!(
            text.starts_with("{\"__type\":"),
            "not AWS's error shape: {text}"
        );
    }
});
