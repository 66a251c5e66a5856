//! An application codec (CBOR) selected by QUIC ALPN `signalbox/<name>`,
//! like the built-in ones (docs/PROTOCOL.md §2, §5).

mod common;

// The CBOR codec of the WebSocket tests: one implementation for both.
#[path = "../../transport-ws/tests/cbor/mod.rs"]
mod cbor;

use common::*;
use signalbox::Hub;
use signalbox_quic::{QuicServer, alpn_protocols, codec_for_alpn};

async fn start(hub: &Hub) -> QuicServer {
    QuicServer::builder(hub.clone())
        .bind(localhost())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_cbor_client_is_served_in_cbor_over_its_alpn() {
    let hub = Hub::builder(router()).codec(&cbor::CBOR).unwrap().build();
    let server = start(&hub).await;
    for name in ["cbor", "cbor+gzip"] {
        let alpn = format!("signalbox/{name}");
        let (endpoint, conn) = handshake(server.local_addr(), &server.cert_pem(), &[&alpn]).await;
        let conn = conn.expect("the server offers the application codec's ALPN");
        assert_eq!(
            conn.handshake_data()
                .unwrap()
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .unwrap()
                .protocol
                .as_deref(),
            Some(alpn.as_bytes())
        );
        let mut client = Client::on(endpoint, conn, "json").await;
        client.codec = cbor::codec(name);
        let big = "xyz".repeat(1000);
        for payload in [
            serde_json::json!({"n": 1, "s": "ünï"}),
            serde_json::json!(big),
        ] {
            client.send("ECHO", Some("c-1"), payload.clone()).await;
            let frame = client.recv_frame().await.expect("a reply");
            let ty = cbor::envelope_type(&frame);
            let compressed = name == "cbor+gzip" && payload.is_string();
            assert_eq!(ty, if compressed { "COMPRESSED" } else { "ECHO" }, "{name}");
            let reply = client.codec.decode(frame).unwrap();
            assert_eq!(reply.ty, "ECHO");
            assert_eq!(reply.meta.correlation_id.as_deref(), Some("c-1"));
            let back: serde_json::Value = reply.decode_payload().unwrap();
            assert_eq!(back, payload);
        }
    }
}

#[tokio::test]
async fn a_server_without_the_codec_fails_its_alpn() {
    let hub = Hub::builder(router()).build();
    let server = start(&hub).await;
    let (_endpoint, conn) =
        handshake(server.local_addr(), &server.cert_pem(), &["signalbox/cbor"]).await;
    assert!(conn.is_err(), "no application codec, no ALPN");
}

#[test]
fn the_alpn_list_and_lookup_cover_registered_codecs() {
    let hub = Hub::builder(router()).codec(&cbor::CBOR).unwrap().build();
    let alpns = alpn_protocols(hub.codecs());
    assert!(alpns.contains(&b"signalbox/cbor".to_vec()));
    assert!(alpns.contains(&b"signalbox/cbor+gzip".to_vec()));
    assert_eq!(alpns.len(), 6);
    let codec = codec_for_alpn(hub.codecs(), b"signalbox/cbor+gzip").unwrap();
    assert_eq!(codec.name(), "cbor+gzip");
    assert!(codec.gzip());
    assert!(codec_for_alpn(hub.codecs(), b"signalbox/cbor2").is_none());
}
