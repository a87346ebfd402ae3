//! Group descriptors as the replication layer persists them, and the admin commands that change them.
//!
//! A group's descriptor — its [`Span`] and [`Epoch`] — is replicated state of the group itself: it is
//! changed only by entries of the group's own log (a split shrinks the span and raises the version; a
//! conf change raises the conf version), persisted in the same write batch as the entry's apply state
//! (`keys::range_state_key`), and carried inside every snapshot, so a replica that catches up by snapshot
//! also catches up on splits it never applied.
//!
//! Admin commands travel as ordinary Raft entries whose `context` is [`ADMIN_SPLIT`]; the state machine
//! never sees them. The encoding is a small fixed binary layout (this crate does not depend on the public
//! protobufs).

use trestle_engine::Cf;

use crate::{Epoch, GroupDesc, Span};

/// The `context` of an entry that splits its group.
pub(crate) const ADMIN_SPLIT: &[u8] = b"trestle/split/1";

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

/// What `keys::range_state_key` holds: the span and epoch (voters live in the raft-local conf state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeState {
    pub(crate) span: Span,
    pub(crate) epoch: Epoch,
}

impl RangeState {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
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
        out
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Option<RangeState> {
        if r.u8()? != 1 {
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
        Some(RangeState {
            span: Span { cf, start, end },
            epoch,
        })
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
    let state = RangeState {
        span: d.span.clone(),
        epoch: d.epoch,
    };
    put_bytes(out, &state.encode());
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
        let state = RangeState {
            span: desc(1, b"a", None).span,
            epoch: Epoch {
                version: 2,
                conf_ver: 1,
            },
        };
        assert_eq!(RangeState::decode(&state.encode()), Some(state.clone()));
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
        let state = RangeState {
            span: desc(1, b"abc", Some(b"xyz")).span,
            epoch: Epoch::default(),
        }
        .encode();
        for cut in 0..state.len() {
            assert_eq!(RangeState::decode(&state[..cut]), None);
        }
    }
}
