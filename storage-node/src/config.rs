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
    /// The node's fault domain (rack, zone): a range's replicas go to distinct zones where it can.
    #[serde(default)]
    pub zone: Option<String>,
    /// Where the node's Azure REST API listens, if it serves one.
    #[serde(default)]
    pub rest_addr: Option<String>,
}

/// The cluster token of the example configurations: public, so only for clusters on loopback.
pub const EXAMPLE_CLUSTER_TOKEN: &str = "trestle-dev-cluster";

/// The shortest cluster or admin token accepted (a random 32-character token is what `trestle dev`
/// generates; 16 keeps hand-written tokens from being guessable).
pub const MIN_TOKEN_LEN: usize = 16;

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
    /// Shared secret that nodes present to each other (Raft transport, forwarding, start-up probes). The
    /// default, [`EXAMPLE_CLUSTER_TOKEN`], is public: a node using it refuses to listen beyond loopback.
    pub cluster_token: String,
    /// The credential of Admin's mutating calls (`trestle ctl --admin-token`); the cluster token when
    /// unset.
    pub admin_token: Option<String>,
    /// Number of data ranges created when the cluster is bootstrapped.
    pub initial_ranges: usize,
    /// Every member, this node included. The first three are the voters of every range.
    pub peers: Vec<PeerConfig>,
    /// A member's gRPC address (`host:port`) to join a running cluster through (`trestle node
    /// --join`): `peers` then needs to list only this node, and the members come from the cluster.
    pub join: Option<String>,
    /// How long a request may wait for a leader (elections, forwarding) before it fails.
    pub request_timeout_ms: u64,
    pub raft: trestle_replication::Config,
    pub rocksdb: RocksConfig,
    pub gateway: GatewayConfig,
    /// TLS on the gRPC port and for node-to-node traffic (see `tls`).
    pub tls: crate::tls::GrpcTlsConfig,
    /// The partition manager's chores (see `partition_manager`).
    pub partition_manager: crate::partition_manager::Config,
    /// Set by `trestle dev` and test clusters when every node's store is new: the cluster is being
    /// bootstrapped, so a new store does not mean a lost disk (see `Node::start`). Not read from files.
    #[serde(skip)]
    pub bootstrapping: bool,
    /// Test clusters' seams into the node (its lock manager's clock, a filter on its links to the
    /// peers; see `hooks`). Not read from files.
    #[serde(skip)]
    pub hooks: crate::hooks::Hooks,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("./trestle-data"),
            grpc_listen: None,
            rest_listen: None,
            cluster_token: EXAMPLE_CLUSTER_TOKEN.into(),
            admin_token: None,
            initial_ranges: 4,
            peers: Vec::new(),
            join: None,
            request_timeout_ms: 10_000,
            raft: trestle_replication::Config::default(),
            rocksdb: RocksConfig::default(),
            gateway: GatewayConfig::default(),
            tls: crate::tls::GrpcTlsConfig::default(),
            partition_manager: crate::partition_manager::Config::default(),
            bootstrapping: false,
            hooks: crate::hooks::Hooks::default(),
        }
    }
}

impl NodeConfig {
    /// Parses and validates a node file.
    pub fn from_toml(text: &str) -> Result<NodeConfig, String> {
        let cfg = NodeConfig::parse_toml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a node file without validating it (the caller overrides some settings first).
    pub fn parse_toml(text: &str) -> Result<NodeConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.join.is_none() && self.peers.len() < 3 {
            return Err(
                "a cluster needs at least three peers (every range has three replicas); a node \
                 joining a running cluster lists itself and sets `join`"
                    .into(),
            );
        }
        if let Some(join) = &self.join
            && !join
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Err(format!("join {join:?} is not host:port"));
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
        if self.cluster_token != EXAMPLE_CLUSTER_TOKEN && self.cluster_token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "cluster-token must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_TOKEN_LEN)
        {
            return Err(format!(
                "admin-token must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        let printable = |t: &str| t.bytes().all(|b| b.is_ascii_graphic());
        if !printable(&self.cluster_token) || !self.admin_token.as_deref().is_none_or(printable) {
            return Err(
                "cluster-token and admin-token must be printable ASCII without spaces".into(),
            );
        }
        if self.cluster_token == EXAMPLE_CLUSTER_TOKEN
            && let Some(addr) = self.non_loopback_listen_address()
        {
            return Err(format!(
                "cluster-token is the public example token, but this node would listen on {addr}, \
                 beyond loopback: set a secret cluster-token (e.g. `openssl rand -hex 24`) on every node"
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err("request-timeout-ms must be positive".into());
        }
        self.raft.validate()?;
        self.rocksdb.validate().map_err(|e| e.to_string())?;
        self.gateway.validate().map_err(|e| e.to_string())?;
        self.tls.validate()?;
        self.partition_manager.validate()?;
        Ok(())
    }

    /// The first address this node would listen on that is not a loopback address, if any.
    fn non_loopback_listen_address(&self) -> Option<String> {
        let me = self.me()?;
        let grpc = self
            .grpc_listen
            .map(|a| a.to_string())
            .unwrap_or_else(|| me.grpc_addr.clone());
        let rest = self
            .rest_listen
            .map(|a| a.to_string())
            .or_else(|| me.rest_addr.clone());
        [Some(grpc), rest]
            .into_iter()
            .flatten()
            .find(|a| !is_loopback(a))
    }

    /// The voters of every range: the first three peers.
    pub fn voters(&self) -> Vec<u64> {
        self.peers.iter().take(3).map(|p| p.id).collect()
    }

    pub fn me(&self) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.id == self.node_id)
    }
}

/// Whether `addr` (`host:port`) names a loopback address; a host name other than `localhost` is not
/// resolved here and counts as non-loopback.
fn is_loopback(addr: &str) -> bool {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return a.ip().is_loopback();
    }
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_peers(host: &str) -> NodeConfig {
        NodeConfig {
            peers: (1..=3)
                .map(|id| PeerConfig {
                    id,
                    zone: None,
                    grpc_addr: format!("{host}:{}", 7100 + id),
                    rest_addr: None,
                })
                .collect(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn a_joining_node_lists_only_itself() {
        let mut cfg = three_peers("127.0.0.1");
        cfg.peers.truncate(1);
        assert!(cfg.validate().unwrap_err().contains("join"));
        cfg.join = Some("127.0.0.1:7102".into());
        assert!(cfg.validate().is_ok());
        for bad in ["127.0.0.1", ":7102", "host:port"] {
            cfg.join = Some(bad.into());
            assert!(cfg.validate().is_err(), "{bad}");
        }
        let parsed = NodeConfig::from_toml(
            "node-id = 4\njoin = \"10.0.0.1:7100\"\ncluster-token = \"0123456789abcdef0\"\n\
             [[peers]]\nid = 4\ngrpc-addr = \"10.0.0.4:7100\"\n",
        )
        .unwrap();
        assert_eq!(parsed.join.as_deref(), Some("10.0.0.1:7100"));
    }

    #[test]
    fn the_example_token_is_refused_beyond_loopback() {
        assert!(three_peers("127.0.0.1").validate().is_ok());
        assert!(three_peers("localhost").validate().is_ok());
        let err = three_peers("10.0.0.5").validate().unwrap_err();
        assert!(err.contains("public example token"), "{err}");
        let mut wide_rest = three_peers("127.0.0.1");
        wide_rest.rest_listen = Some("0.0.0.0:10002".parse().unwrap());
        assert!(wide_rest.validate().is_err());
        let mut secret = three_peers("10.0.0.5");
        secret.cluster_token = "0123456789abcdef0123".into();
        assert!(secret.validate().is_ok());
    }

    #[test]
    fn the_example_file_parses_and_is_refused_until_its_token_is_changed() {
        let text = include_str!("../../config/node.example.toml");
        let err = NodeConfig::from_toml(text).unwrap_err();
        assert!(err.contains("public example token"), "{err}");
        let changed = text.replace(
            "cluster-token = \"trestle-dev-cluster\"",
            "cluster-token = \"a-secret-cluster-token-0123\"",
        );
        let cfg = NodeConfig::from_toml(&changed).unwrap();
        assert_eq!(cfg.peers.len(), 3);
        assert!(!cfg.tls.enabled());
        assert!(cfg.partition_manager.balance_leaders);
    }

    #[test]
    fn the_partition_manager_section_is_checked() {
        let base = three_peers("127.0.0.1");
        let mut off = base.clone();
        off.partition_manager.balance_leaders = false;
        assert!(off.validate().is_ok());
        let mut too_often = base;
        too_often.partition_manager.balance_interval_ms = 10;
        assert!(too_often.validate().is_err());
        let misspelt = toml::from_str::<NodeConfig>("[partition-manager]\nbalance-leader = true\n")
            .unwrap_err();
        assert!(misspelt.to_string().contains("unknown field"), "{misspelt}");
        let set =
            toml::from_str::<NodeConfig>("[partition-manager]\nbalance-leaders = false\n").unwrap();
        assert!(!set.partition_manager.balance_leaders);
    }

    #[test]
    fn tokens_must_be_long_and_printable() {
        let mut cfg = three_peers("127.0.0.1");
        cfg.cluster_token = "short".into();
        assert!(cfg.validate().is_err());
        cfg.cluster_token = "0123456789abcdef 0123".into();
        assert!(cfg.validate().is_err());
        cfg.cluster_token = "0123456789abcdef0123".into();
        cfg.admin_token = Some("tiny".into());
        assert!(cfg.validate().is_err());
        cfg.admin_token = Some("admin-0123456789abcdef".into());
        assert!(cfg.validate().is_ok());
    }
}
