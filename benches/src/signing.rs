//! Table service Shared Key signing, as the Azure SDKs do it, so one harness drives Trestle and Azurite.
//!
//! `StringToSign = VERB \n Content-MD5 \n Content-Type \n Date \n CanonicalizedResource`, HMAC-SHA256 under
//! the base64-decoded account key, base64-encoded, sent as `Authorization: SharedKey {account}:{sig}`.
//!
//! - `Date` is the value of the `x-ms-date` header (the harness always sends one, RFC 1123).
//! - `CanonicalizedResource` is `/{account}{path}` where `path` is the URL path exactly as sent
//!   (percent-encoded), plus `?comp={value}` when the query has a `comp` parameter (never, for the
//!   requests the harness makes). For path-style emulator URLs (`http://127.0.0.1:10002/devstoreaccount1/..`)
//!   the path already starts with the account, so the resource is `/devstoreaccount1/devstoreaccount1/..`:
//!   this is what `azure-data-tables` (Python) signs (`"/" + account + urlparse(url).path`), and what
//!   Azurite and Trestle both accept.
//!
//! This is deliberately a separate, small implementation: the harness must not link the server's own signer,
//! or a shared bug would go unnoticed. The unit tests pin it to vectors computed with Python's `hmac`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The well-known key of the development account `devstoreaccount1` (Azurite's and `trestle dev`'s).
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The development account's name.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the account key is not valid base64: {0}")]
    BadKey(String),
}

/// An account name and its decoded key; signs requests.
#[derive(Clone)]
pub struct SharedKey {
    account: String,
    /// The HMAC state after absorbing the key, cloned per signature (saves re-deriving the key pads).
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKey")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKey {
    /// `key_base64` is the account key as Azure shows it (base64).
    pub fn new(account: &str, key_base64: &str) -> Result<SharedKey, SigningError> {
        let key = STANDARD
            .decode(key_base64.trim())
            .map_err(|e| SigningError::BadKey(e.to_string()))?;
        // HMAC takes keys of any length; the error arm cannot happen but costs nothing to report.
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|e| SigningError::BadKey(e.to_string()))?;
        Ok(SharedKey {
            account: account.to_string(),
            mac,
        })
    }

    /// The development account with its well-known key.
    pub fn dev() -> Result<SharedKey, SigningError> {
        SharedKey::new(DEV_ACCOUNT, DEV_ACCOUNT_KEY)
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The base64 HMAC-SHA256 of `string_to_sign`.
    pub fn sign(&self, string_to_sign: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(string_to_sign.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// The `Authorization` header value for a request. `path` is the URL path as sent, percent-encoded
    /// (`/devstoreaccount1/bench(PartitionKey='p1',RowKey='r1')`); `query` is the raw query string
    /// without `?`, consulted only for `comp`.
    pub fn authorization(
        &self,
        verb: &str,
        content_type: &str,
        date: &str,
        path: &str,
        query: Option<&str>,
    ) -> String {
        let sts = string_to_sign(
            verb,
            "",
            content_type,
            date,
            &canonical_resource(&self.account, path, query),
        );
        format!("SharedKey {}:{}", self.account, self.sign(&sts))
    }
}

/// `VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedResource`.
pub fn string_to_sign(
    verb: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    resource: &str,
) -> String {
    format!("{verb}\n{content_md5}\n{content_type}\n{date}\n{resource}")
}

/// `/{account}{path}`, plus `?comp=..` when the query names one.
pub fn canonical_resource(account: &str, path: &str, query: Option<&str>) -> String {
    let comp = query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "comp")
            .map(|(_, v)| v)
    });
    match comp {
        Some(c) => format!("/{account}{path}?comp={c}"),
        None => format!("/{account}{path}"),
    }
}

/// An RFC 1123 date for `x-ms-date`, e.g. `Tue, 02 Jan 2024 03:04:05 GMT`.
pub fn http_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    // Vectors computed independently with Python:
    //   base64.b64encode(hmac.new(base64.b64decode(KEY), sts.encode(), hashlib.sha256).digest())

    #[test]
    fn list_tables_vector_matches_python() {
        let key = SharedKey::dev().unwrap();
        let sts = string_to_sign(
            "GET",
            "",
            "",
            "Mon, 01 Jan 2024 00:00:00 GMT",
            &canonical_resource(DEV_ACCOUNT, "/devstoreaccount1/Tables", None),
        );
        assert_eq!(
            sts,
            "GET\n\n\nMon, 01 Jan 2024 00:00:00 GMT\n/devstoreaccount1/devstoreaccount1/Tables"
        );
        assert_eq!(
            key.sign(&sts),
            "xTTIoWBK7u+nSgfft7uKiDmecLL9GEiBUE4qVj03gko="
        );
    }

    #[test]
    fn insert_and_point_read_headers_match_python() {
        let key = SharedKey::dev().unwrap();
        let date = http_date(chrono::Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap());
        assert_eq!(date, "Tue, 02 Jan 2024 03:04:05 GMT");
        assert_eq!(
            key.authorization(
                "POST",
                "application/json",
                &date,
                "/devstoreaccount1/bench",
                None
            ),
            "SharedKey devstoreaccount1://Nxhx8IvGCfJOMf9AQDnCDbWGU9L+upfml+nvvvQks="
        );
        // The path is signed as sent: percent-encoded.
        assert_eq!(
            key.authorization(
                "GET",
                "",
                &date,
                "/devstoreaccount1/bench(PartitionKey='p%20001',RowKey='r1')",
                Some("$select=Data"),
            ),
            "SharedKey devstoreaccount1:ecDee/dNaI4zE1wrnI9wVynqtkLWhwih5agSDyqzA9E="
        );
    }

    #[test]
    fn comp_is_the_only_query_parameter_signed() {
        assert_eq!(
            canonical_resource("acct", "/acct/t", Some("a=1&comp=acl&b=2")),
            "/acct/acct/t?comp=acl"
        );
        assert_eq!(
            canonical_resource("acct", "/acct/t()", Some("$filter=x")),
            "/acct/acct/t()"
        );
    }

    #[test]
    fn a_bad_key_is_an_error_not_a_panic() {
        assert!(SharedKey::new("a", "not base64!").is_err());
        // Signing is deterministic and independent of earlier signatures (the HMAC state is cloned).
        let key = SharedKey::dev().unwrap();
        assert_eq!(key.sign("x"), key.sign("x"));
    }
}
