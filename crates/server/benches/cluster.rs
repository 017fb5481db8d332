//! The cluster figures of `docs/benchmarks.md`: failover, rebalance after a join, idle CPU.
//! A benchmark, not a test (it measures time): run it on a release build,
//!
//! ```sh
//! cargo bench -p trellis-server --bench cluster               # all of them
//! cargo bench -p trellis-server --bench cluster -- failover   # those whose name matches
//! ```
//!
//! `inline_spread` runs an inline Map inside its execution, then spread over the cluster by
//! the sharding policy (`INLINE_ITEMS`, `MAP_CONCURRENCY`).
//!
//! The Distributed Map figures (`map_spread`, `map_kill`) take `MAP_ITEMS` and
//! `MAP_CONCURRENCY` from the environment. With `MOTO_SERVER` naming a `moto_server` to
//! start (`.venv/bin/moto_server`), their items are read from S3 and their results
//! exported there (the parent holds only its window); without, the items are generated in
//! the state and the results kept in it.
//!
//! Each figure starts its own cluster of real `trellis server` processes on 127.0.0.1
//! through `trellis-testkit` and prints what it measured.

use std::time::{Duration, Instant};

use trellis_testkit::s3::Moto;
use trellis_testkit::{Cluster, Options};

fn main() {
    // `cargo bench` passes `--bench`; any other argument selects figures by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if wanted("failover") {
        rt.block_on(failover_figures());
    }
    if wanted("rebalance") {
        rt.block_on(rebalance_figures());
    }
    if wanted("idle_cpu") {
        rt.block_on(idle_cpu_figures());
    }
    if wanted("map_spread") {
        rt.block_on(map_spread_figure());
    }
    if wanted("map_kill") {
        rt.block_on(map_kill_figure());
    }
    if wanted("inline_spread") {
        rt.block_on(inline_spread_figure());
    }
}

/// An inline Map of `INLINE_ITEMS` (2,000) Pass iterations, `MAP_CONCURRENCY` (100) at a
/// time, on 3 nodes: run inside its execution (the default), then spread by the sharding
/// policy as child executions. The time of each, and where the spread iterations ran.
async fn inline_spread_figure() {
    use trellis_testkit::pb;
    let items = env_u64("INLINE_ITEMS", 2_000);
    let mc = env_u64("MAP_CONCURRENCY", 100);
    let c = balanced(Options {
        shards: 64,
        ..Default::default()
    })
    .await;
    let ids = c.running();
    let definition =
        serde_json::json!({"QueryLanguage": "JSONata", "StartAt": "Fan", "States": {"Fan": {
        "Type": "Map", "MaxConcurrency": mc, "Items": format!("{{% [0..{}] %}}", items - 1),
        "ItemProcessor": {"StartAt": "Double", "States": {
            "Double": {"Type": "Pass", "Output": "{% $states.input * 2 %}", "End": true}}},
        "Output": "{% [$count($states.result), $sum($states.result)] %}", "End": true}}})
        .to_string();
    for spread in [false, true] {
        let mode = if spread {
            pb::SpreadMode::Spread
        } else {
            pb::SpreadMode::Local
        };
        let settings = pb::StateMachineSettings {
            max_concurrent_executions: None,
            retention_seconds: None,
            sharding: Some(pb::Sharding {
                default_placement: None,
                states: [(
                    "Fan".to_string(),
                    pb::StatePlacement {
                        mode: mode as i32,
                        min_children: 0,
                    },
                )]
                .into(),
            }),
        };
        let before = per_node(&c, &ids, "trellis_map_children_started_total");
        let name = if spread {
            "inline-spread"
        } else {
            "inline-local"
        };
        let (arn, t0) = start_map_with(&c, name, definition.clone(), Some(settings)).await;
        let e = map_ended(&c, &arn, Duration::from_secs(3600)).await;
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(e.status, "SUCCEEDED", "{e:?}");
        let out: Vec<u64> =
            serde_json::from_str(e.output.as_deref().unwrap_or("null")).expect("output");
        assert_eq!(out, [items, items * (items - 1)], "every result once");
        let started: Vec<f64> = per_node(&c, &ids, "trellis_map_children_started_total")
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        eprintln!(
            "inline Map, {items} items, MaxConcurrency {mc}, 3 nodes, {}: {secs:.2} s, {:.0} iterations/s; \
             child executions started per node {started:?}",
            if spread { "spread" } else { "local" },
            items as f64 / secs
        );
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Failover: `kill -9` the node leading the most shards; the time until every shard has a
/// leader again (polled every 20 ms). Ten kills; the node comes back between kills and
/// the leaders are balanced again before the next.
async fn failover_figures() {
    let opts = Options {
        shards: 64,
        ..Default::default()
    };
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis"), 3, opts)
        .await
        .expect("cluster");
    let mut times = Vec::new();
    for round in 0..10 {
        c.wait_balanced(&[1, 2, 3], 3, Duration::from_secs(120))
            .await
            .expect("cluster");
        let victim = c.busiest_leader().await.expect("cluster");
        let t0 = Instant::now();
        c.kill(victim);
        loop {
            let shards = c.shards().await.unwrap_or_default();
            if !shards.is_empty() && shards.iter().all(|s| s.leader != 0 && s.leader != victim) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = t0.elapsed();
        eprintln!("kill {round}: node {victim}; every shard led again after {took:?}");
        times.push(took);
        c.restart(victim).expect("cluster");
    }
    eprintln!(
        "failover over {} kills: median {:?}, max {:?}",
        times.len(),
        percentile(times.clone(), 0.5),
        times.iter().max().expect("cluster")
    );
}

/// Rebalance: a fourth node joins a balanced 3-node cluster of 64 shards; the time until
/// replicas and leaders are balanced to ±1 over the four nodes.
async fn rebalance_figures() {
    let opts = Options {
        shards: 64,
        ..Default::default()
    };
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis"), 3, opts)
        .await
        .expect("cluster");
    c.wait_balanced(&[1, 2, 3], 3, Duration::from_secs(60))
        .await
        .expect("cluster");
    let t0 = Instant::now();
    c.add_node().await.expect("cluster");
    c.wait_balanced(&[1, 2, 3, 4], 3, Duration::from_secs(300))
        .await
        .expect("cluster");
    eprintln!(
        "64 shards, a fourth node joins: balanced after {:?}",
        t0.elapsed()
    );
}

/// Idle CPU of a 3-node cluster with 64 and with 256 shards: CPU seconds per second of
/// each node over 20 s, after 10 s of settling.
async fn idle_cpu_figures() {
    for shards in [64, 256] {
        let opts = Options {
            shards,
            ..Default::default()
        };
        let c = Cluster::start(env!("CARGO_BIN_EXE_trellis"), 3, opts)
            .await
            .expect("cluster");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before: Vec<f64> = c
            .nodes
            .values()
            .map(|n| n.cpu_seconds().expect("cluster"))
            .collect();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let secs = t0.elapsed().as_secs_f64();
        let used: Vec<String> = c
            .nodes
            .values()
            .zip(before)
            .map(|(n, b)| {
                format!(
                    "{:.1} %",
                    100.0 * (n.cpu_seconds().expect("cluster") - b) / secs
                )
            })
            .collect();
        eprintln!("{shards} shards, 3 nodes, idle: CPU per node {used:?} of one core");
    }
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A JSONata Map over `[0..items-1]` (generated in the state, so the input stays small),
/// children STANDARD executions of one Pass state doubling their item; the output is the
/// results, `[count, sum]` of them with `summed` (a large output would pass the payload
/// limit), or the export's location with `bucket`.
fn map_definition(items: u64, mc: u64, bucket: Option<&str>, summed: bool) -> String {
    let mut state = serde_json::json!({
        "Type": "Map", "MaxConcurrency": mc,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "Double", "States": {
                "Double": {"Type": "Pass", "Output": "{% $states.input * 2 %}", "End": true}}},
        "End": true});
    if let Some(b) = bucket {
        // Items read from S3 page by page, results exported: the parent holds the window.
        state["ItemReader"] = serde_json::json!({"Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSONL"}, "Arguments": {"Bucket": b, "Key": "items.jsonl"}});
        state["ResultWriter"] = serde_json::json!({"Resource": "arn:aws:states:::s3:putObject",
            "Arguments": {"Bucket": b, "Prefix": "out"},
            "WriterConfig": {"Transformation": "COMPACT", "OutputType": "JSONL"}});
    } else {
        state["Items"] = serde_json::json!(format!("{{% [0..{}] %}}", items - 1));
        if summed {
            state["Output"] =
                serde_json::json!("{% [$count($states.result), $sum($states.result)] %}");
        }
    }
    serde_json::json!({"QueryLanguage": "JSONata", "StartAt": "Fan", "States": {"Fan": state}})
        .to_string()
}

/// moto's S3 when `MOTO_SERVER` names it, with `items` numbers in `bench/items.jsonl`; and
/// the cluster's options to reach it.
async fn s3_for(items: u64) -> (Option<Moto>, Options) {
    let mut opts = Options {
        shards: 64,
        ..Default::default()
    };
    let Ok(bin) = std::env::var("MOTO_SERVER") else {
        return (None, opts);
    };
    let m = Moto::start(std::path::Path::new(&bin)).await.expect("moto");
    let body: String = (0..items).map(|i| format!("{i}\n")).collect();
    m.put("items.jsonl", body.into_bytes())
        .await
        .expect("put the items");
    opts.env = m.env();
    (Some(m), opts)
}

/// Every result an export wrote (JSON Lines of numbers), sorted.
async fn exported(m: &Moto, output: &str) -> Vec<u64> {
    let (lines, _) = m.exported_lines(output).await.expect("export");
    let mut v: Vec<u64> = lines.iter().map(|l| l.parse().expect("a result")).collect();
    v.sort_unstable();
    v
}

/// Starts one execution of a Map machine; returns its ARN and when it started.
async fn start_map(c: &Cluster, name: &str, definition: String) -> (String, Instant) {
    start_map_with(c, name, definition, None).await
}

/// Creates the machine (with its settings), then starts it and times from there.
async fn start_map_with(
    c: &Cluster,
    name: &str,
    definition: String,
    settings: Option<trellis_testkit::pb::StateMachineSettings>,
) -> (String, Instant) {
    use trellis_testkit::pb;
    let mut client = c.any_client().await.expect("client");
    let machine = client
        .state_machines
        .create_state_machine(pb::CreateStateMachineRequest {
            name: name.into(),
            definition,
            role_arn: "arn:aws:iam::000000000000:role/bench".into(),
            settings,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .state_machine_arn;
    let t0 = Instant::now();
    let arn = client
        .executions
        .start_execution(pb::StartExecutionRequest {
            state_machine_arn: machine,
            name: "map".into(),
            input: "{}".into(),
        })
        .await
        .expect("start")
        .into_inner()
        .execution_arn;
    (arn, t0)
}

/// Polls (every 200 ms, at most `limit`) until the execution ends, from any running node.
async fn map_ended(c: &Cluster, arn: &str, limit: Duration) -> trellis_testkit::pb::Execution {
    use trellis_testkit::pb;
    let t0 = Instant::now();
    loop {
        if let Ok(mut client) = c.any_client().await {
            let req = pb::DescribeExecutionRequest {
                execution_arn: arn.into(),
            };
            if let Ok(e) = client.executions.describe_execution(req).await {
                let e = e.into_inner();
                if e.status != "RUNNING" {
                    return e;
                }
            }
        }
        assert!(t0.elapsed() < limit, "{arn} still runs after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three nodes, their shards' leaders balanced.
async fn balanced(opts: Options) -> Cluster {
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis"), 3, opts)
        .await
        .expect("cluster");
    c.wait_balanced(&[1, 2, 3], 3, Duration::from_secs(120))
        .await
        .expect("cluster");
    c
}

fn per_node(c: &Cluster, ids: &[u64], metric: &str) -> Vec<f64> {
    ids.iter()
        .map(|id| c.metric(*id, metric).unwrap_or(0.0))
        .collect()
}

/// 100,000 items over 3 nodes: children per second, and how the children and the state
/// transitions spread over the nodes.
async fn map_spread_figure() {
    let items = env_u64("MAP_ITEMS", 100_000);
    let mc = env_u64("MAP_CONCURRENCY", 1_000);
    let (moto, opts) = s3_for(items).await;
    let c = balanced(opts).await;
    let ids = c.running();
    let transitions0 = per_node(&c, &ids, "trellis_state_transitions_total");
    let bucket = moto.as_ref().map(|_| trellis_testkit::s3::BUCKET);
    let definition = map_definition(items, mc, bucket, true);
    let (arn, t0) = start_map(&c, "spread", definition).await;
    let e = map_ended(&c, &arn, Duration::from_secs(3600)).await;
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(e.status, "SUCCEEDED", "{e:?}");
    let output = e.output.clone().unwrap_or_default();
    match &moto {
        None => {
            let out: Vec<u64> = serde_json::from_str(&output).expect("output");
            assert_eq!(out, [items, items * (items - 1)], "every result once");
        }
        Some(m) => {
            let results = exported(m, &output).await;
            assert!(
                results.iter().copied().eq((0..items).map(|n| 2 * n)),
                "every result once"
            );
        }
    }
    let started = per_node(&c, &ids, "trellis_map_children_started_total");
    let transitions: Vec<f64> = per_node(&c, &ids, "trellis_state_transitions_total")
        .iter()
        .zip(&transitions0)
        .map(|(a, b)| a - b)
        .collect();
    let share = |v: &[f64]| -> Vec<String> {
        let total: f64 = v.iter().sum();
        v.iter()
            .map(|x| format!("{:.1} %", 100.0 * x / total))
            .collect()
    };
    eprintln!(
        "DISTRIBUTED Map, {items} items, MaxConcurrency {mc}, 3 nodes: {secs:.1} s, {:.0} children/s; \
         children started per node {:?}, state transitions per node {:?}",
        items as f64 / secs,
        share(&started),
        share(&transitions)
    );
}

/// `kill -9` of the busiest node during a 10,000-item map: it still succeeds, every item's
/// result once (in the output, or in the export's files with `MOTO_SERVER`), and the Map
/// Run's counters add up.
async fn map_kill_figure() {
    use trellis_testkit::pb;
    let items = env_u64("MAP_ITEMS", 10_000);
    let mc = env_u64("MAP_CONCURRENCY", 1_000);
    let (moto, opts) = s3_for(items).await;
    let mut c = balanced(opts).await;
    let ids = c.running();
    let bucket = moto.as_ref().map(|_| trellis_testkit::s3::BUCKET);
    let (arn, t0) = start_map(&c, "killed", map_definition(items, mc, bucket, false)).await;
    // A third of the children started: the node leading the most shards dies.
    loop {
        let started: f64 = per_node(&c, &ids, "trellis_map_children_started_total")
            .iter()
            .sum();
        if started >= items as f64 / 3.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "children do not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = c.busiest_leader().await.expect("leaders");
    let killed_at = t0.elapsed();
    c.kill(victim);
    let leaders = c
        .wait_leaders(Duration::from_secs(60))
        .await
        .expect("leaders");
    let e = map_ended(&c, &arn, Duration::from_secs(3600)).await;
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(e.status, "SUCCEEDED", "{e:?}");
    let output = e.output.clone().unwrap_or_default();
    let results: Vec<u64> = match &moto {
        None => serde_json::from_str(&output).expect("output"),
        Some(m) => exported(m, &output).await,
    };
    let mut sorted = results.clone();
    sorted.sort_unstable();
    assert!(
        sorted.iter().copied().eq((0..items).map(|n| 2 * n)),
        "every item's result exactly once ({} results)",
        results.len()
    );
    let mut client = c.any_client().await.expect("client");
    let runs = client
        .executions
        .list_map_runs(pb::ListMapRunsRequest {
            execution_arn: arn.clone(),
            ..Default::default()
        })
        .await
        .expect("map runs")
        .into_inner()
        .map_runs;
    let run = client
        .executions
        .describe_map_run(pb::DescribeMapRunRequest {
            map_run_arn: runs[0].map_run_arn.clone(),
        })
        .await
        .expect("map run")
        .into_inner();
    let (ic, ec) = (
        run.item_counts.unwrap_or_default(),
        run.execution_counts.unwrap_or_default(),
    );
    assert_eq!(run.status, "SUCCEEDED");
    assert_eq!(
        (ic.succeeded, ic.total, ic.running, ic.pending, ic.failed),
        (items, items, 0, 0, 0)
    );
    assert_eq!((ec.succeeded, ec.total), (items, items));
    eprintln!(
        "DISTRIBUTED Map, {items} items, MaxConcurrency {mc}, 3 nodes, node {victim} killed at \
         {killed_at:.1?} (leaders back in {leaders:.1?}): SUCCEEDED in {secs:.1} s, every result \
         once ({}), Map Run counters {} succeeded of {}",
        if moto.is_some() {
            "in the ResultWriter's files"
        } else {
            "in the output"
        },
        ic.succeeded,
        ic.total
    );
}
