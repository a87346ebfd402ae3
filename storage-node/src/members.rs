//! Who belongs to the cluster: the configured `[[peers]]`, in their order (the first three are the
//! initial voters), then the nodes that joined since (`trestle node --join`) by id. The meta group
//! records each joined node (`MetaCommand::RegisterNode`, engine `keys::member_key`), and every node
//! keeps the whole list here: the Raft transport, forwarding, `Admin` and the range scheduler read it,
//! and a joined node is learned without a restart —
//! - by a node hosting a meta replica when it applies the registration or restores a snapshot;
//! - by every node from its peers' `Admin.Status` member lists (`ClusterTableService::refresh_members`,
//!   every few seconds), so nodes without a meta replica learn it too.
//!
//! The list is kept in the node's own store ([`MEMBERS_KEY`]), so a joined node restarts knowing its
//! peers even when the node it joined through is down. Nodes are never removed from the list: a
//! decommissioned node holds no replicas and is simply left alone.

use std::sync::{Mutex, RwLock};

use prost::Message;
use trestle_engine::{Cf, Engine, WriteBatch, keys};
use trestle_proto::admin::{JoinResponse, NodeInfo};
use trestle_proto::internal::RegisterNode;

use crate::config::PeerConfig;

/// The local key (`Cf::Meta`) of the member list this node last knew (an encoded `JoinResponse`).
pub const MEMBERS_KEY: &str = "members";

type Listener = Box<dyn Fn(&PeerConfig) + Send + Sync>;

pub struct Members {
    /// The configured peers, then the joined nodes by id.
    list: RwLock<Vec<PeerConfig>>,
    /// How many entries of `list` are configured peers.
    configured: usize,
    /// Called with each node learned after start (the Raft transport connects to it).
    listeners: Mutex<Vec<Listener>>,
}

impl Members {
    /// The configured peers (in the configuration's order).
    pub fn new(configured: Vec<PeerConfig>) -> Members {
        Members {
            configured: configured.len(),
            list: RwLock::new(configured),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Every member in the cluster's order.
    pub fn list(&self) -> Vec<PeerConfig> {
        self.list.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every member's id, sorted.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.list().iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids
    }

    pub fn get(&self, id: u64) -> Option<PeerConfig> {
        self.list().into_iter().find(|p| p.id == id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Whether `id` is one of the peers this node started with (its configuration's, or the list it
    /// joined with).
    pub fn is_configured(&self, id: u64) -> bool {
        self.list
            .read()
            .is_ok_and(|l| l[..self.configured].iter().any(|p| p.id == id))
    }

    /// Every member's zone (fault domain), for placement.
    pub fn zones(&self) -> std::collections::BTreeMap<u64, Option<String>> {
        self.list().into_iter().map(|p| (p.id, p.zone)).collect()
    }

    /// Calls `f` with every node learned from now on.
    pub fn on_learn(&self, f: impl Fn(&PeerConfig) + Send + Sync + 'static) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push(Box::new(f));
        }
    }

    /// Adds `peer` unless its id is known (a known id keeps its address: a node at another address
    /// with a member's id is refused when it joins, see [`check_join`]). Returns whether it was new.
    pub fn learn(&self, peer: PeerConfig) -> bool {
        {
            let Ok(mut list) = self.list.write() else {
                return false;
            };
            if list.iter().any(|p| p.id == peer.id) {
                return false;
            }
            let after = list[self.configured..]
                .iter()
                .take_while(|p| p.id < peer.id)
                .count();
            list.insert(self.configured + after, peer.clone());
        }
        tracing::info!(node = peer.id, addr = %peer.grpc_addr, "learned a new member");
        if let Ok(listeners) = self.listeners.lock() {
            for f in listeners.iter() {
                f(&peer);
            }
        }
        true
    }

    /// Learns every node the meta group recorded in `engine` (this node's meta replica, if any).
    pub fn load_registered(&self, engine: &dyn Engine) -> Result<(), String> {
        for node in registered(engine)? {
            self.learn(node);
        }
        Ok(())
    }

    /// Learns the member list this node saved in its store, if any.
    pub fn load_saved(&self, engine: &dyn Engine) -> Result<(), String> {
        if let Some(saved) = saved(engine)? {
            for node in saved.nodes {
                self.learn(peer_from_info(&node));
            }
        }
        Ok(())
    }

    /// Keeps the list in this node's store (synced).
    pub fn save(&self, engine: &dyn Engine, cluster_id: &str) -> Result<(), String> {
        let mut batch = WriteBatch::new();
        batch.put(
            Cf::Meta,
            keys::local_key(MEMBERS_KEY),
            self.to_response(cluster_id).encode_to_vec(),
        );
        engine
            .write(&batch, true)
            .map_err(|e| format!("saving the member list: {e}"))
    }

    /// The list as `Admin.Join` answers it.
    pub fn to_response(&self, cluster_id: &str) -> JoinResponse {
        JoinResponse {
            cluster_id: cluster_id.to_string(),
            nodes: self.list().iter().map(info_from_peer).collect(),
        }
    }
}

/// The member list saved in `engine`'s store, if any.
pub fn saved(engine: &dyn Engine) -> Result<Option<JoinResponse>, String> {
    engine
        .get(Cf::Meta, &keys::local_key(MEMBERS_KEY))
        .map_err(|e| format!("reading the saved member list: {e}"))?
        .map(|b| {
            JoinResponse::decode(b.as_slice())
                .map_err(|e| format!("the saved member list does not parse: {e}"))
        })
        .transpose()
}

/// Every node the meta group recorded (in this store's meta replica), by id.
pub fn registered(engine: &dyn Engine) -> Result<Vec<PeerConfig>, String> {
    let prefix = keys::members_prefix();
    let end = keys::prefix_end(&prefix);
    let snapshot = engine.snapshot();
    let mut out = Vec::new();
    for kv in snapshot
        .scan(Cf::Meta, &prefix, end.as_deref())
        .map_err(|e| format!("reading the members: {e}"))?
    {
        let (_, value) = kv.map_err(|e| format!("reading the members: {e}"))?;
        let body = crate::codec::unseal(&value).map_err(|e| format!("a member record: {e}"))?;
        let node = RegisterNode::decode(body)
            .map_err(|e| format!("a member record does not parse: {e}"))?;
        out.push(peer_from_register(&node));
    }
    Ok(out)
}

/// Whether `node` may join a cluster whose members are `members`: `Ok(true)` if it is new, `Ok(false)`
/// if it is already a member at the same gRPC address (a restart asks again), an error naming the
/// conflict if its id is a member's at another address.
pub fn check_join(members: &[PeerConfig], node: &PeerConfig) -> Result<bool, String> {
    match members.iter().find(|p| p.id == node.id) {
        None => Ok(true),
        Some(p) if p.grpc_addr == node.grpc_addr => Ok(false),
        Some(p) => Err(format!(
            "node {} is already a member at {}, not {}",
            node.id, p.grpc_addr, node.grpc_addr
        )),
    }
}

/// Checks what a joining node says about itself: a non-zero id and a `host:port` gRPC address.
pub fn validate_joiner(node: &PeerConfig) -> Result<(), String> {
    if node.id == 0 {
        return Err("a node id must be non-zero".into());
    }
    let valid_addr = |a: &str| {
        a.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
    };
    if !valid_addr(&node.grpc_addr) {
        return Err(format!("grpc-addr {:?} is not host:port", node.grpc_addr));
    }
    if let Some(rest) = &node.rest_addr
        && !valid_addr(rest)
    {
        return Err(format!("rest-addr {rest:?} is not host:port"));
    }
    Ok(())
}

pub fn info_from_peer(p: &PeerConfig) -> NodeInfo {
    NodeInfo {
        id: p.id,
        grpc_addr: p.grpc_addr.clone(),
        rest_addr: p.rest_addr.clone().unwrap_or_default(),
        zone: p.zone.clone().unwrap_or_default(),
    }
}

pub fn peer_from_info(n: &NodeInfo) -> PeerConfig {
    PeerConfig {
        id: n.id,
        grpc_addr: n.grpc_addr.clone(),
        rest_addr: (!n.rest_addr.is_empty()).then(|| n.rest_addr.clone()),
        zone: (!n.zone.is_empty()).then(|| n.zone.clone()),
    }
}

pub fn register_from_peer(p: &PeerConfig) -> RegisterNode {
    RegisterNode {
        node_id: p.id,
        grpc_addr: p.grpc_addr.clone(),
        rest_addr: p.rest_addr.clone().unwrap_or_default(),
        zone: p.zone.clone().unwrap_or_default(),
    }
}

pub fn peer_from_register(n: &RegisterNode) -> PeerConfig {
    PeerConfig {
        id: n.node_id,
        grpc_addr: n.grpc_addr.clone(),
        rest_addr: (!n.rest_addr.is_empty()).then(|| n.rest_addr.clone()),
        zone: (!n.zone.is_empty()).then(|| n.zone.clone()),
    }
}

#[cfg(test)]
#[path = "members_tests.rs"]
mod tests;
