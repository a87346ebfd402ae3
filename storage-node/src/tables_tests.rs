//! Stories of `LocalTables` on a three-node in-process cluster (memory engines, memory network).

use std::sync::Arc;
use std::time::{Duration, Instant};

use trestle_engine::MemoryEngine;
use trestle_replication::memory::MemoryNetwork;
use trestle_replication::{Config, RaftNode};
use trestle_types::{
    Entity, ErrorCode, Filter, IfMatch, QuerySpec, TableName, Value, WriteKind, WriteOp,
};

use super::*;

struct Cluster {
    _net: Arc<MemoryNetwork>,
    nodes: Vec<LocalTables>,
}

impl Cluster {
    /// Three nodes, two data ranges; node 1 leads every group.
    async fn start() -> Cluster {
        let net = Arc::new(MemoryNetwork::new());
        let layout = crate::ranges::RangeMap::initial(2, vec![1, 2, 3]);
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
            let ranges = Arc::new(Ranges::default());
            let locks = crate::locks::LockHost::new(Arc::new(crate::clock::SystemClock::default()));
            let host = Arc::new(NodeHost::new(ranges.clone(), locks, engine.clone()));
            let raft = Arc::new(
                RaftNode::start(id, engine, net.transport(id), Config::for_test(), host).unwrap(),
            );
            net.register(id, raft.mailbox());
            for desc in layout.descs() {
                raft.create_group(desc).await.unwrap();
            }
            nodes.push(LocalTables::new(raft, ranges));
        }
        let cluster = Cluster { _net: net, nodes };
        for group in cluster.group_ids() {
            cluster.make_leader(group, 1).await;
        }
        cluster
    }

    fn group_ids(&self) -> Vec<u64> {
        std::iter::once(META_RANGE_ID)
            .chain(self.node(1).ranges().data_ranges().iter().map(|r| r.id))
            .collect()
    }

    fn node(&self, id: u64) -> &LocalTables {
        &self.nodes[id as usize - 1]
    }

    /// Waits until every node sees `leader` leading `group`, asking it to campaign while it does not.
    async fn make_leader(&self, group: u64, leader: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let current = self.node(leader).raft.leader(group);
        if let Some(old) = current.filter(|&l| l != leader) {
            let _ = self.node(old).raft.transfer_leader(group, leader).await;
        } else if current.is_none() {
            let _ = self.node(leader).raft.campaign(group).await;
        }
        while !self
            .nodes
            .iter()
            .all(|n| n.raft.leader(group) == Some(leader))
        {
            assert!(
                Instant::now() < deadline,
                "node {leader} did not become leader of group {group}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn write(kind: WriteKind, pk: &str, rk: &str, props: &[(&str, Value)]) -> WriteOp {
    let mut entity = Entity::new(pk, rk);
    for (n, v) in props {
        entity.properties.insert(n.to_string(), v.clone());
    }
    WriteOp {
        kind,
        entity,
        if_match: IfMatch::None,
    }
}

fn name(s: &str) -> TableName {
    TableName::new(s).unwrap()
}

#[test]
fn leader_hints_round_trip_through_the_message() {
    assert_eq!(leader_hint(&not_leader(3, Some(2))), Some(2));
    assert_eq!(leader_hint(&not_leader(3, None)), None);
    assert_eq!(leader_hint(&Error::internal("leader=7")), None);
    assert_eq!(
        not_leader(5, Some(12)).message,
        "this replica does not lead range 5; leader=12"
    );
}

#[tokio::test]
async fn tables_and_entities_through_the_leader() {
    let c = Cluster::start().await;
    let (leader, follower) = (c.node(1), c.node(2));
    let info = leader.create_table("acct", &name("Orders")).await.unwrap();
    assert_eq!(
        (info.name.as_str(), info.id),
        ("Orders", meta_sm::table_id(1))
    );
    let err = leader
        .create_table("acct", &name("ORDERS"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TableAlreadyExists);
    // Catalog changes need the meta leader; catalog reads work on any replica.
    let err = follower
        .create_table("acct", &name("Other"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, leader_hint(&err)),
        (ErrorCode::NotLeader, Some(1))
    );
    assert_eq!(
        follower.get_table("acct", "orders").await.unwrap().id,
        info.id
    );
    assert_eq!(
        follower.get_table("acct", "nope").await.unwrap_err().code,
        ErrorCode::TableNotFound
    );

    let out = leader
        .write(
            "acct",
            "orders",
            write(WriteKind::Insert, "p", "1", &[("n", Value::Int64(1))]),
            None,
        )
        .await;
    let etag = out.unwrap().etag.unwrap();
    let got = leader.get_entity("acct", "Orders", "p", "1").await.unwrap();
    assert_eq!(got.etag(), Some(etag));
    let err = follower
        .get_entity("acct", "Orders", "p", "1")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, leader_hint(&err)),
        (ErrorCode::NotLeader, Some(1))
    );
    let err = leader
        .get_entity("acct", "Orders", "p", "2")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceNotFound);
    let mut stale = write(WriteKind::Replace, "p", "1", &[]);
    stale.if_match = IfMatch::ETag(trestle_types::ETag(DateTime(etag.0.0 - 1)));
    let err = leader
        .write("acct", "orders", stale, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::UpdateConditionNotSatisfied);

    let ops: Vec<WriteOp> = (2..12)
        .map(|i| {
            write(
                WriteKind::Insert,
                "p",
                &format!("{i:02}"),
                &[("n", Value::Int64(i))],
            )
        })
        .collect();
    let outcomes = leader.batch("acct", "orders", ops, None).await.unwrap();
    assert_eq!(outcomes.len(), 10);
    let spec = QuerySpec {
        filter: Some(Filter::parse("n ge 5L").unwrap()),
        top: Some(3),
        ..QuerySpec::default()
    };
    let page = leader.query("acct", "orders", spec).await.unwrap();
    let rows: Vec<&str> = page.entities.iter().map(|e| e.row_key.as_str()).collect();
    assert_eq!(rows, ["05", "06", "07"]);
    assert!(page.next.is_some());

    let (tables, next) = follower.list_tables("acct", None, 10).await.unwrap();
    assert_eq!((tables.len(), next), (1, None));
    leader
        .set_table_acl("acct", "orders", vec![])
        .await
        .unwrap();
    leader
        .set_service_properties("acct", "<x/>".into())
        .await
        .unwrap();
    assert_eq!(
        follower
            .get_service_properties("acct")
            .await
            .unwrap()
            .as_deref(),
        Some("<x/>")
    );

    leader.delete_table("acct", "orders").await.unwrap();
    assert_eq!(
        leader
            .delete_table("acct", "orders")
            .await
            .unwrap_err()
            .code,
        ErrorCode::ResourceNotFound
    );
    let err = leader
        .write(
            "acct",
            "orders",
            write(WriteKind::Insert, "p", "x", &[]),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TableNotFound);
    // The entities were dropped at once (node 1 leads the range), so the reaper has nothing to do.
    assert_eq!(leader.reap_dropped_tables().await.unwrap(), 0);
    let again = leader.create_table("acct", &name("orders")).await.unwrap();
    assert_ne!(again.id, info.id);
    let page = leader
        .query("acct", "orders", QuerySpec::default())
        .await
        .unwrap();
    assert!(page.entities.is_empty());
}

#[tokio::test]
async fn batches_are_validated_before_they_are_proposed() {
    let c = Cluster::start().await;
    let n = c.node(1);
    n.create_table("acct", &name("tab1")).await.unwrap();
    let many: Vec<WriteOp> = (0..101)
        .map(|i| write(WriteKind::Insert, "p", &i.to_string(), &[]))
        .collect();
    let err = n.batch("acct", "tab1", many, None).await.unwrap_err();
    assert_eq!((err.index, err.error.code), (None, ErrorCode::InvalidInput));
    assert!(
        err.error.message.starts_with("99:"),
        "{}",
        err.error.message
    );
    let bad = vec![
        write(WriteKind::Insert, "p", "1", &[]),
        write(WriteKind::Insert, "p", "a/b", &[]),
    ];
    let err = n.batch("acct", "tab1", bad, None).await.unwrap_err();
    assert_eq!(
        (err.index, err.error.code),
        (Some(1), ErrorCode::InvalidInput)
    );
    let mixed = vec![
        write(WriteKind::Insert, "p", "1", &[]),
        write(WriteKind::Insert, "q", "1", &[]),
    ];
    let err = n.batch("acct", "tab1", mixed, None).await.unwrap_err();
    assert_eq!(err.index, Some(1));
    let conflict = vec![
        write(WriteKind::Insert, "p", "1", &[]),
        write(WriteKind::Replace, "p", "2", &[]),
    ];
    let err = n.batch("acct", "tab1", conflict, None).await.unwrap_err();
    assert_eq!(
        (err.index, err.error.code),
        (Some(1), ErrorCode::ResourceNotFound)
    );
    assert_eq!(
        n.get_entity("acct", "tab1", "p", "1")
            .await
            .unwrap_err()
            .code,
        ErrorCode::ResourceNotFound
    );
    // A fencing token for a lock name that breaks the lock rules is refused before anything is proposed.
    let fenced = Some(Fencing {
        lock: "bad name".into(),
        token: 1,
    });
    let err = n
        .write(
            "acct",
            "t1",
            write(WriteKind::Insert, "p", "1", &[]),
            fenced,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    let err = n
        .write(
            "acct",
            "missing",
            write(WriteKind::Insert, "p", "1", &[]),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TableNotFound);
}

#[tokio::test]
async fn the_reaper_drops_tables_whose_range_another_node_leads() {
    let c = Cluster::start().await;
    let t = c.node(1).create_table("acct", &name("logs")).await.unwrap();
    let range = c.node(1).ranges().range_for_table(t.id).unwrap().id;
    c.node(1)
        .write(
            "acct",
            "logs",
            write(WriteKind::Insert, "p", "r", &[]),
            None,
        )
        .await
        .unwrap();
    c.make_leader(range, 2).await;
    let err = c
        .node(1)
        .write(
            "acct",
            "logs",
            write(WriteKind::Insert, "p", "s", &[]),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(leader_hint(&err), Some(2));
    // The catalog delete alone, as when the drop could not reach the range's leader in time.
    c.node(1).uncatalog_table("acct", "logs").await.unwrap();
    assert_eq!(
        c.node(1).reap_dropped_tables().await.unwrap(),
        0,
        "node 1 does not lead the range"
    );
    assert_eq!(c.node(2).reap_dropped_tables().await.unwrap(), 1);
    assert_eq!(c.node(2).reap_dropped_tables().await.unwrap(), 0);
    assert!(
        query::is_dropped(
            c.node(2).engine(),
            t.id,
            &c.node(2).ranges().range_for_table(t.id).unwrap().start
        )
        .unwrap()
    );
}

#[tokio::test]
async fn timestamps_strictly_increase_per_range() {
    let c = Cluster::start().await;
    let n = c.node(1);
    let stamps: Vec<i64> = (0..1000).map(|_| n.next_timestamp(2).ticks()).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]));
    assert!(
        n.next_timestamp(3).ticks() <= stamps[999] + 1_000_000_000,
        "each range has its own clock"
    );
}

#[tokio::test]
async fn a_cached_table_id_never_outlives_its_table() {
    let c = Cluster::start().await;
    let insert = |rk: &str| write(WriteKind::Insert, "p", rk, &[]);
    let old = c.node(1).create_table("acct", &name("jobs")).await.unwrap();
    c.node(1)
        .write("acct", "jobs", insert("old"), None)
        .await
        .unwrap();
    assert_eq!(c.node(1).cached_table_id("acct", "JOBS"), Some(old.id));

    // The catalog moves to node 2, so node 1's cache hears nothing of what follows.
    c.make_leader(META_RANGE_ID, 2).await;
    assert_eq!(
        c.node(2).uncatalog_table("acct", "jobs").await.unwrap(),
        old.id
    );
    c.node(1).drop_table_data(old.id).await.unwrap();
    let new = c.node(2).create_table("acct", &name("jobs")).await.unwrap();
    assert_ne!(new.id, old.id);
    for group in c.group_ids().into_iter().filter(|&g| g != META_RANGE_ID) {
        c.make_leader(group, 1).await;
    }
    assert_eq!(c.node(1).cached_table_id("acct", "jobs"), Some(old.id));

    // Node 1's stale id leads to the new table, never to the old one's entities.
    c.node(1)
        .write("acct", "jobs", insert("new"), None)
        .await
        .unwrap();
    assert_eq!(c.node(1).cached_table_id("acct", "jobs"), Some(new.id));
    let err = c
        .node(1)
        .get_entity("acct", "jobs", "p", "old")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceNotFound);
    let page = c
        .node(1)
        .query("acct", "jobs", QuerySpec::default())
        .await
        .unwrap();
    let keys: Vec<&str> = page.entities.iter().map(|e| e.row_key.as_str()).collect();
    assert_eq!(keys, ["new"]);

    // Deleted again: a write and a read on the stale id both find the table gone.
    c.node(2).uncatalog_table("acct", "jobs").await.unwrap();
    c.node(1).drop_table_data(new.id).await.unwrap();
    let err = c
        .node(1)
        .write("acct", "jobs", insert("after"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TableNotFound);
    assert_eq!(c.node(1).cached_table_id("acct", "jobs"), None);
    c.node(1).remember_table("acct", "jobs", new.id);
    let err = c
        .node(1)
        .get_entity("acct", "jobs", "p", "new")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TableNotFound);
}
