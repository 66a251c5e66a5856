//! The transport kit: what every transport needs to admit a connection
//! before it hands it to [`Hub::serve`](crate::Hub::serve).
//!
//! - [`Handshake`]: what the server knows of a client when it decides
//!   whether to let it in: peer address, negotiated codec, transport name,
//!   and, where the transport has them, the HTTP request's URI (query
//!   parameters), headers and extensions (WebSocket, docs/PROTOCOL.md §4)
//!   or the ALPN, TLS server name and verified client certificates (QUIC,
//!   docs/PROTOCOL.md §5).
//! - [`Rejection`]: an application's refusal, with an HTTP status for
//!   transports that answer HTTP and a [`CloseKind`]
//!   for those that close a connection instead
//!   ([`Rejection::close_kind`]).
//! - [`AuthHook`]: the one authentication hook type: a [`Handshake`] in,
//!   the connection's [`DataMap`](crate::DataMap) or a
//!   [`Rejection`] out.
//! - [`Admission`]: the per-connection rules (shutdown, connection limit,
//!   handshake timeout, authentication), and [`AcceptLoop`], the
//!   shutdown-aware accept loop over any [`Listener`].
//! - [`Identity`]: a server certificate chain and key (PEM files, DER, or
//!   self-signed for development with the `self-signed` feature), the TLS
//!   identity every TLS transport takes.
//!
//! A transport built on the kit:
//!
//! ```
//! use signalbox::transport::{AcceptLoop, Admission, Handshake, Listener, Refusal};
//! use signalbox::Router;
//! use tokio::sync::mpsc;
//!
//! /// Incoming "connections" from a channel, for the example.
//! struct Channel(mpsc::Receiver<u32>);
//!
//! impl Listener for Channel {
//!     type Incoming = u32;
//!     async fn accept(&mut self) -> Option<std::io::Result<u32>> {
//!         self.0.recv().await.map(Ok)
//!     }
//!     fn refuse(&mut self, incoming: u32, refusal: Refusal) {
//!         println!("refused {incoming}: {refusal}");
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let hub = Router::new().build();
//! let admission = Admission::builder(hub.clone()).max_connections(100).build();
//! let (tx, rx) = mpsc::channel(8);
//! let accept = AcceptLoop::new(&hub, admission.limit().clone());
//! let served = tokio::spawn(accept.run(Channel(rx), move |incoming| {
//!     let admission = admission.clone();
//!     async move {
//!         let handshake = Handshake::new("example", signalbox::codec::WireCodec::new(signalbox::codec::Format::Json, false));
//!         // The handshake proper would run in `admission.within_handshake(…)`.
//!         let data = admission.authenticate(handshake).await;
//!         assert!(data.is_ok(), "no hook: everyone is let in ({incoming})");
//!         // … then hand the connection to `hub.serve(…)`; the loop holds
//!         // the connection's place under the limit until this ends.
//!     }
//! }));
//! tx.send(1).await.unwrap();
//! hub.shutdown().await;
//! served.await.unwrap();
//! # });
//! ```

mod admission;
mod auth;
mod handshake;
mod identity;
mod rejection;

pub use admission::{
    AcceptLoop, Admission, AdmissionBuilder, ConnectionLimit, ConnectionPermit,
    DEFAULT_ACCEPT_RETRY, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HandshakeTimedOut,
    Listener, Refusal,
};
pub use auth::{AuthFuture, AuthHook};
pub use handshake::Handshake;
#[cfg(feature = "self-signed")]
pub use identity::SELF_SIGNED_VALIDITY;
pub use identity::{DEFAULT_SELF_SIGNED_NAMES, Identity, IdentityError, certs_from_pem};
pub use rejection::Rejection;

// The seam a transport hands connections through (docs/ARCHITECTURE.md).
pub use crate::connection::{
    Close, CloseKind, Connection, ConnectionInfo, Frame, FrameSink, FrameSource, Inbound,
    IncompleteBudget, IncompleteLimits, IncompleteRefusal, PeerClose, RefusedMessage, ReplyTo,
    Reservation, TransportError,
};

/// The `http` crate, whose types [`Handshake`] and [`Rejection`] use.
pub use http;
/// The certificate and key types of [`Identity`] and
/// [`Handshake::client_certs`].
pub use rustls_pki_types as pki_types;
