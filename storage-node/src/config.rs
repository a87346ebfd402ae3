//! A node's configuration: a TOML file (see `config/node.example.toml`), then command-line overrides.
//!
//! Each crate owns its own section (`[raft]`, `[rocksdb]`, `[gateway]`); this file composes them and checks
//! the cluster-level rules (node ids unique, this node among the peers, three voters).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use trestle_engine::RocksConfig;
use trestle_rest_gateway::GatewayConfig;

/// One member of the cluster.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerConfig {
    pub id: u64,
    /// Where the node's gRPC server (Raft transport, table and admin services) listens.
    pub grpc_addr: String,
    /// Where the node's Azure REST API listens, if it serves one.
    #[serde(default)]
    pub rest_addr: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// This node's id; must appear in `peers`.
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// Address the gRPC server binds (defaults to this node's `grpc-addr` in `peers`).
    pub grpc_listen: Option<SocketAddr>,
    /// Address the REST API binds (defaults to this node's `rest-addr` in `peers`; none: no REST).
    pub rest_listen: Option<SocketAddr>,
    /// Shared secret that nodes present to each other on the Raft transport.
    pub cluster_token: String,
    /// Number of data ranges created when the cluster is bootstrapped.
    pub initial_ranges: usize,
    /// Every member, this node included. The first three are the voters of every range.
    pub peers: Vec<PeerConfig>,
    /// How long a request may wait for a leader (elections, forwarding) before it fails.
    pub request_timeout_ms: u64,
    pub raft: trestle_replication::Config,
    pub rocksdb: RocksConfig,
    pub gateway: GatewayConfig,
    /// Set by `trestle dev` and test clusters when every node's store is new: the cluster is being
    /// bootstrapped, so a new store does not mean a lost disk (see `Node::start`). Not read from files.
    #[serde(skip)]
    pub bootstrapping: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("./trestle-data"),
            grpc_listen: None,
            rest_listen: None,
            cluster_token: "trestle-dev-cluster".into(),
            initial_ranges: 4,
            peers: Vec::new(),
            request_timeout_ms: 10_000,
            raft: trestle_replication::Config::default(),
            rocksdb: RocksConfig::default(),
            gateway: GatewayConfig::default(),
            bootstrapping: false,
        }
    }
}

impl NodeConfig {
    pub fn from_toml(text: &str) -> Result<NodeConfig, String> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.peers.len() < 3 {
            return Err(
                "a cluster needs at least three peers (every range has three replicas)".into(),
            );
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.peers.len() || ids.contains(&0) {
            return Err("peer ids must be unique and non-zero".into());
        }
        if !ids.contains(&self.node_id) {
            return Err(format!("node-id {} is not among the peers", self.node_id));
        }
        if !(1..=256).contains(&self.initial_ranges) {
            return Err("initial-ranges must be between 1 and 256".into());
        }
        if self.cluster_token.is_empty() {
            return Err("cluster-token must not be empty".into());
        }
        if self.request_timeout_ms == 0 {
            return Err("request-timeout-ms must be positive".into());
        }
        self.raft.validate()?;
        self.rocksdb.validate().map_err(|e| e.to_string())?;
        self.gateway.validate().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The voters of every range: the first three peers.
    pub fn voters(&self) -> Vec<u64> {
        self.peers.iter().take(3).map(|p| p.id).collect()
    }

    pub fn me(&self) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.id == self.node_id)
    }
}
