//! The SDK against fake nodes on real sockets: redirects on `NotLeader`, leader lookup, retries after
//! refused connections and busy nodes, the no-retry rule for writes whose response was lost, error codes
//! read back from status metadata, and query streams that survive a broken connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fake::{Mode, dead_address, start};
use futures::TryStreamExt;
use trestle_client::{
    ClientConfig, Entity, EntityKey, Error, ErrorCode, IfMatch, QueryBuilder, TableClient, Value,
    op,
};

fn entity(pk: &str, rk: &str, n: i64) -> Entity {
    Entity::new(pk, rk).with("n", Value::Int64(n))
}

async fn client(endpoints: &[String], config: ClientConfig) -> TableClient {
    TableClient::connect_with(endpoints.iter().cloned(), config)
        .await
        .unwrap()
}

fn no_locate() -> ClientConfig {
    ClientConfig::for_test().with_locate(false)
}

#[tokio::test]
async fn t01_not_leader_redirects_to_the_named_leader_and_the_client_remembers_it() {
    let leader = start(Mode::Leader, None).await;
    let follower = start(Mode::Follower(Some(leader.addr.clone())), None).await;
    let c = client(&[follower.url()], no_locate()).await;
    let t = c.table("orders");

    let out = t.insert(entity("p", "r1", 1)).await.unwrap();
    assert!(out.etag.is_some());
    assert_eq!(
        (follower.state.calls(), leader.state.calls()),
        (1, 1),
        "one refusal, one redirect"
    );

    // The next calls on the table go straight to the leader.
    t.insert(entity("p", "r2", 2)).await.unwrap();
    t.insert(entity("other-partition", "r", 3)).await.unwrap();
    assert_eq!(
        t.get("p", "r2").await.unwrap().properties.get("n"),
        Some(&Value::Int64(2))
    );
    assert_eq!((follower.state.calls(), leader.state.calls()), (1, 4));
}

#[tokio::test]
async fn t02_locate_sends_the_first_call_straight_to_the_leader() {
    let leader = start(Mode::Leader, None).await;
    let seed = start(Mode::Follower(None), Some(leader.addr.clone())).await;
    let c = client(&[seed.url()], ClientConfig::for_test()).await;
    c.table("orders").insert(entity("p", "r", 1)).await.unwrap();
    assert_eq!((seed.state.calls(), leader.state.calls()), (0, 1));
}

#[tokio::test]
async fn t03_a_refused_connection_is_retried_on_the_next_node_even_for_a_write() {
    let leader = start(Mode::Leader, None).await;
    let dead = dead_address().await;
    let c = client(&[dead, leader.url()], no_locate()).await;
    c.table("orders").insert(entity("p", "r", 1)).await.unwrap();
    assert_eq!(leader.state.calls(), 1);
    assert_eq!(leader.state.len(), 1);
}

#[tokio::test]
async fn t04_a_busy_node_is_retried_for_reads_but_a_write_gets_the_answer() {
    let leader = start(Mode::Leader, None).await;
    let c = client(&[leader.url()], no_locate()).await;
    let t = c.table("orders");
    t.insert(entity("p", "r", 1)).await.unwrap();

    leader.state.busy.store(3, Ordering::SeqCst);
    assert_eq!(t.get("p", "r").await.unwrap().row_key, "r");
    assert_eq!(
        leader.state.calls(),
        5,
        "the insert, three refusals, then the read"
    );

    // A node also answers ServerBusy for a proposal in flight when it stopped: not repeated.
    leader.state.busy.store(1, Ordering::SeqCst);
    let err = t.upsert_replace(entity("p", "r", 2)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ServerBusy));
    assert!(err.may_have_applied());
    assert_eq!(leader.state.calls(), 6);
}

#[tokio::test]
async fn t05_a_write_whose_response_is_lost_is_ambiguous_and_sent_once() {
    let config = no_locate().with_deadline(Duration::from_millis(300));
    let hang = start(Mode::Hang, None).await;
    let c = client(&[hang.url()], config.clone()).await;
    let err = c
        .table("orders")
        .insert(entity("p", "r", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Ambiguous(_)), "{err:?}");
    assert!(err.may_have_applied());
    assert_eq!(hang.state.calls(), 1);
    // A read in the same situation is just late.
    let err = c.table("orders").get("p", "r").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");

    let proxy = start(Mode::Proxy, None).await;
    let c = client(&[proxy.url()], config).await;
    let err = c
        .table("orders")
        .upsert_replace(entity("p", "r", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Ambiguous(_)), "{err:?}");
    assert_eq!(
        proxy.state.calls(),
        1,
        "an ambiguous write is never repeated"
    );
    // Reads are repeated until the deadline.
    let err = c.table("orders").get("p", "r").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(
        proxy.state.calls() > 2,
        "reads retried: {} calls",
        proxy.state.calls()
    );
}

#[tokio::test]
async fn t06_a_dead_cluster_times_out_within_the_deadline_and_the_write_was_not_applied() {
    let c = client(
        &[dead_address().await, dead_address().await],
        no_locate().with_deadline(Duration::from_millis(400)),
    )
    .await;
    let started = Instant::now();
    let err = c
        .table("orders")
        .insert(entity("p", "r", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(!err.may_have_applied());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn t07_server_errors_come_back_with_their_codes() {
    let leader = start(Mode::Leader, None).await;
    let c = client(&[leader.url()], no_locate()).await;
    let t = c.table("orders");
    t.insert(entity("p", "r", 1)).await.unwrap();

    let dup = t.insert(entity("p", "r", 2)).await.unwrap_err();
    assert_eq!(dup.code(), Some(ErrorCode::EntityAlreadyExists));
    let missing = t.get("p", "nope").await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::ResourceNotFound));
    let gone = t.delete("p", "nope", IfMatch::Any).await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::ResourceNotFound));
    assert_eq!(leader.state.calls(), 4, "definite answers are not retried");

    // A batch fails as a whole, naming the operation that failed.
    let ops = vec![
        op::insert(entity("p", "a", 1)),
        op::insert(entity("p", "r", 1)),
        op::insert(entity("p", "b", 1)),
    ];
    let err = t.batch(ops).await.unwrap_err();
    assert_eq!(err.failed_index(), Some(1));
    assert_eq!(err.code(), Some(ErrorCode::EntityAlreadyExists));
    assert_eq!(
        t.get("p", "a").await.unwrap_err().code(),
        Some(ErrorCode::ResourceNotFound),
        "nothing applied"
    );

    let ok = t
        .batch(vec![
            op::insert(entity("p", "a", 1)),
            op::delete("p", "r", IfMatch::Any),
        ])
        .await
        .unwrap();
    assert_eq!(ok.len(), 2);
    assert!(ok[0].etag.is_some() && ok[1].etag.is_none());
    let selected = t.get_selected("p", "a", ["missing"]).await.unwrap();
    assert!(selected.properties.is_empty());
}

#[tokio::test]
async fn t08_a_query_streams_every_entity_once_even_when_the_stream_breaks() {
    let leader = start(Mode::Leader, None).await;
    let c = client(&[leader.url()], no_locate()).await;
    let t = c.table("orders");
    for i in 0..25 {
        t.insert(entity("p", &format!("r{i:02}"), i)).await.unwrap();
    }
    let keys = |es: &[Entity]| es.iter().map(|e| e.row_key.clone()).collect::<Vec<_>>();
    let expected: Vec<String> = (0..25).map(|i| format!("r{i:02}")).collect();

    let all: Vec<Entity> = t
        .query(QueryBuilder::new().page_size(10))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys(&all), expected);

    leader.state.break_next_query.store(true, Ordering::SeqCst);
    let before = leader.state.calls();
    let all: Vec<Entity> = t
        .query(QueryBuilder::new().page_size(10))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        keys(&all),
        expected,
        "resumed after the break without repeats or gaps"
    );
    assert_eq!(leader.state.calls(), before + 2, "reopened once");

    leader.state.break_next_query.store(true, Ordering::SeqCst);
    let some: Vec<Entity> = t
        .query(QueryBuilder::new().page_size(10).limit(15))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        keys(&some),
        expected[..15].to_vec(),
        "the limit holds across a resume"
    );

    let page = t
        .query_page(QueryBuilder::new().page_size(10))
        .await
        .unwrap();
    assert_eq!(keys(&page.entities), expected[..10].to_vec());
    assert_eq!(page.next, Some(EntityKey::new("p", "r10")));
    let page = t
        .query_page(
            QueryBuilder::new()
                .page_size(10)
                .continuation(page.next.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(keys(&page.entities), expected[10..20].to_vec());
    let last = t
        .query_page(QueryBuilder::new().continuation(EntityKey::new("p", "r20")))
        .await
        .unwrap();
    assert_eq!((last.entities.len(), last.next), (5, None));
}

#[tokio::test]
async fn t09_tables_are_created_and_listed_page_by_page() {
    let leader = start(Mode::Leader, None).await;
    let c = client(&[leader.url()], no_locate()).await;
    assert_eq!(c.create_table("orders").await.unwrap().name, "orders");
    c.delete_table("orders").await.unwrap();
    let names: Vec<String> = c
        .list_tables()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["t0", "t1", "t2", "t3", "t4"]);
    let first = c.list_tables_page(None, 2).await.unwrap();
    assert_eq!(first.next.as_deref(), Some("t2"));
}
