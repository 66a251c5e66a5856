//! A test CA, a server and a client certificate from it, and a
//! `redis-server` that speaks TLS only and requires a client certificate.

use super::{RedisServer, free_port};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use std::path::Path;

/// PEM files of a throwaway PKI.
pub struct Pki {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key: String,
    pub client_pem: String,
    pub client_key: String,
}

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    usage: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = usage;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A new CA (named `name`) with a server certificate for localhost and
/// 127.0.0.1 and a client certificate.
pub fn pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    // The server certificate is a client one too: cluster nodes and
    // replicas present it to each other.
    let (server_pem, server_key) = leaf(
        &ca,
        "redis",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (client_pem, client_key) = leaf(&ca, "node", vec![ExtendedKeyUsagePurpose::ClientAuth]);
    Pki {
        ca_pem: ca.pem(),
        server_pem,
        server_key,
        client_pem,
        client_key,
    }
}

/// Writes `pem` to `dir/name`; the path.
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.to_string_lossy().into_owned()
}

/// A `redis-server` on a free port that speaks TLS only (`--port 0`),
/// with `pki`'s server certificate, requiring a client certificate from
/// its CA.
pub async fn server(pki: &Pki) -> RedisServer {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("signalbox-redis-tls-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let extra = vec![
        "--tls-cert-file".to_owned(),
        write_pem(&dir, "server.pem", &pki.server_pem),
        "--tls-key-file".to_owned(),
        write_pem(&dir, "server.key", &pki.server_key),
        "--tls-ca-cert-file".to_owned(),
        write_pem(&dir, "ca.pem", &pki.ca_pem),
        "--tls-auth-clients".to_owned(),
        "yes".to_owned(),
    ];
    let server = RedisServer::start_with(port, extra, true).await;
    // Read at start; not needed any more.
    let _ = std::fs::remove_dir_all(&dir);
    server
}
