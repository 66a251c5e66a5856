//! Shared helpers: a test router, a server on an ephemeral port, a
//! tokio-tungstenite client, and a raw-socket client for frames no library
//! would send.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use signalbox::codec::{Envelope, Meta, WireCodec};
use signalbox::{Config, Ctx, Error, Hub, Router, message};
use signalbox_ws::{WsServer, WsServerBuilder};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

pub const WAIT: Duration = Duration::from_secs(5);

signalbox::opaque_message!(
    /// Answered with its payload.
    pub Echo = "ECHO"
);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Join {
    pub room: String,
}
message!(Join = "JOIN");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Say {
    pub room: String,
    pub text: String,
}
message!(Say = "SAY");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Said {
    pub text: String,
}
message!(Said = "SAID");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhoAmI;
message!(WhoAmI = "WHOAMI");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub name: Option<String>,
}
message!(User = "USER");

/// What the authentication hook of the tests stores.
#[derive(Debug, Clone)]
pub struct Authenticated(pub String);

/// Sends `n` messages, then starts the hub's shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FloodThenShutdown {
    pub n: u32,
}
message!(FloodThenShutdown = "FLOOD_THEN_SHUTDOWN");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Item {
    pub i: u32,
}
message!(Item = "ITEM");

pub fn router() -> Router {
    Router::new()
        .rpc(|ctx: Ctx<Echo>| async move { Ok::<_, Error>(ctx.into_payload()) })
        .on(|ctx: Ctx<Join>| async move { ctx.subscribe(&ctx.payload().room).map(drop) })
        .on(|ctx: Ctx<Say>| async move {
            let Say { room, text } = ctx.payload();
            ctx.publish(room, &Said { text: text.clone() })
                .await
                .map(drop)
        })
        .rpc(|ctx: Ctx<WhoAmI>| async move {
            Ok::<_, Error>(User {
                name: ctx.data::<Authenticated>().map(|a| a.0),
            })
        })
        .on(|ctx: Ctx<FloodThenShutdown>| async move {
            for i in 0..ctx.payload().n {
                ctx.send(&Item { i })?;
            }
            let hub = ctx.hub();
            tokio::spawn(async move { hub.shutdown().await });
            Ok::<_, Error>(())
        })
}

pub fn hub(config: Config) -> Hub {
    Hub::builder(router()).config(config).build()
}

/// A server for `hub` configured by `f`, serving in the background.
pub async fn start_with(
    hub: &Hub,
    f: impl FnOnce(WsServerBuilder) -> WsServerBuilder,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let server: WsServer = f(WsServer::builder(hub.clone()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    (addr, tokio::spawn(server.serve()))
}

pub async fn start(config: Config) -> (Hub, SocketAddr) {
    let hub = hub(config);
    let (addr, _) = start_with(&hub, |b| b).await;
    (hub, addr)
}

pub type Ws = WebSocketStream<TcpStream>;

/// A client connection that knows its codec.
pub struct Client {
    pub ws: Ws,
    pub codec: WireCodec,
    pub protocol: Option<String>,
}

/// Connects with `offers` (none: no header) and extra headers; the upgrade
/// response's status on refusal.
pub async fn try_connect(
    addr: SocketAddr,
    path_and_query: &str,
    offers: &[&str],
    headers: &[(&str, &str)],
) -> Result<Client, u16> {
    let mut request = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    if !offers.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&offers.join(", ")).unwrap(),
        );
    }
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            let codec = WireCodec::from_name(protocol.as_deref().unwrap_or("json")).unwrap();
            Ok(Client {
                ws,
                codec,
                protocol,
            })
        }
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("connect failed: {other}"),
    }
}

pub async fn connect(addr: SocketAddr, codec: &str) -> Client {
    try_connect(addr, "/ws", &[codec], &[])
        .await
        .unwrap_or_else(|status| panic!("upgrade refused with {status}"))
}

/// Connects offering `codec` alone (which may be an application codec)
/// and checks the server picked it.
pub async fn connect_codec(addr: SocketAddr, codec: WireCodec) -> Client {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(codec.name()),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(protocol.as_deref(), Some(codec.name()));
    Client {
        ws,
        codec,
        protocol,
    }
}

impl Client {
    pub async fn send<M: signalbox::Message>(&mut self, msg: &M, correlation_id: Option<&str>) {
        let meta = Meta {
            correlation_id: correlation_id.map(str::to_owned),
            ..Meta::default()
        };
        let frame = msg.encode(&self.codec, &meta, true).unwrap();
        self.send_frame(frame).await;
    }

    pub async fn send_frame(&mut self, frame: bytes::Bytes) {
        let message = if self.codec.format().is_text() {
            Message::Text(String::from_utf8(frame.to_vec()).unwrap().into())
        } else {
            Message::Binary(frame)
        };
        self.ws.send(message).await.unwrap();
    }

    /// The next data message, raw, with whether it came as text.
    pub async fn recv_raw(&mut self) -> (bytes::Bytes, bool) {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message within the wait")
                .expect("the connection is open")
                .expect("no transport error");
            match message {
                Message::Text(t) => return (bytes::Bytes::from(t), true),
                Message::Binary(b) => return (b, false),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next data message, decoded, checking the frame kind fits the codec.
    pub async fn recv(&mut self) -> Envelope {
        let (frame, text) = self.recv_raw().await;
        assert_eq!(
            text,
            self.codec.format().is_text(),
            "frame kind for {}",
            self.codec.name()
        );
        self.codec.decode(frame).unwrap()
    }

    /// Reads until the close frame; its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed within the wait");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => {
                    return (u16::from(CloseCode::Status), String::new());
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// A client over a bare socket: it sends frames byte by byte as given.
pub struct RawClient {
    pub tcp: TcpStream,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, protocol: &str) -> RawClient {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawClient { tcp }
    }

    /// Sends one final frame with `opcode`, masked (as clients must) unless
    /// `masked` is false, with `rsv` bits (0..8) set.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool, rsv: u8) {
        let mut frame = vec![0x80 | (rsv << 4) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n < 65536 => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// Reads server frames until a close frame; its code.
    pub async fn close_code(&mut self) -> u16 {
        tokio::time::timeout(WAIT, async {
            loop {
                let mut head = [0u8; 2];
                self.tcp.read_exact(&mut head).await.unwrap();
                let len = match head[1] & 0x7f {
                    126 => {
                        let mut b = [0u8; 2];
                        self.tcp.read_exact(&mut b).await.unwrap();
                        u64::from(u16::from_be_bytes(b))
                    }
                    127 => {
                        let mut b = [0u8; 8];
                        self.tcp.read_exact(&mut b).await.unwrap();
                        u64::from_be_bytes(b)
                    }
                    n => u64::from(n),
                };
                let mut payload = vec![0u8; len as usize];
                self.tcp.read_exact(&mut payload).await.unwrap();
                if head[0] & 0x0f == 0x8 {
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
            }
        })
        .await
        .expect("a close frame within the wait")
    }
}

/// Whether the peer closed the TCP connection (EOF or reset) within `wait`.
pub async fn eof_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(wait, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A plain HTTP/1.1 request on a new connection (`Connection: close`):
/// the status, the head and the body.
pub async fn http_get(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> (u16, String, Vec<u8>) {
    http_request(addr, method, path, 0).await
}

/// A request with an `X-Pad` header of `pad` bytes (none when 0).
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    pad: usize,
) -> (u16, String, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let pad = if pad == 0 {
        String::new()
    } else {
        format!("X-Pad: {}\r\n", "p".repeat(pad))
    };
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{pad}Connection: close\r\n\r\n");
    // A server that refuses a long head may stop reading and close.
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read what arrives until EOF (or a reset, after a refusal).
    while let Ok(n) = tcp.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}
