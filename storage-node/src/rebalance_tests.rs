use super::*;

fn node(id: u64) -> NodeState {
    NodeState {
        node: id,
        zone: None,
        live: true,
        dead: false,
        draining: false,
    }
}

fn range(id: u64, holders: &[u64], bytes: u64) -> RangeReplicas {
    RangeReplicas {
        range: id,
        holders: holders.to_vec(),
        bytes,
        settled: true,
    }
}

/// What each node holds: the data ranges plus one meta replica on each of `meta`.
fn counts(ranges: &[RangeReplicas], nodes: &[NodeState], meta: &[u64]) -> BTreeMap<u64, usize> {
    nodes
        .iter()
        .map(|n| {
            let data = ranges
                .iter()
                .filter(|r| r.holders.contains(&n.node))
                .count();
            (n.node, data + usize::from(meta.contains(&n.node)))
        })
        .collect()
}

/// Plans and applies moves until there is none; checks each one; returns them.
fn run_to_rest(nodes: &[NodeState], ranges: &mut [RangeReplicas], meta: &[u64]) -> Vec<Move> {
    let mut moves = Vec::new();
    while let Some(m) = plan(nodes, &counts(ranges, nodes, meta), ranges, 0) {
        let r = ranges.iter_mut().find(|r| r.range == m.range).unwrap();
        assert!(r.holders.contains(&m.from), "{m:?}: the source holds it");
        assert!(!r.holders.contains(&m.to), "{m:?}: the target does not");
        let to = nodes.iter().find(|n| n.node == m.to).unwrap();
        assert!(
            to.live && !to.dead && !to.draining,
            "{m:?}: the target takes replicas"
        );
        r.holders.retain(|&h| h != m.from);
        r.holders.push(m.to);
        moves.push(m);
        assert!(moves.len() <= 100, "no end: {moves:?}");
    }
    moves
}

#[test]
fn an_added_node_fills_up_until_every_node_is_within_one() {
    let nodes: Vec<NodeState> = (1..=4).map(node).collect();
    let mut ranges: Vec<RangeReplicas> = (2..=9).map(|r| range(r, &[1, 2, 3], r * 10)).collect();
    let moves = run_to_rest(&nodes, &mut ranges, &[1, 2, 3]);
    let c = counts(&ranges, &nodes, &[1, 2, 3]);
    let (max, min) = (c.values().max().unwrap(), c.values().min().unwrap());
    assert!(max - min <= 1, "{c:?}");
    // 8 ranges × 3 + 3 meta = 27 replicas over 4 nodes: node 4 ends with 6, the first 6 moves all to
    // it, the smallest ranges first (cheapest to copy); then size moves even out the bytes, each one
    // swapping two nodes' counts, so the counts stay within one.
    assert_eq!(c[&4], 6, "{c:?}");
    assert!(
        moves[..6]
            .iter()
            .all(|m| m.to == 4 && m.reason == MoveReason::Count)
    );
    assert_eq!(moves[0].range, 2);
    assert!(
        moves[6..].iter().all(|m| m.reason == MoveReason::Size),
        "{moves:?}"
    );
    // Without size moves (a minimum gap larger than any) the count moves are all there is.
    let mut again: Vec<RangeReplicas> = (2..=9).map(|r| range(r, &[1, 2, 3], r * 10)).collect();
    let mut n = 0;
    while let Some(m) = plan(&nodes, &counts(&again, &nodes, &[1, 2, 3]), &again, 1 << 40) {
        let r = again.iter_mut().find(|r| r.range == m.range).unwrap();
        r.holders.retain(|&h| h != m.from);
        r.holders.push(m.to);
        n += 1;
        assert!(n <= 6, "{m:?}");
    }
    assert_eq!(n, 6);
}

#[test]
fn a_balanced_cluster_moves_nothing() {
    let nodes: Vec<NodeState> = (1..=3).map(node).collect();
    let ranges: Vec<RangeReplicas> = (2..=5).map(|r| range(r, &[1, 2, 3], 1 << 30)).collect();
    assert_eq!(
        plan(&nodes, &counts(&ranges, &nodes, &[1, 2, 3]), &ranges, 0),
        None
    );
}

#[test]
fn a_draining_node_gives_every_replica_away_and_takes_none() {
    let mut nodes: Vec<NodeState> = (1..=5).map(node).collect();
    nodes[1].draining = true;
    let mut ranges: Vec<RangeReplicas> = (2..=7)
        .map(|r| {
            let h: Vec<u64> = (0..3).map(|i| (r + i) % 5 + 1).collect();
            range(r, &h, 100)
        })
        .collect();
    let moves = run_to_rest(&nodes, &mut ranges, &[1, 2, 3]);
    assert!(ranges.iter().all(|r| !r.holders.contains(&2)), "{ranges:?}");
    assert!(moves.iter().all(|m| m.to != 2));
    let drains = moves
        .iter()
        .filter(|m| m.reason == MoveReason::Drain)
        .count();
    assert_eq!(
        drains, 3,
        "node 2 held replicas of ranges 4, 5 and 6: {moves:?}"
    );
}

#[test]
fn a_dead_nodes_replicas_are_replaced_but_a_merely_silent_node_stops_balancing() {
    let mut nodes: Vec<NodeState> = (1..=4).map(node).collect();
    let ranges = vec![range(2, &[1, 2, 3], 5), range(3, &[1, 2, 3], 5)];
    // Silent, not yet dead: its replicas are unknown, so nothing moves for balance.
    nodes[2].live = false;
    assert_eq!(
        plan(&nodes, &counts(&ranges, &nodes, &[]), &ranges, 0),
        None
    );
    // Dead: each range it held gets a replica on the node that can take one.
    nodes[2].dead = true;
    let mut ranges = ranges;
    let moves = run_to_rest(&nodes, &mut ranges, &[]);
    let repairs: Vec<&Move> = moves
        .iter()
        .filter(|m| m.reason == MoveReason::Repair)
        .collect();
    assert_eq!(repairs.len(), 2, "{moves:?}");
    assert!(repairs.iter().all(|m| m.from == 3 && m.to == 4));
    assert!(
        ranges
            .iter()
            .all(|r| r.holders.len() == 3 && !r.holders.contains(&3))
    );
}

#[test]
fn a_range_with_a_move_in_flight_and_the_meta_group_stay_put() {
    let nodes: Vec<NodeState> = (1..=4).map(node).collect();
    let mut busy = range(2, &[1, 2, 3, 4], 10);
    busy.settled = false;
    let meta = range(META_RANGE_ID, &[1, 2, 3], 10);
    let ranges = vec![busy, meta];
    let replicas = BTreeMap::from([(1, 9), (2, 9), (3, 9), (4, 0)]);
    assert_eq!(plan(&nodes, &replicas, &ranges, 0), None);
}

#[test]
fn size_moves_go_to_a_node_with_fewer_replicas_and_narrow_the_gap() {
    let nodes: Vec<NodeState> = (1..=4).map(node).collect();
    // Node 4 holds one replica fewer than node 1 (its third is a meta replica), and far fewer bytes.
    let ranges = vec![
        range(2, &[1, 2, 3], 900),
        range(3, &[1, 2, 3], 50),
        range(4, &[1, 2, 4], 10),
        range(5, &[1, 3, 4], 10),
    ];
    let replicas = counts(&ranges, &nodes, &[4]);
    assert_eq!(replicas, BTreeMap::from([(1, 4), (2, 3), (3, 3), (4, 3)]));
    let m = plan(&nodes, &replicas, &ranges, 100).expect("a size move");
    assert_eq!(m.reason, MoveReason::Size);
    assert_eq!(m.to, 4);
    // Node 1 (970 bytes) vs node 4 (20): range 2 (900) narrows the gap of 950; it is the largest that does.
    assert_eq!((m.range, m.from), (2, 1));
    // Below the minimum gap nothing moves.
    assert_eq!(plan(&nodes, &replicas, &ranges, 10_000), None);
}

#[test]
fn zones_are_honoured_when_replacing_a_replica() {
    let mut nodes: Vec<NodeState> = (1..=5).map(node).collect();
    for (n, z) in nodes.iter_mut().zip(["a", "b", "c", "a", "b"]) {
        n.zone = Some(z.into());
    }
    nodes[1].draining = true;
    let ranges = vec![range(2, &[1, 2, 3], 10)];
    let m = plan(&nodes, &counts(&ranges, &nodes, &[]), &ranges, 0).unwrap();
    // Node 2 (zone b) leaves: node 5 (zone b) keeps the range in three zones; node 4 would double zone a.
    assert_eq!((m.from, m.to, m.reason), (2, 5, MoveReason::Drain));
}

#[test]
fn the_meta_group_is_repaired_and_drained_but_not_moved_for_balance() {
    let mut nodes: Vec<NodeState> = (1..=4).map(node).collect();
    let ranges = vec![range(META_RANGE_ID, &[1, 2, 3], 10)];
    let replicas = BTreeMap::from([(1, 1), (2, 1), (3, 1), (4, 0)]);
    nodes[2].draining = true;
    assert_eq!(
        plan(&nodes, &replicas, &ranges, 0),
        Some(Move {
            range: META_RANGE_ID,
            from: 3,
            to: 4,
            reason: MoveReason::Drain
        })
    );
    nodes[2].draining = false;
    nodes[2].live = false;
    nodes[2].dead = true;
    assert_eq!(
        plan(&nodes, &replicas, &ranges, 0).map(|m| m.reason),
        Some(MoveReason::Repair)
    );
}
