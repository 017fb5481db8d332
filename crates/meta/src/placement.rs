//! Placement: where shard replicas and meta voters go. Pure functions over the cluster's
//! records; the node applies what they decide through the meta group.

use serde::{Deserialize, Serialize};

/// A node as the meta group records it (table `Nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub id: u64,
    pub grpc_addr: String,
    pub http_addr: String,
    #[serde(default)]
    pub zone: String,
    pub state: NodeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Up,
    Draining,
    Removed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "UP",
            NodeState::Draining => "DRAINING",
            NodeState::Removed => "REMOVED",
        }
    }
}

/// A shard's replica set (table `Shards`). `replicas[0]` initializes the group; the epoch
/// grows with every change of the replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardRecord {
    pub id: u32,
    pub replicas: Vec<u64>,
    pub epoch: u64,
}

/// The key of a node record: fixed width, so the table iterates in id order.
pub fn node_key(id: u64) -> String {
    format!("{id:020}")
}

/// The key of a shard record.
pub fn shard_key(id: u32) -> String {
    format!("{id:010}")
}

/// How many meta voters a cluster of `nodes` live nodes has: 1, 3, or 5 from five nodes on.
pub fn meta_voter_target(nodes: usize) -> usize {
    match nodes {
        0..=2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

/// The first placement of `shards` shards on the nodes that are up: `rf` replicas each
/// (capped at the node count), on distinct nodes and, when nodes carry zones, on distinct
/// zones where there are enough. Shard `i` starts at the `i`-th node in id order, so the
/// initial leaders (`replicas[0]`) and the replica counts are balanced to ±1.
pub fn initial(shards: u32, nodes: &[NodeRecord], rf: usize) -> Vec<ShardRecord> {
    let mut up: Vec<&NodeRecord> = nodes.iter().filter(|n| n.state == NodeState::Up).collect();
    up.sort_by_key(|n| n.id);
    let rf = rf.min(up.len()).max(1);
    (0..shards)
        .map(|i| {
            let start = i as usize % up.len().max(1);
            let order: Vec<&NodeRecord> =
                (0..up.len()).map(|k| up[(start + k) % up.len()]).collect();
            let mut replicas: Vec<u64> = Vec::with_capacity(rf);
            let mut zones: Vec<&str> = Vec::new();
            // First pass: distinct zones; second pass: fill up with any node.
            for n in &order {
                if replicas.len() == rf {
                    break;
                }
                if n.zone.is_empty() || !zones.contains(&n.zone.as_str()) {
                    replicas.push(n.id);
                    zones.push(&n.zone);
                }
            }
            for n in &order {
                if replicas.len() == rf {
                    break;
                }
                if !replicas.contains(&n.id) {
                    replicas.push(n.id);
                }
            }
            ShardRecord {
                id: i,
                replicas,
                epoch: 1,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, zone: &str) -> NodeRecord {
        NodeRecord {
            id,
            grpc_addr: format!("n{id}:7300"),
            http_addr: format!("n{id}:8083"),
            zone: zone.into(),
            state: NodeState::Up,
        }
    }

    #[test]
    fn initial_placement_is_balanced_and_distinct() {
        let nodes: Vec<_> = (1..=4).map(|i| node(i, "")).collect();
        let map = initial(64, &nodes, 3);
        let mut replicas = [0usize; 5];
        let mut leaders = [0usize; 5];
        for s in &map {
            assert_eq!(s.replicas.len(), 3);
            let mut d = s.replicas.clone();
            d.dedup();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3, "distinct nodes: {s:?}");
            leaders[s.replicas[0] as usize] += 1;
            for r in &s.replicas {
                replicas[*r as usize] += 1;
            }
        }
        assert_eq!(&leaders[1..], &[16, 16, 16, 16]);
        assert_eq!(&replicas[1..], &[48, 48, 48, 48]);
    }

    #[test]
    fn replication_factor_is_capped_by_the_node_count() {
        let map = initial(8, &[node(7, "")], 3);
        assert!(map.iter().all(|s| s.replicas == vec![7]));
        let map = initial(8, &[node(1, ""), node(2, "")], 3);
        assert!(map.iter().all(|s| s.replicas.len() == 2));
    }

    #[test]
    fn zones_are_spread_when_labelled() {
        let nodes = vec![
            node(1, "a"),
            node(2, "a"),
            node(3, "b"),
            node(4, "b"),
            node(5, "c"),
        ];
        for s in initial(20, &nodes, 3) {
            let mut zones: Vec<&str> = s
                .replicas
                .iter()
                .map(|r| nodes.iter().find(|n| n.id == *r).unwrap().zone.as_str())
                .collect();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 3, "{s:?}");
        }
    }

    #[test]
    fn draining_nodes_get_nothing() {
        let mut nodes: Vec<_> = (1..=3).map(|i| node(i, "")).collect();
        nodes[1].state = NodeState::Draining;
        for s in initial(6, &nodes, 3) {
            assert!(!s.replicas.contains(&2));
            assert_eq!(s.replicas.len(), 2);
        }
    }

    #[test]
    fn meta_voters_grow_with_the_cluster() {
        let t: Vec<usize> = (1..=7).map(meta_voter_target).collect();
        assert_eq!(t, vec![1, 1, 3, 3, 5, 5, 5]);
    }
}
