//! Five nodes: five meta voters, and the loss of two nodes at once survived (replication
//! factor 5, so every shard keeps a quorum too).

use std::time::Duration;

use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{self, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_lose_two() {
    let opts = Options {
        shards: 8,
        replication_factor: 5,
        ..Default::default()
    };
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 5, opts)
        .await
        .expect("cluster");
    let mut admin = c.client(1).await.unwrap().admin;
    let t0 = std::time::Instant::now();
    let status = loop {
        let s = admin
            .cluster_status(pb::Empty {})
            .await
            .unwrap()
            .into_inner();
        if s.meta_voters.len() == 5 || t0.elapsed() > Duration::from_secs(30) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.meta_voters, vec![1, 2, 3, 4, 5], "{status:?}");
    let pool = Pool::of(&c);
    let machine = workload::setup_waits(&pool, "five").await;
    workload::start_all(&pool, &machine, "f", 0..100, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    // The meta leader and the busiest shard leader (or another node) go at once.
    let meta_leader = status.meta_leader;
    let busiest = c.busiest_leader().await.unwrap();
    let second = if busiest != meta_leader {
        busiest
    } else {
        c.running().into_iter().find(|n| *n != meta_leader).unwrap()
    };
    c.kill(meta_leader);
    c.kill(second);
    pool.set(&c);
    c.wait_leaders(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    workload::start_all(&pool, &machine, "g", 0..100, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    for prefix in ["f", "g"] {
        workload::verify_when_done(&pool, &machine, prefix, 0..100)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
}
