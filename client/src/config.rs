//! The SDK's knobs: the account, the per-call deadline, backoff, connection and routing-cache timing.
//!
//! A client is configured in code (`ClientConfig::default().with_deadline(..)`), not from a file, so this
//! is a plain struct with builder methods and a [`ClientConfig::validate`] that [`crate::TableClient`]
//! runs when it is built.

use std::time::Duration;

use crate::credentials::Credentials;
use crate::error::{Error, Result};

/// How a [`crate::TableClient`] talks to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The storage account; empty means the credentials' account, or with no credentials the node's
    /// default account (`devstoreaccount1`).
    pub account: String,
    /// What every call presents: an account key or a SAS. Default none (only nodes configured with
    /// `allow-anonymous` accept that).
    pub credentials: Credentials,
    /// The total time one call may take, retries included. Default 10 s.
    pub deadline: Duration,
    /// The first retry's backoff ceiling; it doubles per retry. Default 20 ms.
    pub backoff_initial: Duration,
    /// The largest backoff between two attempts. Default 1 s.
    pub backoff_max: Duration,
    /// How long to wait for a TCP connection to a node. Default 2 s.
    pub connect_timeout: Duration,
    /// How long a learned leader address is trusted before it is looked up again. Default 30 s.
    pub route_ttl: Duration,
    /// How long the absence of a leader hint is remembered (after a failed lookup, or after the hinted
    /// node could not be reached), so a table without a known leader does not cost a lookup per call.
    /// Default 2 s.
    pub negative_route_ttl: Duration,
    /// Ask a node (`Admin.Locate`) where a table's leader is before the first call on it, instead of
    /// waiting to be redirected. Default true.
    pub locate: bool,
    /// The largest message the client sends or accepts. Default 64 MiB (a batch may echo 100 entities).
    pub max_message_bytes: usize,
    /// How long one attempt of a read may wait for its node before the read tries another (a paused
    /// node keeps its connections open and never answers). Writes wait up to the deadline. Default 3 s.
    pub attempt_timeout: Duration,
    /// TLS for `https://` endpoints.
    pub tls: TlsSettings,
}

/// What a client trusts and presents on `https://` endpoints.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// PEM certificates to trust (the cluster's CA, or `trestle dev --tls`'s certificate); none: the
    /// public web roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM certificate and key to present, for clusters that require client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the nodes' certificates must carry, when it is not the endpoint's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("domain", &self.domain)
            .finish()
    }
}

impl TlsSettings {
    pub(crate) fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            account: String::new(),
            credentials: Credentials::None,
            deadline: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            route_ttl: Duration::from_secs(30),
            negative_route_ttl: Duration::from_secs(2),
            locate: true,
            max_message_bytes: 64 * 1024 * 1024,
            attempt_timeout: Duration::from_secs(3),
            tls: TlsSettings::default(),
        }
    }
}

impl ClientConfig {
    /// Fast timings for tests against in-process servers.
    pub fn for_test() -> Self {
        ClientConfig {
            deadline: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        }
    }

    pub fn with_account(mut self, account: impl Into<String>) -> Self {
        self.account = account.into();
        self
    }

    /// Trust these PEM certificates on `https://` endpoints (instead of the public web roots).
    pub fn with_tls_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// Present this PEM certificate and key (clusters with `require-client-cert`).
    pub fn with_tls_identity(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls.identity = Some((cert.into(), key.into()));
        self
    }

    /// Calls present `credentials` (see [`Credentials::from_connection_string`]).
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn with_locate(mut self, locate: bool) -> Self {
        self.locate = locate;
        self
    }

    /// Checks that the timings make sense together.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.deadline.is_zero() {
            return fail("deadline must be positive");
        }
        if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            return fail("backoff-initial must be positive and at most backoff-max");
        }
        if self.connect_timeout.is_zero() {
            return fail("connect-timeout must be positive");
        }
        if self.attempt_timeout.is_zero() {
            return fail("attempt-timeout must be positive");
        }
        if self.max_message_bytes < 4 * 1024 * 1024 {
            return fail("max-message-bytes must be at least 4 MiB (one page of a query)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_config_are_valid() {
        ClientConfig::default().validate().unwrap();
        ClientConfig::for_test().validate().unwrap();
        assert_eq!(ClientConfig::default().deadline, Duration::from_secs(10));
    }

    #[test]
    fn nonsense_is_rejected() {
        let zero = ClientConfig::default().with_deadline(Duration::ZERO);
        assert!(matches!(zero.validate(), Err(Error::InvalidArgument(_))));
        let inverted =
            ClientConfig::default().with_backoff(Duration::from_secs(2), Duration::from_millis(10));
        assert!(inverted.validate().is_err());
        let tiny = ClientConfig {
            max_message_bytes: 1024,
            ..ClientConfig::default()
        };
        assert!(tiny.validate().is_err());
    }
}
