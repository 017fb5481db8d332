//! `trellisctl cluster`, `nodes`, `shards`: the operator commands.

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use trellis_client::{v1 as pb, Client};

use crate::args::*;
use crate::output::*;

pub(crate) const NODE_HEADERS: &[&str] = &[
    "NODE", "STATE", "GRPC", "HTTP", "ZONE", "META", "LEADS", "REPLICAS",
];

pub(crate) fn node_row(n: &pb::Node) -> Vec<String> {
    vec![
        n.id.to_string(),
        n.state.clone(),
        n.grpc_addr.clone(),
        n.http_addr.clone(),
        if n.zone.is_empty() {
            "-".into()
        } else {
            n.zone.clone()
        },
        if n.meta_voter { "voter" } else { "learner" }.into(),
        n.leader_shards.to_string(),
        n.replica_shards.to_string(),
    ]
}

pub(crate) fn node_json(n: &pb::Node) -> Value {
    json!({"id": n.id, "state": n.state, "grpcAddr": n.grpc_addr, "httpAddr": n.http_addr,
        "zone": n.zone, "metaVoter": n.meta_voter, "leaderShards": n.leader_shards,
        "replicaShards": n.replica_shards})
}

const SHARD_HEADERS: &[&str] = &[
    "SHARD",
    "LEADER",
    "REPLICAS",
    "EPOCH",
    "TERM",
    "APPLIED",
    "LAG",
    "EXECUTIONS",
];

pub(crate) fn shard_row(s: &pb::Shard) -> Vec<String> {
    vec![
        s.id.to_string(),
        if s.leader == 0 {
            "-".into()
        } else {
            s.leader.to_string()
        },
        s.replicas
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(","),
        s.epoch.to_string(),
        s.term.to_string(),
        s.applied_index.to_string(),
        s.lag.to_string(),
        s.running_executions.to_string(),
    ]
}

pub(crate) fn shard_json(s: &pb::Shard) -> Value {
    json!({"id": s.id, "leader": s.leader, "replicas": s.replicas, "epoch": s.epoch,
        "term": s.term, "appliedIndex": s.applied_index, "lag": s.lag,
        "liveExecutions": s.running_executions})
}

/// The cluster's status as the node at the endpoint sees it.
pub(crate) async fn status(c: &mut Client) -> Result<pb::ClusterStatusResponse> {
    Ok(c.admin
        .cluster_status(pb::Empty {})
        .await
        .map_err(api)?
        .into_inner())
}

pub(crate) async fn cluster(c: &mut Client, j: bool, cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Status => {
            let s = status(c).await?;
            if j {
                out!(
                    "{}",
                    json!({"health": s.health, "nodeId": s.node_id, "metaLeader": s.meta_leader,
                        "metaVoters": s.meta_voters, "shardCount": s.shard_count,
                        "replicationFactor": s.replication_factor,
                        "underReplicated": s.under_replicated, "leaderless": s.leaderless,
                        "moving": s.moving, "placementPaused": s.placement_paused,
                        "nodes": s.nodes.iter().map(node_json).collect::<Vec<_>>()})
                );
            } else {
                out!(
                    "health {}  meta leader {}  meta voters {}  shards {}  replication factor {}",
                    s.health,
                    s.meta_leader,
                    s.meta_voters
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    s.shard_count,
                    s.replication_factor
                );
                out!(
                    "under-replicated: {}  leaderless: {}  moving: {}  placement: {}",
                    list_or_none(&s.under_replicated),
                    list_or_none(&s.leaderless),
                    list_or_none(&s.moving),
                    if s.placement_paused {
                        "paused"
                    } else {
                        "active"
                    }
                );
                table(NODE_HEADERS, s.nodes.iter().map(node_row).collect());
            }
            Ok(())
        }
        ClusterCmd::Nodes => nodes(c, j, NodesCmd::List).await,
        ClusterCmd::Shards => shards(c, j, ShardsCmd::List).await,
    }
}

pub(crate) async fn nodes(c: &mut Client, j: bool, cmd: NodesCmd) -> Result<()> {
    match cmd {
        NodesCmd::List => {
            let r = c
                .admin
                .list_nodes(pb::Empty {})
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", Value::Array(r.nodes.iter().map(node_json).collect()));
            } else {
                table(NODE_HEADERS, r.nodes.iter().map(node_row).collect());
            }
        }
        NodesCmd::Drain {
            id,
            wait,
            wait_seconds,
        } => {
            c.admin
                .drain_node(pb::NodeRequest { node_id: id })
                .await
                .map_err(api)?;
            if wait {
                let t = std::time::Instant::now();
                super::lifecycle::wait_drained(c, id, wait_seconds).await?;
                done(
                    j,
                    &format!(
                        "node {id} is drained ({:.1} s): `trellisctl nodes remove {id}` takes it out",
                        t.elapsed().as_secs_f64()
                    ),
                );
            } else {
                done(j, &format!("node {id} is draining"));
            }
        }
        NodesCmd::Remove { id } => {
            c.admin
                .remove_node(pb::NodeRequest { node_id: id })
                .await
                .map_err(api)?;
            done(j, &format!("node {id} removed"));
        }
        NodesCmd::HandOff { node, wait_seconds } => {
            super::lifecycle::hand_off(c, j, &node, wait_seconds).await?
        }
        NodesCmd::Leave {
            node,
            if_beyond_replicas,
            wait_seconds,
        } => super::lifecycle::leave(c, j, &node, if_beyond_replicas, wait_seconds).await?,
    }
    Ok(())
}

pub(crate) fn done(j: bool, what: &str) {
    if j {
        out!("{}", json!({"ok": true, "message": what}));
    } else {
        out!("{what}");
    }
}

pub(crate) async fn shards(c: &mut Client, j: bool, cmd: ShardsCmd) -> Result<()> {
    match cmd {
        ShardsCmd::List | ShardsCmd::Show { .. } => {
            let r = c
                .admin
                .list_shards(pb::Empty {})
                .await
                .map_err(api)?
                .into_inner();
            let list: Vec<&pb::Shard> = match cmd {
                ShardsCmd::Show { id } => {
                    let s: Vec<_> = r.shards.iter().filter(|s| s.id == id).collect();
                    if s.is_empty() {
                        bail!("no shard {id} (the cluster has {} shards)", r.shards.len());
                    }
                    s
                }
                _ => r.shards.iter().collect(),
            };
            if j {
                if let ShardsCmd::Show { .. } = cmd {
                    out!("{}", shard_json(list[0]));
                } else {
                    out!(
                        "{}",
                        Value::Array(list.iter().map(|s| shard_json(s)).collect())
                    );
                }
            } else {
                table(SHARD_HEADERS, list.iter().map(|s| shard_row(s)).collect());
            }
        }
        ShardsCmd::Move { id, from, to } => {
            c.admin
                .move_shard(pb::MoveShardRequest {
                    shard: id,
                    from,
                    to,
                })
                .await
                .map_err(api)?;
            done(
                j,
                &format!("shard {id} moved from node {from} to node {to}"),
            );
        }
        ShardsCmd::TransferLeader { id, to } => {
            c.admin
                .transfer_shard_leader(pb::TransferShardLeaderRequest { shard: id, to })
                .await
                .map_err(api)?;
            // Leader balancing may move it again unless placement is paused: say so.
            let paused = status(c).await?.placement_paused;
            if j {
                out!(
                    "{}",
                    json!({"shard": id, "leader": to, "placementPaused": paused})
                );
            } else if paused {
                out!("node {to} leads shard {id}");
            } else {
                out!(
                    "node {to} leads shard {id} (the placement driver balances leaders and may \
                     move it again; `trellisctl placement pause` keeps it)"
                );
            }
        }
        ShardsCmd::Rebalance { wait, wait_seconds } => {
            rebalance(c, j, wait, Duration::from_secs(wait_seconds)).await?;
        }
    }
    Ok(())
}

pub(crate) fn list_or_none(ids: &[u32]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `shards rebalance [--wait]`: starts the steps due now and prints them; with `wait`, again
/// every second until nothing is due and no move is in progress.
async fn rebalance(c: &mut Client, j: bool, wait: bool, limit: Duration) -> Result<()> {
    let start = std::time::Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let spinner = (wait && tty && !j).then(indicatif::ProgressBar::new_spinner);
    let mut started = Vec::new();
    loop {
        let r = c
            .admin
            .rebalance(pb::Empty {})
            .await
            .map_err(api)?
            .into_inner();
        if r.paused {
            bail!(
                "placement is paused: nothing was started and nothing moves until \
                 `trellisctl placement resume`"
            );
        }
        for s in &r.steps {
            match &spinner {
                Some(sp) if !j => sp.println(s),
                _ if !j => out!("{s}"),
                _ => {}
            }
        }
        started.extend(r.steps.iter().cloned());
        let settled = r.steps.is_empty() && r.moving.is_empty();
        if !wait || settled {
            if let Some(sp) = &spinner {
                sp.finish_and_clear();
            }
            if j {
                out!(
                    "{}",
                    json!({"steps": started, "placementPaused": false, "moving": r.moving})
                );
            } else if !r.moving.is_empty() {
                let ids: Vec<String> = r.moving.iter().map(u32::to_string).collect();
                out!("in progress: shard {}", ids.join(", "));
            } else if started.is_empty() {
                out!("balanced: nothing to do");
            } else {
                out!("balanced ({:.1} s)", start.elapsed().as_secs_f64());
            }
            return Ok(());
        }
        if start.elapsed() >= limit {
            bail!(
                "not balanced after {} s: shards {:?} still moving",
                limit.as_secs(),
                r.moving
            );
        }
        if let Some(sp) = &spinner {
            sp.set_message(format!("moving: shard {:?}", r.moving));
            sp.tick();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
