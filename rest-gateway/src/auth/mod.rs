//! Authentication (who signed this request) and authorization (may that credential do this operation).
//!
//! A request is authenticated once, before its body is parsed, into a [`Credential`]: Shared Key or
//! Shared Key Lite (full access to the account), an account SAS, a table SAS, or anonymous (only when the
//! config allows it, which Azure never does for tables). Each handler then calls
//! [`Credential::authorize`] with the [`Access`] it is about to perform, the table and, for point
//! operations, the entity key, so SAS permissions, resource types, table names and PartitionKey/RowKey
//! ranges are checked in one place. Failures carry Azure's codes: 401 `NoAuthenticationInformation` or
//! `InvalidAuthenticationInfo`, 403 `AuthenticationFailed` (bad signature, expired, clock skew) and the
//! 403 `Authorization*` family.

pub mod sas;
pub mod shared_key;

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::Utc;
use http::HeaderMap;
use trestle_types::value::TICKS_PER_SECOND;
use trestle_types::{DateTime, EntityKey, ErrorCode};

use crate::config::GatewayConfig;
use crate::error::{ApiError, ApiResult};
use crate::service::TableService;
use sas::{KeyRange, SasParams};
use shared_key::Scheme;

/// The accounts and their decoded keys.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    keys: HashMap<String, Vec<Vec<u8>>>,
}

impl Accounts {
    pub fn from_config(config: &GatewayConfig) -> Accounts {
        let keys = config
            .accounts
            .iter()
            .map(|a| (a.name.clone(), a.decoded_keys()))
            .collect();
        Accounts { keys }
    }

    pub fn contains(&self, account: &str) -> bool {
        self.keys.contains_key(account)
    }

    pub fn keys(&self, account: &str) -> ApiResult<&[Vec<u8>]> {
        self.keys
            .get(account)
            .map(Vec::as_slice)
            .ok_or_else(|| auth_failed(format!("The account {account} does not exist.")))
    }
}

/// Who the request is acting as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Shared Key or Shared Key Lite: everything in the account.
    SharedKey,
    /// No credentials, allowed by configuration (tests only).
    Anonymous,
    AccountSas {
        resource_types: String,
        permissions: String,
    },
    TableSas {
        table: String,
        permissions: String,
        range: KeyRange,
    },
}

/// An operation, as far as authorization is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ListTables,
    CreateTable,
    DeleteTable,
    ReadTable,
    TableAcl,
    ReadEntity,
    QueryEntities,
    InsertEntity,
    UpdateEntity,
    UpsertEntity,
    DeleteEntity,
    ReadServiceProperties,
    WriteServiceProperties,
    ServiceStats,
}

impl Access {
    /// Whether the operation writes (and so is refused on the read-only secondary endpoint).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Access::CreateTable
                | Access::DeleteTable
                | Access::InsertEntity
                | Access::UpdateEntity
                | Access::UpsertEntity
                | Access::DeleteEntity
                | Access::WriteServiceProperties
        )
    }

    /// (account SAS resource type, alternatives of required permission sets)
    fn account_sas_needs(self) -> Option<(char, &'static [&'static str])> {
        Some(match self {
            Access::ListTables => ('c', &["l"]),
            Access::CreateTable => ('c', &["a", "c", "w"]),
            Access::DeleteTable => ('c', &["d"]),
            Access::ReadTable => ('c', &["r", "l"]),
            Access::TableAcl => return None,
            Access::ReadEntity | Access::QueryEntities => ('o', &["r"]),
            Access::InsertEntity => ('o', &["a"]),
            Access::UpdateEntity => ('o', &["u"]),
            Access::UpsertEntity => ('o', &["au"]),
            Access::DeleteEntity => ('o', &["d"]),
            Access::ReadServiceProperties | Access::ServiceStats => ('s', &["r"]),
            Access::WriteServiceProperties => ('s', &["w"]),
        })
    }

    fn table_sas_needs(self) -> Option<&'static str> {
        Some(match self {
            Access::ReadEntity | Access::QueryEntities => "r",
            Access::InsertEntity => "a",
            Access::UpdateEntity => "u",
            Access::UpsertEntity => "au",
            Access::DeleteEntity => "d",
            _ => return None,
        })
    }
}

impl Credential {
    /// Checks that this credential may perform `access` on `table` (and on the entity `key`, for point
    /// operations and each operation of a batch).
    pub fn authorize(
        &self,
        access: Access,
        table: Option<&str>,
        key: Option<&EntityKey>,
    ) -> ApiResult<()> {
        match self {
            Credential::SharedKey | Credential::Anonymous => Ok(()),
            Credential::AccountSas {
                resource_types,
                permissions,
            } => {
                let (resource_type, alternatives) = access
                    .account_sas_needs()
                    .ok_or_else(|| ApiError::from_code(ErrorCode::AuthorizationFailure))?;
                if !resource_types.contains(resource_type) {
                    return Err(ApiError::from_code(
                        ErrorCode::AuthorizationResourceTypeMismatch,
                    ));
                }
                if !alternatives
                    .iter()
                    .any(|needed| sas::has_permissions(permissions, needed))
                {
                    return Err(ApiError::from_code(
                        ErrorCode::AuthorizationPermissionMismatch,
                    ));
                }
                Ok(())
            }
            Credential::TableSas {
                table: granted,
                permissions,
                range,
            } => {
                let needed = access
                    .table_sas_needs()
                    .ok_or_else(|| ApiError::from_code(ErrorCode::AuthorizationFailure))?;
                if !table.is_some_and(|t| t.eq_ignore_ascii_case(granted)) {
                    return Err(ApiError::from_code(ErrorCode::AuthorizationFailure));
                }
                if !sas::has_permissions(permissions, needed) {
                    return Err(ApiError::from_code(
                        ErrorCode::AuthorizationPermissionMismatch,
                    ));
                }
                if let Some(key) = key
                    && !range.contains(key)
                {
                    return Err(ApiError::new(
                        ErrorCode::AuthorizationFailure,
                        "This request is not authorized to perform this operation: the entity is outside \
                         the PartitionKey/RowKey range of the shared access signature.",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The PartitionKey/RowKey range queries must be clipped to, if any.
    pub fn key_range(&self) -> Option<&KeyRange> {
        match self {
            Credential::TableSas { range, .. } if !range.is_unbounded() => Some(range),
            _ => None,
        }
    }
}

/// 403 AuthenticationFailed with Azure's message and `message` as the detail.
pub fn auth_failed(message: impl Into<String>) -> ApiError {
    let default = ErrorCode::AuthenticationFailed.default_message();
    ApiError::new(
        ErrorCode::AuthenticationFailed,
        format!("{default}\n{}", message.into()),
    )
}

/// Everything authentication looks at.
pub struct AuthRequest<'a> {
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub raw_path: &'a str,
    pub path_style: bool,
    pub account: &'a str,
    pub query: &'a [(String, String)],
    pub peer: Option<IpAddr>,
    pub https: bool,
    pub now: DateTime,
}

impl AuthRequest<'_> {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn comp(&self) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == "comp")
            .map(|(_, v)| v.as_str())
    }
}

/// Authenticates a request: SAS if the query has a `sig`, else the `Authorization` header, else anonymous
/// (when allowed).
pub async fn authenticate(
    request: &AuthRequest<'_>,
    accounts: &Accounts,
    config: &GatewayConfig,
    service: &dyn TableService,
) -> ApiResult<Credential> {
    if let Some(params) = SasParams::from_query(request.query) {
        return sas::authenticate(request, accounts, service, &params).await;
    }
    match request.header("authorization") {
        Some(header) => authenticate_shared_key(request, accounts, config, header),
        None if config.allow_anonymous => Ok(Credential::Anonymous),
        None => Err(ApiError::from_code(ErrorCode::NoAuthenticationInformation).with_header(
            "www-authenticate",
            "Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize \
             resource_id=https://storage.azure.com",
        )),
    }
}

/// Checks a signed request's date (`x-ms-date`/`Date`, RFC 1123): it must be within `clock_skew_secs`
/// of `now`, so a captured signature cannot be replayed later. Shared by REST and gRPC signing.
pub fn check_signing_date(date: &str, now: DateTime, clock_skew_secs: u64) -> ApiResult<()> {
    let signed_at = chrono::DateTime::parse_from_rfc2822(date).map_err(|_| {
        auth_failed(format!(
            "The date header {date:?} is not a valid RFC 1123 date."
        ))
    })?;
    let skew = (now.ticks() - DateTime::from_chrono(signed_at.with_timezone(&Utc)).ticks()).abs();
    let window = i64::try_from(clock_skew_secs).unwrap_or(i64::MAX / TICKS_PER_SECOND);
    if skew > window.saturating_mul(TICKS_PER_SECOND) {
        return Err(auth_failed(format!(
            "Request date header too old or too far in the future: {date}."
        )));
    }
    Ok(())
}

fn authenticate_shared_key(
    request: &AuthRequest<'_>,
    accounts: &Accounts,
    config: &GatewayConfig,
    header: &str,
) -> ApiResult<Credential> {
    let auth = shared_key::parse_authorization(header).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidAuthenticationInfo,
            "Authentication information is not given in the correct format. Only SharedKey and \
             SharedKeyLite are supported.",
        )
    })?;
    if auth.account != request.account {
        return Err(auth_failed(format!(
            "The account {} in the Authorization header does not match the account {} in the URL.",
            auth.account, request.account
        )));
    }
    let keys = accounts.keys(request.account)?;
    let date = request
        .header("x-ms-date")
        .or_else(|| request.header("date"))
        .ok_or_else(|| auth_failed("Request date header not specified."))?;
    check_signing_date(date, request.now, config.clock_skew_secs)?;
    let resources = shared_key::canonical_resources(
        request.account,
        request.raw_path,
        request.path_style,
        request.comp(),
    );
    let strings: Vec<String> = match auth.scheme {
        Scheme::SharedKey => {
            let md5 = request.header("content-md5").unwrap_or("");
            let content_type = request.header("content-type").unwrap_or("");
            resources
                .iter()
                .map(|r| shared_key::string_to_sign(request.method, md5, content_type, date, r))
                .collect()
        }
        Scheme::SharedKeyLite => resources
            .iter()
            .map(|r| shared_key::lite_string_to_sign(date, r))
            .collect(),
    };
    if shared_key::verify(keys, &strings, &auth.signature) {
        Ok(Credential::SharedKey)
    } else {
        Err(auth_failed(format!(
            "The MAC signature found in the HTTP request '{}' is not the same as any computed signature. \
             The server used the following string to sign: '{}'.",
            auth.signature,
            strings
                .first()
                .map(String::as_str)
                .unwrap_or("")
                .escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_sas(permissions: &str, range: KeyRange) -> Credential {
        Credential::TableSas {
            table: "Orders".into(),
            permissions: permissions.into(),
            range,
        }
    }

    #[test]
    fn table_sas_checks_table_permissions_and_range() {
        let range = KeyRange {
            start_pk: Some("b".into()),
            end_pk: Some("c".into()),
            ..KeyRange::default()
        };
        let cred = table_sas("ra", range);
        let inside = EntityKey::new("b", "1");
        let outside = EntityKey::new("d", "1");
        assert!(
            cred.authorize(Access::ReadEntity, Some("orders"), Some(&inside))
                .is_ok()
        );
        assert!(
            cred.authorize(Access::InsertEntity, Some("Orders"), Some(&inside))
                .is_ok()
        );
        let code = |r: ApiResult<()>| r.unwrap_err().code;
        assert_eq!(
            code(cred.authorize(Access::ReadEntity, Some("orders"), Some(&outside))),
            ErrorCode::AuthorizationFailure
        );
        assert_eq!(
            code(cred.authorize(Access::DeleteEntity, Some("orders"), Some(&inside))),
            ErrorCode::AuthorizationPermissionMismatch
        );
        assert_eq!(
            code(cred.authorize(Access::UpsertEntity, Some("orders"), Some(&inside))),
            ErrorCode::AuthorizationPermissionMismatch
        );
        assert_eq!(
            code(cred.authorize(Access::ReadEntity, Some("other"), Some(&inside))),
            ErrorCode::AuthorizationFailure
        );
        assert_eq!(
            code(cred.authorize(Access::ListTables, None, None)),
            ErrorCode::AuthorizationFailure
        );
        assert!(cred.key_range().is_some());
    }

    #[test]
    fn account_sas_checks_resource_types_and_permissions() {
        let cred = Credential::AccountSas {
            resource_types: "co".into(),
            permissions: "rlac".into(),
        };
        assert!(cred.authorize(Access::ListTables, None, None).is_ok());
        assert!(cred.authorize(Access::CreateTable, Some("t"), None).is_ok());
        assert!(
            cred.authorize(Access::QueryEntities, Some("t"), None)
                .is_ok()
        );
        let code = |r: ApiResult<()>| r.unwrap_err().code;
        assert_eq!(
            code(cred.authorize(Access::DeleteTable, Some("t"), None)),
            ErrorCode::AuthorizationPermissionMismatch
        );
        assert_eq!(
            code(cred.authorize(Access::UpsertEntity, Some("t"), None)),
            ErrorCode::AuthorizationPermissionMismatch
        );
        assert_eq!(
            code(cred.authorize(Access::ReadServiceProperties, None, None)),
            ErrorCode::AuthorizationResourceTypeMismatch
        );
        assert_eq!(
            code(cred.authorize(Access::TableAcl, Some("t"), None)),
            ErrorCode::AuthorizationFailure
        );
        assert!(
            Credential::SharedKey
                .authorize(Access::TableAcl, Some("t"), None)
                .is_ok()
        );
        assert!(cred.key_range().is_none());
    }
}
