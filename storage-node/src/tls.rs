//! TLS on a node's gRPC port: the public gRPC API, the admin service and all node-to-node traffic (Raft,
//! forwarding, start-up probes) share that port, so one `[tls]` section covers them all.
//!
//! - `cert-file`/`key-file` (PEM): the node's certificate chain and key. With them the port serves
//!   TLS only, and the node connects to its peers over TLS too.
//! - `ca-file` (PEM): what peers' certificates are verified against; by default the node's own
//!   certificate (enough for a cluster sharing one self-signed certificate, as `trestle dev --tls` does).
//!   The node presents its own certificate to peers as a client identity, so mutual TLS works whenever
//!   the peers ask for it.
//! - `require-client-cert`: mutual TLS. The port accepts only clients whose certificate the CA signed,
//!   peers and SDK clients alike (the SDK then needs `ClientConfig::with_tls_identity`).
//! - `server-name`: the name peers' certificates must carry, when it is not the host of their
//!   `grpc-addr` (certificates for IP addresses need an IP SAN).
//!
//! TLS is about the channel; who is calling is still decided by the credentials of each call
//! (`grpc_auth`): account signatures, SAS and the cluster token travel inside the encrypted channel.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use trestle_replication::grpc::PeerTls;

/// The `[tls]` section of a node's configuration (see the module header).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GrpcTlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub require_client_cert: bool,
    pub server_name: Option<String>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl GrpcTlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// The rules: certificate and key together; the other keys only with them.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("[tls] needs both cert-file and key-file".into());
        }
        if !self.enabled()
            && (self.ca_file.is_some() || self.require_client_cert || self.server_name.is_some())
        {
            return Err("[tls] ca-file, require-client-cert and server-name need cert-file".into());
        }
        Ok(())
    }

    fn identity(&self) -> anyhow::Result<Option<Identity>> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(read(cert)?, read(key)?))),
            _ => Ok(None),
        }
    }

    fn ca(&self) -> anyhow::Result<Option<Certificate>> {
        match self.ca_file.as_ref().or(self.cert_file.as_ref()) {
            Some(path) => Ok(Some(Certificate::from_pem(read(path)?))),
            None => Ok(None),
        }
    }

    /// The gRPC server's TLS configuration, if TLS is on.
    pub fn server(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let Some(identity) = self.identity()? else {
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new().identity(identity);
        if self.require_client_cert
            && let Some(ca) = self.ca()?
        {
            config = config.client_ca_root(ca);
        }
        Ok(Some(config))
    }

    /// How this node connects to its peers.
    pub fn peers(&self) -> anyhow::Result<PeerTls> {
        let Some(identity) = self.identity()? else {
            return Ok(PeerTls::plaintext());
        };
        let mut config = ClientTlsConfig::new().identity(identity);
        if let Some(ca) = self.ca()? {
            config = config.ca_certificate(ca);
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(PeerTls::with(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_together_and_only_with_a_certificate() {
        assert!(GrpcTlsConfig::default().validate().is_ok());
        let half = GrpcTlsConfig {
            cert_file: Some("c.pem".into()),
            ..GrpcTlsConfig::default()
        };
        assert!(half.validate().is_err());
        let orphan = GrpcTlsConfig {
            require_client_cert: true,
            ..GrpcTlsConfig::default()
        };
        assert!(orphan.validate().is_err());
        let full = GrpcTlsConfig {
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            require_client_cert: true,
            ..GrpcTlsConfig::default()
        };
        assert!(full.validate().is_ok());
    }

    #[test]
    fn missing_files_are_reported_and_plaintext_needs_none() {
        assert!(GrpcTlsConfig::default().server().unwrap().is_none());
        assert!(!GrpcTlsConfig::default().peers().unwrap().is_tls());
        let missing = GrpcTlsConfig {
            cert_file: Some("/nonexistent/c.pem".into()),
            key_file: Some("/nonexistent/k.pem".into()),
            ..GrpcTlsConfig::default()
        };
        let err = missing.server().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }
}
