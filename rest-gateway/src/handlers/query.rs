//! Query Entities: `GET /t()` with `$filter`, `$select`, `$top` and continuation.
//!
//! The filter AST goes to the service, which evaluates it on the partition server and returns one page in
//! (PartitionKey, RowKey) order. A table SAS with a key range clips the query: the scan starts no earlier
//! than the range's first key, entities outside the range are dropped, and the continuation stops at the
//! range's end. A clipped page may be short or even empty while still carrying a continuation, which
//! Azure's paging contract allows.

use axum::response::Response;
use http::StatusCode;
use trestle_types::{Filter, QuerySpec};

use super::{parse_select, parse_top};
use crate::auth::Access;
use crate::continuation::{entity_continuation_headers, parse_entity_continuation};
use crate::error::ApiResult;
use crate::json;
use crate::server::{Ctx, Gateway, json_content_type, respond};

pub(crate) async fn query_entities(
    gateway: &Gateway,
    ctx: &Ctx,
    table: &str,
) -> ApiResult<Response> {
    ctx.authorize(Access::QueryEntities, Some(table), None)?;
    let level = ctx.metadata()?;
    let top = parse_top(ctx.param("$top"))?;
    let filter = ctx
        .param("$filter")
        .filter(|f| !f.trim().is_empty())
        .map(Filter::parse)
        .transpose()?;
    let select = parse_select(ctx.param("$select"));
    let mut continuation =
        parse_entity_continuation(ctx.param("NextPartitionKey"), ctx.param("NextRowKey"))?;
    let range = ctx.credential.key_range();
    if let Some(range) = range {
        continuation = range.clip_start(continuation);
    }
    let spec = QuerySpec {
        filter,
        select: select.clone(),
        top,
        continuation,
    };
    let mut page = gateway.service.query(ctx.account(), table, spec).await?;
    if let Some(range) = range {
        range.clip_page(&mut page);
    }
    let mut headers = vec![json_content_type(level)];
    if let Some(next) = &page.next {
        headers.extend(entity_continuation_headers(next));
    }
    let body = json::query_document(&page.entities, level, &ctx.urls(table), select.as_deref());
    Ok(respond(StatusCode::OK, &headers, body))
}
