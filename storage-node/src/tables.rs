//! `LocalTables`: the table service as one node can serve it with its own replicas — the leader side of
//! every table operation.
//!
//! Each call validates its input, finds the table's id in the catalog, finds the data range that holds
//! the keys, and then, **only if this node's replica leads that range**, proposes the command or serves
//! the read. Otherwise it fails with `NotLeader`, naming the leader when known, and the cluster layer
//! (`cluster`) forwards the call there. Catalog changes need this node to lead the meta group in the
//! same way.
//!
//! Table ids are cached. A first lookup is a linearizable read of the meta group (`read_index`, then
//! the local engine; any replica of the meta group can serve it); after that the id is taken from the
//! cache, which saves a ReadIndex round on every entity operation. A cached id is stale only if the
//! table was deleted since, and then the operation still cannot succeed: Delete Table is acknowledged
//! only after the table's dropped marker is committed in its data range (see `cluster`), and every
//! write (at apply) and every read (after the range's `read_index`) checks that marker. An operation
//! that meets it on a cached id forgets the id and runs once more on a fresh lookup, which finds the
//! table gone, or the new table of the same name (ids are never reused).
//!
//! `NotLeader` errors carry the leader in their message as `leader=<node id>` or `leader=unknown`
//! (see [`not_leader`]); [`leader_hint`] reads it back. Nothing else about the message is stable.
//!
//! Timestamps: the leader stamps every write with its clock, made strictly increasing per range by
//! [`LocalTables`]'s per-range last timestamp; apply raises it past the stored entity's timestamp if
//! needed (see `table_sm`). Two concurrent proposals may reach Raft in the opposite order of their
//! timestamps; that is harmless, because an ETag only has to change on every write of *one* entity.
//!
//! Deleting a table is two commands: the catalog delete ([`LocalTables::uncatalog_table`], after which
//! the table is gone for lookups), then the drop of its entities in the data range
//! ([`LocalTables::drop_table_data`]), which leaves the dropped marker. The cluster layer runs the two
//! in turn, each on the leader of its group. If the drop cannot run (no leader in time),
//! [`LocalTables::reap_dropped_tables`], run periodically on every node, proposes it from wherever the
//! range's leader is.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prost::Message;
use trestle_engine::{Engine, Snapshot};
use trestle_proto::internal::{
    CreateTable, DeleteTable, MetaCommand, SetServiceProperties, SetTableAcl, TableCommand,
    TableRecord, command_result::Kind, meta_command,
};
use trestle_replication::{
    GroupDesc, GroupHost, MergeRefused, ProposeError, RaftNode, SplitRefused, SplitRequest,
    StateMachine, planted,
};
use trestle_rest_gateway::Fencing;
use trestle_types::{
    AccessPolicy, BatchError, DateTime, Entity, Error, ErrorCode, QueryPage, QuerySpec, Result,
    TableInfo, TableName, WriteKind, WriteOp, WriteOutcome, limits,
};

use crate::commands::{decode_result, outcomes, policy_to_proto, table_info, write_op_to_proto};
use crate::meta_sm::{self, MAX_ACCESS_POLICIES, MetaStateMachine};
use crate::query;
use crate::ranges::{META_RANGE_ID, RangeDesc, Ranges};
use crate::splits::SplitAt;
use crate::table_sm::{TableStateMachine, check_batch_rules, too_many_operations};

/// The state machines of a node's replicas, and the node's live range view ([`Ranges`]) kept up to
/// date as replicas split and restore snapshots.
pub struct NodeHost {
    ranges: Arc<Ranges>,
    locks: Arc<crate::locks::LockHost>,
    engine: Arc<dyn Engine>,
    members: Option<Arc<crate::members::Members>>,
}

impl NodeHost {
    pub fn new(
        ranges: Arc<Ranges>,
        locks: Arc<crate::locks::LockHost>,
        engine: Arc<dyn Engine>,
    ) -> NodeHost {
        NodeHost {
            ranges,
            locks,
            engine,
            members: None,
        }
    }

    /// The node's member list, which a meta replica tells of every node that joins.
    pub fn with_members(mut self, members: Arc<crate::members::Members>) -> NodeHost {
        self.members = Some(members);
        self
    }
}

impl GroupHost for NodeHost {
    fn state_machine(&self, desc: &GroupDesc) -> Box<dyn StateMachine> {
        match RangeDesc::from_group(desc) {
            Some(range) => Box::new(TableStateMachine::with_stats(
                &range,
                self.ranges.stats(range.id),
                self.engine.clone(),
            )),
            None => {
                let sm = MetaStateMachine::with_locks(self.locks.clone());
                Box::new(match &self.members {
                    Some(members) => sm.with_members(members.clone()),
                    None => sm,
                })
            }
        }
    }

    fn on_desc_changed(&self, desc: &GroupDesc) {
        if let Some(range) = RangeDesc::from_group(desc) {
            self.ranges.update(range);
        }
    }

    fn on_removed(&self, group: u64) {
        self.ranges.remove(group);
    }
}

/// `NotLeader` (no leader known) when this node hosts no range holding a key: the range lives on other
/// nodes, or a split is applying here right now. Either way the router asks the other nodes.
const NO_REPLICA: &str = "No range of this node holds ";

fn no_range(what: &str) -> Error {
    Error::new(
        ErrorCode::NotLeader,
        format!("{NO_REPLICA}{what}; leader=unknown"),
    )
}

/// Whether `err` says the answering node holds no replica of the key at all (as opposed to a replica
/// that does not lead): asking it again is pointless.
pub fn is_no_replica(err: &Error) -> bool {
    err.code == ErrorCode::NotLeader && err.message.starts_with(NO_REPLICA)
}

/// Where a node that hosts no replica of the meta group looks tables up: another node's catalog.
#[async_trait::async_trait]
pub trait RemoteCatalog: Send + Sync {
    async fn get_table(&self, account: &str, table: &str) -> Result<TableInfo>;
}

/// `NotLeader` for `range`, with the leader's node id in the message as `leader=<id>` (or
/// `leader=unknown`).
pub fn not_leader(range: u64, leader: Option<u64>) -> Error {
    let leader = leader.map_or_else(|| "unknown".to_string(), |l| l.to_string());
    Error::new(
        ErrorCode::NotLeader,
        format!("this replica does not lead range {range}; leader={leader}"),
    )
}

/// The leader node id a `NotLeader` error names, if any.
pub fn leader_hint(err: &Error) -> Option<u64> {
    if err.code != ErrorCode::NotLeader {
        return None;
    }
    let (_, rest) = err.message.rsplit_once("leader=")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

pub(crate) fn propose_error(group: u64, e: ProposeError) -> Error {
    match e {
        ProposeError::NotLeader { leader } => not_leader(group, leader),
        // Never applied, so retrying (after the election) is safe.
        ProposeError::Dropped => not_leader(group, None),
        // Another node hosts it: the router asks the others.
        ProposeError::GroupNotFound(g) => not_leader(g, None),
        ProposeError::Stopped => Error::new(ErrorCode::ServerBusy, "The node is stopping."),
        // Not NotLeader: the command may still be applied, so the router must not retry it.
        ProposeError::Timeout => Error::new(
            ErrorCode::OperationTimedOut,
            format!(
                "The operation on range {group} timed out; it may or may not have been applied."
            ),
        ),
        ProposeError::TooLarge(n) => Error::new(
            ErrorCode::RequestBodyTooLarge,
            format!("The request of {n} bytes is too large."),
        ),
        ProposeError::SplitRefused(e @ SplitRefused::EpochStale { .. }) => {
            Error::new(ErrorCode::RangeStale, format!("range {group}: {e}"))
        }
        ProposeError::SplitRefused(e) => {
            Error::invalid_input(format!("range {group} cannot split there: {e}"))
        }
        // Nothing was applied; once the merge commits (or rolls back) the router finds the keys.
        ProposeError::Merging { target } => Error::new(
            ErrorCode::RangeStale,
            format!("range {group} is merging into range {target}"),
        ),
        ProposeError::MergeRefused(e @ MergeRefused::EpochStale { .. }) => {
            Error::new(ErrorCode::RangeStale, format!("range {group}: {e}"))
        }
        ProposeError::MergeRefused(e @ MergeRefused::ConfChanging) => Error::new(
            ErrorCode::ServerBusy,
            format!("range {group} cannot take this merge step now: {e}"),
        ),
        ProposeError::MergeRefused(e) => {
            Error::invalid_input(format!("range {group} refused the merge step: {e}"))
        }
        // Retryable: another change is in flight, or the leader must hand over first.
        ProposeError::MembershipRefused(why) => Error::new(
            ErrorCode::ServerBusy,
            format!("range {group}'s membership cannot change now: {why}"),
        ),
    }
}

fn whole(error: Error) -> BatchError {
    BatchError { index: None, error }
}

fn unexpected(kind: &Kind) -> Error {
    Error::internal(format!("unexpected command result {kind:?}"))
}

/// Validates one client write: the whole entity, or only its keys for a delete.
fn validate_op(op: &WriteOp) -> Result<()> {
    match op.kind {
        WriteKind::Delete => op.entity.key().validate(),
        _ => op.entity.validate(),
    }
}

/// How many table ids a node caches before it starts over.
const TABLE_ID_CACHE_LIMIT: usize = 65_536;

/// Errors that can say "this table does not exist", so an operation on a cached table id can tell that
/// the id went stale.
trait TableMissing {
    fn whole_error(&self) -> Option<&Error>;
    fn from_error(error: Error) -> Self;
    fn table_missing(&self) -> bool {
        self.whole_error()
            .is_some_and(|e| e.code == ErrorCode::TableNotFound)
    }
    fn not_leader(&self) -> bool {
        self.whole_error()
            .is_some_and(|e| e.code == ErrorCode::NotLeader)
    }
}

impl TableMissing for Error {
    fn whole_error(&self) -> Option<&Error> {
        Some(self)
    }
    fn from_error(error: Error) -> Self {
        error
    }
}

impl TableMissing for BatchError {
    fn whole_error(&self) -> Option<&Error> {
        self.index.is_none().then_some(&self.error)
    }
    fn from_error(error: Error) -> Self {
        whole(error)
    }
}

/// The leader side of the table service on one node.
pub struct LocalTables {
    raft: Arc<RaftNode>,
    ranges: Arc<Ranges>,
    /// The last timestamp proposed per range, so this node's timestamps strictly increase per range.
    clocks: Mutex<HashMap<u64, i64>>,
    /// (account, case-folded table name) → table id, for tables this node has looked up.
    table_ids: RwLock<HashMap<(String, String), u64>>,
    /// The catalog of the other nodes, for a node without a meta replica (set by the cluster layer).
    remote_catalog: std::sync::OnceLock<std::sync::Weak<dyn RemoteCatalog>>,
}

impl LocalTables {
    /// The executor over this node's replicas (`raft`), routing by `ranges` (which the node's
    /// [`NodeHost`] keeps current).
    pub fn new(raft: Arc<RaftNode>, ranges: Arc<Ranges>) -> Self {
        LocalTables {
            raft,
            ranges,
            clocks: Mutex::new(HashMap::new()),
            table_ids: RwLock::new(HashMap::new()),
            remote_catalog: std::sync::OnceLock::new(),
        }
    }

    /// Where to look tables up while this node hosts no replica of the meta group.
    pub fn set_remote_catalog(&self, catalog: std::sync::Weak<dyn RemoteCatalog>) {
        let _ = self.remote_catalog.set(catalog);
    }

    /// The range view this node routes by.
    pub fn ranges(&self) -> &Ranges {
        &self.ranges
    }

    /// The range holding `key`, or `RangeStale`.
    fn range_for_key(&self, key: &[u8]) -> Result<RangeDesc> {
        self.ranges
            .range_for_key(key)
            .ok_or_else(|| no_range(&crate::ranges::describe_key(key)))
    }

    /// A human-readable description of a range's span, for status output.
    pub fn describe_range(&self, range: u64) -> String {
        self.ranges.describe(range)
    }

    pub(crate) fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    pub(crate) fn engine(&self) -> &dyn Engine {
        &**self.raft.engine()
    }

    pub(crate) fn ensure_leader(&self, range: u64) -> Result<()> {
        match self.raft.leader(range) {
            Some(leader) if leader == self.raft.id() => Ok(()),
            other => Err(not_leader(range, other)),
        }
    }

    async fn read_index(&self, range: u64) -> Result<()> {
        self.raft
            .read_index(range)
            .await
            .map_err(|e| propose_error(range, e))
    }

    async fn propose(&self, range: u64, command: Vec<u8>) -> Result<Kind, BatchError> {
        let bytes = self
            .raft
            .propose(range, command)
            .await
            .map_err(|e| whole(propose_error(range, e)))?;
        decode_result(&bytes)
    }

    async fn propose_meta(&self, kind: meta_command::Kind) -> Result<Kind> {
        self.ensure_leader(META_RANGE_ID)?;
        let command = MetaCommand { kind: Some(kind) }.encode_to_vec();
        self.propose(META_RANGE_ID, command)
            .await
            .map_err(|e| e.error)
    }

    /// Starts handing the leadership of `range`, which this node leads, to node `to`.
    pub(crate) async fn transfer_leader(&self, range: u64, to: u64) -> Result<()> {
        self.raft
            .transfer_leader(range, to)
            .await
            .map_err(|e| propose_error(range, e))
    }

    /// This node's view of every group it hosts.
    pub(crate) fn group_statuses(&self) -> Vec<trestle_replication::GroupStatus> {
        self.raft.status()
    }

    /// Proposes a lock-manager command to the meta group (this node must lead it).
    pub(crate) async fn propose_lock(
        &self,
        command: trestle_proto::internal::LockCommand,
    ) -> Result<trestle_proto::internal::LockReply> {
        match self.propose_meta(meta_command::Kind::Lock(command)).await? {
            Kind::Lock(reply) => Ok(reply),
            other => Err(unexpected(&other)),
        }
    }

    /// Waits until this replica of the meta group has applied everything committed before now (any
    /// replica; linearizable reads of the lock state and catalog).
    pub(crate) async fn read_meta(&self) -> Result<()> {
        self.read_index(META_RANGE_ID).await
    }

    /// Fails with `NotLeader` unless this node leads the meta group, then waits until this replica has
    /// applied everything committed before now (so reads of the lock state are linearizable).
    pub(crate) async fn meta_leader_read(&self) -> Result<()> {
        self.ensure_leader(META_RANGE_ID)?;
        self.read_index(META_RANGE_ID).await
    }

    /// A timestamp later than every one this node proposed to `range` before.
    fn next_timestamp(&self, range: u64) -> DateTime {
        // The map holds plain integers: a panic elsewhere cannot leave it inconsistent.
        let mut clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        let last = clocks.entry(range).or_insert(i64::MIN);
        *last = DateTime::now().ticks().max(last.saturating_add(1));
        DateTime(*last)
    }

    /// The catalog record of a table, read linearizably; `TableNotFound` if there is none.
    async fn resolve(&self, account: &str, table: &str) -> Result<TableRecord> {
        if self.raft.group_status(META_RANGE_ID).is_none() {
            let remote = self
                .remote_catalog
                .get()
                .and_then(std::sync::Weak::upgrade)
                .ok_or_else(|| not_leader(META_RANGE_ID, None))?;
            let info = remote.get_table(account, table).await?;
            self.remember_table(account, table, info.id);
            return Ok(TableRecord {
                account: account.to_string(),
                name: info.name,
                id: info.id,
                policies: info.policies.iter().map(policy_to_proto).collect(),
            });
        }
        self.read_index(META_RANGE_ID).await?;
        let record = meta_sm::get_table(self.engine(), account, table)?
            .ok_or_else(|| Error::from_code(ErrorCode::TableNotFound))?;
        self.remember_table(account, table, record.id);
        Ok(record)
    }

    fn cache_key(account: &str, table: &str) -> (String, String) {
        (account.to_string(), table.to_ascii_lowercase())
    }

    fn remember_table(&self, account: &str, table: &str, id: u64) {
        // The map holds plain ids: a panic elsewhere cannot leave it inconsistent.
        let mut ids = self
            .table_ids
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if ids.len() >= TABLE_ID_CACHE_LIMIT {
            ids.clear();
        }
        ids.insert(Self::cache_key(account, table), id);
    }

    fn forget_table(&self, account: &str, table: &str) {
        let mut ids = self
            .table_ids
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        ids.remove(&Self::cache_key(account, table));
    }

    fn cached_table_id(&self, account: &str, table: &str) -> Option<u64> {
        let ids = self
            .table_ids
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        ids.get(&Self::cache_key(account, table)).copied()
    }

    /// Runs `op` with the table's id: the cached one if there is one, else (and once more, if the
    /// cached id turns out to belong to a deleted table) a fresh linearizable lookup.
    async fn with_table_id<T, E, F, Fut>(&self, account: &str, table: &str, op: F) -> Result<T, E>
    where
        E: TableMissing,
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(id) = self.cached_table_id(account, table) {
            match op(id).await {
                Err(e) if e.table_missing() => self.forget_table(account, table),
                // Another node leads the range of the cached id. Before the request is forwarded there,
                // make sure the id is not a deleted table's: its range need not be the new table's, and
                // that node would send the request back here. (This costs the catalog read only on the
                // forwarding path.)
                Err(e) if e.not_leader() => {
                    return match self.resolve(account, table).await {
                        Ok(record) if record.id != id => op(record.id).await,
                        Err(gone) if gone.code == ErrorCode::TableNotFound => {
                            Err(E::from_error(gone))
                        }
                        _ => Err(e),
                    };
                }
                done => return done,
            }
        }
        let record = self.resolve(account, table).await.map_err(E::from_error)?;
        op(record.id).await
    }

    /// The range that holds `table` of `account`.
    pub async fn range_of_table(&self, account: &str, table: &str) -> Result<u64> {
        let id = match self.cached_table_id(account, table) {
            Some(id) => id,
            None => self.resolve(account, table).await?.id,
        };
        self.range_for_key(&trestle_engine::keys::table_prefix(id))
            .map(|r| r.id)
    }

    /// The id of `table` of `account` (cached, or looked up linearizably).
    pub async fn table_id(&self, account: &str, table: &str) -> Result<u64> {
        match self.cached_table_id(account, table) {
            Some(id) => Ok(id),
            None => Ok(self.resolve(account, table).await?.id),
        }
    }

    /// The range holding `partition_key` of `table` of `account`.
    pub async fn range_of_partition(
        &self,
        account: &str,
        table: &str,
        partition_key: &str,
    ) -> Result<RangeDesc> {
        let id = match self.cached_table_id(account, table) {
            Some(id) => id,
            None => self.resolve(account, table).await?.id,
        };
        self.range_for_key(&trestle_engine::keys::partition_prefix(id, partition_key))
    }

    /// Records a joining node in the meta group (this node must lead it); whether it is new.
    pub async fn register_node(&self, node: trestle_proto::internal::RegisterNode) -> Result<bool> {
        match self
            .propose_meta(meta_command::Kind::RegisterNode(node))
            .await?
        {
            Kind::Done(new) => Ok(new),
            other => Err(unexpected(&other)),
        }
    }

    /// A new range id from the meta group (this node must lead it).
    pub async fn allocate_range_id(&self) -> Result<u64> {
        let kind = meta_command::Kind::AllocateRangeId(trestle_proto::internal::AllocateRangeId {});
        match self.propose_meta(kind).await? {
            Kind::RangeId(id) => Ok(id),
            other => Err(unexpected(&other)),
        }
    }

    /// Splits a range this node leads, into itself and a new range `new_id`: at a key (the first key
    /// of a table or of a partition), the range being whichever holds the key in this node's view; or
    /// range `range` at the middle of its data or of its recent load (see [`SplitAt`]). The split
    /// applies only if the range is still at `version` (default: as this node sees it now); nothing is
    /// copied. Splitting where a range already starts succeeds without a change (a retried split).
    pub async fn split_range(
        &self,
        range: u64,
        at: &SplitAt,
        new_id: u64,
        version: Option<u64>,
    ) -> Result<(RangeDesc, RangeDesc)> {
        let current = match at {
            SplitAt::Key(key) => self.range_for_key(key)?,
            _ => self
                .ranges
                .get(range)
                .ok_or_else(|| no_range(&format!("range {range}")))?,
        };
        self.ensure_leader(current.id)?;
        let key = match at.clone() {
            SplitAt::Key(key) if key == current.start => {
                let left = self
                    .ranges
                    .data_ranges()
                    .into_iter()
                    .find(|r| r.end.as_ref() == Some(&key))
                    .ok_or_else(|| no_range("the range before the split key"))?;
                return Ok((left, current));
            }
            SplitAt::Key(key) => key,
            SplitAt::MiddleOfData => {
                crate::splits::middle_key(&*self.raft.engine().snapshot(), &current)?
                    .ok_or_else(|| crate::splits::nothing_to_cut(current.id))?
            }
            SplitAt::MiddleOfLoad => self
                .ranges
                .stats(current.id)
                .load_split_key(&current.start)
                .filter(|k| current.contains(k))
                .ok_or_else(|| crate::splits::nothing_to_cut(current.id))?,
        };
        if !trestle_engine::keys::is_split_key(&key) {
            return Err(Error::invalid_input(
                "A range splits only at the first key of a table or of a partition.",
            ));
        }
        let req = SplitRequest {
            key,
            new_group: new_id,
            version: version.unwrap_or(current.epoch.version),
        };
        let (left, right) = self
            .raft
            .split(current.id, req)
            .await
            .map_err(|e| propose_error(current.id, e))?;
        let desc = |d: &GroupDesc| {
            RangeDesc::from_group(d).ok_or_else(|| Error::internal("the meta group cannot split"))
        };
        Ok((desc(&left)?, desc(&right)?))
    }

    /// Creates a table; `TableAlreadyExists` if one of that name (in any case) exists.
    pub async fn create_table(&self, account: &str, table: &TableName) -> Result<TableInfo> {
        let cmd = CreateTable {
            account: account.to_string(),
            name: table.as_str().to_string(),
        };
        match self
            .propose_meta(meta_command::Kind::CreateTable(cmd))
            .await?
        {
            Kind::Table(record) => {
                self.remember_table(account, table.as_str(), record.id);
                Ok(table_info(&record))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a table from the catalog (`ResourceNotFound` if absent) and returns its id; its entities
    /// are still to be dropped ([`LocalTables::drop_table_data`]).
    pub async fn uncatalog_table(&self, account: &str, table: &str) -> Result<u64> {
        let cmd = DeleteTable {
            account: account.to_string(),
            name: table.to_string(),
        };
        let result = self
            .propose_meta(meta_command::Kind::DeleteTable(cmd))
            .await;
        self.forget_table(account, table);
        match result? {
            Kind::Table(record) => Ok(record.id),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a table and drops its entities, both on this node (which must lead the meta group and
    /// the table's data range).
    pub async fn delete_table(&self, account: &str, table: &str) -> Result<()> {
        let id = self.uncatalog_table(account, table).await?;
        self.drop_table_data(id).await
    }

    /// Drops the entities of deleted table `table_id` and leaves its dropped marker; this node must lead
    /// the table's data range. Dropping twice is harmless.
    ///
    /// A table may span several ranges, led by different nodes: this node drops the table in every
    /// range it leads, skips ranges whose replica here already holds the drop, and answers `NotLeader`
    /// naming the leader of the first range left, so the cluster layer carries on there.
    pub async fn drop_table_data(&self, table_id: u64) -> Result<()> {
        let ranges = self.ranges.ranges_of_table(table_id);
        if ranges.is_empty() {
            return Err(no_range(&format!("table {table_id:016x}")));
        }
        let mut refused = None;
        for range in ranges {
            if self.ensure_leader(range.id).is_ok() {
                self.drop_in_range(table_id, range.id).await?;
                continue;
            }
            self.read_index(range.id).await?;
            if !query::is_dropped(self.engine(), table_id, &range.start)? && refused.is_none() {
                refused = Some(not_leader(range.id, self.raft.leader(range.id)));
            }
        }
        refused.map_or(Ok(()), Err)
    }

    async fn drop_in_range(&self, table_id: u64, range: u64) -> Result<()> {
        let cmd = TableCommand {
            table_id,
            timestamp_ticks: self.next_timestamp(range).ticks(),
            drop_table: true,
            ..TableCommand::default()
        };
        match self
            .propose(range, cmd.encode_to_vec())
            .await
            .map_err(|e| e.error)?
        {
            Kind::Done(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Whether this replica holds the drop of `table_id` in every range of the table (linearizable:
    /// after `read_index` on each range).
    async fn dropped_everywhere(&self, table_id: u64) -> Result<bool> {
        for range in self.ranges.ranges_of_table(table_id) {
            self.read_index(range.id).await?;
            if !query::is_dropped(self.engine(), table_id, &range.start)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Drops the entities of every deleted table whose range this node leads and that was not dropped
    /// yet; returns how many drops it proposed. Meant to run periodically on every node.
    /// Deleted tables whose entities this replica still holds (linearizable: after `read_index` on the
    /// meta group and on each table's range; works on followers).
    pub async fn undropped_tables(&self) -> Result<Vec<u64>> {
        self.read_index(META_RANGE_ID).await?;
        let mut out = Vec::new();
        for record in meta_sm::dropped_tables(self.engine())? {
            if !self.dropped_everywhere(record.id).await? {
                out.push(record.id);
            }
        }
        Ok(out)
    }

    pub async fn reap_dropped_tables(&self) -> Result<usize> {
        self.read_index(META_RANGE_ID).await?;
        let mut dropped = 0;
        for record in meta_sm::dropped_tables(self.engine())? {
            for range in self.ranges.ranges_of_table(record.id) {
                if self.ensure_leader(range.id).is_err() {
                    continue;
                }
                self.read_index(range.id).await?;
                if !query::is_dropped(self.engine(), record.id, &range.start)? {
                    self.drop_in_range(record.id, range.id).await?;
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// Looks a table up, with its access policies; `TableNotFound` if it does not exist.
    pub async fn get_table(&self, account: &str, table: &str) -> Result<TableInfo> {
        self.resolve(account, table).await.map(|r| table_info(&r))
    }

    /// Up to `limit` tables in case-folded name order from `start` (inclusive), and the next name.
    pub async fn list_tables(
        &self,
        account: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TableInfo>, Option<String>)> {
        self.read_index(META_RANGE_ID).await?;
        let (records, next) = meta_sm::list_tables(self.engine(), account, start, limit)?;
        Ok((records.iter().map(table_info).collect(), next))
    }

    /// Replaces a table's stored access policies (at most 5).
    pub async fn set_table_acl(
        &self,
        account: &str,
        table: &str,
        policies: Vec<AccessPolicy>,
    ) -> Result<()> {
        if policies.len() > MAX_ACCESS_POLICIES {
            let msg = format!(
                "At most {MAX_ACCESS_POLICIES} signed identifiers may be set; got {}.",
                policies.len()
            );
            return Err(Error::new(ErrorCode::InvalidXmlDocument, msg));
        }
        let cmd = SetTableAcl {
            account: account.to_string(),
            name: table.to_string(),
            policies: policies.iter().map(policy_to_proto).collect(),
        };
        match self
            .propose_meta(meta_command::Kind::SetTableAcl(cmd))
            .await?
        {
            Kind::Table(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The account's service properties document. Served by any replica of the meta group (after
    /// `read_index`), not only its leader.
    pub async fn get_service_properties(&self, account: &str) -> Result<Option<String>> {
        self.read_index(META_RANGE_ID).await?;
        meta_sm::get_service_properties(self.engine(), account)
    }

    /// Stores the account's service properties document.
    pub async fn set_service_properties(&self, account: &str, xml: String) -> Result<()> {
        let cmd = SetServiceProperties {
            account: account.to_string(),
            xml,
        };
        match self
            .propose_meta(meta_command::Kind::SetServiceProperties(cmd))
            .await?
        {
            Kind::Done(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// One entity write.
    pub async fn write(
        &self,
        account: &str,
        table: &str,
        op: WriteOp,
        fencing: Option<Fencing>,
    ) -> Result<WriteOutcome> {
        validate_op(&op)?;
        let mut results = self
            .execute(account, table, vec![op], fencing)
            .await
            .map_err(|e| e.error)?;
        results
            .pop()
            .ok_or_else(|| Error::internal("a write without a result"))
    }

    /// An entity group transaction: up to 100 writes on one PartitionKey, all or nothing.
    pub async fn batch(
        &self,
        account: &str,
        table: &str,
        ops: Vec<WriteOp>,
        fencing: Option<Fencing>,
    ) -> Result<Vec<WriteOutcome>, BatchError> {
        if ops.len() > limits::MAX_BATCH_OPERATIONS {
            return Err(whole(too_many_operations()));
        }
        for (i, op) in ops.iter().enumerate() {
            validate_op(op).map_err(|error| BatchError {
                index: Some(i),
                error,
            })?;
        }
        check_batch_rules(&ops).map_err(|(i, error)| BatchError {
            index: Some(i),
            error,
        })?;
        self.execute(account, table, ops, fencing).await
    }

    async fn execute(
        &self,
        account: &str,
        table: &str,
        ops: Vec<WriteOp>,
        fencing: Option<Fencing>,
    ) -> Result<Vec<WriteOutcome>, BatchError> {
        // A lock of the account: the range keeps the highest token per scoped name.
        let fencing = match fencing {
            None => None,
            Some(f) => {
                trestle_lock_manager::validate_name(&f.lock)
                    .map_err(|e| whole(crate::locks::lock_error(e)))?;
                Some(Fencing {
                    lock: crate::locks::scoped(account, &f.lock),
                    token: f.token,
                })
            }
        };
        if ops.is_empty() {
            // Nothing to write, but the table must exist.
            self.resolve(account, table).await.map_err(whole)?;
            return Ok(Vec::new());
        }
        self.with_table_id(account, table, |id| {
            self.execute_on(id, &ops, fencing.as_ref())
        })
        .await
    }

    async fn execute_on(
        &self,
        table_id: u64,
        ops: &[WriteOp],
        fencing: Option<&Fencing>,
    ) -> Result<Vec<WriteOutcome>, BatchError> {
        let Some(first) = ops.first() else {
            return Ok(Vec::new());
        };
        let range = self
            .range_for_key(&trestle_engine::keys::partition_prefix(
                table_id,
                &first.entity.partition_key,
            ))
            .map_err(whole)?
            .id;
        self.ensure_leader(range).map_err(whole)?;
        self.ranges.stats(range).record(
            &trestle_engine::keys::partition_prefix(table_id, &first.entity.partition_key),
            false,
        );
        let cmd = TableCommand {
            table_id,
            timestamp_ticks: self.next_timestamp(range).ticks(),
            ops: ops.iter().map(write_op_to_proto).collect(),
            fencing: fencing.map(|f| trestle_proto::table::Fencing {
                lock: f.lock.clone(),
                token: f.token,
            }),
            drop_table: false,
        };
        match self.propose(range, cmd.encode_to_vec()).await? {
            Kind::Writes(results) => outcomes(results).map_err(whole),
            other => Err(whole(unexpected(&other))),
        }
    }

    /// A snapshot of the range holding `key` with every write committed before this call (this node
    /// must lead the range), with the range as it was when the snapshot was taken; `TableNotFound` if
    /// table `table_id` was dropped by then.
    async fn read_snapshot(
        &self,
        key: &[u8],
        table_id: u64,
    ) -> Result<(Box<dyn Snapshot + '_>, RangeDesc)> {
        let range = self.range_for_key(key)?;
        if !planted::active(planted::Bug::StaleReads) {
            self.ensure_leader(range.id)?;
            self.read_index(range.id).await?;
        }
        let snapshot = self.raft.engine().snapshot();
        // The range may have split while the read index was taken: read within what it holds now.
        let range = match self.ranges.get(range.id) {
            Some(now) if now.contains(key) => now,
            _ => return Err(no_range(&crate::ranges::describe_key(key))),
        };
        if query::is_dropped(&*snapshot, table_id, &range.start)? {
            return Err(Error::from_code(ErrorCode::TableNotFound));
        }
        Ok((snapshot, range))
    }

    /// A linearizable point read; `ResourceNotFound` if the entity does not exist.
    pub async fn get_entity(
        &self,
        account: &str,
        table: &str,
        partition_key: &str,
        row_key: &str,
    ) -> Result<Entity> {
        self.with_table_id(account, table, |id| async move {
            let key = trestle_engine::keys::partition_prefix(id, partition_key);
            let (snapshot, range) = self.read_snapshot(&key, id).await?;
            self.ranges.stats(range.id).record(&key, true);
            query::get_entity(&*snapshot, id, partition_key, row_key)?
                .ok_or_else(|| Error::from_code(ErrorCode::ResourceNotFound))
        })
        .await
    }

    /// One page of a query, from one snapshot of the range that holds the query's first key. A table
    /// that spans ranges is read range by range: a page ends at its range's end with a continuation
    /// into the next (see `query`).
    pub async fn query(&self, account: &str, table: &str, spec: QuerySpec) -> Result<QueryPage> {
        let spec = &spec;
        self.with_table_id(account, table, |id| async move {
            let first = query::first_key(id, spec);
            let (snapshot, range) = self.read_snapshot(&first, id).await?;
            self.ranges
                .stats(range.id)
                .record(&trestle_engine::keys::partition_start_of(&first), true);
            let within = query::Within {
                start: &range.start,
                end: range.end.as_deref(),
            };
            query::query_page_with_budget(&*snapshot, id, spec, query::SCAN_BUDGET, within)
        })
        .await
    }
}

#[cfg(test)]
#[path = "tables_tests.rs"]
mod tests;
