//! Client certificates, verified by the server and handed to the
//! authentication hook.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use quinn::crypto::rustls::QuicClientConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use signalbox::DataMap;
use signalbox::transport::Rejection;
use signalbox_quic::{ClientAuth, QuicServer, roots_from_pem};
use std::sync::Arc;

struct Pki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "signalbox test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf_params = CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "ada");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        leaf_key: leaf_key.serialize_der(),
    }
}

fn config_with_cert(server_pem: &str, pki: Option<&Pki>) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots_from_pem(server_pem.as_bytes()).unwrap());
    let mut crypto = match pki {
        Some(pki) => builder
            .with_client_auth_cert(
                vec![pki.leaf.clone()],
                PrivateKeyDer::try_from(pki.leaf_key.clone()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    crypto.alpn_protocols = vec![b"signalbox/json".to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto).unwrap()))
}

#[tokio::test]
async fn an_optional_client_certificate_reaches_the_hook() {
    let pki = pki();
    let hub = hub();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = QuicServer::builder(hub.clone())
        .client_auth(ClientAuth::Optional(
            roots_from_pem(pki.ca_pem.as_bytes()).unwrap(),
        ))
        .authenticate({
            let seen = seen.clone();
            move |handshake| {
                seen.lock().unwrap().push(handshake.client_certs.clone());
                async move {
                    let mut data = DataMap::new();
                    if handshake.client_certs.is_empty() {
                        data.insert(User("anonymous".into()));
                    } else {
                        data.insert(User("ada".into()));
                    }
                    Ok::<_, Rejection>(data)
                }
            }
        })
        .bind(localhost())
        .await
        .unwrap();

    for (with_cert, user) in [(true, "ada"), (false, "anonymous")] {
        let endpoint = client_endpoint();
        let conn = endpoint
            .connect_with(
                config_with_cert(&server.cert_pem(), with_cert.then_some(&pki)),
                server.local_addr(),
                "localhost",
            )
            .unwrap()
            .await
            .unwrap();
        let mut client = Client::on(endpoint, conn, "json").await;
        client.send("WHOAMI", Some("w"), json!(null)).await;
        let you: You = client.expect("YOU").await.decode_payload().unwrap();
        assert_eq!(you.user.as_deref(), Some(user));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(&seen[0][..], std::slice::from_ref(&pki.leaf));
    assert!(seen[1].is_empty());
}

#[tokio::test]
async fn a_required_client_certificate_keeps_out_clients_without_one() {
    let pki = pki();
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .client_auth(ClientAuth::Required(
            roots_from_pem(pki.ca_pem.as_bytes()).unwrap(),
        ))
        .bind(localhost())
        .await
        .unwrap();
    // With one: in.
    let endpoint = client_endpoint();
    let conn = endpoint
        .connect_with(
            config_with_cert(&server.cert_pem(), Some(&pki)),
            server.local_addr(),
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let mut client = Client::on(endpoint, conn, "json").await;
    client.send("ECHO", Some("1"), json!(1)).await;
    client.expect("ECHO").await;

    // Without: TLS 1.3 lets the client finish first, then the server's
    // alert ends the connection before any stream is served.
    let endpoint = client_endpoint();
    let attempt = endpoint
        .connect_with(
            config_with_cert(&server.cert_pem(), None),
            server.local_addr(),
            "localhost",
        )
        .unwrap()
        .await;
    let error = match attempt {
        Err(error) => error,
        Ok(conn) => tokio::time::timeout(WAIT, conn.closed()).await.unwrap(),
    };
    match error {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            assert!((0x100..0x200).contains(&code), "a TLS alert, got {close}");
        }
        other => panic!("expected a TLS alert, got {other}"),
    }
    assert_eq!(hub.connection_count(), 1);
}
