//! Entity group transactions (`POST /$batch`): the request envelope, its validation, and the response
//! envelope.
//!
//! A batch body is `multipart/mixed` with exactly one part, which is either a changeset (itself
//! `multipart/mixed`, one `application/http` part per write, at most 100) or a single `application/http`
//! GET (a point query, which must be the only operation). Each inner request has an absolute URI request
//! line, headers and a JSON body. [`parse_batch`] only reads the envelope; turning each inner request into
//! a [`trestle_types::WriteOp`] (and the Azure rules: one table, one PartitionKey, each entity once) is the
//! batch handler's job, because those failures are reported *inside* a 202 response with the failing
//! operation's index.
//!
//! [`parse_batch`] is a fuzzing entry point: it never panics, whatever the bytes.

pub mod multipart;
pub mod response;

use trestle_types::Error;

pub use multipart::HttpRequest;

/// One operation of a batch, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOperation {
    pub request: HttpRequest,
    /// The part's `Content-ID`, if given.
    pub content_id: Option<String>,
}

/// A parsed batch envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchRequest {
    /// A changeset of writes.
    Changeset {
        boundary: String,
        operations: Vec<BatchOperation>,
    },
    /// A single point query.
    Query(BatchOperation),
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_input(message)
}

fn operation(part: &multipart::Part) -> Result<BatchOperation, Error> {
    let content_type = part.header("content-type").unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/http")
    {
        return Err(invalid(
            "Each batch operation must be an application/http part.",
        ));
    }
    Ok(BatchOperation {
        request: multipart::parse_http_request(&part.body)?,
        content_id: part.header("content-id").map(str::to_string),
    })
}

/// Parses a `$batch` body given the request's `Content-Type`.
pub fn parse_batch(content_type: &str, body: &[u8]) -> Result<BatchRequest, Error> {
    let boundary = multipart::boundary_of(content_type)
        .ok_or_else(|| invalid("A batch request must be multipart/mixed with a boundary."))?;
    let parts = multipart::split(body, &boundary)?;
    let [part] = parts.as_slice() else {
        return Err(invalid(
            "A batch request must contain exactly one changeset or one query.",
        ));
    };
    let part_type = part.header("content-type").unwrap_or("");
    match multipart::boundary_of(part_type) {
        Some(changeset_boundary) => {
            let operations = multipart::split(&part.body, &changeset_boundary)?
                .iter()
                .map(operation)
                .collect::<Result<Vec<_>, _>>()?;
            if operations.is_empty() {
                return Err(invalid("The changeset contains no operations."));
            }
            Ok(BatchRequest::Changeset {
                boundary: changeset_boundary,
                operations,
            })
        }
        None => {
            let op = operation(part)?;
            if op.request.method != "GET" {
                return Err(invalid(
                    "An operation outside a changeset must be a query (GET).",
                ));
            }
            Ok(BatchRequest::Query(op))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape azure-data-tables sends (boundaries shortened).
    pub(crate) const SDK_BATCH: &str = "--batch_1\r\n\
Content-Type: multipart/mixed; boundary=changeset_2\r\n\
\r\n\
--changeset_2\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-ID: 0\r\n\
\r\n\
POST http://127.0.0.1:10002/devstoreaccount1/t1 HTTP/1.1\r\n\
Content-Type: application/json;odata=nometadata\r\n\
Accept: application/json;odata=minimalmetadata\r\n\
Prefer: return-no-content\r\n\
\r\n\
{\"PartitionKey\":\"003\",\"RowKey\":\"x\",\"v\":1}\r\n\
--changeset_2\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-ID: 4\r\n\
\r\n\
PATCH https://acct.table.core.windows.net/t1(PartitionKey='003',RowKey='x-4') HTTP/1.1\r\n\
If-Match: *\r\n\
Content-Type: application/json\r\n\
\r\n\
{\"v\":2}\r\n\
--changeset_2\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
\r\n\
DELETE http://127.0.0.1:10002/devstoreaccount1/t1(PartitionKey='003',RowKey='y') HTTP/1.1\r\n\
If-Match: *\r\n\
\r\n\
\r\n\
--changeset_2--\r\n\
\r\n\
--batch_1--\r\n";

    #[test]
    fn parses_an_sdk_changeset() {
        let parsed =
            parse_batch("multipart/mixed; boundary=batch_1", SDK_BATCH.as_bytes()).unwrap();
        let BatchRequest::Changeset {
            boundary,
            operations,
        } = parsed
        else {
            panic!("not a changeset")
        };
        assert_eq!(boundary, "changeset_2");
        assert_eq!(operations.len(), 3);
        assert_eq!(operations[0].request.method, "POST");
        assert_eq!(operations[0].content_id.as_deref(), Some("0"));
        assert_eq!(
            operations[0].request.body,
            b"{\"PartitionKey\":\"003\",\"RowKey\":\"x\",\"v\":1}"
        );
        assert_eq!(
            operations[1].request.url,
            "https://acct.table.core.windows.net/t1(PartitionKey='003',RowKey='x-4')"
        );
        assert_eq!(operations[1].content_id.as_deref(), Some("4"));
        assert_eq!(operations[2].request.method, "DELETE");
        assert!(operations[2].request.body.is_empty());
    }

    #[test]
    fn parses_a_single_query() {
        let body = "--batch_q\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
GET http://127.0.0.1:10002/devstoreaccount1/t1(PartitionKey='p',RowKey='r') HTTP/1.1\r\n\
Accept: application/json;odata=minimalmetadata\r\n\r\n\r\n--batch_q--\r\n";
        let parsed = parse_batch("multipart/mixed; boundary=batch_q", body.as_bytes()).unwrap();
        let BatchRequest::Query(op) = parsed else {
            panic!("not a query")
        };
        assert_eq!(op.request.method, "GET");
    }

    #[test]
    fn rejects_bad_envelopes() {
        let cases: &[(&str, &str)] = &[
            ("application/json", SDK_BATCH),
            ("multipart/mixed; boundary=other", SDK_BATCH),
            (
                "multipart/mixed; boundary=b",
                "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
            ),
            (
                "multipart/mixed; boundary=b",
                "--b\r\nContent-Type: application/http\r\n\r\nPOST http://h/a/t HTTP/1.1\r\n\r\n{}\r\n--b--",
            ),
            (
                "multipart/mixed; boundary=b",
                "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c--\r\n--b--",
            ),
            ("multipart/mixed; boundary=b", "--b--"),
        ];
        for (content_type, body) in cases {
            assert!(
                parse_batch(content_type, body.as_bytes()).is_err(),
                "{content_type} {body:?}"
            );
        }
    }
}
