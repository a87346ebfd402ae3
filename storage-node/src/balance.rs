//! Leader balancing, a chore of the partition manager: every range's leader serves all of its reads
//! and writes, so a node leading most ranges does most of the work. Elections put leaders wherever
//! they happen to land (after a restart, often all on one node); the partition manager moves them back
//! until every node leads about as many ranges as any other.
//!
//! - **The decision is pure** ([`decide`]): from what every node reports about its replicas, either
//!   the cluster is not healthy enough to move anything, or it is balanced (the most and the fewest
//!   leaders of any two nodes differ by at most one), or one transfer: a range of the busiest node
//!   (lowest id first) to the idlest. The meta group is never the one to move — the busiest node leads
//!   at least two ranges, so one of them is a data range — because a new meta leader must wait a
//!   lease TTL before it may expire a lease. The range scheduler of the scale-out work will grow from
//!   this function.
//! - **Healthy** means: every member answered, every range has exactly one leader, and every replica
//!   has applied all but [`MAX_LAG`] entries of what its leader committed. A transfer to a replica that
//!   is behind would stall the range until it caught up.
//! - **Any number of nodes**: a leader can only go to a node that holds a replica of its range, so
//!   "balanced" means no node leads two ranges more than some other holder of one of them does — the
//!   busiest node first, each range to its idlest holder. With three replicas on every node this is
//!   the same as every node within one of every other.
//! - **One transfer at a time** ([`run`]): a round starts one transfer and the next round, an interval
//!   later, decides again from fresh reports, which show the transfer's election finished (one leader,
//!   caught up) before anything else moves. Rounds run only while this node is the partition manager.
//! - Every decision that differs from the one before is logged at info (and every transfer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trestle_proto::admin::StatusRequest;
use trestle_proto::admin::admin_client::AdminClient;
use trestle_proto::node::TransferLeaderRequest;
use trestle_proto::node::node_forward_client::NodeForwardClient;
use trestle_replication::Role;
use trestle_types::{Error, ErrorCode, Result};

use crate::cluster::ClusterTableService;
use crate::forward::error_from_status;
use crate::ranges::META_RANGE_ID;

/// How far (in log entries) a replica may trail its leader's commit index and still count as caught
/// up: reports are taken at slightly different moments, so a replica under a write load is always a
/// few entries behind.
pub const MAX_LAG: u64 = 64;

/// How long a status probe or a transfer request may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One replica, as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaReport {
    pub range: u64,
    pub leader: bool,
    pub commit: u64,
    pub applied: u64,
}

/// What one member reported: its replicas, or `None` when it could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node: u64,
    pub replicas: Option<Vec<ReplicaReport>>,
    /// Its leaderships are drained (`trestle ctl node drain`): it is given no range.
    pub drained: bool,
}

/// What the partition manager should do about the leaders now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No range's leader leads two ranges more than another holder of that range does.
    Balanced,
    /// Nothing moves: the reason.
    Unhealthy(String),
    /// Hand `range`'s leadership from node `from` to node `to`.
    Transfer { range: u64, from: u64, to: u64 },
}

/// The one decision for `members` given their `reports` (see the module header).
pub fn decide(members: &[u64], reports: &[NodeReport]) -> Decision {
    let mut by_node: BTreeMap<u64, &[ReplicaReport]> = BTreeMap::new();
    for &m in members {
        match reports.iter().find(|r| r.node == m) {
            Some(NodeReport {
                replicas: Some(replicas),
                ..
            }) => {
                by_node.insert(m, replicas);
            }
            _ => return Decision::Unhealthy(format!("node {m} did not answer")),
        }
    }
    let ranges: BTreeSet<u64> = by_node
        .values()
        .flat_map(|replicas| replicas.iter().map(|r| r.range))
        .collect();
    // Each range's leader and the other nodes that hold a replica of it.
    let mut leaders: BTreeMap<u64, (u64, Vec<u64>)> = BTreeMap::new();
    for &range in &ranges {
        let replicas: Vec<(u64, &ReplicaReport)> = by_node
            .iter()
            .filter_map(|(&node, reported)| {
                Some((node, reported.iter().find(|r| r.range == range)?))
            })
            .collect();
        let leading: Vec<&(u64, &ReplicaReport)> =
            replicas.iter().filter(|(_, r)| r.leader).collect();
        let [(leader, lead)] = leading.as_slice() else {
            return Decision::Unhealthy(format!("range {range} has {} leaders", leading.len()));
        };
        if let Some((node, behind)) = replicas
            .iter()
            .find(|(_, r)| r.applied + MAX_LAG < lead.commit)
        {
            return Decision::Unhealthy(format!(
                "node {node}'s replica of range {range} is behind (applied {}, committed {})",
                behind.applied, lead.commit
            ));
        }
        let others = replicas
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n != leader)
            .collect();
        leaders.insert(range, (*leader, others));
    }
    let count = |node: u64| leaders.values().filter(|(l, _)| *l == node).count();
    let drained = |node: u64| reports.iter().any(|r| r.node == node && r.drained);
    // The busiest node first (ties: lowest id), so the decision is the same whoever computes it. A
    // leader can only go to a node holding a replica of its range; of those, the idlest (lowest id).
    let mut by_load: Vec<u64> = members.to_vec();
    by_load.sort_by_key(|&m| (std::cmp::Reverse(count(m)), m));
    for from in by_load {
        let best = leaders
            .iter()
            .filter(|&(&r, (l, _))| *l == from && r != META_RANGE_ID)
            .filter_map(|(&range, (_, others))| {
                let to = others
                    .iter()
                    .copied()
                    .filter(|&n| !drained(n))
                    .min_by_key(|&n| (count(n), n))?;
                (count(from) > count(to) + 1).then_some((count(to), to, range))
            })
            .min();
        if let Some((_, to, range)) = best {
            return Decision::Transfer { range, from, to };
        }
    }
    Decision::Balanced
}

/// Runs a balancing round every `every` while this node is the partition manager (`role` holds its
/// token), until `stop`.
pub async fn run(
    cluster: Arc<ClusterTableService>,
    every: Duration,
    role: watch::Receiver<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Decision> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if role.borrow().is_none() {
            last = None;
            continue;
        }
        let decision = decide(&cluster.members(), &gather(&cluster).await);
        match &decision {
            Decision::Transfer { range, from, to } => {
                tracing::info!(range, from, to, "leader balancing: moving a range's leader");
                if let Err(e) = transfer(&cluster, *range, *from, *to).await {
                    tracing::info!(range, from, to, error = %e, "leader balancing: transfer not started");
                }
            }
            Decision::Unhealthy(why) if last.as_ref() != Some(&decision) => {
                tracing::info!(reason = %why, "leader balancing: waiting for a healthy cluster")
            }
            Decision::Balanced if last.as_ref() != Some(&decision) => {
                tracing::info!("leader balancing: leaders are balanced")
            }
            _ => tracing::debug!(?decision, "leader balancing"),
        }
        last = Some(decision);
    }
}

/// Every member's report: this node's from its own replicas, the others' from Admin.Status.
async fn gather(cluster: &ClusterTableService) -> Vec<NodeReport> {
    let mut reports = Vec::new();
    for node in cluster.members() {
        let (replicas, drained) = if node == cluster.node_id() {
            let replicas = cluster
                .local()
                .group_statuses()
                .into_iter()
                .map(|g| ReplicaReport {
                    range: g.group,
                    leader: g.role == Role::Leader,
                    commit: g.commit_index,
                    applied: g.applied_index,
                })
                .collect();
            (Some(replicas), cluster.local().leaders_drained())
        } else {
            match probe(cluster, node).await {
                Some((replicas, drained)) => (Some(replicas), drained),
                None => (None, false),
            }
        };
        reports.push(NodeReport {
            node,
            replicas,
            drained,
        });
    }
    reports
}

/// Node `node`'s replicas and whether its leaderships are drained, from its Admin.Status (`None`:
/// unreachable, or its link is cut).
async fn probe(cluster: &ClusterTableService, node: u64) -> Option<(Vec<ReplicaReport>, bool)> {
    let link = cluster.link(node).ok()?;
    let mut admin = AdminClient::new(link.channel.clone());
    let call = admin.status(link.request(StatusRequest {}, None));
    let status = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .ok()?
        .ok()?
        .into_inner();
    let replicas = status
        .ranges
        .iter()
        .filter_map(|range| {
            let mine = range.replicas.iter().find(|r| r.node_id == node)?;
            Some(ReplicaReport {
                range: range.range_id,
                leader: mine.role == Role::Leader.as_str(),
                commit: mine.commit_index,
                applied: mine.applied_index,
            })
        })
        .collect();
    Some((replicas, status.leaders_drained))
}

/// Starts moving `range`'s leadership from `from` (which leads it) to `to`.
async fn transfer(cluster: &ClusterTableService, range: u64, from: u64, to: u64) -> Result<()> {
    if from == cluster.node_id() {
        return cluster.local().transfer_leader(range, to).await;
    }
    let link = cluster.link(from)?;
    let request = link.request(
        TransferLeaderRequest {
            range_id: range,
            to_node_id: to,
        },
        None,
    );
    let mut client = NodeForwardClient::new(link.channel.clone());
    let call = client.transfer_leader(request);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(error_from_status(&status)),
        Err(_) => Err(Error::new(
            ErrorCode::OperationTimedOut,
            format!("node {from} did not answer the transfer of range {range}"),
        )),
    }
}

#[cfg(test)]
#[path = "balance_tests.rs"]
mod tests;
