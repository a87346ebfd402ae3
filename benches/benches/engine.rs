//! The storage engine (`trestle_engine`): write batches with and without fsync, and point gets, on
//! RocksDB (in a temporary directory, the node's default tuning) and on the in-memory engine.
//!
//! `write_synced/1` is the cost of one durable Raft append when nothing else is ready in the loop turn;
//! `write_synced/64` is a turn that group-commits 64 proposals under one fsync. Their ratio is what group
//! commit buys; `write_synced/1` against `trestle-bench fsync-rate` shows what RocksDB adds to the disk.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use trestle_engine::{Cf, Engine, MemoryEngine, RocksConfig, RocksEngine, WriteBatch, keys};

const VALUE_BYTES: usize = 1024;
const PRELOADED: u64 = 20_000;

fn batch_of(n: u64, start: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for i in start..start + n {
        b.put(
            Cf::Data,
            keys::data_key(1, "p00001", &format!("r{i:012}")),
            vec![0x42u8; VALUE_BYTES],
        );
    }
    b
}

/// Named engines under test, preloaded with `PRELOADED` values.
type Engines = Vec<(&'static str, Arc<dyn Engine>)>;

fn engines() -> (tempfile::TempDir, Engines) {
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = RocksEngine::open(dir.path(), &RocksConfig::default()).expect("open rocksdb");
    let engines: Engines = vec![
        ("rocksdb", Arc::new(rocks)),
        ("memory", Arc::new(MemoryEngine::new())),
    ];
    for (_, e) in &engines {
        for chunk in 0..PRELOADED / 1000 {
            e.write(&batch_of(1000, chunk * 1000), false)
                .expect("preload");
        }
    }
    (dir, engines)
}

fn writes(c: &mut Criterion) {
    let (_dir, engines) = engines();
    let mut g = c.benchmark_group("engine_write");
    for (name, engine) in &engines {
        for (sync, label) in [(true, "synced"), (false, "unsynced")] {
            for n in [1u64, 64] {
                g.throughput(Throughput::Elements(n));
                let mut next = PRELOADED;
                g.bench_with_input(
                    BenchmarkId::new(format!("{name}_{label}"), n),
                    &n,
                    |b, &n| {
                        b.iter_batched(
                            || {
                                next += n;
                                batch_of(n, next)
                            },
                            |batch| engine.write(&batch, sync).expect("write"),
                            criterion::BatchSize::SmallInput,
                        )
                    },
                );
            }
        }
    }
    g.finish();
}

fn gets(c: &mut Criterion) {
    let (_dir, engines) = engines();
    let mut g = c.benchmark_group("engine_get");
    for (name, engine) in &engines {
        let mut i = 0u64;
        g.bench_function(format!("{name}_hit"), |b| {
            b.iter_batched(
                || {
                    i = (i + 7919) % PRELOADED;
                    keys::data_key(1, "p00001", &format!("r{i:012}"))
                },
                |key| engine.get(Cf::Data, black_box(&key)).expect("get"),
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("{name}_miss"), |b| {
            let key = keys::data_key(1, "p00001", "absent");
            b.iter(|| engine.get(Cf::Data, black_box(&key)).expect("get"))
        });
        g.throughput(Throughput::Elements(1000));
        g.bench_function(format!("{name}_scan_1000"), |b| {
            let start = keys::partition_prefix(1, "p00001");
            b.iter(|| {
                let snap = engine.snapshot();
                snap.scan(Cf::Data, &start, None)
                    .expect("scan")
                    .take(1000)
                    .count()
            })
        });
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = writes, gets
}
criterion_main!(benches);
