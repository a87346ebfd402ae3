//! The `$batch` response envelope, byte for byte as Azure writes it (see the reference appendix):
//!
//! ```text
//! --batchresponse_<id>\r\nContent-Type: multipart/mixed; boundary=changesetresponse_<id>\r\n\r\n
//! --changesetresponse_<id>\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n
//! HTTP/1.1 204 No Content\r\n<headers>\r\n\r\n<body>\r\n
//! --changesetresponse_<id>--\r\n--batchresponse_<id>--\r\n
//! ```
//!
//! A failed changeset contains one response: the failing operation's status and its `odata.error`.

/// One HTTP response inside the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The reason phrase Azure writes for a status.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_http(out: &mut String, response: &SubResponse) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n");
    out.push_str(&format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason_phrase(response.status)
    ));
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&response.body);
    out.push_str("\r\n");
}

/// A batch response holding one changeset response with `responses` in order.
pub fn changeset_response(
    batch_boundary: &str,
    changeset_boundary: &str,
    responses: &[SubResponse],
) -> String {
    let mut out = format!(
        "--{batch_boundary}\r\nContent-Type: multipart/mixed; boundary={changeset_boundary}\r\n\r\n"
    );
    for response in responses {
        out.push_str(&format!("--{changeset_boundary}\r\n"));
        write_http(&mut out, response);
    }
    out.push_str(&format!(
        "--{changeset_boundary}--\r\n--{batch_boundary}--\r\n"
    ));
    out
}

/// A batch response holding the answer to a single query.
pub fn query_response(batch_boundary: &str, response: &SubResponse) -> String {
    let mut out = format!("--{batch_boundary}\r\n");
    write_http(&mut out, response);
    out.push_str(&format!("--{batch_boundary}--\r\n"));
    out
}

/// The headers Azure puts on every operation response inside a changeset.
pub fn base_headers() -> Vec<(String, String)> {
    vec![
        ("X-Content-Type-Options".into(), "nosniff".into()),
        ("Cache-Control".into(), "no-cache".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::multipart;

    #[test]
    fn success_envelope_matches_the_recorded_azure_response() {
        let mut headers = base_headers();
        headers.extend([
            (
                "Preference-Applied".to_string(),
                "return-no-content".to_string(),
            ),
            ("DataServiceVersion".to_string(), "3.0;".to_string()),
            (
                "Location".to_string(),
                "https://acct/t(PartitionKey='003',RowKey='x')".to_string(),
            ),
            (
                "DataServiceId".to_string(),
                "https://acct/t(PartitionKey='003',RowKey='x')".to_string(),
            ),
            (
                "ETag".to_string(),
                "W/\"datetime'2021-09-21T00%3A50%3A52.9204305Z'\"".to_string(),
            ),
        ]);
        let body = changeset_response(
            "batchresponse_fe6d",
            "changesetresponse_f503",
            &[SubResponse {
                status: 204,
                headers,
                body: String::new(),
            }],
        );
        assert_eq!(
            body,
            "--batchresponse_fe6d\r\nContent-Type: multipart/mixed; boundary=changesetresponse_f503\r\n\r\n\
             --changesetresponse_f503\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             HTTP/1.1 204 No Content\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n\
             Preference-Applied: return-no-content\r\nDataServiceVersion: 3.0;\r\n\
             Location: https://acct/t(PartitionKey='003',RowKey='x')\r\n\
             DataServiceId: https://acct/t(PartitionKey='003',RowKey='x')\r\n\
             ETag: W/\"datetime'2021-09-21T00%3A50%3A52.9204305Z'\"\r\n\r\n\r\n\
             --changesetresponse_f503--\r\n--batchresponse_fe6d--\r\n"
        );
    }

    #[test]
    fn envelopes_parse_back_with_our_own_reader() {
        let error = SubResponse {
            status: 409,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: "{\"odata.error\":{}}".into(),
        };
        let body = changeset_response("batchresponse_1", "changesetresponse_2", &[error]);
        let outer = multipart::split(body.as_bytes(), "batchresponse_1").unwrap();
        assert_eq!(outer.len(), 1);
        let inner = multipart::split(&outer[0].body, "changesetresponse_2").unwrap();
        assert_eq!(inner.len(), 1);
        let text = String::from_utf8(inner[0].body.clone()).unwrap();
        assert!(text.starts_with(
            "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n\r\n{\"odata.error\":{}}"
        ));

        let query = query_response(
            "batchresponse_q",
            &SubResponse {
                status: 200,
                headers: vec![],
                body: "{}".into(),
            },
        );
        assert_eq!(
            query,
            "--batchresponse_q\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             HTTP/1.1 200 OK\r\n\r\n{}\r\n--batchresponse_q--\r\n"
        );
    }
}
