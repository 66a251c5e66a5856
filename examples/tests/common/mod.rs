//! A chat server on an ephemeral port, in-process, and a tokio-tungstenite
//! client for it.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use signalbox::codec::{Envelope, Meta, WireCodec};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub const WAIT: Duration = Duration::from_secs(5);

/// Starts the chat (hub and WebSocket listener); its hub and address.
pub async fn start_chat() -> (signalbox::Hub, SocketAddr) {
    let hub = signalbox_examples::chat::hub();
    let server = signalbox_examples::chat::ws_server(hub.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    (hub, addr)
}

/// Starts the built chat binary (its default configuration) with both
/// listeners on ephemeral ports; the child and its WebSocket address, read
/// from its first line, `listening ws=ADDR quic=ADDR`. Its stderr goes to
/// `stderr`.
pub async fn spawn_chat_binary(stderr: Stdio) -> (Child, SocketAddr) {
    spawn_chat_binary_with(&[], stderr).await
}

/// Like [`spawn_chat_binary`], with more arguments (`--redis URL`, ...).
pub async fn spawn_chat_binary_with(args: &[&str], stderr: Stdio) -> (Child, SocketAddr) {
    let (child, line) = spawn_chat_binary_line(args, stderr).await;
    (child, listening_addr(&line, "ws="))
}

/// Starts the built chat binary with both listeners on ephemeral ports and
/// `args`; the child and its first line, `listening ws=ADDR quic=ADDR ...`.
pub async fn spawn_chat_binary_line(args: &[&str], stderr: Stdio) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    (child, line)
}

/// The address after `key` (`ws=`, `quic=`, `metrics=`) in the chat's
/// `listening` line.
pub fn listening_addr(line: &str, key: &str) -> SocketAddr {
    line.trim()
        .strip_prefix("listening ")
        .and_then(|rest| rest.split(' ').find_map(|kv| kv.strip_prefix(key)))
        .unwrap_or_else(|| panic!("no {key} in the first line {line:?}"))
        .parse()
        .unwrap()
}

pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
    pub codec: WireCodec,
}

pub async fn connect(addr: SocketAddr, codec: &str) -> Client {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(codec).unwrap(),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], codec);
    Client {
        ws,
        codec: WireCodec::from_name(codec).unwrap(),
    }
}

impl Client {
    /// Sends an envelope with a serde payload (`None`: no payload).
    pub async fn send<T: serde::Serialize>(
        &mut self,
        ty: &str,
        cid: Option<&str>,
        payload: Option<&T>,
    ) {
        let meta = Meta {
            correlation_id: cid.map(str::to_owned),
            ..Meta::default()
        };
        let frame = self.codec.encode(ty, &meta, payload).unwrap();
        self.send_frame(frame).await;
    }

    pub async fn send_json(&mut self, ty: &str, cid: Option<&str>, payload: serde_json::Value) {
        self.send(ty, cid, Some(&payload)).await;
    }

    pub async fn send_frame(&mut self, frame: bytes::Bytes) {
        let message = if self.codec.format().is_text() {
            Message::Text(String::from_utf8(frame.to_vec()).unwrap().into())
        } else {
            Message::Binary(frame)
        };
        self.ws.send(message).await.unwrap();
    }

    pub async fn recv_raw(&mut self) -> bytes::Bytes {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message within the wait")
                .expect("open")
                .expect("no transport error");
            match message {
                Message::Text(t) => return bytes::Bytes::from(t),
                Message::Binary(b) => return b,
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    pub async fn recv(&mut self) -> Envelope {
        let frame = self.recv_raw().await;
        self.codec.decode(frame).unwrap()
    }

    /// The next message of type `ty`, skipping others.
    pub async fn expect(&mut self, ty: &str) -> Envelope {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {ty} within the wait"
            );
            let env = self.recv().await;
            if env.ty == ty {
                return env;
            }
        }
    }

    /// Sends ECHO as a barrier: every message sent before it was handled
    /// once its reply arrives. Returns what came before the reply.
    pub async fn sync(&mut self, cid: &str) -> Vec<Envelope> {
        self.send::<()>("ECHO", Some(cid), None).await;
        let mut before = Vec::new();
        loop {
            let env = self.recv().await;
            if env.ty == "ECHO" && env.meta.correlation_id.as_deref() == Some(cid) {
                return before;
            }
            before.push(env);
        }
    }

    pub async fn closed(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed within the wait")
            {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// `GET path` on a new connection: the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _head, body) = http_get_with_head(addr, path).await;
    (status, body)
}

/// `GET path` over a fresh connection: the status code, the head (status
/// line and headers) and the body.
pub async fn http_get_with_head(addr: SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("an answer within the wait")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        head.to_owned(),
        body.to_owned(),
    )
}

pub fn json(env: &Envelope) -> serde_json::Value {
    env.decode_payload().unwrap()
}

/// A TCP proxy whose connections can all be cut at once with a reset (no
/// close frame, no FIN): what a phone losing its network looks like to the
/// server, and a dropped connection to the client. New connections go to
/// the current upstream, which can be switched (a client that reconnects
/// to another node).
pub struct Proxy {
    pub addr: SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    upstream: std::sync::Arc<std::sync::Mutex<SocketAddr>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(upstream));
        let cuts = cut.clone();
        let target = upstream.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                cut.borrow_and_update();
                let to = *target.lock().unwrap();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {
                            // SO_LINGER 0: closing sends RST on both sides.
                            let _ = inbound.set_zero_linger();
                            let _ = outbound.set_zero_linger();
                        }
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            upstream,
        }
    }

    /// Resets every connection open now.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Sends new connections to `upstream`.
    pub fn switch_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }
}

/// A throwaway `redis-server` on a free loopback port; killed on drop.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("signalbox-chat-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let child = RedisServer::spawn(port, &dir);
        let server = RedisServer { child, port, dir };
        server.wait_ready().await;
        server
    }

    fn spawn(port: u16, dir: &std::path::Path) -> std::process::Child {
        match std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: run scripts/setup \
                 (or apt-get install -y redis-server) before these tests"
            ),
            Err(e) => panic!("redis-server could not be started: {e}"),
        }
    }

    /// Kills the server ([`RedisServer::restart_empty`] brings it back).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts a new one, empty, on the same port.
    pub async fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = RedisServer::spawn(self.port, &self.dir);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let server = self;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(server.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Processes subscribed to `channel`.
    pub async fn subscribers(&self, channel: &str) -> i64 {
        let client = redis::Client::open(self.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        counts.first().map_or(0, |(_, n)| *n)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends SIGTERM to `child` (what a process manager does to stop it).
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// Waits until `done`, checking every 5 ms; fails the test past `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resets `client`'s connection through `proxy` and waits until the client
/// noticed.
pub async fn cut_and_wait(client: &signalbox::client::Client, proxy: &Proxy) {
    proxy.cut_all();
    let mut state = client.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| !matches!(s, signalbox::client::ConnectionState::Connected)),
    )
    .await
    .expect("the reset was noticed")
    .expect("the client is alive");
}

/// Asserts `seen` is exactly 1..=total, in order, once each.
pub fn assert_exactly_once_in_order(seen: &[u64], total: u64) {
    let expected: Vec<u64> = (1..=total).collect();
    assert!(
        seen == expected.as_slice(),
        "{} messages, first difference at {:?}",
        seen.len(),
        seen.iter().zip(&expected).position(|(a, b)| a != b)
    );
}
