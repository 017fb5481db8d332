//! Unnamed starts get distinct executions. Thousands of StartExecution calls without a
//! name go to three nodes at once; every caller must get its own execution. (Names used to
//! come from a clock-seeded generator, and two nodes handling their k-th start in the same
//! millisecond picked the same name, so the idempotent-start rule gave two callers one
//! execution.)

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{self, Pool};

const PER_NODE: usize = 2_000;
const CALLERS_PER_NODE: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unnamed_starts_on_three_nodes_are_distinct() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, Options::default())
        .await
        .expect("cluster");
    let pool = Pool::of(&c);
    let def = json!({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": true}}});
    let machine = workload::create_machine(&pool, "names", &def).await;

    // Every node must know the machine before the burst (a read through any node).
    for id in c.running() {
        let pool = Pool::only(&c, &[id]);
        let m = machine.clone();
        workload::retry(&pool, Duration::from_secs(30), |mut c| {
            let m = m.clone();
            async move {
                c.state_machines
                    .describe_state_machine(pb::DescribeStateMachineRequest {
                        state_machine_arn: m,
                    })
                    .await
            }
        })
        .await
        .expect("machine visible on every node");
    }

    let mut callers = Vec::new();
    for id in c.running() {
        let client = c.client(id).await.expect("client");
        for _ in 0..CALLERS_PER_NODE {
            let mut client = client.clone();
            let machine = machine.clone();
            callers.push(tokio::spawn(async move {
                let mut arns = Vec::new();
                for _ in 0..PER_NODE / CALLERS_PER_NODE {
                    let r = client
                        .executions
                        .start_execution(pb::StartExecutionRequest {
                            state_machine_arn: machine.clone(),
                            input: "{}".into(),
                            ..Default::default()
                        })
                        .await
                        .map(|r| r.into_inner().execution_arn);
                    arns.push(r.map_err(|s| s.to_string()));
                }
                arns
            }));
        }
    }
    let mut arns = Vec::new();
    for caller in callers {
        for r in caller.await.expect("caller task") {
            arns.push(r.unwrap_or_else(|e| panic!("start failed: {e}\n{}", c.logs())));
        }
    }
    let total = PER_NODE / CALLERS_PER_NODE * CALLERS_PER_NODE * 3;
    assert_eq!(arns.len(), total);
    let distinct: BTreeSet<&String> = arns.iter().collect();
    assert_eq!(
        distinct.len(),
        total,
        "{} callers were given an execution another caller also got",
        total - distinct.len()
    );

    // And the cluster holds that many executions, all of them ended well.
    let counts = workload::statuses(&pool, &machine)
        .await
        .expect("list executions");
    assert_eq!(
        counts.get("SUCCEEDED").copied().unwrap_or(0),
        total,
        "executions the cluster lists: {counts:?}"
    );
}
