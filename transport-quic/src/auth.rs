//! What the handshake reveals, and the hook that turns it into
//! per-connection data or a refusal.

use rustls_pki_types::CertificateDer;
use signalbox::codec::WireCodec;
use signalbox::connection::DataMap;
use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// What the server knows about a client once the QUIC handshake is done
/// (docs/PROTOCOL.md §5). Tokens travel in the first message, not here.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The client's address at the handshake.
    pub peer_addr: SocketAddr,
    /// The ALPN the client and server agreed on (`signalbox/json`, …).
    pub alpn: String,
    /// The codec that ALPN selects.
    pub codec: WireCodec,
    /// The server name the client asked for (TLS SNI), if it sent one.
    pub server_name: Option<String>,
    /// The client's certificate chain, leaf first; empty when the client
    /// sent none. Present only when the server asks for client
    /// certificates ([`ClientAuth`](crate::ClientAuth)), and then already
    /// verified against the configured roots.
    pub client_certs: Arc<[CertificateDer<'static>]>,
}

/// An authentication hook's refusal: the connection is closed with the
/// policy code (3) and this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    reason: Cow<'static, str>,
}

impl Rejection {
    /// A refusal with a reason for the peer.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

type AuthFuture = Pin<Box<dyn Future<Output = Result<DataMap, Rejection>> + Send>>;

/// A boxed authentication hook.
pub(crate) type AuthHook = Arc<dyn Fn(Handshake) -> AuthFuture + Send + Sync>;

pub(crate) fn boxed<F, Fut>(hook: F) -> AuthHook
where
    F: Fn(Handshake) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<DataMap, Rejection>> + Send + 'static,
{
    Arc::new(move |handshake| Box::pin(hook(handshake)))
}
