//! The partition map: which Raft group (range) holds which keys.
//!
//! Range 1 is the meta group: `Cf::Meta` from `[META_GROUP_PREFIX]` to the end (the catalog, later the
//! lock table). Every other range holds a contiguous span `[start, end)` of `Cf::Data`. At bootstrap
//! there are `n` data ranges, ids `2..=n+1`, cutting the table-id space (u64) into equal slices: range
//! `i` starts at the 8-byte big-endian table id `i · 2^64 / n`, except the first, which starts at the
//! empty key, and the last, which runs to the end of the column family. Table ids are spread over the
//! whole u64 space by the catalog (see `meta_sm`), so tables spread evenly over these ranges.
//!
//! Invariants:
//! - the data ranges cover all of `Cf::Data` without gaps or overlaps: the first starts at the empty
//!   key, each one ends where the next starts, the last has no end;
//! - a range boundary is always the start of a table or of a partition (`table_id ‖ esc(PartitionKey)`),
//!   never inside a PartitionKey, so an entity group transaction always lands in one range.
//!
//! Lookups go by key (a binary search over range starts), never by arithmetic on table ids.
//!
//! [`RangeMap`] is the bootstrap layout only. After bootstrap each range's descriptor is replicated
//! state of the range itself (its own log splits it; see `trestle_replication`), and [`Ranges`] is a
//! node's live view: every hosted replica's descriptor as its log last set it, updated as entries apply.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use trestle_engine::{Cf, keys};
use trestle_replication::{Epoch, GroupDesc, Span};

/// The meta group's range id.
pub const META_RANGE_ID: u64 = 1;

/// How many data ranges a cluster starts with unless configured otherwise.
pub const DEFAULT_INITIAL_RANGES: usize = 4;

/// One data range: its id, its span of `Cf::Data` and its voters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDesc {
    pub id: u64,
    /// First key of the range (inclusive).
    pub start: Vec<u8>,
    /// End of the range (exclusive); `None`: to the end of `Cf::Data`.
    pub end: Option<Vec<u8>>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The old voters while the range is in a joint configuration (see `GroupDesc`).
    pub voters_outgoing: Vec<u64>,
    pub epoch: Epoch,
}

impl RangeDesc {
    /// The data range a replication descriptor describes (`None` for the meta group).
    pub fn from_group(desc: &GroupDesc) -> Option<RangeDesc> {
        (desc.span.cf == Cf::Data).then(|| RangeDesc {
            id: desc.id,
            start: desc.span.start.clone(),
            end: desc.span.end.clone(),
            voters: desc.voters.clone(),
            learners: desc.learners.clone(),
            voters_outgoing: desc.voters_outgoing.clone(),
            epoch: desc.epoch,
        })
    }

    /// Whether the range and `other` share a key.
    pub fn overlaps(&self, other: &RangeDesc) -> bool {
        self.span().overlaps(&other.span())
    }

    /// Whether `key` lies in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// Whether any key of table `table_id` lies in this range.
    pub fn overlaps_table(&self, table_id: u64) -> bool {
        let (start, end) = table_span(table_id);
        let starts_before_table_end = end.as_deref().is_none_or(|e| self.start.as_slice() < e);
        let ends_after_table_start = self.end.as_deref().is_none_or(|e| start.as_slice() < e);
        starts_before_table_end && ends_after_table_start
    }

    /// The replicated keyspace of the range.
    pub fn span(&self) -> Span {
        Span {
            cf: Cf::Data,
            start: self.start.clone(),
            end: self.end.clone(),
        }
    }

    /// What the replication layer needs to host the range.
    pub fn group_desc(&self) -> GroupDesc {
        GroupDesc {
            id: self.id,
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters_outgoing.clone(),
            span: self.span(),
            epoch: self.epoch,
        }
    }
}

/// `tables [a, b)` with table ids in hex, for status pages.
impl fmt::Display for RangeDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "data [{}, {})",
            describe_key(&self.start),
            self.end.as_deref().map_or("end".into(), describe_key)
        )
    }
}

/// A `Cf::Data` key for status output.
pub fn describe_key(key: &[u8]) -> String {
    if key.is_empty() {
        return "start".into();
    }
    match keys::decode_data_key(key) {
        Some((table, pk, rk)) => format!("table {table:016x} pk {pk:?} rk {rk:?}"),
        None => match key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(id) if key.len() == 8 => format!("table {:016x}", u64::from_be_bytes(id)),
            _ => format!("{key:02x?}"),
        },
    }
}

/// The keys of one table: `[table_prefix, prefix_end(table_prefix))`.
pub fn table_span(table_id: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = keys::table_prefix(table_id);
    let end = keys::prefix_end(&start);
    (start, end)
}

/// The cluster's ranges: the meta group and the data ranges, sorted by start key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeMap {
    meta_voters: Vec<u64>,
    /// Sorted by `start`; never empty; `data[0].start` is the empty key (see the module invariants).
    data: Vec<RangeDesc>,
}

impl RangeMap {
    /// The bootstrap layout: `n` data ranges (at least one) splitting the table-id space evenly, every
    /// range (and the meta group) replicated on `voters`.
    pub fn initial(n: usize, voters: Vec<u64>) -> RangeMap {
        let n = n.max(1) as u128;
        let starts: Vec<Vec<u8>> = (0..n)
            .map(|i| match i {
                0 => Vec::new(),
                // i < n, so i · 2^64 / n < 2^64 and the cast is exact.
                _ => (((i << 64) / n) as u64).to_be_bytes().to_vec(),
            })
            .collect();
        let data = starts
            .iter()
            .enumerate()
            .map(|(i, start)| RangeDesc {
                id: i as u64 + 2,
                start: start.clone(),
                end: starts.get(i + 1).cloned(),
                voters: voters.clone(),
                learners: Vec::new(),
                voters_outgoing: Vec::new(),
                epoch: Epoch::INITIAL,
            })
            .collect();
        RangeMap {
            meta_voters: voters,
            data,
        }
    }

    /// The meta group's descriptor.
    pub fn meta_desc(&self) -> GroupDesc {
        GroupDesc {
            id: META_RANGE_ID,
            voters: self.meta_voters.clone(),
            learners: Vec::new(),
            voters_outgoing: Vec::new(),
            span: Span {
                cf: Cf::Meta,
                start: vec![keys::META_GROUP_PREFIX],
                end: None,
            },
            epoch: Epoch::INITIAL,
        }
    }

    /// The data range holding `key` of `Cf::Data`.
    pub fn range_for_key(&self, key: &[u8]) -> &RangeDesc {
        // data[0] starts at the empty key, so at least one range starts at or before any key.
        let after = self.data.partition_point(|r| r.start.as_slice() <= key);
        &self.data[after.saturating_sub(1)]
    }

    /// The data range holding the first key of table `table_id`. While ranges split only between
    /// tables (the initial layout) this range holds the whole table.
    pub fn range_for_table(&self, table_id: u64) -> &RangeDesc {
        self.range_for_key(&keys::table_prefix(table_id))
    }

    /// The data range holding one partition of a table (always exactly one: ranges never split a
    /// PartitionKey).
    pub fn range_for_partition(&self, table_id: u64, partition_key: &str) -> &RangeDesc {
        self.range_for_key(&keys::partition_prefix(table_id, partition_key))
    }

    /// A data range by id.
    pub fn get(&self, id: u64) -> Option<&RangeDesc> {
        self.data.iter().find(|r| r.id == id)
    }

    /// The data ranges, in key order.
    pub fn data_ranges(&self) -> &[RangeDesc] {
        &self.data
    }

    /// Every group to host: the meta group first, then the data ranges in key order.
    pub fn descs(&self) -> Vec<GroupDesc> {
        std::iter::once(self.meta_desc())
            .chain(self.data.iter().map(RangeDesc::group_desc))
            .collect()
    }

    /// A human-readable description of a range's span, for status output.
    pub fn describe(&self, id: u64) -> String {
        if id == META_RANGE_ID {
            return "meta (catalog)".into();
        }
        self.get(id)
            .map_or_else(|| format!("unknown range {id}"), |r| r.to_string())
    }
}

/// How many recently used partition keys a range keeps for choosing a load-based split point.
pub const LOAD_SAMPLES: usize = 256;
/// One request in this many is sampled.
const SAMPLE_EVERY: u64 = 4;

/// What one replica knows about its range's size and load. Not replicated state: each replica counts
/// for itself (the leader's counts are the ones the partition manager uses).
#[derive(Debug, Default)]
pub struct RangeStats {
    /// Bytes of keys and values in the range's span: counted from the engine when the replica starts
    /// or its span changes, then kept current by every applied write.
    bytes: AtomicI64,
    /// Write operations applied (cumulative).
    writes: AtomicU64,
    /// Reads served as leader (cumulative).
    reads: AtomicU64,
    /// Requests recorded (for sampling).
    recorded: AtomicU64,
    /// The first keys of recently used partitions (sampled), newest last.
    samples: Mutex<VecDeque<Vec<u8>>>,
}

impl RangeStats {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Starts counting the range's bytes from scratch (the caller adds what it counts).
    pub fn reset_bytes(&self) {
        self.bytes.store(0, Ordering::Relaxed);
    }

    pub fn add_bytes(&self, delta: i64) {
        self.bytes.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn add_writes(&self, n: u64) {
        self.writes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one request on `partition` (its first key) and samples it now and then.
    pub fn record(&self, partition: &[u8], read: bool) {
        if read {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        if self
            .recorded
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SAMPLE_EVERY)
        {
            let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            if samples.len() >= LOAD_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(partition.to_vec());
        }
    }

    /// The sampled partition that splits recent requests about in half: the median sample, if it lies
    /// strictly after `start` (a range made of one hot partition cannot be split by load).
    pub fn load_split_key(&self, start: &[u8]) -> Option<Vec<u8>> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<&Vec<u8>> = samples.iter().collect();
        keys.sort();
        let median = keys.get(keys.len() / 2)?;
        if median.as_slice() > start {
            return Some(median.to_vec());
        }
        keys.into_iter().find(|k| k.as_slice() > start).cloned()
    }

    /// Forgets the samples (the span changed: they may lie in the other half).
    pub fn clear_samples(&self) {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// A node's live view of the data ranges (see the module docs): what its replicas' logs say, so it
/// follows splits the moment they apply here.
#[derive(Debug, Default)]
pub struct Ranges {
    /// Data ranges by start key.
    by_start: RwLock<BTreeMap<Vec<u8>, RangeDesc>>,
    /// Size and load per range this node hosts.
    stats: RwLock<HashMap<u64, Arc<RangeStats>>>,
}

impl Ranges {
    /// A view holding `initial` (tests; a node starts empty and learns from its replicas).
    pub fn with(initial: &[RangeDesc]) -> Ranges {
        let ranges = Ranges::default();
        for r in initial {
            ranges.update(r.clone());
        }
        ranges
    }

    /// Records a range's new descriptor. Any other descriptor it overlaps at a lower version is gone
    /// (the range it describes was split or merged since); so is this range's own older descriptor.
    pub fn update(&self, desc: RangeDesc) {
        let mut map = self
            .by_start
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = map.values().find(|r| r.id == desc.id)
            && current.epoch > desc.epoch
        {
            return;
        }
        map.retain(|_, r| {
            r.id != desc.id && !(r.overlaps(&desc) && r.epoch.version < desc.epoch.version)
        });
        map.insert(desc.start.clone(), desc);
    }

    /// Forgets a range this node no longer hosts.
    pub fn remove(&self, id: u64) {
        let mut map = self
            .by_start
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, r| r.id != id);
        self.stats
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The size and load counters of range `id` (created on first use).
    pub fn stats(&self, id: u64) -> Arc<RangeStats> {
        if let Some(s) = self
            .stats
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return s.clone();
        }
        self.stats
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_default()
            .clone()
    }

    /// The data range holding `key` of `Cf::Data`, if this node knows one.
    pub fn range_for_key(&self, key: &[u8]) -> Option<RangeDesc> {
        let map = self.by_start.read().unwrap_or_else(PoisonError::into_inner);
        map.range(..=key.to_vec())
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.contains(key))
            .cloned()
    }

    /// The data range holding the first key of table `table_id` (its dropped marker and its fences).
    pub fn range_for_table(&self, table_id: u64) -> Option<RangeDesc> {
        self.range_for_key(&keys::table_prefix(table_id))
    }

    /// The data range holding one partition of a table (ranges never split a PartitionKey).
    pub fn range_for_partition(&self, table_id: u64, partition_key: &str) -> Option<RangeDesc> {
        self.range_for_key(&keys::partition_prefix(table_id, partition_key))
    }

    /// Every known range with a key of table `table_id`, in key order.
    pub fn ranges_of_table(&self, table_id: u64) -> Vec<RangeDesc> {
        let map = self.by_start.read().unwrap_or_else(PoisonError::into_inner);
        map.values()
            .filter(|r| r.overlaps_table(table_id))
            .cloned()
            .collect()
    }

    /// A data range by id.
    pub fn get(&self, id: u64) -> Option<RangeDesc> {
        let map = self.by_start.read().unwrap_or_else(PoisonError::into_inner);
        map.values().find(|r| r.id == id).cloned()
    }

    /// The data ranges, in key order.
    pub fn data_ranges(&self) -> Vec<RangeDesc> {
        let map = self.by_start.read().unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }

    /// A human-readable description of a range's span, for status output.
    pub fn describe(&self, id: u64) -> String {
        if id == META_RANGE_ID {
            return "meta (catalog)".into();
        }
        self.get(id)
            .map_or_else(|| format!("unknown range {id}"), |r| r.to_string())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn four_ranges_split_the_table_space_evenly() {
        let map = RangeMap::initial(4, vec![1, 2, 3]);
        let ids: Vec<u64> = map.data_ranges().iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 3, 4, 5]);
        let starts: Vec<Vec<u8>> = map.data_ranges().iter().map(|r| r.start.clone()).collect();
        assert_eq!(starts[0], Vec::<u8>::new());
        assert_eq!(starts[1], 0x4000_0000_0000_0000u64.to_be_bytes());
        assert_eq!(starts[2], 0x8000_0000_0000_0000u64.to_be_bytes());
        assert_eq!(starts[3], 0xC000_0000_0000_0000u64.to_be_bytes());
        assert_eq!(map.data_ranges()[3].end, None);
        assert_eq!(map.range_for_table(0).id, 2);
        assert_eq!(map.range_for_table(0x3FFF_FFFF_FFFF_FFFF).id, 2);
        assert_eq!(map.range_for_table(0x4000_0000_0000_0000).id, 3);
        assert_eq!(map.range_for_table(u64::MAX).id, 5);
    }

    #[test]
    fn descs_start_with_the_meta_group() {
        let map = RangeMap::initial(2, vec![1, 2, 3]);
        let descs = map.descs();
        assert_eq!(descs.len(), 3);
        assert_eq!(descs[0].id, META_RANGE_ID);
        assert_eq!(
            descs[0].span,
            Span {
                cf: Cf::Meta,
                start: vec![keys::META_GROUP_PREFIX],
                end: None
            }
        );
        assert_eq!(descs[1].span.cf, Cf::Data);
        assert_eq!(descs[1].span.end, Some(descs[2].span.start.clone()));
        assert!(descs.iter().all(|d| d.voters == [1, 2, 3]));
        assert_eq!(map.describe(1), "meta (catalog)");
        assert!(
            map.describe(3).contains("table 8000000000000000"),
            "{}",
            map.describe(3)
        );
    }

    #[test]
    fn zero_ranges_means_one() {
        let map = RangeMap::initial(0, vec![1]);
        assert_eq!(map.data_ranges().len(), 1);
        assert_eq!(map.range_for_table(12345).id, 2);
    }

    #[test]
    fn overlaps_table_is_exact_at_boundaries() {
        let map = RangeMap::initial(2, vec![1]);
        let [low, high] = map.data_ranges() else {
            panic!("two ranges")
        };
        let last_low = 0x7FFF_FFFF_FFFF_FFFF;
        assert!(low.overlaps_table(last_low) && !high.overlaps_table(last_low));
        assert!(!low.overlaps_table(last_low + 1) && high.overlaps_table(last_low + 1));
        assert!(high.overlaps_table(u64::MAX));
    }

    proptest! {
        #[test]
        fn every_key_has_exactly_one_range(
            n in 1usize..20, table in any::<u64>(), pk in ".{0,4}", rk in ".{0,4}",
        ) {
            let map = RangeMap::initial(n, vec![1, 2, 3]);
            let key = keys::data_key(table, &pk, &rk);
            let holders: Vec<u64> = map.data_ranges().iter().filter(|r| r.contains(&key)).map(|r| r.id).collect();
            prop_assert_eq!(holders, vec![map.range_for_key(&key).id]);
            prop_assert_eq!(map.range_for_partition(table, &pk).id, map.range_for_table(table).id);
        }
    }

    #[test]
    fn the_live_view_follows_a_split_and_drops_what_it_replaced() {
        let initial = RangeMap::initial(1, vec![1, 2, 3]);
        let ranges = Ranges::with(initial.data_ranges());
        let whole = ranges.get(2).unwrap();
        let cut = keys::partition_prefix(7, "m");
        let bumped = Epoch {
            version: 2,
            conf_ver: 1,
        };
        let left = RangeDesc {
            end: Some(cut.clone()),
            epoch: bumped,
            ..whole.clone()
        };
        let right = RangeDesc {
            id: 9,
            start: cut.clone(),
            end: None,
            epoch: bumped,
            ..whole.clone()
        };
        // The right half may be learned first (a snapshot): it replaces the parent's older descriptor.
        ranges.update(right.clone());
        assert_eq!(ranges.data_ranges(), vec![right.clone()]);
        assert_eq!(ranges.range_for_partition(7, "a"), None);
        ranges.update(left.clone());
        assert_eq!(ranges.range_for_partition(7, "a").unwrap().id, 2);
        assert_eq!(ranges.range_for_partition(7, "m").unwrap().id, 9);
        assert_eq!(ranges.range_for_partition(7, "z").unwrap().id, 9);
        assert_eq!(ranges.range_for_table(7).unwrap().id, 2);
        assert_eq!(
            ranges
                .ranges_of_table(7)
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            [2, 9]
        );
        // A late, older descriptor of the parent changes nothing.
        ranges.update(whole);
        assert_eq!(ranges.data_ranges(), vec![left, right]);
    }
}
