//! A three-node cluster inside the test process.
//!
//! Nodes run the real node code ([`trestle_storage_node::Node`]): Raft traffic goes through a
//! [`MemoryNetwork`] (so tests can partition, drop and delay it), while gRPC servers on 127.0.0.1 serve
//! the table API, forwarding and admin exactly as in production. Engines are in memory by default (fast;
//! `crash` keeps only what was synced) or RocksDB in a temporary directory.
//!
//! Two seams reach into the nodes (`trestle_storage_node::hooks`): each node's lock manager runs on its
//! own [`OffsetClock`] ([`InProcessCluster::clock`], real time plus jumps the test makes), and
//! [`InProcessCluster::partition`] cuts the nodes' gRPC calls to each other (forwarding, leader
//! transfers) along with their Raft traffic, so a node on the other side of a partition is unreachable
//! both ways. `net.partition` alone still cuts Raft only. Leader balancing is off (tests choose their
//! leaders); `start_with` can turn it on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use trestle_client::TableClient;
use trestle_engine::{Engine, MemoryEngine, RocksConfig, RocksEngine};
use trestle_replication::memory::MemoryNetwork;
use trestle_storage_node::clock::OffsetClock;
use trestle_storage_node::hooks::{Hooks, PeerFilter};
use trestle_storage_node::{Listeners, Node, NodeConfig, PeerConfig};

use crate::wait::eventually;

enum Engines {
    Memory(Vec<MemoryEngine>),
    Rocks(tempfile::TempDir),
}

/// The sides of a partition of the nodes' gRPC calls to each other (see the module header).
#[derive(Default)]
struct PeerCut(Mutex<HashMap<u64, usize>>);

impl PeerCut {
    fn set(&self, sides: &[&[u64]]) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = sides
            .iter()
            .enumerate()
            .flat_map(|(i, ids)| ids.iter().map(move |id| (*id, i)))
            .collect();
    }
}

impl PeerFilter for PeerCut {
    fn allows(&self, from: u64, to: u64) -> bool {
        let sides = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (sides.get(&from), sides.get(&to)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

pub struct InProcessCluster {
    pub net: Arc<MemoryNetwork>,
    nodes: Vec<Option<Node>>,
    configs: Vec<NodeConfig>,
    engines: Engines,
    clocks: Vec<Arc<OffsetClock>>,
    peer_cut: Arc<PeerCut>,
}

impl InProcessCluster {
    /// Three nodes on memory engines with `ranges` data ranges.
    pub async fn start(ranges: usize) -> anyhow::Result<InProcessCluster> {
        Self::launch_all(3, ranges, false, |_| {}).await
    }

    /// `nodes` nodes (at least three) on memory engines; the first three bootstrap every range, the
    /// others start empty and receive replicas as ranges move to them.
    pub async fn start_nodes(
        nodes: usize,
        ranges: usize,
        configure: impl Fn(&mut NodeConfig),
    ) -> anyhow::Result<InProcessCluster> {
        Self::launch_all(nodes, ranges, false, configure).await
    }

    /// How many nodes the cluster has (running or not).
    pub fn size(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// Like [`InProcessCluster::start`], with every node's configuration adjusted by `configure`.
    pub async fn start_with(
        ranges: usize,
        configure: impl Fn(&mut NodeConfig),
    ) -> anyhow::Result<InProcessCluster> {
        Self::launch_all(3, ranges, false, configure).await
    }

    /// Three nodes on RocksDB in a temporary directory.
    pub async fn start_rocks(ranges: usize) -> anyhow::Result<InProcessCluster> {
        Self::launch_all(3, ranges, true, |_| {}).await
    }

    /// `nodes` nodes (at least three) on RocksDB in a temporary directory, every node's configuration
    /// adjusted by `configure`: what benchmarks use, where the engine's cost is part of the figure.
    pub async fn start_rocks_nodes(
        nodes: usize,
        ranges: usize,
        configure: impl Fn(&mut NodeConfig),
    ) -> anyhow::Result<InProcessCluster> {
        Self::launch_all(nodes, ranges, true, configure).await
    }

    async fn launch_all(
        n: usize,
        ranges: usize,
        rocks: bool,
        configure: impl Fn(&mut NodeConfig),
    ) -> anyhow::Result<InProcessCluster> {
        crate::init_logging();
        let mut grpc = Vec::new();
        for _ in 0..n {
            grpc.push(TcpListener::bind("127.0.0.1:0").await?);
        }
        let rest = TcpListener::bind("127.0.0.1:0").await?;
        let addrs: Vec<SocketAddr> = grpc
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()?;
        let peers: Vec<PeerConfig> = (0..n)
            .map(|i| PeerConfig {
                id: i as u64 + 1,
                zone: None,
                grpc_addr: addrs[i].to_string(),
                rest_addr: (i == 0)
                    .then(|| rest.local_addr().map(|a| a.to_string()).unwrap_or_default()),
            })
            .collect();
        let engines = if rocks {
            Engines::Rocks(tempfile::tempdir()?)
        } else {
            Engines::Memory((0..n).map(|_| MemoryEngine::new()).collect())
        };
        let clocks: Vec<Arc<OffsetClock>> = (0..n).map(|_| Arc::default()).collect();
        let peer_cut = Arc::new(PeerCut::default());
        let configs: Vec<NodeConfig> = (0..n)
            .map(|i| {
                let mut cfg = NodeConfig {
                    node_id: i as u64 + 1,
                    initial_ranges: ranges,
                    peers: peers.clone(),
                    request_timeout_ms: 10_000,
                    raft: trestle_replication::Config::for_test(),
                    bootstrapping: true,
                    hooks: Hooks {
                        lock_clock: Some(clocks[i].clone()),
                        peer_filter: Some(peer_cut.clone()),
                    },
                    ..NodeConfig::default()
                };
                cfg.partition_manager.balance_leaders = false;
                // Ranges split and replicas move only when a test asks (by hand, or by turning the
                // scheduler's rules on).
                cfg.partition_manager.split_bytes = 0;
                cfg.partition_manager.split_load_ops = 0;
                cfg.partition_manager.merge_bytes = 0;
                cfg.partition_manager.balance_replicas = false;
                cfg.partition_manager.dead_node_secs = 0;
                configure(&mut cfg);
                cfg
            })
            .collect();
        let mut cluster = InProcessCluster {
            net: Arc::new(MemoryNetwork::new()),
            nodes: (0..n).map(|_| None).collect(),
            configs,
            engines,
            clocks,
            peer_cut,
        };
        let mut rest = Some(rest);
        for (i, listener) in grpc.into_iter().enumerate() {
            let listeners = Listeners {
                grpc: listener,
                rest: if i == 0 { rest.take() } else { None },
            };
            cluster.launch(i as u64 + 1, listeners).await?;
        }
        Ok(cluster)
    }

    fn engine(&self, id: u64) -> anyhow::Result<Arc<dyn Engine>> {
        Ok(match &self.engines {
            Engines::Memory(e) => Arc::new(e[(id - 1) as usize].clone()),
            Engines::Rocks(dir) => {
                let path = dir.path().join(format!("node{id}"));
                std::fs::create_dir_all(&path)?;
                Arc::new(RocksEngine::open(&path, &RocksConfig::default())?)
            }
        })
    }

    async fn launch(&mut self, id: u64, listeners: Listeners) -> anyhow::Result<()> {
        let cfg = self.configs[(id - 1) as usize].clone();
        // Only the first start bootstraps; a node restarted on an empty store has lost its disk.
        self.configs[(id - 1) as usize].bootstrapping = false;
        let engine = self.engine(id)?;
        let node = Node::start(cfg, engine, self.net.transport(id), listeners).await?;
        self.net.register(id, node.raft().mailbox());
        self.nodes[(id - 1) as usize] = Some(node);
        Ok(())
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes[(id - 1) as usize]
            .as_ref()
            .expect("node is running")
    }

    /// Node `id`'s lock-manager clock: `cluster.clock(id).jump(d)` steps it forward.
    pub fn clock(&self, id: u64) -> &OffsetClock {
        &self.clocks[(id - 1) as usize]
    }

    /// Splits the nodes into sides that can reach each other neither by Raft nor by gRPC (forwarding,
    /// leader transfers); nodes not named reach everyone. Clients still reach every node.
    pub fn partition(&self, sides: &[&[u64]]) {
        self.net.partition(sides);
        self.peer_cut.set(sides);
    }

    /// Ends every partition and Raft filter.
    pub fn heal(&self) {
        self.net.heal();
        self.peer_cut.set(&[]);
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[(id - 1) as usize].is_some()
    }

    pub fn grpc_endpoints(&self) -> Vec<String> {
        self.configs[0]
            .peers
            .iter()
            .map(|p| format!("http://{}", p.grpc_addr))
            .collect()
    }

    /// Node 1's Azure REST endpoint, `http://127.0.0.1:port`.
    pub fn rest_endpoint(&self) -> String {
        format!(
            "http://{}",
            self.configs[0].peers[0]
                .rest_addr
                .clone()
                .unwrap_or_default()
        )
    }

    /// A client that knows every node.
    /// A client of the development account (signed with its key) that knows every node.
    pub async fn client(&self) -> anyhow::Result<TableClient> {
        crate::dev_client(self.grpc_endpoints()).await
    }

    /// A client that knows only `id` (requests must be forwarded from there).
    pub async fn client_of(&self, id: u64) -> anyhow::Result<TableClient> {
        crate::dev_client([format!(
            "http://{}",
            self.configs[(id - 1) as usize].peers[(id - 1) as usize].grpc_addr
        )])
        .await
    }

    /// Stops node `id` cleanly (its engine keeps everything).
    pub async fn stop(&mut self, id: u64) {
        self.net.unregister(id);
        if let Some(node) = self.nodes[(id - 1) as usize].take() {
            node.shutdown().await;
        }
    }

    /// Stops node `id` as if it lost power: only synced writes survive (memory engines).
    pub async fn crash(&mut self, id: u64) {
        self.stop(id).await;
        if let Engines::Memory(e) = &mut self.engines {
            let i = (id - 1) as usize;
            e[i] = e[i].crash_copy();
        }
    }

    /// Stops node `id` and throws its disk away.
    pub async fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        self.stop(id).await;
        match &mut self.engines {
            Engines::Memory(e) => e[(id - 1) as usize] = MemoryEngine::new(),
            Engines::Rocks(dir) => {
                let path = dir.path().join(format!("node{id}"));
                if path.exists() {
                    std::fs::remove_dir_all(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Restarts a stopped node on the same address and engine.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let cfg = &self.configs[(id - 1) as usize];
        let me = cfg.me().context("node in config")?;
        let grpc = bind_again(&me.grpc_addr).await?;
        let rest = match &me.rest_addr {
            Some(a) => Some(bind_again(a).await?),
            None => None,
        };
        self.launch(id, Listeners { grpc, rest }).await
    }

    /// The node whose replica leads `range`, as the running nodes see it.
    pub async fn leader_of(&self, range: u64) -> Option<u64> {
        eventually(Duration::from_secs(10), || async {
            (1..=self.size())
                .filter(|&id| self.is_running(id))
                .find_map(|id| {
                    let s = self.node(id).raft().group_status(range)?;
                    (s.role == trestle_replication::Role::Leader).then_some(id)
                })
        })
        .await
    }

    /// What replica `id` holds for one entity, read from its engine (not through the leader).
    pub async fn read_replica(
        &self,
        id: u64,
        account: &str,
        table: &str,
        pk: &str,
        rk: &str,
    ) -> anyhow::Result<Option<trestle_types::Entity>> {
        let engine = self.node(id).raft().engine().clone();
        crate::replica::entity(engine.as_ref(), account, table, pk, rk)
    }

    /// The range that holds `table`.
    pub async fn range_of(&self, account: &str, table: &str) -> anyhow::Result<u64> {
        let id = (1..=self.size())
            .find(|&id| self.is_running(id))
            .context("a running node")?;
        Ok(self
            .node(id)
            .tables()
            .range_of_table(account, table)
            .await?)
    }

    /// Waits until every running replica of every range has applied everything any of them knows to
    /// be committed. Every running node must host every group (a node that has just restarted may not
    /// have published them all yet).
    pub async fn wait_replicated(&self, limit: Duration) -> bool {
        eventually(limit, || async {
            let running: Vec<u64> = (1..=self.size())
                .filter(|&id| self.is_running(id))
                .collect();
            let mut groups: Vec<u64> = running
                .iter()
                .flat_map(|&id| self.node(id).raft().status())
                .map(|s| s.group)
                .collect();
            groups.sort_unstable();
            groups.dedup();
            // Splits only ever add groups to the bootstrap layout.
            let expected = self.configs[0].initial_ranges + 1;
            let done = groups.len() >= expected
                && groups.iter().all(|&g| {
                    let statuses: Vec<_> = running
                        .iter()
                        .filter_map(|&id| self.node(id).raft().group_status(g))
                        .collect();
                    let committed = statuses.iter().map(|s| s.commit_index).max().unwrap_or(0);
                    // Three replicas per range: with more nodes, not every node hosts every group.
                    statuses.len() >= running.len().min(3)
                        && statuses.iter().all(|s| s.applied_index == committed)
                });
            done.then_some(())
        })
        .await
        .is_some()
    }

    /// Shuts every node down.
    pub async fn shutdown(mut self) {
        for id in 1..=self.size() {
            self.stop(id).await;
        }
    }
}

/// Binds an address that was in use a moment ago (the old listener may take a moment to close).
async fn bind_again(addr: &str) -> anyhow::Result<TcpListener> {
    let found = eventually(Duration::from_secs(5), || async {
        TcpListener::bind(addr).await.ok()
    })
    .await;
    found.with_context(|| format!("rebinding {addr}"))
}
