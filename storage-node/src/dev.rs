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
    /// Where the nodes keep their data (node1/, node2/, ...).
    #[arg(long, default_value = "./trestle-data")]
    pub data: PathBuf,
    /// How many nodes to run (at least 3). The first three hold every range at bootstrap; the others
    /// start empty and the partition manager moves replicas onto them until every node holds about
    /// as many (also `trestle ctl range move`, `node decommission`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(3..=64))]
    pub nodes: u16,
    /// Address for the REST API (node 1). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:10002")]
    pub rest_addr: SocketAddr,
    /// First gRPC port; node i uses this port + i - 1. 0 picks free ports.
    #[arg(long, default_value_t = 10101)]
    pub grpc_port: u16,
    /// Number of data ranges (Raft groups besides the meta group) at bootstrap.
    #[arg(long, default_value_t = 4)]
    pub ranges: usize,
    /// A node file (see config/node.example.toml) whose `[raft]`, `[rocksdb]` and `[gateway]` tuning
    /// applies to all three nodes (and `[tls]`, unless `--tls`, and the range scheduler's thresholds
    /// of `[partition-manager]`: `split-bytes`, `split-load-ops`, `schedule-interval-ms`); its
    /// identity, addresses and peers are ignored.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Serve the REST API over HTTPS, and the gRPC port (public API and node-to-node traffic) over
    /// TLS, with a self-signed certificate for localhost and 127.0.0.1, generated into `<data>/tls/` on
    /// first use and reused afterwards.
    #[arg(long)]
    pub tls: bool,
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
    for i in 0..args.nodes {
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
    let peers: Vec<PeerConfig> = (0..args.nodes as usize)
        .map(|i| PeerConfig {
            id: i as u64 + 1,
            zone: None,
            grpc_addr: grpc_addrs[i].to_string(),
            rest_addr: (i == 0).then(|| rest_addr.to_string()),
        })
        .collect();
    let mut tuning = tuning(args.config.as_deref())?;
    if args.tls {
        let (cert, key) = dev_certificate(&args.data)?;
        tuning.gateway.tls_cert_file = Some(cert.clone());
        tuning.gateway.tls_key_file = Some(key.clone());
        // The gRPC port (public API and the nodes' own traffic) too, with the same certificate.
        tuning.tls = crate::tls::GrpcTlsConfig {
            cert_file: Some(cert),
            key_file: Some(key),
            ..crate::tls::GrpcTlsConfig::default()
        };
    }
    let cluster_token = cluster_token(&args.data)?;
    let bootstrapping = (1..=3).all(|i| !args.data.join(format!("node{i}")).exists());
    let mut rest = Some(rest);
    let mut nodes = Vec::new();
    for (i, grpc_listener) in grpc.into_iter().enumerate() {
        let mut cfg = NodeConfig {
            node_id: i as u64 + 1,
            data_dir: args.data.join(format!("node{}", i + 1)),
            initial_ranges: args.ranges,
            peers: peers.clone(),
            bootstrapping,
            raft: tuning.raft.clone(),
            rocksdb: tuning.rocksdb.clone(),
            gateway: tuning.gateway.clone(),
            tls: tuning.tls.clone(),
            cluster_token: cluster_token.clone(),
            ..NodeConfig::default()
        };
        // The range scheduler as the file sets it; leaders stay on the REST node
        // (`keep_leaders_on`), not spread out, whatever the file says about balancing.
        cfg.partition_manager.split_bytes = tuning.partition_manager.split_bytes;
        cfg.partition_manager.split_load_ops = tuning.partition_manager.split_load_ops;
        cfg.partition_manager.merge_bytes = tuning.partition_manager.merge_bytes;
        cfg.partition_manager.merge_load_ops = tuning.partition_manager.merge_load_ops;
        cfg.partition_manager.schedule_interval_ms = tuning.partition_manager.schedule_interval_ms;
        cfg.partition_manager.balance_leaders = false;
        // Nodes beyond the first three start empty: replicas move onto them (the first three hold
        // every range at bootstrap, so with three nodes nothing ever moves).
        cfg.partition_manager.balance_replicas = args.nodes > 3;
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
        "\nTrestle is running.\n  Azure Table REST: {scheme}://{rest}/{account}\n  gRPC:             {grpc}\n  \
         Connection string: DefaultEndpointsProtocol={scheme};AccountName={account};AccountKey={key};\
         TableEndpoint={scheme}://{rest}/{account};\n  Status:           trestle ctl --addr {first} --admin-token-file {token}{ca} status\n",
        rest = addrs.rest,
        scheme = if args.tls { "https" } else { "http" },
        grpc = addrs
            .grpc
            .iter()
            .map(|a| format!("{}://{a}", if args.tls { "https" } else { "http" }))
            .collect::<Vec<_>>()
            .join(", "),
        key = trestle_rest_gateway::config::DEV_ACCOUNT_KEY,
        first = addrs.grpc[0],
        token = token_path(&args.data).display(),
        ca = if args.tls {
            format!(
                " --ca-file {}",
                dev_certificate_paths(&args.data).0.display()
            )
        } else {
            String::new()
        },
    );
    if args.tls {
        let (cert, _) = dev_certificate_paths(&args.data);
        let cert = cert.display();
        eprintln!(
            "  TLS certificate:  {cert} (self-signed for localhost and 127.0.0.1)\n  \
             Trust it:         SSL_CERT_FILE={cert} (OpenSSL, curl, Rust), REQUESTS_CA_BUNDLE={cert} \
             (Python SDK), NODE_EXTRA_CA_CERTS={cert} (JavaScript SDK)\n"
        );
    }
    let rafts: Vec<Arc<RaftNode>> = nodes.iter().map(|n| n.raft().clone()).collect();
    let rest_node = nodes[(REST_NODE - 1) as usize].tables().local().clone();
    let steering = tokio::spawn(keep_leaders_on(rafts, REST_NODE, rest_node));
    println!("TRESTLE_READY {}", serde_json::to_string(&addrs)?);
    wait_for_shutdown_signal().await;
    tracing::info!("shutting down");
    steering.abort();
    futures::future::join_all(nodes.into_iter().map(Node::shutdown)).await;
    Ok(())
}

/// The tuning sections of `--config` (or the defaults): only `raft`, `rocksdb`, `gateway`, `tls` and
/// the scheduler's thresholds of `partition-manager` are used.
fn tuning(path: Option<&std::path::Path>) -> anyhow::Result<NodeConfig> {
    let Some(path) = path else {
        return Ok(NodeConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: NodeConfig =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    cfg.rocksdb.validate()?;
    cfg.partition_manager
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(cfg)
}

/// Where a dev cluster keeps its cluster token (also its admin token).
pub fn token_path(data: &std::path::Path) -> PathBuf {
    data.join("cluster-token")
}

/// The cluster token of the dev cluster in `data`: generated at random the first time (48 hex digits
/// from the OS's generator, written readable by the owner only) and reused on every restart, so each
/// data directory is its own cluster and no two dev clusters share a secret.
pub fn cluster_token(data: &std::path::Path) -> anyhow::Result<String> {
    let path = token_path(data);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let mut bytes = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_durably(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// Where `trestle dev --tls` keeps its certificate and key.
pub fn dev_certificate_paths(data: &std::path::Path) -> (PathBuf, PathBuf) {
    let dir = data.join("tls");
    (dir.join("dev-cert.pem"), dir.join("dev-key.pem"))
}

/// The dev cluster's self-signed certificate for `localhost` and `127.0.0.1` (PEM files under
/// `<data>/tls/`): generated the first time, reused on every restart so a client trusts it once.
pub fn dev_certificate(data: &std::path::Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert_path, key_path) = dev_certificate_paths(data);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let dir = data.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Trestle development (localhost)");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // Each file whole or not at all: a power cut must not leave an empty certificate that "exists"
    // (the certificate was written without fsync before; found by the lossy file system's test).
    write_durably(&key_path, key.serialize_pem().as_bytes())?;
    write_durably(&cert_path, cert.pem().as_bytes())?;
    Ok((cert_path, key_path))
}

/// Writes `bytes` to `path` (owner-only on Unix) through a fsynced temporary file renamed into place.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The node that serves the REST API in a dev cluster.
const REST_NODE: u64 = 1;

/// Moves the leadership of every range to node `to` whenever another node holds it and `to` has caught
/// up, checking every half second. Leadership leaves `to` after an election (e.g. a slow fsync starved
/// its heartbeats); this brings it back. Runs until aborted.
pub async fn keep_leaders_on(
    rafts: Vec<Arc<RaftNode>>,
    to: u64,
    target: Arc<crate::tables::LocalTables>,
) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        // `trestle ctl node drain` of the REST node wins: its leaders go elsewhere until cancelled.
        if target.leaders_drained() {
            continue;
        }
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
    fn each_data_directory_gets_its_own_secret_token_kept_across_restarts() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = cluster_token(a.path()).unwrap();
        assert_eq!(first.len(), 48);
        assert_ne!(first, crate::config::EXAMPLE_CLUSTER_TOKEN);
        assert_eq!(cluster_token(a.path()).unwrap(), first);
        assert_ne!(cluster_token(b.path()).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(token_path(a.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "the token file is readable by others: {mode:o}"
            );
        }
    }

    #[test]
    fn the_dev_certificate_is_generated_once_and_loads_as_the_rest_tls_config() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = dev_certificate(dir.path()).unwrap();
        let first = std::fs::read_to_string(&cert).unwrap();
        assert!(first.starts_with("-----BEGIN CERTIFICATE-----"), "{first}");
        assert!(trestle_rest_gateway::listener::tls::server_config(&cert, &key).is_ok());
        assert_eq!(dev_certificate(dir.path()).unwrap(), (cert.clone(), key));
        assert_eq!(
            std::fs::read_to_string(&cert).unwrap(),
            first,
            "reused, not regenerated"
        );
    }

    #[test]
    fn config_files_tune_every_node_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.toml");
        std::fs::write(
            &path,
            "[rocksdb]\nblock-cache-mb = 64\n\n[raft]\ntick-ms = 50\n\n\
             [partition-manager]\nsplit-load-ops = 0\nschedule-interval-ms = 1000\n",
        )
        .unwrap();
        let cfg = tuning(Some(&path)).unwrap();
        assert_eq!(cfg.rocksdb.block_cache_mb, 64);
        assert_eq!(cfg.raft.tick_ms, 50);
        assert_eq!(cfg.partition_manager.split_load_ops, 0);
        assert_eq!(cfg.partition_manager.schedule_interval_ms, 1000);
        assert_eq!(
            cfg.partition_manager.split_bytes,
            NodeConfig::default().partition_manager.split_bytes
        );
        assert_eq!(tuning(None).unwrap().rocksdb, NodeConfig::default().rocksdb);

        std::fs::write(&path, "[rocksdb]\nno-such-knob = 1\n").unwrap();
        assert!(tuning(Some(&path)).is_err());
        std::fs::write(&path, "[rocksdb]\nblock-cache-mb = 0\n").unwrap();
        assert!(tuning(Some(&path)).is_err());
        std::fs::write(&path, "[partition-manager]\nschedule-interval-ms = 1\n").unwrap();
        assert!(tuning(Some(&path)).is_err());
        assert!(tuning(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
