//! A storage node: its engine, its replicas (one per range, plus the meta group), and its servers — gRPC
//! (table API, admin, Raft transport, forwarding) and, if configured, the Azure Table REST API.
//!
//! Start-up order matters: the engine opens; the Raft driver starts and restores every replica the store
//! holds; a new store on an initial voter of a new cluster bootstraps the initial layout (a new store
//! anywhere else hosts nothing until leaders contact it: its disk was lost, or it is a new node); then
//! the servers start accepting requests.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trestle_engine::{Cf, Engine, RocksEngine, WriteBatch, keys};
use trestle_proto::admin::StatusRequest;
use trestle_proto::admin::admin_client::AdminClient;
use trestle_replication::grpc::{GrpcTransport, RaftService};
use trestle_replication::{RaftNode, Transport};
use trestle_rest_gateway::TableService;

use crate::admin::AdminService;
use crate::cluster::{ClusterTableService, FORWARDED};
use crate::config::NodeConfig;
use crate::forward::{FORWARDED_HEADER, NodeForwardService};
use crate::grpc_auth::{Authenticator, Secrets};
use crate::ranges::{RangeMap, Ranges};
use crate::tables::{LocalTables, NodeHost};

/// Pre-bound listeners (so callers can use port 0 and learn the address before the node starts).
pub struct Listeners {
    pub grpc: TcpListener,
    pub rest: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the configuration names for this node.
    pub async fn bind(cfg: &NodeConfig) -> anyhow::Result<Listeners> {
        let me = cfg.me().context("node-id is not among the peers")?;
        let grpc_addr = match cfg.grpc_listen {
            Some(a) => a.to_string(),
            None => me.grpc_addr.clone(),
        };
        let grpc = TcpListener::bind(&grpc_addr)
            .await
            .with_context(|| format!("binding gRPC on {grpc_addr}"))?;
        let rest_addr = cfg
            .rest_listen
            .map(|a| a.to_string())
            .or_else(|| me.rest_addr.clone());
        let rest = match rest_addr {
            Some(a) => Some(
                TcpListener::bind(&a)
                    .await
                    .with_context(|| format!("binding REST on {a}"))?,
            ),
            None => None,
        };
        Ok(Listeners { grpc, rest })
    }
}

const STORE_IDENT: &str = "store_ident";

/// A running node.
pub struct Node {
    raft: Arc<RaftNode>,
    tables: Arc<ClusterTableService>,
    grpc_addr: SocketAddr,
    rest_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// The partition manager lock's token while this node holds it.
    partition_manager: watch::Receiver<Option<u64>>,
}

impl Node {
    /// Opens RocksDB under the configured data directory, binds the configured addresses, and starts.
    pub async fn start_durable(cfg: NodeConfig) -> anyhow::Result<Node> {
        let listeners = Listeners::bind(&cfg).await?;
        Node::start_durable_with(cfg, listeners).await
    }

    /// Like [`Node::start_durable`], on listeners the caller bound.
    pub async fn start_durable_with(cfg: NodeConfig, listeners: Listeners) -> anyhow::Result<Node> {
        cfg.validate().map_err(|e| anyhow::anyhow!(e))?;
        let path = cfg.data_dir.join("db");
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let engine: Arc<dyn Engine> = Arc::new(
            RocksEngine::open(&path, &cfg.rocksdb)
                .with_context(|| format!("opening RocksDB at {}", path.display()))?,
        );
        let peers: HashMap<u64, String> = cfg
            .peers
            .iter()
            .filter(|p| p.id != cfg.node_id)
            .map(|p| (p.id, p.grpc_addr.clone()))
            .collect();
        let transport: Arc<dyn Transport> = GrpcTransport::new(
            cfg.node_id,
            cfg.cluster_token.clone(),
            cfg.tls.peers()?,
            peers,
        );
        Node::start(cfg, engine, transport, listeners).await
    }

    /// Starts a node on any engine and Raft transport (tests use the memory engine and network).
    pub async fn start(
        cfg: NodeConfig,
        engine: Arc<dyn Engine>,
        transport: Arc<dyn Transport>,
        listeners: Listeners,
    ) -> anyhow::Result<Node> {
        cfg.validate().map_err(|e| anyhow::anyhow!(e))?;
        let mut cfg = cfg;
        let peer_tls = cfg.tls.peers()?;
        // A joining node takes the members the cluster answers as its peers (see `join`).
        let mut joined_as = None;
        if let Some(addr) = cfg.join.clone() {
            let me = cfg
                .me()
                .cloned()
                .context("node-id is not among the peers")?;
            let saved = crate::members::saved(&*engine).map_err(|e| anyhow::anyhow!(e))?;
            // A node that joined before (a restart) waits less: it knows its peers.
            let timeout = if saved.is_some() {
                REJOIN_TIMEOUT
            } else {
                JOIN_TIMEOUT
            };
            let (peers, id) =
                crate::join::join_peers(&addr, &me, &cfg.cluster_token, &peer_tls, saved, timeout)
                    .await?;
            cfg.peers = peers;
            joined_as = Some(id);
        }
        let cluster_id = cluster_id(&cfg);
        if let Some(id) = joined_as
            && id != cluster_id
        {
            anyhow::bail!(
                "the cluster joined through {} is {id}, but its members make {cluster_id}",
                cfg.join.as_deref().unwrap_or_default()
            );
        }
        let members = Arc::new(crate::members::Members::new(cfg.peers.clone()));
        members
            .load_registered(&*engine)
            .and_then(|()| members.load_saved(&*engine))
            .map_err(|e| anyhow::anyhow!("loading the member list: {e}"))?;
        for p in members.list() {
            transport.add_peer(p.id, &p.grpc_addr);
        }
        {
            let transport = transport.clone();
            members.on_learn(move |p| transport.add_peer(p.id, &p.grpc_addr));
        }
        let secrets = Secrets::new(&cfg.cluster_token, cfg.admin_token.as_deref());
        let server_tls = cfg.tls.server()?;
        let fresh = engine
            .get(Cf::Meta, &keys::local_key(STORE_IDENT))?
            .is_none();
        let clock: Arc<dyn crate::clock::Clock> = match &cfg.hooks.lock_clock {
            Some(clock) => clock.clone(),
            None => Arc::new(crate::clock::SystemClock::default()),
        };
        let locks = crate::locks::LockHost::load(&*engine, clock)
            .map_err(|e| anyhow::anyhow!("loading the lock manager's state: {e}"))?;
        let ranges = Arc::new(Ranges::default());
        let host = Arc::new(
            NodeHost::new(ranges.clone(), locks.clone(), engine.clone())
                .with_members(members.clone()),
        );
        let raft = Arc::new(RaftNode::start(
            cfg.node_id,
            engine.clone(),
            transport,
            cfg.raft.clone(),
            host,
        )?);
        // Every replica this node's store holds (splits since bootstrap included), then the bootstrap
        // layout for whatever the store does not hold yet (a new store).
        raft.restore_groups()
            .await
            .map_err(|e| anyhow::anyhow!("restoring this node's replicas: {e}"))?;
        let local = Arc::new(LocalTables::new(raft.clone(), ranges));
        let tables = Arc::new(ClusterTableService::new(
            cfg.node_id,
            local.clone(),
            members.clone(),
            secrets.clone(),
            peer_tls.clone(),
            Duration::from_millis(cfg.request_timeout_ms),
            cfg.hooks.peer_filter.clone(),
        ));
        let catalog: Arc<dyn crate::tables::RemoteCatalog> = tables.clone();
        local.set_remote_catalog(Arc::downgrade(&catalog));
        let (shutdown, _) = watch::channel(false);
        let mut servers = Vec::new();

        let grpc_addr = listeners.grpc.local_addr()?;
        let service: Arc<dyn TableService> = tables.clone();
        let auth = Arc::new(Authenticator::new(
            &cfg.gateway,
            secrets.clone(),
            service.clone(),
            server_tls.is_some(),
        ));
        let default_account = trestle_rest_gateway::config::DEV_ACCOUNT.to_string();
        let leadership = Arc::new(crate::lock_api::Leadership::default());
        let lock_service = crate::lock_api::LockService::new(
            tables.clone(),
            local.clone(),
            locks.clone(),
            auth.clone(),
            default_account.clone(),
            Duration::from_millis(cfg.request_timeout_ms),
            leadership.clone(),
        );
        let scheduler = Arc::new(crate::scheduler::Activity::default());
        let admin = AdminService {
            scheduler: scheduler.clone(),
            cluster_id: cluster_id.clone(),
            raft: raft.clone(),
            tables: tables.clone(),
            secrets: secrets.clone(),
            auth: auth.clone(),
            default_account: default_account.clone(),
            peer_tls: peer_tls.clone(),
            locks: locks.clone(),
            leadership: leadership.clone(),
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = server_tls {
            builder = builder
                .tls_config(tls)
                .context("configuring TLS on the gRPC port")?;
        }
        let router = builder
            .layer(ForwardedLayer {
                secrets: secrets.clone(),
            })
            .add_service(crate::grpc_api::server(
                service.clone(),
                default_account,
                auth,
            ))
            .add_service(admin.server())
            .add_service(crate::lock_api::LockService::server(lock_service.clone()))
            .add_service(RaftService::new(
                cfg.node_id,
                cfg.cluster_token.clone(),
                raft.mailbox(),
            ))
            .add_service(NodeForwardService::server(local.clone(), secrets.clone()));
        // No Nagle: a small response held back behind the peer's delayed ACK costs 40 ms.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
        let mut stop = shutdown.subscribe();
        servers.push(tokio::spawn(async move {
            let signal = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));

        // A new store bootstraps the initial layout only on an initial voter of a new cluster. A store
        // that is new because its disk was lost bootstraps nothing: its replicas come back as the
        // leaders contact it (empty, filled by snapshots, voting only in later terms). The gRPC server
        // already answers, so new nodes starting together see each other's empty stores.
        let initial_voter = cfg.voters().contains(&cfg.node_id);
        let bootstrap = fresh
            && initial_voter
            && (cfg.bootstrapping || new_cluster(&cfg, &cluster_id, &secrets, &peer_tls).await);
        if fresh && !initial_voter {
            tracing::info!(
                node = cfg.node_id,
                "a node beyond the initial voters starts empty: it takes replicas as ranges move to it"
            );
        } else if fresh && !bootstrap {
            tracing::warn!(
                node = cfg.node_id,
                "this node's store is empty and the cluster is not new: its replicas come back from \
                 the leaders, by snapshot"
            );
        }
        for desc in RangeMap::initial(cfg.initial_ranges, cfg.voters()).descs() {
            // Stores written before range states existed hold the layout's groups without one.
            let legacy = engine
                .get(Cf::Raft, &keys::raft_local_key(desc.id))?
                .is_some();
            if bootstrap || legacy {
                raft.create_group(desc)
                    .await
                    .map_err(|e| anyhow::anyhow!("hosting a range: {e}"))?;
            }
        }
        if fresh {
            let mut batch = WriteBatch::new();
            batch.put(
                Cf::Meta,
                keys::local_key(STORE_IDENT),
                cluster_id.as_bytes().to_vec(),
            );
            engine.write(&batch, true)?;
        }

        servers.push(tokio::spawn(crate::drain::run_shed(
            local.clone(),
            shutdown.subscribe(),
        )));
        servers.push(tokio::spawn(crate::join::run_refresh(
            tables.clone(),
            cluster_id.clone(),
            shutdown.subscribe(),
        )));
        servers.push(tokio::spawn(crate::lock_api::run_expiry(
            raft.clone(),
            local.clone(),
            locks.clone(),
            leadership,
            Duration::from_millis(100),
            shutdown.subscribe(),
        )));

        // Cluster-wide chores (reaping deleted tables' entities whose drop could not run at delete
        // time) run on one node: the one holding the partition manager's lock.
        let (role_tx, partition_manager) = watch::channel(None);
        servers.push(tokio::spawn(crate::partition_manager::run(
            cfg.node_id,
            lock_service.clone(),
            tables.clone(),
            role_tx,
            shutdown.subscribe(),
        )));
        servers.push(tokio::spawn(crate::scheduler::run(
            tables.clone(),
            cfg.partition_manager.scheduler(),
            scheduler.clone(),
            partition_manager.clone(),
            shutdown.subscribe(),
        )));
        if cfg.partition_manager.balance_leaders {
            servers.push(tokio::spawn(crate::balance::run(
                tables.clone(),
                cfg.partition_manager.balance_interval(),
                partition_manager.clone(),
                shutdown.subscribe(),
            )));
        }

        let mut rest_addr = None;
        if let Some(listener) = listeners.rest {
            rest_addr = Some(listener.local_addr()?);
            let app = trestle_rest_gateway::router(service, cfg.gateway.clone());
            // Binds TLS now, so a bad certificate fails the start instead of a background task.
            let server = trestle_rest_gateway::listener::Server::new(listener, app, &cfg.gateway)
                .context("starting the REST listener")?;
            let mut stop = shutdown.subscribe();
            servers.push(tokio::spawn(async move {
                let signal = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = server.run(signal).await {
                    tracing::error!(error = %e, "REST server failed");
                }
            }));
        }
        tracing::info!(node = cfg.node_id, %grpc_addr, rest = ?rest_addr, "node serving");
        Ok(Node {
            raft,
            tables,
            grpc_addr,
            rest_addr,
            shutdown,
            servers,
            partition_manager,
        })
    }

    pub fn id(&self) -> u64 {
        self.raft.id()
    }

    pub fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    pub fn tables(&self) -> &Arc<ClusterTableService> {
        &self.tables
    }

    /// The fencing token of the partition manager's lock while this node holds it (see
    /// `partition_manager`).
    pub fn partition_manager_token(&self) -> Option<u64> {
        *self.partition_manager.borrow()
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn rest_addr(&self) -> Option<SocketAddr> {
        self.rest_addr
    }

    /// Stops accepting requests, lets in-flight ones finish, then stops the Raft driver (every write it
    /// acknowledged is already durable).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        // Peers keep long-lived Raft streams open, so a graceful drain can only wait so long.
        for mut s in self.servers {
            if tokio::time::timeout(Duration::from_secs(2), &mut s)
                .await
                .is_err()
            {
                s.abort();
            }
        }
        let raft = self.raft.clone();
        let _ = tokio::task::spawn_blocking(move || raft.shutdown()).await;
    }
}

/// A stable identifier for the cluster, derived from its membership and secret: an HMAC of the
/// member ids under the cluster token, so the identifier (shown by `trestle ctl status`) reveals
/// nothing about the token.
/// How long a node started with `join` waits for the cluster to take it in (when it has never joined;
/// a node that has falls back to the members it knew).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node that joined before asks before it starts with the members it saved.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster's name: a MAC of its initial voters under the cluster token, so every member computes
/// the same one whatever nodes joined since.
fn cluster_id(cfg: &NodeConfig) -> String {
    let mut members = String::from("trestle-cluster-id");
    for id in cfg.voters() {
        members.push_str(&format!("\n{id}"));
    }
    let mac = trestle_types::signing::sign(cfg.cluster_token.as_bytes(), &members);
    let hex: String = base64_to_hex(&mac).chars().take(16).collect();
    format!("trestle-{hex}")
}

fn base64_to_hex(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether this node, with an empty store, is starting a new cluster: waits (as long as it takes)
/// until either a peer reports data (the cluster exists: `false`) or a majority of the initial voters,
/// this node included, answers with nothing applied (`true`). Peers that do not answer prove nothing,
/// so an unreachable cluster keeps the node waiting rather than bootstrapping beside it.
async fn new_cluster(
    cfg: &NodeConfig,
    cluster_id: &str,
    secrets: &Secrets,
    tls: &trestle_replication::grpc::PeerTls,
) -> bool {
    let voters = cfg.voters();
    let mut rounds = 0u32;
    loop {
        let mut empty = 1; // this node
        for p in cfg.peers.iter().filter(|p| p.id != cfg.node_id) {
            match probe_applied(p, cluster_id, secrets, tls).await {
                Some(true) => return false,
                Some(false) if voters.contains(&p.id) => empty += 1,
                _ => {}
            }
        }
        if empty * 2 > voters.len() {
            return true;
        }
        if rounds.is_multiple_of(20) {
            tracing::info!(
                node = cfg.node_id,
                "empty store: waiting for a majority of the initial voters to answer before bootstrapping"
            );
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether peer `p` has applied anything (`None`: it did not answer, or belongs to another cluster).
async fn probe_applied(
    p: &crate::config::PeerConfig,
    cluster_id: &str,
    secrets: &Secrets,
    tls: &trestle_replication::grpc::PeerTls,
) -> Option<bool> {
    let probe = async {
        let channel = tls.endpoint(&p.grpc_addr).ok()?.connect().await.ok()?;
        let mut c = AdminClient::new(channel);
        let mut request = tonic::Request::new(StatusRequest {});
        trestle_proto::auth::insert(
            &mut request,
            trestle_proto::auth::CLUSTER_TOKEN,
            secrets.cluster_token(),
        );
        c.status(request).await.ok().map(|r| r.into_inner())
    };
    let status = tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()??;
    (status.cluster_id == cluster_id).then(|| {
        status
            .ranges
            .iter()
            .any(|r| r.replicas.iter().any(|rep| rep.applied_index > 0))
    })
}

/// Marks requests that carry `x-trestle-forwarded` and the cluster token, so the table service serves
/// them locally only. The mark without the token is ignored (the call is then an ordinary one, and its
/// credentials are checked as such).
#[derive(Clone)]
struct ForwardedLayer {
    secrets: Secrets,
}

impl<S> tower::Layer<S> for ForwardedLayer {
    type Service = ForwardedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardedService {
            inner,
            secrets: self.secrets.clone(),
        }
    }
}

#[derive(Clone)]
struct ForwardedService<S> {
    inner: S,
    secrets: Secrets,
}

impl<S, B> tower::Service<http::Request<B>> for ForwardedService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let forwarded = req.headers().contains_key(FORWARDED_HEADER)
            && req
                .headers()
                .get(trestle_proto::auth::CLUSTER_TOKEN)
                .is_some_and(|t| {
                    trestle_types::signing::secrets_equal(
                        t.as_bytes(),
                        self.secrets.cluster_token().as_bytes(),
                    )
                });
        Box::pin(FORWARDED.scope(forwarded, self.inner.call(req)))
    }
}
