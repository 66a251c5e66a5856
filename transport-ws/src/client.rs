//! The client side: a [`Connector`] over WebSocket for
//! [`signalbox::client::Client`].

use crate::read_ahead::ReadAhead;
use crate::stream::{self, Buffers};
use async_trait::async_trait;
use http::HeaderValue;
use http::header::{HeaderName, SEC_WEBSOCKET_PROTOCOL};
use signalbox::client::{Client, ConnectError, Connector, Link};
use signalbox::codec::{CodecLimits, WireCodec};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, handshake::client::Request};

/// The default [`WsConnector::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to a signalbox WebSocket server (`ws://` or `wss://`), asking
/// for one codec by `Sec-WebSocket-Protocol`.
#[derive(Clone)]
pub struct WsConnector {
    request: Request,
    host: String,
    port: u16,
    secure: bool,
    codec: WireCodec,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    buffers: Buffers,
}

impl std::fmt::Debug for WsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConnector")
            .field("uri", self.request.uri())
            .field("codec", &self.codec.name())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl WsConnector {
    /// A connector to `url` speaking the codec named `codec` (`json`,
    /// `msgpack`, `json+gzip`, `msgpack+gzip`).
    pub fn new(url: &str, codec: &str) -> Result<Self, ConnectError> {
        let codec = WireCodec::from_name(codec)
            .ok_or_else(|| ConnectError::Config(format!("unknown codec {codec:?}")))?;
        WsConnector::with_codec(url, codec)
    }

    /// A connector to `url` speaking `codec`, which may be an application
    /// codec ([`signalbox::codec::Codecs::from_name`]).
    pub fn with_codec(url: &str, codec: WireCodec) -> Result<Self, ConnectError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError::Config(format!("{url}: {e}")))?;
        let uri = request.uri().clone();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => {
                return Err(ConnectError::Config(format!(
                    "{url}: not a ws:// or wss:// URL"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::Config(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        request.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(codec.name()),
        );
        Ok(WsConnector {
            request,
            host,
            port,
            secure,
            codec,
            tls: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            buffers: Buffers::default(),
        })
    }

    /// The TLS configuration for `wss://`: [`crate::tls::client_config`]
    /// to trust given certificates (a private CA, a self-signed server).
    /// Without one, `wss://` trusts the public roots
    /// ([`crate::tls::client_config_with_public_roots`]).
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Adds a header to the upgrade request (`Authorization`, a cookie).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.request.headers_mut().append(name, value);
        self
    }

    /// How long TCP, TLS and the upgrade may take together. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-connection buffers.
    pub fn buffers(mut self, buffers: Buffers) -> Self {
        self.buffers = buffers;
        self
    }

    async fn open(&self) -> Result<Link, ConnectError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let _ = tcp.set_nodelay(true);
        let config = stream::framed_config(&CodecLimits::default(), self.buffers);
        if self.secure {
            let tls = match &self.tls {
                Some(config) => config.clone(),
                None => crate::tls::client_config_with_public_roots()
                    .map_err(|e| ConnectError::Config(format!("TLS: {e}")))?,
            };
            let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| ConnectError::Config(format!("server name: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| ConnectError::Refused(format!("TLS: {e}")))?;
            self.upgrade(ReadAhead::new(stream, self.buffers.read), config)
                .await
        } else {
            self.upgrade(ReadAhead::new(tcp, self.buffers.read), config)
                .await
        }
    }

    async fn upgrade<S>(
        &self,
        io: S,
        config: tungstenite::protocol::WebSocketConfig,
    ) -> Result<Link, ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(self.request.clone(), io, Some(config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => {
                        let status = response.status();
                        let reason = format!("HTTP {status}");
                        // 401 and 403: these credentials will not do.
                        if status == http::StatusCode::UNAUTHORIZED
                            || status == http::StatusCode::FORBIDDEN
                        {
                            ConnectError::Denied(reason)
                        } else {
                            ConnectError::Refused(reason)
                        }
                    }
                    tungstenite::Error::Io(e) => ConnectError::Io(e),
                    other => ConnectError::Protocol(other.to_string()),
                })?;
        let picked = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        if picked != Some(self.codec.name()) {
            return Err(ConnectError::Protocol(format!(
                "asked for {}, the server answered {picked:?}",
                self.codec.name()
            )));
        }
        let (source, sink) = stream::split(ws, &self.codec);
        Ok(Link {
            source: Box::new(source),
            sink: Box::new(sink),
        })
    }
}

#[async_trait]
impl Connector for WsConnector {
    fn codec(&self) -> WireCodec {
        self.codec
    }

    async fn connect(&self) -> Result<Link, ConnectError> {
        tokio::time::timeout(self.timeout, self.open())
            .await
            .map_err(|_| ConnectError::Timeout)?
    }
}

/// A [`Client`] for `url` speaking `codec`, with the default client
/// configuration (`wss://` trusts the public roots); use
/// [`Client::builder`] with a [`WsConnector`] to tune it.
pub fn connect(url: &str, codec: &str) -> Result<Client, ConnectError> {
    Ok(Client::builder(WsConnector::new(url, codec)?).build())
}
