//! Client connections of the load generator: WebSocket through
//! tokio-tungstenite (`ws://`, or `wss://` over tokio-rustls with the ring
//! provider), QUIC through quinn (one bidirectional stream, each
//! message a 4-byte big-endian length and the envelope, docs/PROTOCOL.md §5),
//! and WebTransport through web-transport-quinn (the same frames on a
//! session's stream, as a browser sends them).
//!
//! A [`Conn`] splits into a sending half ([`Tx`]) and a receiving half
//! ([`Rx`]) so that a workload can read and write from different tasks.

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::pem::PemObject;
use signalbox_codec::WireCodec;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The largest message a client accepts (the server's default maximum).
pub const MAX_MESSAGE: usize = 1 << 20;

/// Read and write buffer of every WebSocket client (tungstenite's default
/// is 128 KiB each; small buffers keep 19,000 idle clients in memory and
/// spare the load generator zero-filling a large read buffer).
pub const CLIENT_BUFFER: usize = 4 * 1024;

/// Receive and send buffer asked for each QUIC client socket (the kernel
/// caps it at `net.core.rmem_max` / `wmem_max`). A socket carries the
/// connections of many clients, each receiving a room's burst at once: at
/// the kernel's default (about 208 KiB) chat 32 × 10 overflowed the two
/// sockets thousands of times a second, and the server's retransmissions
/// were counted as its cost.
pub const QUIC_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the clients connect.
#[derive(Clone)]
pub enum Target {
    /// WebSocket at `ws://addr{path}`, or `wss://addr{path}` with a TLS
    /// configuration.
    Ws {
        /// TCP address.
        addr: SocketAddr,
        /// Upgrade path, e.g. `/ws`.
        path: String,
        /// TLS for `wss://` (`None`: plain `ws://`).
        tls: Option<Arc<rustls::ClientConfig>>,
    },
    /// QUIC at `addr`, trusting the certificates of a PEM file; native, or
    /// WebTransport when the target has a session path.
    Quic(Arc<QuicTarget>),
}

/// A QUIC server and the client endpoints used to reach it.
pub struct QuicTarget {
    addr: SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    endpoints: Vec<quinn::Endpoint>,
    next: AtomicUsize,
    /// WebTransport's session path, or `None` for native QUIC.
    webtransport: Option<String>,
}

impl Target {
    /// A WebSocket target.
    pub fn ws(addr: SocketAddr, path: impl Into<String>) -> Target {
        Target::Ws {
            addr,
            path: path.into(),
            tls: None,
        }
    }

    /// A WebSocket-over-TLS (`wss://`) target trusting the certificates in
    /// `cert_pem`: TLS 1.2 or 1.3 through rustls with the ring provider,
    /// the same provider as the QUIC client.
    pub fn wss(addr: SocketAddr, path: impl Into<String>, cert_pem: &[u8]) -> Result<Target> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots_of(cert_pem)?)
            .with_no_client_auth();
        Ok(Target::Ws {
            addr,
            path: path.into(),
            tls: Some(Arc::new(config)),
        })
    }

    /// A QUIC target trusting the certificates in `cert_pem`; connections
    /// are spread over `endpoints` client sockets (each one a quinn driver).
    pub fn quic(addr: SocketAddr, cert_pem: &[u8], endpoints: usize) -> Result<Target> {
        let roots = roots_of(cert_pem)?;
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()?;
        let endpoints = (0..endpoints.max(1))
            .map(|_| quic_endpoint(bind).context("QUIC client endpoint"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Target::Quic(Arc::new(QuicTarget {
            addr,
            roots: Arc::new(roots),
            endpoints,
            next: AtomicUsize::new(0),
            webtransport: None,
        })))
    }

    /// A WebTransport target: the QUIC server at `addr` serving sessions at
    /// `path` (docs/PROTOCOL.md §5, "WebTransport").
    pub fn webtransport(
        addr: SocketAddr,
        cert_pem: &[u8],
        endpoints: usize,
        path: impl Into<String>,
    ) -> Result<Target> {
        let Target::Quic(quic) = Target::quic(addr, cert_pem, endpoints)? else {
            bail!("a QUIC target");
        };
        let mut quic = Arc::into_inner(quic).context("a fresh target")?;
        quic.webtransport = Some(path.into());
        Ok(Target::Quic(Arc::new(quic)))
    }

    /// `ws`, `wss`, `quic` or `webtransport`.
    pub fn transport(&self) -> &'static str {
        match self {
            Target::Ws { tls: None, .. } => "ws",
            Target::Ws { tls: Some(_), .. } => "wss",
            Target::Quic(quic) if quic.webtransport.is_some() => "webtransport",
            Target::Quic(_) => "quic",
        }
    }

    /// Opens one connection speaking `codec`.
    pub async fn connect(&self, codec: WireCodec) -> Result<Conn> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner(codec))
            .await
            .map_err(|_| anyhow!("connecting took more than {CONNECT_TIMEOUT:?}"))?
    }

    async fn connect_inner(&self, codec: WireCodec) -> Result<Conn> {
        match self {
            Target::Ws { addr, path, tls } => {
                let stream = TcpStream::connect(addr).await.context("TCP connect")?;
                stream.set_nodelay(true)?;
                let (stream, scheme) = match tls {
                    None => (WsIo::Plain(stream), "ws"),
                    Some(config) => {
                        let name = rustls_pki_types::ServerName::from(addr.ip());
                        let tls = tokio_rustls::TlsConnector::from(config.clone())
                            .connect(name, stream)
                            .await
                            .context("TLS handshake")?;
                        (WsIo::Tls(Box::new(tls)), "wss")
                    }
                };
                let mut request = format!("{scheme}://{addr}{path}").into_client_request()?;
                // No offer means JSON (docs/PROTOCOL.md §4); servers that know no
                // subprotocols (the baselines) then need not answer one.
                if codec.name() != "json" {
                    request.headers_mut().insert(
                        "sec-websocket-protocol",
                        HeaderValue::from_static(codec.name()),
                    );
                }
                let config = WebSocketConfig::default()
                    .read_buffer_size(CLIENT_BUFFER)
                    .write_buffer_size(CLIENT_BUFFER)
                    .max_message_size(Some(MAX_MESSAGE))
                    .max_frame_size(Some(MAX_MESSAGE));
                let (ws, _) =
                    tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                        .await
                        .context("WebSocket handshake")?;
                let (sink, stream) = ws.split();
                Ok(Conn {
                    tx: Tx::Ws {
                        sink,
                        text: codec.format().is_text(),
                    },
                    rx: Rx::Ws(stream),
                    codec,
                })
            }
            Target::Quic(quic) => {
                let i = quic.next.fetch_add(1, Ordering::Relaxed) % quic.endpoints.len();
                let endpoint = &quic.endpoints[i];
                let connection = endpoint
                    .connect_with(quic.client_config(&codec)?, quic.addr, "localhost")?
                    .await
                    .context("QUIC handshake")?;
                if let Some(path) = &quic.webtransport {
                    let url = format!("https://localhost:{}{path}", quic.addr.port());
                    let request = web_transport_quinn::proto::ConnectRequest::new(
                        url::Url::parse(&url).context("WebTransport URL")?,
                    )
                    .with_protocol(codec.name());
                    let session = web_transport_quinn::Session::connect(connection, request)
                        .await
                        .context("WebTransport CONNECT")?;
                    let (send, recv) = session.open_bi().await.context("open stream")?;
                    return Ok(Conn {
                        tx: Tx::Web {
                            send,
                            session: Box::new(session.clone()),
                        },
                        rx: Rx::Web {
                            recv,
                            buf: BytesMut::with_capacity(4096),
                            _session: Box::new(session),
                        },
                        codec,
                    });
                }
                let (send, recv) = connection.open_bi().await.context("open stream")?;
                Ok(Conn {
                    tx: Tx::Quic {
                        send,
                        connection: connection.clone(),
                    },
                    rx: Rx::Quic {
                        recv,
                        buf: BytesMut::with_capacity(4096),
                        _connection: connection,
                    },
                    codec,
                })
            }
        }
    }
}

impl QuicTarget {
    fn client_config(&self, codec: &WireCodec) -> Result<quinn::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        crypto.alpn_protocols = match self.webtransport {
            Some(_) => vec![b"h3".to_vec()],
            None => vec![format!("signalbox/{}", codec.name()).into_bytes()],
        };
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto)?));
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(Duration::from_secs(60).try_into()?));
        transport.keep_alive_interval(Some(Duration::from_secs(10)));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

/// A QUIC client endpoint on a socket bound to `bind`, its buffers raised
/// to [`QUIC_SOCKET_BUFFER`] (best effort: the kernel may give less).
fn quic_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(bind)?;
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(QUIC_SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(QUIC_SOCKET_BUFFER);
    let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        runtime,
    )?)
}

/// The trust anchors in `cert_pem` (at least one).
fn roots_of(cert_pem: &[u8]) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem) {
        roots
            .add(cert.context("certificate PEM")?)
            .context("trust anchor")?;
    }
    if roots.is_empty() {
        bail!("no certificate in the PEM file");
    }
    Ok(roots)
}

/// The byte stream under a WebSocket client: plain TCP (`ws://`) or TLS
/// over TCP (`wss://`).
pub enum WsIo {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://` (boxed, being large).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            WsIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WsIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            WsIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Plain(s) => Pin::new(s).poll_flush(cx),
            WsIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            WsIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One client connection.
pub struct Conn {
    /// The sending half.
    pub tx: Tx,
    /// The receiving half.
    pub rx: Rx,
    /// The codec the connection speaks.
    pub codec: WireCodec,
}

/// The sending half of a connection.
pub enum Tx {
    /// WebSocket: JSON goes in text frames, MessagePack in binary ones.
    Ws {
        /// The frame sink.
        sink: SplitSink<WebSocketStream<WsIo>, Message>,
        /// Whether envelopes travel in text frames.
        text: bool,
    },
    /// QUIC: the main stream.
    Quic {
        /// The stream's sending side.
        send: quinn::SendStream,
        /// The connection (closed with code 0 on [`Tx::close`]).
        connection: quinn::Connection,
    },
    /// WebTransport: the session's main stream.
    Web {
        /// The stream's sending side.
        send: web_transport_quinn::SendStream,
        /// The session (closed with code 0 on [`Tx::close`]); boxed, being
        /// large.
        session: Box<web_transport_quinn::Session>,
    },
}

impl Tx {
    /// Queues one envelope without flushing (WebSocket) or writes it
    /// (QUIC, where writes go to quinn's buffer).
    pub async fn feed(&mut self, frame: Bytes) -> Result<()> {
        match self {
            Tx::Ws { sink, text } => {
                let message = if *text {
                    Message::Text(frame.try_into().context("JSON frame is not UTF-8")?)
                } else {
                    Message::Binary(frame)
                };
                sink.feed(message).await?;
            }
            Tx::Quic { send, .. } => {
                let len = u32::try_from(frame.len())?.to_be_bytes();
                send.write_all(&len).await?;
                send.write_all(&frame).await?;
            }
            Tx::Web { send, .. } => {
                let len = u32::try_from(frame.len())?.to_be_bytes();
                send.write_all(&len).await?;
                send.write_all(&frame).await?;
            }
        }
        Ok(())
    }

    /// Flushes what [`Tx::feed`] queued.
    pub async fn flush(&mut self) -> Result<()> {
        if let Tx::Ws { sink, .. } = self {
            sink.flush().await?;
        }
        Ok(())
    }

    /// Sends one envelope now.
    pub async fn send(&mut self, frame: Bytes) -> Result<()> {
        self.feed(frame).await?;
        self.flush().await
    }

    /// Closes the connection (WebSocket 1000, QUIC 0), not waiting for the
    /// peer beyond a short while.
    pub async fn close(self) {
        match self {
            Tx::Ws { mut sink, .. } => {
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            }
            Tx::Quic {
                mut send,
                connection,
            } => {
                let _ = send.finish();
                connection.close(0u32.into(), b"done");
            }
            Tx::Web { mut send, session } => {
                let _ = send.finish();
                session.close(0, b"done");
            }
        }
    }
}

/// The receiving half of a connection.
pub enum Rx {
    /// WebSocket frames.
    Ws(SplitStream<WebSocketStream<WsIo>>),
    /// QUIC: the main stream, with the bytes of an incomplete frame.
    Quic {
        /// The stream's receiving side.
        recv: quinn::RecvStream,
        /// Bytes received and not yet returned.
        buf: BytesMut,
        /// Keeps the connection open while it is read.
        _connection: quinn::Connection,
    },
    /// WebTransport: the session's main stream, as for QUIC.
    Web {
        /// The stream's receiving side.
        recv: web_transport_quinn::RecvStream,
        /// Bytes received and not yet returned.
        buf: BytesMut,
        /// Keeps the session open while it is read (boxed, being large).
        _session: Box<web_transport_quinn::Session>,
    },
}

/// The first whole frame in `buf`, taken out of it.
fn take_frame(buf: &mut BytesMut) -> Result<Option<Bytes>> {
    if buf.len() >= 4 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_MESSAGE {
            bail!("frame of {len} bytes is over the maximum");
        }
        if buf.len() >= 4 + len {
            buf.advance(4);
            return Ok(Some(buf.split_to(len).freeze()));
        }
    }
    Ok(None)
}

impl Rx {
    /// The next envelope's bytes; `None` once the server closed.
    pub async fn recv(&mut self) -> Result<Option<Bytes>> {
        match self {
            Rx::Ws(stream) => loop {
                match stream.next().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(text))) => return Ok(Some(Bytes::from(text))),
                    Some(Ok(Message::Binary(bytes))) => return Ok(Some(bytes)),
                    Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(_)) => continue,
                }
            },
            Rx::Quic { recv, buf, .. } => loop {
                if let Some(frame) = take_frame(buf)? {
                    return Ok(Some(frame));
                }
                match recv.read_chunk(usize::MAX, true).await? {
                    Some(chunk) => buf.extend_from_slice(&chunk.bytes),
                    None if buf.is_empty() => return Ok(None),
                    None => bail!("stream ended inside a frame"),
                }
            },
            Rx::Web { recv, buf, .. } => loop {
                if let Some(frame) = take_frame(buf)? {
                    return Ok(Some(frame));
                }
                match recv.read_chunk(usize::MAX, true).await? {
                    Some(chunk) => buf.extend_from_slice(&chunk.bytes),
                    None if buf.is_empty() => return Ok(None),
                    None => bail!("stream ended inside a frame"),
                }
            },
        }
    }

    /// [`Rx::recv`] with a deadline: an error if nothing came in `wait`,
    /// or if the server closed.
    pub async fn recv_within(&mut self, wait: Duration) -> Result<Bytes> {
        match tokio::time::timeout(wait, self.recv()).await {
            Err(_) => bail!("nothing received for {wait:?}"),
            Ok(Ok(None)) => bail!("the server closed the connection"),
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Err(e)) => Err(e),
        }
    }
}

/// Codec names the load generator understands.
pub fn codec(name: &str) -> Result<WireCodec> {
    WireCodec::from_name(name).ok_or_else(|| anyhow!("unknown codec {name:?}"))
}
