//! Where replicas should be: the replica half of the range scheduler. From what every node reports,
//! at most one replica move a round, for the first of these reasons that applies:
//!
//! 1. **Repair**: a node silent for longer than the configured dead time is taken for lost; each range
//!    with a replica on it gets a new one elsewhere (the move adds the new replica before it removes
//!    the lost one, so the range keeps a quorum throughout).
//! 2. **Drain**: a node being decommissioned (it says so in its status) gives its replicas away.
//! 3. **Replica count**: when the node holding the most replicas holds two or more than the one holding
//!    the fewest, one replica goes from the former toward the latter.
//! 4. **Data size**: when counts are even but one node stores far more bytes than another (more than
//!    [`SIZE_SLACK`] of the larger and at least `min_size_gap` apart), a range that narrows the gap
//!    moves from a node that holds more replicas than the target.
//!
//! Targets are chosen by [`crate::moves::pick_target`] (zones first, then the emptiest node) among
//! live nodes that are not draining. A range with a move in flight (a learner, or a joint
//! configuration) is left alone, so a round never starts a second move of a range a cut-short one
//! still holds; the leader resumes or a later move finishes it. The meta group (the catalog and the
//! lock manager) is repaired and drained like any range but never moved only for balance.
//!
//! Size moves terminate: one goes only to a node holding fewer replicas than the source — at most one
//! fewer, or the count rule would have moved first — so it swaps the two nodes' counts and keeps
//! them balanced; and it moves a range smaller than the two nodes' difference in bytes, so the sum of
//! the squares of the nodes' bytes strictly falls.
//! The function is pure: the same reports give the same move wherever it runs.

use std::collections::BTreeMap;

use crate::moves::{Candidate, pick_target};
use crate::ranges::META_RANGE_ID;

/// A larger node's bytes must exceed a smaller one's by this fraction of its own for a size move.
pub const SIZE_SLACK: f64 = 0.2;

/// One node as the partition manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub node: u64,
    pub zone: Option<String>,
    /// It answered this round.
    pub live: bool,
    /// Silent for longer than the dead time: its replicas are to be replaced.
    pub dead: bool,
    /// Being decommissioned: it takes no replica and gives its own away.
    pub draining: bool,
}

/// One data range as its leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeReplicas {
    pub range: u64,
    /// Every node with a replica (voters and learners).
    pub holders: Vec<u64>,
    pub bytes: u64,
    /// No learner and no joint configuration: no move is in flight.
    pub settled: bool,
}

/// Why a replica moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveReason {
    /// Its node is lost.
    Repair,
    /// Its node is being decommissioned.
    Drain,
    /// Its node holds two or more replicas more than the target.
    Count,
    /// Its node stores far more than the target.
    Size,
}

/// One replica move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub range: u64,
    pub from: u64,
    pub to: u64,
    pub reason: MoveReason,
}

/// The round's move, if any (see the module docs). `replicas` counts what each node reports holding,
/// the meta group included; `ranges` are the data ranges with a leader this round.
pub fn plan(
    nodes: &[NodeState],
    replicas: &BTreeMap<u64, usize>,
    ranges: &[RangeReplicas],
    min_size_gap: u64,
) -> Option<Move> {
    let state = |n: u64| nodes.iter().find(|s| s.node == n);
    let takes = |n: &NodeState| n.live && !n.dead && !n.draining;
    let count = |n: u64| replicas.get(&n).copied().unwrap_or(0);
    let bytes_of = |n: u64| -> u64 {
        ranges
            .iter()
            .filter(|r| r.holders.contains(&n))
            .map(|r| r.bytes)
            .sum()
    };
    let candidates = |exclude_over: Option<usize>| -> Vec<Candidate> {
        nodes
            .iter()
            .filter(|n| takes(n))
            .filter(|n| exclude_over.is_none_or(|max| count(n.node) <= max))
            .map(|n| Candidate {
                node: n.node,
                zone: n.zone.clone(),
                replicas: count(n.node),
            })
            .collect()
    };
    // Every settled range may be repaired or drained, the meta group included; only data ranges move
    // for balance.
    let settled: Vec<&RangeReplicas> = ranges.iter().filter(|r| r.settled).collect();
    let movable: Vec<&RangeReplicas> = settled
        .iter()
        .copied()
        .filter(|r| r.range != META_RANGE_ID)
        .collect();
    let target = |r: &RangeReplicas, from: u64, cands: &[Candidate]| -> Option<u64> {
        let holders: Vec<(u64, Option<String>)> = r
            .holders
            .iter()
            .map(|&h| (h, state(h).and_then(|s| s.zone.clone())))
            .collect();
        pick_target(&holders, from, cands)
    };

    // 1 and 2: replicas on lost and on draining nodes, lowest range first.
    for (reason, leaving) in [
        (
            MoveReason::Repair,
            nodes.iter().filter(|n| n.dead).collect::<Vec<_>>(),
        ),
        (
            MoveReason::Drain,
            nodes
                .iter()
                .filter(|n| n.draining && !n.dead)
                .collect::<Vec<_>>(),
        ),
    ] {
        for n in leaving {
            let all = candidates(None);
            if let Some((r, to)) = settled
                .iter()
                .filter(|r| r.holders.contains(&n.node))
                .find_map(|r| Some((r, target(r, n.node, &all)?)))
            {
                return Some(Move {
                    range: r.range,
                    from: n.node,
                    to,
                    reason,
                });
            }
        }
    }
    // Moving for balance needs every node's word: a silent node's replicas are unknown.
    if nodes.iter().any(|n| !n.live && !n.dead) {
        return None;
    }
    let balanced: Vec<&NodeState> = nodes.iter().filter(|n| takes(n)).collect();
    // 3: replica count. The fullest node (lowest id on ties) gives its smallest range that some node
    // two or more replicas emptier can take.
    let mut fullest: Vec<u64> = balanced.iter().map(|n| n.node).collect();
    fullest.sort_by_key(|&n| (std::cmp::Reverse(count(n)), n));
    for &from in &fullest {
        let emptier = candidates(Some(count(from).saturating_sub(2)));
        let mut options: Vec<(&RangeReplicas, u64)> = movable
            .iter()
            .filter(|r| r.holders.contains(&from))
            .filter_map(|r| Some((*r, target(r, from, &emptier)?)))
            .collect();
        options.sort_by_key(|(r, _)| (r.bytes, r.range));
        if let Some((r, to)) = options.first() {
            return Some(Move {
                range: r.range,
                from,
                to: *to,
                reason: MoveReason::Count,
            });
        }
    }
    // 4: data size, between a node and one holding fewer replicas (so the count rule stays met).
    let mut heaviest: Vec<u64> = balanced.iter().map(|n| n.node).collect();
    heaviest.sort_by_key(|&n| (std::cmp::Reverse(bytes_of(n)), n));
    for &from in &heaviest {
        let lighter: Vec<Candidate> = candidates(None)
            .into_iter()
            .filter(|c| count(c.node) < count(from))
            .filter(|c| {
                let (big, small) = (bytes_of(from), bytes_of(c.node));
                big > small + min_size_gap && (big - small) as f64 > big as f64 * SIZE_SLACK
            })
            .collect();
        if lighter.is_empty() {
            continue;
        }
        // The largest range that still narrows the gap (one smaller than the gap itself).
        let mut options: Vec<(&RangeReplicas, u64)> = movable
            .iter()
            .filter(|r| r.holders.contains(&from) && r.bytes > 0)
            .filter_map(|r| {
                let to = target(r, from, &lighter)?;
                (r.bytes < bytes_of(from) - bytes_of(to)).then_some((*r, to))
            })
            .collect();
        options.sort_by_key(|(r, _)| (std::cmp::Reverse(r.bytes), r.range));
        if let Some((r, to)) = options.first() {
            return Some(Move {
                range: r.range,
                from,
                to: *to,
                reason: MoveReason::Size,
            });
        }
    }
    None
}

#[cfg(test)]
#[path = "rebalance_tests.rs"]
mod tests;
