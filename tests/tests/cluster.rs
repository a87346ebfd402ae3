//! In-process table clusters: the full node code on memory engines, Raft over the memory network with
//! faults injected, gRPC between nodes for forwarding. Stories: replication to every replica, leader
//! failure, minority and majority partitions, a wiped replica restored by snapshot, forwarding, and the
//! partition manager spreading range leaders.

use std::time::Duration;

use trestle_client::TableClient;
use trestle_testkit::{InProcessCluster, eventually};
use trestle_types::{Entity, ErrorCode, Value};

const ACCOUNT: &str = "devstoreaccount1";

fn entity(pk: &str, rk: &str, n: i64) -> Entity {
    Entity::new(pk, rk)
        .with("n", Value::Int64(n))
        .with("s", Value::String(format!("value {n}")))
}

async fn setup(c: &InProcessCluster, table: &str) -> TableClient {
    let client = c.client().await.unwrap();
    client.create_table(table).await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t01_an_acknowledged_insert_is_on_all_three_replicas() {
    let c = InProcessCluster::start(3).await.unwrap();
    let client = setup(&c, "people").await;
    client
        .table("people")
        .insert(entity("p1", "r1", 1))
        .await
        .unwrap();
    for id in 1..=3 {
        let found = eventually(Duration::from_secs(10), || async {
            c.read_replica(id, ACCOUNT, "people", "p1", "r1")
                .await
                .ok()
                .flatten()
        })
        .await;
        let e = found.unwrap_or_else(|| panic!("replica {id} never got the entity"));
        assert_eq!(
            e.properties.get("n"),
            Some(&Value::Int64(1)),
            "replica {id}"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t02_leader_failure_elects_a_new_leader_and_writes_continue() {
    let mut c = InProcessCluster::start(2).await.unwrap();
    let client = setup(&c, "orders").await;
    let t = client.table("orders");
    for i in 0..10 {
        t.insert(entity("p", &format!("a{i:02}"), i)).await.unwrap();
    }
    let range = c.range_of(ACCOUNT, "orders").await.unwrap();
    let leader = c.leader_of(range).await.unwrap();
    c.stop(leader).await;
    for i in 0..10 {
        t.insert(entity("p", &format!("b{i:02}"), i)).await.unwrap();
    }
    let new_leader = c.leader_of(range).await.unwrap();
    assert_ne!(new_leader, leader);
    c.restart(leader).await.unwrap();
    assert!(
        c.wait_replicated(Duration::from_secs(20)).await,
        "replicas converge after the restart"
    );
    for id in 1..=3 {
        for prefix in ["a", "b"] {
            for i in 0..10 {
                let e = c
                    .read_replica(id, ACCOUNT, "orders", "p", &format!("{prefix}{i:02}"))
                    .await
                    .unwrap();
                assert!(e.is_some(), "replica {id} misses {prefix}{i:02}");
            }
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t03_isolated_leader_neither_commits_nor_serves_stale_reads() {
    let c = InProcessCluster::start(1).await.unwrap();
    let client = setup(&c, "accounts").await;
    let t = client.table("accounts");
    t.insert(entity("p", "balance", 100)).await.unwrap();
    let range = c.range_of(ACCOUNT, "accounts").await.unwrap();
    let leader = c.leader_of(range).await.unwrap();
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    c.net.partition(&[&[leader], &others]);

    // The majority elects a leader and takes the update.
    let majority = c.client_of(others[0]).await.unwrap();
    let last_error = std::sync::Mutex::new(None);
    let updated = eventually(Duration::from_secs(15), || async {
        match majority
            .table("accounts")
            .upsert_replace(entity("p", "balance", 200))
            .await
        {
            Ok(v) => Some(v),
            Err(e) => {
                *last_error.lock().unwrap() = Some(e.to_string());
                None
            }
        }
    })
    .await;
    assert!(
        updated.is_some(),
        "the majority side accepts writes: {:?}",
        last_error.lock().unwrap()
    );

    // Through the isolated node a read is either refused or current, never the old balance.
    let isolated = c.client_of(leader).await.unwrap();
    if let Ok(e) = isolated.table("accounts").get("p", "balance").await {
        assert_eq!(
            e.properties.get("n"),
            Some(&Value::Int64(200)),
            "stale read from the minority"
        );
    }
    c.net.heal();
    assert!(c.wait_replicated(Duration::from_secs(20)).await);
    for id in 1..=3 {
        let e = c
            .read_replica(id, ACCOUNT, "accounts", "p", "balance")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            e.properties.get("n"),
            Some(&Value::Int64(200)),
            "replica {id}"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t04_a_wiped_replica_is_restored_by_snapshot() {
    let mut c = InProcessCluster::start_with(1, |cfg| cfg.raft.log_compact_threshold = 20)
        .await
        .unwrap();
    let client = setup(&c, "logs").await;
    let t = client.table("logs");
    for i in 0..120 {
        t.insert(entity("p", &format!("r{i:03}"), i)).await.unwrap();
    }
    let range = c.range_of(ACCOUNT, "logs").await.unwrap();
    let leader = c.leader_of(range).await.unwrap();
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    c.wipe(victim).await.unwrap();
    c.restart(victim).await.unwrap();
    t.insert(entity("p", "after", 1)).await.unwrap();
    let restored = eventually(Duration::from_secs(20), || async {
        let a = c
            .read_replica(victim, ACCOUNT, "logs", "p", "r000")
            .await
            .ok()
            .flatten()?;
        let b = c
            .read_replica(victim, ACCOUNT, "logs", "p", "after")
            .await
            .ok()
            .flatten()?;
        Some((a, b))
    })
    .await;
    assert!(
        restored.is_some(),
        "the wiped replica got the old and the new entities"
    );
    for i in 0..120 {
        let e = c
            .read_replica(victim, ACCOUNT, "logs", "p", &format!("r{i:03}"))
            .await
            .unwrap();
        assert!(e.is_some(), "wiped replica misses r{i:03}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t05_any_node_accepts_any_request() {
    let c = InProcessCluster::start(4).await.unwrap();
    let client = setup(&c, "anywhere").await;
    drop(client);
    for id in 1..=3 {
        let only = c.client_of(id).await.unwrap();
        only.table("anywhere")
            .insert(entity("p", &format!("via{id}"), id as i64))
            .await
            .unwrap();
    }
    let all = c.client_of(2).await.unwrap();
    for id in 1..=3 {
        let e = all
            .table("anywhere")
            .get("p", &format!("via{id}"))
            .await
            .unwrap();
        assert_eq!(e.properties.get("n"), Some(&Value::Int64(id as i64)));
    }
    let dup = all
        .table("anywhere")
        .insert(entity("p", "via1", 9))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some(ErrorCode::EntityAlreadyExists));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t06_a_deleted_table_is_gone_through_every_node_at_once() {
    let c = InProcessCluster::start(3).await.unwrap();
    let clients = [
        c.client_of(1).await.unwrap(),
        c.client_of(2).await.unwrap(),
        c.client_of(3).await.unwrap(),
    ];
    clients[0].create_table("jobs").await.unwrap();
    clients[0]
        .table("jobs")
        .insert(entity("p", "old", 1))
        .await
        .unwrap();
    // Every node looks the table up (and remembers its id).
    for client in &clients {
        client.table("jobs").get("p", "old").await.unwrap();
    }

    // Deleted through one node: no node serves the table once Delete Table has answered.
    clients[2].delete_table("jobs").await.unwrap();
    for (i, client) in clients.iter().enumerate() {
        let err = client
            .table("jobs")
            .insert(entity("p", "late", 2))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TableNotFound), "node {}", i + 1);
        let err = client.table("jobs").get("p", "old").await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TableNotFound), "node {}", i + 1);
    }

    // Re-created through another: every node serves the new, empty table.
    clients[1].create_table("jobs").await.unwrap();
    for (i, client) in clients.iter().enumerate() {
        let err = client.table("jobs").get("p", "old").await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::ResourceNotFound),
            "node {}",
            i + 1
        );
        client
            .table("jobs")
            .insert(entity("p", &format!("new{i}"), 3))
            .await
            .unwrap();
    }
    c.shutdown().await;
}

/// How many groups each node leads now (nodes that are down lead none).
fn leader_counts(c: &InProcessCluster, groups: u64) -> [usize; 3] {
    let mut counts = [0; 3];
    for id in (1..=3u64).filter(|&id| c.is_running(id)) {
        for g in 1..=groups {
            if c.node(id)
                .raft()
                .group_status(g)
                .is_some_and(|s| s.role == trestle_replication::Role::Leader)
            {
                counts[(id - 1) as usize] += 1;
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t07_the_partition_manager_spreads_leaders_that_all_started_on_one_node() {
    let mut c = InProcessCluster::start_with(5, |cfg| {
        cfg.partition_manager.balance_leaders = true;
        cfg.partition_manager.balance_interval_ms = 200;
    })
    .await
    .unwrap();
    let groups = 6; // the meta group and five data ranges
    // With node 3 down the cluster is not healthy, so the partition manager leaves the leaders alone
    // while every one of them moves to node 1.
    c.stop(3).await;
    let gathered = eventually(Duration::from_secs(30), || async {
        let mut all_on_1 = true;
        for g in 1..=groups {
            let leader = c.node(1).raft().leader(g);
            if leader != Some(1) {
                all_on_1 = false;
                if let Some(l) = leader.filter(|&l| c.is_running(l)) {
                    let _ = c.node(l).raft().transfer_leader(g, 1).await;
                }
            }
        }
        (all_on_1 && leader_counts(&c, groups) == [6, 0, 0]).then_some(())
    })
    .await;
    assert!(
        gathered.is_some(),
        "every leader on node 1: {:?}",
        leader_counts(&c, groups)
    );
    // Ten balancing rounds later nothing has moved: a node is unreachable.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        assert_eq!(
            leader_counts(&c, groups),
            [6, 0, 0],
            "balanced while node 3 was down"
        );
        // Pacing of the check, not a wait for a state.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node 3 is back: the leaders spread out, two per node.
    c.restart(3).await.unwrap();
    let spread = eventually(Duration::from_secs(60), || async {
        (leader_counts(&c, groups) == [2, 2, 2]).then_some(())
    })
    .await;
    assert!(
        spread.is_some(),
        "leaders spread out: {:?}",
        leader_counts(&c, groups)
    );
    c.shutdown().await;
}
