use super::*;

const MEMBERS: [u64; 3] = [1, 2, 3];

/// Reports of three nodes hosting every range of `leaders` (range → leading node), all caught up.
fn reports(leaders: &BTreeMap<u64, u64>) -> Vec<NodeReport> {
    MEMBERS
        .iter()
        .map(|&node| NodeReport {
            node,
            replicas: Some(
                leaders
                    .iter()
                    .map(|(&range, &leader)| ReplicaReport {
                        range,
                        leader: leader == node,
                        commit: 100,
                        applied: 100,
                    })
                    .collect(),
            ),
            drained: false,
        })
        .collect()
}

fn map(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    pairs.iter().copied().collect()
}

fn counts(leaders: &BTreeMap<u64, u64>) -> Vec<usize> {
    MEMBERS
        .iter()
        .map(|&m| leaders.values().filter(|&&l| l == m).count())
        .collect()
}

#[test]
fn all_leaders_on_one_node_move_one_data_range_to_the_idlest_lowest_id() {
    let all_on_1 = map(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
    assert_eq!(
        decide(&MEMBERS, &reports(&all_on_1)),
        Decision::Transfer {
            range: 2,
            from: 1,
            to: 2
        }
    );
}

#[test]
fn repeated_decisions_converge_to_within_one_and_then_stop() {
    for (ranges, start) in [(5u64, 1u64), (6, 3), (9, 2), (2, 1), (1, 1)] {
        let mut leaders: BTreeMap<u64, u64> = (1..=ranges).map(|r| (r, start)).collect();
        let mut moves = 0;
        loop {
            match decide(&MEMBERS, &reports(&leaders)) {
                Decision::Transfer { range, from, to } => {
                    assert_eq!(leaders[&range], from, "moves a range the source leads");
                    assert_ne!(from, to);
                    leaders.insert(range, to);
                    moves += 1;
                    assert!(moves <= ranges, "{ranges} ranges from node {start}: no end");
                }
                Decision::Balanced => break,
                Decision::Unhealthy(why) => panic!("{why}"),
            }
        }
        let c = counts(&leaders);
        let (max, min) = (c.iter().max().unwrap(), c.iter().min().unwrap());
        assert!(max - min <= 1, "{ranges} ranges: {c:?}");
        // Never more moves than leaders that had to leave the busiest node.
        assert_eq!(moves as usize, ranges as usize - c[(start - 1) as usize]);
    }
}

#[test]
fn a_spread_within_one_is_balanced() {
    for leaders in [
        map(&[(1, 1), (2, 2), (3, 3)]),
        map(&[(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)]),
        map(&[(1, 3), (2, 2)]),
        map(&[(1, 2)]),
    ] {
        assert_eq!(
            decide(&MEMBERS, &reports(&leaders)),
            Decision::Balanced,
            "{leaders:?}"
        );
    }
}

#[test]
fn the_meta_group_is_never_the_one_to_move() {
    // The busiest node leads at least two ranges, so one of them is a data range: that one goes.
    for leaders in [
        map(&[(1, 1), (2, 1), (3, 2), (4, 2), (5, 1), (6, 1)]),
        map(&[(1, 1), (2, 1)]),
        map(&[(1, 2), (2, 3), (3, 2), (4, 2)]),
    ] {
        match decide(&MEMBERS, &reports(&leaders)) {
            Decision::Transfer { range, from, .. } => {
                assert_ne!(range, META_RANGE_ID, "{leaders:?}");
                assert_eq!(leaders[&range], from);
            }
            other => panic!("{leaders:?}: {other:?}"),
        }
    }
}

#[test]
fn nothing_moves_while_a_node_is_unreachable() {
    let all_on_1 = map(&[(1, 1), (2, 1), (3, 1)]);
    let mut r = reports(&all_on_1);
    r[2].replicas = None;
    assert_eq!(
        decide(&MEMBERS, &r),
        Decision::Unhealthy("node 3 did not answer".into())
    );
    r.truncate(2);
    assert!(matches!(decide(&MEMBERS, &r), Decision::Unhealthy(_)));
}

#[test]
fn nothing_moves_while_a_replica_is_behind_or_a_range_has_no_single_leader() {
    let all_on_1 = map(&[(1, 1), (2, 1), (3, 1)]);
    let mut behind = reports(&all_on_1);
    behind[1].replicas.as_mut().unwrap()[2].applied = 100 - MAX_LAG - 1;
    let Decision::Unhealthy(why) = decide(&MEMBERS, &behind) else {
        panic!("a lagging replica must stop balancing");
    };
    assert!(why.contains("node 2") && why.contains("range 3"), "{why}");
    // A little lag (reports are taken at different moments) is not "behind".
    behind[1].replicas.as_mut().unwrap()[2].applied = 100 - MAX_LAG;
    assert!(matches!(
        decide(&MEMBERS, &behind),
        Decision::Transfer { .. }
    ));

    let mut leaderless = reports(&all_on_1);
    leaderless[0].replicas.as_mut().unwrap()[1].leader = false;
    assert_eq!(
        decide(&MEMBERS, &leaderless),
        Decision::Unhealthy("range 2 has 0 leaders".into())
    );
    let mut two = reports(&all_on_1);
    two[2].replicas.as_mut().unwrap()[1].leader = true;
    assert_eq!(
        decide(&MEMBERS, &two),
        Decision::Unhealthy("range 2 has 2 leaders".into())
    );
    // A node without a replica of a range is no target for its leader (with more nodes than
    // replicas, most nodes hold none of a given range).
    let mut missing = reports(&all_on_1);
    missing[1].replicas.as_mut().unwrap().remove(1);
    assert_eq!(
        decide(&MEMBERS, &missing),
        Decision::Transfer {
            range: 3,
            from: 1,
            to: 2
        }
    );
}

/// Five nodes, each range on three of them: a leader only ever goes to a node holding its range, and
/// repeated decisions end with every node within one of the holders it could hand a range to.
#[test]
fn with_more_nodes_than_replicas_leaders_move_only_to_holders_and_converge() {
    const FIVE: [u64; 5] = [1, 2, 3, 4, 5];
    // Range r lives on nodes r % 5 + 1 and the next two; every range starts led by node 1 if it holds
    // it, else by its first holder.
    let holders = |r: u64| -> Vec<u64> { (0..3).map(|i| (r + i) % 5 + 1).collect() };
    let mut leaders: BTreeMap<u64, u64> = (2..=16)
        .map(|r| {
            let h = holders(r);
            (r, if h.contains(&1) { 1 } else { h[0] })
        })
        .collect();
    let report = |leaders: &BTreeMap<u64, u64>| -> Vec<NodeReport> {
        FIVE.iter()
            .map(|&node| NodeReport {
                node,
                replicas: Some(
                    leaders
                        .iter()
                        .filter(|(r, _)| holders(**r).contains(&node))
                        .map(|(&range, &leader)| ReplicaReport {
                            range,
                            leader: leader == node,
                            commit: 10,
                            applied: 10,
                        })
                        .collect(),
                ),
                drained: false,
            })
            .collect()
    };
    let mut moves = 0;
    loop {
        match decide(&FIVE, &report(&leaders)) {
            Decision::Transfer { range, from, to } => {
                assert_eq!(leaders[&range], from);
                assert!(
                    holders(range).contains(&to),
                    "range {range} moved to non-holder {to}"
                );
                leaders.insert(range, to);
                moves += 1;
                assert!(moves <= 15, "no end");
            }
            Decision::Balanced => break,
            Decision::Unhealthy(why) => panic!("{why}"),
        }
    }
    let count = |n: u64| leaders.values().filter(|&&l| l == n).count();
    for (&r, &l) in &leaders {
        for h in holders(r) {
            assert!(
                count(l) <= count(h) + 1,
                "range {r}: leader {l} vs holder {h}"
            );
        }
    }
    let (max, min) = (
        FIVE.map(count).into_iter().max(),
        FIVE.map(count).into_iter().min(),
    );
    assert!(max.unwrap() - min.unwrap() <= 1, "{leaders:?}");
}

#[test]
fn a_drained_node_is_given_no_leader() {
    let mut leaders = map(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]);
    let mut moves = 0;
    loop {
        let mut reports = reports(&leaders);
        reports[1].drained = true; // node 2
        match decide(&MEMBERS, &reports) {
            Decision::Transfer { range, from, to } => {
                assert_eq!(leaders[&range], from);
                assert_ne!(to, 2, "range {range} went to the drained node");
                leaders.insert(range, to);
                moves += 1;
                assert!(moves <= 6, "converges");
            }
            Decision::Balanced => break,
            Decision::Unhealthy(why) => panic!("{why}"),
        }
    }
    // Nodes 1 and 3 share the leaders; node 2 leads none.
    assert_eq!(counts(&leaders), vec![3, 0, 3]);
}
