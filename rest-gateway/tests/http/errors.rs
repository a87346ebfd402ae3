//! One test per remaining error code the gateway produces (the others live beside their features).

use trestle_rest_gateway::GatewayConfig;

use crate::support::TestGateway;

async fn with_table() -> TestGateway {
    let gw = TestGateway::start().await;
    gw.must_create_table("err1").await;
    gw
}

#[tokio::test]
async fn invalid_uri() {
    let gw = TestGateway::start().await;
    gw.request("GET", "a/b/c")
        .send()
        .await
        .assert_error(400, "InvalidUri");
    gw.request("GET", "")
        .send()
        .await
        .assert_error(400, "InvalidUri");
}

#[tokio::test]
async fn invalid_input_for_bad_json_and_bad_if_match() {
    let gw = with_table().await;
    gw.request("POST", "err1")
        .json("{not json")
        .send()
        .await
        .assert_error(400, "InvalidInput");
    let resp = gw
        .request("PUT", "err1(PartitionKey='p',RowKey='r')")
        .json("{}")
        .header("If-Match", "MalformedETag")
        .send()
        .await;
    resp.assert_error(400, "InvalidInput");
    let resp = gw
        .request("PUT", "err1(PartitionKey='p',RowKey='r')")
        .json("{}")
        .header("If-None-Match", "*")
        .send()
        .await;
    resp.assert_error(400, "InvalidInput");
    gw.request("POST", "err1")
        .json(r#"{"PartitionKey":"p","RowKey":"r","x":4294967296}"#)
        .send()
        .await
        .assert_error(400, "InvalidInput");
    gw.request("POST", "err1")
        .json(r#"{"PartitionKey":"p","RowKey":"r","x":"1","x@odata.type":"Edm.Decimal"}"#)
        .send()
        .await
        .assert_error(400, "InvalidInput");
    gw.request("GET", "err1(PartitionKey='p')")
        .send()
        .await
        .assert_error(400, "InvalidInput");
}

#[tokio::test]
async fn entity_already_exists_and_table_not_found() {
    let gw = with_table().await;
    gw.must_insert("err1", r#"{"PartitionKey":"p","RowKey":"r"}"#)
        .await;
    gw.request("POST", "err1")
        .json(r#"{"PartitionKey":"p","RowKey":"r"}"#)
        .send()
        .await
        .assert_error(409, "EntityAlreadyExists");
    gw.request("POST", "nothere")
        .json(r#"{"PartitionKey":"p","RowKey":"r"}"#)
        .send()
        .await
        .assert_error(404, "TableNotFound");
}

#[tokio::test]
async fn entity_limit_codes() {
    let gw = with_table().await;
    let post = |body: String| gw.request("POST", "err1").json(&body);
    post(r#"{"PartitionKey":"p","RowKey":"r","a":1,"a":2}"#.into())
        .send()
        .await
        .assert_error(400, "DuplicatePropertiesSpecified");
    post(r#"{"RowKey":"r"}"#.into())
        .send()
        .await
        .assert_error(400, "PropertiesNeedValue");
    let many: String = (0..253).map(|i| format!(",\"p{i}\":1")).collect();
    post(format!(r#"{{"PartitionKey":"p","RowKey":"r"{many}}}"#))
        .send()
        .await
        .assert_error(400, "TooManyProperties");
    let long = "x".repeat(33 * 1024);
    post(format!(
        r#"{{"PartitionKey":"p","RowKey":"r","s":"{long}"}}"#
    ))
    .send()
    .await
    .assert_error(400, "PropertyValueTooLarge");
    post(r#"{"PartitionKey":"p","RowKey":"r","1bad":1}"#.into())
        .send()
        .await
        .assert_error(400, "PropertyNameInvalid");
    let name = "n".repeat(256);
    post(format!(r#"{{"PartitionKey":"p","RowKey":"r","{name}":1}}"#))
        .send()
        .await
        .assert_error(400, "PropertyNameTooLong");
    let big: String = (0..17)
        .map(|i| format!(",\"b{i}\":\"{}\"", "y".repeat(32 * 1024 - 8)))
        .collect();
    post(format!(r#"{{"PartitionKey":"p","RowKey":"r"{big}}}"#))
        .send()
        .await
        .assert_error(400, "EntityTooLarge");
    let key = "k".repeat(513);
    post(format!(r#"{{"PartitionKey":"{key}","RowKey":"r"}}"#))
        .send()
        .await
        .assert_error(400, "OutOfRangeInput");
}

#[tokio::test]
async fn x_method_errors() {
    let gw = with_table().await;
    let path = "err1(PartitionKey='p',RowKey='r')";
    gw.request("PUT", path)
        .header("X-HTTP-Method", "MERGE")
        .json("{}")
        .send()
        .await
        .assert_error(400, "XMethodNotUsingPost");
    gw.request("POST", path)
        .header("X-HTTP-Method", "GET")
        .json("{}")
        .send()
        .await
        .assert_error(400, "XMethodIncorrectValue");
    let resp = gw
        .request("POST", path)
        .append_header("X-HTTP-Method", "PUT")
        .append_header("X-HTTP-Method", "MERGE")
        .json("{}")
        .send()
        .await;
    resp.assert_error(400, "XMethodIncorrectCount");
}

#[tokio::test]
async fn method_not_allowed() {
    let gw = with_table().await;
    gw.request("PUT", "Tables")
        .json("{}")
        .send()
        .await
        .assert_error(405, "MethodNotAllowed");
    gw.request("POST", "err1(PartitionKey='p',RowKey='r')")
        .json("{}")
        .send()
        .await
        .assert_error(405, "MethodNotAllowed");
}

#[tokio::test]
async fn atom_and_unknown_media_types() {
    let gw = with_table().await;
    let resp = gw
        .request("POST", "err1")
        .header("Content-Type", "application/atom+xml")
        .body(b"<entry/>".to_vec())
        .send()
        .await;
    resp.assert_error(415, "AtomFormatNotSupported");
    let resp = gw
        .request("GET", "err1()")
        .header("Accept", "application/atom+xml")
        .send()
        .await;
    resp.assert_error(415, "AtomFormatNotSupported");
    let resp = gw
        .request("POST", "err1")
        .header("Content-Type", "text/csv")
        .body(b"a,b".to_vec())
        .send()
        .await;
    resp.assert_error(415, "MediaTypeNotSupported");
}

#[tokio::test]
async fn delete_without_if_match_is_missing_required_header() {
    let gw = with_table().await;
    gw.request("DELETE", "err1(PartitionKey='p',RowKey='r')")
        .send()
        .await
        .assert_error(400, "MissingRequiredHeader");
}

#[tokio::test]
async fn invalid_query_parameter_value_for_unknown_comp() {
    let gw = with_table().await;
    gw.request("GET", "err1?comp=nope")
        .send()
        .await
        .assert_error(400, "InvalidQueryParameterValue");
    gw.request("GET", "?restype=service&comp=nope")
        .send()
        .await
        .assert_error(400, "InvalidQueryParameterValue");
}

#[tokio::test]
async fn invalid_xml_document_for_acl() {
    let gw = with_table().await;
    let six: String = (0..6)
        .map(|i| format!("<SignedIdentifier><Id>id{i}</Id></SignedIdentifier>"))
        .collect();
    let resp = gw
        .request("PUT", "err1?comp=acl")
        .body(format!("<SignedIdentifiers>{six}</SignedIdentifiers>").into_bytes())
        .send()
        .await;
    resp.assert_error(400, "InvalidXmlDocument");
    let resp = gw
        .request("PUT", "err1?comp=acl")
        .body(b"<SignedIdentifiers><oops>".to_vec())
        .send()
        .await;
    resp.assert_error(400, "InvalidXmlDocument");
}

#[tokio::test]
async fn request_body_too_large() {
    let gw = with_table().await;
    let body = vec![b' '; 4 * 1024 * 1024 + 1];
    gw.request("POST", "err1")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .assert_error(413, "RequestBodyTooLarge");
    let small = TestGateway::start_with(GatewayConfig {
        max_body_bytes: 64,
        ..GatewayConfig::for_test()
    })
    .await;
    small.must_create_table("sml1").await;
    let resp = small
        .request("POST", "sml1")
        .json(&format!(
            r#"{{"PartitionKey":"p","RowKey":"r","s":"{}"}}"#,
            "x".repeat(100)
        ))
        .send()
        .await;
    resp.assert_error(413, "RequestBodyTooLarge");
}

#[tokio::test]
async fn invalid_fencing_header() {
    let gw = with_table().await;
    let resp = gw
        .request("POST", "err1")
        .json(r#"{"PartitionKey":"p","RowKey":"r"}"#)
        .header("x-trestle-fencing-token", "no-token-here")
        .send()
        .await;
    resp.assert_error(400, "InvalidHeaderValue");
    let resp = gw
        .request("POST", "err1")
        .json(r#"{"PartitionKey":"p","RowKey":"r"}"#)
        .header("x-trestle-fencing-token", "leader-lock:42")
        .header("Prefer", "return-no-content")
        .send()
        .await;
    assert_eq!(resp.status, 204);
}

#[tokio::test]
async fn anonymous_access_only_when_configured() {
    let gw = TestGateway::start_with(GatewayConfig {
        allow_anonymous: true,
        ..GatewayConfig::for_test()
    })
    .await;
    let resp = gw
        .request("GET", "Tables")
        .auth(crate::support::Auth::None)
        .send()
        .await;
    assert_eq!(resp.status, 200);
}

/// Azure refuses an `x-ms-version` it does not know with 400 `InvalidHeaderValue` and does not echo it
/// (azure-sdk-for-net#45302 records the real service's answer); every published version is echoed.
#[tokio::test]
async fn an_unknown_x_ms_version_is_invalid_header_value() {
    let gw = TestGateway::start().await;
    for bad in [
        "2019-02-03",
        "2099-01-01",
        "latest",
        "",
        "2019-02-02x",
        "1.0",
    ] {
        let resp = gw
            .request("GET", "Tables")
            .header("x-ms-version", bad)
            .send()
            .await;
        resp.assert_error(400, "InvalidHeaderValue");
        assert!(resp.body.contains("x-ms-version"), "{bad}: {}", resp.body);
        assert_eq!(resp.header("x-ms-version"), None, "{bad}");
    }
    for good in [
        "2009-04-14",
        "2015-12-11",
        "2017-04-17",
        "2018-03-28",
        "2019-02-02",
        "2020-12-06",
        "2024-08-04",
        "2026-06-06",
    ] {
        let resp = gw
            .request("GET", "Tables")
            .header("x-ms-version", good)
            .send()
            .await;
        assert_eq!(resp.status, 200, "{good}: {}", resp.body);
        assert_eq!(resp.header("x-ms-version"), Some(good));
    }
    let resp = gw
        .request("GET", "Tables")
        .without_header("x-ms-version")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("x-ms-version"), Some("2019-02-02"));
}
