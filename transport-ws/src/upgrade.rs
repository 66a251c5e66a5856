//! The upgrade: checks, codec negotiation, authentication, then the hand-off
//! of the upgraded stream to the hub. Shared by the standalone server and
//! the axum integration.

use crate::metered::{Meter, Metered};
use crate::read_ahead::ReadAhead;
use crate::stream::{self, Buffers, Linger};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use signalbox::DataMap;
use signalbox::Hub;
use signalbox::codec::{Negotiation, WireCodec};
use signalbox::transport::{Admission, AdmissionBuilder, ConnectionPermit, Handshake, Rejection};
use signalbox::transport::{Connection, ConnectionInfo};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The transport's name in [`Handshake::transport`] and
/// [`ConnectionInfo::transport`].
const TRANSPORT: &str = "ws";

/// The default [`UpgraderBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

/// Builds an [`Upgrader`].
pub struct UpgraderBuilder {
    admission: AdmissionBuilder,
    origins: Option<Vec<String>>,
    buffers: Buffers,
}

impl std::fmt::Debug for UpgraderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgraderBuilder")
            .field("origins", &self.origins)
            .field("admission", &self.admission)
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

    /// Authenticates each upgrade: the hook sees the request as a
    /// [`Handshake`] (URI, headers, extensions, peer address, codec);
    /// `Ok(data)` starts the connection with `data` (see
    /// [`signalbox::ConnectionHandle::data`]); `Err(rejection)` answers the rejection's
    /// HTTP status, headers and body (401 with [`Rejection::unauthorized`])
    /// and the connection never reaches a handler. A hook that has not
    /// answered within the handshake timeout is answered 408
    /// ([`Rejection::auth_timed_out`]); in the standalone server
    /// ([`crate::WsServer`]) the connection's own handshake timeout, which
    /// started at accept, ends it first, without an answer.
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DataMap, Rejection>> + Send + 'static,
    {
        self.admission = self.admission.authenticate(hook);
        self
    }

    /// WebSocket connections served at once; past it upgrades get HTTP 503.
    /// Default [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.admission = self.admission.max_connections(max);
        self
    }

    /// How long the upgrade may take, from the first byte of the request
    /// (standalone server) or from the answer 101 (axum) to a WebSocket
    /// ready; the authentication hook gets as long again. Default
    /// [`signalbox::transport::DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.admission = self.admission.handshake_timeout(timeout);
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
                admission: self.admission.build(),
                origins: self.origins,
                buffers: self.buffers,
            }),
        }
    }
}

struct Inner {
    admission: Admission,
    origins: Option<Vec<String>>,
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
            .field("hub", self.hub())
            .field("open", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Upgrader {
    /// Starts building an upgrader for `hub`.
    pub fn builder(hub: Hub) -> UpgraderBuilder {
        UpgraderBuilder {
            admission: Admission::builder(hub).max_connections(DEFAULT_MAX_CONNECTIONS),
            origins: None,
            buffers: Buffers::default(),
        }
    }

    /// The hub connections go to.
    pub fn hub(&self) -> &Hub {
        self.inner.admission.hub()
    }

    /// The admission rules (connection limit, handshake timeout,
    /// authentication hook).
    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.inner.admission.handshake_timeout()
    }

    /// WebSocket connections this upgrader is serving now.
    pub fn connection_count(&self) -> usize {
        self.inner.admission.connection_count()
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
        let admission = &inner.admission;
        let codecs = admission.hub().codecs();
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
        let permit = match admission.admit() {
            Ok(permit) => permit,
            Err(refusal) => return rejection_response(refusal.to_rejection()),
        };
        // Taken before the hook runs, so the extensions the hook receives
        // do not carry hyper's upgrade handle.
        let on_upgrade = hyper::upgrade::on(&mut req);
        let data = if admission.has_auth_hook() {
            // An upgrade request has no body: the request's parts are all
            // the hook can use, and they are moved, not copied.
            let (parts, _body) = req.into_parts();
            let mut handshake = Handshake::new(TRANSPORT, codec);
            handshake.peer_addr = peer_addr;
            handshake.uri = Some(parts.uri);
            handshake.headers = parts.headers;
            handshake.extensions = parts.extensions;
            match admission.authenticate(handshake).await {
                Ok(data) => data,
                Err(rejection) => return rejection_response(rejection),
            }
        } else {
            DataMap::new()
        };
        let this = self.clone();
        tokio::spawn(async move {
            let upgraded = match this.inner.admission.within_handshake(on_upgrade).await {
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
        permit: ConnectionPermit,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let hub = self.hub();
        let codec = hub.codec(codec);
        let config = stream::framed_config(codec.limits(), self.inner.buffers);
        // The bytes of incomplete messages count against the hub's budget
        // (docs/PROTOCOL.md §4, "Incomplete messages").
        let meter = Meter::new(hub.incomplete_budget().reserve());
        let io = ReadAhead::new(Metered::new(io, meter.clone()), self.inner.buffers.read);
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
                transport: TRANSPORT,
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

/// The HTTP answer to a refused upgrade.
pub(crate) fn rejection_response(rejection: Rejection) -> Response<Bytes> {
    let mut response = text_response(rejection.status, rejection.body);
    response.headers_mut().extend(rejection.headers);
    response
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
