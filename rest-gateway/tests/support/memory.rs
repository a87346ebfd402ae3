//! An in-memory [`TableService`] for tests and the development harness: one mutex over a map of
//! accounts → tables → entities. No replication, no persistence; it exists to exercise the gateway.
//!
//! Semantics follow what the storage node promises through the trait: table names are case-insensitive
//! and case-preserving, timestamps (and so ETags) strictly increase, writes check If-Match, batches are
//! all-or-nothing, queries return (PartitionKey, RowKey) order with at most `top` (default 1000) entities
//! and a continuation naming the next key.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use trestle_rest_gateway::{Fencing, TableService};
use trestle_types::{
    AccessPolicy, BatchError, DateTime, Entity, EntityKey, Error, ErrorCode, IfMatch, QueryPage,
    QuerySpec, Result, TableInfo, TableName, WriteKind, WriteOp, WriteOutcome,
};

#[derive(Default)]
struct Table {
    info: Option<TableInfo>,
    entities: BTreeMap<EntityKey, Entity>,
}

#[derive(Default)]
struct Account {
    /// Keyed by the case-folded name.
    tables: BTreeMap<String, Table>,
    properties: Option<String>,
}

#[derive(Default)]
struct State {
    accounts: BTreeMap<String, Account>,
    next_table_id: u64,
    last_timestamp: DateTime,
}

/// The in-memory table service.
#[derive(Default)]
pub struct MemoryTableService {
    state: Mutex<State>,
}

impl MemoryTableService {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

impl State {
    fn stamp(&mut self) -> DateTime {
        let now = DateTime::now();
        self.last_timestamp = if now > self.last_timestamp {
            now
        } else {
            DateTime(self.last_timestamp.0 + 1)
        };
        self.last_timestamp
    }

    fn table_mut(&mut self, account: &str, table: &str) -> Result<&mut Table> {
        self.accounts
            .get_mut(account)
            .and_then(|a| a.tables.get_mut(&table.to_ascii_lowercase()))
            .ok_or_else(|| Error::from_code(ErrorCode::TableNotFound))
    }
}

/// Applies one write to a table's entity map (a scratch copy, for batches).
fn apply(
    entities: &mut BTreeMap<EntityKey, Entity>,
    op: WriteOp,
    timestamp: DateTime,
) -> Result<WriteOutcome> {
    let key = op.key();
    let existing = entities.get(&key);
    let check = |existing: Option<&Entity>, if_match: IfMatch| -> Result<()> {
        match (existing, if_match) {
            (_, IfMatch::None) => Ok(()),
            (None, _) => Err(Error::from_code(ErrorCode::ResourceNotFound)),
            (Some(_), IfMatch::Any) => Ok(()),
            (Some(e), IfMatch::ETag(etag)) if e.etag() == Some(etag) => Ok(()),
            (Some(_), IfMatch::ETag(_)) => {
                Err(Error::from_code(ErrorCode::UpdateConditionNotSatisfied))
            }
        }
    };
    let mut entity = op.entity;
    entity.timestamp = Some(timestamp);
    match op.kind {
        WriteKind::Insert => {
            if existing.is_some() {
                return Err(Error::from_code(ErrorCode::EntityAlreadyExists));
            }
        }
        WriteKind::Replace | WriteKind::Merge | WriteKind::Delete => {
            let condition = if op.if_match == IfMatch::None {
                IfMatch::Any
            } else {
                op.if_match
            };
            check(existing, condition)?;
        }
        WriteKind::InsertOrReplace | WriteKind::InsertOrMerge => {}
    }
    match op.kind {
        WriteKind::Delete => {
            entities.remove(&key);
            return Ok(WriteOutcome {
                etag: None,
                entity: None,
            });
        }
        WriteKind::Merge | WriteKind::InsertOrMerge => {
            if let Some(old) = existing {
                let mut merged = old.properties.clone();
                merged.extend(entity.properties);
                entity.properties = merged;
            }
        }
        _ => {}
    }
    entities.insert(key, entity.clone());
    Ok(WriteOutcome {
        etag: entity.etag(),
        entity: Some(entity),
    })
}

#[async_trait]
impl TableService for MemoryTableService {
    async fn create_table(&self, account: &str, table: &TableName) -> Result<TableInfo> {
        self.with(|state| {
            state.next_table_id += 1;
            let id = state.next_table_id;
            let tables = &mut state
                .accounts
                .entry(account.to_string())
                .or_default()
                .tables;
            if tables.contains_key(&table.folded()) {
                return Err(Error::from_code(ErrorCode::TableAlreadyExists));
            }
            let info = TableInfo {
                name: table.as_str().to_string(),
                id,
                policies: Vec::new(),
            };
            tables.insert(
                table.folded(),
                Table {
                    info: Some(info.clone()),
                    entities: BTreeMap::new(),
                },
            );
            Ok(info)
        })
    }

    async fn delete_table(&self, account: &str, table: &str) -> Result<()> {
        self.with(|state| {
            state
                .accounts
                .get_mut(account)
                .and_then(|a| a.tables.remove(&table.to_ascii_lowercase()))
                .map(|_| ())
                .ok_or_else(|| Error::from_code(ErrorCode::ResourceNotFound))
        })
    }

    async fn get_table(&self, account: &str, table: &str) -> Result<TableInfo> {
        self.with(|state| {
            let t = state.table_mut(account, table)?;
            t.info
                .clone()
                .ok_or_else(|| Error::from_code(ErrorCode::TableNotFound))
        })
    }

    async fn list_tables(
        &self,
        account: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TableInfo>, Option<String>)> {
        self.with(|state| {
            let Some(a) = state.accounts.get(account) else {
                return Ok((Vec::new(), None));
            };
            let start = start.map(str::to_ascii_lowercase).unwrap_or_default();
            let mut iter = a.tables.range(start..).filter_map(|(_, t)| t.info.clone());
            let page: Vec<TableInfo> = iter.by_ref().take(limit).collect();
            let next = iter.next().map(|t| t.name);
            Ok((page, next))
        })
    }

    async fn set_table_acl(
        &self,
        account: &str,
        table: &str,
        policies: Vec<AccessPolicy>,
    ) -> Result<()> {
        self.with(|state| {
            let t = state.table_mut(account, table)?;
            if let Some(info) = t.info.as_mut() {
                info.policies = policies;
            }
            Ok(())
        })
    }

    async fn write(
        &self,
        account: &str,
        table: &str,
        op: WriteOp,
        _fencing: Option<Fencing>,
    ) -> Result<WriteOutcome> {
        self.with(|state| {
            let timestamp = state.stamp();
            let t = state.table_mut(account, table)?;
            apply(&mut t.entities, op, timestamp)
        })
    }

    async fn batch(
        &self,
        account: &str,
        table: &str,
        ops: Vec<WriteOp>,
        _fencing: Option<Fencing>,
    ) -> Result<Vec<WriteOutcome>, BatchError> {
        self.with(|state| {
            let timestamp = state.stamp();
            let t = state
                .table_mut(account, table)
                .map_err(|error| BatchError {
                    index: Some(0),
                    error,
                })?;
            let mut scratch = t.entities.clone();
            let mut outcomes = Vec::with_capacity(ops.len());
            for (index, op) in ops.into_iter().enumerate() {
                outcomes.push(
                    apply(&mut scratch, op, timestamp).map_err(|error| BatchError {
                        index: Some(index),
                        error,
                    })?,
                );
            }
            t.entities = scratch;
            Ok(outcomes)
        })
    }

    async fn get_entity(
        &self,
        account: &str,
        table: &str,
        partition_key: &str,
        row_key: &str,
    ) -> Result<Entity> {
        self.with(|state| {
            let t = state.table_mut(account, table)?;
            t.entities
                .get(&EntityKey::new(partition_key, row_key))
                .cloned()
                .ok_or_else(|| Error::from_code(ErrorCode::ResourceNotFound))
        })
    }

    async fn query(&self, account: &str, table: &str, spec: QuerySpec) -> Result<QueryPage> {
        self.with(|state| {
            let t = state.table_mut(account, table)?;
            let top = spec.top.unwrap_or(1000).min(1000);
            let start = spec.continuation.unwrap_or_else(|| EntityKey::new("", ""));
            let mut matching = t
                .entities
                .range(start..)
                .map(|(_, e)| e)
                .filter(|e| spec.filter.as_ref().is_none_or(|f| f.matches(e)));
            let mut entities: Vec<Entity> = matching.by_ref().take(top).cloned().collect();
            let next = matching.next().map(|e| e.key());
            if let Some(select) = &spec.select {
                for e in &mut entities {
                    e.properties.retain(|name, _| select.contains(name));
                }
            }
            Ok(QueryPage { entities, next })
        })
    }

    async fn get_service_properties(&self, account: &str) -> Result<Option<String>> {
        self.with(|state| {
            Ok(state
                .accounts
                .get(account)
                .and_then(|a| a.properties.clone()))
        })
    }

    async fn set_service_properties(&self, account: &str, xml: String) -> Result<()> {
        self.with(|state| {
            state
                .accounts
                .entry(account.to_string())
                .or_default()
                .properties = Some(xml);
            Ok(())
        })
    }
}
