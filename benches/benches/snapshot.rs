//! Snapshot streaming (`trestle_replication`): how fast a Raft snapshot travels from a leader to a
//! replica that needs it, both on RocksDB, over the real gRPC transport on loopback — and, for
//! comparison, how fast the disk under them takes a sequential write.
//!
//! Each run builds a fresh three-node group in temporary directories: nodes 1 and 2 start with the same
//! `TRESTLE_SNAPSHOT_MIB` (default 256) of 1 KiB records already in their span, write a few entries so
//! the leader compacts its log, and then node 3 starts empty. The leader cannot send node 3 entries it
//! compacted, so it streams a snapshot; the time from node 3's replica being fenced (the stream's
//! start) until it has applied the snapshot (every record written, the restore synced) gives the rate. Runs are repeated
//! (`TRESTLE_SNAPSHOT_RUNS`, default 5) for each chunk size (256 KiB, 1 MiB, 4 MiB) and the medians
//! reported: the machine is shared.
//!
//! The disk figure: write 256 MiB in 1 MiB blocks to a file in the same directory and fsync it, as
//! many times, median reported. Directory: `TRESTLE_BENCH_DIR`, default the system's temporary one.
//!
//! Run: `cargo bench -p trestle-benches --bench snapshot` (release; the bench prints a table).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trestle_engine::{Cf, Engine, RocksConfig, RocksEngine, WriteBatch};
use trestle_replication::grpc::{GrpcTransport, PeerTls, RaftService};
use trestle_replication::{
    ApplyError, Config, Epoch, GroupDesc, GroupHost, RaftNode, Role, Span, StateMachine,
};

const GROUP: u64 = 7;
const TOKEN: &str = "bench-cluster-token";
const RECORD: usize = 1024;
const MIB: usize = 1 << 20;

/// `key=value` writes value at key.
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

struct KvHost;

impl GroupHost for KvHost {
    fn state_machine(&self, _desc: &GroupDesc) -> Box<dyn StateMachine> {
        Box::new(KvMachine)
    }
}

fn desc() -> GroupDesc {
    GroupDesc {
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
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Writes `mib` MiB in 1 MiB blocks to a new file under `dir` and fsyncs it; MiB/s.
fn disk_write_rate(dir: &Path, mib: usize) -> std::io::Result<f64> {
    let path = dir.join(format!("seq-write-{}.tmp", std::process::id()));
    let block = vec![0x5au8; MIB];
    let start = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    for _ in 0..mib {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let rate = mib as f64 / start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// One node: its engine's directory, the RaftNode and its gRPC server.
struct Node {
    raft: Arc<RaftNode>,
    server: tokio::task::JoinHandle<()>,
}

impl Node {
    async fn start(
        id: u64,
        dir: &Path,
        addrs: &HashMap<u64, String>,
        config: &Config,
        window: Option<u32>,
    ) -> Node {
        let engine = Arc::new(RocksEngine::open(dir, &RocksConfig::default()).expect("rocksdb"));
        let peers = addrs
            .iter()
            .filter(|(p, _)| **p != id)
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        let transport = GrpcTransport::new(id, TOKEN.into(), PeerTls::plaintext(), peers);
        let raft = Arc::new(
            RaftNode::start(id, engine, transport, config.clone(), Arc::new(KvHost)).expect("node"),
        );
        let listener = tokio::net::TcpListener::bind(&addrs[&id])
            .await
            .expect("listen");
        let service = RaftService::new(id, TOKEN.into(), raft.mailbox());
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .initial_stream_window_size(window)
                .initial_connection_window_size(window.map(|w| w.saturating_mul(2)))
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        raft.create_group(desc()).await.expect("group");
        Node { raft, server }
    }

    fn stop(self) {
        self.server.abort();
        self.raft.shutdown();
    }
}

/// Fills `dir`'s fresh engine with `records` records of [`RECORD`] bytes (the same on every node).
fn preload(dir: &Path, records: usize) {
    let engine = RocksEngine::open(dir, &RocksConfig::default()).expect("rocksdb");
    let value = vec![b'v'; RECORD - 16];
    let mut batch = WriteBatch::new();
    for i in 0..records {
        batch.put(Cf::Data, format!("r{i:015}").into_bytes(), value.clone());
        if batch.size_bytes() >= 4 * MIB {
            engine.write(&batch, false).expect("write");
            batch.clear();
        }
    }
    engine.write(&batch, true).expect("write");
}

/// Ports on loopback for nodes 1..=3 (bound and released; nodes bind them again).
fn addresses() -> HashMap<u64, String> {
    (1..=3)
        .map(|id| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            (id, l.local_addr().expect("addr").to_string())
        })
        .collect()
}

async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// One run: seconds for node 3 to receive and restore a snapshot of `records` records.
async fn snapshot_run(base: &Path, records: usize, chunk_bytes: usize, window: Option<u32>) -> f64 {
    let root = tempfile::tempdir_in(base).expect("temp dir");
    let dirs: Vec<PathBuf> = (1..=3).map(|i| root.path().join(format!("n{i}"))).collect();
    preload(&dirs[0], records);
    preload(&dirs[1], records);
    let config = Config {
        log_compact_threshold: 5,
        snapshot_chunk_bytes: chunk_bytes,
        ..Config::for_test()
    };
    let addrs = addresses();
    let n1 = Node::start(1, &dirs[0], &addrs, &config, window).await;
    let n2 = Node::start(2, &dirs[1], &addrs, &config, window).await;
    let both = [&n1.raft, &n2.raft];
    let leader_of = || {
        both.iter().find(|n| {
            n.group_status(GROUP)
                .is_some_and(|s| s.role == Role::Leader)
        })
    };
    assert!(
        wait_for(Duration::from_secs(20), || leader_of().is_some()).await,
        "no leader"
    );
    let leader = Arc::clone(leader_of().expect("leader"));
    for i in 0..20 {
        leader
            .propose(GROUP, format!("w{i}=x").into_bytes())
            .await
            .expect("proposal");
    }
    assert!(
        wait_for(Duration::from_secs(20), || {
            leader
                .group_status(GROUP)
                .is_some_and(|s| s.first_index > 5)
        })
        .await,
        "the leader compacts its log"
    );
    let target = leader.group_status(GROUP).expect("status").applied_index;
    let n3 = Node::start(3, &dirs[2], &addrs, &config, window).await;
    // The stream starts when node 3's replica is fenced (it shows no descriptor until it is restored);
    // what comes before is the leader finding node 3 (connection backoff, a heartbeat).
    let fenced = wait_for(Duration::from_secs(60), || {
        n3.raft
            .group_status(GROUP)
            .is_some_and(|s| s.desc.is_none())
    })
    .await;
    assert!(fenced, "node 3 started receiving a snapshot");
    let started = Instant::now();
    let restored = wait_for(Duration::from_secs(600), || {
        n3.raft
            .group_status(GROUP)
            .is_some_and(|s| s.applied_index >= target)
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(restored, "node 3 restored the snapshot");
    for n in [n1, n2, n3] {
        n.stop();
    }
    seconds
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    let mib = env_usize("TRESTLE_SNAPSHOT_MIB", 256);
    let runs = env_usize("TRESTLE_SNAPSHOT_RUNS", 5).max(1);
    let base = std::env::var_os("TRESTLE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let records = mib * MIB / RECORD;
    println!(
        "snapshot streaming: {mib} MiB ({records} records of {RECORD} B), {runs} runs each, in {}",
        base.display()
    );

    let disk: Vec<f64> = (0..runs)
        .map(|_| disk_write_rate(&base, 256).expect("disk write"))
        .collect();
    println!(
        "disk sequential write (256 MiB, 1 MiB blocks, one fsync): median {:.0} MiB/s  runs {:?}",
        median(disk.clone()),
        disk.iter().map(|r| r.round()).collect::<Vec<_>>()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The gRPC server's HTTP/2 receive windows: tonic's defaults (64 KiB), as `trestle node` serves,
    // unless `TRESTLE_SNAPSHOT_WINDOW_KIB` sets the stream window (the connection's is twice that).
    let window = std::env::var("TRESTLE_SNAPSHOT_WINDOW_KIB")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map(|kib| kib * 1024);
    let chunks: Vec<usize> = std::env::var("TRESTLE_SNAPSHOT_CHUNKS_KIB")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|c| c.trim().parse::<usize>().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![256, 1024, 4096])
        .into_iter()
        .map(|kib| kib << 10)
        .collect();
    println!("server HTTP/2 stream window: {window:?} bytes (None: tonic's default)");
    for chunk in chunks {
        let rates: Vec<f64> = (0..runs)
            .map(|_| mib as f64 / rt.block_on(snapshot_run(&base, records, chunk, window)))
            .collect();
        println!(
            "snapshot over gRPC, RocksDB to RocksDB, chunk {:>4} KiB: median {:.0} MiB/s  runs {:?}",
            chunk >> 10,
            median(rates.clone()),
            rates.iter().map(|r| r.round()).collect::<Vec<_>>()
        );
    }
}
