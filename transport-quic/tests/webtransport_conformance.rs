//! The conformance suite of `signalbox::testing::conformance` over
//! WebTransport: a `QuicServer` serving sessions at `/wt` on loopback, and
//! `QuicConnector` clients that speak HTTP/3 as a browser does
//! (docs/PROTOCOL.md §5, "WebTransport"). Close codes and liveness are the
//! native transport's.

use async_trait::async_trait;
use signalbox::Hub;
use signalbox::client::{ConnectError, Connector};
use signalbox::codec::WireCodec;
use signalbox::testing::conformance::{Endpoint, Transport};
use signalbox::transport::CloseKind;
use signalbox_quic::{QuicClient, QuicConnector, QuicServer, roots_from_pem};

struct WebTransport;

#[async_trait]
impl Transport for WebTransport {
    async fn serve(&self, hub: Hub) -> Result<Box<dyn Endpoint>, String> {
        let server = QuicServer::builder(hub)
            .webtransport("/wt")
            .bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(Served { server }))
    }

    /// docs/PROTOCOL.md §5: the session closes with the native codes
    /// (pinned against the protocol's table in tests/conformance.rs).
    fn close_code(&self, kind: CloseKind) -> Option<u16> {
        u16::try_from(signalbox_quic::close_code(kind)).ok()
    }

    fn liveness_by_transport(&self) -> bool {
        true
    }
}

struct Served {
    server: QuicServer,
}

impl Endpoint for Served {
    fn connector(&self, codec: &str) -> Result<Box<dyn Connector>, ConnectError> {
        let codec = WireCodec::from_name(codec)
            .ok_or_else(|| ConnectError::Config(format!("unknown codec {codec:?}")))?;
        let roots = roots_from_pem(self.server.cert_pem().as_bytes())
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        Ok(Box::new(QuicConnector::with_builder(
            self.server.local_addr(),
            QuicClient::builder(roots).codec(codec).webtransport("/wt"),
        )))
    }
}

signalbox::conformance_tests!(WebTransport);
