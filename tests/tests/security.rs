//! The security suite: every door of a node probed as an attacker would, against an in-process
//! cluster, `trestle dev` and a three-process `trestle node` cluster. Each probe asserts a refusal (and
//! its code); the few that must succeed prove the refusals are not simply a broken server.
//!
//! Doors: the public gRPC `TableService` (no credentials, wrong key, another account's key, a call
//! signed for another body or account, replayed dates, expired / tampered / too-weak SAS), `Admin`
//! (status, leader transfer, locate), the internal `NodeForward` (without or with a wrong cluster
//! token, and with a principal for another account), the Raft transport, and REST without credentials.

use std::time::Duration;

use base64::Engine as _;
use tonic::Code;
use tonic::transport::Channel;
use trestle_proto::admin::admin_client::AdminClient;
use trestle_proto::admin::{LocateRequest, StatusRequest, TransferLeaderRequest};
use trestle_proto::auth::{self as wire, method};
use trestle_proto::node as npb;
use trestle_proto::node::node_forward_client::NodeForwardClient;
use trestle_proto::raft::raft_transport_client::RaftTransportClient;
use trestle_proto::table as pb;
use trestle_proto::table::table_service_client::TableServiceClient;
use trestle_rest_gateway::auth::sas::{SasParams, account_strings_to_sign, table_string_to_sign};
use trestle_rest_gateway::config::{DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use trestle_rest_gateway::{AccountConfig, GatewayConfig};
use trestle_testkit::process::{DevProcess, PROCESS_CLUSTER_TOKEN};
use trestle_testkit::{InProcessCluster, ProcessCluster};
use trestle_types::signing;

/// A second account of the in-process cluster, with its own key.
const OTHER: &str = "otheraccount";
const OTHER_KEY: &str = "b3RoZXItYWNjb3VudC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";

fn dev_key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(DEV_ACCOUNT_KEY)
        .unwrap()
}

fn other_key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(OTHER_KEY)
        .unwrap()
}

fn error_code(s: &tonic::Status) -> &str {
    s.metadata()
        .get("x-trestle-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    error: &str,
    what: &str,
) {
    match r {
        Ok(resp) => panic!("{what}: accepted ({resp:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            assert_eq!(error_code(&s), error, "{what}: {s:?}");
        }
    }
}

async fn channel(endpoint: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap()
}

fn signed<T: prost::Message>(msg: T, method: &str, account: &str, key: &[u8]) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    wire::sign_request(
        &mut r,
        method,
        account,
        key,
        &wire::http_date(chrono::Utc::now()),
    );
    r
}

fn with<T>(mut r: tonic::Request<T>, name: &'static str, value: &str) -> tonic::Request<T> {
    wire::insert(&mut r, name, value);
    r
}

fn get(table: &str, pk: &str, rk: &str) -> pb::GetRequest {
    pb::GetRequest {
        account: DEV_ACCOUNT.into(),
        table: table.into(),
        partition_key: pk.into(),
        row_key: rk.into(),
        select: Vec::new(),
    }
}

fn insert(table: &str, pk: &str, rk: &str) -> pb::WriteRequest {
    pb::WriteRequest {
        account: DEV_ACCOUNT.into(),
        table: table.into(),
        op: Some(pb::WriteOp {
            kind: pb::WriteKind::InsertOrReplace as i32,
            entity: Some(pb::Entity {
                partition_key: pk.into(),
                row_key: rk.into(),
                ..Default::default()
            }),
            if_match: None,
        }),
        fencing: None,
    }
}

fn list(account: &str) -> pb::ListTablesRequest {
    pb::ListTablesRequest {
        account: account.into(),
        start_after: String::new(),
        limit: 0,
    }
}

fn encode(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

/// A table SAS of the dev account for `table`, signed with `key`.
fn table_sas(table: &str, sp: &str, se: &str, range: [Option<&str>; 4], key: &[u8]) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("sv", "2019-02-02".into()),
        ("tn", table.into()),
        ("sp", sp.into()),
        ("se", se.into()),
    ];
    for (name, value) in ["spk", "srk", "epk", "erk"].into_iter().zip(range) {
        if let Some(v) = value {
            pairs.push((name, v.into()));
        }
    }
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain([("sig".to_string(), String::new())])
        .collect();
    let params = SasParams::from_query(&owned).unwrap();
    let sig = signing::sign(
        key,
        &table_string_to_sign(DEV_ACCOUNT, &table.to_ascii_lowercase(), &params),
    );
    pairs.push(("sig", sig));
    encode(&pairs)
}

/// An account SAS of the dev account (table service, objects and containers), signed with `key`.
fn account_sas(sp: &str, se: &str, key: &[u8]) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("sv", "2019-02-02".into()),
        ("ss", "t".into()),
        ("srt", "co".into()),
        ("sp", sp.into()),
        ("se", se.into()),
    ];
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain([("sig".to_string(), String::new())])
        .collect();
    let params = SasParams::from_query(&owned).unwrap();
    let sig = signing::sign(key, &account_strings_to_sign(DEV_ACCOUNT, &params)[0]);
    pairs.push(("sig", sig));
    encode(&pairs)
}

const FUTURE: &str = "2099-01-01T00:00:00Z";
const PAST: &str = "2020-01-01T00:00:00Z";

/// Every probe against one cluster: `endpoints` are its nodes' gRPC addresses (`http://…`), `rest` a
/// node's REST address, `token` its cluster (and admin) token, `other_account` whether the cluster
/// knows [`OTHER`].
async fn probe(endpoints: &[String], rest: &str, token: &str, other_account: bool) {
    let mut tables = TableServiceClient::new(channel(&endpoints[0]).await);
    let dev = dev_key();

    // Set-up with proper credentials: a table with one entity.
    tables
        .create_table(signed(
            pb::CreateTableRequest {
                account: DEV_ACCOUNT.into(),
                table: "secrets".into(),
            },
            method::CREATE_TABLE,
            DEV_ACCOUNT,
            &dev,
        ))
        .await
        .unwrap();
    tables
        .write(signed(
            insert("secrets", "b", "2"),
            method::WRITE,
            DEV_ACCOUNT,
            &dev,
        ))
        .await
        .unwrap();
    let ok = tables
        .get(signed(
            get("secrets", "b", "2"),
            method::GET,
            DEV_ACCOUNT,
            &dev,
        ))
        .await
        .unwrap();
    assert!(ok.into_inner().entity.is_some());

    // No credentials at all: every TableService call.
    assert_refused(
        tables
            .list_tables(tonic::Request::new(list(DEV_ACCOUNT)))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "list tables without credentials",
    );
    assert_refused(
        tables
            .get(tonic::Request::new(get("secrets", "b", "2")))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "get without credentials",
    );
    assert_refused(
        tables
            .write(tonic::Request::new(insert("secrets", "x", "1")))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "write without credentials",
    );
    assert_refused(
        tables
            .create_table(tonic::Request::new(pb::CreateTableRequest {
                account: "nosuchaccount".into(),
                table: "planted".into(),
            }))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "create a table in an account that does not exist",
    );
    // The forwarded mark without the cluster token buys nothing.
    assert_refused(
        tables
            .get(with(
                tonic::Request::new(get("secrets", "b", "2")),
                "x-trestle-forwarded",
                "1",
            ))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "forwarded mark without a token",
    );

    // Wrong key, signatures for another body/method/account, replayed dates.
    let wrong_key = b"definitely not the account key".to_vec();
    assert_refused(
        tables
            .get(signed(
                get("secrets", "b", "2"),
                method::GET,
                DEV_ACCOUNT,
                &wrong_key,
            ))
            .await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "wrong key",
    );
    let mut swapped = tonic::Request::new(insert("secrets", "z", "9"));
    *swapped.metadata_mut() = signed(
        insert("secrets", "b", "2"),
        method::WRITE,
        DEV_ACCOUNT,
        &dev,
    )
    .metadata()
    .clone();
    assert_refused(
        tables.write(swapped).await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "a signature moved to another body",
    );
    assert_refused(
        tables
            .get(signed(
                get("secrets", "b", "2"),
                method::QUERY,
                DEV_ACCOUNT,
                &dev,
            ))
            .await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "a signature for another method",
    );
    let mut replayed = tonic::Request::new(get("secrets", "b", "2"));
    let old = wire::http_date(chrono::Utc::now() - chrono::Duration::minutes(30));
    wire::sign_request(&mut replayed, method::GET, DEV_ACCOUNT, &dev, &old);
    assert_refused(
        tables.get(replayed).await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "a call signed 30 minutes ago (replayed)",
    );
    // Another account's key: signing as that account for the dev account, or as the dev account.
    assert_refused(
        tables
            .list_tables(signed(
                list(DEV_ACCOUNT),
                method::LIST_TABLES,
                OTHER,
                &other_key(),
            ))
            .await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "signed by another account, acting in the dev account",
    );
    assert_refused(
        tables
            .list_tables(signed(
                list(DEV_ACCOUNT),
                method::LIST_TABLES,
                DEV_ACCOUNT,
                &other_key(),
            ))
            .await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "the dev account signed with another account's key",
    );
    if other_account {
        // The other account's own key works for the other account, and sees none of the dev
        // account's tables.
        let theirs = tables
            .list_tables(signed(
                list(OTHER),
                method::LIST_TABLES,
                OTHER,
                &other_key(),
            ))
            .await
            .unwrap();
        assert!(
            theirs
                .into_inner()
                .tables
                .iter()
                .all(|t| t.name != "secrets"),
            "the other account sees the dev account's table"
        );
    }

    // SAS: valid, expired, tampered, too weak, out of range, range without its PartitionKey.
    let sas_get = |sas: &str| {
        with(
            tonic::Request::new(get("secrets", "b", "2")),
            wire::SAS,
            sas,
        )
    };
    let read = table_sas("secrets", "r", FUTURE, [None; 4], &dev);
    tables.get(sas_get(&read)).await.unwrap();
    assert_refused(
        tables
            .write(with(
                tonic::Request::new(insert("secrets", "b", "3")),
                wire::SAS,
                &read,
            ))
            .await,
        Code::PermissionDenied,
        "AuthorizationPermissionMismatch",
        "a read-only SAS writing",
    );
    assert_refused(
        tables
            .get(sas_get(&table_sas("secrets", "r", PAST, [None; 4], &dev)))
            .await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "an expired SAS",
    );
    assert_refused(
        tables.get(sas_get(&read.replace("sp=r", "sp=raud"))).await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "a tampered SAS",
    );
    assert_refused(
        tables
            .get(sas_get(&table_sas(
                "secrets", "r", FUTURE, [None; 4], &wrong_key,
            )))
            .await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "a SAS signed with the wrong key",
    );
    let ranged = table_sas(
        "secrets",
        "r",
        FUTURE,
        [Some("c"), None, Some("d"), None],
        &dev,
    );
    assert_refused(
        tables.get(sas_get(&ranged)).await,
        Code::PermissionDenied,
        "AuthorizationFailure",
        "a read outside the SAS's PartitionKey range",
    );
    let rows_only = table_sas(
        "secrets",
        "r",
        FUTURE,
        [None, Some("3"), None, Some("4")],
        &dev,
    );
    assert_refused(
        tables.get(sas_get(&rows_only)).await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "a SAS with RowKey bounds but no PartitionKey bounds",
    );
    let mut query = tables
        .query(with(
            tonic::Request::new(pb::QueryRequest {
                account: DEV_ACCOUNT.into(),
                table: "secrets".into(),
                ..Default::default()
            }),
            wire::SAS,
            &ranged,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while let Some(m) = query.message().await.unwrap() {
        seen += m.entities.len();
    }
    assert_eq!(
        seen, 0,
        "a query with a ranged SAS saw entities outside its range"
    );
    let account_read = account_sas("rl", FUTURE, &dev);
    tables
        .list_tables(with(
            tonic::Request::new(list(DEV_ACCOUNT)),
            wire::SAS,
            &account_read,
        ))
        .await
        .unwrap();
    assert_refused(
        tables
            .delete_table(with(
                tonic::Request::new(pb::DeleteTableRequest {
                    account: DEV_ACCOUNT.into(),
                    table: "secrets".into(),
                }),
                wire::SAS,
                &account_read,
            ))
            .await,
        Code::PermissionDenied,
        "AuthorizationPermissionMismatch",
        "an account SAS without delete deleting a table",
    );

    // Internal services: NodeForward without a token, with a wrong one, with a foreign principal.
    let mut forward = NodeForwardClient::new(channel(&endpoints[0]).await);
    let acl = || npb::SetTableAclRequest {
        account: DEV_ACCOUNT.into(),
        table: "secrets".into(),
        policies: vec![npb::AccessPolicy {
            id: "planted".into(),
            start_ticks: None,
            expiry_ticks: None,
            permission: "raud".into(),
        }],
    };
    assert_refused(
        forward.set_table_acl(tonic::Request::new(acl())).await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "NodeForward.SetTableAcl without a token",
    );
    assert_refused(
        forward
            .set_table_acl(with(
                tonic::Request::new(acl()),
                wire::CLUSTER_TOKEN,
                "wrong-cluster-token-0123456789",
            ))
            .await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "NodeForward.SetTableAcl with a wrong token",
    );
    assert_refused(
        forward
            .set_table_acl(with(
                with(tonic::Request::new(acl()), wire::CLUSTER_TOKEN, token),
                wire::PRINCIPAL,
                OTHER,
            ))
            .await,
        Code::PermissionDenied,
        "AuthorizationFailure",
        "NodeForward.SetTableAcl for an account its principal does not name",
    );
    assert_refused(
        forward
            .uncatalog_table(tonic::Request::new(npb::UncatalogTableRequest {
                account: DEV_ACCOUNT.into(),
                table: "secrets".into(),
            }))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "NodeForward.UncatalogTable without a token",
    );
    assert_refused(
        forward
            .drop_table_data(tonic::Request::new(npb::DropTableDataRequest {
                table_id: 1,
            }))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "NodeForward.DropTableData without a token",
    );
    // A forwarded table call with the token acts only for its principal.
    assert_refused(
        tables
            .get(with(
                with(
                    tonic::Request::new(get("secrets", "b", "2")),
                    wire::CLUSTER_TOKEN,
                    token,
                ),
                wire::PRINCIPAL,
                OTHER,
            ))
            .await,
        Code::PermissionDenied,
        "AuthorizationFailure",
        "a forwarded get for another principal",
    );

    // Admin.
    let mut admin = AdminClient::new(channel(&endpoints[0]).await);
    assert_refused(
        admin.status(tonic::Request::new(StatusRequest {})).await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "Admin.Status without a token",
    );
    assert_refused(
        admin
            .transfer_leader(tonic::Request::new(TransferLeaderRequest {
                range_id: 1,
                to_node_id: 2,
            }))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "Admin.TransferLeader without a token",
    );
    assert_refused(
        admin
            .transfer_leader(with(
                tonic::Request::new(TransferLeaderRequest {
                    range_id: 1,
                    to_node_id: 2,
                }),
                wire::ADMIN_TOKEN,
                "wrong-admin-token-0123456789",
            ))
            .await,
        Code::Unauthenticated,
        "AuthenticationFailed",
        "Admin.TransferLeader with a wrong token",
    );
    assert_refused(
        admin
            .locate(tonic::Request::new(LocateRequest {
                account: DEV_ACCOUNT.into(),
                table: "secrets".into(),
                partition_key: String::new(),
            }))
            .await,
        Code::Unauthenticated,
        "NoAuthenticationInformation",
        "Admin.Locate without credentials",
    );
    admin
        .status(with(
            tonic::Request::new(StatusRequest {}),
            wire::ADMIN_TOKEN,
            token,
        ))
        .await
        .unwrap();

    // The Raft transport.
    let mut raft = RaftTransportClient::new(channel(&endpoints[0]).await);
    let refused = raft
        .send(tonic::Request::new(futures::stream::empty::<
            trestle_proto::raft::RaftBatch,
        >()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // REST without credentials.
    let (status, code) = rest_get_without_credentials(rest).await;
    assert_eq!(status, 401, "REST without credentials");
    assert_eq!(code.as_deref(), Some("NoAuthenticationInformation"));

    // After every probe, the table holds only what the owner wrote.
    let after = tables
        .get(signed(
            get("secrets", "x", "1"),
            method::GET,
            DEV_ACCOUNT,
            &dev,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        after.code(),
        Code::NotFound,
        "an unauthenticated write landed"
    );
}

/// `GET /{account}/Tables` with no credentials over plain HTTP/1.1: (status, x-ms-error-code).
async fn rest_get_without_credentials(rest: &str) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = rest.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET /{DEV_ACCOUNT}/Tables HTTP/1.1\r\nHost: {host}\r\nx-ms-version: 2019-02-02\r\n\
         Accept: application/json;odata=nometadata\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
        .await
        .expect("REST answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let code = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-ms-error-code")
            .then(|| value.trim().to_string())
    });
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s01_every_door_of_an_in_process_cluster_checks_who_is_knocking() {
    let cluster = InProcessCluster::start_with(2, |cfg| {
        cfg.gateway = GatewayConfig {
            accounts: vec![
                AccountConfig::dev(),
                AccountConfig {
                    name: OTHER.into(),
                    keys: vec![OTHER_KEY.into()],
                },
            ],
            ..GatewayConfig::default()
        };
    })
    .await
    .unwrap();
    let endpoints = cluster.grpc_endpoints();
    probe(
        &endpoints,
        &cluster.rest_endpoint(),
        trestle_storage_node::config::EXAMPLE_CLUSTER_TOKEN,
        true,
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s02_every_door_of_trestle_dev_checks_who_is_knocking() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(data.path()).unwrap();
    assert_ne!(
        dev.token,
        trestle_storage_node::config::EXAMPLE_CLUSTER_TOKEN,
        "trestle dev must generate its own token"
    );
    probe(&dev.grpc, &dev.rest, &dev.token, false).await;
    // The example token is not this cluster's token.
    let mut forward = NodeForwardClient::new(channel(&dev.grpc[1]).await);
    let s = forward
        .drop_table_data(with(
            tonic::Request::new(npb::DropTableDataRequest { table_id: 1 }),
            wire::CLUSTER_TOKEN,
            trestle_storage_node::config::EXAMPLE_CLUSTER_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s03_every_door_of_a_process_cluster_checks_who_is_knocking() {
    let cluster = ProcessCluster::start(2).await.unwrap();
    probe(
        &cluster.grpc_endpoints(),
        &cluster.rest_endpoint(2),
        PROCESS_CLUSTER_TOKEN,
        false,
    )
    .await;
}

/// An SDK client of the dev account that trusts `ca_pem` on `https://` endpoints.
async fn tls_client(
    endpoints: Vec<String>,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(String, String)>,
) -> trestle_client::TableClient {
    let mut config = trestle_client::ClientConfig::for_test()
        .with_credentials(trestle_client::Credentials::development());
    if let Some(pem) = ca_pem {
        config = config.with_tls_ca(pem);
    }
    if let Some((cert, key)) = identity {
        config = config.with_tls_identity(cert, key);
    }
    trestle_client::TableClient::connect_with(endpoints, config)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s04_trestle_dev_tls_encrypts_grpc_and_node_to_node_traffic() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start_with(data.path(), &["--tls"]).unwrap();
    assert!(dev.grpc.iter().all(|e| e.starts_with("https://")));
    let ca = std::fs::read(data.path().join("tls/dev-cert.pem")).unwrap();

    // Node 2 forwards to node 1 (dev keeps every leader there), so the nodes' own traffic is TLS
    // too: the call only succeeds if node 2 reaches node 1 over TLS (node 1 serves nothing else).
    let client = tls_client(vec![dev.grpc[1].clone()], Some(ca.clone()), None).await;
    client.create_table("overtls").await.unwrap();
    let t = client.table("overtls");
    t.insert(trestle_types::Entity::new("p", "r"))
        .await
        .unwrap();
    assert_eq!(t.get("p", "r").await.unwrap().row_key, "r");

    // Without trusting the certificate, or without TLS at all, nothing gets through.
    let untrusted = tls_client(vec![dev.grpc[0].clone()], None, None).await;
    assert!(
        untrusted.list_tables().await.is_err(),
        "an untrusted certificate was accepted"
    );
    let plaintext = tls_client(vec![dev.grpc[0].replace("https://", "http://")], None, None).await;
    assert!(
        plaintext.list_tables().await.is_err(),
        "plaintext reached the TLS port"
    );

    // A SAS restricted to HTTPS holds over the TLS gRPC port.
    let sas = {
        let pairs: Vec<(&str, String)> = vec![
            ("sv", "2019-02-02".into()),
            ("ss", "t".into()),
            ("srt", "co".into()),
            ("sp", "rl".into()),
            ("se", FUTURE.into()),
            ("spr", "https".into()),
        ];
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain([("sig".to_string(), String::new())])
            .collect();
        let params = SasParams::from_query(&owned).unwrap();
        let sig = signing::sign(
            &dev_key(),
            &account_strings_to_sign(DEV_ACCOUNT, &params)[0],
        );
        let mut pairs = pairs;
        pairs.push(("sig", sig));
        encode(&pairs)
    };
    let sas_client = {
        let config = trestle_client::ClientConfig::for_test()
            .with_credentials(trestle_client::Credentials::sas(DEV_ACCOUNT, &sas))
            .with_tls_ca(ca.clone());
        trestle_client::TableClient::connect_with(vec![dev.grpc[0].clone()], config)
            .await
            .unwrap()
    };
    let tables = sas_client.list_tables().await.unwrap();
    assert!(tables.iter().any(|t| t.name == "overtls"));
}

/// A CA and a certificate it signed for 127.0.0.1/localhost, as PEM: (ca, cert, key).
fn ca_and_leaf(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s05_mutual_tls_admits_only_clients_with_a_certificate_of_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_leaf("cluster");
    let (_, stranger_cert, stranger_key) = ca_and_leaf("stranger");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (ca_file, cert_file, key_file) = (
        write("ca.pem", &ca),
        write("node.pem", &cert),
        write("node-key.pem", &key),
    );
    let cluster = InProcessCluster::start_with(2, |cfg| {
        cfg.tls = trestle_storage_node::tls::GrpcTlsConfig {
            cert_file: Some(cert_file.clone()),
            key_file: Some(key_file.clone()),
            ca_file: Some(ca_file.clone()),
            require_client_cert: true,
            server_name: None,
        };
    })
    .await
    .unwrap();
    let https: Vec<String> = cluster
        .grpc_endpoints()
        .iter()
        .map(|e| e.replace("http://", "https://"))
        .collect();
    // With the cluster's certificate: served, through node 2 (forwarding between nodes is mutual TLS
    // as well; the nodes present their own certificate).
    let member = tls_client(
        https.clone(),
        Some(ca.clone().into_bytes()),
        Some((cert.clone(), key.clone())),
    )
    .await;
    member.create_table("mutual").await.unwrap();
    for node in 1..=3 {
        let via = tls_client(
            vec![https[node - 1].clone()],
            Some(ca.clone().into_bytes()),
            Some((cert.clone(), key.clone())),
        )
        .await;
        via.table("mutual")
            .insert(trestle_types::Entity::new("p", format!("via{node}")))
            .await
            .unwrap();
    }
    // Without a client certificate, or with one from another CA: refused at the handshake.
    let anonymous = tls_client(https.clone(), Some(ca.clone().into_bytes()), None).await;
    assert!(
        anonymous.list_tables().await.is_err(),
        "no client certificate was accepted"
    );
    let stranger = tls_client(
        https.clone(),
        Some(ca.clone().into_bytes()),
        Some((stranger_cert, stranger_key)),
    )
    .await;
    assert!(
        stranger.list_tables().await.is_err(),
        "a foreign client certificate was accepted"
    );
    cluster.shutdown().await;
}
