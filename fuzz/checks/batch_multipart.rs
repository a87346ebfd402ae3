//! Fuzzes the `$batch` envelope parser (multipart/mixed with `application/http` parts).
//!
//! The input's first line is the request's `Content-Type`, the rest its body. `parse_batch` must never
//! panic; neither may the per-operation parsers the handler then applies (request URL addressing and the
//! entity JSON). A response envelope built from whatever parsed must read back with the same splitter.

use trestle_rest_gateway::batch::multipart;
use trestle_rest_gateway::batch::response::{SubResponse, changeset_response};
use trestle_rest_gateway::batch::{BatchRequest, parse_batch};
use trestle_rest_gateway::json::parse_entity_json;
use trestle_rest_gateway::resource::parse_target;

/// Runs one input; panics if a promise is broken.
pub fn check(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(content_type) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = data.get(split + 1..).unwrap_or(&[]);
    let Ok(batch) = parse_batch(content_type.trim_end_matches('\r'), body) else {
        return;
    };
    let operations = match &batch {
        BatchRequest::Changeset { operations, .. } => operations.clone(),
        BatchRequest::Query(op) => vec![op.clone()],
    };
    let mut responses = Vec::new();
    for op in &operations {
        let url = &op.request.url;
        let (host, path) = match url.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map_or((rest, "/"), |i| (&rest[..i], &rest[i..])),
            None => ("127.0.0.1", url.as_str()),
        };
        let _ = parse_target(Some(host), path.split('?').next().unwrap_or(path));
        let _ = parse_entity_json(&op.request.body);
        responses.push(SubResponse {
            status: 204,
            headers: vec![],
            body: String::new(),
        });
    }
    let envelope = changeset_response("batchresponse_f", "changesetresponse_f", &responses);
    let outer =
        multipart::split(envelope.as_bytes(), "batchresponse_f").expect("our envelope parses");
    assert_eq!(outer.len(), 1);
    let inner =
        multipart::split(&outer[0].body, "changesetresponse_f").expect("our changeset parses");
    assert_eq!(inner.len(), responses.len());
}
