//! The Azure Table REST driver: one HTTP/1.1 keep-alive connection per worker, Shared Key signed, the same
//! requests the Azure SDKs send, so Trestle and Azurite are measured on identical traffic.
//!
//! A worker owns its connection (hyper's low-level `client::conn::http1`, no pool, no locks), as `wrk`
//! does: concurrency N means N connections. A failed or timed-out request drops the connection; the next
//! operation reconnects. Responses are read to the end (keep-alive needs it) but parsed only as far as the
//! result needs: the status, the entity count of a query page, the status lines of a batch.
//!
//! `https://` targets wrap the same connection in TLS ([`crate::tls`], rustls) before the HTTP/1.1
//! handshake; the request path after that is the same code, so plain and TLS runs differ only in the
//! stream under hyper.
//!
//! Headers on every request: `x-ms-date`, `x-ms-version: 2019-02-02`, `DataServiceVersion: 3.0`,
//! `Accept: application/json;odata=minimalmetadata` (what the SDKs send by default) and `Authorization`;
//! inserts and batch operations add `Prefer: return-no-content`, as an SDK's `create_entity` does.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tokio::net::TcpStream;

use crate::bodies::Payload;
use crate::driver::{OpError, count_occurrences};
use crate::signing::{SharedKey, http_date};
use crate::tls::ClientTls;
use crate::workload::Op;

const ACCEPT: &str = "application/json;odata=minimalmetadata";
const API_VERSION: &str = "2019-02-02";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters escaped in key predicates and `$filter` values (the rest of the path is ours and plain).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'&')
    .add(b'+');

/// Where a REST endpoint is and how to sign for it.
#[derive(Debug, Clone)]
pub struct RestTarget {
    /// `host:port`, for the socket and the `Host` header.
    pub authority: String,
    /// The path prefix of the account: `/devstoreaccount1` for path-style URLs, empty for host-style.
    pub base_path: String,
    /// `http://{authority}` or `https://{authority}`, used inside batch bodies.
    pub origin: String,
    /// `{origin}{base_path}`, used inside batch bodies.
    pub base_url: String,
    pub key: SharedKey,
    /// Set for `https://` URLs.
    pub tls: Option<ClientTls>,
}

impl RestTarget {
    /// `url` is the account URL, e.g. `http://127.0.0.1:10002/devstoreaccount1`. The account is the first
    /// path segment unless `account` names it (host-style URLs). `https://` URLs need `ca_file`, the
    /// PEM certificates the server's certificate is verified against (`--ca-file`).
    pub fn parse(
        url: &str,
        account: Option<&str>,
        key_base64: &str,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<RestTarget> {
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            bail!("a REST endpoint is an http:// or https:// URL, got {url}");
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p.trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("no host in {url}");
        }
        let account = match account {
            Some(a) => a.to_string(),
            None => path
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| anyhow!("no account in {url}; pass --account"))?
                .to_string(),
        };
        let base_path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        let tls = match (https, ca_file) {
            (false, _) => None,
            (true, Some(ca)) => Some(ClientTls::new(authority, ca)?),
            (true, None) => bail!("{url}: an https:// target needs --ca-file"),
        };
        let origin = format!("{}://{authority}", if https { "https" } else { "http" });
        Ok(RestTarget {
            authority: authority.to_string(),
            base_url: format!("{origin}{base_path}"),
            origin,
            base_path,
            key: SharedKey::new(&account, key_base64)?,
            tls,
        })
    }
}

/// How a batch writes its entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Insert,
    /// Insert Or Replace (PUT without If-Match): what the load phase uses, so it can be repeated.
    Upsert,
}

/// One worker's connection to a REST endpoint.
pub struct RestConn {
    target: Arc<RestTarget>,
    table: String,
    payload: Payload,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// `x-ms-date` of the current second, reformatted only when the second changes.
    date: (i64, String),
    batch_seq: u64,
}

impl RestConn {
    pub fn new(target: Arc<RestTarget>, table: &str, payload: Payload) -> RestConn {
        RestConn {
            target,
            table: table.to_string(),
            payload,
            sender: None,
            date: (0, String::new()),
            batch_seq: 0,
        }
    }

    fn date(&mut self) -> &str {
        let now = chrono::Utc::now();
        if now.timestamp() != self.date.0 {
            self.date = (now.timestamp(), http_date(now));
        }
        &self.date.1
    }

    fn entity_path(&self, pk: &str, rk: &str) -> String {
        format!(
            "{}/{}(PartitionKey='{}',RowKey='{}')",
            self.target.base_path,
            self.table,
            utf8_percent_encode(&pk.replace('\'', "''"), PATH),
            utf8_percent_encode(&rk.replace('\'', "''"), PATH),
        )
    }

    fn request(
        &mut self,
        method: Method,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        body: Bytes,
        prefer_no_content: bool,
    ) -> Result<Request<Full<Bytes>>, OpError> {
        let date = self.date().to_string();
        let auth = self
            .target
            .key
            .authorization(method.as_str(), content_type, &date, path, query);
        let uri = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("Host", &self.target.authority)
            .header("x-ms-date", date)
            .header("x-ms-version", API_VERSION)
            .header("DataServiceVersion", "3.0")
            .header("MaxDataServiceVersion", "3.0;NetFx")
            .header("Accept", ACCEPT)
            .header("Authorization", auth);
        if !content_type.is_empty() {
            b = b.header("Content-Type", content_type);
        }
        if prefer_no_content {
            b = b.header("Prefer", HeaderValue::from_static("return-no-content"));
        }
        b.body(Full::new(body))
            .map_err(|e| OpError::new(format!("request: {e}")))
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, OpError> {
        let usable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !usable {
            let stream = TcpStream::connect(&self.target.authority)
                .await
                .map_err(|e| OpError::new(format!("connect: {}", e.kind())))?;
            stream
                .set_nodelay(true)
                .map_err(|e| OpError::new(format!("connect: {}", e.kind())))?;
            // The sender is the same type over either stream: only the spawned connection task differs.
            let sender = match &self.target.tls {
                None => {
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|_| OpError::new("connect: handshake"))?;
                    tokio::spawn(conn);
                    sender
                }
                Some(tls) => {
                    let stream = tls
                        .connector
                        .connect(tls.server_name.clone(), stream)
                        .await
                        .map_err(|e| OpError::new(format!("connect: tls {}", e.kind())))?;
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|_| OpError::new("connect: handshake"))?;
                    tokio::spawn(conn);
                    sender
                }
            };
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| OpError::new("connect: no connection"))
    }

    /// Sends a request and reads the whole response; a transport failure drops the connection.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), OpError> {
        let sender = self.sender().await?;
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|_| OpError::new("io: connection closed"))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| OpError::new(format!("io: {}", short_hyper_error(&e))))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|_| OpError::new("io: body"))?
                .to_bytes();
            Ok::<_, OpError>((status, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(OpError::new("timeout"))
            }
        }
    }

    /// Creates the table; an existing table is fine.
    pub async fn create_table(&mut self) -> Result<(), OpError> {
        let path = format!("{}/Tables", self.target.base_path);
        let body = Bytes::from(format!("{{\"TableName\":\"{}\"}}", self.table));
        let req = self.request(Method::POST, &path, None, "application/json", body, true)?;
        let (status, body) = self.send(req).await?;
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        Err(http_error(status, &body))
    }

    /// Runs one operation; returns the entities written or read.
    pub async fn execute(&mut self, op: &Op) -> Result<u64, OpError> {
        match op {
            Op::Insert { pk, rk, seq } => {
                let path = format!("{}/{}", self.target.base_path, self.table);
                let body = Bytes::from(self.payload.json_entity(pk, rk, *seq));
                let req =
                    self.request(Method::POST, &path, None, "application/json", body, true)?;
                self.expect(req, 1).await
            }
            Op::Get { pk, rk } => {
                let path = self.entity_path(pk, rk);
                let req = self.request(Method::GET, &path, None, "", Bytes::new(), false)?;
                self.expect(req, 1).await
            }
            Op::Upsert { pk, rk, seq } | Op::Merge { pk, rk, seq } => {
                let method = if matches!(op, Op::Upsert { .. }) {
                    Method::PUT
                } else {
                    Method::from_bytes(b"MERGE").map_err(|_| OpError::new("request: method"))?
                };
                let path = self.entity_path(pk, rk);
                let body = Bytes::from(self.payload.json_entity(pk, rk, *seq));
                let req = self.request(method, &path, None, "application/json", body, false)?;
                self.expect(req, 1).await
            }
            Op::Query { pk, top } => {
                let path = format!("{}/{}()", self.target.base_path, self.table);
                let filter = format!("PartitionKey eq '{pk}'");
                let query = format!("$filter={}&$top={top}", utf8_percent_encode(&filter, PATH));
                let req =
                    self.request(Method::GET, &path, Some(&query), "", Bytes::new(), false)?;
                let (status, body) = self.send(req).await?;
                if !status.is_success() {
                    return Err(http_error(status, &body));
                }
                Ok(count_occurrences(&body, b"\"RowKey\":"))
            }
            Op::Batch { pk, rks, seq } => {
                let rows: Vec<(&str, u64)> = rks.iter().map(|rk| (rk.as_str(), *seq)).collect();
                self.batch(pk, &rows, BatchKind::Insert).await
            }
            Op::Lock => Err(OpError::new("a lock operation on a table connection")),
        }
    }

    async fn expect(&mut self, req: Request<Full<Bytes>>, entities: u64) -> Result<u64, OpError> {
        let (status, body) = self.send(req).await?;
        if status.is_success() {
            Ok(entities)
        } else {
            Err(http_error(status, &body))
        }
    }

    /// An entity group transaction of `rows` in partition `pk`.
    pub async fn batch(
        &mut self,
        pk: &str,
        rows: &[(&str, u64)],
        kind: BatchKind,
    ) -> Result<u64, OpError> {
        self.batch_seq += 1;
        let id = format!("{:016x}", crate::workload::fnv1a(self.batch_seq));
        let body = self.batch_body(&id, pk, rows, kind);
        let path = format!("{}/$batch", self.target.base_path);
        let content_type = format!("multipart/mixed; boundary=batch_{id}");
        let req = self.request(
            Method::POST,
            &path,
            None,
            &content_type,
            Bytes::from(body),
            false,
        )?;
        let (status, body) = self.send(req).await?;
        if status != StatusCode::ACCEPTED {
            return Err(http_error(status, &body));
        }
        match batch_failure(&body) {
            Some(code) => Err(OpError::new(format!("batch: http-{code}"))),
            None => Ok(rows.len() as u64),
        }
    }

    fn batch_body(&self, id: &str, pk: &str, rows: &[(&str, u64)], kind: BatchKind) -> String {
        let mut out = String::with_capacity(rows.len() * (self.payload.entity_size() + 400));
        out.push_str(&format!(
            "--batch_{id}\r\nContent-Type: multipart/mixed; boundary=changeset_{id}\r\n\r\n"
        ));
        for (i, (rk, seq)) in rows.iter().enumerate() {
            let (method, url) = match kind {
                BatchKind::Insert => ("POST", format!("{}/{}", self.target.base_url, self.table)),
                BatchKind::Upsert => (
                    "PUT",
                    format!("{}{}", self.target.origin, self.entity_path(pk, rk)),
                ),
            };
            out.push_str(&format!(
                "--changeset_{id}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\
                 Content-ID: {i}\r\n\r\n{method} {url} HTTP/1.1\r\nContent-Type: application/json\r\n\
                 Accept: {ACCEPT}\r\nPrefer: return-no-content\r\nDataServiceVersion: 3.0;\r\n\r\n{}\r\n",
                self.payload.json_entity(pk, rk, *seq)
            ));
        }
        out.push_str(&format!("--changeset_{id}--\r\n\r\n--batch_{id}--\r\n"));
        out
    }
}

/// The first failed status in a batch response body (`HTTP/1.1 409 Conflict`), if any.
pub fn batch_failure(body: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(body);
    text.split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|s| s.get(..3)?.parse::<u16>().ok())
        .find(|code| *code >= 300)
}

/// `http-409 EntityAlreadyExists`: the status and, when the body is an OData error, its code.
fn http_error(status: StatusCode, body: &[u8]) -> OpError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["odata.error"]["code"].as_str().map(str::to_string));
    match code {
        Some(c) => OpError::new(format!("http-{} {c}", status.as_u16())),
        None => OpError::new(format!("http-{}", status.as_u16())),
    }
}

fn short_hyper_error(e: &hyper::Error) -> &'static str {
    if e.is_canceled() {
        "canceled"
    } else if e.is_closed() || e.is_incomplete_message() {
        "connection closed"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "protocol"
    }
}

/// Checks that an endpoint answers (used before a run, for a clear error instead of a wall of failures).
pub async fn probe(target: &Arc<RestTarget>) -> anyhow::Result<()> {
    let mut conn = RestConn::new(target.clone(), "Tables", Payload::new(0, 0));
    let path = format!("{}/Tables", target.base_path);
    let req = conn
        .request(Method::GET, &path, None, "", Bytes::new(), false)
        .map_err(|e| anyhow!("{e}"))?;
    let (status, body) = conn
        .send(req)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reaching {}", target.base_url))?;
    if !status.is_success() {
        bail!(
            "{} answered {status} to List Tables: {}",
            target.base_url,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Arc<RestTarget> {
        Arc::new(
            RestTarget::parse(
                "http://127.0.0.1:10002/devstoreaccount1/",
                None,
                crate::signing::DEV_ACCOUNT_KEY,
                None,
            )
            .unwrap(),
        )
    }

    #[test]
    fn path_style_urls_name_the_account() {
        let t = target();
        assert_eq!(t.authority, "127.0.0.1:10002");
        assert_eq!(t.base_path, "/devstoreaccount1");
        assert_eq!(t.key.account(), "devstoreaccount1");
        assert!(t.tls.is_none());
        let host = RestTarget::parse("http://h:1", Some("acct"), "a2V5", None).unwrap();
        assert_eq!((host.base_path.as_str(), host.key.account()), ("", "acct"));
        assert!(RestTarget::parse("http://h:1", None, "a2V5", None).is_err());
        assert!(RestTarget::parse("ftp://h:1/a", None, "a2V5", None).is_err());
    }

    /// A self-signed certificate for 127.0.0.1 and localhost, as `trestle dev --tls` makes: (PEM
    /// file, its rustls server configuration).
    fn dev_certificate(dir: &Path) -> (std::path::PathBuf, Arc<rustls::ServerConfig>) {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        let pem = dir.join("cert.pem");
        std::fs::write(&pem, c.cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        (pem, Arc::new(config))
    }

    #[test]
    fn https_urls_need_a_ca_file_and_keep_their_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let (pem, _) = dev_certificate(dir.path());
        let url = "https://127.0.0.1:10002/devstoreaccount1";
        let key = crate::signing::DEV_ACCOUNT_KEY;
        assert!(RestTarget::parse(url, None, key, None).is_err());
        let t = RestTarget::parse(url, None, key, Some(&pem)).unwrap();
        assert_eq!(t.authority, "127.0.0.1:10002");
        assert_eq!(t.origin, "https://127.0.0.1:10002");
        assert_eq!(t.base_url, "https://127.0.0.1:10002/devstoreaccount1");
        assert!(t.tls.is_some());
        let c = RestConn::new(Arc::new(t), "bench", Payload::new(0, 0));
        let upsert = c.batch_body("x", "p1", &[("r1", 1)], BatchKind::Upsert);
        assert!(upsert.contains(
            "PUT https://127.0.0.1:10002/devstoreaccount1/bench(PartitionKey='p1',RowKey='r1') HTTP/1.1"
        ));
        // A plain URL ignores the CA file.
        let plain = RestTarget::parse("http://h:1/a", None, key, Some(&pem)).unwrap();
        assert!(plain.tls.is_none());
    }

    /// Handshakes and requests a TLS test server has served.
    #[derive(Default)]
    struct Served {
        connections: std::sync::atomic::AtomicUsize,
        requests: std::sync::atomic::AtomicUsize,
    }

    /// A TLS server that answers every request with `200 OK` and an empty body, keeping connections
    /// alive.
    async fn tls_responder(
        config: Arc<rustls::ServerConfig>,
    ) -> (String, Arc<Served>, tokio::task::JoinHandle<()>) {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let served = Arc::new(Served::default());
        let counts = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counts) = (acceptor.clone(), counts.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counts.connections.fetch_add(1, Relaxed);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = tls.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            counts.requests.fetch_add(1, Relaxed);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if tls.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, served, task)
    }

    #[tokio::test]
    async fn requests_travel_over_tls_on_one_kept_alive_connection() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let (pem, config) = dev_certificate(dir.path());
        let (addr, served, server) = tls_responder(config).await;
        let url = format!("https://{addr}/devstoreaccount1");
        let key = crate::signing::DEV_ACCOUNT_KEY;
        let target = Arc::new(RestTarget::parse(&url, None, key, Some(&pem)).unwrap());
        probe(&target).await.unwrap();
        let mut conn = RestConn::new(target, "bench", Payload::new(100, 0));
        let get = Op::Get {
            pk: "p".into(),
            rk: "r".into(),
        };
        for _ in 0..3 {
            assert_eq!(conn.execute(&get).await.unwrap(), 1);
        }
        assert_eq!(served.requests.load(Relaxed), 4);
        assert_eq!(
            served.connections.load(Relaxed),
            2,
            "one handshake for the probe, one for the worker's three requests"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_certificate_not_in_the_ca_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, config) = dev_certificate(dir.path());
        let other = tempfile::tempdir().unwrap();
        let (other_pem, _) = dev_certificate(other.path());
        let (addr, served, server) = tls_responder(config).await;
        let url = format!("https://{addr}/devstoreaccount1");
        let key = crate::signing::DEV_ACCOUNT_KEY;
        let target = Arc::new(RestTarget::parse(&url, None, key, Some(&other_pem)).unwrap());
        let mut conn = RestConn::new(target, "bench", Payload::new(100, 0));
        let get = Op::Get {
            pk: "p".into(),
            rk: "r".into(),
        };
        let err = conn.execute(&get).await.unwrap_err();
        assert!(err.kind().starts_with("connect: tls"), "{err}");
        let requests = served.requests.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(requests, 0);
        server.abort();
    }

    #[test]
    fn key_predicates_are_quoted_and_escaped() {
        let c = RestConn::new(target(), "bench", Payload::new(0, 0));
        assert_eq!(
            c.entity_path("a b", "it's"),
            "/devstoreaccount1/bench(PartitionKey='a%20b',RowKey='it''s')"
        );
    }

    #[test]
    fn batch_bodies_hold_one_changeset_part_per_row() {
        let c = RestConn::new(target(), "bench", Payload::new(200, 0));
        let body = c.batch_body("x1", "p1", &[("r1", 1), ("r2", 1)], BatchKind::Insert);
        assert!(
            body.starts_with("--batch_x1\r\nContent-Type: multipart/mixed; boundary=changeset_x1")
        );
        assert_eq!(body.matches("--changeset_x1\r\n").count(), 2);
        assert_eq!(
            body.matches("POST http://127.0.0.1:10002/devstoreaccount1/bench HTTP/1.1")
                .count(),
            2
        );
        assert!(body.ends_with("--changeset_x1--\r\n\r\n--batch_x1--\r\n"));
        let upsert = c.batch_body("x2", "p1", &[("r1", 1)], BatchKind::Upsert);
        assert!(upsert.contains(
            "PUT http://127.0.0.1:10002/devstoreaccount1/bench(PartitionKey='p1',RowKey='r1') HTTP/1.1"
        ));
    }

    #[test]
    fn batch_responses_report_the_first_failure() {
        let ok = b"--b\r\nHTTP/1.1 204 No Content\r\n\r\n--b\r\nHTTP/1.1 201 Created\r\n--b--";
        assert_eq!(batch_failure(ok), None);
        let bad = b"--b\r\nHTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n\r\n{}--b--";
        assert_eq!(batch_failure(bad), Some(409));
    }

    #[test]
    fn errors_carry_the_odata_code() {
        let body = br#"{"odata.error":{"code":"EntityAlreadyExists","message":{"value":"x"}}}"#;
        assert_eq!(
            http_error(StatusCode::CONFLICT, body).kind(),
            "http-409 EntityAlreadyExists"
        );
        assert_eq!(
            http_error(StatusCode::BAD_GATEWAY, b"<html>").kind(),
            "http-502"
        );
    }
}
