//! The driver's side of a snapshot stream it receives (the rule is in [`crate::snapshot`]): admit the
//! stream and fence the replica before anything is written, step the snapshot after the last chunk,
//! forget a stream that broke off.

use std::collections::HashSet;

use raft::eraftpb::Message;
use trestle_engine::WriteBatch;

use super::Driver;
use crate::Envelope;
use crate::Span;
use crate::snapshot::SnapshotError;
use crate::snapshot::recv::{self, Marker, Ticket};
use crate::storage::PeerStorage;

/// A snapshot being received into one group's replica.
pub(super) struct Incoming {
    id: u64,
    from: u64,
    pub(super) span: Span,
    /// The `MsgSnapshot`, stepped once every record is written.
    msg: Message,
}

fn refused(why: impl Into<String>) -> Result<Result<Ticket, SnapshotError>, String> {
    Ok(Err(SnapshotError::Refused(why.into())))
}

impl Driver {
    /// Admits a snapshot stream whose first message is `env` and fences its replica (one synced batch,
    /// then the replica is reopened uninitialized), or refuses it with nothing written. The outer
    /// `Err` is a storage failure: the node stops.
    pub(super) fn begin_snapshot(
        &mut self,
        env: Envelope,
        touched: &mut HashSet<u64>,
    ) -> Result<Result<Ticket, SnapshotError>, String> {
        if env.to != self.id {
            return refused("addressed to another node");
        }
        let (msg, header) = match recv::parse_first(&env) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Err(e)),
        };
        let group = env.group;
        if !self.peers.contains_key(&group) {
            // As for a leader's first message (`step`): an empty replica, which the snapshot fills.
            if !self.host.may_host(group) {
                return refused("this node does not host the group");
            }
            if self.create_group(group, None).is_err() {
                return refused("cannot start a replica of the group");
            }
            touched.insert(group);
        }
        if self.incoming.contains_key(&group) {
            return refused("a snapshot of the group is already being received");
        }
        if self.incoming.len() >= self.config.max_receiving_snapshots {
            return refused("the node is receiving its maximum of snapshots");
        }
        if let Err(e) = self.retire_merged_sources(group, &msg) {
            return refused(&e);
        }
        if self.snapshot_overlaps(group, &msg) {
            return refused("the span overlaps another replica or incoming snapshot");
        }
        if self.snapshot_buried(group, &msg) {
            return refused("this node's replica was destroyed by a configuration at least as new");
        }
        let Some(peer) = self.peers.get_mut(&group) else {
            return refused("no replica of the group");
        };
        if !peer.admit(&msg) {
            return refused("the replica does not take messages yet");
        }
        if let Some(why) = recv::refusal(&peer.raw.raft, &msg) {
            tracing::debug!(node = self.id, group, why, "snapshot refused");
            return refused(why);
        }
        let meta = msg.get_snapshot().get_metadata();
        let log = &peer.raw.raft.raft_log;
        let mut floor = (log.last_term(), log.last_index());
        // Fenced before and not restored since: its log is empty now, the old floor still holds.
        if let Some(old) = peer.raw.store().receiving() {
            floor = floor.max((old.floor_term, old.floor_index));
        }
        let marker = Marker {
            from: env.from,
            id: header.id,
            index: meta.index,
            term: meta.term,
            floor_index: floor.1,
            floor_term: floor.0,
        };
        let span = header.range.span;
        let mut batch = WriteBatch::new();
        PeerStorage::stage_fence(
            group,
            &marker,
            peer.raw.store().hard_state(),
            &span,
            &mut batch,
        )
        .map_err(|e| format!("group {group}: fencing for a snapshot: {e}"))?;
        self.engine
            .write(&batch, true)
            .map_err(|e| format!("group {group}: fencing for a snapshot: {e}"))?;
        // The replica follows (raft-rs restores only on followers): waiting reads are answered
        // `NotLeader`. Its state now is what the engine holds: uninitialized, with its vote.
        peer.on_lost_leadership();
        let recovery = peer.recovery.take();
        self.peers.remove(&group);
        // A leader of an older term being replaced: its own streams of the group are moot.
        self.outgoing.cancel_group(group);
        self.create_group(group, None)
            .map_err(|e| format!("group {group}: reopening the fenced replica: {e}"))?;
        if let Some(peer) = self.peers.get_mut(&group) {
            peer.recovery = recovery;
        }
        touched.insert(group);
        tracing::info!(
            node = self.id,
            group,
            from = env.from,
            index = marker.index,
            id = marker.id,
            "receiving a snapshot; replica fenced"
        );
        self.incoming.insert(
            group,
            Incoming {
                id: header.id,
                from: env.from,
                span: span.clone(),
                msg,
            },
        );
        Ok(Ok(Ticket {
            engine: self.engine.clone(),
            span,
            stopped: self.stopped.clone(),
        }))
    }

    /// Every record of snapshot `id` is written: steps its `MsgSnapshot`. `Ok` when raft-rs restores
    /// it (this turn's Ready applies it); refused when raft-rs does not (a newer term arrived
    /// meanwhile), and then the replica stays fenced until another snapshot.
    pub(super) fn finish_snapshot(
        &mut self,
        group: u64,
        id: u64,
        touched: &mut HashSet<u64>,
    ) -> Result<(), SnapshotError> {
        let gone = || SnapshotError::Refused("the stream is no longer expected".into());
        if self.incoming.get(&group).is_none_or(|inc| inc.id != id) {
            return Err(gone());
        }
        let inc = self.incoming.remove(&group).ok_or_else(gone)?;
        let peer = self.peers.get_mut(&group).ok_or_else(gone)?;
        if peer.raw.store().receiving().is_none_or(|m| m.id != id) {
            return Err(gone());
        }
        let meta = inc.msg.get_snapshot().get_metadata().clone();
        touched.insert(group);
        if !peer.admit(&inc.msg) {
            return Err(SnapshotError::Refused(
                "the replica does not take messages yet".into(),
            ));
        }
        if let Err(e) = peer.raw.step(inc.msg) {
            tracing::debug!(node = self.id, group, error = %e, "raft step");
        }
        let restoring = peer
            .raw
            .raft
            .raft_log
            .unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| {
                let m = s.get_metadata();
                (m.index, m.term) == (meta.index, meta.term)
            });
        if !restoring {
            tracing::info!(
                node = self.id,
                group,
                from = inc.from,
                "raft refused the received snapshot; the replica waits for another"
            );
            return Err(SnapshotError::Refused(
                "raft refused the snapshot at its end (a newer term)".into(),
            ));
        }
        tracing::info!(
            node = self.id,
            group,
            from = inc.from,
            index = meta.index,
            "snapshot received"
        );
        Ok(())
    }

    /// Snapshot `id` broke off: the replica stays fenced (uninitialized) until another one.
    pub(super) fn abort_snapshot(&mut self, group: u64, id: u64) {
        if self.incoming.get(&group).is_some_and(|inc| inc.id == id) {
            self.incoming.remove(&group);
            tracing::info!(
                node = self.id,
                group,
                id,
                "snapshot stream broke off; the replica waits for another"
            );
        }
    }
}
