//! Fan-out: a DISTRIBUTED Map's children run as child executions on the shards their ARNs
//! hash to, so on every node; a `kill -9` of a node during the map loses nothing and
//! duplicates nothing; stopping the parent stops the children.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{create_machine, describe, retry, Pool};

const STARTED: &str = "trellis_map_children_started_total";

/// A DISTRIBUTED Map over `$.items`: each child waits `wait` seconds, then doubles `n`.
pub(crate) async fn create(pool: &Pool, name: &str, wait: u64, max_concurrency: u64) -> String {
    let def = json!({"StartAt": "M", "States": {"M": {
        "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": max_concurrency, "End": true,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "Nap", "States": {
                "Nap": {"Type": "Wait", "Seconds": wait, "Next": "Double"},
                "Double": {"Type": "Pass", "Parameters": {"double.$": "States.MathAdd($.n, $.n)"}, "End": true}}}}}});
    create_machine(pool, name, &def).await
}

pub(crate) async fn start(pool: &Pool, machine: &str, name: &str, items: u64) -> String {
    let input =
        json!({"items": (0..items).map(|n| json!({"n": n})).collect::<Vec<_>>()}).to_string();
    retry(pool, Duration::from_secs(30), |mut c| {
        let (m, i) = (machine.to_string(), input.clone());
        async move {
            c.executions
                .start_execution(pb::StartExecutionRequest {
                    state_machine_arn: m,
                    name: name.to_string(),
                    input: i,
                })
                .await
                .map(|r| r.into_inner().execution_arn)
        }
    })
    .await
    .expect("start")
}

/// Waits (bounded) until the execution ends; returns its description.
pub(crate) async fn ended(pool: &Pool, arn: &str, limit: Duration) -> pb::Execution {
    let t0 = Instant::now();
    loop {
        if let Ok(e) = describe(pool, arn).await {
            if e.status != "RUNNING" {
                return e;
            }
        }
        assert!(t0.elapsed() < limit, "{arn} still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Children started per node, from the nodes' metrics.
fn started(c: &Cluster, ids: &[u64]) -> Vec<f64> {
    ids.iter()
        .map(|id| c.metric(*id, STARTED).unwrap_or(0.0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_distributed_map_spreads_over_the_nodes_and_survives_a_kill() {
    const ITEMS: u64 = 600;
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, Options::default())
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let machine = create(&pool, "fanout", 1, 150).await;
    let arn = start(&pool, &machine, "big", ITEMS).await;
    // Wait until a good part of the children started, then look where.
    let ids = c.running();
    let t0 = Instant::now();
    let per_node = loop {
        let s = started(&c, &ids);
        if s.iter().sum::<f64>() >= 200.0 {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "children did not start: {s:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total: f64 = per_node.iter().sum();
    for (id, n) in ids.iter().zip(&per_node) {
        assert!(
            *n >= total * 0.1,
            "node {id} started {n} of {total} children: {per_node:?}"
        );
    }
    // Mid-map, the node that leads the most shards dies.
    let victim = c.busiest_leader().await.expect("leaders");
    c.kill(victim);
    pool.set(&c);
    c.wait_leaders(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let e = ended(&pool, &arn, Duration::from_secs(180)).await;
    assert_eq!(e.status, "SUCCEEDED", "{e:?}\n{}", c.logs());
    // Every item's result once, in item order.
    let out: Value = serde_json::from_str(e.output.as_deref().unwrap_or("null")).unwrap();
    let want: Vec<Value> = (0..ITEMS).map(|n| json!({"double": 2 * n})).collect();
    assert_eq!(out, Value::Array(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_parent_stops_its_children() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, Options::default())
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let machine = create(&pool, "stopped", 3600, 0).await;
    let arn = start(&pool, &machine, "long", 30).await;
    let ids = c.running();
    let t0 = Instant::now();
    while started(&c, &ids).iter().sum::<f64>() < 30.0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    retry(&pool, Duration::from_secs(30), |mut cl| {
        let a = arn.clone();
        async move {
            cl.executions
                .stop_execution(pb::StopExecutionRequest {
                    execution_arn: a,
                    ..Default::default()
                })
                .await
                .map(drop)
        }
    })
    .await
    .expect("stop");
    assert_eq!(
        ended(&pool, &arn, Duration::from_secs(30)).await.status,
        "ABORTED"
    );
    // Every child ends, aborted: the nodes count 30 children finished.
    let t0 = Instant::now();
    loop {
        let done: f64 = ids
            .iter()
            .map(|id| {
                c.metric(*id, "trellis_map_children_finished_total")
                    .unwrap_or(0.0)
            })
            .sum();
        if done >= 30.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{done} of 30 children ended\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... aborted: with the parent, 31 executions ended ABORTED.
    let aborted: f64 = ids
        .iter()
        .map(|id| {
            c.metric(*id, "trellis_executions_finished_total{status=\"ABORTED\"}")
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(aborted, 31.0);
}

/// A Map that reads its items from S3 (moto) page by page and exports its results there:
/// a `kill -9` of the busiest node mid-map loses nothing and writes no result twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_map_read_from_s3_survives_a_kill_and_exports_each_result_once() {
    use trellis_testkit::s3::{moto_server, Moto, BUCKET};
    const ITEMS: u64 = 3_000;
    let moto = Moto::start(&moto_server().expect("moto_server"))
        .await
        .expect("moto");
    let body: String = (0..ITEMS).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    moto.put("items.jsonl", body.into_bytes())
        .await
        .expect("items");
    let opts = Options {
        env: moto.env(),
        ..Options::default()
    };
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, opts)
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let def = json!({"StartAt": "M", "States": {"M": {
        "Type": "Map", "MaxConcurrency": 100, "End": true,
        "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSONL"},
            "Parameters": {"Bucket": BUCKET, "Key": "items.jsonl"}},
        "ItemBatcher": {"MaxItemsPerBatch": 3},
        "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": BUCKET, "Prefix": "killed"},
            "WriterConfig": {"Transformation": "FLATTEN", "OutputType": "JSONL"}},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "Nap", "States": {
                "Nap": {"Type": "Wait", "Seconds": 1, "Next": "Items"},
                "Items": {"Type": "Pass", "OutputPath": "$.Items", "End": true}}}}}});
    let machine = create_machine(&pool, "s3map", &def).await;
    let arn = retry(&pool, Duration::from_secs(30), |mut cl| {
        let m = machine.clone();
        async move {
            cl.executions
                .start_execution(pb::StartExecutionRequest {
                    state_machine_arn: m,
                    name: "s3".into(),
                    input: "{}".into(),
                })
                .await
                .map(|r| r.into_inner().execution_arn)
        }
    })
    .await
    .expect("start");
    let ids = c.running();
    let t0 = Instant::now();
    while started(&c, &ids).iter().sum::<f64>() < 300.0 {
        assert!(t0.elapsed() < Duration::from_secs(120), "{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let victim = c.busiest_leader().await.expect("leaders");
    c.kill(victim);
    pool.set(&c);
    c.wait_leaders(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let e = ended(&pool, &arn, Duration::from_secs(300)).await;
    assert_eq!(e.status, "SUCCEEDED", "{e:?}\n{}", c.logs());
    let (lines, files) = moto
        .exported_lines(e.output.as_deref().unwrap_or_default())
        .await
        .expect("export");
    assert!(files >= 1);
    let mut got: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..ITEMS).collect::<Vec<_>>(),
        "every item's result exactly once"
    );
}

/// An inline Map spreads when its state machine's sharding policy says so (set through
/// gRPC, checked against the definition): its iterations run as child executions on every
/// node, and the output and the iteration events are the inline ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inline_map_spreads_over_the_nodes_when_its_policy_says_so() {
    const ITEMS: u64 = 60;
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, Options::default())
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let def = json!({"StartAt": "Fan", "States": {"Fan": {
        "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 20, "End": true,
        "ItemProcessor": {"StartAt": "Double", "States": {
            "Double": {"Type": "Pass", "Parameters": {"double.$": "States.MathAdd($.n, $.n)"}, "End": true}}}}}});
    let machine = create_machine(&pool, "inline-spread", &def).await;
    let policy = |state: &str, mode: pb::SpreadMode| pb::UpdateStateMachineRequest {
        state_machine_arn: machine.clone(),
        settings: Some(pb::StateMachineSettings {
            max_concurrent_executions: None,
            sharding: Some(pb::Sharding {
                default_placement: None,
                states: [(
                    state.to_string(),
                    pb::StatePlacement {
                        mode: mode as i32,
                        min_children: 0,
                    },
                )]
                .into(),
            }),
            retention_seconds: None,
        }),
        ..Default::default()
    };
    // A policy that names no Map or Parallel state is refused, with the reason.
    let mut client = pool.client().await.expect("client");
    let e = client
        .state_machines
        .update_state_machine(policy("Nope", pb::SpreadMode::Spread))
        .await
        .unwrap_err();
    let e = trellis_testkit::ApiError::from_status(&e);
    assert_eq!(e.code, trellis_testkit::Code::ValidationException, "{e:?}");
    assert!(e.message.contains("no state named 'Nope'"), "{e:?}");
    retry(&pool, Duration::from_secs(30), |mut cl| {
        let r = policy("Fan", pb::SpreadMode::Spread);
        async move { cl.state_machines.update_state_machine(r).await.map(drop) }
    })
    .await
    .expect("set the policy");
    // Read through any node: one whose meta replica has not applied the update yet still
    // shows the old settings, so wait (bounded) until it does.
    let mut mode = None;
    for _ in 0..300 {
        let described = client
            .state_machines
            .describe_state_machine(pb::DescribeStateMachineRequest {
                state_machine_arn: machine.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let sharding = described.settings.and_then(|s| s.sharding);
        mode = sharding.and_then(|s| s.states.get("Fan").map(|p| p.mode));
        if mode.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mode, Some(pb::SpreadMode::Spread as i32));

    let ids = c.running();
    let before = started(&c, &ids);
    let arn = start(&pool, &machine, "spread", ITEMS).await;
    let e = ended(&pool, &arn, Duration::from_secs(120)).await;
    assert_eq!(e.status, "SUCCEEDED", "{e:?}\n{}", c.logs());
    let out: Value = serde_json::from_str(e.output.as_deref().unwrap_or("null")).unwrap();
    let want: Vec<Value> = (0..ITEMS).map(|n| json!({"double": 2 * n})).collect();
    assert_eq!(out, Value::Array(want));
    // Every node ran some of the iterations.
    let after = started(&c, &ids);
    let ran: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(ran.iter().sum::<f64>(), ITEMS as f64, "{ran:?}");
    assert!(ran.iter().all(|n| *n > 0.0), "iterations per node: {ran:?}");
    // The parent's history is the inline one: each iteration's events are in it.
    let history = retry(&pool, Duration::from_secs(30), |mut cl| {
        let a = arn.clone();
        async move {
            cl.executions
                .get_execution_history(pb::GetExecutionHistoryRequest {
                    execution_arn: a,
                    max_results: 1000,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().events)
        }
    })
    .await
    .expect("history");
    let count = |t: &str| history.iter().filter(|e| e.r#type == t).count() as u64;
    assert_eq!(count("MapIterationStarted"), ITEMS);
    assert_eq!(count("MapIterationSucceeded"), ITEMS);
    assert_eq!(count("PassStateEntered"), ITEMS);
    assert_eq!(count("PassStateExited"), ITEMS);
    assert_eq!(history.len() as u64, 4 * ITEMS + 6);
}
