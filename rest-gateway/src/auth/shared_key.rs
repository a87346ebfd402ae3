//! Shared Key and Shared Key Lite, Table flavour.
//!
//! - Shared Key: `StringToSign = VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedResource`
//! - Shared Key Lite: `StringToSign = Date\nCanonicalizedResource`
//!
//! where `Date` is `x-ms-date` when present (else the `Date` header), and `CanonicalizedResource` is
//! `/{account}{path}` plus `?comp=<value>` when the URL has a `comp` parameter. With path-style (emulator)
//! URLs the path already starts with the account, so the signed resource is `/{account}/{account}/...`
//! — this is what the Python, .NET and JS SDKs sign for `http://127.0.0.1:10002/devstoreaccount1/...`.
//! Clients differ in whether the path is signed percent-encoded or decoded, and hand-written signers
//! sometimes sign the Azure form without the path-style account segment, so the verifier accepts any of
//! those canonical forms; each still requires the account key.
//!
//! Signatures are compared in constant time (`trestle_types::signing`) against every key of the account, so either key
//! of a pair authenticates while the other is being rotated.

use percent_encoding::percent_decode_str;

/// Which Shared Key scheme an `Authorization` header uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    SharedKey,
    SharedKeyLite,
}

/// A parsed `Authorization: SharedKey account:signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub scheme: Scheme,
    pub account: String,
    pub signature: String,
}

/// Parses an `Authorization` header of either Shared Key scheme.
pub fn parse_authorization(header: &str) -> Option<Authorization> {
    let (scheme, credentials) = header.trim().split_once(' ')?;
    let scheme = match scheme {
        "SharedKey" => Scheme::SharedKey,
        "SharedKeyLite" => Scheme::SharedKeyLite,
        _ => return None,
    };
    let (account, signature) = credentials.trim().split_once(':')?;
    Some(Authorization {
        scheme,
        account: account.to_string(),
        signature: signature.to_string(),
    })
}

pub use trestle_types::signing::{sign, verify};

/// The Shared Key string to sign.
pub fn string_to_sign(
    verb: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    resource: &str,
) -> String {
    format!("{verb}\n{content_md5}\n{content_type}\n{date}\n{resource}")
}

/// The Shared Key Lite string to sign.
pub fn lite_string_to_sign(date: &str, resource: &str) -> String {
    format!("{date}\n{resource}")
}

/// Every canonicalized resource the gateway accepts for a request: the raw and the percent-decoded path,
/// each with and (for path-style URLs) without the account segment.
pub fn canonical_resources(
    account: &str,
    raw_path: &str,
    path_style: bool,
    comp: Option<&str>,
) -> Vec<String> {
    let suffix = comp.map(|c| format!("?comp={c}")).unwrap_or_default();
    let decoded = percent_decode_str(raw_path)
        .decode_utf8_lossy()
        .into_owned();
    let mut paths = vec![raw_path.to_string()];
    if decoded != raw_path {
        paths.push(decoded);
    }
    if path_style {
        let stripped: Vec<String> = paths
            .iter()
            .filter_map(|p| {
                let rest = p.strip_prefix('/')?;
                let (_, after) = rest.split_once('/').unwrap_or((rest, ""));
                Some(format!("/{after}"))
            })
            .collect();
        paths.extend(stripped);
    }
    let mut out: Vec<String> = paths
        .into_iter()
        .map(|p| format!("/{account}{p}{suffix}"))
        .collect();
    out.dedup();
    out
}

/// Builds an `Authorization` header value for a request, as an SDK would. Used by tests and tools;
/// `resource` is the canonicalized resource (see [`canonical_resources`]).
pub fn authorization_header(
    scheme: Scheme,
    account: &str,
    key: &[u8],
    verb: &str,
    content_type: &str,
    date: &str,
    resource: &str,
) -> String {
    match scheme {
        Scheme::SharedKey => {
            let sig = sign(key, &string_to_sign(verb, "", content_type, date, resource));
            format!("SharedKey {account}:{sig}")
        }
        Scheme::SharedKeyLite => {
            let sig = sign(key, &lite_string_to_sign(date, resource));
            format!("SharedKeyLite {account}:{sig}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEV_ACCOUNT_KEY;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn dev_key() -> Vec<u8> {
        STANDARD.decode(DEV_ACCOUNT_KEY).unwrap()
    }

    #[test]
    fn known_vector_for_the_dev_account() {
        // Computed independently with Python's hmac module, exactly as azure-data-tables signs
        // GET http://127.0.0.1:10002/devstoreaccount1/Tables.
        let sts = string_to_sign(
            "GET",
            "",
            "",
            "Mon, 01 Jan 2024 00:00:00 GMT",
            "/devstoreaccount1/devstoreaccount1/Tables",
        );
        assert_eq!(
            sts,
            "GET\n\n\nMon, 01 Jan 2024 00:00:00 GMT\n/devstoreaccount1/devstoreaccount1/Tables"
        );
        assert_eq!(sign(&dev_key(), &sts), KNOWN_SIGNATURE);
    }

    const KNOWN_SIGNATURE: &str = "xTTIoWBK7u+nSgfft7uKiDmecLL9GEiBUE4qVj03gko=";

    #[test]
    fn verify_accepts_either_key_and_rejects_others() {
        let keys = vec![b"first".to_vec(), dev_key()];
        let sts = vec!["a".to_string(), "b".to_string()];
        assert!(verify(&keys, &sts, &sign(&dev_key(), "b")));
        assert!(verify(&keys, &sts, &sign(b"first", "a")));
        assert!(!verify(&keys, &sts, &sign(b"other", "a")));
        assert!(!verify(&keys, &sts, ""));
        assert!(!verify(&[], &sts, &sign(b"first", "a")));
    }

    #[test]
    fn canonical_resources_cover_sdk_forms() {
        let forms = canonical_resources(
            "devstoreaccount1",
            "/devstoreaccount1/t1(PartitionKey='a%20b',RowKey='')",
            true,
            None,
        );
        assert!(forms.contains(
            &"/devstoreaccount1/devstoreaccount1/t1(PartitionKey='a%20b',RowKey='')".to_string()
        ));
        assert!(forms.contains(
            &"/devstoreaccount1/devstoreaccount1/t1(PartitionKey='a b',RowKey='')".to_string()
        ));
        assert!(forms.contains(&"/devstoreaccount1/t1(PartitionKey='a b',RowKey='')".to_string()));
        let acl = canonical_resources("acct", "/t1", false, Some("acl"));
        assert_eq!(acl, vec!["/acct/t1?comp=acl".to_string()]);
    }

    #[test]
    fn authorization_headers_parse_back() {
        let header = authorization_header(
            Scheme::SharedKeyLite,
            "acct",
            b"k",
            "GET",
            "",
            "d",
            "/acct/t",
        );
        let parsed = parse_authorization(&header).unwrap();
        assert_eq!(parsed.scheme, Scheme::SharedKeyLite);
        assert_eq!(parsed.account, "acct");
        assert_eq!(parsed.signature, sign(b"k", "d\n/acct/t"));
        assert_eq!(parse_authorization("Bearer abc"), None);
        assert_eq!(parse_authorization("SharedKey nocolon"), None);
    }
}
