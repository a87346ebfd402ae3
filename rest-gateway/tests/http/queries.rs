//! Query Entities: $filter, $select, $top, continuation tokens across pages.

use crate::support::TestGateway;

async fn ids(gw: &TestGateway, path: &str) -> Vec<String> {
    let resp = gw.request("GET", path).send().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()["value"]
        .as_array()
        .expect("value array")
        .iter()
        .map(|v| v["RowKey"].as_str().expect("RowKey").to_string())
        .collect()
}

#[tokio::test]
async fn filter_is_type_correct_for_int64() {
    let gw = TestGateway::start().await;
    gw.must_create_table("qry1").await;
    for (rk, n) in [("a", "2"), ("b", "10"), ("c", "100")] {
        gw.must_insert(
            "qry1",
            &format!(
                r#"{{"PartitionKey":"p","RowKey":"{rk}","n":"{n}","n@odata.type":"Edm.Int64"}}"#
            ),
        )
        .await;
    }
    // String comparison would put "100" < "2"; Azure compares Int64 numerically.
    assert_eq!(ids(&gw, "qry1()?$filter=n%20gt%205L").await, vec!["b", "c"]);
    assert_eq!(ids(&gw, "qry1()?$filter=n%20eq%2010L").await, vec!["b"]);
    assert_eq!(
        ids(
            &gw,
            "qry1()?$filter=RowKey%20ne%20'a'%20and%20n%20lt%20100L"
        )
        .await,
        vec!["b"]
    );
    // A missing property never matches, even with ne.
    assert!(
        ids(&gw, "qry1()?$filter=missing%20ne%20'x'")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn select_returns_absent_properties_as_null() {
    let gw = TestGateway::start().await;
    gw.must_create_table("qry2").await;
    gw.must_insert("qry2", r#"{"PartitionKey":"p","RowKey":"1","a":1}"#)
        .await;
    gw.must_insert("qry2", r#"{"PartitionKey":"p","RowKey":"2","b":2}"#)
        .await;
    let resp = gw.request("GET", "qry2()?$select=a,b").send().await;
    let value = resp.json()["value"].clone();
    assert_eq!(value[0]["a"], 1);
    assert!(value[0]["b"].is_null() && value[0].as_object().unwrap().contains_key("b"));
    assert!(value[1]["a"].is_null());
    assert!(value[0].get("PartitionKey").is_none());
    assert!(value[0]["odata.etag"].is_string());
    assert_eq!(
        resp.json()["odata.metadata"],
        format!("{}/$metadata#qry2", gw.base())
    );
}

#[tokio::test]
async fn continuation_walks_every_page_in_key_order() {
    let gw = TestGateway::start().await;
    gw.must_create_table("qry3").await;
    let mut expected = Vec::new();
    for pk in ["p1", "p2"] {
        for i in 0..7 {
            let rk = format!("r{i:02}");
            gw.must_insert(
                "qry3",
                &format!(r#"{{"PartitionKey":"{pk}","RowKey":"{rk}"}}"#),
            )
            .await;
            expected.push(format!("{pk}/{rk}"));
        }
    }
    let mut seen = Vec::new();
    let mut path = "qry3()?$top=3".to_string();
    let mut pages = 0;
    loop {
        let resp = gw.request("GET", &path).send().await;
        assert_eq!(resp.status, 200);
        pages += 1;
        for v in resp.json()["value"].as_array().unwrap() {
            seen.push(format!(
                "{}/{}",
                v["PartitionKey"].as_str().unwrap(),
                v["RowKey"].as_str().unwrap()
            ));
        }
        let (Some(pk), Some(rk)) = (
            resp.header("x-ms-continuation-nextpartitionkey"),
            resp.header("x-ms-continuation-nextrowkey"),
        ) else {
            assert!(resp.header("x-ms-continuation-nextpartitionkey").is_none());
            break;
        };
        assert!(pk.starts_with("1!") && rk.starts_with("1!"));
        path = format!("qry3()?$top=3&NextPartitionKey={pk}&NextRowKey={rk}");
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn default_page_is_a_thousand_entities() {
    let gw = TestGateway::start().await;
    gw.must_create_table("qry4").await;
    let rows: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"PartitionKey":"p","RowKey":"{i:04}"}}"#))
        .collect();
    for chunk in 0..11 {
        for row in &rows {
            let row = row.replace("\"p\"", &format!("\"p{chunk:02}\""));
            let resp = gw
                .request("POST", "qry4")
                .json(&row)
                .header("Prefer", "return-no-content")
                .send()
                .await;
            assert_eq!(resp.status, 204);
        }
    }
    let resp = gw.request("GET", "qry4()").send().await;
    assert_eq!(resp.json()["value"].as_array().unwrap().len(), 1000);
    let pk = resp
        .header("x-ms-continuation-nextpartitionkey")
        .unwrap()
        .to_string();
    let rk = resp
        .header("x-ms-continuation-nextrowkey")
        .unwrap()
        .to_string();
    let rest = gw
        .request(
            "GET",
            &format!("qry4()?NextPartitionKey={pk}&NextRowKey={rk}"),
        )
        .send()
        .await;
    assert_eq!(rest.json()["value"].as_array().unwrap().len(), 100);
    assert!(rest.header("x-ms-continuation-nextpartitionkey").is_none());
}

#[tokio::test]
async fn bad_query_parameters() {
    let gw = TestGateway::start().await;
    gw.must_create_table("qry5").await;
    gw.request("GET", "qry5()?$top=0")
        .send()
        .await
        .assert_error(400, "InvalidInput");
    gw.request("GET", "qry5()?$top=1001")
        .send()
        .await
        .assert_error(400, "InvalidInput");
    gw.request("GET", "qry5()?$filter=a%20eq")
        .send()
        .await
        .assert_error(400, "InvalidInput");
    gw.request("GET", "qry5()?NextPartitionKey=garbage")
        .send()
        .await
        .assert_error(400, "InvalidQueryParameterValue");
    gw.request("GET", "missing()")
        .send()
        .await
        .assert_error(404, "TableNotFound");
}

/// Azure refuses a `$filter` that is not a boolean expression ("The $filter expression must evaluate to
/// a single boolean value", quoted from the real service in Azurite #1185) and reads an empty one as no
/// filter (Azurite #1573), on Query Entities and Query Tables alike.
#[tokio::test]
async fn a_filter_must_be_boolean_and_an_empty_one_is_none() {
    let gw = TestGateway::start().await;
    gw.must_create_table("qbool").await;
    gw.must_insert("qbool", r#"{"PartitionKey":"p","RowKey":"a","b":true}"#)
        .await;
    for filter in ["(1)", "1", "'x'", "2.5", "not%200", "b%20and%207L", "X'0A'"] {
        for path in ["qbool()", "Tables"] {
            gw.request("GET", &format!("{path}?$filter={filter}"))
                .send()
                .await
                .assert_error(400, "InvalidInput");
        }
    }
    assert_eq!(ids(&gw, "qbool()?$filter=b").await, vec!["a"]);
    assert_eq!(ids(&gw, "qbool()?$filter=(true)").await, vec!["a"]);
    assert_eq!(ids(&gw, "qbool()?$filter=").await, vec!["a"]);
    let resp = gw.request("GET", "Tables?$filter=").send().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["value"][0]["TableName"], "qbool");
}

/// An Int32 literal compares with Int64 and Double properties numerically; an Int64 literal matches
/// only Int64 properties, a Double literal only Doubles (microsoft/AzureStorageExplorer#5346, #6866,
/// observed against the real service). `types/src/filter/eval.rs` tests every type pair.
#[tokio::test]
async fn an_int32_literal_matches_int64_and_double_properties() {
    let gw = TestGateway::start().await;
    gw.must_create_table("qnum").await;
    gw.must_insert("qnum", r#"{"PartitionKey":"p","RowKey":"i32","v":5}"#)
        .await;
    gw.must_insert(
        "qnum",
        r#"{"PartitionKey":"p","RowKey":"i64","v":"5","v@odata.type":"Edm.Int64"}"#,
    )
    .await;
    gw.must_insert("qnum", r#"{"PartitionKey":"p","RowKey":"dbl","v":5.0}"#)
        .await;
    assert_eq!(
        ids(&gw, "qnum()?$filter=v%20eq%205").await,
        vec!["dbl", "i32", "i64"]
    );
    assert_eq!(ids(&gw, "qnum()?$filter=v%20eq%205L").await, vec!["i64"]);
    assert_eq!(ids(&gw, "qnum()?$filter=v%20eq%205.0").await, vec!["dbl"]);
    assert_eq!(
        ids(&gw, "qnum()?$filter=v%20gt%204%20and%20v%20lt%206").await,
        vec!["dbl", "i32", "i64"]
    );
}
