//! The server's TLS identity: a certificate chain and its private key, the
//! one type every TLS transport takes.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// The names a self-signed certificate always covers
/// (`Identity::self_signed`, feature `self-signed`).
pub const DEFAULT_SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How long a self-signed certificate is valid (`Identity::self_signed`,
/// feature `self-signed`): 13 days, under the 14 days browsers accept for a
/// certificate trusted by its hash.
#[cfg(feature = "self-signed")]
pub const SELF_SIGNED_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(13 * 24 * 3600);

/// A certificate or key that could not be read or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The PEM could not be parsed.
    #[error("{what} PEM: {reason}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// The PEM held no certificate.
    #[error("no certificate in the PEM")]
    NoCertificate,
    /// The private key's DER is not a key.
    #[error("private key: {0}")]
    Key(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A self-signed certificate could not be made.
    #[error("self-signed certificate: {0}")]
    SelfSigned(String),
}

/// A server certificate chain (leaf first) and its private key: what a TLS
/// transport presents to clients. The WebSocket transport turns it into a
/// rustls server configuration for `wss://`, the QUIC transport into its
/// TLS 1.3 configuration (docs/PROTOCOL.md §4 and §5).
///
/// Made from PEM ([`Identity::from_pem`], [`Identity::from_pem_files`]),
/// from DER ([`Identity::from_der`]), or for development, self-signed
/// (`Identity::self_signed`, feature `self-signed`).
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
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
    /// A certificate chain (leaf first) and a private key, both DER.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        if chain.is_empty() {
            return Err(IdentityError::NoCertificate);
        }
        Ok(Identity { chain, key })
    }

    /// A certificate chain (leaf first) and a private key (PKCS#8, PKCS#1
    /// or SEC1), both PEM.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, IdentityError> {
        let chain = certs_from_pem(cert_chain)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| IdentityError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        Identity::from_der(chain, key)
    }

    /// Reads [`Identity::from_pem`] input from two files.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, IdentityError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| IdentityError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        Identity::from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
    }

    /// A fresh self-signed certificate valid for `localhost`, `127.0.0.1`,
    /// `::1` and each of `extra_names` (DNS names or IP addresses): for
    /// development and tests; clients must be told to trust it
    /// ([`Identity::cert_pem`]).
    ///
    /// The key is ECDSA P-256 and the certificate is valid from an hour ago
    /// for [`SELF_SIGNED_VALIDITY`] in all (under 14 days): what browsers
    /// accept by hash for WebTransport ([`Identity::certificate_sha256`],
    /// docs/PROTOCOL.md §5). A server running longer than that needs a
    /// restart (a fresh certificate) or a real one.
    #[cfg(feature = "self-signed")]
    pub fn self_signed<S: AsRef<str>>(extra_names: &[S]) -> Result<Self, IdentityError> {
        let mut names: Vec<String> = DEFAULT_SELF_SIGNED_NAMES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for name in extra_names {
            let name = name.as_ref();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        let failed = |e: rcgen::Error| IdentityError::SelfSigned(e.to_string());
        let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
        let now = time::OffsetDateTime::now_utc();
        // Browsers measure the whole validity period (at most 14 days);
        // starting an hour ago forgives a client clock slightly behind.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = params.not_before + SELF_SIGNED_VALIDITY;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
        let cert = params.self_signed(&key).map_err(failed)?;
        let key = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| IdentityError::Key(e.to_owned()))?;
        Identity::from_der(vec![cert.der().clone()], key)
    }

    /// The SHA-256 hash of the leaf certificate's DER: what a browser is
    /// given to trust a self-signed certificate for WebTransport
    /// (`serverCertificateHashes`, docs/PROTOCOL.md §5).
    #[cfg(feature = "self-signed")]
    pub fn certificate_sha256(&self) -> [u8; 32] {
        let leaf = self.chain.first().map(|c| c.as_ref()).unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        hash
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The certificate chain as PEM: what clients trust for a self-signed
    /// certificate.
    pub fn cert_pem(&self) -> String {
        self.chain.iter().map(|c| der_to_pem(c)).collect()
    }

    /// Writes [`Identity::cert_pem`] to `path` (the private key is never
    /// written).
    pub fn write_cert_pem(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        let path = path.as_ref();
        std::fs::write(path, self.cert_pem()).map_err(|source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Every certificate in a PEM bundle, in order: the trust anchors a client
/// is told to trust (a private CA, a self-signed certificate), or a chain.
/// A bundle without any is [`IdentityError::NoCertificate`].
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(IdentityError::NoCertificate);
    }
    Ok(certs)
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
    fn empty_or_broken_pem_is_refused_with_a_reason() {
        assert!(matches!(
            Identity::from_pem(b"", b""),
            Err(IdentityError::Pem { .. } | IdentityError::NoCertificate)
        ));
        assert!(matches!(
            Identity::from_der(Vec::new(), PrivateKeyDer::Pkcs8(vec![1, 2, 3].into())),
            Err(IdentityError::NoCertificate)
        ));
        let missing = Identity::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem");
        assert!(matches!(missing, Err(IdentityError::Io { .. })));
    }

    #[cfg(feature = "self-signed")]
    #[test]
    #[cfg(feature = "self-signed")]
    fn a_self_signed_certificate_is_short_lived_ecdsa_with_a_stable_hash() {
        let identity = Identity::self_signed::<&str>(&[]).unwrap();
        let der = identity.chain()[0].as_ref().to_vec();
        // The ecdsa-with-SHA256 signature algorithm (1.2.840.10045.4.3.2)
        // and the P-256 curve (1.2.840.10045.3.1.7), DER-encoded.
        let find = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        assert!(find(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
        assert!(find(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]));
        // Validity: the two UTCTime values (tag 0x17, 13 bytes) are 13 days apart.
        let times: Vec<String> = der
            .windows(15)
            .filter(|w| w[0] == 0x17 && w[1] == 13)
            .map(|w| String::from_utf8(w[2..].to_vec()).unwrap())
            .collect();
        assert_eq!(times.len(), 2, "{times:?}");
        let day = |t: &str| -> i64 {
            let (y, m, d): (i64, i64, i64) = (
                t[0..2].parse().unwrap(),
                t[2..4].parse().unwrap(),
                t[4..6].parse().unwrap(),
            );
            // Days from a civil date (good for the 2000s).
            let (y, m) = if m <= 2 {
                (y + 1999, m + 9)
            } else {
                (y + 2000, m - 3)
            };
            365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + d
        };
        assert_eq!(day(&times[1]) - day(&times[0]), 13, "{times:?}");
        assert!(SELF_SIGNED_VALIDITY < std::time::Duration::from_secs(14 * 24 * 3600));
        // The hash is of the leaf's DER, and stays put.
        let hash = identity.certificate_sha256();
        assert_eq!(hash, identity.certificate_sha256());
        assert_ne!(
            hash,
            Identity::self_signed::<&str>(&[])
                .unwrap()
                .certificate_sha256()
        );
        let expected = ring::digest::digest(&ring::digest::SHA256, &der);
        assert_eq!(&hash[..], expected.as_ref());
    }

    #[test]
    #[cfg(feature = "self-signed")]
    fn a_self_signed_identity_round_trips_through_pem() {
        let identity = Identity::self_signed(&["chat.example"]).unwrap();
        let pem = identity.cert_pem();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let parsed: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed, identity.chain());
        assert!(!format!("{identity:?}").contains("key:"));
        assert_eq!(certs_from_pem(pem.as_bytes()).unwrap(), identity.chain());
        assert!(matches!(
            certs_from_pem(b"not pem"),
            Err(IdentityError::NoCertificate)
        ));
    }

    #[cfg(feature = "self-signed")]
    #[test]
    fn cert_and_key_load_from_pem() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let identity = Identity::from_pem(
            certified.cert.pem().as_bytes(),
            certified.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(identity.chain()[0], *certified.cert.der());
    }
}
