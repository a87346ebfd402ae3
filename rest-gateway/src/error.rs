//! Azure's error responses: the status, the `x-ms-error-code` header and the body, in JSON when the
//! client accepts JSON and in XML otherwise.
//!
//! Every failure inside the gateway is an [`ApiError`] carrying one [`ErrorCode`] from the `types` crate,
//! so the code is mapped to HTTP in exactly one place ([`ApiError::status`]). Trestle's internal routing
//! codes (`NotLeader`, `DataCorrupted`) never leave the gateway as such: they become `ServerBusy` and
//! `InternalError`. Messages get Azure's `\nRequestId:<id>\nTime:<iso>` suffix when rendered.

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use trestle_types::{DateTime, ErrorCode};

use crate::json::MetadataLevel;
use crate::xml::escape;

/// The XML namespace of Azure Table error bodies.
pub const ERROR_XML_NAMESPACE: &str =
    "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata";

/// A failed request, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    /// Azure's message, without the RequestId/Time suffix.
    pub message: String,
    /// Extra headers for this error (for example `WWW-Authenticate` on a 401).
    pub headers: Vec<(&'static str, String)>,
}

/// The gateway's result type.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code: wire_code(code),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// An error with the code's default Azure message.
    pub fn from_code(code: ErrorCode) -> Self {
        let code = wire_code(code);
        ApiError::new(code, code.default_message())
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidInput, message)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Prefixes the message with `"<index>:"`, as Azure does for the failing operation of a batch.
    pub fn for_batch_operation(mut self, index: usize) -> Self {
        self.message = format!("{index}:{}", self.message);
        self
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The full message as Azure sends it: the message, the request id and the time.
    pub fn full_message(&self, request_id: &str, time: DateTime) -> String {
        format!(
            "{}\nRequestId:{request_id}\nTime:{}",
            self.message,
            time.to_iso()
        )
    }

    /// The error body in the given format.
    pub fn body(&self, format: ErrorFormat, request_id: &str, time: DateTime) -> String {
        let message = self.full_message(request_id, time);
        match format {
            ErrorFormat::Json => serde_json::json!({
                "odata.error": {
                    "code": self.code.as_str(),
                    "message": { "lang": "en-US", "value": message },
                }
            })
            .to_string(),
            ErrorFormat::Xml => format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><error xmlns=\"{ERROR_XML_NAMESPACE}\">\
                 <code>{}</code><message xml:lang=\"en-US\">{}</message></error>",
                self.code.as_str(),
                escape(&message)
            ),
            ErrorFormat::Storage => format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code>\
                 <Message>{}</Message></Error>",
                self.code.as_str(),
                escape(&message)
            ),
        }
    }

    /// The complete HTTP response: status, `x-ms-error-code`, content type and body.
    pub fn into_response(self, format: ErrorFormat, request_id: &str, time: DateTime) -> Response {
        let body = self.body(format, request_id, time);
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        if let Ok(code) = HeaderValue::from_str(self.code.as_str()) {
            headers.insert(HeaderName::from_static("x-ms-error-code"), code);
        }
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        response
    }
}

impl From<trestle_types::Error> for ApiError {
    fn from(error: trestle_types::Error) -> Self {
        let code = wire_code(error.code);
        if code != error.code {
            // The internal message (which replica leads, which check failed) is not the client's business.
            return ApiError::from_code(code);
        }
        ApiError::new(code, error.message)
    }
}

/// Maps Trestle's internal codes to what Azure would answer.
fn wire_code(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::NotLeader | ErrorCode::RangeStale => ErrorCode::ServerBusy,
        ErrorCode::DataCorrupted => ErrorCode::InternalError,
        other => other,
    }
}

/// How an error body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    Json,
    Xml,
    /// The storage front end's own XML (`<Error><Code>…</Code><Message>…</Message></Error>`, as Blob
    /// and Queue answer), used where the request never reaches the Table service's OData layer: a CORS
    /// preflight. `Code` and `Message` are plain strings there, which is how SDKs read them.
    Storage,
}

impl ErrorFormat {
    /// JSON when the client's `Accept` (or `$format`) asks for JSON, XML otherwise, as Azure does.
    pub fn negotiate(accept: Option<&str>, format_param: Option<&str>) -> ErrorFormat {
        let wants_json = |s: &str| s.to_ascii_lowercase().contains("json");
        if format_param.is_some_and(wants_json) || accept.is_some_and(wants_json) {
            ErrorFormat::Json
        } else {
            ErrorFormat::Xml
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ErrorFormat::Json => MetadataLevel::Minimal.content_type(),
            ErrorFormat::Xml => "application/xml;charset=utf-8",
            ErrorFormat::Storage => "application/xml",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time() -> DateTime {
        DateTime::parse("2021-09-21T00:50:52.9204305Z").unwrap()
    }

    #[test]
    fn json_body_is_azures_odata_error() {
        let err = ApiError::from_code(ErrorCode::EntityAlreadyExists);
        let body = err.body(ErrorFormat::Json, "rid-1", time());
        assert_eq!(
            body,
            "{\"odata.error\":{\"code\":\"EntityAlreadyExists\",\"message\":{\"lang\":\"en-US\",\
             \"value\":\"The specified entity already exists.\\nRequestId:rid-1\\n\
             Time:2021-09-21T00:50:52.9204305Z\"}}}"
        );
        assert_eq!(err.status(), StatusCode::CONFLICT);
    }

    #[test]
    fn xml_body_is_azures_dataservices_error() {
        let err = ApiError::new(ErrorCode::UpdateConditionNotSatisfied, "a < b & c");
        let body = err.body(ErrorFormat::Xml, "rid", time());
        assert_eq!(
            body,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><error xmlns=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\">\
             <code>UpdateConditionNotSatisfied</code><message xml:lang=\"en-US\">a &lt; b &amp; c\nRequestId:rid\n\
             Time:2021-09-21T00:50:52.9204305Z</message></error>"
        );
        assert_eq!(err.status(), StatusCode::PRECONDITION_FAILED);
    }

    #[test]
    fn response_carries_error_code_header_and_extra_headers() {
        let err = ApiError::from_code(ErrorCode::NoAuthenticationInformation)
            .with_header("www-authenticate", "Bearer x");
        let response = err.into_response(ErrorFormat::Xml, "rid", time());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["x-ms-error-code"],
            "NoAuthenticationInformation"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer x");
        assert_eq!(
            response.headers()["content-type"],
            "application/xml;charset=utf-8"
        );
    }

    #[test]
    fn internal_codes_are_mapped_and_their_messages_hidden() {
        let err = ApiError::from(trestle_types::Error::new(
            ErrorCode::NotLeader,
            "leader is n2",
        ));
        assert_eq!(err.code, ErrorCode::ServerBusy);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!err.message.contains("n2"));
        let err = ApiError::from(trestle_types::Error::new(ErrorCode::DataCorrupted, "crc"));
        assert_eq!(err.code, ErrorCode::InternalError);
    }

    #[test]
    fn batch_prefix_and_format_negotiation() {
        let err = ApiError::from_code(ErrorCode::InvalidDuplicateRow).for_batch_operation(3);
        assert!(
            err.message
                .starts_with("3:The batch request contains multiple changes")
        );
        assert_eq!(
            ErrorFormat::negotiate(Some("application/json;odata=nometadata"), None),
            ErrorFormat::Json
        );
        assert_eq!(
            ErrorFormat::negotiate(Some("application/xml"), None),
            ErrorFormat::Xml
        );
        assert_eq!(
            ErrorFormat::negotiate(None, Some("application/json")),
            ErrorFormat::Json
        );
        assert_eq!(ErrorFormat::negotiate(None, None), ErrorFormat::Xml);
    }
}
