//! Backup and restore: a backup of a three-node cluster (`Admin.Backup`, written as
//! `trellisctl backup` writes it) restored onto a new node (`trellis restore`). Every
//! execution reads back as it was at the backup, finished and waiting alike; what happened
//! after the backup is not in it; the task tokens handed out before it still answer; new
//! nodes join the restored cluster and take replicas (from the restored snapshots), and the
//! waiting executions finish there. A DISTRIBUTED Map runs during the backup, its children
//! and their ends crossing shards: no message is lost between the copies, so it finishes on
//! the restored cluster with every item.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trellis_testkit::{backup, pb, Cluster, Options};

use crate::workload::{self, Pool};

const N: u64 = 40;
const MAP_ITEMS: u64 = 300;
const BIN: &str = env!("CARGO_BIN_EXE_trellis-node");

/// Polls the activity until `n` tasks are in hand: input `n` -> token.
async fn take_tasks(pool: &Pool, activity: &str, n: usize) -> BTreeMap<u64, String> {
    let mut tokens = BTreeMap::new();
    let t0 = Instant::now();
    while tokens.len() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{} of {n} tasks after 120 s",
            tokens.len()
        );
        let Some(mut c) = pool.client().await else {
            continue;
        };
        let poll = c.activities.get_activity_task(pb::GetActivityTaskRequest {
            activity_arn: activity.to_string(),
            worker_name: "backup-test".into(),
        });
        let Ok(Ok(task)) = tokio::time::timeout(Duration::from_secs(70), poll).await else {
            continue;
        };
        let task = task.into_inner();
        if task.task_token.is_empty() {
            continue;
        }
        let input: Value = serde_json::from_str(&task.input).unwrap();
        tokens.insert(input["n"].as_u64().unwrap(), task.task_token);
    }
    tokens
}

async fn answer(pool: &Pool, n: u64, token: &str) {
    workload::answer(pool, n, token)
        .await
        .unwrap_or_else(|e| panic!("answering {n}: {e}"));
}

/// Every execution's description and history.
async fn snapshot(
    pool: &Pool,
    machine: &str,
) -> BTreeMap<u64, (pb::Execution, Vec<pb::HistoryEvent>)> {
    let base = machine.replace(":stateMachine:", ":execution:");
    let mut out = BTreeMap::new();
    for i in 0..N {
        let arn = format!("{base}:e-{i}");
        let d = workload::describe(pool, &arn).await.expect("describe");
        let h = workload::history(pool, &arn).await.expect("history");
        out.insert(i, (d, h.events));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_cluster_holds_every_execution_as_backed_up() {
    let c = Cluster::start(BIN, 3, Options::default())
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let (activity, machine) = workload::setup(&pool, "bk").await;
    workload::start_all(&pool, &machine, "e", 0..N, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    // Half finish before the backup; the other half wait on tasks handed out.
    let mut held = take_tasks(&pool, &activity, N as usize).await;
    for n in (0..N).filter(|n| n % 2 == 0) {
        let token = held.remove(&n).unwrap();
        answer(&pool, n, &token).await;
    }
    let t0 = Instant::now();
    loop {
        let s = workload::statuses(&pool, &machine).await.expect("list");
        if s.get("SUCCEEDED") == Some(&(N as usize / 2))
            && s.get("RUNNING") == Some(&(N as usize / 2))
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "statuses: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = snapshot(&pool, &machine).await;
    // At least three seconds of children starting and ending while the backup runs.
    let map_machine = crate::fanout::create(&pool, "bk-map", 1, 100).await;
    let map = crate::fanout::start(&pool, &map_machine, "fan", MAP_ITEMS).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup");
    let mut client = c.any_client().await.expect("client");
    let mut parts = 0;
    let manifest = backup::write(
        &mut client.admin,
        backup::Destination::Dir(&path),
        |_, _, _| parts += 1,
    )
    .await
    .unwrap_or_else(|e| panic!("backup: {e}\n{}", c.logs()));
    let shards = c.shards().await.expect("shards").len();
    assert_eq!(manifest.shards as usize, shards);
    assert_eq!(manifest.groups.len(), shards + 1);
    assert_eq!(manifest.groups.last().unwrap().group, 0, "meta goes last");
    assert!(parts > shards, "at least one part per group");
    // The directory reads back whole; a second backup never writes over one.
    assert_eq!(backup::read(&path).expect("read"), manifest);
    let again = backup::write(
        &mut client.admin,
        backup::Destination::Dir(&path),
        |_, _, _| {},
    )
    .await;
    assert!(
        again.unwrap_err().to_string().contains("is not empty"),
        "a backup over a backup"
    );
    // Changed after the backup: not in it.
    let late = 1;
    answer(&pool, late, &held[&late]).await;
    drop(c);

    let mut r = Cluster::restore(BIN, &path, Options::default())
        .await
        .expect("restore");
    let rpool = Pool::of(&r);
    let after = snapshot(&rpool, &machine).await;
    let map_at_backup = workload::describe(&rpool, &map).await.expect("the map");
    eprintln!("the map was {} at the backup", map_at_backup.status);
    for i in 0..N {
        assert_eq!(after[&i], before[&i], "execution e-{i} as restored");
    }

    // New members take replicas of the restored groups.
    r.add_node().await.expect("node 2");
    r.add_node().await.expect("node 3");
    rpool.set(&r);
    r.wait_balanced(&r.running(), 3, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.logs()));

    // The tokens handed out before the backup answer on the restored cluster, the late
    // one's included (its answer came after the backup).
    assert_eq!(after[&late].0.status, "RUNNING");
    for (n, token) in std::mem::take(&mut held) {
        answer(&rpool, n, &token).await;
    }
    if let Err(e) =
        workload::wait_succeeded(&rpool, &machine, N as usize, Duration::from_secs(120)).await
    {
        panic!("{e}\n{}", r.logs());
    }
    if let Err(e) = workload::verify(&rpool, &machine, "e", 0..N).await {
        panic!("{e}\n{}", r.logs());
    }
    let done = crate::fanout::ended(&rpool, &map, Duration::from_secs(120)).await;
    assert_eq!(done.status, "SUCCEEDED", "{done:?}");
    let out: Value = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    let want: Vec<Value> = (0..MAP_ITEMS).map(|n| json!({"double": 2 * n})).collect();
    assert_eq!(out, json!(want));
}
