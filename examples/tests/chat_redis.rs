//! Several chat processes sharing one Redis (`--redis`), with WebSocket
//! clients on each: a message sent to one process reaches the members on
//! all of them, exactly once. Starts its own throwaway `redis-server`.

mod common;

use common::RedisServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A chat process; killed on drop.
struct Chat {
    child: Child,
    ws: String,
}

impl Chat {
    fn start(redis: &str) -> Chat {
        Chat::start_with(redis, &[])
    }

    fn start_with(redis: &str, extra: &[&str]) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args([
                "--ws",
                "127.0.0.1:0",
                "--quic",
                "127.0.0.1:0",
                "--redis",
                redis,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("chat starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a first line");
        let ws = line
            .trim()
            .strip_prefix("listening ws=")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected {line:?}"))
            .to_owned();
        Chat { child, ws }
    }

    async fn connect(&self, codec: &str) -> Client {
        let mut req = format!("ws://{}/ws", self.ws)
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("sec-websocket-protocol", codec.parse().expect("header"));
        let tcp = TcpStream::connect(&self.ws).await.expect("tcp connects");
        let (ws, _) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("upgrades");
        Client {
            ws,
            msgpack: codec.starts_with("msgpack"),
            user_id: String::new(),
        }
    }

    /// SIGTERM, then waits for the process.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("exits")
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    ws: WebSocketStream<TcpStream>,
    msgpack: bool,
    user_id: String,
}

impl Client {
    async fn send(&mut self, envelope: Value) {
        let frame = if self.msgpack {
            WsMessage::Binary(rmp_serde::to_vec_named(&envelope).expect("msgpack").into())
        } else {
            WsMessage::Text(envelope.to_string().into())
        };
        self.ws.send(frame).await.expect("sent");
    }

    /// The next envelope, or `None` when nothing came within `wait`.
    async fn recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(wait, self.ws.next()).await.ok()??;
            match next.ok()? {
                WsMessage::Text(t) => return Some(serde_json::from_str(&t).expect("json")),
                WsMessage::Binary(b) => return Some(rmp_serde::from_slice(&b).expect("msgpack")),
                WsMessage::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Joins `room` under a name of its own and learns this client's user
    /// id from its own USER_JOINED. With Redis, that USER_JOINED comes back
    /// through Redis: it may be among the room's recent messages (before
    /// `$sb:subscribed`) or after them, and ROOM_MEMBERS (sent directly)
    /// may come before it.
    async fn join(&mut self, room: &str) {
        static NAMES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "member-{}",
            NAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.join_as(room, &name).await;
    }

    /// Joins `room` as `name`; returns the member names ROOM_MEMBERS lists.
    async fn join_as(&mut self, room: &str, name: &str) -> Vec<String> {
        self.send(json!({"type": "JOIN_ROOM", "payload": {"roomId": room, "username": name}}))
            .await;
        let mut joined = None;
        let mut members = None;
        let mut subscribed = false;
        while joined.is_none() || members.is_none() || !subscribed {
            let next = self
                .recv(Duration::from_secs(5))
                .await
                .expect("join answers");
            match next["type"].as_str() {
                Some("USER_JOINED") if next["payload"]["username"] == name => {
                    assert!(joined.is_none(), "a second USER_JOINED: {next}");
                    joined = Some(next);
                }
                Some("ROOM_MEMBERS") => members = Some(next),
                Some("$sb:subscribed") => subscribed = true,
                _ => {}
            }
        }
        let joined = joined.expect("USER_JOINED");
        self.user_id = joined["payload"]["userId"]
            .as_str()
            .expect("userId")
            .to_owned();
        let members = members.expect("ROOM_MEMBERS");
        let mut names: Vec<String> = members["payload"]["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["username"].as_str().unwrap_or("").to_owned())
            .collect();
        names.sort();
        names
    }

    /// Reads until `quiet` passes without a message; returns the texts of
    /// the NEW_MESSAGEs, by sender, checking each one's clientId.
    async fn new_messages(&mut self, quiet: Duration) -> Vec<(String, String)> {
        let mut got = Vec::new();
        while let Some(env) = self.recv(quiet).await {
            if env["type"] != "NEW_MESSAGE" {
                continue;
            }
            let user = env["payload"]["userId"]
                .as_str()
                .expect("userId")
                .to_owned();
            assert_eq!(env["meta"]["clientId"], user.as_str(), "{env}");
            let text = env["payload"]["text"].as_str().expect("text").to_owned();
            got.push((user, text));
        }
        got.sort();
        got
    }

    /// Discards whatever arrives until `quiet` passes without a message.
    async fn drain(&mut self, quiet: Duration) {
        while self.recv(quiet).await.is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_processes_sharing_redis_deliver_each_message_to_every_member_once() {
    let redis = RedisServer::start().await;
    let chats: Vec<Chat> = (0..3).map(|_| Chat::start(&redis.url())).collect();
    let mut members: Vec<(usize, Client)> = Vec::new();
    for (i, chat) in chats.iter().enumerate() {
        for codec in ["json", "msgpack"] {
            let mut c = chat.connect(codec).await;
            c.join("lobby").await;
            members.push((i, c));
        }
    }
    // Every process subscribed to the room's channel.
    let channel = format!(
        "signalbox:{}",
        signalbox_examples::chat::room_topic("lobby")
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.subscribers(&channel).await < 3 {
        assert!(Instant::now() < deadline, "not every chat subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, c) in &mut members {
        c.drain(Duration::from_millis(200)).await;
    }

    let mut expected = Vec::new();
    for (k, (i, c)) in members.iter_mut().enumerate() {
        let text = format!("hello from chat {i} member {k}");
        c.send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": "lobby", "text": text}}))
            .await;
        expected.push((c.user_id.clone(), text));
    }
    expected.sort();
    for (i, c) in &mut members {
        let got = c.new_messages(Duration::from_millis(250)).await;
        assert_eq!(got, expected, "member on chat {i}");
    }

    // One process goes away; the others carry on.
    let mut chats = chats;
    let gone = chats.pop().expect("three chats");
    assert!(gone.stop().success(), "chat stops cleanly on SIGTERM");
    let mut members: Vec<(usize, Client)> = members.into_iter().filter(|(i, _)| *i < 2).collect();
    for (_, c) in &mut members {
        c.drain(Duration::from_millis(200)).await; // USER_LEFT of the departed
    }
    members[0]
        .1
        .send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": "lobby", "text": "still here"}}))
        .await;
    let want = vec![(members[0].1.user_id.clone(), "still here".to_owned())];
    for (i, c) in &mut members {
        assert_eq!(
            c.new_messages(Duration::from_millis(250)).await,
            want,
            "member on chat {i}"
        );
    }
}

/// Presence across processes: a member on one chat process is listed by
/// the other; when that process is killed (SIGKILL: no cleanup, no
/// USER_LEFT) its members drop out of the other's lists within the
/// presence expiry (three refresh intervals: 3 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_chat_process_leaves_the_member_lists_within_the_presence_expiry() {
    const REFRESH: &[&str] = &["--presence-refresh", "1"];
    const EXPIRY: Duration = Duration::from_secs(3);
    let redis = RedisServer::start().await;
    let mut a = Chat::start_with(&redis.url(), REFRESH);
    let b = Chat::start_with(&redis.url(), REFRESH);
    let mut alice = a.connect("json").await;
    alice.join_as("presence", "alice").await;
    let mut bob = b.connect("msgpack").await;
    assert_eq!(bob.join_as("presence", "bob").await, ["alice", "bob"]);

    a.child.kill().expect("SIGKILL");
    let _ = a.child.wait();
    let killed = Instant::now();
    let mut k = 0;
    loop {
        k += 1;
        let mut carol = b.connect("json").await;
        let names = carol.join_as("presence", &format!("carol-{k}")).await;
        assert!(names.contains(&"bob".to_owned()), "{names:?}");
        if !names.contains(&"alice".to_owned()) {
            break;
        }
        assert!(
            killed.elapsed() < EXPIRY + Duration::from_secs(3),
            "alice still listed {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = killed.elapsed();
    eprintln!("a killed process's member left the list after {gone:?}");
    assert!(gone <= EXPIRY + Duration::from_secs(3), "{gone:?}");
}
