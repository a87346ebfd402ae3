//! How the SDK proves who it is: an account key (every call signed, as Shared Key signs REST calls) or a
//! shared access signature, taken from code or from an Azure-style connection string.
//!
//! Every attempt of every call is signed afresh (`trestle_proto::auth::sign_request`): the signature
//! covers the method, the account, the date and the request message, and the node accepts it only
//! within its clock-skew window (15 minutes by default), so a retry an hour later still verifies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use trestle_proto::auth;

use crate::error::{Error, Result};

/// The account of `UseDevelopmentStorage=true`.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The well-known (public) key of [`DEV_ACCOUNT`].
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// What a client presents on each call.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// None: only a node configured with `allow-anonymous` (tests) accepts such calls.
    #[default]
    None,
    /// An account key: every call is signed with it.
    SharedKey { account: String, key: Vec<u8> },
    /// A shared access signature (query-string form, as REST takes it), for `account`.
    Sas { account: String, token: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::SharedKey { account, .. } => f
                .debug_struct("SharedKey")
                .field("account", account)
                .field("key", &"<redacted>")
                .finish(),
            Credentials::Sas { account, .. } => f
                .debug_struct("Sas")
                .field("account", account)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl Credentials {
    /// An account name and its base64 key (as the Azure portal and `trestle dev` show it).
    pub fn shared_key(account: impl Into<String>, key_base64: &str) -> Result<Credentials> {
        let key = STANDARD
            .decode(key_base64.trim())
            .map_err(|_| Error::InvalidArgument("the account key is not valid base64".into()))?;
        if key.is_empty() {
            return Err(Error::InvalidArgument("the account key is empty".into()));
        }
        Ok(Credentials::SharedKey {
            account: account.into(),
            key,
        })
    }

    /// A SAS token (with or without its leading `?`) for `account`.
    pub fn sas(account: impl Into<String>, token: &str) -> Credentials {
        Credentials::Sas {
            account: account.into(),
            token: token.trim_start_matches('?').to_string(),
        }
    }

    /// The development account with its well-known key.
    pub fn development() -> Credentials {
        Credentials::SharedKey {
            account: DEV_ACCOUNT.into(),
            key: STANDARD.decode(DEV_ACCOUNT_KEY).unwrap_or_default(),
        }
    }

    /// Parses an Azure storage connection string: `AccountName=…;AccountKey=…` (signed calls),
    /// `AccountName=…;SharedAccessSignature=…` (SAS), or `UseDevelopmentStorage=true`. Endpoints in it
    /// are REST endpoints and are ignored: the gRPC endpoints are given to `TableClient::connect`.
    pub fn from_connection_string(text: &str) -> Result<Credentials> {
        let mut account = None;
        let mut key = None;
        let mut sas = None;
        let mut development = false;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                Error::InvalidArgument(format!("connection string part {part:?} is not Name=Value"))
            })?;
            match name.to_ascii_lowercase().as_str() {
                "accountname" => account = Some(value.to_string()),
                "accountkey" => key = Some(value.to_string()),
                "sharedaccesssignature" => sas = Some(value.to_string()),
                "usedevelopmentstorage" => development = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if development {
            return Ok(Credentials::development());
        }
        let account = account.ok_or_else(|| {
            Error::InvalidArgument("the connection string names no AccountName".into())
        })?;
        match (key, sas) {
            (Some(key), _) => Credentials::shared_key(account, &key),
            (None, Some(sas)) => Ok(Credentials::sas(account, &sas)),
            (None, None) => Err(Error::InvalidArgument(
                "the connection string has neither AccountKey nor SharedAccessSignature".into(),
            )),
        }
    }

    /// The account these credentials belong to.
    pub fn account(&self) -> Option<&str> {
        match self {
            Credentials::None => None,
            Credentials::SharedKey { account, .. } | Credentials::Sas { account, .. } => {
                Some(account)
            }
        }
    }

    /// `msg` as a request of `method` acting in `account`, with these credentials attached.
    pub(crate) fn request<T: prost::Message>(
        &self,
        method: &str,
        account: &str,
        msg: T,
    ) -> tonic::Request<T> {
        let mut request = tonic::Request::new(msg);
        match self {
            Credentials::None => {}
            Credentials::SharedKey { key, .. } => {
                let date = auth::http_date(chrono::Utc::now());
                auth::sign_request(&mut request, method, account, key, &date);
            }
            Credentials::Sas { token, .. } => auth::attach_sas(&mut request, token),
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_give_keys_sas_or_the_development_account() {
        let c = Credentials::from_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={DEV_ACCOUNT_KEY};\
             TableEndpoint=http://127.0.0.1:10002/acct;"
        ))
        .unwrap();
        assert!(
            matches!(&c, Credentials::SharedKey { account, key } if account == "acct" && key.len() == 64)
        );
        let c = Credentials::from_connection_string(
            "AccountName=acct;SharedAccessSignature=?sv=1&sig=x",
        )
        .unwrap();
        assert_eq!(c, Credentials::sas("acct", "sv=1&sig=x"));
        assert_eq!(
            Credentials::from_connection_string("UseDevelopmentStorage=true").unwrap(),
            Credentials::development()
        );
        for bad in [
            "AccountKey=abc",
            "AccountName=acct",
            "AccountName=acct;AccountKey=not base64!",
            "garbage",
        ] {
            assert!(Credentials::from_connection_string(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let shown = format!("{:?}", Credentials::development());
        assert!(!shown.contains("Eby8"), "{shown}");
        let shown = format!("{:?}", Credentials::sas("acct", "sig=secret"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
