//! TLS for `https://` REST targets: a rustls client configuration (ring provider, the server's own TLS
//! stack) that trusts the certificates of one PEM file, `--ca-file`, e.g. the self-signed certificate
//! `trestle dev --tls` writes to `<data>/tls/dev-cert.pem`.
//!
//! The handshake happens once per worker connection ([`crate::rest`] keeps connections alive), so what
//! a run measures is the steady state of TLS: record encryption and decryption (AES-GCM or ChaCha20),
//! not handshakes. Session resumption is rustls's default and only matters after a reconnect.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// How a worker wraps its TCP connection to an `https://` endpoint.
#[derive(Clone)]
pub struct ClientTls {
    pub connector: TlsConnector,
    /// The name the server's certificate must carry: the URL's host (a DNS name or an IP address).
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// TLS to `authority` (`host:port`), trusting the certificates in `ca_file`; offers HTTP/1.1 only
    /// over ALPN, as the REST port serves nothing else.
    pub fn new(authority: &str, ca_file: &Path) -> anyhow::Result<ClientTls> {
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("reading {}", ca_file.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", ca_file.display()))?;
        if certs.is_empty() {
            bail!("{}: no PEM certificate in the file", ca_file.display());
        }
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("{}: not a usable certificate", ca_file.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: server_name(authority)?,
        })
    }
}

/// The host of `host:port` (`[v6]:port` too) as a TLS server name.
pub fn server_name(authority: &str) -> anyhow::Result<ServerName<'static>> {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| anyhow!("{host} is not a TLS server name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_the_host_without_the_port() {
        let ip = |s: &str| ServerName::IpAddress(s.parse::<std::net::IpAddr>().unwrap().into());
        assert_eq!(server_name("127.0.0.1:10002").unwrap(), ip("127.0.0.1"));
        assert_eq!(server_name("[::1]:443").unwrap(), ip("::1"));
        assert_eq!(
            server_name("localhost:1").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        assert_eq!(
            server_name("example.com").unwrap(),
            ServerName::try_from("example.com").unwrap()
        );
        assert!(server_name("bad_name!:1").is_err());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(ClientTls::new("127.0.0.1:1", &empty).is_err());
        assert!(ClientTls::new("127.0.0.1:1", &dir.path().join("missing.pem")).is_err());
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let pem = dir.path().join("cert.pem");
        std::fs::write(&pem, cert.cert.pem()).unwrap();
        let tls = ClientTls::new("127.0.0.1:1", &pem).unwrap();
        assert_eq!(tls.server_name, server_name("127.0.0.1:1").unwrap());
    }
}
