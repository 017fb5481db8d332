//! A frozen node (SIGSTOP: its sockets accept, nothing answers) must not hold up the calls
//! other nodes forward to it: every forwarded call has a deadline, after which the entry
//! node tries the next candidate, while the frozen node's shards elect new leaders. Starts
//! sent through a survivor during the freeze all succeed, without a client retry, before the
//! node is thawed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use trellis_testkit::{pb, Cluster, Options};

use crate::workload::{self, Pool};

const STARTS: usize = 60;
/// Long enough that a start stuck on the frozen node cannot finish before the thaw.
const FREEZE: Duration = Duration::from_secs(25);

/// Three nodes, every shard on all three: a shard still being placed (two voters, one of
/// them the frozen node) could not elect, and a call on it would wait for the thaw.
pub(crate) async fn balanced() -> Cluster {
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, Options::default())
        .await
        .expect("cluster");
    c.wait_balanced(&c.running(), 3, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_leader_holds_up_no_start() {
    let c = balanced().await;
    let pool = Pool::of(&c);
    let def = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}});
    let machine = workload::create_machine(&pool, "freeze", &def).await;
    let victim = c.busiest_leader().await.expect("leaders");
    let entry = c.running().into_iter().find(|n| *n != victim).unwrap();
    let mut client = c.client(entry).await.expect("client");
    // Warm the entry node's connection to the victim, so the freeze hits calls in flight.
    client
        .executions
        .start_execution(pb::StartExecutionRequest {
            state_machine_arn: machine.clone(),
            name: "warm".into(),
            input: "{}".into(),
        })
        .await
        .expect("warm-up start");

    c.freeze(victim);
    let thawed = Arc::new(AtomicBool::new(false));
    let thaw = {
        let thawed = thawed.clone();
        async move {
            tokio::time::sleep(FREEZE).await;
            thawed.store(true, Ordering::SeqCst);
        }
    };
    let starts = async {
        let mut slowest = Duration::ZERO;
        let mut refused = Vec::new();
        // Names spread over every shard, the victim's among them; one attempt each.
        for i in 0..STARTS {
            let t = Instant::now();
            let r = client
                .executions
                .start_execution(pb::StartExecutionRequest {
                    state_machine_arn: machine.clone(),
                    name: format!("f{i}"),
                    input: "{}".into(),
                })
                .await;
            slowest = slowest.max(t.elapsed());
            if let Err(e) = r {
                refused.push(format!("f{i}: {e}"));
            }
        }
        (slowest, refused, thawed.load(Ordering::SeqCst))
    };
    let ((slowest, refused, late), ()) = tokio::join!(starts, thaw);
    c.thaw(victim);
    eprintln!(
        "{STARTS} starts through node {entry} while node {victim} was frozen: slowest {slowest:?}"
    );
    assert!(
        refused.is_empty(),
        "starts refused: {refused:?}\n{}",
        c.logs()
    );
    assert!(
        !late,
        "the starts waited for the frozen node to come back\n{}",
        c.logs()
    );
    // The entry node gave up on the frozen node at the deadline (not when the connection's
    // keep-alive noticed, seconds later).
    let timed_out = c
        .metric(entry, "trellis_forward_deadline_exceeded_total")
        .expect("metrics");
    assert!(timed_out >= 1.0, "no forwarded call hit its deadline");
    // A peer going away is one WARN per survivor, not a line per retry.
    let log = c.log(entry);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    let gone = log
        .lines()
        .filter(|l| l.contains("peer unreachable") && l.contains(&format!("peer={victim}")))
        .count();
    eprintln!(
        "node {entry} logged {} ERROR lines and {gone} 'peer unreachable' for node {victim}:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert_eq!(gone, 1, "{log}");
    // Every one ran, once.
    pool.set(&c);
    workload::wait_succeeded(&pool, &machine, STARTS + 1, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
}

/// A leader transfer whose target cannot win (here: frozen) falls back at once: the call
/// fails within the transfer window, and the old leader leads on in the same term (no
/// election was held), so the shard was never without a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_to_a_frozen_replica_falls_back() {
    let c = balanced().await;
    let shards = c.shards().await.expect("shards");
    let s = shards
        .iter()
        .find(|s| s.leader != 0 && s.replicas.len() == 3)
        .expect("a shard with three replicas")
        .clone();
    let target = *s.replicas.iter().find(|r| **r != s.leader).unwrap();
    let entry = *s.replicas.iter().find(|r| **r != target).unwrap();
    let mut admin = c.client(entry).await.expect("client").admin;
    // Placement would balance leaders meanwhile: hold it.
    admin
        .set_placement(pb::SetPlacementRequest { paused: true })
        .await
        .expect("pause");
    c.freeze(target);
    let t = Instant::now();
    let r = admin
        .transfer_shard_leader(pb::TransferShardLeaderRequest {
            shard: s.id,
            to: target,
        })
        .await;
    let took = t.elapsed();
    let after = c
        .shards_from(entry)
        .await
        .expect("shards")
        .into_iter()
        .find(|x| x.id == s.id)
        .unwrap();
    c.thaw(target);
    eprintln!(
        "transfer of shard {} to frozen node {target} failed after {took:?}",
        s.id
    );
    let e = r.expect_err("a frozen node took the leadership");
    let e = trellis_testkit::ApiError::from_status(&e);
    assert!(
        e.message
            .contains(&format!("did not take the leadership of shard {}", s.id))
            && e.message.contains(&format!("node {} leads on", s.leader)),
        "{e}"
    );
    assert_eq!(
        (after.leader, after.term),
        (s.leader, s.term),
        "the old leader must lead on in its term\n{}",
        c.logs()
    );
    // Thawed, the target takes it when asked.
    c.wait_leaders(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let mut ok = false;
    for _ in 0..20 {
        if admin
            .transfer_shard_leader(pb::TransferShardLeaderRequest {
                shard: s.id,
                to: target,
            })
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        ok,
        "the thawed node never took the leadership\n{}",
        c.logs()
    );
}
