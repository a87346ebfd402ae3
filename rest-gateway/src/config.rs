//! The gateway's configuration: which storage accounts exist (and their keys), request limits, the
//! clock-skew window for signed requests, and CORS rules used when an account has stored none.
//!
//! Invariants after [`GatewayConfig::validate`] succeeds: at least one account; every account name is
//! unique and follows Azure's rules (3–24 lowercase letters and digits); every account has one or two
//! keys, each valid non-empty base64; the body limit is positive; CORS rules are well formed. The router
//! never re-checks these; an invalid key that slipped through simply never matches a signature.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::cors::CorsRule;

/// The well-known development account that Azurite and the Azure SDKs' `UseDevelopmentStorage=true` use.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";

/// The well-known (public, not secret) key of [`DEV_ACCOUNT`].
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `x-ms-version` the gateway answers with when the request names none.
pub const DEFAULT_API_VERSION: &str = "2019-02-02";

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
}
