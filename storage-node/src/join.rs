//! Nodes joining a running cluster (`trestle node --join ADDR`). The new node asks any member's
//! `Admin.Join` (with the cluster token); that member records it in the meta group through the group's
//! leader ([`ClusterTableService::register_node`]) and answers with the member list, which the new node
//! takes as its peers. Every member then learns the new node (`members`: meta replicas when they apply
//! the record, the others from their peers' status within a few seconds, [`run_refresh`]), and the
//! range scheduler moves replicas onto it like onto any node holding fewer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;
use trestle_proto::admin::admin_client::AdminClient;
use trestle_proto::admin::{JoinRequest, JoinResponse, StatusRequest};
use trestle_types::{Error, ErrorCode, Result};

use crate::cluster::{ClusterTableService, FORWARDED, Retry};
use crate::config::PeerConfig;
use crate::forward;
use crate::members::{self, peer_from_info};

/// How often every node asks a peer for the member list.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

impl ClusterTableService {
    /// Records `node` as a member: refused (`NodeAlreadyExists`) if its id is a member's at another
    /// address. Answers whether it is new. A configured peer is a member already and is not recorded.
    pub(crate) async fn register_node(&self, node: &PeerConfig) -> Result<bool> {
        members::validate_joiner(node).map_err(Error::invalid_input)?;
        let list = self.member_list();
        let new = members::check_join(&list.list(), node)
            .map_err(|e| Error::new(ErrorCode::NodeAlreadyExists, e))?;
        if list.is_configured(node.id) {
            return Ok(false);
        }
        let record = members::register_from_peer(node);
        let local = self.local();
        let register = self.route(
            Retry::Safe,
            || local.register_node(record.clone()),
            |c| forward::register_node(c, record.clone()),
        );
        FORWARDED.scope(false, register).await?;
        list.learn(node.clone());
        Ok(new)
    }

    /// Learns the members peer number `attempt` (in turn) knows and this node does not; whether any
    /// was new.
    pub(crate) async fn refresh_members(&self, attempt: usize) -> bool {
        let Some(peer) = self.next_peer(attempt) else {
            return false;
        };
        let Ok(link) = self.link(peer) else {
            return false;
        };
        let mut admin = AdminClient::new(link.channel.clone());
        let call = admin.status(link.request(StatusRequest {}, None));
        let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), call).await else {
            return false;
        };
        let mut learned = false;
        for node in &status.into_inner().nodes {
            learned |= self.member_list().learn(peer_from_info(node));
        }
        learned
    }
}

/// Asks a peer for the member list every [`REFRESH_INTERVAL`] and keeps the list in this node's store
/// whenever it grew, until `stop`.
pub async fn run_refresh(
    cluster: Arc<ClusterTableService>,
    cluster_id: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut saved = 0;
    let mut attempt = 0usize;
    loop {
        cluster.refresh_members(attempt).await;
        attempt = attempt.wrapping_add(1);
        let known = cluster.member_list().list().len();
        if known != saved {
            match cluster
                .member_list()
                .save(cluster.local().engine(), &cluster_id)
            {
                Ok(()) => saved = known,
                Err(e) => tracing::warn!(error = %e, "keeping the member list"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The member did not answer (or had no meta leader) before the deadline.
    #[error("joining through {addr}: no answer: {message}")]
    Unreachable { addr: String, message: String },
    /// The member refused: wrong cluster token, the id taken by another address, a bad address.
    #[error("joining through {addr}: refused ({code:?}): {message}")]
    Refused {
        addr: String,
        code: Code,
        message: String,
    },
}

/// Asks the member at `addr` to take `me` in, retrying while it cannot be reached until `timeout`;
/// a refusal (wrong token, id taken) fails at once.
pub async fn ask_to_join(
    addr: &str,
    me: &PeerConfig,
    cluster_token: &str,
    tls: &trestle_replication::grpc::PeerTls,
    timeout: Duration,
) -> std::result::Result<JoinResponse, JoinError> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let channel = tls
                .endpoint(addr)
                .map_err(|e| tonic::Status::invalid_argument(format!("bad address {addr}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connecting to {addr}: {e}")))?;
            let mut request = tonic::Request::new(JoinRequest {
                node: Some(members::info_from_peer(me)),
            });
            trestle_proto::auth::insert(
                &mut request,
                trestle_proto::auth::CLUSTER_TOKEN,
                cluster_token,
            );
            AdminClient::new(channel)
                .join(request)
                .await
                .map(tonic::Response::into_inner)
        };
        let status = match attempt.await {
            Ok(resp) => return Ok(resp),
            Err(status) => status,
        };
        let transient = matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Internal
        );
        if !transient {
            return Err(JoinError::Refused {
                addr: addr.to_string(),
                code: status.code(),
                message: status.message().to_string(),
            });
        }
        if Instant::now() >= deadline {
            return Err(JoinError::Unreachable {
                addr: addr.to_string(),
                message: status.message().to_string(),
            });
        }
        tracing::info!(addr, error = %status.message(), "waiting to join the cluster");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The peers a node joining through `addr` takes, and the cluster's id: the member list the cluster
/// answers, this node's own entry as configured; or, when the cluster cannot be reached, the list this node saved the last time
/// (a restart while the node it joined through is down).
pub async fn join_peers(
    addr: &str,
    me: &PeerConfig,
    cluster_token: &str,
    tls: &trestle_replication::grpc::PeerTls,
    saved: Option<JoinResponse>,
    timeout: Duration,
) -> anyhow::Result<(Vec<PeerConfig>, String)> {
    let answer = match ask_to_join(addr, me, cluster_token, tls, timeout).await {
        Ok(answer) => answer,
        Err(e @ JoinError::Unreachable { .. }) => match saved {
            Some(saved) => {
                tracing::warn!(
                    error = %e,
                    "the cluster did not answer; starting with the members this node knew"
                );
                saved
            }
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let mut peers: Vec<PeerConfig> = answer.nodes.iter().map(peer_from_info).collect();
    match peers.iter_mut().find(|p| p.id == me.id) {
        Some(p) => *p = me.clone(),
        None => peers.push(me.clone()),
    }
    Ok((peers, answer.cluster_id))
}
