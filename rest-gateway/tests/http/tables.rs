//! Table operations and the common response headers.

use crate::support::TestGateway;

#[tokio::test]
async fn every_response_carries_azures_common_headers() {
    let gw = TestGateway::start().await;
    let resp = gw
        .request("GET", "Tables")
        .header("x-ms-client-request-id", "client-42")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        resp.header("x-ms-request-id")
            .is_some_and(|id| id.len() == 36)
    );
    assert_eq!(resp.header("x-ms-version"), Some("2019-02-02"));
    assert_eq!(resp.header("x-ms-client-request-id"), Some("client-42"));
    assert_eq!(resp.header("dataserviceversion"), Some("3.0;"));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    assert!(resp.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(
        resp.header("content-type"),
        Some("application/json;odata=minimalmetadata;streaming=true;charset=utf-8")
    );
    // Errors carry them too.
    let err = gw
        .request("GET", "nosuchtable(PartitionKey='a',RowKey='b')")
        .send()
        .await;
    assert!(err.header("x-ms-request-id").is_some());
    assert_eq!(err.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn create_table_echoes_or_returns_no_content() {
    let gw = TestGateway::start().await;
    let resp = gw
        .request("POST", "Tables")
        .json(r#"{"TableName":"Customers"}"#)
        .send()
        .await;
    assert_eq!(resp.status, 201);
    assert_eq!(
        resp.header("location"),
        Some(format!("{}/Tables('Customers')", gw.base()).as_str())
    );
    assert_eq!(resp.header("preference-applied"), None);
    let body = resp.json();
    assert_eq!(body["TableName"], "Customers");
    assert_eq!(
        body["odata.metadata"],
        format!("{}/$metadata#Tables/@Element", gw.base())
    );

    let resp = gw
        .request("POST", "Tables")
        .json(r#"{"TableName":"Orders"}"#)
        .header("Prefer", "return-no-content")
        .send()
        .await;
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("preference-applied"), Some("return-no-content"));
    assert!(resp.body.is_empty());
}

#[tokio::test]
async fn duplicate_and_invalid_table_names() {
    let gw = TestGateway::start().await;
    gw.must_create_table("Orders").await;
    let resp = gw
        .request("POST", "Tables")
        .json(r#"{"TableName":"orders"}"#)
        .send()
        .await;
    resp.assert_error(409, "TableAlreadyExists");
    for bad in ["ab", "1abc", "tables", "has-dash"] {
        let resp = gw
            .request("POST", "Tables")
            .json(&format!("{{\"TableName\":\"{bad}\"}}"))
            .send()
            .await;
        resp.assert_error(400, "InvalidResourceName");
    }
}

#[tokio::test]
async fn delete_table_then_missing_is_resource_not_found() {
    let gw = TestGateway::start().await;
    gw.must_create_table("Gone").await;
    let resp = gw.request("DELETE", "Tables('Gone')").send().await;
    assert_eq!(resp.status, 204);
    let resp = gw.request("DELETE", "Tables('Gone')").send().await;
    resp.assert_error(404, "ResourceNotFound");
    let resp = gw.request("GET", "Tables('Gone')").send().await;
    resp.assert_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn query_tables_filters_pages_and_continues() {
    let gw = TestGateway::start().await;
    for name in ["alpha1", "beta1", "beta2", "gamma1", "delta1"] {
        gw.must_create_table(name).await;
    }
    let resp = gw
        .request(
            "GET",
            "Tables?$filter=TableName%20ge%20'beta'%20and%20TableName%20lt%20'c'",
        )
        .send()
        .await;
    let names: Vec<String> = resp.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["TableName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["beta1", "beta2"]);

    let mut seen = Vec::new();
    let mut path = "Tables?$top=2".to_string();
    for _ in 0..10 {
        let resp = gw.request("GET", &path).send().await;
        assert_eq!(resp.status, 200);
        let page = resp.json()["value"].as_array().unwrap().clone();
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|v| v["TableName"].as_str().unwrap().to_string()),
        );
        match resp.header("x-ms-continuation-nexttablename") {
            Some(token) => {
                assert!(token.starts_with("1!"), "opaque Azure-style token: {token}");
                path = format!("Tables?$top=2&NextTableName={token}");
            }
            None => break,
        }
    }
    assert_eq!(seen, vec!["alpha1", "beta1", "beta2", "delta1", "gamma1"]);
}

#[tokio::test]
async fn table_acl_round_trips() {
    let gw = TestGateway::start().await;
    gw.must_create_table("Acl").await;
    let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><SignedIdentifiers><SignedIdentifier><Id>policy1</Id>\
               <AccessPolicy><Start>2020-01-01T00:00:00Z</Start><Expiry>2099-01-01T00:00:00Z</Expiry>\
               <Permission>ar</Permission></AccessPolicy></SignedIdentifier></SignedIdentifiers>";
    let resp = gw
        .request("PUT", "Acl?comp=acl")
        .header("Content-Type", "application/xml")
        .body(xml.as_bytes().to_vec())
        .send()
        .await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    let resp = gw.request("GET", "Acl?comp=acl").send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/xml"));
    assert!(resp.body.contains("<Id>policy1</Id>"), "{}", resp.body);
    assert!(
        resp.body
            .contains("<Start>2020-01-01T00:00:00.0000000Z</Start>")
    );
    assert!(resp.body.contains("<Permission>ra</Permission>"));
}

#[tokio::test]
async fn host_style_addressing_works() {
    let gw = TestGateway::start().await;
    gw.must_create_table("Hosty").await;
    // reqwest cannot resolve acct.table.localhost, so send the Host header by hand to the loopback address.
    let url = format!("http://{}/Tables", gw.addr);
    let resp = gw
        .request_url("GET", &url)
        .header(
            "Host",
            &format!("devstoreaccount1.table.localhost:{}", gw.addr.port()),
        )
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["value"][0]["TableName"], "Hosty");
}
