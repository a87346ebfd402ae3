//! How calls to Trestle's gRPC services say who is calling: the metadata entries, the method names that
//! are signed, and the one function that signs a request (the SDK, the benchmark harness and the node's
//! forwarding all use it; the node verifies with `trestle_types::signing`).
//!
//! Public calls (`TableService`) carry one of:
//! - `authorization: TrestleSharedKey {account}:{signature}` and `x-ms-date: {RFC 1123 date}`, where the
//!   signature is [`trestle_types::signing::grpc_string_to_sign`] of the method, the account the request
//!   names, the date and the encoded request message, under the account key;
//! - `x-trestle-sas: {SAS query string}` (an account or table SAS exactly as REST takes it in the URL).
//!
//! Internal calls (another node forwarding, `NodeForward`, the Raft transport) carry the cluster token
//! in `x-trestle-cluster-token`; a forwarded table call adds `x-trestle-principal: {account}`, the
//! account the forwarding node authenticated. Admin's mutating calls carry `x-trestle-admin-token`.

use tonic::metadata::MetadataValue;

/// `TrestleSharedKey {account}:{signature}`.
pub const AUTHORIZATION: &str = "authorization";
/// The signing date, RFC 1123 (`Tue, 01 Dec 2026 10:00:00 GMT`), as Azure's `x-ms-date`.
pub const DATE: &str = "x-ms-date";
/// A shared access signature in query-string form.
pub const SAS: &str = "x-trestle-sas";
/// The scheme word of [`AUTHORIZATION`].
pub const SCHEME: &str = "TrestleSharedKey";
/// The cluster's shared secret, on node-to-node calls.
pub const CLUSTER_TOKEN: &str = "x-trestle-cluster-token";
/// The account a forwarding node authenticated at its edge.
pub const PRINCIPAL: &str = "x-trestle-principal";
/// The admin credential of Admin's mutating calls.
pub const ADMIN_TOKEN: &str = "x-trestle-admin-token";

/// The signed method names of `TableService`, `Admin.Locate` and `Lock` (the gRPC paths).
pub mod method {
    pub const CREATE_TABLE: &str = "/trestle.table.v1.TableService/CreateTable";
    pub const DELETE_TABLE: &str = "/trestle.table.v1.TableService/DeleteTable";
    pub const LIST_TABLES: &str = "/trestle.table.v1.TableService/ListTables";
    pub const WRITE: &str = "/trestle.table.v1.TableService/Write";
    pub const BATCH: &str = "/trestle.table.v1.TableService/Batch";
    pub const GET: &str = "/trestle.table.v1.TableService/Get";
    pub const QUERY: &str = "/trestle.table.v1.TableService/Query";
    pub const LOCATE: &str = "/trestle.admin.v1.Admin/Locate";
    pub const GRANT_LEASE: &str = "/trestle.lock.v1.Lock/GrantLease";
    pub const KEEP_ALIVE: &str = "/trestle.lock.v1.Lock/KeepAlive";
    pub const REVOKE: &str = "/trestle.lock.v1.Lock/Revoke";
    pub const ACQUIRE: &str = "/trestle.lock.v1.Lock/Acquire";
    pub const RELEASE: &str = "/trestle.lock.v1.Lock/Release";
    pub const DESCRIBE: &str = "/trestle.lock.v1.Lock/Describe";
    pub const LIST: &str = "/trestle.lock.v1.Lock/List";
}

/// An RFC 1123 date as `x-ms-date` wants it.
pub fn http_date(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Signs `request` for `account` with `key` (see the module header). `account` must be the account the
/// message names (the node's default account when the message leaves it empty).
pub fn sign_request<T: prost::Message>(
    request: &mut tonic::Request<T>,
    method: &str,
    account: &str,
    key: &[u8],
    date: &str,
) {
    let message = request.get_ref().encode_to_vec();
    let string = trestle_types::signing::grpc_string_to_sign(method, account, date, &message);
    let signature = trestle_types::signing::sign(key, &string);
    insert(
        request,
        AUTHORIZATION,
        &format!("{SCHEME} {account}:{signature}"),
    );
    insert(request, DATE, date);
}

/// Adds a SAS (query-string form, with or without a leading `?`) to `request`.
pub fn attach_sas<T>(request: &mut tonic::Request<T>, sas: &str) {
    insert(request, SAS, sas.trim_start_matches('?'));
}

/// Sets one ASCII metadata entry; a value that is not valid metadata (control characters) is left out,
/// and the call then fails authentication on the server with a clear status.
pub fn insert<T>(request: &mut tonic::Request<T>, name: &'static str, value: &str) {
    if let Ok(v) = MetadataValue::try_from(value) {
        request.metadata_mut().insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table as pb;

    #[test]
    fn a_signed_request_carries_the_scheme_account_and_date() {
        let mut r = tonic::Request::new(pb::GetRequest {
            account: "acct".into(),
            table: "t".into(),
            ..Default::default()
        });
        let date = "Wed, 02 Dec 2026 10:00:00 GMT";
        sign_request(&mut r, method::GET, "acct", b"key", date);
        let auth = r.metadata().get(AUTHORIZATION).unwrap().to_str().unwrap();
        assert!(auth.starts_with("TrestleSharedKey acct:"), "{auth}");
        assert_eq!(r.metadata().get(DATE).unwrap().to_str().unwrap(), date);
        let message = prost::Message::encode_to_vec(r.get_ref());
        let expected = trestle_types::signing::sign(
            b"key",
            &trestle_types::signing::grpc_string_to_sign(method::GET, "acct", date, &message),
        );
        assert_eq!(auth, format!("TrestleSharedKey acct:{expected}"));
    }

    #[test]
    fn dates_are_rfc1123() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(http_date(t), "Wed, 02 Dec 2026 10:00:00 GMT");
    }
}
