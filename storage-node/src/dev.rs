//! `trestle dev`: a complete local cluster in one process — three nodes on 127.0.0.1, each with its own
//! RocksDB under `--data`, talking Raft to each other over real gRPC on loopback, node 1 serving the Azure
//! Table REST API on port 10002 with the development account, so `UseDevelopmentStorage=true` works.
//!
//! Every range's leader is kept on node 1, so a REST request is served where it lands instead of being
//! forwarded to another node (one gRPC hop that otherwise dominates a point read).
//!
//! Ports may be 0: every listener is bound before any node starts, so each node knows its peers' real
//! addresses. Once serving, one line `TRESTLE_READY {json}` goes to stdout with the addresses (tests and
//! scripts wait for it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;
use trestle_replication::{RaftNode, Role};

use crate::config::{NodeConfig, PeerConfig};
use crate::node::{Listeners, Node};

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Where the three nodes keep their data (node1/, node2/, node3/).
    #[arg(long, default_value = "./trestle-data")]
    pub data: PathBuf,
    /// Address for the REST API (node 1). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:10002")]
    pub rest_addr: SocketAddr,
    /// First gRPC port; nodes use this port and the next two. 0 picks free ports.
    #[arg(long, default_value_t = 10101)]
    pub grpc_port: u16,
    /// Number of data ranges (Raft groups besides the meta group) at bootstrap.
    #[arg(long, default_value_t = 4)]
    pub ranges: usize,
    /// A node file (see config/node.example.toml) whose `[raft]`, `[rocksdb]` and `[gateway]` tuning
    /// applies to all three nodes; its identity, addresses and peers are ignored.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The addresses a running dev cluster serves on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DevAddrs {
    pub rest: String,
    pub grpc: Vec<String>,
}

/// Starts the three nodes; returns them with their addresses.
pub async fn start(args: &DevArgs) -> anyhow::Result<(Vec<Node>, DevAddrs)> {
    let rest = TcpListener::bind(args.rest_addr).await.with_context(|| {
        format!(
            "binding the REST API on {} (is Azurite or another Trestle running?)",
            args.rest_addr
        )
    })?;
    let mut grpc = Vec::new();
    for i in 0..3u16 {
        let port = if args.grpc_port == 0 {
            0
        } else {
            args.grpc_port + i
        };
        let l = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding gRPC port {port}"))?;
        grpc.push(l);
    }
    let grpc_addrs: Vec<SocketAddr> = grpc
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let rest_addr = rest.local_addr()?;
    let peers: Vec<PeerConfig> = (0..3)
        .map(|i| PeerConfig {
            id: i as u64 + 1,
            grpc_addr: grpc_addrs[i].to_string(),
            rest_addr: (i == 0).then(|| rest_addr.to_string()),
        })
        .collect();
    let tuning = tuning(args.config.as_deref())?;
    let bootstrapping = (1..=3).all(|i| !args.data.join(format!("node{i}")).exists());
    let mut rest = Some(rest);
    let mut nodes = Vec::new();
    for (i, grpc_listener) in grpc.into_iter().enumerate() {
        let cfg = NodeConfig {
            node_id: i as u64 + 1,
            data_dir: args.data.join(format!("node{}", i + 1)),
            initial_ranges: args.ranges,
            peers: peers.clone(),
            bootstrapping,
            raft: tuning.raft.clone(),
            rocksdb: tuning.rocksdb.clone(),
            gateway: tuning.gateway.clone(),
            ..NodeConfig::default()
        };
        cfg.validate().map_err(|e| anyhow::anyhow!(e))?;
        let listeners = Listeners {
            grpc: grpc_listener,
            rest: if i == 0 { rest.take() } else { None },
        };
        nodes.push(Node::start_durable_with(cfg, listeners).await?);
    }
    let addrs = DevAddrs {
        rest: rest_addr.to_string(),
        grpc: grpc_addrs.iter().map(|a| a.to_string()).collect(),
    };
    Ok((nodes, addrs))
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let (nodes, addrs) = start(&args).await?;
    let account = trestle_rest_gateway::config::DEV_ACCOUNT;
    tracing::info!(data = %args.data.display(), "trestle dev: three replicas, data persisted on disk");
    eprintln!(
        "\nTrestle is running.\n  Azure Table REST: http://{rest}/{account}\n  gRPC:             {grpc}\n  \
         Connection string: DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};\
         TableEndpoint=http://{rest}/{account};\n  Status:           trestle ctl --addr {first} status\n",
        rest = addrs.rest,
        grpc = addrs.grpc.join(", "),
        key = trestle_rest_gateway::config::DEV_ACCOUNT_KEY,
        first = addrs.grpc[0],
    );
    let rafts: Vec<Arc<RaftNode>> = nodes.iter().map(|n| n.raft().clone()).collect();
    let steering = tokio::spawn(keep_leaders_on(rafts, REST_NODE));
    println!("TRESTLE_READY {}", serde_json::to_string(&addrs)?);
    wait_for_shutdown_signal().await;
    tracing::info!("shutting down");
    steering.abort();
    futures::future::join_all(nodes.into_iter().map(Node::shutdown)).await;
    Ok(())
}

/// The tuning sections of `--config` (or the defaults): only `raft`, `rocksdb` and `gateway` are used.
fn tuning(path: Option<&std::path::Path>) -> anyhow::Result<NodeConfig> {
    let Some(path) = path else {
        return Ok(NodeConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: NodeConfig =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    cfg.rocksdb.validate()?;
    Ok(cfg)
}

/// The node that serves the REST API in a dev cluster.
const REST_NODE: u64 = 1;

/// Moves the leadership of every range to node `to` whenever another node holds it and `to` has caught
/// up, checking every half second. Leadership leaves `to` after an election (e.g. a slow fsync starved
/// its heartbeats); this brings it back. Runs until aborted.
pub async fn keep_leaders_on(rafts: Vec<Arc<RaftNode>>, to: u64) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        for (group, from) in leaders_to_move(&rafts, to) {
            let leader = &rafts[(from - 1) as usize];
            match leader.transfer_leader(group, to).await {
                Ok(()) => tracing::debug!(group, from, to, "moving leadership to the REST node"),
                Err(e) => {
                    tracing::debug!(group, from, to, error = %e, "leader transfer not started")
                }
            }
        }
    }
}

/// (group, current leader) for every group led by a node other than `to` whose replica on `to` holds
/// everything the leader has committed.
fn leaders_to_move(rafts: &[Arc<RaftNode>], to: u64) -> Vec<(u64, u64)> {
    let mut moves = Vec::new();
    for ours in rafts[(to - 1) as usize].status() {
        let Some(from) = ours.leader.filter(|&l| l != to) else {
            continue;
        };
        if ours.recovering {
            continue;
        }
        let Some(theirs) = rafts
            .get((from - 1) as usize)
            .and_then(|r| r.group_status(ours.group))
        else {
            continue;
        };
        let caught_up = theirs
            .progress
            .iter()
            .any(|&(peer, matched)| peer == to && matched >= theirs.commit_index);
        if theirs.role == Role::Leader && caught_up {
            moves.push((ours.group, from));
        }
    }
    moves
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_tune_every_node_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.toml");
        std::fs::write(
            &path,
            "[rocksdb]\nblock-cache-mb = 64\n\n[raft]\ntick-ms = 50\n",
        )
        .unwrap();
        let cfg = tuning(Some(&path)).unwrap();
        assert_eq!(cfg.rocksdb.block_cache_mb, 64);
        assert_eq!(cfg.raft.tick_ms, 50);
        assert_eq!(tuning(None).unwrap().rocksdb, NodeConfig::default().rocksdb);

        std::fs::write(&path, "[rocksdb]\nno-such-knob = 1\n").unwrap();
        assert!(tuning(Some(&path)).is_err());
        std::fs::write(&path, "[rocksdb]\nblock-cache-mb = 0\n").unwrap();
        assert!(tuning(Some(&path)).is_err());
        assert!(tuning(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
