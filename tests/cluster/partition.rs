//! Partition: one node cut off. The majority goes on; the isolated node hands out no task
//! once its lease is over; after healing it catches up, by snapshot when it is far behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{self, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_node_stops_and_catches_up() {
    let opts = Options {
        shards: 4,
        env: vec![
            // Snapshot often, so the isolated node falls behind the leaders' logs.
            ("TRELLIS__CLUSTER__SNAPSHOT_LOGS".into(), "50".into()),
            // Keep its replicas where they are: it must catch up, not be replaced.
            ("TRELLIS__CLUSTER__DOWN_AFTER_SECONDS".into(), "600".into()),
        ],
        ..Default::default()
    };
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis"), 3, opts)
        .await
        .expect("cluster");
    let all = Pool::of(&c);
    let (activity, machine) = workload::setup(&all, "cut").await;
    let victim = c.busiest_leader().await.expect("leaders");
    let majority: Vec<u64> = c.running().into_iter().filter(|n| *n != victim).collect();
    c.partition(victim).await.expect("partition");
    let pool = Pool::only(&c, &majority);

    // The majority elects leaders for the victim's shards.
    let t0 = Instant::now();
    loop {
        let shards = c.shards_from(majority[0]).await.unwrap_or_default();
        if !shards.is_empty() && shards.iter().all(|s| majority.contains(&s.leader)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no leaders on the majority\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let workers = workload::workers(&pool, &activity, 16, stop.clone());
    // A worker that only reaches the isolated node gets nothing from it.
    let lonely = Pool::only(&c, &[victim]);
    let mut lonely_client = lonely.client().await.expect("victim client");
    let poll = lonely_client
        .activities
        .get_activity_task(pb::GetActivityTaskRequest {
            activity_arn: activity.clone(),
            worker_name: "lonely".into(),
        });
    let starting = workload::start_all(&pool, &machine, "p", 0..300, 16);
    let (got, started) = tokio::join!(tokio::time::timeout(Duration::from_secs(8), poll), starting);
    started.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    if let Ok(Ok(t)) = got {
        assert!(
            t.get_ref().task_token.is_empty(),
            "the isolated node handed out a task: {:?}",
            t.get_ref()
        );
    }
    if let Err(e) = workload::wait_succeeded(&pool, &machine, 300, Duration::from_secs(120)).await {
        panic!("{e}\n{}", c.logs());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }

    // Heal: the victim catches up with every shard it replicates.
    c.heal().await.expect("heal");
    let t0 = Instant::now();
    loop {
        let caught_up = c
            .shards_from(majority[0])
            .await
            .is_ok_and(|shards| shards.iter().all(|s| s.lag == 0 && s.leader != 0));
        if caught_up {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the healed node did not catch up\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chunks = c
        .metric(victim, "trellis_raft_snapshot_chunks_received_total")
        .expect("metrics");
    assert!(
        chunks >= 1.0,
        "the healed node caught up without a snapshot"
    );
    workload::verify(&Pool::only(&c, &[victim]), &machine, "p", 0..300)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
}
