//! The QUIC listener: a quinn endpoint that hands each connection to a hub,
//! admitted by the transport kit ([`signalbox::transport`]).

use crate::conn;
use crate::error::QuicError;
use crate::tls;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::RootCertStore;
use signalbox::DataMap;
use signalbox::Hub;
use signalbox::transport::{
    AcceptLoop, Admission, AdmissionBuilder, Handshake, Identity, Listener, Refusal, Rejection,
};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::ToSocketAddrs;
use tokio::sync::watch;

/// Whether the server asks clients for certificates.
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// No client certificates (the default).
    #[default]
    None,
    /// Clients may present a certificate chained to these roots; those that
    /// present none are let in with an empty chain.
    Optional(RootCertStore),
    /// Clients must present a certificate chained to these roots.
    Required(RootCertStore),
}

/// Bytes of unread datagrams a WebTransport connection may hold (they are
/// not read; the oldest are dropped).
const WEBTRANSPORT_DATAGRAM_BUFFER: usize = 16 * 1024;

/// The default [`QuicServerBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Per-connection settings shared by every connection of one server.
pub(crate) struct Settings {
    pub(crate) hub: Hub,
    /// Shutdown, connection limit, handshake timeout, authentication hook.
    pub(crate) admission: Admission,
    /// The admission's handshake timeout, which also bounds how long a
    /// request stream may take to deliver its request.
    pub(crate) handshake_timeout: Duration,
    pub(crate) request_streams: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) close_linger: Duration,
    /// The CONNECT path of WebTransport sessions, when they are served.
    pub(crate) webtransport: Option<String>,
}

/// Configures a [`QuicServer`]; every setting has a default.
pub struct QuicServerBuilder {
    admission: AdmissionBuilder,
    identity: Option<Identity>,
    extra_names: Vec<String>,
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    request_streams: u32,
    request_timeout: Option<Duration>,
    close_linger: Duration,
    client_auth: ClientAuth,
    webtransport: Option<String>,
}

impl std::fmt::Debug for QuicServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicServerBuilder")
            .field("admission", &self.admission)
            .field("idle_timeout", &self.idle_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("request_streams", &self.request_streams)
            .finish_non_exhaustive()
    }
}

impl QuicServerBuilder {
    fn new(hub: Hub) -> Self {
        QuicServerBuilder {
            admission: Admission::builder(hub).max_connections(DEFAULT_MAX_CONNECTIONS),
            identity: None,
            extra_names: Vec::new(),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            request_streams: 16,
            request_timeout: None,
            close_linger: Duration::from_secs(1),
            client_auth: ClientAuth::None,
            webtransport: None,
        }
    }

    /// Serves this certificate (the transport kit's [`Identity`], the same
    /// type the WebSocket transport takes) instead of generating a
    /// self-signed one.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Extra names (DNS names or IP addresses) for the self-signed
    /// certificate, besides `localhost`, `127.0.0.1` and `::1`. Ignored when
    /// an [`identity`](Self::identity) is given.
    pub fn self_signed_names<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        self.extra_names.extend(names.into_iter().map(Into::into));
        self
    }

    /// Connections open at once; further ones are refused
    /// (CONNECTION_REFUSED) during the handshake. Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.admission = self.admission.max_connections(max);
        self
    }

    /// How long a connection may hear nothing from its peer before QUIC
    /// drops it: the liveness check that replaces heartbeats. Default 30 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How often the server sends a keep-alive on a quiet connection, so
    /// that live peers never hit the idle timeout; `None` sends none.
    /// Default 10 s.
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval;
        self
    }

    /// How long the TLS handshake may take, then the authentication hook,
    /// and how long a request stream may take to deliver its request.
    /// Default [`signalbox::transport::DEFAULT_HANDSHAKE_TIMEOUT`]. (A
    /// connection whose client has not sent yet is idle, not late: QUIC's
    /// idle timeout watches it.)
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.admission = self.admission.handshake_timeout(timeout);
        self
    }

    /// Request streams (the per-request lane) a client may have open at
    /// once besides its main stream; 0 turns the lane off. Default 16.
    pub fn request_streams(mut self, max: u32) -> Self {
        self.request_streams = max;
        self
    }

    /// How long a request stream waits for its reply before the server
    /// finishes it without one. Default: the hub's RPC deadline plus 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// On close, how long the server waits for the client to acknowledge
    /// the last messages before it sends CONNECTION_CLOSE (which discards
    /// anything not yet delivered). Capped at half the hub's drain timeout.
    /// Default 1 s.
    pub fn close_linger(mut self, linger: Duration) -> Self {
        self.close_linger = linger;
        self
    }

    /// Also serves WebTransport (HTTP/3, ALPN `h3`) on the same port, for
    /// browsers: sessions whose CONNECT path is `path` (e.g. `"/wt"`) become
    /// connections of the hub like native ones, their codec picked by
    /// subprotocol or the `codec` query parameter; other paths are
    /// answered 404 (docs/PROTOCOL.md §5, "WebTransport"). Off by default.
    pub fn webtransport(mut self, path: impl Into<String>) -> Self {
        self.webtransport = Some(path.into());
        self
    }

    /// Asks clients for certificates; the verified chain reaches the
    /// [`authenticate`](Self::authenticate) hook.
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// Runs `hook` after each handshake; it sees a [`Handshake`] with the
    /// peer address, codec, ALPN, server name and, with
    /// [`client_auth`](Self::client_auth), the verified client certificate
    /// chain. `Ok(data)` lets the client in with `data` as its connection's
    /// data; `Err(rejection)` closes the connection with the rejection's
    /// [`close_kind`](Rejection::close_kind) (the policy code 3 for
    /// [`Rejection::unauthorized`] and [`Rejection::forbidden`]) and its
    /// body as reason. A hook that has not answered within the handshake
    /// timeout closes it with code 3 too.
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DataMap, Rejection>> + Send + 'static,
    {
        self.admission = self.admission.authenticate(hook);
        self
    }

    /// Binds the UDP socket on `addr` (`"127.0.0.1:0"` picks a free port; a
    /// name that resolves to several addresses binds the first that can be
    /// bound) and starts accepting connections for the hub: from here on
    /// until the hub's shutdown begins. Await [`QuicServer::serve`] (or
    /// [`QuicServer::closed`]) for the end.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<QuicServer, QuicError> {
        let candidates: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(QuicError::Resolve)?
            .collect();
        let identity = match self.identity {
            Some(identity) => identity,
            None => Identity::self_signed(&self.extra_names)?,
        };
        let admission = self.admission.build();
        let hub = admission.hub().clone();
        if admission.limit().max() == 0 {
            return Err(QuicError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| QuicError::Config("idle timeout out of range".into()))?;

        let builder = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(roots) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    tls::provider(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| QuicError::Certificate(e.to_string()))?,
            ),
            ClientAuth::Required(roots) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    tls::provider(),
                )
                .build()
                .map_err(|e| QuicError::Certificate(e.to_string()))?,
            ),
        };
        let mut crypto = builder.with_single_cert(identity.chain().to_vec(), identity.key())?;
        crypto.alpn_protocols = tls::alpn_protocols(hub.codecs());
        if self.webtransport.is_some() {
            crypto
                .alpn_protocols
                .push(web_transport_quinn::ALPN.as_bytes().to_vec());
        }
        let crypto = QuicServerConfig::try_from(crypto)
            .map_err(|e| QuicError::Certificate(e.to_string()))?;

        // Native connections open the main stream and the request streams.
        // A WebTransport client also opens the CONNECT stream, and HTTP/3's
        // control and QPACK streams (unidirectional); browsers insist that
        // the server takes datagrams, which signalbox does not read (a
        // small buffer drops the oldest).
        let (extra_bidi, uni, datagrams) = match self.webtransport {
            Some(_) => (1, 3, Some(WEBTRANSPORT_DATAGRAM_BUFFER)),
            None => (0, 0, None),
        };
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(
                self.request_streams.saturating_add(1 + extra_bidi),
            ))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(uni))
            .datagram_receive_buffer_size(datagrams);
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport));

        let mut failure = None;
        let mut bound = None;
        for candidate in candidates {
            match quinn::Endpoint::server(server_config.clone(), candidate) {
                Ok(endpoint) => {
                    bound = Some((endpoint, candidate));
                    break;
                }
                Err(source) => failure = Some((candidate, source)),
            }
        }
        let (endpoint, addr) = match (bound, failure) {
            (Some(bound), _) => bound,
            (None, Some((addr, source))) => return Err(QuicError::Bind { addr, source }),
            (None, None) => {
                return Err(QuicError::Resolve(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "resolved to no address",
                )));
            }
        };
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| QuicError::Bind { addr, source })?;

        let config = hub.config();
        let settings = Arc::new(Settings {
            hub: hub.clone(),
            handshake_timeout: admission.handshake_timeout(),
            admission,
            request_streams: self.request_streams,
            request_timeout: self
                .request_timeout
                .unwrap_or(config.rpc_deadline + Duration::from_secs(5)),
            close_linger: self.close_linger.min(config.drain_timeout / 2),
            webtransport: self.webtransport,
        });
        let (done_tx, done_rx) = watch::channel(false);
        tokio::spawn(accept_loop(endpoint.clone(), settings, done_tx));
        tracing::info!(addr = %local_addr, "QUIC listener ready");
        Ok(QuicServer {
            endpoint,
            local_addr,
            identity,
            done: done_rx,
        })
    }
}

/// A running QUIC listener.
///
/// It serves until the hub shuts down ([`Hub::shutdown`]): then it refuses
/// new connections, lets the hub close the open ones (going away, code 1,
/// after their queued messages), and finishes.
#[derive(Debug)]
pub struct QuicServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    identity: Identity,
    done: watch::Receiver<bool>,
}

impl QuicServer {
    /// Starts configuring a server for `hub`; [`QuicServerBuilder::bind`]
    /// binds it.
    pub fn builder(hub: Hub) -> QuicServerBuilder {
        QuicServerBuilder::new(hub)
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The certificate (and key) the server presents.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The certificate chain as PEM, for clients to trust.
    pub fn cert_pem(&self) -> String {
        self.identity.cert_pem()
    }

    /// Writes the certificate chain as PEM to `path`.
    pub fn write_cert_pem(&self, path: &Path) -> Result<(), QuicError> {
        Ok(self.identity.write_cert_pem(path)?)
    }

    /// QUIC connections the endpoint holds now (handshaking, open or
    /// closing).
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Resolves once the server has stopped: after the hub's shutdown began
    /// and every connection it served is closed.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            let _ = done.wait_for(|done| *done).await;
        }
    }

    /// Serves until the server has stopped ([`QuicServer::closed`]): the
    /// same shape as the WebSocket server's `serve`. The endpoint accepts
    /// from [`QuicServerBuilder::bind`] on, whether or not this is awaited.
    pub async fn serve(self) {
        self.closed().await;
    }
}

/// The endpoint as the accept loop's [`Listener`].
struct EndpointAccept(quinn::Endpoint);

impl Listener for EndpointAccept {
    type Incoming = quinn::Incoming;

    async fn accept(&mut self) -> Option<std::io::Result<quinn::Incoming>> {
        self.0.accept().await.map(Ok)
    }

    fn refuse(&mut self, incoming: quinn::Incoming, refusal: Refusal) {
        tracing::debug!(peer = %incoming.remote_address(), %refusal, "connection refused");
        incoming.refuse();
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    settings: Arc<Settings>,
    done: watch::Sender<bool>,
) {
    let hub = settings.hub.clone();
    let limit = settings.admission.limit().clone();
    // After the shutdown began: refuse newcomers while the hub closes the
    // connections this loop started, then stop.
    AcceptLoop::new(&hub, limit)
        .drain(true)
        .run(EndpointAccept(endpoint.clone()), |incoming| {
            conn::handle(incoming, settings.clone())
        })
        .await;
    endpoint.set_server_config(None);
    let _ = tokio::time::timeout(settings.close_linger, endpoint.wait_idle()).await;
    tracing::info!("QUIC listener stopped");
    let _ = done.send(true);
}
