//! `POST /$batch`: entity group transactions and single point queries.
//!
//! Envelope errors (not multipart, no closing boundary) are a plain 400. Everything about the operations
//! themselves is reported the way Azure does, inside a 202 response: one HTTP response in the changeset
//! with the failing status and an `odata.error` whose message starts with the failing operation's
//! 0-based index (`"2:The specified entity already exists."`). The rules checked here, before the service
//! sees anything: at most 100 operations, one table, one PartitionKey
//! (`CommandsInBatchActOnDifferentPartitions`), each entity once (`InvalidDuplicateRow`), valid bodies,
//! and SAS permissions and key ranges for every operation. The service then applies the whole changeset
//! atomically with one [`TableService::batch`](crate::service::TableService::batch) call.

use std::collections::HashSet;

use axum::response::Response;
use http::StatusCode;
use trestle_types::{Entity, EntityKey, ErrorCode, WriteKind, WriteOp, WriteOutcome, limits};

use super::entities::{insert_response, stored_entity};
use super::{
    Prefer, delete_condition, parse_if_match, parse_prefer, reject_if_none_match, update_kind,
};
use crate::auth::Access;
use crate::batch::multipart::header;
use crate::batch::response::{SubResponse, base_headers, changeset_response, query_response};
use crate::batch::{BatchOperation, BatchRequest, parse_batch};
use crate::error::{ApiError, ApiResult, ErrorFormat};
use crate::json::{self, MetadataLevel, check_content_type};
use crate::resource::{Resource, parse_resource, parse_target};
use crate::server::{Ctx, Gateway, respond};

/// One validated write of the changeset.
struct Prepared {
    table: String,
    op: WriteOp,
    prefer: Option<Prefer>,
    level: MetadataLevel,
}

pub(crate) async fn batch(gateway: &Gateway, ctx: &Ctx) -> ApiResult<Response> {
    let content_type = ctx.header("content-type").unwrap_or("");
    let parsed = parse_batch(content_type, &ctx.body)?;
    let batch_boundary = format!("batchresponse_{}", uuid::Uuid::new_v4());
    let body = match parsed {
        BatchRequest::Query(op) => {
            query_response(&batch_boundary, &single_query(gateway, ctx, &op).await)
        }
        BatchRequest::Changeset { operations, .. } => {
            let changeset_boundary = format!("changesetresponse_{}", uuid::Uuid::new_v4());
            let responses = changeset(gateway, ctx, &operations).await;
            changeset_response(&batch_boundary, &changeset_boundary, &responses)
        }
    };
    let content_type = format!("multipart/mixed; boundary={batch_boundary}");
    Ok(respond(
        StatusCode::ACCEPTED,
        &[("content-type", content_type)],
        body,
    ))
}

/// The error response for operation `index`, in the format that operation's `Accept` asks for.
fn failure(
    ctx: &Ctx,
    operation: Option<&BatchOperation>,
    index: usize,
    error: ApiError,
) -> SubResponse {
    // An operation without its own Accept inherits the batch request's.
    let accept = operation
        .and_then(|o| header(&o.request.headers, "accept"))
        .or_else(|| ctx.header("accept"));
    let format = ErrorFormat::negotiate(accept, None);
    let error = error.for_batch_operation(index);
    let mut headers = base_headers();
    headers.push(("DataServiceVersion".into(), "3.0;".into()));
    headers.push(("Content-Type".into(), format.content_type().into()));
    SubResponse {
        status: error.status().as_u16(),
        headers,
        body: error.body(format, &ctx.request_id, ctx.now),
    }
}

async fn changeset(
    gateway: &Gateway,
    ctx: &Ctx,
    operations: &[BatchOperation],
) -> Vec<SubResponse> {
    if operations.len() > limits::MAX_BATCH_OPERATIONS {
        let error = ApiError::invalid_input(
            "The batch request operation exceeds the maximum 100 changes per change set.",
        );
        let index = limits::MAX_BATCH_OPERATIONS;
        return vec![failure(ctx, operations.get(index), index, error)];
    }
    let mut prepared: Vec<Prepared> = Vec::with_capacity(operations.len());
    let mut seen: HashSet<EntityKey> = HashSet::new();
    for (index, operation) in operations.iter().enumerate() {
        let item = match prepare(ctx, operation) {
            Ok(item) => item,
            Err(error) => return vec![failure(ctx, Some(operation), index, error)],
        };
        if let Some(first) = prepared.first()
            && (!first.table.eq_ignore_ascii_case(&item.table)
                || first.op.entity.partition_key != item.op.entity.partition_key)
        {
            let error = ApiError::from_code(ErrorCode::CommandsInBatchActOnDifferentPartitions);
            return vec![failure(ctx, Some(operation), index, error)];
        }
        if !seen.insert(item.op.key()) {
            return vec![failure(
                ctx,
                Some(operation),
                index,
                ApiError::from_code(ErrorCode::InvalidDuplicateRow),
            )];
        }
        prepared.push(item);
    }
    let Some(table) = prepared.first().map(|p| p.table.clone()) else {
        return vec![failure(
            ctx,
            None,
            0,
            ApiError::invalid_input("The changeset contains no operations."),
        )];
    };
    let fencing = match ctx.fencing() {
        Ok(fencing) => fencing,
        Err(error) => return vec![failure(ctx, operations.first(), 0, error)],
    };
    let ops: Vec<WriteOp> = prepared.iter().map(|p| p.op.clone()).collect();
    match gateway
        .service
        .batch(ctx.account(), &table, ops, fencing)
        .await
    {
        Ok(outcomes) => prepared
            .iter()
            .zip(outcomes.iter())
            .map(|(item, outcome)| success(ctx, item, outcome))
            .collect(),
        Err(batch_error) => {
            let index = batch_error.index.unwrap_or(0);
            vec![failure(
                ctx,
                operations.get(index),
                index,
                batch_error.error.into(),
            )]
        }
    }
}

fn success(ctx: &Ctx, item: &Prepared, outcome: &WriteOutcome) -> SubResponse {
    let mut headers = base_headers();
    let (status, body) = if item.op.kind == WriteKind::Insert {
        let stored = stored_entity(outcome, &item.op.entity);
        let (status, extra, body) =
            insert_response(ctx, &item.table, &stored, item.prefer, item.level);
        let (preference, rest): (Vec<_>, Vec<_>) = extra
            .into_iter()
            .partition(|(n, _)| *n == "Preference-Applied");
        headers.extend(preference.into_iter().map(|(n, v)| (n.to_string(), v)));
        headers.push(("DataServiceVersion".into(), "3.0;".into()));
        headers.extend(rest.into_iter().map(|(n, v)| (n.to_string(), v)));
        (status.as_u16(), body)
    } else {
        headers.push(("DataServiceVersion".into(), "1.0;".into()));
        if let Some(etag) = outcome.etag {
            headers.push(("ETag".into(), etag.to_header()));
        }
        (StatusCode::NO_CONTENT.as_u16(), String::new())
    };
    SubResponse {
        status,
        headers,
        body,
    }
}

/// Resolves an operation's absolute (or relative) URI to the resource it names in this account.
///
/// A path-style URI whose first segment is not the batch's account names no account at all: the
/// legacy Python SDK (`azure-cosmosdb-table`) writes `POST /mytable HTTP/1.1` for a path-style
/// endpoint. Its path is read relative to the batch request's own account, so it can only ever name a
/// resource there (`/otheraccount/t` is then no resource of this account, and fails). A host-style
/// URI names its account in the host, and any other account than the batch's is refused.
fn resolve(ctx: &Ctx, url: &str) -> ApiResult<Resource> {
    let (host, path) = match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(slash) => (Some(&rest[..slash]), &rest[slash..]),
            None => (Some(rest), "/"),
        },
        None => (ctx.header("host"), url),
    };
    let path = path.split('?').next().unwrap_or(path);
    let target = parse_target(host, path)?;
    if target.account == ctx.target.account {
        return Ok(target.resource);
    }
    if target.path_style {
        let relative = path.trim_start_matches('/');
        let decoded = percent_encoding::percent_decode_str(relative)
            .decode_utf8()
            .map_err(|_| ApiError::from_code(ErrorCode::InvalidUri))?;
        return parse_resource(&decoded);
    }
    Err(ApiError::invalid_input(
        "A batch operation addresses a different account.",
    ))
}

fn prepare(ctx: &Ctx, operation: &BatchOperation) -> ApiResult<Prepared> {
    let request = &operation.request;
    let get = |name: &str| header(&request.headers, name);
    let level = MetadataLevel::negotiate(get("accept"), None)?;
    let prefer = parse_prefer(get("prefer"));
    let method = match (request.method.as_str(), get("x-http-method")) {
        ("POST", Some(tunnelled)) => tunnelled.trim().to_ascii_uppercase(),
        (method, _) => method.to_string(),
    };
    let (table, op, access) = match (resolve(ctx, &request.url)?, method.as_str()) {
        (Resource::EntitySet(table), "POST") => {
            check_content_type(get("content-type"))?;
            let entity = json::parse_entity(&request.body, None)?;
            (
                table,
                WriteOp {
                    kind: WriteKind::Insert,
                    entity,
                    if_match: trestle_types::IfMatch::None,
                },
                Access::InsertEntity,
            )
        }
        (Resource::Entity { table, key }, "PUT" | "MERGE" | "PATCH") => {
            reject_if_none_match(get("if-none-match"))?;
            let if_match = parse_if_match(get("if-match"))?;
            let (kind, access) = update_kind(&method, if_match)?;
            check_content_type(get("content-type"))?;
            let entity = json::parse_entity(&request.body, Some(&key))?;
            (
                table,
                WriteOp {
                    kind,
                    entity,
                    if_match,
                },
                access,
            )
        }
        (Resource::Entity { table, key }, "DELETE") => {
            reject_if_none_match(get("if-none-match"))?;
            let if_match = delete_condition(get("if-match"))?;
            let entity = Entity::new(key.partition_key, key.row_key);
            (
                table,
                WriteOp {
                    kind: WriteKind::Delete,
                    entity,
                    if_match,
                },
                Access::DeleteEntity,
            )
        }
        (_, "GET") => {
            return Err(ApiError::invalid_input(
                "A query must be the only operation in a batch.",
            ));
        }
        _ => {
            return Err(ApiError::invalid_input(
                "The batch operation is not a supported entity operation.",
            ));
        }
    };
    ctx.authorize(access, Some(&table), Some(&op.key()))?;
    Ok(Prepared {
        table,
        op,
        prefer,
        level,
    })
}

/// A batch holding one point query.
async fn single_query(gateway: &Gateway, ctx: &Ctx, operation: &BatchOperation) -> SubResponse {
    let result = async {
        let level = MetadataLevel::negotiate(header(&operation.request.headers, "accept"), None)?;
        let Resource::Entity { table, key } = resolve(ctx, &operation.request.url)? else {
            return Err(ApiError::invalid_input(
                "Only a point query (one entity) may be sent in a batch.",
            ));
        };
        ctx.authorize(Access::ReadEntity, Some(&table), Some(&key))?;
        let entity = gateway
            .service
            .get_entity(ctx.account(), &table, &key.partition_key, &key.row_key)
            .await?;
        let mut headers = base_headers();
        headers.push(("DataServiceVersion".into(), "3.0;".into()));
        headers.push(("Content-Type".into(), level.content_type().into()));
        if let Some(etag) = entity.etag() {
            headers.push(("ETag".into(), etag.to_header()));
        }
        let body = json::entity_document(&entity, level, &ctx.urls(&table), None);
        Ok(SubResponse {
            status: 200,
            headers,
            body,
        })
    }
    .await;
    result.unwrap_or_else(|error| failure(ctx, Some(operation), 0, error))
}
