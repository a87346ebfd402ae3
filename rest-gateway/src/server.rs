//! The router: one axum fallback handler that addresses, authenticates and dispatches every request,
//! and stamps Azure's common headers on every response.
//!
//! Azure's URL grammar (`/t(PartitionKey='a',RowKey='b')`, `MERGE`, `X-HTTP-Method` tunnelling) does not
//! fit a route table, so dispatch is a `match` over the parsed [`Resource`] and the effective method. The
//! order of checks is fixed: address → method tunnelling → CORS preflight (unauthenticated) → body size
//! (413 before anything is buffered; the rest of an oversized body is read and discarded so the client sees the answer) → authentication → body → handler. Every path through here ends in
//! an Azure-shaped response; bad input is a 4xx, never a 500 or a panic.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use trestle_types::{DateTime, ErrorCode};

use crate::auth::{self, Access, Accounts, AuthRequest, Credential};
use crate::config::{DEFAULT_API_VERSION, GatewayConfig, KNOWN_API_VERSIONS};
use crate::cors::{self, CorsRule};
use crate::error::{ApiError, ApiResult, ErrorFormat};
use crate::handlers;
use crate::json::{EntityUrls, MetadataLevel};
use crate::resource::{self, Resource, Target};
use crate::service::{Fencing, TableService};
use crate::xml;

/// The shared state of the gateway.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub service: Arc<dyn TableService>,
    pub config: Arc<GatewayConfig>,
    pub accounts: Arc<Accounts>,
}

/// Builds the Azure Table REST API over `service`. Call [`GatewayConfig::validate`] first.
///
/// Serve it with [`crate::listener::Server`] (or `into_make_service_with_connect_info::<SocketAddr>()`) so
/// SAS `sip` (IP range) checks can see the client address; without it, a SAS that names an IP range is
/// refused.
pub fn router(service: Arc<dyn TableService>, config: GatewayConfig) -> Router {
    let gateway = Gateway {
        service,
        accounts: Arc::new(Accounts::from_config(&config)),
        config: Arc::new(config),
    };
    Router::new().fallback(handle).with_state(gateway)
}

/// Everything a handler knows about the request it serves.
pub(crate) struct Ctx {
    pub request_id: String,
    pub now: DateTime,
    pub target: Target,
    pub base_url: String,
    /// The effective method, after `X-HTTP-Method` tunnelling.
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
    pub credential: Credential,
}

impl Ctx {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter by exact name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn account(&self) -> &str {
        &self.target.account
    }

    pub fn metadata(&self) -> ApiResult<MetadataLevel> {
        MetadataLevel::negotiate(self.header("accept"), self.param("$format"))
    }

    pub fn urls<'a>(&'a self, table: &'a str) -> EntityUrls<'a> {
        EntityUrls {
            base_url: &self.base_url,
            account: &self.target.account,
            table,
        }
    }

    pub fn authorize(
        &self,
        access: Access,
        table: Option<&str>,
        key: Option<&trestle_types::EntityKey>,
    ) -> ApiResult<()> {
        if self.target.secondary && access.is_write() {
            return Err(ApiError::new(
                ErrorCode::AuthorizationFailure,
                "Write operations are not allowed on the secondary endpoint.",
            ));
        }
        self.credential.authorize(access, table, key)
    }

    /// The `x-trestle-fencing-token: <lock>:<token>` header, if present.
    pub fn fencing(&self) -> ApiResult<Option<Fencing>> {
        let Some(value) = self.header("x-trestle-fencing-token") else {
            return Ok(None);
        };
        let bad = || {
            ApiError::new(
                ErrorCode::InvalidHeaderValue,
                "x-trestle-fencing-token must be <lock name>:<token>.",
            )
        };
        let (lock, token) = value.rsplit_once(':').ok_or_else(bad)?;
        let token = token.trim().parse().map_err(|_| bad())?;
        if lock.is_empty() {
            return Err(bad());
        }
        Ok(Some(Fencing {
            lock: lock.to_string(),
            token,
        }))
    }
}

/// Builds a response with a status, headers (invalid names or values are skipped) and a body.
pub(crate) fn respond(
    status: StatusCode,
    headers: &[(&str, String)],
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(State(gateway): State<Gateway>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let now = DateTime::now();
    let (parts, body) = request.into_parts();
    let query = parse_query(parts.uri.query());
    let format_param = query
        .iter()
        .find(|(k, _)| k == "$format")
        .map(|(_, v)| v.as_str());
    let error_format = ErrorFormat::negotiate(header_str(&parts.headers, "accept"), format_param);
    let requested = parts.headers.get("x-ms-version");
    let version = match requested.map(|v| v.to_str().map(str::trim)) {
        None => Some(DEFAULT_API_VERSION.to_string()),
        Some(Ok(v)) if KNOWN_API_VERSIONS.contains(&v) => Some(v.to_string()),
        // An unknown version is refused and, as Azure does, not echoed.
        Some(_) => None,
    };
    let client_request_id =
        header_str(&parts.headers, "x-ms-client-request-id").map(str::to_string);
    let origin = header_str(&parts.headers, "origin").map(str::to_string);
    let actual_method = parts.method.clone();

    let (account, result) = match &version {
        Some(_) => process(&gateway, parts, body, query, &request_id, now).await,
        None => (None, Err(unknown_version(requested))),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(code = %error.code, message = %error.message, request_id, "request failed");
            // A preflight never reaches the Table service's OData layer; Azure's front end answers it
            // in its own XML whatever the Accept header says.
            let format = if actual_method == Method::OPTIONS {
                ErrorFormat::Storage
            } else {
                error_format
            };
            error.into_response(format, &request_id, now)
        }
    };
    if let (Some(origin), Some(account)) = (origin, account)
        && actual_method != Method::OPTIONS
    {
        let rules = gateway.cors_rules(&account).await;
        let rule = cors::match_request(&rules, &origin, actual_method.as_str());
        if let Some(rule) = rule {
            add_cors_headers(&mut response, rule, &origin);
        }
        if cors::vary_by_origin(&rules, rule, actual_method.as_str())
            && let Ok(value) = HeaderValue::from_str("Origin")
        {
            response.headers_mut().insert("vary", value);
        }
    }
    decorate(
        &mut response,
        &request_id,
        version.as_deref(),
        client_request_id.as_deref(),
        now,
    );
    response
}

/// Azure's answer to an `x-ms-version` it does not know: 400 `InvalidHeaderValue` naming the header.
fn unknown_version(value: Option<&HeaderValue>) -> ApiError {
    let value = value.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    ApiError::new(
        ErrorCode::InvalidHeaderValue,
        format!(
            "The value for one of the HTTP headers is not in the correct format.\nHeaderName: \
             x-ms-version\nHeaderValue: {}",
            value.unwrap_or_default()
        ),
    )
}

fn add_cors_headers(response: &mut Response, rule: &CorsRule, origin: &str) {
    let mut headers = vec![(
        "access-control-allow-origin",
        cors::allow_origin_value(rule, origin),
    )];
    if !rule.exposed_headers.is_empty() {
        headers.push((
            "access-control-expose-headers",
            rule.exposed_headers.join(","),
        ));
    }
    if !rule.any_origin() {
        headers.push(("access-control-allow-credentials", "true".to_string()));
    }
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Azure's common response headers; values a handler already set are kept.
fn decorate(
    response: &mut Response,
    request_id: &str,
    version: Option<&str>,
    client_request_id: Option<&str>,
    now: DateTime,
) {
    static SERVER: HeaderValue =
        HeaderValue::from_static(concat!("Trestle-Table/", env!("CARGO_PKG_VERSION")));
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: Option<HeaderValue>| {
        if let Some(value) = value {
            headers.entry(name).or_insert(value);
        }
    };
    set("x-ms-request-id", HeaderValue::from_str(request_id).ok());
    set(
        "x-ms-version",
        version.and_then(|v| HeaderValue::from_str(v).ok()),
    );
    set("date", http_date(now));
    set("dataserviceversion", Some(HeaderValue::from_static("3.0;")));
    set(
        "x-content-type-options",
        Some(HeaderValue::from_static("nosniff")),
    );
    set("cache-control", Some(HeaderValue::from_static("no-cache")));
    set("server", Some(SERVER.clone()));
    if let Some(id) = client_request_id {
        set("x-ms-client-request-id", HeaderValue::from_str(id).ok());
    }
}

/// `now` as an HTTP date (`Tue, 24 Nov 2026 21:53:09 GMT`), formatted once per second and shared.
fn http_date(now: DateTime) -> Option<HeaderValue> {
    static LAST: std::sync::Mutex<Option<(i64, HeaderValue)>> = std::sync::Mutex::new(None);
    let second = now.ticks().div_euclid(10_000_000);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((s, v)) = last.as_ref()
        && *s == second
    {
        return Some(v.clone());
    }
    let text = now
        .to_chrono()?
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let value = HeaderValue::from_str(&text).ok()?;
    *last = Some((second, value.clone()));
    Some(value)
}

/// Resolves `X-HTTP-Method` tunnelling: only on POST, exactly once, and only to PUT, MERGE, PATCH or DELETE.
fn effective_method(method: &Method, headers: &HeaderMap) -> ApiResult<Method> {
    let values: Vec<&HeaderValue> = headers.get_all("x-http-method").iter().collect();
    let [value] = values.as_slice() else {
        return if values.is_empty() {
            Ok(method.clone())
        } else {
            Err(ApiError::from_code(ErrorCode::XMethodIncorrectCount))
        };
    };
    let value = value.to_str().unwrap_or("").trim();
    if value.contains(',') {
        return Err(ApiError::from_code(ErrorCode::XMethodIncorrectCount));
    }
    if method != Method::POST {
        return Err(ApiError::from_code(ErrorCode::XMethodNotUsingPost));
    }
    match value.to_ascii_uppercase().as_str() {
        "PUT" => Ok(Method::PUT),
        "DELETE" => Ok(Method::DELETE),
        "PATCH" => Ok(Method::PATCH),
        "MERGE" => Method::from_bytes(b"MERGE")
            .map_err(|_| ApiError::from_code(ErrorCode::XMethodIncorrectValue)),
        _ => Err(ApiError::from_code(ErrorCode::XMethodIncorrectValue)),
    }
}

async fn process(
    gateway: &Gateway,
    parts: http::request::Parts,
    body: Body,
    query: Vec<(String, String)>,
    request_id: &str,
    now: DateTime,
) -> (Option<String>, ApiResult<Response>) {
    let host = header_str(&parts.headers, HOST.as_str())
        .or_else(|| parts.uri.host())
        .map(str::to_string);
    let target = match resource::parse_target(host.as_deref(), parts.uri.path()) {
        Ok(target) => target,
        Err(error) => return (None, Err(error)),
    };
    let account = Some(target.account.clone());
    let result = async {
        let method = effective_method(&parts.method, &parts.headers)?;
        if method == Method::OPTIONS {
            return handlers::service::preflight(gateway, &target, &parts.headers).await;
        }
        let limit = gateway.config.max_body_bytes;
        let declared =
            header_str(&parts.headers, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            // A client that sent `Expect: 100-continue` is waiting for leave to send; it gets the 413
            // instead and sends nothing. Any other client is already sending.
            let waiting = header_str(&parts.headers, "expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
            let drained = waiting || drain(body).await;
            return Err(body_too_large(drained));
        }
        let https = parts
            .extensions
            .get::<crate::listener::TlsConnection>()
            .is_some()
            || (gateway.config.trust_forwarded_proto
                && header_str(&parts.headers, "x-forwarded-proto")
                    .is_some_and(|p| p.eq_ignore_ascii_case("https")));
        let peer: Option<IpAddr> = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let auth_request = AuthRequest {
            method: parts.method.as_str(),
            headers: &parts.headers,
            raw_path: parts.uri.path(),
            path_style: target.path_style,
            account: &target.account,
            query: &query,
            peer,
            https,
            now,
        };
        let credential = auth::authenticate(
            &auth_request,
            &gateway.accounts,
            &gateway.config,
            gateway.service.as_ref(),
        )
        .await?;
        let body = read_body(body, limit).await?;
        let scheme = if https { "https" } else { "http" };
        let host = host.clone().unwrap_or_else(|| "localhost".to_string());
        let base_url = if target.path_style {
            format!("{scheme}://{host}/{}", target.account)
        } else {
            format!("{scheme}://{host}")
        };
        let ctx = Ctx {
            request_id: request_id.to_string(),
            now,
            target: target.clone(),
            base_url,
            method,
            headers: parts.headers.clone(),
            query,
            body,
            credential,
        };
        route(gateway, &ctx).await
    }
    .await;
    (account, result)
}

/// How much of an oversized body the gateway reads and discards before answering 413. Clients that
/// write the whole body before reading the answer (Node's `http`, so the Azure JS SDK) see EPIPE or a
/// reset instead of the 413 if the connection closes under them; HTTP.sys, in front of Azure, reads
/// the rest likewise. Past this bound the gateway stops reading and closes the connection; a client
/// that stops sending is cut off by the body-read timeout.
pub(crate) const MAX_DISCARDED_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Reads the body; over `limit` bytes it is 413 `RequestBodyTooLarge` (after [`drain`]ing the rest).
async fn read_body(mut body: Body, limit: usize) -> ApiResult<Bytes> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if crate::listener::is_chunk_too_large(&e) {
                // Declared chunk sizes past what the gateway drains: too large, and unreadable.
                body_too_large(false)
            } else {
                ApiError::invalid_input("The request body could not be read.")
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if collected.len() + data.len() > limit {
            return Err(body_too_large(drain(body).await));
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

/// Reads and discards the rest of a request body, up to [`MAX_DISCARDED_BODY_BYTES`]; whether it ended.
async fn drain(mut body: Body) -> bool {
    let mut discarded = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            discarded += data.len() as u64;
            if discarded > MAX_DISCARDED_BODY_BYTES {
                return false;
            }
        }
    }
    true
}

/// 413 `RequestBodyTooLarge`; when the body was not read to its end the connection cannot carry
/// another request, so the answer says it closes.
fn body_too_large(drained: bool) -> ApiError {
    let mut error = ApiError::from_code(ErrorCode::RequestBodyTooLarge);
    if !drained {
        error.headers.push(("connection", "close".to_string()));
    }
    error
}

fn method_not_allowed() -> ApiError {
    ApiError::from_code(ErrorCode::MethodNotAllowed)
}

async fn route(gateway: &Gateway, ctx: &Ctx) -> ApiResult<Response> {
    let method = ctx.method.as_str();
    let comp = ctx.param("comp");
    match &ctx.target.resource {
        Resource::ServiceRoot => {
            if ctx.param("restype") != Some("service") {
                return Err(ApiError::from_code(ErrorCode::InvalidUri));
            }
            match (comp, method) {
                (Some("properties"), "GET") => {
                    handlers::service::get_properties(gateway, ctx).await
                }
                (Some("properties"), "PUT") => {
                    handlers::service::set_properties(gateway, ctx).await
                }
                (Some("stats"), "GET") => handlers::service::stats(ctx),
                (Some("properties" | "stats"), _) => {
                    Err(ApiError::from_code(ErrorCode::UnsupportedHttpVerb))
                }
                _ => Err(ApiError::from_code(ErrorCode::InvalidQueryParameterValue)),
            }
        }
        Resource::Tables => match method {
            "GET" => handlers::tables::query_tables(gateway, ctx).await,
            "POST" => handlers::tables::create_table(gateway, ctx).await,
            _ => Err(method_not_allowed()),
        },
        Resource::Table(name) => match method {
            "GET" => handlers::tables::get_table(gateway, ctx, name).await,
            "DELETE" => handlers::tables::delete_table(gateway, ctx, name).await,
            _ => Err(method_not_allowed()),
        },
        Resource::Batch => match method {
            "POST" => handlers::batch::batch(gateway, ctx).await,
            _ => Err(method_not_allowed()),
        },
        Resource::EntitySet(table) => match (comp, method) {
            (Some("acl"), "GET" | "HEAD") => handlers::tables::get_acl(gateway, ctx, table).await,
            (Some("acl"), "PUT") => handlers::tables::set_acl(gateway, ctx, table).await,
            (Some("acl"), _) => Err(method_not_allowed()),
            (Some(_), _) => Err(ApiError::from_code(ErrorCode::InvalidQueryParameterValue)),
            (None, "GET") => handlers::query::query_entities(gateway, ctx, table).await,
            (None, "POST") => handlers::entities::insert(gateway, ctx, table).await,
            _ => Err(method_not_allowed()),
        },
        Resource::Entity { table, key } => match method {
            "GET" => handlers::entities::get(gateway, ctx, table, key).await,
            "PUT" | "MERGE" | "PATCH" => handlers::entities::update(gateway, ctx, table, key).await,
            "DELETE" => handlers::entities::delete(gateway, ctx, table, key).await,
            _ => Err(method_not_allowed()),
        },
    }
}

impl Gateway {
    /// The account's CORS rules: from its stored service properties, else the configured defaults.
    pub async fn cors_rules(&self, account: &str) -> Vec<CorsRule> {
        let stored = match self.service.get_service_properties(account).await {
            Ok(Some(text)) => xml::parse_tree(&text)
                .ok()
                .and_then(|root| root.child("Cors").and_then(|c| xml::cors_rules(c).ok())),
            _ => None,
        };
        match stored {
            Some(rules) if !rules.is_empty() => rules,
            _ => self.config.default_cors.clone(),
        }
    }
}

/// The content type of JSON responses at the negotiated level.
pub(crate) fn json_content_type(level: MetadataLevel) -> (&'static str, String) {
    (CONTENT_TYPE.as_str(), level.content_type().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_http_method_rules() {
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-http-method", HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert_eq!(
            effective_method(&Method::GET, &headers(&[])).unwrap(),
            Method::GET
        );
        assert_eq!(
            effective_method(&Method::POST, &headers(&["MERGE"]))
                .unwrap()
                .as_str(),
            "MERGE"
        );
        assert_eq!(
            effective_method(&Method::POST, &headers(&["delete"])).unwrap(),
            Method::DELETE
        );
        let code = |m: &Method, v: &[&str]| effective_method(m, &headers(v)).unwrap_err().code;
        assert_eq!(
            code(&Method::PUT, &["MERGE"]),
            ErrorCode::XMethodNotUsingPost
        );
        assert_eq!(
            code(&Method::POST, &["GET"]),
            ErrorCode::XMethodIncorrectValue
        );
        assert_eq!(
            code(&Method::POST, &["PUT", "MERGE"]),
            ErrorCode::XMethodIncorrectCount
        );
        assert_eq!(
            code(&Method::POST, &["PUT,MERGE"]),
            ErrorCode::XMethodIncorrectCount
        );
    }
}
