//! Entity operations: insert, get, update, merge, upserts, delete, ETags, X-HTTP-Method.

use crate::support::TestGateway;

const ENTITY: &str = r#"{"PartitionKey":"pk","RowKey":"rk","age":"39","age@odata.type":"Edm.Int64","ratio":3.0,
    "Birthday":"1973-10-04T00:00:00Z","Birthday@odata.type":"Edm.DateTime","binary":"YmluYXJ5",
    "binary@odata.type":"Edm.Binary","clsid":"c9da6455-213d-42c9-9a79-3e9149a57833","clsid@odata.type":"Edm.Guid",
    "name":"x","count":7,"ok":true}"#;

#[tokio::test]
async fn insert_echoes_the_entity_with_etag_and_location() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tab1").await;
    let resp = gw.request("POST", "tab1").json(ENTITY).send().await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let etag = resp.header("etag").unwrap().to_string();
    assert!(
        etag.starts_with("W/\"datetime'") && etag.contains("%3A"),
        "{etag}"
    );
    assert_eq!(
        resp.header("location"),
        Some(format!("{}/tab1(PartitionKey='pk',RowKey='rk')", gw.base()).as_str())
    );
    let body = resp.json();
    assert_eq!(
        body["odata.metadata"],
        format!("{}/$metadata#tab1/@Element", gw.base())
    );
    assert_eq!(body["odata.etag"], etag);
    assert_eq!(body["age"], "39");
    assert_eq!(body["age@odata.type"], "Edm.Int64");
    assert_eq!(body["Birthday"], "1973-10-04T00:00:00.0000000Z");
    assert_eq!(body["clsid@odata.type"], "Edm.Guid");
    assert_eq!(body["count"], 7);
    assert!(body.get("count@odata.type").is_none());
    assert!(body.get("Timestamp@odata.type").is_none());
    assert!(
        resp.body.contains("\"ratio\":3.0"),
        "whole doubles keep .0: {}",
        resp.body
    );
}

#[tokio::test]
async fn get_entity_with_select_and_metadata_levels() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tab1").await;
    let etag = gw.must_insert("tab1", ENTITY).await;
    let resp = gw
        .request("GET", "tab1(PartitionKey='pk',RowKey='rk')")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("etag"), Some(etag.as_str()));
    assert_eq!(resp.json()["binary"], "YmluYXJ5");

    let resp = gw
        .request(
            "GET",
            "tab1(PartitionKey='pk',RowKey='rk')?$select=name,missing",
        )
        .send()
        .await;
    let body = resp.json();
    assert_eq!(body["name"], "x");
    assert!(body["missing"].is_null() && body.as_object().unwrap().contains_key("missing"));
    assert!(body.get("count").is_none());

    let resp = gw
        .request("GET", "tab1(PartitionKey='pk',RowKey='rk')")
        .header("Accept", "application/json;odata=nometadata")
        .send()
        .await;
    assert_eq!(
        resp.header("content-type"),
        Some("application/json;odata=nometadata;streaming=true;charset=utf-8")
    );
    assert!(!resp.body.contains("odata"), "{}", resp.body);

    let resp = gw
        .request(
            "GET",
            "tab1(PartitionKey='pk',RowKey='rk')?$format=application/json;odata=fullmetadata",
        )
        .send()
        .await;
    let body = resp.json();
    assert_eq!(body["odata.type"], "devstoreaccount1.tab1");
    assert_eq!(
        body["odata.editLink"],
        "tab1(PartitionKey='pk',RowKey='rk')"
    );
    assert_eq!(body["Timestamp@odata.type"], "Edm.DateTime");
}

#[tokio::test]
async fn keys_with_quotes_and_unicode_round_trip() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tab1").await;
    gw.must_insert("tab1", r#"{"PartitionKey":"it's","RowKey":"ü b","v":1}"#)
        .await;
    let resp = gw
        .request("GET", "tab1(PartitionKey='it''s',RowKey='%C3%BC%20b')")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["PartitionKey"], "it's");
    let resp = gw
        .request("GET", "tab1(PartitionKey='it%27%27s',RowKey='%C3%BC%20b')")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
}

#[tokio::test]
async fn update_requires_matching_etag_and_upsert_needs_none() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tab1").await;
    let path = "tab1(PartitionKey='p',RowKey='r')";
    // Insert-or-replace creates.
    let resp = gw
        .request("PUT", path)
        .json(r#"{"a":1,"b":2}"#)
        .send()
        .await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    let etag1 = resp.header("etag").unwrap().to_string();
    // Replace with the right ETag.
    let resp = gw
        .request("PUT", path)
        .json(r#"{"a":10}"#)
        .header("If-Match", &etag1)
        .send()
        .await;
    assert_eq!(resp.status, 204);
    let etag2 = resp.header("etag").unwrap().to_string();
    assert_ne!(etag1, etag2);
    // Stale ETag: 412, XML body when the client does not accept JSON.
    let resp = gw
        .request("PUT", path)
        .json(r#"{"a":11}"#)
        .header("If-Match", &etag1)
        .header("Accept", "application/xml")
        .send()
        .await;
    resp.assert_error(412, "UpdateConditionNotSatisfied");
    assert!(resp.body.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><error xmlns=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\">"));
    // Replace removed b.
    let body = gw.request("GET", path).send().await.json();
    assert_eq!(body["a"], 10);
    assert!(body.get("b").is_none());
    // Merge keeps a, adds c (PATCH and MERGE both).
    let resp = gw
        .request("PATCH", path)
        .json(r#"{"c":3}"#)
        .header("If-Match", "*")
        .send()
        .await;
    assert_eq!(resp.status, 204);
    let resp = gw
        .request("MERGE", path)
        .json(r#"{"d":4}"#)
        .header("If-Match", "*")
        .send()
        .await;
    assert_eq!(resp.status, 204);
    let body = gw.request("GET", path).send().await.json();
    assert_eq!(
        (body["a"].as_i64(), body["c"].as_i64(), body["d"].as_i64()),
        (Some(10), Some(3), Some(4))
    );
    // Update with If-Match on a missing entity: 404.
    let resp = gw
        .request("PUT", "tab1(PartitionKey='p',RowKey='none')")
        .json("{}")
        .header("If-Match", "*")
        .send()
        .await;
    resp.assert_error(404, "ResourceNotFound");
    // Insert-or-merge creates.
    let resp = gw
        .request("MERGE", "tab1(PartitionKey='p',RowKey='new')")
        .json(r#"{"x":1}"#)
        .send()
        .await;
    assert_eq!(resp.status, 204);
}

#[tokio::test]
async fn body_keys_must_match_url_keys() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tab1").await;
    let resp = gw
        .request("PUT", "tab1(PartitionKey='p',RowKey='r')")
        .json(r#"{"PartitionKey":"other","a":1}"#)
        .send()
        .await;
    resp.assert_error(400, "InvalidInput");
}

#[tokio::test]
async fn delete_with_etag_and_star() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tab1").await;
    let etag = gw
        .must_insert("tab1", r#"{"PartitionKey":"p","RowKey":"r"}"#)
        .await;
    let path = "tab1(PartitionKey='p',RowKey='r')";
    let resp = gw
        .request("DELETE", path)
        .header("If-Match", &etag)
        .send()
        .await;
    assert_eq!(resp.status, 204);
    let resp = gw
        .request("DELETE", path)
        .header("If-Match", "*")
        .send()
        .await;
    resp.assert_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn x_http_method_tunnels_through_post() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tab1").await;
    gw.must_insert("tab1", r#"{"PartitionKey":"p","RowKey":"r","a":1}"#)
        .await;
    let path = "tab1(PartitionKey='p',RowKey='r')";
    let resp = gw
        .request("POST", path)
        .header("X-HTTP-Method", "MERGE")
        .header("If-Match", "*")
        .json(r#"{"b":2}"#)
        .send()
        .await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    let body = gw.request("GET", path).send().await.json();
    assert_eq!((body["a"].as_i64(), body["b"].as_i64()), (Some(1), Some(2)));
    let resp = gw
        .request("POST", path)
        .header("X-HTTP-Method", "DELETE")
        .header("If-Match", "*")
        .send()
        .await;
    assert_eq!(resp.status, 204);
    gw.request("GET", path)
        .send()
        .await
        .assert_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn entity_type_round_trip_in_nometadata_keeps_int64_as_string() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tab1").await;
    gw.must_insert("tab1", r#"{"PartitionKey":"p","RowKey":"r","big":"9223372036854775807","big@odata.type":"Edm.Int64","nan":"NaN","nan@odata.type":"Edm.Double"}"#).await;
    let body = gw
        .request("GET", "tab1(PartitionKey='p',RowKey='r')")
        .send()
        .await
        .json();
    assert_eq!(body["big"], "9223372036854775807");
    assert_eq!(body["nan"], "NaN");
    assert_eq!(body["nan@odata.type"], "Edm.Double");
}

/// Azure answers an entity tag it never issued with 412, as a condition that simply does not hold
/// (Azurite #1229: "Azure and Storage Emulator return 412 for this etag"); only a value that is not an
/// entity tag at all is 400.
#[tokio::test]
async fn a_foreign_if_match_is_a_condition_no_entity_meets() {
    let gw = TestGateway::start().await;
    gw.must_create_table("tagz").await;
    gw.must_insert("tagz", r#"{"PartitionKey":"p","RowKey":"r","a":1}"#)
        .await;
    let path = "tagz(PartitionKey='p',RowKey='r')";
    let foreign = [
        "W/\"wrong\"",
        "w/\"wrong\"",
        "\"strong\"",
        "W/\"0x8D9A1B2C3D4E5F6\"",
        "w/\"datetime'2020-09-15T23%3A02%3A10.6970439Z'\"",
    ];
    for etag in foreign {
        for method in ["PUT", "MERGE", "PATCH"] {
            gw.request(method, path)
                .json(r#"{"a":2}"#)
                .header("If-Match", etag)
                .send()
                .await
                .assert_error(412, "UpdateConditionNotSatisfied");
        }
        gw.request("DELETE", path)
            .header("If-Match", etag)
            .send()
            .await
            .assert_error(412, "UpdateConditionNotSatisfied");
        gw.request("DELETE", "tagz(PartitionKey='p',RowKey='missing')")
            .header("If-Match", etag)
            .send()
            .await
            .assert_error(404, "ResourceNotFound");
    }
    gw.request("DELETE", path)
        .header("If-Match", "MalformedETag")
        .send()
        .await
        .assert_error(400, "InvalidInput");
    let body = gw.request("GET", path).send().await.json();
    assert_eq!(body["a"], 1, "no conditional write went through");
}

/// Azure stores no nulls, whatever type annotation comes with them: "The Azure Storage Table Service
/// does not store properties with null values. It does not throw but silently ignores the values"
/// (a Microsoft engineer in azure-storage-net#188; likewise #101, #548). Trestle does the same.
#[tokio::test]
async fn a_typed_null_is_accepted_and_not_stored() {
    let gw = TestGateway::start().await;
    gw.must_create_table("nulls").await;
    gw.must_insert(
        "nulls",
        r#"{"PartitionKey":"p","RowKey":"r","when":null,"when@odata.type":"Edm.DateTime",
            "d":null,"d@odata.type":"Edm.Double","plain":null,"kept":1}"#,
    )
    .await;
    let body = gw
        .request("GET", "nulls(PartitionKey='p',RowKey='r')")
        .send()
        .await
        .json();
    let names: Vec<&String> = body.as_object().expect("object").keys().collect();
    for gone in ["when", "when@odata.type", "d", "d@odata.type", "plain"] {
        assert!(
            !body.as_object().unwrap().contains_key(gone),
            "{gone}: {names:?}"
        );
    }
    assert_eq!(body["kept"], 1);
}

/// Azure writes a whole-number Double as `5.0` and, in minimal metadata, without a type annotation
/// (recorded traffic: the reference's "Whole doubles serialized as 3.0"; the JS SDK's long-open
/// azure-sdk-for-js#19899 is exactly a JSON parser dropping that `.0`). Full metadata annotates it.
#[tokio::test]
async fn whole_number_doubles_are_written_as_azure_writes_them() {
    let gw = TestGateway::start().await;
    gw.must_create_table("dbl").await;
    gw.must_insert(
        "dbl",
        r#"{"PartitionKey":"p","RowKey":"r","d":5.0,"e":"5","e@odata.type":"Edm.Double"}"#,
    )
    .await;
    let path = "dbl(PartitionKey='p',RowKey='r')";
    for (accept, annotated) in [
        ("application/json;odata=nometadata", false),
        ("application/json;odata=minimalmetadata", false),
        ("application/json;odata=fullmetadata", true),
    ] {
        let resp = gw
            .request("GET", path)
            .header("Accept", accept)
            .send()
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert!(resp.body.contains(r#""d":5.0"#), "{accept}: {}", resp.body);
        assert!(resp.body.contains(r#""e":5.0"#), "{accept}: {}", resp.body);
        assert_eq!(
            resp.body.contains(r#""d@odata.type":"Edm.Double""#),
            annotated,
            "{accept}: {}",
            resp.body
        );
    }
}
