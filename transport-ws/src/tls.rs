//! TLS configuration with rustls and its `ring` provider.
//!
//! The server presents an [`Identity`] (the transport kit's, shared with the
//! QUIC transport: PEM files, DER, or self-signed for development), turned
//! into a rustls configuration by [`server_config`].
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
use signalbox::transport::{Identity, IdentityError, certs_from_pem};
use std::sync::Arc;

/// A certificate or key that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM could not be read, or held no certificate.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server configuration presenting `identity` (TLS 1.2 and 1.3),
/// advertising `http/1.1` by ALPN: what
/// [`WsServerBuilder::identity`](crate::WsServerBuilder::identity) serves.
/// Adjust it and pass it to
/// [`WsServerBuilder::tls_config`](crate::WsServerBuilder::tls_config) for
/// anything else.
pub fn server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain().to_vec(), identity.key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts exactly the certificates in
/// `roots_pem` (a private CA, or a self-signed test or example certificate).
pub fn client_config(roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(roots_pem)? {
        roots.add(cert)?;
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
        assert!(matches!(
            client_config(b""),
            Err(TlsError::Identity(IdentityError::NoCertificate))
        ));
    }
}
