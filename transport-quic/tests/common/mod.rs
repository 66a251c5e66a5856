//! A minimal quinn client speaking docs/PROTOCOL.md §5, a test router, and a UDP
//! relay that can cut a client off without a close.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use serde::{Deserialize, Serialize};
use signalbox::codec::{Envelope, Meta, WireCodec};
use signalbox::{Config, Ctx, Error, Hub, Router, message, opaque_message};
use signalbox_quic::framing::{FrameDecoder, encode_frame};
use signalbox_quic::{QuicServer, roots_from_pem};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

pub const WAIT: Duration = Duration::from_secs(5);

opaque_message!(pub Echo = "ECHO");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Slow {
    pub ms: u64,
}
message!(Slow = "SLOW");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Done {
    pub ms: u64,
}
message!(Done = "DONE");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhoAmI;
message!(WhoAmI = "WHOAMI");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct You {
    pub id: String,
    pub user: Option<String>,
    pub transport: String,
}
message!(You = "YOU");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Join {
    pub topic: String,
}
message!(Join = "JOIN");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Joined {
    pub topic: String,
}
message!(Joined = "JOINED");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tick {
    pub n: u32,
}
message!(Tick = "TICK");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Big {
    pub n: u32,
    pub text: String,
}
message!(Big = "BIG");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Steps {
    pub n: u32,
}
message!(Steps = "STEPS");

/// A user name stored by the authentication hook.
#[derive(Debug, Clone)]
pub struct User(pub String);

pub fn router() -> Router {
    Router::new()
        .rpc(|ctx: Ctx<Echo>| async move { Ok::<_, Error>(ctx.into_payload()) })
        .rpc(|ctx: Ctx<Slow>| async move {
            let ms = ctx.payload().ms;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Error>(Done { ms })
        })
        .rpc(|ctx: Ctx<Steps>| async move {
            for n in 0..ctx.payload().n {
                ctx.progress(&Tick { n })?;
            }
            Ok::<_, Error>(Done { ms: 0 })
        })
        .rpc(|ctx: Ctx<WhoAmI>| async move {
            Ok::<_, Error>(You {
                id: ctx.client_id().to_owned(),
                user: ctx.data::<User>().map(|u| u.0),
                transport: ctx.info().transport.to_owned(),
            })
        })
        .on(|ctx: Ctx<Join>| async move {
            ctx.subscribe(&ctx.payload().topic)?;
            ctx.reply(&Joined {
                topic: ctx.payload().topic.clone(),
            })
        })
}

pub fn hub_with(config: Config) -> Hub {
    Hub::builder(router()).config(config).build()
}

pub fn hub() -> Hub {
    hub_with(Config::default())
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn client_config(cert_pem: &str, alpns: &[&str]) -> quinn::ClientConfig {
    let roots = roots_from_pem(cert_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = alpns.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut config =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto).unwrap()));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    config
}

pub fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client(localhost()).unwrap()
}

/// Connects with `alpns`; the handshake's outcome.
pub async fn handshake(
    addr: SocketAddr,
    cert_pem: &str,
    alpns: &[&str],
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let endpoint = client_endpoint();
    let connecting = endpoint
        .connect_with(client_config(cert_pem, alpns), addr, "localhost")
        .unwrap();
    let result = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("handshake finished in time");
    (endpoint, result)
}

/// A client on its main stream.
pub struct Client {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    decoder: FrameDecoder,
    pub codec: WireCodec,
}

impl Client {
    pub async fn connect(server: &QuicServer, codec: &str) -> Client {
        Client::connect_to(server.local_addr(), &server.cert_pem(), codec).await
    }

    pub async fn connect_to(addr: SocketAddr, cert_pem: &str, codec: &str) -> Client {
        let alpn = format!("signalbox/{codec}");
        let (endpoint, conn) = handshake(addr, cert_pem, &[&alpn]).await;
        let conn = conn.expect("handshake succeeds");
        Client::on(endpoint, conn, codec).await
    }

    pub async fn on(endpoint: quinn::Endpoint, conn: quinn::Connection, codec: &str) -> Client {
        let (send, recv) = conn.open_bi().await.unwrap();
        Client {
            endpoint,
            conn,
            send,
            recv,
            decoder: FrameDecoder::new(16 * 1024 * 1024),
            codec: WireCodec::from_name(codec).unwrap(),
        }
    }

    pub async fn send_frame(&mut self, body: &[u8]) {
        let mut out = bytes::BytesMut::new();
        encode_frame(body, &mut out).unwrap();
        self.send.write_all(&out).await.unwrap();
    }

    pub fn encode(&self, ty: &str, cid: Option<&str>, payload: &serde_json::Value) -> Bytes {
        let meta = Meta {
            correlation_id: cid.map(str::to_owned),
            ..Meta::default()
        };
        self.codec.encode(ty, &meta, Some(payload)).unwrap()
    }

    pub async fn send(&mut self, ty: &str, cid: Option<&str>, payload: serde_json::Value) {
        let frame = self.encode(ty, cid, &payload);
        self.send_frame(&frame).await;
    }

    /// The next raw frame; `None` at the end of the stream or on timeout.
    pub async fn recv_frame(&mut self) -> Option<Bytes> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = self.decoder.next_frame().unwrap() {
                    return Some(frame);
                }
                match self.recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    pub async fn recv(&mut self) -> Option<Envelope> {
        let frame = self.recv_frame().await?;
        Some(
            self.codec
                .decode(frame)
                .expect("server sent a decodable envelope"),
        )
    }

    pub async fn expect(&mut self, ty: &str) -> Envelope {
        let envelope = self
            .recv()
            .await
            .unwrap_or_else(|| panic!("expected {ty}, got nothing"));
        assert_eq!(envelope.ty, ty, "got {envelope:?}");
        envelope
    }

    /// Waits for the connection to close; the application close code.
    pub async fn close_code(&self) -> Option<u64> {
        close_code(&self.conn).await
    }
}

pub async fn close_code(conn: &quinn::Connection) -> Option<u64> {
    let error = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("connection closed in time");
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        other => {
            eprintln!("closed otherwise: {other}");
            None
        }
    }
}

/// A request stream of the per-request lane.
pub struct Request {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    decoder: FrameDecoder,
    codec: WireCodec,
}

impl Request {
    pub async fn open(client: &Client, frame: &[u8]) -> Request {
        let (mut send, recv) = client.conn.open_bi().await.unwrap();
        let mut out = bytes::BytesMut::new();
        encode_frame(frame, &mut out).unwrap();
        send.write_all(&out).await.unwrap();
        send.finish().unwrap();
        Request {
            send,
            recv,
            decoder: FrameDecoder::new(16 * 1024 * 1024),
            codec: client.codec,
        }
    }

    /// The next message on this stream; `None` once the server finished it.
    pub async fn recv(&mut self) -> Option<Envelope> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = self.decoder.next_frame().unwrap() {
                    return Some(self.codec.decode(frame).unwrap());
                }
                match self.recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                    Ok(None) => {
                        assert!(!self.decoder.has_partial(), "stream ended inside a frame");
                        return None;
                    }
                    Err(e) => panic!("request stream failed: {e}"),
                }
            }
        })
        .await
        .expect("request stream answered in time")
    }
}

/// A UDP relay between clients and a server that can go silent: a peer
/// that vanishes without a close.
pub struct Relay {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(server: SocketAddr) -> Relay {
        let front = UdpSocket::bind(localhost()).await.unwrap();
        let back = UdpSocket::bind(localhost()).await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut a = vec![0u8; 65536];
            let mut b = vec![0u8; 65536];
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let _ = back.send(&a[..n]).await;
                    }
                    r = back.recv(&mut b) => {
                        let Ok(n) = r else { return };
                        if let Some(to) = client {
                            let _ = front.send_to(&b[..n], to).await;
                        }
                    }
                }
            }
        });
        Relay { addr, task }
    }

    /// Drops every packet from now on, both ways.
    pub fn cut(&self) {
        self.task.abort();
    }
}

/// Waits until `f` holds, up to `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
