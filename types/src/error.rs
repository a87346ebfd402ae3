//! The one error-code enum of Trestle.
//!
//! Every failure a client can see is an [`ErrorCode`]. The names are Azure's (`x-ms-error-code` /
//! `odata.error.code`) so the REST gateway maps them one to one; the gRPC service maps each code once to
//! a gRPC status and carries the code name in the status details, so the Rust SDK gets the same code back.

use std::fmt;

/// A failure with Azure's error code and a human-readable message (without the RequestId/Time suffix
/// that the REST gateway appends).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    /// An error with the code's default (Azure) message.
    pub fn from_code(code: ErrorCode) -> Self {
        Error {
            code,
            message: code.default_message().to_string(),
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidInput, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InternalError, message)
    }
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $status:literal, $msg:literal; )*) => {
        /// Azure Table service error codes (plus Trestle's own routing codes at the end).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }

        impl ErrorCode {
            /// Every code, for exhaustive tests and lookups.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$name, )* ];

            /// The code's name as Azure spells it on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$name => stringify!($name), )* }
            }

            /// The HTTP status Azure answers with for this code.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$name => $status, )* }
            }

            /// Azure's default message for this code.
            pub fn default_message(self) -> &'static str {
                match self { $( ErrorCode::$name => $msg, )* }
            }

            /// Parses a code name (as produced by [`ErrorCode::as_str`]).
            pub fn parse(name: &str) -> Option<ErrorCode> {
                match name { $( stringify!($name) => Some(ErrorCode::$name), )* _ => None }
            }
        }
    };
}

error_codes! {
    // Table service codes.
    DuplicatePropertiesSpecified = 400, "A property is specified more than one time.";
    EntityNotFound = 404, "The specified entity does not exist.";
    EntityAlreadyExists = 409, "The specified entity already exists.";
    EntityTooLarge = 400, "The entity is larger than the maximum size permitted.";
    InvalidDuplicateRow = 400, "The batch request contains multiple changes with same row key. An entity can appear only once in a batch request.";
    InvalidInput = 400, "One of the request inputs is not valid.";
    InvalidValueType = 400, "The value specified is invalid.";
    JsonFormatNotSupported = 415, "JSON format is not supported.";
    AtomFormatNotSupported = 415, "Atom format is not supported.";
    MethodNotAllowed = 405, "The requested method is not allowed on the specified resource.";
    NotImplemented = 501, "The requested operation is not implemented on the specified resource.";
    OutOfRangeInput = 400, "One of the request inputs is out of range.";
    PropertiesNeedValue = 400, "Values have not been specified for all properties in the entity.";
    PropertyNameInvalid = 400, "The property name is invalid.";
    PropertyNameTooLong = 400, "The property name exceeds the maximum allowed length.";
    PropertyValueTooLarge = 400, "The property value exceeds the maximum allowed size (64KB). If the property value is a string, it is UTF-16 encoded and the maximum number of characters should be 32K or less.";
    TableAlreadyExists = 409, "The table specified already exists.";
    TableBeingDeleted = 409, "The specified table is being deleted. Try operation later.";
    TableNotFound = 404, "The table specified does not exist.";
    TooManyProperties = 400, "The entity contains more properties than allowed. Each entity can include up to 252 properties to store data. Each entity also has 3 system properties.";
    UpdateConditionNotSatisfied = 412, "The update condition specified in the request was not satisfied.";
    XMethodIncorrectCount = 400, "More than one X-HTTP-Method is specified.";
    XMethodIncorrectValue = 400, "The specified X-HTTP-Method is invalid.";
    XMethodNotUsingPost = 400, "The request uses X-HTTP-Method with an HTTP verb other than POST.";
    CommandsInBatchActOnDifferentPartitions = 400, "All commands in a batch must operate on same entity group.";
    MediaTypeNotSupported = 415, "None of the provided media types are supported.";
    // Common storage codes.
    ResourceNotFound = 404, "The specified resource does not exist.";
    InvalidResourceName = 400, "The specifed resource name contains invalid characters.";
    OutOfRangeQueryParameterValue = 400, "One of the query parameters specified in the request URI is outside the permissible range.";
    InvalidQueryParameterValue = 400, "Value for one of the query parameters specified in the request URI is invalid.";
    InvalidHeaderValue = 400, "The value for one of the HTTP headers is not in the correct format.";
    MissingRequiredHeader = 400, "An HTTP header that's mandatory for this request is not specified.";
    InvalidXmlDocument = 400, "XML specified is not syntactically valid.";
    InvalidUri = 400, "The requested URI does not represent any resource on the server.";
    UnsupportedHttpVerb = 405, "The resource doesn't support the specified HTTP verb.";
    RequestBodyTooLarge = 413, "The request body is too large and exceeds the maximum permissible limit.";
    AuthenticationFailed = 403, "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.";
    AuthorizationPermissionMismatch = 403, "This request is not authorized to perform this operation using this permission.";
    AuthorizationResourceTypeMismatch = 403, "This request is not authorized to perform this operation using this resource type.";
    AuthorizationServiceMismatch = 403, "This request is not authorized to perform this operation using this service.";
    AuthorizationSourceIPMismatch = 403, "This request is not authorized to perform this operation using this source IP.";
    AuthorizationProtocolMismatch = 403, "This request is not authorized to perform this operation using this protocol.";
    AuthorizationFailure = 403, "This request is not authorized to perform this operation.";
    InvalidAuthenticationInfo = 401, "Authentication information is not given in the correct format. Check the value of Authorization header.";
    NoAuthenticationInformation = 401, "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.";
    CorsPreflightFailure = 403, "CORS not enabled or no matching rule found for this request.";
    InvalidQueryParameterValueStats = 400, "Value for one of the query parameters specified in the request URI is invalid.";
    ServerBusy = 503, "The server is currently unable to receive requests. Please retry your request.";
    OperationTimedOut = 500, "The operation could not be completed within the permitted time.";
    InternalError = 500, "The server encountered an internal error. Please retry the request.";
    // Trestle's own codes, never sent over REST as such (the gateway retries or maps them).
    /// The replica that received the request is not the range's leader; the message names the leader if known.
    NotLeader = 503, "The replica is not the leader of the range.";
    /// The range changed (split or merged) after the request was routed to it; nothing was applied.
    RangeStale = 503, "The range changed after the request was routed; nothing was applied.";
    /// A data integrity check (crc32) failed; the value is never served.
    DataCorrupted = 500, "Stored data failed its integrity check.";
    /// A write carried a fencing token lower than one the range has already seen for that lock.
    FencingTokenStale = 409, "The fencing token is older than one already seen for this lock.";
    /// The lease named by a lock call does not exist: it expired or was revoked.
    LeaseNotFound = 404, "The lease does not exist; it expired or was revoked.";
    /// The lock is held by another lease and the caller did not wait (or its wait ran out).
    LockHeld = 409, "The lock is held by another lease.";
    /// A release (or cancel) by a lease that does not hold (or wait for) the lock.
    LockNotHeld = 409, "The lease does not hold this lock.";
    /// A lease, lock or waiter limit of the lock manager was reached.
    LockLimitExceeded = 409, "A limit of the lock manager was reached.";
    /// A node asked to join with the id of a member at another address.
    NodeAlreadyExists = 409, "Another node is already a member with this id.";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!((400..=599).contains(&code.http_status()), "{code}");
        }
        assert_eq!(ErrorCode::parse("NoSuchCode"), None);
    }

    #[test]
    fn azure_statuses_for_the_common_codes() {
        assert_eq!(ErrorCode::EntityAlreadyExists.http_status(), 409);
        assert_eq!(ErrorCode::UpdateConditionNotSatisfied.http_status(), 412);
        assert_eq!(ErrorCode::ResourceNotFound.http_status(), 404);
        assert_eq!(ErrorCode::RequestBodyTooLarge.http_status(), 413);
    }
}
