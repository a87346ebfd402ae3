//! HTTPS for the REST port: a rustls server configuration (ring provider) from PEM files, like Azurite's
//! `--cert`/`--key`. Only HTTP/1.1 is offered over ALPN, as the listener serves nothing else.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Loads the certificate chain and private key; errors name the file and what is wrong with it.
pub fn server_config(cert_file: &Path, key_file: &Path) -> io::Result<Arc<ServerConfig>> {
    let bad = |file: &Path, what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", file.display()),
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| bad(cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert_file, "no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| bad(key_file, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(key_file, format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
