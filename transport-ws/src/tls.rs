//! TLS configuration with rustls and its `ring` provider.
//!
//! Clients trust either given certificates ([`client_config`]: a private CA
//! or a self-signed test certificate) or the public roots
//! ([`client_config_with_public_roots`]), which a `wss://` [`WsConnector`]
//! uses when it is given no configuration.
//!
//! The public roots are Mozilla's root program as compiled in by the
//! `webpki-roots` crate, not the operating system's store: the same trust
//! on every platform, also in minimal container images that ship no CA
//! bundle, with no files to read and nothing to fail at start. The list is
//! as new as the crate (a dependency update brings a renewed one); a
//! private or corporate CA is trusted through [`client_config`] instead.
//!
//! [`WsConnector`]: crate::WsConnector

use rustls::crypto::ring::default_provider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// A certificate or key that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM could not be read.
    #[error("PEM: {0}")]
    Pem(String),
    /// The PEM held no certificate.
    #[error("no certificate in the PEM")]
    NoCertificate,
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server configuration from a PEM certificate chain and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), advertising `http/1.1` by ALPN.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts exactly the certificates in
/// `roots_pem` (a private CA, or a self-signed test or example certificate).
pub fn client_config(roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem) {
        roots.add(cert.map_err(|e| TlsError::Pem(e.to_string()))?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    client_config_with_roots(roots)
}

/// The public root certificates (Mozilla's, from `webpki-roots`; see the
/// module documentation for why not the operating system's).
pub fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A client configuration that trusts the [`public_roots`]: for servers
/// with a certificate from a public certificate authority.
pub fn client_config_with_public_roots() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_with_roots(public_roots())
}

fn client_config_with_roots(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_roots_are_many_and_make_a_client_config() {
        assert!(public_roots().len() > 100, "{}", public_roots().len());
        assert!(client_config_with_public_roots().is_ok());
        assert!(matches!(client_config(b""), Err(TlsError::NoCertificate)));
    }
}
