//! The QUIC listener: a quinn endpoint that hands each connection to a hub.

use crate::auth::{self, AuthHook, Handshake, Rejection};
use crate::conn;
use crate::error::QuicError;
use crate::tls::{self, Identity};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::RootCertStore;
use signalbox::Hub;
use signalbox::connection::DataMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

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

/// Per-connection settings shared by every connection of one server.
pub(crate) struct Settings {
    pub(crate) hub: Hub,
    pub(crate) handshake_timeout: Duration,
    pub(crate) request_streams: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) close_linger: Duration,
    pub(crate) auth: Option<AuthHook>,
}

/// Configures a [`QuicServer`]; every setting has a default.
pub struct QuicServerBuilder {
    bind: SocketAddr,
    identity: Option<Identity>,
    extra_names: Vec<String>,
    max_connections: usize,
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    handshake_timeout: Duration,
    request_streams: u32,
    request_timeout: Option<Duration>,
    close_linger: Duration,
    client_auth: ClientAuth,
    auth: Option<AuthHook>,
}

impl std::fmt::Debug for QuicServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicServerBuilder")
            .field("bind", &self.bind)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("request_streams", &self.request_streams)
            .finish_non_exhaustive()
    }
}

impl QuicServerBuilder {
    fn new(bind: SocketAddr) -> Self {
        QuicServerBuilder {
            bind,
            identity: None,
            extra_names: Vec::new(),
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            handshake_timeout: Duration::from_secs(10),
            request_streams: 16,
            request_timeout: None,
            close_linger: Duration::from_secs(1),
            client_auth: ClientAuth::None,
            auth: None,
        }
    }

    /// Serves this certificate instead of generating a self-signed one.
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
    /// (CONNECTION_REFUSED) during the handshake. Default 10,000.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
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
    /// Default 10 s. (A connection whose client has not sent yet is idle,
    /// not late: QUIC's idle timeout watches it.)
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
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

    /// Asks clients for certificates; the verified chain reaches the
    /// [`authenticate`](Self::authenticate) hook.
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// Runs `hook` after each handshake: `Ok(data)` lets the client in with
    /// `data` as its connection's data, `Err` closes the connection with
    /// the policy code (3).
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DataMap, Rejection>> + Send + 'static,
    {
        self.auth = Some(auth::boxed(hook));
        self
    }

    /// Binds the UDP socket and starts serving connections to `hub`. Must be
    /// called inside a tokio runtime. The server stops accepting when the
    /// hub's shutdown begins; see [`QuicServer::closed`].
    pub fn start(self, hub: &Hub) -> Result<QuicServer, QuicError> {
        let identity = match self.identity {
            Some(identity) => identity,
            None => Identity::self_signed(&self.extra_names)?,
        };
        if self.max_connections == 0 {
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
        let crypto = QuicServerConfig::try_from(crypto)
            .map_err(|e| QuicError::Certificate(e.to_string()))?;

        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(
                self.request_streams.saturating_add(1),
            ))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
            .datagram_receive_buffer_size(None);
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport));

        let endpoint = quinn::Endpoint::server(server_config, self.bind).map_err(|source| {
            QuicError::Bind {
                addr: self.bind,
                source,
            }
        })?;
        let local_addr = endpoint.local_addr().map_err(|source| QuicError::Bind {
            addr: self.bind,
            source,
        })?;

        let config = hub.config();
        let settings = Arc::new(Settings {
            hub: hub.clone(),
            handshake_timeout: self.handshake_timeout,
            request_streams: self.request_streams,
            request_timeout: self
                .request_timeout
                .unwrap_or(config.rpc_deadline + Duration::from_secs(5)),
            close_linger: self.close_linger.min(config.drain_timeout / 2),
            auth: self.auth,
        });
        let (done_tx, done_rx) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(self.max_connections));
        tokio::spawn(accept_loop(endpoint.clone(), settings, limit, done_tx));
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
    /// Starts configuring a server on `bind` (port 0 picks a free port).
    pub fn builder(bind: SocketAddr) -> QuicServerBuilder {
        QuicServerBuilder::new(bind)
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
        self.identity.write_cert_pem(path)
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
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    settings: Arc<Settings>,
    limit: Arc<Semaphore>,
    done: watch::Sender<bool>,
) {
    let shutdown = settings.hub.shutdown_started();
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let incoming = tokio::select! {
            biased;
            () = &mut shutdown => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let settings = settings.clone();
                connections.spawn(async move {
                    conn::handle(incoming, settings).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::debug!(peer = %incoming.remote_address(), "connection limit reached; refused");
                incoming.refuse();
            }
        }
    }
    // Shutting down: refuse newcomers while the hub closes the others.
    tracing::debug!(open = connections.len(), "QUIC listener draining");
    loop {
        tokio::select! {
            joined = connections.join_next() => if joined.is_none() { break },
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming.refuse(),
                None => break,
            },
        }
    }
    endpoint.set_server_config(None);
    let _ = tokio::time::timeout(settings.close_linger, endpoint.wait_idle()).await;
    tracing::info!("QUIC listener stopped");
    let _ = done.send(true);
}
