//! Ranges that split under load, on in-process clusters (the full node code on memory engines): a hot
//! table cut into several ranges while writers insert and readers page through it, queries and
//! continuations that cross range boundaries, point operations and batches routed to the right half,
//! the leader killed in the middle of a split, split ranges surviving restarts, replica moves, and a
//! leader transfer asked of a node that no longer holds the range.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use trestle_client::{QueryBuilder, TableClient};
use trestle_engine::keys;
use trestle_storage_node::ranges::RangeDesc;
use trestle_storage_node::splits::SplitAt;
use trestle_testkit::{InProcessCluster, eventually};
use trestle_types::{Entity, IfMatch, Value, WriteKind, WriteOp};

const ACCOUNT: &str = "devstoreaccount1";

fn entity(pk: &str, rk: &str, n: i64) -> Entity {
    Entity::new(pk, rk).with("n", Value::Int64(n))
}

/// Every data range holding a key of `table`, as node `id` sees it, in key order.
async fn ranges_of(c: &InProcessCluster, id: u64, table: &str) -> Vec<RangeDesc> {
    let local = c.node(id).tables().local();
    // The catalog lookup needs a meta leader, which an election may be choosing right now.
    let table_id = eventually(Duration::from_secs(10), || async {
        local.table_id(ACCOUNT, table).await.ok()
    })
    .await
    .unwrap_or_else(|| panic!("node {id} finds table {table}"));
    local.ranges().ranges_of_table(table_id)
}

/// Splits the range holding partition `pk` of `table` at that partition, through node `via`.
async fn split_at(c: &InProcessCluster, via: u64, table: &str, pk: &str) -> (RangeDesc, RangeDesc) {
    let tables = c.node(via).tables();
    // The lookups read the catalog, whose leader an election under load may be choosing right now.
    let (range, table_id) = eventually(Duration::from_secs(10), || async {
        let range = tables
            .local()
            .range_of_partition(ACCOUNT, table, pk)
            .await
            .ok()?;
        let table_id = tables.local().table_id(ACCOUNT, table).await.ok()?;
        Some((range, table_id))
    })
    .await
    .unwrap_or_else(|| panic!("node {via} finds partition {pk} of {table}"));
    tables
        .split_range(range.id, SplitAt::Key(keys::partition_prefix(table_id, pk)))
        .await
        .unwrap_or_else(|e| panic!("split at {pk}: {e}"))
}

/// Creates `table` holding 60 entities over 20 partitions (`p00`..`p19`); its client handle.
async fn sixty_entities(c: &InProcessCluster, table: &str) -> trestle_client::Table {
    let client = c.client().await.unwrap();
    client.create_table(table).await.unwrap();
    let t = client.table(table);
    for i in 0..60 {
        t.insert(entity(&format!("p{:02}", i % 20), &format!("r{i}"), i))
            .await
            .unwrap();
    }
    t
}

/// The row keys of one full scan of `table`, page by page (`page_size` entities each).
async fn scan(client: &TableClient, table: &str, page_size: u32) -> Vec<String> {
    let t = client.table(table);
    let mut stream = t.query(QueryBuilder::new().page_size(page_size));
    let mut keys = Vec::new();
    while let Some(e) = stream.next().await {
        let e = e.unwrap_or_else(|e| panic!("scan of {table}: {e}"));
        keys.push(format!("{}/{}", e.partition_key, e.row_key));
    }
    keys
}

/// Four writers inserting into `table` (recording what was acknowledged) and a scanner paging through
/// it, checking every full scan holds each acknowledged entity exactly once, in key order.
struct Load {
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    scanner: tokio::task::JoinHandle<usize>,
}

impl Load {
    fn start(client: &TableClient, table: &'static str) -> Load {
        let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let t = client.table(table);
                let mut i = 0i64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let pk = format!("p{:03}", (i * 7 + w * 13) % 200);
                    let rk = format!("w{w}-{i:06}");
                    // A write that fails is not acknowledged; only acknowledged ones are checked.
                    if t.insert(entity(&pk, &rk, i)).await.is_ok() {
                        acked.lock().unwrap().insert(format!("{pk}/{rk}"));
                    }
                    i += 1;
                }
            }));
        }
        let scanner = {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut scans = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let before: BTreeSet<String> = acked.lock().unwrap().clone();
                    let keys = scan(&client, table, 97).await;
                    let mut sorted = keys.clone();
                    sorted.sort();
                    sorted.dedup();
                    assert_eq!(keys, sorted, "a scan repeated or reordered entities");
                    let seen: BTreeSet<String> = keys.into_iter().collect();
                    let missing: Vec<_> = before.difference(&seen).take(5).collect();
                    assert!(
                        missing.is_empty(),
                        "a scan missed acknowledged writes: {missing:?}"
                    );
                    scans += 1;
                }
                scans
            })
        };
        Load {
            acked,
            stop,
            writers,
            scanner,
        }
    }

    /// Waits until `more` writes beyond the current count were acknowledged.
    async fn grows_by(&self, more: usize) {
        let written = self.acked.lock().unwrap().len();
        let grown = eventually(Duration::from_secs(30), || async {
            (self.acked.lock().unwrap().len() >= written + more).then_some(())
        })
        .await;
        assert!(grown.is_some(), "the writers made progress");
    }

    /// Stops the load; asserts the scanner completed scans.
    async fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in self.writers {
            w.await.unwrap();
        }
        assert!(
            self.scanner.await.unwrap() > 0,
            "the scanner completed scans"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r01_splits_under_writes_and_scans_lose_nothing_and_scans_see_each_entity_once() {
    let c = InProcessCluster::start(2).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("hot").await.unwrap();
    let load = Load::start(&client, "hot");
    let acked = load.acked.clone();
    // Let data accumulate, then cut the table four times while the load runs: at chosen partitions
    // and at the middle of a range's data.
    load.grows_by(400).await;
    split_at(&c, 1, "hot", "p050").await;
    split_at(&c, 2, "hot", "p150").await;
    split_at(&c, 3, "hot", "p100").await;
    let ranges = ranges_of(&c, 1, "hot").await;
    let (left, right) = c
        .node(1)
        .tables()
        .split_range(ranges[0].id, SplitAt::MiddleOfData)
        .await
        .unwrap();
    let table_id = c
        .node(1)
        .tables()
        .local()
        .table_id(ACCOUNT, "hot")
        .await
        .unwrap();
    assert!(right.start > left.start && keys::is_split_key(&right.start));
    assert!(right.start.starts_with(&keys::table_prefix(table_id)));
    load.grows_by(200).await;
    load.finish().await;

    // Every node routes by the same five ranges of the table, each with one leader.
    for id in 1..=3 {
        let found = eventually(Duration::from_secs(10), || async {
            (ranges_of(&c, id, "hot").await.len() == 5).then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "node {id}: {:?}",
            ranges_of(&c, id, "hot").await
        );
    }
    for r in ranges_of(&c, 1, "hot").await {
        assert!(
            c.leader_of(r.id).await.is_some(),
            "range {} has a leader",
            r.id
        );
    }
    // Nothing acknowledged is lost; a final scan sees exactly what was written, once each.
    let acked = acked.lock().unwrap().clone();
    let seen: Vec<String> = scan(&client, "hot", 1000).await;
    let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), seen_set.len(), "no entity twice");
    let lost: Vec<_> = acked.difference(&seen_set).take(5).collect();
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r02_point_operations_batches_and_filters_reach_the_half_that_holds_the_key() {
    let mut c = InProcessCluster::start(1).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("tee").await.unwrap();
    let t = client.table("tee");
    for pk in ["a", "m", "z"] {
        for i in 0..3 {
            t.insert(entity(pk, &format!("r{i}"), i)).await.unwrap();
        }
    }
    let (left, right) = split_at(&c, 2, "tee", "m").await;
    assert_eq!(left.epoch.version, 2);
    assert_eq!(right.epoch.version, 2);
    assert_ne!(left.id, right.id);
    // Point reads and conditional writes on both sides of the cut.
    let a = t.get("a", "r1").await.unwrap();
    let m = t.get("m", "r1").await.unwrap();
    let etag = |e: &Entity| IfMatch::ETag(trestle_types::ETag(e.timestamp.unwrap()));
    t.replace(entity("a", "r1", 10), etag(&a)).await.unwrap();
    t.replace(entity("m", "r1", 10), etag(&m)).await.unwrap();
    // An entity group transaction in the new range.
    let ops = (3..6)
        .map(|i| WriteOp {
            kind: WriteKind::Insert,
            entity: entity("z", &format!("r{i}"), i),
            if_match: IfMatch::None,
        })
        .collect();
    t.batch(ops).await.unwrap();
    // Filters that select a partition on either side, and one that spans the cut.
    let count = |filter: &'static str| {
        let t = client.table("tee");
        async move {
            t.query(QueryBuilder::new().filter(filter))
                .collect::<Vec<_>>()
                .await
                .len()
        }
    };
    assert_eq!(count("PartitionKey eq 'a'").await, 3);
    assert_eq!(count("PartitionKey eq 'z'").await, 6);
    assert_eq!(count("PartitionKey ge 'a' and n ge 1").await, 9);
    // Splits survive a restart of every node: the ranges come back from each node's own store.
    for id in 1..=3 {
        c.stop(id).await;
        c.restart(id).await.unwrap();
    }
    let after = ranges_of(&c, 1, "tee").await;
    assert_eq!(after, vec![left.clone(), right.clone()]);
    assert_eq!(
        t.get("z", "r5").await.unwrap().properties["n"],
        Value::Int64(5)
    );
    assert_eq!(count("n ge 0").await, 12);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r03_killing_the_leader_in_the_middle_of_a_split_converges_with_nothing_lost() {
    let mut c = InProcessCluster::start(1).await.unwrap();
    let t = sixty_entities(&c, "kay").await;
    let range = ranges_of(&c, 1, "kay").await[0].clone();
    let leader = c.leader_of(range.id).await.unwrap();
    let table_id = c
        .node(leader)
        .tables()
        .local()
        .table_id(ACCOUNT, "kay")
        .await
        .unwrap();
    // Propose the split and crash its leader at once: the split may or may not commit.
    let tables = c.node(leader).tables().clone();
    let split = tokio::spawn(async move {
        tables
            .split_range(
                range.id,
                SplitAt::Key(keys::partition_prefix(table_id, "p10")),
            )
            .await
    });
    tokio::task::yield_now().await;
    c.crash(leader).await;
    let _ = split.await;
    // The survivors agree on the table's ranges (split or not), each with one leader, and serve.
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut views = Vec::new();
        for &id in &survivors {
            views.push(ranges_of(&c, id, "kay").await);
        }
        if views.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivors disagree: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.insert(entity("p15", "after", 1)).await.unwrap();
    c.restart(leader).await.unwrap();
    let expected = ranges_of(&c, survivors[0], "kay").await;
    let caught_up = eventually(Duration::from_secs(20), || async {
        (ranges_of(&c, leader, "kay").await == expected).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the restarted node follows the split");
    for r in &expected {
        assert!(c.leader_of(r.id).await.is_some());
    }
    let all: Vec<_> = t.query(QueryBuilder::new()).collect().await;
    assert_eq!(all.len(), 61, "every acknowledged write is there, once");
    // And a split after the crash works wherever the leaders now are. (The new range elects its
    // leader while the scan runs: the scan's client waits longer than the test clients' 5 s.)
    split_at(&c, leader, "kay", "p05").await;
    let patient = trestle_client::TableClient::connect_with(
        c.grpc_endpoints(),
        trestle_client::ClientConfig::default()
            .with_credentials(trestle_client::Credentials::development())
            .with_deadline(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    let t = patient.table("kay");
    let all: Vec<_> = t.query(QueryBuilder::new().page_size(7)).collect().await;
    let failed: Vec<_> = all.iter().filter_map(|e| e.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(all.len(), 61);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r04_the_scheduler_splits_a_range_that_outgrows_the_size_threshold() {
    let c = InProcessCluster::start_with(1, |cfg| {
        cfg.partition_manager.split_bytes = 40_000;
        cfg.partition_manager.schedule_interval_ms = 200;
    })
    .await
    .unwrap();
    let client = c.client().await.unwrap();
    client.create_table("big").await.unwrap();
    let t = client.table("big");
    let payload = "x".repeat(900);
    for i in 0..200 {
        let e = entity(&format!("p{:03}", i % 40), &format!("r{i}"), i)
            .with("pad", Value::String(payload.clone()));
        t.insert(e).await.unwrap();
    }
    // ~190 KB against a 40 KB threshold: the scheduler keeps splitting, one range a round.
    let split = eventually(Duration::from_secs(30), || async {
        (ranges_of(&c, 1, "big").await.len() >= 3).then_some(())
    })
    .await;
    assert!(split.is_some(), "{:?}", ranges_of(&c, 1, "big").await);
    // Every range's leader counts its bytes, and the halves hold about what the whole held.
    let ranges = ranges_of(&c, 1, "big").await;
    let mut total = 0;
    for r in &ranges {
        let leader = c.leader_of(r.id).await.unwrap();
        let stats = c.node(leader).tables().local().ranges().stats(r.id);
        let counted = eventually(Duration::from_secs(10), || async {
            let b = stats.bytes();
            (b > 0).then_some(b)
        })
        .await;
        total += counted.unwrap_or_else(|| panic!("range {} counts its bytes", r.id));
    }
    assert!(total > 150_000, "the ranges count {total} bytes");
    let all: Vec<_> = t.query(QueryBuilder::new()).collect().await;
    assert_eq!(all.len(), 200);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r05_the_scheduler_splits_a_hot_range_where_its_load_divides() {
    let c = InProcessCluster::start_with(1, |cfg| {
        cfg.partition_manager.split_load_ops = 30;
        cfg.partition_manager.schedule_interval_ms = 500;
    })
    .await
    .unwrap();
    let client = c.client().await.unwrap();
    client.create_table("busy").await.unwrap();
    let t = client.table("busy");
    for p in 0..20 {
        t.insert(entity(&format!("p{p:02}"), "r", p)).await.unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for w in 0..4 {
        let (t, stop) = (client.table("busy"), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                t.get(&format!("p{:02}", i % 20), "r").await.unwrap();
                i += 1;
            }
        }));
    }
    let split = eventually(Duration::from_secs(30), || async {
        (ranges_of(&c, 1, "busy").await.len() >= 2).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    assert!(split.is_some(), "a hot range was split by load");
    // The cut lies inside the table, between its partitions: both halves hold some of the load.
    let ranges = ranges_of(&c, 1, "busy").await;
    let table_id = c
        .node(1)
        .tables()
        .local()
        .table_id(ACCOUNT, "busy")
        .await
        .unwrap();
    let cut = &ranges[1].start;
    assert!(
        cut.starts_with(&keys::table_prefix(table_id)) && cut.len() > 8,
        "{cut:?}"
    );
    assert!(cut.as_slice() > keys::partition_prefix(table_id, "p00").as_slice());
    assert!(cut.as_slice() <= keys::partition_prefix(table_id, "p19").as_slice());
    let all: Vec<_> = t.query(QueryBuilder::new()).collect().await;
    assert_eq!(all.len(), 20);
    c.shutdown().await;
}

/// Which nodes host an initialized replica of `range`.
fn hosts(c: &InProcessCluster, range: u64) -> Vec<u64> {
    (1..=c.size())
        .filter(|&id| c.is_running(id))
        .filter(|&id| {
            c.node(id)
                .raft()
                .group_status(range)
                .is_some_and(|s| s.desc.is_some())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r06_a_range_moves_from_node_1_to_node_4_under_load_and_node_2_is_decommissioned() {
    let c = InProcessCluster::start_nodes(5, 1, |_| {}).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("moving").await.unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let t = client.table("moving");
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (pk, rk) = (format!("p{}", i % 17), format!("w{w}-{i:06}"));
                if t.insert(entity(&pk, &rk, i)).await.is_ok() {
                    acked.lock().unwrap().insert(format!("{pk}/{rk}"));
                }
                i += 1;
            }
        }));
    }
    let range = ranges_of(&c, 1, "moving").await[0].id;
    assert_eq!(hosts(&c, range), vec![1, 2, 3]);
    let grown = eventually(Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() > 200).then_some(())
    })
    .await;
    assert!(grown.is_some());
    // Move the table's range from node 1 to node 4, asking node 5 (which hosts none of it).
    let desc = c
        .node(5)
        .tables()
        .move_replica(range, 1, 4, Duration::from_secs(60))
        .await
        .unwrap();
    let mut voters = desc.voters.clone();
    voters.sort_unstable();
    assert_eq!(voters, vec![2, 3, 4]);
    let moved = eventually(Duration::from_secs(10), || async {
        (hosts(&c, range) == vec![2, 3, 4]).then_some(())
    })
    .await;
    assert!(moved.is_some(), "hosts: {:?}", hosts(&c, range));
    // Decommission node 2: every replica it holds (the data ranges and the meta group) leaves it.
    let zones = (1..=5).map(|n| (n, None)).collect();
    let moves = c.node(3).tables().decommission(2, &zones).await.unwrap();
    assert!(moves.len() >= 2, "{moves:?}");
    let emptied = eventually(Duration::from_secs(20), || async {
        c.node(2).raft().status().is_empty().then_some(())
    })
    .await;
    assert!(
        emptied.is_some(),
        "node 2 still holds {:?}",
        c.node(2).raft().status()
    );
    let written = acked.lock().unwrap().len();
    let more = eventually(Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() > written + 100).then_some(())
    })
    .await;
    assert!(more.is_some(), "writes go on after the moves");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    // Nothing acknowledged is lost, and node 5's client path (no local replica) reads it all.
    let acked = acked.lock().unwrap().clone();
    let seen: BTreeSet<String> = scan(&client, "moving", 500).await.into_iter().collect();
    let lost: Vec<_> = acked.difference(&seen).take(5).collect();
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    let via5 = c.client_of(5).await.unwrap();
    assert_eq!(scan(&via5, "moving", 1000).await.len(), seen.len());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r07_a_wiped_node_bootstraps_nothing_and_gets_its_replicas_back_by_snapshot() {
    let mut c = InProcessCluster::start(2).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("wiped").await.unwrap();
    let t = client.table("wiped");
    for i in 0..50 {
        t.insert(entity(&format!("p{}", i % 5), &format!("r{i}"), i))
            .await
            .unwrap();
    }
    let range = ranges_of(&c, 1, "wiped").await[0].id;
    c.wipe(3).await.unwrap();
    c.restart(3).await.unwrap();
    // Node 3 comes back hosting only what the leaders send it, by snapshot, and with all the data.
    let back = eventually(Duration::from_secs(30), || async {
        c.read_replica(3, ACCOUNT, "wiped", "p4", "r49")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert!(back.is_some(), "node 3 got the range back");
    assert!(hosts(&c, range).contains(&3));
    assert!(hosts(&c, 1).contains(&3), "and the meta group");
    t.insert(entity("p0", "after", 1)).await.unwrap();
    assert_eq!(
        t.query(QueryBuilder::new()).collect::<Vec<_>>().await.len(),
        51
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r08_killing_the_leader_in_the_middle_of_a_move_then_asking_again_finishes_it() {
    let mut c = InProcessCluster::start_nodes(4, 1, |_| {}).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("mid").await.unwrap();
    let t = client.table("mid");
    for i in 0..40 {
        t.insert(entity(&format!("p{}", i % 4), &format!("r{i}"), i))
            .await
            .unwrap();
    }
    let range = ranges_of(&c, 1, "mid").await[0].id;
    let leader = c.leader_of(range).await.unwrap();
    let from = (1..=3).find(|&n| n != leader).unwrap();
    // Start the move from node 4 and kill the range's leader once node 4 has joined as a learner.
    let tables = c.node(4).tables().clone();
    let moving = tokio::spawn(async move {
        tables
            .move_replica(range, from, 4, Duration::from_secs(5))
            .await
    });
    let joined = eventually(Duration::from_secs(20), || async {
        c.node(4).raft().group_status(range).map(|_| ())
    })
    .await;
    assert!(joined.is_some(), "node 4 received a replica");
    c.crash(leader).await;
    let _ = moving.await;
    // Asked again, the move resumes from wherever it stopped, under the new leader.
    let desc = c
        .node(4)
        .tables()
        .move_replica(range, from, 4, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        desc.voters.contains(&4) && !desc.voters.contains(&from),
        "{desc:?}"
    );
    assert!(desc.voters_outgoing.is_empty() && desc.learners.is_empty());
    c.restart(leader).await.unwrap();
    let converged = eventually(Duration::from_secs(20), || async {
        let mut voters = desc.voters.clone();
        voters.sort_unstable();
        (hosts(&c, range) == voters).then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "hosts {:?}, voters {:?}",
        hosts(&c, range),
        desc.voters
    );
    let leaders: Vec<u64> = (1..=4)
        .filter(|&id| {
            c.node(id)
                .raft()
                .group_status(range)
                .is_some_and(|s| s.role == trestle_replication::Role::Leader)
        })
        .collect();
    assert!(leaders.len() <= 1, "one leader at most: {leaders:?}");
    t.insert(entity("p9", "after", 1)).await.unwrap();
    assert_eq!(
        t.query(QueryBuilder::new()).collect::<Vec<_>>().await.len(),
        41
    );
    c.shutdown().await;
}

/// A query over three ranges led by three different nodes: the node it enters forwards each page to
/// the leader of the range the page starts in. (A forwarded query used to be answered whole: the
/// leader of the middle range ran on into the last range, which it does not lead, failed, and the entry
/// node asked it again and again until the client gave up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r09_a_query_across_ranges_led_by_three_nodes_returns_every_page() {
    let c = InProcessCluster::start(1).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("trio").await.unwrap();
    let t = client.table("trio");
    for i in 0..40 {
        t.insert(entity(&format!("p{i:02}"), "r", i)).await.unwrap();
    }
    split_at(&c, 1, "trio", "p13").await;
    split_at(&c, 1, "trio", "p26").await;
    // Node 1's view has both splits once its replicas applied them.
    let ranges = eventually(Duration::from_secs(10), || async {
        let ranges = ranges_of(&c, 1, "trio").await;
        (ranges.len() == 3).then_some(ranges)
    })
    .await
    .expect("node 1 sees the table's three ranges");
    for (range, node) in ranges.iter().map(|r| r.id).zip(1..=3) {
        let moved = eventually(Duration::from_secs(10), || async {
            let leader = c.leader_of(range).await?;
            if leader != node {
                let _ = c.node(leader).raft().transfer_leader(range, node).await;
                return None;
            }
            Some(())
        })
        .await;
        assert!(moved.is_some(), "range {range} is led by node {node}");
    }
    let expected: Vec<String> = (0..40).map(|i| format!("p{i:02}/r")).collect();
    for id in 1..=3 {
        let via = c.client_of(id).await.unwrap();
        for page_size in [7, 1000] {
            let keys = scan(&via, "trio", page_size).await;
            assert_eq!(keys, expected, "through node {id}, page size {page_size}");
        }
    }
    c.shutdown().await;
}

/// Replicas each running node holds.
fn replica_counts(c: &InProcessCluster) -> BTreeMap<u64, usize> {
    (1..=c.size())
        .filter(|&id| c.is_running(id))
        .map(|id| (id, c.node(id).raft().status().len()))
        .collect()
}

/// Whether every running node in `nodes` holds within one replica of every other.
fn within_one(counts: &BTreeMap<u64, usize>, nodes: &[u64]) -> bool {
    let of: Vec<usize> = nodes.iter().map(|n| counts[n]).collect();
    of.iter().max().unwrap() - of.iter().min().unwrap() <= 1
}

/// The range scheduler under a write load, on five nodes where the first three start with every
/// range: it fills the two empty nodes until every node holds within one replica of every other;
/// empties a node marked for decommissioning (the meta group too); replaces the replicas of a node that
/// stays silent past the dead time; and, when that node comes back, has it destroy the replicas its
/// ranges no longer have, then fills it again. No acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r10_the_scheduler_fills_new_nodes_drains_a_decommissioned_one_and_replaces_a_lost_one() {
    let mut c = InProcessCluster::start_nodes(5, 4, |cfg| {
        cfg.partition_manager.balance_replicas = true;
        cfg.partition_manager.schedule_interval_ms = 200;
        cfg.partition_manager.dead_node_secs = 2;
    })
    .await
    .unwrap();
    let client = c.client().await.unwrap();
    client.create_table("spread").await.unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let t = client.table("spread");
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (pk, rk) = (format!("p{}", i % 13), format!("w{w}-{i:06}"));
                if t.insert(entity(&pk, &rk, i)).await.is_ok() {
                    acked.lock().unwrap().insert(format!("{pk}/{rk}"));
                }
                i += 1;
            }
        }));
    }
    // Five groups (meta + 4 data ranges) × 3 replicas over five nodes: three each.
    let filled = eventually(Duration::from_secs(60), || async {
        let counts = replica_counts(&c);
        (counts.values().all(|&n| n == 3)).then_some(())
    })
    .await;
    assert!(filled.is_some(), "{:?}", replica_counts(&c));
    // Node 2 is marked for decommissioning: the scheduler moves everything off it.
    c.node(1).tables().set_draining(2, true).await.unwrap();
    let drained = eventually(Duration::from_secs(60), || async {
        let counts = replica_counts(&c);
        (counts[&2] == 0 && within_one(&counts, &[1, 3, 4, 5])).then_some(())
    })
    .await;
    assert!(drained.is_some(), "{:?}", replica_counts(&c));
    // Node 3 goes silent past the dead time: its replicas are replaced on 1, 4 and 5.
    c.stop(3).await;
    let repaired = eventually(Duration::from_secs(60), || async {
        let counts = replica_counts(&c);
        let spread = counts[&1] == 5 && counts[&4] == 5 && counts[&5] == 5;
        spread.then_some(())
    })
    .await;
    assert!(repaired.is_some(), "{:?}", replica_counts(&c));
    // Back again: its stale replicas are destroyed and it fills up like a new node.
    c.restart(3).await.unwrap();
    let settled = eventually(Duration::from_secs(60), || async {
        let counts = replica_counts(&c);
        let stale = c.node(3).raft().status().into_iter().any(|s| {
            s.desc
                .is_some_and(|d| !d.voters.contains(&3) && !d.learners.contains(&3))
        });
        (!stale && counts[&2] == 0 && within_one(&counts, &[1, 3, 4, 5]) && counts[&3] > 0)
            .then_some(())
    })
    .await;
    assert!(settled.is_some(), "{:?}", replica_counts(&c));
    let written = acked.lock().unwrap().len();
    let more = eventually(Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() > written + 50).then_some(())
    })
    .await;
    assert!(more.is_some(), "writes go on");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let seen: BTreeSet<String> = scan(&client, "spread", 500).await.into_iter().collect();
    let lost: Vec<_> = acked.difference(&seen).take(5).collect();
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r11_admin_transfer_leader_asked_of_a_node_without_the_range_reaches_its_leader() {
    let c = InProcessCluster::start_nodes(4, 1, |_| {}).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("led").await.unwrap();
    let t = client.table("led");
    for i in 0..10 {
        t.insert(entity("p", &format!("r{i}"), i)).await.unwrap();
    }
    let range = ranges_of(&c, 1, "led").await[0].id;
    c.node(4)
        .tables()
        .move_replica(range, 1, 4, Duration::from_secs(60))
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(20), || async {
        (!hosts(&c, range).contains(&1)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "node 1 destroyed its replica");
    // Node 1 (the SDK's first seed) no longer hosts the range: Locate still names its leader.
    let locator =
        trestle_proto::admin::admin_client::AdminClient::connect(c.grpc_endpoints()[0].clone())
            .await
            .unwrap();
    let located = trestle_testkit::eventually(Duration::from_secs(10), || {
        let mut locator = locator.clone();
        async move {
            let mut request = tonic::Request::new(trestle_proto::admin::LocateRequest {
                account: "devstoreaccount1".into(),
                table: "led".into(),
                partition_key: "p".into(),
            });
            trestle_testkit::sign_as_dev_account(
                &mut request,
                trestle_proto::auth::method::LOCATE,
                "devstoreaccount1",
            );
            let r = locator.locate(request).await.ok()?.into_inner();
            (r.range_id == range && r.leader_node_id != 0 && r.leader_node_id != 1).then_some(r)
        }
    })
    .await;
    assert!(
        located.is_some(),
        "Locate through node 1 names range {range}'s leader"
    );
    // Node 1 (what `trestle ctl` asks by default) no longer hosts the range: it finds the leader.
    let mut admin =
        trestle_proto::admin::admin_client::AdminClient::connect(c.grpc_endpoints()[0].clone())
            .await
            .unwrap();
    let request = || {
        trestle_testkit::process::with_admin_token(
            trestle_proto::admin::TransferLeaderRequest {
                range_id: range,
                to_node_id: 4,
            },
            trestle_storage_node::config::EXAMPLE_CLUSTER_TOKEN,
        )
    };
    admin.transfer_leader(request()).await.unwrap();
    let moved = eventually(Duration::from_secs(10), || async {
        match c.leader_of(range).await {
            Some(4) => Some(()),
            _ => {
                // A transfer can lapse (an election timeout first); asking again is what ctl users do.
                let _ = admin.clone().transfer_leader(request()).await;
                None
            }
        }
    })
    .await;
    assert!(
        moved.is_some(),
        "node 4 leads range {range}: {:?}",
        c.leader_of(range).await
    );
    c.shutdown().await;
}

/// Merges range `source` through node `via` (the coordinator runs there).
async fn merge(c: &InProcessCluster, via: u64, source: u64) -> RangeDesc {
    c.node(via)
        .tables()
        .merge_range(source, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("merge of range {source} through node {via}: {e}"))
}

/// Waits until every node in `nodes` routes `table` by the same ranges; returns them.
async fn agreed_ranges(c: &InProcessCluster, nodes: &[u64], table: &str) -> Vec<RangeDesc> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut views = Vec::new();
        for &id in nodes {
            views.push(ranges_of(c, id, table).await);
        }
        if views.windows(2).all(|w| w[0] == w[1]) {
            return views.swap_remove(0);
        }
        assert!(Instant::now() < deadline, "the nodes disagree: {views:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r12_merges_under_writes_and_scans_lose_nothing_and_scans_see_each_entity_once() {
    let c = InProcessCluster::start(3).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("cold").await.unwrap();
    for pk in ["p050", "p100", "p150"] {
        split_at(&c, 1, "cold", pk).await;
    }
    let four = eventually(Duration::from_secs(10), || async {
        (ranges_of(&c, 1, "cold").await.len() == 4).then_some(())
    })
    .await;
    assert!(four.is_some(), "{:?}", ranges_of(&c, 1, "cold").await);
    let load = Load::start(&client, "cold");
    load.grows_by(300).await;
    // Fold the table back into one range while the load runs, each merge coordinated by another
    // node: the right-most range first, then the middle one, then the second.
    let ranges = ranges_of(&c, 1, "cold").await;
    let merged = merge(&c, 2, ranges[3].id).await;
    assert_eq!(merged.id, ranges[2].id);
    assert_eq!(merged.end, ranges[3].end);
    assert!(merged.epoch.version > ranges[3].epoch.version);
    merge(&c, 3, ranges[2].id).await;
    merge(&c, 1, ranges[1].id).await;
    load.grows_by(200).await;
    let acked = load.acked.clone();
    load.finish().await;

    // Every node routes by one range for the table, led by one node; the merged ranges are gone.
    let left = agreed_ranges(&c, &[1, 2, 3], "cold").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].id, ranges[0].id);
    assert!(c.leader_of(left[0].id).await.is_some());
    for r in &ranges[1..] {
        for id in 1..=3 {
            let gone = eventually(Duration::from_secs(10), || async {
                c.node(id).raft().group_status(r.id).is_none().then_some(())
            })
            .await;
            assert!(
                gone.is_some(),
                "node {id} still hosts merged range {}",
                r.id
            );
        }
    }
    let acked = acked.lock().unwrap().clone();
    let seen = scan(&client, "cold", 1000).await;
    let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), seen_set.len(), "no entity twice");
    let lost: Vec<_> = acked.difference(&seen_set).take(5).collect();
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    // A merge of the first range, or of the meta range, is refused; the merged range splits again.
    let first = c.node(1).tables().local().ranges().data_ranges()[0].id;
    let refused = c
        .node(1)
        .tables()
        .merge_range(first, Duration::from_secs(5))
        .await;
    assert_eq!(
        refused.unwrap_err().code,
        trestle_types::ErrorCode::InvalidInput
    );
    let meta = c
        .node(1)
        .tables()
        .merge_range(
            trestle_storage_node::ranges::META_RANGE_ID,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        meta.unwrap_err().code,
        trestle_types::ErrorCode::InvalidInput
    );
    split_at(&c, 2, "cold", "p120").await;
    assert_eq!(agreed_ranges(&c, &[1, 2, 3], "cold").await.len(), 2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r13_killing_the_leader_in_the_middle_of_a_merge_then_asking_again_converges() {
    let mut c = InProcessCluster::start(1).await.unwrap();
    let t = sixty_entities(&c, "kay").await;
    let (_, right) = split_at(&c, 1, "kay", "p10").await;
    // Both ranges led by one node, which coordinates the merge and is killed at once: the merge
    // may be prepared, committed, or not started.
    let leader = c.leader_of(right.id).await.unwrap();
    let tables = c.node(leader).tables().clone();
    let source = right.id;
    let merging =
        tokio::spawn(async move { tables.merge_range(source, Duration::from_secs(10)).await });
    tokio::task::yield_now().await;
    c.crash(leader).await;
    let _ = merging.await;
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    // With a replica down the merge cannot finish (every source replica must have applied the
    // prepare): asked of a survivor, it is rolled back and the source serves again — unless the
    // commit got through before the crash.
    let asked = c
        .node(survivors[0])
        .tables()
        .merge_range(source, Duration::from_secs(2))
        .await;
    let done_early = match &asked {
        Ok(_) => true,
        Err(e) if e.code == trestle_types::ErrorCode::ResourceNotFound => true,
        Err(e) => {
            assert_eq!(e.code, trestle_types::ErrorCode::ServerBusy, "{e}");
            false
        }
    };
    // The source serves writes again (a prepare the dead coordinator left in the log may freeze it
    // only once a new leader commits it: asking again rolls that one back too).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = match t.insert(entity("p15", "after", 1)).await {
            Ok(_) => break,
            // An earlier attempt whose answer was lost.
            Err(e) if e.code() == Some(trestle_types::ErrorCode::EntityAlreadyExists) => break,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "the source never served again: {e}"
        );
        let _ = c
            .node(survivors[0])
            .tables()
            .merge_range(source, Duration::from_secs(2))
            .await;
    }
    if !done_early {
        let ranges = agreed_ranges(&c, &survivors, "kay").await;
        assert!(ranges.len() <= 2, "{ranges:?}");
    }
    // Back with all three nodes, asking again merges (or finds it done).
    c.restart(leader).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let merged = loop {
        match c
            .node(survivors[1])
            .tables()
            .merge_range(source, Duration::from_secs(10))
            .await
        {
            Ok(m) => break m,
            Err(e) if e.code == trestle_types::ErrorCode::ResourceNotFound => {
                break agreed_ranges(&c, &survivors, "kay").await[0].clone();
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "the merge never finished: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(merged.end, right.end);
    let after = agreed_ranges(&c, &[1, 2, 3], "kay").await;
    assert_eq!(after.len(), 1, "{after:?}");
    let gone = eventually(Duration::from_secs(20), || async {
        c.node(leader)
            .raft()
            .group_status(source)
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the restarted node dropped its source replica"
    );
    let all: Vec<_> = t.query(QueryBuilder::new().page_size(7)).collect().await;
    let failed: Vec<_> = all.iter().filter_map(|e| e.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(all.len(), 61, "every acknowledged write is there, once");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r14_the_scheduler_merges_small_cold_neighbours() {
    let c = InProcessCluster::start_with(3, |cfg| {
        cfg.partition_manager.merge_bytes = 1 << 20;
        cfg.partition_manager.merge_load_ops = 1_000;
        cfg.partition_manager.schedule_interval_ms = 200;
    })
    .await
    .unwrap();
    let client = c.client().await.unwrap();
    client.create_table("few").await.unwrap();
    let t = client.table("few");
    for i in 0..20 {
        t.insert(entity(&format!("p{i:03}"), "r", i)).await.unwrap();
    }
    split_at(&c, 1, "few", "p010").await;
    // The split halves (and the bootstrap ranges) are small and idle: the scheduler folds the data
    // ranges back together, one merge a round, until one holds everything.
    let one = eventually(Duration::from_secs(60), || async {
        (c.node(1).tables().local().ranges().data_ranges().len() == 1).then_some(())
    })
    .await;
    assert!(
        one.is_some(),
        "ranges left: {:?}",
        c.node(1).tables().local().ranges().data_ranges()
    );
    let all: Vec<_> = t.query(QueryBuilder::new()).collect().await;
    assert_eq!(all.len(), 20);
    c.shutdown().await;
}
