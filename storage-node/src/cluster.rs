//! `ClusterTableService`: the table service as every front end of a node sees it — any node accepts any
//! request.
//!
//! Each call first runs on this node ([`LocalTables`]), which serves it if this node's replica leads the
//! range involved. Otherwise the request is forwarded over gRPC to the node the replica names as leader;
//! the receiving node runs it locally only (a forwarded request is never forwarded again, so two nodes
//! with stale views cannot bounce a request between them). When this node knows no leader — an
//! election is under way, or this node is cut off from the others' Raft traffic — it asks the other nodes
//! in turn (one of them may lead, or know who does), with backoff, up to the node's request timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tonic::transport::Channel;
use trestle_rest_gateway::{Fencing, TableService};
use trestle_types::{
    AccessPolicy, BatchError, Entity, Error, ErrorCode, QueryPage, QuerySpec, Result, TableInfo,
    TableName, WriteOp, WriteOutcome,
};

use crate::forward::{self, Link};
use crate::grpc_auth::Secrets;
use crate::hooks::PeerFilter;
use crate::members::Members;
use crate::tables::LocalTables;

tokio::task_local! {
    /// Set while serving a request another node forwarded here: it must not be forwarded again.
    pub static FORWARDED: bool;
}

pub(crate) fn is_forwarded() -> bool {
    FORWARDED.try_with(|f| *f).unwrap_or(false)
}

pub struct ClusterTableService {
    node_id: u64,
    local: Arc<LocalTables>,
    /// Every member (id, gRPC address, zone), this node included.
    members: Arc<Members>,
    channels: std::sync::Mutex<HashMap<u64, Channel>>,
    /// What this node presents to its peers when it forwards.
    secrets: Secrets,
    tls: trestle_replication::grpc::PeerTls,
    timeout: Duration,
    /// Which peers this node may call now (tests cut links; see `hooks`).
    peer_filter: Option<Arc<dyn PeerFilter>>,
    /// Where requests for a partition this node holds no replica of were last served: the node to
    /// try first next time instead of searching (see [`ClusterTableService::route_for`]).
    served_by: std::sync::Mutex<HashMap<String, u64>>,
}

/// How many partitions [`ClusterTableService::route_for`] remembers before it starts afresh.
const SERVED_BY_LIMIT: usize = 65_536;

/// How many hops a request takes one after the other — to a leader another node named, or past a peer
/// that holds no replica of the key — before it backs off.
const QUICK_HOPS: usize = 3;

/// May a request be sent again after an attempt whose outcome is unknown?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and writes that are harmless to repeat (dropping a deleted table's data).
    Safe,
    /// Writes: only definite refusals (`NotLeader`) are retried; an unknown outcome is the answer.
    RefusalsOnly,
    /// Safe to repeat, but one attempt may rightly take long (a waiting lock acquire).
    SafeSlow,
}

impl Retry {
    /// Whether a remote attempt that failed with `e` may be retried.
    fn allows(self, e: &Error) -> bool {
        match e.code {
            ErrorCode::NotLeader | ErrorCode::RangeStale => true,
            ErrorCode::OperationTimedOut | ErrorCode::ServerBusy => self != Retry::RefusalsOnly,
            _ => false,
        }
    }
}

/// How long a repeatable forwarded request waits for a silent node before trying another.
const FORWARD_ATTEMPT: Duration = Duration::from_secs(3);

/// What to do after a local attempt failed with `NotLeader`.
enum Next {
    Forward(u64),
    Wait,
}

impl ClusterTableService {
    pub fn new(
        node_id: u64,
        local: Arc<LocalTables>,
        members: Arc<Members>,
        secrets: Secrets,
        tls: trestle_replication::grpc::PeerTls,
        timeout: Duration,
        peer_filter: Option<Arc<dyn PeerFilter>>,
    ) -> Self {
        ClusterTableService {
            node_id,
            local,
            members,
            channels: Default::default(),
            secrets,
            tls,
            timeout,
            peer_filter,
            served_by: Default::default(),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Every member's id, this node's included, in order.
    pub fn members(&self) -> Vec<u64> {
        self.members.ids()
    }

    /// The member list (addresses and zones), which grows as nodes join.
    pub fn member_list(&self) -> &Arc<Members> {
        &self.members
    }

    pub fn local(&self) -> &Arc<LocalTables> {
        &self.local
    }

    /// Drops the entities of every deleted table that still has them, on its range's leader wherever
    /// that is (the partition manager's chore). Returns how many tables were dropped.
    pub async fn reap_dropped_tables(&self) -> Result<usize> {
        let pending = self.local.undropped_tables().await?;
        for &table_id in &pending {
            let drop = self.route(
                Retry::Safe,
                || self.local.drop_table_data(table_id),
                |c| forward::drop_table_data(c, table_id),
            );
            FORWARDED.scope(false, drop).await?;
        }
        Ok(pending.len())
    }

    /// A human-readable description of a range's span, for status output.
    pub fn describe_range(&self, range: u64) -> String {
        self.local.describe_range(range)
    }

    /// The range that holds `table` of `account`.
    pub async fn range_of_table(&self, account: &str, table: &str) -> Result<u64> {
        self.local.range_of_table(account, table).await
    }

    /// The link to peer `node`. A link a test has cut (see `hooks`) is refused like an unreachable
    /// node: `NotLeader` with no leader known, the request never sent.
    pub(crate) fn link(&self, node: u64) -> Result<Link> {
        if let Some(filter) = &self.peer_filter
            && !filter.allows(self.node_id, node)
        {
            return Err(crate::tables::not_leader(0, None));
        }
        Ok(Link {
            channel: self.channel(node)?,
            secrets: self.secrets.clone(),
        })
    }

    fn channel(&self, node: u64) -> Result<Channel> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| Error::internal("channel cache poisoned"))?;
        if let Some(c) = channels.get(&node) {
            return Ok(c.clone());
        }
        let addr = self
            .members
            .get(node)
            .map(|p| p.grpc_addr)
            .ok_or_else(|| Error::internal(format!("no address for node {node}")))?;
        let channel = self
            .tls
            .endpoint(&addr)
            .map_err(|e| Error::internal(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(node, channel.clone());
        Ok(channel)
    }

    fn next_step(&self, err: &Error) -> Option<Next> {
        if err.code != ErrorCode::NotLeader {
            return None;
        }
        match crate::tables::leader_hint(err) {
            Some(leader) if leader != self.node_id && self.members.contains(leader) => {
                Some(Next::Forward(leader))
            }
            _ => Some(Next::Wait),
        }
    }

    /// The node that served `place` last, if any.
    fn served_last(&self, place: Option<&str>) -> Option<u64> {
        let map = self.served_by.lock().ok()?;
        map.get(place?).copied().filter(|&n| n != self.node_id)
    }

    /// Records that `node` served `place` (`None`: the node remembered for it did not).
    fn remember_server(&self, place: Option<&str>, node: Option<u64>) {
        let (Some(place), Ok(mut map)) = (place, self.served_by.lock()) else {
            return;
        };
        match node {
            Some(node) => {
                if map.len() >= SERVED_BY_LIMIT && !map.contains_key(place) {
                    map.clear();
                }
                map.insert(place.to_string(), node);
            }
            None => {
                map.remove(place);
            }
        }
    }

    /// Another node to ask when this one knows no leader (it may be cut off from the others' Raft
    /// traffic while they have long elected one): the peers in turn.
    pub(crate) fn next_peer(&self, attempt: usize) -> Option<u64> {
        let others: Vec<u64> = self
            .members
            .ids()
            .into_iter()
            .filter(|&id| id != self.node_id)
            .collect();
        (!others.is_empty()).then(|| others[attempt % others.len()])
    }

    /// One forwarded attempt, bounded: a node that is paused or cut off keeps its connection open and
    /// never answers. A repeatable request gives it [`FORWARD_ATTEMPT`] before trying elsewhere; a write
    /// waits until the deadline. Silence is an unknown outcome (`OperationTimedOut`).
    async fn attempt<T>(
        &self,
        retry: Retry,
        deadline: Instant,
        node: u64,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = match retry {
            Retry::Safe => remaining.min(FORWARD_ATTEMPT),
            Retry::RefusalsOnly | Retry::SafeSlow => remaining,
        };
        match tokio::time::timeout(budget, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorCode::OperationTimedOut,
                format!(
                    "The operation may or may not have completed: node {node} did not answer within \
                     {budget:?}."
                ),
            )),
        }
    }

    /// One attempt on `node` through `remote`, unless the link to it is cut.
    async fn forward<T, R, RF>(
        &self,
        retry: Retry,
        deadline: Instant,
        node: u64,
        remote: &mut R,
    ) -> Result<T>
    where
        R: FnMut(Link) -> RF,
        RF: std::future::Future<Output = Result<T>>,
    {
        let link = self.link(node)?;
        self.attempt(retry, deadline, node, remote(link)).await
    }

    /// Runs `local` here; on `NotLeader`, forwards with `remote` or waits for an election, until the
    /// deadline. Forwarded requests only ever run locally. A remote attempt that failed with an unknown
    /// outcome (the leader died mid-call) is retried when `retry` allows it and otherwise returned as
    /// `OperationTimedOut`; when the deadline passes with nothing but refusals and unreachable leaders,
    /// the answer is `ServerBusy` (503: nothing was applied, the client may retry).
    pub(crate) async fn route<T, L, LF, R, RF>(
        &self,
        retry: Retry,
        local: L,
        remote: R,
    ) -> Result<T>
    where
        L: FnMut() -> LF,
        LF: std::future::Future<Output = Result<T>>,
        R: FnMut(Link) -> RF,
        RF: std::future::Future<Output = Result<T>>,
    {
        self.route_for(None, retry, local, remote).await
    }

    /// [`ClusterTableService::route`] for a request about one `place` (a partition, or where a query
    /// starts): when this node holds no replica of it, the node that served `place` last is tried
    /// first, so only the first request after a leader change searches for the leader.
    pub(crate) async fn route_for<T, L, LF, R, RF>(
        &self,
        place: Option<String>,
        retry: Retry,
        mut local: L,
        mut remote: R,
    ) -> Result<T>
    where
        L: FnMut() -> LF,
        LF: std::future::Future<Output = Result<T>>,
        R: FnMut(Link) -> RF,
        RF: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(10);
        let mut attempt = 0usize;
        let mut quick = 0usize;
        let mut hint = None;
        loop {
            let err = match local().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if is_forwarded() {
                return Err(err);
            }
            let node = match self.next_step(&err) {
                // The range split under the request: nothing was applied; run it again here once
                // this node's view has caught up.
                None if err.code == ErrorCode::RangeStale => None,
                None => return Err(err),
                Some(Next::Forward(node)) => Some(node),
                // A node asked before named the leader: go there; else where `place` was served
                // last; else the peers in turn.
                Some(Next::Wait) => hint
                    .take()
                    .or_else(|| self.served_last(place.as_deref()))
                    .or_else(|| self.next_peer(attempt)),
            };
            let result = match node {
                Some(node) => match self.forward(retry, deadline, node, &mut remote).await {
                    Ok(v) => {
                        self.remember_server(place.as_deref(), Some(node));
                        return Ok(v);
                    }
                    Err(e) if retry.allows(&e) => {
                        self.remember_server(place.as_deref(), None);
                        hint = match self.next_step(&e) {
                            Some(Next::Forward(leader)) if leader != node => Some(leader),
                            _ => None,
                        };
                        e
                    }
                    Err(e) => return Err(e),
                },
                None => err,
            };
            attempt += 1;
            // A named leader, or the next peer after one without a replica of the key, is worth
            // asking at once (a few hops) rather than after a backoff.
            if quick < QUICK_HOPS
                && node.is_some()
                && (hint.is_some() || crate::tables::is_no_replica(&result))
            {
                quick += 1;
                continue;
            }
            quick = 0;
            if Instant::now() + backoff > deadline {
                return Err(if retry.allows(&result) {
                    Error::new(
                        ErrorCode::ServerBusy,
                        "No leader was reachable for the range in time; nothing was applied.",
                    )
                } else {
                    result
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }
}

/// A node without a meta replica looks tables up on the nodes that have one.
#[async_trait]
impl crate::tables::RemoteCatalog for ClusterTableService {
    async fn get_table(&self, account: &str, table: &str) -> Result<TableInfo> {
        let not_here = || async {
            Err(crate::tables::not_leader(
                crate::ranges::META_RANGE_ID,
                None,
            ))
        };
        FORWARDED
            .scope(
                false,
                self.route(Retry::Safe, not_here, |c| {
                    forward::get_table(c, account, table)
                }),
            )
            .await
    }
}

#[async_trait]
impl TableService for ClusterTableService {
    async fn create_table(&self, account: &str, table: &TableName) -> Result<TableInfo> {
        self.route(
            Retry::RefusalsOnly,
            || self.local.create_table(account, table),
            |c| forward::create_table(c, account, table),
        )
        .await
    }

    /// The catalog delete on the meta leader, then the drop of the entities on the data range's leader;
    /// acknowledged only after both, so that no node's cached table id can serve the deleted table
    /// afterwards (see `tables`). The drop is a step of its own: even a forwarded Delete Table may
    /// forward it (once) to the range's leader.
    async fn delete_table(&self, account: &str, table: &str) -> Result<()> {
        let table_id = self
            .route(
                Retry::RefusalsOnly,
                || self.local.uncatalog_table(account, table),
                |c| forward::uncatalog_table(c, account, table),
            )
            .await?;
        let drop = self.route(
            Retry::Safe,
            || self.local.drop_table_data(table_id),
            |c| forward::drop_table_data(c, table_id),
        );
        FORWARDED.scope(false, drop).await
    }

    async fn get_table(&self, account: &str, table: &str) -> Result<TableInfo> {
        self.route(
            Retry::Safe,
            || self.local.get_table(account, table),
            |c| forward::get_table(c, account, table),
        )
        .await
    }

    async fn list_tables(
        &self,
        account: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TableInfo>, Option<String>)> {
        self.route(
            Retry::Safe,
            || self.local.list_tables(account, start, limit),
            |c| forward::list_tables(c, account, start, limit),
        )
        .await
    }

    async fn set_table_acl(
        &self,
        account: &str,
        table: &str,
        policies: Vec<AccessPolicy>,
    ) -> Result<()> {
        self.route(
            Retry::RefusalsOnly,
            || self.local.set_table_acl(account, table, policies.clone()),
            |c| forward::set_table_acl(c, account, table, &policies),
        )
        .await
    }

    async fn write(
        &self,
        account: &str,
        table: &str,
        op: WriteOp,
        fencing: Option<Fencing>,
    ) -> Result<WriteOutcome> {
        self.route_for(
            Some(place(account, table, &op.entity.partition_key)),
            Retry::RefusalsOnly,
            || {
                self.local
                    .write(account, table, op.clone(), fencing.clone())
            },
            |c| forward::write(c, account, table, op.clone(), fencing.clone()),
        )
        .await
    }

    async fn batch(
        &self,
        account: &str,
        table: &str,
        ops: Vec<WriteOp>,
        fencing: Option<Fencing>,
    ) -> Result<Vec<WriteOutcome>, BatchError> {
        // A batch failure with an operation index is final; only whole-batch NotLeader is retried.
        let pk = ops
            .first()
            .map_or("", |op| op.entity.partition_key.as_str());
        let attempt = self
            .route_for(
                Some(place(account, table, pk)),
                Retry::RefusalsOnly,
                || async {
                    match self
                        .local
                        .batch(account, table, ops.clone(), fencing.clone())
                        .await
                    {
                        Ok(v) => Ok(Ok(v)),
                        Err(BatchError { index: None, error })
                            if matches!(
                                error.code,
                                ErrorCode::NotLeader | ErrorCode::RangeStale
                            ) =>
                        {
                            Err(error)
                        }
                        Err(e) => Ok(Err(e)),
                    }
                },
                |c| forward::batch(c, account, table, ops.clone(), fencing.clone()),
            )
            .await;
        match attempt {
            Ok(result) => result,
            Err(error) => Err(BatchError { index: None, error }),
        }
    }

    async fn get_entity(
        &self,
        account: &str,
        table: &str,
        partition_key: &str,
        row_key: &str,
    ) -> Result<Entity> {
        self.route_for(
            Some(place(account, table, partition_key)),
            Retry::Safe,
            || {
                self.local
                    .get_entity(account, table, partition_key, row_key)
            },
            |c| forward::get_entity(c, account, table, partition_key, row_key),
        )
        .await
    }

    async fn query(&self, account: &str, table: &str, spec: QuerySpec) -> Result<QueryPage> {
        let from = spec
            .continuation
            .as_ref()
            .map_or("", |c| c.partition_key.as_str());
        self.route_for(
            Some(place(account, table, from)),
            Retry::Safe,
            || self.local.query(account, table, spec.clone()),
            |c| forward::query(c, account, table, &spec),
        )
        .await
    }

    async fn get_service_properties(&self, account: &str) -> Result<Option<String>> {
        self.local.get_service_properties(account).await
    }

    async fn set_service_properties(&self, account: &str, xml: String) -> Result<()> {
        self.route(
            Retry::RefusalsOnly,
            || self.local.set_service_properties(account, xml.clone()),
            |c| forward::set_service_properties(c, account, &xml),
        )
        .await
    }
}

/// The routing cache's key of one partition of one table (see [`ClusterTableService::route_for`]).
fn place(account: &str, table: &str, partition_key: &str) -> String {
    format!("{account}\u{0}{table}\u{0}{partition_key}")
}
