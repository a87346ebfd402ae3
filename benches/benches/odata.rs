//! `$filter` (`trestle_types::Filter`): parsing the OData expression of a query, evaluating it on an
//! entity (done once per scanned entity on the partition server) and deriving the key bounds that turn a
//! filter into a RocksDB range scan.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use trestle_types::Filter;

const PARTITION: &str = "PartitionKey eq 'q00000'";
const RANGE: &str =
    "PartitionKey eq 'p00001' and RowKey ge 'r000000000100' and RowKey lt 'r000000000200'";
const PROPERTIES: &str = "(Price gt 10.0 and Count le 7) or (Active eq true and Seq ge 40L) \
    or Created ge datetime'2023-01-01T00:00:00Z' or Id eq guid'01234567-89ab-cdef-0123-456789abcdef'";

fn filters(c: &mut Criterion) {
    let entity = common::entity("p00001", "r000000000150");
    let mut g = c.benchmark_group("filter");
    for (name, text) in [
        ("partition", PARTITION),
        ("key_range", RANGE),
        ("properties", PROPERTIES),
    ] {
        let parsed = Filter::parse(text).expect("valid filter");
        g.bench_function(format!("parse_{name}"), |b| {
            b.iter(|| Filter::parse(black_box(text)).expect("valid filter"))
        });
        g.bench_function(format!("matches_{name}"), |b| {
            b.iter(|| black_box(&parsed).matches(black_box(&entity)))
        });
        g.bench_function(format!("key_bounds_{name}"), |b| {
            b.iter(|| black_box(&parsed).key_bounds())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = filters
}
criterion_main!(benches);
