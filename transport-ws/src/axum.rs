//! Mounting a hub on a route of an axum 0.8 application (feature `axum`).
//!
//! ```no_run
//! # async fn run(hub: signalbox::Hub) -> std::io::Result<()> {
//! use std::net::SocketAddr;
//! use signalbox_ws::Upgrader;
//!
//! let app = axum::Router::new()
//!     .route("/healthz", axum::routing::get(|| async { "ok" }))
//!     .route("/ws", signalbox_ws::axum::route(Upgrader::builder(hub).build()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // With connect info, handlers and the authentication hook see the peer's address.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```
//!
//! The upgrade is the same as the standalone server's ([`Upgrader`]): the
//! codec, origin, connection limit and authentication rules apply as they
//! are. The connection runs over hyper's upgraded stream, with this crate's
//! buffers; axum's own `WebSocket` type is not involved.
//!
//! # Authentication by a layer
//!
//! The authentication hook ([`UpgraderBuilder::authenticate`]) receives the
//! request's extensions ([`Handshake::extensions`]), so a tower or
//! axum layer in front of the route can authenticate the request as it does
//! for the application's other routes, and the hook only moves the layer's
//! result into the connection's typed data (read by handlers with
//! [`signalbox::ConnectionHandle::data`]). A request the layer refuses never reaches the
//! upgrade. `examples/src/embed.rs` is a runnable application built this
//! way; `examples/tests/embed_axum.rs` drives it.
//!
//! ```no_run
//! # fn app(hub: signalbox::Hub) -> axum::Router {
//! use axum::extract::Request;
//! use axum::http::StatusCode;
//! use axum::middleware::{self, Next};
//! use axum::response::Response;
//! use signalbox::DataMap;
//! use signalbox::transport::Rejection;
//! use signalbox_ws::Upgrader;
//!
//! #[derive(Clone)]
//! struct UserId(String);
//!
//! async fn require_user(mut req: Request, next: Next) -> Result<Response, StatusCode> {
//!     let user = req
//!         .headers()
//!         .get("authorization")
//!         .and_then(|v| v.to_str().ok())
//!         .and_then(|v| v.strip_prefix("Bearer "))
//!         .map(|token| UserId(token.to_owned())) // look the token up here
//!         .ok_or(StatusCode::UNAUTHORIZED)?;
//!     req.extensions_mut().insert(user);
//!     Ok(next.run(req).await)
//! }
//!
//! let upgrader = Upgrader::builder(hub)
//!     .authenticate(|req| async move {
//!         let user = req.extension::<UserId>().cloned().ok_or_else(Rejection::unauthorized)?;
//!         let mut data = DataMap::new();
//!         data.insert(user);
//!         Ok(data)
//!     })
//!     .build();
//! axum::Router::new()
//!     .route("/ws", signalbox_ws::axum::route(upgrader))
//!     .layer(middleware::from_fn(require_user))
//! # }
//! ```
//!
//! # Shutting down
//!
//! hyper stops tracking a connection once it is upgraded, so axum's graceful
//! shutdown neither waits for the hub's WebSocket connections nor closes
//! them: it ends while they are still open. [`Hub::shutdown`] is what closes
//! them as going away (1001) after their queued messages are written; a
//! process that exits when `axum::serve` returns, without awaiting it, drops
//! them without a close frame.
//!
//! The order: on the stop signal start [`Hub::shutdown`], and tie axum's
//! graceful shutdown to [`Hub::shutdown_started`]; then await both. From the
//! moment the hub's shutdown starts, upgrades are refused with 503 (a
//! reconnecting client goes to another process) and axum stops accepting
//! and finishes the HTTP requests in flight, while the hub drains and closes
//! the WebSocket connections (docs/DEPLOYMENT.md, "Rolling restarts and
//! graceful shutdown"). `tests/integrations.rs`
//! (`axum_shutdown_tied_to_the_hub_closes_clients_with_1001_and_ends`)
//! performs this order.
//!
//! ```no_run
//! # async fn run(hub: signalbox::Hub, app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let server = tokio::spawn(
//!     axum::serve(listener, app)
//!         .with_graceful_shutdown(hub.shutdown_started())
//!         .into_future(),
//! );
//! tokio::signal::ctrl_c().await?;
//! hub.shutdown().await; // 503 for new upgrades, 1001 for every connection
//! server.await.map_err(std::io::Error::other)??; // axum has stopped too
//! # Ok(())
//! # }
//! ```
//!
//! [`Hub::shutdown`]: signalbox::Hub::shutdown
//! [`UpgraderBuilder::authenticate`]: crate::UpgraderBuilder::authenticate
//! [`Handshake::extensions`]: signalbox::transport::Handshake::extensions
//! [`Hub::shutdown_started`]: signalbox::Hub::shutdown_started

use crate::upgrade::Upgrader;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::routing::MethodRouter;
use std::net::SocketAddr;

/// A route that upgrades requests to WebSocket connections of
/// `upgrader`'s hub. Mount it with `Router::route(path, route(upgrader))`.
pub fn route<S>(upgrader: Upgrader) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    axum::routing::any(move |req: Request| {
        let upgrader = upgrader.clone();
        async move {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0);
            upgrader.upgrade(req, peer).await.map(Body::from)
        }
    })
}
