//! The upgrade: checks, codec negotiation, authentication, then the hand-off
//! of the upgraded stream to the hub. Shared by the standalone server and
//! the axum integration.

use crate::metered::{Meter, Metered};
use crate::stream::{self, Buffers, Linger};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use signalbox::Hub;
use signalbox::codec::{Negotiation, WireCodec};
use signalbox::connection::{Connection, ConnectionInfo, DataMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The default [`UpgraderBuilder::handshake_timeout`] (docs/PROTOCOL.md §4).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`UpgraderBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

/// What an authentication hook sees of the upgrade request.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    /// The request headers (`Authorization`, `Cookie`, `Origin`, …).
    pub headers: HeaderMap,
    /// The request URI, with its query.
    pub uri: Uri,
    /// The request's extensions: what the HTTP stack in front of the
    /// upgrade put there. Mounted in an axum application (the `axum`
    /// module), that is every value a tower or axum layer inserted — an
    /// authenticated user, say — so an authentication done by a layer
    /// reaches the hook, which moves it into the connection's data (see
    /// [`HandshakeRequest::extension`]). The standalone server
    /// ([`crate::WsServer`]) has no layers: there it holds only what hyper
    /// itself inserts.
    pub extensions: http::Extensions,
    /// The peer's address, when known.
    pub peer_addr: Option<SocketAddr>,
    /// The codec negotiated for the connection.
    pub codec: WireCodec,
}

impl HandshakeRequest {
    /// The first value of query parameter `name`, percent-decoded
    /// (`?token=abc` → `Some("abc")`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.uri.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request extension of type `T`, if a layer inserted one
    /// (see [`HandshakeRequest::extensions`]).
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An upgrade refused by the application: the HTTP response to send instead.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The status (default for authentication: 401).
    pub status: StatusCode,
    /// Extra headers (`WWW-Authenticate`, …).
    pub headers: HeaderMap,
    /// The body, as plain text.
    pub body: Bytes,
}

impl Rejection {
    /// A rejection with `status` and the status's reason as body.
    pub fn new(status: StatusCode) -> Self {
        Rejection {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from_static(status.canonical_reason().unwrap_or("").as_bytes()),
        }
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Rejection::new(StatusCode::UNAUTHORIZED)
    }

    /// 403 Forbidden.
    pub fn forbidden() -> Self {
        Rejection::new(StatusCode::FORBIDDEN)
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    fn into_response(self) -> Response<Bytes> {
        let mut response = text_response(self.status, self.body);
        response.headers_mut().extend(self.headers);
        response
    }
}

impl From<StatusCode> for Rejection {
    fn from(status: StatusCode) -> Self {
        Rejection::new(status)
    }
}

type AuthHook =
    dyn Fn(HandshakeRequest) -> BoxFuture<'static, Result<DataMap, Rejection>> + Send + Sync;

/// Builds an [`Upgrader`].
pub struct UpgraderBuilder {
    hub: Hub,
    origins: Option<Vec<String>>,
    auth: Option<Arc<AuthHook>>,
    max_connections: usize,
    handshake_timeout: Duration,
    buffers: Buffers,
}

impl std::fmt::Debug for UpgraderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgraderBuilder")
            .field("origins", &self.origins)
            .field("auth", &self.auth.is_some())
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("buffers", &self.buffers)
            .finish()
    }
}

impl UpgraderBuilder {
    /// Accepts upgrades only from pages of these origins
    /// (`https://chat.example.com`); others get HTTP 403. A request without
    /// an `Origin` header (a non-browser client) is let through: the check
    /// protects browsers' users from other sites, nothing more. Default:
    /// every origin.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Authenticates each upgrade: `Ok(data)` starts the connection with
    /// `data` (see [`signalbox::Conn::data`]); `Err(rejection)` answers the
    /// rejection's HTTP status (401 with [`Rejection::unauthorized`]) and
    /// the connection never reaches a handler.
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DataMap, Rejection>> + Send + 'static,
    {
        self.auth = Some(Arc::new(move |req| Box::pin(hook(req))));
        self
    }

    /// WebSocket connections served at once; past it upgrades get HTTP 503.
    /// Default [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// How long the upgrade may take, from the first byte of the request
    /// (standalone server) or from the answer 101 (axum) to a WebSocket
    /// ready. Default [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Per-connection buffer sizes. Default [`Buffers::default`].
    pub fn buffers(mut self, buffers: Buffers) -> Self {
        self.buffers = buffers;
        self
    }

    /// Builds the upgrader.
    pub fn build(self) -> Upgrader {
        Upgrader {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(self.max_connections)),
                max_connections: self.max_connections,
                hub: self.hub,
                origins: self.origins,
                auth: self.auth,
                handshake_timeout: self.handshake_timeout,
                buffers: self.buffers,
            }),
        }
    }
}

struct Inner {
    hub: Hub,
    origins: Option<Vec<String>>,
    auth: Option<Arc<AuthHook>>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    handshake_timeout: Duration,
    buffers: Buffers,
}

/// Turns HTTP upgrade requests into hub connections (docs/PROTOCOL.md §4): checks
/// the request, the origin and the connection limit, negotiates the codec
/// from `Sec-WebSocket-Protocol`, runs the authentication hook, answers 101
/// and hands the WebSocket to [`Hub::serve`].
///
/// Works with any hyper 1 server that serves connections with upgrades
/// enabled; [`crate::WsServer`] and the `axum` module (feature `axum`) use it.
#[derive(Clone)]
pub struct Upgrader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Upgrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrader")
            .field("hub", &self.inner.hub)
            .field("open", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Upgrader {
    /// Starts building an upgrader for `hub`.
    pub fn builder(hub: Hub) -> UpgraderBuilder {
        UpgraderBuilder {
            hub,
            origins: None,
            auth: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            buffers: Buffers::default(),
        }
    }

    /// The hub connections go to.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }

    /// WebSocket connections this upgrader is serving now.
    pub fn connection_count(&self) -> usize {
        self.inner
            .max_connections
            .saturating_sub(self.inner.permits.available_permits())
    }

    /// Answers one upgrade request. On success the answer is `101
    /// Switching Protocols` and a task serves the connection once the HTTP
    /// server hands over the upgraded stream; otherwise it is the refusal:
    /// 426 (not an upgrade), 400 (bad upgrade, or only unknown codecs
    /// offered), 403 (origin), 503 (full or shutting down), or the
    /// authentication hook's status.
    pub async fn upgrade<B>(
        &self,
        mut req: Request<B>,
        peer_addr: Option<SocketAddr>,
    ) -> Response<Bytes> {
        let inner = &self.inner;
        let key = match check_upgrade(&req) {
            Ok(key) => key,
            Err(response) => return *response,
        };
        if let (Some(origins), Some(origin)) = (&inner.origins, req.headers().get(header::ORIGIN)) {
            let allowed = origin
                .to_str()
                .is_ok_and(|o| origins.iter().any(|a| a.eq_ignore_ascii_case(o)));
            if !allowed {
                return text_response(StatusCode::FORBIDDEN, "origin not allowed");
            }
        }
        let offers: Vec<String> = req
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        let codecs = inner.hub.codecs();
        let (codec, answer) = match codecs.negotiate(offers.iter().map(String::as_str)) {
            Negotiation::Default(codec) => (codec, None),
            Negotiation::Picked(codec) => (codec, Some(codec.name())),
            Negotiation::Refused => {
                let names = codecs.names().join(", ");
                return text_response(
                    StatusCode::BAD_REQUEST,
                    format!("no supported subprotocol offered ({names})"),
                );
            }
        };
        if inner.hub.is_shutting_down() {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "server shutting down");
        }
        let Ok(permit) = inner.permits.clone().try_acquire_owned() else {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
        };
        // Taken before the hook runs, so the extensions the hook receives
        // do not carry hyper's upgrade handle.
        let on_upgrade = hyper::upgrade::on(&mut req);
        let data = match &inner.auth {
            None => DataMap::new(),
            Some(hook) => {
                // An upgrade request has no body: the request's parts are
                // all the hook can use, and they are moved, not copied.
                let (parts, _body) = req.into_parts();
                let request = HandshakeRequest {
                    headers: parts.headers,
                    uri: parts.uri,
                    extensions: parts.extensions,
                    peer_addr,
                    codec,
                };
                match hook(request).await {
                    Ok(data) => data,
                    Err(rejection) => return rejection.into_response(),
                }
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            let upgraded =
                match tokio::time::timeout(this.inner.handshake_timeout, on_upgrade).await {
                    Ok(Ok(upgraded)) => upgraded,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "upgrade failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("upgrade not completed within the handshake timeout");
                        return;
                    }
                };
            this.serve(TokioIo::new(upgraded), codec, peer_addr, data, permit)
                .await;
        });
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(name) = answer {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(name),
            );
        }
        response
    }

    async fn serve<S>(
        &self,
        io: S,
        codec: WireCodec,
        peer_addr: Option<SocketAddr>,
        data: DataMap,
        permit: OwnedSemaphorePermit,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let hub = &self.inner.hub;
        let codec = hub.codec(codec);
        let config = stream::websocket_config(codec.limits(), self.inner.buffers);
        // The bytes of incomplete messages count against the hub's budget
        // (docs/PROTOCOL.md §4, "Incomplete messages").
        let meter = Meter::new(hub.incomplete_budget().reserve());
        let io = Metered::new(io, meter.clone());
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (source, sink) = stream::split(ws, &codec);
        let source = source.metered(meter);
        // Every close the server starts waits for the client's close
        // (docs/PROTOCOL.md §4, "Closing").
        let hub_config = hub.config();
        let sink = sink.with_linger(Linger {
            time: hub_config.close_linger,
            bytes: hub_config.close_drain_bytes,
        });
        let connection = Connection {
            info: ConnectionInfo {
                transport: "ws",
                peer_addr,
                codec,
            },
            data,
            source: Box::new(source),
            sink: Box::new(sink),
        };
        hub.serve(connection).await;
        drop(permit);
    }
}

/// Checks the upgrade headers of RFC 6455 §4.2.1; returns the key.
fn check_upgrade<B>(req: &Request<B>) -> Result<String, Box<Response<Bytes>>> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        let mut response =
            text_response(StatusCode::UPGRADE_REQUIRED, "expected a WebSocket upgrade");
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return Err(Box::new(response));
    }
    if req.method() != Method::GET {
        return Err(Box::new(text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "upgrade with GET",
        )));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = text_response(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only");
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(response));
    }
    match headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
    {
        Some(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
        _ => Err(Box::new(text_response(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        ))),
    }
}

/// A plain-text response.
pub(crate) fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_percent_decoded() {
        let req = HandshakeRequest {
            headers: HeaderMap::new(),
            uri: "/ws?a=1&token=x%2By+z&empty".parse().unwrap(),
            extensions: http::Extensions::new(),
            peer_addr: None,
            codec: WireCodec::from_name("json").unwrap(),
        };
        assert_eq!(req.query_param("token").as_deref(), Some("x+y z"));
        assert_eq!(req.query_param("a").as_deref(), Some("1"));
        assert_eq!(req.query_param("empty").as_deref(), Some(""));
        assert_eq!(req.query_param("none"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
