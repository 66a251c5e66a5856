//! Certificates, ALPN names and the rustls configurations built from them.

use crate::error::QuicError;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use signalbox::codec::{Codecs, WireCodec};
use std::path::Path;
use std::sync::Arc;

/// The ALPN prefix: `signalbox/<codec name>` (docs/PROTOCOL.md §5).
pub const ALPN_PREFIX: &str = "signalbox/";

/// The names a self-signed certificate always covers.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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

/// A server certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A fresh self-signed certificate valid for `localhost`, `127.0.0.1`,
    /// `::1` and each of `extra_names` (DNS names or IP addresses).
    pub fn self_signed<S: AsRef<str>>(extra_names: &[S]) -> Result<Self, QuicError> {
        let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| (*s).to_owned()).collect();
        for name in extra_names {
            let name = name.as_ref();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| QuicError::Certificate(e.to_string()))?;
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .map_err(|e| QuicError::Certificate(e.to_owned()))?;
        Ok(Identity {
            chain: vec![certified.cert.der().clone()],
            key,
        })
    }

    /// A certificate chain (leaf first) and a private key, both PEM.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, QuicError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QuicError::Certificate(format!("certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(QuicError::Certificate(
                "no certificate in the PEM".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| QuicError::Certificate(format!("private key PEM: {e}")))?;
        Ok(Identity { chain, key })
    }

    /// Reads [`Identity::from_pem`] input from two files.
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<Self, QuicError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| QuicError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        Identity::from_pem(&read(cert_chain)?, &read(key)?)
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The certificate chain as PEM: what clients trust for a self-signed
    /// certificate.
    pub fn cert_pem(&self) -> String {
        self.chain.iter().map(|c| der_to_pem(c)).collect()
    }

    /// Writes [`Identity::cert_pem`] to `path` (the private key is never
    /// written).
    pub fn write_cert_pem(&self, path: &Path) -> Result<(), QuicError> {
        std::fs::write(path, self.cert_pem()).map_err(|source| QuicError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// Parses every certificate in a PEM bundle into a root store (for client
/// certificates on the server, or the server certificate on a client).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, QuicError> {
    let mut roots = RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| QuicError::Certificate(format!("certificate PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| QuicError::Certificate(format!("trust anchor: {e}")))?;
        any = true;
    }
    if !any {
        return Err(QuicError::Certificate(
            "no certificate in the PEM".to_owned(),
        ));
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

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_self_signed_pem_round_trips_and_trusts_itself() {
        let identity = Identity::self_signed(&["chat.example"]).unwrap();
        let pem = identity.cert_pem();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let parsed: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed, identity.chain());
        assert_eq!(roots_from_pem(pem.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn cert_and_key_load_from_pem() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let identity = Identity::from_pem(
            certified.cert.pem().as_bytes(),
            certified.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(identity.chain()[0], *certified.cert.der());
        assert!(Identity::from_pem(b"", b"").is_err());
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
