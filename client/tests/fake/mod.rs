//! A fake Trestle node for the SDK's tests: the generated `TableService` (and optionally `Admin`) served
//! on a real 127.0.0.1 socket, with scripted misbehaviour — answer `NotLeader` naming another node,
//! refuse with `ServerBusy`, hang, fail like a dying proxy, break a query stream mid-way.
//!
//! Errors are built the way the storage node's `grpc_api` builds them (gRPC code by Azure's HTTP
//! status, the code name in `x-trestle-error-code`, the failed index and the leader in their metadata).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use trestle_client::{ERROR_CODE_HEADER, ErrorCode, FAILED_INDEX_HEADER, LEADER_HEADER};
use trestle_proto::admin as apb;
use trestle_proto::admin::admin_server::{Admin, AdminServer};
use trestle_proto::table as pb;
use trestle_proto::table::table_service_server::{TableService, TableServiceServer};

/// How the fake node answers entity calls.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Serves from its in-memory store.
    Leader,
    /// Refuses every call with `NotLeader`, naming this address (`host:port`) if given.
    Follower(Option<String>),
    /// Never answers writes or reads.
    Hang,
    /// Fails writes and reads with a bare UNAVAILABLE, as a proxy in front of a dead node would.
    Proxy,
}

/// What a test can see of and script on a running fake node.
#[derive(Default)]
pub struct State {
    /// Entity calls (write, batch, get, query) received.
    pub calls: AtomicUsize,
    /// Refuse this many more calls with `ServerBusy` before serving.
    pub busy: AtomicUsize,
    /// Break the next query stream after its first message.
    pub break_next_query: AtomicBool,
    pub store: Mutex<BTreeMap<(String, String), pb::Entity>>,
    clock: AtomicI64,
}

impl State {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn len(&self) -> usize {
        self.store.lock().unwrap().len()
    }
}

/// A running fake node.
pub struct FakeNode {
    /// `host:port`, as the cluster names nodes.
    pub addr: String,
    pub state: Arc<State>,
}

impl FakeNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts a fake node; with `locate`, it also serves `Admin.Locate`, answering with that leader address.
pub async fn start(mode: Mode, locate: Option<String>) -> FakeNode {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let state = Arc::new(State::default());
    let service = Service {
        mode,
        state: state.clone(),
    };
    let admin = locate.map(|leader| AdminServer::new(FakeAdmin { leader }));
    let router = tonic::transport::Server::builder()
        .add_service(TableServiceServer::new(service))
        .add_optional_service(admin);
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    FakeNode { addr, state }
}

/// An address nothing listens on (bound once, then released).
pub async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A status as the storage node sends it.
pub fn error(code: ErrorCode, message: &str) -> Status {
    let grpc = match code.http_status() {
        400 => Code::InvalidArgument,
        404 => Code::NotFound,
        409 if code.as_str().ends_with("AlreadyExists") => Code::AlreadyExists,
        409 => Code::Aborted,
        412 => Code::FailedPrecondition,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    let mut s = Status::new(grpc, message);
    s.metadata_mut().insert(
        ERROR_CODE_HEADER,
        MetadataValue::try_from(code.as_str()).unwrap(),
    );
    s
}

fn key(e: &pb::Entity) -> (String, String) {
    (e.partition_key.clone(), e.row_key.clone())
}

struct Service {
    mode: Mode,
    state: Arc<State>,
}

impl Service {
    /// Counts the call and plays the scripted refusals; `Ok` means: serve it.
    async fn admit(&self) -> Result<(), Status> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let busy = self
            .state
            .busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if busy.is_ok() {
            return Err(error(ErrorCode::ServerBusy, "busy"));
        }
        match &self.mode {
            Mode::Leader => Ok(()),
            Mode::Follower(leader) => {
                let mut s = error(ErrorCode::NotLeader, "this replica does not lead the range");
                if let Some(l) = leader {
                    s.metadata_mut()
                        .insert(LEADER_HEADER, MetadataValue::try_from(l.as_str()).unwrap());
                }
                Err(s)
            }
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(Status::internal("unreachable"))
            }
            Mode::Proxy => Err(Status::unavailable("upstream connect error")),
        }
    }

    /// Applies one write to `store`; the entity's new timestamp on success.
    fn apply(
        &self,
        store: &mut BTreeMap<(String, String), pb::Entity>,
        op: pb::WriteOp,
    ) -> Result<pb::WriteResponse, Status> {
        let mut entity = op
            .entity
            .ok_or_else(|| error(ErrorCode::InvalidInput, "no entity"))?;
        let k = key(&entity);
        let kind =
            pb::WriteKind::try_from(op.kind).map_err(|_| error(ErrorCode::InvalidInput, "kind"))?;
        let exists = store.contains_key(&k);
        match kind {
            pb::WriteKind::Insert if exists => {
                return Err(error(ErrorCode::EntityAlreadyExists, "taken"));
            }
            pb::WriteKind::Replace | pb::WriteKind::Merge | pb::WriteKind::Delete if !exists => {
                return Err(error(ErrorCode::ResourceNotFound, "no such entity"));
            }
            pb::WriteKind::Delete => {
                store.remove(&k);
                return Ok(pb::WriteResponse::default());
            }
            _ => {}
        }
        let ticks = self.state.clock.fetch_add(1, Ordering::SeqCst) + 1;
        entity.timestamp_ticks = Some(ticks);
        store.insert(k, entity.clone());
        Ok(pb::WriteResponse {
            etag_ticks: Some(ticks),
            entity: Some(entity),
        })
    }
}

type QueryStream = Pin<Box<dyn Stream<Item = Result<pb::QueryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TableService for Service {
    async fn create_table(
        &self,
        r: Request<pb::CreateTableRequest>,
    ) -> Result<Response<pb::CreateTableResponse>, Status> {
        let table = Some(pb::TableInfo {
            name: r.into_inner().table,
            id: 1,
        });
        Ok(Response::new(pb::CreateTableResponse { table }))
    }

    async fn delete_table(
        &self,
        _: Request<pb::DeleteTableRequest>,
    ) -> Result<Response<pb::DeleteTableResponse>, Status> {
        Ok(Response::new(pb::DeleteTableResponse {}))
    }

    /// Five tables `t0`..`t4`, two per page.
    async fn list_tables(
        &self,
        r: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let r = r.into_inner();
        let names: Vec<String> = (0..5)
            .map(|i| format!("t{i}"))
            .filter(|n| *n >= r.start_after)
            .collect();
        let tables = names
            .iter()
            .take(2)
            .map(|n| pb::TableInfo {
                name: n.clone(),
                id: 1,
            })
            .collect();
        Ok(Response::new(pb::ListTablesResponse {
            tables,
            next_table: names.get(2).cloned(),
        }))
    }

    async fn write(
        &self,
        r: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.admit().await?;
        let op = r
            .into_inner()
            .op
            .ok_or_else(|| error(ErrorCode::InvalidInput, "no op"))?;
        let mut store = self.state.store.lock().unwrap();
        Ok(Response::new(self.apply(&mut store, op)?))
    }

    async fn batch(
        &self,
        r: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        self.admit().await?;
        let mut store = self.state.store.lock().unwrap();
        // All or nothing: apply to a copy, keep it only if every operation succeeded.
        let mut copy = store.clone();
        let mut results = Vec::new();
        for (i, op) in r.into_inner().ops.into_iter().enumerate() {
            match self.apply(&mut copy, op) {
                Ok(res) => results.push(res),
                Err(mut s) => {
                    s.metadata_mut()
                        .insert(FAILED_INDEX_HEADER, MetadataValue::from(i as u64));
                    return Err(s);
                }
            }
        }
        *store = copy;
        Ok(Response::new(pb::BatchResponse { results }))
    }

    async fn get(&self, r: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.admit().await?;
        let r = r.into_inner();
        let store = self.state.store.lock().unwrap();
        let entity = store.get(&(r.partition_key, r.row_key)).cloned();
        let mut entity =
            entity.ok_or_else(|| error(ErrorCode::ResourceNotFound, "no such entity"))?;
        if !r.select.is_empty() {
            entity.properties.retain(|p| r.select.contains(&p.name));
        }
        Ok(Response::new(pb::GetResponse {
            entity: Some(entity),
        }))
    }

    type QueryStream = QueryStream;

    /// Key order from the continuation (inclusive), `limit` in total, `page_size` per message; the last
    /// message carries the continuation when the limit cut the query short.
    async fn query(&self, r: Request<pb::QueryRequest>) -> Result<Response<QueryStream>, Status> {
        self.admit().await?;
        let r = r.into_inner();
        let from = r
            .continuation
            .map(|c| (c.next_partition_key, c.next_row_key))
            .unwrap_or_default();
        let all: Vec<pb::Entity> = self
            .state
            .store
            .lock()
            .unwrap()
            .range(from..)
            .map(|(_, e)| e.clone())
            .collect();
        let limit = if r.limit == 0 {
            all.len()
        } else {
            (r.limit as usize).min(all.len())
        };
        let page_size = if r.page_size == 0 {
            1000
        } else {
            r.page_size as usize
        };
        let mut messages: Vec<Result<pb::QueryResponse, Status>> = all[..limit]
            .chunks(page_size)
            .map(|c| {
                Ok(pb::QueryResponse {
                    entities: c.to_vec(),
                    continuation: None,
                })
            })
            .collect();
        if let (Some(next), Some(Ok(last))) = (all.get(limit), messages.last_mut()) {
            last.continuation = Some(pb::Continuation {
                next_partition_key: next.partition_key.clone(),
                next_row_key: next.row_key.clone(),
            });
        }
        if self.state.break_next_query.swap(false, Ordering::SeqCst) {
            messages.truncate(1);
            messages.push(Err(Status::unavailable("connection to the leader lost")));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }
}

struct FakeAdmin {
    leader: String,
}

#[tonic::async_trait]
impl Admin for FakeAdmin {
    async fn status(
        &self,
        _: Request<apb::StatusRequest>,
    ) -> Result<Response<apb::StatusResponse>, Status> {
        Err(Status::unimplemented("status"))
    }

    async fn locate(
        &self,
        _: Request<apb::LocateRequest>,
    ) -> Result<Response<apb::LocateResponse>, Status> {
        Ok(Response::new(apb::LocateResponse {
            range_id: 1,
            leader_node_id: 1,
            leader_grpc_addr: self.leader.clone(),
            range: None,
            first_partition_key: None,
            end_partition_key: None,
        }))
    }

    async fn transfer_leader(
        &self,
        _: Request<apb::TransferLeaderRequest>,
    ) -> Result<Response<apb::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("transfer"))
    }

    async fn locks(
        &self,
        _: Request<apb::LocksRequest>,
    ) -> Result<Response<apb::LocksResponse>, Status> {
        Err(Status::unimplemented("locks"))
    }

    async fn split_range(
        &self,
        _: Request<apb::SplitRangeRequest>,
    ) -> Result<Response<apb::SplitRangeResponse>, Status> {
        Err(Status::unimplemented("split"))
    }

    async fn merge_range(
        &self,
        _: Request<apb::MergeRangeRequest>,
    ) -> Result<Response<apb::MergeRangeResponse>, Status> {
        Err(Status::unimplemented("merge"))
    }

    async fn move_replica(
        &self,
        _: Request<apb::MoveReplicaRequest>,
    ) -> Result<Response<apb::MoveReplicaResponse>, Status> {
        Err(Status::unimplemented("move"))
    }

    async fn decommission(
        &self,
        _: Request<apb::DecommissionRequest>,
    ) -> Result<Response<apb::DecommissionResponse>, Status> {
        Err(Status::unimplemented("decommission"))
    }

    async fn join(
        &self,
        _: Request<apb::JoinRequest>,
    ) -> Result<Response<apb::JoinResponse>, Status> {
        Err(Status::unimplemented("join"))
    }

    async fn drain(
        &self,
        _: Request<apb::DrainRequest>,
    ) -> Result<Response<apb::DrainResponse>, Status> {
        Err(Status::unimplemented("drain"))
    }
}
