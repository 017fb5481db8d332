//! The cluster figures of `docs/benchmarks.md`: failover, rebalance after a join, idle CPU.
//! A benchmark, not a test (it measures time): run it on a release build,
//!
//! ```sh
//! cargo bench -p trellis-server --bench cluster               # all three
//! cargo bench -p trellis-server --bench cluster -- failover   # those whose name matches
//! ```
//!
//! Each figure starts its own cluster of real `trellis server` processes on 127.0.0.1
//! through `trellis-testkit` and prints what it measured.

use std::time::{Duration, Instant};

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
