//! The range scheduler, a chore of the partition manager: it cuts data ranges that grew too big or too
//! busy, as the Azure Storage partition manager splits RangePartitions by size and by load.
//!
//! - **The decision is pure** ([`decide`]): from every range's leader's report (size, cumulative
//!   operations) now and at the previous round, at most one split per round — the largest range over
//!   [`Config::split_bytes`], else the busiest over [`Config::split_load_ops`] operations per second.
//!   A range split in the last round is left alone for one round (its halves report fresh counters).
//! - **Where to cut** is the leader's to choose, from its own data: by size, the partition boundary
//!   nearest the middle of the range's bytes; by load, the median of the partitions its recent requests
//!   sampled (`RangeStats::load_split_key`), so each half gets about half the load.
//! - **Throttled**: one split or one replica move per round, rounds [`Config::schedule_interval`]
//!   apart, only while this node is the partition manager; a split costs no data copy (see `splits`);
//!   a move streams one range's snapshot to one node and the round waits for it to finish, so at most
//!   one snapshot of the scheduler's is ever in flight.
//! - **Cold, small neighbours merge** ([`merge_candidate`]): when nothing is to split, two adjacent data
//!   ranges with their replicas on the same nodes, together under [`Config::merge_bytes`] and
//!   [`Config::merge_load_ops`], become one (see `merges`); the thresholds sit well below the split
//!   thresholds so a merged range is not split again. A range left frozen by a merge cut short (the
//!   previous partition manager died mid-merge) is finished, or rolled back, first.
//! - **Stale replicas are collected**: a node still reporting an initialized replica of a range whose
//!   leader's configuration (newer than the replica's) no longer has it — removed while that node was
//!   down or cut off — is told to destroy it.
//! - Every decision is logged at info, and the last one is kept for `trestle ctl status`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use trestle_proto::admin::StatusResponse;
use trestle_replication::Role;

use crate::cluster::ClusterTableService;
use crate::ranges::META_RANGE_ID;
use crate::splits::SplitAt;

/// When the scheduler splits ranges (part of `[partition-manager]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Split a range whose data exceeds this many bytes (0: never by size).
    pub split_bytes: u64,
    /// Split a range serving more than this many operations per second (0: never by load).
    pub split_load_ops: u64,
    pub schedule_interval: Duration,
    /// Move replicas to even out the nodes (see `rebalance`); draining and repair happen regardless.
    pub balance_replicas: bool,
    /// A node silent this long is taken for lost and its replicas are replaced (zero: never).
    pub dead_node_after: Duration,
    /// Merge two adjacent ranges holding together fewer bytes than this (0: never merge).
    pub merge_bytes: u64,
    /// ... and serving together fewer operations per second than this.
    pub merge_load_ops: u64,
}

/// Two nodes' bytes must differ by at least this much for a move to even them out.
pub const MIN_SIZE_GAP: u64 = 64 << 20;

/// One range as its leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeLoad {
    pub range: u64,
    /// The node that leads it.
    pub leader: u64,
    pub bytes: u64,
    /// Writes applied plus reads served, cumulative since the leader's replica started.
    pub ops: u64,
}

/// Why a range is to be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitReason {
    Size { bytes: u64 },
    Load { ops_per_sec: u64 },
}

/// What the scheduler does this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is over a threshold.
    Idle,
    Split {
        range: u64,
        reason: SplitReason,
    },
}

/// `r`'s operations per second since `before` was taken `elapsed` ago. A rate needs the same leader at
/// both ends (another leader's counters start elsewhere) and a counter that did not go back.
fn rate(r: &RangeLoad, before: &HashMap<u64, (u64, u64)>, elapsed: Duration) -> Option<u64> {
    let secs = elapsed.as_secs_f64();
    let &(leader, ops) = before.get(&r.range)?;
    (secs > 0.0 && leader == r.leader && r.ops >= ops).then(|| ((r.ops - ops) as f64 / secs) as u64)
}

/// The round's plan from the leaders' reports `now`, the operation counts of the previous round
/// (`before`, taken `elapsed` ago) and the ranges split in the previous round (see the module docs).
pub fn decide(
    now: &[RangeLoad],
    before: &HashMap<u64, (u64, u64)>,
    elapsed: Duration,
    recently_split: &[u64],
    cfg: &Config,
) -> Plan {
    let eligible = || {
        now.iter()
            .filter(|r| r.range != META_RANGE_ID && !recently_split.contains(&r.range))
    };
    if cfg.split_bytes > 0
        && let Some(r) = eligible()
            .filter(|r| r.bytes > cfg.split_bytes)
            .max_by_key(|r| (r.bytes, std::cmp::Reverse(r.range)))
    {
        return Plan::Split {
            range: r.range,
            reason: SplitReason::Size { bytes: r.bytes },
        };
    }
    let secs = elapsed.as_secs_f64();
    if cfg.split_load_ops == 0 || secs <= 0.0 {
        return Plan::Idle;
    }
    match eligible()
        .filter_map(|r| Some((r, rate(r, before, elapsed)?)))
        .filter(|&(_, ops)| ops > cfg.split_load_ops)
        .max_by_key(|&(r, ops)| (ops, std::cmp::Reverse(r.range)))
    {
        Some((r, ops_per_sec)) => Plan::Split {
            range: r.range,
            reason: SplitReason::Load { ops_per_sec },
        },
        None => Plan::Idle,
    }
}

/// One data range as the merge rule sees it (from its leader's report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeView {
    pub range: u64,
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    /// Sorted.
    pub voters: Vec<u64>,
    /// No learner and no joint configuration.
    pub settled: bool,
    pub bytes: u64,
    /// Operations per second since the previous round (`None`: unknown, e.g. a new leader).
    pub ops_per_sec: Option<u64>,
}

/// The (source, target) pair to merge this round, if any: adjacent (the target ends where the source
/// starts), settled, replicas on the same nodes, neither split last round, rates known, together
/// under both merge thresholds; the pair with the fewest bytes first.
pub fn merge_candidate(
    ranges: &[MergeView],
    recently_split: &[u64],
    cfg: &Config,
) -> Option<(u64, u64)> {
    if cfg.merge_bytes == 0 {
        return None;
    }
    let eligible =
        |r: &MergeView| r.range != META_RANGE_ID && r.settled && !recently_split.contains(&r.range);
    let mut best: Option<(u64, u64, u64)> = None;
    for target in ranges.iter().filter(|r| eligible(r)) {
        let Some(end) = &target.end else { continue };
        let Some(source) = ranges
            .iter()
            .find(|r| eligible(r) && &r.start == end && r.range != target.range)
        else {
            continue;
        };
        let (Some(a), Some(b)) = (target.ops_per_sec, source.ops_per_sec) else {
            continue;
        };
        let bytes = target.bytes.saturating_add(source.bytes);
        if target.voters != source.voters
            || bytes >= cfg.merge_bytes
            || a.saturating_add(b) >= cfg.merge_load_ops
        {
            continue;
        }
        if best.is_none_or(|(b, s, _)| (bytes, source.range) < (b, s)) {
            best = Some((bytes, source.range, target.range));
        }
    }
    best.map(|(_, source, target)| (source, target))
}

/// The scheduler's last decision, for status pages.
#[derive(Debug, Default)]
pub struct Activity {
    last: Mutex<Option<String>>,
}

impl Activity {
    pub fn record(&self, what: String) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(what);
    }

    pub fn last(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Runs a scheduling round every `cfg.schedule_interval` while this node is the partition manager
/// (`role` holds its token), until `stop`.
pub async fn run(
    cluster: Arc<ClusterTableService>,
    cfg: Config,
    activity: Arc<Activity>,
    role: watch::Receiver<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(cfg.schedule_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut taken = Instant::now();
    let mut recently_split = Vec::new();
    let mut last_seen: HashMap<u64, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if role.borrow().is_none() {
            before.clear();
            last_seen.clear();
            continue;
        }
        let statuses = cluster.member_statuses().await;
        let now_at = Instant::now();
        for node in cluster.members() {
            // A node is given the dead time from when this node became partition manager.
            let seen = last_seen.entry(node).or_insert(now_at);
            if statuses.iter().any(|(n, _)| *n == node) {
                *seen = now_at;
            }
        }
        let now = loads(&statuses);
        let elapsed = taken.elapsed();
        let plan = decide(&now, &before, elapsed, &recently_split, &cfg);
        let merge = merge_candidate(
            &merge_views(&statuses, &now, &before, elapsed),
            &recently_split,
            &cfg,
        );
        before = now.iter().map(|r| (r.range, (r.leader, r.ops))).collect();
        taken = Instant::now();
        recently_split.clear();
        collect_stale_replicas(&cluster, &statuses).await;
        if let Some(source) = frozen_source(&statuses) {
            merge_ranges(&cluster, &activity, source, "finishing a merge cut short").await;
            continue;
        }
        let Plan::Split { range, reason } = plan else {
            let dead = |n: u64| {
                !cfg.dead_node_after.is_zero()
                    && last_seen
                        .get(&n)
                        .is_some_and(|t| now_at.duration_since(*t) >= cfg.dead_node_after)
            };
            let zones = cluster.member_list().zones();
            let (nodes, replicas, ranges) = replica_view(&cluster, &statuses, &zones, dead);
            let planned =
                crate::rebalance::plan(&nodes, &replicas, &ranges, MIN_SIZE_GAP).filter(|m| {
                    use crate::rebalance::MoveReason::{Drain, Repair};
                    cfg.balance_replicas || matches!(m.reason, Repair | Drain)
                });
            if let Some(m) = planned {
                replica_move(&cluster, &activity, m).await;
            } else if let Some((source, target)) = merge {
                let why = format!("small and cold, into range {target}");
                merge_ranges(&cluster, &activity, source, &why).await;
            }
            continue;
        };
        let at = match reason {
            SplitReason::Size { .. } => SplitAt::MiddleOfData,
            SplitReason::Load { .. } => SplitAt::MiddleOfLoad,
        };
        tracing::info!(range, ?reason, "range scheduler: splitting");
        match cluster.split_range(range, at).await {
            Ok((left, right)) => {
                recently_split.extend([left.id, right.id]);
                activity.record(format!(
                    "split range {range} ({reason:?}) at {}: new range {}",
                    crate::ranges::describe_key(&right.start),
                    right.id
                ));
            }
            Err(e) => {
                tracing::info!(range, error = %e, "range scheduler: split not done");
                activity.record(format!("split of range {range} ({reason:?}) failed: {e}"));
            }
        }
    }
}

/// Merges `source` into the range before it (waiting for it), logging and recording it.
async fn merge_ranges(cluster: &ClusterTableService, activity: &Activity, source: u64, why: &str) {
    tracing::info!(source, why, "range scheduler: merging");
    match cluster
        .merge_range(source, crate::merges::DEFAULT_MERGE_TIMEOUT)
        .await
    {
        Ok(merged) => activity.record(format!(
            "merged range {source} ({why}) into range {} (version {})",
            merged.id, merged.epoch.version
        )),
        Err(e) => {
            tracing::info!(source, error = %e, "range scheduler: merge not done");
            activity.record(format!("merge of range {source} ({why}) failed: {e}"));
        }
    }
}

/// A data range some replica reports frozen for a merge.
fn frozen_source(statuses: &[(u64, StatusResponse)]) -> Option<u64> {
    statuses
        .iter()
        .flat_map(|(_, s)| s.ranges.iter())
        .find(|r| r.merging_into.is_some())
        .map(|r| r.range_id)
}

/// What `merge_candidate` needs, from the leaders' reports. A range with a replica on a node that did
/// not answer this round counts as unsettled: its merge could not finish (every source replica must
/// apply the prepare) and would only freeze the source until it is rolled back.
fn merge_views(
    statuses: &[(u64, StatusResponse)],
    now: &[RangeLoad],
    before: &HashMap<u64, (u64, u64)>,
    elapsed: Duration,
) -> Vec<MergeView> {
    leader_descs(statuses)
        .into_iter()
        .filter(|(range, _)| *range != META_RANGE_ID)
        .map(|(range, (_, d, bytes))| {
            let mut voters = d.voters.clone();
            voters.sort_unstable();
            MergeView {
                range,
                start: d.start.clone(),
                end: d.end.clone(),
                voters,
                settled: d.learners.is_empty()
                    && d.voters_outgoing.is_empty()
                    && d.voters
                        .iter()
                        .all(|v| statuses.iter().any(|(n, _)| n == v)),
                bytes,
                ops_per_sec: now
                    .iter()
                    .find(|r| r.range == range)
                    .and_then(|r| rate(r, before, elapsed)),
            }
        })
        .collect()
}

/// Carries out one planned replica move (waiting for it), logging and recording it.
async fn replica_move(
    cluster: &ClusterTableService,
    activity: &Activity,
    m: crate::rebalance::Move,
) {
    let crate::rebalance::Move {
        range,
        from,
        to,
        reason,
    } = m;
    tracing::info!(
        range,
        from,
        to,
        ?reason,
        "range scheduler: moving a replica"
    );
    activity.record(format!(
        "moving range {range}'s replica from node {from} to node {to} ({reason:?})"
    ));
    match cluster
        .move_replica(range, from, to, crate::moves::DEFAULT_MOVE_TIMEOUT)
        .await
    {
        Ok(_) => activity.record(format!(
            "moved range {range}'s replica from node {from} to node {to} ({reason:?})"
        )),
        Err(e) => {
            tracing::info!(range, from, to, error = %e, "range scheduler: move not done");
            activity.record(format!(
                "move of range {range} from node {from} to node {to} ({reason:?}) failed: {e}"
            ));
        }
    }
}

/// The leader's descriptor of every data range with a leader this round.
fn leader_descs(
    statuses: &[(u64, StatusResponse)],
) -> BTreeMap<u64, (u64, &trestle_proto::admin::RangeDescriptor, u64)> {
    let mut out = BTreeMap::new();
    for (node, status) in statuses {
        for r in &status.ranges {
            let leads = leads_in_own_report(*node, r);
            if let (true, Some(d)) = (leads, r.desc.as_ref()) {
                out.insert(r.range_id, (*node, d, r.approximate_bytes));
            }
        }
    }
    out
}

/// What `rebalance::plan` needs, from the members' statuses.
fn replica_view(
    cluster: &ClusterTableService,
    statuses: &[(u64, StatusResponse)],
    zones: &BTreeMap<u64, Option<String>>,
    dead: impl Fn(u64) -> bool,
) -> (
    Vec<crate::rebalance::NodeState>,
    BTreeMap<u64, usize>,
    Vec<crate::rebalance::RangeReplicas>,
) {
    let answered = |n: u64| statuses.iter().find(|(id, _)| *id == n).map(|(_, s)| s);
    let nodes = cluster
        .members()
        .into_iter()
        .map(|n| crate::rebalance::NodeState {
            node: n,
            zone: zones.get(&n).cloned().flatten(),
            live: answered(n).is_some(),
            dead: answered(n).is_none() && dead(n),
            draining: answered(n).is_some_and(|s| s.draining),
        })
        .collect();
    let replicas = statuses.iter().map(|(n, s)| (*n, s.ranges.len())).collect();
    let ranges = leader_descs(statuses)
        .into_iter()
        .map(|(range, (_, d, bytes))| crate::rebalance::RangeReplicas {
            range,
            holders: d.voters.iter().chain(&d.learners).copied().collect(),
            bytes,
            settled: d.learners.is_empty() && d.voters_outgoing.is_empty(),
        })
        .collect();
    (nodes, replicas, ranges)
}

/// Tells every node holding an initialized replica its range's leader no longer has (at a newer
/// configuration) to destroy it.
async fn collect_stale_replicas(cluster: &ClusterTableService, statuses: &[(u64, StatusResponse)]) {
    let leaders = leader_descs(statuses);
    for (node, status) in statuses {
        for r in &status.ranges {
            let (Some(mine), Some((_, lead, _))) = (r.desc.as_ref(), leaders.get(&r.range_id))
            else {
                continue;
            };
            let holds = lead.voters.contains(node) || lead.learners.contains(node);
            if !holds && mine.conf_ver < lead.conf_ver {
                tracing::info!(
                    node,
                    range = r.range_id,
                    "range scheduler: destroying a replica its range no longer has"
                );
                cluster.destroy_on(*node, r.range_id, lead.conf_ver).await;
            }
        }
    }
}

/// Whether `node`'s own report of range `r` says it leads the range.
pub(crate) fn leads_in_own_report(node: u64, r: &trestle_proto::admin::RangeStatus) -> bool {
    r.replicas
        .iter()
        .any(|rep| rep.node_id == node && rep.role == Role::Leader.as_str())
}

/// Every data range's leader's report (a range whose leader did not answer is left out this round).
fn loads(statuses: &[(u64, StatusResponse)]) -> Vec<RangeLoad> {
    let mut out: HashMap<u64, RangeLoad> = HashMap::new();
    for (node, status) in statuses {
        for r in &status.ranges {
            let leads = leads_in_own_report(*node, r);
            if leads && r.desc.is_some() {
                out.insert(
                    r.range_id,
                    RangeLoad {
                        range: r.range_id,
                        leader: *node,
                        bytes: r.approximate_bytes,
                        ops: r.writes + r.reads,
                    },
                );
            }
        }
    }
    let mut loads: Vec<RangeLoad> = out.into_values().collect();
    loads.sort_by_key(|r| r.range);
    loads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            split_bytes: 1000,
            split_load_ops: 100,
            schedule_interval: Duration::from_secs(10),
            balance_replicas: true,
            dead_node_after: Duration::ZERO,
            merge_bytes: 250,
            merge_load_ops: 25,
        }
    }

    fn load(range: u64, leader: u64, bytes: u64, ops: u64) -> RangeLoad {
        RangeLoad {
            range,
            leader,
            bytes,
            ops,
        }
    }

    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn the_largest_range_over_the_size_threshold_splits_first() {
        let now = [load(2, 1, 999, 0), load(3, 2, 5000, 0), load(4, 3, 3000, 0)];
        assert_eq!(
            decide(&now, &HashMap::new(), TEN, &[], &cfg()),
            Plan::Split {
                range: 3,
                reason: SplitReason::Size { bytes: 5000 }
            }
        );
        // Nothing over either threshold: idle.
        let calm = [load(2, 1, 999, 10), load(3, 2, 1000, 10)];
        let before = HashMap::from([(2, (1, 0)), (3, (2, 0))]);
        assert_eq!(decide(&calm, &before, TEN, &[], &cfg()), Plan::Idle);
    }

    #[test]
    fn load_is_a_rate_between_rounds_under_one_leader() {
        let before = HashMap::from([(2, (1, 1000)), (3, (1, 0)), (4, (2, 0))]);
        // Range 2: 5000 more ops in 10 s = 500/s; range 3: 300/s; range 4 changed leader: no rate.
        let now = [
            load(2, 1, 10, 6000),
            load(3, 1, 10, 3000),
            load(4, 3, 10, 90_000),
        ];
        assert_eq!(
            decide(&now, &before, TEN, &[], &cfg()),
            Plan::Split {
                range: 2,
                reason: SplitReason::Load { ops_per_sec: 500 }
            }
        );
        // The first round has no rates.
        assert_eq!(decide(&now, &HashMap::new(), TEN, &[], &cfg()), Plan::Idle);
        // A counter that went backwards (a restarted leader) gives no rate either.
        let restarted = [load(2, 1, 10, 5)];
        assert_eq!(decide(&restarted, &before, TEN, &[], &cfg()), Plan::Idle);
    }

    #[test]
    fn size_wins_over_load_and_fresh_halves_and_the_meta_group_are_left_alone() {
        let before = HashMap::from([(2, (1, 0)), (3, (1, 0))]);
        let now = [load(2, 1, 10, 100_000), load(3, 1, 2000, 0)];
        assert!(matches!(
            decide(&now, &before, TEN, &[], &cfg()),
            Plan::Split {
                range: 3,
                reason: SplitReason::Size { .. }
            }
        ));
        assert!(matches!(
            decide(&now, &before, TEN, &[3], &cfg()),
            Plan::Split {
                range: 2,
                reason: SplitReason::Load { .. }
            }
        ));
        assert_eq!(decide(&now, &before, TEN, &[2, 3], &cfg()), Plan::Idle);
        let meta = [load(META_RANGE_ID, 1, 1 << 40, 0)];
        assert_eq!(decide(&meta, &HashMap::new(), TEN, &[], &cfg()), Plan::Idle);
    }

    #[test]
    fn zero_thresholds_turn_splitting_off() {
        let off = Config {
            split_bytes: 0,
            split_load_ops: 0,
            ..cfg()
        };
        let before = HashMap::from([(2, (1, 0))]);
        let now = [load(2, 1, u64::MAX, u64::MAX)];
        assert_eq!(decide(&now, &before, TEN, &[], &off), Plan::Idle);
    }

    fn view(range: u64, start: &str, end: Option<&str>, bytes: u64, ops: u64) -> MergeView {
        MergeView {
            range,
            start: start.as_bytes().to_vec(),
            end: end.map(|e| e.as_bytes().to_vec()),
            voters: vec![1, 2, 3],
            settled: true,
            bytes,
            ops_per_sec: Some(ops),
        }
    }

    #[test]
    fn the_smallest_pair_of_cold_neighbours_on_the_same_nodes_merges() {
        // Ranges a|g|m|t|end: m+t (60 bytes) is the smallest pair under both thresholds.
        let ranges = [
            view(2, "a", Some("g"), 100, 1),
            view(3, "g", Some("m"), 40, 1),
            view(4, "m", Some("t"), 50, 1),
            view(5, "t", None, 10, 1),
        ];
        assert_eq!(merge_candidate(&ranges, &[], &cfg()), Some((5, 4)));
        // Fresh halves wait a round (then g+m, 90 bytes); zero turns merging off.
        assert_eq!(merge_candidate(&ranges, &[5], &cfg()), Some((4, 3)));
        let off = Config {
            merge_bytes: 0,
            ..cfg()
        };
        assert_eq!(merge_candidate(&ranges, &[], &off), None);
    }

    #[test]
    fn busy_big_unsettled_or_differently_placed_neighbours_do_not_merge() {
        let pair = |a: MergeView, b: MergeView| merge_candidate(&[a, b], &[], &cfg());
        let left = || view(2, "a", Some("m"), 100, 10);
        let right = || view(3, "m", None, 100, 10);
        assert_eq!(pair(left(), right()), Some((3, 2)));
        // Together at the byte threshold, or at the load threshold.
        assert_eq!(pair(left(), view(3, "m", None, 150, 10)), None);
        assert_eq!(pair(left(), view(3, "m", None, 100, 15)), None);
        // A new leader's rate is unknown.
        let mut unknown = right();
        unknown.ops_per_sec = None;
        assert_eq!(pair(left(), unknown), None);
        let mut moving = right();
        moving.settled = false;
        assert_eq!(pair(left(), moving), None);
        let mut elsewhere = right();
        elsewhere.voters = vec![1, 2, 4];
        assert_eq!(pair(left(), elsewhere), None);
        // Not adjacent; and the meta group never merges.
        assert_eq!(pair(left(), view(3, "n", None, 1, 1)), None);
        assert_eq!(
            pair(view(META_RANGE_ID, "", Some("m"), 1, 1), right()),
            None
        );
    }
}
