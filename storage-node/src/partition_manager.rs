//! The partition manager: the one place cluster-wide chores run, on whichever node holds the lock
//! [`LOCK`] of Trestle's own lock scope (as Windows Azure Storage elects its partition manager through
//! its lock service).
//!
//! Every node runs [`run`]: it holds a lease (TTL [`TTL`]) and tries to take the lock; the node that gets
//! it acts as the partition manager while its lease is valid by the client-side rule of `locks` (it
//! stops acting `TTL − margin` after sending the last keep-alive that was acknowledged, before the meta
//! leader could expire the lease and hand the lock on). When that node dies or is cut off, its lease
//! expires and the next node to try gets the lock with a higher fencing token.
//!
//! Chores: reaping the entities of deleted tables whose drop could not run at delete time
//! ([`ClusterTableService::reap_dropped_tables`]), balancing range leaders across the nodes
//! (`balance`, on unless [`Config::balance_leaders`] is off), and splitting ranges that grew too big
//! or too busy (`scheduler`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

use crate::cluster::ClusterTableService;
use crate::lock_api::LockService;

/// The lock scope of Trestle's own locks: not a valid storage account name (those are lowercase
/// letters and digits), so no account's locks can meet it.
pub const SYSTEM_SCOPE: &str = "_system";
/// The partition manager's lock.
pub const LOCK: &str = "trestle/partition-manager";
/// The partition manager's lease TTL.
pub const TTL: Duration = Duration::from_secs(5);
/// How often the chores run.
const CHORE_EVERY: Duration = Duration::from_secs(5);

/// The `[partition-manager]` section of a node's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Move range leaders so every node leads about as many ranges as any other (within one), one
    /// transfer at a time and only while every node is reachable and caught up. `trestle dev` turns
    /// it off: it keeps every leader on the node that serves REST.
    pub balance_leaders: bool,
    /// How often the partition manager looks at where the leaders are.
    pub balance_interval_ms: u64,
    /// Split a data range whose keys and values exceed this many bytes (0: never by size).
    pub split_bytes: u64,
    /// Split a data range serving more than this many operations per second (0: never by load).
    /// CockroachDB's default load threshold is 2,500 QPS.
    pub split_load_ops: u64,
    /// How often the range scheduler looks at range sizes and loads (at most one split or replica
    /// move a round).
    pub schedule_interval_ms: u64,
    /// Move replicas so every node holds about as many as any other, and about as many bytes
    /// (one move a round). Draining decommissioned nodes and replacing lost ones happen regardless.
    pub balance_replicas: bool,
    /// Merge two adjacent data ranges whose replicas are on the same nodes when together they hold
    /// fewer bytes than this and serve fewer than `merge-load-ops` operations per second (0: never
    /// merge). Keep both well below the split thresholds, or a merged range splits again.
    pub merge_bytes: u64,
    pub merge_load_ops: u64,
    /// A node silent this long (seconds) is taken for lost: each range with a replica on it gets a
    /// new one elsewhere (0: never; a lost node is then replaced by `trestle ctl range move`).
    pub dead_node_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            balance_leaders: true,
            balance_interval_ms: 5_000,
            split_bytes: 64 << 20,
            split_load_ops: 2_500,
            schedule_interval_ms: 10_000,
            balance_replicas: true,
            merge_bytes: 16 << 20,
            merge_load_ops: 500,
            dead_node_secs: 300,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if !(100..=3_600_000).contains(&self.balance_interval_ms) {
            return Err(
                "partition-manager.balance-interval-ms must be between 100 and 3600000".into(),
            );
        }
        if !(100..=3_600_000).contains(&self.schedule_interval_ms) {
            return Err(
                "partition-manager.schedule-interval-ms must be between 100 and 3600000".into(),
            );
        }
        let over = |merge: u64, split: u64| split > 0 && merge > split / 2;
        if over(self.merge_bytes, self.split_bytes)
            || (self.merge_bytes > 0 && over(self.merge_load_ops, self.split_load_ops))
        {
            return Err(
                "partition-manager.merge-bytes and merge-load-ops must be at most half of \
                 split-bytes and split-load-ops (a merged range would split again)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The range scheduler's settings.
    pub fn scheduler(&self) -> crate::scheduler::Config {
        crate::scheduler::Config {
            split_bytes: self.split_bytes,
            split_load_ops: self.split_load_ops,
            schedule_interval: Duration::from_millis(self.schedule_interval_ms),
            balance_replicas: self.balance_replicas,
            dead_node_after: Duration::from_secs(self.dead_node_secs),
            merge_bytes: self.merge_bytes,
            merge_load_ops: self.merge_load_ops,
        }
    }

    pub fn balance_interval(&self) -> Duration {
        Duration::from_millis(self.balance_interval_ms)
    }
}

/// How long after sending an acknowledged keep-alive the holder may still act (as the SDK's rule).
fn valid_for(ttl: Duration) -> Duration {
    ttl.saturating_sub(ttl / 10 + Duration::from_millis(500))
}

/// Runs the election and, while this node holds the lock, the chores. `role` says whether this node
/// is the partition manager now (with the lock's fencing token).
pub async fn run(
    node_id: u64,
    locks: Arc<LockService>,
    cluster: Arc<ClusterTableService>,
    role: watch::Sender<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) {
    let owner = format!("node {node_id}");
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = retry.tick() => {}
        }
        let sent = Instant::now();
        let lease = match locks.grant_internal(SYSTEM_SCOPE, TTL, &owner).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "partition manager: no lease yet");
                continue;
            }
        };
        let mut valid_until = sent + valid_for(TTL);
        let mut last_chore: Option<Instant> = None;
        // Hold the lease; try for the lock; act while holding it and the lease is valid.
        loop {
            let now = Instant::now();
            if now >= valid_until {
                let _ = role.send(None);
                tracing::warn!(lease, "partition manager: lease not renewed in time");
                break;
            }
            let token = match locks.try_acquire_internal(SYSTEM_SCOPE, lease, LOCK).await {
                Ok(token) => Some(token),
                Err(e) if e.code == trestle_types::ErrorCode::LockHeld => None,
                Err(e) if e.code == trestle_types::ErrorCode::LeaseNotFound => {
                    let _ = role.send(None);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "partition manager: acquire failed");
                    None
                }
            };
            if role.borrow().is_some() != token.is_some() {
                match token {
                    Some(t) => {
                        tracing::info!(node_id, token = t, "this node is the partition manager")
                    }
                    None => tracing::info!(node_id, "this node is no longer the partition manager"),
                }
            }
            let _ = role.send(token);
            if token.is_some() && last_chore.is_none_or(|t| t.elapsed() >= CHORE_EVERY) {
                last_chore = Some(Instant::now());
                match cluster.reap_dropped_tables().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        tables = n,
                        "partition manager: dropped deleted tables' entities"
                    ),
                    Err(e) => tracing::debug!(error = %e, "partition manager: reaping"),
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(TTL / 3) => {}
            }
            let sent = Instant::now();
            match locks.keep_alive_internal(SYSTEM_SCOPE, lease).await {
                Ok(()) => valid_until = sent + valid_for(TTL),
                Err(e) if e.code == trestle_types::ErrorCode::LeaseNotFound => {
                    let _ = role.send(None);
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "partition manager: keep-alive failed"),
            }
        }
    }
}
