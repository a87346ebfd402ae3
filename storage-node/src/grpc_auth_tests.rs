use async_trait::async_trait;
use chrono::Utc;
use tonic::Code;
use trestle_proto::auth::{self as wire, method};
use trestle_proto::table as pb;
use trestle_rest_gateway::Fencing;
use trestle_rest_gateway::config::{DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use trestle_types::{
    AccessPolicy, BatchError, Entity, QueryPage, QuerySpec, Result as TResult, TableInfo,
    TableName, WriteOp, WriteOutcome,
};

use super::*;

/// A table service that knows no tables (the authenticator only asks it for stored policies).
struct NoTables;

#[async_trait]
impl TableService for NoTables {
    async fn create_table(&self, _: &str, _: &TableName) -> TResult<TableInfo> {
        Err(Error::from_code(ErrorCode::NotImplemented))
    }
    async fn delete_table(&self, _: &str, _: &str) -> TResult<()> {
        Err(Error::from_code(ErrorCode::NotImplemented))
    }
    async fn get_table(&self, _: &str, _: &str) -> TResult<TableInfo> {
        Err(Error::from_code(ErrorCode::TableNotFound))
    }
    async fn list_tables(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> TResult<(Vec<TableInfo>, Option<String>)> {
        Err(Error::from_code(ErrorCode::NotImplemented))
    }
    async fn set_table_acl(&self, _: &str, _: &str, _: Vec<AccessPolicy>) -> TResult<()> {
        Err(Error::from_code(ErrorCode::NotImplemented))
    }
    async fn write(
        &self,
        _: &str,
        _: &str,
        _: WriteOp,
        _: Option<Fencing>,
    ) -> TResult<WriteOutcome> {
        Err(Error::from_code(ErrorCode::NotImplemented))
    }
    async fn batch(
        &self,
        _: &str,
        _: &str,
        _: Vec<WriteOp>,
        _: Option<Fencing>,
    ) -> std::result::Result<Vec<WriteOutcome>, BatchError> {
        Err(BatchError {
            index: None,
            error: Error::from_code(ErrorCode::NotImplemented),
        })
    }
    async fn get_entity(&self, _: &str, _: &str, _: &str, _: &str) -> TResult<Entity> {
        Err(Error::from_code(ErrorCode::NotImplemented))
    }
    async fn query(&self, _: &str, _: &str, _: QuerySpec) -> TResult<QueryPage> {
        Err(Error::from_code(ErrorCode::NotImplemented))
    }
    async fn get_service_properties(&self, _: &str) -> TResult<Option<String>> {
        Ok(None)
    }
    async fn set_service_properties(&self, _: &str, _: String) -> TResult<()> {
        Err(Error::from_code(ErrorCode::NotImplemented))
    }
}

const TOKEN: &str = "cluster-token-0123456789";

fn authenticator() -> Authenticator {
    Authenticator::new(
        &GatewayConfig::for_test(),
        Secrets::new(TOKEN, Some("admin-token-0123456789")),
        Arc::new(NoTables),
        false,
    )
}

fn key() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(DEV_ACCOUNT_KEY)
        .unwrap()
}

fn get(table: &str) -> Request<pb::GetRequest> {
    Request::new(pb::GetRequest {
        account: DEV_ACCOUNT.into(),
        table: table.into(),
        partition_key: "p".into(),
        row_key: "r".into(),
        select: Vec::new(),
    })
}

fn now_date() -> String {
    wire::http_date(Utc::now())
}

fn code_of(s: &Status) -> Option<&str> {
    s.metadata()
        .get(crate::grpc_api::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
}

async fn check(request: &Request<pb::GetRequest>) -> std::result::Result<Credential, Status> {
    authenticator()
        .authenticate(request, method::GET, DEV_ACCOUNT)
        .await
}

#[tokio::test]
async fn a_call_signed_with_the_account_key_is_the_account() {
    let mut r = get("t");
    wire::sign_request(&mut r, method::GET, DEV_ACCOUNT, &key(), &now_date());
    assert_eq!(check(&r).await.unwrap(), Credential::SharedKey);
}

#[tokio::test]
async fn calls_without_credentials_are_unauthenticated() {
    let s = check(&get("t")).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert_eq!(code_of(&s), Some("NoAuthenticationInformation"));
}

#[tokio::test]
async fn wrong_keys_other_bodies_methods_accounts_and_stale_dates_are_refused() {
    let date = now_date();
    let cases: Vec<(&str, Request<pb::GetRequest>)> = vec![
        ("wrong key", {
            let mut r = get("t");
            wire::sign_request(&mut r, method::GET, DEV_ACCOUNT, b"not the key", &date);
            r
        }),
        ("signature of another body", {
            let mut signed = get("t");
            wire::sign_request(&mut signed, method::GET, DEV_ACCOUNT, &key(), &date);
            let mut r = get("other");
            *r.metadata_mut() = signed.metadata().clone();
            r
        }),
        ("signed for another method", {
            let mut r = get("t");
            wire::sign_request(&mut r, method::QUERY, DEV_ACCOUNT, &key(), &date);
            r
        }),
        ("signed by another account", {
            let mut r = get("t");
            wire::sign_request(&mut r, method::GET, "otheraccount", &key(), &date);
            r
        }),
        ("an hour old", {
            let mut r = get("t");
            let old = wire::http_date(Utc::now() - chrono::Duration::hours(1));
            wire::sign_request(&mut r, method::GET, DEV_ACCOUNT, &key(), &old);
            r
        }),
        ("an hour ahead", {
            let mut r = get("t");
            let ahead = wire::http_date(Utc::now() + chrono::Duration::hours(1));
            wire::sign_request(&mut r, method::GET, DEV_ACCOUNT, &key(), &ahead);
            r
        }),
    ];
    for (what, r) in cases {
        let s = check(&r).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s:?}");
        assert_eq!(code_of(&s), Some("AuthenticationFailed"), "{what}");
    }
    let mut garbled = get("t");
    wire::insert(&mut garbled, wire::AUTHORIZATION, "SharedKey nonsense");
    let s = check(&garbled).await.unwrap_err();
    assert_eq!(code_of(&s), Some("InvalidAuthenticationInfo"));
}

#[tokio::test]
async fn peers_act_only_for_the_principal_they_name_and_wrong_tokens_are_refused() {
    let mut peer = get("t");
    wire::insert(&mut peer, wire::CLUSTER_TOKEN, TOKEN);
    wire::insert(&mut peer, wire::PRINCIPAL, DEV_ACCOUNT);
    assert_eq!(check(&peer).await.unwrap(), Credential::SharedKey);

    let mut other = get("t");
    wire::insert(&mut other, wire::CLUSTER_TOKEN, TOKEN);
    wire::insert(&mut other, wire::PRINCIPAL, "someoneelse");
    let s = check(&other).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);

    let mut no_principal = get("t");
    wire::insert(&mut no_principal, wire::CLUSTER_TOKEN, TOKEN);
    assert_eq!(
        check(&no_principal).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // A wrong token is refused even when the call is also signed correctly.
    let mut wrong = get("t");
    wire::sign_request(&mut wrong, method::GET, DEV_ACCOUNT, &key(), &now_date());
    wire::insert(&mut wrong, wire::CLUSTER_TOKEN, "cluster-token-0123456788");
    let s = check(&wrong).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert_eq!(code_of(&s), Some("AuthenticationFailed"));
}

#[tokio::test]
async fn a_sas_is_checked_by_the_rest_gateways_code() {
    // An account SAS for the table service, objects, read; signed with the dev key.
    let expiry = (Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let params = SasParams {
        sv: Some("2019-02-02".into()),
        ss: Some("t".into()),
        srt: Some("o".into()),
        sp: Some("r".into()),
        se: Some(expiry.clone()),
        ..SasParams::default()
    };
    let sig = signing::sign(
        &key(),
        &sas::account_strings_to_sign(DEV_ACCOUNT, &params)[0],
    );
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", "2019-02-02")
        .append_pair("ss", "t")
        .append_pair("srt", "o")
        .append_pair("sp", "r")
        .append_pair("se", &expiry)
        .append_pair("sig", &sig)
        .finish();
    let mut r = get("t");
    wire::attach_sas(&mut r, &query);
    let credential = check(&r).await.unwrap();
    assert!(
        credential
            .authorize(Access::ReadEntity, Some("t"), None)
            .is_ok()
    );
    let refused = credential
        .authorize(Access::InsertEntity, Some("t"), None)
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::AuthorizationPermissionMismatch);

    let mut tampered = get("t");
    wire::attach_sas(&mut tampered, &query.replace("sp=r", "sp=rwd"));
    let s = check(&tampered).await.unwrap_err();
    assert_eq!(code_of(&s), Some("AuthenticationFailed"));
}

#[test]
fn admin_calls_need_the_admin_token_and_status_also_takes_the_cluster_token() {
    let secrets = Secrets::new(TOKEN, Some("admin-token-0123456789"));
    let with = |name: &'static str, value: &str| {
        let mut r = Request::new(());
        wire::insert(&mut r, name, value);
        r.metadata().clone()
    };
    let admin = with(wire::ADMIN_TOKEN, "admin-token-0123456789");
    let cluster = with(wire::CLUSTER_TOKEN, TOKEN);
    let none = MetadataMap::new();
    assert!(secrets.require_admin(&admin).is_ok());
    assert_eq!(
        secrets.require_admin(&cluster).unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(secrets.require_admin(&none).is_err());
    assert!(
        secrets
            .require_admin(&with(wire::ADMIN_TOKEN, "admin-token-0123456780"))
            .is_err()
    );
    assert!(secrets.require_peer_or_admin(&admin).is_ok());
    assert!(secrets.require_peer_or_admin(&cluster).is_ok());
    assert!(secrets.require_peer_or_admin(&none).is_err());
    assert!(secrets.require_peer(&admin).is_err());
    // Without a configured admin token, the cluster token is the admin credential.
    let fallback = Secrets::new(TOKEN, None);
    assert!(
        fallback
            .require_admin(&with(wire::ADMIN_TOKEN, TOKEN))
            .is_ok()
    );
}

#[test]
fn writes_need_the_access_rest_maps_them_to() {
    assert_eq!(write_access(WriteKind::Insert), Access::InsertEntity);
    assert_eq!(write_access(WriteKind::Replace), Access::UpdateEntity);
    assert_eq!(write_access(WriteKind::Merge), Access::UpdateEntity);
    assert_eq!(
        write_access(WriteKind::InsertOrReplace),
        Access::UpsertEntity
    );
    assert_eq!(write_access(WriteKind::InsertOrMerge), Access::UpsertEntity);
    assert_eq!(write_access(WriteKind::Delete), Access::DeleteEntity);
}
