//! The gateway's configuration: which storage accounts exist (and their keys), request limits, the
//! clock-skew window for signed requests, CORS rules used when an account has stored none, and the
//! connection limits and TLS files the [`listener`](crate::listener) enforces.
//!
//! Invariants after [`GatewayConfig::validate`] succeeds: at least one account; every account name is
//! unique and follows Azure's rules (3–24 lowercase letters and digits); every account has one or two
//! keys, each valid non-empty base64; the body limit is positive; CORS rules are well formed; every
//! timeout and connection limit is positive; the header limit is within 1 KiB..=1 MiB; the TLS
//! certificate and key are both set or both unset. The router never re-checks these; an invalid key that
//! slipped through simply never matches a signature.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cors::CorsRule;

/// The well-known development account that Azurite and the Azure SDKs' `UseDevelopmentStorage=true` use.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";

/// The well-known (public, not secret) key of [`DEV_ACCOUNT`].
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `x-ms-version` the gateway answers with when the request names none.
pub const DEFAULT_API_VERSION: &str = "2019-02-02";

/// Every published Azure Storage service version, newest first. A request naming another `x-ms-version`
/// gets 400 `InvalidHeaderValue`, as Azure answers an unknown version (azure-sdk-for-net#45302 records
/// the real service refusing `2024-08-04` before its release: "The value for one of the HTTP headers is
/// not in the correct format", HeaderName `x-ms-version`); Azurite keeps the same kind of list
/// (`ValidAPIVersions`). A known version is echoed as sent.
pub const KNOWN_API_VERSIONS: &[&str] = &[
    "2026-06-06",
    "2026-04-06",
    "2026-02-06",
    "2025-11-05",
    "2025-07-05",
    "2025-05-05",
    "2025-01-05",
    "2024-11-04",
    "2024-08-04",
    "2024-05-04",
    "2024-02-04",
    "2023-11-03",
    "2023-08-03",
    "2023-05-03",
    "2023-01-03",
    "2022-11-02",
    "2021-12-02",
    "2021-10-04",
    "2021-08-06",
    "2021-06-08",
    "2021-04-10",
    "2021-02-12",
    "2020-12-06",
    "2020-10-02",
    "2020-08-04",
    "2020-06-12",
    "2020-04-08",
    "2020-02-10",
    "2019-12-12",
    "2019-10-10",
    "2019-07-07",
    "2019-02-02",
    "2018-11-09",
    "2018-03-28",
    "2017-11-09",
    "2017-07-29",
    "2017-04-17",
    "2016-05-31",
    "2015-12-11",
    "2015-07-08",
    "2015-04-05",
    "2015-02-21",
    "2014-02-14",
    "2013-08-15",
    "2012-02-12",
    "2011-08-18",
    "2009-09-19",
    "2009-07-17",
    "2009-04-14",
];

/// A configuration that failed [`GatewayConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rest-gateway configuration: {0}")]
pub struct ConfigError(pub String);

/// The REST gateway's configuration (the `[rest-gateway]` section of a node's TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatewayConfig {
    /// Storage accounts served, with their Shared Key secrets.
    pub accounts: Vec<AccountConfig>,
    /// The largest request body accepted (Azure: 4 MiB); larger bodies get 413 RequestBodyTooLarge.
    pub max_body_bytes: usize,
    /// How far `x-ms-date`/`Date` of a Shared Key request may be from the server clock (Azure: 15 min).
    pub clock_skew_secs: u64,
    /// Serve requests that carry no credentials. Azure never does for tables; keep it off outside tests.
    pub allow_anonymous: bool,
    /// CORS rules applied to accounts whose service properties (set through the REST API) have none.
    pub default_cors: Vec<CorsRule>,
    /// Trust `X-Forwarded-Proto: https` from a TLS-terminating proxy when checking a SAS's `spr=https`.
    pub trust_forwarded_proto: bool,
    /// PEM certificate chain for HTTPS (like Azurite's `--cert`). With `tls-key-file` set too, the REST
    /// port serves HTTPS only. Default: unset (plain HTTP).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching `tls-cert-file` (Azurite's `--key`). Default: unset.
    pub tls_key_file: Option<PathBuf>,
    /// Time allowed for a request's line and headers to arrive, from their first byte (for a
    /// connection's first request, from the accept; also the TLS handshake's limit); a slower client is
    /// disconnected without an answer, as HTTP.sys does on its HeaderWait timer. Default: 10 s.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request in flight for this long is closed (HTTP.sys's
    /// IdleConnection timer, whose default is 2 minutes). Default: 120 s.
    pub idle_timeout_secs: u64,
    /// Longest pause allowed while a request body is being read; after it the connection is closed
    /// without an answer, as HTTP.sys does on its EntityBody timer. Default: 10 s.
    pub body_read_timeout_secs: u64,
    /// A request still unanswered after this long gets 500 `OperationTimedOut` (Azure's table server
    /// timeout is at most 30 s). Default: 30 s.
    pub request_timeout_secs: u64,
    /// Connections served at once by this node; beyond it a new connection is answered 503 `ServerBusy`
    /// and closed. Default: 4096.
    pub max_connections: usize,
    /// Largest request line plus headers accepted; larger ones get HTTP.sys's 400 "The size of the request
    /// headers is too long" (its MaxRequestBytes default is 16 KiB). Default: 16384.
    pub max_header_bytes: usize,
}

/// One storage account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AccountConfig {
    pub name: String,
    /// One or two base64 keys (Azure's key1/key2, so keys can be rotated without downtime).
    pub keys: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            accounts: vec![AccountConfig::dev()],
            max_body_bytes: trestle_types::limits::MAX_REQUEST_BYTES,
            clock_skew_secs: 15 * 60,
            allow_anonymous: false,
            default_cors: Vec::new(),
            trust_forwarded_proto: false,
            tls_cert_file: None,
            tls_key_file: None,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 120,
            body_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 4096,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl AccountConfig {
    /// `devstoreaccount1` with its well-known key.
    pub fn dev() -> Self {
        AccountConfig {
            name: DEV_ACCOUNT.to_string(),
            keys: vec![DEV_ACCOUNT_KEY.to_string()],
        }
    }

    /// The keys decoded from base64; keys that do not decode are left out.
    pub fn decoded_keys(&self) -> Vec<Vec<u8>> {
        self.keys
            .iter()
            .filter_map(|k| STANDARD.decode(k.trim()).ok())
            .collect()
    }
}

impl GatewayConfig {
    /// The configuration tests use: the development account, Azure's limits.
    pub fn for_test() -> Self {
        GatewayConfig::default()
    }

    /// Checks every rule listed in the module header.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.accounts.is_empty() {
            return Err(ConfigError("at least one account is required".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for account in &self.accounts {
            let name = &account.name;
            let name_ok = (3..=24).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !name_ok {
                return Err(ConfigError(format!(
                    "account name {name:?} must be 3 to 24 lowercase letters and digits"
                )));
            }
            if !seen.insert(name.as_str()) {
                return Err(ConfigError(format!("account {name:?} is listed twice")));
            }
            if !(1..=2).contains(&account.keys.len()) {
                return Err(ConfigError(format!(
                    "account {name:?} must have one or two keys"
                )));
            }
            for key in &account.keys {
                match STANDARD.decode(key.trim()) {
                    Ok(bytes) if !bytes.is_empty() => {}
                    _ => {
                        return Err(ConfigError(format!(
                            "a key of account {name:?} is not base64"
                        )));
                    }
                }
            }
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError("max-body-bytes must be positive".into()));
        }
        if self.clock_skew_secs == 0 {
            return Err(ConfigError("clock-skew-secs must be positive".into()));
        }
        if self.default_cors.len() > crate::cors::MAX_CORS_RULES {
            return Err(ConfigError("at most 5 default CORS rules".into()));
        }
        for rule in &self.default_cors {
            rule.validate()
                .map_err(|e| ConfigError(format!("default-cors: {e}")))?;
        }
        for (name, value) in [
            ("header-read-timeout-secs", self.header_read_timeout_secs),
            ("idle-timeout-secs", self.idle_timeout_secs),
            ("body-read-timeout-secs", self.body_read_timeout_secs),
            ("request-timeout-secs", self.request_timeout_secs),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive")));
            }
        }
        if self.max_connections == 0 || self.max_connections > u32::MAX as usize {
            return Err(ConfigError("max-connections must be positive".into()));
        }
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(ConfigError(
                "max-header-bytes must be between 1024 and 1048576".into(),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError(
                "tls-cert-file and tls-key-file must be set together".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_dev_account_and_valid() {
        let config = GatewayConfig::for_test();
        assert_eq!(config.accounts[0].name, DEV_ACCOUNT);
        assert_eq!(config.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(config.clock_skew_secs, 900);
        assert!(!config.allow_anonymous);
        assert!(config.validate().is_ok());
        assert_eq!(config.accounts[0].decoded_keys()[0].len(), 64);
    }

    #[test]
    fn validate_rejects_bad_accounts() {
        let mut config = GatewayConfig::for_test();
        config.accounts.push(AccountConfig {
            name: "Bad-Name".into(),
            keys: vec![DEV_ACCOUNT_KEY.into()],
        });
        assert!(config.validate().is_err());

        let mut config = GatewayConfig::for_test();
        config.accounts[0].keys = vec!["not base64!".into()];
        assert!(config.validate().is_err());

        let mut config = GatewayConfig::for_test();
        config.accounts[0].keys = vec![DEV_ACCOUNT_KEY.into(); 3];
        assert!(config.validate().is_err());

        let mut config = GatewayConfig::for_test();
        config.accounts.push(AccountConfig::dev());
        assert!(config.validate().is_err());

        let config = GatewayConfig {
            accounts: vec![],
            ..GatewayConfig::for_test()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn deserializes_kebab_case_and_rejects_unknown_fields() {
        let json = r#"{"accounts":[{"name":"acct1","keys":["AAAA"]}],"max-body-bytes":1024}"#;
        let config: GatewayConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.accounts[0].name, "acct1");
        assert_eq!(config.max_body_bytes, 1024);
        assert_eq!(config.clock_skew_secs, 900);
        assert!(config.validate().is_ok());
        assert!(serde_json::from_str::<GatewayConfig>(r#"{"no-such-field":1}"#).is_err());
    }

    #[test]
    fn connection_limits_have_defaults_and_are_validated() {
        let config: GatewayConfig = serde_json::from_str(
            r#"{"header-read-timeout-secs":2,"max-connections":8,"tls-cert-file":"c.pem","tls-key-file":"k.pem"}"#,
        )
        .unwrap();
        assert_eq!(config.header_read_timeout_secs, 2);
        assert_eq!(config.max_connections, 8);
        assert_eq!(config.idle_timeout_secs, 120);
        assert_eq!(config.body_read_timeout_secs, 10);
        assert_eq!(config.request_timeout_secs, 30);
        assert_eq!(config.max_header_bytes, 16384);
        assert_eq!(config.tls_key_file, Some(PathBuf::from("k.pem")));
        assert!(config.validate().is_ok());

        let bad = [
            GatewayConfig {
                request_timeout_secs: 0,
                ..GatewayConfig::for_test()
            },
            GatewayConfig {
                max_connections: 0,
                ..GatewayConfig::for_test()
            },
            GatewayConfig {
                max_header_bytes: 100,
                ..GatewayConfig::for_test()
            },
            GatewayConfig {
                tls_cert_file: Some("c.pem".into()),
                ..GatewayConfig::for_test()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
