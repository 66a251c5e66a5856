//! The chat binary over QUIC: next to WebSocket on one hub, against an
//! independent Python QUIC client (aioquic), its shutdown, and where its
//! page finds WebTransport (`GET /webtransport`, docs/PROTOCOL.md §9).

mod common;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signalbox::codec::{Meta, WireCodec};
use signalbox_quic::{QuicClient, roots_from_pem};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(5);

/// The chat binary on free ports; killed on drop.
struct Chat {
    child: Child,
    ws: SocketAddr,
    quic: SocketAddr,
    cert: PathBuf,
}

impl Chat {
    fn start(name: &str) -> Chat {
        let cert =
            std::env::temp_dir().join(format!("signalbox-chat-{name}-{}.pem", std::process::id()));
        let _ = std::fs::remove_file(&cert);
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args(["--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--cert-out"])
            .arg(&cert)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("chat starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a first line");
        // docs/PROTOCOL.md §9: `listening ws=… quic=…`
        let rest = line
            .trim()
            .strip_prefix("listening ws=")
            .unwrap_or_else(|| panic!("unexpected {line:?}"));
        let (ws, quic) = rest
            .split_once(" quic=")
            .unwrap_or_else(|| panic!("no quic= in {line:?}"));
        Chat {
            child,
            ws: ws.parse().expect("ws address"),
            quic: quic.parse().expect("quic address"),
            cert,
        }
    }

    async fn quic_client(&self, codec: &str) -> QuicClient {
        let pem = std::fs::read(&self.cert).expect("--cert-out wrote the certificate");
        QuicClient::builder(roots_from_pem(&pem).expect("a PEM certificate"))
            .codec(WireCodec::from_name(codec).expect("a codec"))
            .connect(self.quic)
            .await
            .expect("QUIC connects")
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
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
        let _ = std::fs::remove_file(&self.cert);
    }
}

async fn quic_send(client: &mut QuicClient, ty: &str, cid: Option<&str>, payload: Value) {
    let meta = Meta {
        correlation_id: cid.map(str::to_owned),
        ..Meta::default()
    };
    let frame = client.codec().encode(ty, &meta, Some(&payload)).unwrap();
    client.send_frame(&frame).await.unwrap();
}

/// The next QUIC message of type `ty` (others skipped), as JSON.
async fn quic_expect(client: &mut QuicClient, ty: &str) -> (Value, Meta) {
    tokio::time::timeout(WAIT, async {
        loop {
            let frame = client
                .recv_frame()
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("stream ended before {ty}"));
            let envelope = client.codec().decode(frame).unwrap();
            if envelope.ty == ty {
                let payload: Value = envelope.decode_payload().unwrap();
                return (payload, envelope.meta);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {ty} over QUIC"))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn ws_client(addr: SocketAddr) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "json".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.unwrap().0
}

async fn ws_send(ws: &mut Ws, msg: Value) {
    ws.send(WsMessage::text(msg.to_string())).await.unwrap();
}

async fn ws_expect(ws: &mut Ws, ty: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => {
                    let msg: Value = serde_json::from_str(&text).unwrap();
                    if msg["type"] == ty {
                        return msg;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("WebSocket ended before {ty}: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {ty} over WebSocket"))
}

#[tokio::test]
async fn a_websocket_client_and_a_quic_client_share_a_room() {
    let mut chat = Chat::start("room");
    let mut ws = ws_client(chat.ws).await;
    let mut quic = chat.quic_client("msgpack").await;

    ws_send(
        &mut ws,
        json!({"type": "JOIN_ROOM", "payload": {"roomId": "mixed", "username": "web"}}),
    )
    .await;
    let joined = ws_expect(&mut ws, "USER_JOINED").await;
    let ws_id = joined["payload"]["userId"].as_str().unwrap().to_owned();
    quic_send(
        &mut quic,
        "JOIN_ROOM",
        None,
        json!({"roomId": "mixed", "username": "quic"}),
    )
    .await;
    // The room's recent messages (the WebSocket member's arrival) come
    // first, up to `$sb:subscribed`.
    quic_expect(&mut quic, "$sb:subscribed").await;
    let (joined, _) = quic_expect(&mut quic, "USER_JOINED").await;
    let quic_id = joined["userId"].as_str().unwrap().to_owned();
    // The WebSocket member sees the QUIC member arrive.
    let arrival = ws_expect(&mut ws, "USER_JOINED").await;
    assert_eq!(arrival["payload"]["userId"], quic_id.as_str());

    // QUIC → both.
    quic_send(
        &mut quic,
        "SEND_MESSAGE",
        None,
        json!({"roomId": "mixed", "text": "from quic"}),
    )
    .await;
    let got = ws_expect(&mut ws, "NEW_MESSAGE").await;
    assert_eq!(got["payload"]["text"], "from quic");
    assert_eq!(got["meta"]["clientId"], quic_id.as_str());
    let (own, meta) = quic_expect(&mut quic, "NEW_MESSAGE").await;
    assert_eq!(own["text"], "from quic");
    assert_eq!(meta.client_id.as_deref(), Some(quic_id.as_str()));

    // WebSocket → the QUIC member, in its own codec.
    ws_send(
        &mut ws,
        json!({"type": "SEND_MESSAGE", "payload": {"roomId": "mixed", "text": "from ws"}}),
    )
    .await;
    let (got, meta) = quic_expect(&mut quic, "NEW_MESSAGE").await;
    assert_eq!(got["text"], "from ws");
    assert_eq!(meta.client_id.as_deref(), Some(ws_id.as_str()));

    // A QUIC client leaving abruptly (connection closed) leaves the room.
    quic.close(0, "bye");
    let left = ws_expect(&mut ws, "USER_LEFT").await;
    assert_eq!(left["payload"]["userId"], quic_id.as_str());

    assert!(chat.terminate().success());
}

/// SHA-256 of `data`, from rustls' own hash (no extra dependency).
fn sha256(data: &[u8]) -> Vec<u8> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let tls13 = suite.tls13().expect("a TLS 1.3 suite");
    tls13.common.hash_provider.hash(data).as_ref().to_vec()
}

#[tokio::test]
async fn get_webtransport_names_the_quic_port_path_and_the_hash_of_the_self_signed_certificate() {
    use base64::Engine as _;
    use rustls::pki_types::pem::PemObject as _;
    let mut chat = Chat::start("webtransport-info");
    let (status, body) = common::http_get(chat.ws, "/webtransport").await;
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(info["port"], json!(chat.quic.port()));
    assert_eq!(info["path"], json!("/wt"));
    // The hash of the certificate QUIC serves: the one --cert-out wrote.
    let pem = std::fs::read(&chat.cert).expect("--cert-out wrote the certificate");
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("a PEM certificate");
    let expected = base64::engine::general_purpose::STANDARD.encode(sha256(&der));
    assert_eq!(info["certificateHashes"], json!([expected]), "{body}");
    assert!(chat.terminate().success());
}

#[tokio::test]
async fn the_chat_closes_quic_clients_with_going_away_on_sigterm() {
    let mut chat = Chat::start("term");
    let mut quic = chat.quic_client("json+gzip").await;
    quic_send(&mut quic, "ECHO", Some("e"), json!({"n": 1})).await;
    let (echo, meta) = quic_expect(&mut quic, "ECHO").await;
    assert_eq!(echo, json!({"n": 1}));
    assert_eq!(meta.correlation_id.as_deref(), Some("e"));
    let status = chat.terminate();
    assert!(status.success(), "chat exited with {status}");
    let code = tokio::time::timeout(WAIT, quic.closed()).await.unwrap();
    assert_eq!(code, Some(1));
}

/// Runs examples/tests/interop/python_aioquic_client.py against the chat
/// binary. Its Python modules come from scripts/setup; without them this
/// test fails, saying so.
#[tokio::test]
async fn the_chat_serves_an_independent_python_quic_client() {
    let probe = Command::new("python3")
        .args(["-c", "import aioquic, msgpack"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 cannot import aioquic/msgpack ({}); run scripts/setup \
             (pip install -r examples/tests/interop/requirements.txt)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("python3 not runnable ({e}); run scripts/setup"),
    }
    let chat = Chat::start("interop");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/python_aioquic_client.py"
    );
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(chat.quic.ip().to_string())
        .arg(chat.quic.port().to_string())
        .arg(&chat.cert)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the interop client finished within 90 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "interop client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("not ok"),
        "interop client reported failures:\n{stdout}"
    );
}
