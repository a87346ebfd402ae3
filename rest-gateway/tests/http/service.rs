//! Service properties, stats and CORS.

use crate::support::{Auth, TestGateway};

const CORS_PROPERTIES: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?><StorageServiceProperties><Cors><CorsRule>\
    <AllowedOrigins>http://app.example</AllowedOrigins><AllowedMethods>GET,PUT</AllowedMethods>\
    <MaxAgeInSeconds>600</MaxAgeInSeconds><ExposedHeaders>x-ms-request-id</ExposedHeaders>\
    <AllowedHeaders>x-ms-*,content-type</AllowedHeaders></CorsRule></Cors></StorageServiceProperties>";

#[tokio::test]
async fn service_properties_default_set_and_merge() {
    let gw = TestGateway::start().await;
    let resp = gw
        .request("GET", "?restype=service&comp=properties")
        .header("Accept", "application/xml")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.body
            .contains("<StorageServiceProperties><Logging><Version>1.0</Version>"),
        "{}",
        resp.body
    );
    let resp = gw
        .request("PUT", "?restype=service&comp=properties")
        .header("Content-Type", "application/xml")
        .body(CORS_PROPERTIES.as_bytes().to_vec())
        .send()
        .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let resp = gw
        .request("GET", "?restype=service&comp=properties")
        .send()
        .await;
    assert!(
        resp.body.contains("<Logging><Version>1.0</Version>"),
        "logging kept: {}",
        resp.body
    );
    assert!(
        resp.body
            .contains("<AllowedOrigins>http://app.example</AllowedOrigins>")
    );
}

#[tokio::test]
async fn bad_service_properties_are_invalid_xml() {
    let gw = TestGateway::start().await;
    let resp = gw
        .request("PUT", "?restype=service&comp=properties")
        .body(b"<StorageServiceProperties><Nope/></StorageServiceProperties>".to_vec())
        .send()
        .await;
    resp.assert_error(400, "InvalidXmlDocument");
    let resp = gw
        .request("DELETE", "?restype=service&comp=properties")
        .send()
        .await;
    resp.assert_error(405, "UnsupportedHttpVerb");
}

#[tokio::test]
async fn stats_only_on_the_secondary() {
    let gw = TestGateway::start().await;
    let url = format!(
        "http://{}/devstoreaccount1-secondary/?restype=service&comp=stats",
        gw.addr
    );
    let resp = gw.request_url("GET", &url).send().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        resp.body
            .contains("<GeoReplication><Status>live</Status><LastSyncTime>")
    );
    let resp = gw
        .request("GET", "?restype=service&comp=stats")
        .send()
        .await;
    resp.assert_error(400, "InvalidQueryParameterValue");
    // The secondary is read-only.
    let url = format!("http://{}/devstoreaccount1-secondary/Tables", gw.addr);
    let resp = gw
        .request_url("POST", &url)
        .json(r#"{"TableName":"nope"}"#)
        .send()
        .await;
    resp.assert_error(403, "AuthorizationFailure");
}

#[tokio::test]
async fn cors_preflight_and_actual_requests() {
    let gw = TestGateway::start().await;
    // No rules yet: preflight fails.
    let preflight = |origin: &'static str, method: &'static str| {
        gw.request("OPTIONS", "Tables")
            .auth(Auth::None)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header(
                "Access-Control-Request-Headers",
                "x-ms-version,content-type",
            )
    };
    preflight("http://app.example", "GET")
        .send()
        .await
        .assert_error(403, "CorsPreflightFailure");
    let resp = gw
        .request("PUT", "?restype=service&comp=properties")
        .body(CORS_PROPERTIES.as_bytes().to_vec())
        .send()
        .await;
    assert_eq!(resp.status, 202);
    let resp = preflight("http://app.example", "GET").send().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(resp.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(
        resp.header("access-control-allow-headers"),
        Some("x-ms-version,content-type")
    );
    assert_eq!(resp.header("access-control-max-age"), Some("600"));
    preflight("http://evil.example", "GET")
        .send()
        .await
        .assert_error(403, "CorsPreflightFailure");
    preflight("http://app.example", "DELETE")
        .send()
        .await
        .assert_error(403, "CorsPreflightFailure");
    let resp = gw
        .request("OPTIONS", "Tables")
        .auth(Auth::None)
        .send()
        .await;
    resp.assert_error(400, "InvalidHeaderValue");
    // An actual request from the allowed origin gets the CORS headers.
    let resp = gw
        .request("GET", "Tables")
        .header("Origin", "http://app.example")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(
        resp.header("access-control-expose-headers"),
        Some("x-ms-request-id")
    );
    let resp = gw
        .request("GET", "Tables")
        .header("Origin", "http://evil.example")
        .send()
        .await;
    assert!(resp.header("access-control-allow-origin").is_none());
}

/// `Vary: Origin` on actual GET/HEAD answers follows the table in Azure's CORS documentation
/// ("Understanding the Vary header"): set for an exact-origin match and when no rule matches (CORS
/// enabled), not for a rule that allows every origin, never when the service has no rules. A failed
/// preflight answers in the storage front end's XML, whose `Message` is a plain string.
#[tokio::test]
async fn cors_vary_and_failed_preflight_follow_azure() {
    let gw = TestGateway::start().await;
    let get = |origin: &'static str| gw.request("GET", "Tables").header("Origin", origin).send();
    // No rules: nothing varies.
    assert_eq!(get("http://app.example").await.header("vary"), None);
    let properties = "<?xml version=\"1.0\" encoding=\"utf-8\"?><StorageServiceProperties><Cors>\
        <CorsRule><AllowedOrigins>http://app.example</AllowedOrigins><AllowedMethods>GET,PUT\
        </AllowedMethods><MaxAgeInSeconds>0</MaxAgeInSeconds><ExposedHeaders></ExposedHeaders>\
        <AllowedHeaders></AllowedHeaders></CorsRule>\
        <CorsRule><AllowedOrigins>*</AllowedOrigins><AllowedMethods>GET</AllowedMethods>\
        <MaxAgeInSeconds>0</MaxAgeInSeconds><ExposedHeaders></ExposedHeaders>\
        <AllowedHeaders></AllowedHeaders></CorsRule></Cors></StorageServiceProperties>";
    let resp = gw
        .request("PUT", "?restype=service&comp=properties")
        .body(properties.as_bytes().to_vec())
        .send()
        .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    // Exact origin: Vary, the origin echoed.
    let resp = get("http://app.example").await;
    assert_eq!(resp.header("vary"), Some("Origin"));
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    // Any origin (the `*` rule): `*`, no Vary.
    let resp = get("http://other.example").await;
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(resp.header("vary"), None);
    // No rule matches (DELETE is allowed by none): no CORS headers; not a GET, so no Vary either.
    let resp = gw
        .request("DELETE", "Tables('nothere')")
        .header("Origin", "http://other.example")
        .send()
        .await;
    assert_eq!(resp.header("access-control-allow-origin"), None);
    assert_eq!(resp.header("vary"), None);
    // A GET no rule matches (rules exist): Vary, no CORS headers.
    let resp = gw
        .request("HEAD", "Tables")
        .header("Origin", "http://other.example")
        .send()
        .await;
    assert_eq!(resp.header("access-control-allow-origin"), None);
    assert_eq!(resp.header("vary"), Some("Origin"));
    // A failed preflight: 403 in storage XML even when the client accepts JSON.
    let resp = gw
        .request("OPTIONS", "Tables")
        .auth(Auth::None)
        .header("Origin", "http://other.example")
        .header("Access-Control-Request-Method", "DELETE")
        .send()
        .await;
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert_eq!(resp.header("x-ms-error-code"), Some("CorsPreflightFailure"));
    assert!(
        resp.body.starts_with(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>CorsPreflightFailure</Code>\
             <Message>CORS not enabled or no matching rule found for this request.\nRequestId:"
        ),
        "{}",
        resp.body
    );
}
