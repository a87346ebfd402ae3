//! The REST port: an accept loop we own, serving the [`router`](crate::router) over hyper's HTTP/1.1
//! connections, optionally behind TLS, so that abuse is shed instead of held.
//!
//! Azure's front end (HTTP.sys) bounds every stage of a connection, and so does this listener; every
//! limit is a [`GatewayConfig`] field:
//!
//! | stage | limit | answer |
//! |---|---|---|
//! | accept | `max-connections` served at once (a semaphore) | 503 `ServerBusy`, then close |
//! | TLS handshake, request head | `header-read-timeout-secs` from the head's first byte (first request: from the accept) | close, no answer (HTTP.sys HeaderWait) |
//! | request head size | `max-header-bytes` (request line + headers) | 400 "The size of the request headers is too long", close |
//! | request body | `body-read-timeout-secs` without a byte | close, no answer (HTTP.sys EntityBody) |
//! | chunked body | declared chunk sizes past `max-body-bytes` | 400 `InvalidInput` as soon as the size line arrives |
//! | request | `request-timeout-secs` for the whole call | 500 `OperationTimedOut` |
//! | keep-alive | `idle-timeout-secs` with nothing in flight | close (HTTP.sys IdleConnection) |
//!
//! Only HTTP/1.1 is served (Azure Table speaks nothing else). hyper's own header timer is off: it also
//! runs on idle keep-alive connections, so it cannot be both a slowloris bound and a generous idle
//! timeout; the `framing` gate tracks heads instead. Connections beyond the limit are not queued: a
//! small, fixed number of busy-answerers write the 503 (reading the head first, so the client sees the
//! answer and not a reset) and any further connection is closed at once.
//!
//! Every request carries `ConnectInfo<SocketAddr>` (SAS `sip` checks) and, on HTTPS, [`TlsConnection`]
//! (SAS `spr=https`). Shutdown is graceful: the loop stops accepting, every connection finishes the
//! request in flight (bounded by the timers above) and closes, and [`Server::run`] returns after the last.

mod conn;
mod framing;
pub mod tls;

/// Whether a request body error (anywhere in its source chain) is the framing's refusal of chunk
/// sizes beyond what the gateway reads at all.
pub(crate) fn is_chunk_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if matches!(e.downcast_ref(), Some(conn::BodyRefused::ChunkTooLarge)) {
            return true;
        }
        cause = e.source();
    }
    false
}

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use trestle_types::{DateTime, ErrorCode};

use crate::config::GatewayConfig;
use crate::error::{ApiError, ErrorFormat};

/// A request extension present when the request arrived over TLS on this listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsConnection;

/// Connections answered 503 at once; beyond these, an over-limit connection is closed unanswered.
const BUSY_ANSWERERS: usize = 64;
/// How long a busy answer may take, handshake and draining included.
const BUSY_DEADLINE: Duration = Duration::from_secs(2);

/// The limits of [`GatewayConfig`] in the listener's units.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
    pub body_read: Duration,
    pub request: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
}

impl Limits {
    fn from_config(config: &GatewayConfig) -> Self {
        Limits {
            header_read: Duration::from_secs(config.header_read_timeout_secs),
            idle: Duration::from_secs(config.idle_timeout_secs),
            body_read: Duration::from_secs(config.body_read_timeout_secs),
            request: Duration::from_secs(config.request_timeout_secs),
            max_connections: config.max_connections,
            max_header_bytes: config.max_header_bytes,
            max_body_bytes: config.max_body_bytes as u64,
        }
    }
}

/// A bound REST port, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    app: Router,
    limits: Arc<Limits>,
    tls: Option<TlsAcceptor>,
    http: Arc<http1::Builder>,
}

impl Server {
    /// Prepares to serve `app` on `listener` with the limits of `config` (validated), loading its TLS
    /// certificate and key if it names them.
    pub fn new(listener: TcpListener, app: Router, config: &GatewayConfig) -> io::Result<Server> {
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::server_config(cert, key)?)),
            _ => None,
        };
        let limits = Limits::from_config(config);
        let mut http = http1::Builder::new();
        // The gate hands hyper only whole heads of at most max-header-bytes; the buffer bounds what
        // hyper holds of a body per read (hyper's default is 400 KiB per connection).
        http.header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size((64 * 1024).max(2 * limits.max_header_bytes + 8192));
        Ok(Server {
            listener,
            app,
            limits: Arc::new(limits),
            tls,
            http: Arc::new(http),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the port serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Accepts and serves connections until `shutdown` resolves, then waits for the open ones to close.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let max = self.limits.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let busy = Arc::new(Semaphore::new(BUSY_ANSWERERS));
        let (stop, stopped) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait for some to close.
                        tracing::error!(error = %e, "REST accept failed");
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            // No Nagle: a small response held back behind the client's delayed ACK costs 40 ms.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY");
            }
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let service = conn::ConnService {
                        app: self.app.clone(),
                        state: Arc::new(conn::ConnState::new()),
                        peer,
                        tls: self.tls.is_some(),
                        limits: self.limits.clone(),
                    };
                    let (tls, http, stopped) =
                        (self.tls.clone(), self.http.clone(), stopped.clone());
                    tokio::spawn(async move {
                        serve_tcp(tcp, tls, service, &http, stopped).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    tracing::debug!(%peer, max, "REST connection limit reached");
                    if let Ok(permit) = busy.clone().try_acquire_owned() {
                        let tls = self.tls.clone();
                        tokio::spawn(async move {
                            let _ =
                                tokio::time::timeout(BUSY_DEADLINE, answer_busy(tcp, tls)).await;
                            drop(permit);
                        });
                    }
                }
            }
        }
        drop(self.listener);
        let _ = stop.send(true);
        let _ = permits.acquire_many(max as u32).await;
        Ok(())
    }
}

/// Serves `app` on `listener` with `config`'s limits until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &GatewayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    Server::new(listener, app, config)?.run(shutdown).await
}

async fn serve_tcp(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    service: conn::ConnService,
    http: &http1::Builder,
    stopped: watch::Receiver<bool>,
) {
    match tls {
        None => conn::serve(tcp, service, http, stopped).await,
        Some(acceptor) => {
            let header_read = service.limits.header_read;
            match tokio::time::timeout(header_read, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => conn::serve(stream, service, http, stopped).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers an over-limit connection 503 `ServerBusy` (after the TLS handshake, for HTTPS) and closes it.
async fn answer_busy(tcp: TcpStream, tls: Option<TlsAcceptor>) {
    match tls {
        None => answer_busy_on(tcp).await,
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(tcp).await {
                answer_busy_on(stream).await;
            }
        }
    }
}

async fn answer_busy_on<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    // Read the head first: the error body follows the client's Accept, and a client whose request is
    // unread when the socket closes may get a reset instead of the answer.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    if io.write_all(&busy_response(&head)).await.is_err() {
        return;
    }
    let _ = io.shutdown().await;
    // Drain what the client still sends until it closes (bounded by BUSY_DEADLINE).
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// The complete 503 `ServerBusy` response for a connection over the limit, in the error format the
/// request head (possibly partial) asks for.
fn busy_response(head: &[u8]) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let _ = request.parse(head);
    let accept = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("accept"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    let format_param = request
        .path
        .and_then(|p| p.split_once('?'))
        .and_then(|(_, q)| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "$format")
                .map(|(_, v)| v.into_owned())
        });
    let format = ErrorFormat::negotiate(accept, format_param.as_deref());
    let request_id = uuid::Uuid::new_v4().to_string();
    let body =
        ApiError::from_code(ErrorCode::ServerBusy).body(format, &request_id, DateTime::now());
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
         x-ms-error-code: ServerBusy\r\nx-ms-request-id: {request_id}\r\ndate: {date}\r\n\
         connection: close\r\n\r\n{body}",
        format.content_type(),
        body.len(),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_response_follows_the_requested_error_format() {
        let json = busy_response(
            b"GET /devstoreaccount1/Tables HTTP/1.1\r\nAccept: application/json;odata=nometadata\r\n\r\n",
        );
        let text = String::from_utf8(json).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("\r\nx-ms-error-code: ServerBusy\r\n"));
        assert!(text.contains("\r\nconnection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["odata.error"]["code"], "ServerBusy");
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));

        for head in [
            &b"GET /a?$format=xml HTTP/1.1\r\n\r\n"[..],
            b"GET /a HT",
            b"",
        ] {
            let text = String::from_utf8(busy_response(head)).unwrap();
            assert!(text.contains("<code>ServerBusy</code>"), "{text}");
        }
        let text =
            String::from_utf8(busy_response(b"GET /a?$format=json HTTP/1.1\r\n\r\n")).unwrap();
        assert!(text.contains("\"code\":\"ServerBusy\""), "{text}");
    }

    #[test]
    fn limits_come_from_the_config() {
        let limits = Limits::from_config(&GatewayConfig::for_test());
        assert_eq!(limits.header_read, Duration::from_secs(10));
        assert_eq!(limits.idle, Duration::from_secs(120));
        assert_eq!(limits.body_read, Duration::from_secs(10));
        assert_eq!(limits.request, Duration::from_secs(30));
        assert_eq!(limits.max_connections, 4096);
        assert_eq!(limits.max_header_bytes, 16 * 1024);
        assert_eq!(limits.max_body_bytes, 4 * 1024 * 1024);
    }
}
