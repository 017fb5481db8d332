//! Placement: a joining node gets its share of replicas and leaders; a drained node is
//! emptied and removed; executions running meanwhile all finish once.

use std::time::Duration;

use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{self, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_rebalances_then_drain_and_remove() {
    let opts = Options {
        shards: 16,
        ..Default::default()
    };
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, opts)
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let machine = workload::setup_waits(&pool, "moves").await;
    workload::start_all(&pool, &machine, "a", 0..200, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    let four = c.add_node().await.expect("node 4");
    pool.set(&c);
    let took = c
        .wait_balanced(&[1, 2, 3, 4], 3, Duration::from_secs(60))
        .await;
    let took = took.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    eprintln!("node {four} joined; balanced after {took:?}");
    workload::start_all(&pool, &machine, "b", 0..200, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    let mut admin = c.client(1).await.unwrap().admin;
    admin
        .drain_node(pb::NodeRequest { node_id: 2 })
        .await
        .expect("drain");
    let took = c
        .wait_balanced(&[1, 3, 4], 3, Duration::from_secs(60))
        .await;
    let took = took.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    eprintln!("node 2 drained after {took:?}");
    admin
        .remove_node(pb::NodeRequest { node_id: 2 })
        .await
        .expect("remove");
    // Still running, the removed node learns it (it asks every 10 s), stops serving and
    // says why.
    let (exit, log) = c
        .wait_exit(2, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!(exit.code(), Some(2), "{log}");
    assert!(
        log.contains("node 2 was removed from this cluster"),
        "{log}"
    );
    pool.set(&c);
    let status = admin
        .cluster_status(pb::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.health, "HEALTHY", "{status:?}");
    assert!(!status.meta_voters.contains(&2), "{status:?}");

    for prefix in ["a", "b"] {
        if let Err(e) =
            workload::wait_succeeded(&pool, &machine, 400, Duration::from_secs(60)).await
        {
            panic!("{e}\n{}", c.logs());
        }
        workload::verify(&pool, &machine, prefix, 0..200)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
}
