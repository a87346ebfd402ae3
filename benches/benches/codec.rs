//! Entity codecs: EDM JSON parse and serialize (the REST gateway's `json` module) and the storage
//! encoding (`trestle_storage_node::codec`: crc32 ‖ version ‖ protobuf), on a 1 KiB entity.
//!
//! Per REST point read the node pays one `decode_entity` and one `entity_document`; per insert one
//! `parse_entity` and one `encode_entity` per replica; a 1,000-entity query page 1,000 decodes and one
//! `query_document`.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use trestle_rest_gateway::json::write::EntityUrls;
use trestle_rest_gateway::json::{MetadataLevel, entity_document, parse_entity, query_document};
use trestle_storage_node::codec::{decode_entity, encode_entity};

const URLS: EntityUrls<'static> = EntityUrls {
    base_url: "http://127.0.0.1:10002/devstoreaccount1",
    account: "devstoreaccount1",
    table: "bench",
};

fn json(c: &mut Criterion) {
    let body = common::entity_json("p00001", "r000000000001");
    let entity = common::entity("p00001", "r000000000001");
    let page: Vec<_> = (0..1000)
        .map(|i| common::entity("q00000", &format!("r{i:012}")))
        .collect();

    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse_entity_1k", |b| {
        b.iter(|| parse_entity(black_box(body.as_bytes()), None).expect("valid body"))
    });
    g.bench_function("entity_document_minimal_1k", |b| {
        b.iter(|| entity_document(black_box(&entity), MetadataLevel::Minimal, &URLS, None))
    });
    g.bench_function("entity_document_full_1k", |b| {
        b.iter(|| entity_document(black_box(&entity), MetadataLevel::Full, &URLS, None))
    });
    g.throughput(Throughput::Elements(page.len() as u64));
    g.bench_function("query_document_minimal_1000x1k", |b| {
        b.iter(|| query_document(black_box(&page), MetadataLevel::Minimal, &URLS, None))
    });
    g.finish();
}

fn storage(c: &mut Criterion) {
    let entity = common::entity("p00001", "r000000000001");
    let stored = encode_entity(&entity);
    let mut g = c.benchmark_group("storage");
    g.throughput(Throughput::Bytes(stored.len() as u64));
    g.bench_function("encode_entity_1k", |b| {
        b.iter(|| encode_entity(black_box(&entity)))
    });
    g.bench_function("decode_entity_1k", |b| {
        b.iter(|| {
            decode_entity("p00001", "r000000000001", black_box(&stored)).expect("valid value")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = json, storage
}
criterion_main!(benches);
