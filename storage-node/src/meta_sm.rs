//! The catalog state machine of the meta group (range 1): the tables of every account, their stored
//! access policies, each account's table service properties, and the lock manager's leases and locks
//! (applied by [`crate::locks::LockHost`], persisted as records of this group).
//!
//! Keys (all in `Cf::Meta`, laid out in `trestle_engine::keys`): the table-id sequence, one record per
//! table under `(account, folded name)`, one record per deleted table under its id, and one service
//! properties document per account. Every value is framed with the entity codec's crc
//! ([`crate::codec::seal`]), so a damaged catalog record is never taken for a real one.
//!
//! Invariants:
//! - table names are unique per account case-insensitively ([`TableName::folded`] is the key), and the
//!   record keeps the case the table was created with;
//! - a table id is `seq · 0x9E37_79B9_7F4A_7C15 (mod 2^64)` for the next value of a persistent sequence
//!   starting at 1. Multiplying by an odd constant is a bijection of u64, so ids never repeat (a new
//!   table of a deleted table's name never sees the old entities) and are never 0, and the golden-ratio
//!   constant scatters consecutive ids over the whole u64 space, which is what spreads tables evenly
//!   over the initial ranges (see `ranges`);
//! - apply is deterministic: it reads only this span and the command. Failures that follow from them
//!   (TableAlreadyExists, ResourceNotFound, ...) are results; an unreadable or corrupt record is an
//!   [`ApplyError`] for the same reason as in `table_sm`;
//! - a deleted table leaves a record under its id, so whoever leads the table's data range can drop
//!   its entities later even if that failed at delete time (see `tables::LocalTables::reap_dropped_tables`).
//!
//! The read helpers ([`get_table`], [`list_tables`], [`get_service_properties`], [`dropped_tables`]) are
//! linearizable when called after a `read_index` on the meta group.

use prost::Message;
use trestle_engine::{Cf, Engine, WriteBatch, keys};
use trestle_proto::internal::{MetaCommand, TableRecord, command_result::Kind, meta_command};
use trestle_replication::{ApplyError, StateMachine};
use trestle_types::{Error, ErrorCode, Result, TableName};

use crate::codec::{seal, unseal};
use crate::commands::{encode_result, error_result};

/// The multiplier that turns the table sequence into table ids (2^64 / φ, odd).
pub const TABLE_ID_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Azure's limit on stored access policies per table.
pub const MAX_ACCESS_POLICIES: usize = 5;

/// Range ids handed out by the meta group start here, above every bootstrap range id (at most 257).
pub const FIRST_ALLOCATED_RANGE_ID: u64 = 1 << 20;

/// The range id an `AllocateRangeId` command at meta log index `index` hands out: distinct indexes give
/// distinct ids, so no two splits ever name their new range alike.
pub fn range_id_at(index: u64) -> u64 {
    FIRST_ALLOCATED_RANGE_ID.saturating_add(index)
}

/// The id of the `seq`-th table ever created.
pub fn table_id(seq: u64) -> u64 {
    seq.wrapping_mul(TABLE_ID_MULTIPLIER)
}

/// The meta group's state machine. The catalog lives in the engine only; the lock manager's state is
/// also kept in memory by its host (and rebuilt from the engine).
#[derive(Clone)]
pub struct MetaStateMachine {
    locks: std::sync::Arc<crate::locks::LockHost>,
    /// The node's member list, told of each node the group records.
    members: Option<std::sync::Arc<crate::members::Members>>,
}

impl Default for MetaStateMachine {
    fn default() -> Self {
        MetaStateMachine::new()
    }
}

impl MetaStateMachine {
    /// A meta state machine with an empty lock manager on the system clock (tests).
    pub fn new() -> Self {
        MetaStateMachine {
            locks: crate::locks::LockHost::new(std::sync::Arc::new(
                crate::clock::SystemClock::default(),
            )),
            members: None,
        }
    }

    /// The meta group's state machine of a node, sharing `locks` with the node's lock service.
    pub fn with_locks(locks: std::sync::Arc<crate::locks::LockHost>) -> Self {
        MetaStateMachine {
            locks,
            members: None,
        }
    }

    /// Tells `members` of every node this group records (and of all of them after a snapshot).
    pub fn with_members(mut self, members: std::sync::Arc<crate::members::Members>) -> Self {
        self.members = Some(members);
        self
    }
}

enum Failure {
    Result(Error),
    Fatal(ApplyError),
}

impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Self {
        Failure::Fatal(e)
    }
}

/// Reads and decodes a catalog value during apply, where any failure is fatal.
fn read_record(engine: &dyn Engine, key: &[u8]) -> Result<Option<TableRecord>, ApplyError> {
    decode_record(
        engine
            .get(Cf::Meta, key)
            .map_err(|e| ApplyError(format!("reading the catalog: {e}")))?,
    )
    .map_err(|e| ApplyError(format!("{}: catalog record: {}", e.code, e.message)))
}

fn decode_record(bytes: Option<Vec<u8>>) -> Result<Option<TableRecord>> {
    bytes
        .map(|b| {
            TableRecord::decode(unseal(&b)?).map_err(|e| {
                Error::new(
                    ErrorCode::DataCorrupted,
                    format!("a catalog record does not parse: {e}"),
                )
            })
        })
        .transpose()
}

fn folded(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn create_table(
    engine: &dyn Engine,
    batch: &mut WriteBatch,
    account: String,
    name: String,
) -> Result<Kind, Failure> {
    let name = TableName::new(&name).map_err(Failure::Result)?;
    let key = keys::catalog_key(&account, &name.folded());
    if read_record(engine, &key)?.is_some() {
        return Err(Failure::Result(Error::from_code(
            ErrorCode::TableAlreadyExists,
        )));
    }
    let seq_key = keys::table_seq_key();
    let seq = match engine
        .get(Cf::Meta, &seq_key)
        .map_err(|e| ApplyError(format!("reading the sequence: {e}")))?
    {
        None => 1,
        Some(bytes) => {
            let body = unseal(&bytes).map_err(|e| ApplyError(format!("table sequence: {e}")))?;
            let raw: [u8; 8] = body
                .try_into()
                .map_err(|_| ApplyError(format!("table sequence of {} bytes", body.len())))?;
            u64::from_be_bytes(raw)
        }
    };
    let record = TableRecord {
        account,
        name: name.as_str().to_string(),
        id: table_id(seq),
        policies: Vec::new(),
    };
    batch.put(Cf::Meta, seq_key, seal(&seq.wrapping_add(1).to_be_bytes()));
    batch.put(Cf::Meta, key, seal(&record.encode_to_vec()));
    Ok(Kind::Table(record))
}

fn delete_table(
    engine: &dyn Engine,
    batch: &mut WriteBatch,
    account: &str,
    name: &str,
) -> Result<Kind, Failure> {
    let key = keys::catalog_key(account, &folded(name));
    let Some(record) = read_record(engine, &key)? else {
        return Err(Failure::Result(Error::from_code(
            ErrorCode::ResourceNotFound,
        )));
    };
    batch.delete(Cf::Meta, key);
    batch.put(
        Cf::Meta,
        keys::dropped_table_key(record.id),
        seal(&record.encode_to_vec()),
    );
    Ok(Kind::Table(record))
}

fn set_table_acl(
    engine: &dyn Engine,
    batch: &mut WriteBatch,
    acl: trestle_proto::internal::SetTableAcl,
) -> Result<Kind, Failure> {
    if acl.policies.len() > MAX_ACCESS_POLICIES {
        let msg = format!(
            "At most {MAX_ACCESS_POLICIES} signed identifiers may be set; got {}.",
            acl.policies.len()
        );
        return Err(Failure::Result(Error::new(
            ErrorCode::InvalidXmlDocument,
            msg,
        )));
    }
    let key = keys::catalog_key(&acl.account, &folded(&acl.name));
    let Some(mut record) = read_record(engine, &key)? else {
        return Err(Failure::Result(Error::from_code(ErrorCode::TableNotFound)));
    };
    record.policies = acl.policies;
    batch.put(Cf::Meta, key, seal(&record.encode_to_vec()));
    Ok(Kind::Table(record))
}

impl StateMachine for MetaStateMachine {
    fn apply(
        &mut self,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
        index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, ApplyError> {
        let kind = match MetaCommand::decode(command) {
            Ok(MetaCommand { kind: Some(kind) }) => kind,
            Ok(MetaCommand { kind: None }) => {
                return Ok(error_result(&Error::internal("empty meta command"), None));
            }
            Err(e) => {
                return Ok(error_result(
                    &Error::internal(format!("undecodable meta command: {e}")),
                    None,
                ));
            }
        };
        // Writes are staged privately and handed over only on success: a failed command writes nothing.
        let mut writes = WriteBatch::new();
        let result = match kind {
            meta_command::Kind::CreateTable(c) => {
                create_table(engine, &mut writes, c.account, c.name)
            }
            meta_command::Kind::DeleteTable(d) => {
                delete_table(engine, &mut writes, &d.account, &d.name)
            }
            meta_command::Kind::SetTableAcl(acl) => set_table_acl(engine, &mut writes, acl),
            meta_command::Kind::SetServiceProperties(p) => {
                writes.put(
                    Cf::Meta,
                    keys::service_properties_key(&p.account),
                    seal(p.xml.as_bytes()),
                );
                Ok(Kind::Done(true))
            }
            meta_command::Kind::Lock(c) => self
                .locks
                .apply(&mut writes, index, c)
                .map_err(Failure::Result),
            meta_command::Kind::AllocateRangeId(_) => Ok(Kind::RangeId(range_id_at(index))),
            meta_command::Kind::RegisterNode(node) => register_node(engine, &mut writes, &node)
                .map(|new| {
                    if new && let Some(members) = &self.members {
                        members.learn(crate::members::peer_from_register(&node));
                    }
                    Kind::Done(new)
                }),
        };
        match result {
            Ok(kind) => {
                batch.extend(writes);
                Ok(encode_result(kind))
            }
            Err(Failure::Result(error)) => Ok(error_result(&error, None)),
            Err(Failure::Fatal(e)) => Err(e),
        }
    }

    fn on_snapshot_restored(&mut self, engine: &dyn Engine) -> Result<(), ApplyError> {
        if let Some(members) = &self.members {
            members.load_registered(engine).map_err(ApplyError)?;
        }
        self.locks.reload(engine)
    }
}

/// Records a joining node; `Ok(false)` if it is recorded already at the same gRPC address. (Whether
/// its id is a configured peer's is checked by `Admin.Join`, which knows the configuration.)
fn register_node(
    engine: &dyn Engine,
    batch: &mut WriteBatch,
    node: &trestle_proto::internal::RegisterNode,
) -> Result<bool, Failure> {
    let peer = crate::members::peer_from_register(node);
    crate::members::validate_joiner(&peer).map_err(|e| Failure::Result(Error::invalid_input(e)))?;
    let key = keys::member_key(node.node_id);
    let known = engine
        .get(Cf::Meta, &key)
        .map_err(|e| ApplyError(format!("reading the members: {e}")))?
        .map(|b| {
            let body = unseal(&b).map_err(|e| ApplyError(format!("a member record: {e}")))?;
            trestle_proto::internal::RegisterNode::decode(body)
                .map_err(|e| ApplyError(format!("a member record does not parse: {e}")))
        })
        .transpose()?
        .map(|n| crate::members::peer_from_register(&n));
    let new = crate::members::check_join(known.as_slice(), &peer)
        .map_err(|e| Failure::Result(Error::new(ErrorCode::NodeAlreadyExists, e)))?;
    if new {
        batch.put(Cf::Meta, key, seal(&node.encode_to_vec()));
    }
    Ok(new)
}

fn engine_error(e: trestle_engine::Error) -> Error {
    Error::internal(format!("reading the catalog: {e}"))
}

/// The catalog record of table `name` (any case) of `account`.
pub fn get_table(engine: &dyn Engine, account: &str, name: &str) -> Result<Option<TableRecord>> {
    decode_record(
        engine
            .get(Cf::Meta, &keys::catalog_key(account, &folded(name)))
            .map_err(engine_error)?,
    )
}

/// Up to `limit` (at least 1) tables of `account` in folded-name order, from `start` (inclusive, any
/// case) on, and the name of the next table when more follow.
pub fn list_tables(
    engine: &dyn Engine,
    account: &str,
    start: Option<&str>,
    limit: usize,
) -> Result<(Vec<TableRecord>, Option<String>)> {
    let prefix = keys::catalog_prefix(account);
    let from = start.map_or_else(
        || prefix.clone(),
        |s| keys::catalog_key(account, &folded(s)),
    );
    let end = keys::prefix_end(&prefix);
    let snapshot = engine.snapshot();
    let mut tables = Vec::new();
    for kv in snapshot
        .scan(Cf::Meta, &from, end.as_deref())
        .map_err(engine_error)?
    {
        let (_, value) = kv.map_err(engine_error)?;
        let Some(record) = decode_record(Some(value))? else {
            continue;
        };
        if tables.len() == limit.max(1) {
            return Ok((tables, Some(record.name)));
        }
        tables.push(record);
    }
    Ok((tables, None))
}

/// The service properties document of `account`, if one was ever set.
pub fn get_service_properties(engine: &dyn Engine, account: &str) -> Result<Option<String>> {
    let Some(bytes) = engine
        .get(Cf::Meta, &keys::service_properties_key(account))
        .map_err(engine_error)?
    else {
        return Ok(None);
    };
    let body = unseal(&bytes)?;
    String::from_utf8(body.to_vec())
        .map(Some)
        .map_err(|_| Error::new(ErrorCode::DataCorrupted, "service properties are not UTF-8"))
}

/// Every deleted table's record, by id.
pub fn dropped_tables(engine: &dyn Engine) -> Result<Vec<TableRecord>> {
    let prefix = keys::dropped_tables_prefix();
    let end = keys::prefix_end(&prefix);
    let snapshot = engine.snapshot();
    let mut out = Vec::new();
    for kv in snapshot
        .scan(Cf::Meta, &prefix, end.as_deref())
        .map_err(engine_error)?
    {
        out.extend(decode_record(Some(kv.map_err(engine_error)?.1))?);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "meta_sm_tests.rs"]
mod tests;
