//! Replication (`trestle_replication`): propose-to-apply through three in-process replicas of one Raft
//! group on the in-memory network, with the in-memory engine and with RocksDB (every ready-loop turn
//! fsyncs its write batch, as in production).
//!
//! - `sequential`: one proposal at a time: the latency of a replicated write (leader append + fsync,
//!   follower append + fsync, commit, apply) without the network stack;
//! - `concurrent/64`: 64 proposals in flight, as 64 clients would have: throughput with group commit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use trestle_engine::{Cf, Engine, MemoryEngine, RocksConfig, RocksEngine, WriteBatch};
use trestle_replication::memory::MemoryNetwork;
use trestle_replication::{
    ApplyError, Config, Epoch, GroupDesc, GroupHost, RaftNode, Role, Span, StateMachine,
};

const GROUP: u64 = 7;

/// `key=value` writes value at key; the response is empty.
struct KvMachine;

impl StateMachine for KvMachine {
    fn apply(
        &mut self,
        _engine: &dyn Engine,
        batch: &mut WriteBatch,
        _index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, ApplyError> {
        if let Some(eq) = command.iter().position(|&b| b == b'=') {
            batch.put(Cf::Data, command[..eq].to_vec(), command[eq + 1..].to_vec());
        }
        Ok(Vec::new())
    }
}

/// Every group runs the [`KvMachine`].
struct KvHost;

impl GroupHost for KvHost {
    fn state_machine(&self, _desc: &GroupDesc) -> Box<dyn StateMachine> {
        Box::new(KvMachine)
    }
}

struct Cluster {
    _net: Arc<MemoryNetwork>,
    nodes: Vec<Arc<RaftNode>>,
    leader: usize,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(rocks: bool) -> Cluster {
        let net = Arc::new(MemoryNetwork::new());
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for id in 1..=3u64 {
            let engine: Arc<dyn Engine> = if rocks {
                let dir = tempfile::tempdir().expect("temp dir");
                let e = RocksEngine::open(dir.path(), &RocksConfig::for_test()).expect("rocksdb");
                dirs.push(dir);
                Arc::new(e)
            } else {
                Arc::new(MemoryEngine::new())
            };
            let node = Arc::new(
                RaftNode::start(
                    id,
                    engine,
                    net.transport(id),
                    Config::for_test(),
                    Arc::new(KvHost),
                )
                .expect("node"),
            );
            net.register(id, node.mailbox());
            let desc = GroupDesc {
                id: GROUP,
                voters: vec![1, 2, 3],
                learners: Vec::new(),
                voters_outgoing: Vec::new(),
                span: Span {
                    cf: Cf::Data,
                    start: Vec::new(),
                    end: None,
                },
                epoch: Epoch::INITIAL,
            };
            node.create_group(desc).await.expect("group");
            nodes.push(node);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let leader = loop {
            let found = nodes.iter().position(|n| {
                n.group_status(GROUP)
                    .is_some_and(|s| s.role == Role::Leader)
            });
            if let Some(l) = found {
                break l;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Cluster {
            _net: net,
            nodes,
            leader,
            _dirs: dirs,
        }
    }

    async fn propose(&self, i: u64) {
        let mut cmd = format!("k{i:012}=").into_bytes();
        cmd.resize(cmd.len() + 1024, b'v');
        self.nodes[self.leader]
            .propose(GROUP, cmd)
            .await
            .expect("proposal applied");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.shutdown();
        }
    }
}

fn propose_to_apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("replication");
    for (engine, rocks) in [("memory", false), ("rocksdb", true)] {
        let cluster = rt.block_on(Cluster::start(rocks));
        let mut next = 0u64;
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new(format!("{engine}_sequential"), 1), |b| {
            b.iter(|| {
                next += 1;
                rt.block_on(cluster.propose(next))
            })
        });
        let inflight = 64u64;
        g.throughput(Throughput::Elements(inflight));
        g.bench_function(
            BenchmarkId::new(format!("{engine}_concurrent"), inflight),
            |b| {
                b.iter(|| {
                    next += inflight;
                    let base = next;
                    rt.block_on(futures::future::join_all(
                        (0..inflight).map(|j| cluster.propose(base + j)),
                    ))
                })
            },
        );
        drop(cluster);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = propose_to_apply
}
criterion_main!(benches);
