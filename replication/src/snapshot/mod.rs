//! Raft snapshots as streams of bounded chunks.
//!
//! raft-rs asks a leader's storage for a snapshot when a follower needs entries the leader has
//! compacted. The `MsgSnapshot` it then sends carries only the metadata (index, term, configuration) and
//! a small [`Header`] (the range state and a snapshot id); the records of the group's span travel
//! separately, over a stream opened with [`crate::Transport::open_snapshot`].
//!
//! Sending ([`send`]): `PeerStorage::snapshot` takes a point-in-time engine view, on the driver thread
//! (so the view holds exactly the entries applied up to the snapshot index), and registers it under the
//! snapshot id on a sender thread. When raft-rs emits the `MsgSnapshot`, the driver hands it to that
//! thread, which reads the span lazily from the view and sends chunks of at most
//! `Config::snapshot_chunk_bytes` plus one record. At most `Config::max_sending_snapshots` are streamed
//! at once (raft-rs is told the snapshot is temporarily unavailable past that, and retries), each
//! within `Config::snapshot_timeout_ms`; a view whose message never went out is dropped after
//! [`send::GO_TIMEOUT`]. raft-rs hears `SnapshotStatus::Finish` only once the receiver acknowledged the whole
//! stream, `Failure` otherwise, always on the driver thread.
//!
//! Receiving ([`recv`]): the rule that keeps a replica from ever serving half-replaced data.
//! 1. Before anything is written, the driver checks the snapshot as raft-rs's `restore` will: the
//!    message's term is not older than the replica's, the snapshot index is at least the replica's
//!    commit index, the replica is in the snapshot's configuration, and its log does not already hold
//!    the snapshot's index and term (raft-rs would only fast-forward its commit index). The span must
//!    not overlap another initialized replica or another snapshot being received. A refused snapshot
//!    writes nothing.
//! 2. One synced batch fences the replica: a marker (`keys::snapshot_marker_key`) naming the snapshot,
//!    the replica's log, raft-local, apply and range states deleted, its hard state kept with commit 0
//!    (term and vote survive, so it can never vote twice in a term), and the span deleted. The replica
//!    is reopened from that state: **uninitialized** — no state machine, an empty log and
//!    configuration — so it applies nothing and serves nothing. The marker also records how far its log
//!    reached, and the replica refuses to vote for a candidate whose log is behind that (it must not
//!    help elect a leader that lacks entries it acknowledged).
//! 3. Each chunk is checked whole (crc32, sequence, framing, every key inside the span) and then written
//!    as one unsynced batch: memory holds one chunk per stream.
//! 4. After the last chunk the `MsgSnapshot` is stepped into the fenced replica. raft-rs checks again;
//!    the only thing that can have changed is the term (a new election): then it refuses, and the
//!    replica stays uninitialized until the next snapshot. Otherwise the Ready's snapshot is applied by
//!    `PeerStorage::apply_snapshot`, which — the records being in place — writes only the log, raft-local,
//!    apply, range and hard states and deletes the marker, in the Ready's synced batch (its fsync also
//!    makes the unsynced chunks durable).
//!
//! A crash anywhere before step 4's batch leaves the marker: on restart the replica comes back
//! uninitialized (its span holds garbage it never serves) and waits for a new snapshot. A stream cut
//! in the middle leaves the same state without a restart. Whoever next initializes the span deletes
//! it first: a snapshot of this group (step 2) or of a group whose span covers it (it could not have
//! been initialized over this span while the stream ran, by the overlap rule).

pub(crate) mod chunk;
pub(crate) mod recv;
pub(crate) mod send;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::desc::{RangeState, Reader};

/// The snapshot data format of a streamed snapshot's header (formats 1 and 2 carried the records inline).
pub(crate) const STREAMED_FORMAT: u8 = 3;

/// The largest chunk a receiver accepts, and the largest `snapshot-chunk-bytes`.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// What a streamed `MsgSnapshot` carries as its snapshot data: `[3] ‖ range state ‖ id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) range: RangeState,
    /// Chosen by the sender; unique among its node's snapshots since it started.
    pub(crate) id: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let state = self.range.encode();
        let mut out = Vec::with_capacity(1 + 4 + state.len() + 8);
        out.push(STREAMED_FORMAT);
        out.extend_from_slice(&(state.len() as u32).to_le_bytes());
        out.extend_from_slice(&state);
        out.extend_from_slice(&self.id.to_le_bytes());
        out
    }

    /// `None` unless `data` is a streamed snapshot's header.
    pub(crate) fn decode(data: &[u8]) -> Option<Header> {
        let (&format, rest) = data.split_first()?;
        if format != STREAMED_FORMAT {
            return None;
        }
        let mut r = Reader(rest);
        let range = RangeState::decode(r.bytes()?)?;
        let id = r.u64()?;
        r.0.is_empty().then_some(Header { range, id })
    }
}

/// One chunk of a snapshot stream: a run of records (see [`chunk`]), numbered from 0, with the crc32
/// (IEEE) of `data`; `last` ends the stream.
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub seq: u64,
    pub data: Bytes,
    pub crc32: u32,
    pub last: bool,
}

impl SnapshotChunk {
    /// A chunk of `data` with its checksum.
    pub fn new(seq: u64, data: Bytes, last: bool) -> SnapshotChunk {
        SnapshotChunk {
            seq,
            crc32: crc32fast::hash(&data),
            data,
            last,
        }
    }

    /// Whether `data` still matches its checksum.
    pub fn is_intact(&self) -> bool {
        crc32fast::hash(&self.data) == self.crc32
    }
}

impl std::fmt::Debug for SnapshotChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SnapshotChunk(#{} {}B{})",
            self.seq,
            self.data.len(),
            if self.last { " last" } else { "" }
        )
    }
}

/// The receiver's answer to a whole stream: it wrote every record and stepped the snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotAck {
    pub chunks: u64,
    pub bytes: u64,
}

/// Why a snapshot stream failed. Every failure is retried by raft-rs with a new snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The peer could not be reached, or the stream broke.
    #[error("snapshot transport: {0}")]
    Transport(String),
    /// The receiver refused the snapshot before writing anything, or raft-rs refused it at the end.
    #[error("snapshot refused: {0}")]
    Refused(String),
    /// A chunk failed its checks; nothing of it was written.
    #[error("corrupt snapshot chunk: {0}")]
    Corrupt(String),
    /// The stream's deadline passed, or it was cancelled (the leader stepped down, the node stops).
    #[error("snapshot stream cancelled or timed out")]
    Cancelled,
}

/// The deadline and cancellation flag of one outgoing stream; transports check it while they wait.
#[derive(Debug, Clone)]
pub struct StreamControl {
    deadline: Instant,
    cancel: Arc<AtomicBool>,
}

impl StreamControl {
    /// A stream that must end within `timeout`.
    pub fn new(timeout: Duration) -> StreamControl {
        StreamControl {
            deadline: Instant::now() + timeout,
            cancel: Arc::default(),
        }
    }

    /// `Err(Cancelled)` once the stream was cancelled or its deadline passed.
    pub fn check(&self) -> Result<(), SnapshotError> {
        if self.cancel.load(Ordering::SeqCst) || Instant::now() >= self.deadline {
            return Err(SnapshotError::Cancelled);
        }
        Ok(())
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// The sending end of one snapshot stream (see [`crate::Transport::open_snapshot`]). Both calls block,
/// on the snapshot's sender thread, never on the driver.
pub trait SnapshotSink: Send {
    /// Sends the next chunk; blocks while the receiver is behind, which bounds the memory in flight.
    fn send(&mut self, chunk: SnapshotChunk) -> Result<(), SnapshotError>;

    /// After the last chunk: waits for the receiver's acknowledgement of the whole stream.
    fn finish(self: Box<Self>) -> Result<SnapshotAck, SnapshotError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, Span};
    use trestle_engine::Cf;

    #[test]
    fn a_header_round_trips_and_other_formats_are_not_headers() {
        let header = Header {
            range: RangeState::new(
                Span {
                    cf: Cf::Data,
                    start: b"a".to_vec(),
                    end: Some(b"m".to_vec()),
                },
                Epoch {
                    version: 3,
                    conf_ver: 2,
                },
            ),
            id: 42,
        };
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes), Some(header));
        assert_eq!(Header::decode(&bytes[..bytes.len() - 1]), None);
        let mut inline = bytes.clone();
        inline[0] = 2;
        assert_eq!(Header::decode(&inline), None);
        assert_eq!(Header::decode(&[]), None);
    }

    #[test]
    fn a_chunk_whose_data_changed_is_not_intact() {
        let chunk = SnapshotChunk::new(0, Bytes::from_static(b"records"), true);
        assert!(chunk.is_intact());
        let mut bad = chunk.clone();
        bad.data = Bytes::from_static(b"recordz");
        assert!(!bad.is_intact());
    }

    #[test]
    fn a_control_is_cancelled_by_its_flag_or_its_deadline() {
        let ctl = StreamControl::new(Duration::from_secs(60));
        assert!(ctl.check().is_ok());
        ctl.clone().cancel();
        assert_eq!(ctl.check(), Err(SnapshotError::Cancelled));
        let expired = StreamControl::new(Duration::ZERO);
        assert_eq!(expired.check(), Err(SnapshotError::Cancelled));
    }
}
