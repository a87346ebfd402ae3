//! The table state machine: what a data range does with each committed `TableCommand`.
//!
//! A command is one entity write or an entity group transaction (up to 100 writes on one PartitionKey),
//! or the drop of a deleted table's entities. It is applied all or nothing: the writes are collected in
//! a private batch and handed to the driver only if every operation succeeded, so a failing 5th
//! operation leaves no trace of the first four.
//!
//! Apply is deterministic — it depends only on the stored entities and the command bytes:
//! - the timestamp (and so the ETag) comes from the command, chosen by the leader when it proposed;
//!   apply only raises it to one tick past the stored entity's timestamp when the leader's clock is
//!   behind (a new leader with a slow clock), so an entity's ETag changes on every write;
//! - conditions (exists, If-Match) are checked against what is stored, in operation order;
//! - failures that follow from the command and the data (EntityAlreadyExists, a failed If-Match, a
//!   batch that breaks the rules, an entity over the limits after a merge) are *results*, identical on
//!   every replica.
//!
//! Corruption is different. A stored entity that fails its crc is, almost always, damage on this
//! replica's disk alone. Answering `DataCorrupted` as a result would let this replica's outcome differ
//! from its peers' for the same command: the peers apply the write, this one does not, and if this
//! replica leads, the client is told the write failed although a majority applied it. So a corrupt
//! entity met during apply is an [`ApplyError`]: the driver stops the node (fail-stop), the other
//! replicas carry on, and the replica is rebuilt from a snapshot. The price is that corruption present
//! on *every* replica (a bug in our own encoding) stops the range until repaired by hand; reads still
//! report such entities as `DataCorrupted` to clients (see `query`), never as data.
//!
//! A command whose keys are outside this range's span is a `RangeStale` result: the range split after
//! the proposer routed the command, nothing was applied, and the router retries on the range that now
//! holds the keys. A command that does not decode is an `InternalError` result, never a panic.
//!
//! Per-table records (the dropped marker and the fences) live at the range's *anchor* for the table
//! (`keys::table_anchor`): the table prefix in the range holding the table's start, the range's first
//! key in a range that starts inside the table. A split copies the parent's records of the table it
//! cuts to the right half's anchor ([`StateMachine::on_split`]), so neither half forgets a drop or a
//! token: fencing is per table within each range, and every range of a table refuses any token lower
//! than one it or the range it split from saw. A merge folds the source's records into the target's
//! anchor ([`StateMachine::on_merge`]): the drop stays, and each lock keeps the higher fence.
//!
//! A dropped table leaves a marker (see [`keys::dropped_table_marker`]): a write to that table id that
//! was proposed before the table was deleted, and commits after the drop, fails with `TableNotFound`
//! instead of recreating entities nobody can see.

use prost::Message;
use trestle_engine::{Cf, Engine, WriteBatch, keys};
use trestle_proto::internal::{TableCommand, WriteResults, command_result::Kind};
use trestle_proto::table as pb;
use trestle_replication::{ApplyError, GroupDesc, Span, StateMachine, planted};
use trestle_types::{DateTime, Entity, Error, ErrorCode, IfMatch, WriteKind, WriteOp, limits};

use std::sync::Arc;

use crate::codec::{decode_entity, encode_entity};
use crate::commands::{encode_result, error_result, write_op_from_proto};
use crate::ranges::{RangeDesc, RangeStats, table_span};

/// The message of a batch with more than 100 operations, as Azure words it (the index is Azure's: the
/// 100th operation, 0-based).
pub fn too_many_operations() -> Error {
    Error::invalid_input(format!(
        "{}:The batch request operation exceeds the maximum {} changes per change set.",
        limits::MAX_BATCH_OPERATIONS - 1,
        limits::MAX_BATCH_OPERATIONS
    ))
}

/// Checks the entity group transaction rules on parsed operations: every operation on the first
/// operation's PartitionKey, each RowKey at most once. Returns the failing operation's index. The
/// count limit is checked separately (it is not any one operation's fault).
pub fn check_batch_rules(ops: &[WriteOp]) -> Result<(), (usize, Error)> {
    let Some(first) = ops.first() else {
        return Ok(());
    };
    let mut seen = std::collections::HashSet::new();
    for (i, op) in ops.iter().enumerate() {
        if op.entity.partition_key != first.entity.partition_key {
            return Err((
                i,
                Error::from_code(ErrorCode::CommandsInBatchActOnDifferentPartitions),
            ));
        }
        if !seen.insert(op.entity.row_key.as_str()) {
            return Err((i, Error::from_code(ErrorCode::InvalidDuplicateRow)));
        }
    }
    Ok(())
}

/// The state machine of one data range.
#[derive(Clone)]
pub struct TableStateMachine {
    range: RangeDesc,
    /// The range's size counters, and the engine to recount them from when the span changes.
    stats: Arc<RangeStats>,
    engine: Option<Arc<dyn Engine>>,
    /// A drop deleted keys without counting them: recount before the next command.
    recount: bool,
}

/// Why a command did not apply: a result for the proposer, or a fatal storage problem.
enum Failure {
    Result(Error, Option<usize>),
    Fatal(ApplyError),
}

impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Self {
        Failure::Fatal(e)
    }
}

fn fail<T>(error: Error, index: Option<usize>) -> Result<T, Failure> {
    Err(Failure::Result(error, index))
}

impl TableStateMachine {
    /// The state machine of `range` (it only ever touches keys inside the range's span), counting
    /// nothing (tests).
    pub fn new(range: &RangeDesc) -> Self {
        TableStateMachine {
            range: range.clone(),
            stats: Arc::default(),
            engine: None,
            recount: false,
        }
    }

    /// The state machine of `range` on a node, keeping `stats` current (counted from `engine` now).
    pub fn with_stats(range: &RangeDesc, stats: Arc<RangeStats>, engine: Arc<dyn Engine>) -> Self {
        let sm = TableStateMachine {
            range: range.clone(),
            stats,
            engine: Some(engine),
            recount: false,
        };
        sm.recount_bytes();
        sm
    }

    /// Counts the span's bytes afresh, off the driver thread: writes applied from now on add their
    /// deltas to the same counter, so the total is approximate only by the writes applied before the
    /// counting thread takes its engine snapshot (a few milliseconds' worth).
    fn recount_bytes(&self) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        self.stats.reset_bytes();
        let (stats, start, end) = (
            self.stats.clone(),
            self.range.start.clone(),
            self.range.end.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("range-{}-size", self.range.id))
            .spawn(move || {
                let view = engine.snapshot();
                let Ok(scan) = view.scan(Cf::Data, &start, end.as_deref()) else {
                    return;
                };
                let mut total = 0i64;
                for (k, v) in scan.flatten() {
                    total += (k.len() + v.len()) as i64;
                }
                stats.add_bytes(total);
            });
        if let Err(e) = spawned {
            tracing::warn!(range = self.range.id, error = %e, "cannot count the range's size");
        }
    }

    fn in_span(&self, key: &[u8]) -> bool {
        self.range.contains(key)
    }

    fn stale(&self, what: &str) -> Error {
        Error::new(
            ErrorCode::RangeStale,
            format!(
                "{what} is not in range {} (version {}); it split or merged after the request was \
                 routed.",
                self.range.id, self.range.epoch.version
            ),
        )
    }

    /// Where this range keeps its records about `table`.
    fn anchor(&self, table: u64) -> Vec<u8> {
        keys::table_anchor(table, &self.range.start)
    }

    fn execute(
        &self,
        engine: &dyn Engine,
        cmd: TableCommand,
    ) -> Result<(Kind, WriteBatch, i64), Failure> {
        let table = cmd.table_id;
        if !self.range.overlaps_table(table) {
            return fail(self.stale(&format!("table {table:016x}")), None);
        }
        let anchor = self.anchor(table);
        // A fenced write: refused when a write to this table already carried a higher token for the
        // lock; otherwise its token becomes the table's highest for the lock (in the same batch).
        let fence = match &cmd.fencing {
            None => None,
            Some(f) => {
                let key = keys::anchored_fence_key(&anchor, &f.lock);
                if !self.in_span(&key) {
                    return fail(
                        self.stale(&format!("the fence of table {table:016x}")),
                        None,
                    );
                }
                let seen = match read(engine, &key)? {
                    None => None,
                    Some(bytes) => Some(decode_token(&bytes)?),
                };
                if let Some(seen) = seen
                    && seen > f.token
                    && !planted::active(planted::Bug::SkipFencing)
                {
                    let msg = format!(
                        "The fencing token {} of lock {:?} is older than {seen}, which a write to \
                         this table already carried.",
                        f.token, f.lock
                    );
                    return fail(Error::new(ErrorCode::FencingTokenStale, msg), None);
                }
                (seen != Some(f.token)).then_some((key, f.token))
            }
        };
        let marker = anchor;
        if cmd.drop_table {
            if !cmd.ops.is_empty() {
                return fail(
                    Error::internal("a drop_table command with operations"),
                    None,
                );
            }
            return Ok((Kind::Done(true), self.drop_table(table), 0));
        }
        if self.in_span(&marker) && read(engine, &marker)?.is_some() {
            return fail(Error::from_code(ErrorCode::TableNotFound), None);
        }
        if cmd.ops.len() > limits::MAX_BATCH_OPERATIONS {
            return fail(too_many_operations(), None);
        }
        let mut ops = Vec::with_capacity(cmd.ops.len());
        for (i, op) in cmd.ops.into_iter().enumerate() {
            ops.push(write_op_from_proto(op).or_else(|e| fail(e, Some(i)))?);
        }
        check_batch_rules(&ops).or_else(|(i, e)| fail(e, Some(i)))?;

        let mut batch = WriteBatch::new();
        let mut results = Vec::with_capacity(ops.len());
        let mut delta = 0i64;
        for (i, op) in ops.into_iter().enumerate() {
            let key = keys::data_key(table, &op.entity.partition_key, &op.entity.row_key);
            if !self.in_span(&key) {
                return fail(self.stale("the entity's key"), None);
            }
            let (stored, old_len) = self.stored_entity(engine, &key, &op.entity)?;
            let (response, new_len) =
                apply_op(op, stored, DateTime(cmd.timestamp_ticks), &key, &mut batch)
                    .or_else(|e| fail(e, Some(i)))?;
            delta += new_len as i64 - old_len as i64;
            results.push(response);
        }
        if let Some((key, token)) = fence {
            batch.put(Cf::Data, key, crate::codec::seal(&token.to_be_bytes()));
        }
        Ok((Kind::Writes(WriteResults { results }), batch, delta))
    }

    /// Deletes every key of `table` inside this range and leaves the dropped-table marker.
    fn drop_table(&self, table: u64) -> WriteBatch {
        let (table_start, table_end) = table_span(table);
        let start = table_start.max(self.range.start.clone());
        // The last table id has no prefix end; 0xFF never occurs in UTF-8 nor in the escaping, so nine
        // 0xFF bytes are past every key of that table.
        let table_end = table_end.unwrap_or_else(|| vec![0xFF; 9]);
        let end = match &self.range.end {
            Some(range_end) => table_end.min(range_end.clone()),
            None => table_end,
        };
        let mut batch = WriteBatch::new();
        batch.delete_range(Cf::Data, start, end);
        let marker = self.anchor(table);
        if self.in_span(&marker) {
            batch.put(Cf::Data, marker, Vec::new());
        }
        batch
    }

    /// Copies this range's records about the table that `right_start` cuts (its dropped marker and
    /// fences) to the right half's anchor, so the right half starts out knowing them.
    fn copy_records_for_split(
        &self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        right_start: &[u8],
    ) -> Result<(), ApplyError> {
        let Some(id) = right_start
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
        else {
            return Ok(());
        };
        let table = u64::from_be_bytes(id);
        let right_anchor = keys::table_anchor(table, right_start);
        if right_anchor == keys::table_prefix(table) {
            // The cut is at a table's start: the right half holds that table's own records already.
            return Ok(());
        }
        let left_anchor = self.anchor(table);
        if read(engine, &left_anchor)?.is_some() {
            batch.put(Cf::Data, right_anchor.clone(), Vec::new());
        }
        let from = keys::anchored_fence_prefix(&left_anchor);
        let to = keys::anchored_fence_prefix(&right_anchor);
        let end = keys::prefix_end(&from);
        let scan = engine
            .scan(Cf::Data, &from, end.as_deref())
            .map_err(|e| ApplyError(format!("reading fences for a split: {e}")))?;
        for kv in scan {
            let (key, value) = kv.map_err(|e| ApplyError(format!("reading fences: {e}")))?;
            let mut copy = to.clone();
            copy.extend_from_slice(&key[from.len()..]);
            batch.put(Cf::Data, copy, value);
        }
        Ok(())
    }

    /// Folds the records a merge's source kept about the table its start cuts (its dropped marker and
    /// fences, at its own anchor) into this range's anchor for that table: a drop either side saw
    /// stays, and each lock's fence is the higher of the two. The source's copies go.
    fn fold_records_for_merge(
        &self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        source_start: &[u8],
    ) -> Result<(), ApplyError> {
        let Some(id) = source_start
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
        else {
            return Ok(());
        };
        let table = u64::from_be_bytes(id);
        let source_anchor = keys::table_anchor(table, source_start);
        if source_anchor == keys::table_prefix(table) {
            // The source starts at a table's start: its records are that table's own, and stay.
            return Ok(());
        }
        let target_anchor = self.anchor(table);
        if read(engine, &source_anchor)?.is_some() {
            batch.delete(Cf::Data, source_anchor.clone());
            batch.put(Cf::Data, target_anchor.clone(), Vec::new());
        }
        let from = keys::anchored_fence_prefix(&source_anchor);
        let to = keys::anchored_fence_prefix(&target_anchor);
        let end = keys::prefix_end(&from);
        let scan = engine
            .scan(Cf::Data, &from, end.as_deref())
            .map_err(|e| ApplyError(format!("reading fences for a merge: {e}")))?;
        let token = |bytes: &[u8]| match decode_token(bytes) {
            Ok(t) => Ok(t),
            Err(Failure::Fatal(e)) => Err(e),
            Err(Failure::Result(e, _)) => Err(ApplyError(e.message)),
        };
        for kv in scan {
            let (key, value) = kv.map_err(|e| ApplyError(format!("reading fences: {e}")))?;
            let mut ours = to.clone();
            ours.extend_from_slice(&key[from.len()..]);
            let mut highest = token(&value)?;
            if let Some(existing) = read(engine, &ours)? {
                highest = highest.max(token(&existing)?);
            }
            batch.put(Cf::Data, ours, crate::codec::seal(&highest.to_be_bytes()));
            batch.delete(Cf::Data, key);
        }
        Ok(())
    }

    /// The stored entity at `key`, crc-checked. Corruption is fatal here (see the module docs).
    fn stored_entity(
        &self,
        engine: &dyn Engine,
        key: &[u8],
        op: &Entity,
    ) -> Result<(Option<Entity>, usize), Failure> {
        let Some(bytes) = read(engine, key)? else {
            return Ok((None, 0));
        };
        match decode_entity(&op.partition_key, &op.row_key, &bytes) {
            Ok(e) => Ok((Some(e), key.len() + bytes.len())),
            Err(e) => Err(Failure::Fatal(ApplyError(format!(
                "{}: range {} entity ({:?}, {:?}): {}",
                e.code, self.range.id, op.partition_key, op.row_key, e.message
            )))),
        }
    }
}

/// A stored fencing token; a damaged one stops the replica (as any corrupt record does).
fn decode_token(bytes: &[u8]) -> Result<u64, Failure> {
    let body = crate::codec::unseal(bytes)
        .map_err(|e| Failure::Fatal(ApplyError(format!("fencing record: {}", e.message))))?;
    let raw: [u8; 8] = body
        .try_into()
        .map_err(|_| Failure::Fatal(ApplyError("fencing record of the wrong size".into())))?;
    Ok(u64::from_be_bytes(raw))
}

fn read(engine: &dyn Engine, key: &[u8]) -> Result<Option<Vec<u8>>, ApplyError> {
    engine
        .get(Cf::Data, key)
        .map_err(|e| ApplyError(format!("reading a data key: {e}")))
}

/// Checks one operation's condition against the stored entity and stages its write; returns the
/// response and the bytes the key and its new value take (0 after a delete).
fn apply_op(
    op: WriteOp,
    stored: Option<Entity>,
    command_ts: DateTime,
    key: &[u8],
    batch: &mut WriteBatch,
) -> Result<(pb::WriteResponse, usize), Error> {
    let must_exist = matches!(
        op.kind,
        WriteKind::Replace | WriteKind::Merge | WriteKind::Delete
    );
    match (&stored, op.kind) {
        (Some(_), WriteKind::Insert) => {
            return Err(Error::from_code(ErrorCode::EntityAlreadyExists));
        }
        (None, _) if must_exist => return Err(Error::from_code(ErrorCode::ResourceNotFound)),
        // `IfMatch::None` on these kinds means `*`: existence, already checked.
        (Some(s), _)
            if must_exist
                && matches!(op.if_match, IfMatch::ETag(e) if s.timestamp != Some(e.0)) =>
        {
            return Err(Error::from_code(ErrorCode::UpdateConditionNotSatisfied));
        }
        // Insert of an absent entity, and the upserts: no condition.
        _ => {}
    }
    if op.kind == WriteKind::Delete {
        batch.delete(Cf::Data, key.to_vec());
        let response = pb::WriteResponse {
            etag_ticks: None,
            entity: None,
        };
        return Ok((response, 0));
    }
    let timestamp = match stored.as_ref().and_then(|s| s.timestamp) {
        Some(prev) => DateTime(command_ts.0.max(prev.0.saturating_add(1))),
        None => command_ts,
    };
    let mut entity = op.entity;
    if let (Some(prev), WriteKind::Merge | WriteKind::InsertOrMerge) = (stored, op.kind) {
        let mut merged = prev.properties;
        merged.append(&mut entity.properties);
        entity.properties = merged;
    }
    entity.timestamp = Some(timestamp);
    // The leader validated what the client sent; a merge can still push the result over the limits.
    entity.validate()?;
    let value = encode_entity(&entity);
    let len = key.len() + value.len();
    batch.put(Cf::Data, key.to_vec(), value);
    let response = pb::WriteResponse {
        etag_ticks: Some(timestamp.ticks()),
        entity: Some(pb::Entity::from(&entity)),
    };
    Ok((response, len))
}

impl StateMachine for TableStateMachine {
    fn apply(
        &mut self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        _index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, ApplyError> {
        let cmd = match TableCommand::decode(command) {
            Ok(cmd) => cmd,
            Err(e) => {
                return Ok(error_result(
                    &Error::internal(format!("undecodable table command: {e}")),
                    None,
                ));
            }
        };
        if std::mem::take(&mut self.recount) {
            self.recount_bytes();
        }
        let drop = cmd.drop_table;
        let ops = cmd.ops.len() as u64;
        match self.execute(engine, cmd) {
            Ok((kind, writes, delta)) => {
                batch.extend(writes);
                self.stats.add_bytes(delta);
                self.stats.add_writes(ops);
                self.recount = drop;
                Ok(encode_result(kind))
            }
            Err(Failure::Result(error, index)) => Ok(error_result(&error, index)),
            Err(Failure::Fatal(e)) => Err(e),
        }
    }

    fn on_split(
        &mut self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        right: &Span,
    ) -> Result<(), ApplyError> {
        self.copy_records_for_split(engine, batch, &right.start)
    }

    fn on_merge(
        &mut self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        source: &Span,
    ) -> Result<(), ApplyError> {
        self.fold_records_for_merge(engine, batch, &source.start)
    }

    fn on_snapshot_restored(&mut self, _engine: &dyn Engine) -> Result<(), ApplyError> {
        self.recount_bytes();
        Ok(())
    }

    fn on_desc_changed(&mut self, desc: &GroupDesc) {
        if let Some(range) = RangeDesc::from_group(desc) {
            let span_changed = range.start != self.range.start || range.end != self.range.end;
            self.range = range;
            if span_changed {
                self.stats.clear_samples();
                self.recount_bytes();
            }
        }
    }
}

#[cfg(test)]
#[path = "table_sm_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "table_sm_model_tests.rs"]
mod model_tests;
