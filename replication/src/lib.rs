//! Multi-Raft on raft-rs: every range of the keyspace (and the meta group) is a Raft group with three
//! replicas, one per node, and one driver thread per node runs all of that node's replicas.
//!
//! What this crate owns, and nothing else does:
//! - the Raft log, hard state and apply state of every group, persisted in `Cf::Raft`
//!   ([`storage::PeerStorage`]);
//! - the ready loop ([`driver`]): one synced write batch per loop turn covers the log entries and hard
//!   states of *every* group that had something to persist (group commit), messages that must wait for
//!   persistence go out after the fsync, committed entries are applied with their apply state in the same
//!   write batch as the data they produce;
//! - proposals and linearizable reads (ReadIndex), leader transfer, log compaction, snapshots;
//! - snapshots as streams of bounded chunks (`snapshot`): the leader streams its span from a
//!   point-in-time engine view, the receiver writes the chunks into its span as they arrive under a
//!   synced marker that keeps the replica uninitialized — serving and applying nothing, across crashes
//!   too — until the snapshot is restored; memory on both ends is bounded by the chunk size;
//! - the transports: [`Transport`] with a batched gRPC implementation ([`grpc`]) and an in-memory one
//!   with partition/drop/delay filters for tests ([`memory`]), each carrying snapshot streams too.
//!
//! What it does not know: tables, entities or locks. Those are [`StateMachine`]s: deterministic functions
//! from committed commands to writes in the group's own keyspace ([`Span`]). raft-rs types never leave
//! this crate: the rest of Trestle sees groups, node ids, byte commands and byte responses.

mod desc;
mod driver;
pub mod grpc;
pub mod memory;
mod peer;
pub mod planted;
mod snapshot;
mod storage;
#[cfg(test)]
mod tests;

use std::fmt;

use trestle_engine::{Cf, Engine, WriteBatch};

pub use desc::{MergeRefused, MergeStep, Merging, SplitRefused, SplitRequest};
pub use driver::{Config, GroupStatus, RaftNode, Role};
pub use peer::MembershipChange;
pub use snapshot::{
    MAX_CHUNK_BYTES, SnapshotAck, SnapshotChunk, SnapshotError, SnapshotSink, StreamControl,
};

/// A Raft group's replicated keyspace: the keys in `[start, end)` of `cf`. Snapshots copy exactly these
/// keys, and a restored snapshot replaces exactly these keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Span {
    pub cf: Cf,
    pub start: Vec<u8>,
    /// `None`: to the end of the column family.
    pub end: Option<Vec<u8>>,
}

impl Span {
    /// Whether `key` of `cf` lies in the span.
    pub fn contains(&self, cf: Cf, key: &[u8]) -> bool {
        cf == self.cf
            && key >= self.start.as_slice()
            && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// Whether every key of `other` lies in this span.
    pub fn covers(&self, other: &Span) -> bool {
        self.cf == other.cf
            && self.start <= other.start
            && match (&self.end, &other.end) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => a >= b,
            }
    }

    /// Whether the two spans share a key.
    pub fn overlaps(&self, other: &Span) -> bool {
        self.cf == other.cf
            && self
                .end
                .as_deref()
                .is_none_or(|e| other.start.as_slice() < e)
            && other
                .end
                .as_deref()
                .is_none_or(|e| self.start.as_slice() < e)
    }
}

/// A group's epoch (TiKV's region epoch): `version` rises with every split or merge (the span changed),
/// `conf_ver` with every membership change. A request planned against an older epoch is refused rather
/// than applied to keys the group no longer owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    pub version: u64,
    pub conf_ver: u64,
}

impl Epoch {
    /// The epoch of a group created at bootstrap.
    pub const INITIAL: Epoch = Epoch {
        version: 1,
        conf_ver: 1,
    };
}

/// What a node needs to know to host one replica of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDesc {
    pub id: u64,
    /// Node ids of the voters. Raft peer ids are node ids.
    pub voters: Vec<u64>,
    /// Node ids of the learners (replicas being caught up; no vote).
    pub learners: Vec<u64>,
    /// During a joint configuration (a change of more than one voter): the old voters, whose majority
    /// must also agree until the group leaves the joint configuration. Empty otherwise.
    pub voters_outgoing: Vec<u64>,
    pub span: Span,
    pub epoch: Epoch,
}

/// What the replication layer asks of the node that embeds it: state machines for groups it starts
/// hosting on its own (a split, a snapshot for a group it did not have, a restart), and notice of every
/// descriptor change, so the node's routing follows the groups' own logs.
pub trait GroupHost: Send + Sync + 'static {
    /// The state machine of a replica of `desc`.
    fn state_machine(&self, desc: &GroupDesc) -> Box<dyn StateMachine>;

    /// A hosted group's descriptor changed (created, split, merged, restored from a snapshot,
    /// membership).
    fn on_desc_changed(&self, _desc: &GroupDesc) {}

    /// Whether a message from the leader of a group this node does not host may create an empty replica
    /// of it (which then waits for a snapshot).
    fn may_host(&self, _group: u64) -> bool {
        true
    }

    /// This node's replica of `group` was removed from the group and destroyed (its keys are gone), or
    /// merged into the range to its left (its keys are that range's now).
    fn on_removed(&self, _group: u64) {}
}

/// A group's deterministic state machine.
///
/// `apply` must be a pure function of the engine's contents (within the group's [`Span`]), the index and
/// the command: it never reads a clock or randomness, so every replica produces the same writes.
/// Deterministic failures (an entity already exists, a condition failed) are part of the response bytes.
/// An `Err` means the node cannot go on (I/O failure, corrupt data): the driver stops the node rather than
/// let replicas diverge.
pub trait StateMachine: Send + 'static {
    /// Applies the command committed at `index`. Reads go to `engine` (which already holds every earlier
    /// entry's writes); writes go into `batch`, which the driver writes together with the new apply state.
    fn apply(
        &mut self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, ApplyError>;

    /// Called after a snapshot replaced the group's keyspace, so in-memory caches can be rebuilt.
    fn on_snapshot_restored(&mut self, _engine: &dyn Engine) -> Result<(), ApplyError> {
        Ok(())
    }

    /// Called while a split entry applies, before the span shrinks to `[start, right.start)`: the state
    /// machine may stage writes into `batch` that the right half needs (copies of records it keeps at
    /// the left of the old span). Must be deterministic, like `apply`.
    fn on_split(
        &mut self,
        _engine: &dyn Engine,
        _batch: &mut WriteBatch,
        _right: &Span,
    ) -> Result<(), ApplyError> {
        Ok(())
    }

    /// Called while a merge commit applies, before the span grows over `source` (the adjacent range
    /// to the right, frozen, whose keys on this node are final): the state machine may fold records
    /// the source kept into its own. Must be deterministic, like `apply`.
    fn on_merge(
        &mut self,
        _engine: &dyn Engine,
        _batch: &mut WriteBatch,
        _source: &Span,
    ) -> Result<(), ApplyError> {
        Ok(())
    }

    /// The group's descriptor changed (see [`GroupHost::on_desc_changed`]); called after the change is
    /// durable and before the next entry applies.
    fn on_desc_changed(&mut self, _desc: &GroupDesc) {}
}

/// A fatal apply failure: the replica's storage can no longer be trusted.
#[derive(Debug, thiserror::Error)]
#[error("apply failed: {0}")]
pub struct ApplyError(pub String);

/// Why a proposal or read was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the group's leader; the leader's node id, if known.
    #[error("not leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// The proposal was overwritten by another leader's entry: it was not applied, it may be retried.
    #[error("proposal dropped by a leader change")]
    Dropped,
    /// This node hosts no replica of the group.
    #[error("group {0} not found on this node")]
    GroupNotFound(u64),
    /// The node is shutting down or stopped after a fatal error.
    #[error("node stopped")]
    Stopped,
    /// The proposal's outcome is unknown: it was not applied in time, or its leader stepped down before
    /// it committed. It may still be applied.
    #[error("proposal outcome unknown (timed out or leader stepped down)")]
    Timeout,
    /// The proposal is larger than the configured limit.
    #[error("proposal too large: {0} bytes")]
    TooLarge(usize),
    /// An admin command was refused when it applied (nothing changed).
    #[error("split refused: {0}")]
    SplitRefused(SplitRefused),
    /// The group is frozen for a merge into `target` (see [`MergeStep`]): it takes no command and
    /// serves no read. Nothing was applied; once the merge commits, `target` holds the keys.
    #[error("the group is merging into group {target}")]
    Merging { target: u64 },
    /// A merge step was refused when it applied (nothing changed).
    #[error("merge refused: {0}")]
    MergeRefused(MergeRefused),
    /// A membership change that cannot be proposed now (nothing changed): another is in progress, it
    /// would remove the leader, or it names no change.
    #[error("membership change refused: {0}")]
    MembershipRefused(String),
}

/// A Raft message between two replicas of one group, in Trestle's own envelope. `message` is a serialized
/// raft-rs `eraftpb::Message`; only this crate looks inside.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    pub group: u64,
    pub from: u64,
    pub to: u64,
    pub message: bytes::Bytes,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Envelope(g{} {}→{} {}B)",
            self.group,
            self.from,
            self.to,
            self.message.len()
        )
    }
}

/// Carries envelopes and snapshot streams to other nodes. Sending is best effort and never blocks the
/// driver: Raft retries whatever is lost.
pub trait Transport: Send + Sync + 'static {
    /// Sends a batch of envelopes, all addressed to replicas on node `to_node`.
    fn send(&self, to_node: u64, batch: Vec<Envelope>);

    /// Opens a stream that carries one Raft snapshot to node `to_node`: `first` is the `MsgSnapshot`
    /// (metadata and header, no records), the chunks follow through the returned sink, and the
    /// receiver's acknowledgement ends it. Blocking: called on the snapshot's sender thread, never on the
    /// driver; the transport gives up when `ctl` says so.
    fn open_snapshot(
        &self,
        to_node: u64,
        first: Envelope,
        ctl: &StreamControl,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotError>;

    /// Learns (or confirms) that node `node` is reached at `addr` (a node that joined the cluster).
    /// Transports that reach every node without addresses ignore it.
    fn add_peer(&self, _node: u64, _addr: &str) {}
}
