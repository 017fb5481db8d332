//! Nodes going away as Kubernetes makes them: a scale-out, a scale-in that decommissions
//! each leaving node (drain, remove, its meta vote handed on), a scale-out again under the
//! same ids with new volumes; a hand-off before a restart; a node gone for good,
//! decommissioned by the placement driver. Executions started meanwhile all finish once.

use std::time::{Duration, Instant};

use trellis_testkit::{pb, Client, Cluster, Options};

use crate::workload::{self, Pool};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_trellis-node")
}

async fn status(c: &Cluster) -> Option<pb::ClusterStatusResponse> {
    for id in c.running() {
        let Ok(mut cl) = c.client(id).await else {
            continue;
        };
        if let Ok(s) = cl.admin.cluster_status(pb::Empty {}).await {
            return Some(s.into_inner());
        }
    }
    None
}

/// The members that are not removed.
fn members(s: &pb::ClusterStatusResponse) -> Vec<u64> {
    s.nodes
        .iter()
        .filter(|n| n.state != "REMOVED")
        .map(|n| n.id)
        .collect()
}

/// Waits until `ok` holds for the cluster's status, at most `secs`.
async fn wait_status(
    c: &Cluster,
    secs: u64,
    what: &str,
    ok: impl Fn(&pb::ClusterStatusResponse) -> bool,
) -> pb::ClusterStatusResponse {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(s) = status(c).await {
            if ok(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not after {secs} s: {last:?}\n{}", c.logs());
}

/// What `trellisctl nodes leave` does: drain, wait until the node holds and leads nothing
/// (the meta group included), remove.
async fn decommission(c: &Cluster, admin: &mut Client, id: u64) -> Duration {
    let t0 = Instant::now();
    admin
        .admin
        .drain_node(pb::NodeRequest { node_id: id })
        .await
        .expect("drain");
    wait_status(c, 120, &format!("node {id} drained"), |s| {
        s.meta_leader != id
    })
    .await;
    let t = Instant::now();
    loop {
        let shards = c.shards().await.unwrap_or_default();
        if !shards.is_empty()
            && shards
                .iter()
                .all(|s| s.leader != id && !s.replicas.contains(&id))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "node {id} still holds replicas\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t = Instant::now();
    loop {
        match admin
            .admin
            .remove_node(pb::NodeRequest { node_id: id })
            .await
        {
            Ok(_) => break,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                eprintln!("removing node {id}: {}", e.message());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("removing node {id}: {e}\n{}", c.logs()),
        }
    }
    t0.elapsed()
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_in_and_out_again() {
    let opts = Options {
        shards: 12,
        ..Default::default()
    };
    let mut c = Cluster::start(bin(), 3, opts).await.expect("cluster");
    let pool = Pool::of(&c);
    let machine = workload::setup_waits(&pool, "scale").await;
    workload::start_all(&pool, &machine, "a", 0..120, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    // Out: 3 → 5. The newcomers get their share; the meta group grows to five voters.
    c.add_node().await.expect("node 4");
    c.add_node().await.expect("node 5");
    pool.set(&c);
    let took = c
        .wait_balanced(&[1, 2, 3, 4, 5], 3, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    eprintln!("3 -> 5 balanced after {took:?}");
    wait_status(&c, 60, "five meta voters", |s| s.meta_voters.len() == 5).await;
    workload::start_all(&pool, &machine, "b", 0..120, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    // In: 5 → 3, the highest ordinal first, as a StatefulSet scales in. Each leaving node
    // is decommissioned while it still runs, then stops and loses its volume.
    let mut admin = c.client(1).await.unwrap();
    for id in [5, 4] {
        let took = decommission(&c, &mut admin, id).await;
        eprintln!("node {id} decommissioned in {took:?}");
        c.stop(id);
        pool.set(&c);
    }
    let s = wait_status(&c, 60, "three members, three voters, healthy", |s| {
        members(s) == [1, 2, 3]
            && sorted(s.meta_voters.clone()) == [1, 2, 3]
            && s.health == "HEALTHY"
    })
    .await;
    assert!(
        s.nodes.iter().any(|n| n.id == 5 && n.state == "REMOVED"),
        "{s:?}"
    );
    workload::start_all(&pool, &machine, "c", 0..120, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    // Out again: ordinal 3 comes back as node 4 with a new volume, and is a member again.
    c.replace(4).expect("node 4 again");
    pool.set(&c);
    c.wait_balanced(&[1, 2, 3, 4], 3, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let s = wait_status(&c, 60, "four members, three voters", |s| {
        members(s) == [1, 2, 3, 4] && s.meta_voters.len() == 3 && s.health == "HEALTHY"
    })
    .await;
    assert!(
        s.nodes.iter().any(|n| n.id == 4 && n.state == "UP"),
        "{s:?}"
    );

    for prefix in ["a", "b", "c"] {
        workload::verify_when_done(&pool, &machine, prefix, 0..120)
            .await
            .unwrap_or_else(|e| panic!("{prefix}: {e}\n{}", c.logs()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_off_moves_leaderships_and_keeps_replicas() {
    let opts = Options {
        shards: 12,
        ..Default::default()
    };
    let mut c = Cluster::start(bin(), 3, opts).await.expect("cluster");
    c.wait_balanced(&[1, 2, 3], 3, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let pool = Pool::of(&c);
    let machine = workload::setup_waits(&pool, "handoff").await;
    workload::start_all(&pool, &machine, "a", 0..120, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    // The meta leader hands off: its shard leaderships go, then the meta leadership.
    let id = status(&c).await.expect("status").meta_leader;
    let before = c.shards().await.unwrap();
    let mut admin = c.client(id).await.unwrap();
    admin
        .admin
        .hand_off_node(pb::NodeRequest { node_id: id })
        .await
        .expect("hand off");
    let t0 = Instant::now();
    let s = wait_status(&c, 60, "nothing led by the node handing off", |s| {
        s.meta_leader != 0 && s.meta_leader != id && s.leaderless.is_empty()
    })
    .await;
    loop {
        let shards = c.shards().await.unwrap_or_default();
        if !shards.is_empty() && shards.iter().all(|s| s.leader != 0 && s.leader != id) {
            // The replicas stayed where they were.
            for (a, b) in before.iter().zip(&shards) {
                assert_eq!(a.replicas, b.replicas, "shard {}", a.id);
            }
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "node {id} still leads\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("node {id} handed off in {:?}", t0.elapsed());
    let node = s.nodes.iter().find(|n| n.id == id).unwrap();
    assert_eq!(node.state, "RESTARTING", "{s:?}");
    assert!(
        s.meta_voters.contains(&id),
        "a restart keeps the vote: {s:?}"
    );

    // It restarts, is UP again, and gets its share of leaders back.
    c.stop(id);
    pool.set(&c);
    workload::start_all(&pool, &machine, "b", 0..60, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    c.restart(id).expect("restart");
    pool.set(&c);
    wait_status(&c, 60, "UP again", |s| {
        s.nodes.iter().any(|n| n.id == id && n.state == "UP") && s.health == "HEALTHY"
    })
    .await;
    c.wait_balanced(&[1, 2, 3], 3, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    workload::verify_when_done(&pool, &machine, "a", 0..120)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    workload::verify_when_done(&pool, &machine, "b", 0..60)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_gone_for_good_is_decommissioned() {
    let opts = Options {
        shards: 8,
        env: vec![
            ("TRELLIS__CLUSTER__DOWN_AFTER_SECONDS".into(), "2".into()),
            (
                "TRELLIS__CLUSTER__DECOMMISSION_AFTER_SECONDS".into(),
                "5".into(),
            ),
        ],
        ..Default::default()
    };
    let mut c = Cluster::start(bin(), 4, opts).await.expect("cluster");
    wait_status(&c, 60, "four voters... three", |s| s.meta_voters.len() == 3).await;
    let pool = Pool::of(&c);
    let machine = workload::setup_waits(&pool, "gone").await;
    workload::start_all(&pool, &machine, "a", 0..60, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    // The node holding a meta vote with the highest id dies and stays dead.
    let s = status(&c).await.unwrap();
    let victim = *s
        .meta_voters
        .iter()
        .filter(|v| **v != s.meta_leader)
        .max()
        .unwrap();
    c.kill(victim);
    pool.set(&c);
    let s = wait_status(&c, 90, "the dead node removed, its vote replaced", |s| {
        s.nodes
            .iter()
            .any(|n| n.id == victim && n.state == "REMOVED")
            && s.meta_voters.len() == 3
            && !s.meta_voters.contains(&victim)
            && s.health == "HEALTHY"
    })
    .await;
    assert_eq!(members(&s).len(), 3, "{s:?}");
    workload::verify_when_done(&pool, &machine, "a", 0..60)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    // It comes back with its old data: the cluster tells it it was removed, and it stops
    // with that as its error instead of serving a stale view.
    c.restart(victim).expect("restart with the old data");
    let (status, log) = c
        .wait_exit(victim, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert!(!status.success(), "{status}");
    assert!(
        log.contains(&format!("node {victim} was removed from this cluster")),
        "{log}"
    );
    let s = status_of(&c).await;
    assert_eq!(members(&s).len(), 3, "{s:?}");
    assert_eq!(s.health, "HEALTHY", "{s:?}");
}

async fn status_of(c: &Cluster) -> pb::ClusterStatusResponse {
    status(c).await.expect("a status")
}
