//! Table operations: Query Tables, Create Table, Get/Delete Table, Get/Set Table ACL.
//!
//! Query Tables evaluates `$filter` in the gateway against an entity whose only property is `TableName`
//! (the catalog is small and per account); it keeps asking the service for more names until the page
//! holds `$top` tables or the catalog is exhausted, so filtered pages are as full as Azure's.

use axum::response::Response;
use http::StatusCode;
use trestle_types::{Entity, ErrorCode, Filter, TableName, Value, limits};

use super::{Prefer, parse_prefer, parse_top};
use crate::auth::Access;
use crate::continuation::{encode_token, parse_table_continuation};
use crate::error::{ApiError, ApiResult};
use crate::json::{self, check_content_type};
use crate::server::{Ctx, Gateway, json_content_type, respond};
use crate::xml;

/// How many catalog pages one Query Tables request reads at most while filling a filtered page.
const MAX_CATALOG_READS: usize = 64;

pub(crate) async fn query_tables(gateway: &Gateway, ctx: &Ctx) -> ApiResult<Response> {
    ctx.authorize(Access::ListTables, None, None)?;
    let level = ctx.metadata()?;
    let want = parse_top(ctx.param("$top"))?.unwrap_or(limits::MAX_PAGE_ENTITIES);
    // An empty `$filter=` is no filter, as Azure treats it (Azurite #1573 fixed its 400 for this).
    let filter = ctx
        .param("$filter")
        .filter(|f| !f.trim().is_empty())
        .map(Filter::parse)
        .transpose()?;
    let mut start = parse_table_continuation(ctx.param("NextTableName"))?;
    let mut names = Vec::new();
    let mut next = None;
    for _ in 0..MAX_CATALOG_READS {
        let remaining = want.saturating_sub(names.len());
        let (tables, more) = gateway
            .service
            .list_tables(ctx.account(), start.as_deref(), remaining)
            .await?;
        for table in tables {
            let matches = filter.as_ref().is_none_or(|f| {
                f.matches(&Entity::new("", "").with("TableName", Value::String(table.name.clone())))
            });
            if matches {
                names.push(table.name);
            }
        }
        next = more;
        if names.len() >= want || next.is_none() {
            break;
        }
        start = next.clone();
    }
    let mut headers = vec![json_content_type(level)];
    if let Some(next) = next {
        headers.push(("x-ms-continuation-NextTableName", encode_token(&next)));
    }
    let body = json::tables_document(&names, level, &ctx.base_url, ctx.account());
    Ok(respond(StatusCode::OK, &headers, body))
}

pub(crate) async fn create_table(gateway: &Gateway, ctx: &Ctx) -> ApiResult<Response> {
    ctx.authorize(Access::CreateTable, None, None)?;
    check_content_type(ctx.header("content-type"))?;
    let level = ctx.metadata()?;
    let name = json::parse_table_name(&ctx.body)?;
    let name = TableName::new(&name)?;
    let info = gateway.service.create_table(ctx.account(), &name).await?;
    let location = format!("{}/Tables('{}')", ctx.base_url, info.name);
    match parse_prefer(ctx.header("prefer")) {
        Some(Prefer::NoContent) => Ok(respond(
            StatusCode::NO_CONTENT,
            &[
                ("preference-applied", "return-no-content".into()),
                ("location", location.clone()),
                ("dataserviceid", location),
            ],
            "",
        )),
        prefer => {
            let mut headers = vec![json_content_type(level), ("location", location)];
            if prefer == Some(Prefer::Content) {
                headers.push(("preference-applied", "return-content".into()));
            }
            let body = json::table_document(&info.name, level, &ctx.base_url, ctx.account());
            Ok(respond(StatusCode::CREATED, &headers, body))
        }
    }
}

pub(crate) async fn get_table(gateway: &Gateway, ctx: &Ctx, name: &str) -> ApiResult<Response> {
    ctx.authorize(Access::ReadTable, Some(name), None)?;
    let level = ctx.metadata()?;
    let info = gateway
        .service
        .get_table(ctx.account(), name)
        .await
        .map_err(|e| {
            if e.code == ErrorCode::TableNotFound {
                ApiError::from_code(ErrorCode::ResourceNotFound)
            } else {
                e.into()
            }
        })?;
    let body = json::table_document(&info.name, level, &ctx.base_url, ctx.account());
    Ok(respond(StatusCode::OK, &[json_content_type(level)], body))
}

pub(crate) async fn delete_table(gateway: &Gateway, ctx: &Ctx, name: &str) -> ApiResult<Response> {
    ctx.authorize(Access::DeleteTable, Some(name), None)?;
    gateway.service.delete_table(ctx.account(), name).await?;
    Ok(respond(StatusCode::NO_CONTENT, &[], ""))
}

pub(crate) async fn get_acl(gateway: &Gateway, ctx: &Ctx, table: &str) -> ApiResult<Response> {
    ctx.authorize(Access::TableAcl, Some(table), None)?;
    let info = gateway.service.get_table(ctx.account(), table).await?;
    let body = xml::signed_identifiers_document(&info.policies);
    Ok(respond(
        StatusCode::OK,
        &[("content-type", "application/xml".into())],
        body,
    ))
}

pub(crate) async fn set_acl(gateway: &Gateway, ctx: &Ctx, table: &str) -> ApiResult<Response> {
    ctx.authorize(Access::TableAcl, Some(table), None)?;
    let text = std::str::from_utf8(&ctx.body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidXmlDocument,
            "The request body is not UTF-8.",
        )
    })?;
    let policies = xml::parse_signed_identifiers(text)?;
    gateway
        .service
        .set_table_acl(ctx.account(), table, policies)
        .await?;
    Ok(respond(StatusCode::NO_CONTENT, &[], ""))
}
