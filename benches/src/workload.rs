//! What the load generator sends: workloads, key choice and entity bodies, independent of the protocol.
//!
//! Every worker owns an [`OpGenerator`] (its own RNG, its own sequence numbers), so generating an operation
//! takes no lock and costs well under a microsecond; the protocol drivers ([`crate::rest`],
//! [`crate::driver`]) turn an [`Op`] into a request.
//!
//! Key layout, shared by the load phase and the measured phase:
//! - preloaded *records* `0..records`: record `i` is `(p{i % partitions}, r{i})` (zero-padded), so reads,
//!   upserts and merges of any record hit an entity that exists;
//! - *inserts* and *batches* make new keys `{run}-w{worker}-{seq}`: unique across workers (the worker id),
//!   across operations (the sequence) and across runs against the same table (the run id);
//! - *queries* read whole query partitions `q{j}`, preloaded with `page_size` entities each.
//!
//! Key distributions: uniform, or scrambled zipfian (YCSB's: Gray et al.'s generator over ranks, then an
//! FNV hash spreads the hot ranks over the keyspace so they do not all sit in one partition).

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The workloads of issue 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Insert Entity with unique keys.
    Insert,
    /// Get Entity of a preloaded record.
    Read,
    /// Insert Or Replace Entity of a preloaded record.
    Upsert,
    /// Insert Or Merge Entity of a preloaded record.
    Merge,
    /// One page of a partition query (`PartitionKey eq 'q..'`, `$top` = page size).
    Query,
    /// An entity group transaction of `batch_size` inserts into one partition.
    Batch,
    /// YCSB A: 50% reads, 50% updates (insert-or-merge).
    YcsbA,
    /// YCSB B: 95% reads, 5% updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
    /// Uncontended locks: each worker acquires and releases a lock of its own ([`crate::locks`]).
    Lock,
    /// One contended lock: every worker acquires and releases it; times the hand-offs ([`crate::locks`]).
    LockHandoff,
}

impl WorkloadKind {
    /// Whether the measured phase reads or updates preloaded records.
    pub fn needs_records(self) -> bool {
        !matches!(
            self,
            WorkloadKind::Insert | WorkloadKind::Batch | WorkloadKind::Query
        ) && !self.is_lock()
    }

    /// Whether this is a lock workload (no table; a lock session per worker).
    pub fn is_lock(self) -> bool {
        matches!(self, WorkloadKind::Lock | WorkloadKind::LockHandoff)
    }

    /// The fraction of operations that are reads (the rest are updates), for record workloads.
    fn read_fraction(self) -> f64 {
        match self {
            WorkloadKind::Read | WorkloadKind::YcsbC => 1.0,
            WorkloadKind::YcsbB => 0.95,
            WorkloadKind::YcsbA => 0.5,
            _ => 0.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Insert => "insert",
            WorkloadKind::Read => "read",
            WorkloadKind::Upsert => "upsert",
            WorkloadKind::Merge => "merge",
            WorkloadKind::Query => "query",
            WorkloadKind::Batch => "batch",
            WorkloadKind::YcsbA => "ycsb-a",
            WorkloadKind::YcsbB => "ycsb-b",
            WorkloadKind::YcsbC => "ycsb-c",
            WorkloadKind::Lock => "lock",
            WorkloadKind::LockHandoff => "lock-handoff",
        }
    }
}

/// How record workloads choose a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    Uniform,
    Zipfian,
}

/// A workload's parameters (the same for every worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadConfig {
    pub kind: WorkloadKind,
    /// Approximate size of an entity's JSON body in bytes (the `Data` property is padded to reach it).
    pub entity_size: usize,
    /// Partitions that records, inserts and batches spread over.
    pub partitions: u32,
    /// Preloaded records for read/update workloads.
    pub records: u64,
    pub distribution: KeyDistribution,
    /// Zipfian skew (YCSB's default 0.99).
    pub zipf_theta: f64,
    /// Entities per query page, and entities preloaded in each query partition.
    pub page_size: u32,
    /// Query partitions preloaded for the query workload.
    pub query_partitions: u32,
    /// Operations per entity group transaction.
    pub batch_size: u32,
    /// Makes inserted keys unique across runs against the same table (and lock names across rounds).
    pub run_id: String,
    /// How long a holder keeps the lock before releasing it, in the hand-off workload (microseconds).
    #[serde(default)]
    pub lock_hold_us: u64,
}

/// One operation, with its keys chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Insert {
        pk: String,
        rk: String,
        seq: u64,
    },
    Get {
        pk: String,
        rk: String,
    },
    Upsert {
        pk: String,
        rk: String,
        seq: u64,
    },
    Merge {
        pk: String,
        rk: String,
        seq: u64,
    },
    Query {
        pk: String,
        top: u32,
    },
    Batch {
        pk: String,
        rks: Vec<String>,
        seq: u64,
    },
    /// One acquire + release of the worker's lock (which lock is the worker's: [`lock_name`]).
    Lock,
}

impl Op {
    /// Entities this operation writes or is expected to return (a query's page size, a batch's size).
    pub fn entities(&self) -> u64 {
        match self {
            Op::Query { top, .. } => u64::from(*top),
            Op::Batch { rks, .. } => rks.len() as u64,
            _ => 1,
        }
    }
}

/// The partition key of partition `i`.
pub fn partition_key(i: u64) -> String {
    format!("p{i:05}")
}

/// The partition key of query partition `j`.
pub fn query_partition_key(j: u64) -> String {
    format!("q{j:05}")
}

/// The row key of record (or query-partition row) `i`.
pub fn record_row_key(i: u64) -> String {
    format!("r{i:012}")
}

/// The lock worker `worker` takes: its own in the uncontended workload, the one shared lock in the
/// hand-off workload; unique per run (a round of a comparison never meets a previous round's queue).
pub fn lock_name(cfg: &WorkloadConfig, worker: u32) -> String {
    match cfg.kind {
        WorkloadKind::LockHandoff => format!("bench/{}/handoff", cfg.run_id),
        _ => format!("bench/{}/w{worker:03}", cfg.run_id),
    }
}

/// The keys of preloaded record `i`.
pub fn record_key(cfg: &WorkloadConfig, i: u64) -> (String, String) {
    (
        partition_key(i % u64::from(cfg.partitions.max(1))),
        record_row_key(i),
    )
}

/// Per-worker operation source.
pub struct OpGenerator {
    cfg: Arc<WorkloadConfig>,
    worker: u32,
    seq: u64,
    rng: SmallRng,
    zipf: Option<Arc<Zipfian>>,
}

impl OpGenerator {
    /// `zipf` is shared by all workers (its constants take a pass over the keyspace to compute).
    pub fn new(
        cfg: Arc<WorkloadConfig>,
        worker: u32,
        seed: u64,
        zipf: Option<Arc<Zipfian>>,
    ) -> OpGenerator {
        OpGenerator {
            cfg,
            worker,
            seq: 0,
            rng: SmallRng::seed_from_u64(seed ^ (u64::from(worker) << 32)),
            zipf,
        }
    }

    fn unique_row_key(&self) -> String {
        format!("{}-w{:03}-{:010}", self.cfg.run_id, self.worker, self.seq)
    }

    fn unique_partition(&self) -> String {
        let spread = self.seq.wrapping_add(u64::from(self.worker));
        partition_key(spread % u64::from(self.cfg.partitions.max(1)))
    }

    fn pick_record(&mut self) -> u64 {
        let n = self.cfg.records.max(1);
        match (&self.zipf, self.cfg.distribution) {
            (Some(z), KeyDistribution::Zipfian) => z.next_scrambled(&mut self.rng),
            _ => self.rng.gen_range(0..n),
        }
    }

    /// The next operation of this worker.
    pub fn next_op(&mut self) -> Op {
        self.seq += 1;
        let seq = self.seq;
        match self.cfg.kind {
            WorkloadKind::Lock | WorkloadKind::LockHandoff => Op::Lock,
            WorkloadKind::Insert => Op::Insert {
                pk: self.unique_partition(),
                rk: self.unique_row_key(),
                seq,
            },
            WorkloadKind::Batch => {
                let base = self.unique_row_key();
                let rks = (0..self.cfg.batch_size)
                    .map(|j| format!("{base}-{j:03}"))
                    .collect();
                Op::Batch {
                    pk: self.unique_partition(),
                    rks,
                    seq,
                }
            }
            WorkloadKind::Query => {
                let j = self
                    .rng
                    .gen_range(0..u64::from(self.cfg.query_partitions.max(1)));
                Op::Query {
                    pk: query_partition_key(j),
                    top: self.cfg.page_size,
                }
            }
            WorkloadKind::Upsert => {
                let i = self.pick_record();
                let (pk, rk) = record_key(&self.cfg, i);
                Op::Upsert { pk, rk, seq }
            }
            WorkloadKind::Merge => {
                let i = self.pick_record();
                let (pk, rk) = record_key(&self.cfg, i);
                Op::Merge { pk, rk, seq }
            }
            kind => {
                let i = self.pick_record();
                let (pk, rk) = record_key(&self.cfg, i);
                if self.rng.gen_bool(kind.read_fraction().clamp(0.0, 1.0)) {
                    Op::Get { pk, rk }
                } else {
                    Op::Merge { pk, rk, seq }
                }
            }
        }
    }
}

/// YCSB's zipfian generator over `0..n` (Gray et al., SIGMOD 1994): rank 0 is the most popular.
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// `n` items, skew `theta` in (0, 1). Computing ζ(n) is O(n): about 10 ms per million items.
    pub fn new(n: u64, theta: f64) -> Zipfian {
        let n = n.max(1);
        let theta = theta.clamp(0.01, 0.9999);
        let zeta = |k: u64| (1..=k).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2.min(n));
        let eta = if n <= 2 {
            1.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        };
        Zipfian {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    /// A rank in `0..n`, rank 0 the most likely.
    pub fn next_rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.r#gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) && self.n > 1 {
            return 1;
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }

    /// An item in `0..n` whose popularity follows the zipfian ranks, hot items spread by a hash.
    pub fn next_scrambled(&self, rng: &mut impl Rng) -> u64 {
        fnv1a(self.next_rank(rng)) % self.n
    }
}

/// 64-bit FNV-1a of a number's little-endian bytes (YCSB's scrambling hash).
pub fn fnv1a(x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn cfg(kind: WorkloadKind) -> Arc<WorkloadConfig> {
        Arc::new(WorkloadConfig {
            kind,
            entity_size: 1024,
            partitions: 8,
            records: 1000,
            distribution: KeyDistribution::Uniform,
            zipf_theta: 0.99,
            page_size: 100,
            query_partitions: 2,
            batch_size: 100,
            run_id: "t1".into(),
            lock_hold_us: 0,
        })
    }

    #[test]
    fn inserted_keys_are_unique_across_workers_and_operations() {
        let c = cfg(WorkloadKind::Insert);
        let mut seen = HashSet::new();
        let mut partitions = HashSet::new();
        for w in 0..4 {
            let mut g = OpGenerator::new(c.clone(), w, 7, None);
            for _ in 0..500 {
                let Op::Insert { pk, rk, .. } = g.next_op() else {
                    panic!("insert workload made another op")
                };
                partitions.insert(pk.clone());
                assert!(seen.insert((pk, rk)), "duplicate key");
            }
        }
        assert_eq!(partitions.len(), 8, "inserts spread over every partition");
    }

    #[test]
    fn batch_rows_are_unique_and_share_one_partition() {
        let mut g = OpGenerator::new(cfg(WorkloadKind::Batch), 3, 1, None);
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let Op::Batch { rks, .. } = g.next_op() else {
                panic!("batch workload made another op")
            };
            assert_eq!(rks.len(), 100);
            for rk in rks {
                assert!(seen.insert(rk));
            }
        }
    }

    #[test]
    fn ycsb_mixes_have_their_read_share() {
        for (kind, want) in [
            (WorkloadKind::YcsbA, 0.5),
            (WorkloadKind::YcsbB, 0.95),
            (WorkloadKind::YcsbC, 1.0),
        ] {
            let mut g = OpGenerator::new(cfg(kind), 0, 42, None);
            let reads = (0..10_000)
                .filter(|_| matches!(g.next_op(), Op::Get { .. }))
                .count();
            let share = reads as f64 / 10_000.0;
            assert!((share - want).abs() < 0.02, "{kind:?}: {share}");
        }
    }

    #[test]
    fn record_ops_hit_preloaded_records() {
        let c = cfg(WorkloadKind::Read);
        let all: HashSet<_> = (0..c.records).map(|i| record_key(&c, i)).collect();
        let mut g = OpGenerator::new(c.clone(), 1, 9, None);
        for _ in 0..1000 {
            let Op::Get { pk, rk } = g.next_op() else {
                panic!("read workload made another op")
            };
            assert!(all.contains(&(pk, rk)));
        }
    }

    #[test]
    fn zipfian_ranks_follow_the_power_law() {
        let n = 1000;
        let z = Zipfian::new(n, 0.99);
        let mut rng = SmallRng::seed_from_u64(5);
        let draws = 200_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            let r = z.next_rank(&mut rng);
            assert!(r < n);
            counts[r as usize] += 1;
        }
        // P(rank 0) = 1/ζ(n) ≈ 1/7.5 for n = 1000, θ = 0.99.
        let p0 = counts[0] as f64 / draws as f64;
        assert!((p0 - 1.0 / z.zetan).abs() < 0.01, "p0 = {p0}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        let top_tenth: u64 = counts[..100].iter().sum();
        assert!(
            top_tenth as f64 / draws as f64 > 0.6,
            "the top 10% of ranks draw most requests"
        );
    }

    #[test]
    fn scrambled_zipfian_stays_in_range_and_spreads_the_hot_keys() {
        let z = Zipfian::new(1000, 0.99);
        let mut rng = SmallRng::seed_from_u64(11);
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for _ in 0..50_000 {
            let x = z.next_scrambled(&mut rng);
            assert!(x < 1000);
            *counts.entry(x).or_default() += 1;
        }
        let mut hot: Vec<_> = counts.into_iter().collect();
        hot.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
        // The five hottest items are not neighbours (they would share a partition if they were).
        let top: HashSet<u64> = hot[..5].iter().map(|(k, _)| k % 8).collect();
        assert!(top.len() >= 3, "hot items land in different partitions");
        assert_eq!(hot[0].0, fnv1a(0) % 1000);
    }

    #[test]
    fn lock_workers_take_their_own_lock_or_all_the_same_one() {
        let mut c = (*cfg(WorkloadKind::Lock)).clone();
        let own: HashSet<String> = (0..64).map(|w| lock_name(&c, w)).collect();
        assert_eq!(own.len(), 64, "one lock per worker");
        assert!(own.contains("bench/t1/w007"));
        c.kind = WorkloadKind::LockHandoff;
        assert_eq!(lock_name(&c, 0), lock_name(&c, 63));
        assert_eq!(lock_name(&c, 5), "bench/t1/handoff");
        let mut g = OpGenerator::new(Arc::new(c), 0, 1, None);
        assert_eq!(g.next_op(), Op::Lock);
        assert!(!WorkloadKind::LockHandoff.needs_records() && WorkloadKind::Lock.is_lock());
    }

    #[test]
    fn tiny_keyspaces_do_not_break_the_generator() {
        let mut rng = SmallRng::seed_from_u64(1);
        for n in [1, 2, 3] {
            let z = Zipfian::new(n, 0.99);
            for _ in 0..100 {
                assert!(z.next_rank(&mut rng) < n);
            }
        }
    }
}
