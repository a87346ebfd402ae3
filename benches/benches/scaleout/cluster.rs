//! What the scale-out bench does to its in-process clusters: start them on RocksDB with the production
//! Raft timings, preload a table, find its ranges and their leaders, and place leaders and replicas.

use std::time::{Duration, Instant};

use trestle_client::{Table, TableClient};
use trestle_engine::keys;
use trestle_replication::Role;
use trestle_storage_node::NodeConfig;
use trestle_storage_node::ranges::RangeDesc;
use trestle_testkit::InProcessCluster;

use crate::load::{entity, partition_key, record_row_key};

pub const ACCOUNT: &str = "devstoreaccount1";
pub const TABLE: &str = "hot";

/// How the scheduler and the balancer are set for a cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chores {
    /// `[partition-manager] split-load-ops` (0: no load splits).
    pub split_load_ops: u64,
    /// Leader balancing on, rounds of this many milliseconds.
    pub balance_ms: Option<u64>,
    /// Replica balancing on (`[partition-manager] balance-replicas`, as `trestle dev --nodes N` turns
    /// it on for N > 3): the scheduler moves replicas onto nodes that hold fewer.
    pub balance_replicas: bool,
}

/// `nodes` nodes on RocksDB with one data range, Raft as `trestle node` runs it (100 ms ticks, 1 MiB
/// snapshot chunks: the test timings would make elections faster and snapshots absurdly chunked), and
/// the partition manager's chores as `chores` says (size splits always off).
pub async fn start(nodes: usize, chores: Chores) -> anyhow::Result<InProcessCluster> {
    let configure = move |cfg: &mut NodeConfig| {
        cfg.raft = trestle_replication::Config::default();
        cfg.partition_manager.split_bytes = 0;
        cfg.partition_manager.split_load_ops = chores.split_load_ops;
        cfg.partition_manager.schedule_interval_ms = 1000;
        cfg.partition_manager.balance_leaders = chores.balance_ms.is_some();
        cfg.partition_manager.balance_interval_ms = chores.balance_ms.unwrap_or(5000);
        cfg.partition_manager.balance_replicas = chores.balance_replicas;
    };
    let c = InProcessCluster::start_rocks_nodes(nodes, 1, configure).await?;
    Ok(c)
}

/// A client of the development account that knows every node, created with the table.
pub async fn client_with_table(c: &InProcessCluster) -> anyhow::Result<(TableClient, Table)> {
    let client = c.client().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    // The first elections (production timings: 1–2 s) may still be running.
    loop {
        match client.create_table(TABLE).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let table = client.table(TABLE);
    Ok((client, table))
}

/// Writes `records` 1 KiB records over `partitions` partitions (record `i` in partition
/// `i % partitions`) in batches of 100, `concurrency` batches at a time.
pub async fn preload(
    table: &Table,
    records: u64,
    partitions: u32,
    concurrency: usize,
) -> anyhow::Result<()> {
    let parts = u64::from(partitions);
    let mut batches: Vec<(u32, Vec<u64>)> = Vec::new();
    for p in 0..parts {
        let ids: Vec<u64> = (p..records).step_by(parts as usize).collect();
        for chunk in ids.chunks(100) {
            batches.push((p as u32, chunk.to_vec()));
        }
    }
    let queue = std::sync::Arc::new(std::sync::Mutex::new(batches));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (queue, table) = (queue.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().map(|mut q| q.pop()).ok().flatten();
                let Some((p, ids)) = next else {
                    return Ok::<(), anyhow::Error>(());
                };
                let pk = partition_key(p);
                let ops = ids
                    .iter()
                    .map(|&i| trestle_client::op::upsert_replace(entity(&pk, &record_row_key(i))))
                    .collect();
                table.batch(ops).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The table's id, read through node `id` (retried through catalog elections).
pub async fn table_id(c: &InProcessCluster, id: u64) -> anyhow::Result<u64> {
    let local = c.node(id).tables().local().clone();
    let found = trestle_testkit::eventually(Duration::from_secs(10), || {
        let local = local.clone();
        async move { local.table_id(ACCOUNT, TABLE).await.ok() }
    })
    .await;
    found.ok_or_else(|| anyhow::anyhow!("node {id} does not find table {TABLE}"))
}

/// The table's ranges as node `id` routes them, in key order.
pub fn ranges_of(c: &InProcessCluster, id: u64, table_id: u64) -> Vec<RangeDesc> {
    c.node(id)
        .tables()
        .local()
        .ranges()
        .ranges_of_table(table_id)
}

/// The node whose replica leads `range` now, if one does.
pub fn leader_now(c: &InProcessCluster, range: u64) -> Option<u64> {
    (1..=c.size()).filter(|&id| c.is_running(id)).find(|&id| {
        c.node(id)
            .raft()
            .group_status(range)
            .is_some_and(|s| s.role == Role::Leader)
    })
}

/// Polls `f` every 5 ms until it holds or `limit` passes; whether it held.
pub async fn poll(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Makes node `to` lead `range` (it must hold a caught-up replica), waiting up to 10 s.
pub async fn make_leader(c: &InProcessCluster, range: u64, to: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match leader_now(c, range) {
            Some(l) if l == to => return Ok(()),
            Some(l) => {
                let _ = c.node(l).raft().transfer_leader(range, to).await;
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("node {to} did not become the leader of range {range}")
}

/// Cuts the table's single range at even partition boundaries into `k` ranges; returns them in key
/// order.
pub async fn split_evenly(
    c: &InProcessCluster,
    table_id: u64,
    partitions: u32,
    k: u32,
) -> anyhow::Result<Vec<RangeDesc>> {
    for j in 1..k {
        let pk = partition_key(partitions * j / k);
        let key = keys::partition_prefix(table_id, &pk);
        c.node(1)
            .tables()
            .split_range(0, trestle_storage_node::splits::SplitAt::Key(key))
            .await
            .map_err(|e| anyhow::anyhow!("split at {pk}: {e}"))?;
    }
    let mut ranges = Vec::new();
    let ok = poll(Duration::from_secs(20), || {
        ranges = ranges_of(c, 1, table_id);
        ranges.len() == k as usize && ranges.iter().all(|r| leader_now(c, r.id).is_some())
    })
    .await;
    anyhow::ensure!(ok, "the table did not become {k} led ranges: {ranges:?}");
    Ok(ranges)
}

/// Places range `i` of `ranges` so node `i % nodes + 1` leads it: ranges whose voters do not include
/// that node first move a replica there (from a voter that is not the leader), then leadership moves.
pub async fn spread(c: &InProcessCluster, ranges: &[RangeDesc]) -> anyhow::Result<()> {
    let nodes = c.size();
    for (i, r) in ranges.iter().enumerate() {
        let to = i as u64 % nodes + 1;
        let leader = leader_now(c, r.id).unwrap_or(0);
        let voters = c
            .node(leader.max(1))
            .raft()
            .group_status(r.id)
            .and_then(|s| s.desc)
            .map(|d| d.voters)
            .unwrap_or_else(|| r.voters.clone());
        if !voters.contains(&to) {
            let from = voters
                .iter()
                .copied()
                .filter(|&v| v != leader)
                .max()
                .ok_or_else(|| anyhow::anyhow!("range {} has no follower", r.id))?;
            c.node(to)
                .tables()
                .move_replica(r.id, from, to, Duration::from_secs(120))
                .await
                .map_err(|e| anyhow::anyhow!("moving range {} {from} -> {to}: {e}", r.id))?;
        }
        make_leader(c, r.id, to).await?;
    }
    Ok(())
}

/// Where each of the table's ranges has replicas, as its leader's descriptor says: (range, voters and
/// learners, sorted), by range id; a range without a leader now has no nodes listed. The ranges are
/// those any node knows (a node's view holds only the ranges it hosts, so with replica balancing on,
/// no single node's view is the whole table).
pub fn placement(c: &InProcessCluster, table_id: u64) -> Vec<(u64, Vec<u64>)> {
    let ids: std::collections::BTreeSet<u64> = (1..=c.size())
        .filter(|&id| c.is_running(id))
        .flat_map(|id| ranges_of(c, id, table_id))
        .map(|r| r.id)
        .collect();
    ids.into_iter()
        .map(|id| {
            let mut nodes = leader_now(c, id)
                .and_then(|l| c.node(l).raft().group_status(id))
                .and_then(|s| s.desc)
                .map(|d| [d.voters, d.learners].concat())
                .unwrap_or_default();
            nodes.sort_unstable();
            (id, nodes)
        })
        .collect()
}

/// How many replicas of `placement`'s ranges each node holds (index 0 is node 1).
pub fn replicas_per_node(c: &InProcessCluster, placement: &[(u64, Vec<u64>)]) -> Vec<usize> {
    let mut counts = vec![0; c.size() as usize];
    for (_, nodes) in placement {
        for &n in nodes {
            counts[(n - 1) as usize] += 1;
        }
    }
    counts
}

/// How many of the ranges in `placement` each node leads (index 0 is node 1).
pub fn leaders_of_placement(c: &InProcessCluster, placement: &[(u64, Vec<u64>)]) -> Vec<usize> {
    let mut counts = vec![0; c.size() as usize];
    for (id, _) in placement {
        if let Some(l) = leader_now(c, *id) {
            counts[(l - 1) as usize] += 1;
        }
    }
    counts
}

/// How many of `ranges` each node leads (index 0 is node 1).
pub fn leaders_per_node(c: &InProcessCluster, ranges: &[RangeDesc]) -> Vec<usize> {
    let mut counts = vec![0; c.size() as usize];
    for r in ranges {
        if let Some(l) = leader_now(c, r.id) {
            counts[(l - 1) as usize] += 1;
        }
    }
    counts
}
