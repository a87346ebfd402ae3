//! `$batch`: envelopes, success responses, failure index, partition and duplicate rules, single query.

use crate::support::TestGateway;

fn part(method: &str, url: &str, headers: &str, body: &str) -> String {
    format!(
        "--changeset_c\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
         {method} {url} HTTP/1.1\r\n{headers}\r\n{body}\r\n"
    )
}

fn envelope(parts: &[String]) -> String {
    format!(
        "--batch_b\r\nContent-Type: multipart/mixed; boundary=changeset_c\r\n\r\n{}--changeset_c--\r\n--batch_b--\r\n",
        parts.concat()
    )
}

fn insert(gw: &TestGateway, table: &str, pk: &str, rk: &str) -> String {
    part(
        "POST",
        &format!("{}/{table}", gw.base()),
        "Content-Type: application/json\r\nAccept: application/json;odata=minimalmetadata\r\nPrefer: return-no-content\r\n",
        &format!(r#"{{"PartitionKey":"{pk}","RowKey":"{rk}","v":1}}"#),
    )
}

async fn send(gw: &TestGateway, body: String) -> crate::support::Resp {
    gw.request("POST", "$batch")
        .header("Content-Type", "multipart/mixed; boundary=batch_b")
        .body(body.into_bytes())
        .send()
        .await
}

fn boundary(resp: &crate::support::Resp) -> String {
    let ct = resp.header("content-type").expect("content type");
    ct.strip_prefix("multipart/mixed; boundary=")
        .expect("multipart boundary")
        .to_string()
}

#[tokio::test]
async fn a_changeset_applies_all_and_answers_in_azures_envelope() {
    let gw = TestGateway::start().await;
    gw.must_create_table("bat1").await;
    gw.must_insert("bat1", r#"{"PartitionKey":"p","RowKey":"existing","a":1}"#)
        .await;
    let merge = part(
        "MERGE",
        &format!("{}/bat1(PartitionKey='p',RowKey='existing')", gw.base()),
        "Content-Type: application/json\r\nIf-Match: *\r\n",
        r#"{"b":2}"#,
    );
    let delete_me = gw
        .must_insert("bat1", r#"{"PartitionKey":"p","RowKey":"gone"}"#)
        .await;
    let delete = part(
        "DELETE",
        &format!("{}/bat1(PartitionKey='p',RowKey='gone')", gw.base()),
        &format!("If-Match: {delete_me}\r\n"),
        "",
    );
    let resp = send(
        &gw,
        envelope(&[insert(&gw, "bat1", "p", "new"), merge, delete]),
    )
    .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let batch_boundary = boundary(&resp);
    assert!(batch_boundary.starts_with("batchresponse_"));
    assert!(resp.body.starts_with(&format!(
        "--{batch_boundary}\r\nContent-Type: multipart/mixed; boundary=changesetresponse_"
    )));
    assert_eq!(
        resp.body.matches("HTTP/1.1 204 No Content\r\n").count(),
        3,
        "{}",
        resp.body
    );
    assert!(resp.body.contains(
        "Preference-Applied: return-no-content\r\nDataServiceVersion: 3.0;\r\nLocation: "
    ));
    assert!(resp.body.contains("ETag: W/\"datetime'"));
    assert!(resp.body.ends_with(&format!("--{batch_boundary}--\r\n")));
    let body = gw
        .request("GET", "bat1(PartitionKey='p',RowKey='existing')")
        .send()
        .await
        .json();
    assert_eq!((body["a"].as_i64(), body["b"].as_i64()), (Some(1), Some(2)));
    gw.request("GET", "bat1(PartitionKey='p',RowKey='gone')")
        .send()
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(
        gw.request("GET", "bat1(PartitionKey='p',RowKey='new')")
            .send()
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_failing_operation_reports_its_index_and_nothing_is_applied() {
    let gw = TestGateway::start().await;
    gw.must_create_table("bat2").await;
    gw.must_insert("bat2", r#"{"PartitionKey":"p","RowKey":"dup"}"#)
        .await;
    let resp = send(
        &gw,
        envelope(&[
            insert(&gw, "bat2", "p", "a"),
            insert(&gw, "bat2", "p", "dup"),
        ]),
    )
    .await;
    assert_eq!(resp.status, 202);
    assert_eq!(resp.body.matches("HTTP/1.1").count(), 1, "{}", resp.body);
    assert!(resp.body.contains("HTTP/1.1 409 Conflict\r\n"));
    assert!(resp.body.contains("\"code\":\"EntityAlreadyExists\""));
    assert!(
        resp.body
            .contains("\"value\":\"1:The specified entity already exists."),
        "{}",
        resp.body
    );
    gw.request("GET", "bat2(PartitionKey='p',RowKey='a')")
        .send()
        .await
        .assert_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn different_partitions_are_refused() {
    let gw = TestGateway::start().await;
    gw.must_create_table("bat3").await;
    let resp = send(
        &gw,
        envelope(&[
            insert(&gw, "bat3", "p1", "a"),
            insert(&gw, "bat3", "p2", "b"),
        ]),
    )
    .await;
    assert_eq!(resp.status, 202);
    assert!(resp.body.contains("HTTP/1.1 400 Bad Request"));
    assert!(
        resp.body
            .contains("\"code\":\"CommandsInBatchActOnDifferentPartitions\"")
    );
    assert!(
        resp.body
            .contains("\"value\":\"1:All commands in a batch must operate on same entity group.")
    );
}

#[tokio::test]
async fn an_entity_may_appear_only_once() {
    let gw = TestGateway::start().await;
    gw.must_create_table("bat4").await;
    let resp = send(
        &gw,
        envelope(&[insert(&gw, "bat4", "p", "a"), insert(&gw, "bat4", "p", "a")]),
    )
    .await;
    assert!(resp.body.contains("\"code\":\"InvalidDuplicateRow\""));
    assert!(
        resp.body.contains(
            "\"value\":\"1:The batch request contains multiple changes with same row key."
        )
    );
}

#[tokio::test]
async fn more_than_a_hundred_operations_are_refused() {
    let gw = TestGateway::start().await;
    gw.must_create_table("bat5").await;
    let parts: Vec<String> = (0..101)
        .map(|i| insert(&gw, "bat5", "p", &format!("r{i}")))
        .collect();
    let resp = send(&gw, envelope(&parts)).await;
    assert_eq!(resp.status, 202);
    assert!(resp.body.contains("\"code\":\"InvalidInput\""));
    assert!(resp.body.contains(
        "100:The batch request operation exceeds the maximum 100 changes per change set."
    ));
    let parts: Vec<String> = (0..100)
        .map(|i| insert(&gw, "bat5", "p", &format!("r{i}")))
        .collect();
    let resp = send(&gw, envelope(&parts)).await;
    assert_eq!(resp.body.matches("HTTP/1.1 204").count(), 100);
}

#[tokio::test]
async fn a_single_point_query_batch() {
    let gw = TestGateway::start().await;
    gw.must_create_table("bat6").await;
    gw.must_insert("bat6", r#"{"PartitionKey":"p","RowKey":"r","v":5}"#)
        .await;
    let body = format!(
        "--batch_b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
         GET {}/bat6(PartitionKey='p',RowKey='r') HTTP/1.1\r\nAccept: application/json;odata=minimalmetadata\r\n\r\n\r\n--batch_b--\r\n",
        gw.base()
    );
    let resp = send(&gw, body).await;
    assert_eq!(resp.status, 202);
    assert!(resp.body.contains("HTTP/1.1 200 OK\r\n"), "{}", resp.body);
    assert!(resp.body.contains("\"v\":5"));
    // A GET inside a changeset is refused.
    let get = part(
        "GET",
        &format!("{}/bat6(PartitionKey='p',RowKey='r')", gw.base()),
        "",
        "",
    );
    let resp = send(&gw, envelope(&[insert(&gw, "bat6", "p", "x"), get])).await;
    assert!(
        resp.body
            .contains("1:A query must be the only operation in a batch."),
        "{}",
        resp.body
    );
}

#[tokio::test]
async fn malformed_envelopes_are_plain_400s() {
    let gw = TestGateway::start().await;
    let resp = send(&gw, "--batch_b\r\nno end".to_string()).await;
    resp.assert_error(400, "InvalidInput");
    let resp = gw
        .request("POST", "$batch")
        .header("Content-Type", "application/json")
        .body(b"{}".to_vec())
        .send()
        .await;
    resp.assert_error(400, "InvalidInput");
}

/// The legacy Python SDK (`azure-cosmosdb-table`) with a path-style endpoint writes its parts as
/// `POST /table HTTP/1.1`, with neither host nor account segment and `\n` line endings. Such a part is
/// resolved against the batch request's own account; a path that names another account still fails.
#[tokio::test]
async fn account_relative_part_paths_resolve_against_the_batch_account() {
    let gw = TestGateway::start().await;
    gw.must_create_table("bat8").await;
    gw.must_insert("bat8", r#"{"PartitionKey":"p","RowKey":"b","v":1}"#)
        .await;
    let legacy = |method: &str, path: &str, body: &str| {
        format!(
            "--changeset_c\nContent-Type: application/http\nContent-Transfer-Encoding: binary\n\n\
             {method} {path} HTTP/1.1\nContent-Type: application/json\nAccept: application/json;odata=minimalmetadata\n\
             Prefer: return-no-content\nIf-Match: *\n\n{body}\n"
        )
    };
    let body = format!(
        "--batch_b\nContent-Type: multipart/mixed; boundary=changeset_c\n\n{}{}--changeset_c--\n--batch_b--\n",
        legacy("POST", "/bat8", r#"{"PartitionKey":"p","RowKey":"a"}"#),
        legacy(
            "MERGE",
            "/bat8(PartitionKey='p',RowKey='b')",
            r#"{"PartitionKey":"p","RowKey":"b","v":2}"#
        ),
    );
    let resp = send(&gw, body).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(
        resp.body.matches("HTTP/1.1 204 No Content").count(),
        2,
        "{}",
        resp.body
    );
    let entity = gw
        .request("GET", "bat8(PartitionKey='p',RowKey='b')")
        .send()
        .await
        .json();
    assert_eq!(entity["v"], 2);
    let inserted = gw
        .request("GET", "bat8(PartitionKey='p',RowKey='a')")
        .send()
        .await;
    assert_eq!(inserted.status, 200, "{}", inserted.body);
    // The account segment may still be given; another account's never acts.
    for path in ["/devstoreaccount1/bat8", "bat8"] {
        let resp = send(
            &gw,
            envelope(&[part(
                "POST",
                path,
                "Content-Type: application/json\r\nPrefer: return-no-content\r\n",
                &format!(r#"{{"PartitionKey":"p","RowKey":"{}"}}"#, path.len()),
            )]),
        )
        .await;
        assert_eq!(resp.status, 202, "{}", resp.body);
        assert!(resp.body.contains("HTTP/1.1 204"), "{path}: {}", resp.body);
    }
    for path in [
        "/otheraccount/bat8",
        "http://127.0.0.1/otheraccount/bat8",
        "http://otheraccount.table.core.windows.net/bat8",
    ] {
        let resp = send(
            &gw,
            envelope(&[part(
                "POST",
                path,
                "Content-Type: application/json\r\n",
                r#"{"PartitionKey":"p","RowKey":"x"}"#,
            )]),
        )
        .await;
        assert!(resp.body.contains("HTTP/1.1 400"), "{path}: {}", resp.body);
    }
    let resp = gw
        .request("GET", "bat8(PartitionKey='p',RowKey='x')")
        .send()
        .await;
    assert_eq!(resp.status, 404, "nothing acted for another account");
}
