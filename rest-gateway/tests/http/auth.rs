//! Shared Key, Shared Key Lite, account and table SAS (with enforced key ranges), and their errors.

use crate::support::{Auth, TestGateway};

#[tokio::test]
async fn shared_key_and_shared_key_lite_authenticate() {
    let gw = TestGateway::start().await;
    assert_eq!(gw.request("GET", "Tables").send().await.status, 200);
    assert_eq!(
        gw.request("GET", "Tables")
            .auth(Auth::SharedKeyLite)
            .send()
            .await
            .status,
        200
    );
    // The Date header serves when x-ms-date is absent.
    let resp = gw
        .request("GET", "Tables")
        .header("Date", &crate::support::now_rfc1123())
        .header("x-ms-date", &crate::support::now_rfc1123())
        .send()
        .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn a_wrong_signature_is_authentication_failed() {
    let gw = TestGateway::start().await;
    let resp = gw
        .request("GET", "Tables")
        .auth(Auth::None)
        .header("x-ms-date", &crate::support::now_rfc1123())
        .header(
            "Authorization",
            "SharedKey devstoreaccount1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .send()
        .await;
    resp.assert_error(403, "AuthenticationFailed");
}

#[tokio::test]
async fn stale_or_missing_dates_are_refused() {
    let gw = TestGateway::start().await;
    let resp = gw
        .request("GET", "Tables")
        .header("x-ms-date", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await;
    resp.assert_error(403, "AuthenticationFailed");
    assert!(
        resp.json()["odata.error"]["message"]["value"]
            .as_str()
            .unwrap()
            .contains("too old")
    );
    let resp = gw
        .request("GET", "Tables")
        .auth(Auth::None)
        .header("Authorization", "SharedKey devstoreaccount1:abc=")
        .send()
        .await;
    resp.assert_error(403, "AuthenticationFailed");
}

#[tokio::test]
async fn missing_or_foreign_credentials() {
    let gw = TestGateway::start().await;
    let resp = gw.request("GET", "Tables").auth(Auth::None).send().await;
    resp.assert_error(401, "NoAuthenticationInformation");
    assert!(
        resp.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer "))
    );
    let resp = gw
        .request("GET", "Tables")
        .auth(Auth::None)
        .header("Authorization", "Bearer eyJ0eXAi")
        .send()
        .await;
    resp.assert_error(401, "InvalidAuthenticationInfo");
    let resp = gw
        .request("GET", "Tables")
        .auth(Auth::None)
        .header("x-ms-date", &crate::support::now_rfc1123())
        .header("Authorization", "SharedKey otheraccount:abc=")
        .send()
        .await;
    resp.assert_error(403, "AuthenticationFailed");
}

#[tokio::test]
async fn table_sas_ranges_are_enforced_on_reads_writes_and_queries() {
    let gw = TestGateway::start().await;
    gw.must_create_table("Sas1").await;
    for pk in ["a", "b", "c", "d"] {
        for rk in ["1", "2"] {
            gw.must_insert(
                "Sas1",
                &format!(r#"{{"PartitionKey":"{pk}","RowKey":"{rk}"}}"#),
            )
            .await;
        }
    }
    let sas = gw.table_sas(
        "Sas1",
        "raud",
        [Some("b"), Some("2"), Some("c"), Some("1")],
        &[],
    );
    let get = |pk: &str, rk: &str| format!("Sas1(PartitionKey='{pk}',RowKey='{rk}')");
    assert_eq!(
        gw.request("GET", &get("b", "2"))
            .auth(Auth::None)
            .query(&sas)
            .send()
            .await
            .status,
        200
    );
    assert_eq!(
        gw.request("GET", &get("c", "1"))
            .auth(Auth::None)
            .query(&sas)
            .send()
            .await
            .status,
        200
    );
    gw.request("GET", &get("b", "1"))
        .auth(Auth::None)
        .query(&sas)
        .send()
        .await
        .assert_error(403, "AuthorizationFailure");
    gw.request("GET", &get("c", "2"))
        .auth(Auth::None)
        .query(&sas)
        .send()
        .await
        .assert_error(403, "AuthorizationFailure");
    // Writes outside the range are refused and change nothing.
    let resp = gw
        .request("POST", "Sas1")
        .auth(Auth::None)
        .query(&sas)
        .json(r#"{"PartitionKey":"z","RowKey":"1"}"#)
        .send()
        .await;
    resp.assert_error(403, "AuthorizationFailure");
    let resp = gw
        .request("DELETE", &get("a", "1"))
        .auth(Auth::None)
        .query(&sas)
        .header("If-Match", "*")
        .send()
        .await;
    resp.assert_error(403, "AuthorizationFailure");
    let resp = gw
        .request("PUT", &get("b", "5"))
        .auth(Auth::None)
        .query(&sas)
        .json(r#"{"x":1}"#)
        .send()
        .await;
    assert_eq!(resp.status, 204, "inside the range: {}", resp.body);
    // Queries see only the range.
    let resp = gw
        .request("GET", "Sas1()")
        .auth(Auth::None)
        .query(&sas)
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let keys: Vec<String> = resp.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}{}",
                v["PartitionKey"].as_str().unwrap(),
                v["RowKey"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(keys, vec!["b2", "b5", "c1"]);
    assert!(resp.header("x-ms-continuation-nextpartitionkey").is_none());
    // A batch touching a key outside the range fails at that operation.
    let body = format!(
        "--batch_b\r\nContent-Type: multipart/mixed; boundary=changeset_c\r\n\r\n\
         --changeset_c\r\nContent-Type: application/http\r\n\r\nPOST {base}/Sas1 HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{{\"PartitionKey\":\"c\",\"RowKey\":\"0\"}}\r\n\
         --changeset_c\r\nContent-Type: application/http\r\n\r\nPOST {base}/Sas1 HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{{\"PartitionKey\":\"c\",\"RowKey\":\"9\"}}\r\n\
         --changeset_c--\r\n--batch_b--\r\n",
        base = gw.base()
    );
    let resp = gw
        .request("POST", "$batch")
        .auth(Auth::None)
        .query(&sas)
        .header("Content-Type", "multipart/mixed; boundary=batch_b")
        .body(body.into_bytes())
        .send()
        .await;
    assert_eq!(resp.status, 202);
    assert!(
        resp.body.contains("\"code\":\"AuthorizationFailure\""),
        "{}",
        resp.body
    );
    assert!(resp.body.contains("\"value\":\"1:"));
}

#[tokio::test]
async fn table_sas_permissions_and_table_name() {
    let gw = TestGateway::start().await;
    gw.must_create_table("Sas2").await;
    gw.must_create_table("Other").await;
    let read_only = gw.table_sas("Sas2", "r", [None; 4], &[]);
    assert_eq!(
        gw.request("GET", "Sas2()")
            .auth(Auth::None)
            .query(&read_only)
            .send()
            .await
            .status,
        200
    );
    let resp = gw
        .request("POST", "Sas2")
        .auth(Auth::None)
        .query(&read_only)
        .json(r#"{"PartitionKey":"a","RowKey":"b"}"#)
        .send()
        .await;
    resp.assert_error(403, "AuthorizationPermissionMismatch");
    gw.request("GET", "Other()")
        .auth(Auth::None)
        .query(&read_only)
        .send()
        .await
        .assert_error(403, "AuthorizationFailure");
    gw.request("GET", "Tables")
        .auth(Auth::None)
        .query(&read_only)
        .send()
        .await
        .assert_error(403, "AuthorizationFailure");
    // Tampering with the signed range breaks the signature.
    let tampered = format!("{read_only}&spk=a");
    gw.request("GET", "Sas2()")
        .auth(Auth::None)
        .query(&tampered)
        .send()
        .await
        .assert_error(403, "AuthenticationFailed");
}

#[tokio::test]
async fn table_sas_with_a_stored_access_policy() {
    let gw = TestGateway::start().await;
    gw.must_create_table("Sas3").await;
    let acl = "<SignedIdentifiers><SignedIdentifier><Id>readers</Id><AccessPolicy>\
               <Expiry>2099-01-01T00:00:00Z</Expiry><Permission>r</Permission></AccessPolicy></SignedIdentifier></SignedIdentifiers>";
    let resp = gw
        .request("PUT", "Sas3?comp=acl")
        .body(acl.as_bytes().to_vec())
        .send()
        .await;
    assert_eq!(resp.status, 204);
    // The policy supplies sp and se; the URL carries only si.
    let mut pairs = vec![("sv", "2019-02-02"), ("tn", "Sas3"), ("si", "readers")];
    let params = trestle_rest_gateway::auth::sas::SasParams::from_query(
        &pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("sig".to_string(), String::new())])
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let sig = trestle_rest_gateway::auth::shared_key::sign(
        &gw.key,
        &trestle_rest_gateway::auth::sas::table_string_to_sign("devstoreaccount1", "sas3", &params),
    );
    pairs.push(("sig", sig.as_str()));
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    assert_eq!(
        gw.request("GET", "Sas3()")
            .auth(Auth::None)
            .query(&query)
            .send()
            .await
            .status,
        200
    );
    let resp = gw
        .request("POST", "Sas3")
        .auth(Auth::None)
        .query(&query)
        .json(r#"{"PartitionKey":"a","RowKey":"b"}"#)
        .send()
        .await;
    resp.assert_error(403, "AuthorizationPermissionMismatch");
}

#[tokio::test]
async fn account_sas_services_resource_types_permissions_and_times() {
    let gw = TestGateway::start().await;
    let sas = gw.account_sas("t", "sco", "rwdlacu", &[]);
    let resp = gw
        .request("POST", "Tables")
        .auth(Auth::None)
        .query(&sas)
        .json(r#"{"TableName":"ViaSas"}"#)
        .send()
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(
        gw.request("GET", "Tables")
            .auth(Auth::None)
            .query(&sas)
            .send()
            .await
            .status,
        200
    );

    let objects_only = gw.account_sas("t", "o", "rl", &[]);
    gw.request("GET", "Tables")
        .auth(Auth::None)
        .query(&objects_only)
        .send()
        .await
        .assert_error(403, "AuthorizationResourceTypeMismatch");
    let no_list = gw.account_sas("t", "c", "r", &[]);
    gw.request("GET", "Tables")
        .auth(Auth::None)
        .query(&no_list)
        .send()
        .await
        .assert_error(403, "AuthorizationPermissionMismatch");
    let blob_only = gw.account_sas("b", "sco", "rl", &[]);
    gw.request("GET", "Tables")
        .auth(Auth::None)
        .query(&blob_only)
        .send()
        .await
        .assert_error(403, "AuthorizationServiceMismatch");
    let expired = gw.account_sas("t", "sco", "rl", &[("se", "2001-01-01T00:00:00Z")]);
    gw.request("GET", "Tables")
        .auth(Auth::None)
        .query(&expired)
        .send()
        .await
        .assert_error(403, "AuthenticationFailed");
    let future = gw.account_sas("t", "sco", "rl", &[("st", "2098-01-01T00:00:00Z")]);
    gw.request("GET", "Tables")
        .auth(Auth::None)
        .query(&future)
        .send()
        .await
        .assert_error(403, "AuthenticationFailed");
    let other_ip = gw.account_sas("t", "sco", "rl", &[("sip", "10.1.2.3")]);
    gw.request("GET", "Tables")
        .auth(Auth::None)
        .query(&other_ip)
        .send()
        .await
        .assert_error(403, "AuthorizationSourceIPMismatch");
    let loopback = gw.account_sas("t", "sco", "rl", &[("sip", "127.0.0.0-127.255.255.255")]);
    assert_eq!(
        gw.request("GET", "Tables")
            .auth(Auth::None)
            .query(&loopback)
            .send()
            .await
            .status,
        200
    );
    let https_only = gw.account_sas("t", "sco", "rl", &[("spr", "https")]);
    gw.request("GET", "Tables")
        .auth(Auth::None)
        .query(&https_only)
        .send()
        .await
        .assert_error(403, "AuthorizationProtocolMismatch");
}

#[tokio::test]
async fn either_key_of_an_account_authenticates() {
    use trestle_rest_gateway::GatewayConfig;
    use trestle_rest_gateway::config::{AccountConfig, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
    // The dev key is the account's second key here; requests signed with it still authenticate.
    let config = GatewayConfig {
        accounts: vec![AccountConfig {
            name: DEV_ACCOUNT.into(),
            keys: vec![
                "a2V5LW9uZS1yb3RhdGVkLW91dA==".into(),
                DEV_ACCOUNT_KEY.into(),
            ],
        }],
        ..GatewayConfig::for_test()
    };
    let gw = TestGateway::start_with(config).await;
    assert_eq!(gw.request("GET", "Tables").send().await.status, 200);
    // With the dev key removed, the same signature fails.
    let config = GatewayConfig {
        accounts: vec![AccountConfig {
            name: DEV_ACCOUNT.into(),
            keys: vec!["a2V5LW9uZS1yb3RhdGVkLW91dA==".into()],
        }],
        ..GatewayConfig::for_test()
    };
    let gw = TestGateway::start_with(config).await;
    gw.request("GET", "Tables")
        .send()
        .await
        .assert_error(403, "AuthenticationFailed");
}

/// The keys of the SAS-scope grid: PartitionKeys a–d, RowKeys 1–3.
const GRID_PKS: [&str; 4] = ["a", "b", "c", "d"];
const GRID_RKS: [&str; 3] = ["1", "2", "3"];

/// Whether Azure's range (inclusive bounds; a RowKey bound applies within its PartitionKey bound)
/// grants `(pk, rk)`.
fn in_scope(range: [Option<&str>; 4], pk: &str, rk: &str) -> bool {
    let [spk, srk, epk, erk] = range;
    let after_start = match spk {
        None => true,
        Some(spk) => (pk, rk) >= (spk, srk.unwrap_or("")),
    };
    let before_end = match (epk, erk) {
        (None, _) => true,
        (Some(epk), None) => pk <= epk,
        (Some(epk), Some(erk)) => (pk, rk) <= (epk, erk),
    };
    after_start && before_end
}

#[tokio::test]
async fn every_combination_of_sas_key_bounds_is_enforced_or_refused_like_azure() {
    let gw = TestGateway::start().await;
    gw.must_create_table("Scope").await;
    for pk in GRID_PKS {
        for rk in GRID_RKS {
            gw.must_insert(
                "Scope",
                &format!(r#"{{"PartitionKey":"{pk}","RowKey":"{rk}"}}"#),
            )
            .await;
        }
    }
    let bounds = [Some("b"), Some("2"), Some("c"), Some("2")];
    let point = |pk: &str, rk: &str| format!("Scope(PartitionKey='{pk}',RowKey='{rk}')");
    for mask in 0..16u8 {
        let mut range = [None; 4];
        for (i, bound) in bounds.iter().enumerate() {
            if mask & (1 << i) != 0 {
                range[i] = *bound;
            }
        }
        let [spk, srk, epk, erk] = range;
        // Azure: "startpk must accompany startrk", "endpk must accompany endrk".
        let refused = (srk.is_some() && spk.is_none()) || (erk.is_some() && epk.is_none());
        let sas = gw.table_sas("Scope", "raud", range, &[]);
        let what = format!("spk={spk:?} srk={srk:?} epk={epk:?} erk={erk:?}");

        // Queries: exactly the keys in scope, or refused.
        let resp = gw
            .request("GET", "Scope()")
            .auth(Auth::None)
            .query(&sas)
            .send()
            .await;
        if refused {
            resp.assert_error(403, "AuthenticationFailed");
        } else {
            assert_eq!(resp.status, 200, "{what}: {}", resp.body);
            let got: Vec<String> = resp.json()["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    format!(
                        "{}{}",
                        v["PartitionKey"].as_str().unwrap(),
                        v["RowKey"].as_str().unwrap()
                    )
                })
                .collect();
            let want: Vec<String> = GRID_PKS
                .iter()
                .flat_map(|pk| GRID_RKS.iter().map(move |rk| (*pk, *rk)))
                .filter(|(pk, rk)| in_scope(range, pk, rk))
                .map(|(pk, rk)| format!("{pk}{rk}"))
                .collect();
            assert_eq!(got, want, "{what}");
        }

        for pk in GRID_PKS {
            for rk in GRID_RKS {
                let inside = !refused && in_scope(range, pk, rk);
                let expect = |resp: &crate::support::Resp, ok: u16, op: &str| {
                    if refused {
                        resp.assert_error(403, "AuthenticationFailed");
                    } else if inside {
                        assert_eq!(resp.status, ok, "{what} {op} {pk}{rk}: {}", resp.body);
                    } else {
                        assert_eq!(resp.status, 403, "{what} {op} {pk}{rk}: {}", resp.body);
                        assert_eq!(
                            resp.header("x-ms-error-code"),
                            Some("AuthorizationFailure"),
                            "{what} {op} {pk}{rk}"
                        );
                    }
                };
                let read = gw
                    .request("GET", &point(pk, rk))
                    .auth(Auth::None)
                    .query(&sas)
                    .send()
                    .await;
                expect(&read, 200, "read");
                let upsert = gw
                    .request("PUT", &point(pk, rk))
                    .auth(Auth::None)
                    .query(&sas)
                    .json(r#"{"v":1}"#)
                    .send()
                    .await;
                expect(&upsert, 204, "upsert");
                let tunnelled = gw
                    .request("POST", &point(pk, rk))
                    .auth(Auth::None)
                    .query(&sas)
                    .header("X-HTTP-Method", "MERGE")
                    .header("If-Match", "*")
                    .json(r#"{"w":2}"#)
                    .send()
                    .await;
                expect(&tunnelled, 204, "X-HTTP-Method MERGE");
            }
            // A batch upserting every row of the partition: all in scope, or failing at the first
            // operation outside it.
            let mut body = String::from(
                "--batch_s\r\nContent-Type: multipart/mixed; boundary=changeset_s\r\n\r\n",
            );
            for rk in GRID_RKS {
                body += &format!(
                    "--changeset_s\r\nContent-Type: application/http\r\n\r\nPUT {base}/{path} HTTP/1.1\r\n\
                     Content-Type: application/json\r\n\r\n{{\"b\":1}}\r\n",
                    base = gw.base(),
                    path = point(pk, rk)
                );
            }
            body += "--changeset_s--\r\n--batch_s--\r\n";
            let resp = gw
                .request("POST", "$batch")
                .auth(Auth::None)
                .query(&sas)
                .header("Content-Type", "multipart/mixed; boundary=batch_s")
                .body(body.into_bytes())
                .send()
                .await;
            if refused {
                resp.assert_error(403, "AuthenticationFailed");
                continue;
            }
            assert_eq!(resp.status, 202, "{what} batch {pk}: {}", resp.body);
            let first_outside = GRID_RKS.iter().position(|rk| !in_scope(range, pk, rk));
            match first_outside {
                None => assert!(
                    !resp.body.contains("odata.error"),
                    "{what} batch {pk}: {}",
                    resp.body
                ),
                Some(i) => {
                    assert!(
                        resp.body.contains("\"code\":\"AuthorizationFailure\""),
                        "{what} batch {pk}: {}",
                        resp.body
                    );
                    assert!(
                        resp.body.contains(&format!("\"value\":\"{i}:")),
                        "{what} batch {pk}: {}",
                        resp.body
                    );
                }
            }
        }
    }
}
