//! `Peer`: one replica of one Raft group — raft-rs's `RawNode` over [`PeerStorage`], the group's
//! [`StateMachine`], and the requests waiting on it (proposals waiting for apply, reads waiting for their
//! read index to be applied).
//!
//! A `Peer` has no threads, sockets or clocks: the driver calls it. Proposals are matched to their
//! results by (index, term): the entry applied at a proposal's index either carries the proposal's term
//! (it is ours: answer with the apply result) or another term (another leader overwrote it: answer
//! `Dropped`, safe to retry because it was never applied).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message, MessageType};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;
use trestle_engine::{Engine, WriteBatch};

use crate::storage::PeerStorage;
use crate::{ApplyError, ProposeError, StateMachine};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ProposeError>>;

struct PendingProposal {
    index: u64,
    term: u64,
    reply: Reply<Vec<u8>>,
}

/// A replica that lost its disk rejoins without a vote: before wiping it may have voted in terms the
/// others remember, and voting again in one of them could elect two leaders. It grants no vote and never
/// campaigns until it has heard from every other voter, and afterwards only for terms above the highest
/// term any of them reported then.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    heard: HashMap<u64, u64>,
    /// Set once every other voter has been heard: votes are granted only for terms above it.
    pub(crate) floor: Option<u64>,
}

pub(crate) struct Peer {
    pub(crate) id: u64,
    pub(crate) group: u64,
    pub(crate) raw: RawNode<PeerStorage>,
    sm: Box<dyn StateMachine>,
    proposals: VecDeque<PendingProposal>,
    /// Reads that arrived this loop turn; one ReadIndex request serves them all.
    reads_queued: Vec<Reply<()>>,
    /// ReadIndex requests sent to raft-rs, keyed by their context id.
    reads_requested: HashMap<u64, Vec<Reply<()>>>,
    /// Reads whose read index is known, waiting until it is applied.
    reads_ready: Vec<(u64, Reply<()>)>,
    next_read_id: u64,
    pub(crate) recovery: Option<Recovery>,
    compact_threshold: u64,
    /// Whether this replica was leader when its last Ready was handled (to notice lost leadership).
    pub(crate) was_leader: bool,
}

impl Peer {
    pub(crate) fn new(
        id: u64,
        group: u64,
        raw: RawNode<PeerStorage>,
        sm: Box<dyn StateMachine>,
        recovering: bool,
        compact_threshold: u64,
    ) -> Peer {
        Peer {
            id,
            group,
            raw,
            sm,
            proposals: VecDeque::new(),
            reads_queued: Vec::new(),
            reads_requested: HashMap::new(),
            reads_ready: Vec::new(),
            next_read_id: 1,
            recovery: recovering.then(Recovery::default),
            compact_threshold,
            was_leader: false,
        }
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub(crate) fn leader_id(&self) -> Option<u64> {
        let l = self.raw.raft.leader_id;
        (l != raft::INVALID_ID).then_some(l)
    }

    fn not_leader(&self) -> ProposeError {
        ProposeError::NotLeader {
            leader: self.leader_id(),
        }
    }

    pub(crate) fn propose(&mut self, data: Vec<u8>, reply: Reply<Vec<u8>>) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(vec![], data).is_err() || self.raw.raft.raft_log.last_index() == before
        {
            // raft-rs drops proposals during a leader transfer.
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        self.proposals.push_back(PendingProposal {
            index,
            term: self.raw.raft.term,
            reply,
        });
    }

    /// Starts a linearizable read. On a follower raft-rs asks the leader for the read index and the read
    /// is served once this replica has applied up to it (a follower read); with no known leader it fails
    /// at once.
    pub(crate) fn read_index(&mut self, reply: Reply<()>) {
        if !self.is_leader() && self.leader_id().is_none() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        self.reads_queued.push(reply);
    }

    /// Sends one ReadIndex request for every read queued this turn: a read index taken after all of them
    /// arrived is valid for each, and concurrent readers share one heartbeat round instead of one each.
    pub(crate) fn flush_reads(&mut self) {
        if self.reads_queued.is_empty() {
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.reads_requested
            .insert(id, std::mem::take(&mut self.reads_queued));
        self.raw.read_index(id.to_le_bytes().to_vec());
    }

    /// Read states from a Ready: the reads can be served once `index` is applied.
    pub(crate) fn on_read_states(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(replies) = self.reads_requested.remove(&u64::from_le_bytes(bytes)) {
                self.reads_ready
                    .extend(replies.into_iter().map(|r| (rs.index, r)));
            }
        }
    }

    /// Answers the reads whose read index is applied.
    pub(crate) fn serve_reads(&mut self) {
        let applied = self.raw.store().applied().0;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.reads_ready = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(()));
        }
    }

    /// Answers every waiting read and proposal when this replica stops being leader. Reads fail with
    /// `NotLeader` (retry elsewhere). Proposals may still be committed by the next leader, so their callers
    /// get `Timeout` — outcome unknown — now rather than after the full proposal timeout.
    pub(crate) fn on_lost_leadership(&mut self) {
        for p in self.proposals.drain(..) {
            let _ = p.reply.send(Err(ProposeError::Timeout));
        }
        let err = self.not_leader();
        let requested = self
            .reads_requested
            .drain()
            .flat_map(|(_, replies)| replies);
        for reply in self.reads_queued.drain(..).chain(requested) {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, reply) in self.reads_ready.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    /// Applies committed entries one by one: each entry's writes and the new apply state go to the engine
    /// in one batch (not synced: the log is durable, so a lost apply is replayed after a crash).
    pub(crate) fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<(), ApplyError> {
        let engine: Arc<dyn Engine> = self.raw.store().engine().clone();
        for entry in entries {
            let mut batch = WriteBatch::new();
            let mut response = None;
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => {
                    response = Some(self.sm.apply(
                        engine.as_ref(),
                        &mut batch,
                        entry.index,
                        &entry.data,
                    )?);
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| ApplyError(format!("bad conf change: {e}")))?;
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .map_err(|e| ApplyError(format!("conf change: {e}")))?;
                    self.raw
                        .mut_store()
                        .set_conf_state(cs, &mut batch)
                        .map_err(raft_apply_err)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| ApplyError(format!("bad conf change: {e}")))?;
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .map_err(|e| ApplyError(format!("conf change: {e}")))?;
                    self.raw
                        .mut_store()
                        .set_conf_state(cs, &mut batch)
                        .map_err(raft_apply_err)?;
                }
            }
            let store = self.raw.mut_store();
            store
                .set_commit(entry.index, &mut batch)
                .map_err(raft_apply_err)?;
            store.stage_apply_state(entry.index, entry.term, &mut batch);
            engine
                .write(&batch, false)
                .map_err(|e| ApplyError(format!("writing applied entry {}: {e}", entry.index)))?;
            store.applied_to(entry.index, entry.term);
            self.answer_proposal(entry.index, entry.term, response);
        }
        Ok(())
    }

    fn answer_proposal(&mut self, index: u64, term: u64, response: Option<Vec<u8>>) {
        while let Some(p) = self.proposals.front() {
            if p.index > index {
                break;
            }
            let Some(p) = self.proposals.pop_front() else {
                break;
            };
            if p.index == index && p.term == term {
                let _ = p.reply.send(Ok(response.clone().unwrap_or_default()));
            } else {
                let _ = p.reply.send(Err(ProposeError::Dropped));
            }
        }
    }

    /// Compacts the log when it has grown `compact_threshold` entries past the truncation point. A leader
    /// keeps what its followers still need (their matched index), except that a follower lagging more than
    /// `compact_threshold` entries (a dead or wiped node) no longer holds the log back: it will get a
    /// snapshot instead.
    pub(crate) fn maybe_compact(&mut self, batch: &mut WriteBatch) -> Result<(), raft::Error> {
        let store = self.raw.store();
        let (applied, _) = store.applied();
        let mut target = applied;
        if self.is_leader() {
            let min_matched = self
                .raw
                .raft
                .prs()
                .iter()
                .map(|(_, pr)| pr.matched)
                .min()
                .unwrap_or(applied);
            target = applied.min(min_matched.max(applied.saturating_sub(self.compact_threshold)));
        }
        if target >= store.first_index_value() + self.compact_threshold {
            self.raw.mut_store().compact_to(target, batch)?;
        }
        Ok(())
    }

    /// Filters an inbound message for a recovering replica; returns false to drop it.
    pub(crate) fn admit(&mut self, msg: &Message) -> bool {
        let Some(rec) = self.recovery.as_mut() else {
            return true;
        };
        let voters: Vec<u64> = self.raw.store().conf_state().voters.clone();
        if msg.from != self.id && msg.term > 0 {
            let seen = rec.heard.entry(msg.from).or_insert(0);
            *seen = (*seen).max(msg.term);
        }
        if rec.floor.is_none()
            && voters
                .iter()
                .filter(|&&v| v != self.id)
                .all(|v| rec.heard.contains_key(v))
        {
            rec.floor = rec.heard.values().copied().max();
        }
        let is_vote = matches!(
            msg.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        if !is_vote {
            return true;
        }
        match rec.floor {
            Some(floor) => msg.term > floor,
            None => false,
        }
    }

    /// Whether the replica may tick (and so campaign): not while recovering without a known term floor.
    pub(crate) fn may_tick(&self) -> bool {
        self.recovery.as_ref().is_none_or(|r| r.floor.is_some())
    }
}

fn raft_apply_err(e: raft::Error) -> ApplyError {
    ApplyError(format!("raft storage: {e}"))
}

impl Peer {
    /// Tells the state machine its keyspace was replaced by a snapshot.
    pub(crate) fn restored(&mut self) -> Result<(), ApplyError> {
        let engine = self.raw.store().engine().clone();
        self.sm.on_snapshot_restored(engine.as_ref())
    }
}
