//! Range merges as the cluster drives them: a data range (the *source*) goes into the range that ends
//! where it starts (the *target*), the inverse of a split. Nothing is copied: both ranges' replicas are
//! on the same nodes, each node's engine already holds the source's keys, and the merge only moves the
//! boundary (see `trestle_replication::MergeStep` for what each step does in the logs).
//!
//! The coordinator ([`ClusterTableService::merge_range`]) runs wherever it is asked (the partition
//! manager, or `trestle ctl range merge`) and works from what the members report, so asking again
//! finishes a merge that was cut short:
//! 1. **prepare** in the source's log, unless it is frozen already: from that entry on the source takes
//!    no write and serves no read (clients retry: `RangeStale`), so its data is final;
//! 2. wait until **every** source replica reports the prepare entry applied — the target's commit
//!    deletes the source replica on each node, and a replica that had not caught up by then would have
//!    no leader left to catch up from;
//! 3. **commit** in the target's log, planned at the target's current version;
//! 4. if the merge cannot finish in time (a replica down, the target split meanwhile): **abort** in the
//!    target's log, which refuses that prepare's commit for good (one may still be in flight), then —
//!    unless the target's answer shows the commit won the race — **roll back** the source.

use std::time::{Duration, Instant};

use trestle_proto::admin::StatusResponse;
use trestle_proto::node as npb;
use trestle_proto::node::node_forward_client::NodeForwardClient;
use trestle_replication::{GroupDesc, MergeStep};
use trestle_types::{Error, ErrorCode, Result};

use crate::cluster::ClusterTableService;
use crate::forward::error_from_status;
use crate::ranges::{META_RANGE_ID, RangeDesc};
use crate::splits::{descriptor_from_proto, descriptor_to_proto};
use crate::tables::LocalTables;

/// How long a merge may wait for the source's replicas to apply its prepare before it is aborted.
pub const DEFAULT_MERGE_TIMEOUT: Duration = Duration::from_secs(30);

impl LocalTables {
    /// Takes one merge step in `range`'s log (this node must lead it); the range's descriptor after
    /// it and, for a prepare, the index it froze at.
    pub async fn merge_step(&self, range: u64, step: MergeStep) -> Result<(GroupDesc, u64)> {
        if range == META_RANGE_ID {
            return Err(Error::invalid_input("The meta range never merges."));
        }
        self.ensure_leader(range)?;
        self.raft()
            .merge_step(range, step)
            .await
            .map_err(|e| crate::tables::propose_error(range, e))
    }
}

/// One range as the members report it.
struct Seen {
    leader: Option<u64>,
    desc: RangeDesc,
    /// (target, prepare index), as the leader's replica applied it.
    merging: Option<(u64, u64)>,
}

/// The freshest report of `range` (its leader's, else any replica's), from the members' statuses.
fn seen(statuses: &[(u64, StatusResponse)], range: u64) -> Option<Seen> {
    let mut best: Option<(bool, Seen)> = None;
    for (node, status) in statuses {
        for r in status.ranges.iter().filter(|r| r.range_id == range) {
            let Some(d) = &r.desc else { continue };
            let leads = crate::scheduler::leads_in_own_report(*node, r);
            let candidate = Seen {
                leader: (r.leader_node_id != 0).then_some(r.leader_node_id),
                desc: descriptor_from_proto(d),
                merging: r.merging_into.map(|t| (t, r.merge_index)),
            };
            let newer = best.as_ref().is_none_or(|(best_leads, b)| {
                (leads && !best_leads)
                    || (leads == *best_leads && candidate.desc.epoch > b.desc.epoch)
            });
            if newer {
                best = Some((leads, candidate));
            }
        }
    }
    best.map(|(_, s)| s)
}

/// The range that ends where `source` starts, as the members report it.
fn left_neighbour(statuses: &[(u64, StatusResponse)], source: &RangeDesc) -> Option<u64> {
    statuses
        .iter()
        .flat_map(|(_, s)| s.ranges.iter())
        .filter(|r| r.range_id != META_RANGE_ID && r.range_id != source.id)
        .find(|r| {
            r.desc
                .as_ref()
                .is_some_and(|d| d.end.as_deref() == Some(source.start.as_slice()))
        })
        .map(|r| r.range_id)
}

/// Whether every replica of `source` reports its log applied to `index` (an unreachable node counts as
/// not there yet).
fn applied_everywhere(statuses: &[(u64, StatusResponse)], source: &RangeDesc, index: u64) -> bool {
    source.voters.iter().all(|node| {
        statuses.iter().any(|(n, s)| {
            n == node
                && s.ranges.iter().any(|r| {
                    r.range_id == source.id
                        && r.replicas
                            .first()
                            .is_some_and(|rep| rep.node_id == *node && rep.applied_index >= index)
                })
        })
    })
}

fn same_nodes(a: &RangeDesc, b: &RangeDesc) -> bool {
    let mut x = a.voters.clone();
    let mut y = b.voters.clone();
    x.sort_unstable();
    y.sort_unstable();
    x == y && a.learners.is_empty() && b.learners.is_empty()
}

impl ClusterTableService {
    /// Merges data range `source` into the range that ends where it starts (see the module docs);
    /// returns the merged range. A source left frozen by an earlier attempt is finished or rolled back.
    pub async fn merge_range(&self, source: u64, timeout: Duration) -> Result<RangeDesc> {
        if source == META_RANGE_ID {
            return Err(Error::invalid_input("The meta range never merges."));
        }
        let deadline = Instant::now() + timeout;
        let mut prepared_by_us = false;
        loop {
            let statuses = self.member_statuses().await;
            let Some(src) = seen(&statuses, source) else {
                return Err(Error::new(
                    ErrorCode::ResourceNotFound,
                    format!("No member reports range {source}."),
                ));
            };
            let Some(target) = left_neighbour(&statuses, &src.desc) else {
                return Err(Error::invalid_input(format!(
                    "Range {source} is the first range; there is no range before it to merge into."
                )));
            };
            let Some(tgt) = seen(&statuses, target) else {
                return Err(busy(format!("no member reports range {target}")));
            };
            if tgt.desc.span().covers(&src.desc.span()) {
                // The commit applied (the source's last replicas are going as they apply it).
                return Ok(tgt.desc);
            }
            if Instant::now() >= deadline {
                if src.merging.is_none() {
                    // Not frozen (a prepare of ours still in flight would freeze it later; the
                    // scheduler finishes or rolls back any range it finds frozen).
                    return Err(busy(format!(
                        "range {source} could not be prepared for a merge in time"
                    )));
                }
                // `src.desc` is the frozen descriptor: its version is the one to abort and roll back.
                return self.abandon(&src.desc, target, deadline).await;
            }
            let Some((into, index)) = src.merging else {
                if prepared_by_us {
                    // Our prepare was rolled back by someone else, or its outcome is still unknown.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                if !same_nodes(&src.desc, &tgt.desc) {
                    return Err(Error::invalid_input(format!(
                        "Ranges {target} and {source} do not have their replicas on the same nodes; \
                         move replicas first."
                    )));
                }
                let step = MergeStep::Prepare {
                    target,
                    version: src.desc.epoch.version,
                };
                prepared_by_us = true;
                match self.step_on_leader(source, src.leader, step).await {
                    Ok((desc, index)) => {
                        tracing::info!(
                            source,
                            target,
                            index,
                            version = desc.epoch.version,
                            "merge prepared"
                        );
                    }
                    Err(e) if retryable(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => return Err(e),
                }
                continue;
            };
            if into != target {
                return Err(Error::internal(format!(
                    "range {source} is frozen for a merge into {into}, but {target} precedes it"
                )));
            }
            if !applied_everywhere(&statuses, &src.desc, index) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let step = MergeStep::Commit {
                source: src.desc.group_desc(),
                prepare_index: index,
                version: tgt.desc.epoch.version,
            };
            match self.step_on_leader(target, tgt.leader, step).await {
                Ok((desc, _)) => {
                    let merged = RangeDesc::from_group(&desc)
                        .ok_or_else(|| Error::internal("a merge answer without a span"))?;
                    tracing::info!(
                        source,
                        target,
                        version = merged.epoch.version,
                        "ranges merged"
                    );
                    return Ok(merged);
                }
                // Refused (the target changed) or unknown: look again; past the deadline, abort.
                Err(e) => {
                    tracing::debug!(source, target, error = %e, "merge commit not done");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Gives up a merge of frozen `source` into `target`: aborts it in the target's log, then rolls the
    /// source back unless the target's answer shows the commit applied first.
    async fn abandon(
        &self,
        source: &RangeDesc,
        target: u64,
        deadline: Instant,
    ) -> Result<RangeDesc> {
        // The abort and the rollback must get through even though the merge's own time is up.
        let deadline = deadline.max(Instant::now()) + DEFAULT_MERGE_TIMEOUT;
        let abort = MergeStep::Abort {
            source: source.id,
            source_version: source.epoch.version,
        };
        let (target_desc, _) = self.step_until(target, abort, deadline).await?;
        let target_desc = RangeDesc::from_group(&target_desc)
            .ok_or_else(|| Error::internal("an abort answer without a span"))?;
        if target_desc.span().covers(&source.span()) {
            return Ok(target_desc);
        }
        let rollback = MergeStep::Rollback {
            version: source.epoch.version,
        };
        match self.step_until(source.id, rollback, deadline).await {
            Ok(_) => {}
            // Not frozen (any more), or unfrozen by a rollback of its own: nothing to undo.
            Err(e) if matches!(e.code, ErrorCode::InvalidInput | ErrorCode::RangeStale) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(
            source = source.id,
            target,
            "merge abandoned and rolled back"
        );
        Err(busy(format!(
            "range {} could not merge into range {target} in time (a replica is down or lagging, or \
             a range changed); it was rolled back",
            source.id
        )))
    }

    /// Takes `step` in `range`'s log, retrying leader changes until `deadline`.
    async fn step_until(
        &self,
        range: u64,
        step: MergeStep,
        deadline: Instant,
    ) -> Result<(GroupDesc, u64)> {
        loop {
            let leader = self.leader_of_range(range).await;
            match self.step_on_leader(range, leader, step.clone()).await {
                Ok(done) => return Ok(done),
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes `step` in `range`'s log on `leader` (here or forwarded).
    async fn step_on_leader(
        &self,
        range: u64,
        leader: Option<u64>,
        step: MergeStep,
    ) -> Result<(GroupDesc, u64)> {
        let Some(leader) = leader else {
            return Err(crate::tables::not_leader(range, None));
        };
        if leader == self.node_id() {
            return self.local().merge_step(range, step).await;
        }
        let link = self.link(leader)?;
        let mut client = NodeForwardClient::new(link.channel.clone());
        let call = client.merge_step(link.request(step_request(range, &step), None));
        let resp = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .map_err(|_| busy(format!("node {leader} did not take the merge step in time")))?
            .map_err(|s| error_from_status(&s))?
            .into_inner();
        let d = resp
            .range
            .ok_or_else(|| Error::internal("a merge step answer without the range"))?;
        Ok((descriptor_from_proto(&d).group_desc(), resp.prepare_index))
    }
}

/// Leader changes, unknown outcomes (every step is safe to repeat: a repeat is refused, and the
/// coordinator looks at the ranges again) and a membership change in flight.
fn retryable(e: &Error) -> bool {
    matches!(
        e.code,
        ErrorCode::NotLeader | ErrorCode::OperationTimedOut | ErrorCode::ServerBusy
    )
}

fn busy(what: String) -> Error {
    Error::new(ErrorCode::ServerBusy, what)
}

/// The wire form of a merge step on `range`.
pub fn step_request(range: u64, step: &MergeStep) -> npb::MergeStepRequest {
    use npb::merge_step_request::Kind;
    let mut req = npb::MergeStepRequest {
        range_id: range,
        ..Default::default()
    };
    match step {
        MergeStep::Prepare { target, version } => {
            req.set_kind(Kind::Prepare);
            req.other_range_id = *target;
            req.version = *version;
        }
        MergeStep::Commit {
            source,
            prepare_index,
            version,
        } => {
            req.set_kind(Kind::Commit);
            req.source = RangeDesc::from_group(source).map(|r| descriptor_to_proto(&r));
            req.prepare_index = *prepare_index;
            req.version = *version;
        }
        MergeStep::Abort {
            source,
            source_version,
        } => {
            req.set_kind(Kind::Abort);
            req.other_range_id = *source;
            req.source_version = *source_version;
        }
        MergeStep::Rollback { version } => {
            req.set_kind(Kind::Rollback);
            req.version = *version;
        }
    }
    req
}

/// A merge step from the wire; `InvalidInput` when it is incomplete.
pub fn step_from_request(req: &npb::MergeStepRequest) -> Result<MergeStep> {
    use npb::merge_step_request::Kind;
    let kind =
        Kind::try_from(req.kind).map_err(|_| Error::invalid_input("an unknown merge step"))?;
    Ok(match kind {
        Kind::Prepare => MergeStep::Prepare {
            target: req.other_range_id,
            version: req.version,
        },
        Kind::Commit => MergeStep::Commit {
            source: req
                .source
                .as_ref()
                .map(|d| descriptor_from_proto(d).group_desc())
                .ok_or_else(|| Error::invalid_input("a merge commit names no source"))?,
            prepare_index: req.prepare_index,
            version: req.version,
        },
        Kind::Abort => MergeStep::Abort {
            source: req.other_range_id,
            source_version: req.source_version,
        },
        Kind::Rollback => MergeStep::Rollback {
            version: req.version,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_survives_the_wire() {
        let source = RangeDesc {
            id: 9,
            start: b"m".to_vec(),
            end: None,
            voters: vec![1, 2, 3],
            learners: Vec::new(),
            voters_outgoing: Vec::new(),
            epoch: trestle_replication::Epoch {
                version: 4,
                conf_ver: 2,
            },
        };
        for step in [
            MergeStep::Prepare {
                target: 2,
                version: 3,
            },
            MergeStep::Commit {
                source: source.group_desc(),
                prepare_index: 17,
                version: 5,
            },
            MergeStep::Abort {
                source: 9,
                source_version: 4,
            },
            MergeStep::Rollback { version: 4 },
        ] {
            assert_eq!(step_from_request(&step_request(2, &step)).unwrap(), step);
        }
        let mut bad = step_request(2, &MergeStep::Rollback { version: 1 });
        bad.kind = 42;
        assert_eq!(
            step_from_request(&bad).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        bad.kind = npb::merge_step_request::Kind::Commit as i32;
        assert_eq!(
            step_from_request(&bad).unwrap_err().code,
            ErrorCode::InvalidInput
        );
    }
}
