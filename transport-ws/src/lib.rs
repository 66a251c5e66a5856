//! signalbox-ws: the WebSocket transport of signalbox (docs/PROTOCOL.md §4).
//!
//! A [`WsServer`] listens on TCP (optionally TLS), upgrades requests on its
//! path (`/ws` by default) and hands each connection to a
//! [`signalbox::Hub`], which does the rest: decoding, routing, heartbeats,
//! queues, closing. The same upgrade mounts on an axum application (feature
//! `axum`, module `axum`), and [`connect`] is the client side for
//! [`signalbox::client::Client`].
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use signalbox::transport::Rejection;
//! use signalbox::{message, Ctx, Router};
//! use signalbox_ws::WsServer;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping { n: u32 }
//! message!(Ping = "PING");
//! #[derive(Serialize, Deserialize)]
//! struct Pong { n: u32 }
//! message!(Pong = "PONG");
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let hub = Router::new()
//!         .on(|ctx: Ctx<Ping>| async move { ctx.reply(&Pong { n: ctx.payload().n }) })
//!         .build();
//!     let server = WsServer::builder(hub.clone())
//!         .path("/ws")
//!         .static_file("/", "text/html; charset=utf-8", &b"<!doctype html><p>hi</p>"[..])
//!         .authenticate(|req| async move {
//!             match req.query_param("token").as_deref() {
//!                 Some("secret") => Ok(signalbox::DataMap::new()),
//!                 _ => Err(Rejection::unauthorized()),
//!             }
//!         })
//!         .bind("127.0.0.1:8080")
//!         .await?;
//!     println!("listening ws={}", server.local_addr());
//!     let listening = tokio::spawn(server.serve());
//!     tokio::signal::ctrl_c().await?;
//!     hub.shutdown().await; // 1001 to every client, after what was queued
//!     listening.await?;
//!     Ok(())
//! }
//! ```
//!
//! # Codecs
//!
//! The codec is negotiated with `Sec-WebSocket-Protocol`: the first of the
//! client's offers among `json`, `msgpack`, `json+gzip`, `msgpack+gzip` is
//! picked and named in the answer; no offer means `json` (and no header in
//! the answer); offers of only unknown names get HTTP 400. JSON is sent in
//! text frames, MessagePack in binary ones; both kinds are accepted.
//!
//! # Limits and close codes
//!
//! A frame or message larger than the hub's maximum message size
//! ([`signalbox::Config::codec`]) closes the connection with 1009 before it
//! is read whole; invalid UTF-8 in a text frame closes with 1007, other
//! protocol violations with 1002. Heartbeats, slow consumers and shutdown
//! are the hub's (1008, 1008, 1001), and so are the budget and the
//! completion timeout for incomplete messages
//! ([`signalbox::Config::incomplete`]): the bytes read from the socket
//! since a connection's last complete message are charged to the hub's
//! budget, and a connection that would pass it, or whose message is late,
//! is closed with 1008. [`close_code`] maps the hub's close kinds onto
//! these codes.
//!
//! Every close the server starts lingers: after its close frame the server
//! reads and discards what the client still sends until the client's close
//! or end of stream, within [`signalbox::Config::close_linger`] and
//! [`signalbox::Config::close_drain_bytes`], and closes the socket only
//! then, so that a client still writing (the rest of a message refused as
//! too big) reads the close and its reason instead of a reset. See
//! [`Linger`].
//!
//! # Memory
//!
//! A connection at rest holds little for reading: tungstenite's own read
//! buffer is 256 bytes, and reads from the socket fill a chunk of
//! [`Buffers::read`] bytes (4 KiB by default) on the stack, of which only
//! what tungstenite has not yet taken is kept, on the heap, until it takes
//! it. The write buffer grows only while a batch is written ([`Buffers`]).
//! A message larger than tungstenite's buffer grows it, and buffers grown
//! by a large message keep their size for the life of the connection
//! (tungstenite does not shrink them).
//!
//! Measured by `tests/idle_memory.rs`: the resident memory of 2,000 idle
//! plain-TCP connections in one process (listener, hub, and the test's own
//! client sockets) is about 8.1 KB per connection, of which the hub's
//! connection driver is about 6 KB; with a 4 KiB read buffer it is about
//! 11.2 KB. The test fails above 10 KiB. TLS adds rustls's buffers on top.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "axum")]
pub mod axum;

pub mod client;
/// The `http` crate, whose types [`WsConnector::header`] and
/// [`Rejection::with_header`](signalbox::transport::Rejection::with_header)
/// take.
pub use http;
mod metered;
mod read_ahead;
mod server;
mod stream;
pub mod tls;
mod upgrade;

pub use client::{WsConnector, connect};
pub use server::{
    DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_PENDING, HealthPaths, MIN_MAX_HEADER_SIZE, ServerError,
    WsServer, WsServerBuilder,
};
pub use stream::{
    Buffers, DEFAULT_READ_BUFFER, DEFAULT_WRITE_BUFFER, Linger, WsSink, WsSource, close_code,
    split, websocket_config,
};
pub use upgrade::{DEFAULT_MAX_CONNECTIONS, Upgrader, UpgraderBuilder};
