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
use trestle_engine::{Cf, Engine, WriteBatch, keys};

use crate::desc::{
    self, ADMIN_MERGE, ADMIN_SPLIT, MergeOutcome, MergeRefused, MergeStep, Merging, SplitRefused,
    SplitRequest,
};
use crate::storage::PeerStorage;
use crate::{ApplyError, Epoch, GroupDesc, GroupHost, ProposeError, Span, StateMachine};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ProposeError>>;

/// The tombstone of a replica that merged away: no snapshot of its group is ever taken in again, and
/// no message recreates it.
pub(crate) const MERGED_AWAY: u64 = u64::MAX;

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

/// One step of a membership change (see `RaftNode::change_membership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a replica on this node as a learner: it receives the log (by snapshot first) but does not
    /// vote.
    AddLearner(u64),
    /// Make this node's replica (a learner) a voter.
    Promote(u64),
    /// Remove this node's replica from the group.
    Remove(u64),
}

/// What applying entries asks of the driver beyond this replica.
pub(crate) enum Effect {
    /// A conf change removed this replica from its group: the driver destroys it.
    Removed,
    /// A split applied: this replica now holds `left`; the driver must start the replica of `right`
    /// (its state is durable) unless this node already had an initialized one.
    Split { right: GroupDesc, start_right: bool },
    /// A merge committed here: this node's replica of `source` is gone (its raft state was deleted in
    /// the same batch; its keys are this group's now). The driver drops it.
    Merged { source: u64 },
}

/// What applying a merge step came to: its outcome and what the driver must do, or `None` for a
/// commit whose source replica on this node has not applied the prepare entry yet — the entry and
/// everything after it wait (see [`Peer::blocked`]).
type MergeApplied = Option<(MergeOutcome, Option<Effect>)>;

pub(crate) struct Peer {
    pub(crate) id: u64,
    pub(crate) group: u64,
    pub(crate) raw: RawNode<PeerStorage>,
    /// `None` while the replica is uninitialized (created on first contact; it applies nothing before
    /// a snapshot, which brings its descriptor).
    sm: Option<Box<dyn StateMachine>>,
    host: Arc<dyn GroupHost>,
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
    /// Committed entries waiting to apply, in order, behind a merge commit whose source replica here is
    /// not yet frozen at its prepare entry (it is catching up, or replaying its log after a restart).
    /// Retried every driver turn; never persisted — after a restart raft-rs hands them over again.
    blocked: VecDeque<Entry>,
    /// The index of a merge prepare this leader proposed and has not applied yet: no membership change
    /// may be proposed behind it.
    prepare_pending: Option<u64>,
}

impl Peer {
    pub(crate) fn new(
        id: u64,
        group: u64,
        raw: RawNode<PeerStorage>,
        host: Arc<dyn GroupHost>,
        recovering: bool,
        compact_threshold: u64,
    ) -> Peer {
        let desc = descriptor(group, raw.store());
        let sm = desc.as_ref().map(|d| host.state_machine(d));
        if let Some(d) = &desc {
            host.on_desc_changed(d);
        }
        Peer {
            id,
            group,
            raw,
            sm,
            host,
            proposals: VecDeque::new(),
            reads_queued: Vec::new(),
            reads_requested: HashMap::new(),
            reads_ready: Vec::new(),
            next_read_id: 1,
            recovery: recovering.then(Recovery::default),
            compact_threshold,
            was_leader: false,
            blocked: VecDeque::new(),
            prepare_pending: None,
        }
    }

    /// The merge this replica's group is frozen for, if any.
    pub(crate) fn merging(&self) -> Option<Merging> {
        self.raw.store().range().and_then(|r| r.merging)
    }

    fn frozen(&self) -> Option<ProposeError> {
        self.merging()
            .map(|m| ProposeError::Merging { target: m.target })
    }

    /// Whether committed entries wait behind a merge commit (see [`Peer::blocked`]).
    pub(crate) fn has_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// The (source, prepare index) the merge commit at the head of [`Peer::blocked`] waits for.
    pub(crate) fn blocked_on(&self) -> Option<(u64, u64)> {
        match MergeStep::decode(&self.blocked.front()?.data)? {
            MergeStep::Commit {
                source,
                prepare_index,
                ..
            } => Some((source.id, prepare_index)),
            _ => None,
        }
    }

    /// Raises this replica's commit index to `index`, if its log holds that entry. Only for a merge's
    /// source whose target committed the merge: the commit proves the prepare entry committed (the
    /// merge is proposed only after every source replica applied it), and after a crash that lost the
    /// unsynced commit index the source's other replicas may be gone already.
    pub(crate) fn learn_commit(&mut self, index: u64) -> bool {
        let log = &mut self.raw.raft.raft_log;
        if log.committed >= index || log.last_index() < index {
            return false;
        }
        log.commit_to(index);
        true
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

    /// This replica's descriptor; `None` while uninitialized.
    pub(crate) fn desc(&self) -> Option<GroupDesc> {
        descriptor(self.group, self.raw.store())
    }

    pub(crate) fn is_initialized(&self) -> bool {
        self.raw.store().is_initialized()
    }

    pub(crate) fn propose(&mut self, data: Vec<u8>, reply: Reply<Vec<u8>>) {
        if let Some(e) = self.frozen() {
            let _ = reply.send(Err(e));
            return;
        }
        self.propose_with(Vec::new(), data, reply);
    }

    /// Proposes one step of a merge (see [`MergeStep`]). A prepare waits for no membership change in
    /// flight, and none may be proposed behind it.
    pub(crate) fn propose_merge(&mut self, step: &MergeStep, reply: Reply<Vec<u8>>) {
        let prepare = matches!(step, MergeStep::Prepare { .. });
        if prepare && self.is_leader() && self.raw.raft.has_pending_conf() {
            let _ = reply.send(Err(ProposeError::MergeRefused(MergeRefused::ConfChanging)));
            return;
        }
        self.propose_with(ADMIN_MERGE.to_vec(), step.encode(), reply);
        if prepare && let Some(p) = self.proposals.back() {
            self.prepare_pending = Some(p.index);
        }
    }

    /// Proposes a membership change (this replica must lead): one change is a simple conf change; more
    /// than one voter changing at once goes through a joint configuration, which raft-rs leaves on its
    /// own once entered (an empty `changes` proposes leaving one explicitly). The leader may not remove
    /// itself: hand leadership over first.
    pub(crate) fn propose_membership(
        &mut self,
        changes: &[MembershipChange],
        reply: Reply<Vec<u8>>,
    ) {
        use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType};
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if changes.contains(&MembershipChange::Remove(self.id)) {
            let _ = reply.send(Err(ProposeError::MembershipRefused(
                "the leader cannot remove its own replica; transfer leadership first".into(),
            )));
            return;
        }
        if self.raw.raft.has_pending_conf() {
            let _ = reply.send(Err(ProposeError::MembershipRefused(
                "another membership change is in progress".into(),
            )));
            return;
        }
        let applied = self.raw.store().applied().0;
        if self.merging().is_some() || self.prepare_pending.is_some_and(|i| i > applied) {
            let _ = reply.send(Err(ProposeError::MembershipRefused(
                "the range is merging".into(),
            )));
            return;
        }
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        for change in changes {
            let mut single = ConfChangeSingle::default();
            let (ty, node) = match *change {
                MembershipChange::AddLearner(n) => (ConfChangeType::AddLearnerNode, n),
                MembershipChange::Promote(n) => (ConfChangeType::AddNode, n),
                MembershipChange::Remove(n) => (ConfChangeType::RemoveNode, n),
            };
            single.set_change_type(ty);
            single.node_id = node;
            cc.mut_changes().push(single);
        }
        let before = self.raw.raft.raft_log.last_index();
        if let Err(e) = self.raw.propose_conf_change(Vec::new(), cc) {
            let _ = reply.send(Err(ProposeError::MembershipRefused(e.to_string())));
            return;
        }
        if self.raw.raft.raft_log.last_index() == before {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        self.proposals.push_back(PendingProposal {
            index: self.raw.raft.raft_log.last_index(),
            term: self.raw.raft.term,
            reply,
        });
    }

    /// Whether the applied configuration no longer has this replica in any role.
    fn removed_from_group(&self) -> bool {
        let cs = self.raw.store().conf_state();
        let id = self.id;
        !cs.voters.contains(&id)
            && !cs.learners.contains(&id)
            && !cs.voters_outgoing.contains(&id)
            && !cs.learners_next.contains(&id)
    }

    /// Proposes an admin entry (`context` names the command; see `desc`).
    pub(crate) fn propose_with(&mut self, context: Vec<u8>, data: Vec<u8>, reply: Reply<Vec<u8>>) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(context, data).is_err() || self.raw.raft.raft_log.last_index() == before
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
        if let Some(e) = self.frozen() {
            let _ = reply.send(Err(e));
            return;
        }
        if !self.is_leader() && self.leader_id().is_none() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        self.reads_queued.push(reply);
    }

    /// Sends one ReadIndex request for every read queued this turn: a read index taken after all of them
    /// arrived is valid for each, and concurrent readers share one heartbeat round instead of one each.
    ///
    /// A leader that has not yet committed an entry of its own term keeps them queued: raft-rs drops a
    /// ReadIndex it receives then (the new leader does not know the commit index yet), and the reads
    /// would wait out the read timeout. A new leader's first entry commits one round trip after its
    /// election — the right half of every split is such a leader, elected at once and read at once.
    pub(crate) fn flush_reads(&mut self) {
        if self.reads_queued.is_empty() {
            return;
        }
        if self.is_leader() && !self.raw.raft.commit_to_current_term() {
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
    /// in one batch (not synced: the log is durable, so a lost apply is replayed after a crash). Returns
    /// what the driver must do beyond this replica (start a split's right half).
    pub(crate) fn apply_committed(
        &mut self,
        entries: Vec<Entry>,
    ) -> Result<Vec<Effect>, ApplyError> {
        let engine: Arc<dyn Engine> = self.raw.store().engine().clone();
        let mut effects = Vec::new();
        let mut queue = std::mem::take(&mut self.blocked);
        queue.extend(entries);
        while let Some(entry) = queue.pop_front() {
            let mut batch = WriteBatch::new();
            let mut response = Ok(Vec::new());
            let mut changed = None;
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal if entry.context.as_ref() == ADMIN_SPLIT => {
                    let outcome = self.apply_split(engine.as_ref(), &mut batch, &entry.data)?;
                    if let Ok((left, right)) = &outcome {
                        changed = Some(left.clone());
                        effects.push(Effect::Split {
                            start_right: !self.initialized_on_disk(engine.as_ref(), right.id)?,
                            right: right.clone(),
                        });
                    }
                    response = Ok(desc::encode_split_result(&outcome));
                }
                EntryType::EntryNormal if entry.context.as_ref() == ADMIN_MERGE => {
                    match self.apply_merge(engine.as_ref(), &mut batch, &entry)? {
                        None => {
                            queue.push_front(entry);
                            self.blocked = queue;
                            break;
                        }
                        Some((outcome, effect)) => {
                            if let Ok((desc, _)) = &outcome {
                                changed = Some(desc.clone());
                            }
                            effects.extend(effect);
                            response = Ok(desc::encode_merge_result(&outcome));
                        }
                    }
                }
                EntryType::EntryNormal => {
                    // A frozen group applies no command: its data is final as of its prepare entry.
                    response = match self.frozen() {
                        Some(e) => Err(e),
                        None => {
                            let sm = self.sm.as_mut().ok_or_else(uninitialized)?;
                            Ok(sm.apply(engine.as_ref(), &mut batch, entry.index, &entry.data)?)
                        }
                    };
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| ApplyError(format!("bad conf change: {e}")))?;
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .map_err(|e| ApplyError(format!("conf change: {e}")))?;
                    changed = self.stage_conf_state(cs, &mut batch)?;
                    response = Ok(changed.as_ref().map(encode_desc_bytes).unwrap_or_default());
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| ApplyError(format!("bad conf change: {e}")))?;
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .map_err(|e| ApplyError(format!("conf change: {e}")))?;
                    changed = self.stage_conf_state(cs, &mut batch)?;
                    response = Ok(changed.as_ref().map(encode_desc_bytes).unwrap_or_default());
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
            if self.prepare_pending.is_some_and(|i| i <= entry.index) {
                self.prepare_pending = None;
            }
            if let Some(desc) = changed {
                if let Some(sm) = self.sm.as_mut() {
                    sm.on_desc_changed(&desc);
                }
                self.host.on_desc_changed(&desc);
            }
            self.answer_proposal(entry.index, entry.term, response);
            if self.removed_from_group() && self.is_initialized() {
                // Nothing after this entry is ours to apply.
                effects.push(Effect::Removed);
                break;
            }
        }
        Ok(effects)
    }

    /// Stages a new configuration and raises the conf version; returns the new descriptor.
    fn stage_conf_state(
        &mut self,
        cs: raft::eraftpb::ConfState,
        batch: &mut WriteBatch,
    ) -> Result<Option<GroupDesc>, ApplyError> {
        let store = self.raw.mut_store();
        store.set_conf_state(cs, batch).map_err(raft_apply_err)?;
        let Some(range) = store.range().cloned() else {
            return Ok(None);
        };
        let epoch = Epoch {
            version: range.epoch.version,
            conf_ver: range.epoch.conf_ver + 1,
        };
        store.set_range(range.span, epoch, batch);
        Ok(self.desc())
    }

    /// Whether the engine holds an initialized replica of `group` (one restored from a snapshot before
    /// this node applied the split that creates it).
    fn initialized_on_disk(&self, engine: &dyn Engine, group: u64) -> Result<bool, ApplyError> {
        engine
            .get(Cf::Raft, &keys::range_state_key(group))
            .map(|v| v.is_some())
            .map_err(|e| ApplyError(format!("reading group {group}'s range state: {e}")))
    }

    /// Applies a split entry: the same checks and the same writes on every replica, from replicated
    /// state only. A refusal changes nothing.
    fn apply_split(
        &mut self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        data: &[u8],
    ) -> Result<Result<(GroupDesc, GroupDesc), SplitRefused>, ApplyError> {
        let Some(req) = SplitRequest::decode(data) else {
            return Ok(Err(SplitRefused::KeyOutside));
        };
        let range = self
            .raw
            .store()
            .range()
            .cloned()
            .ok_or_else(uninitialized)?;
        if req.version != range.epoch.version {
            return Ok(Err(SplitRefused::EpochStale {
                current: range.epoch.version,
                planned: req.version,
            }));
        }
        let span = &range.span;
        let inside = req.key.as_slice() > span.start.as_slice()
            && span
                .end
                .as_deref()
                .is_none_or(|end| req.key.as_slice() < end);
        if !inside {
            return Ok(Err(SplitRefused::KeyOutside));
        }
        let cs = self.raw.store().conf_state().clone();
        if !cs.learners.is_empty() || !cs.voters_outgoing.is_empty() {
            return Ok(Err(SplitRefused::ConfChanging));
        }
        let epoch = Epoch {
            version: range.epoch.version + 1,
            conf_ver: range.epoch.conf_ver,
        };
        let left = GroupDesc {
            id: self.group,
            voters: cs.voters.clone(),
            learners: Vec::new(),
            voters_outgoing: Vec::new(),
            span: Span {
                cf: span.cf,
                start: span.start.clone(),
                end: Some(req.key.clone()),
            },
            epoch,
        };
        let right = GroupDesc {
            id: req.new_group,
            voters: cs.voters.clone(),
            learners: Vec::new(),
            voters_outgoing: Vec::new(),
            span: Span {
                cf: span.cf,
                start: req.key.clone(),
                end: span.end.clone(),
            },
            epoch,
        };
        if let Some(sm) = self.sm.as_mut() {
            sm.on_split(engine, batch, &right.span)?;
        }
        self.raw
            .mut_store()
            .set_range(left.span.clone(), epoch, batch);
        if !self.initialized_on_disk(engine, right.id)? {
            let existing = engine
                .get(Cf::Raft, &keys::hard_state_key(right.id))
                .map_err(|e| ApplyError(format!("reading group {}: {e}", right.id)))?
                .map(|b| raft::eraftpb::HardState::parse_from_bytes(&b))
                .transpose()
                .map_err(|e| ApplyError(format!("group {} hard state: {e}", right.id)))?;
            PeerStorage::stage_split_init(&right, existing.as_ref(), batch)
                .map_err(raft_apply_err)?;
        }
        tracing::info!(
            group = self.group,
            right = right.id,
            version = epoch.version,
            "split applied"
        );
        Ok(Ok((left, right)))
    }

    /// Applies a merge step entry: the same checks and the same writes on every replica (see
    /// [`MergeStep`]); a refusal changes nothing. A commit blocks until this node's source replica has
    /// applied the prepare entry, so the source's data here is final before the target takes it.
    fn apply_merge(
        &mut self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        entry: &Entry,
    ) -> Result<MergeApplied, ApplyError> {
        let range = self
            .raw
            .store()
            .range()
            .cloned()
            .ok_or_else(uninitialized)?;
        let refuse = |e| Ok(Some((Err(e), None)));
        let stale = |planned| MergeRefused::EpochStale {
            current: range.epoch.version,
            planned,
        };
        let Some(step) = MergeStep::decode(&entry.data) else {
            return refuse(MergeRefused::NotAdjacent);
        };
        let cs = self.raw.store().conf_state().clone();
        let conf_changing = !cs.learners.is_empty() || !cs.voters_outgoing.is_empty();
        let mut next = range.clone();
        let mut effect = None;
        match step {
            MergeStep::Prepare { target, version } => {
                if range.merging.is_some() {
                    return refuse(MergeRefused::MergingState(true));
                }
                if version != range.epoch.version {
                    return refuse(stale(version));
                }
                if conf_changing {
                    return refuse(MergeRefused::ConfChanging);
                }
                next.epoch.version += 1;
                next.merging = Some(Merging {
                    target,
                    index: entry.index,
                });
            }
            MergeStep::Commit {
                source,
                prepare_index,
                version,
            } => {
                if range
                    .aborted
                    .iter()
                    .any(|&(s, v)| s == source.id && v >= source.epoch.version)
                {
                    return refuse(MergeRefused::Aborted);
                }
                if range.merging.is_some() {
                    return refuse(MergeRefused::MergingState(true));
                }
                if version != range.epoch.version {
                    return refuse(stale(version));
                }
                let adjacent = range.span.cf == source.span.cf
                    && range.span.end.as_deref() == Some(source.span.start.as_slice());
                if !adjacent {
                    return refuse(MergeRefused::NotAdjacent);
                }
                if conf_changing {
                    return refuse(MergeRefused::ConfChanging);
                }
                let mut ours = cs.voters.clone();
                let mut theirs = source.voters.clone();
                ours.sort_unstable();
                theirs.sort_unstable();
                if ours != theirs || !source.learners.is_empty() {
                    return refuse(MergeRefused::VotersDiffer);
                }
                let source_applied = crate::storage::applied_on_disk(engine, source.id)
                    .map_err(|e| ApplyError(format!("reading group {}: {e}", source.id)))?;
                if source_applied < prepare_index {
                    if self.blocked.is_empty() {
                        tracing::info!(
                            group = self.group,
                            source = source.id,
                            source_applied,
                            prepare_index,
                            "merge waits for this node's source replica to apply its prepare entry"
                        );
                    }
                    return Ok(None);
                }
                if let Some(sm) = self.sm.as_mut() {
                    sm.on_merge(engine, batch, &source.span)?;
                }
                next.span.end = source.span.end.clone();
                next.epoch.version = range.epoch.version.max(source.epoch.version) + 1;
                crate::storage::stage_tombstone(source.id, MERGED_AWAY, batch);
                effect = Some(Effect::Merged { source: source.id });
                tracing::info!(
                    group = self.group,
                    source = source.id,
                    version = next.epoch.version,
                    "merge applied"
                );
            }
            MergeStep::Abort {
                source,
                source_version,
            } => {
                next.aborted.retain(|&(s, _)| s != source);
                let floor = range
                    .aborted
                    .iter()
                    .find(|&&(s, _)| s == source)
                    .map_or(source_version, |&(_, v)| v.max(source_version));
                next.aborted.push((source, floor));
            }
            MergeStep::Rollback { version } => {
                if range.merging.is_none() {
                    return refuse(MergeRefused::MergingState(false));
                }
                if version != range.epoch.version {
                    return refuse(stale(version));
                }
                next.merging = None;
                next.epoch.version += 1;
                tracing::info!(group = self.group, "merge rolled back");
            }
        }
        self.raw.mut_store().set_range_state(next, batch);
        let desc = self.desc().ok_or_else(uninitialized)?;
        Ok(Some((Ok((desc, entry.index)), effect)))
    }

    /// Fails every waiting proposal and read with `err` (the replica is going away).
    pub(crate) fn fail_waiting(&mut self, err: &ProposeError) {
        for p in self.proposals.drain(..) {
            let _ = p.reply.send(Err(err.clone()));
        }
        let requested = self
            .reads_requested
            .drain()
            .flat_map(|(_, replies)| replies);
        let ready = self.reads_ready.drain(..).map(|(_, r)| r);
        for reply in self.reads_queued.drain(..).chain(requested).chain(ready) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn answer_proposal(&mut self, index: u64, term: u64, response: Result<Vec<u8>, ProposeError>) {
        while let Some(p) = self.proposals.front() {
            if p.index > index {
                break;
            }
            let Some(p) = self.proposals.pop_front() else {
                break;
            };
            if p.index == index && p.term == term {
                let _ = p.reply.send(response.clone());
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

    /// Filters an inbound message for a recovering or fenced replica; returns false to drop it.
    ///
    /// A replica fenced for a snapshot (its log emptied, see `crate::snapshot`) still refuses to vote
    /// for a candidate whose log is behind the log it had: it may have acknowledged those entries.
    pub(crate) fn admit(&mut self, msg: &Message) -> bool {
        let is_vote = matches!(
            msg.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        if is_vote
            && let Some(marker) = self.raw.store().receiving()
            && !marker.admits_candidate(msg.index, msg.log_term)
        {
            return false;
        }
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
    /// Tells the state machine its keyspace was replaced by a snapshot (creating it, if this replica was
    /// uninitialized until now), and the host the new descriptor.
    pub(crate) fn restored(&mut self) -> Result<(), ApplyError> {
        let engine = self.raw.store().engine().clone();
        let Some(desc) = self.desc() else {
            return Err(uninitialized());
        };
        match self.sm.as_mut() {
            Some(sm) => sm.on_desc_changed(&desc),
            None => self.sm = Some(self.host.state_machine(&desc)),
        }
        self.host.on_desc_changed(&desc);
        if let Some(sm) = self.sm.as_mut() {
            sm.on_snapshot_restored(engine.as_ref())?;
        }
        Ok(())
    }
}

fn encode_desc_bytes(desc: &GroupDesc) -> Vec<u8> {
    let mut out = Vec::new();
    desc::encode_desc(desc, &mut out);
    out
}

/// The descriptor a conf change entry's proposer receives.
pub(crate) fn decode_desc_bytes(bytes: &[u8]) -> Option<GroupDesc> {
    desc::decode_desc(&mut desc::Reader(bytes))
}

fn uninitialized() -> ApplyError {
    ApplyError("an uninitialized replica was asked to apply an entry".into())
}

/// The descriptor of `group` from its storage; `None` while uninitialized.
fn descriptor(group: u64, store: &PeerStorage) -> Option<GroupDesc> {
    let range = store.range()?;
    let cs = store.conf_state();
    Some(GroupDesc {
        id: group,
        voters: cs.voters.clone(),
        learners: cs.learners.clone(),
        voters_outgoing: cs.voters_outgoing.clone(),
        span: range.span.clone(),
        epoch: range.epoch,
    })
}
