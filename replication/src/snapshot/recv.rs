//! The receiving side of a snapshot stream, run by the transport that carries it (on a blocking thread):
//! `begin` asks the driver to check and fence the replica, `write` puts each checked chunk into the
//! engine, `finish` asks the driver to step the snapshot. Dropping an unfinished stream tells the
//! driver it was abandoned (the replica stays fenced, see the module docs of `snapshot`).
//!
//! Also here: the marker that fences a replica, and the checks raft-rs's `restore` makes, applied
//! before anything is written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::{INVALID_INDEX, Raft};
use trestle_engine::{Engine, WriteBatch};

use super::{Header, SnapshotAck, SnapshotChunk, SnapshotError, chunk};
use crate::driver::{Cmd, Mailbox};
use crate::storage::PeerStorage;
use crate::{Envelope, Span};

/// How long a transport waits for the driver to answer `begin` or `finish` (one driver turn, normally).
pub(crate) const DRIVER_WAIT: Duration = Duration::from_secs(30);

/// What a fenced replica persists (`keys::snapshot_marker_key`): which snapshot is being written into
/// its span, and how far its log reached before (it votes for no candidate whose log is behind that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) from: u64,
    pub(crate) id: u64,
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) floor_index: u64,
    pub(crate) floor_term: u64,
}

const MARKER_VERSION: u8 = 1;

impl Marker {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(49);
        out.push(MARKER_VERSION);
        for v in [
            self.from,
            self.id,
            self.index,
            self.term,
            self.floor_index,
            self.floor_term,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Marker> {
        let mut r = crate::desc::Reader(bytes);
        if r.u8()? != MARKER_VERSION {
            return None;
        }
        let marker = Marker {
            from: r.u64()?,
            id: r.u64()?,
            index: r.u64()?,
            term: r.u64()?,
            floor_index: r.u64()?,
            floor_term: r.u64()?,
        };
        r.0.is_empty().then_some(marker)
    }

    /// Whether a candidate whose log ends at (`index`, `term`) is at least as up to date as the log
    /// this replica had (Raft's election restriction, kept across the fence).
    pub(crate) fn admits_candidate(&self, index: u64, term: u64) -> bool {
        (term, index) >= (self.floor_term, self.floor_index)
    }
}

/// Why raft-rs would not restore `msg`'s snapshot on this replica (`Raft::restore` and the term rule of
/// `Raft::step`), or `None` if it would. Checked before any data is written.
pub(crate) fn refusal(raft: &Raft<PeerStorage>, msg: &Message) -> Option<&'static str> {
    let meta = msg.get_snapshot().get_metadata();
    if msg.term < raft.term {
        return Some("the message is from an older term");
    }
    if meta.index < raft.raft_log.committed {
        return Some("the snapshot is older than the replica's commit index");
    }
    let cs = meta.get_conf_state();
    let member = cs
        .get_voters()
        .iter()
        .chain(cs.get_learners())
        .chain(cs.get_voters_outgoing())
        .any(|&id| id == raft.id);
    if !member {
        return Some("the replica is not in the snapshot's configuration");
    }
    if raft.pending_request_snapshot == INVALID_INDEX
        && raft.raft_log.match_term(meta.index, meta.term)
    {
        return Some("the replica's log already holds the snapshot's index");
    }
    None
}

/// The parts of a streamed `MsgSnapshot` envelope, checked for addressing.
pub(crate) fn parse_first(env: &Envelope) -> Result<(Message, Header), SnapshotError> {
    let msg = Message::parse_from_bytes(&env.message)
        .map_err(|e| SnapshotError::Corrupt(format!("undecodable snapshot message: {e}")))?;
    if msg.get_msg_type() != MessageType::MsgSnapshot || msg.from != env.from || msg.to != env.to {
        return Err(SnapshotError::Corrupt(
            "the stream does not open with its MsgSnapshot".into(),
        ));
    }
    let header = Header::decode(msg.get_snapshot().get_data())
        .ok_or_else(|| SnapshotError::Corrupt("the snapshot carries no stream header".into()))?;
    Ok((msg, header))
}

/// What the driver hands a stream it admitted.
pub(crate) struct Ticket {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) span: Span,
    /// Set when the node stops: the stream ends at its next chunk.
    pub(crate) stopped: Arc<AtomicBool>,
}

/// One snapshot being received.
pub(crate) struct IncomingSnapshot {
    mailbox: Mailbox,
    group: u64,
    id: u64,
    ticket: Ticket,
    next_seq: u64,
    bytes: u64,
    /// The last chunk was written.
    complete: bool,
    /// `finish` was called: nothing to abandon on drop.
    finished: bool,
}

impl IncomingSnapshot {
    /// Opens a stream whose first message is `first`: the driver checks the snapshot and fences the
    /// replica, or refuses (nothing written).
    pub(crate) fn begin(
        mailbox: &Mailbox,
        first: Envelope,
        wait: Duration,
    ) -> Result<IncomingSnapshot, SnapshotError> {
        let (_, header) = parse_first(&first)?;
        let group = first.group;
        let (reply, answer) = mpsc::sync_channel(1);
        if !mailbox.command(Cmd::SnapshotBegin { env: first, reply }) {
            return Err(SnapshotError::Transport(
                "the receiving node stopped".into(),
            ));
        }
        let ticket = answer
            .recv_timeout(wait)
            .map_err(|_| SnapshotError::Transport("the receiving node did not answer".into()))??;
        Ok(IncomingSnapshot {
            mailbox: mailbox.clone(),
            group,
            id: header.id,
            ticket,
            next_seq: 0,
            bytes: 0,
            complete: false,
            finished: false,
        })
    }

    /// Checks `chunk` whole and writes its records (unsynced: the final batch's fsync covers them).
    pub(crate) fn write(&mut self, chunk: &SnapshotChunk) -> Result<(), SnapshotError> {
        if self.complete {
            return Err(SnapshotError::Corrupt("a chunk after the last one".into()));
        }
        if self.ticket.stopped.load(Ordering::SeqCst) {
            return Err(SnapshotError::Transport(
                "the receiving node stopped".into(),
            ));
        }
        let records = chunk::decode(chunk, self.next_seq, &self.ticket.span)?;
        let cf = self.ticket.span.cf;
        let mut batch = WriteBatch::new();
        for (key, value) in records {
            batch.put(cf, key, value);
        }
        if !batch.is_empty() {
            self.ticket
                .engine
                .write(&batch, false)
                .map_err(|e| SnapshotError::Refused(format!("the receiver cannot write: {e}")))?;
        }
        self.next_seq += 1;
        self.bytes += chunk.data.len() as u64;
        self.complete = chunk.last;
        Ok(())
    }

    /// After the last chunk: the driver steps the snapshot into the fenced replica.
    pub(crate) fn finish(mut self, wait: Duration) -> Result<SnapshotAck, SnapshotError> {
        if !self.complete {
            return Err(SnapshotError::Corrupt(
                "the stream ended before its last chunk".into(),
            ));
        }
        self.finished = true;
        let (reply, answer) = mpsc::sync_channel(1);
        let cmd = Cmd::SnapshotFinish {
            group: self.group,
            id: self.id,
            reply,
        };
        if !self.mailbox.command(cmd) {
            return Err(SnapshotError::Transport(
                "the receiving node stopped".into(),
            ));
        }
        answer
            .recv_timeout(wait)
            .map_err(|_| SnapshotError::Transport("the receiving node did not answer".into()))??;
        Ok(SnapshotAck {
            chunks: self.next_seq,
            bytes: self.bytes,
        })
    }
}

impl Drop for IncomingSnapshot {
    fn drop(&mut self) {
        if !self.finished {
            self.mailbox.command(Cmd::SnapshotAbort {
                group: self.group,
                id: self.id,
            });
        }
    }
}

/// Receives a whole stream: `first`, then chunks from `next` until the last one. For transports whose
/// chunks arrive on another task (gRPC): run on a blocking thread.
pub(crate) fn receive(
    mailbox: &Mailbox,
    first: Envelope,
    mut next: impl FnMut() -> Option<SnapshotChunk>,
) -> Result<SnapshotAck, SnapshotError> {
    let mut incoming = IncomingSnapshot::begin(mailbox, first, DRIVER_WAIT)?;
    while let Some(chunk) = next() {
        incoming.write(&chunk)?;
        if chunk.last {
            return incoming.finish(DRIVER_WAIT);
        }
    }
    Err(SnapshotError::Transport(
        "the stream broke before its last chunk".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_keeps_the_election_restriction() {
        let m = Marker {
            from: 1,
            id: 9,
            index: 120,
            term: 4,
            floor_index: 80,
            floor_term: 3,
        };
        assert_eq!(Marker::decode(&m.encode()), Some(m));
        assert_eq!(Marker::decode(&m.encode()[..40]), None);
        assert!(m.admits_candidate(80, 3));
        assert!(m.admits_candidate(10, 4));
        assert!(!m.admits_candidate(79, 3));
        assert!(!m.admits_candidate(500, 2));
    }
}
