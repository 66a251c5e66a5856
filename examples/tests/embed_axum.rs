//! The axum application of `examples/src/embed.rs`, run as its own process
//! (the `axum_app` binary) and driven over real sockets on loopback: its
//! REST routes, its static files, and signalbox at `/ws` behind its
//! authentication layer.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderName;

const STATIC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/notes");

/// The `axum_app` binary with two users; killed on drop.
struct App {
    child: Child,
    addr: SocketAddr,
}

impl App {
    fn start() -> App {
        let mut child = Command::new(env!("CARGO_BIN_EXE_axum_app"))
            .args(["--listen", "127.0.0.1:0"])
            .args(["--user", "alice:alice-token", "--user", "bob:bob-token"])
            .args(["--static-dir", STATIC_DIR])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("axum_app starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a first line");
        let addr = line
            .trim()
            .strip_prefix("listening http=")
            .unwrap_or_else(|| panic!("unexpected {line:?}"))
            .parse()
            .expect("an address");
        App { child, addr }
    }

    /// One HTTP/1.1 request on its own connection: the status and the body.
    async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let mut tcp = TcpStream::connect(self.addr).await.expect("tcp connects");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        let answer = String::from_utf8(answer).expect("text");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "the helper reads plain bodies only: {head}"
        );
        (status, body.to_owned())
    }

    /// Upgrades `/ws` with `headers`: the WebSocket, or the refusal's status.
    async fn ws(&self, headers: &[(&str, &str)]) -> Result<Client, u16> {
        let mut req = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "json".parse().unwrap());
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            req.headers_mut().insert(name, value.parse().unwrap());
        }
        let tcp = TcpStream::connect(self.addr).await.expect("tcp connects");
        match tokio_tungstenite::client_async(req, tcp).await {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("upgrade failed otherwise: {other}"),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    ws: WebSocketStream<TcpStream>,
}

impl Client {
    async fn send(&mut self, envelope: Value) {
        self.ws
            .send(WsMessage::Text(envelope.to_string().into()))
            .await
            .unwrap();
    }

    /// The next envelope of type `ty` (others are skipped), within 10 s.
    async fn expect(&mut self, ty: &str) -> Value {
        let wait = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Text(text))) => {
                        let env: Value = serde_json::from_str(&text).unwrap();
                        if env["type"] == ty {
                            return env;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("connection ended waiting for {ty}: {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no {ty} within 10 s"))
    }
}

const ALICE: (&str, &str) = ("authorization", "Bearer alice-token");
const BOB_COOKIE: (&str, &str) = ("cookie", "theme=dark; sb_token=bob-token");

#[tokio::test]
async fn rest_routes_and_static_files_work_beside_the_hub() {
    let app = App::start();
    let (status, body) = app.http("GET", "/api/health", &[], "").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connections"], 0);

    // The notes are the layer's: 401 without a known token.
    assert_eq!(app.http("GET", "/api/notes", &[], "").await.0, 401);
    let wrong = [("authorization", "Bearer nobody")];
    assert_eq!(app.http("GET", "/api/notes", &wrong, "").await.0, 401);
    let (status, body) = app.http("GET", "/api/notes", &[ALICE], "").await;
    assert_eq!((status, body.as_str()), (200, "[]"));

    let json_body = [ALICE, ("content-type", "application/json")];
    let (status, body) = app
        .http("POST", "/api/notes", &json_body, r#"{"text":"first"}"#)
        .await;
    assert_eq!(status, 201, "{body}");
    let note: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(note, json!({"id": 1, "author": "alice", "text": "first"}));
    // The message's own validation applies to the REST body too.
    let (status, _) = app
        .http("POST", "/api/notes", &json_body, r#"{"text":""}"#)
        .await;
    assert_eq!(status, 400);
    let (status, body) = app.http("GET", "/api/notes", &[BOB_COOKIE], "").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!([note]));

    // Static files, without authentication.
    let index = std::fs::read_to_string(format!("{STATIC_DIR}/index.html")).unwrap();
    let (status, body) = app.http("GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(body, index);
    assert_eq!(app.http("GET", "/index.html", &[], "").await, (200, index));
    assert_eq!(app.http("GET", "/missing.css", &[], "").await.0, 404);
}

#[tokio::test]
async fn the_upgrade_is_authenticated_by_the_applications_layer() {
    let app = App::start();
    assert_eq!(app.ws(&[]).await.err(), Some(401));
    assert_eq!(
        app.ws(&[("authorization", "Bearer nobody")]).await.err(),
        Some(401)
    );
    assert_eq!(app.ws(&[("cookie", "sb_token=")]).await.err(), Some(401));
    // The refused upgrades never became connections.
    let (_, body) = app.http("GET", "/api/health", &[], "").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["connections"],
        0
    );
}

#[tokio::test]
async fn each_connections_messages_carry_its_authenticated_user() {
    let app = App::start();
    let mut alice = app.ws(&[ALICE]).await.expect("alice upgrades");
    let mut bob = app.ws(&[BOB_COOKIE]).await.expect("bob upgrades");

    for (client, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        client
            .send(json!({"type": "WHOAMI", "meta": {"correlationId": "w"}, "payload": {}}))
            .await;
        let answer = client.expect("YOU_ARE").await;
        assert_eq!(answer["meta"]["correlationId"], "w");
        assert_eq!(answer["payload"]["userId"], user);
    }

    // A note sent over WebSocket is authored by the connection's user,
    // whatever the client claims.
    alice
        .send(json!({"type": "ADD_NOTE", "payload": {"text": "from alice", "author": "bob"}}))
        .await;
    for client in [&mut alice, &mut bob] {
        let added = client.expect("NOTE_ADDED").await;
        assert_eq!(
            added["payload"],
            json!({"id": 1, "author": "alice", "text": "from alice"})
        );
    }
    bob.send(json!({"type": "ADD_NOTE", "payload": {"text": "from bob"}}))
        .await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client.expect("NOTE_ADDED").await["payload"]["author"],
            "bob"
        );
    }

    // A note posted over REST reaches the WebSocket clients too.
    let (status, _) = app
        .http(
            "POST",
            "/api/notes",
            &[BOB_COOKIE, ("content-type", "application/json")],
            r#"{"text":"over rest"}"#,
        )
        .await;
    assert_eq!(status, 201);
    for client in [&mut alice, &mut bob] {
        let added = client.expect("NOTE_ADDED").await;
        assert_eq!(
            added["payload"],
            json!({"id": 3, "author": "bob", "text": "over rest"})
        );
    }
    let (_, body) = app.http("GET", "/api/notes", &[ALICE], "").await;
    let authors: Vec<Value> = serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .into_iter()
        .map(|n| n["author"].clone())
        .collect();
    assert_eq!(authors, ["alice", "bob", "bob"]);
    let (_, body) = app.http("GET", "/api/health", &[], "").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["connections"],
        2
    );
}
