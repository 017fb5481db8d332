//! The meta group's voters: how many a cluster has, and which change to make next as
//! members join, leave and restart. Pure functions over the placement driver's view of the
//! nodes; `trellis_cluster::membership` applies them one change at a time.

use crate::placement::{NodeState, NodeView};

/// How many meta voters a cluster of `nodes` live nodes has: 1, 3, or 5 from five nodes on.
pub fn meta_voter_target(nodes: usize) -> usize {
    match nodes {
        0..=2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

/// One change of the meta group's voters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoterStep {
    /// Make a learner (a member that is up) a voter.
    Promote(u64),
    /// Make a voter a learner again.
    Demote(u64),
}

/// The next change of the meta voters, if any: towards [`meta_voter_target`] of the nodes
/// that stay members (UP or RESTARTING), with voters on nodes that leave (DRAINING,
/// REMOVED) replaced by members that are up. A promotion comes before the demotion it
/// allows, so the group never has fewer voters than it needs; `leader` (the node applying
/// the change) is never demoted. `learners` are the meta group's non-voting members: only
/// they can be promoted (a node is a learner once it caught up with the meta log).
pub fn voter_step(
    nodes: &[NodeView],
    voters: &[u64],
    learners: &[u64],
    leader: u64,
) -> Option<VoterStep> {
    let node = |id: u64| nodes.iter().find(|n| n.id == id);
    let staying = nodes.iter().filter(|n| n.state.stays()).count();
    let target = meta_voter_target(staying);
    let leaving = |id: u64| node(id).is_none_or(|n| !n.state.stays());
    let keep = voters.iter().filter(|v| !leaving(**v)).count();
    // A member that is up, answering and not a voter yet, lowest id first.
    let candidate = nodes
        .iter()
        .filter(|n| n.state == NodeState::Up && n.alive && !n.down)
        .filter(|n| learners.contains(&n.id) && !voters.contains(&n.id))
        .map(|n| n.id)
        .min();
    if keep < target {
        if let Some(id) = candidate {
            return Some(VoterStep::Promote(id));
        }
    }
    if voters.len() > target || (keep < voters.len() && keep >= target) {
        // Demote the voter that helps least: a leaving node, then a down or silent one,
        // then a restarting one, then the highest id.
        return voters
            .iter()
            .copied()
            .filter(|v| *v != leader)
            .max_by_key(|v| {
                let n = node(*v);
                (
                    leaving(*v),
                    n.is_some_and(|n| n.down || !n.alive),
                    n.is_some_and(|n| n.state == NodeState::Restarting),
                    *v,
                )
            })
            .map(VoterStep::Demote);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn meta_voters_grow_with_the_cluster() {
        let t: Vec<usize> = (1..=7).map(meta_voter_target).collect();
        assert_eq!(t, vec![1, 1, 3, 3, 5, 5, 5]);
    }

    fn with(id: u64, state: NodeState) -> NodeView {
        NodeView { state, ..view(id) }
    }

    /// Applies voter steps until there are none (at most 10).
    fn settle_voters(nodes: &[NodeView], voters: &mut Vec<u64>, leader: u64) -> Vec<VoterStep> {
        let mut done = Vec::new();
        for _ in 0..10 {
            let learners: Vec<u64> = nodes
                .iter()
                .map(|n| n.id)
                .filter(|id| !voters.contains(id))
                .collect();
            let Some(step) = voter_step(nodes, voters, &learners, leader) else {
                return done;
            };
            match step {
                VoterStep::Promote(id) => voters.push(id),
                VoterStep::Demote(id) => voters.retain(|v| *v != id),
            }
            done.push(step);
        }
        panic!("voter steps do not settle: {voters:?}");
    }

    #[test]
    fn meta_voters_grow_then_shrink_as_nodes_leave() {
        let mut voters = vec![1];
        let five: Vec<NodeView> = (1..=5).map(view).collect();
        settle_voters(&five, &mut voters, 1);
        voters.sort();
        assert_eq!(voters, vec![1, 2, 3, 4, 5]);
        // Node 5 decommissions: its vote goes first, then the group shrinks to three.
        let mut nodes = five.clone();
        nodes[4].state = NodeState::Draining;
        assert_eq!(
            voter_step(&nodes, &voters, &[], 1),
            Some(VoterStep::Demote(5))
        );
        settle_voters(&nodes, &mut voters, 1);
        voters.sort();
        assert_eq!(voters, vec![1, 2, 3]);
        // The leader is never demoted, whatever its id.
        let mut voters = vec![1, 2, 3, 4, 5];
        settle_voters(&nodes, &mut voters, 4);
        voters.sort();
        assert_eq!(voters, vec![1, 2, 4]);
    }

    #[test]
    fn a_leaving_voter_is_replaced_before_it_goes() {
        let nodes = vec![view(1), view(2), with(3, NodeState::Draining), view(4)];
        let voters = vec![1, 2, 3];
        assert_eq!(
            voter_step(&nodes, &voters, &[4], 1),
            Some(VoterStep::Promote(4))
        );
        assert_eq!(
            voter_step(&nodes, &[1, 2, 3, 4], &[], 1),
            Some(VoterStep::Demote(3))
        );
        assert_eq!(voter_step(&nodes, &[1, 2, 4], &[3], 1), None);
        // No one to take its place: the group keeps the leaving voter rather than shrink
        // below its target.
        let nodes = vec![view(1), view(2), with(3, NodeState::Draining), {
            let mut v = view(4);
            v.alive = false;
            v.down = true;
            v
        }];
        assert_eq!(voter_step(&nodes, &voters, &[4], 1), None);
    }

    #[test]
    fn a_restarting_voter_keeps_its_vote() {
        let nodes = vec![view(1), with(2, NodeState::Restarting), view(3), view(4)];
        assert_eq!(voter_step(&nodes, &[1, 2, 3], &[4], 1), None);
        // A restarting node is not promoted.
        let nodes = vec![view(1), with(2, NodeState::Restarting), view(3)];
        assert_eq!(voter_step(&nodes, &[1, 3], &[2], 1), None);
    }
}
