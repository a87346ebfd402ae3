//! The SDK's errors, and how a gRPC [`Status`] is read back into them.
//!
//! The server maps every `trestle_types::Error` to a status once (storage-node `grpc_api`): the gRPC code
//! follows Azure's HTTP status, the exact [`ErrorCode`] name travels in `x-trestle-error-code`, a failed
//! batch operation's index in `x-trestle-failed-index`, and a `NotLeader` refusal may name the leader in
//! `x-trestle-leader`. [`Error::from_status`] inverts that mapping, so callers match on the same codes the
//! REST API uses.
//!
//! Not every failed call is a server's answer, and the retry loop must know which kind it has, because
//! that decides whether repeating a write is safe. [`classify`] sorts a status into:
//!
//! - `NotLeader`, a refusal made before anything was proposed: safe to retry any call;
//! - a request that never left this process (the connection could not be made): safe to retry;
//! - `ServerBusy`: safe to retry for reads only. The node also answers it for a proposal that was in
//!   flight when it stopped, and for a forwarded call whose connection broke, so a write may have been
//!   applied; it is returned to the caller ([`Error::may_have_applied`] says so);
//! - a transport failure after the request may have been sent (reset connection, lost response): safe to
//!   retry only for reads; for a write the outcome is unknown and the caller gets [`Error::Ambiguous`];
//! - a definite answer (everything else): returned as is.

use std::error::Error as _;

use tonic::{Code, Status};
use trestle_types::{BatchError, ErrorCode};

/// Metadata entry with the Azure error code name of a failed call.
pub const ERROR_CODE_HEADER: &str = "x-trestle-error-code";
/// Metadata entry with the leader's gRPC address (`host:port`) on a `NotLeader` refusal.
pub const LEADER_HEADER: &str = "x-trestle-leader";
/// Metadata entry with the 0-based index of the batch operation that failed.
pub const FAILED_INDEX_HEADER: &str = "x-trestle-failed-index";

/// Everything a call of the SDK can fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The cluster answered with an error code (the same codes the Azure REST API uses).
    #[error("{code}: {message}")]
    Server { code: ErrorCode, message: String },
    /// A batch was rejected as a whole; `index` names the operation that failed, when one did. Nothing
    /// of the batch was applied.
    #[error(transparent)]
    Batch(BatchError),
    /// A write was sent but its response was lost (connection reset, deadline passed while waiting). It
    /// may or may not have been applied; the SDK does not retry it, since repeating it could apply it
    /// twice. Read the entity to find out.
    #[error("the outcome of the write is unknown (it may have been applied): {0}")]
    Ambiguous(String),
    /// The deadline passed before any node served the call. For a write this means it was not applied:
    /// every attempt was refused before being proposed (or never reached a node).
    #[error("deadline exceeded: {0}")]
    Timeout(String),
    /// The call was invalid before it was sent (a malformed endpoint, a bad configuration).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A node answered with a message the SDK cannot read (a missing field, a malformed value).
    #[error("malformed response: {0}")]
    Protocol(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error code the cluster answered with, if it answered (for batches, the failed operation's).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            Error::Batch(b) => Some(b.error.code),
            _ => None,
        }
    }

    /// The 0-based index of the batch operation that failed.
    pub fn failed_index(&self) -> Option<usize> {
        match self {
            Error::Batch(b) => b.index,
            _ => None,
        }
    }

    /// True when a write may have been applied although the call failed: an ambiguous transport failure,
    /// the cluster's own `OperationTimedOut` (its proposal may still commit), or `ServerBusy` (which a
    /// node also answers when it stops with the proposal in flight).
    pub fn may_have_applied(&self) -> bool {
        matches!(self, Error::Ambiguous(_))
            || matches!(
                self.code(),
                Some(ErrorCode::OperationTimedOut | ErrorCode::ServerBusy)
            )
    }

    /// Reads a status back into an error: the code from `x-trestle-error-code` (or, from a server that did
    /// not send one, a code derived from the gRPC code), and a batch error when
    /// `x-trestle-failed-index` is present.
    pub fn from_status(status: &Status) -> Error {
        let code = server_code(status).unwrap_or_else(|| code_from_grpc(status.code()));
        let error = trestle_types::Error::new(code, status.message());
        match failed_index(status) {
            Some(index) => Error::Batch(BatchError {
                index: Some(index),
                error,
            }),
            None => Error::Server {
                code,
                message: error.message,
            },
        }
    }
}

impl From<BatchError> for Error {
    fn from(b: BatchError) -> Self {
        Error::Batch(b)
    }
}

/// The code a Trestle node named in the status metadata.
fn server_code(status: &Status) -> Option<ErrorCode> {
    status
        .metadata()
        .get(ERROR_CODE_HEADER)?
        .to_str()
        .ok()
        .and_then(ErrorCode::parse)
}

/// The failed operation's index a batch failure carries.
pub(crate) fn failed_index(status: &Status) -> Option<usize> {
    status
        .metadata()
        .get(FAILED_INDEX_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The leader address a `NotLeader` refusal names.
pub(crate) fn leader_hint(status: &Status) -> Option<String> {
    let addr = status.metadata().get(LEADER_HEADER)?.to_str().ok()?.trim();
    (!addr.is_empty()).then(|| addr.to_string())
}

/// The nearest error code for a status without Trestle metadata (a proxy, or tonic itself).
fn code_from_grpc(code: Code) -> ErrorCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidInput,
        Code::NotFound => ErrorCode::ResourceNotFound,
        Code::PermissionDenied => ErrorCode::AuthorizationFailure,
        Code::Unauthenticated => ErrorCode::InvalidAuthenticationInfo,
        Code::Unimplemented => ErrorCode::NotImplemented,
        Code::ResourceExhausted => ErrorCode::RequestBodyTooLarge,
        Code::DeadlineExceeded => ErrorCode::OperationTimedOut,
        Code::Unavailable => ErrorCode::ServerBusy,
        _ => ErrorCode::InternalError,
    }
}

/// What a failed attempt means for the retry loop (see the module header).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// The replica is not the leader and proposed nothing; retry, at `leader` when it is named.
    NotLeader { leader: Option<String> },
    /// `ServerBusy`: retry reads after a pause; a write may have been applied (see the module header).
    Busy(Error),
    /// The request never left this process: the connection could not be made. Retry elsewhere.
    NotSent,
    /// The connection failed after the request may have been sent. Reads retry; writes are ambiguous.
    Transport,
    /// A definite answer.
    Final(Error),
}

/// Sorts a failed attempt's status (see [`Failure`]).
pub(crate) fn classify(status: &Status) -> Failure {
    match server_code(status) {
        Some(ErrorCode::NotLeader) => {
            return Failure::NotLeader {
                leader: leader_hint(status),
            };
        }
        // A refusal too: the range split after the node routed the call; nothing was applied.
        Some(ErrorCode::RangeStale) => return Failure::NotLeader { leader: None },
        Some(ErrorCode::ServerBusy) => return Failure::Busy(Error::from_status(status)),
        Some(_) => return Failure::Final(Error::from_status(status)),
        None => {}
    }
    if is_connect_error(status) {
        return Failure::NotSent;
    }
    // A status tonic made from a local I/O or HTTP/2 error has that error as its source; one that came
    // over the wire has none. Over the wire, Unavailable/Unknown without our metadata come from a proxy or
    // a dying server, which are as uncertain as a broken connection.
    let local = status.source().is_some();
    match status.code() {
        Code::Unavailable | Code::Unknown => Failure::Transport,
        Code::Internal | Code::Cancelled if local => Failure::Transport,
        _ => Failure::Final(Error::from_status(status)),
    }
}

/// True when tonic failed to connect (connection refused, connect timeout, DNS failure).
/// Whether the request never left this process: the connection could not be made, or hyper handed the
/// request back unsent because its connection had closed or was not ready (hyper's `Canceled` kind is
/// made only for requests it never wrote — a node that stopped while our pooled connection to it idled).
fn is_connect_error(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn status(code: Code, error: ErrorCode, extra: &[(&'static str, &str)]) -> Status {
        let mut s = Status::new(code, "message from the node");
        s.metadata_mut().insert(
            ERROR_CODE_HEADER,
            MetadataValue::from_static(error.as_str()),
        );
        for (k, v) in extra {
            s.metadata_mut()
                .insert(*k, MetadataValue::try_from(*v).unwrap());
        }
        s
    }

    #[test]
    fn the_error_code_comes_from_the_metadata() {
        let e = Error::from_status(&status(
            Code::AlreadyExists,
            ErrorCode::EntityAlreadyExists,
            &[],
        ));
        assert_eq!(e.code(), Some(ErrorCode::EntityAlreadyExists));
        assert_eq!(
            e,
            Error::Server {
                code: ErrorCode::EntityAlreadyExists,
                message: "message from the node".into()
            }
        );
        // The metadata wins over the gRPC code: several codes share one gRPC code.
        let e = Error::from_status(&status(Code::NotFound, ErrorCode::TableNotFound, &[]));
        assert_eq!(e.code(), Some(ErrorCode::TableNotFound));
    }

    #[test]
    fn a_status_without_metadata_gets_the_nearest_code() {
        assert_eq!(
            Error::from_status(&Status::not_found("x")).code(),
            Some(ErrorCode::ResourceNotFound)
        );
        assert_eq!(
            Error::from_status(&Status::invalid_argument("x")).code(),
            Some(ErrorCode::InvalidInput)
        );
        assert_eq!(
            Error::from_status(&Status::internal("x")).code(),
            Some(ErrorCode::InternalError)
        );
        let unknown = status(
            Code::Internal,
            ErrorCode::InternalError,
            &[(ERROR_CODE_HEADER, "NoSuchCode")],
        );
        assert_eq!(
            Error::from_status(&unknown).code(),
            Some(ErrorCode::InternalError)
        );
    }

    #[test]
    fn batch_failures_keep_the_failed_index() {
        let s = status(
            Code::AlreadyExists,
            ErrorCode::EntityAlreadyExists,
            &[(FAILED_INDEX_HEADER, "3")],
        );
        let e = Error::from_status(&s);
        assert_eq!(e.failed_index(), Some(3));
        assert_eq!(e.code(), Some(ErrorCode::EntityAlreadyExists));
        assert!(matches!(e, Error::Batch(BatchError { index: Some(3), .. })));
        let garbled = status(
            Code::InvalidArgument,
            ErrorCode::InvalidInput,
            &[(FAILED_INDEX_HEADER, "x")],
        );
        assert_eq!(Error::from_status(&garbled).failed_index(), None);
    }

    #[test]
    fn not_leader_is_retryable_and_names_the_leader() {
        let s = status(
            Code::Unavailable,
            ErrorCode::NotLeader,
            &[(LEADER_HEADER, "10.0.0.2:7100")],
        );
        assert_eq!(
            classify(&s),
            Failure::NotLeader {
                leader: Some("10.0.0.2:7100".into())
            }
        );
        let s = status(Code::Unavailable, ErrorCode::NotLeader, &[]);
        assert_eq!(classify(&s), Failure::NotLeader { leader: None });
        assert_eq!(
            classify(&status(Code::Unavailable, ErrorCode::ServerBusy, &[])),
            Failure::Busy(Error::Server {
                code: ErrorCode::ServerBusy,
                message: "message from the node".into()
            })
        );
    }

    #[test]
    fn server_answers_are_final() {
        let s = status(
            Code::FailedPrecondition,
            ErrorCode::UpdateConditionNotSatisfied,
            &[],
        );
        assert!(
            matches!(classify(&s), Failure::Final(e) if e.code() == Some(ErrorCode::UpdateConditionNotSatisfied))
        );
        // Even an Internal or DeadlineExceeded answer is final when the node sent it.
        let s = status(Code::DeadlineExceeded, ErrorCode::OperationTimedOut, &[]);
        assert!(matches!(classify(&s), Failure::Final(e) if e.may_have_applied()));
        assert!(matches!(
            classify(&Status::internal("decode")),
            Failure::Final(_)
        ));
        assert!(matches!(
            classify(&Status::unimplemented("no such service")),
            Failure::Final(_)
        ));
    }

    #[test]
    fn connection_failures_are_told_apart_from_lost_responses() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let connect = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(connect.code(), Code::Unavailable);
        assert_eq!(classify(&connect), Failure::NotSent);

        let reset = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(classify(&reset), Failure::Transport);
        assert_eq!(
            classify(&Status::unavailable("proxy: upstream gone")),
            Failure::Transport
        );
        assert_eq!(
            classify(&Status::unknown("stream closed")),
            Failure::Transport
        );
    }

    /// A request on a pooled connection whose peer has gone is handed back unsent by hyper
    /// ("operation was canceled"): safe to send elsewhere, even for a write.
    #[tokio::test]
    async fn a_request_hyper_never_sent_is_not_sent() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let io = hyper_util::rt::TokioIo::new(ours);
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        drop(connection);
        let request = hyper::Request::builder()
            .uri("http://node/trestle.Table/Insert")
            .body(String::new())
            .unwrap();
        let err = sender.send_request(request).await.unwrap_err();
        assert!(err.is_canceled(), "{err:?}");
        let status = Status::from_error(Box::new(err));
        assert_eq!(classify(&status), Failure::NotSent);
    }

    #[test]
    fn ambiguity_is_reported() {
        assert!(Error::Ambiguous("reset".into()).may_have_applied());
        assert!(!Error::Timeout("no leader".into()).may_have_applied());
        assert!(
            !Error::Server {
                code: ErrorCode::EntityNotFound,
                message: String::new()
            }
            .may_have_applied()
        );
        assert_eq!(Error::Timeout("x".into()).code(), None);
    }
}
