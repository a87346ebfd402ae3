//! Who is calling a node's gRPC services, and what they may do there.
//!
//! Every gRPC door of a node checks its caller (the metadata entries are defined in
//! `trestle_proto::auth`):
//!
//! | service | accepted callers |
//! |---|---|
//! | `TableService`, `Admin.Locate` | an account (Shared Key signature or SAS, as REST), or a peer node acting for the account it authenticated |
//! | `NodeForward` | peer nodes only (cluster token); account-scoped calls only for the forwarded principal |
//! | `RaftTransport` | peer nodes only (cluster token; checked in `trestle_replication::grpc`) |
//! | `Admin.Status` | peer nodes or the admin credential |
//! | `Admin.TransferLeader` | the admin credential |
//!
//! **Accounts.** A signed call carries `authorization: TrestleSharedKey {account}:{sig}` and `x-ms-date`;
//! the signature ([`trestle_types::signing::grpc_string_to_sign`]) covers the method, the account the
//! message names, the date and the protobuf encoding of the message, so it can be replayed neither with
//! another body nor for another account, and only within the clock-skew window of the REST gateway's
//! configuration. The node re-encodes the message it decoded: fields unknown to it are not covered and
//! a message carrying them fails to verify (fails closed). A SAS (`x-trestle-sas`) is checked by the REST
//! gateway's own SAS code, so permissions, table names and PartitionKey/RowKey ranges mean exactly what
//! they mean over REST. Each operation is then authorized with [`Credential::authorize`], as REST does.
//!
//! **Peers.** A forwarded table call carries the cluster token and `x-trestle-principal`, the account
//! the forwarding node authenticated; the receiving node serves it with full rights in that account and
//! refuses it for any other, so a forwarded call never acts for an account its sender did not
//! authenticate. A wrong cluster token is refused outright (never treated as "no token").
//!
//! **Codes.** A missing credential is `UNAUTHENTICATED` with `NoAuthenticationInformation`; a credential
//! that does not verify (bad signature, unknown account, expired SAS, stale date, wrong token) is
//! `UNAUTHENTICATED` with Azure's `AuthenticationFailed`; a valid credential that does not cover the
//! operation is `PERMISSION_DENIED` with Azure's `Authorization*` code. The code name travels in
//! `x-trestle-error-code`, as every other error's does.

use std::sync::Arc;

use http::HeaderMap;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use trestle_proto::auth::{
    ADMIN_TOKEN, AUTHORIZATION, CLUSTER_TOKEN, DATE, PRINCIPAL, SAS, SCHEME,
};
use trestle_rest_gateway::auth::sas::{self, SasParams};
use trestle_rest_gateway::auth::{
    Access, Accounts, AuthRequest, Credential, auth_failed, check_signing_date,
};
use trestle_rest_gateway::{ApiError, GatewayConfig, TableService};
use trestle_types::{DateTime, Error, ErrorCode, WriteKind, signing};

use crate::grpc_api::status_from_error;

/// The node-level secrets: the cluster token peers present to each other, and the admin credential.
#[derive(Clone)]
pub struct Secrets {
    cluster_token: Arc<str>,
    admin_token: Arc<str>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// What a caller presented in one metadata entry.
enum Presented {
    Absent,
    Valid,
    Wrong,
}

fn presented(md: &MetadataMap, name: &str, secret: &str) -> Presented {
    match md.get(name) {
        None => Presented::Absent,
        Some(v) if signing::secrets_equal(v.as_bytes(), secret.as_bytes()) => Presented::Valid,
        Some(_) => Presented::Wrong,
    }
}

impl Secrets {
    /// `admin_token` falls back to the cluster token when none is configured.
    pub fn new(cluster_token: &str, admin_token: Option<&str>) -> Secrets {
        Secrets {
            cluster_token: cluster_token.into(),
            admin_token: admin_token.unwrap_or(cluster_token).into(),
        }
    }

    pub fn cluster_token(&self) -> &str {
        &self.cluster_token
    }

    /// Whether the call comes from a peer node: `Ok(true)` with a valid cluster token, `Ok(false)` with
    /// none, an `UNAUTHENTICATED` status with a wrong one.
    pub fn is_peer(&self, md: &MetadataMap) -> Result<bool, Status> {
        match presented(md, CLUSTER_TOKEN, &self.cluster_token) {
            Presented::Absent => Ok(false),
            Presented::Valid => Ok(true),
            Presented::Wrong => Err(refused(
                ErrorCode::AuthenticationFailed,
                "The cluster token is not valid.",
            )),
        }
    }

    /// Only peer nodes may make this call.
    pub fn require_peer(&self, md: &MetadataMap) -> Result<(), Status> {
        if self.is_peer(md)? {
            Ok(())
        } else {
            Err(refused(
                ErrorCode::NoAuthenticationInformation,
                "This internal service accepts only calls from the cluster's nodes (cluster token).",
            ))
        }
    }

    /// Only the admin credential may make this call.
    pub fn require_admin(&self, md: &MetadataMap) -> Result<(), Status> {
        match presented(md, ADMIN_TOKEN, &self.admin_token) {
            Presented::Valid => Ok(()),
            Presented::Wrong => Err(refused(
                ErrorCode::AuthenticationFailed,
                "The admin token is not valid.",
            )),
            Presented::Absent => Err(refused(
                ErrorCode::NoAuthenticationInformation,
                "This call needs the admin token (trestle ctl --admin-token, TRESTLE_ADMIN_TOKEN or \
                 --admin-token-file).",
            )),
        }
    }

    /// Peer nodes or the admin credential (read-only cluster status).
    pub fn require_peer_or_admin(&self, md: &MetadataMap) -> Result<(), Status> {
        if self.is_peer(md)? {
            return Ok(());
        }
        self.require_admin(md)
    }
}

/// A refusal as a status, with the error code in the metadata like every other error.
fn refused(code: ErrorCode, message: &str) -> Status {
    status_from_error(&Error::new(code, message))
}

/// An authentication or authorization failure of the REST gateway's code, as a gRPC status.
pub fn deny(e: ApiError) -> Status {
    status_from_error(&Error::new(e.code, e.message))
}

/// The access a write of `kind` needs, as REST maps its verbs.
pub fn write_access(kind: WriteKind) -> Access {
    match kind {
        WriteKind::Insert => Access::InsertEntity,
        WriteKind::Replace | WriteKind::Merge => Access::UpdateEntity,
        WriteKind::InsertOrReplace | WriteKind::InsertOrMerge => Access::UpsertEntity,
        WriteKind::Delete => Access::DeleteEntity,
    }
}

/// Authenticates calls that act in an account (see the module header).
pub struct Authenticator {
    accounts: Accounts,
    gateway: GatewayConfig,
    secrets: Secrets,
    /// For SAS stored access policies (`si`), looked up like REST does.
    service: Arc<dyn TableService>,
    /// Whether the gRPC port serves TLS only (a SAS's `spr=https` then holds).
    tls: bool,
}

impl Authenticator {
    pub fn new(
        gateway: &GatewayConfig,
        secrets: Secrets,
        service: Arc<dyn TableService>,
        tls: bool,
    ) -> Self {
        Authenticator {
            accounts: Accounts::from_config(gateway),
            gateway: gateway.clone(),
            secrets,
            service,
            tls,
        }
    }

    /// Who `request`, a call of `method` acting in `account`, comes from.
    pub async fn authenticate<T: prost::Message>(
        &self,
        request: &Request<T>,
        method: &str,
        account: &str,
    ) -> Result<Credential, Status> {
        let md = request.metadata();
        if self.secrets.is_peer(md)? {
            let principal = md.get(PRINCIPAL).and_then(|v| v.to_str().ok());
            return match principal {
                Some(p) if p == account => Ok(Credential::SharedKey),
                _ => Err(refused(
                    ErrorCode::AuthorizationFailure,
                    &format!(
                        "A forwarded call for account {account} must carry that account as its \
                         authenticated principal."
                    ),
                )),
            };
        }
        let now = DateTime::now();
        if let Some(sas_value) = md.get(SAS) {
            let query = sas_value
                .to_str()
                .map_err(|_| deny(auth_failed("The shared access signature is not ASCII.")))?;
            return self.authenticate_sas(request, account, query, now).await;
        }
        match md.get(AUTHORIZATION) {
            Some(header) => {
                let header = header.to_str().map_err(|_| deny(invalid_authorization()))?;
                self.authenticate_signed(request, method, account, header, now)
                    .map_err(deny)
            }
            None if self.gateway.allow_anonymous => Ok(Credential::Anonymous),
            None => Err(refused(
                ErrorCode::NoAuthenticationInformation,
                "The call carries no credentials: sign it with an account key (TrestleSharedKey) or \
                 attach a shared access signature (x-trestle-sas).",
            )),
        }
    }

    async fn authenticate_sas<T>(
        &self,
        request: &Request<T>,
        account: &str,
        query: &str,
        now: DateTime,
    ) -> Result<Credential, Status> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
                .into_owned()
                .collect();
        let params = SasParams::from_query(&pairs).ok_or_else(|| {
            deny(auth_failed(
                "The shared access signature has no signature (sig).",
            ))
        })?;
        let headers: HeaderMap = request.metadata().clone().into_headers();
        let auth = AuthRequest {
            method: "POST",
            headers: &headers,
            raw_path: "",
            path_style: false,
            account,
            query: &pairs,
            peer: request.remote_addr().map(|a| a.ip()),
            // A TLS port serves nothing but TLS, so every call on it came over HTTPS.
            https: self.tls,
            now,
        };
        sas::authenticate(&auth, &self.accounts, self.service.as_ref(), &params)
            .await
            .map_err(deny)
    }

    fn authenticate_signed<T: prost::Message>(
        &self,
        request: &Request<T>,
        method: &str,
        account: &str,
        header: &str,
        now: DateTime,
    ) -> Result<Credential, ApiError> {
        let (scheme, rest) = header.split_once(' ').ok_or_else(invalid_authorization)?;
        let (signer, signature) = rest
            .trim()
            .split_once(':')
            .ok_or_else(invalid_authorization)?;
        if scheme != SCHEME || signature.is_empty() {
            return Err(invalid_authorization());
        }
        if signer != account {
            return Err(auth_failed(format!(
                "The call is signed by account {signer} but acts in account {account}."
            )));
        }
        let keys = self.accounts.keys(account)?;
        let date = request
            .metadata()
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| auth_failed("The signing date (x-ms-date) is missing."))?;
        check_signing_date(date, now, self.gateway.clock_skew_secs)?;
        let message = request.get_ref().encode_to_vec();
        let string = signing::grpc_string_to_sign(method, account, date, &message);
        if signing::verify(keys, &[string], signature) {
            Ok(Credential::SharedKey)
        } else {
            Err(auth_failed(
                "The signature is not the same as any signature computed with the account's keys.",
            ))
        }
    }
}

fn invalid_authorization() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidAuthenticationInfo,
        format!("The authorization metadata must be `{SCHEME} {{account}}:{{signature}}`."),
    )
}

#[cfg(test)]
#[path = "grpc_auth_tests.rs"]
mod tests;
