//! The public gRPC front end: `trestle.table.v1.TableService` served over the node's [`TableService`].
//!
//! This module only translates. Every RPC becomes one call of the table-service trait (the same one the
//! REST gateway uses), so routing, forwarding and validation of entities stay in one place behind the
//! trait. What happens here:
//!
//! - **Input**: protobuf messages become domain values through `trestle_proto::convert` and
//!   `commands::write_op_from_proto`; a malformed message (a value without a kind, a 3-byte Guid, an
//!   unknown write kind, a missing entity) is `InvalidInput`, never a panic. An empty `account` means the
//!   node's default account. Table names are validated with [`TableName::new`] only where the trait wants
//!   a `TableName` (create); elsewhere a bad name simply is not found.
//! - **Errors**: [`status_from_error`] is the one mapping of [`Error`] to [`Status`]. The gRPC code
//!   follows the HTTP status Azure gives the error code; the code's name travels in
//!   `x-trestle-error-code`, so a client gets the exact `ErrorCode` back. `NotLeader` is `UNAVAILABLE`
//!   and, when the message names the leader's address (`leader=<host:port>`), carries it in
//!   `x-trestle-leader`. A failed batch operation's index travels in `x-trestle-failed-index`.
//! - **Queries** are server-streamed: pages of at most `page_size` (≤ 1000) entities are fetched one by
//!   one with [`TableService::query`] and each is sent as one `QueryResponse` (split further only when a
//!   page would exceed [`MAX_RESPONSE_MESSAGE_BYTES`], so default-configured gRPC clients can read every
//!   message). The stream ends when the query is exhausted or `limit` entities were sent; the last
//!   message then carries the continuation if entities remain. The first page is fetched before the call
//!   returns, so request errors (bad filter, unknown table) are the call's status, not a stream error.
//!
//! - **Callers** are authenticated and every operation authorized before anything runs
//!   ([`crate::grpc_auth`]): a signed call or a SAS for the account the message names, or a peer node
//!   forwarding for the account it authenticated. A table SAS's key range clips queries exactly as REST
//!   clips them ([`KeyRange::clip_start`], [`KeyRange::clip_page`]).
//!
//! Invariant: the producer task of a query runs inside the caller's `cluster::FORWARDED` scope, so a
//! query another node forwarded here is served locally only, as every other forwarded call is; and a
//! forwarded query is answered with one page (see `forward::query`).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use trestle_proto::auth::method;
use trestle_proto::table as pb;
use trestle_proto::table::table_service_server::{TableService as GrpcService, TableServiceServer};
use trestle_rest_gateway::auth::Access;
use trestle_rest_gateway::auth::sas::KeyRange;
use trestle_rest_gateway::{Fencing, TableService};
use trestle_types::{
    BatchError, Entity, EntityKey, Error, ErrorCode, Filter, QueryPage, QuerySpec, TableInfo,
    TableName, WriteOp, WriteOutcome, limits,
};

use crate::commands::write_op_from_proto;
use crate::grpc_auth::{Authenticator, deny, write_access};

/// Metadata entry with the Azure error code name of a failed call.
pub const ERROR_CODE_HEADER: &str = "x-trestle-error-code";
/// Metadata entry with the leader's gRPC address (`host:port`) on a `NotLeader` failure.
pub const LEADER_HEADER: &str = "x-trestle-leader";
/// Metadata entry with the 0-based index of the batch operation that failed.
pub const FAILED_INDEX_HEADER: &str = "x-trestle-failed-index";

/// The largest request this service decodes: a 4 MiB Azure batch grows somewhat in protobuf (UTF-8
/// strings of non-Latin text are longer than Azure's UTF-16 count only up to 1.5×, plus framing).
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Query pages are split into messages of at most this size (tonic's default decoding limit), so any
/// client with default settings can read them. One entity is at most ~1.5 MiB encoded, so a message
/// always has room for at least one.
pub const MAX_RESPONSE_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The gRPC table service of one node.
pub struct GrpcTableService {
    inner: Arc<dyn TableService>,
    /// The account of requests that leave `account` empty.
    default_account: String,
    auth: Arc<Authenticator>,
}

/// The tonic service for the node's gRPC router.
pub fn server(
    inner: Arc<dyn TableService>,
    default_account: String,
    auth: Arc<Authenticator>,
) -> TableServiceServer<GrpcTableService> {
    TableServiceServer::new(GrpcTableService {
        inner,
        default_account,
        auth,
    })
    .max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES)
}

/// The gRPC code for an error code: by the HTTP status Azure answers with, with the exceptions below.
///
/// - 409: `AlreadyExists` for the `*AlreadyExists` codes, `Aborted` for the other conflicts.
/// - 413 (`RequestBodyTooLarge`): `ResourceExhausted`, the code gRPC itself uses for oversized messages.
/// - 405, 415, 501: `Unimplemented` (the operation or format is not supported here).
/// - Authentication failures (`NoAuthenticationInformation`, `InvalidAuthenticationInfo`,
///   `AuthenticationFailed`): `Unauthenticated`; the `Authorization*` family (403) stays
///   `PermissionDenied`.
/// - `OperationTimedOut` (500): `DeadlineExceeded`, which in gRPC already means "may have completed".
/// - `DataCorrupted` (500): `DataLoss`, gRPC's code for corruption.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NoAuthenticationInformation
        | ErrorCode::InvalidAuthenticationInfo
        | ErrorCode::AuthenticationFailed => return Code::Unauthenticated,
        ErrorCode::OperationTimedOut => return Code::DeadlineExceeded,
        ErrorCode::DataCorrupted => return Code::DataLoss,
        _ => {}
    }
    match code.http_status() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 | 415 | 501 => Code::Unimplemented,
        409 if code.as_str().ends_with("AlreadyExists") => Code::AlreadyExists,
        409 => Code::Aborted,
        412 => Code::FailedPrecondition,
        413 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        s if (400..500).contains(&s) => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

/// The leader address a `NotLeader` message names as `leader=<host:port>`, if it names one. A node id
/// (`leader=2`) or `leader=unknown` is not an address and yields `None`.
pub fn leader_address(message: &str) -> Option<&str> {
    let (_, rest) = message.rsplit_once("leader=")?;
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ')' | '"' | '\''))
        .unwrap_or(rest.len());
    let addr = rest[..end].trim_end_matches('.');
    let (host, port) = addr.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then_some(addr)
}

/// The one mapping of a domain error to a gRPC status (see the module header for the metadata).
pub fn status_from_error(e: &Error) -> Status {
    let mut status = Status::new(grpc_code(e.code), e.message.clone());
    let md = status.metadata_mut();
    // `from_static` panics only on bytes that are not visible ASCII; code names are Rust identifiers.
    md.insert(
        ERROR_CODE_HEADER,
        MetadataValue::from_static(e.code.as_str()),
    );
    if e.code == ErrorCode::NotLeader {
        // An address that is not a valid header value is dropped: the hint is optional.
        if let Some(value) =
            leader_address(&e.message).and_then(|a| MetadataValue::try_from(a).ok())
        {
            md.insert(LEADER_HEADER, value);
        }
    }
    status
}

/// A failed batch: the error's status plus the failing operation's index, when there is one.
pub fn status_from_batch_error(e: &BatchError) -> Status {
    let mut status = status_from_error(&e.error);
    if let Some(index) = e.index {
        status
            .metadata_mut()
            .insert(FAILED_INDEX_HEADER, MetadataValue::from(index as u64));
    }
    status
}

fn status(e: Error) -> Status {
    status_from_error(&e)
}

fn table_info_to_proto(t: TableInfo) -> pb::TableInfo {
    pb::TableInfo {
        name: t.name,
        id: t.id,
    }
}

fn fencing_from_proto(f: Option<pb::Fencing>) -> Result<Option<Fencing>, Error> {
    match f {
        None => Ok(None),
        Some(f) if f.lock.is_empty() => {
            Err(Error::invalid_input("A fencing token needs its lock name."))
        }
        Some(f) => Ok(Some(Fencing {
            lock: f.lock,
            token: f.token,
        })),
    }
}

fn write_response(o: WriteOutcome) -> pb::WriteResponse {
    pb::WriteResponse {
        etag_ticks: o.etag.map(|e| e.0.ticks()),
        entity: o.entity.as_ref().map(pb::Entity::from),
    }
}

fn continuation_to_proto(k: EntityKey) -> pb::Continuation {
    pb::Continuation {
        next_partition_key: k.partition_key,
        next_row_key: k.row_key,
    }
}

/// Keeps only the selected properties (keys and timestamp always stay); an empty selection keeps all.
fn project(mut entity: Entity, select: &[String]) -> Entity {
    if !select.is_empty() {
        entity
            .properties
            .retain(|name, _| select.iter().any(|s| s == name));
    }
    entity
}

impl GrpcTableService {
    fn account(&self, account: &str) -> String {
        if account.is_empty() {
            self.default_account.clone()
        } else {
            account.to_string()
        }
    }
}

#[tonic::async_trait]
impl GrpcService for GrpcTableService {
    async fn create_table(
        &self,
        request: Request<pb::CreateTableRequest>,
    ) -> Result<Response<pb::CreateTableResponse>, Status> {
        let account = self.account(&request.get_ref().account);
        let credential = self
            .auth
            .authenticate(&request, method::CREATE_TABLE, &account)
            .await?;
        let req = request.into_inner();
        credential
            .authorize(Access::CreateTable, None, None)
            .map_err(deny)?;
        let name = TableName::new(&req.table).map_err(status)?;
        let info = self
            .inner
            .create_table(&account, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateTableResponse {
            table: Some(table_info_to_proto(info)),
        }))
    }

    async fn delete_table(
        &self,
        request: Request<pb::DeleteTableRequest>,
    ) -> Result<Response<pb::DeleteTableResponse>, Status> {
        let account = self.account(&request.get_ref().account);
        let credential = self
            .auth
            .authenticate(&request, method::DELETE_TABLE, &account)
            .await?;
        let req = request.into_inner();
        credential
            .authorize(Access::DeleteTable, Some(&req.table), None)
            .map_err(deny)?;
        self.inner
            .delete_table(&account, &req.table)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteTableResponse {}))
    }

    async fn list_tables(
        &self,
        request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let account = self.account(&request.get_ref().account);
        let credential = self
            .auth
            .authenticate(&request, method::LIST_TABLES, &account)
            .await?;
        let req = request.into_inner();
        credential
            .authorize(Access::ListTables, None, None)
            .map_err(deny)?;
        let limit = match req.limit as usize {
            0 => limits::MAX_PAGE_ENTITIES,
            n => n.min(limits::MAX_PAGE_ENTITIES),
        };
        let start = (!req.start_after.is_empty()).then_some(req.start_after.as_str());
        let (tables, next_table) = self
            .inner
            .list_tables(&account, start, limit)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListTablesResponse {
            tables: tables.into_iter().map(table_info_to_proto).collect(),
            next_table,
        }))
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let account = self.account(&request.get_ref().account);
        let credential = self
            .auth
            .authenticate(&request, method::WRITE, &account)
            .await?;
        let req = request.into_inner();
        let op = req
            .op
            .ok_or_else(|| status(Error::invalid_input("A write request has no operation.")))?;
        let op = write_op_from_proto(op).map_err(status)?;
        credential
            .authorize(
                write_access(op.kind),
                Some(&req.table),
                Some(&op.entity.key()),
            )
            .map_err(deny)?;
        let fencing = fencing_from_proto(req.fencing).map_err(status)?;
        let outcome = self
            .inner
            .write(&account, &req.table, op, fencing)
            .await
            .map_err(status)?;
        Ok(Response::new(write_response(outcome)))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let account = self.account(&request.get_ref().account);
        let credential = self
            .auth
            .authenticate(&request, method::BATCH, &account)
            .await?;
        let req = request.into_inner();
        let ops = req
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                write_op_from_proto(op).map_err(|error| BatchError {
                    index: Some(i),
                    error,
                })
            })
            .collect::<Result<Vec<WriteOp>, BatchError>>()
            .map_err(|e| status_from_batch_error(&e))?;
        for (i, op) in ops.iter().enumerate() {
            credential
                .authorize(
                    write_access(op.kind),
                    Some(&req.table),
                    Some(&op.entity.key()),
                )
                .map_err(|e| {
                    let mut s = deny(e);
                    s.metadata_mut()
                        .insert(FAILED_INDEX_HEADER, MetadataValue::from(i as u64));
                    s
                })?;
        }
        let fencing = fencing_from_proto(req.fencing).map_err(status)?;
        let outcomes = self
            .inner
            .batch(&account, &req.table, ops, fencing)
            .await
            .map_err(|e| status_from_batch_error(&e))?;
        Ok(Response::new(pb::BatchResponse {
            results: outcomes.into_iter().map(write_response).collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let account = self.account(&request.get_ref().account);
        let credential = self
            .auth
            .authenticate(&request, method::GET, &account)
            .await?;
        let req = request.into_inner();
        let key = EntityKey::new(req.partition_key.clone(), req.row_key.clone());
        credential
            .authorize(Access::ReadEntity, Some(&req.table), Some(&key))
            .map_err(deny)?;
        let entity = self
            .inner
            .get_entity(&account, &req.table, &req.partition_key, &req.row_key)
            .await
            .map_err(status)?;
        let entity = project(entity, &req.select);
        Ok(Response::new(pb::GetResponse {
            entity: Some(pb::Entity::from(&entity)),
        }))
    }

    type QueryStream =
        Pin<Box<dyn Stream<Item = Result<pb::QueryResponse, Status>> + Send + 'static>>;

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let account = self.account(&request.get_ref().account);
        let credential = self
            .auth
            .authenticate(&request, method::QUERY, &account)
            .await?;
        let req = request.into_inner();
        credential
            .authorize(Access::QueryEntities, Some(&req.table), None)
            .map_err(deny)?;
        let range = credential.key_range().cloned();
        let filter = match req.filter.trim() {
            "" => None,
            text => Some(Filter::parse(text).map_err(status)?),
        };
        let mut plan = QueryPlan {
            inner: self.inner.clone(),
            account,
            table: req.table,
            filter,
            select: (!req.select.is_empty()).then_some(req.select),
            page_size: match req.page_size as usize {
                0 => limits::MAX_PAGE_ENTITIES,
                n => n.min(limits::MAX_PAGE_ENTITIES),
            },
            limit: (req.limit > 0).then_some(req.limit as usize),
            continuation: req
                .continuation
                .map(|c| EntityKey::new(c.next_partition_key, c.next_row_key)),
            sent: 0,
            range,
        };
        if let Some(range) = &plan.range {
            plan.continuation = range.clip_start(plan.continuation.take());
        }
        let forwarded = crate::cluster::FORWARDED.try_with(|f| *f).unwrap_or(false);
        let mut first = plan.next_page().await.map_err(status)?;
        // A forwarded query answers one page, the one range's page the forwarding node asked this
        // node (its leader) for: the next page may start in a range another node leads, and the
        // forwarding node routes every page to its own range's leader.
        first.last |= forwarded;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(crate::cluster::FORWARDED.scope(forwarded, plan.stream(first, tx)));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One streamed query: what to ask for, where it stands.
struct QueryPlan {
    inner: Arc<dyn TableService>,
    account: String,
    table: String,
    filter: Option<Filter>,
    select: Option<Vec<String>>,
    page_size: usize,
    /// Entities to send in total; `None` for all.
    limit: Option<usize>,
    /// Where the next page starts.
    continuation: Option<EntityKey>,
    /// Entities sent so far.
    sent: usize,
    /// The key range of the caller's table SAS, if it has one: every page is clipped to it.
    range: Option<KeyRange>,
}

/// A fetched page and whether it is the stream's last.
struct Fetched {
    page: QueryPage,
    last: bool,
}

impl QueryPlan {
    /// Fetches the next page (at most what `limit` still allows) and advances the plan past it.
    async fn next_page(&mut self) -> Result<Fetched, Error> {
        let want = self
            .limit
            .map_or(self.page_size, |l| (l - self.sent).min(self.page_size));
        let spec = QuerySpec {
            filter: self.filter.clone(),
            select: self.select.clone(),
            top: Some(want),
            continuation: self.continuation.clone(),
        };
        let mut page = self.inner.query(&self.account, &self.table, spec).await?;
        if let Some(range) = &self.range {
            range.clip_page(&mut page);
        }
        if page.entities.len() > want {
            // Defensive: never send more than asked; resume at the first entity held back.
            let rest = page.entities.split_off(want);
            page.next = rest.first().map(Entity::key);
        }
        self.sent += page.entities.len();
        // A page that is empty and did not move the continuation would repeat forever: stop there and
        // hand the continuation to the client.
        let stalled = page.entities.is_empty() && page.next == self.continuation;
        let last = page.next.is_none() || self.limit.is_some_and(|l| self.sent >= l) || stalled;
        self.continuation = page.next.clone();
        Ok(Fetched { page, last })
    }

    /// Sends `first` and every following page to `tx`; stops when the query is done, a page fails (the
    /// error ends the stream) or the client has gone away.
    async fn stream(mut self, first: Fetched, tx: mpsc::Sender<Result<pb::QueryResponse, Status>>) {
        let mut fetched = first;
        loop {
            let last = fetched.last;
            if !send_page(&tx, fetched).await || last {
                return;
            }
            fetched = match self.next_page().await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(status_from_error(&e))).await;
                    return;
                }
            };
        }
    }
}

/// Sends one page as one message (or several, if it is too large for one); the continuation goes on the
/// last message of the last page only. Returns false when the client is gone.
async fn send_page(tx: &mpsc::Sender<Result<pb::QueryResponse, Status>>, fetched: Fetched) -> bool {
    let Fetched { page, last } = fetched;
    if page.entities.is_empty() && !last {
        return true;
    }
    let mut messages = Vec::new();
    let mut current = pb::QueryResponse::default();
    let mut bytes = 0;
    for entity in &page.entities {
        let entity = pb::Entity::from(entity);
        // Field tag + length prefix: at most 1 + 10 bytes per entity.
        let len = entity.encoded_len() + 11;
        if bytes + len > MAX_RESPONSE_MESSAGE_BYTES && !current.entities.is_empty() {
            messages.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.entities.push(entity);
    }
    if last {
        current.continuation = page.next.map(continuation_to_proto);
    }
    messages.push(current);
    for m in messages {
        if tx.send(Ok(m)).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(s: &'a Status, name: &str) -> Option<&'a str> {
        s.metadata().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn codes_follow_azures_http_status() {
        let cases = [
            (ErrorCode::InvalidInput, Code::InvalidArgument),
            (ErrorCode::InvalidResourceName, Code::InvalidArgument),
            (
                ErrorCode::NoAuthenticationInformation,
                Code::Unauthenticated,
            ),
            (ErrorCode::AuthorizationFailure, Code::PermissionDenied),
            (
                ErrorCode::AuthorizationPermissionMismatch,
                Code::PermissionDenied,
            ),
            (ErrorCode::AuthenticationFailed, Code::Unauthenticated),
            (ErrorCode::InvalidAuthenticationInfo, Code::Unauthenticated),
            (ErrorCode::EntityNotFound, Code::NotFound),
            (ErrorCode::TableNotFound, Code::NotFound),
            (ErrorCode::ResourceNotFound, Code::NotFound),
            (ErrorCode::EntityAlreadyExists, Code::AlreadyExists),
            (ErrorCode::TableAlreadyExists, Code::AlreadyExists),
            (ErrorCode::TableBeingDeleted, Code::Aborted),
            (ErrorCode::FencingTokenStale, Code::Aborted),
            (
                ErrorCode::UpdateConditionNotSatisfied,
                Code::FailedPrecondition,
            ),
            (ErrorCode::RequestBodyTooLarge, Code::ResourceExhausted),
            (ErrorCode::MethodNotAllowed, Code::Unimplemented),
            (ErrorCode::JsonFormatNotSupported, Code::Unimplemented),
            (ErrorCode::NotImplemented, Code::Unimplemented),
            (ErrorCode::ServerBusy, Code::Unavailable),
            (ErrorCode::NotLeader, Code::Unavailable),
            (ErrorCode::InternalError, Code::Internal),
            (ErrorCode::OperationTimedOut, Code::DeadlineExceeded),
            (ErrorCode::DataCorrupted, Code::DataLoss),
        ];
        for (code, grpc) in cases {
            assert_eq!(grpc_code(code), grpc, "{code}");
        }
        // No code maps to OK or to a code a client would mistake for a transport failure.
        for &code in ErrorCode::ALL {
            assert_ne!(grpc_code(code), Code::Ok, "{code}");
            assert_ne!(grpc_code(code), Code::Unknown, "{code}");
        }
    }

    #[test]
    fn every_status_names_its_error_code() {
        for &code in ErrorCode::ALL {
            let s = status_from_error(&Error::new(code, "why"));
            assert_eq!(header(&s, ERROR_CODE_HEADER), Some(code.as_str()));
            assert_eq!(
                ErrorCode::parse(header(&s, ERROR_CODE_HEADER).unwrap_or_default()),
                Some(code)
            );
            assert_eq!(s.message(), "why");
            assert_eq!(header(&s, LEADER_HEADER), None, "{code}");
        }
    }

    #[test]
    fn not_leader_carries_the_leader_address_when_the_message_names_one() {
        let e = Error::new(
            ErrorCode::NotLeader,
            "this replica does not lead range 3; leader=10.0.0.2:7100",
        );
        let s = status_from_error(&e);
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(header(&s, ERROR_CODE_HEADER), Some("NotLeader"));
        assert_eq!(header(&s, LEADER_HEADER), Some("10.0.0.2:7100"));

        let e = Error::new(
            ErrorCode::NotLeader,
            "not the leader (leader=node-b.example:7101), retry",
        );
        assert_eq!(
            header(&status_from_error(&e), LEADER_HEADER),
            Some("node-b.example:7101")
        );
        // A node id or an unknown leader is not an address.
        for msg in [
            "range 3; leader=2",
            "range 3; leader=unknown",
            "no hint at all",
            "leader=:7100",
        ] {
            let s = status_from_error(&Error::new(ErrorCode::NotLeader, msg));
            assert_eq!(header(&s, LEADER_HEADER), None, "{msg}");
        }
        // Only NotLeader errors carry the hint.
        let s = status_from_error(&Error::new(ErrorCode::ServerBusy, "leader=10.0.0.2:7100"));
        assert_eq!(header(&s, LEADER_HEADER), None);
    }

    #[test]
    fn leader_addresses_are_parsed_from_the_last_hint() {
        assert_eq!(leader_address("leader=a:1 leader=b:2"), Some("b:2"));
        assert_eq!(leader_address("leader=[::1]:7100"), Some("[::1]:7100"));
        assert_eq!(
            leader_address("leader=127.0.0.1:7100."),
            Some("127.0.0.1:7100")
        );
        assert_eq!(leader_address("leader=127.0.0.1:notaport"), None);
    }

    #[test]
    fn batch_failures_carry_the_failed_index() {
        let e = BatchError {
            index: Some(7),
            error: Error::from_code(ErrorCode::EntityAlreadyExists),
        };
        let s = status_from_batch_error(&e);
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(header(&s, FAILED_INDEX_HEADER), Some("7"));
        assert_eq!(header(&s, ERROR_CODE_HEADER), Some("EntityAlreadyExists"));

        let whole = BatchError {
            index: None,
            error: Error::from_code(ErrorCode::CommandsInBatchActOnDifferentPartitions),
        };
        let s = status_from_batch_error(&whole);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(header(&s, FAILED_INDEX_HEADER), None);
    }

    #[test]
    fn projection_keeps_keys_and_selected_properties() {
        let e = Entity::new("p", "r")
            .with("a", trestle_types::Value::Int32(1))
            .with("b", trestle_types::Value::Int32(2));
        let only_a = project(e.clone(), &["a".to_string(), "missing".to_string()]);
        assert_eq!(only_a.properties.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            (only_a.partition_key.as_str(), only_a.row_key.as_str()),
            ("p", "r")
        );
        assert_eq!(project(e.clone(), &[]), e);
    }
}
