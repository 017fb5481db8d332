//! `trellisctl nodes hand-off` and `nodes leave`: a node going away, for a restart or for
//! good, with bounded waits and progress on stderr.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use trellis_client::{v1 as pb, Client};

use crate::args::NodeArg;
use crate::commands::cluster::{done, status};
use crate::kube::{InCluster, Pod};
use crate::output::api;

/// How often the waits look, and how often they say where they are.
const POLL: Duration = Duration::from_millis(500);
const REPORT: Duration = Duration::from_secs(5);

/// The node meant: its id, or the node at the endpoint.
async fn resolve(c: &mut Client, node: &NodeArg) -> Result<u64> {
    if let Some(id) = node.id {
        return Ok(id);
    }
    Ok(status(c).await?.node_id)
}

/// What a node still leads and holds, as the cluster sees it now.
struct Holdings {
    leads: Vec<u32>,
    replicas: usize,
    meta_leader: bool,
    /// Other members that are UP (can take what this node gives away).
    others_up: usize,
}

async fn holdings(c: &mut Client, id: u64) -> Result<Holdings> {
    let status = status(c).await?;
    let shards = c
        .admin
        .list_shards(pb::Empty {})
        .await
        .map_err(api)?
        .into_inner()
        .shards;
    Ok(Holdings {
        leads: shards
            .iter()
            .filter(|s| s.leader == id)
            .map(|s| s.id)
            .collect(),
        replicas: shards.iter().filter(|s| s.replicas.contains(&id)).count(),
        meta_leader: status.meta_leader == id,
        others_up: status
            .nodes
            .iter()
            .filter(|n| n.id != id && n.state == "UP")
            .count(),
    })
}

/// Polls `holdings` until `finished` says so, for at most `wait`; a failed look (the
/// cluster electing a leader) is tried again.
async fn wait_until(
    c: &mut Client,
    id: u64,
    wait: Duration,
    what: &str,
    finished: impl Fn(&Holdings) -> bool,
) -> Result<()> {
    let start = Instant::now();
    let mut said = Instant::now();
    // On a terminal, a bar of what is left (leaderships and replicas); elsewhere a line
    // every few seconds.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut bar: Option<indicatif::ProgressBar> = None;
    loop {
        let last = match holdings(c, id).await {
            Ok(h) if finished(&h) => {
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                return Ok(());
            }
            Ok(h) => {
                let left = (h.leads.len() + h.replicas) as u64;
                if tty {
                    let b = bar.get_or_insert_with(|| {
                        crate::bench::progress(left, &format!("node {id}: {what}"))
                    });
                    b.set_position(b.length().unwrap_or(left).saturating_sub(left));
                }
                format!(
                    "leads {} shards, holds {} replicas{}",
                    h.leads.len(),
                    h.replicas,
                    if h.meta_leader {
                        ", leads the meta group"
                    } else {
                        ""
                    }
                )
            }
            Err(e) => format!("{e}"),
        };
        if start.elapsed() >= wait {
            if let Some(b) = bar.take() {
                b.abandon();
            }
            bail!(
                "node {id}: {what} not done after {} s: {last}",
                wait.as_secs()
            );
        }
        if !tty && said.elapsed() >= REPORT {
            eprintln!(
                "node {id}: {what}: {last} ({} s)",
                start.elapsed().as_secs()
            );
            said = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until a draining node leads and holds nothing.
pub(crate) async fn wait_drained(c: &mut Client, id: u64, wait: u64) -> Result<()> {
    wait_until(c, id, Duration::from_secs(wait), "drain", |h| {
        h.leads.is_empty() && h.replicas == 0 && !h.meta_leader
    })
    .await
}

/// Moves a node's leaderships away before it restarts, and waits until it leads nothing.
pub(crate) async fn hand_off(c: &mut Client, j: bool, node: &NodeArg, wait: u64) -> Result<()> {
    let id = resolve(c, node).await?;
    hand_off_id(c, j, id, wait).await
}

async fn hand_off_id(c: &mut Client, j: bool, id: u64, wait: u64) -> Result<()> {
    c.admin
        .hand_off_node(pb::NodeRequest { node_id: id })
        .await
        .map_err(api)?;
    if holdings(c, id).await?.others_up == 0 {
        done(
            j,
            &format!("node {id} is the only node up: nothing to hand off"),
        );
        return Ok(());
    }
    let start = Instant::now();
    wait_until(c, id, Duration::from_secs(wait), "hand-off", |h| {
        h.leads.is_empty() && !h.meta_leader
    })
    .await?;
    done(
        j,
        &format!(
            "node {id} leads nothing (handed off in {:.1} s): it can restart",
            start.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// Decommissions a node (drain, wait, remove); with `if_beyond_replicas`, only when its pod
/// goes away for good, else a hand-off.
pub(crate) async fn leave(
    c: &mut Client,
    j: bool,
    node: &NodeArg,
    if_beyond_replicas: bool,
    wait: u64,
) -> Result<()> {
    let id = resolve(c, node).await?;
    if if_beyond_replicas {
        let pod = Pod::this()?;
        let replicas = match InCluster::from_env() {
            Ok(k) => k.statefulset_replicas(&pod.statefulset).await,
            Err(e) => Err(e),
        };
        match replicas {
            Ok(0) => {
                // The whole cluster is stopping: nowhere to move anything. With the
                // manifests' `whenScaled: Delete`, the volumes go too: say so loudly.
                eprintln!(
                    "{} is scaled to 0: the whole cluster stops, so no decommission; its \
                     volumes are deleted if its PVC retention policy says whenScaled: Delete",
                    pod.statefulset
                );
                return hand_off_id(c, j, id, wait).await;
            }
            Ok(n) if pod.ordinal < n => {
                eprintln!(
                    "pod ordinal {} < {n} replicas of {}: a restart, so a hand-off",
                    pod.ordinal, pod.statefulset
                );
                return hand_off_id(c, j, id, wait).await;
            }
            Ok(n) => eprintln!(
                "pod ordinal {} >= {n} replicas of {}: a scale-in, so a decommission",
                pod.ordinal, pod.statefulset
            ),
            Err(e) => {
                // Not knowing, the safe move is the one that keeps the data: a hand-off. A
                // node that does not come back is decommissioned by the placement driver
                // after cluster.decommission_after_seconds.
                eprintln!("cannot read the StatefulSet ({e:#}); handing off instead");
                hand_off_id(c, j, id, wait).await?;
                return Err(e.context("reading the StatefulSet's replica count"));
            }
        }
    }
    let start = Instant::now();
    c.admin
        .drain_node(pb::NodeRequest { node_id: id })
        .await
        .map_err(api)?;
    let wait = Duration::from_secs(wait);
    wait_until(c, id, wait, "drain", |h| {
        h.leads.is_empty() && h.replicas == 0 && !h.meta_leader
    })
    .await?;
    // The meta group may be changing its voters (this node's vote goes to another): the
    // removal is tried again while the group is busy.
    let mut tries = 0;
    loop {
        match c.admin.remove_node(pb::NodeRequest { node_id: id }).await {
            Ok(_) => break,
            Err(s) if tries < 20 && start.elapsed() < wait => {
                tries += 1;
                if tries % 5 == 0 {
                    eprintln!("node {id}: removing: {}", s.message());
                }
                tokio::time::sleep(POLL).await;
            }
            Err(s) => return Err(api(s)).context(format!("removing node {id}")),
        }
    }
    done(
        j,
        &format!(
            "node {id} left the cluster (decommissioned in {:.1} s)",
            start.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}
