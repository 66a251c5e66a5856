//! One hub behind both transports: the budget for incomplete messages
//! (docs/PROTOCOL.md §4, §5) is one, so a QUIC connection's incomplete
//! message leaves less room for WebSocket ones, and its release gives the
//! room back. Real sockets, real QUIC handshakes.

use signalbox::codec::{Meta, WireCodec};
use signalbox::{Config, Ctx, Error, Hub, Router};
use signalbox_quic::{QuicClient, QuicServer, roots_from_pem};
use signalbox_ws::WsServer;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

signalbox::opaque_message!(Echo = "ECHO");

const KIB: usize = 1024;
const WAIT: Duration = Duration::from_secs(5);

/// Upgrades a raw TCP connection on `/ws` and writes the header of a
/// masked text frame of `announced` bytes and `sent` bytes of it.
async fn ws_partial(addr: SocketAddr, announced: usize, sent: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(announced as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.resize(frame.len() + sent, b' ');
    tcp.write_all(&frame).await.unwrap();
    tcp
}

/// The code and reason of the server's close frame, if one comes within
/// `wait`.
async fn ws_close_within(tcp: &mut TcpStream, wait: Duration) -> Option<(u16, String)> {
    tokio::time::timeout(wait, async {
        loop {
            let mut head = [0u8; 2];
            tcp.read_exact(&mut head).await.unwrap();
            let len = usize::from(head[1] & 0x7f);
            assert!(len < 126, "the server sends only short frames here");
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.unwrap();
            if head[0] & 0x0f == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_draw_on_one_budget() {
    let mut config = Config::default();
    config.incomplete.budget = 1024 * KIB;
    config.incomplete.timeout = Duration::from_secs(60);
    let router =
        Router::new().rpc(|ctx: Ctx<Echo>| async move { Ok::<_, Error>(ctx.into_payload()) });
    let hub = Hub::builder(router).config(config).build();
    let ws = WsServer::builder(hub.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let ws_addr = ws.local_addr();
    tokio::spawn(ws.serve());
    let quic = QuicServer::builder(hub.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let codec = WireCodec::from_name("json").unwrap();
    let mut client = QuicClient::builder(roots_from_pem(quic.cert_pem().as_bytes()).unwrap())
        .codec(codec)
        .connect(quic.local_addr())
        .await
        .unwrap();
    // The main stream is open and served.
    let meta = Meta {
        correlation_id: Some("q".into()),
        ..Meta::default()
    };
    client
        .send_frame(&codec.encode("ECHO", &meta, Some(&1)).unwrap())
        .await
        .unwrap();
    assert!(client.recv_frame().await.unwrap().is_some());

    // A QUIC request stream holds 800 KiB of a 900 KiB request.
    let (mut send, _recv) = client.connection().open_bi().await.unwrap();
    send.write_all(&(900 * KIB as u32).to_be_bytes())
        .await
        .unwrap();
    send.write_all(&vec![b' '; 800 * KIB]).await.unwrap();
    let budget = hub.incomplete_budget().clone();
    let charged = async {
        while budget.used() < 700 * KIB {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, charged)
        .await
        .expect("the QUIC request is charged");

    // A WebSocket connection that wants as much does not fit beside it.
    let mut tcp = ws_partial(ws_addr, 900 * KIB, 800 * KIB).await;
    let (code, reason) = ws_close_within(&mut tcp, WAIT)
        .await
        .expect("refused within the wait");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("budget"), "{reason}");

    // Once the QUIC connection is gone, its room is the WebSocket's.
    client.close(0, "done");
    let released = async {
        while budget.used() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, released)
        .await
        .expect("the QUIC connection's share is released");
    let mut tcp = ws_partial(ws_addr, 900 * KIB, 800 * KIB).await;
    assert_eq!(
        ws_close_within(&mut tcp, Duration::from_secs(1)).await,
        None
    );
    assert!(budget.used() >= 700 * KIB, "{} charged", budget.used());
    assert!(budget.peak() <= 1024 * KIB);
}
