//! A connector to a hub in the same process, over channels: for tests and
//! for embedding a client next to its server.

use super::{ConnectError, Connector, Link};
use crate::connection::{
    Close, Connection, ConnectionInfo, DataMap, Frame, FrameSink, FrameSource, Inbound,
    TransportError,
};
use crate::hub::Hub;
use async_trait::async_trait;
use bytes::Bytes;
use signalbox_codec::WireCodec;
use tokio::sync::mpsc;

/// Frames in flight in each direction of an in-process connection.
const IN_FLIGHT: usize = 256;

/// Connects to `hub` in this process: each [`Connector::connect`] serves a
/// new connection on the hub (transport `"memory"`).
#[derive(Debug, Clone)]
pub struct InProcess {
    hub: Hub,
    codec: WireCodec,
}

impl InProcess {
    /// A connector speaking the codec named `codec` (`json`, `msgpack+gzip`…);
    /// `None` for an unknown name.
    pub fn new(hub: Hub, codec: &str) -> Option<Self> {
        let codec = hub.codec(WireCodec::from_name(codec)?);
        Some(InProcess { hub, codec })
    }
}

#[async_trait]
impl Connector for InProcess {
    fn codec(&self) -> WireCodec {
        self.codec
    }

    async fn connect(&self) -> Result<Link, ConnectError> {
        if self.hub.is_shutting_down() {
            return Err(ConnectError::Refused("the hub is shutting down".into()));
        }
        let (to_server, server_rx) = mpsc::channel(IN_FLIGHT);
        let (to_client, client_rx) = mpsc::channel(IN_FLIGHT);
        let connection = Connection {
            info: ConnectionInfo {
                transport: "memory",
                peer_addr: None,
                codec: self.codec,
            },
            data: DataMap::new(),
            source: Box::new(End { rx: server_rx }),
            sink: Box::new(Tx {
                tx: Some(to_client),
            }),
        };
        tokio::spawn(self.hub.serve(connection));
        Ok(Link {
            source: Box::new(End { rx: client_rx }),
            sink: Box::new(Tx {
                tx: Some(to_server),
            }),
        })
    }
}

/// The read end of one direction.
struct End {
    rx: mpsc::Receiver<Bytes>,
}

#[async_trait]
impl FrameSource for End {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        Ok(self.rx.recv().await.map(Inbound::Message))
    }
}

/// The write end of one direction; closing drops it.
struct Tx {
    tx: Option<mpsc::Sender<Bytes>>,
}

#[async_trait]
impl FrameSink for Tx {
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        for frame in frames {
            tx.send(frame.bytes().clone())
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    async fn close(&mut self, _close: Close) -> Result<(), TransportError> {
        self.tx = None;
        Ok(())
    }
}
