//! Trestle's storage engine seam: ordered key-value stores split into column families, written with
//! atomic (optionally synced) write batches and read through point gets, scans and consistent snapshots.
//!
//! Two implementations sit behind the same [`Engine`] trait: [`RocksEngine`] (durable, the only code in
//! Trestle that names RocksDB) and [`MemoryEngine`] (a BTreeMap per column family, for fast tests and
//! simulations). Key layout for every column family lives in [`keys`].
//!
//! Invariants every implementation keeps:
//! - a [`WriteBatch`] is applied atomically across column families, in order of its operations;
//! - a write with `sync = true` is durable when `write` returns (RocksDB: the WAL is fsynced; that
//!   fsync also covers every earlier unsynced write);
//! - a [`Snapshot`] sees exactly the writes that completed before it was taken.

mod batch;
pub mod keys;
mod memory;
mod rocks;
#[cfg(test)]
mod tests;

pub use batch::{WriteBatch, WriteOp};
pub use memory::MemoryEngine;
pub use rocks::{RocksConfig, RocksEngine};

/// Column families. Every write names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Raft logs, hard states, raft-local and apply states of every group.
    Raft,
    /// Entities of every table, keyed by [`keys::data_key`].
    Data,
    /// The meta group's catalog and the node's own identity.
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 3] = [Cf::Raft, Cf::Data, Cf::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Raft => "raft",
            Cf::Data => "data",
            Cf::Meta => "meta",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine error: {0}")]
    Backend(String),
    #[error("storage engine I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A key-value pair returned by scans.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An iterator over `[start, end)` of one column family, in key order.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair>> + 'a>;

/// A consistent read view.
pub trait Snapshot: Send + Sync {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Keys in `[start, end)` (`end = None`: to the end of the column family), ascending.
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<KvIter<'a>>;
}

/// An ordered, durable (or in-memory) key-value store with column families.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Keys in `[start, end)` of the current state, ascending. Not a snapshot: concurrent writes may or may
    /// not be seen; use [`Engine::snapshot`] for a consistent view.
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<KvIter<'a>>;
    /// Applies `batch` atomically; with `sync`, it is durable on return.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()>;
    fn snapshot(&self) -> Box<dyn Snapshot + '_>;
    /// A short name for logs and status ("rocksdb", "memory").
    fn kind(&self) -> &'static str;
}
