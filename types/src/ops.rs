//! The table service's operations in domain terms, shared by the front ends (REST, gRPC) and the node
//! that executes them.

use crate::entity::{ETag, Entity, EntityKey, IfMatch};
use crate::error::Error;
use crate::filter::Filter;
use crate::value::DateTime;

/// The kind of an entity write, as Azure names the operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// Insert Entity: fails with EntityAlreadyExists if the key exists.
    Insert,
    /// Update Entity: replace an existing entity; the condition defaults to `*`.
    Replace,
    /// Merge Entity: merge into an existing entity; the condition defaults to `*`.
    Merge,
    InsertOrReplace,
    InsertOrMerge,
    /// Delete Entity; the condition defaults to `*`.
    Delete,
}

/// One entity write. For deletes only the entity's keys matter.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOp {
    pub kind: WriteKind,
    pub entity: Entity,
    pub if_match: IfMatch,
}

impl WriteOp {
    pub fn key(&self) -> EntityKey {
        self.entity.key()
    }
}

/// What a successful write produced.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// The entity's new ETag; `None` after a delete.
    pub etag: Option<ETag>,
    /// The stored entity (with its timestamp) after inserts, replaces and merges; `None` after a delete.
    pub entity: Option<Entity>,
}

/// A batch failed: the 0-based index of the operation that failed (`None` when the batch as a whole is
/// invalid) and why. Nothing of the batch was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch operation {index:?} failed: {error}")]
pub struct BatchError {
    pub index: Option<usize>,
    pub error: Error,
}

/// A table as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The name with the case it was created with.
    pub name: String,
    /// Never reused: a deleted table's entities are never seen by a new table of the same name.
    pub id: u64,
    pub policies: Vec<AccessPolicy>,
}

/// A stored access policy (Azure's SignedIdentifier), referenced by a table SAS's `si`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    pub id: String,
    pub start: Option<DateTime>,
    pub expiry: Option<DateTime>,
    /// A subset of `raud`, in that order.
    pub permission: String,
}

/// One page of a query over a table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QuerySpec {
    pub filter: Option<Filter>,
    /// Property names to return; `None` returns all. Selected-but-absent properties are the front end's
    /// business (Azure returns them as null).
    pub select: Option<Vec<String>>,
    /// The most entities this page may return (at most 1000).
    pub top: Option<usize>,
    /// Resume at this key (inclusive), as returned in [`QueryPage::next`].
    pub continuation: Option<EntityKey>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryPage {
    pub entities: Vec<Entity>,
    /// The key of the next entity to return, when the query is not finished. A page may be empty and still
    /// carry a continuation (Azure does this when a page's time or partition budget runs out).
    pub next: Option<EntityKey>,
}
