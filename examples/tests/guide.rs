//! Every guide program, run as its own process and driven over real
//! WebSocket connections on loopback.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A guide program running as a child process; killed on drop.
struct Program {
    child: Child,
    url: String,
}

impl Program {
    fn start(exe: &str) -> Program {
        let mut child = Command::new(exe)
            .args(["--ws", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("program starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a first line");
        let addr = line
            .trim()
            .strip_prefix("listening ws=")
            .unwrap_or_else(|| panic!("unexpected {line:?}"))
            .to_owned();
        Program {
            child,
            url: format!("ws://{addr}/ws"),
        }
    }

    async fn connect(&self, codec: &str) -> Client {
        let mut req = self.url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", codec.parse().unwrap());
        let addr = self
            .url
            .trim_start_matches("ws://")
            .trim_end_matches("/ws")
            .to_owned();
        let tcp = TcpStream::connect(addr).await.expect("tcp connects");
        let (ws, _) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("upgrades");
        Client {
            ws,
            msgpack: codec.starts_with("msgpack"),
        }
    }

    /// Stops the program with SIGTERM and waits for it.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("exits")
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    ws: WebSocketStream<TcpStream>,
    msgpack: bool,
}

impl Client {
    async fn send(&mut self, envelope: Value) {
        let frame = if self.msgpack {
            WsMessage::Binary(rmp_serde::to_vec_named(&envelope).unwrap().into())
        } else {
            WsMessage::Text(envelope.to_string().into())
        };
        self.ws.send(frame).await.expect("sent");
    }

    /// The next envelope, or `None` when the server closed or 5 s passed.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .ok()??;
            match next.ok()? {
                WsMessage::Text(t) => return Some(serde_json::from_str(&t).expect("json")),
                WsMessage::Binary(b) => return Some(rmp_serde::from_slice(&b).expect("msgpack")),
                WsMessage::Close(frame) => {
                    return Some(
                        json!({"type": "$close", "code": frame.map(|f| u16::from(f.code))}),
                    );
                }
                _ => continue,
            }
        }
    }

    async fn expect(&mut self, ty: &str) -> Value {
        let env = self
            .recv()
            .await
            .unwrap_or_else(|| panic!("expected {ty}, got nothing"));
        assert_eq!(env["type"], ty, "expected {ty}, got {env}");
        env
    }

    /// Skips messages of other types until one of type `ty`.
    async fn wait_for(&mut self, ty: &str) -> Value {
        loop {
            let env = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("expected {ty}, got nothing"));
            if env["type"] == ty {
                return env;
            }
        }
    }
}

#[tokio::test]
async fn composition_merges_auth_chat_and_admin_routers() {
    let program = Program::start(env!("CARGO_BIN_EXE_guide_composition"));
    let mut alice = program.connect("json").await;
    let alice_id = alice.expect("WELCOME").await["payload"]["userId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Chat needs a login.
    alice
        .send(json!({"type": "SEND_MESSAGE", "payload": {"text": "hi"}}))
        .await;
    assert_eq!(
        alice.expect("ERROR").await["payload"]["code"],
        "UNAUTHENTICATED"
    );
    alice.send(json!({"type": "LOGIN", "meta": {"correlationId": "l"}, "payload": {"username": "alice"}})).await;
    let logged = alice.expect("LOGGED_IN").await;
    assert_eq!(logged["meta"]["correlationId"], "l");
    assert_eq!(logged["payload"]["userId"], alice_id);
    alice
        .send(json!({"type": "SEND_MESSAGE", "payload": {"text": "hi"}}))
        .await;
    let msg = alice.expect("NEW_MESSAGE").await;
    assert_eq!(msg["payload"], json!({"from": "alice", "text": "hi"}));
    assert_eq!(msg["meta"]["clientId"], alice_id);
    // Admin routes need the admin role.
    alice
        .send(json!({"type": "KICK_USER", "payload": {"userId": alice_id}}))
        .await;
    assert_eq!(
        alice.expect("ERROR").await["payload"]["code"],
        "PERMISSION_DENIED"
    );
    let mut admin = program.connect("msgpack").await;
    admin.expect("WELCOME").await;
    admin
        .send(json!({"type": "LOGIN", "payload": {"username": "admin"}}))
        .await;
    admin.expect("LOGGED_IN").await;
    admin
        .send(json!({"type": "KICK_USER", "payload": {"userId": alice_id}}))
        .await;
    assert_eq!(admin.expect("KICKED").await["payload"]["userId"], alice_id);
    assert_eq!(alice.wait_for("$close").await["code"], 1008);
    assert!(program.stop().success());
}

#[tokio::test]
async fn middleware_requires_auth_and_logs_around_handlers() {
    let program = Program::start(env!("CARGO_BIN_EXE_guide_middleware"));
    let mut c = program.connect("json").await;
    // Refused before its (malformed) payload is parsed.
    c.send(json!({"type": "PROTECTED_ACTION", "payload": {"action": 5}}))
        .await;
    assert_eq!(
        c.expect("ERROR").await["payload"]["code"],
        "UNAUTHENTICATED"
    );
    c.send(json!({"type": "AUTHENTICATE", "payload": {"token": "wrong"}}))
        .await;
    assert_eq!(c.expect("ERROR").await["payload"]["message"], "bad token");
    c.send(json!({"type": "AUTHENTICATE", "payload": {"token": "secret"}}))
        .await;
    c.expect("AUTHENTICATED").await;
    c.send(json!({"type": "PROTECTED_ACTION", "payload": {"action": "launch"}}))
        .await;
    assert_eq!(c.expect("ACTION_DONE").await["payload"]["action"], "launch");
    c.send(json!({"type": "STATS", "meta": {"correlationId": "s"}}))
        .await;
    let stats = c.expect("STATS_REPORT").await;
    assert_eq!(
        stats["payload"],
        json!({"seen": {"AUTHENTICATE": 2, "PROTECTED_ACTION": 2}, "failed": 2})
    );
}

#[tokio::test]
async fn extended_context_checks_roles_and_broadcasts() {
    let program = Program::start(env!("CARGO_BIN_EXE_guide_extended_context"));
    let mut user = program.connect("json").await;
    let mut other = program.connect("msgpack+gzip").await;
    user.send(
        json!({"type": "ADMIN_MESSAGE", "meta": {"correlationId": "a1"}, "payload": {"text": "x"}}),
    )
    .await;
    let err = user.expect("ERROR").await;
    assert_eq!(err["payload"]["code"], "PERMISSION_DENIED");
    assert_eq!(err["meta"]["correlationId"], "a1");
    user.send(json!({"type": "CLAIM_ROLE", "payload": {"role": "admin"}}))
        .await;
    user.expect("ROLE_GRANTED").await;
    user.send(json!({"type": "ADMIN_MESSAGE", "payload": {"text": "maintenance at noon"}}))
        .await;
    for c in [&mut user, &mut other] {
        let ann = c.expect("ADMIN_ANNOUNCEMENT").await;
        assert_eq!(ann["payload"]["text"], "maintenance at noon");
    }
}

/// Asks `LIST_ROOMS` until the answer is `expected` (the directory follows
/// the store's changes in a task of its own, so it may lag a little).
async fn rooms_become(c: &mut Client, expected: Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        c.send(json!({"type": "LIST_ROOMS", "meta": {"correlationId": "l"}, "payload": {}}))
            .await;
        let list = c.wait_for("ROOM_LIST").await;
        if list["payload"]["rooms"] == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rooms still {} rather than {expected}",
            list["payload"]["rooms"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn state_is_pushed_to_room_members_as_it_changes() {
    let program = Program::start(env!("CARGO_BIN_EXE_guide_state"));
    let mut a = program.connect("json").await;
    a.send(json!({"type": "JOIN_ROOM", "payload": {"roomId": "r1", "username": "ann"}}))
        .await;
    let s = a.expect("ROOM_STATE_UPDATE").await;
    // The projection: a count and the latest messages, not the members.
    assert_eq!(
        s["payload"],
        json!({"roomId": "r1", "userCount": 1, "latestMessages": []})
    );
    let mut b = program.connect("msgpack").await;
    b.send(json!({"type": "JOIN_ROOM", "payload": {"roomId": "r1", "username": "bob"}}))
        .await;
    b.expect("ROOM_STATE_UPDATE").await; // the state as it was
    let s = b.expect("ROOM_STATE_UPDATE").await;
    assert_eq!(s["payload"]["userCount"], 2);
    assert_eq!(a.expect("ROOM_STATE_UPDATE").await["payload"], s["payload"]);
    for i in 0..12 {
        b.send(json!({"type": "POST", "payload": {"roomId": "r1", "text": format!("m{i}")}}))
            .await;
    }
    let mut last = Value::Null;
    for _ in 0..12 {
        last = a.expect("ROOM_STATE_UPDATE").await;
    }
    let latest = last["payload"]["latestMessages"].as_array().unwrap();
    assert_eq!(latest.len(), 10);
    assert_eq!(latest[9]["text"], "m11");
    assert_eq!(last["payload"]["userCount"], 2);
    assert!(last["payload"].get("users").is_none(), "{last}");
    // Posting to a room not joined.
    a.send(json!({"type": "POST", "payload": {"roomId": "other", "text": "x"}}))
        .await;
    assert_eq!(
        a.expect("ERROR").await["payload"]["code"],
        "PERMISSION_DENIED"
    );
    // The server-side subscriber's directory.
    rooms_become(&mut a, json!({"r1": 2})).await;
    drop(b);
    let s = a.expect("ROOM_STATE_UPDATE").await;
    assert_eq!(s["payload"]["userCount"], 1);
    rooms_become(&mut a, json!({"r1": 1})).await;

    // Closing the room removes its state: the watchers are told.
    let mut c = program.connect("json").await;
    c.send(json!({"type": "JOIN_ROOM", "payload": {"roomId": "r1", "username": "cy"}}))
        .await;
    c.expect("ROOM_STATE_UPDATE").await; // the room as it was
    for client in [&mut a, &mut c] {
        let s = client.expect("ROOM_STATE_UPDATE").await;
        assert_eq!(s["payload"]["userCount"], 2);
    }
    c.send(json!({"type": "CLOSE_ROOM", "payload": {"roomId": "r1"}}))
        .await;
    for client in [&mut a, &mut c] {
        let removed = client.expect("$sb:state-removed").await;
        assert_eq!(removed["payload"], json!({"key": "room:r1"}));
    }
    rooms_become(&mut a, json!({})).await;
    // Leaving a closed room does not bring it back.
    drop(c);
    a.send(json!({"type": "POST", "payload": {"roomId": "r1", "text": "after"}}))
        .await;
    let s = a.expect("ROOM_STATE_UPDATE").await;
    assert_eq!(s["payload"]["userCount"], 0);
    assert_eq!(s["payload"]["latestMessages"][0]["text"], "after");
}

#[tokio::test]
async fn queued_messages_keep_order_survive_failures_and_lose_nothing() {
    let program = Program::start(env!("CARGO_BIN_EXE_guide_queuing"));
    let mut c = program.connect("json").await;
    // More than the queue holds, with slow ones first and a failure inside.
    for seq in 0..40u64 {
        let work = if seq < 3 { 100 } else { seq % 3 };
        c.send(json!({"type": "QUEUED_MESSAGE", "payload": {"seq": seq, "workMs": work, "fail": seq == 7}})).await;
    }
    for seq in 0..40u64 {
        let env = c.recv().await.expect("an answer");
        if seq == 7 {
            assert_eq!(env["type"], "ERROR");
            assert_eq!(env["payload"]["code"], "ABORTED");
        } else {
            assert_eq!(env["type"], "PROCESSED", "{env}");
            assert_eq!(env["payload"]["seq"], seq);
        }
    }
    c.send(json!({"type": "FAILURES", "meta": {"correlationId": "f"}}))
        .await;
    assert_eq!(c.expect("FAILURE_COUNT").await["payload"]["count"], 1);
}

#[tokio::test]
async fn pools_announce_joins_report_membership_and_push_from_the_server() {
    let program = Program::start(env!("CARGO_BIN_EXE_guide_pools"));
    let mut a = program.connect("json").await;
    let mut b = program.connect("json+gzip").await;
    a.send(json!({"type": "JOIN_POOL", "payload": {"poolId": "p"}}))
        .await;
    a.send(
        json!({"type": "POOL_INFO", "meta": {"correlationId": "i"}, "payload": {"poolId": "p"}}),
    )
    .await;
    let info = a.wait_for("POOL_INFO_REPLY").await;
    assert_eq!(info["payload"]["size"], 1);
    let a_id = info["payload"]["members"][0].as_str().unwrap().to_owned();
    b.send(json!({"type": "JOIN_POOL", "payload": {"poolId": "p"}}))
        .await;
    let joined = a.wait_for("USER_JOINED_POOL").await;
    assert_eq!(joined["payload"]["poolSize"], 2);
    assert_ne!(joined["payload"]["userId"], a_id);
    // The server pushes to `global` on its own.
    let t = b.wait_for("SERVER_TIME").await;
    assert!(t["payload"]["ms"].as_u64().unwrap() > 1_700_000_000_000);
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(
        json!({"type": "POOL_INFO", "meta": {"correlationId": "j"}, "payload": {"poolId": "p"}}),
    )
    .await;
    assert_eq!(
        a.wait_for("POOL_INFO_REPLY").await["payload"]["members"],
        json!([a_id])
    );
}

#[tokio::test]
async fn versioning_migrates_v1_and_refuses_unknown_versions() {
    let program = Program::start(env!("CARGO_BIN_EXE_guide_versioning"));
    for codec in ["json", "msgpack"] {
        let mut c = program.connect(codec).await;
        c.send(
            json!({"type": "USER_UPDATE", "payload": {"name": "Ada", "email": "ada@example.org"}}),
        )
        .await;
        assert_eq!(
            c.expect("USER_UPDATED").await["payload"]["user"],
            json!({"name": "Ada", "email": "ada@example.org", "avatar": null, "version": 2})
        );
        c.send(json!({"type": "USER_UPDATE", "payload": {"name": "Ada", "email": "ada@example.org", "avatar": "https://a.org/x.png", "version": 2}})).await;
        assert_eq!(
            c.expect("USER_UPDATED").await["payload"]["user"]["avatar"],
            "https://a.org/x.png"
        );
        c.send(json!({"type": "USER_UPDATE", "payload": {"name": "Ada", "email": "ada@example.org", "version": 3}})).await;
        let err = c.expect("ERROR").await;
        assert_eq!(err["payload"]["code"], "INVALID_ARGUMENT");
        assert_eq!(err["payload"]["details"]["path"], "payload.version");
    }
}

#[tokio::test]
async fn performance_batches_compresses_and_broadcasts_in_chunks() {
    let program = Program::start(env!("CARGO_BIN_EXE_guide_performance"));
    let mut c = program.connect("json+gzip").await;
    // Compression above the threshold, and the per-route opt-out.
    c.send(json!({"type": "REPORT", "meta": {"correlationId": "r"}, "payload": {"size": 5000}}))
        .await;
    for _ in 0..4 {
        c.expect("$ws:rpc-progress").await;
    }
    let env = c.expect("COMPRESSED").await;
    assert_eq!(env["payload"]["encoding"], "gzip");
    c.send(
        json!({"type": "RAW_REPORT", "meta": {"correlationId": "raw"}, "payload": {"size": 5000}}),
    )
    .await;
    // Progress after each quarter of the report, then the reply.
    for done in [1250, 2500, 3750, 5000] {
        let env = c.recv().await.expect("a message");
        assert_eq!(env["type"], "$ws:rpc-progress");
        assert_eq!(env["meta"]["correlationId"], "raw");
        assert_eq!(env["payload"], json!({"done": done, "total": 5000}));
    }
    let env = c.recv().await.expect("a message");
    assert_eq!(env["type"], "REPORT_READY");
    let text = env["payload"]["text"].as_str().unwrap();
    assert_eq!(text.len(), 5000);
    assert!(text.starts_with("signalbox signalbox "), "{}", &text[..40]);
    // A burst arrives whole and in order.
    c.send(json!({"type": "BURST", "payload": {"count": 5000}}))
        .await;
    for n in 0..5000 {
        assert_eq!(c.expect("TICK").await["payload"]["n"], n);
    }
    // A broadcast to 250 subscribers in three codecs (chunks of 100).
    let mut subs = Vec::new();
    for i in 0..250 {
        let mut s = program
            .connect(["json", "msgpack", "msgpack+gzip"][i % 3])
            .await;
        s.send(json!({"type": "SUBSCRIBE_FEED"})).await;
        s.expect("FEED_JOINED").await;
        subs.push(s);
    }
    c.send(json!({"type": "BROADCAST", "payload": {"text": "to all"}}))
        .await;
    for s in &mut subs {
        assert_eq!(s.expect("FEED_ITEM").await["payload"]["text"], "to all");
    }
}
