//! Single-entity operations: Insert, Get, Update/Merge (and their Insert-Or-* forms), Delete.
//!
//! Authorization happens twice for writes: once before the body is parsed (permissions and table, so a
//! SAS without the right permission never costs a JSON parse) and once with the entity's key, which is
//! when a table SAS's PartitionKey/RowKey range can be checked.

use axum::response::Response;
use http::StatusCode;
use trestle_types::{Entity, EntityKey, IfMatch, WriteKind, WriteOp, WriteOutcome};

use super::{
    Prefer, delete_condition, parse_if_match, parse_prefer, parse_select, reject_if_none_match,
    update_kind,
};
use crate::auth::Access;
use crate::error::ApiResult;
use crate::json::{self, MetadataLevel, check_content_type};
use crate::resource::entity_path;
use crate::server::{Ctx, Gateway, json_content_type, respond};

/// The entity a write produced (the service's copy, else the request's with the new timestamp).
pub(crate) fn stored_entity(outcome: &WriteOutcome, requested: &Entity) -> Entity {
    outcome.entity.clone().unwrap_or_else(|| {
        let mut entity = requested.clone();
        entity.timestamp = outcome.etag.map(|e| e.0);
        entity
    })
}

/// The headers and body of a successful insert, for both single requests and batch operations.
pub(crate) fn insert_response(
    ctx: &Ctx,
    table: &str,
    stored: &Entity,
    prefer: Option<Prefer>,
    level: MetadataLevel,
) -> (StatusCode, Vec<(&'static str, String)>, String) {
    let location = format!("{}/{}", ctx.base_url, entity_path(table, &stored.key()));
    let etag = stored.etag().map(|e| e.to_header()).unwrap_or_default();
    match prefer {
        Some(Prefer::NoContent) => (
            StatusCode::NO_CONTENT,
            vec![
                ("Preference-Applied", "return-no-content".into()),
                ("Location", location.clone()),
                ("DataServiceId", location),
                ("ETag", etag),
            ],
            String::new(),
        ),
        prefer => {
            let (name, value) = json_content_type(level);
            let mut headers = vec![(name, value), ("Location", location), ("ETag", etag)];
            if prefer == Some(Prefer::Content) {
                headers.insert(0, ("Preference-Applied", "return-content".into()));
            }
            let body = json::entity_document(stored, level, &ctx.urls(table), None);
            (StatusCode::CREATED, headers, body)
        }
    }
}

pub(crate) async fn insert(gateway: &Gateway, ctx: &Ctx, table: &str) -> ApiResult<Response> {
    ctx.authorize(Access::InsertEntity, Some(table), None)?;
    check_content_type(ctx.header("content-type"))?;
    let level = ctx.metadata()?;
    let entity = json::parse_entity(&ctx.body, None)?;
    ctx.authorize(Access::InsertEntity, Some(table), Some(&entity.key()))?;
    let op = WriteOp {
        kind: WriteKind::Insert,
        entity: entity.clone(),
        if_match: IfMatch::None,
    };
    let outcome = gateway
        .service
        .write(ctx.account(), table, op, ctx.fencing()?)
        .await?;
    let stored = stored_entity(&outcome, &entity);
    let (status, headers, body) = insert_response(
        ctx,
        table,
        &stored,
        parse_prefer(ctx.header("prefer")),
        level,
    );
    Ok(respond(status, &headers, body))
}

pub(crate) async fn get(
    gateway: &Gateway,
    ctx: &Ctx,
    table: &str,
    key: &EntityKey,
) -> ApiResult<Response> {
    ctx.authorize(Access::ReadEntity, Some(table), Some(key))?;
    let level = ctx.metadata()?;
    let select = parse_select(ctx.param("$select"));
    let entity = gateway
        .service
        .get_entity(ctx.account(), table, &key.partition_key, &key.row_key)
        .await?;
    let mut headers = vec![json_content_type(level)];
    if let Some(etag) = entity.etag() {
        headers.push(("etag", etag.to_header()));
    }
    let body = json::entity_document(&entity, level, &ctx.urls(table), select.as_deref());
    Ok(respond(StatusCode::OK, &headers, body))
}

pub(crate) async fn update(
    gateway: &Gateway,
    ctx: &Ctx,
    table: &str,
    key: &EntityKey,
) -> ApiResult<Response> {
    reject_if_none_match(ctx.header("if-none-match"))?;
    let if_match = parse_if_match(ctx.header("if-match"))?;
    let (kind, access) = update_kind(ctx.method.as_str(), if_match)?;
    ctx.authorize(access, Some(table), Some(key))?;
    check_content_type(ctx.header("content-type"))?;
    let entity = json::parse_entity(&ctx.body, Some(key))?;
    let outcome = gateway
        .service
        .write(
            ctx.account(),
            table,
            WriteOp {
                kind,
                entity,
                if_match,
            },
            ctx.fencing()?,
        )
        .await?;
    let headers: Vec<(&str, String)> = outcome
        .etag
        .map(|e| ("etag", e.to_header()))
        .into_iter()
        .collect();
    Ok(respond(StatusCode::NO_CONTENT, &headers, ""))
}

pub(crate) async fn delete(
    gateway: &Gateway,
    ctx: &Ctx,
    table: &str,
    key: &EntityKey,
) -> ApiResult<Response> {
    reject_if_none_match(ctx.header("if-none-match"))?;
    let if_match = delete_condition(ctx.header("if-match"))?;
    ctx.authorize(Access::DeleteEntity, Some(table), Some(key))?;
    let entity = Entity::new(key.partition_key.clone(), key.row_key.clone());
    let op = WriteOp {
        kind: WriteKind::Delete,
        entity,
        if_match,
    };
    gateway
        .service
        .write(ctx.account(), table, op, ctx.fencing()?)
        .await?;
    Ok(respond(StatusCode::NO_CONTENT, &[], ""))
}
