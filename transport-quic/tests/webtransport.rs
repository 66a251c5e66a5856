//! WebTransport on the QUIC endpoint (docs/PROTOCOL.md §5,
//! "WebTransport"): native and WebTransport clients on one port and in one
//! room, codec negotiation by subprotocol and by query, the request-stream
//! lane, and the refusals: a wrong path (404), an unknown codec (400), the
//! authentication hook (its status), a malformed or foreign CONNECT (the
//! connection's close with H3_GENERAL_PROTOCOL_ERROR and a reason), a
//! CONNECT never sent (the handshake timeout), an oversized frame (code 2)
//! and sessions abandoned mid-frame (their share of the incomplete-message
//! budget given back). After each, a good client is still served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use serde_json::json;
use signalbox::DataMap;
use signalbox::codec::{Meta, WireCodec};
use signalbox::transport::{Handshake, Rejection};
use signalbox_quic::{QuicClient, QuicServer, roots_from_pem};
use std::time::Duration;
use web_transport_quinn::proto::{ConnectRequest, Settings};

const PATH: &str = "/wt";

async fn server() -> (signalbox::Hub, QuicServer) {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .webtransport(PATH)
        .bind(localhost())
        .await
        .unwrap();
    (hub, server)
}

async fn wt_client(server: &QuicServer, codec: &str) -> QuicClient {
    QuicClient::builder(roots_from_pem(server.cert_pem().as_bytes()).unwrap())
        .codec(WireCodec::from_name(codec).unwrap())
        .webtransport(PATH)
        .connect(server.local_addr())
        .await
        .expect("WebTransport session")
}

async fn native_client(server: &QuicServer, codec: &str) -> QuicClient {
    QuicClient::builder(roots_from_pem(server.cert_pem().as_bytes()).unwrap())
        .codec(WireCodec::from_name(codec).unwrap())
        .connect(server.local_addr())
        .await
        .expect("native connection")
}

fn encode(client: &QuicClient, ty: &str, cid: Option<&str>, payload: serde_json::Value) -> Bytes {
    let meta = Meta {
        correlation_id: cid.map(Into::into),
        ..Meta::default()
    };
    client.codec().encode(ty, &meta, Some(&payload)).unwrap()
}

async fn expect(client: &mut QuicClient, ty: &str) -> signalbox::codec::Envelope {
    loop {
        let frame = tokio::time::timeout(WAIT, client.recv_frame())
            .await
            .unwrap_or_else(|_| panic!("no {ty} in time"))
            .unwrap()
            .unwrap_or_else(|| panic!("stream ended before {ty}"));
        let envelope = client.codec().decode(frame).unwrap();
        if envelope.ty == ty {
            return envelope;
        }
    }
}

async fn echo(client: &mut QuicClient, round: u32) {
    let id = format!("e{round}");
    let frame = encode(client, "ECHO", Some(&id), json!({ "round": round }));
    client.send_frame(&frame).await.unwrap();
    let env = expect(client, "ECHO").await;
    assert_eq!(env.meta.correlation_id.as_deref(), Some(id.as_str()));
}

/// An HTTP/3 connection (ALPN h3) to `server`, nothing sent on it yet.
async fn h3_connection(server: &QuicServer) -> (quinn::Endpoint, quinn::Connection) {
    let (endpoint, connection) = handshake(server.local_addr(), &server.cert_pem(), &["h3"]).await;
    (endpoint, connection.expect("h3 handshake"))
}

fn url(server: &QuicServer, path_and_query: &str) -> url::Url {
    format!(
        "https://localhost:{}{path_and_query}",
        server.local_addr().port()
    )
    .parse()
    .unwrap()
}

/// The status the server answered a CONNECT with, if it refused it.
fn refused_status(error: &web_transport_quinn::ClientError) -> Option<u16> {
    match error {
        web_transport_quinn::ClientError::HttpError(
            web_transport_quinn::ConnectError::ErrorStatus(status),
        )
        | web_transport_quinn::ClientError::HttpError(
            web_transport_quinn::ConnectError::ProtoError(
                web_transport_quinn::proto::ConnectError::WrongStatus(Some(status)),
            ),
        ) => Some(status.as_u16()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_webtransport_clients_share_one_port_and_one_room() {
    let (hub, server) = server().await;
    let mut web = wt_client(&server, "msgpack").await;
    let mut native = native_client(&server, "json").await;
    assert!(web.is_webtransport() && !native.is_webtransport());
    assert_eq!(web.codec().name(), "msgpack");

    for client in [&mut web, &mut native] {
        let frame = encode(client, "WHOAMI", Some("who"), json!(null));
        client.send_frame(&frame).await.unwrap();
    }
    let you = expect(&mut web, "YOU")
        .await
        .decode_payload::<You>()
        .unwrap();
    assert_eq!(you.transport, "webtransport");
    let you = expect(&mut native, "YOU")
        .await
        .decode_payload::<You>()
        .unwrap();
    assert_eq!(you.transport, "quic");

    for client in [&mut web, &mut native] {
        let frame = encode(client, "JOIN", None, json!({ "topic": "room" }));
        client.send_frame(&frame).await.unwrap();
        expect(client, "JOINED").await;
    }
    assert_eq!(hub.topic_size("room"), 2);
    hub.publish("room", &Tick { n: 7 }).await.unwrap();
    for client in [&mut web, &mut native] {
        let tick = expect(client, "TICK")
            .await
            .decode_payload::<Tick>()
            .unwrap();
        assert_eq!(tick, Tick { n: 7 });
    }

    // The request-stream lane works over the session as natively.
    let frame = encode(&web, "STEPS", Some("s1"), json!({ "n": 3 }));
    let mut lane = web.request(&frame).await.unwrap();
    let mut types = Vec::new();
    while let Some(frame) = tokio::time::timeout(WAIT, lane.recv_frame())
        .await
        .unwrap()
        .unwrap()
    {
        types.push(web.codec().decode(frame).unwrap().ty);
    }
    assert_eq!(types.len(), 4, "{types:?}");
    assert_eq!(types[3], "DONE");

    // Shutdown closes the session with code 1, after its queued messages.
    hub.shutdown().await;
    assert_eq!(
        tokio::time::timeout(WAIT, web.closed()).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        tokio::time::timeout(WAIT, native.closed()).await.unwrap(),
        Some(1)
    );
    tokio::time::timeout(WAIT, server.closed()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_is_the_subprotocol_else_the_query_else_json() {
    let (_hub, server) = server().await;
    // Subprotocols: the first the server knows, confirmed in the response.
    let (_endpoint, connection) = h3_connection(&server).await;
    let request = ConnectRequest::new(url(&server, "/wt?codec=json"))
        .with_protocol("cbor")
        .with_protocol("msgpack+gzip");
    let session = web_transport_quinn::Session::connect(connection, request)
        .await
        .unwrap();
    assert_eq!(session.protocol(), Some("msgpack+gzip"));

    // No subprotocol: the query (a `+` escaped as %2B), no confirmation.
    let (_endpoint, connection) = h3_connection(&server).await;
    let request = ConnectRequest::new(url(&server, "/wt?token=x&codec=json%2Bgzip"));
    let session = web_transport_quinn::Session::connect(connection, request)
        .await
        .unwrap();
    assert_eq!(session.protocol(), None);
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    let codec = WireCodec::from_name("json+gzip").unwrap();
    let meta = Meta {
        correlation_id: Some("q".into()),
        ..Meta::default()
    };
    let body = codec.encode("WHOAMI", &meta, Some(&json!(null))).unwrap();
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    send.write_all(&out).await.unwrap();
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await.unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(header) as usize];
    recv.read_exact(&mut reply).await.unwrap();
    let reply = codec.decode(Bytes::from(reply)).unwrap();
    assert_eq!(reply.ty, "YOU");
    assert_eq!(reply.meta.correlation_id.as_deref(), Some("q"));

    // Neither: json.
    let (_endpoint, connection) = h3_connection(&server).await;
    let session =
        web_transport_quinn::Session::connect(connection, ConnectRequest::new(url(&server, "/wt")))
            .await
            .unwrap();
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    let body = br#"{"type":"ECHO","meta":{"correlationId":"j"},"payload":1}"#;
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32);
    out.put_slice(body);
    send.write_all(&out).await.unwrap();
    recv.read_exact(&mut header).await.unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(header) as usize];
    recv.read_exact(&mut reply).await.unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["meta"]["correlationId"], "j");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_paths_unknown_codecs_and_refused_tokens_get_http_statuses() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .webtransport(PATH)
        .authenticate(|handshake: Handshake| async move {
            let query = handshake.uri.as_ref().and_then(|u| u.query()).unwrap_or("");
            if query.contains("token=good") {
                Ok(DataMap::new())
            } else {
                Err(Rejection::forbidden())
            }
        })
        .bind(localhost())
        .await
        .unwrap();
    for (path, protocols, status) in [
        ("/elsewhere?token=good", vec![], 404),
        ("/wt?token=good", vec!["xml"], 400),
        ("/wt?token=good&codec=xml", vec![], 400),
        ("/wt?token=bad", vec!["json"], 403),
    ] {
        let (_endpoint, connection) = h3_connection(&server).await;
        let request = ConnectRequest::new(url(&server, path))
            .with_protocols(protocols.iter().map(|p| p.to_string()));
        let error = web_transport_quinn::Session::connect(connection.clone(), request)
            .await
            .expect_err(path);
        assert_eq!(refused_status(&error), Some(status), "{path}: {error}");
        // The server hangs up after the answer.
        tokio::time::timeout(WAIT, connection.closed())
            .await
            .unwrap();
    }
    assert_eq!(hub.connection_count(), 0);
    let mut good = QuicClient::builder(roots_from_pem(server.cert_pem().as_bytes()).unwrap())
        .webtransport("/wt?token=good")
        .connect(server.local_addr())
        .await
        .unwrap();
    echo(&mut good, 1).await;
}

/// HEADERS frame with a QPACK field section of literal field lines with
/// literal names (RFC 9204 §4.5.6), for CONNECTs the library would not send.
fn headers_frame(fields: &[(&str, &str)]) -> Vec<u8> {
    fn prefixed(out: &mut Vec<u8>, first: u8, bits: u8, mut n: usize) {
        let max = (1usize << bits) - 1;
        if n < max {
            out.push(first | n as u8);
            return;
        }
        out.push(first | max as u8);
        n -= max;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    let mut section = vec![0u8, 0u8];
    for (name, value) in fields {
        prefixed(&mut section, 0x20, 3, name.len());
        section.extend_from_slice(name.as_bytes());
        prefixed(&mut section, 0x00, 7, value.len());
        section.extend_from_slice(value.as_bytes());
    }
    let mut frame = vec![0x01];
    // The length as a 4-byte QUIC varint.
    frame.extend_from_slice(&(0x8000_0000u32 | section.len() as u32).to_be_bytes());
    frame.extend_from_slice(&section);
    frame
}

/// Sends SETTINGS (WebTransport enabled) then `connect` on a request
/// stream; the connection's close code and reason.
async fn h3_exchange(server: &QuicServer, connect: &[u8]) -> (u64, String) {
    let (_endpoint, connection) = h3_connection(server).await;
    let mut settings = Settings::default();
    settings.enable_webtransport(1);
    let mut control = connection.open_uni().await.unwrap();
    let mut buf = BytesMut::new();
    buf.put_u8(0x00); // the control stream's type
    settings.encode(&mut buf);
    control.write_all(&buf).await.unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(connect).await.unwrap();
    let _ = send.finish();
    match tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap()
    {
        quinn::ConnectionError::ApplicationClosed(close) => (
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => panic!("closed without an application code: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_foreign_connects_are_refused_with_a_reason() {
    let (hub, server) = server().await;
    let authority = format!("localhost:{}", server.local_addr().port());
    // Not QPACK at all.
    let (code, reason) = h3_exchange(&server, &[0x01, 0x04, 0xff, 0xff, 0xff, 0xff]).await;
    assert_eq!(code, 0x101, "{reason}");
    assert!(reason.starts_with("not a WebTransport CONNECT"), "{reason}");
    // A CONNECT for another protocol.
    let frame = headers_frame(&[
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":authority", &authority),
        (":path", "/wt"),
    ]);
    let (code, reason) = h3_exchange(&server, &frame).await;
    assert_eq!(code, 0x101, "{reason}");
    assert!(reason.contains("not a WebTransport CONNECT"), "{reason}");
    // A plain GET.
    let frame = headers_frame(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", &authority),
        (":path", "/wt"),
    ]);
    let (code, reason) = h3_exchange(&server, &frame).await;
    assert_eq!(code, 0x101, "{reason}");
    // Header sections past the 16 KiB limit.
    let big = "a".repeat(20_000);
    let frame = headers_frame(&[(":method", "CONNECT"), ("x-big", &big)]);
    let (code, reason) = h3_exchange(&server, &frame).await;
    assert_eq!(code, 0x101, "{reason}");

    assert_eq!(hub.connection_count(), 0);
    let mut good = wt_client(&server, "json").await;
    echo(&mut good, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_never_sent_ends_at_the_handshake_timeout() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .webtransport(PATH)
        .handshake_timeout(Duration::from_millis(500))
        .bind(localhost())
        .await
        .unwrap();
    let (_endpoint, connection) = h3_connection(&server).await;
    match tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap()
    {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), 0x101);
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(reason.contains("handshake timeout"), "{reason}");
        }
        other => panic!("{other}"),
    }
    let mut good = wt_client(&server, "json").await;
    echo(&mut good, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_with_code_2_and_abandoned_sessions_give_back_their_budget() {
    let (hub, server) = server().await;
    // A length past the maximum message size (1 MiB).
    let (_endpoint, connection) = h3_connection(&server).await;
    let session =
        web_transport_quinn::Session::connect(connection, ConnectRequest::new(url(&server, "/wt")))
            .await
            .unwrap();
    let (mut send, _recv) = session.open_bi().await.unwrap();
    send.write_all(&(64u32 << 20).to_be_bytes()).await.unwrap();
    match tokio::time::timeout(WAIT, session.closed()).await.unwrap() {
        web_transport_quinn::SessionError::WebTransportError(
            web_transport_quinn::WebTransportError::Closed(code, reason),
        ) => {
            assert_eq!(code, 2, "{reason}");
            assert!(reason.contains("too big"), "{reason}");
        }
        other => panic!("{other}"),
    }

    // Sessions that stop in the middle of a frame, then go away.
    let budget = hub.incomplete_budget();
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let (endpoint, connection) = h3_connection(&server).await;
        let session = web_transport_quinn::Session::connect(
            connection,
            ConnectRequest::new(url(&server, "/wt")),
        )
        .await
        .unwrap();
        let (mut send, recv) = session.open_bi().await.unwrap();
        send.write_all(&(512u32 << 10).to_be_bytes()).await.unwrap();
        send.write_all(&vec![b'x'; 64 << 10]).await.unwrap();
        sessions.push((endpoint, session, send, recv));
    }
    assert!(eventually(WAIT, || hub.connection_count() == 20).await);
    // The part past each connection's free 16 KiB is charged.
    assert!(
        eventually(WAIT, || budget.used() >= 20 * (48 << 10)).await,
        "{}",
        budget.used()
    );
    for (endpoint, session, _, _) in sessions.drain(..) {
        session.close(0, b"bye");
        endpoint.close(quinn::VarInt::from_u32(0), b"");
    }
    assert!(eventually(WAIT, || hub.connection_count() == 0).await);
    assert!(
        eventually(WAIT, || budget.used() == 0).await,
        "{}",
        budget.used()
    );
    let mut good = wt_client(&server, "msgpack").await;
    echo(&mut good, 1).await;
}
