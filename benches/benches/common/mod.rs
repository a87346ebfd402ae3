//! Fixtures shared by the micro-benchmarks: a realistic 1 KiB entity, its JSON body, and a quick
//! criterion configuration (small samples, short measurement) so a smoke run of every bench takes seconds.

#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;
use trestle_types::{DateTime, Entity, Value};

/// Short runs: these benches locate costs and catch regressions of 2× and more, not 2%.
pub fn quick() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
}

/// The harness's 1 KiB entity (`Seq`, `Data`) plus one property of each other EDM type, so codecs walk
/// every branch they would in practice.
pub fn entity(pk: &str, rk: &str) -> Entity {
    Entity {
        timestamp: Some(DateTime(638_400_000_000_000_000)),
        ..Entity::new(pk, rk)
    }
    .with("Seq", Value::Int64(42))
    .with("Data", Value::String("x".repeat(800)))
    .with("Price", Value::Double(12.5))
    .with("Count", Value::Int32(7))
    .with("Active", Value::Boolean(true))
    .with(
        "Created",
        Value::DateTime(DateTime(638_400_000_000_000_000)),
    )
    .with(
        "Id",
        Value::Guid(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        )),
    )
    .with("Blob", Value::Binary(vec![7u8; 32]))
}

/// The same entity as an EDM JSON request body (minimal metadata, with the annotations Azure needs).
pub fn entity_json(pk: &str, rk: &str) -> String {
    format!(
        concat!(
            "{{\"PartitionKey\":\"{}\",\"RowKey\":\"{}\",\"Seq@odata.type\":\"Edm.Int64\",\"Seq\":\"42\",",
            "\"Data\":\"{}\",\"Price\":12.5,\"Count\":7,\"Active\":true,",
            "\"Created@odata.type\":\"Edm.DateTime\",\"Created\":\"2024-01-01T00:00:00Z\",",
            "\"Id@odata.type\":\"Edm.Guid\",\"Id\":\"01234567-89ab-cdef-0123-456789abcdef\",",
            "\"Blob@odata.type\":\"Edm.Binary\",\"Blob\":\"{}\"}}"
        ),
        pk,
        rk,
        "x".repeat(800),
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
    )
}
