//! Forwarding: the client side of a request one node hands to the leader on another node, and the
//! `NodeForward` service for the calls the public table API has no RPC for.
//!
//! Forwarded requests carry the `x-trestle-forwarded` metadata entry; the receiving node serves them
//! locally or fails with `NotLeader`, never forwarding again (see `cluster`). They also carry the
//! cluster token and, for account-scoped calls, the principal: the account this node authenticated at
//! its edge (see `grpc_auth`). `NodeForward` serves only callers with the cluster token, and an
//! account-scoped call only for the account its principal names.

use std::sync::Arc;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use trestle_proto::node as npb;
use trestle_proto::node::node_forward_client::NodeForwardClient;
use trestle_proto::node::node_forward_server::{NodeForward, NodeForwardServer};
use trestle_proto::table as pb;
use trestle_proto::table::table_service_client::TableServiceClient;
use trestle_rest_gateway::Fencing;
use trestle_types::{
    AccessPolicy, BatchError, DateTime, ETag, Entity, EntityKey, Error, ErrorCode, QueryPage,
    QuerySpec, Result, TableInfo, TableName, WriteKind, WriteOp, WriteOutcome,
};

use crate::grpc_auth::Secrets;
use crate::ranges::RangeDesc;
use crate::splits::{SplitAt, descriptor_from_proto, descriptor_to_proto};
use crate::tables::LocalTables;

/// Metadata entry marking a request that another node forwarded.
pub const FORWARDED_HEADER: &str = "x-trestle-forwarded";

/// A connection to a peer node and the credential this node presents on it.
#[derive(Clone)]
pub struct Link {
    pub channel: Channel,
    pub secrets: Secrets,
}

impl Link {
    /// `msg` as a forwarded request (see `cluster`) with the cluster token and, when the call acts in an
    /// account, the principal this node authenticated.
    pub(crate) fn request<T>(&self, msg: T, principal: Option<&str>) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
        trestle_proto::auth::insert(
            &mut r,
            trestle_proto::auth::CLUSTER_TOKEN,
            self.secrets.cluster_token(),
        );
        if let Some(p) = principal {
            trestle_proto::auth::insert(&mut r, trestle_proto::auth::PRINCIPAL, p);
        }
        r
    }

    fn tables(&self) -> TableServiceClient<Channel> {
        TableServiceClient::new(self.channel.clone())
            .max_decoding_message_size(crate::grpc_api::MAX_REQUEST_MESSAGE_BYTES)
    }

    fn node(&self) -> NodeForwardClient<Channel> {
        NodeForwardClient::new(self.channel.clone())
    }
}

/// True when tonic could not connect at all: the request never left this node.
fn is_connect_error(s: &Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Rebuilds the domain error a remote node answered with.
///
/// - A node that cannot be reached at all is reported as `NotLeader` with no known leader: the request
///   was never sent, so routing may wait for the next election and retry it.
/// - A status without `x-trestle-error-code` did not come from a Trestle node's answer: the connection
///   failed after the request may have been sent (the leader died or restarted mid-call). Its outcome
///   is unknown, so it is `OperationTimedOut`, Azure's code for "may or may not have been applied";
///   routing retries reads on it and hands it back for writes (see `cluster`).
pub fn error_from_status(s: &Status) -> Error {
    if is_connect_error(s) {
        return crate::tables::not_leader(0, None);
    }
    let answered = s
        .metadata()
        .get(crate::grpc_api::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::parse);
    if let Some(code) = answered {
        return Error::new(code, s.message());
    }
    match s.code() {
        tonic::Code::InvalidArgument => Error::new(ErrorCode::InvalidInput, s.message()),
        tonic::Code::ResourceExhausted => Error::new(ErrorCode::RequestBodyTooLarge, s.message()),
        tonic::Code::Unimplemented => Error::new(ErrorCode::NotImplemented, s.message()),
        _ => Error::new(
            ErrorCode::OperationTimedOut,
            format!(
                "The operation may or may not have completed: the node leading the range stopped \
                 answering ({}).",
                s.message()
            ),
        ),
    }
}

fn failed_index(s: &Status) -> Option<usize> {
    s.metadata()
        .get("x-trestle-failed-index")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn table_info(t: Option<pb::TableInfo>) -> Result<TableInfo> {
    let t = t.ok_or_else(|| Error::internal("forwarded response without a table"))?;
    Ok(TableInfo {
        name: t.name,
        id: t.id,
        policies: Vec::new(),
    })
}

fn write_kind(k: WriteKind) -> pb::WriteKind {
    match k {
        WriteKind::Insert => pb::WriteKind::Insert,
        WriteKind::Replace => pb::WriteKind::Replace,
        WriteKind::Merge => pb::WriteKind::Merge,
        WriteKind::InsertOrReplace => pb::WriteKind::InsertOrReplace,
        WriteKind::InsertOrMerge => pb::WriteKind::InsertOrMerge,
        WriteKind::Delete => pb::WriteKind::Delete,
    }
}

fn write_op(op: &WriteOp) -> pb::WriteOp {
    pb::WriteOp {
        kind: write_kind(op.kind) as i32,
        entity: Some(pb::Entity::from(&op.entity)),
        if_match: trestle_proto::convert::if_match_to_proto(op.if_match),
    }
}

fn fencing(f: Option<Fencing>) -> Option<pb::Fencing> {
    f.map(|f| pb::Fencing {
        lock: f.lock,
        token: f.token,
    })
}

fn outcome(r: pb::WriteResponse) -> Result<WriteOutcome> {
    Ok(WriteOutcome {
        etag: r.etag_ticks.map(|t| ETag(DateTime(t))),
        entity: r.entity.map(Entity::try_from).transpose()?,
    })
}

pub async fn create_table(c: Link, account: &str, table: &TableName) -> Result<TableInfo> {
    let req = pb::CreateTableRequest {
        account: account.into(),
        table: table.as_str().into(),
    };
    let resp = c
        .tables()
        .create_table(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?;
    table_info(resp.into_inner().table)
}

pub async fn uncatalog_table(c: Link, account: &str, table: &str) -> Result<u64> {
    let req = npb::UncatalogTableRequest {
        account: account.into(),
        table: table.into(),
    };
    let resp = c
        .node()
        .uncatalog_table(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?;
    Ok(resp.into_inner().table_id)
}

pub async fn drop_table_data(c: Link, table_id: u64) -> Result<()> {
    c.node()
        .drop_table_data(c.request(npb::DropTableDataRequest { table_id }, None))
        .await
        .map_err(|s| error_from_status(&s))?;
    Ok(())
}

pub async fn register_node(c: Link, node: trestle_proto::internal::RegisterNode) -> Result<bool> {
    let node = crate::members::info_from_peer(&crate::members::peer_from_register(&node));
    let resp = c
        .node()
        .register_node(c.request(npb::RegisterNodeRequest { node: Some(node) }, None))
        .await
        .map_err(|s| error_from_status(&s))?;
    Ok(resp.into_inner().new)
}

pub async fn allocate_range_id(c: Link) -> Result<u64> {
    let resp = c
        .node()
        .allocate_range_id(c.request(npb::AllocateRangeIdRequest {}, None))
        .await
        .map_err(|s| error_from_status(&s))?;
    Ok(resp.into_inner().range_id)
}

pub async fn split_range(
    c: Link,
    range: u64,
    at: &SplitAt,
    new_range_id: u64,
) -> Result<(RangeDesc, RangeDesc)> {
    let req = npb::SplitRangeRequest {
        range_id: range,
        key: match at {
            SplitAt::Key(k) => Some(k.clone()),
            _ => None,
        },
        new_range_id,
        version: None,
        by_load: *at == SplitAt::MiddleOfLoad,
    };
    let resp = c
        .node()
        .split_range(c.request(req, None))
        .await
        .map_err(|s| error_from_status(&s))?
        .into_inner();
    match (resp.left, resp.right) {
        (Some(l), Some(r)) => Ok((descriptor_from_proto(&l), descriptor_from_proto(&r))),
        _ => Err(Error::internal("a split answer without both halves")),
    }
}

pub async fn list_tables(
    c: Link,
    account: &str,
    start: Option<&str>,
    limit: usize,
) -> Result<(Vec<TableInfo>, Option<String>)> {
    let req = pb::ListTablesRequest {
        account: account.into(),
        start_after: start.unwrap_or_default().into(),
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
    };
    let resp = c
        .tables()
        .list_tables(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?;
    let resp = resp.into_inner();
    let tables = resp
        .tables
        .into_iter()
        .map(|t| TableInfo {
            name: t.name,
            id: t.id,
            policies: Vec::new(),
        })
        .collect();
    Ok((tables, resp.next_table))
}

pub async fn write(
    c: Link,
    account: &str,
    table: &str,
    op: WriteOp,
    fence: Option<Fencing>,
) -> Result<WriteOutcome> {
    let req = pb::WriteRequest {
        account: account.into(),
        table: table.into(),
        op: Some(write_op(&op)),
        fencing: fencing(fence),
    };
    let resp = c
        .tables()
        .write(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?;
    outcome(resp.into_inner())
}

/// The outer error is a whole-request failure (retryable `NotLeader`, transport); the inner one is the
/// batch's own result.
pub async fn batch(
    c: Link,
    account: &str,
    table: &str,
    ops: Vec<WriteOp>,
    fence: Option<Fencing>,
) -> Result<Result<Vec<WriteOutcome>, BatchError>> {
    let req = pb::BatchRequest {
        account: account.into(),
        table: table.into(),
        ops: ops.iter().map(write_op).collect(),
        fencing: fencing(fence),
    };
    match c.tables().batch(c.request(req, Some(account))).await {
        Ok(resp) => {
            let results: Result<Vec<WriteOutcome>> =
                resp.into_inner().results.into_iter().map(outcome).collect();
            Ok(results.map_err(|error| BatchError { index: None, error }))
        }
        Err(s) => {
            let error = error_from_status(&s);
            let index = failed_index(&s);
            if error.code == ErrorCode::NotLeader && index.is_none() {
                Err(error)
            } else {
                Ok(Err(BatchError { index, error }))
            }
        }
    }
}

pub async fn get_entity(
    c: Link,
    account: &str,
    table: &str,
    partition_key: &str,
    row_key: &str,
) -> Result<Entity> {
    let req = pb::GetRequest {
        account: account.into(),
        table: table.into(),
        partition_key: partition_key.into(),
        row_key: row_key.into(),
        select: Vec::new(),
    };
    let resp = c
        .tables()
        .get(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?;
    let entity = resp
        .into_inner()
        .entity
        .ok_or_else(|| Error::internal("forwarded get without an entity"))?;
    Entity::try_from(entity)
}

/// One page of a query, from the node that leads the range the page starts in. The remote answers a
/// forwarded query with that one page and its continuation (see `grpc_api`), never running on into the
/// next range, which another node may lead.
pub async fn query(c: Link, account: &str, table: &str, spec: &QuerySpec) -> Result<QueryPage> {
    let top = spec.top.unwrap_or(trestle_types::limits::MAX_PAGE_ENTITIES) as u32;
    let req = pb::QueryRequest {
        account: account.into(),
        table: table.into(),
        filter: spec
            .filter
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_default(),
        select: spec.select.clone().unwrap_or_default(),
        continuation: spec.continuation.as_ref().map(|k| pb::Continuation {
            next_partition_key: k.partition_key.clone(),
            next_row_key: k.row_key.clone(),
        }),
        limit: top,
        page_size: top,
    };
    let mut stream = c
        .tables()
        .query(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?
        .into_inner();
    let mut page = QueryPage::default();
    while let Some(msg) = stream.message().await.map_err(|s| error_from_status(&s))? {
        for e in msg.entities {
            page.entities.push(Entity::try_from(e)?);
        }
        page.next = msg
            .continuation
            .map(|c| EntityKey::new(c.next_partition_key, c.next_row_key));
    }
    Ok(page)
}

fn policy_to_proto(p: &AccessPolicy) -> npb::AccessPolicy {
    npb::AccessPolicy {
        id: p.id.clone(),
        start_ticks: p.start.map(DateTime::ticks),
        expiry_ticks: p.expiry.map(DateTime::ticks),
        permission: p.permission.clone(),
    }
}

fn policy_from_proto(p: npb::AccessPolicy) -> AccessPolicy {
    AccessPolicy {
        id: p.id,
        start: p.start_ticks.map(DateTime),
        expiry: p.expiry_ticks.map(DateTime),
        permission: p.permission,
    }
}

pub async fn get_table(c: Link, account: &str, table: &str) -> Result<TableInfo> {
    let req = npb::GetTableRequest {
        account: account.into(),
        table: table.into(),
    };
    let resp = c
        .node()
        .get_table(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?;
    let t = resp.into_inner();
    Ok(TableInfo {
        name: t.name,
        id: t.id,
        policies: t.policies.into_iter().map(policy_from_proto).collect(),
    })
}

pub async fn set_table_acl(
    c: Link,
    account: &str,
    table: &str,
    policies: &[AccessPolicy],
) -> Result<()> {
    let req = npb::SetTableAclRequest {
        account: account.into(),
        table: table.into(),
        policies: policies.iter().map(policy_to_proto).collect(),
    };
    c.node()
        .set_table_acl(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?;
    Ok(())
}

pub async fn set_service_properties(c: Link, account: &str, xml: &str) -> Result<()> {
    let req = npb::SetServicePropertiesRequest {
        account: account.into(),
        xml: xml.into(),
    };
    c.node()
        .set_service_properties(c.request(req, Some(account)))
        .await
        .map_err(|s| error_from_status(&s))?;
    Ok(())
}

/// Serves the forwarded node-to-node calls, always locally, to peer nodes only.
pub struct NodeForwardService {
    pub(crate) local: Arc<LocalTables>,
    secrets: Secrets,
}

impl NodeForwardService {
    pub fn server(
        local: Arc<LocalTables>,
        secrets: Secrets,
    ) -> NodeForwardServer<NodeForwardService> {
        NodeForwardServer::new(NodeForwardService { local, secrets })
    }

    /// A peer's call that acts in `account`: the cluster token, and the principal must be `account`.
    fn for_account(&self, md: &MetadataMap, account: &str) -> Result<(), Status> {
        self.secrets.require_peer(md)?;
        let principal = md
            .get(trestle_proto::auth::PRINCIPAL)
            .and_then(|v| v.to_str().ok());
        if principal == Some(account) {
            Ok(())
        } else {
            Err(to_status(Error::new(
                ErrorCode::AuthorizationFailure,
                format!(
                    "A forwarded call for account {account} must carry that account as its \
                     authenticated principal."
                ),
            )))
        }
    }
}

fn to_status(e: Error) -> Status {
    crate::grpc_api::status_from_error(&e)
}

#[tonic::async_trait]
impl NodeForward for NodeForwardService {
    async fn get_table(
        &self,
        r: Request<npb::GetTableRequest>,
    ) -> Result<Response<npb::GetTableResponse>, Status> {
        self.for_account(r.metadata(), &r.get_ref().account)?;
        let r = r.into_inner();
        let t = self
            .local
            .get_table(&r.account, &r.table)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::GetTableResponse {
            name: t.name,
            id: t.id,
            policies: t.policies.iter().map(policy_to_proto).collect(),
        }))
    }

    async fn set_table_acl(
        &self,
        r: Request<npb::SetTableAclRequest>,
    ) -> Result<Response<npb::SetTableAclResponse>, Status> {
        self.for_account(r.metadata(), &r.get_ref().account)?;
        let r = r.into_inner();
        let policies = r.policies.into_iter().map(policy_from_proto).collect();
        self.local
            .set_table_acl(&r.account, &r.table, policies)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::SetTableAclResponse {}))
    }

    async fn uncatalog_table(
        &self,
        r: Request<npb::UncatalogTableRequest>,
    ) -> Result<Response<npb::UncatalogTableResponse>, Status> {
        self.for_account(r.metadata(), &r.get_ref().account)?;
        let r = r.into_inner();
        let table_id = self
            .local
            .uncatalog_table(&r.account, &r.table)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::UncatalogTableResponse { table_id }))
    }

    async fn drop_table_data(
        &self,
        r: Request<npb::DropTableDataRequest>,
    ) -> Result<Response<npb::DropTableDataResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        self.local
            .drop_table_data(r.into_inner().table_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::DropTableDataResponse {}))
    }

    async fn transfer_leader(
        &self,
        r: Request<npb::TransferLeaderRequest>,
    ) -> Result<Response<npb::TransferLeaderResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        let r = r.into_inner();
        self.local
            .transfer_leader(r.range_id, r.to_node_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::TransferLeaderResponse {}))
    }

    async fn register_node(
        &self,
        r: Request<npb::RegisterNodeRequest>,
    ) -> Result<Response<npb::RegisterNodeResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        let node = r
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("the request names no node"))?;
        let node = crate::members::register_from_peer(&crate::members::peer_from_info(&node));
        let new = self.local.register_node(node).await.map_err(to_status)?;
        Ok(Response::new(npb::RegisterNodeResponse { new }))
    }

    async fn allocate_range_id(
        &self,
        r: Request<npb::AllocateRangeIdRequest>,
    ) -> Result<Response<npb::AllocateRangeIdResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        let range_id = self.local.allocate_range_id().await.map_err(to_status)?;
        Ok(Response::new(npb::AllocateRangeIdResponse { range_id }))
    }

    async fn split_range(
        &self,
        r: Request<npb::SplitRangeRequest>,
    ) -> Result<Response<npb::SplitRangeResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        let r = r.into_inner();
        let at = match (r.key, r.by_load) {
            (Some(key), _) => SplitAt::Key(key),
            (None, false) => SplitAt::MiddleOfData,
            (None, true) => SplitAt::MiddleOfLoad,
        };
        let (left, right) = self
            .local
            .split_range(r.range_id, &at, r.new_range_id, r.version)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::SplitRangeResponse {
            left: Some(descriptor_to_proto(&left)),
            right: Some(descriptor_to_proto(&right)),
        }))
    }

    async fn merge_step(
        &self,
        r: Request<npb::MergeStepRequest>,
    ) -> Result<Response<npb::MergeStepResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        let r = r.into_inner();
        let step = crate::merges::step_from_request(&r).map_err(to_status)?;
        let (desc, prepare_index) = self
            .local
            .merge_step(r.range_id, step)
            .await
            .map_err(to_status)?;
        let range = RangeDesc::from_group(&desc)
            .ok_or_else(|| Status::internal("a merge step answered without a span"))?;
        Ok(Response::new(npb::MergeStepResponse {
            range: Some(descriptor_to_proto(&range)),
            prepare_index,
        }))
    }

    async fn move_replica(
        &self,
        r: Request<npb::MoveReplicaRequest>,
    ) -> Result<Response<npb::MoveReplicaResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        let r = r.into_inner();
        let timeout = std::time::Duration::from_millis(r.timeout_ms.clamp(1_000, 600_000));
        let desc = self
            .local
            .move_replica(
                r.range_id,
                r.from_node_id,
                r.to_node_id,
                std::time::Instant::now() + timeout,
            )
            .await
            .map_err(to_status)?;
        let range = RangeDesc::from_group(&desc).map(|d| descriptor_to_proto(&d));
        let range = range.or_else(|| {
            // The meta group has no data span: report its membership alone.
            Some(trestle_proto::admin::RangeDescriptor {
                id: desc.id,
                voters: desc.voters.clone(),
                learners: desc.learners.clone(),
                voters_outgoing: desc.voters_outgoing.clone(),
                version: desc.epoch.version,
                conf_ver: desc.epoch.conf_ver,
                ..Default::default()
            })
        });
        Ok(Response::new(npb::MoveReplicaResponse { range }))
    }

    async fn destroy_replica(
        &self,
        r: Request<npb::DestroyReplicaRequest>,
    ) -> Result<Response<npb::DestroyReplicaResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        let r = r.into_inner();
        let destroyed = self
            .local
            .raft()
            .destroy_replica(r.range_id, r.removed_at)
            .await
            .map_err(|e| to_status(Error::internal(e.to_string())))?;
        Ok(Response::new(npb::DestroyReplicaResponse { destroyed }))
    }

    async fn set_draining(
        &self,
        r: Request<npb::SetDrainingRequest>,
    ) -> Result<Response<npb::SetDrainingResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        self.local
            .set_draining(r.into_inner().draining)
            .map_err(to_status)?;
        Ok(Response::new(npb::SetDrainingResponse {}))
    }

    async fn set_leaders_drained(
        &self,
        r: Request<npb::SetLeadersDrainedRequest>,
    ) -> Result<Response<npb::SetLeadersDrainedResponse>, Status> {
        self.secrets.require_peer(r.metadata())?;
        self.local
            .set_leaders_drained(r.into_inner().drained)
            .map_err(to_status)?;
        Ok(Response::new(npb::SetLeadersDrainedResponse {}))
    }

    async fn set_service_properties(
        &self,
        r: Request<npb::SetServicePropertiesRequest>,
    ) -> Result<Response<npb::SetServicePropertiesResponse>, Status> {
        self.for_account(r.metadata(), &r.get_ref().account)?;
        let r = r.into_inner();
        self.local
            .set_service_properties(&r.account, r.xml)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::SetServicePropertiesResponse {}))
    }
}
