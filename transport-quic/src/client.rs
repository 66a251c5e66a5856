//! A client for the QUIC transport: the main stream and request streams,
//! frames in and out. Encoding envelopes is the caller's (or
//! [`signalbox::codec::WireCodec`]'s) job.

use crate::error::QuicError;
use crate::session::{RecvStream, SendStream, Session};
use crate::stream::{FrameReader, FramedStream, ReadError, WriteError};
use crate::tls;
use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use signalbox::codec::WireCodec;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Configures a [`QuicClient`].
#[derive(Debug, Clone)]
pub struct QuicClientBuilder {
    roots: RootCertStore,
    codec: WireCodec,
    server_name: String,
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    handshake_timeout: Duration,
    max_message_size: usize,
    webtransport: Option<String>,
}

impl QuicClientBuilder {
    /// The codec, which picks the ALPN (default `json`).
    pub fn codec(mut self, codec: WireCodec) -> Self {
        self.codec = codec;
        self
    }

    /// The name the server's certificate must cover (default `localhost`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// The client's idle timeout (default 30 s; the smaller of the two
    /// sides' applies).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Keep-alive interval (default 10 s; `None` sends none).
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval;
        self
    }

    /// How long the handshake may take (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The largest frame accepted from the server (default 1 MiB).
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// Connects over WebTransport (HTTP/3, ALPN `h3`) to the session path
    /// `path` (e.g. `"/wt"`) instead of natively: what a browser does. The
    /// codec travels as the session's subprotocol; everything after the
    /// session is set up is the same (docs/PROTOCOL.md §5, "WebTransport").
    pub fn webtransport(mut self, path: impl Into<String>) -> Self {
        self.webtransport = Some(path.into());
        self
    }

    pub(crate) fn codec_value(&self) -> WireCodec {
        self.codec
    }

    /// The quinn client configuration this builder describes.
    pub fn quinn_config(&self) -> Result<quinn::ClientConfig, QuicError> {
        let mut crypto = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        crypto.alpn_protocols = match self.webtransport {
            Some(_) => vec![web_transport_quinn::ALPN.as_bytes().to_vec()],
            None => vec![tls::alpn_for(self.codec.name()).into_bytes()],
        };
        let crypto = QuicClientConfig::try_from(crypto)
            .map_err(|e| QuicError::Certificate(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(self.idle_timeout)
                    .map_err(|_| QuicError::Config("idle timeout out of range".into()))?,
            ))
            .keep_alive_interval(self.keep_alive);
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// Connects to `addr` and opens the main stream. The server sees the
    /// stream, and serves the connection, from the first message sent.
    pub async fn connect(self, addr: SocketAddr) -> Result<QuicClient, QuicError> {
        let bind: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|source| QuicError::Bind { addr: bind, source })?;
        let connecting = endpoint.connect_with(self.quinn_config()?, addr, &self.server_name)?;
        let session = tokio::time::timeout(self.handshake_timeout, async {
            let connection = connecting.await?;
            match &self.webtransport {
                None => Ok::<_, QuicError>(Session::Native(connection)),
                Some(path) => {
                    let url = format!("https://{}:{}{path}", self.server_name, addr.port());
                    let url = url
                        .parse::<url::Url>()
                        .map_err(|e| QuicError::Config(format!("WebTransport URL {url}: {e}")))?;
                    let request = web_transport_quinn::proto::ConnectRequest::new(url)
                        .with_protocol(self.codec.name());
                    Ok(Session::Web(Box::new(
                        web_transport_quinn::Session::connect(connection, request).await?,
                    )))
                }
            }
        })
        .await
        .map_err(|_| QuicError::Timeout)??;
        let (send, recv) = session.open_bi().await.map_err(QuicError::Write)?;
        Ok(QuicClient {
            endpoint,
            stream: FramedStream::new(session.clone(), send, recv, self.max_message_size),
            session,
            codec: self.codec,
            max_message_size: self.max_message_size,
        })
    }
}

/// A [`QuicClient`] taken apart (for the connector).
pub(crate) struct Parts {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) session: Session,
    pub(crate) stream: FramedStream,
}

/// A connection to a signalbox QUIC server.
#[derive(Debug)]
pub struct QuicClient {
    endpoint: quinn::Endpoint,
    session: Session,
    /// The main stream.
    stream: FramedStream,
    codec: WireCodec,
    max_message_size: usize,
}

impl QuicClient {
    /// A client trusting the certificates in `roots`: for a server with a
    /// self-signed certificate or one from a private CA, that certificate
    /// or CA (see [`roots_from_pem`](crate::roots_from_pem)); for a server
    /// with a certificate from a public CA,
    /// [`public_roots`](crate::public_roots).
    pub fn builder(roots: RootCertStore) -> QuicClientBuilder {
        QuicClientBuilder {
            roots,
            codec: WireCodec::new(signalbox::codec::Format::Json, false),
            server_name: "localhost".to_owned(),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 1024 * 1024,
            webtransport: None,
        }
    }

    pub(crate) fn into_parts(self) -> Parts {
        Parts {
            endpoint: self.endpoint,
            session: self.session,
            stream: self.stream,
        }
    }

    /// The codec the ALPN (or the WebTransport subprotocol) selected.
    pub fn codec(&self) -> &WireCodec {
        &self.codec
    }

    /// The quinn connection (for WebTransport, the one under the session).
    pub fn connection(&self) -> &quinn::Connection {
        self.session.connection()
    }

    /// Whether this client speaks WebTransport rather than native QUIC.
    pub fn is_webtransport(&self) -> bool {
        matches!(self.session, Session::Web(_))
    }

    /// The local endpoint.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Sends one encoded envelope on the main stream.
    pub async fn send_frame(&mut self, frame: &[u8]) -> Result<(), QuicError> {
        let frame = Bytes::copy_from_slice(frame);
        self.stream.writer.write(&frame).await.map_err(write_error)
    }

    /// The next envelope from the main stream; `None` once the server
    /// finished it. Cancel-safe.
    pub async fn recv_frame(&mut self) -> Result<Option<Bytes>, QuicError> {
        self.stream.reader.next().await.map_err(read_error)
    }

    /// Sends `frame` as a request on its own stream (the request-stream
    /// lane); its answers arrive on the returned stream.
    pub async fn request(&self, frame: &[u8]) -> Result<RequestStream, QuicError> {
        let (send, recv): (SendStream, RecvStream) =
            self.session.open_bi().await.map_err(QuicError::Write)?;
        let FramedStream { reader, mut writer } =
            FramedStream::new(self.session.clone(), send, recv, self.max_message_size);
        writer
            .write(&Bytes::copy_from_slice(frame))
            .await
            .map_err(write_error)?;
        writer.finish();
        Ok(RequestStream { reader })
    }

    /// Finishes the main stream: the server closes the connection normally
    /// (code 0) after answering what it received.
    pub fn finish(&mut self) {
        self.stream.writer.finish();
    }

    /// Closes the connection (or the WebTransport session) with an
    /// application code.
    pub fn close(&self, code: u32, reason: &str) {
        self.session.close_with(code, reason);
    }

    /// Waits until the connection is closed; the server's application close
    /// code, if it closed with one.
    pub async fn closed(&self) -> Option<u64> {
        self.closed_with_reason()
            .await
            .map(|(code, _)| u64::from(code))
    }

    /// Waits until the connection is closed; the server's application close
    /// code and reason, if it closed with one.
    pub async fn closed_with_reason(&self) -> Option<(u32, String)> {
        self.session.peer_close().await
    }
}

/// The answers to one request sent with [`QuicClient::request`].
#[derive(Debug)]
pub struct RequestStream {
    reader: FrameReader,
}

impl RequestStream {
    /// The next answer (progress, then the reply); `None` once the server
    /// finished the stream. Cancel-safe.
    pub async fn recv_frame(&mut self) -> Result<Option<Bytes>, QuicError> {
        self.reader.next().await.map_err(read_error)
    }
}

fn read_error(error: ReadError) -> QuicError {
    match error {
        ReadError::Frame(error) => QuicError::Frame(error),
        ReadError::Truncated => QuicError::Truncated,
        ReadError::Stream(error) => QuicError::Read(error),
        // A client's streams carry no share of a hub's budget; nothing
        // refuses their partial frames.
        ReadError::Refused(refusal) => QuicError::Config(refusal.to_string()),
    }
}

fn write_error(error: WriteError) -> QuicError {
    match error {
        WriteError::Frame(error) => QuicError::Frame(error),
        WriteError::Stream(error) => QuicError::Write(error),
    }
}
