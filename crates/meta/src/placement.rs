//! Placement: where shard replicas and meta voters go. Pure functions over the cluster's
//! records; the node applies what they decide through the meta group.

use serde::{Deserialize, Serialize};

/// A node as the meta group records it (table `Nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub id: u64,
    /// The client gRPC address (for operators).
    pub grpc_addr: String,
    pub http_addr: String,
    /// The peer address other nodes reach this one at. Empty in records written before
    /// the peer port existed, when peers used `grpc_addr` ([`NodeRecord::peer`]).
    #[serde(default)]
    pub peer_addr: String,
    #[serde(default)]
    pub zone: String,
    pub state: NodeState,
}

impl NodeRecord {
    /// Where other nodes send Raft messages and forwarded calls.
    pub fn peer(&self) -> &str {
        if self.peer_addr.is_empty() {
            &self.grpc_addr
        } else {
            &self.peer_addr
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Up,
    /// Leaving for good (a decommission): its replicas and leaderships move to other nodes,
    /// it gives up its meta vote, and once it holds nothing it is removed.
    Draining,
    Removed,
    /// About to stop and come back (a rolling restart, an eviction): its leaderships move
    /// away, its replicas stay. The node sets itself UP again when it starts.
    Restarting,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "UP",
            NodeState::Draining => "DRAINING",
            NodeState::Removed => "REMOVED",
            NodeState::Restarting => "RESTARTING",
        }
    }

    /// Whether the node is expected to stay a member (counts for the meta voter target).
    pub fn stays(self) -> bool {
        matches!(self, NodeState::Up | NodeState::Restarting)
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
    /// Nodes being added (a move in progress): they open a replica and catch up as learners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<u64>,
}

impl crate::records::Record for NodeRecord {
    const TABLE: crate::Table = crate::Table::Nodes;
    fn key(&self) -> std::borrow::Cow<'_, str> {
        node_key(self.id).into()
    }
}

impl crate::records::Record for ShardRecord {
    const TABLE: crate::Table = crate::Table::Shards;
    fn key(&self) -> std::borrow::Cow<'_, str> {
        shard_key(self.id).into()
    }
}

/// The key of a node record: fixed width, so the table iterates in id order.
pub fn node_key(id: u64) -> String {
    format!("{id:020}")
}

/// The key of a shard record.
pub fn shard_key(id: u32) -> String {
    format!("{id:010}")
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
                learners: Vec::new(),
            }
        })
        .collect()
}

/// A node as the placement driver sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: u64,
    pub zone: String,
    pub state: NodeState,
    /// Answered the driver's last pings.
    pub alive: bool,
    /// Silent for longer than the grace period: its replicas are re-created elsewhere.
    pub down: bool,
    /// Silent for so long that it is decommissioned (`cluster.decommission_after_seconds`).
    pub gone: bool,
}

/// A shard as the placement driver sees it.
#[derive(Debug, Clone)]
pub struct ShardView {
    pub id: u32,
    pub replicas: Vec<u64>,
    pub learners: Vec<u64>,
    pub leader: Option<u64>,
    /// A step for this shard is in flight (the driver's own bookkeeping).
    pub moving: bool,
}

/// One placement step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Add a replica on `to` (as a learner, then a voter), then remove the one on `from`.
    Move {
        shard: u32,
        from: Option<u64>,
        to: u64,
    },
    /// Hand the shard's leadership to `to`, one of its replicas.
    TransferLeader { shard: u32, from: u64, to: u64 },
    /// Drop the replica on a draining or removed node when the others suffice.
    Remove { shard: u32, from: u64 },
}

impl Step {
    pub fn shard(&self) -> u32 {
        match self {
            Step::Move { shard, .. }
            | Step::TransferLeader { shard, .. }
            | Step::Remove { shard, .. } => *shard,
        }
    }
}

/// The (fuller, emptier) node pairs whose counts differ by more than one, the widest gap
/// first (ties: the fuller node's lower id, then the emptier node's lower id).
fn pairs(counts: &std::collections::BTreeMap<u64, usize>) -> Vec<(u64, u64)> {
    let mut out: Vec<(usize, u64, u64)> = Vec::new();
    for (&a, &ca) in counts {
        for (&b, &cb) in counts {
            if ca > cb + 1 {
                out.push((ca - cb, a, b));
            }
        }
    }
    out.sort_by_key(|(gap, a, b)| (std::cmp::Reverse(*gap), *a, *b));
    out.into_iter().map(|(_, a, b)| (a, b)).collect()
}

/// What to do next, in order of need: replicas off nodes that are down, draining or removed
/// (and missing replicas), then replica counts, then leader counts, balanced to ±1 over the
/// nodes that can take them. At most `budget` steps, at most one per shard, none for a shard
/// that is already changing. A replica is never moved off a leader: its leadership moves
/// first. Leader counts are balanced only once they are known and still: while a shard has
/// no leader (an election) or a step is in flight, the counts would be out of date and
/// balancing them would move leaders back and forth.
pub fn plan(nodes: &[NodeView], shards: &[ShardView], rf: usize, budget: usize) -> Vec<Step> {
    let usable: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Up && n.alive && !n.down)
        .collect();
    let is_usable = |id: u64| usable.iter().any(|n| n.id == id);
    // A replica that must move: on a node that is down or leaving. A restarting node keeps
    // its replicas (it comes back); only its leaderships move (step 3).
    let bad = |id: u64| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .is_none_or(|n| n.down || !n.state.stays())
    };
    let zone = |id: u64| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.zone.as_str())
            .unwrap_or("")
    };
    // A transfer mutes the old leader, so the other live replicas must make a quorum on
    // their own: otherwise the target cannot win its election and the shard waits out the
    // transfer's guard without a leader.
    let alive = |id: u64| nodes.iter().any(|n| n.id == id && n.alive && !n.down);
    let can_transfer = |s: &ShardView, from: u64| {
        let others = s
            .replicas
            .iter()
            .filter(|r| **r != from && alive(**r))
            .count();
        others > s.replicas.len() / 2
    };
    let rf = rf.min(usable.len()).max(1);
    let mut replicas: std::collections::BTreeMap<u64, usize> =
        usable.iter().map(|n| (n.id, 0)).collect();
    let mut leaders = replicas.clone();
    for s in shards {
        for r in s.replicas.iter().chain(&s.learners) {
            if let Some(c) = replicas.get_mut(r) {
                *c += 1;
            }
        }
        if let Some(c) = s.leader.and_then(|l| leaders.get_mut(&l)) {
            *c += 1;
        }
    }
    let mut steps = Vec::new();
    let mut busy: Vec<u32> = shards
        .iter()
        .filter(|s| !s.learners.is_empty() || s.moving)
        .map(|s| s.id)
        .collect();
    // The least loaded usable node that can take a replica of `s`, preferring new zones.
    let pick = |s: &ShardView, replicas: &std::collections::BTreeMap<u64, usize>, keep: &[u64]| {
        let zones: Vec<&str> = keep
            .iter()
            .map(|r| zone(*r))
            .filter(|z| !z.is_empty())
            .collect();
        usable
            .iter()
            .filter(|n| !s.replicas.contains(&n.id) && !s.learners.contains(&n.id))
            .min_by_key(|n| {
                let clash = !n.zone.is_empty() && zones.contains(&n.zone.as_str());
                (clash, replicas.get(&n.id).copied().unwrap_or(0), n.id)
            })
            .map(|n| n.id)
    };
    // 1. Repair.
    for s in shards {
        if steps.len() >= budget {
            return steps;
        }
        if busy.contains(&s.id) {
            continue;
        }
        let good: Vec<u64> = s.replicas.iter().copied().filter(|r| !bad(*r)).collect();
        let off = s.replicas.iter().copied().find(|r| bad(*r));
        if off.is_none() && s.replicas.len() >= rf {
            continue;
        }
        // Leadership leaves a draining leader before its replica does.
        if let (Some(from), Some(l)) = (off, s.leader) {
            if from == l {
                let to = good
                    .iter()
                    .copied()
                    .filter(|r| is_usable(*r))
                    .min_by_key(|r| leaders.get(r).copied().unwrap_or(0));
                if let (Some(to), true) = (to, can_transfer(s, l)) {
                    steps.push(Step::TransferLeader {
                        shard: s.id,
                        from,
                        to,
                    });
                    busy.push(s.id);
                }
                continue;
            }
        }
        if let Some(to) = pick(s, &replicas, &good) {
            let from = if s.replicas.len() >= rf { off } else { None };
            *replicas.entry(to).or_default() += 1;
            if let Some(c) = from.and_then(|f| replicas.get_mut(&f)) {
                *c -= 1;
            }
            steps.push(Step::Move {
                shard: s.id,
                from,
                to,
            });
            busy.push(s.id);
        } else if let Some(from) = off {
            // Nowhere to go: a draining (not a dead) node's replica is dropped when the
            // others make the replication factor.
            let alive = nodes.iter().any(|n| n.id == from && !n.down);
            if alive && good.len() >= rf {
                steps.push(Step::Remove { shard: s.id, from });
                busy.push(s.id);
            }
        }
    }
    // 2. Replica counts: a replica moves from a fuller node to an emptier one, trying the
    // pairs from the widest gap down. With zones, the fullest and the emptiest node may
    // have no shard between them that keeps its zones distinct: another pair may.
    while steps.len() < budget {
        let Some((s, max, min)) = pairs(&replicas).into_iter().find_map(|(max, min)| {
            shards
                .iter()
                .find(|s| {
                    !busy.contains(&s.id)
                        && s.replicas.contains(&max)
                        && !s.replicas.contains(&min)
                        && !s.learners.contains(&min)
                        && s.leader != Some(max)
                        && (zone(min).is_empty()
                            || zone(min) == zone(max)
                            || !s
                                .replicas
                                .iter()
                                .any(|r| *r != max && zone(*r) == zone(min)))
                })
                .map(|s| (s, max, min))
        }) else {
            break;
        };
        *replicas.entry(max).or_default() -= 1;
        *replicas.entry(min).or_default() += 1;
        steps.push(Step::Move {
            shard: s.id,
            from: Some(max),
            to: min,
        });
        busy.push(s.id);
    }
    // 3. Leader counts (and no leader on a node that cannot keep it).
    for s in shards {
        if steps.len() >= budget {
            return steps;
        }
        let Some(l) = s.leader else { continue };
        if busy.contains(&s.id) || is_usable(l) || !can_transfer(s, l) {
            continue;
        }
        if let Some(to) = s
            .replicas
            .iter()
            .copied()
            .filter(|r| is_usable(*r))
            .min_by_key(|r| leaders.get(r).copied().unwrap_or(0))
        {
            *leaders.entry(to).or_default() += 1;
            steps.push(Step::TransferLeader {
                shard: s.id,
                from: l,
                to,
            });
            busy.push(s.id);
        }
    }
    let settled = shards.iter().all(|s| s.leader.is_some() && !s.moving);
    while settled && steps.len() < budget {
        let Some((s, max, min)) = pairs(&leaders).into_iter().find_map(|(max, min)| {
            shards
                .iter()
                .find(|s| {
                    !busy.contains(&s.id)
                        && s.leader == Some(max)
                        && s.replicas.contains(&min)
                        && can_transfer(s, max)
                })
                .map(|s| (s, max, min))
        }) else {
            break;
        };
        *leaders.entry(max).or_default() -= 1;
        *leaders.entry(min).or_default() += 1;
        steps.push(Step::TransferLeader {
            shard: s.id,
            from: max,
            to: min,
        });
        busy.push(s.id);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, zone: &str) -> NodeRecord {
        NodeRecord {
            id,
            grpc_addr: format!("n{id}:7300"),
            http_addr: format!("n{id}:8083"),
            peer_addr: format!("n{id}:7301"),
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
    fn a_restarting_node_keeps_its_replicas_and_loses_its_leaderships() {
        let recs: Vec<_> = (1..=3).map(|i| node(i, "")).collect();
        let mut shards = shards_on(&recs, 6);
        let mut nodes: Vec<NodeView> = (1..=3).map(view).collect();
        nodes[1].state = NodeState::Restarting;
        converge(&nodes, &mut shards);
        for s in &shards {
            assert!(s.replicas.contains(&2), "{s:?}");
            assert_ne!(s.leader, Some(2), "{s:?}");
        }
    }

    #[test]
    fn zones_do_not_stop_newcomers_getting_their_share() {
        // Zones a, b, c on three nodes; two newcomers in zones a and b. Zone c has one node,
        // which keeps a replica of every shard; the others share the rest evenly.
        let zones = ["a", "b", "c", "a", "b"];
        let recs: Vec<_> = (1..=3).map(|i| node(i, zones[i as usize - 1])).collect();
        let mut shards = shards_on(&recs, 16);
        let nodes: Vec<NodeView> = (1..=5)
            .map(|i| NodeView {
                zone: zones[i as usize - 1].into(),
                ..view(i)
            })
            .collect();
        converge(&nodes, &mut shards);
        let (replicas, leaders) = counts(&shards, &[1, 2, 3, 4, 5]);
        assert_eq!(replicas, vec![8, 8, 16, 8, 8], "{shards:?}");
        assert!(
            leaders.iter().max().unwrap() - leaders.iter().min().unwrap() <= 1,
            "{leaders:?}"
        );
        for s in &shards {
            let mut z: Vec<&str> = s.replicas.iter().map(|r| zones[*r as usize - 1]).collect();
            z.sort();
            assert_eq!(z, ["a", "b", "c"], "{s:?}");
        }
    }

    fn view(id: u64) -> NodeView {
        NodeView {
            id,
            zone: String::new(),
            state: NodeState::Up,
            alive: true,
            down: false,
            gone: false,
        }
    }

    /// Applies steps the way the driver does, so plans can be iterated to a fixed point.
    fn apply(shards: &mut [ShardView], steps: &[Step]) {
        for st in steps {
            let s = shards.iter_mut().find(|s| s.id == st.shard()).unwrap();
            match st {
                Step::Move { from, to, .. } => {
                    s.replicas.retain(|r| Some(*r) != *from);
                    s.replicas.push(*to);
                }
                Step::TransferLeader { to, .. } => s.leader = Some(*to),
                Step::Remove { from, .. } => s.replicas.retain(|r| r != from),
            }
        }
    }

    fn converge(nodes: &[NodeView], shards: &mut [ShardView]) -> usize {
        for round in 0..200 {
            let steps = plan(nodes, shards, 3, 4);
            if steps.is_empty() {
                return round;
            }
            apply(shards, &steps);
        }
        panic!("placement does not converge: {shards:?}");
    }

    fn counts(shards: &[ShardView], nodes: &[u64]) -> (Vec<usize>, Vec<usize>) {
        let r = nodes
            .iter()
            .map(|n| shards.iter().filter(|s| s.replicas.contains(n)).count())
            .collect();
        let l = nodes
            .iter()
            .map(|n| shards.iter().filter(|s| s.leader == Some(*n)).count())
            .collect();
        (r, l)
    }

    fn shards_on(nodes: &[NodeRecord], n: u32) -> Vec<ShardView> {
        initial(n, nodes, 3)
            .into_iter()
            .map(|s| ShardView {
                id: s.id,
                leader: s.replicas.first().copied(),
                replicas: s.replicas,
                learners: vec![],
                moving: false,
            })
            .collect()
    }

    #[test]
    fn leaders_are_balanced_only_once_their_counts_are_still() {
        let recs: Vec<_> = (1..=3).map(|i| node(i, "")).collect();
        let mut shards = shards_on(&recs, 12);
        // Node 1 leads everything: unbalanced.
        for s in shards.iter_mut() {
            s.leader = Some(1);
        }
        let nodes: Vec<_> = (1..=3).map(view).collect();
        let transfers = |shards: &[ShardView]| {
            plan(&nodes, shards, 3, 4)
                .into_iter()
                .filter(|s| matches!(s, Step::TransferLeader { .. }))
                .count()
        };
        assert_eq!(transfers(&shards), 4);
        // An election under way: the counts are not known.
        shards[0].leader = None;
        assert_eq!(transfers(&shards), 0);
        shards[0].leader = Some(1);
        // A transfer in flight: the counts are about to change.
        shards[5].moving = true;
        assert_eq!(transfers(&shards), 0);
        shards[5].moving = false;
        let mut nodes_shards = shards.clone();
        converge(&nodes, &mut nodes_shards);
        let (_, l) = counts(&nodes_shards, &[1, 2, 3]);
        assert_eq!(l, vec![4, 4, 4]);
    }

    #[test]
    fn no_transfer_that_cannot_win_an_election() {
        // Five replicas, two of them dead: without the (muted) old leader only two live
        // replicas remain, short of the three votes the target needs.
        let recs: Vec<_> = (1..=5).map(|i| node(i, "")).collect();
        let shards: Vec<ShardView> = initial(6, &recs, 5)
            .into_iter()
            .map(|s| ShardView {
                id: s.id,
                leader: Some(1),
                replicas: s.replicas,
                learners: vec![],
                moving: false,
            })
            .collect();
        let mut nodes: Vec<_> = (1..=5).map(view).collect();
        for n in &mut nodes[3..] {
            n.alive = false;
        }
        let steps = plan(&nodes, &shards, 5, 10);
        assert!(
            steps
                .iter()
                .all(|s| !matches!(s, Step::TransferLeader { .. })),
            "{steps:?}"
        );
        // With one of them back, three live replicas besides the leader: transfers again.
        nodes[3].alive = true;
        assert!(plan(&nodes, &shards, 5, 10)
            .iter()
            .any(|s| matches!(s, Step::TransferLeader { .. })));
    }

    #[test]
    fn a_joining_node_gets_a_fair_share() {
        let recs: Vec<_> = (1..=3).map(|i| node(i, "")).collect();
        let mut shards = shards_on(&recs, 64);
        let nodes: Vec<_> = (1..=4).map(view).collect();
        converge(&nodes, &mut shards);
        let (r, l) = counts(&shards, &[1, 2, 3, 4]);
        assert!(
            r.iter().max().unwrap() - r.iter().min().unwrap() <= 1,
            "{r:?}"
        );
        assert!(
            l.iter().max().unwrap() - l.iter().min().unwrap() <= 1,
            "{l:?}"
        );
        assert!(shards.iter().all(|s| s.replicas.len() == 3));
    }

    #[test]
    fn a_down_node_is_replaced_and_a_draining_node_emptied() {
        let recs: Vec<_> = (1..=4).map(|i| node(i, "")).collect();
        let mut shards = shards_on(&recs, 32);
        let mut nodes: Vec<_> = (1..=4).map(view).collect();
        nodes[3].down = true;
        nodes[3].alive = false;
        // Leaders of the dead node have moved by election; the driver sees them elsewhere.
        for s in shards.iter_mut() {
            if s.leader == Some(4) {
                s.leader = s.replicas.iter().copied().find(|r| *r != 4);
            }
        }
        converge(&nodes, &mut shards);
        assert!(shards
            .iter()
            .all(|s| !s.replicas.contains(&4) && s.replicas.len() == 3));
        nodes[2].state = NodeState::Draining;
        converge(&nodes, &mut shards);
        let (r, l) = counts(&shards, &[1, 2, 3]);
        assert_eq!(r[2], 0, "drained: {r:?}");
        assert_eq!(l[2], 0, "drained: {l:?}");
        // Two nodes left: every shard keeps two replicas.
        assert!(shards.iter().all(|s| s.replicas.len() == 2), "{shards:?}");
    }

    #[test]
    fn a_down_node_is_not_removed_without_a_replacement() {
        let recs: Vec<_> = (1..=3).map(|i| node(i, "")).collect();
        let shards = shards_on(&recs, 8);
        let mut nodes: Vec<_> = (1..=3).map(view).collect();
        nodes[0].down = true;
        nodes[0].alive = false;
        let steps = plan(&nodes, &shards, 3, 100);
        assert!(
            steps.iter().all(|s| !matches!(s, Step::Move { .. })),
            "{steps:?}"
        );
    }

    #[test]
    fn budget_and_busy_shards_are_respected() {
        let recs: Vec<_> = (1..=3).map(|i| node(i, "")).collect();
        let mut shards = shards_on(&recs, 64);
        shards[0].learners = vec![4];
        let nodes: Vec<_> = (1..=4).map(view).collect();
        let steps = plan(&nodes, &shards, 3, 4);
        assert_eq!(steps.len(), 4);
        assert!(steps.iter().all(|s| s.shard() != 0));
    }
}
