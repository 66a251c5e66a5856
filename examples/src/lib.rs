//! Example applications of signalbox.
//!
//! [`embed`] is an existing axum application (REST routes, static files,
//! its own authentication layer) with a hub mounted at `/ws`; the
//! `axum_app` binary runs it.
//!
//! [`ndjson`] is a custom transport in one file (newline-delimited JSON
//! over TCP) that passes the conformance suite of `signalbox::testing`.
//!
//! [`chat`] is the chat server of docs/PROTOCOL.md §9: rooms, messages, an echo
//! request, over WebSocket with a web page. The `chat` binary runs it; the
//! tests start it in-process.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = signalbox_examples::chat::hub();
//! let server = signalbox_examples::chat::ws_server(hub.clone(), "127.0.0.1:8080").await?;
//! println!("listening ws={}", server.local_addr());
//! tokio::spawn(server.serve());
//! tokio::signal::ctrl_c().await?;
//! hub.shutdown().await;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod chat;
pub mod embed;
pub mod guide;
pub mod ndjson;
