//! Test support: a gateway on 127.0.0.1 (OS-chosen port) over the in-memory table service, and a small
//! HTTP client that signs requests with the gateway's own Shared Key signer, as an SDK would.

#![allow(dead_code)]

pub mod memory;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use trestle_rest_gateway::auth::sas::{SasParams, account_strings_to_sign, table_string_to_sign};
use trestle_rest_gateway::auth::shared_key::{Scheme, authorization_header, sign};
use trestle_rest_gateway::config::{DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use trestle_rest_gateway::{GatewayConfig, router};

pub use memory::MemoryTableService;

/// A running gateway.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub service: Arc<MemoryTableService>,
    pub client: reqwest::Client,
    pub key: Vec<u8>,
}

/// How a request authenticates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Auth {
    SharedKey,
    SharedKeyLite,
    None,
}

impl TestGateway {
    /// Starts a gateway with the test configuration.
    pub async fn start() -> TestGateway {
        Self::start_with(GatewayConfig::for_test()).await
    }

    pub async fn start_with(config: GatewayConfig) -> TestGateway {
        config.validate().expect("valid config");
        let service = Arc::new(MemoryTableService::new());
        let app = router(service.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        TestGateway {
            addr,
            service,
            client: reqwest::Client::new(),
            key: STANDARD.decode(DEV_ACCOUNT_KEY).expect("key"),
        }
    }

    /// The account's base URL, path-style.
    pub fn base(&self) -> String {
        format!("http://{}/{DEV_ACCOUNT}", self.addr)
    }

    /// A request to `path` (relative to the account, e.g. `Tables` or `t1()?$top=2`).
    pub fn request(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            gateway: self,
            method: method.to_string(),
            url: format!("{}/{path}", self.base()),
            headers: vec![
                ("x-ms-version".into(), "2019-02-02".into()),
                (
                    "Accept".into(),
                    "application/json;odata=minimalmetadata".into(),
                ),
                ("DataServiceVersion".into(), "3.0".into()),
            ],
            body: Vec::new(),
            auth: Auth::SharedKey,
        }
    }

    /// A request to an absolute URL on this server (for secondary and host-style tests).
    pub fn request_url(&self, method: &str, url: &str) -> Req<'_> {
        let mut req = self.request(method, "");
        req.url = url.to_string();
        req
    }

    /// Creates a table, asserting success.
    pub async fn must_create_table(&self, name: &str) {
        let resp = self
            .request("POST", "Tables")
            .json(&format!("{{\"TableName\":\"{name}\"}}"))
            .send()
            .await;
        assert_eq!(resp.status, 201, "create table {name}: {}", resp.body);
    }

    /// Inserts an entity (JSON text), asserting success; returns the ETag.
    pub async fn must_insert(&self, table: &str, entity: &str) -> String {
        let resp = self
            .request("POST", table)
            .json(entity)
            .header("Prefer", "return-no-content")
            .send()
            .await;
        assert_eq!(resp.status, 204, "insert into {table}: {}", resp.body);
        resp.header("etag").expect("etag").to_string()
    }

    /// A table SAS query string for the dev account.
    pub fn table_sas(
        &self,
        table: &str,
        permissions: &str,
        range: [Option<&str>; 4],
        extra: &[(&str, &str)],
    ) -> String {
        let mut pairs: Vec<(String, String)> = vec![
            ("sv".into(), "2019-02-02".into()),
            ("tn".into(), table.into()),
            ("sp".into(), permissions.into()),
        ];
        if !extra.iter().any(|(k, _)| *k == "se") {
            pairs.push(("se".into(), "2099-01-01T00:00:00Z".into()));
        }
        for (name, value) in ["spk", "srk", "epk", "erk"].iter().zip(range) {
            if let Some(value) = value {
                pairs.push((name.to_string(), value.to_string()));
            }
        }
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let params =
            SasParams::from_query(&[pairs.clone(), vec![("sig".into(), String::new())]].concat())
                .expect("params");
        let sig = sign(
            &self.key,
            &table_string_to_sign(DEV_ACCOUNT, &table.to_ascii_lowercase(), &params),
        );
        pairs.push(("sig".into(), sig));
        encode_query(&pairs)
    }

    /// An account SAS query string for the dev account.
    pub fn account_sas(
        &self,
        services: &str,
        resource_types: &str,
        permissions: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let mut pairs: Vec<(String, String)> = vec![
            ("sv".into(), "2019-02-02".into()),
            ("ss".into(), services.into()),
            ("srt".into(), resource_types.into()),
            ("sp".into(), permissions.into()),
        ];
        if !extra.iter().any(|(k, _)| *k == "se") {
            pairs.push(("se".into(), "2099-01-01T00:00:00Z".into()));
        }
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let params =
            SasParams::from_query(&[pairs.clone(), vec![("sig".into(), String::new())]].concat())
                .expect("params");
        let sig = sign(&self.key, &account_strings_to_sign(DEV_ACCOUNT, &params)[0]);
        pairs.push(("sig".into(), sig));
        encode_query(&pairs)
    }
}

fn encode_query(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The current time in RFC 1123 form, for `x-ms-date`.
pub fn now_rfc1123() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// A request being built.
pub struct Req<'a> {
    gateway: &'a TestGateway,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    auth: Auth,
}

impl Req<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a header without replacing earlier ones of the same name.
    pub fn append_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    pub fn json(self, body: &str) -> Self {
        self.header("Content-Type", "application/json")
            .body(body.as_bytes().to_vec())
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Appends a query string (e.g. a SAS) and sends without Shared Key.
    pub fn query(mut self, query: &str) -> Self {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        self.url = format!("{}{sep}{query}", self.url);
        self
    }

    pub async fn send(self) -> Resp {
        let url = reqwest::Url::parse(&self.url).expect("url");
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).expect("method");
        let mut builder = self.gateway.client.request(method, url.clone());
        let has_date = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-ms-date"));
        let date = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-ms-date"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(now_rfc1123);
        if !has_date && self.auth != Auth::None {
            builder = builder.header("x-ms-date", &date);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if self.auth != Auth::None {
            let content_type = self
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.as_str());
            let comp = url
                .query_pairs()
                .find(|(k, _)| k == "comp")
                .map(|(_, v)| format!("?comp={v}"));
            let resource = format!("/{DEV_ACCOUNT}{}{}", url.path(), comp.unwrap_or_default());
            let scheme = if self.auth == Auth::SharedKey {
                Scheme::SharedKey
            } else {
                Scheme::SharedKeyLite
            };
            let header = authorization_header(
                scheme,
                DEV_ACCOUNT,
                &self.gateway.key,
                &self.method,
                content_type.unwrap_or(""),
                &date,
                &resource,
            );
            builder = builder.header("Authorization", header);
        }
        let response = builder.body(self.body).send().await.expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        Resp {
            status,
            headers,
            body,
        }
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts an Azure error: status, `x-ms-error-code`, and the code in the body (JSON or XML).
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.header("x-ms-error-code"),
            Some(code),
            "body: {}",
            self.body
        );
        if self.body.trim_start().starts_with('{') {
            assert_eq!(self.json()["odata.error"]["code"], code);
            let message = self.json()["odata.error"]["message"]["value"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(
                message.contains("\nRequestId:") && message.contains("\nTime:"),
                "{message}"
            );
        } else {
            assert!(
                self.body.contains(&format!("<code>{code}</code>"))
                    || self.body.contains(&format!("<Code>{code}</Code>")),
                "body: {}",
                self.body
            );
        }
    }
}
