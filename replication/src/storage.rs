//! `PeerStorage`: one replica's Raft log, hard state and apply state, persisted in `Cf::Raft`, served to
//! raft-rs through its [`raft::Storage`] trait.
//!
//! Invariants:
//! - Every mutation is *staged* into a caller-provided [`WriteBatch`] and mirrored in memory at once; the
//!   driver writes the batch (synced) before it tells raft-rs the entries are persisted, so raft-rs never
//!   acts on state that is not yet durable.
//! - `first_index = truncated_index + 1`; entries `[first_index, last_index]` are in the engine (recent
//!   ones also in `cache`); `term(truncated_index)` is kept for log matching after compaction.
//! - The apply state (applied index and term) is written in the same batch as the data the applied
//!   entries produce, so after a crash a replica resumes applying exactly where its data stops.
//! - A snapshot is the group's [`Span`] read at the applied index plus the apply state and the group's
//!   range state (span and epoch). It is streamed (see [`crate::snapshot`]): [`raft::Storage::snapshot`]
//!   returns only the metadata and a header, having registered a point-in-time engine view with the
//!   node's outgoing snapshots; the receiver writes the records into its span as they arrive, under a
//!   marker, and [`PeerStorage::apply_snapshot`] then replaces the range state, the whole log and the
//!   apply state and deletes the marker in one batch. Snapshots of the older formats (records inline)
//!   are still restored in one batch.
//! - An *uninitialized* replica (created when a leader first contacts a node that has no replica of
//!   the group, or fenced while a snapshot is written into its span) has no range state, an empty log
//!   and an empty configuration: it applies nothing and cannot campaign until a snapshot initializes
//!   it. Its hard state (a vote it granted) is persisted like any other. A replica whose snapshot
//!   marker is set opens uninitialized whatever else the engine holds for it.

use std::collections::VecDeque;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use trestle_engine::{Cf, Engine, WriteBatch, keys};

use crate::desc::{RangeState, Reader, SPLIT_INIT_INDEX, SPLIT_INIT_TERM};
use crate::snapshot::recv::Marker;
use crate::snapshot::send::Outgoing;
use crate::snapshot::{Header, STREAMED_FORMAT};
use crate::{Epoch, GroupDesc, Span};

/// Entries kept in memory after they are persisted, so the leader can feed followers without reads: at
/// most this many, and at most `CACHE_BYTES` of entry data. The byte bound is what matters under batch
/// load (a 100-entity batch is a ~110 KB entry: 4,096 of them were ~450 MiB per group per node).
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 4 << 20;

/// The recent entries of a log: contiguous, oldest first, bounded by count and bytes.
#[derive(Default)]
struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl EntryCache {
    fn size(e: &Entry) -> usize {
        e.data.len() + e.context.len() + 32
    }

    fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    fn back(&self) -> Option<&Entry> {
        self.entries.back()
    }

    fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= Self::size(&e);
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.bytes -= Self::size(&e);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Appends `entries` (which must follow the last cached one), then drops the oldest past the bounds.
    fn extend(&mut self, entries: &[Entry]) {
        for e in entries {
            self.bytes += Self::size(e);
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > CACHE_ENTRIES
            || (self.bytes > CACHE_BYTES && self.entries.len() > 1)
        {
            self.pop_front();
        }
    }
}
/// Snapshot data of the inline formats: `[1] kvs` (the span is the receiver's own) or
/// `[2] range state, kvs`. Streamed snapshots carry a [`Header`] (format 3) instead.
const SNAPSHOT_FORMAT_V1: u8 = 1;
const SNAPSHOT_FORMAT_V2: u8 = 2;

/// Raft-local state: what the log looks like (persisted at `keys::raft_local_key`).
#[derive(Debug, Clone, Default, PartialEq)]
struct LocalState {
    last_index: u64,
    truncated_index: u64,
    truncated_term: u64,
    conf_state: ConfState,
}

impl LocalState {
    fn encode(&self) -> Result<Vec<u8>, raft::Error> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.last_index.to_le_bytes());
        out.extend_from_slice(&self.truncated_index.to_le_bytes());
        out.extend_from_slice(&self.truncated_term.to_le_bytes());
        out.extend_from_slice(&self.conf_state.write_to_bytes()?);
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<LocalState, raft::Error> {
        let u64_at = |i: usize| -> Result<u64, raft::Error> {
            bytes
                .get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| corrupt("raft-local state too short"))
        };
        Ok(LocalState {
            last_index: u64_at(0)?,
            truncated_index: u64_at(8)?,
            truncated_term: u64_at(16)?,
            conf_state: ConfState::parse_from_bytes(&bytes[24..])?,
        })
    }
}

fn corrupt(what: &str) -> raft::Error {
    raft::Error::Store(StorageError::Other(what.to_string().into()))
}

fn engine_err(e: trestle_engine::Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

fn encode_u64_pair(a: u64, b: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
    out
}

fn decode_u64_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    let a = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let b = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((a, b))
}

/// Stages the end of this node's replica of `group`: its raft state (log, hard, apply and range state)
/// is deleted and a tombstone holding `removed_at` stays. Its data keys are the caller's business.
pub(crate) fn stage_tombstone(group: u64, removed_at: u64, batch: &mut WriteBatch) {
    batch.delete_range(
        Cf::Raft,
        keys::group_start(group),
        keys::group_start(group + 1),
    );
    batch.put(
        Cf::Raft,
        keys::tombstone_key(group),
        removed_at.to_be_bytes().to_vec(),
    );
}

/// The index this node's replica of `group` has applied, as its persisted apply state says (0: none).
pub(crate) fn applied_on_disk(
    engine: &dyn Engine,
    group: u64,
) -> Result<u64, trestle_engine::Error> {
    Ok(engine
        .get(Cf::Raft, &keys::apply_state_key(group))?
        .and_then(|b| decode_u64_pair(&b))
        .map_or(0, |(index, _)| index))
}

pub(crate) struct PeerStorage {
    group: u64,
    engine: Arc<dyn Engine>,
    /// `None` while uninitialized (see the module docs).
    range: Option<RangeState>,
    hard_state: HardState,
    local: LocalState,
    last_term: u64,
    applied_index: u64,
    applied_term: u64,
    /// Contiguous persisted-or-staged entries ending at `last_index`.
    cache: EntryCache,
    /// Where snapshots this replica sends are registered.
    outgoing: Arc<Outgoing>,
    /// Set while a streamed snapshot is being written into this replica's span (it is uninitialized).
    receiving: Option<Marker>,
}

impl PeerStorage {
    /// Loads a replica's state, or bootstraps it (empty log, `desc.voters` as the configuration) when
    /// the engine has none. Without `desc`, a replica the engine has nothing for is opened
    /// uninitialized. Returns the storage and whether it was newly created.
    pub(crate) fn open(
        group: u64,
        engine: Arc<dyn Engine>,
        desc: Option<&GroupDesc>,
        outgoing: Arc<Outgoing>,
    ) -> Result<(PeerStorage, bool), raft::Error> {
        if let Some(b) = engine
            .get(Cf::Raft, &keys::snapshot_marker_key(group))
            .map_err(engine_err)?
        {
            let marker = Marker::decode(&b).ok_or_else(|| corrupt("bad snapshot marker"))?;
            return PeerStorage::open_fenced(group, engine, marker, outgoing).map(|s| (s, false));
        }
        let local_bytes = engine
            .get(Cf::Raft, &keys::raft_local_key(group))
            .map_err(engine_err)?;
        let range_bytes = engine
            .get(Cf::Raft, &keys::range_state_key(group))
            .map_err(engine_err)?;
        let mut range = match range_bytes {
            Some(b) => Some(RangeState::decode(&b).ok_or_else(|| corrupt("bad range state"))?),
            None => None,
        };
        let created = local_bytes.is_none() && desc.is_some();
        let local = match (local_bytes, desc) {
            (Some(b), _) => LocalState::decode(&b)?,
            (None, Some(d)) => LocalState {
                conf_state: ConfState {
                    voters: d.voters.clone(),
                    learners: d.learners.clone(),
                    voters_outgoing: Vec::new(),
                    ..Default::default()
                },
                ..Default::default()
            },
            (None, None) => LocalState::default(),
        };
        // Stores written before range states existed have a raft-local state and no range state: the
        // configured descriptor is the range state, at the initial epoch.
        let write_range = range.is_none() && desc.is_some();
        if write_range && let Some(d) = desc {
            range = Some(RangeState::new(d.span.clone(), d.epoch));
        }
        let hard_state = match engine
            .get(Cf::Raft, &keys::hard_state_key(group))
            .map_err(engine_err)?
        {
            Some(b) => HardState::parse_from_bytes(&b)?,
            None => HardState::default(),
        };
        let (applied_index, applied_term) = match engine
            .get(Cf::Raft, &keys::apply_state_key(group))
            .map_err(engine_err)?
        {
            Some(b) => decode_u64_pair(&b).ok_or_else(|| corrupt("apply state too short"))?,
            None => (local.truncated_index, local.truncated_term),
        };
        let mut storage = PeerStorage {
            group,
            engine,
            range,
            hard_state,
            local,
            last_term: 0,
            applied_index,
            applied_term,
            cache: EntryCache::default(),
            outgoing,
            receiving: None,
        };
        storage.last_term = if storage.local.last_index == storage.local.truncated_index {
            storage.local.truncated_term
        } else {
            storage.read_entry(storage.local.last_index)?.term
        };
        if created || write_range {
            let mut batch = WriteBatch::new();
            if created {
                storage.stage_local(&mut batch)?;
            }
            storage.stage_range(&mut batch);
            storage.engine.write(&batch, true).map_err(engine_err)?;
        }
        Ok((storage, created))
    }

    /// A replica whose span a snapshot is being written into: uninitialized, with only its hard state
    /// (commit 0: its log is empty).
    fn open_fenced(
        group: u64,
        engine: Arc<dyn Engine>,
        marker: Marker,
        outgoing: Arc<Outgoing>,
    ) -> Result<PeerStorage, raft::Error> {
        let mut hard_state = match engine
            .get(Cf::Raft, &keys::hard_state_key(group))
            .map_err(engine_err)?
        {
            Some(b) => HardState::parse_from_bytes(&b)?,
            None => HardState::default(),
        };
        hard_state.commit = 0;
        Ok(PeerStorage {
            group,
            engine,
            range: None,
            hard_state,
            local: LocalState::default(),
            last_term: 0,
            applied_index: 0,
            applied_term: 0,
            cache: EntryCache::default(),
            outgoing,
            receiving: Some(marker),
        })
    }

    /// Stages fencing replica `group` for a streamed snapshot (see [`crate::snapshot`]): the marker, its
    /// hard state with commit 0, the deletion of its log, raft-local, apply and range states, and the
    /// deletion of `span`, where the snapshot's records will go. The caller writes it synced, then
    /// reopens the replica (which comes back uninitialized).
    pub(crate) fn stage_fence(
        group: u64,
        marker: &Marker,
        hard_state: &HardState,
        span: &Span,
        batch: &mut WriteBatch,
    ) -> Result<(), raft::Error> {
        batch.put(Cf::Raft, keys::snapshot_marker_key(group), marker.encode());
        let mut hs = hard_state.clone();
        hs.commit = 0;
        batch.put(Cf::Raft, keys::hard_state_key(group), hs.write_to_bytes()?);
        batch.delete_range(
            Cf::Raft,
            keys::log_prefix(group),
            keys::log_key(group, u64::MAX),
        );
        batch.delete(Cf::Raft, keys::raft_local_key(group));
        batch.delete(Cf::Raft, keys::apply_state_key(group));
        batch.delete(Cf::Raft, keys::range_state_key(group));
        delete_span(span, batch);
        Ok(())
    }

    /// The snapshot being written into this replica's span, if any.
    pub(crate) fn receiving(&self) -> Option<&Marker> {
        self.receiving.as_ref()
    }

    /// The hard state as last staged.
    pub(crate) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Stages the state of group `desc.id` as a split creates it on every replica: an empty log at
    /// [`SPLIT_INIT_INDEX`], applied to it, `desc`'s voters and range state. A vote the group's
    /// uninitialized replica on this node already granted (`existing`) is kept, so the replica cannot
    /// vote twice in one term.
    pub(crate) fn stage_split_init(
        desc: &GroupDesc,
        existing: Option<&HardState>,
        batch: &mut WriteBatch,
    ) -> Result<(), raft::Error> {
        let group = desc.id;
        let local = LocalState {
            last_index: SPLIT_INIT_INDEX,
            truncated_index: SPLIT_INIT_INDEX,
            truncated_term: SPLIT_INIT_TERM,
            conf_state: ConfState {
                voters: desc.voters.clone(),
                ..Default::default()
            },
        };
        batch.put(Cf::Raft, keys::raft_local_key(group), local.encode()?);
        let mut hs = existing.cloned().unwrap_or_default();
        if hs.term < SPLIT_INIT_TERM {
            hs.term = SPLIT_INIT_TERM;
            hs.vote = 0;
        }
        hs.commit = hs.commit.max(SPLIT_INIT_INDEX);
        batch.put(Cf::Raft, keys::hard_state_key(group), hs.write_to_bytes()?);
        batch.put(
            Cf::Raft,
            keys::apply_state_key(group),
            encode_u64_pair(SPLIT_INIT_INDEX, SPLIT_INIT_TERM),
        );
        let range = RangeState::new(desc.span.clone(), desc.epoch);
        batch.put(Cf::Raft, keys::range_state_key(group), range.encode());
        // A replica fenced by a snapshot that never completed: its span is now the parent's (a parent
        // initialized over that span deleted it first, see `crate::snapshot`).
        batch.delete(Cf::Raft, keys::snapshot_marker_key(group));
        Ok(())
    }

    /// Whether this replica holds a range state (it was bootstrapped, split off, or restored).
    pub(crate) fn is_initialized(&self) -> bool {
        self.range.is_some()
    }

    /// The replica's span and epoch; `None` while uninitialized.
    pub(crate) fn range(&self) -> Option<&RangeState> {
        self.range.as_ref()
    }

    /// Stages a new span and epoch (a split or merge applied), written with the entry's apply state;
    /// the group's merge state stays.
    pub(crate) fn set_range(&mut self, span: Span, epoch: Epoch, batch: &mut WriteBatch) {
        let mut state = RangeState::new(span, epoch);
        if let Some(old) = self.range.take() {
            state.merging = old.merging;
            state.aborted = old.aborted;
        }
        self.range = Some(state);
        self.stage_range(batch);
    }

    /// Stages a whole new range state (a merge step applied), written with the entry's apply state.
    pub(crate) fn set_range_state(&mut self, state: RangeState, batch: &mut WriteBatch) {
        self.range = Some(state);
        self.stage_range(batch);
    }

    fn stage_range(&self, batch: &mut WriteBatch) {
        if let Some(range) = &self.range {
            batch.put(Cf::Raft, keys::range_state_key(self.group), range.encode());
        }
    }

    pub(crate) fn applied(&self) -> (u64, u64) {
        (self.applied_index, self.applied_term)
    }

    pub(crate) fn conf_state(&self) -> &ConfState {
        &self.local.conf_state
    }

    pub(crate) fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub(crate) fn first_index_value(&self) -> u64 {
        self.local.truncated_index + 1
    }

    pub(crate) fn last_index_value(&self) -> u64 {
        self.local.last_index
    }

    fn stage_local(&self, batch: &mut WriteBatch) -> Result<(), raft::Error> {
        batch.put(
            Cf::Raft,
            keys::raft_local_key(self.group),
            self.local.encode()?,
        );
        Ok(())
    }

    /// Stages `entries` (from a Ready) for appending, truncating any conflicting tail of the log.
    pub(crate) fn append(
        &mut self,
        entries: &[Entry],
        batch: &mut WriteBatch,
    ) -> Result<(), raft::Error> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        for e in entries {
            batch.put(
                Cf::Raft,
                keys::log_key(self.group, e.index),
                e.write_to_bytes()?,
            );
        }
        if last.index < self.local.last_index {
            batch.delete_range(
                Cf::Raft,
                keys::log_key(self.group, last.index + 1),
                keys::log_key(self.group, self.local.last_index + 1),
            );
        }
        while self.cache.back().is_some_and(|e| e.index >= first.index) {
            self.cache.pop_back();
        }
        if self
            .cache
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.cache.clear();
        }
        self.cache.extend(entries);
        self.local.last_index = last.index;
        self.last_term = last.term;
        self.stage_local(batch)
    }

    pub(crate) fn set_hard_state(
        &mut self,
        hs: &HardState,
        batch: &mut WriteBatch,
    ) -> Result<(), raft::Error> {
        self.hard_state = hs.clone();
        batch.put(
            Cf::Raft,
            keys::hard_state_key(self.group),
            hs.write_to_bytes()?,
        );
        Ok(())
    }

    /// Raises the persisted commit index (never lowers it), so that on restart `applied <= committed`.
    pub(crate) fn set_commit(
        &mut self,
        commit: u64,
        batch: &mut WriteBatch,
    ) -> Result<(), raft::Error> {
        if commit > self.hard_state.commit {
            let mut hs = self.hard_state.clone();
            hs.commit = commit;
            self.set_hard_state(&hs, batch)?;
        }
        Ok(())
    }

    /// Stages the apply state after applying entry `index` of `term`; the caller writes it in the same
    /// batch as the entry's data, then calls [`PeerStorage::applied_to`].
    pub(crate) fn stage_apply_state(&self, index: u64, term: u64, batch: &mut WriteBatch) {
        batch.put(
            Cf::Raft,
            keys::apply_state_key(self.group),
            encode_u64_pair(index, term),
        );
    }

    pub(crate) fn applied_to(&mut self, index: u64, term: u64) {
        self.applied_index = index;
        self.applied_term = term;
    }

    pub(crate) fn set_conf_state(
        &mut self,
        cs: ConfState,
        batch: &mut WriteBatch,
    ) -> Result<(), raft::Error> {
        self.local.conf_state = cs;
        self.stage_local(batch)
    }

    /// Stages discarding log entries up to and including `index` (which must be applied).
    pub(crate) fn compact_to(
        &mut self,
        index: u64,
        batch: &mut WriteBatch,
    ) -> Result<(), raft::Error> {
        if index <= self.local.truncated_index || index > self.applied_index {
            return Ok(());
        }
        let term = self.entry_term(index)?;
        batch.delete_range(
            Cf::Raft,
            keys::log_key(self.group, self.local.truncated_index + 1),
            keys::log_key(self.group, index + 1),
        );
        self.local.truncated_index = index;
        self.local.truncated_term = term;
        while self.cache.front().is_some_and(|e| e.index <= index) {
            self.cache.pop_front();
        }
        self.stage_local(batch)
    }

    /// Stages restoring `snap` (sent by the leader): the range state becomes the snapshot's, the log is
    /// emptied, the apply state jumps to the snapshot index, and the snapshot marker is deleted. A
    /// streamed snapshot's records are already in the span (written under the marker, which must name
    /// this snapshot); an inline one's replace the span's keys here.
    pub(crate) fn apply_snapshot(
        &mut self,
        snap: &Snapshot,
        batch: &mut WriteBatch,
    ) -> Result<(), raft::Error> {
        let meta = snap.get_metadata();
        let range = match Header::decode(snap.get_data()) {
            Some(header) => {
                let received = self
                    .receiving
                    .is_some_and(|m| (m.id, m.index, m.term) == (header.id, meta.index, meta.term));
                if !received {
                    // The driver steps a streamed snapshot only after its stream completed.
                    return Err(corrupt(
                        "a streamed snapshot whose records were not received",
                    ));
                }
                header.range
            }
            None => {
                let (range, pairs) = decode_inline_snapshot(snap.get_data(), self.range.as_ref())?;
                delete_span(&range.span, batch);
                for (key, value) in pairs {
                    batch.put(range.span.cf, key, value);
                }
                range
            }
        };
        batch.delete(Cf::Raft, keys::snapshot_marker_key(self.group));
        self.receiving = None;
        batch.delete_range(
            Cf::Raft,
            keys::log_prefix(self.group),
            keys::log_key(self.group, u64::MAX),
        );
        self.range = Some(range);
        self.stage_range(batch);
        self.cache.clear();
        self.local.last_index = meta.index;
        self.local.truncated_index = meta.index;
        self.local.truncated_term = meta.term;
        self.local.conf_state = meta.get_conf_state().clone();
        self.last_term = meta.term;
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        self.set_hard_state(&hs, batch)?;
        self.stage_apply_state(meta.index, meta.term, batch);
        self.applied_to(meta.index, meta.term);
        self.stage_local(batch)
    }

    fn read_entry(&self, index: u64) -> Result<Entry, raft::Error> {
        if let Some(front) = self.cache.front()
            && index >= front.index
            && let Some(e) = self.cache.get((index - front.index) as usize)
        {
            return Ok(e.clone());
        }
        match self
            .engine
            .get(Cf::Raft, &keys::log_key(self.group, index))
            .map_err(engine_err)?
        {
            Some(b) => Ok(Entry::parse_from_bytes(&b)?),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn entry_term(&self, index: u64) -> Result<u64, raft::Error> {
        if index == self.local.truncated_index {
            return Ok(self.local.truncated_term);
        }
        if index == self.local.last_index {
            return Ok(self.last_term);
        }
        Ok(self.read_entry(index)?.term)
    }

    /// The snapshot raft-rs sends: the metadata at the applied index and a [`Header`] naming the view
    /// registered with the node's outgoing snapshots, which streams the records (see
    /// [`crate::snapshot`]). Temporarily unavailable while uninitialized or when the node is already
    /// sending its maximum of snapshots: raft-rs asks again later.
    fn streamed_snapshot(&self, to: u64) -> Result<Snapshot, raft::Error> {
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        let range = self.range.as_ref().ok_or_else(unavailable)?;
        let id = self
            .outgoing
            .prepare(self.group, to, self.engine.clone(), range.span.clone())
            .ok_or_else(unavailable)?;
        let header = Header {
            range: range.clone(),
            id,
        };
        let mut snap = Snapshot::default();
        snap.set_data(header.encode().into());
        let meta = snap.mut_metadata();
        meta.index = self.applied_index;
        meta.term = self.applied_term;
        meta.set_conf_state(self.local.conf_state.clone());
        Ok(snap)
    }
}

/// Stages deleting every key of `span`.
fn delete_span(span: &Span, batch: &mut WriteBatch) {
    match &span.end {
        Some(end) => batch.delete_range(span.cf, span.start.clone(), end.clone()),
        // No Trestle key starts with 0xFF (data keys start with a table id whose escaped UTF-8 keys
        // never contain 0xFF; meta keys start with 0x01), so 32 0xFF bytes bound every key.
        None => batch.delete_range(span.cf, span.start.clone(), vec![0xFF; 32]),
    }
}

/// The range state a snapshot carries (`None` for format 1, which carries none, or bad data).
pub(crate) fn snapshot_range(data: &[u8]) -> Option<RangeState> {
    let (&format, rest) = data.split_first()?;
    match format {
        SNAPSHOT_FORMAT_V2 => RangeState::decode(Reader(rest).bytes()?),
        STREAMED_FORMAT => Header::decode(data).map(|h| h.range),
        _ => None,
    }
}

/// Decodes an inline snapshot's range state and key-value records. A snapshot in format 1 carries no
/// range state: it covers the receiver's own span (`own`).
fn decode_inline_snapshot(
    data: &[u8],
    own: Option<&RangeState>,
) -> Result<(RangeState, Vec<trestle_engine::KvPair>), raft::Error> {
    let Some((&format, mut rest)) = data.split_first() else {
        return Err(corrupt("empty snapshot data"));
    };
    let range = match format {
        SNAPSHOT_FORMAT_V1 => own
            .cloned()
            .ok_or_else(|| corrupt("an old-format snapshot for an uninitialized replica"))?,
        SNAPSHOT_FORMAT_V2 => {
            let mut r = Reader(rest);
            let state = r
                .bytes()
                .and_then(RangeState::decode)
                .ok_or_else(|| corrupt("bad range state in snapshot"))?;
            rest = r.0;
            state
        }
        _ => return Err(corrupt("unknown snapshot format")),
    };
    let mut out = Vec::new();
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, raft::Error> {
        let len = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| corrupt("truncated snapshot"))? as usize;
        let bytes = rest
            .get(4..4 + len)
            .ok_or_else(|| corrupt("truncated snapshot"))?
            .to_vec();
        *rest = &rest[4 + len..];
        Ok(bytes)
    };
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        if !range.span.contains(range.span.cf, &k) {
            return Err(corrupt("snapshot key outside its span"));
        }
        out.push((k, v));
    }
    Ok((range, out))
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.local.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.local.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.local.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for index in low..high {
            let e = self.read_entry(index)?;
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.local.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.local.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.entry_term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.local.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.local.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if self.applied_index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        self.streamed_snapshot(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;
    use trestle_engine::MemoryEngine;

    fn span() -> Span {
        Span {
            cf: Cf::Data,
            start: vec![],
            end: None,
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8].into(),
            ..Default::default()
        }
    }

    /// A node's outgoing snapshots whose outcomes nobody reads (these tests never emit the message).
    fn outgoing() -> Arc<Outgoing> {
        let (tx, _rx) = std::sync::mpsc::channel();
        let config = crate::snapshot::send::SendConfig {
            chunk_bytes: 1024,
            max_sending: 1,
            timeout: std::time::Duration::from_secs(5),
        };
        let net = Arc::new(crate::memory::MemoryNetwork::new());
        Outgoing::new(1, config, net.transport(1), tx)
    }

    fn open(engine: &Arc<dyn Engine>) -> PeerStorage {
        open_with(engine, outgoing())
    }

    fn open_with(engine: &Arc<dyn Engine>, outgoing: Arc<Outgoing>) -> PeerStorage {
        let desc = GroupDesc {
            id: 7,
            voters: vec![1, 2, 3],
            learners: vec![],
            voters_outgoing: Vec::new(),
            span: span(),
            epoch: Epoch::INITIAL,
        };
        PeerStorage::open(7, engine.clone(), Some(&desc), outgoing)
            .unwrap()
            .0
    }

    #[test]
    fn bootstraps_with_voters_then_reloads_appended_entries() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let mut s = open(&engine);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        let mut batch = WriteBatch::new();
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 2)], &mut batch)
            .unwrap();
        s.set_hard_state(
            &HardState {
                term: 2,
                vote: 1,
                commit: 2,
                ..Default::default()
            },
            &mut batch,
        )
        .unwrap();
        engine.write(&batch, true).unwrap();

        let s2 = open(&engine);
        assert_eq!(s2.last_index().unwrap(), 3);
        assert_eq!(s2.term(3).unwrap(), 2);
        assert_eq!(
            s2.entries(1, 4, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            3
        );
        assert_eq!(s2.initial_state().unwrap().hard_state.commit, 2);
    }

    #[test]
    fn the_entry_cache_is_bounded_by_bytes_and_older_entries_come_from_the_engine() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let mut s = open(&engine);
        let big = |index: u64| Entry {
            index,
            term: 1,
            data: vec![index as u8; 100_000].into(),
            ..Default::default()
        };
        let mut batch = WriteBatch::new();
        let entries: Vec<Entry> = (1..=200).map(big).collect();
        s.append(&entries, &mut batch).unwrap();
        engine.write(&batch, true).unwrap();
        assert!(
            s.cache.bytes <= CACHE_BYTES,
            "{} bytes cached",
            s.cache.bytes
        );
        assert!(s.cache.front().unwrap().index > 1);
        assert_eq!(s.cache.back().unwrap().index, 200);
        let all = s
            .entries(1, 201, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(all.len(), 200);
        assert!(all.iter().all(|e| e.data[0] == e.index as u8));

        // An entry larger than the whole budget is still cached (it is the one followers need next).
        let mut batch = WriteBatch::new();
        let huge = Entry {
            data: vec![7; CACHE_BYTES + 1].into(),
            ..big(201)
        };
        s.append(&[huge], &mut batch).unwrap();
        assert_eq!(s.cache.front().unwrap().index, 201);
        assert_eq!(s.cache.entries.len(), 1);
    }

    #[test]
    fn conflicting_append_truncates_the_tail() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let mut s = open(&engine);
        let mut batch = WriteBatch::new();
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)], &mut batch)
            .unwrap();
        s.append(&[entry(2, 2)], &mut batch).unwrap();
        engine.write(&batch, true).unwrap();
        let s2 = open(&engine);
        assert_eq!(s2.last_index().unwrap(), 2);
        assert_eq!(s2.term(2).unwrap(), 2);
        assert!(
            s2.entries(3, 4, None, GetEntriesContext::empty(false))
                .is_err()
        );
    }

    #[test]
    fn compaction_keeps_the_truncated_term_and_a_streamed_snapshot_restores_the_span() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sending = outgoing();
        let mut s = open_with(&engine, sending.clone());
        let mut batch = WriteBatch::new();
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 2)], &mut batch)
            .unwrap();
        batch.put(Cf::Data, b"k1".to_vec(), b"v1".to_vec());
        s.stage_apply_state(3, 2, &mut batch);
        s.applied_to(3, 2);
        s.compact_to(2, &mut batch).unwrap();
        engine.write(&batch, true).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert!(matches!(
            s.entries(2, 3, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));

        // The snapshot carries metadata and a header, not the records; its view is registered, and
        // while the node sends its maximum (one here) raft-rs must wait.
        let snap = s.snapshot(3, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 3);
        let header = Header::decode(snap.get_data()).expect("a streamed header");
        assert_eq!(header.range.span, span());
        assert_eq!(sending.in_flight(), 1);
        assert!(matches!(
            s.snapshot(3, 3),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        sending.shutdown();
        assert_eq!(sending.in_flight(), 0);

        // The receiver: fenced (stale key deleted, reopened uninitialized), records written, then the
        // snapshot applied without touching the data again.
        let other: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let mut t = open(&other);
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, b"stale".to_vec(), b"x".to_vec());
        let voted = HardState {
            term: 2,
            vote: 1,
            commit: 0,
            ..Default::default()
        };
        t.set_hard_state(&voted, &mut batch).unwrap();
        other.write(&batch, true).unwrap();
        let marker = Marker {
            from: 1,
            id: header.id,
            index: 3,
            term: 2,
            floor_index: 0,
            floor_term: 0,
        };
        let mut batch = WriteBatch::new();
        PeerStorage::stage_fence(7, &marker, t.hard_state(), &span(), &mut batch).unwrap();
        other.write(&batch, true).unwrap();
        assert_eq!(other.get(Cf::Data, b"stale").unwrap(), None);
        t = open(&other);
        assert!(!t.is_initialized());
        assert_eq!(t.receiving(), Some(&marker));
        assert_eq!(t.last_index().unwrap(), 0);
        // Its vote survives the fence: it can never vote twice in term 2.
        assert_eq!(t.initial_state().unwrap().hard_state, voted);
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, b"k1".to_vec(), b"v1".to_vec());
        other.write(&batch, false).unwrap();
        let mut batch = WriteBatch::new();
        t.apply_snapshot(&snap, &mut batch).unwrap();
        other.write(&batch, true).unwrap();
        assert_eq!(other.get(Cf::Data, b"k1").unwrap(), Some(b"v1".to_vec()));
        let t2 = open(&other);
        assert!(t2.is_initialized());
        assert_eq!(t2.receiving(), None);
        assert_eq!(t2.applied(), (3, 2));
        assert_eq!(t2.first_index().unwrap(), 4);
        assert_eq!(t2.last_index().unwrap(), 3);
    }

    #[test]
    fn a_streamed_snapshot_is_refused_unless_its_records_were_received_under_its_marker() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let mut s = open(&engine);
        let mut snap = Snapshot::default();
        let header = Header {
            range: RangeState::new(span(), Epoch::INITIAL),
            id: 5,
        };
        snap.set_data(header.encode().into());
        snap.mut_metadata().index = 9;
        snap.mut_metadata().term = 2;
        let mut batch = WriteBatch::new();
        assert!(s.apply_snapshot(&snap, &mut batch).is_err());
    }
}
