//! Replica moves: how a range's replica goes from one node to another, and where replicas should go.
//!
//! A move runs on the range's leader ([`LocalTables::move_replica`]), in steps that each check what is
//! already done, so asking again finishes a move that was cut short (a leader change, a timeout):
//! 1. a joint configuration left behind by an earlier leader is left;
//! 2. the leader hands its leadership to another voter if it is the replica to move (a leader never
//!    removes itself);
//! 3. the target joins as a **learner** and catches up, by snapshot (it has no log);
//! 4. once the learner has all but [`CAUGHT_UP_LAG`] of the leader's log, one joint change promotes it
//!    and removes the source (raft-rs leaves the joint configuration right after);
//! 5. the source destroys its replica when it applies its removal; the caller also tells it to, in
//!    case it was cut off ([`ClusterTableService::move_replica`]).
//!
//! Placement ([`pick_target`]) is pure: a node that does not hold the range, preferring zones none of
//! the range's other replicas is in, then the node with the fewest replicas, then the lowest id.
//!
//! **Decommissioning** marks the node first ([`LocalTables::set_draining`], kept on its own disk and
//! reported in its status), then moves its replicas away one by one. The mark outlives the call: the
//! range scheduler (`rebalance`) finishes a decommission that was cut short, and never places a
//! replica on a draining node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use trestle_proto::admin::StatusRequest;
use trestle_proto::admin::admin_client::AdminClient;
use trestle_proto::node as npb;
use trestle_proto::node::node_forward_client::NodeForwardClient;
use trestle_replication::{GroupDesc, MembershipChange, Role};
use trestle_types::{Error, ErrorCode, Result};

use crate::cluster::ClusterTableService;
use crate::forward::error_from_status;
use crate::tables::LocalTables;

/// How far (in entries) a learner may trail the leader's commit index and be promoted.
pub const CAUGHT_UP_LAG: u64 = 64;

/// How long a move may wait for its learner to catch up unless told otherwise.
pub const DEFAULT_MOVE_TIMEOUT: Duration = Duration::from_secs(120);

fn busy(what: String) -> Error {
    Error::new(ErrorCode::ServerBusy, what)
}

/// The engine key (local, not replicated) that marks this node as being decommissioned.
const DRAINING_KEY: &str = "draining";

impl LocalTables {
    /// Whether this node is being decommissioned (see the module docs).
    pub fn draining(&self) -> bool {
        self.local_mark(DRAINING_KEY)
    }

    /// Marks this node as being decommissioned, or no longer; durable before it returns.
    pub fn set_draining(&self, draining: bool) -> Result<()> {
        self.set_local_mark(DRAINING_KEY, draining)?;
        tracing::info!(draining, "decommission mark set");
        Ok(())
    }

    /// Whether this node's store holds the local mark `name` (a node's own state, not replicated).
    pub(crate) fn local_mark(&self, name: &str) -> bool {
        matches!(
            self.engine().get(
                trestle_engine::Cf::Meta,
                &trestle_engine::keys::local_key(name)
            ),
            Ok(Some(_))
        )
    }

    /// Sets or clears the local mark `name`; durable before it returns.
    pub(crate) fn set_local_mark(&self, name: &str, on: bool) -> Result<()> {
        let mut batch = trestle_engine::WriteBatch::new();
        let key = trestle_engine::keys::local_key(name);
        if on {
            batch.put(trestle_engine::Cf::Meta, key, vec![1]);
        } else {
            batch.delete(trestle_engine::Cf::Meta, key);
        }
        self.engine()
            .write(&batch, true)
            .map_err(|e| Error::internal(format!("recording the {name} mark: {e}")))
    }

    /// The descriptor of `range` as this replica applied it (it must lead the range).
    fn led_desc(&self, range: u64) -> Result<(GroupDesc, trestle_replication::GroupStatus)> {
        let status = self
            .raft()
            .group_status(range)
            .ok_or_else(|| crate::tables::not_leader(range, None))?;
        if status.role != Role::Leader {
            return Err(crate::tables::not_leader(range, status.leader));
        }
        let desc = status
            .desc
            .clone()
            .ok_or_else(|| crate::tables::not_leader(range, None))?;
        Ok((desc, status))
    }

    async fn change(&self, range: u64, changes: Vec<MembershipChange>) -> Result<GroupDesc> {
        self.raft()
            .change_membership(range, changes)
            .await
            .map_err(|e| crate::tables::propose_error(range, e))
    }

    /// Moves `range`'s replica from node `from` to node `to` (this node must lead the range; see the
    /// module docs), waiting until `deadline` at most for the learner to catch up. Returns the range's
    /// descriptor once `to` is a voter and `from` is gone.
    pub async fn move_replica(
        &self,
        range: u64,
        from: u64,
        to: u64,
        deadline: Instant,
    ) -> Result<GroupDesc> {
        if from == to {
            return Err(Error::invalid_input("A replica moves to another node."));
        }
        loop {
            let (desc, status) = self.led_desc(range)?;
            let has = |ids: &[u64], n| ids.contains(&n);
            if !desc.voters_outgoing.is_empty() {
                // An earlier leader entered a joint configuration and did not leave it.
                self.change(range, Vec::new()).await?;
                continue;
            }
            if !has(&desc.voters, from) && !has(&desc.learners, from) {
                // Nothing (left) to move: `from` is not in the group. A replica it still reports is
                // a removed one that never applied its removal; the caller destroys it.
                return Ok(desc);
            }
            if from == self.raft().id() {
                let next = desc
                    .voters
                    .iter()
                    .copied()
                    .find(|&v| v != from)
                    .ok_or_else(|| busy(format!("range {range} has no other voter")))?;
                self.transfer_leader(range, next).await?;
                return Err(crate::tables::not_leader(range, Some(next)));
            }
            if !has(&desc.voters, to) && !has(&desc.learners, to) {
                self.change(range, vec![MembershipChange::AddLearner(to)])
                    .await?;
                continue;
            }
            if has(&desc.learners, to) {
                let matched = status
                    .progress
                    .iter()
                    .find(|(id, _)| *id == to)
                    .map_or(0, |(_, m)| *m);
                if matched + CAUGHT_UP_LAG < status.commit_index {
                    if Instant::now() >= deadline {
                        return Err(busy(format!(
                            "node {to}'s replica of range {range} has not caught up yet \
                             ({matched} of {})",
                            status.commit_index
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let mut changes = vec![MembershipChange::Promote(to)];
                if has(&desc.voters, from) || has(&desc.learners, from) {
                    changes.push(MembershipChange::Remove(from));
                }
                self.change(range, changes).await?;
                continue;
            }
            // `to` is a voter and `from` still in: remove it.
            self.change(range, vec![MembershipChange::Remove(from)])
                .await?;
        }
    }
}

/// A candidate for a new replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: u64,
    pub zone: Option<String>,
    /// Replicas the node holds now.
    pub replicas: usize,
}

/// Where a replica of a range held by `holders` (node, zone) should go: a candidate not among the
/// holders, in a zone none of the holders other than `leaving` is in if there is one, then with the
/// fewest replicas, then the lowest id.
pub fn pick_target(
    holders: &[(u64, Option<String>)],
    leaving: u64,
    candidates: &[Candidate],
) -> Option<u64> {
    let used: Vec<&Option<String>> = holders
        .iter()
        .filter(|(n, _)| *n != leaving)
        .map(|(_, z)| z)
        .collect();
    candidates
        .iter()
        .filter(|c| !holders.iter().any(|(n, _)| *n == c.node))
        .min_by_key(|c| {
            let shares_zone = c.zone.is_some() && used.contains(&&c.zone);
            (shares_zone, c.replicas, c.node)
        })
        .map(|c| c.node)
}

/// What one node reports: its replicas' (range, role, descriptor).
type NodeView = Vec<(u64, String, Option<trestle_proto::admin::RangeDescriptor>)>;

impl ClusterTableService {
    /// Every member's Admin.Status (unreachable members are missing), in node order.
    pub(crate) async fn member_statuses(&self) -> Vec<(u64, trestle_proto::admin::StatusResponse)> {
        let mut out = Vec::new();
        for node in self.members() {
            let Ok(link) = self.link(node) else { continue };
            let mut admin = AdminClient::new(link.channel.clone());
            let call = admin.status(link.request(StatusRequest {}, None));
            if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), call).await {
                out.push((node, status.into_inner()));
            }
        }
        out
    }

    /// Every member's replicas (unreachable members are missing).
    async fn views(&self) -> BTreeMap<u64, NodeView> {
        let mut out = BTreeMap::new();
        for (node, status) in self.member_statuses().await {
            let view = status
                .ranges
                .into_iter()
                .map(|r| {
                    let role = r
                        .replicas
                        .iter()
                        .find(|rep| rep.node_id == node)
                        .map(|rep| rep.role.clone())
                        .unwrap_or_default();
                    (r.range_id, role, r.desc)
                })
                .collect();
            out.insert(node, view);
        }
        out
    }

    /// The range holding data key `key` and the node leading it, as the members report them (for a
    /// node that hosts no replica of that range); `None` if no answering member leads one.
    pub(crate) async fn leader_of_key(
        &self,
        key: &[u8],
    ) -> Option<(u64, trestle_proto::admin::RangeDescriptor)> {
        self.views().await.into_iter().find_map(|(node, view)| {
            view.into_iter().find_map(|(_, role, desc)| {
                // The meta group's descriptor has no span; it holds no data key.
                let desc = desc.filter(|d| d.id != crate::ranges::META_RANGE_ID)?;
                let holds = desc.start.as_slice() <= key
                    && desc.end.as_ref().is_none_or(|end| key < end.as_slice());
                (holds && role == Role::Leader.as_str()).then_some((node, desc))
            })
        })
    }

    /// The node whose replica leads `range`, as the members report it (`None`: no answering member
    /// leads it, e.g. during an election). Works on any node, whether it hosts the range or not.
    pub(crate) async fn leader_of_range(&self, range: u64) -> Option<u64> {
        self.views().await.into_iter().find_map(|(node, view)| {
            view.iter()
                .any(|(r, role, _)| *r == range && role == Role::Leader.as_str())
                .then_some(node)
        })
    }

    /// Moves `range`'s replica from `from` to `to` through the range's leader, then makes sure `from`
    /// destroyed its replica. Repeats the leader's steps (each resumes where the last stopped) until
    /// the move is done or `timeout` runs out.
    pub async fn move_replica(
        &self,
        range: u64,
        from: u64,
        to: u64,
        timeout: Duration,
    ) -> Result<GroupDesc> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            let Some(leader) = self.leader_of_range(range).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let result = if leader == self.node_id() {
                self.local()
                    .move_replica(range, from, to, Instant::now() + left)
                    .await
            } else {
                self.forward_move(leader, range, from, to, left).await
            };
            match result {
                Ok(desc) => {
                    self.destroy_on(from, range, desc.epoch.conf_ver).await;
                    tracing::info!(range, from, to, "replica moved");
                    return Ok(desc);
                }
                Err(e) if matches!(e.code, ErrorCode::NotLeader | ErrorCode::ServerBusy) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| busy(format!("range {range} has no leader"))))
    }

    async fn forward_move(
        &self,
        leader: u64,
        range: u64,
        from: u64,
        to: u64,
        timeout: Duration,
    ) -> Result<GroupDesc> {
        let link = self.link(leader)?;
        let req = npb::MoveReplicaRequest {
            range_id: range,
            from_node_id: from,
            to_node_id: to,
            timeout_ms: timeout.as_millis() as u64,
        };
        let mut client = NodeForwardClient::new(link.channel.clone());
        let call = client.move_replica(link.request(req, None));
        let resp = tokio::time::timeout(timeout + Duration::from_secs(5), call)
            .await
            .map_err(|_| busy(format!("node {leader} did not finish the move in time")))?
            .map_err(|s| error_from_status(&s))?
            .into_inner();
        let d = resp
            .range
            .ok_or_else(|| Error::internal("a move answer without the range"))?;
        let r = crate::splits::descriptor_from_proto(&d);
        Ok(r.group_desc())
    }

    /// Tells node `node` to destroy its replica of `range` if it is older than `removed_at`
    /// (best effort: the node also destroys it when it applies its removal).
    pub(crate) async fn destroy_on(&self, node: u64, range: u64, removed_at: u64) {
        if node == self.node_id() {
            let _ = self.local().raft().destroy_replica(range, removed_at).await;
            return;
        }
        let Ok(link) = self.link(node) else { return };
        let mut client = NodeForwardClient::new(link.channel.clone());
        let req = npb::DestroyReplicaRequest {
            range_id: range,
            removed_at,
        };
        let call = client.destroy_replica(link.request(req, None));
        let _ = tokio::time::timeout(Duration::from_secs(5), call).await;
    }

    /// Marks node `node` as being decommissioned (or no longer), on its own disk.
    pub async fn set_draining(&self, node: u64, draining: bool) -> Result<()> {
        if node == self.node_id() {
            return self.local().set_draining(draining);
        }
        let link = self.link(node)?;
        let mut client = NodeForwardClient::new(link.channel.clone());
        let call = client.set_draining(link.request(npb::SetDrainingRequest { draining }, None));
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .map_err(|_| busy(format!("node {node} did not answer")))?
            .map_err(|s| error_from_status(&s))?;
        Ok(())
    }

    /// Marks `node` as draining, then moves every replica off it (see `DecommissionRequest`);
    /// returns one line per move.
    pub async fn decommission(
        &self,
        node: u64,
        zones: &BTreeMap<u64, Option<String>>,
    ) -> Result<Vec<String>> {
        self.set_draining(node, true).await?;
        let mut moves = Vec::new();
        loop {
            let views = self.views().await;
            let Some(view) = views.get(&node) else {
                return Err(busy(format!(
                    "node {node} does not answer; its replicas are unknown"
                )));
            };
            let Some((range, holders)) = view
                .iter()
                .find_map(|(range, _, desc)| {
                    let d = desc.as_ref()?;
                    let holders: Vec<u64> = d.voters.iter().chain(&d.learners).copied().collect();
                    holders.contains(&node).then_some((*range, holders))
                })
                .or_else(|| {
                    // The meta group reports no descriptor: find it by the replicas the nodes report.
                    let meta = crate::ranges::META_RANGE_ID;
                    view.iter().any(|(r, _, _)| *r == meta).then(|| {
                        let holders = views
                            .iter()
                            .filter(|(_, v)| v.iter().any(|(r, _, _)| *r == meta))
                            .map(|(n, _)| *n)
                            .collect();
                        (meta, holders)
                    })
                })
            else {
                return Ok(moves);
            };
            let candidates: Vec<Candidate> = views
                .iter()
                .filter(|(n, _)| **n != node)
                .map(|(n, v)| Candidate {
                    node: *n,
                    zone: zones.get(n).cloned().flatten(),
                    replicas: v.len(),
                })
                .collect();
            let holders_z: Vec<(u64, Option<String>)> = holders
                .iter()
                .map(|n| (*n, zones.get(n).cloned().flatten()))
                .collect();
            let to = pick_target(&holders_z, node, &candidates).ok_or_else(|| {
                busy(format!(
                    "no node can take node {node}'s replica of range {range}"
                ))
            })?;
            self.move_replica(range, node, to, DEFAULT_MOVE_TIMEOUT)
                .await?;
            moves.push(format!("range {range}: node {node} -> node {to}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(node: u64, zone: Option<&str>, replicas: usize) -> Candidate {
        Candidate {
            node,
            zone: zone.map(str::to_string),
            replicas,
        }
    }

    #[test]
    fn the_target_is_the_emptiest_node_outside_the_range_and_its_zones() {
        let holders = [
            (1, Some("a".into())),
            (2, Some("b".into())),
            (3, Some("c".into())),
        ];
        let candidates = [
            c(1, Some("a"), 5),
            c(2, Some("b"), 5),
            c(3, Some("c"), 5),
            c(4, Some("a"), 1),
            c(5, Some("d"), 3),
        ];
        // Node 4 is emptier, but node 1 (leaving) is the only replica in zone a: zone a is free again.
        assert_eq!(pick_target(&holders, 1, &candidates), Some(4));
        // Leaving node 2: zone a is taken by node 1, so node 5 (zone d) wins despite more replicas.
        assert_eq!(pick_target(&holders, 2, &candidates), Some(5));
    }

    #[test]
    fn without_zones_the_fewest_replicas_then_the_lowest_id_win() {
        let holders = [(1, None), (2, None), (3, None)];
        let candidates = [c(1, None, 0), c(4, None, 2), c(5, None, 2), c(6, None, 3)];
        assert_eq!(pick_target(&holders, 1, &candidates), Some(4));
        assert_eq!(pick_target(&holders, 1, &[c(2, None, 0)]), None);
    }
}
