//! The gRPC API on a node started in-process on port 0.

use std::time::Duration;

use serde_json::json;
use trellis_client::{v1 as pb, Client, Code};
use trellis_server::config::Config;
use trellis_server::node::Node;
use trellis_server::serve::Listeners;

struct Running {
    client: Client,
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.served.await.unwrap().unwrap();
    }
}

async fn start() -> Running {
    start_with(|_| {}).await
}

async fn start_with(tune: impl FnOnce(&mut Config)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.node.data_dir = dir.path().join("data");
    cfg.cluster.shards = 4;
    tune(&mut cfg);
    cfg.node.grpc_addr = "127.0.0.1:0".into();
    cfg.node.http_addr = "127.0.0.1:0".into();
    cfg.node.peer_addr = "127.0.0.1:0".into();
    let listeners = Listeners::bind(&mut cfg).await.unwrap();
    let addr = cfg.node.grpc_addr.clone();
    let node = Node::start(cfg).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let served = tokio::spawn(trellis_server::serve::serve(node, listeners, async move {
        let _ = rx.await;
    }));
    let endpoint = format!("http://{addr}");
    let client = Client::connect(&endpoint).await.unwrap();
    Running {
        client,
        endpoint,
        stop: Some(tx),
        served,
        _dir: dir,
    }
}

async fn create(c: &mut Client, name: &str, def: serde_json::Value) -> String {
    c.state_machines
        .create_state_machine(pb::CreateStateMachineRequest {
            name: name.into(),
            definition: def.to_string(),
            role_arn: "arn:aws:iam::000000000000:role/r".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state_machine_arn
}

async fn describe(c: &mut Client, arn: &str) -> pb::Execution {
    c.executions
        .describe_execution(pb::DescribeExecutionRequest {
            execution_arn: arn.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_history_and_errors() {
    let mut r = start().await;
    let c = &mut r.client;
    let sm = create(
        c,
        "Watched",
        json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Next": "W"},
            "W": {"Type": "Wait", "Seconds": 1, "Next": "B"},
            "B": {"Type": "Pass", "Result": "done", "End": true}}}),
    )
    .await;
    let e = c
        .executions
        .start_execution(pb::StartExecutionRequest {
            state_machine_arn: sm,
            name: "w1".into(),
            input: "{}".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = c
        .executions
        .watch_execution(pb::WatchExecutionRequest {
            execution_arn: e.execution_arn.clone(),
            after_event_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut watched = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the watch ends")
        .unwrap()
    {
        watched.push(ev);
    }
    let types: Vec<&str> = watched.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types.first(), Some(&"ExecutionStarted"));
    assert_eq!(types.last(), Some(&"ExecutionSucceeded"));
    let history = c
        .executions
        .get_execution_history(pb::GetExecutionHistoryRequest {
            execution_arn: e.execution_arn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(history, watched);
    let d = describe(c, &e.execution_arn).await;
    assert_eq!(
        (d.status.as_str(), d.output.as_deref()),
        ("SUCCEEDED", Some("\"done\""))
    );

    // Errors carry the AWS exception name in the status details.
    let err = c
        .executions
        .describe_execution(pb::DescribeExecutionRequest {
            execution_arn: "arn:aws:states:us-east-1:000000000000:execution:Watched:none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let api = trellis_client::ApiError::from_status(&err);
    assert_eq!(api.code, Code::ExecutionDoesNotExist);
    let err = c
        .state_machines
        .describe_state_machine(pb::DescribeStateMachineRequest {
            state_machine_arn: "not-an-arn".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        trellis_client::ApiError::from_status(&err).code,
        Code::InvalidArn
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_pause_and_resume() {
    let mut r = start().await;
    let c = &mut r.client;
    let act = c
        .activities
        .create_activity(pb::CreateActivityRequest { name: "job".into() })
        .await
        .unwrap()
        .into_inner()
        .activity_arn;
    let sm = create(
        c,
        "Worked",
        json!({"StartAt": "W", "States": {
            "W": {"Type": "Wait", "Seconds": 3, "Next": "T"},
            "T": {"Type": "Task", "Resource": act, "End": true}}}),
    )
    .await;
    let arn = c
        .executions
        .start_execution(pb::StartExecutionRequest {
            state_machine_arn: sm,
            name: "p1".into(),
            input: r#"{"job": 1}"#.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .execution_arn;
    // Paused during the Wait: the Task state does not start until Resume.
    c.executions
        .pause_execution(pb::PauseExecutionRequest {
            execution_arn: arn.clone(),
        })
        .await
        .unwrap();
    assert!(describe(c, &arn).await.paused);
    // Past the Wait's end: the Wait completes, but the next state does not start.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let history = c
        .executions
        .get_execution_history(pb::GetExecutionHistoryRequest {
            execution_arn: arn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(!history.iter().any(|e| e.r#type == "TaskStateEntered"));
    c.executions
        .resume_execution(pb::ResumeExecutionRequest {
            execution_arn: arn.clone(),
        })
        .await
        .unwrap();
    let task = c
        .activities
        .get_activity_task(pb::GetActivityTaskRequest {
            activity_arn: act,
            worker_name: "w".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.input, r#"{"job":1}"#);
    c.activities
        .send_task_success(pb::SendTaskSuccessRequest {
            task_token: task.task_token.clone(),
            output: r#"{"ok":true}"#.into(),
            request_id: 77,
        })
        .await
        .unwrap();
    // The same call again (its reply lost, say) succeeds; another call finds the task
    // closed, as on AWS.
    c.activities
        .send_task_success(pb::SendTaskSuccessRequest {
            task_token: task.task_token.clone(),
            output: r#"{"ok":true}"#.into(),
            request_id: 77,
        })
        .await
        .unwrap();
    let again = c
        .activities
        .send_task_success(pb::SendTaskSuccessRequest {
            task_token: task.task_token,
            output: r#"{"ok":true}"#.into(),
            request_id: 78,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let mut d = describe(c, &arn).await;
    for _ in 0..500 {
        if d.status != "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        d = describe(c, &arn).await;
    }
    assert_eq!(d.status, "SUCCEEDED");
    assert!(!d.paused);
    assert_eq!(d.output.as_deref(), Some(r#"{"ok":true}"#));
    // A healthy node: the detector scans and finds nothing.
    let doc = c.admin.doctor(pb::Empty {}).await.unwrap().into_inner();
    assert!(doc.findings.is_empty(), "{:?}", doc.findings);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_queues_in_order() {
    let mut r = start().await;
    let c = &mut r.client;
    let sm = c
        .state_machines
        .create_state_machine(pb::CreateStateMachineRequest {
            name: "Capped".into(),
            definition: json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 1, "End": true}}})
                .to_string(),
            role_arn: "arn:aws:iam::000000000000:role/r".into(),
            settings: Some(pb::StateMachineSettings {
                max_concurrent_executions: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state_machine_arn;
    let mut arns = Vec::new();
    for i in 0..4 {
        arns.push(
            c.executions
                .start_execution(pb::StartExecutionRequest {
                    state_machine_arn: sm.clone(),
                    name: format!("q{i}"),
                    input: "{}".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .execution_arn,
        );
    }
    // One runs; the others wait, visible as QUEUED, and are not rejected.
    let statuses: Vec<String> = {
        let mut v = Vec::new();
        for a in &arns {
            v.push(describe(c, a).await.status);
        }
        v
    };
    assert_eq!(statuses, ["RUNNING", "QUEUED", "QUEUED", "QUEUED"]);
    // A queued execution can be stopped; it never runs.
    c.executions
        .stop_execution(pb::StopExecutionRequest {
            execution_arn: arns[3].clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut done = Vec::new();
    for _ in 0..1000 {
        done.clear();
        for a in &arns {
            let d = describe(c, a).await;
            done.push((d.status, d.start_date, d.stop_date));
        }
        if done.iter().all(|d| d.0 != "RUNNING" && d.0 != "QUEUED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st: Vec<&str> = done.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(st, ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "ABORTED"]);
    // Admitted in start order: each one stops before the next can finish its 1 s Wait.
    assert!(done[0].2 <= done[1].2 && done[1].2 <= done[2].2);
    let history = c
        .executions
        .get_execution_history(pb::GetExecutionHistoryRequest {
            execution_arn: arns[3].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        history.is_empty(),
        "a queued execution that was stopped never ran"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_executions_time_out() {
    // Five minutes by default; one second here.
    let mut r = start_with(|c| c.cluster.express_max_seconds = 1).await;
    let c = &mut r.client;
    let sm = c
        .state_machines
        .create_state_machine(pb::CreateStateMachineRequest {
            name: "LongExpress".into(),
            definition: json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": true}}})
                .to_string(),
            role_arn: "arn:aws:iam::000000000000:role/r".into(),
            r#type: pb::StateMachineType::Express as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state_machine_arn;
    let out = c
        .executions
        .start_sync_execution(pb::StartExecutionRequest {
            state_machine_arn: sm,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.status, "TIMED_OUT");
    assert_eq!(out.error, "States.Timeout");
    r.stop().await;
}

/// A principals file: an operator and a reader, each with a bearer token.
const PRINCIPALS: &str = r#"
[[principals]]
name = "ops"
tokens = ["ops-token-0123456789"]
roles = ["operator"]

[[principals]]
name = "reader"
tokens = ["reader-token-0123456789"]
roles = ["read-only"]
"#;

const ROOT_TOKEN: &str = "root-token-0123456789";

async fn as_(endpoint: &str, token: Option<&str>) -> Client {
    let options = trellis_client::Options {
        token: token.map(String::from),
        ..Default::default()
    };
    Client::connect_with(endpoint, &options).await.unwrap()
}

fn refusal<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> (tonic::Code, Code) {
    let s = r.unwrap_err();
    (s.code(), trellis_client::ApiError::from_status(&s).code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_a_token_and_a_policy_that_allows_them() {
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("principals.toml");
    std::fs::write(&file, PRINCIPALS).unwrap();
    let path = file.display().to_string();
    let node = start_with(move |c| {
        c.auth.root_access_key_id = "AKROOT".into();
        c.auth.root_secret_access_key = "root-secret".into();
        c.auth.root_token = ROOT_TOKEN.into();
        c.auth.principals_file = path;
    })
    .await;
    let list = pb::ListStateMachinesRequest::default();
    // No token, a token nobody has, a malformed header.
    let mut anonymous = as_(&node.endpoint, None).await;
    assert_eq!(
        refusal(
            anonymous
                .state_machines
                .list_state_machines(list.clone())
                .await
        ),
        (
            tonic::Code::Unauthenticated,
            Code::MissingAuthenticationTokenException
        )
    );
    let mut stranger = as_(&node.endpoint, Some("not-a-token-of-anyone")).await;
    assert_eq!(
        refusal(
            stranger
                .state_machines
                .list_state_machines(list.clone())
                .await
        ),
        (
            tonic::Code::Unauthenticated,
            Code::UnrecognizedClientException
        )
    );
    // Root may do everything; the reader reads; the operator runs executions.
    let mut root = as_(&node.endpoint, Some(ROOT_TOKEN)).await;
    let def = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}});
    let machine = create(&mut root, "Guarded", def.clone()).await;
    let mut reader = as_(&node.endpoint, Some("reader-token-0123456789")).await;
    let listed = reader
        .state_machines
        .list_state_machines(list.clone())
        .await
        .unwrap();
    assert_eq!(listed.into_inner().state_machines.len(), 1);
    let start = pb::StartExecutionRequest {
        state_machine_arn: machine.clone(),
        ..Default::default()
    };
    let denied = reader
        .executions
        .start_execution(start.clone())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let e = trellis_client::ApiError::from_status(&denied);
    assert_eq!(e.code, Code::AccessDeniedException);
    assert!(
        e.message.contains("user/reader is not authorized to perform: states:StartExecution on resource: arn:aws:states:"),
        "{}",
        e.message
    );
    let mut ops = as_(&node.endpoint, Some("ops-token-0123456789")).await;
    let arn = ops
        .executions
        .start_execution(start.clone())
        .await
        .unwrap()
        .into_inner()
        .execution_arn;
    assert_eq!(describe(&mut ops, &arn).await.execution_arn, arn);
    // Machines and the cluster are the admin's.
    assert_eq!(
        refusal(
            ops.state_machines
                .delete_state_machine(pb::DeleteStateMachineRequest {
                    state_machine_arn: machine.clone()
                })
                .await
        )
        .1,
        Code::AccessDeniedException
    );
    assert_eq!(
        refusal(
            ops.admin
                .set_placement(pb::SetPlacementRequest { paused: true })
                .await
        )
        .0,
        tonic::Code::PermissionDenied
    );
    assert!(reader.admin.list_shards(pb::Empty {}).await.is_ok());
    // Revoked: the reader's token goes from the file; the node reads it again within a
    // second or two (bounded wait).
    std::fs::write(
        &file,
        PRINCIPALS
            .split("[[principals]]")
            .take(2)
            .collect::<Vec<_>>()
            .join("[[principals]]"),
    )
    .unwrap();
    let mut revoked = false;
    for _ in 0..100 {
        match reader
            .state_machines
            .list_state_machines(list.clone())
            .await
        {
            Err(s)
                if trellis_client::ApiError::from_status(&s).code
                    == Code::UnrecognizedClientException =>
            {
                revoked = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(revoked, "the reader's token still works");
    assert!(ops.state_machines.list_state_machines(list).await.is_ok());
    drop((anonymous, stranger, root, reader, ops));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_takes_client_certificates_as_principals() {
    use trellis_tls::certs::{Authority, Usage};
    let files = tempfile::tempdir().unwrap();
    let path = |f: &str| files.path().join(f);
    let ca = Authority::generate().unwrap();
    std::fs::write(path("ca.pem"), ca.cert_pem()).unwrap();
    let issue = |name: &str, usage| {
        let sans = if usage == Usage::Node {
            vec!["127.0.0.1".to_string()]
        } else {
            vec![]
        };
        let c = ca.issue(name, &sans, usage).unwrap();
        std::fs::write(path(&format!("{name}.pem")), c.cert_pem).unwrap();
        std::fs::write(path(&format!("{name}-key.pem")), c.key_pem).unwrap();
    };
    issue("node", Usage::Node);
    for who in ["root", "ops", "nobody"] {
        issue(who, Usage::Client);
    }
    std::fs::write(path("principals.toml"), PRINCIPALS).unwrap();
    let p = |f: &str| path(f).display().to_string();
    let (cert, key, client_ca, principals) = (
        p("node.pem"),
        p("node-key.pem"),
        p("ca.pem"),
        p("principals.toml"),
    );
    let node = start_with(move |c| {
        c.auth.root_access_key_id = "AKROOT".into();
        c.auth.root_secret_access_key = "root-secret".into();
        c.auth.principals_file = principals;
        c.tls.cert_file = cert;
        c.tls.key_file = key;
        c.tls.client_ca_file = client_ca;
    })
    .await;
    let https = node.endpoint.replace("http://", "https://");
    let with_cert = |who: &str| trellis_client::Options {
        ca: Some(path("ca.pem")),
        cert: Some(path(&format!("{who}.pem"))),
        key: Some(path(&format!("{who}-key.pem"))),
        ..Default::default()
    };
    let list = pb::ListStateMachinesRequest::default();
    // Root's certificate: root.
    let mut root = Client::connect_with(&https, &with_cert("root"))
        .await
        .unwrap();
    let def = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}});
    let machine = create(&mut root, "OverTls", def).await;
    // The operator's certificate: what the operator may do, and no more.
    let mut ops = Client::connect_with(&https, &with_cert("ops"))
        .await
        .unwrap();
    let start = pb::StartExecutionRequest {
        state_machine_arn: machine.clone(),
        ..Default::default()
    };
    let arn = ops
        .executions
        .start_execution(start)
        .await
        .unwrap()
        .into_inner()
        .execution_arn;
    assert_eq!(describe(&mut ops, &arn).await.execution_arn, arn);
    let delete = pb::DeleteStateMachineRequest {
        state_machine_arn: machine.clone(),
    };
    assert_eq!(
        refusal(ops.state_machines.delete_state_machine(delete).await),
        (tonic::Code::PermissionDenied, Code::AccessDeniedException)
    );
    // A certificate of the CA that names no principal.
    let mut nobody = Client::connect_with(&https, &with_cert("nobody"))
        .await
        .unwrap();
    assert_eq!(
        refusal(
            nobody
                .state_machines
                .list_state_machines(list.clone())
                .await
        ),
        (
            tonic::Code::Unauthenticated,
            Code::UnrecognizedClientException
        )
    );
    // No certificate, or plaintext: no call gets through.
    let bare = trellis_client::Options {
        ca: Some(path("ca.pem")),
        ..Default::default()
    };
    if let Ok(mut c) = Client::connect_with(&https, &bare).await {
        assert!(c
            .state_machines
            .list_state_machines(list.clone())
            .await
            .is_err());
    }
    if let Ok(mut c) = Client::connect(&node.endpoint).await {
        assert!(c
            .state_machines
            .list_state_machines(list.clone())
            .await
            .is_err());
    }
    drop((root, ops, nobody));
    node.stop().await;
}

/// Polls DescribeExecution until the execution is gone (bounded: 30 s).
async fn gone(c: &mut Client, arn: &str) -> bool {
    for _ in 0..300 {
        match c
            .executions
            .describe_execution(pb::DescribeExecutionRequest {
                execution_arn: arn.into(),
            })
            .await
        {
            Err(e) => {
                let api = trellis_client::ApiError::from_status(&e);
                assert_eq!(api.code, Code::ExecutionDoesNotExist, "{e}");
                return true;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_executions_are_deleted_after_the_retention() {
    let mut r = start_with(|c| {
        c.cluster.retention = Some(Duration::from_secs(1));
    })
    .await;
    let c = &mut r.client;
    let pass = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}});
    let short = create(c, "Short", pass.clone()).await;
    let long = c
        .state_machines
        .create_state_machine(pb::CreateStateMachineRequest {
            name: "Long".into(),
            definition: pass.to_string(),
            role_arn: "arn:aws:iam::000000000000:role/r".into(),
            settings: Some(pb::StateMachineSettings {
                retention_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state_machine_arn;
    let described = c
        .state_machines
        .describe_state_machine(pb::DescribeStateMachineRequest {
            state_machine_arn: long.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.settings.unwrap().retention_seconds, Some(3600));
    let mut started = Vec::new();
    for sm in [&short, &long] {
        started.push(
            c.executions
                .start_execution(pb::StartExecutionRequest {
                    state_machine_arn: sm.clone(),
                    name: "e".into(),
                    input: "{}".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .execution_arn,
        );
    }
    assert!(gone(c, &started[0]).await, "never deleted");
    let list = |sm: &str| pb::ListExecutionsRequest {
        state_machine_arn: sm.into(),
        ..Default::default()
    };
    let listed = c.executions.list_executions(list(&short)).await.unwrap();
    assert!(listed.into_inner().executions.is_empty());
    // Its machine keeps the other for an hour.
    assert_eq!(describe(c, &started[1]).await.status, "SUCCEEDED");
    let listed = c.executions.list_executions(list(&long)).await.unwrap();
    assert_eq!(listed.into_inner().executions.len(), 1);
    r.stop().await;
}
