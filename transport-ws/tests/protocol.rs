//! docs/PROTOCOL.md §2–§4 over real loopback sockets, with tokio-tungstenite (and a
//! raw socket for frames no library sends) as the client.

mod common;

use common::*;
use signalbox::Config;
use signalbox::codec::{Envelope, WireCodec};
use signalbox::transport::Rejection;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn echo_payload(env: &Envelope) -> serde_json::Value {
    env.decode_payload().unwrap()
}

/// Sends ECHO with `payload` and returns the reply envelope.
async fn echo(client: &mut Client, payload: serde_json::Value, cid: &str) -> Envelope {
    let meta = signalbox::Meta {
        correlation_id: Some(cid.to_owned()),
        ..Default::default()
    };
    let frame = client.codec.encode("ECHO", &meta, Some(&payload)).unwrap();
    client.send_frame(frame).await;
    let reply = client.recv().await;
    assert_eq!(reply.ty, "ECHO");
    assert_eq!(reply.meta.correlation_id.as_deref(), Some(cid));
    reply
}

#[tokio::test]
async fn each_codec_is_answered_with_its_name_and_frame_kind() {
    let (_hub, addr) = start(Config::default()).await;
    for name in WireCodec::NAMES {
        let mut client = connect(addr, name).await;
        assert_eq!(client.protocol.as_deref(), Some(name));
        let payload = serde_json::json!({"n": 1, "s": "ünï", "list": [1, 2.5, null]});
        let reply = echo(&mut client, payload.clone(), "c-1").await;
        assert_eq!(echo_payload(&reply), payload, "{name}");
        assert!(
            reply.meta.timestamp.is_some(),
            "{name}: server stamps messages"
        );
    }
}

#[tokio::test]
async fn the_first_known_offer_in_the_clients_order_wins() {
    let (_hub, addr) = start(Config::default()).await;
    let client = try_connect(addr, "/ws", &["x-unknown", "msgpack+gzip", "json"], &[])
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("msgpack+gzip"));
    // Offers spread over several headers count too.
    let client = try_connect(
        addr,
        "/ws",
        &["x-unknown"],
        &[("sec-websocket-protocol", "nope, msgpack")],
    )
    .await
    .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("msgpack"));
}

#[tokio::test]
async fn no_offer_means_json_and_no_subprotocol_header() {
    let (_hub, addr) = start(Config::default()).await;
    let mut client = try_connect(addr, "/ws", &[], &[]).await.unwrap();
    assert_eq!(client.protocol, None);
    let reply = echo(&mut client, serde_json::json!({"a": 1}), "noproto").await;
    assert_eq!(echo_payload(&reply), serde_json::json!({"a": 1}));
}

#[tokio::test]
async fn only_unknown_offers_are_refused_with_400() {
    let (_hub, addr) = start(Config::default()).await;
    let refused = try_connect(addr, "/ws", &["x-unknown", "json2"], &[]).await;
    assert_eq!(refused.err(), Some(400));
}

#[tokio::test]
async fn the_authentication_hook_rejects_with_401_or_its_status_and_passes_data() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| {
        b.authenticate(|req| async move {
            match req.query_param("token").as_deref() {
                Some("good") => {
                    let mut data = signalbox::DataMap::new();
                    data.insert(Authenticated(
                        req.header("x-user").unwrap_or("anon").to_owned(),
                    ));
                    Ok(data)
                }
                Some("banned") => Err(http::StatusCode::FORBIDDEN.into()),
                _ => Err(Rejection::unauthorized()),
            }
        })
    })
    .await;
    assert_eq!(
        try_connect(addr, "/ws", &["json"], &[]).await.err(),
        Some(401)
    );
    assert_eq!(
        try_connect(addr, "/ws?token=bad", &["json"], &[])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        try_connect(addr, "/ws?token=banned", &["json"], &[])
            .await
            .err(),
        Some(403)
    );
    let mut client = try_connect(addr, "/ws?token=good", &["json"], &[("x-user", "ada")])
        .await
        .unwrap();
    client.send(&WhoAmI, Some("who")).await;
    let env = client.recv().await;
    let user: User = env.decode_payload().unwrap();
    assert_eq!(user.name.as_deref(), Some("ada"));
    assert_eq!(
        hub.connection_count(),
        1,
        "rejected upgrades never became connections"
    );
}

#[tokio::test]
async fn an_origin_not_allowed_is_refused_with_403() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| b.allowed_origins(["https://chat.example"])).await;
    assert_eq!(
        try_connect(
            addr,
            "/ws",
            &["json"],
            &[("origin", "https://evil.example")]
        )
        .await
        .err(),
        Some(403)
    );
    assert!(
        try_connect(
            addr,
            "/ws",
            &["json"],
            &[("origin", "https://chat.example")]
        )
        .await
        .is_ok()
    );
    // No Origin header: not a browser; let through.
    assert!(try_connect(addr, "/ws", &["json"], &[]).await.is_ok());
}

#[tokio::test]
async fn an_oversize_message_closes_with_1009() {
    let mut config = Config::default();
    config.codec.max_message_size = 1024;
    let (_hub, addr) = start(config).await;
    let mut client = connect(addr, "json").await;
    let payload = serde_json::Value::String("x".repeat(2000));
    let frame = client
        .codec
        .with_limits(Default::default())
        .encode("ECHO", &signalbox::Meta::default(), Some(&payload))
        .unwrap();
    client.send_frame(frame).await;
    assert_eq!(client.closed().await.0, 1009);
}

#[tokio::test]
async fn an_oversize_message_in_fragments_closes_with_1009_before_it_is_whole() {
    let mut config = Config::default();
    config.codec.max_message_size = 1024;
    let (_hub, addr) = start(config).await;
    let mut raw = RawClient::connect(addr, "json").await;
    // Non-final text frames of 600 bytes each: the second passes the limit.
    for opcode in [0x1u8, 0x0] {
        let mut frame = vec![opcode, 0x80 | 126];
        frame.extend_from_slice(&600u16.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend(std::iter::repeat_n(b'a', 600));
        raw.tcp.write_all(&frame).await.unwrap();
    }
    assert_eq!(raw.close_code().await, 1009);
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let (_hub, addr) = start(Config::default()).await;
    let mut raw = RawClient::connect(addr, "json").await;
    raw.send_frame(
        0x1,
        b"{\"type\":\"ECHO\",\"payload\":\"\xff\xfe\"}",
        true,
        0,
    )
    .await;
    assert_eq!(raw.close_code().await, 1007);
}

#[tokio::test]
async fn a_protocol_violation_closes_with_1002() {
    let (_hub, addr) = start(Config::default()).await;
    // Reserved bits set without an extension that defines them.
    let mut raw = RawClient::connect(addr, "json").await;
    raw.send_frame(0x1, b"{\"type\":\"ECHO\"}", true, 0b100)
        .await;
    assert_eq!(raw.close_code().await, 1002);
    // A client frame without a mask.
    let mut raw = RawClient::connect(addr, "json").await;
    raw.send_frame(0x1, b"{\"type\":\"ECHO\"}", false, 0).await;
    assert_eq!(raw.close_code().await, 1002);
}

fn short_heartbeat() -> Config {
    let mut config = Config::default();
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_timeout = Duration::from_millis(100);
    config
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed_with_1008() {
    let (_hub, addr) = start(short_heartbeat()).await;
    let mut client = connect(addr, "json").await;
    // Not reading: tungstenite answers pings only while it reads.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, reason) = client.closed().await;
    assert_eq!(code, 1008, "{reason}");
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_open() {
    let (_hub, addr) = start(short_heartbeat()).await;
    let mut client = connect(addr, "json").await;
    // Reading answers the server's pings with pongs.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(next) =
        tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut client.ws)).await
    {
        match next {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
            other => panic!("only pings expected, got {other:?}"),
        }
    }
    assert!(
        pings >= 2,
        "the server pings at its interval ({pings} pings)"
    );
    let reply = echo(&mut client, serde_json::json!("still here"), "alive").await;
    assert_eq!(echo_payload(&reply), serde_json::json!("still here"));
}

#[tokio::test]
async fn shutdown_delivers_what_was_queued_then_closes_with_1001_and_stops_accepting() {
    let hub = hub(Config::default());
    let (addr, listener) = start_with(&hub, |b| b).await;
    let mut client = connect(addr, "msgpack").await;
    client.send(&FloodThenShutdown { n: 500 }, None).await;
    for i in 0..500 {
        let env = client.recv().await;
        assert_eq!(env.ty, "ITEM");
        let item: Item = env.decode_payload().unwrap();
        assert_eq!(item.i, i);
    }
    assert_eq!(client.closed().await.0, 1001);
    tokio::time::timeout(WAIT, listener)
        .await
        .expect("the listener stops")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_silent_tcp_client_is_dropped_after_the_handshake_timeout() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| b.handshake_timeout(Duration::from_millis(200))).await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(eof_within(&mut silent, Duration::from_secs(3)).await);
    // Half a request is no better.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(eof_within(&mut slow, Duration::from_secs(3)).await);
    // A completed upgrade is not affected by it.
    let mut client = connect(addr, "json").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo(&mut client, serde_json::json!(1), "after").await;
}

#[tokio::test]
async fn connections_past_the_maximum_are_refused_with_503() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| b.max_connections(2)).await;
    let first = connect(addr, "json").await;
    let _second = connect(addr, "json").await;
    assert_eq!(
        try_connect(addr, "/ws", &["json"], &[]).await.err(),
        Some(503)
    );
    drop(first);
    // The slot frees once the server has seen the close.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_connect(addr, "/ws", &["json"], &[]).await {
            Ok(_) => break,
            Err(503) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("status {status}"),
        }
    }
}

#[tokio::test]
async fn static_files_are_served_and_other_paths_are_404() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| {
        b.static_file("/", "text/html; charset=utf-8", &b"<p>page</p>"[..])
            .static_file("/app.js", "text/javascript", &b"let x;"[..])
    })
    .await;
    let (status, head, body) = http_get(addr, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html; charset=utf-8")
    );
    assert_eq!(body, b"<p>page</p>");
    let (status, head, body) = http_get(addr, "GET", "/app.js").await;
    assert_eq!((status, body.as_slice()), (200, &b"let x;"[..]));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/javascript")
    );
    let (status, _, body) = http_get(addr, "HEAD", "/app.js").await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(http_get(addr, "GET", "/nope").await.0, 404);
    assert_eq!(http_get(addr, "POST", "/").await.0, 405);
    // The WebSocket path without an upgrade.
    assert_eq!(http_get(addr, "GET", "/ws").await.0, 426);
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_with_431() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| b.static_file("/", "text/plain", &b"ok"[..])).await;
    // The default limit is 16 KiB.
    assert_eq!(http_request(addr, "GET", "/", 12 * 1024).await.0, 200);
    assert_eq!(http_request(addr, "GET", "/", 20 * 1024).await.0, 431);
    assert_eq!(http_request(addr, "GET", "/ws", 20 * 1024).await.0, 431);
    // Configurable.
    let (addr, _) = start_with(&hub, |b| {
        b.static_file("/", "text/plain", &b"ok"[..])
            .max_header_size(64 * 1024)
    })
    .await;
    assert_eq!(http_request(addr, "GET", "/", 20 * 1024).await.0, 200);
    // hyper checks between reads: a head is refused by twice the limit.
    assert_eq!(http_request(addr, "GET", "/", 160 * 1024).await.0, 431);
    // And the server still serves.
    assert_eq!(http_get(addr, "GET", "/").await.0, 200);
}
