//! Key encoding (`trestle_engine::keys`): the order-preserving, escaped `(table id, PartitionKey, RowKey)`
//! data key built on every read and write, its decoding (query results), and the Raft log keys written
//! per appended entry.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use trestle_engine::keys;

fn data_keys(c: &mut Criterion) {
    let key = keys::data_key(7, "p00001", "r000000000001");
    let escaped = keys::data_key(7, "p\u{0}with\u{0}nuls", "r\u{0}\u{0}");
    let mut g = c.benchmark_group("keys");
    g.bench_function("data_key", |b| {
        b.iter(|| {
            keys::data_key(
                black_box(7),
                black_box("p00001"),
                black_box("r000000000001"),
            )
        })
    });
    g.bench_function("data_key_escaped", |b| {
        b.iter(|| {
            keys::data_key(
                black_box(7),
                black_box("p\u{0}with\u{0}nuls"),
                black_box("r\u{0}\u{0}"),
            )
        })
    });
    g.bench_function("decode_data_key", |b| {
        b.iter(|| keys::decode_data_key(black_box(&key)).expect("valid key"))
    });
    g.bench_function("decode_data_key_escaped", |b| {
        b.iter(|| keys::decode_data_key(black_box(&escaped)).expect("valid key"))
    });
    g.bench_function("partition_range", |b| {
        b.iter(|| {
            let start = keys::partition_prefix(black_box(7), black_box("p00001"));
            let end = keys::prefix_end(&start);
            (start, end)
        })
    });
    g.bench_function("log_key", |b| {
        b.iter(|| keys::log_key(black_box(3), black_box(123_456)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = data_keys
}
criterion_main!(benches);
