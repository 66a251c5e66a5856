//! A custom transport in one file: newline-delimited JSON over TCP,
//! written against the public transport seam (`signalbox::transport`)
//! and client seam (`signalbox::client::Connector`). It passes the
//! conformance suite (`tests/ndjson.rs`).
//!
//! The wire: the client opens a TCP connection and sends one line naming
//! its codec, a text codec of the hub (`json`, `json+gzip`, docs/PROTOCOL.md
//! §2); the server answers with the same line, or closes the connection for
//! a name it does not have. From then on each line is one envelope
//! (docs/PROTOCOL.md §1): JSON never holds a raw newline. A side that closes
//! sends a last line `#close <code> <reason>`, with the WebSocket codes of
//! docs/PROTOCOL.md §4 ([`close_code`]), and ends its stream.
//!
//! Admission comes from the transport kit (`signalbox::transport::Admission`
//! and `AcceptLoop`): the connection limit, the handshake timeout the
//! hello must meet, and the authentication hook. A line longer than the
//! hub's maximum message size ends the connection (1009). There is no ping:
//! the hub closes peers silent past its heartbeat, and clients send
//! `__heartbeat` (docs/PROTOCOL.md §4). A transport for production would
//! also charge partial lines to the hub's incomplete-message budget
//! (`Hub::incomplete_budget`), as `signalbox-ws` does.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use signalbox::client::{ConnectError, Connector, Link};
use signalbox::codec::WireCodec;
use signalbox::transport::{
    AcceptLoop, Admission, Close, CloseKind, Connection, ConnectionInfo, Frame, FrameSink,
    FrameSource, Handshake, Inbound, Listener, PeerClose, TransportError,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How long a client waits for the server to answer its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest hello line.
const MAX_HELLO: usize = 128;
/// What starts a close line.
const CLOSE_PREFIX: &[u8] = b"#close ";

/// The code a close of `kind` travels with: the WebSocket numbering of
/// docs/PROTOCOL.md §4.
pub fn close_code(kind: CloseKind) -> u16 {
    match kind {
        CloseKind::Normal => 1000,
        CloseKind::GoingAway => 1001,
        CloseKind::Protocol => 1002,
        CloseKind::InvalidData => 1007,
        CloseKind::Policy => 1008,
        CloseKind::TooBig => 1009,
        CloseKind::Internal => 1011,
    }
}

/// Accepts connections on `listener` and hands each, after its hello, to
/// the hub of `admission`, until the hub starts shutting down. The
/// transport kit does the rest: the connection limit, the handshake
/// timeout (the hello must come within it) and the authentication hook,
/// which sees the peer address and the codec.
pub async fn serve(listener: TcpListener, admission: Admission) {
    let hub = admission.hub().clone();
    let accept = AcceptLoop::new(&hub, admission.limit().clone());
    accept
        .run(Tcp(listener), move |tcp| {
            let (admission, hub) = (admission.clone(), hub.clone());
            async move {
                match admission.within_handshake(hello(tcp, &admission)).await {
                    Ok(Ok(connection)) => hub.serve(connection).await,
                    Ok(Err(error)) => tracing::debug!(%error, "hello refused"),
                    Err(timed_out) => tracing::debug!(%timed_out, "no hello in time"),
                }
            }
        })
        .await;
}

/// The TCP listener, as the kit's accept loop takes it. A connection past
/// the limit is dropped: this protocol has no way to say why.
struct Tcp(TcpListener);

impl Listener for Tcp {
    type Incoming = TcpStream;

    async fn accept(&mut self) -> Option<std::io::Result<TcpStream>> {
        Some(self.0.accept().await.map(|(tcp, _)| tcp))
    }
}

/// Reads the client's codec, answers it, and makes the [`Connection`].
async fn hello(tcp: TcpStream, admission: &Admission) -> Result<Connection, TransportError> {
    let hub = admission.hub();
    let peer_addr = tcp.peer_addr().ok();
    let _ = tcp.set_nodelay(true);
    let (read, mut write) = tcp.into_split();
    let mut lines = Lines::new(read, MAX_HELLO);
    let line = lines.next().await?.ok_or(TransportError::Closed)?;
    let name = String::from_utf8_lossy(&line);
    let codec = hub
        .codecs()
        .from_name(&name)
        .filter(|codec| codec.format().is_text())
        .ok_or_else(|| TransportError::Protocol(format!("no text codec {name:?}")))?;
    let mut handshake = Handshake::new("ndjson", codec);
    handshake.peer_addr = peer_addr;
    let data = match admission.authenticate(handshake).await {
        Ok(data) => data,
        Err(rejection) => {
            let close = Close::new(rejection.close_kind(), rejection.reason().into_owned());
            let line = format!("#close {} {}\n", close_code(close.kind), close.reason);
            let _ = write.write_all(line.as_bytes()).await;
            return Err(TransportError::Other(format!("refused: {}", close.reason)));
        }
    };
    write.write_all(&line).await?;
    write.write_all(b"\n").await?;
    lines.max = hub.config().codec.max_message_size;
    Ok(Connection {
        info: ConnectionInfo {
            transport: "ndjson",
            peer_addr,
            codec: hub.codec(codec),
        },
        data,
        source: Box::new(Source::new(lines)),
        sink: Box::new(Sink::new(write)),
    })
}

/// Connects to an ndjson server, for `signalbox::client::Client`.
#[derive(Debug, Clone)]
pub struct NdjsonConnector {
    addr: SocketAddr,
    codec: WireCodec,
}

impl NdjsonConnector {
    /// A connector to `addr` speaking the text codec named `codec` (`json`,
    /// `json+gzip`).
    pub fn new(addr: SocketAddr, codec: &str) -> Result<Self, ConnectError> {
        let codec = WireCodec::from_name(codec)
            .filter(|codec| codec.format().is_text())
            .ok_or_else(|| ConnectError::Config(format!("no text codec {codec:?}")))?;
        Ok(NdjsonConnector { addr, codec })
    }
}

#[async_trait]
impl Connector for NdjsonConnector {
    fn codec(&self) -> WireCodec {
        self.codec
    }

    async fn connect(&self) -> Result<Link, ConnectError> {
        let tcp = TcpStream::connect(self.addr).await?;
        let _ = tcp.set_nodelay(true);
        let (read, mut write) = tcp.into_split();
        write
            .write_all(format!("{}\n", self.codec.name()).as_bytes())
            .await?;
        let mut lines = Lines::new(read, MAX_HELLO);
        let answer = tokio::time::timeout(HELLO_TIMEOUT, lines.next())
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
        if answer.as_deref() != Some(self.codec.name().as_bytes()) {
            return Err(ConnectError::Refused(format!(
                "the server does not speak {}",
                self.codec.name()
            )));
        }
        lines.max = self.codec.limits().max_message_size;
        Ok(Link {
            source: Box::new(Source::new(lines)),
            sink: Box::new(Sink::new(write)),
        })
    }
}

/// Splits what a socket reads into lines, holding at most `max` bytes of
/// an unfinished one.
struct Lines {
    read: OwnedReadHalf,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    max: usize,
}

impl Lines {
    fn new(read: OwnedReadHalf, max: usize) -> Self {
        Lines {
            read,
            buf: BytesMut::new(),
            scanned: 0,
            max,
        }
    }

    /// The next line, without its newline; `None` at the end of the
    /// stream. Cancel-safe: what was read stays in the buffer.
    async fn next(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            if let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + at;
                self.scanned = 0;
                let line = self.buf.split_to(end + 1).freeze();
                return Ok(Some(line.slice(..end)));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max {
                return Err(TransportError::TooBig(format!(
                    "a line longer than {} bytes",
                    self.max
                )));
            }
            self.buf.reserve(8 * 1024);
            if self.read.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(TransportError::Protocol(
                    "the stream ended inside a line".into(),
                ));
            }
        }
    }
}

/// The read half of either side: envelopes, then perhaps a close line.
struct Source {
    lines: Lines,
    peer_close: Option<PeerClose>,
}

impl Source {
    fn new(lines: Lines) -> Self {
        Source {
            lines,
            peer_close: None,
        }
    }
}

#[async_trait]
impl FrameSource for Source {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        if self.peer_close.is_some() {
            return Ok(None);
        }
        let Some(line) = self.lines.next().await? else {
            return Ok(None);
        };
        if !line.starts_with(CLOSE_PREFIX) {
            return Ok(Some(Inbound::Message(line)));
        }
        let close = String::from_utf8_lossy(&line[CLOSE_PREFIX.len()..]);
        let (code, reason) = close.split_once(' ').unwrap_or((&close, ""));
        self.peer_close = Some(PeerClose {
            code: code.parse().unwrap_or(0),
            reason: reason.to_owned(),
        });
        Ok(None)
    }

    fn peer_close(&self) -> Option<PeerClose> {
        self.peer_close.clone()
    }
}

/// The write half of either side.
struct Sink {
    write: BufWriter<OwnedWriteHalf>,
}

impl Sink {
    fn new(write: OwnedWriteHalf) -> Self {
        Sink {
            write: BufWriter::new(write),
        }
    }
}

#[async_trait]
impl FrameSink for Sink {
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        for frame in frames {
            let frame = frame.bytes();
            if frame.contains(&b'\n') {
                return Err(TransportError::Other("a frame holds a newline".into()));
            }
            self.write.write_all(frame).await?;
            self.write.write_all(b"\n").await?;
        }
        self.write.flush().await?;
        Ok(())
    }

    async fn close(&mut self, close: Close) -> Result<(), TransportError> {
        let reason = close.reason.replace('\n', " ");
        let line = format!("#close {} {reason}\n", close_code(close.kind));
        self.write.write_all(line.as_bytes()).await?;
        self.write.flush().await?;
        self.write.shutdown().await?;
        Ok(())
    }
}
