//! [`QuicConnector`]: QUIC under [`signalbox::client::Client`].

use crate::client::QuicClientBuilder;
use crate::error::{QuicError, StreamError};
use crate::session::Session;
use crate::stream::{FrameReader, FrameWriter, ReadError, close_code};
use crate::tls;
use async_trait::async_trait;
use signalbox::client::{Client, ConnectError, Connector, Link};
use signalbox::codec::WireCodec;
use signalbox::transport::{
    Close, CloseKind, Frame, FrameSink, FrameSource, Inbound, PeerClose, TransportError,
};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a graceful close waits for the server to acknowledge the last
/// messages before CONNECTION_CLOSE.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Connects a [`Client`] to a signalbox QUIC server, trusting given
/// certificates, asking for one codec by ALPN (`signalbox/<codec>`).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use signalbox::client::Client;
/// use signalbox_quic::QuicConnector;
///
/// let pem = std::fs::read("/tmp/chat-cert.pem")?; // written by `chat --cert-out`
/// let connector = QuicConnector::new("127.0.0.1:4433".parse()?, &pem, "msgpack")?;
/// let client = Client::builder(connector).build();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct QuicConnector {
    addr: SocketAddr,
    builder: QuicClientBuilder,
}

impl QuicConnector {
    /// A connector to `addr` trusting the certificates in `trust_pem` (for a
    /// self-signed server: its certificate), speaking the codec named
    /// `codec`, with server name `localhost`.
    pub fn new(addr: SocketAddr, trust_pem: &[u8], codec: &str) -> Result<Self, ConnectError> {
        let codec = WireCodec::from_name(codec)
            .ok_or_else(|| ConnectError::Config(format!("unknown codec {codec:?}")))?;
        let roots =
            tls::roots_from_pem(trust_pem).map_err(|e| ConnectError::Config(e.to_string()))?;
        Ok(QuicConnector {
            addr,
            builder: crate::QuicClient::builder(roots).codec(codec),
        })
    }

    /// A connector to `addr` trusting the public roots
    /// ([`public_roots`](crate::public_roots)), for a server whose
    /// certificate from a public certificate authority covers
    /// `server_name`, speaking the codec named `codec`.
    pub fn with_public_roots(
        addr: SocketAddr,
        server_name: impl Into<String>,
        codec: &str,
    ) -> Result<Self, ConnectError> {
        let codec = WireCodec::from_name(codec)
            .ok_or_else(|| ConnectError::Config(format!("unknown codec {codec:?}")))?;
        Ok(QuicConnector {
            addr,
            builder: crate::QuicClient::builder(tls::public_roots())
                .codec(codec)
                .server_name(server_name),
        })
    }

    /// A connector using a configured [`QuicClientBuilder`] (server name,
    /// timeouts, maximum message size).
    pub fn with_builder(addr: SocketAddr, builder: QuicClientBuilder) -> Self {
        QuicConnector { addr, builder }
    }

    /// The name the server's certificate must cover (default `localhost`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.builder = self.builder.server_name(name);
        self
    }
}

#[async_trait]
impl Connector for QuicConnector {
    fn codec(&self) -> WireCodec {
        self.builder.codec_value()
    }

    async fn connect(&self) -> Result<Link, ConnectError> {
        let client = self
            .builder
            .clone()
            .connect(self.addr)
            .await
            .map_err(connect_error)?;
        let parts = client.into_parts();
        let (reader, writer) = parts.stream.split();
        Ok(Link {
            source: Box::new(ClientSource {
                _endpoint: parts.endpoint,
                session: parts.session,
                reader,
                peer_close: None,
            }),
            sink: Box::new(ClientSink { writer }),
        })
    }
}

/// A [`Client`] for the server at `addr` (certificate trusted from
/// `trust_pem`) speaking `codec`, with the default client configuration.
pub fn connect(addr: SocketAddr, trust_pem: &[u8], codec: &str) -> Result<Client, ConnectError> {
    Ok(Client::builder(QuicConnector::new(addr, trust_pem, codec)?).build())
}

fn connect_error(error: QuicError) -> ConnectError {
    match error {
        QuicError::Timeout => ConnectError::Timeout,
        QuicError::Bind { source, .. } | QuicError::Resolve(source) => ConnectError::Io(source),
        QuicError::Certificate(_)
        | QuicError::Identity(_)
        | QuicError::Tls(_)
        | QuicError::Config(_) => ConnectError::Config(error.to_string()),
        QuicError::Connect(quinn::ConnectError::InvalidServerName(name)) => {
            ConnectError::Config(format!("invalid server name {name:?}"))
        }
        QuicError::Connection(quinn::ConnectionError::TimedOut) => ConnectError::Timeout,
        QuicError::Connection(
            quinn::ConnectionError::ConnectionClosed(_)
            | quinn::ConnectionError::ApplicationClosed(_)
            | quinn::ConnectionError::TransportError(_),
        )
        | QuicError::WebTransport(web_transport_quinn::ClientError::HttpError(
            web_transport_quinn::ConnectError::ErrorStatus(_),
        )) => ConnectError::Refused(error.to_string()),
        other => ConnectError::Protocol(other.to_string()),
    }
}

struct ClientSource {
    // Kept so the endpoint's socket outlives the connection's reader.
    _endpoint: quinn::Endpoint,
    session: Session,
    reader: FrameReader,
    peer_close: Option<PeerClose>,
}

/// How long the client waits, once the server's stream ended, for the
/// connection close that says why (the server finishes its stream, then
/// closes the connection with its application code).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

impl ClientSource {
    /// The server's application close code and reason (docs/PROTOCOL.md
    /// §5), if it closed the connection within [`CLOSE_WAIT`].
    async fn learn_close(&mut self) {
        if self.peer_close.is_some() {
            return;
        }
        let closed = tokio::time::timeout(CLOSE_WAIT, self.session.peer_close()).await;
        if let Ok(Some((code, reason))) = closed {
            self.peer_close = Some(PeerClose {
                code: u16::try_from(code).unwrap_or(u16::MAX),
                reason,
            });
        }
    }
}

#[async_trait]
impl FrameSource for ClientSource {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        // Cancel-safe: partial frames stay in the reader.
        match self.reader.next().await {
            Ok(Some(frame)) => Ok(Some(Inbound::Message(frame))),
            Ok(None) | Err(ReadError::Stream(StreamError::Closed(_))) => {
                self.learn_close().await;
                Ok(None)
            }
            Err(ReadError::Frame(error)) => Err(TransportError::TooBig(error.to_string())),
            Err(error) => Err(error.into_transport()),
        }
    }

    fn liveness_by_transport(&self) -> bool {
        true
    }

    fn peer_close(&self) -> Option<PeerClose> {
        self.peer_close.clone()
    }
}

struct ClientSink {
    writer: FrameWriter,
}

#[async_trait]
impl FrameSink for ClientSink {
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        self.writer
            .write_batch(frames.iter().map(Frame::bytes))
            .await
            .map_err(|e| e.into_transport())
    }

    async fn close(&mut self, close: Close) -> Result<(), TransportError> {
        self.writer.close(&close, CLOSE_LINGER).await;
        Ok(())
    }

    fn close_code(&self, kind: CloseKind) -> Option<u32> {
        Some(close_code(kind))
    }
}
