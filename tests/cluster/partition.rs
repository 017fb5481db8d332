//! Partition: one node cut off. The majority goes on; the isolated node hands out no task
//! once its lease is over; after healing it catches up, by snapshot when it is far behind.
//!
//! The second test breaks the fencing invariant on purpose (`cluster.break_fencing`:
//! executors ignore the lease and reply before their batches commit) and checks that the
//! same scenario then fails, so the first test is known to be able to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{self, Pool};

/// Executions started before the cut, whose activity tasks wait in the leaders' queues.
const QUEUED: u64 = 40;

fn options(break_fencing: bool) -> Options {
    let mut env = vec![
        // Snapshot often, so the isolated node falls behind the leaders' logs.
        (
            "TRELLIS__CLUSTER__SNAPSHOT_LOGS".to_string(),
            "50".to_string(),
        ),
        // Keep its replicas where they are: it must catch up, not be replaced.
        ("TRELLIS__CLUSTER__DOWN_AFTER_SECONDS".into(), "600".into()),
    ];
    if break_fencing {
        env.push(("TRELLIS__CLUSTER__BREAK_FENCING".into(), "true".into()));
    }
    Options {
        shards: 4,
        env,
        ..Default::default()
    }
}

/// Cuts off the node leading the most shards while their queues hold tasks, and checks that
/// a worker polling only that node gets nothing. Returns the victim, the majority and the
/// workload, or how fencing failed.
async fn cut_off(c: &Cluster) -> Result<(u64, Vec<u64>, String, String), String> {
    let all = Pool::of(c);
    let (activity, machine) = workload::setup(&all, "cut").await;
    // Tasks queued on every shard, the victim's included; nobody polls yet.
    workload::start_all(&all, &machine, "q", 0..QUEUED, 8).await?;
    let victim = c.busiest_leader().await.map_err(|e| e.to_string())?;
    let majority: Vec<u64> = c.running().into_iter().filter(|n| *n != victim).collect();
    c.partition(victim).await.map_err(|e| e.to_string())?;

    // The majority elects leaders for the victim's shards.
    let t0 = Instant::now();
    loop {
        let shards = c.shards_from(majority[0]).await.unwrap_or_default();
        if !shards.is_empty() && shards.iter().all(|s| majority.contains(&s.leader)) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("no leaders on the majority".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A worker that only reaches the isolated node gets nothing from it: its lease is over,
    // and nothing it does can commit.
    let lonely = Pool::only(c, &[victim]);
    let mut client = lonely.client().await.ok_or("no client for the victim")?;
    let poll = client
        .activities
        .get_activity_task(pb::GetActivityTaskRequest {
            activity_arn: activity.clone(),
            worker_name: "lonely".into(),
        });
    if let Ok(Ok(t)) = tokio::time::timeout(Duration::from_secs(8), poll).await {
        if !t.get_ref().task_token.is_empty() {
            return Err(format!(
                "the isolated node handed out a task: {:?}",
                t.get_ref()
            ));
        }
    }
    Ok((victim, majority, activity, machine))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_node_stops_and_catches_up() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, options(false))
        .await
        .expect("cluster");
    let (victim, majority, activity, machine) = cut_off(&c)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let pool = Pool::only(&c, &majority);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = workload::workers(&pool, &activity, 16, stop.clone());
    workload::start_all(&pool, &machine, "p", 0..300, 16)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let total = QUEUED as usize + 300;
    if let Err(e) = workload::wait_succeeded(&pool, &machine, total, Duration::from_secs(120)).await
    {
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
    let healed = Pool::only(&c, &[victim]);
    for (prefix, range) in [("q", 0..QUEUED), ("p", 0..300)] {
        workload::verify(&healed, &machine, prefix, range)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn breaking_fencing_is_caught() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, options(true))
        .await
        .expect("cluster");
    match cut_off(&c).await {
        Err(e) if e.starts_with("the isolated node handed out a task") => {}
        Err(e) => panic!("the scenario failed for another reason: {e}\n{}", c.logs()),
        Ok(_) => panic!(
            "with fencing broken, the isolated node handed out nothing\n{}",
            c.logs()
        ),
    }
}
