//! The listener sheds abuse (issue 7): slow heads, idle connections, too many connections, oversized
//! heads and chunk sizes, stalled bodies and slow requests each end promptly, with Azure's answer; and
//! HTTPS serves the gateway with `spr=https` SAS honoured. Servers run on 127.0.0.1 with limits of a
//! second or so; clients speak raw HTTP/1.1 over TCP (or TLS) so each test controls every byte.
//! Every wait has a deadline; pacing sleeps are the attack itself, never synchronisation.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trestle_rest_gateway::config::DEV_ACCOUNT_KEY;
use trestle_rest_gateway::listener::Server;
use trestle_rest_gateway::{GatewayConfig, router};

use crate::support::{MemoryTableService, TestGateway};

/// A listener under test and the way to stop it.
struct Served {
    addr: SocketAddr,
    service: Arc<MemoryTableService>,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<io::Result<()>>,
}

/// The gateway over the in-memory service, anonymous requests allowed (so raw requests need no
/// signature), with `tune` applied to the limits.
async fn serve_gateway(tune: impl FnOnce(&mut GatewayConfig)) -> Served {
    let mut config = GatewayConfig {
        allow_anonymous: true,
        ..GatewayConfig::for_test()
    };
    tune(&mut config);
    let service = Arc::new(MemoryTableService::new());
    let app = router(service.clone(), config.clone());
    serve_app(app, service, &config).await
}

async fn serve_app(
    app: Router,
    service: Arc<MemoryTableService>,
    config: &GatewayConfig,
) -> Served {
    config.validate().expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::new(listener, app, config).expect("server");
    let addr = server.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Served {
        addr,
        service,
        stop: Some(stop),
        done,
    }
}

impl Served {
    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    /// A test gateway handle on this server, for the SAS helpers.
    fn gateway(&self) -> TestGateway {
        TestGateway {
            addr: self.addr,
            service: self.service.clone(),
            client: reqwest::Client::new(),
            key: STANDARD.decode(DEV_ACCOUNT_KEY).expect("key"),
        }
    }
}

const LIST_TABLES: &str = "GET /devstoreaccount1/Tables HTTP/1.1\r\nHost: 127.0.0.1\r\n\
    Accept: application/json;odata=nometadata\r\nx-ms-version: 2019-02-02\r\n\r\n";

/// A response read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Reads one response (its body by `Content-Length`); `None` if the connection closed first.
async fn read_response<S: AsyncRead + Unpin>(io: &mut S) -> Option<Raw> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = response.parse(&bytes) {
            let status = response.code.expect("status");
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let raw = Raw {
                status,
                headers,
                body: String::new(),
            };
            let length: usize = raw
                .header("content-length")
                .expect("content-length")
                .parse()
                .expect("length");
            while bytes.len() < len + length {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                }
            }
            let body = String::from_utf8_lossy(&bytes[len..len + length]).into_owned();
            return Some(Raw { body, ..raw });
        }
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// [`read_response`] with a deadline.
async fn must_respond<S: AsyncRead + Unpin>(io: &mut S, within: Duration) -> Raw {
    tokio::time::timeout(within, read_response(io))
        .await
        .expect("no response before the deadline")
        .expect("connection closed without a response")
}

/// Waits for the server to close the connection; returns how long that took from `since` and the
/// bytes received meanwhile.
async fn must_close<S: AsyncRead + Unpin>(
    io: &mut S,
    since: Instant,
    within: Duration,
) -> (Duration, Vec<u8>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after {within:?}");
    (since.elapsed(), received)
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_at_the_header_timeout() {
    let served = serve_gateway(|c| c.header_read_timeout_secs = 1).await;
    let stream = served.connect().await;
    let (mut reader, mut writer) = stream.into_split();
    let start = Instant::now();
    // The attack: one header byte every 100 ms, for far longer than the timeout.
    let attacker = tokio::spawn(async move {
        for byte in LIST_TABLES.bytes().cycle().take(200) {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (elapsed, received) = must_close(&mut reader, start, Duration::from_secs(5)).await;
    attacker.abort();
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "closed late: {elapsed:?}");
    assert!(
        received.is_empty(),
        "HTTP.sys answers nothing: {received:?}"
    );

    // A connection that never sends its first request is cut off just the same.
    let mut silent = served.connect().await;
    let start = Instant::now();
    let (elapsed, received) = must_close(&mut silent, start, Duration::from_secs(5)).await;
    assert!(received.is_empty());
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "closed late: {elapsed:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let served = serve_gateway(|c| {
        c.header_read_timeout_secs = 1;
        c.idle_timeout_secs = 2;
    })
    .await;
    let mut stream = served.connect().await;
    for _ in 0..2 {
        stream.write_all(LIST_TABLES.as_bytes()).await.unwrap();
        let response = must_respond(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let start = Instant::now();
    let (elapsed, received) = must_close(&mut stream, start, Duration::from_secs(6)).await;
    assert!(received.is_empty());
    assert!(
        elapsed >= Duration::from_millis(1800),
        "closed early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "closed late: {elapsed:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_get_server_busy_until_one_closes() {
    let served = serve_gateway(|c| c.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = served.connect().await;
        stream.write_all(LIST_TABLES.as_bytes()).await.unwrap();
        let response = must_respond(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(response.status, 200);
        held.push(stream);
    }

    let mut extra = served.connect().await;
    extra.write_all(LIST_TABLES.as_bytes()).await.unwrap();
    let busy = must_respond(&mut extra, Duration::from_secs(5)).await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.header("x-ms-error-code"), Some("ServerBusy"));
    assert_eq!(busy.json()["odata.error"]["code"], "ServerBusy");
    assert!(busy.header("x-ms-request-id").is_some());
    must_close(&mut extra, Instant::now(), Duration::from_secs(5)).await;

    drop(held.pop());
    // The server frees the slot when it reads the close; retry until it has, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = served.connect().await;
        stream.write_all(LIST_TABLES.as_bytes()).await.unwrap();
        let response = must_respond(&mut stream, Duration::from_secs(5)).await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 503);
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_absurd_chunk_size_is_answered_at_once() {
    // A long body timeout, so only the chunk check can answer quickly. A chunk size past what the
    // gateway would even drain (the body limit plus 64 MiB) is too large: 413 and a close, at once,
    // including one whose digits would overflow 64 bits (refused as soon as they pass the bound).
    let served = serve_gateway(|c| c.body_read_timeout_secs = 30).await;
    for (size, status, code) in [
        ("FFFFFFFFFFFFFFFF", 413, "RequestBodyTooLarge"),
        ("4400001", 413, "RequestBodyTooLarge"),
        ("1FFFFFFFFFFFFFFFF", 413, "RequestBodyTooLarge"),
    ] {
        let mut stream = served.connect().await;
        let request = format!(
            "POST /devstoreaccount1/Tables HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Accept: application/json;odata=nometadata\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{size}\r\n{{\"TableName\":"
        );
        let start = Instant::now();
        // The connection stays open: the client never sends the rest of the chunk.
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = must_respond(&mut stream, Duration::from_secs(3)).await;
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{size}: slow answer"
        );
        assert_eq!(response.status, status, "{size}: {}", response.body);
        assert_eq!(response.header("x-ms-error-code"), Some(code), "{size}");
    }
    // A chunked body within the limit is served as before.
    let mut stream = served.connect().await;
    let body = r#"{"TableName":"chunked1"}"#;
    let request = format!(
        "POST /devstoreaccount1/Tables HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Accept: application/json;odata=nometadata\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = must_respond(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(response.status, 201, "{}", response.body);
}

#[tokio::test]
async fn oversized_request_headers_get_http_sys_400_and_a_close() {
    let served = serve_gateway(|_| {}).await;
    for size in [20 * 1024, 100 * 1024] {
        let mut stream = served.connect().await;
        let request = format!(
            "GET /devstoreaccount1/Tables HTTP/1.1\r\nHost: 127.0.0.1\r\nx-big: {}\r\n\r\n",
            "a".repeat(size)
        );
        let start = Instant::now();
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = must_respond(&mut stream, Duration::from_secs(3)).await;
        assert_eq!(response.status, 400, "{size}");
        assert!(
            response
                .body
                .contains("HTTP Error 400. The size of the request headers is too long."),
            "{}",
            response.body
        );
        assert_eq!(response.header("connection"), Some("close"));
        must_close(&mut stream, start, Duration::from_secs(3)).await;
    }
    // Just under the 16 KiB limit is served.
    let mut stream = served.connect().await;
    let filler = "a".repeat(15 * 1024);
    let request = LIST_TABLES.replace("\r\n\r\n", &format!("\r\nx-big: {filler}\r\n\r\n"));
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = must_respond(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(response.status, 200, "{}", response.body);
}

#[tokio::test]
async fn a_request_past_the_deadline_gets_500_operation_timed_out() {
    let config = GatewayConfig {
        request_timeout_secs: 1,
        ..GatewayConfig::for_test()
    };
    let slow = Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "too late"
    });
    let served = serve_app(slow, Arc::new(MemoryTableService::new()), &config).await;
    let mut stream = served.connect().await;
    let start = Instant::now();
    stream.write_all(LIST_TABLES.as_bytes()).await.unwrap();
    let response = must_respond(&mut stream, Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(response.status, 500);
    assert_eq!(
        response.header("x-ms-error-code"),
        Some("OperationTimedOut")
    );
    assert_eq!(response.json()["odata.error"]["code"], "OperationTimedOut");
    assert_eq!(response.header("x-ms-version"), Some("2019-02-02"));
}

#[tokio::test]
async fn a_stalled_request_body_closes_the_connection() {
    let served = serve_gateway(|c| c.body_read_timeout_secs = 1).await;
    let mut stream = served.connect().await;
    let request = "POST /devstoreaccount1/Tables HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"TableName\":";
    let start = Instant::now();
    stream.write_all(request.as_bytes()).await.unwrap();
    let (elapsed, received) = must_close(&mut stream, start, Duration::from_secs(5)).await;
    assert!(
        received.is_empty(),
        "HTTP.sys answers nothing: {received:?}"
    );
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let mut served = serve_gateway(|_| {}).await;
    let mut stream = served.connect().await;
    stream.write_all(LIST_TABLES.as_bytes()).await.unwrap();
    assert_eq!(
        must_respond(&mut stream, Duration::from_secs(5))
            .await
            .status,
        200
    );
    let start = Instant::now();
    let _ = served.stop.take().expect("running").send(());
    must_close(&mut stream, start, Duration::from_secs(5)).await;
    let result = tokio::time::timeout(Duration::from_secs(5), served.done)
        .await
        .expect("run returned");
    assert!(result.expect("task").is_ok());
    assert!(
        TcpStream::connect(served.addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn int64_sent_as_a_bare_json_number_is_invalid_input() {
    let served = serve_gateway(|_| {}).await;
    let gw = served.gateway();
    gw.must_create_table("int64t").await;
    gw.request("POST", "int64t")
        .json(r#"{"PartitionKey":"p","RowKey":"r","n":5,"n@odata.type":"Edm.Int64"}"#)
        .send()
        .await
        .assert_error(400, "InvalidInput");
    gw.must_insert(
        "int64t",
        r#"{"PartitionKey":"p","RowKey":"r","n":"5","n@odata.type":"Edm.Int64"}"#,
    )
    .await;
}

/// A self-signed certificate for localhost, written where the gateway config can name it.
struct TestCert {
    _dir: tempfile::TempDir,
    der: rustls::pki_types::CertificateDer<'static>,
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
}

fn test_cert() -> TestCert {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("test setup");
    let dir = tempfile::tempdir().expect("test setup");
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).expect("test setup");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("test setup");
    TestCert {
        _dir: dir,
        der: certified.cert.der().clone(),
        cert_file,
        key_file,
    }
}

async fn tls_connect(
    addr: SocketAddr,
    cert: &TestCert,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).expect("test setup");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("test setup")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("test setup");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("test setup");
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

async fn send_on<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, request: &str) -> Raw {
    io.write_all(request.as_bytes()).await.expect("test setup");
    io.flush().await.expect("test setup");
    must_respond(io, Duration::from_secs(5)).await
}

#[tokio::test]
async fn https_serves_the_gateway_and_satisfies_a_sas_that_requires_https() {
    let cert = test_cert();
    let tls = serve_gateway(|c| {
        c.allow_anonymous = false;
        c.tls_cert_file = Some(cert.cert_file.clone());
        c.tls_key_file = Some(cert.key_file.clone());
    })
    .await;
    let plain = serve_gateway(|c| c.allow_anonymous = false).await;
    let sas = tls
        .gateway()
        .account_sas("t", "sco", "rl", &[("spr", "https")]);
    let request = LIST_TABLES.replace("/Tables ", &format!("/Tables?{sas} "));

    let mut stream = tls_connect(tls.addr, &cert).await;
    let response = send_on(&mut stream, &request).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.json()["value"].is_array(), "{}", response.body);
    // Keep-alive works over TLS too.
    let response = send_on(&mut stream, &request).await;
    assert_eq!(response.status, 200, "{}", response.body);

    let mut stream = plain.connect().await;
    let response = send_on(&mut stream, &request).await;
    assert_eq!(response.status, 403, "{}", response.body);
    assert_eq!(
        response.header("x-ms-error-code"),
        Some("AuthorizationProtocolMismatch")
    );

    // The TLS port serves HTTPS only: plain HTTP gets no HTTP answer.
    let mut stream = tls.connect().await;
    stream.write_all(LIST_TABLES.as_bytes()).await.unwrap();
    let (_, received) = must_close(&mut stream, Instant::now(), Duration::from_secs(5)).await;
    assert!(!received.starts_with(b"HTTP/1.1 2"), "{received:?}");
}

/// A client that writes its whole body before it reads (Node's `http`, under the Azure JS SDK) must see
/// Azure's 413 `RequestBodyTooLarge`, not EPIPE: the gateway reads and discards the rest of an
/// oversized body before it answers, for entity writes and `$batch`, sent with a `Content-Length` or
/// chunked. (Chunk sizes past what the gateway drains at all are refused at once:
/// `an_absurd_chunk_size_is_answered_at_once`.)
#[tokio::test]
async fn an_oversized_body_is_read_to_its_end_so_the_client_sees_413() {
    let served = serve_gateway(|_| {}).await;
    served.gateway().must_create_table("big1").await;
    let body = vec![b'x'; 5 * 1024 * 1024];
    // The same body in 1 MiB chunks.
    let mut chunked = Vec::new();
    for piece in body.chunks(1024 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for (path, content_type, framing) in [
        ("big1", "application/json", "length"),
        ("$batch", "multipart/mixed; boundary=batch_b", "length"),
        ("big1", "application/json", "chunked"),
        ("$batch", "multipart/mixed; boundary=batch_b", "chunked"),
    ] {
        let mut stream = served.connect().await;
        let (length, sent) = match framing {
            "length" => (format!("Content-Length: {}", body.len()), &body),
            _ => ("Transfer-Encoding: chunked".to_string(), &chunked),
        };
        let head = format!(
            "POST /devstoreaccount1/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Accept: application/json;odata=nometadata\r\nContent-Type: {content_type}\r\n\
             x-ms-version: 2019-02-02\r\n{length}\r\n\r\n"
        );
        let path = format!("{path} ({framing})");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(sent)
            .await
            .unwrap_or_else(|e| panic!("{path}: writing the body: {e}"));
        let response = must_respond(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(response.status, 413, "{path}");
        assert_eq!(
            response.header("x-ms-error-code"),
            Some("RequestBodyTooLarge"),
            "{path}"
        );
        // The body was consumed, so the connection can carry the next request.
        stream.write_all(LIST_TABLES.as_bytes()).await.unwrap();
        let next = must_respond(&mut stream, Duration::from_secs(3)).await;
        assert_eq!(next.status, 200, "{path}: {}", next.body);
    }
}
