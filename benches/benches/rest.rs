//! The REST gateway (`trestle_rest_gateway`): Shared Key signature verification, and whole requests
//! through the axum router — authentication, addressing, EDM JSON, response headers — over a stub table
//! service that answers instantly, so the figures are the gateway's own CPU per request, without Raft,
//! RocksDB or the network.
//!
//! Requests are signed with the load harness's own signer (`trestle_benches::signing`), which doubles as a
//! check that the two implementations agree.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use trestle_benches::signing::{SharedKey, http_date};
use trestle_rest_gateway::auth::shared_key;
use trestle_rest_gateway::{Fencing, GatewayConfig, TableService, router};
use trestle_types::{
    AccessPolicy, BatchError, DateTime, ETag, Entity, Error, ErrorCode, QueryPage, QuerySpec,
    Result, TableInfo, TableName, WriteOp, WriteOutcome,
};

const ENTITY_PATH: &str = "/devstoreaccount1/bench(PartitionKey='p00001',RowKey='r000000000001')";

/// Answers every entity call at once: a fixed entity, a fixed page of 1,000, writes acknowledged.
struct StubService {
    entity: Entity,
    page: Vec<Entity>,
}

fn unsupported<T>() -> Result<T> {
    Err(Error::from_code(ErrorCode::NotImplemented))
}

#[async_trait]
impl TableService for StubService {
    async fn create_table(&self, _: &str, _: &TableName) -> Result<TableInfo> {
        unsupported()
    }
    async fn delete_table(&self, _: &str, _: &str) -> Result<()> {
        unsupported()
    }
    async fn get_table(&self, _: &str, table: &str) -> Result<TableInfo> {
        Ok(TableInfo {
            name: table.to_string(),
            id: 1,
            policies: Vec::new(),
        })
    }
    async fn list_tables(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<(Vec<TableInfo>, Option<String>)> {
        unsupported()
    }
    async fn set_table_acl(&self, _: &str, _: &str, _: Vec<AccessPolicy>) -> Result<()> {
        unsupported()
    }
    async fn write(
        &self,
        _: &str,
        _: &str,
        _: WriteOp,
        _: Option<Fencing>,
    ) -> Result<WriteOutcome> {
        Ok(WriteOutcome {
            etag: Some(ETag(DateTime(638_400_000_000_000_000))),
            entity: None,
        })
    }
    async fn batch(
        &self,
        _: &str,
        _: &str,
        _: Vec<WriteOp>,
        _: Option<Fencing>,
    ) -> Result<Vec<WriteOutcome>, BatchError> {
        Err(BatchError {
            index: None,
            error: Error::from_code(ErrorCode::NotImplemented),
        })
    }
    async fn get_entity(&self, _: &str, _: &str, _: &str, _: &str) -> Result<Entity> {
        Ok(self.entity.clone())
    }
    async fn query(&self, _: &str, _: &str, _: QuerySpec) -> Result<QueryPage> {
        Ok(QueryPage {
            entities: self.page.clone(),
            next: None,
        })
    }
    async fn get_service_properties(&self, _: &str) -> Result<Option<String>> {
        Ok(None)
    }
    async fn set_service_properties(&self, _: &str, _: String) -> Result<()> {
        unsupported()
    }
}

fn signed(
    key: &SharedKey,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: Option<String>,
) -> Request<Body> {
    let date = http_date(chrono::Utc::now());
    let content_type = if body.is_some() {
        "application/json"
    } else {
        ""
    };
    let auth = key.authorization(method, content_type, &date, path, query);
    let uri = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:10002")
        .header("x-ms-date", date)
        .header("x-ms-version", "2019-02-02")
        .header("accept", "application/json;odata=minimalmetadata")
        .header("authorization", auth);
    if body.is_some() {
        b = b
            .header("content-type", content_type)
            .header("prefer", "return-no-content");
    }
    b.body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("valid request")
}

fn signature_check(c: &mut Criterion) {
    let keys = vec![base64_decode(trestle_benches::signing::DEV_ACCOUNT_KEY)];
    let key = SharedKey::dev().expect("dev key");
    let date = http_date(chrono::Utc::now());
    let signature = key
        .authorization("GET", "", &date, ENTITY_PATH, None)
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut g = c.benchmark_group("shared_key");
    g.bench_function("verify_point_read", |b| {
        b.iter(|| {
            // What the gateway does per request: every accepted canonical form, signed and compared.
            let resources =
                shared_key::canonical_resources("devstoreaccount1", ENTITY_PATH, true, None);
            let strings: Vec<String> = resources
                .iter()
                .map(|r| shared_key::string_to_sign("GET", "", "", &date, r))
                .collect();
            assert!(shared_key::verify(&keys, &strings, black_box(&signature)));
        })
    });
    g.bench_function("one_hmac", |b| {
        b.iter(|| {
            shared_key::sign(
                &keys[0],
                black_box("GET\n\n\nMon, 01 Jan 2024 00:00:00 GMT\n/a/a/t"),
            )
        })
    });
    g.finish();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("valid base64")
}

fn requests(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service = Arc::new(StubService {
        entity: common::entity("p00001", "r000000000001"),
        page: (0..1000)
            .map(|i| common::entity("q00000", &format!("r{i:012}")))
            .collect(),
    });
    let app = router(service, GatewayConfig::default());
    let key = SharedKey::dev().expect("dev key");
    let run = |req: Request<Body>| {
        let app = app.clone();
        rt.block_on(async move {
            let resp = app.oneshot(req).await.expect("infallible");
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .len()
        })
    };
    let mut g = c.benchmark_group("gateway");
    g.bench_function("get_entity", |b| {
        b.iter_batched(
            || signed(&key, "GET", ENTITY_PATH, None, None),
            &run,
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("insert_entity", |b| {
        b.iter_batched(
            || {
                let body = common::entity_json("p00001", "r000000000001");
                signed(&key, "POST", "/devstoreaccount1/bench", None, Some(body))
            },
            &run,
            criterion::BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("query_1000", |b| {
        b.iter_batched(
            || {
                signed(
                    &key,
                    "GET",
                    "/devstoreaccount1/bench()",
                    Some("$filter=PartitionKey%20eq%20'q00000'&$top=1000"),
                    None,
                )
            },
            &run,
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = signature_check, requests
}
criterion_main!(benches);
