//! The in-memory [`Engine`]: one `BTreeMap` per column family, for fast tests and simulations, with a
//! model of durability so tests can simulate power loss.
//!
//! Each column family's map sits behind an `Arc` and is copied on write: a snapshot is three `Arc`
//! clones, and a write copies a column family only while a snapshot (or a crash copy) still shares it.
//!
//! Durability is modelled the way RocksDB provides it. Besides the live maps the engine keeps a
//! `durable` copy and the log of batches written since the last synced write. A synced write first
//! applies that log and then itself to the durable copy, so the durable copy is always exactly what a
//! RocksDB WAL fsync would have made safe. [`MemoryEngine::crash_copy`] starts a new engine from the
//! durable copy, as a restart after power loss would.
//!
//! Invariants:
//! - `live` = `durable` + every batch in `unsynced`, applied in order;
//! - a batch is applied whole under the write lock, so readers never see part of one;
//! - applying a batch cannot fail or panic (inverted ranges are empty, not errors), which is why a
//!   poisoned lock is safe to recover: no writer can have left the maps half-updated.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{Cf, Engine, KvIter, KvPair, Result, Snapshot, WriteBatch, WriteOp};

type CfMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// One map per column family, indexed by [`cf_index`].
type Maps = [Arc<CfMap>; 3];

fn cf_index(cf: Cf) -> usize {
    match cf {
        Cf::Raft => 0,
        Cf::Data => 1,
        Cf::Meta => 2,
    }
}

/// An in-memory engine. Clones share the same data, like clones of a [`crate::RocksEngine`].
#[derive(Clone, Default)]
pub struct MemoryEngine {
    state: Arc<RwLock<State>>,
}

#[derive(Default)]
struct State {
    live: Maps,
    /// What survives a crash: the state as of the last synced write.
    durable: Maps,
    /// Batches written since the last synced write, oldest first.
    unsynced: Vec<WriteBatch>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        MemoryEngine::default()
    }

    /// A new, independent engine holding only what a power loss would have left: every write up to and
    /// including the last one written with `sync = true`. This engine is left unchanged.
    pub fn crash_copy(&self) -> MemoryEngine {
        self.crash_copy_keeping(0)
    }

    /// Like [`MemoryEngine::crash_copy`], but the first `unsynced` unsynced batches survive too (all of
    /// them if there are fewer), as when the OS had already written part of the WAL to disk before the
    /// power went out. Whatever survives is a prefix of the writes, never a subset with holes.
    pub fn crash_copy_keeping(&self, unsynced: usize) -> MemoryEngine {
        let state = self.read();
        let mut durable = state.durable.clone();
        for batch in state.unsynced.iter().take(unsynced) {
            apply(&mut durable, batch);
        }
        MemoryEngine {
            state: Arc::new(RwLock::new(State {
                live: durable.clone(),
                durable,
                unsynced: Vec::new(),
            })),
        }
    }

    /// The number of non-empty batches written since the last synced write: what a crash would lose.
    pub fn unsynced_batches(&self) -> usize {
        self.read().unsynced.len()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Recovering is safe: see the module invariants.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn map(&self, cf: Cf) -> Arc<CfMap> {
        Arc::clone(&self.read().live[cf_index(cf)])
    }
}

/// Applies `batch` to `maps` in order. Copies a column family's map only if it is shared and the
/// operation really changes it, so deletes of absent keys don't force a copy.
fn apply(maps: &mut Maps, batch: &WriteBatch) {
    for op in batch.ops() {
        match op {
            WriteOp::Put { cf, key, value } => {
                Arc::make_mut(&mut maps[cf_index(*cf)]).insert(key.clone(), value.clone());
            }
            WriteOp::Delete { cf, key } => {
                let map = &mut maps[cf_index(*cf)];
                if map.contains_key(key) {
                    Arc::make_mut(map).remove(key);
                }
            }
            WriteOp::DeleteRange { cf, start, end } => {
                let map = &mut maps[cf_index(*cf)];
                let doomed: Vec<Vec<u8>> = range(map, start, Some(end))
                    .map(|(k, _)| k.clone())
                    .collect();
                if !doomed.is_empty() {
                    let map = Arc::make_mut(map);
                    for key in doomed {
                        map.remove(&key);
                    }
                }
            }
        }
    }
}

/// The entries in `[start, end)`; empty (rather than a panic, as `BTreeMap::range` would) when `end`
/// is not after `start`.
fn range<'m>(
    map: &'m CfMap,
    start: &[u8],
    end: Option<&[u8]>,
) -> std::collections::btree_map::Range<'m, Vec<u8>, Vec<u8>> {
    match end {
        // `[start, start)` is a valid, empty range.
        Some(end) if end <= start => {
            map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(start)))
        }
        Some(end) => map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))),
        None => map.range::<[u8], _>((Bound::Included(start), Bound::Unbounded)),
    }
}

/// A scan over one column family that owns its map (an `Arc`, so it is also a consistent view) and
/// remembers where it is by key: it needs no borrow of the engine or its lock, so the caller may write
/// to the engine while iterating.
struct Scan {
    map: Arc<CfMap>,
    /// The next key to yield is the first one at (or, once something was yielded, after) this key.
    from: Vec<u8>,
    started: bool,
    end: Option<Vec<u8>>,
}

impl Scan {
    fn new(map: Arc<CfMap>, start: &[u8], end: Option<&[u8]>) -> Scan {
        Scan {
            map,
            from: start.to_vec(),
            started: false,
            end: end.map(<[u8]>::to_vec),
        }
    }
}

impl Iterator for Scan {
    type Item = Result<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        let end = self.end.as_deref();
        let mut entries = range(&self.map, &self.from, end);
        let (key, value) = if self.started {
            entries.find(|(k, _)| **k != self.from)?
        } else {
            entries.next()?
        };
        let pair = (key.clone(), value.clone());
        self.from.clone_from(key);
        self.started = true;
        Some(Ok(pair))
    }
}

impl Engine for MemoryEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read().live[cf_index(cf)].get(key).cloned())
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<KvIter<'a>> {
        Ok(Box::new(Scan::new(self.map(cf), start, end)))
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut guard = self.write_lock();
        let state = &mut *guard;
        apply(&mut state.live, batch);
        if sync {
            for earlier in state.unsynced.drain(..) {
                apply(&mut state.durable, &earlier);
            }
            apply(&mut state.durable, batch);
        } else if !batch.is_empty() {
            state.unsynced.push(batch.clone());
        }
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        Box::new(MemorySnapshot {
            maps: self.read().live.clone(),
        })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        let mut s = f.debug_struct("MemoryEngine");
        for cf in Cf::ALL {
            s.field(cf.name(), &state.live[cf_index(cf)].len());
        }
        s.field("unsynced_batches", &state.unsynced.len()).finish()
    }
}

/// The live maps as of the snapshot; later writes copy the maps they change instead of touching these.
struct MemorySnapshot {
    maps: Maps,
}

impl Snapshot for MemorySnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.maps[cf_index(cf)].get(key).cloned())
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<KvIter<'a>> {
        let map = &self.maps[cf_index(cf)];
        Ok(Box::new(
            range(map, start, end).map(|(k, v)| Ok((k.clone(), v.clone()))),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(engine: &MemoryEngine, key: &str, value: &str, sync: bool) {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, key, value);
        engine.write(&batch, sync).unwrap();
    }

    fn get(engine: &MemoryEngine, key: &str) -> Option<Vec<u8>> {
        engine.get(Cf::Data, key.as_bytes()).unwrap()
    }

    #[test]
    fn a_crash_loses_exactly_the_writes_after_the_last_sync() {
        let engine = MemoryEngine::new();
        put(&engine, "a", "1", false);
        put(&engine, "b", "1", true); // also makes "a" durable
        put(&engine, "a", "2", false);
        put(&engine, "c", "1", false);
        assert_eq!(engine.unsynced_batches(), 2);

        let restarted = engine.crash_copy();
        assert_eq!(get(&restarted, "a"), Some(b"1".to_vec()));
        assert_eq!(get(&restarted, "b"), Some(b"1".to_vec()));
        assert_eq!(get(&restarted, "c"), None);
        assert_eq!(restarted.unsynced_batches(), 0);

        // The crashed engine is untouched, and the copy is independent of it.
        assert_eq!(get(&engine, "a"), Some(b"2".to_vec()));
        put(&restarted, "d", "1", false);
        assert_eq!(get(&engine, "d"), None);
    }

    #[test]
    fn a_crash_may_keep_a_prefix_of_the_unsynced_writes() {
        let engine = MemoryEngine::new();
        put(&engine, "a", "1", false);
        put(&engine, "b", "1", false);
        let restarted = engine.crash_copy_keeping(1);
        assert_eq!(get(&restarted, "a"), Some(b"1".to_vec()));
        assert_eq!(get(&restarted, "b"), None);
        // What survived is on disk now: a second crash keeps it.
        assert_eq!(get(&restarted.crash_copy(), "a"), Some(b"1".to_vec()));
        assert_eq!(
            get(&engine.crash_copy_keeping(usize::MAX), "b"),
            Some(b"1".to_vec())
        );
    }

    #[test]
    fn an_empty_synced_write_makes_earlier_writes_durable() {
        let engine = MemoryEngine::new();
        put(&engine, "a", "1", false);
        engine.write(&WriteBatch::new(), true).unwrap();
        assert_eq!(engine.unsynced_batches(), 0);
        assert_eq!(get(&engine.crash_copy(), "a"), Some(b"1".to_vec()));
    }

    #[test]
    fn clones_share_data() {
        let engine = MemoryEngine::new();
        let clone = engine.clone();
        put(&clone, "a", "1", false);
        assert_eq!(get(&engine, "a"), Some(b"1".to_vec()));
        assert_eq!(engine.kind(), "memory");
    }

    #[test]
    fn a_scan_holds_no_lock_so_the_caller_may_write_while_iterating() {
        let engine = MemoryEngine::new();
        put(&engine, "a", "1", false);
        put(&engine, "b", "1", false);
        let mut seen = Vec::new();
        for item in engine.scan(Cf::Data, b"", None).unwrap() {
            let (key, _) = item.unwrap();
            // Would deadlock if the scan held the read lock.
            put(&engine, "z", "1", false);
            seen.push(key);
        }
        assert_eq!(seen, [b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn a_snapshot_shares_maps_until_a_write_copies_them() {
        let engine = MemoryEngine::new();
        put(&engine, "a", "1", false);
        let snapshot = engine.snapshot();
        assert_eq!(Arc::strong_count(&engine.map(Cf::Data)), 3); // engine, snapshot, this call
        put(&engine, "a", "2", false);
        assert_eq!(Arc::strong_count(&engine.map(Cf::Data)), 2); // copied: engine, this call
        assert_eq!(snapshot.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
    }
}
