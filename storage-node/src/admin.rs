//! The Admin gRPC service: cluster status (`trestle ctl status`), range location for the SDK's routing
//! cache, and leader transfer.
//!
//! Callers (see `grpc_auth`): `Status` needs the cluster token (peers probe each other at start-up) or
//! the admin token; `Join` needs the cluster token (a node joining); `Drain` the admin token; `TransferLeader` needs the admin token; `Locate` needs a credential of the account
//! it asks about (it reveals whether a table exists), as a table call would.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trestle_proto::admin::admin_client::AdminClient;
use trestle_proto::admin::admin_server::{Admin, AdminServer};
use trestle_proto::admin::{
    JoinRequest, JoinResponse, LocateRequest, LocateResponse, RangeStatus, ReplicaStatus,
    StatusRequest, StatusResponse, TransferLeaderRequest, TransferLeaderResponse,
};
use trestle_replication::{ProposeError, RaftNode};

use trestle_rest_gateway::TableService;
use trestle_rest_gateway::auth::Credential;

use crate::cluster::ClusterTableService;
use crate::grpc_auth::{Authenticator, Secrets};

pub struct AdminService {
    pub(crate) cluster_id: String,
    pub(crate) raft: Arc<RaftNode>,
    pub(crate) tables: Arc<ClusterTableService>,
    pub(crate) secrets: Secrets,
    pub(crate) auth: Arc<Authenticator>,
    /// The account of requests that leave `account` empty.
    pub(crate) default_account: String,
    /// How this node reaches its peers (to forward a leader transfer).
    pub(crate) peer_tls: trestle_replication::grpc::PeerTls,
    pub(crate) locks: Arc<crate::locks::LockHost>,
    pub(crate) leadership: Arc<crate::lock_api::Leadership>,
    /// What this node's range scheduler last did (while it is the partition manager).
    pub(crate) scheduler: Arc<crate::scheduler::Activity>,
}

impl AdminService {
    pub fn server(self) -> AdminServer<AdminService> {
        AdminServer::new(self)
    }

    /// A Locate answer: `range`, led by `leader`, and the partitions of table `table_id` it holds.
    fn located(
        &self,
        range: &crate::ranges::RangeDesc,
        leader: u64,
        table_id: Option<u64>,
    ) -> LocateResponse {
        let bound =
            |key: &[u8]| table_id.and_then(|t| trestle_engine::keys::boundary_partition(t, key));
        LocateResponse {
            range_id: range.id,
            leader_node_id: leader,
            leader_grpc_addr: self.addr_of(leader),
            range: Some(crate::splits::descriptor_to_proto(range)),
            first_partition_key: bound(&range.start),
            end_partition_key: range.end.as_deref().and_then(bound),
        }
    }

    fn addr_of(&self, node: u64) -> String {
        self.tables
            .member_list()
            .get(node)
            .map(|p| p.grpc_addr)
            .unwrap_or_default()
    }

    fn is_member(&self, node: u64) -> bool {
        self.tables.member_list().contains(node)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.secrets.require_peer_or_admin(request.metadata())?;
        let ranges = self
            .raft
            .status()
            .into_iter()
            .map(|g| {
                let me = self.raft.id();
                let matched = |node: u64| {
                    g.progress
                        .iter()
                        .find(|(n, _)| *n == node)
                        .map_or(0, |(_, m)| *m)
                };
                let mut replicas = vec![ReplicaStatus {
                    node_id: me,
                    role: g.role.as_str().to_string(),
                    term: g.term,
                    commit_index: g.commit_index,
                    applied_index: g.applied_index,
                    last_index: g.last_index,
                    matched_index: matched(me),
                }];
                // A leader also reports how far each other replica has matched its log (its view;
                // each replica's own report has the rest).
                for &(node, matched_index) in g.progress.iter().filter(|(n, _)| *n != me) {
                    let learner = g.desc.as_ref().is_some_and(|d| d.learners.contains(&node));
                    replicas.push(ReplicaStatus {
                        node_id: node,
                        role: if learner { "learner" } else { "follower" }.to_string(),
                        term: g.term,
                        matched_index,
                        ..Default::default()
                    });
                }
                let local = self.tables.local();
                let stats = local.ranges().stats(g.group);
                // The meta group has no span; its descriptor carries its members and epoch.
                let desc = g.desc.as_ref().map(|d| {
                    crate::ranges::RangeDesc::from_group(d).map_or_else(
                        || trestle_proto::admin::RangeDescriptor {
                            id: d.id,
                            voters: d.voters.clone(),
                            learners: d.learners.clone(),
                            voters_outgoing: d.voters_outgoing.clone(),
                            version: d.epoch.version,
                            conf_ver: d.epoch.conf_ver,
                            ..Default::default()
                        },
                        |r| crate::splits::descriptor_to_proto(&r),
                    )
                });
                RangeStatus {
                    range_id: g.group,
                    span: self.tables.describe_range(g.group),
                    leader_node_id: g.leader.unwrap_or_default(),
                    replicas,
                    approximate_bytes: stats.bytes(),
                    writes: stats.writes(),
                    reads: stats.reads(),
                    desc,
                    merging_into: g.merging.map(|m| m.target),
                    merge_index: g.merging.map_or(0, |m| m.index),
                }
            })
            .collect();
        Ok(Response::new(StatusResponse {
            cluster_id: self.cluster_id.clone(),
            node_id: self.raft.id(),
            nodes: self
                .tables
                .member_list()
                .list()
                .iter()
                .map(crate::members::info_from_peer)
                .collect(),
            ranges,
            scheduler: self.scheduler.last().unwrap_or_default(),
            draining: self.tables.local().draining(),
            leaders_drained: self.tables.local().leaders_drained(),
        }))
    }

    async fn locate(
        &self,
        request: Request<LocateRequest>,
    ) -> Result<Response<LocateResponse>, Status> {
        let account = match request.get_ref().account.as_str() {
            "" => self.default_account.clone(),
            a => a.to_string(),
        };
        let credential = self
            .auth
            .authenticate(&request, trestle_proto::auth::method::LOCATE, &account)
            .await?;
        let req = request.into_inner();
        // Any credential of the account may locate its tables, a table SAS only its own table.
        if let Credential::TableSas { table, .. } = &credential
            && !table.eq_ignore_ascii_case(&req.table)
        {
            return Err(crate::grpc_auth::deny(
                trestle_rest_gateway::ApiError::from_code(
                    trestle_types::ErrorCode::AuthorizationFailure,
                ),
            ));
        }
        let local = self.tables.local();
        let desc = if req.partition_key.is_empty() {
            let id = self.tables.range_of_table(&account, &req.table).await;
            id.and_then(|id| {
                local.ranges().get(id).ok_or_else(|| {
                    trestle_types::Error::new(
                        trestle_types::ErrorCode::RangeStale,
                        "The range is changing; retry.",
                    )
                })
            })
        } else {
            match local
                .range_of_partition(&account, &req.table, &req.partition_key)
                .await
            {
                // This node hosts no replica of the partition's range: the members say who leads it.
                Err(e) if e.code == trestle_types::ErrorCode::NotLeader => {
                    let table = TableService::get_table(&*self.tables, &account, &req.table).await;
                    let table = table.map_err(|e| crate::grpc_api::status_from_error(&e))?;
                    let key = trestle_engine::keys::partition_prefix(table.id, &req.partition_key);
                    if let Some((leader, range)) = self.tables.leader_of_key(&key).await {
                        let desc = crate::splits::descriptor_from_proto(&range);
                        return Ok(Response::new(self.located(&desc, leader, Some(table.id))));
                    }
                    Err(e)
                }
                other => other,
            }
        }
        .map_err(|e| crate::grpc_api::status_from_error(&e))?;
        let leader = self.raft.leader(desc.id).unwrap_or_default();
        let table_id = local.table_id(&account, &req.table).await.ok();
        Ok(Response::new(self.located(&desc, leader, table_id)))
    }

    async fn locks(
        &self,
        request: Request<trestle_proto::admin::LocksRequest>,
    ) -> Result<Response<trestle_proto::admin::LocksResponse>, Status> {
        self.secrets.require_admin(request.metadata())?;
        self.tables
            .local()
            .read_meta()
            .await
            .map_err(|e| crate::grpc_api::status_from_error(&e))?;
        let since = self.leadership.since();
        let held: Vec<(String, u64, u64, Vec<u64>)> = self.locks.read(|s| {
            s.locks()
                .map(|l| {
                    (
                        l.name.clone(),
                        l.holder.lease,
                        l.holder.token,
                        l.waiters.iter().copied().collect(),
                    )
                })
                .collect()
        });
        let locks = held
            .into_iter()
            .map(|(full, lease, token, waiters)| {
                let (scope, name) = full.split_once('/').unwrap_or(("", full.as_str()));
                let (owner, ttl_ms) = self.locks.read(|s| {
                    s.lease(lease)
                        .map(|l| (l.owner.clone(), l.ttl_ms))
                        .unwrap_or_default()
                });
                trestle_proto::admin::HeldLock {
                    scope: scope.to_string(),
                    name: name.to_string(),
                    lease,
                    owner,
                    token,
                    ttl_ms,
                    remaining_ms: self
                        .locks
                        .remaining(lease, since.unwrap_or_default())
                        .map_or(0, |d| d.as_millis() as u64),
                    waiters,
                }
            })
            .collect();
        Ok(Response::new(trestle_proto::admin::LocksResponse {
            locks,
            meta_leader: since.is_some(),
        }))
    }

    async fn split_range(
        &self,
        request: Request<trestle_proto::admin::SplitRangeRequest>,
    ) -> Result<Response<trestle_proto::admin::SplitRangeResponse>, Status> {
        self.secrets.require_admin(request.metadata())?;
        let req = request.into_inner();
        let to_status = |e: trestle_types::Error| crate::grpc_api::status_from_error(&e);
        let (range, key) = match &req.partition_key {
            Some(pk) => {
                let account = match req.account.as_str() {
                    "" => self.default_account.as_str(),
                    a => a,
                };
                let local = self.tables.local();
                let range = local
                    .range_of_partition(account, &req.table, pk)
                    .await
                    .map_err(to_status)?;
                let table = local
                    .table_id(account, &req.table)
                    .await
                    .map_err(to_status)?;
                (
                    range.id,
                    crate::splits::SplitAt::Key(trestle_engine::keys::partition_prefix(table, pk)),
                )
            }
            None => (req.range_id, crate::splits::SplitAt::MiddleOfData),
        };
        let (left, right) = self
            .tables
            .split_range(range, key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(trestle_proto::admin::SplitRangeResponse {
            left: Some(crate::splits::descriptor_to_proto(&left)),
            right: Some(crate::splits::descriptor_to_proto(&right)),
        }))
    }

    async fn merge_range(
        &self,
        request: Request<trestle_proto::admin::MergeRangeRequest>,
    ) -> Result<Response<trestle_proto::admin::MergeRangeResponse>, Status> {
        self.secrets.require_admin(request.metadata())?;
        let req = request.into_inner();
        let merged = self
            .tables
            .merge_range(req.range_id, crate::merges::DEFAULT_MERGE_TIMEOUT)
            .await
            .map_err(|e| crate::grpc_api::status_from_error(&e))?;
        Ok(Response::new(trestle_proto::admin::MergeRangeResponse {
            merged: Some(crate::splits::descriptor_to_proto(&merged)),
        }))
    }

    async fn move_replica(
        &self,
        request: Request<trestle_proto::admin::MoveReplicaRequest>,
    ) -> Result<Response<trestle_proto::admin::MoveReplicaResponse>, Status> {
        self.secrets.require_admin(request.metadata())?;
        let req = request.into_inner();
        for n in [req.from_node_id, req.to_node_id] {
            if !self.is_member(n) {
                return Err(Status::invalid_argument(format!(
                    "node {n} is not a member"
                )));
            }
        }
        let desc = self
            .tables
            .move_replica(
                req.range_id,
                req.from_node_id,
                req.to_node_id,
                crate::moves::DEFAULT_MOVE_TIMEOUT,
            )
            .await
            .map_err(|e| crate::grpc_api::status_from_error(&e))?;
        let range = crate::ranges::RangeDesc::from_group(&desc)
            .map(|d| crate::splits::descriptor_to_proto(&d));
        Ok(Response::new(trestle_proto::admin::MoveReplicaResponse {
            range,
        }))
    }

    async fn decommission(
        &self,
        request: Request<trestle_proto::admin::DecommissionRequest>,
    ) -> Result<Response<trestle_proto::admin::DecommissionResponse>, Status> {
        self.secrets.require_admin(request.metadata())?;
        let request = request.into_inner();
        let node = request.node_id;
        if !self.is_member(node) {
            return Err(Status::invalid_argument(format!(
                "node {node} is not a member"
            )));
        }
        if request.cancel {
            self.tables
                .set_draining(node, false)
                .await
                .map_err(|e| crate::grpc_api::status_from_error(&e))?;
            return Ok(Response::new(trestle_proto::admin::DecommissionResponse {
                moves: Vec::new(),
            }));
        }
        let zones = self.tables.member_list().zones();
        let moves = self
            .tables
            .decommission(node, &zones)
            .await
            .map_err(|e| crate::grpc_api::status_from_error(&e))?;
        Ok(Response::new(trestle_proto::admin::DecommissionResponse {
            moves,
        }))
    }

    async fn drain(
        &self,
        request: Request<trestle_proto::admin::DrainRequest>,
    ) -> Result<Response<trestle_proto::admin::DrainResponse>, Status> {
        self.secrets.require_admin(request.metadata())?;
        let request = request.into_inner();
        if !self.is_member(request.node_id) {
            return Err(Status::invalid_argument(format!(
                "node {} is not a member",
                request.node_id
            )));
        }
        let done = if request.cancel {
            self.tables
                .set_leaders_drained(request.node_id, false)
                .await
        } else {
            self.tables
                .drain_leaders(request.node_id, crate::drain::DRAIN_TIMEOUT)
                .await
        };
        done.map_err(|e| crate::grpc_api::status_from_error(&e))?;
        Ok(Response::new(trestle_proto::admin::DrainResponse {}))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.secrets.require_peer(request.metadata())?;
        let node = request
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("the request names no node"))?;
        let node = crate::members::peer_from_info(&node);
        let new = self
            .tables
            .register_node(&node)
            .await
            .map_err(|e| crate::grpc_api::status_from_error(&e))?;
        tracing::info!(node = node.id, addr = %node.grpc_addr, new, "a node joined");
        Ok(Response::new(
            self.tables.member_list().to_response(&self.cluster_id),
        ))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        self.secrets.require_admin(request.metadata())?;
        let admin_token = request
            .metadata()
            .get(trestle_proto::auth::ADMIN_TOKEN)
            .cloned();
        let req = request.into_inner();
        if !self.is_member(req.to_node_id) {
            return Err(Status::invalid_argument(format!(
                "node {} is not a member",
                req.to_node_id
            )));
        }
        let leader = match self
            .raft
            .transfer_leader(req.range_id, req.to_node_id)
            .await
        {
            Ok(()) => return Ok(Response::new(TransferLeaderResponse {})),
            Err(ProposeError::NotLeader {
                leader: Some(leader),
            }) => leader,
            // This node holds no replica of the range (its replica moved away, or it joined after
            // the ranges were placed): the members' own reports say which node leads it.
            Err(e @ ProposeError::GroupNotFound(_)) if !crate::cluster::is_forwarded() => {
                match self.tables.leader_of_range(req.range_id).await {
                    Some(leader) => leader,
                    None => return Err(Status::failed_precondition(e.to_string())),
                }
            }
            Err(e) => return Err(Status::failed_precondition(e.to_string())),
        };
        match leader {
            // Only the leader can hand leadership over: ask it (once; a forwarded request is not
            // forwarded again).
            leader if leader != self.raft.id() && !crate::cluster::is_forwarded() => {
                let unreachable = |e: tonic::transport::Error| {
                    Status::unavailable(format!("reaching leader {leader}: {e}"))
                };
                let channel = self
                    .peer_tls
                    .endpoint(&self.addr_of(leader))
                    .map_err(unreachable)?
                    .connect()
                    .await
                    .map_err(unreachable)?;
                let mut client = AdminClient::new(channel);
                let mut forwarded = Request::new(req);
                forwarded.metadata_mut().insert(
                    crate::forward::FORWARDED_HEADER,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                trestle_proto::auth::insert(
                    &mut forwarded,
                    trestle_proto::auth::CLUSTER_TOKEN,
                    self.secrets.cluster_token(),
                );
                if let Some(token) = admin_token {
                    forwarded
                        .metadata_mut()
                        .insert(trestle_proto::auth::ADMIN_TOKEN, token);
                }
                client.transfer_leader(forwarded).await
            }
            leader => Err(Status::failed_precondition(
                ProposeError::NotLeader {
                    leader: Some(leader),
                }
                .to_string(),
            )),
        }
    }
}
