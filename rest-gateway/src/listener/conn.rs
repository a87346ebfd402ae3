//! One connection: the socket wrapper that runs the [`Framing`] gate, the per-request service wrapper
//! (peer address, TLS flag, body-read timer, request deadline), and the watchdog that closes the
//! connection on the header-read and idle timers.
//!
//! Everything of one connection runs in one task: hyper polls the socket wrapper and the service future
//! from inside the connection future, and the watchdog `select!`s over that future. [`ConnState`] is
//! the connection's shared record (atomics only, never contended): the wrapper writes when a head starts
//! and when bytes move, the service counts requests in flight, and the watchdog reads it to know its next
//! deadline. Timers: header read runs from a head's first byte (for the first request, from the accept)
//! to its release; idle runs from the last
//! byte moved while no request is in flight; body read runs while the handler waits for body bytes;
//! the request deadline covers the whole call of the router.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures::task::AtomicWaker;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};
use trestle_types::{DateTime, ErrorCode};

use super::framing::{Event, Framing, Ordinal};
use super::{Limits, TlsConnection};
use crate::config::DEFAULT_API_VERSION;
use crate::error::{ApiError, ErrorFormat};

const NONE: u64 = u64::MAX;

/// Why a request body stopped being read; hyper closes the connection on [`BodyRefused::Stalled`]
/// (returned by the service); the router answers 413 for [`BodyRefused::ChunkTooLarge`] and 400 for
/// other body errors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyRefused {
    #[error("the declared chunk sizes exceed the request body limit")]
    ChunkTooLarge,
    #[error("the request body stalled")]
    Stalled,
}

/// The shared record of one connection (see the module header).
pub(crate) struct ConnState {
    origin: Instant,
    /// Milliseconds since `origin` when bytes last moved to hyper or to the client.
    last_io: AtomicU64,
    /// When the head being received started, or [`NONE`].
    head_since: AtomicU64,
    in_flight: AtomicUsize,
    next_request: AtomicU64,
    /// The ordinal whose head was replaced by the synthetic one, or [`NONE`].
    rejected: AtomicU64,
    /// The ordinal whose chunk sizes exceed the body limit, or [`NONE`].
    bad_chunk: AtomicU64,
    /// The ordinal whose body stalled, or [`NONE`].
    stalled: AtomicU64,
    body_waker: AtomicWaker,
    changed: Notify,
}

impl ConnState {
    pub(crate) fn new() -> Self {
        ConnState {
            origin: Instant::now(),
            last_io: AtomicU64::new(0),
            // A new connection owes us its first request head: the header timer runs from the accept,
            // so silent connections cannot hold the connection slots for the whole idle timeout.
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            next_request: AtomicU64::new(0),
            rejected: AtomicU64::new(NONE),
            bad_chunk: AtomicU64::new(NONE),
            stalled: AtomicU64::new(NONE),
            body_waker: AtomicWaker::new(),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    fn on_event(&self, event: Event) {
        match event {
            Event::HeadStarted => self.head_since.store(self.now_ms(), Ordering::Relaxed),
            Event::HeadReleased(_) => self.head_since.store(NONE, Ordering::Relaxed),
            Event::HeadTooLarge(ordinal) => {
                self.rejected.store(ordinal, Ordering::Relaxed);
                self.head_since.store(NONE, Ordering::Relaxed);
            }
            Event::ChunkTooLarge(ordinal) => {
                self.bad_chunk.store(ordinal, Ordering::Relaxed);
                self.body_waker.wake();
            }
        }
        self.changed.notify_one();
    }

    /// What the watchdog should do now.
    fn watch(&self, limits: &Limits) -> Watch {
        let now = self.now_ms();
        let head = self.head_since.load(Ordering::Relaxed);
        if head != NONE {
            let due = head.saturating_add(limits.header_read.as_millis() as u64);
            return if now >= due {
                Watch::Close
            } else {
                Watch::Wait(Some(self.at(due)))
            };
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let due = self
                .last_io
                .load(Ordering::Relaxed)
                .saturating_add(limits.idle.as_millis() as u64);
            return if now >= due {
                Watch::Idle
            } else {
                Watch::Wait(Some(self.at(due)))
            };
        }
        Watch::Wait(None)
    }
}

enum Watch {
    /// A head took too long: drop the connection without an answer (HTTP.sys's HeaderWait).
    Close,
    /// Nothing in flight for the idle timeout: close gracefully.
    Idle,
    /// Look again at this instant (or when the state changes).
    Wait(Option<Instant>),
}

/// Serves one accepted (and, for HTTPS, handshaken) connection until it closes.
pub(crate) async fn serve<S>(
    io: S,
    service: ConnService,
    http: &http1::Builder,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = service.state.clone();
    let limits = service.limits.clone();
    let io = GuardedIo::new(io, state.clone(), &limits);
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let deadline = match state.watch(&limits) {
            Watch::Close => {
                tracing::debug!("closing a connection whose request head is too slow");
                return;
            }
            Watch::Idle => {
                if !closing {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                None
            }
            Watch::Wait(deadline) => deadline,
        };
        let timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "REST connection ended");
                }
                return;
            }
            _ = timer => {}
            _ = state.changed.notified() => {}
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// The socket as hyper sees it: every byte read goes through the [`Framing`] gate.
pub(crate) struct GuardedIo<S> {
    inner: S,
    framing: Framing,
    state: Arc<ConnState>,
    /// Bytes the gate let through that did not fit hyper's buffer yet.
    pending: Vec<u8>,
    pending_pos: usize,
    scratch: Vec<u8>,
    events: Vec<Event>,
}

/// Reads per poll before yielding, so a client streaming bytes the gate drops cannot hog the thread.
const READS_PER_POLL: usize = 32;

impl<S> GuardedIo<S> {
    fn new(inner: S, state: Arc<ConnState>, limits: &Limits) -> Self {
        GuardedIo {
            inner,
            // The framing refuses at once only what the gateway would not even drain: a body within
            // the limit plus the discard bound is read, so the client sees the 413 (see `server`).
            framing: Framing::new(
                limits.max_header_bytes,
                limits
                    .max_body_bytes
                    .saturating_add(crate::server::MAX_DISCARDED_BODY_BYTES),
            ),
            state,
            pending: Vec::new(),
            pending_pos: 0,
            scratch: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain_pending(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.pending.len() - self.pending_pos);
        buf.put_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
        self.pending_pos += n;
        if self.pending_pos == self.pending.len() {
            self.pending.clear();
            self.pending_pos = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending_pos < this.pending.len() {
            this.drain_pending(buf);
            this.state.touch();
            return Poll::Ready(Ok(()));
        }
        for _ in 0..READS_PER_POLL {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let new = &buf.filled()[before..];
            if new.is_empty() {
                if this.framing.discarding() {
                    // hyper is answering the refused head; an EOF now would abort that answer.
                    return Poll::Pending;
                }
                return Poll::Ready(Ok(()));
            }
            let pass = this.framing.pass_through(new);
            if pass < new.len() {
                this.scratch.clear();
                this.scratch.extend_from_slice(&new[pass..]);
                buf.set_filled(before + pass);
                this.framing
                    .feed(&this.scratch, &mut this.pending, &mut this.events);
                for event in this.events.drain(..) {
                    this.state.on_event(event);
                }
                this.drain_pending(buf);
            }
            if buf.filled().len() > before {
                this.state.touch();
                return Poll::Ready(Ok(()));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.state.touch();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.state.touch();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Counts a request in flight from the service call until hyper drops its response body.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn begin(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.changed.notify_one();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted in flight until it is written (or dropped).
pub(crate) struct GuardedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body as the router sees it: fails at once when the gate saw an oversized chunk size,
/// and when no bytes come for the body-read timeout.
struct TimedBody {
    inner: Incoming,
    state: Arc<ConnState>,
    ordinal: Ordinal,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let ordinal = this.ordinal;
        let refused = |state: &ConnState| state.bad_chunk.load(Ordering::Relaxed) == ordinal;
        if refused(&this.state) {
            return Poll::Ready(Some(Err(BodyRefused::ChunkTooLarge.into())));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        this.state.body_waker.register(cx.waker());
        if refused(&this.state) {
            return Poll::Ready(Some(Err(BodyRefused::ChunkTooLarge.into())));
        }
        if !this.waiting {
            this.waiting = true;
            this.timer.as_mut().reset(Instant::now() + this.limit);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            this.state.stalled.store(ordinal, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyRefused::Stalled.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The per-connection service hyper calls for every request.
#[derive(Clone)]
pub(crate) struct ConnService {
    pub(crate) app: Router,
    pub(crate) state: Arc<ConnState>,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) limits: Arc<Limits>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<GuardedBody>, BodyRefused>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<GuardedBody>;
    type Error = BodyRefused;
    type Future = ServiceFuture;

    fn call(&self, request: Request<Incoming>) -> ServiceFuture {
        let state = self.state.clone();
        let ordinal = state.next_request.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight::begin(state.clone());
        let guard = |response: Response<Body>| {
            response.map(|inner| GuardedBody {
                inner,
                _in_flight: in_flight,
            })
        };
        if state.rejected.load(Ordering::Relaxed) == ordinal {
            return Box::pin(std::future::ready(Ok(guard(header_too_large()))));
        }
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        if self.tls {
            parts.extensions.insert(TlsConnection);
        }
        let format = error_format(&parts);
        let version = parts.headers.get("x-ms-version").cloned();
        let body = TimedBody {
            inner: body,
            state: state.clone(),
            ordinal,
            limit: self.limits.body_read,
            timer: Box::pin(tokio::time::sleep(self.limits.body_read)),
            waiting: false,
        };
        let request = Request::from_parts(parts, Body::new(body));
        let call = tower::ServiceExt::oneshot(self.app.clone(), request);
        let deadline = self.limits.request;
        Box::pin(async move {
            let result = tokio::time::timeout(deadline, call).await;
            if state.stalled.load(Ordering::Relaxed) == ordinal {
                // HTTP.sys's EntityBody timer: the connection is dropped, nothing is answered.
                return Err(BodyRefused::Stalled);
            }
            let response = match result {
                Ok(Ok(response)) => response,
                Ok(Err(infallible)) => match infallible {},
                Err(_) => timed_out(format, version),
            };
            Ok(guard(response))
        })
    }
}

fn error_format(parts: &http::request::Parts) -> ErrorFormat {
    let accept = parts.headers.get("accept").and_then(|v| v.to_str().ok());
    let format_param = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "$format")
            .map(|(_, v)| v.into_owned())
    });
    ErrorFormat::negotiate(accept, format_param.as_deref())
}

/// Azure's answer to a request that ran past the server timeout.
fn timed_out(format: ErrorFormat, version: Option<HeaderValue>) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = ApiError::from_code(ErrorCode::OperationTimedOut).into_response(
        format,
        &request_id,
        DateTime::now(),
    );
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert("x-ms-request-id", id);
    }
    headers.insert(
        "x-ms-version",
        version.unwrap_or(HeaderValue::from_static(DEFAULT_API_VERSION)),
    );
    response
}

/// HTTP.sys's answer to a request line and headers over its MaxRequestBytes: a 400 with an HTML body,
/// before Azure Storage ever sees the request (so no `x-ms-error-code`), and the connection closed.
pub(crate) fn header_too_large() -> Response<Body> {
    const BODY: &str = "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"\"http://www.w3.org/TR/html4/strict.dtd\">\r\n\
        <HTML><HEAD><TITLE>Bad Request</TITLE>\r\n\
        <META HTTP-EQUIV=\"Content-Type\" Content=\"text/html; charset=us-ascii\"></HEAD>\r\n\
        <BODY><h2>Bad Request - Request Too Long</h2>\r\n\
        <hr><p>HTTP Error 400. The size of the request headers is too long.</p>\r\n\
        </BODY></HTML>\r\n";
    let mut response = Response::new(Body::from(BODY));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=us-ascii"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
