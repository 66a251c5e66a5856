//! ALPN names, trust roots and the crypto provider. The server's
//! certificate is the transport kit's [`Identity`](signalbox::transport::Identity).

use crate::error::QuicError;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use signalbox::codec::{Codecs, WireCodec};
use signalbox::transport::certs_from_pem;
use std::sync::Arc;

/// The ALPN prefix: `signalbox/<codec name>` (docs/PROTOCOL.md §5).
pub const ALPN_PREFIX: &str = "signalbox/";

/// The ALPN protocol ids a server with `codecs` offers, one per codec name
/// (docs/PROTOCOL.md §5), application codecs included.
pub fn alpn_protocols(codecs: &Codecs) -> Vec<Vec<u8>> {
    codecs
        .names()
        .iter()
        .map(|name| alpn_for(name).into_bytes())
        .collect()
}

/// The ALPN id for the codec named `codec` (`json` → `signalbox/json`).
pub fn alpn_for(codec: &str) -> String {
    format!("{ALPN_PREFIX}{codec}")
}

/// The codec an ALPN id selects, if it names one of `codecs`.
pub fn codec_for_alpn(codecs: &Codecs, alpn: &[u8]) -> Option<WireCodec> {
    let name = std::str::from_utf8(alpn).ok()?.strip_prefix(ALPN_PREFIX)?;
    codecs.from_name(name)
}

/// The crypto provider this crate uses throughout: rustls with *ring*.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate in a PEM bundle into a root store (for client
/// certificates on the server, or the server certificate on a client).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, QuicError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(pem)? {
        roots
            .add(cert)
            .map_err(|e| QuicError::Certificate(format!("trust anchor: {e}")))?;
    }
    Ok(roots)
}

/// The public root certificates: Mozilla's root program as compiled in by
/// the `webpki-roots` crate, for a server with a certificate from a public
/// certificate authority (`QuicClient::builder(public_roots())`).
///
/// Compiled in rather than read from the operating system's store: the
/// same trust on every platform, also in minimal container images without
/// a CA bundle, and nothing to fail at start. A private CA is trusted
/// through [`roots_from_pem`] instead.
pub fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox::transport::Identity;

    #[test]
    fn alpn_names_map_to_codecs_and_back() {
        for name in WireCodec::NAMES {
            let alpn = alpn_for(name);
            assert_eq!(
                codec_for_alpn(&Codecs::new(), alpn.as_bytes()).map(|c| c.name()),
                Some(name)
            );
        }
        assert!(codec_for_alpn(&Codecs::new(), b"signalbox/xml").is_none());
        assert!(codec_for_alpn(&Codecs::new(), b"json").is_none());
        assert!(codec_for_alpn(&Codecs::new(), b"h3").is_none());
        assert_eq!(alpn_protocols(&Codecs::new()).len(), 4);
    }

    #[test]
    fn a_self_signed_certificate_becomes_a_root() {
        let identity = Identity::self_signed(&["chat.example"]).unwrap();
        assert_eq!(
            roots_from_pem(identity.cert_pem().as_bytes())
                .unwrap()
                .len(),
            1
        );
        assert!(roots_from_pem(b"not pem").is_err());
    }

    #[test]
    fn the_public_roots_are_many_and_exclude_a_self_signed_certificate() {
        let roots = public_roots();
        assert!(roots.len() > 100, "{}", roots.len());
        let identity = Identity::self_signed::<&str>(&[]).unwrap();
        let own = roots_from_pem(identity.cert_pem().as_bytes()).unwrap();
        assert!(!roots.roots.iter().any(|r| own.roots.contains(r)));
    }
}
