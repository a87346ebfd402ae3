//! Group descriptors as the replication layer persists them, and the admin commands that change them.
//!
//! A group's descriptor — its [`Span`] and [`Epoch`] — is replicated state of the group itself: it is
//! changed only by entries of the group's own log (a split shrinks the span and raises the version; a
//! conf change raises the conf version), persisted in the same write batch as the entry's apply state
//! (`keys::range_state_key`), and carried inside every snapshot, so a replica that catches up by snapshot
//! also catches up on splits it never applied.
//!
//! Admin commands travel as ordinary Raft entries whose `context` is [`ADMIN_SPLIT`] or
//! [`ADMIN_MERGE`]; the state machine never sees them. The encoding is a small fixed binary layout (this crate does not depend on the public
//! protobufs).

use trestle_engine::Cf;

use crate::{Epoch, GroupDesc, Span};

/// The `context` of an entry that splits its group.
pub(crate) const ADMIN_SPLIT: &[u8] = b"trestle/split/1";

/// The `context` of an entry that takes one step of a merge (see [`MergeStep`]).
pub(crate) const ADMIN_MERGE: &[u8] = b"trestle/merge/1";

/// The log position a group created by a split starts from, on every replica: its log is empty, its
/// first entry will be `SPLIT_INIT_INDEX + 1`. Above zero, so a leader that meets a replica without the
/// group (which starts at 0) sends it a snapshot rather than entries it never had.
pub(crate) const SPLIT_INIT_INDEX: u64 = 5;
pub(crate) const SPLIT_INIT_TERM: u64 = 5;

fn cf_code(cf: Cf) -> u8 {
    match cf {
        Cf::Raft => 0,
        Cf::Data => 1,
        Cf::Meta => 2,
    }
}

fn cf_from(code: u8) -> Option<Cf> {
    match code {
        0 => Some(Cf::Raft),
        1 => Some(Cf::Data),
        2 => Some(Cf::Meta),
        _ => None,
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A cursor over an encoded record; every read is bounds-checked.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        let b: [u8; 8] = self.0.get(..8)?.try_into().ok()?;
        self.0 = &self.0[8..];
        Some(u64::from_le_bytes(b))
    }

    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let b = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(b)
    }
}

/// What `keys::range_state_key` holds: the span and epoch (voters live in the raft-local conf state),
/// and the group's part in merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeState {
    pub(crate) span: Span,
    pub(crate) epoch: Epoch,
    /// Set on a merge's source from its prepare entry on: the group is frozen (see [`MergeStep`]).
    pub(crate) merging: Option<Merging>,
    /// On a merge's target: (source, source version) of every merge it refused for good
    /// ([`MergeStep::Abort`]), so a commit of that prepare still on its way is refused too.
    pub(crate) aborted: Vec<(u64, u64)>,
}

/// A source group's frozen state: it merges into `target`; its data is final as of entry `index`
/// (the prepare entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merging {
    pub target: u64,
    pub index: u64,
}

impl RangeState {
    pub(crate) fn new(span: Span, epoch: Epoch) -> RangeState {
        RangeState {
            span,
            epoch,
            merging: None,
            aborted: Vec::new(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let plain = self.merging.is_none() && self.aborted.is_empty();
        let mut out = vec![if plain { 1u8 } else { 2u8 }];
        out.extend_from_slice(&self.epoch.version.to_le_bytes());
        out.extend_from_slice(&self.epoch.conf_ver.to_le_bytes());
        out.push(cf_code(self.span.cf));
        put_bytes(&mut out, &self.span.start);
        match &self.span.end {
            Some(end) => {
                out.push(1);
                put_bytes(&mut out, end);
            }
            None => out.push(0),
        }
        if plain {
            return out;
        }
        match self.merging {
            Some(m) => {
                out.push(1);
                out.extend_from_slice(&m.target.to_le_bytes());
                out.extend_from_slice(&m.index.to_le_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_le_bytes());
        for (source, version) in &self.aborted {
            out.extend_from_slice(&source.to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
        }
        out
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Option<RangeState> {
        let format = r.u8()?;
        if format != 1 && format != 2 {
            return None;
        }
        let epoch = Epoch {
            version: r.u64()?,
            conf_ver: r.u64()?,
        };
        let cf = cf_from(r.u8()?)?;
        let start = r.bytes()?.to_vec();
        let end = match r.u8()? {
            0 => None,
            1 => Some(r.bytes()?.to_vec()),
            _ => return None,
        };
        let mut state = RangeState::new(Span { cf, start, end }, epoch);
        if format == 2 {
            state.merging = match r.u8()? {
                0 => None,
                1 => Some(Merging {
                    target: r.u64()?,
                    index: r.u64()?,
                }),
                _ => return None,
            };
            let n = u32::from_le_bytes(r.0.get(..4)?.try_into().ok()?) as usize;
            r.0 = &r.0[4..];
            if n > 4096 {
                return None;
            }
            for _ in 0..n {
                state.aborted.push((r.u64()?, r.u64()?));
            }
        }
        Some(state)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<RangeState> {
        let mut r = Reader(bytes);
        let state = RangeState::decode_from(&mut r)?;
        r.0.is_empty().then_some(state)
    }
}

/// A split request as proposed: cut the group at `key` (which becomes the new group's first key),
/// naming the new group `new_group`, provided the group's version is still `version` (the proposer
/// chose the key from the descriptor it saw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRequest {
    pub key: Vec<u8>,
    pub new_group: u64,
    pub version: u64,
}

impl SplitRequest {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend_from_slice(&self.new_group.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        put_bytes(&mut out, &self.key);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<SplitRequest> {
        let mut r = Reader(bytes);
        if r.u8()? != 1 {
            return None;
        }
        let new_group = r.u64()?;
        let version = r.u64()?;
        let key = r.bytes()?.to_vec();
        r.0.is_empty().then_some(SplitRequest {
            key,
            new_group,
            version,
        })
    }
}

/// Why a split was refused (deterministically, on every replica: nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitRefused {
    /// The group changed (split or merged) after the proposer chose the key.
    #[error("the range's version is {current}, the split was planned at {planned}")]
    EpochStale { current: u64, planned: u64 },
    /// The key is not strictly inside the span (it would leave one side empty).
    #[error("the split key is not strictly inside the range")]
    KeyOutside,
    /// A membership change is in progress (learners or a joint configuration).
    #[error("a membership change is in progress")]
    ConfChanging,
}

/// One step of merging a source group into the target group that ends where the source starts (the
/// inverse of a split; both must have the same voters). Each step is an admin entry in one group's
/// log, checked and applied alike on every replica:
/// 1. [`MergeStep::Prepare`] in the source's log freezes it: from that entry on it applies no command
///    and serves no read, so its data is final as of the prepare entry's index;
/// 2. [`MergeStep::Commit`] in the target's log extends the target's span over the source's. On each
///    node it waits (applies nothing further) until that node's source replica has applied the prepare
///    entry; then, in one write batch, the target takes the span and the source replica's raft state
///    goes (its data keys stay: they are the target's now). Nothing is copied.
/// 3. Or, if the merge cannot go on: [`MergeStep::Abort`] in the target's log refuses that prepare's
///    commit for good (a commit still on its way is refused when it arrives), and only then
///    [`MergeStep::Rollback`] in the source's log unfreezes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeStep {
    /// On the source, planned at its `version`: freeze for a merge into `target`.
    Prepare { target: u64, version: u64 },
    /// On the target, planned at its `version`: take in `source` (its descriptor as the prepare left
    /// it), frozen at `prepare_index`.
    Commit {
        source: GroupDesc,
        prepare_index: u64,
        version: u64,
    },
    /// On the target: refuse for good the merge of `source` prepared at `source_version`.
    Abort { source: u64, source_version: u64 },
    /// On the source, frozen at `version`: unfreeze (only after the target applied the abort).
    Rollback { version: u64 },
}

impl MergeStep {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        match self {
            MergeStep::Prepare { target, version } => {
                out.push(0);
                out.extend_from_slice(&target.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
            }
            MergeStep::Commit {
                source,
                prepare_index,
                version,
            } => {
                out.push(1);
                out.extend_from_slice(&prepare_index.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                encode_desc(source, &mut out);
            }
            MergeStep::Abort {
                source,
                source_version,
            } => {
                out.push(2);
                out.extend_from_slice(&source.to_le_bytes());
                out.extend_from_slice(&source_version.to_le_bytes());
            }
            MergeStep::Rollback { version } => {
                out.push(3);
                out.extend_from_slice(&version.to_le_bytes());
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<MergeStep> {
        let mut r = Reader(bytes);
        if r.u8()? != 1 {
            return None;
        }
        let step = match r.u8()? {
            0 => MergeStep::Prepare {
                target: r.u64()?,
                version: r.u64()?,
            },
            1 => {
                let prepare_index = r.u64()?;
                let version = r.u64()?;
                MergeStep::Commit {
                    source: decode_desc(&mut r)?,
                    prepare_index,
                    version,
                }
            }
            2 => MergeStep::Abort {
                source: r.u64()?,
                source_version: r.u64()?,
            },
            3 => MergeStep::Rollback { version: r.u64()? },
            _ => return None,
        };
        r.0.is_empty().then_some(step)
    }
}

/// Why a merge step was refused (deterministically, on every replica: nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeRefused {
    /// The group changed (split, merged, or a step already taken) after the step was planned.
    #[error("the range's version is {current}, the step was planned at {planned}")]
    EpochStale { current: u64, planned: u64 },
    /// The target does not end where the source starts.
    #[error("the ranges are not adjacent")]
    NotAdjacent,
    /// The two groups' voters are not the same nodes.
    #[error("the ranges' replicas are not on the same nodes")]
    VotersDiffer,
    /// A membership change is in progress (learners or a joint configuration).
    #[error("a membership change is in progress")]
    ConfChanging,
    /// A rollback of a group that is not frozen, or a prepare of one that already is.
    #[error("the range is {}", if *.0 { "already merging" } else { "not merging" })]
    MergingState(bool),
    /// The target refused this prepare's commit for good (an abort applied first).
    #[error("the merge was aborted")]
    Aborted,
}

/// The outcome of a merge step: the group's descriptor after it and, for a prepare, the index the
/// source froze at.
pub(crate) type MergeOutcome = Result<(GroupDesc, u64), MergeRefused>;

pub(crate) fn encode_merge_result(result: &MergeOutcome) -> Vec<u8> {
    let mut out = Vec::new();
    match result {
        Ok((desc, index)) => {
            out.push(0);
            out.extend_from_slice(&index.to_le_bytes());
            encode_desc(desc, &mut out);
        }
        Err(e) => {
            out.push(1);
            match e {
                MergeRefused::EpochStale { current, planned } => {
                    out.push(0);
                    out.extend_from_slice(&current.to_le_bytes());
                    out.extend_from_slice(&planned.to_le_bytes());
                }
                MergeRefused::NotAdjacent => out.push(1),
                MergeRefused::VotersDiffer => out.push(2),
                MergeRefused::ConfChanging => out.push(3),
                MergeRefused::MergingState(b) => {
                    out.push(4);
                    out.push(u8::from(*b));
                }
                MergeRefused::Aborted => out.push(5),
            }
        }
    }
    out
}

pub(crate) fn decode_merge_result(bytes: &[u8]) -> Option<MergeOutcome> {
    let mut r = Reader(bytes);
    let out = match r.u8()? {
        0 => {
            let index = r.u64()?;
            Ok((decode_desc(&mut r)?, index))
        }
        1 => Err(match r.u8()? {
            0 => MergeRefused::EpochStale {
                current: r.u64()?,
                planned: r.u64()?,
            },
            1 => MergeRefused::NotAdjacent,
            2 => MergeRefused::VotersDiffer,
            3 => MergeRefused::ConfChanging,
            4 => MergeRefused::MergingState(r.u8()? != 0),
            5 => MergeRefused::Aborted,
            _ => return None,
        }),
        _ => return None,
    };
    r.0.is_empty().then_some(out)
}

/// The outcome of a split entry, as the proposer receives it.
pub(crate) fn encode_split_result(
    result: &Result<(GroupDesc, GroupDesc), SplitRefused>,
) -> Vec<u8> {
    let mut out = Vec::new();
    match result {
        Ok((left, right)) => {
            out.push(0);
            for d in [left, right] {
                encode_desc(d, &mut out);
            }
        }
        Err(e) => {
            out.push(1);
            match e {
                SplitRefused::EpochStale { current, planned } => {
                    out.push(0);
                    out.extend_from_slice(&current.to_le_bytes());
                    out.extend_from_slice(&planned.to_le_bytes());
                }
                SplitRefused::KeyOutside => out.push(1),
                SplitRefused::ConfChanging => out.push(3),
            }
        }
    }
    out
}

pub(crate) type SplitOutcome = Result<(GroupDesc, GroupDesc), SplitRefused>;

pub(crate) fn decode_split_result(bytes: &[u8]) -> Option<SplitOutcome> {
    let mut r = Reader(bytes);
    match r.u8()? {
        0 => {
            let left = decode_desc(&mut r)?;
            let right = decode_desc(&mut r)?;
            Some(Ok((left, right)))
        }
        1 => Some(Err(match r.u8()? {
            0 => SplitRefused::EpochStale {
                current: r.u64()?,
                planned: r.u64()?,
            },
            1 => SplitRefused::KeyOutside,
            3 => SplitRefused::ConfChanging,
            _ => return None,
        })),
        _ => None,
    }
}

/// A full descriptor (id, voters, learners, span, epoch), as snapshots and split results carry it.
pub(crate) fn encode_desc(d: &GroupDesc, out: &mut Vec<u8>) {
    out.extend_from_slice(&d.id.to_le_bytes());
    for ids in [&d.voters, &d.learners, &d.voters_outgoing] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for v in ids {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    put_bytes(out, &RangeState::new(d.span.clone(), d.epoch).encode());
}

pub(crate) fn decode_desc(r: &mut Reader<'_>) -> Option<GroupDesc> {
    let id = r.u64()?;
    let mut lists = [Vec::new(), Vec::new(), Vec::new()];
    for list in &mut lists {
        let n = u32::from_le_bytes(r.0.get(..4)?.try_into().ok()?) as usize;
        r.0 = &r.0[4..];
        if n > 1024 {
            return None;
        }
        for _ in 0..n {
            list.push(r.u64()?);
        }
    }
    let [voters, learners, voters_outgoing] = lists;
    let state = RangeState::decode(r.bytes()?)?;
    Some(GroupDesc {
        id,
        voters,
        learners,
        voters_outgoing,
        span: state.span,
        epoch: state.epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: u64, start: &[u8], end: Option<&[u8]>) -> GroupDesc {
        GroupDesc {
            id,
            voters: vec![1, 2, 3],
            learners: vec![4],
            voters_outgoing: Vec::new(),
            span: Span {
                cf: Cf::Data,
                start: start.to_vec(),
                end: end.map(<[u8]>::to_vec),
            },
            epoch: Epoch {
                version: 3,
                conf_ver: 9,
            },
        }
    }

    #[test]
    fn records_round_trip() {
        let mut state = RangeState::new(
            desc(1, b"a", None).span,
            Epoch {
                version: 2,
                conf_ver: 1,
            },
        );
        assert_eq!(RangeState::decode(&state.encode()), Some(state.clone()));
        state.merging = Some(Merging {
            target: 4,
            index: 77,
        });
        state.aborted = vec![(9, 3), (11, 5)];
        assert_eq!(RangeState::decode(&state.encode()), Some(state.clone()));
        for step in [
            MergeStep::Prepare {
                target: 2,
                version: 7,
            },
            MergeStep::Commit {
                source: desc(9, b"m", None),
                prepare_index: 40,
                version: 3,
            },
            MergeStep::Abort {
                source: 9,
                source_version: 8,
            },
            MergeStep::Rollback { version: 8 },
        ] {
            assert_eq!(MergeStep::decode(&step.encode()), Some(step));
        }
        for r in [
            Ok((desc(2, b"", None), 12)),
            Err(MergeRefused::EpochStale {
                current: 4,
                planned: 3,
            }),
            Err(MergeRefused::NotAdjacent),
            Err(MergeRefused::VotersDiffer),
            Err(MergeRefused::ConfChanging),
            Err(MergeRefused::MergingState(true)),
            Err(MergeRefused::Aborted),
        ] {
            assert_eq!(decode_merge_result(&encode_merge_result(&r)), Some(r));
        }
        let req = SplitRequest {
            key: b"m".to_vec(),
            new_group: 9,
            version: 4,
        };
        assert_eq!(SplitRequest::decode(&req.encode()), Some(req));
        let ok: SplitOutcome = Ok((desc(2, b"", Some(b"m")), desc(9, b"m", None)));
        assert_eq!(decode_split_result(&encode_split_result(&ok)), Some(ok));
        for e in [
            SplitRefused::EpochStale {
                current: 3,
                planned: 2,
            },
            SplitRefused::KeyOutside,
            SplitRefused::ConfChanging,
        ] {
            let r: SplitOutcome = Err(e);
            assert_eq!(decode_split_result(&encode_split_result(&r)), Some(r));
        }
    }

    #[test]
    fn truncated_records_are_rejected_not_panicked_on() {
        let ok: SplitOutcome = Ok((desc(2, b"", Some(b"m")), desc(9, b"m", None)));
        let bytes = encode_split_result(&ok);
        for cut in 0..bytes.len() {
            assert_eq!(decode_split_result(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut state = RangeState::new(desc(1, b"abc", Some(b"xyz")).span, Epoch::default());
        state.merging = Some(Merging {
            target: 1,
            index: 2,
        });
        state.aborted = vec![(3, 4)];
        let state = state.encode();
        for cut in 0..state.len() {
            assert_eq!(RangeState::decode(&state[..cut]), None);
        }
        let step = MergeStep::Commit {
            source: desc(9, b"m", None),
            prepare_index: 40,
            version: 3,
        }
        .encode();
        for cut in 0..step.len() {
            assert_eq!(MergeStep::decode(&step[..cut]), None);
        }
    }
}
