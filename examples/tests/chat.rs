//! docs/PROTOCOL.md §9: the chat example over WebSocket, in-process on an ephemeral
//! port, and its binary.

mod common;

use common::*;
use serde_json::json;
use std::process::{Command, Stdio};

/// Joins `room` and returns the joiner's own USER_JOINED (after the room's
/// recent messages, which end with `$sb:subscribed`), then reads the
/// member list that follows it.
async fn join(
    client: &mut Client,
    room: &str,
    username: Option<&str>,
) -> signalbox::codec::Envelope {
    let mut payload = json!({ "roomId": room });
    if let Some(name) = username {
        payload["username"] = json!(name);
    }
    client.send_json("JOIN_ROOM", None, payload).await;
    client.expect("$sb:subscribed").await;
    let own = client.expect("USER_JOINED").await;
    let members = client.expect("ROOM_MEMBERS").await;
    assert_eq!(json(&members)["roomId"], json!(room));
    own
}

#[tokio::test]
async fn joining_tells_the_room_joiner_included_with_the_username_as_given() {
    let (_hub, addr) = start_chat().await;
    let mut alice = connect(addr, "json").await;
    let mut bob = connect(addr, "msgpack").await;
    let own = join(&mut alice, "lobby", Some("Alice ✓")).await;
    let alice_id = json(&own)["userId"].as_str().unwrap().to_owned();
    assert_eq!(
        json(&own),
        json!({"roomId": "lobby", "userId": alice_id, "username": "Alice ✓"})
    );
    assert!(own.meta.timestamp.is_some());

    let own = join(&mut bob, "lobby", None).await;
    let bob_id = json(&own)["userId"].as_str().unwrap().to_owned();
    assert_ne!(bob_id, alice_id);
    assert_eq!(
        json(&own),
        json!({"roomId": "lobby", "userId": bob_id}),
        "no username: none sent"
    );
    let seen = alice.expect("USER_JOINED").await;
    assert_eq!(json(&seen)["userId"], json!(bob_id));
}

#[tokio::test]
async fn joining_twice_is_a_no_op_and_leaving_a_room_not_joined_too() {
    let (_hub, addr) = start_chat().await;
    let mut alice = connect(addr, "json").await;
    join(&mut alice, "twice", Some("a")).await;
    alice
        .send_json(
            "JOIN_ROOM",
            None,
            json!({"roomId": "twice", "username": "a"}),
        )
        .await;
    alice
        .send_json(
            "LEAVE_ROOM",
            Some("leave-other"),
            json!({"roomId": "never-joined"}),
        )
        .await;
    let before = alice.sync("sync").await;
    assert!(
        before.is_empty(),
        "no second USER_JOINED, no answer to the leave: {before:?}"
    );
}

#[tokio::test]
async fn a_message_reaches_every_member_sender_included_with_its_user_id() {
    let (_hub, addr) = start_chat().await;
    let mut alice = connect(addr, "msgpack+gzip").await;
    let mut bob = connect(addr, "json").await;
    let mut carol = connect(addr, "json").await; // not a member
    let alice_id = json(&join(&mut alice, "r1", None).await)["userId"].clone();
    join(&mut bob, "r1", None).await;
    alice.expect("USER_JOINED").await;
    let text = "héllo 🚀";
    alice
        .send(
            "SEND_MESSAGE",
            Some("s-1"),
            Some(&json!({"roomId": "r1", "text": text})),
        )
        .await;
    for member in [&mut alice, &mut bob] {
        let msg = member.expect("NEW_MESSAGE").await;
        let payload = json(&msg);
        assert_eq!(payload["roomId"], "r1");
        assert_eq!(payload["text"], text);
        assert_eq!(payload["userId"], alice_id);
        assert_eq!(msg.meta.client_id.as_deref(), alice_id.as_str());
        assert!(
            payload["timestamp"]
                .as_u64()
                .is_some_and(|t| t > 1_500_000_000_000)
        );
    }
    assert!(carol.sync("c").await.is_empty(), "non-members get nothing");
}

#[tokio::test]
async fn sending_to_a_room_not_joined_is_permission_denied() {
    let (_hub, addr) = start_chat().await;
    let mut alice = connect(addr, "json").await;
    alice
        .send_json(
            "SEND_MESSAGE",
            Some("p-1"),
            json!({"roomId": "elsewhere", "text": "x"}),
        )
        .await;
    let error = alice.expect("ERROR").await;
    assert_eq!(error.meta.correlation_id.as_deref(), Some("p-1"));
    assert_eq!(json(&error)["code"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn text_and_room_ids_are_validated() {
    let (_hub, addr) = start_chat().await;
    let mut alice = connect(addr, "json").await;
    let long_room = "r".repeat(128);
    join(&mut alice, &long_room, None).await;
    join(&mut alice, "🚀", None).await;
    let cases = [
        (
            "SEND_MESSAGE",
            json!({"roomId": long_room, "text": ""}),
            "payload.text",
        ),
        (
            "SEND_MESSAGE",
            json!({"roomId": long_room, "text": "é".repeat(4097)}),
            "payload.text",
        ),
        (
            "SEND_MESSAGE",
            json!({"roomId": long_room, "text": 5}),
            "payload.text",
        ),
        (
            "JOIN_ROOM",
            json!({"roomId": "r".repeat(129)}),
            "payload.roomId",
        ),
        ("JOIN_ROOM", json!({"roomId": ""}), "payload.roomId"),
        ("LEAVE_ROOM", json!({"roomId": ""}), "payload.roomId"),
    ];
    for (i, (ty, payload, path)) in cases.into_iter().enumerate() {
        let cid = format!("v-{i}");
        alice.send_json(ty, Some(&cid), payload).await;
        let error = alice.expect("ERROR").await;
        assert_eq!(error.meta.correlation_id.as_deref(), Some(cid.as_str()));
        assert_eq!(json(&error)["code"], "INVALID_ARGUMENT", "{ty} {path}");
        assert!(
            json(&error)["message"].as_str().unwrap().contains(path),
            "{:?}",
            json(&error)
        );
    }
    // At the limits: accepted.
    alice
        .send_json(
            "SEND_MESSAGE",
            None,
            json!({"roomId": long_room, "text": "é".repeat(4096)}),
        )
        .await;
    assert_eq!(
        json(&alice.expect("NEW_MESSAGE").await)["text"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        4096
    );
    alice
        .send_json("SEND_MESSAGE", None, json!({"roomId": "🚀", "text": "x"}))
        .await;
    assert_eq!(json(&alice.expect("NEW_MESSAGE").await)["roomId"], "🚀");
}

#[tokio::test]
async fn leaving_tells_the_room_and_ends_membership() {
    let (_hub, addr) = start_chat().await;
    let mut alice = connect(addr, "json").await;
    let mut bob = connect(addr, "msgpack").await;
    join(&mut alice, "r2", None).await;
    let bob_id = json(&join(&mut bob, "r2", None).await)["userId"].clone();
    alice.expect("USER_JOINED").await;
    bob.send_json("LEAVE_ROOM", None, json!({"roomId": "r2"}))
        .await;
    let left = alice.expect("USER_LEFT").await;
    assert_eq!(json(&left), json!({"roomId": "r2", "userId": bob_id}));
    bob.send_json(
        "SEND_MESSAGE",
        Some("after"),
        json!({"roomId": "r2", "text": "x"}),
    )
    .await;
    assert_eq!(
        json(&bob.expect("ERROR").await)["code"],
        "PERMISSION_DENIED"
    );
}

/// A connection that resumed a room (docs/PROTOCOL.md §8.1) without
/// joining it again was never announced: leaving it, or disconnecting,
/// tells the room nothing; an announced member's leaving still does.
#[tokio::test]
async fn a_resumed_member_not_announced_again_leaves_silently() {
    let (hub, addr) = start_chat().await;
    let topic = signalbox_examples::chat::room_topic("quiet");
    let mut alice = connect(addr, "json").await;
    join(&mut alice, "quiet", None).await;
    // Carol and Dave resume the room from an epoch that is gone: members
    // again (not recovered), never announced.
    let resume = json!({"topics": [{"topic": topic, "epoch": "gone", "offset": 3}]});
    let mut carol = connect(addr, "json").await;
    let mut dave = connect(addr, "msgpack").await;
    for (who, peer) in [("carol", &mut carol), ("dave", &mut dave)] {
        peer.send_json("$sb:resume", Some(who), resume.clone())
            .await;
        let subscribed = json(&peer.expect("$sb:subscribed").await);
        assert_eq!(subscribed["recovered"], json!(false), "{who}");
        let resumed = json(&peer.expect("$sb:resumed").await);
        assert_eq!(resumed["topics"], json!([{"topic": topic}]), "{who}");
    }
    assert_eq!(hub.topic_size(&topic), 3);

    carol
        .send_json("LEAVE_ROOM", None, json!({"roomId": "quiet"}))
        .await;
    carol.sync("c-sync").await; // the leave was handled
    drop(dave);
    wait_until("dave gone from the room", WAIT, || {
        hub.topic_size(&topic) == 1
    })
    .await;

    // Bob joins and leaves (announced both times); Alice hears of Bob only.
    let mut bob = connect(addr, "json").await;
    let bob_id = json(&join(&mut bob, "quiet", None).await)["userId"].clone();
    bob.send_json("LEAVE_ROOM", None, json!({"roomId": "quiet"}))
        .await;
    let mut heard = Vec::new();
    loop {
        let env = alice.recv().await;
        let payload = json(&env);
        heard.push((env.ty.clone(), payload["userId"].clone()));
        if env.ty == "USER_LEFT" {
            break;
        }
    }
    assert_eq!(
        heard,
        [
            ("USER_JOINED".to_owned(), bob_id.clone()),
            ("USER_LEFT".to_owned(), bob_id)
        ],
        "only Bob's arrival and departure"
    );
}

#[tokio::test]
async fn a_disconnect_leaves_every_room() {
    let (hub, addr) = start_chat().await;
    let mut alice = connect(addr, "json").await;
    let mut bob = connect(addr, "json").await;
    for room in ["a", "b"] {
        join(&mut alice, room, None).await;
    }
    let mut bob_id = json!(null);
    for room in ["a", "b"] {
        bob_id = json(&join(&mut bob, room, None).await)["userId"].clone();
        alice.expect("USER_JOINED").await;
    }
    drop(bob);
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let left = json(&alice.expect("USER_LEFT").await);
        assert_eq!(left["userId"], bob_id);
        rooms.push(left["roomId"].as_str().unwrap().to_owned());
    }
    rooms.sort();
    assert_eq!(rooms, ["a", "b"]);
    assert_eq!(
        hub.topic_size(&signalbox_examples::chat::room_topic("a")),
        1
    );
}

#[tokio::test]
async fn echo_returns_the_payload_byte_for_byte_or_none() {
    let (_hub, addr) = start_chat().await;
    let mut j = connect(addr, "json").await;
    let raw = r#"{"type":"ECHO","meta":{"correlationId":"e-1"},"payload":{"big":18446744073709551615,"f":0.1,"s":"ünï","n":[1,-9007199254740993]}}"#;
    j.send_frame(bytes::Bytes::from_static(raw.as_bytes()))
        .await;
    let reply = String::from_utf8(j.recv_raw().await.to_vec()).unwrap();
    assert!(
        reply.contains(
            r#""payload":{"big":18446744073709551615,"f":0.1,"s":"ünï","n":[1,-9007199254740993]}"#
        ),
        "{reply}"
    );
    assert!(reply.contains(r#""correlationId":"e-1""#));

    j.send::<()>("ECHO", Some("e-2"), None).await;
    let reply = j.recv().await;
    assert_eq!(reply.ty, "ECHO");
    assert_eq!(reply.meta.correlation_id.as_deref(), Some("e-2"));
    assert!(reply.payload.is_none(), "no payload in, none out");

    // MessagePack: a bin stays a bin.
    let mut m = connect(addr, "msgpack").await;
    let payload = serde_bytes::ByteBuf::from(vec![0u8, 1, 254, 255]);
    m.send("ECHO", Some("e-3"), Some(&payload)).await;
    let reply = m.recv().await;
    let bytes = reply.payload.as_ref().unwrap().as_bytes();
    assert_eq!(
        bytes,
        [0xc4, 4, 0, 1, 254, 255],
        "bin 8 with the same bytes"
    );
}

#[tokio::test]
async fn the_page_and_its_script_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_hub, addr) = start_chat().await;
    for (path, status, content_type, body) in [
        (
            "/",
            200,
            "text/html",
            Some(signalbox_examples::chat::INDEX_HTML),
        ),
        (
            "/signalbox.js",
            200,
            "text/javascript",
            Some(signalbox_examples::chat::SIGNALBOX_JS),
        ),
        ("/nope", 404, "text/plain", None),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{path}: {head}"
        );
        assert!(
            head.contains(&format!("content-type: {content_type}")),
            "{path}: {head}"
        );
        if let Some(body) = body {
            assert_eq!(&response[split + 4..], body, "{path}");
        }
    }
}

/// The built binary: prints its listeners, and closes clients with 1001 on
/// SIGTERM.
#[tokio::test]
async fn the_binary_prints_its_listeners_and_stops_on_sigterm() {
    let (child, addr) = spawn_chat_binary(Stdio::piped()).await;
    let mut client = connect(addr, "json").await;
    join(&mut client, "bin", None).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(client.closed().await, 1001);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}
