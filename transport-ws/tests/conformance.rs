//! The conformance suite of `signalbox::testing::conformance` over
//! WebSocket: a `WsServer` on loopback, `WsConnector` clients, the close
//! codes of docs/PROTOCOL.md §4.

use async_trait::async_trait;
use signalbox::Hub;
use signalbox::client::{ConnectError, Connector};
use signalbox::testing::conformance::{Endpoint, Transport};
use signalbox::transport::CloseKind;
use signalbox_ws::{WsConnector, WsServer};

struct Ws;

#[async_trait]
impl Transport for Ws {
    async fn serve(&self, hub: Hub) -> Result<Box<dyn Endpoint>, String> {
        let server = WsServer::builder(hub)
            .bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("ws://{}/ws", server.local_addr());
        let task = tokio::spawn(server.serve());
        Ok(Box::new(Served { url, task }))
    }

    /// docs/PROTOCOL.md §4, "Close codes".
    fn close_code(&self, kind: CloseKind) -> Option<u16> {
        Some(match kind {
            CloseKind::Normal => 1000,
            CloseKind::GoingAway => 1001,
            CloseKind::Protocol => 1002,
            CloseKind::InvalidData => 1007,
            CloseKind::Policy => 1008,
            CloseKind::TooBig => 1009,
            CloseKind::Internal => 1011,
        })
    }
}

struct Served {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint for Served {
    fn connector(&self, codec: &str) -> Result<Box<dyn Connector>, ConnectError> {
        Ok(Box::new(WsConnector::new(&self.url, codec)?))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

signalbox::conformance_tests!(Ws);
