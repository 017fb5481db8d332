//! A killed leader, then the same node restarted, under a steady stream of starts sent
//! through a survivor (one attempt each, no client retry): no start is refused, through the
//! kill (its shards elect new leaders), the restart (the node catches up) and the hand-back
//! of leaderships to it (transfers that fall back when they cannot finish). The latencies of
//! each phase are printed: `docs/benchmarks.md` ("Availability") quotes them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use trellis_testkit::pb;

use crate::workload::{self, Pool};

/// Starters running at once.
const STARTERS: usize = 4;
/// How long the node stays dead: a start that waited for its return took longer than this.
const DEAD: Duration = Duration::from_secs(12);

#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    refused: Vec<String>,
}

impl Phase {
    fn summary(&mut self) -> String {
        self.latencies.sort();
        let n = self.latencies.len();
        let at = |q: f64| self.latencies[((n as f64 * q) as usize).min(n - 1)];
        format!(
            "{n} starts, p50 {:?}, p99 {:?}, slowest {:?}, refused {}{}",
            at(0.5),
            at(0.99),
            self.latencies[n - 1],
            self.refused.len(),
            self.refused
                .iter()
                .take(5)
                .map(|r| format!("\n  {r}"))
                .collect::<String>()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_and_restarted_leader_refuses_no_start() {
    let mut c = crate::freeze::balanced().await;
    let pool = Pool::of(&c);
    let def = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}});
    let machine = workload::create_machine(&pool, "kill", &def).await;
    let victim = c.busiest_leader().await.expect("leaders");
    let entry = c.running().into_iter().find(|n| *n != victim).unwrap();
    let client = c.client(entry).await.expect("client");

    // Starters record into the current phase until stopped.
    let phase = Arc::new(Mutex::new(Phase::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let starters: Vec<_> = (0..STARTERS)
        .map(|w| {
            let (mut client, machine, phase, stop) =
                (client.clone(), machine.clone(), phase.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) && i < 100_000 {
                    let t = Instant::now();
                    let r = client
                        .executions
                        .start_execution(pb::StartExecutionRequest {
                            state_machine_arn: machine.clone(),
                            name: format!("k{w}-{i}"),
                            input: "{}".into(),
                        })
                        .await;
                    let mut p = phase.lock().unwrap();
                    p.latencies.push(t.elapsed());
                    if let Err(e) = r {
                        p.refused.push(format!("k{w}-{i}: {e}"));
                    }
                    drop(p);
                    i += 1;
                }
                i
            })
        })
        .collect();
    let next = |name: &str| {
        let mut p = std::mem::take(&mut *phase.lock().unwrap());
        let s = p.summary();
        eprintln!("{name}: {s}");
        p
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady = next("steady");
    c.kill(victim);
    let killed_at = Instant::now();
    tokio::time::sleep(DEAD).await;
    let killed = next(&format!("node {victim} killed"));
    c.restart(victim).expect("restart");
    // Until the restarted node leads shards again (the driver hands leaderships back), and
    // a little longer.
    let t0 = Instant::now();
    loop {
        let leads = c
            .shards()
            .await
            .map(|s| s.iter().filter(|s| s.leader == victim).count())
            .unwrap_or(0);
        if leads > 0 || t0.elapsed() > Duration::from_secs(90) {
            eprintln!(
                "node {victim} leads {leads} shards {:?} after its restart",
                t0.elapsed()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = next(&format!("node {victim} restarted and leading again"));
    // Transfers that fell back, for the reader of the figures.
    for id in c.running() {
        for l in c.log(id).lines().filter(|l| l.contains("fell back")) {
            eprintln!("node {id}: {l}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for s in starters {
        total += s.await.unwrap();
    }

    for (name, p) in [
        ("steady", &steady),
        ("kill", &killed),
        ("restart", &restarted),
    ] {
        assert!(
            p.refused.is_empty(),
            "{name}: starts refused: {:?}\n{}",
            p.refused,
            c.logs()
        );
    }
    assert!(
        killed.latencies.len() > STARTERS,
        "starts stopped while the node was dead"
    );
    let waited = killed.latencies.iter().filter(|l| **l >= DEAD).count();
    assert_eq!(
        waited,
        0,
        "starts waited for the killed node to come back ({:?} dead)\n{}",
        killed_at.elapsed(),
        c.logs()
    );
    // Every acknowledged start ran, once.
    pool.set(&c);
    workload::wait_succeeded(&pool, &machine, total as usize, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
}
