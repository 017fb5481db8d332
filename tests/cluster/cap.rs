//! The per-state-machine concurrency cap holds across the cluster, not per node: with
//! executions spread over every node's shards, no more than the cap run at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{self, retry, Pool, ROLE};

const CAP: usize = 2;
const EXECUTIONS: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cap_is_cluster_wide() {
    let opts = Options {
        shards: 8,
        ..Default::default()
    };
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis"), 3, opts)
        .await
        .expect("cluster");
    c.wait_balanced(&c.running(), 3, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let pool = Pool::of(&c);
    let activity = retry(&pool, Duration::from_secs(30), |mut c| async move {
        c.activities
            .create_activity(pb::CreateActivityRequest {
                name: "capped-work".into(),
            })
            .await
            .map(|r| r.into_inner().activity_arn)
    })
    .await
    .expect("activity");
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
                        max_concurrent_executions: CAP as u32,
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
    let held = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (pool, activity) = (pool.clone(), activity.clone());
            let (held, most, done) = (held.clone(), most.clone(), done.clone());
            tokio::spawn(async move {
                while done.load(Ordering::SeqCst) < EXECUTIONS as usize {
                    let Some(mut c) = pool.client().await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let poll = c.activities.get_activity_task(pb::GetActivityTaskRequest {
                        activity_arn: activity.clone(),
                        worker_name: format!("w{w}"),
                    });
                    let task = match tokio::time::timeout(Duration::from_secs(5), poll).await {
                        Ok(Ok(t)) if !t.get_ref().task_token.is_empty() => t.into_inner(),
                        _ => continue,
                    };
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    held.fetch_sub(1, Ordering::SeqCst);
                    let input: Value = serde_json::from_str(&task.input).unwrap();
                    let output =
                        json!({"n": input["n"], "double": 2 * input["n"].as_u64().unwrap()})
                            .to_string();
                    let token = task.task_token.clone();
                    retry(&pool, Duration::from_secs(60), |mut c| {
                        let (token, output) = (token.clone(), output.clone());
                        async move {
                            c.activities
                                .send_task_success(pb::SendTaskSuccessRequest {
                                    task_token: token,
                                    output,
                                })
                                .await
                                .map(drop)
                        }
                    })
                    .await
                    .expect("answer");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

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
    for w in workers {
        w.await.expect("worker");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= CAP,
        "{most} executions ran at once; the cap is {CAP}"
    );
    assert_eq!(
        most, CAP,
        "the cap was never reached: admission is too slow"
    );
}
