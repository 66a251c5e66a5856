//! The conformance suite of `signalbox::testing::conformance` over QUIC: a
//! `QuicServer` on loopback, `QuicConnector` clients, the application
//! close codes of docs/PROTOCOL.md §5 and QUIC's own liveness.

use async_trait::async_trait;
use signalbox::Hub;
use signalbox::client::{ConnectError, Connector};
use signalbox::testing::conformance::{Endpoint, Transport};
use signalbox::transport::CloseKind;
use signalbox_quic::{QuicConnector, QuicServer};

struct Quic;

#[async_trait]
impl Transport for Quic {
    async fn serve(&self, hub: Hub) -> Result<Box<dyn Endpoint>, String> {
        let server = QuicServer::builder(hub)
            .bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(Served { server }))
    }

    /// docs/PROTOCOL.md §5, "Application close codes".
    fn close_code(&self, kind: CloseKind) -> Option<u16> {
        Some(match kind {
            CloseKind::Normal => 0,
            CloseKind::GoingAway => 1,
            CloseKind::Protocol | CloseKind::InvalidData | CloseKind::TooBig => 2,
            CloseKind::Policy => 3,
            CloseKind::Internal => 4,
        })
    }

    /// QUIC's idle timeout and keep-alives (docs/PROTOCOL.md §5, "Liveness").
    fn liveness_by_transport(&self) -> bool {
        true
    }
}

struct Served {
    server: QuicServer,
}

impl Endpoint for Served {
    fn connector(&self, codec: &str) -> Result<Box<dyn Connector>, ConnectError> {
        let pem = self.server.cert_pem();
        Ok(Box::new(QuicConnector::new(
            self.server.local_addr(),
            pem.as_bytes(),
            codec,
        )?))
    }
}

signalbox::conformance_tests!(Quic);
