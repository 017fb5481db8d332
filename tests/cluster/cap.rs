//! The per-state-machine concurrency cap holds across the cluster, not per node: with
//! executions spread over every node's shards, no more than the cap run at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{self, retry, Hold, Pool, ROLE};

const CAP: usize = 2;
const EXECUTIONS: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cap_is_cluster_wide() {
    let opts = Options {
        shards: 8,
        ..Default::default()
    };
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, opts)
        .await
        .expect("cluster");
    c.wait_balanced(&c.running(), 3, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let pool = Pool::of(&c);
    let activity = workload::create_activity(&pool, "capped-work").await;
    let def = json!({
        "StartAt": "Work",
        "States": {
            "Work": {"Type": "Task", "Resource": activity, "TimeoutSeconds": 60, "Next": "Done"},
            "Done": {"Type": "Pass", "End": true}
        }
    })
    .to_string();
    let machine = retry(&pool, Duration::from_secs(30), |mut c| {
        let def = def.clone();
        async move {
            c.state_machines
                .create_state_machine(pb::CreateStateMachineRequest {
                    name: "capped".into(),
                    definition: def,
                    role_arn: ROLE.into(),
                    settings: Some(pb::StateMachineSettings {
                        max_concurrent_executions: Some(CAP as u32),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().state_machine_arn)
        }
    })
    .await
    .expect("machine");

    // Workers on every node hold each task for a while and count how many they hold at once:
    // a task is held only while its execution runs.
    let hold = Hold {
        time: Duration::from_millis(500),
        now: Default::default(),
        most: Default::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let workers = workload::workers_holding(&pool, &activity, 6, stop.clone(), Some(hold.clone()));

    workload::start_all(&pool, &machine, "c", 0..EXECUTIONS, 12)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    workload::wait_succeeded(
        &pool,
        &machine,
        EXECUTIONS as usize,
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    workload::verify(&pool, &machine, "c", 0..EXECUTIONS)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        // Idle workers sit in a long poll: nothing more to wait for.
        w.abort();
    }
    let most = hold.most.load(Ordering::SeqCst);
    assert!(
        most <= CAP,
        "{most} executions ran at once; the cap is {CAP}"
    );
    assert_eq!(
        most, CAP,
        "the cap was never reached: admission is too slow"
    );
}
