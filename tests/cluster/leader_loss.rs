//! Leader loss: `kill -9` the node that leads the most shards while 2,000 executions (each an
//! activity task and a timer) are running. Every execution must finish once, with the right
//! output and a gap-free history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use trellis_testkit::{Cluster, Options};

use crate::workload::{self, Pool};

const N: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_under_load() {
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, Options::default())
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let (activity, machine) = workload::setup(&pool, "loss").await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = workload::workers(&pool, &activity, 48, stop.clone());

    workload::start_all(&pool, &machine, "e", 0..N / 2, 16)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let victim = c.busiest_leader().await.expect("leaders");
    c.kill(victim);
    pool.set(&c);
    let failover = c.wait_leaders(Duration::from_secs(30)).await;
    let failover = match failover {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{}", c.logs()),
    };
    eprintln!("killed node {victim}; every shard had a leader again after {failover:?}");
    workload::start_all(&pool, &machine, "e", N / 2..N, 16)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    if let Err(e) =
        workload::wait_succeeded(&pool, &machine, N as usize, Duration::from_secs(240)).await
    {
        panic!("not every execution succeeded: {e}\n{}", c.logs());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    if let Err(e) = workload::verify(&pool, &machine, "e", 0..N).await {
        panic!("{e}\n{}", c.logs());
    }
}
