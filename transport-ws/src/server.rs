//! The standalone listener: TCP (optionally TLS), HTTP/1.1 with upgrades,
//! the WebSocket path, a few static files and, on request, the health
//! endpoints.

use crate::stream::Buffers;
use crate::tls::{self, TlsError};
use crate::upgrade::{Upgrader, UpgraderBuilder, text_response};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use signalbox::DataMap;
use signalbox::Hub;
use signalbox::transport::{
    AcceptLoop, ConnectionLimit, Handshake, Identity, Listener, Refusal, Rejection,
};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_rustls::TlsAcceptor;

/// The default [`WsServerBuilder::max_pending`].
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// The default [`WsServerBuilder::max_header_size`]: 16 KiB, room for any
/// real browser's upgrade request with its cookies. hyper's own default
/// (about 400 KiB) lets each unfinished request hold that much.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;

/// The least [`WsServerBuilder::max_header_size`] hyper accepts.
pub const MIN_MAX_HEADER_SIZE: usize = 8 * 1024;

/// A failure to start or run the listener.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be resolved or bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address (the last one tried, when it resolved to several).
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS identity could not be made into a configuration.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// How the server gets its TLS configuration.
enum TlsSetup {
    Identity(Identity),
    Config(Arc<rustls::ServerConfig>),
}

/// The paths of the health endpoints ([`WsServerBuilder::health`]).
///
/// - **Liveness** (`GET /healthz` by default): `200 live` whenever the
///   listener answers HTTP, also while the broker is down and while the
///   hub drains. A failing liveness check means "restart the process".
/// - **Readiness** (`GET /readyz` by default): the hub's
///   [`signalbox::Readiness`]: `200` when ready (`ready`, or `ready,
///   degraded: broker not connected` while the broker is down), `503` before
///   [`signalbox::Hub::set_ready`] (`starting`) and from the moment
///   [`signalbox::Hub::shutdown`] begins (`draining`), through the hub's
///   drain delay, until the listener stops. A failing readiness check means
///   "send no new connections here".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPaths {
    /// The liveness path. Default `/healthz`.
    pub live: String,
    /// The readiness path. Default `/readyz`.
    pub ready: String,
}

impl Default for HealthPaths {
    fn default() -> Self {
        HealthPaths {
            live: "/healthz".to_owned(),
            ready: "/readyz".to_owned(),
        }
    }
}

struct StaticFile {
    content_type: HeaderValue,
    body: Bytes,
}

/// Configures and binds a [`WsServer`].
pub struct WsServerBuilder {
    upgrader: UpgraderBuilder,
    path: String,
    statics: HashMap<String, StaticFile>,
    tls: Option<TlsSetup>,
    max_pending: usize,
    max_header_size: usize,
    health: Option<HealthPaths>,
}

impl std::fmt::Debug for WsServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsServerBuilder")
            .field("upgrader", &self.upgrader)
            .field("path", &self.path)
            .field("statics", &self.statics.keys().collect::<Vec<_>>())
            .field("tls", &self.tls.is_some())
            .field("max_pending", &self.max_pending)
            .field("max_header_size", &self.max_header_size)
            .field("health", &self.health)
            .finish()
    }
}

impl WsServerBuilder {
    /// The WebSocket path. Default `/ws`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Serves `body` at `path` (GET and HEAD) with `content_type`: a web
    /// page, its scripts. Any other path but the WebSocket one is 404.
    pub fn static_file(
        mut self,
        path: impl Into<String>,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Self {
        self.statics.insert(
            path.into(),
            StaticFile {
                content_type: HeaderValue::from_static(content_type),
                body: body.into(),
            },
        );
        self
    }

    /// Serves the liveness and readiness endpoints at `paths` (GET and
    /// HEAD; see [`HealthPaths`] for what they answer). Off by default.
    /// Readiness stays `503 starting` until the application calls
    /// [`signalbox::Hub::set_ready`].
    pub fn health(mut self, paths: HealthPaths) -> Self {
        self.health = Some(paths);
        self
    }

    /// See [`UpgraderBuilder::allowed_origins`].
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.upgrader = self.upgrader.allowed_origins(origins);
        self
    }

    /// See [`UpgraderBuilder::authenticate`].
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DataMap, Rejection>> + Send + 'static,
    {
        self.upgrader = self.upgrader.authenticate(hook);
        self
    }

    /// See [`UpgraderBuilder::max_connections`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.upgrader = self.upgrader.max_connections(max);
        self
    }

    /// TCP connections accepted that have not finished their upgrade (or
    /// are serving static files); past it new ones are closed at once.
    /// Default [`DEFAULT_MAX_PENDING`].
    pub fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// The largest HTTP request head (request line and headers) read
    /// before the upgrade; a longer one is answered 431 and the connection
    /// closed (hyper checks the size between reads, so a head is refused by
    /// twice this at the latest). Default [`DEFAULT_MAX_HEADER_SIZE`]; values below
    /// [`MIN_MAX_HEADER_SIZE`] are raised to it.
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes.max(MIN_MAX_HEADER_SIZE);
        self
    }

    /// How long a TCP connection may take, from accept, to complete its TLS
    /// handshake and WebSocket upgrade; a connection still without one is
    /// dropped (a plain HTTP connection too, after serving what it asked
    /// for). Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.upgrader = self.upgrader.handshake_timeout(timeout);
        self
    }

    /// See [`UpgraderBuilder::buffers`].
    pub fn buffers(mut self, buffers: Buffers) -> Self {
        self.upgrader = self.upgrader.buffers(buffers);
        self
    }

    /// Serves TLS (`wss://`, `https://`) with `identity` (from PEM files,
    /// or self-signed for development: [`Identity`]), the same identity
    /// type the QUIC transport takes; the configuration is
    /// [`tls::server_config`]'s (TLS 1.2 and 1.3, ALPN `http/1.1`).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.tls = Some(TlsSetup::Identity(identity));
        self
    }

    /// Serves TLS with a rustls configuration made elsewhere (client
    /// certificates, other protocol versions, a certificate resolver), in
    /// place of [`identity`](Self::identity).
    pub fn tls_config(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsSetup::Config(config));
        self
    }

    /// Binds `addr` (`"127.0.0.1:0"` picks a free port; see
    /// [`WsServer::local_addr`]); a name that resolves to several addresses
    /// binds the first that can be bound.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<WsServer, ServerError> {
        let tls = match self.tls {
            None => None,
            Some(TlsSetup::Config(config)) => Some(config),
            Some(TlsSetup::Identity(identity)) => Some(tls::server_config(&identity)?),
        };
        let (listener, local_addr) = bind_tcp(addr).await?;
        Ok(WsServer {
            listener,
            local_addr,
            shared: Arc::new(Shared {
                upgrader: self.upgrader.build(),
                path: self.path,
                statics: self.statics,
                max_header_size: self.max_header_size,
                health: self.health,
            }),
            tls: tls.map(TlsAcceptor::from),
            pending: ConnectionLimit::new(self.max_pending),
        })
    }
}

/// Binds the first of `addr`'s addresses that can be bound.
async fn bind_tcp(addr: impl ToSocketAddrs) -> Result<(TcpListener, SocketAddr), ServerError> {
    let failed = |addr: String| move |source| ServerError::Bind { addr, source };
    let mut last = None;
    for candidate in tokio::net::lookup_host(addr)
        .await
        .map_err(failed("address".to_owned()))?
    {
        match TcpListener::bind(candidate).await {
            Ok(listener) => {
                let local = listener
                    .local_addr()
                    .map_err(failed(candidate.to_string()))?;
                return Ok((listener, local));
            }
            Err(source) => last = Some((candidate, source)),
        }
    }
    Err(match last {
        Some((candidate, source)) => failed(candidate.to_string())(source),
        None => failed("address".to_owned())(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "resolved to no address",
        )),
    })
}

struct Shared {
    upgrader: Upgrader,
    path: String,
    statics: HashMap<String, StaticFile>,
    max_header_size: usize,
    health: Option<HealthPaths>,
}

/// A bound WebSocket listener for one hub; [`WsServer::serve`] runs it.
pub struct WsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    pending: ConnectionLimit,
}

impl std::fmt::Debug for WsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsServer")
            .field("local_addr", &self.local_addr)
            .field("path", &self.shared.path)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl WsServer {
    /// Starts configuring a listener for `hub`.
    pub fn builder(hub: Hub) -> WsServerBuilder {
        WsServerBuilder {
            upgrader: Upgrader::builder(hub),
            path: "/ws".to_owned(),
            statics: HashMap::new(),
            tls: None,
            max_pending: DEFAULT_MAX_PENDING,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            health: None,
        }
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The upgrader (connection count, hub).
    pub fn upgrader(&self) -> &Upgrader {
        &self.shared.upgrader
    }

    /// Accepts connections until the hub's shutdown starts; then stops
    /// accepting and returns (the hub closes open connections with 1001
    /// after draining them: await [`Hub::shutdown`] for that). The
    /// connections still in their handshake when it returns finish it
    /// (and are refused 503) or time out.
    pub async fn serve(self) {
        let WsServer {
            listener,
            local_addr,
            shared,
            tls,
            pending,
        } = self;
        let hub = shared.upgrader.hub().clone();
        // Each TCP connection holds a place under `max_pending` until it is
        // upgraded (the upgrader's own limit takes over) or closed.
        AcceptLoop::new(&hub, pending)
            .run(TcpAccept(listener), move |(tcp, peer): (TcpStream, SocketAddr)| {
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                async move {
                    let admission = shared.upgrader.admission().clone();
                    let served = admission
                        .within_handshake(connection(shared, tls, tcp, peer))
                        .await;
                    if served.is_err() {
                        tracing::debug!(%peer, "no upgrade within the handshake timeout; dropped");
                    }
                }
            })
            .await;
        tracing::debug!(addr = %local_addr, "listener stopped");
    }
}

/// The TCP listener as the accept loop's [`Listener`].
struct TcpAccept(TcpListener);

impl Listener for TcpAccept {
    type Incoming = (TcpStream, SocketAddr);

    async fn accept(&mut self) -> Option<std::io::Result<Self::Incoming>> {
        Some(self.0.accept().await)
    }

    fn refuse(&mut self, (_tcp, peer): Self::Incoming, refusal: Refusal) {
        tracing::debug!(%peer, %refusal, "too many pending handshakes; connection dropped");
    }
}

async fn connection(
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    match tls {
        None => http(shared, tcp, peer).await,
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => http(shared, stream, peer).await,
            Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        },
    }
}

async fn http<S>(shared: Arc<Shared>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_header_size = shared.max_header_size;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(shared.handle(req, peer).await.map(Full::new)) }
    });
    // Resolves once the connection is upgraded (the upgrader's task takes
    // it from there) or closed.
    let result = hyper::server::conn::http1::Builder::new()
        .max_buf_size(max_header_size)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection failed");
    }
}

impl Shared {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Bytes> {
        let path = req.uri().path();
        if path == self.path {
            return self.upgrader.upgrade(req, Some(peer)).await;
        }
        let health = self.health.as_ref().and_then(|h| {
            if path == h.live {
                Some((StatusCode::OK, "live"))
            } else if path == h.ready {
                let readiness = self.upgrader.hub().readiness();
                let status = if readiness.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Some((status, readiness.as_str()))
            } else {
                None
            }
        });
        if health.is_none() && !self.statics.contains_key(path) {
            return text_response(StatusCode::NOT_FOUND, "not found");
        }
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "GET only");
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return response;
            }
        };
        if let Some((status, body)) = health {
            let mut response = text_response(status, if head { "" } else { body });
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return response;
        }
        let Some(file) = self.statics.get(path) else {
            return text_response(StatusCode::NOT_FOUND, "not found");
        };
        let mut response = Response::new(if head {
            Bytes::new()
        } else {
            file.body.clone()
        });
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, file.content_type.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if head {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.body.len()));
        }
        response
    }
}
