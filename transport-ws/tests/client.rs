//! signalbox::client::Client over WebSocket (WsConnector) against a real
//! listener: requests, timeouts, server restarts, the offline queue, TLS.

mod common;

use common::*;
use signalbox::Config;
use signalbox::client::{Client, ClientError, ConnectionState, OfflinePolicy};
use signalbox::transport::Identity;
use signalbox_ws::WsConnector;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Slow;
signalbox::message!(Slow = "SLOW_NEVER_ANSWERED");

fn echo_of(value: serde_json::Value) -> Echo {
    let frame = serde_json::to_vec(&value).unwrap();
    let raw = signalbox::codec::RawPayload::new(signalbox::codec::Format::Json, frame.into());
    Echo(signalbox::Opaque(Some(raw)))
}

fn quick(connector: WsConnector) -> signalbox::client::ClientBuilder<WsConnector> {
    Client::builder(connector).backoff(Duration::from_millis(20), Duration::from_millis(100))
}

#[tokio::test]
async fn requests_round_trip_in_every_codec() {
    let (_hub, addr) = start(Config::default()).await;
    for codec in signalbox::codec::WireCodec::NAMES {
        let client = signalbox_ws::connect(&format!("ws://{addr}/ws"), codec).unwrap();
        let payload = serde_json::json!({"codec": codec, "big": "x".repeat(3000)});
        let reply: Echo = client
            .request(&echo_of(payload.clone()), WAIT)
            .await
            .unwrap();
        assert_eq!(
            reply.0.decode::<serde_json::Value>().unwrap(),
            payload,
            "{codec}"
        );
        // Typed payloads too.
        client.send(&Join { room: "r".into() }).await.unwrap();
        let user: User = client.request(&WhoAmI, WAIT).await.unwrap();
        assert_eq!(user.name, None);
        client.close().await;
    }
}

#[tokio::test]
async fn an_unanswered_request_times_out_and_an_unknown_type_is_a_server_error() {
    let (_hub, addr) = start(Config::default()).await;
    let client = signalbox_ws::connect(&format!("ws://{addr}/ws"), "json").unwrap();
    let err = client
        .request::<Join, User>(&Join { room: "r".into() }, Duration::from_millis(100))
        .await
        .unwrap_err();
    // JOIN is not an rpc and its handler does not reply: the error says so.
    assert!(
        matches!(err, ClientError::Timeout { sent: true }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not an rpc"), "{err}");
    let err = client.request::<Slow, User>(&Slow, WAIT).await.unwrap_err();
    match err {
        ClientError::Server(e) => {
            assert_eq!(*e.code(), signalbox::ErrorCode::Unimplemented)
        }
        other => panic!("{other:?}"),
    }
}

async fn serve_on(addr: SocketAddr) -> signalbox::Hub {
    let hub = hub(Config::default());
    let server = signalbox_ws::WsServer::builder(hub.clone())
        .bind(addr)
        .await
        .unwrap();
    tokio::spawn(server.serve());
    hub
}

/// Shuts `first` down, waits until `client` noticed, serves a new hub on
/// `addr` and waits until `client` is connected to it.
async fn restart(first: signalbox::Hub, addr: SocketAddr, client: &Client) -> signalbox::Hub {
    let mut state = client.state();
    first.shutdown().await;
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let second = serve_on(addr).await;
    assert!(client.wait_connected(WAIT).await);
    second
}

#[tokio::test]
async fn the_client_reconnects_after_a_server_restart() {
    let (first, addr) = start(Config::default()).await;
    let client = quick(WsConnector::new(&format!("ws://{addr}/ws"), "msgpack").unwrap()).build();
    assert!(client.wait_connected(WAIT).await);
    let second = restart(first, addr, &client).await;
    let reply: Echo = client
        .request(&echo_of(serde_json::json!(1)), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.0.decode::<i32>().unwrap(), 1);
    assert_eq!(second.connection_count(), 1);
}

#[tokio::test]
async fn messages_sent_offline_are_delivered_after_connecting() {
    // A port with nothing on it yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let watcher_hub;
    let client = quick(WsConnector::new(&format!("ws://{addr}/ws"), "json").unwrap())
        .offline_queue(8, OfflinePolicy::Reject)
        .build();
    let mut state = client.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    client
        .send(&Join {
            room: "late".into(),
        })
        .await
        .unwrap();
    client
        .send(&Say {
            room: "late".into(),
            text: "queued while offline".into(),
        })
        .await
        .unwrap();
    assert_eq!(client.queued_offline(), 2);
    let mut incoming = client.incoming().unwrap();
    watcher_hub = serve_on(addr).await;
    assert!(client.wait_connected(WAIT).await);
    let said = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(said.ty, "SAID");
    assert_eq!(
        said.decode_payload::<Said>().unwrap().text,
        "queued while offline"
    );
    assert_eq!(client.queued_offline(), 0);
    assert_eq!(watcher_hub.topic_size("late"), 1);
}

#[tokio::test]
async fn a_denied_upgrade_stops_the_client_and_fails_its_requests() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| {
        b.authenticate(|_req| async { Err(signalbox::transport::Rejection::unauthorized()) })
    })
    .await;
    let client = quick(WsConnector::new(&format!("ws://{addr}/ws"), "json").unwrap()).build();
    // Made before the refusal is known: it fails as refused, not by timeout.
    let early = {
        let client = client.clone();
        tokio::spawn(async move { client.request::<WhoAmI, User>(&WhoAmI, WAIT * 4).await })
    };
    let mut state = client.state();
    let seen = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Refused { .. })),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert!(
        matches!(&seen, ConnectionState::Refused { reason } if reason.contains("401")),
        "{seen:?}"
    );
    let err = tokio::time::timeout(WAIT, early)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("401")),
        "{err:?}"
    );
    let err = client
        .request::<WhoAmI, User>(&WhoAmI, WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err:?}");
    // It stays refused (no reconnect attempt moves the state).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        &*client.state().borrow(),
        ConnectionState::Refused { .. }
    ));
    // 403 too; retrying is a policy.
    let hub = self::hub(Config::default());
    let (addr, _) = start_with(&hub, |b| {
        b.authenticate(|_req| async { Err(signalbox::transport::Rejection::forbidden()) })
    })
    .await;
    let client = quick(WsConnector::new(&format!("ws://{addr}/ws"), "json").unwrap())
        .retry_denied(true)
        .build();
    let mut state = client.state();
    let seen = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { attempt: 3.., .. })),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert!(
        matches!(&seen, ConnectionState::Reconnecting { reason, .. } if reason.contains("403")),
        "{seen:?}"
    );
    assert!(WsConnector::new("http://x/ws", "json").is_err());
    assert!(WsConnector::new("ws://x/ws", "yaml").is_err());
}

#[tokio::test]
async fn the_client_speaks_wss() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (certified.cert.pem(), certified.signing_key.serialize_pem());
    let hub = hub(Config::default());
    // A full rustls configuration (here the one `identity` would make).
    let identity = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let config = signalbox_ws::tls::server_config(&identity).unwrap();
    let (addr, _) = start_with(&hub, |b| b.tls_config(config)).await;
    let connector = WsConnector::new(&format!("wss://localhost:{}/ws", addr.port()), "msgpack")
        .unwrap()
        .tls(signalbox_ws::tls::client_config(cert.as_bytes()).unwrap());
    let client = Client::builder(connector).build();
    let reply: Echo = client
        .request(&echo_of(serde_json::json!("secure")), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.0.decode::<String>().unwrap(), "secure");
}

/// A port with nothing listening on it yet.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn a_request_that_timed_out_offline_is_never_sent() {
    let addr = free_port();
    let client = quick(WsConnector::new(&format!("ws://{addr}/ws"), "json").unwrap()).build();
    let mut state = client.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    // JOIN has an effect on the server (a subscription) that the test can see.
    let err = client
        .request::<Join, User>(
            &Join {
                room: "ghost".into(),
            },
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { sent: false }),
        "{err:?}"
    );
    assert_eq!(
        client.queued_offline(),
        0,
        "the withdrawn request is not kept"
    );
    let hub = serve_on(addr).await;
    assert!(client.wait_connected(WAIT).await);
    // A round trip after the reconnect: whatever was flushed is handled by now.
    let reply: Echo = client
        .request(&echo_of(serde_json::json!("after")), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.0.decode::<String>().unwrap(), "after");
    assert_eq!(
        hub.topic_size("ghost"),
        0,
        "the server ran a withdrawn request"
    );
}

#[tokio::test]
async fn a_server_shutdown_shows_its_close_code_and_reason() {
    let (hub, addr) = start(Config::default()).await;
    let client = quick(WsConnector::new(&format!("ws://{addr}/ws"), "json").unwrap()).build();
    assert!(client.wait_connected(WAIT).await);
    let mut state = client.state();
    hub.shutdown().await;
    let seen = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| {
            matches!(
                s,
                ConnectionState::Disconnected { .. } | ConnectionState::Reconnecting { .. }
            )
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    let (ConnectionState::Disconnected { reason, close }
    | ConnectionState::Reconnecting { reason, close, .. }) = seen
    else {
        unreachable!()
    };
    let close = close.expect("the server's close frame");
    assert_eq!(close.code, 1001);
    assert_eq!(close.reason, "server shutting down");
    assert!(reason.contains("1001"), "{reason}");
}

#[tokio::test]
async fn the_connected_hook_rejoins_a_room_after_a_server_restart() {
    let (first, addr) = start(Config::default()).await;
    let client = quick(WsConnector::new(&format!("ws://{addr}/ws"), "json").unwrap())
        .on_connected(|connected| {
            connected
                .send(&Join {
                    room: "lobby".into(),
                })
                .unwrap();
        })
        .build();
    assert!(client.wait_connected(WAIT).await);
    let second = restart(first, addr, &client).await;
    // A round trip after the reconnect: the hook's JOIN was handled before.
    let _: Echo = client
        .request(&echo_of(serde_json::json!(0)), WAIT)
        .await
        .unwrap();
    assert_eq!(second.topic_size("lobby"), 1);
}

#[tokio::test]
async fn errors_answering_sends_are_typed() {
    let (_hub, addr) = start(Config::default()).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let client = quick(WsConnector::new(&format!("ws://{addr}/ws"), "msgpack").unwrap())
        .on_error(move |error, _meta| {
            let _ = tx.try_send(error);
        })
        .build();
    client.send(&Slow).await.unwrap();
    let error = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*error.code(), signalbox::ErrorCode::Unimplemented);
}

#[test]
fn the_http_types_the_api_takes_are_reexported() {
    use signalbox_ws::http::{HeaderValue, StatusCode, header::AUTHORIZATION};
    let _connector = WsConnector::new("ws://localhost:1/ws", "json")
        .unwrap()
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
    let _rejection = signalbox::transport::Rejection::unauthorized()
        .with_header(AUTHORIZATION, HeaderValue::from_static("x"));
    assert_eq!(StatusCode::UNAUTHORIZED.as_u16(), 401);
}
