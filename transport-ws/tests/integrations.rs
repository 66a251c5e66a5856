//! TLS (wss://) and the axum integration, over real sockets.

mod common;

use common::*;
use signalbox::Config;
use signalbox::transport::{Identity, IdentityError};
use signalbox_ws::Upgrader;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

async fn roundtrip<S>(ws: tokio_tungstenite::WebSocketStream<S>, codec: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let codec = signalbox::codec::WireCodec::from_name(codec).unwrap();
    let meta = signalbox::Meta {
        correlation_id: Some("r".into()),
        ..Default::default()
    };
    let frame = codec.encode("ECHO", &meta, Some(&[1, 2, 3])).unwrap();
    let mut ws = ws;
    ws.send(Message::Binary(frame)).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Binary(b) => {
                let env = codec.decode(b).unwrap();
                assert_eq!(env.ty, "ECHO");
                assert_eq!(env.decode_payload::<Vec<u8>>().unwrap(), vec![1, 2, 3]);
                return;
            }
            Message::Text(t) => {
                let env = codec.decode(bytes::Bytes::from(t)).unwrap();
                assert_eq!(env.ty, "ECHO");
                assert_eq!(env.decode_payload::<Vec<u8>>().unwrap(), vec![1, 2, 3]);
                return;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn tls_serves_wss_and_https() {
    let (cert, key) = self_signed();
    let identity = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let client_tls = signalbox_ws::tls::client_config(cert.as_bytes()).unwrap();
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| b.identity(identity)).await;

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls);
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut request = format!("wss://localhost:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("msgpack"),
    );
    let (ws, response) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "msgpack");
    roundtrip(ws, "msgpack").await;

    // A plain-TCP client gets nowhere on a TLS port.
    let plain = try_connect_plain(addr).await;
    assert!(plain, "a plain upgrade on a TLS listener must fail");
}

async fn try_connect_plain(addr: SocketAddr) -> bool {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("ws://{addr}/ws").into_client_request().unwrap();
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .unwrap()
        .is_err()
}

#[tokio::test]
async fn tls_config_rejects_pem_without_a_certificate() {
    let (_, key) = self_signed();
    assert!(matches!(
        Identity::from_pem(b"", key.as_bytes()),
        Err(IdentityError::NoCertificate)
    ));
    assert!(signalbox_ws::tls::client_config(b"not pem").is_err());
}

#[tokio::test]
async fn the_hub_mounts_on_an_axum_route_beside_other_routes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hub = hub(Config::default());
    let seen_peer = Arc::new(AtomicUsize::new(0));
    let seen = seen_peer.clone();
    let upgrader = Upgrader::builder(hub.clone())
        .authenticate(move |req| {
            let seen = seen.clone();
            async move {
                if req.peer_addr.is_some() {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                match req.query_param("token").as_deref() {
                    Some("t") => Ok(signalbox::DataMap::new()),
                    _ => Err(signalbox::transport::Rejection::unauthorized()),
                }
            }
        })
        .build();
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/live", signalbox_ws::axum::route(upgrader.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });

    assert_eq!(
        try_connect(addr, "/live", &["json"], &[]).await.err(),
        Some(401)
    );
    assert_eq!(
        try_connect(addr, "/live?token=t", &["x-unknown"], &[])
            .await
            .err(),
        Some(400)
    );
    let client = try_connect(addr, "/live?token=t", &["json"], &[])
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("json"));
    roundtrip(client.ws, "json").await;
    assert!(
        seen_peer.load(Ordering::SeqCst) >= 1,
        "peer address reaches the hook"
    );

    // The application's other routes still answer.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"));
}

#[tokio::test]
async fn a_hook_that_does_not_answer_within_the_handshake_timeout_is_answered_408() {
    let hub = hub(Config::default());
    let upgrader = Upgrader::builder(hub.clone())
        .handshake_timeout(std::time::Duration::from_millis(300))
        .authenticate(|req| async move {
            if req.query_param("token").as_deref() == Some("slow") {
                std::future::pending::<()>().await;
            }
            Ok(signalbox::DataMap::new())
        })
        .build();
    let app = axum::Router::new().route("/ws", signalbox_ws::axum::route(upgrader));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let late = tokio::time::timeout(WAIT, try_connect(addr, "/ws?token=slow", &["json"], &[]))
        .await
        .expect("the refusal comes within the handshake timeout, not never");
    assert_eq!(late.err(), Some(408));
    // The server is unharmed: a hook that answers lets the next one in.
    let client = try_connect(addr, "/ws?token=quick", &["json"], &[])
        .await
        .unwrap();
    roundtrip(client.ws, "json").await;
}

/// What an axum layer found out about a request (here: read from a header).
#[derive(Debug, Clone, PartialEq)]
struct LayerUser(String);

#[tokio::test]
async fn what_an_axum_layer_puts_in_the_extensions_reaches_the_hook_and_the_connection() {
    use axum::extract::Request;
    use axum::middleware::Next;
    let hub = hub(Config::default());
    let upgrader = Upgrader::builder(hub.clone())
        .authenticate(|req| async move {
            // The hub's own rules still answer: the hook refuses a request
            // the layer let through without a user.
            let user = req
                .extension::<LayerUser>()
                .cloned()
                .ok_or_else(signalbox::transport::Rejection::forbidden)?;
            let mut data = signalbox::DataMap::new();
            data.insert(user);
            Ok(data)
        })
        .build();
    let layer = |mut req: Request, next: Next| async move {
        let user = req
            .headers()
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(|v| LayerUser(v.to_owned()));
        if let Some(user) = user {
            req.extensions_mut().insert(user);
        }
        next.run(req).await
    };
    let app = axum::Router::new()
        .route("/live", signalbox_ws::axum::route(upgrader))
        .layer(axum::middleware::from_fn(layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    assert_eq!(
        try_connect(addr, "/live", &["json"], &[]).await.err(),
        Some(403)
    );
    let client = try_connect(addr, "/live", &["json"], &[("x-user", "ann")])
        .await
        .unwrap();
    let conns = hub.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].data::<LayerUser>(), Some(LayerUser("ann".into())));
    roundtrip(client.ws, "json").await;
}

/// An axum application serving `hub` on `/live`, shutting down gracefully
/// when `signal` resolves; the server task's handle.
async fn serve_axum(
    hub: &signalbox::Hub,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/live",
            signalbox_ws::axum::route(Upgrader::builder(hub.clone()).build()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    (addr, tokio::spawn(server.into_future()))
}

/// The order the `signalbox_ws::axum` docs and docs/DEPLOYMENT.md give:
/// axum's graceful shutdown tied to `Hub::shutdown_started`, then
/// `Hub::shutdown()`. Clients get 1001, both the hub's shutdown and the
/// server task end, and the port is closed.
#[tokio::test]
async fn axum_shutdown_tied_to_the_hub_closes_clients_with_1001_and_ends() {
    let hub = hub(Config::default());
    let (addr, server) = serve_axum(&hub, hub.shutdown_started()).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut client = try_connect(addr, "/live", &["json"], &[]).await.unwrap();
        client.send(&Echo::default(), Some("e")).await;
        assert_eq!(client.recv().await.ty, "ECHO");
        clients.push(client);
    }
    assert_eq!(hub.connection_count(), 2);

    let shutdown = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown().await }
    });
    for client in &mut clients {
        assert_eq!(client.closed().await.0, 1001);
    }
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("Hub::shutdown resolves")
        .unwrap();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the axum server task ends")
        .unwrap()
        .unwrap();
    assert_eq!(hub.connection_count(), 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Why `Hub::shutdown()` must be awaited too: hyper stops tracking a
/// connection once it is upgraded, so axum's graceful shutdown ends while
/// WebSocket connections are still open and does not close them.
#[tokio::test]
async fn axum_graceful_shutdown_alone_leaves_websocket_connections_open() {
    let hub = hub(Config::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = serve_axum(&hub, async move {
        let _ = stopped.await;
    })
    .await;
    let mut client = try_connect(addr, "/live", &["json"], &[]).await.unwrap();
    client.send(&Echo::default(), Some("e")).await;
    assert_eq!(client.recv().await.ty, "ECHO");

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("axum's graceful shutdown does not wait for WebSocket connections")
        .unwrap()
        .unwrap();
    // The connection is still served by the hub.
    client.send(&Echo::default(), Some("f")).await;
    assert_eq!(client.recv().await.ty, "ECHO");
    assert_eq!(hub.connection_count(), 1);

    tokio::time::timeout(WAIT, hub.shutdown())
        .await
        .expect("Hub::shutdown resolves");
    assert_eq!(client.closed().await.0, 1001);
    assert_eq!(hub.connection_count(), 0);
}
