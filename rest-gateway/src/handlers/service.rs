//! Account-level operations: Get/Set Table Service Properties, Get Service Stats, and CORS preflight.
//!
//! Service properties are XML documents stored through the service trait; Set replaces only the
//! top-level elements it supplies (Azure's merge rule) and answers 202. Stats are served only on the
//! `{account}-secondary` endpoint, as Azure does (the primary answers 400 `InvalidQueryParameterValue`).
//! Preflight requests are answered without authentication from the account's CORS rules.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use trestle_types::{DateTime, ErrorCode};

use crate::auth::Access;
use crate::cors;
use crate::error::{ApiError, ApiResult};
use crate::resource::Target;
use crate::server::{Ctx, Gateway, respond};
use crate::xml;

const XML: &str = "application/xml";

fn rfc1123(time: DateTime) -> String {
    time.to_chrono()
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

pub(crate) async fn get_properties(gateway: &Gateway, ctx: &Ctx) -> ApiResult<Response> {
    ctx.authorize(Access::ReadServiceProperties, None, None)?;
    let body = match gateway
        .service
        .get_service_properties(ctx.account())
        .await?
    {
        Some(text) => text,
        None => xml::default_service_properties().to_document(),
    };
    Ok(respond(
        StatusCode::OK,
        &[("content-type", XML.into())],
        body,
    ))
}

pub(crate) async fn set_properties(gateway: &Gateway, ctx: &Ctx) -> ApiResult<Response> {
    ctx.authorize(Access::WriteServiceProperties, None, None)?;
    let text = std::str::from_utf8(&ctx.body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidXmlDocument,
            "The request body is not UTF-8.",
        )
    })?;
    let update = xml::parse_service_properties(text)?;
    let mut stored = match gateway
        .service
        .get_service_properties(ctx.account())
        .await?
    {
        Some(text) => xml::parse_tree(&text).unwrap_or_else(|_| xml::default_service_properties()),
        None => xml::default_service_properties(),
    };
    xml::merge_service_properties(&mut stored, update);
    gateway
        .service
        .set_service_properties(ctx.account(), stored.to_document())
        .await?;
    Ok(respond(StatusCode::ACCEPTED, &[], ""))
}

pub(crate) fn stats(ctx: &Ctx) -> ApiResult<Response> {
    ctx.authorize(Access::ServiceStats, None, None)?;
    if !ctx.target.secondary {
        return Err(ApiError::new(
            ErrorCode::InvalidQueryParameterValue,
            "Service stats are served only by the secondary endpoint ({account}-secondary).",
        ));
    }
    let body = xml::service_stats_document(&rfc1123(ctx.now));
    Ok(respond(
        StatusCode::OK,
        &[("content-type", XML.into())],
        body,
    ))
}

/// Answers a CORS preflight (`OPTIONS`) request.
pub(crate) async fn preflight(
    gateway: &Gateway,
    target: &Target,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(method)) = (get("origin"), get("access-control-request-method")) else {
        return Err(ApiError::new(
            ErrorCode::InvalidHeaderValue,
            "A CORS preflight request needs Origin and Access-Control-Request-Method headers.",
        ));
    };
    if !gateway.accounts.contains(&target.account) {
        return Err(ApiError::from_code(ErrorCode::CorsPreflightFailure));
    }
    let requested = get("access-control-request-headers")
        .map(cors::split_header_list)
        .unwrap_or_default();
    let rules = gateway.cors_rules(&target.account).await;
    let rule = cors::match_preflight(&rules, origin, method, &requested)
        .ok_or_else(|| ApiError::from_code(ErrorCode::CorsPreflightFailure))?;
    let mut out = vec![
        (
            "access-control-allow-origin",
            cors::allow_origin_value(rule, origin),
        ),
        ("access-control-allow-methods", method.to_string()),
        (
            "access-control-max-age",
            rule.max_age_in_seconds.to_string(),
        ),
        ("vary", "Origin".to_string()),
    ];
    if !requested.is_empty() {
        out.push(("access-control-allow-headers", requested.join(",")));
    }
    if !rule.any_origin() {
        out.push(("access-control-allow-credentials", "true".to_string()));
    }
    Ok(respond(StatusCode::OK, &out, ""))
}
