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
//! - **Throttled**: one split per round, rounds [`Config::schedule_interval`] apart, only while this
//!   node is the partition manager; a split costs no data copy (see `splits`), so the round interval is
//!   what bounds the work a rebalance adds to foreground traffic.
//! - Every decision is logged at info, and the last one is kept for `trestle ctl status`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

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
}

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
    // A rate needs the same leader at both ends (another leader's counters start elsewhere).
    let rate = |r: &RangeLoad| -> Option<u64> {
        let &(leader, ops) = before.get(&r.range)?;
        (leader == r.leader && r.ops >= ops).then(|| ((r.ops - ops) as f64 / secs) as u64)
    };
    match eligible()
        .filter_map(|r| Some((r, rate(r)?)))
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
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if role.borrow().is_none() {
            before.clear();
            continue;
        }
        let now = gather(&cluster).await;
        let plan = decide(&now, &before, taken.elapsed(), &recently_split, &cfg);
        before = now.iter().map(|r| (r.range, (r.leader, r.ops))).collect();
        taken = Instant::now();
        recently_split.clear();
        let Plan::Split { range, reason } = plan else {
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

/// Every data range's leader's report, from every member's Admin.Status (a range whose leader did
/// not answer is left out this round).
async fn gather(cluster: &ClusterTableService) -> Vec<RangeLoad> {
    let mut out: HashMap<u64, RangeLoad> = HashMap::new();
    for (node, status) in cluster.member_statuses().await {
        for r in status.ranges {
            let leads = r.replicas.iter().any(|rep| {
                rep.node_id == node && rep.role == trestle_replication::Role::Leader.as_str()
            });
            if leads && r.desc.is_some() {
                out.insert(
                    r.range_id,
                    RangeLoad {
                        range: r.range_id,
                        leader: node,
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
}
