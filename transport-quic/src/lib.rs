//! QUIC transport for signalbox: a [quinn] endpoint that hands each client
//! to a [`signalbox::Hub`], next to (or instead of) the WebSocket transport.
//!
//! ```
//! use signalbox::codec::{Meta, WireCodec};
//! use signalbox::{opaque_message, Ctx, Error, Router};
//! use signalbox_quic::{roots_from_pem, QuicClient, QuicServer};
//!
//! opaque_message!(Echo = "ECHO");
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Router::new()
//!     .rpc(|ctx: Ctx<Echo>| async move { Ok::<_, Error>(ctx.into_payload()) })
//!     .build();
//! // A self-signed certificate for localhost, 127.0.0.1 and ::1 (plus any
//! // extra names); `server.write_cert_pem(path)` hands it to clients.
//! let server = QuicServer::builder(hub.clone()).bind("127.0.0.1:0").await?;
//!
//! let codec = WireCodec::from_name("msgpack").unwrap(); // ALPN signalbox/msgpack
//! let mut client = QuicClient::builder(roots_from_pem(server.cert_pem().as_bytes())?)
//!     .codec(codec)
//!     .connect(server.local_addr())
//!     .await?;
//! let meta = Meta { correlation_id: Some("r-1".into()), ..Meta::default() };
//! client.send_frame(&codec.encode("ECHO", &meta, Some("hello"))?).await?;
//! let reply = codec.decode(client.recv_frame().await?.unwrap())?;
//! assert_eq!(reply.meta.correlation_id.as_deref(), Some("r-1"));
//! assert_eq!(reply.decode_payload::<String>()?, "hello");
//!
//! hub.shutdown().await; // clients get close code 1 after their queued messages
//! assert_eq!(client.closed().await, Some(1));
//! server.closed().await;
//! # Ok(()) }
//! ```
//!
//! # The wire (docs/PROTOCOL.md §5)
//!
//! - TLS 1.3. The server presents a self-signed certificate made at start
//!   ([`Identity::self_signed`]) or the [`Identity`] it is given
//!   ([`Identity::from_pem_files`]): the transport kit's identity type,
//!   the same the WebSocket server takes.
//! - ALPN picks the codec: `signalbox/json`, `signalbox/msgpack`,
//!   `signalbox/json+gzip`, `signalbox/msgpack+gzip`, and
//!   `signalbox/<name>` for each application codec registered on the hub
//!   (`HubBuilder::codec`). Any other ALPN fails
//!   the handshake (TLS no_application_protocol, QUIC error 0x178). A
//!   client offering several gets the first in that list (TLS lets the
//!   server choose).
//! - The client opens one bidirectional stream and sends first. Both
//!   directions carry messages in order, each a 4-byte big-endian length and
//!   that many bytes of envelope ([`framing`]). A length above the hub's
//!   maximum message size closes the connection (code 2) before anything
//!   of that size is allocated.
//! - The partial frame of each stream counts against the hub's budget for
//!   incomplete messages and must complete within its timeout
//!   ([`signalbox::Config::incomplete`]); past either, code 3.
//! - Application close codes: 0 normal, 1 going away, 2 protocol violation,
//!   3 policy (authentication, slow consumer, incomplete-message budget or
//!   timeout), 4 internal error, each with a reason, in QUIC's
//!   CONNECTION_CLOSE ([`close_code`] maps the hub's close kinds).
//! - Liveness is QUIC's: the idle timeout (default 30 s) drops silent peers,
//!   and the server's keep-alives (default every 10 s) keep quiet but live
//!   ones open. No application heartbeats are needed (the core still
//!   answers `__heartbeat`).
//! - Authentication: [`QuicServerBuilder::authenticate`] sees a
//!   [`Handshake`] (peer address, ALPN, server name, verified client
//!   certificate chain when [`ClientAuth`] asks for one) and returns the
//!   connection's data, or a [`Rejection`] that closes with code 3 (its
//!   [`close_kind`](signalbox::transport::Rejection::close_kind)). Handshake, rejection and hook
//!   are the transport kit's ([`signalbox::transport`]), the same as the
//!   WebSocket server's.
//!
//! # The request-stream lane
//!
//! Optional for clients: besides its main stream a client may open more
//! bidirectional streams, each carrying exactly one framed request with a
//! `meta.correlationId`. It is handled as if sent on the main stream (same
//! connection identity, data, rooms and limits), but its progress messages
//! and its reply (or error) come back on that stream, which the server then
//! finishes. Requests on their own streams do not wait behind each other's
//! lost packets. A request stream without a correlationId, or with one
//! already pending on another request stream, gets an `ERROR` on that
//! stream, answered by the hub like any error (its clock, the router's
//! `on_error`); one left unanswered is finished without a reply after the
//! request timeout. Answers find their stream by what the hub says they
//! answer ([`signalbox::transport::Frame::reply_to`]), not by decoding.
//! See [`QuicServerBuilder::request_streams`].
//!
//! # WebTransport
//!
//! [`QuicServerBuilder::webtransport`] makes the same port serve browsers:
//! ALPN `h3`, an HTTP/3 extended CONNECT to the given path, the codec by
//! WebTransport subprotocol (else the [`CODEC_QUERY`] parameter, else
//! `json`), refusals as HTTP statuses (404 wrong path, 400 unknown codec,
//! the hook's status). The session then carries exactly the frames, lanes
//! and close codes above. Browsers trust the development certificate by its
//! hash ([`Identity::certificate_sha256`]). [`QuicClientBuilder::webtransport`]
//! connects the same way from Rust. See docs/PROTOCOL.md §5, "WebTransport".
//!
//! # Clients
//!
//! [`QuicConnector`] puts [`signalbox::client::Client`] (typed requests,
//! handlers, reconnects) on QUIC, trusting a PEM certificate (or the public
//! roots, [`public_roots`]) and asking for its codec by ALPN. [`QuicClient`] is the bare client: frames on the
//! main stream, and [`QuicClient::request`] for the request-stream lane.
//!
//! # Shutdown
//!
//! When the hub's shutdown begins the server refuses new connections, the
//! hub writes each connection's queued messages and closes it with code 1,
//! and [`QuicServer::closed`] resolves once all are gone.
//!
//! [`Identity`]: signalbox::transport::Identity
//! [`Identity::self_signed`]: signalbox::transport::Identity::self_signed
//! [`Identity::certificate_sha256`]: signalbox::transport::Identity::certificate_sha256
//! [`Identity::from_pem_files`]: signalbox::transport::Identity::from_pem_files
//! [`Handshake`]: signalbox::transport::Handshake
//! [`Rejection`]: signalbox::transport::Rejection
//! [`Rejection::close_kind`]: signalbox::transport::Rejection::close_kind
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod conn;
mod connector;
mod error;
pub mod framing;
mod lanes;
mod server;
mod session;
mod stream;
mod tls;
mod webtransport;

pub use client::{QuicClient, QuicClientBuilder, RequestStream};
pub use connector::{QuicConnector, connect};
pub use error::{QuicError, StreamError};
pub use server::{ClientAuth, DEFAULT_MAX_CONNECTIONS, QuicServer, QuicServerBuilder};
pub use stream::close_code;
pub use tls::{
    ALPN_PREFIX, alpn_for, alpn_protocols, codec_for_alpn, public_roots, roots_from_pem,
};
pub use webtransport::CODEC_QUERY;

/// The quinn crate, re-exported for clients and advanced configuration.
pub use quinn;
