//! Rolling restart: every node in turn stops (SIGTERM) and starts again under load. Nothing
//! acknowledged is lost and nothing runs twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use trellis_testkit::{Cluster, Options};

use crate::workload::{self, Pool};

const N: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_under_load() {
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, Options::default())
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let (activity, machine) = workload::setup(&pool, "roll").await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = workload::workers(&pool, &activity, 24, stop.clone());
    let per_node = N / 3;
    for (k, id) in [1u64, 2, 3].into_iter().enumerate() {
        let range = k as u64 * per_node..(k as u64 + 1) * per_node;
        workload::start_all(&pool, &machine, "r", range, 8)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        c.stop(id);
        pool.set(&c);
        c.wait_leaders(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("after stopping {id}: {e}\n{}", c.logs()));
        c.restart(id).expect("restart");
        pool.set(&c);
        c.wait_leaders(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("after restarting {id}: {e}\n{}", c.logs()));
        eprintln!("node {id} restarted");
    }
    if let Err(e) =
        workload::wait_succeeded(&pool, &machine, N as usize, Duration::from_secs(240)).await
    {
        panic!("{e}\n{}", c.logs());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    workload::verify(&pool, &machine, "r", 0..N)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
}
