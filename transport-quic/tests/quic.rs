//! End-to-end tests over real UDP loopback with real TLS handshakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use signalbox::Config;
use signalbox::DataMap;
use signalbox::transport::Rejection;
use signalbox_quic::QuicServer;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn start(hub: &signalbox::Hub) -> QuicServer {
    QuicServer::builder(hub.clone())
        .bind(localhost())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unknown_alpn_fails_the_handshake_with_no_application_protocol() {
    let hub = hub();
    let server = start(&hub).await;
    let no_alpn = quinn::TransportErrorCode::crypto(0x78); // QUIC 0x178
    for alpns in [&["signalbox/xml"][..], &["h3", "json"][..], &[][..]] {
        let (_endpoint, result) = handshake(server.local_addr(), &server.cert_pem(), alpns).await;
        match result {
            Err(quinn::ConnectionError::ConnectionClosed(close)) => {
                assert_eq!(close.error_code, no_alpn, "{alpns:?}: {close}");
            }
            other => panic!("{alpns:?}: expected the handshake to fail, got {other:?}"),
        }
    }
    // A known ALPN among unknown ones is picked.
    let (_endpoint, result) = handshake(
        server.local_addr(),
        &server.cert_pem(),
        &["h3", "signalbox/msgpack"],
    )
    .await;
    let conn = result.unwrap();
    let data = conn
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(data.protocol.as_deref(), Some(&b"signalbox/msgpack"[..]));
}

#[tokio::test]
async fn an_oversize_length_closes_the_connection_with_code_2() {
    let mut config = Config::default();
    config.codec.max_message_size = 1024;
    let hub = hub_with(config);
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;
    client.send("ECHO", Some("ok"), json!("fits")).await;
    client.expect("ECHO").await;
    // A header announcing 1025 bytes, and no body: refused from the header.
    client.send.write_all(&1025u32.to_be_bytes()).await.unwrap();
    assert_eq!(client.close_code().await, Some(2));
    // A length of 4 GiB - 1 likewise.
    let mut client = Client::connect(&server, "msgpack").await;
    client
        .send
        .write_all(&u32::MAX.to_be_bytes())
        .await
        .unwrap();
    assert_eq!(client.close_code().await, Some(2));
    assert!(eventually(WAIT, || hub.connection_count() == 0).await);
}

#[tokio::test]
async fn a_frame_at_the_size_limit_is_accepted() {
    let mut config = Config::default();
    config.codec.max_message_size = 2048;
    let hub = hub_with(config);
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;
    // SLOW ignores the unknown `pad` field and answers with a small DONE.
    let base = client.encode("SLOW", Some("x"), &json!({"ms": 0, "pad": ""}));
    let pad = 2048 - base.len();
    let frame = client.encode("SLOW", Some("x"), &json!({"ms": 0, "pad": "p".repeat(pad)}));
    assert_eq!(frame.len(), 2048);
    client.send_frame(&frame).await;
    let reply = client.expect("DONE").await;
    assert_eq!(reply.meta.correlation_id.as_deref(), Some("x"));
}

#[tokio::test]
async fn a_vanished_peer_is_cleaned_up_within_the_idle_timeout() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .idle_timeout(Duration::from_millis(600))
        .keep_alive(Some(Duration::from_millis(150)))
        .bind(localhost())
        .await
        .unwrap();
    let relay = Relay::start(server.local_addr()).await;
    let mut client = Client::connect_to(relay.addr, &server.cert_pem(), "json").await;
    client.send("ECHO", Some("1"), json!(1)).await;
    client.expect("ECHO").await;
    assert_eq!(hub.connection_count(), 1);
    // Quiet but alive: keep-alives hold the connection past the idle timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hub.connection_count(), 1, "a live, quiet client stays");
    client.send("ECHO", Some("2"), json!(2)).await;
    client.expect("ECHO").await;
    // Now the network drops everything: no close reaches the server.
    relay.cut();
    let cut = tokio::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || hub.connection_count() == 0).await,
        "connection still registered after the idle timeout"
    );
    assert!(
        cut.elapsed() >= Duration::from_millis(500),
        "gone too soon: {:?}",
        cut.elapsed()
    );
}

#[tokio::test]
async fn graceful_shutdown_delivers_queued_messages_then_closes_with_code_1() {
    let hub = hub();
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "msgpack").await;
    client
        .send("JOIN", Some("j"), json!({"topic": "news"}))
        .await;
    client.expect("JOINED").await;
    const N: u32 = 300;
    for n in 0..N {
        hub.publish("news", &Tick { n }).await.unwrap();
    }
    let shutdown = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown().await }
    });
    for n in 0..N {
        let tick = client.expect("TICK").await;
        assert_eq!(tick.decode_payload::<Tick>().unwrap(), Tick { n });
    }
    assert_eq!(client.recv().await.map(|e| e.ty), None, "stream finished");
    assert_eq!(client.close_code().await, Some(1));
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, server.closed()).await.unwrap();
    // No one new gets in.
    let endpoint = client_endpoint();
    let connecting = endpoint
        .connect_with(
            client_config(&server.cert_pem(), &["signalbox/json"]),
            server.local_addr(),
            "localhost",
        )
        .unwrap();
    let late = tokio::time::timeout(Duration::from_secs(1), connecting).await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a connection after shutdown was accepted"
    );
}

#[tokio::test]
async fn connections_past_the_limit_are_refused() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .max_connections(1)
        .bind(localhost())
        .await
        .unwrap();
    let mut first = Client::connect(&server, "json").await;
    first.send("ECHO", Some("1"), json!(1)).await;
    first.expect("ECHO").await;
    let (_endpoint, second) =
        handshake(server.local_addr(), &server.cert_pem(), &["signalbox/json"]).await;
    match second {
        Err(quinn::ConnectionError::ConnectionClosed(close))
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Once the first leaves, there is room again.
    first.conn.close(0u32.into(), b"bye");
    assert!(eventually(WAIT, || hub.connection_count() == 0).await);
    let mut third = Client::connect(&server, "json").await;
    third.send("ECHO", Some("3"), json!(3)).await;
    third.expect("ECHO").await;
}

#[tokio::test]
async fn the_authentication_hook_sees_the_handshake_and_fills_connection_data() {
    let hub = hub();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = QuicServer::builder(hub.clone())
        .authenticate({
            let seen = seen.clone();
            move |handshake| {
                seen.lock().unwrap().push(handshake.clone());
                async move {
                    if handshake.alpn.as_deref() == Some("signalbox/msgpack") {
                        return Err(Rejection::forbidden().with_body("msgpack clients not welcome"));
                    }
                    let mut data = DataMap::new();
                    data.insert(User("ada".into()));
                    Ok(data)
                }
            }
        })
        .bind(localhost())
        .await
        .unwrap();
    let mut client = Client::connect(&server, "json").await;
    client.send("WHOAMI", Some("w"), json!(null)).await;
    let you: You = client.expect("YOU").await.decode_payload().unwrap();
    assert_eq!(you.user.as_deref(), Some("ada"));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].transport, "quic");
        assert_eq!(seen[0].alpn.as_deref(), Some("signalbox/json"));
        assert_eq!(seen[0].codec.name(), "json");
        assert_eq!(seen[0].server_name.as_deref(), Some("localhost"));
        assert_eq!(
            seen[0].peer_addr,
            Some(client.endpoint.local_addr().unwrap())
        );
        assert!(seen[0].headers.is_empty() && seen[0].uri.is_none());
        assert!(seen[0].client_certs.is_empty());
    }

    let (_endpoint, refused) = handshake(
        server.local_addr(),
        &server.cert_pem(),
        &["signalbox/msgpack"],
    )
    .await;
    let refused = refused.unwrap();
    match tokio::time::timeout(WAIT, refused.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), 3);
            assert_eq!(&close.reason[..], b"msgpack clients not welcome");
        }
        other => panic!("expected code 3, got {other}"),
    }
    assert_eq!(hub.connection_count(), 1);
}

#[tokio::test]
async fn a_slow_request_on_its_own_stream_does_not_hold_up_a_fast_one() {
    let hub = hub();
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;
    client.send("WHOAMI", Some("main"), json!(null)).await;
    let me: You = client.expect("YOU").await.decode_payload().unwrap();

    let slow_frame = client.encode("SLOW", Some("slow"), &json!({"ms": 3000}));
    let mut slow = Request::open(&client, &slow_frame).await;
    let fast_frame = client.encode("ECHO", Some("fast"), &json!("quick"));
    let mut fast = Request::open(&client, &fast_frame).await;

    let started = tokio::time::Instant::now();
    let reply = fast.recv().await.expect("fast reply");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "fast waited {:?}",
        started.elapsed()
    );
    assert_eq!(reply.ty, "ECHO");
    assert_eq!(reply.meta.correlation_id.as_deref(), Some("fast"));
    assert!(
        fast.recv().await.is_none(),
        "stream finished after the reply"
    );

    let reply = slow.recv().await.expect("slow reply");
    assert_eq!(reply.ty, "DONE");
    assert_eq!(reply.meta.correlation_id.as_deref(), Some("slow"));
    assert!(slow.recv().await.is_none());

    // Same connection: same identity, and nothing leaked onto the main stream.
    let who_frame = client.encode("WHOAMI", Some("lane-who"), &json!(null));
    let mut who = Request::open(&client, &who_frame).await;
    let you: You = who.recv().await.unwrap().decode_payload().unwrap();
    assert_eq!(you.id, me.id);
    client.send("ECHO", Some("after"), json!("main")).await;
    let next = client.expect("ECHO").await;
    assert_eq!(next.meta.correlation_id.as_deref(), Some("after"));
    assert_eq!(hub.connection_count(), 1);
}

#[tokio::test]
async fn progress_and_errors_of_a_stream_request_come_back_on_its_stream() {
    let hub = hub();
    let server = start(&hub).await;
    let client = Client::connect(&server, "msgpack+gzip").await;
    let frame = client.encode("STEPS", Some("s"), &json!({"n": 3}));
    let mut steps = Request::open(&client, &frame).await;
    for n in 0..3 {
        let progress = steps.recv().await.unwrap();
        assert_eq!(progress.ty, signalbox::codec::vocab::RPC_PROGRESS);
        assert_eq!(progress.meta.correlation_id.as_deref(), Some("s"));
        assert_eq!(progress.decode_payload::<Tick>().unwrap(), Tick { n });
    }
    assert_eq!(steps.recv().await.unwrap().ty, "DONE");
    assert!(steps.recv().await.is_none());

    // An invalid payload: RPC_ERROR on the stream.
    let frame = client.encode("SLOW", Some("bad"), &json!({"ms": "soon"}));
    let mut bad = Request::open(&client, &frame).await;
    let error = bad.recv().await.unwrap();
    assert_eq!(error.ty, "RPC_ERROR");
    assert_eq!(error.meta.correlation_id.as_deref(), Some("bad"));
    assert!(bad.recv().await.is_none());

    // No correlationId: refused on the stream itself.
    let frame = client.encode("ECHO", None, &json!(1));
    let mut anonymous = Request::open(&client, &frame).await;
    let error = anonymous.recv().await.unwrap();
    assert_eq!(error.ty, "ERROR");
    let payload: serde_json::Value = error.decode_payload().unwrap();
    assert_eq!(payload["code"], "INVALID_ARGUMENT");
    assert!(anonymous.recv().await.is_none());
}

#[tokio::test]
async fn a_correlation_id_pending_on_a_stream_cannot_be_reused_on_another() {
    let hub = hub();
    let server = start(&hub).await;
    let client = Client::connect(&server, "json").await;
    let frame = client.encode("SLOW", Some("dup"), &json!({"ms": 400}));
    let mut first = Request::open(&client, &frame).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = Request::open(&client, &frame).await;
    let error = second.recv().await.unwrap();
    let payload: serde_json::Value = error.decode_payload().unwrap();
    assert_eq!(payload["code"], "ALREADY_EXISTS");
    assert_eq!(first.recv().await.unwrap().ty, "DONE");
}

/// What the router's error hook saw: the transport, the message type and
/// the error's code.
type Seen = Arc<Mutex<Vec<(String, Option<String>, signalbox::ErrorCode)>>>;

#[tokio::test]
async fn lane_refusals_are_answered_by_the_hub_with_its_clock_and_error_hook() {
    let clock = signalbox::ManualClock::new(1_700_000_000_123);
    let seen: Seen = Arc::default();
    let router = router().on_error({
        let seen = seen.clone();
        move |event| {
            seen.lock().unwrap().push((
                event.conn.info().transport.to_owned(),
                event.message_type.map(str::to_owned),
                event.error.code().clone(),
            ));
        }
    });
    let hub = signalbox::Hub::builder(router).clock(clock.clone()).build();
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;

    // No correlationId.
    let frame = client.encode("ECHO", None, &json!(1));
    let mut anonymous = Request::open(&client, &frame).await;
    let error = anonymous.recv().await.expect("an answer on the stream");
    assert_eq!(error.ty, "ERROR");
    assert_eq!(error.meta.correlation_id, None);
    assert_eq!(error.meta.timestamp, Some(1_700_000_000_123));
    let payload: serde_json::Value = error.decode_payload().unwrap();
    assert_eq!(payload["code"], "INVALID_ARGUMENT");
    assert!(anonymous.recv().await.is_none(), "finished after the error");

    // A correlationId already pending on another stream: answered on the
    // refused stream, with the id, while the first stream gets its reply.
    clock.advance(1000);
    let frame = client.encode("SLOW", Some("dup"), &json!({"ms": 400}));
    let mut first = Request::open(&client, &frame).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = Request::open(&client, &frame).await;
    let error = second.recv().await.expect("an answer on the second stream");
    assert_eq!(error.ty, "ERROR");
    assert_eq!(error.meta.correlation_id.as_deref(), Some("dup"));
    assert_eq!(error.meta.timestamp, Some(1_700_000_001_123));
    let payload: serde_json::Value = error.decode_payload().unwrap();
    assert_eq!(payload["code"], "ALREADY_EXISTS");
    assert!(second.recv().await.is_none());
    let done = first.recv().await.expect("the first stream's reply");
    assert_eq!(done.ty, "DONE");
    assert_eq!(done.meta.correlation_id.as_deref(), Some("dup"));
    assert!(first.recv().await.is_none());

    // A request that does not decode.
    let mut garbage = Request::open(&client, b"{not json").await;
    let error = garbage.recv().await.expect("an answer on the stream");
    assert_eq!(error.ty, "ERROR");
    assert_eq!(error.meta.timestamp, Some(1_700_000_001_123));
    let payload: serde_json::Value = error.decode_payload().unwrap();
    assert_eq!(payload["code"], "INVALID_ARGUMENT");
    assert!(garbage.recv().await.is_none());

    // Each refusal reached the error hook, from this QUIC connection.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (
                "quic".to_owned(),
                Some("ECHO".to_owned()),
                signalbox::ErrorCode::InvalidArgument
            ),
            (
                "quic".to_owned(),
                Some("SLOW".to_owned()),
                signalbox::ErrorCode::AlreadyExists
            ),
            (
                "quic".to_owned(),
                None,
                signalbox::ErrorCode::InvalidArgument
            ),
        ]
    );
    // Nothing of it leaked onto the main stream.
    client.send("ECHO", Some("after"), json!("main")).await;
    let next = client.expect("ECHO").await;
    assert_eq!(next.meta.correlation_id.as_deref(), Some("after"));
    assert_eq!(hub.connection_count(), 1);
}

#[tokio::test]
async fn with_the_lane_off_a_second_stream_cannot_be_opened() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .request_streams(0)
        .bind(localhost())
        .await
        .unwrap();
    let mut client = Client::connect(&server, "json").await;
    client.send("ECHO", Some("1"), json!(1)).await;
    client.expect("ECHO").await;
    let opened = tokio::time::timeout(Duration::from_millis(300), client.conn.open_bi()).await;
    assert!(opened.is_err(), "the server granted a second stream");
}

#[tokio::test]
async fn a_client_that_finishes_its_stream_closes_normally() {
    let hub = hub();
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;
    client.send("ECHO", Some("1"), json!(1)).await;
    client.expect("ECHO").await;
    client.send.finish().unwrap();
    assert_eq!(client.close_code().await, Some(0));
    assert!(eventually(WAIT, || hub.connection_count() == 0).await);

    // Ending the stream inside a frame is a protocol violation.
    let mut client = Client::connect(&server, "json").await;
    client.send.write_all(&[0, 0, 0, 10, b'{']).await.unwrap();
    client.send.finish().unwrap();
    assert_eq!(client.close_code().await, Some(2));
}

#[tokio::test]
async fn the_certificate_covers_the_default_and_extra_names() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .self_signed_names(["chat.test"])
        .bind(localhost())
        .await
        .unwrap();
    let pem = server.cert_pem();
    for name in ["localhost", "chat.test"] {
        let endpoint = client_endpoint();
        let conn = endpoint
            .connect_with(
                client_config(&pem, &["signalbox/json"]),
                server.local_addr(),
                name,
            )
            .unwrap()
            .await;
        assert!(conn.is_ok(), "{name}: {conn:?}");
    }
    for ip in ["127.0.0.1", "::1"] {
        let endpoint = client_endpoint();
        let conn = endpoint
            .connect_with(
                client_config(&pem, &["signalbox/json"]),
                server.local_addr(),
                ip,
            )
            .unwrap()
            .await;
        assert!(conn.is_ok(), "{ip}: {conn:?}");
    }
    let endpoint = client_endpoint();
    let conn = endpoint
        .connect_with(
            client_config(&pem, &["signalbox/json"]),
            server.local_addr(),
            "other.test",
        )
        .unwrap()
        .await;
    assert!(conn.is_err(), "a name the certificate does not cover");
    // Written as PEM for clients to trust.
    let path = std::env::temp_dir().join(format!("signalbox-quic-cert-{}.pem", std::process::id()));
    server.write_cert_pem(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer_with_code_3() {
    let mut config = Config::default();
    config.outbound_queue = 8;
    let hub = hub_with(config);
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;
    client
        .send("JOIN", Some("j"), json!({"topic": "firehose"}))
        .await;
    client.expect("JOINED").await;
    // The client reads nothing more: flow control stops the server's
    // writes, then the outbound queue fills.
    let text = "x".repeat(64 * 1024);
    for n in 0..200u32 {
        let _ = hub
            .publish(
                "firehose",
                &Big {
                    n,
                    text: text.clone(),
                },
            )
            .await;
        if hub.connection_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(client.close_code().await, Some(3));
    assert!(eventually(WAIT, || hub.connection_count() == 0).await);
}

#[tokio::test]
async fn a_client_may_stay_quiet_before_its_first_message() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .handshake_timeout(Duration::from_millis(200))
        .bind(localhost())
        .await
        .unwrap();
    let mut client = Client::connect(&server, "json").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hub.connection_count(), 0, "served only once it sends");
    client.send("ECHO", Some("late"), json!("late")).await;
    let reply = client.expect("ECHO").await;
    assert_eq!(reply.meta.correlation_id.as_deref(), Some("late"));
    assert_eq!(hub.connection_count(), 1);
}

#[tokio::test]
async fn a_rejection_closes_with_its_close_kind_and_the_server_binds_by_name() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .authenticate(|handshake| async move {
            match handshake.alpn.as_deref() {
                Some("signalbox/msgpack") => Err(Rejection::from(
                    signalbox::transport::http::StatusCode::SERVICE_UNAVAILABLE,
                )),
                _ => Err(Rejection::unauthorized().with_body("no token")),
            }
        })
        // Text, resolved when binding, as the WebSocket server takes.
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    assert!(server.local_addr().ip().is_loopback() && server.local_addr().port() != 0);
    for (alpn, code, reason) in [
        ("signalbox/msgpack", 1, &b"Service Unavailable"[..]),
        ("signalbox/json", 3, &b"no token"[..]),
    ] {
        let (_endpoint, refused) =
            handshake(server.local_addr(), &server.cert_pem(), &[alpn]).await;
        let refused = refused.unwrap();
        match tokio::time::timeout(WAIT, refused.closed()).await.unwrap() {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code.into_inner(), code, "{alpn}");
                assert_eq!(&close.reason[..], reason, "{alpn}");
            }
            other => panic!("expected code {code}, got {other}"),
        }
    }
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test]
async fn a_batch_of_small_and_large_frames_arrives_whole_and_in_order() {
    // Replies under 1 KiB are copied into one chunk per batch, larger ones
    // are written as they are (transport-quic/src/stream.rs): requests sent
    // back to back make batches that mix both.
    let hub = hub();
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;
    let size = |i: usize| match i % 4 {
        1 => 3000,
        3 => 1020,
        _ => 10 + i,
    };
    let n = 120;
    for i in 0..n {
        let text = format!("{i}:{}", "x".repeat(size(i)));
        client.send("ECHO", Some(&i.to_string()), json!(text)).await;
    }
    for i in 0..n {
        let frame = tokio::time::timeout(Duration::from_secs(10), client.recv_frame())
            .await
            .expect("a reply within 10 s")
            .expect("the connection stays open");
        let text = std::str::from_utf8(&frame).unwrap();
        let expected = format!("\"{i}:{}\"", "x".repeat(size(i)));
        assert!(
            text.contains(&expected) && text.contains(&format!("\"{i}\"")),
            "reply {i} of {} bytes is not the echo of request {i}",
            frame.len()
        );
    }
}
