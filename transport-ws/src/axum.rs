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
