//! The durable [`Engine`]: RocksDB with one column family per [`Cf`]. This is the only file in Trestle that
//! names RocksDB.
//!
//! Layout and tuning. The three column families share one LRU block cache, and their memtables are
//! charged to that cache by a write buffer manager that flushes once they pass
//! [`RocksConfig::memtable_budget_mb`] in total, so RocksDB's memory is bounded by
//! [`RocksConfig::block_cache_mb`] whatever the mix of load (three column families × several memtables
//! each would otherwise be the largest use of memory). Index and filter blocks live in that cache too,
//! for the same reason: partitioned, with the top level and L0's pinned. The column
//! families are tuned for what they hold:
//! - `raft`: an append-mostly log that is read back soon after it is written (usually from the memtable)
//!   and range-deleted after log compaction. Lookups hit existing keys, so bloom filters would only cost
//!   memory, and compressing short-lived entries would only cost CPU: neither is used.
//! - `data` and `meta`: long-lived entities and catalog records read by point gets that often miss
//!   (inserts check for an existing entity), so they get whole-key bloom filters and LZ4.
//!
//! Invariants:
//! - every [`WriteBatch`] becomes one `rocksdb::WriteBatch`, so it is atomic across column families through
//!   the shared WAL; `sync = true` fsyncs the WAL, which also covers every earlier unsynced write. An empty
//!   synced batch still syncs the WAL, so callers may use one as a barrier.
//! - a `DeleteRange` whose end is not after its start deletes nothing; it is dropped before it reaches
//!   RocksDB, which rejects inverted ranges.
//! - column families are opened (and created if missing) at [`RocksEngine::open`]; afterwards a missing
//!   handle is reported as [`Error::Backend`], never a panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBCompressionType, DBIteratorWithThreadMode, Direction, IteratorMode, Options, ReadOptions,
    SnapshotWithThreadMode, WriteBufferManager, WriteOptions,
};

use crate::{Cf, Engine, Error, KvIter, Result, Snapshot, WriteBatch, WriteOp};

const MIB: usize = 1 << 20;

/// RocksDB tuning, one table of the node config (see [`RocksConfig::default`] for the values used).
#[derive(serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RocksConfig {
    /// The LRU block cache shared by all column families (data, index and filter blocks, and the
    /// memtables' memory), in MiB: RocksDB's memory budget.
    pub block_cache_mb: usize,
    /// The memtables of all column families together, in MiB (charged to the block cache); past it one
    /// is flushed. Default: half of `block_cache_mb`.
    pub memtable_budget_mb: Option<usize>,
    /// Memtable size of each column family, in MiB.
    pub write_buffer_mb: usize,
    /// Memtables per column family: one takes writes while the others wait to be flushed.
    pub max_write_buffer_number: u32,
    /// Threads shared by flushes and compactions.
    pub max_background_jobs: u32,
    /// When the WAL grows past this, RocksDB flushes the column families that pin its oldest file, so a
    /// quiet column family cannot make recovery replay an unbounded WAL. In MiB.
    pub max_total_wal_mb: usize,
    /// Bloom filter bits per key for the `data` and `meta` column families; `0` turns filters off.
    pub bloom_bits_per_key: f64,
}

impl Default for RocksConfig {
    fn default() -> Self {
        // About 200 MiB of RocksDB per node: the service's target is a node under 300 MiB of RSS.
        RocksConfig {
            block_cache_mb: 192,
            memtable_budget_mb: None,
            write_buffer_mb: 32,
            max_write_buffer_number: 3,
            // The target machines are small; compactions must not starve the Raft and request threads.
            max_background_jobs: 2,
            max_total_wal_mb: 512,
            bloom_bits_per_key: 10.0,
        }
    }
}

impl RocksConfig {
    /// Small buffers and cache: tests open many engines at once.
    pub fn for_test() -> Self {
        RocksConfig {
            block_cache_mb: 8,
            memtable_budget_mb: None,
            write_buffer_mb: 4,
            max_write_buffer_number: 2,
            max_background_jobs: 1,
            max_total_wal_mb: 64,
            bloom_bits_per_key: 10.0,
        }
    }

    /// Rejects settings RocksDB would silently misread or that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: &str| Err(Error::Backend(format!("invalid rocksdb config: {why}")));
        if self.block_cache_mb == 0 {
            return invalid("block-cache-mb must be at least 1");
        }
        if !(1..=4096).contains(&self.write_buffer_mb) {
            return invalid("write-buffer-mb must be in 1..=4096");
        }
        if let Some(budget) = self.memtable_budget_mb
            && !(1..=self.block_cache_mb).contains(&budget)
        {
            return invalid(
                "memtable-budget-mb must be in 1..=block-cache-mb (memtables are charged to the cache)",
            );
        }
        if !(2..=64).contains(&self.max_write_buffer_number) {
            return invalid("max-write-buffer-number must be in 2..=64");
        }
        if !(1..=64).contains(&self.max_background_jobs) {
            return invalid("max-background-jobs must be in 1..=64");
        }
        if self.max_total_wal_mb < self.write_buffer_mb {
            return invalid("max-total-wal-mb must be at least write-buffer-mb");
        }
        if !(0.0..=64.0).contains(&self.bloom_bits_per_key) {
            return invalid("bloom-bits-per-key must be in 0..=64");
        }
        Ok(())
    }

    /// The memtable budget in MiB: as configured, else half the block cache.
    pub fn memtable_budget(&self) -> usize {
        self.memtable_budget_mb
            .unwrap_or(self.block_cache_mb / 2)
            .max(1)
    }

    fn db_options(&self, cache: &Cache) -> Options {
        let mut opts = Options::default();
        // Memtables charged to the block cache, flushed past the budget; writers are not stalled (a
        // stalled Raft driver would stop heartbeats and cause elections).
        opts.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager_with_cache(
            self.memtable_budget().saturating_mul(MIB),
            false,
            cache.clone(),
        ));
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(c_int(self.max_background_jobs));
        opts.set_max_total_wal_size(mib(self.max_total_wal_mb));
        // Spread SST writeback over time instead of one large fsync at the end of each file, which would
        // stall the synced WAL writes of the Raft log behind it.
        opts.set_bytes_per_sync(MIB as u64);
        // RocksDB's info logs are for humans; without a cap a long-lived node collects them forever.
        opts.set_keep_log_file_num(4);
        opts.set_max_log_file_size(16 * MIB);
        opts
    }

    fn cf_options(&self, cf: Cf, cache: &Cache) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        // Index and filter blocks live in the (bounded) cache, so memory does not grow with the data. They
        // are partitioned: a large SST's monolithic index block (hundreds of KB, LZ4) evicted by write
        // load had to be read and decompressed again by every point read (reads fell from 11.8 k/s to
        // 2.8 k/s after a 300 k-entity load, 63 % of the CPU in LZ4). With partitions a read needs the
        // pinned top level plus one 4 KiB partition.
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_pin_top_level_index_and_filter(true);

        let mut opts = Options::default();
        opts.set_write_buffer_size(self.write_buffer_mb * MIB);
        opts.set_max_write_buffer_number(c_int(self.max_write_buffer_number));
        opts.set_level_compaction_dynamic_level_bytes(true);
        match cf {
            Cf::Raft => opts.set_compression_type(DBCompressionType::None),
            Cf::Data | Cf::Meta => {
                if self.bloom_bits_per_key > 0.0 {
                    // Full (not block-based) filters: one probe per SST instead of one per block.
                    table.set_bloom_filter(self.bloom_bits_per_key, false);
                }
                opts.set_compression_type(DBCompressionType::Lz4);
            }
        }
        opts.set_block_based_table_factory(&table);
        opts
    }
}

fn mib(n: usize) -> u64 {
    (n as u64).saturating_mul(MIB as u64)
}

/// `validate` bounds every count RocksDB takes as a C int, so the saturation never triggers.
fn c_int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn backend(e: rocksdb::Error) -> Error {
    Error::Backend(e.to_string())
}

/// A RocksDB database with Trestle's column families. Clones share the same open database; it is closed
/// when the last clone (and every snapshot, which borrows one) is dropped.
#[derive(Clone)]
pub struct RocksEngine {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    path: PathBuf,
}

impl RocksEngine {
    /// Opens (creating if needed) the database at `path` with every column family of [`Cf::ALL`].
    pub fn open(path: &Path, cfg: &RocksConfig) -> Result<RocksEngine> {
        cfg.validate()?;
        let cache = Cache::new_lru_cache(cfg.block_cache_mb.saturating_mul(MIB));
        let cfs = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cfg.cf_options(cf, &cache)));
        let db = DB::open_cf_descriptors(&cfg.db_options(&cache), path, cfs).map_err(backend)?;
        tracing::info!(path = %path.display(), ?cfg, "opened rocksdb engine");
        Ok(RocksEngine {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
            }),
        })
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Flushes every column family's memtables to SST files and waits for it. Not needed for durability
    /// (the WAL provides that); useful before a checkpoint and in tests that must read from SSTs.
    pub fn flush(&self) -> Result<()> {
        for cf in Cf::ALL {
            self.inner.db.flush_cf(self.cf(cf)?).map_err(backend)?;
        }
        Ok(())
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily> {
        cf_handle(&self.inner.db, cf)
    }
}

fn cf_handle(db: &DB, cf: Cf) -> Result<&ColumnFamily> {
    db.cf_handle(cf.name())
        .ok_or_else(|| Error::Backend(format!("column family {:?} is not open", cf.name())))
}

/// Read options for `[_, end)`. The upper bound lets RocksDB stop at `end` inside its own iterators, so
/// range tombstones and keys past the range are never read.
fn range_options(end: Option<&[u8]>) -> ReadOptions {
    let mut opts = ReadOptions::default();
    if let Some(end) = end {
        opts.set_iterate_upper_bound(end);
    }
    opts
}

fn is_empty_range(start: &[u8], end: Option<&[u8]>) -> bool {
    end.is_some_and(|end| end <= start)
}

fn boxed<'a>(iter: DBIteratorWithThreadMode<'a, DB>) -> KvIter<'a> {
    Box::new(iter.map(|item| {
        item.map(|(k, v)| (k.into_vec(), v.into_vec()))
            .map_err(backend)
    }))
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.db.get_cf(self.cf(cf)?, key).map_err(backend)
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<KvIter<'a>> {
        let handle = self.cf(cf)?;
        if is_empty_range(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        let mode = IteratorMode::From(start, Direction::Forward);
        let iter = self
            .inner
            .db
            .iterator_cf_opt(handle, range_options(end), mode);
        Ok(boxed(iter))
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let db = &self.inner.db;
        if batch.is_empty() {
            // Keep the contract that a synced write makes every earlier write durable.
            return if sync {
                db.flush_wal(true).map_err(backend)
            } else {
                Ok(())
            };
        }
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                WriteOp::Put { cf, key, value } => rocks_batch.put_cf(self.cf(*cf)?, key, value),
                WriteOp::Delete { cf, key } => rocks_batch.delete_cf(self.cf(*cf)?, key),
                WriteOp::DeleteRange { cf, start, end } => {
                    if start < end {
                        rocks_batch.delete_range_cf(self.cf(*cf)?, start, end);
                    }
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        db.write_opt(rocks_batch, &opts).map_err(backend)
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        Box::new(RocksSnapshot {
            db: &self.inner.db,
            snapshot: self.inner.db.snapshot(),
        })
    }

    fn kind(&self) -> &'static str {
        "rocksdb"
    }
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// A RocksDB snapshot: pins a sequence number, so reads see exactly the writes before it. It borrows the
/// engine, which therefore outlives it.
struct RocksSnapshot<'a> {
    db: &'a DB,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl Snapshot for RocksSnapshot<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snapshot
            .get_cf(cf_handle(self.db, cf)?, key)
            .map_err(backend)
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<KvIter<'a>> {
        let handle = cf_handle(self.db, cf)?;
        if is_empty_range(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        let mode = IteratorMode::From(start, Direction::Forward);
        // `iterator_cf_opt` sets the snapshot on the read options.
        let iter = self
            .snapshot
            .iterator_cf_opt(handle, range_options(end), mode);
        Ok(boxed(iter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> RocksEngine {
        RocksEngine::open(dir, &RocksConfig::for_test()).unwrap()
    }

    #[test]
    fn reopening_keeps_synced_data_in_every_column_family() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = open(dir.path());
            let mut batch = WriteBatch::new();
            for cf in Cf::ALL {
                batch.put(cf, "k", cf.name());
            }
            batch.put(Cf::Raft, "doomed", "x");
            batch.delete_range(Cf::Raft, "d", "e");
            engine.write(&batch, true).unwrap();
            assert_eq!(engine.kind(), "rocksdb");
            assert_eq!(engine.path(), dir.path());
        }
        let engine = open(dir.path());
        for cf in Cf::ALL {
            assert_eq!(
                engine.get(cf, b"k").unwrap(),
                Some(cf.name().as_bytes().to_vec())
            );
        }
        assert_eq!(engine.get(Cf::Raft, b"doomed").unwrap(), None);
    }

    #[test]
    fn reads_merge_sst_files_memtables_and_range_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        let mut batch = WriteBatch::new();
        for i in 0u8..10 {
            batch.put(Cf::Data, [i], [i]);
        }
        engine.write(&batch, false).unwrap();
        engine.flush().unwrap();

        let mut batch = WriteBatch::new();
        batch.delete_range(Cf::Data, [2u8], [5u8]);
        batch.put(Cf::Data, [3u8], "new");
        engine.write(&batch, false).unwrap();

        assert_eq!(engine.get(Cf::Data, &[3]).unwrap(), Some(b"new".to_vec()));
        assert_eq!(engine.get(Cf::Data, &[4]).unwrap(), None);
        assert_eq!(engine.get(Cf::Data, &[42]).unwrap(), None); // a bloom-filter miss
        let keys: Vec<Vec<u8>> = engine
            .scan(Cf::Data, &[1], Some(&[7]))
            .unwrap()
            .map(|item| item.unwrap().0)
            .collect();
        assert_eq!(keys, [vec![1], vec![3], vec![5], vec![6]]);
    }

    #[test]
    fn clones_share_one_database() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        let clone = engine.clone();
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, "k", "v");
        clone.write(&batch, false).unwrap();
        engine.write(&WriteBatch::new(), true).unwrap(); // an empty synced batch is a WAL barrier
        assert_eq!(engine.get(Cf::Meta, b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn a_second_open_of_the_same_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _engine = open(dir.path());
        let err = RocksEngine::open(dir.path(), &RocksConfig::for_test()).unwrap_err();
        assert!(matches!(err, Error::Backend(_)), "{err}");
    }

    #[test]
    fn config_reads_kebab_case_toml_and_defaults_the_rest() {
        let cfg: RocksConfig =
            toml::from_str("block-cache-mb = 32\nmax-background-jobs = 4\n").unwrap();
        assert_eq!(cfg.block_cache_mb, 32);
        assert_eq!(cfg.max_background_jobs, 4);
        assert_eq!(cfg.write_buffer_mb, RocksConfig::default().write_buffer_mb);
        assert_eq!(cfg.memtable_budget(), 16, "half the block cache by default");
        cfg.validate().unwrap();
        assert!(toml::from_str::<RocksConfig>("block_cache_mb = 32").is_err());
        assert!(toml::from_str::<RocksConfig>("no-such-knob = 1").is_err());
    }

    #[test]
    fn validate_rejects_settings_that_cannot_work() {
        RocksConfig::default().validate().unwrap();
        RocksConfig::for_test().validate().unwrap();
        let bad = [
            RocksConfig {
                block_cache_mb: 0,
                ..RocksConfig::default()
            },
            RocksConfig {
                write_buffer_mb: 0,
                ..RocksConfig::default()
            },
            RocksConfig {
                max_write_buffer_number: 1,
                ..RocksConfig::default()
            },
            RocksConfig {
                memtable_budget_mb: Some(193),
                ..RocksConfig::default()
            },
            RocksConfig {
                memtable_budget_mb: Some(0),
                ..RocksConfig::default()
            },
            RocksConfig {
                max_background_jobs: 0,
                ..RocksConfig::default()
            },
            RocksConfig {
                max_total_wal_mb: 1,
                ..RocksConfig::default()
            },
            RocksConfig {
                bloom_bits_per_key: f64::NAN,
                ..RocksConfig::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
            let dir = tempfile::tempdir().unwrap();
            assert!(RocksEngine::open(dir.path(), &cfg).is_err());
        }
    }
}
