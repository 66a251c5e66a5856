//! The batching window ([`signalbox::Batching`]) over a real socket: the
//! server side of a loopback TCP connection is wrapped in a stream that
//! counts the writes reaching the socket, under tungstenite and the
//! transport's own [`signalbox_ws::WsSink`]; a tokio-tungstenite client
//! asks for a burst of messages, each queued after a yield.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use signalbox::codec::WireCodec;
use signalbox::transport::{Connection, ConnectionInfo};
use signalbox::{Batching, Ctx, DataMap, Hub, Router, message};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Burst {
    n: u32,
}
message!(Burst = "BURST");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    n: u32,
}
message!(Tick = "TICK");

/// A socket that counts the writes that reach it (each one a `write`
/// system call on the TCP socket).
struct Counted {
    inner: TcpStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written
            && *n > 0
        {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A hub serving one WebSocket connection on loopback, its socket's
/// writes counted from after the handshake; returns the client and the
/// count.
async fn connect(hub: Hub) -> (WebSocketStream<TcpStream>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = writes.clone();
    tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let codec = hub.codec(WireCodec::from_name("json").unwrap());
        let config = signalbox_ws::websocket_config(codec.limits(), Default::default());
        let io = Counted {
            inner: tcp,
            writes: counted.clone(),
        };
        let ws = tokio_tungstenite::accept_async_with_config(io, Some(config))
            .await
            .unwrap();
        // The handshake's answer is not a batch.
        counted.store(0, Ordering::SeqCst);
        let (source, sink) = signalbox_ws::split(ws, &codec);
        hub.serve(Connection {
            info: ConnectionInfo {
                transport: "ws",
                peer_addr: Some(peer),
                codec,
            },
            data: DataMap::new(),
            source: Box::new(source),
            sink: Box::new(sink),
        })
        .await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .unwrap();
    (client, writes)
}

fn router() -> Router {
    Router::new().on(|ctx: Ctx<Burst>| async move {
        for n in 0..ctx.payload().n {
            ctx.send(&Tick { n })?;
            tokio::task::yield_now().await;
        }
        Ok::<_, signalbox::Error>(())
    })
}

/// Asks for `n` ticks and reads them; returns how long after the request
/// the first one arrived.
async fn burst(client: &mut WebSocketStream<TcpStream>, n: u32) -> Duration {
    let request = serde_json::json!({"type": "BURST", "payload": {"n": n}});
    let sent = Instant::now();
    client
        .send(Message::text(request.to_string()))
        .await
        .unwrap();
    let mut first = None;
    for expected in 0..n {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a tick in time")
            .expect("the connection is open")
            .unwrap();
        first.get_or_insert_with(|| sent.elapsed());
        let envelope: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        assert_eq!(envelope["type"], "TICK", "{envelope}");
        assert_eq!(envelope["payload"]["n"], expected, "{envelope}");
    }
    first.unwrap_or_default()
}

#[tokio::test]
async fn a_window_cut_at_the_burst_size_writes_it_with_one_write() {
    // The whole burst fills the window: written the moment the 20th is
    // queued, however slowly the machine runs, in one write.
    let window = Batching::new(Batching::MAX_DELAY)
        .unwrap()
        .with_max_messages(20)
        .unwrap();
    let hub = Hub::builder(router()).batching(window).build();
    let (mut client, writes) = connect(hub).await;
    let first = burst(&mut client, 20).await;
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    assert!(
        first < Batching::MAX_DELAY,
        "cut by size, not by time: {first:?}"
    );
}

#[tokio::test]
async fn a_window_holds_the_first_message_for_its_delay() {
    let window = Batching::new(Duration::from_millis(300)).unwrap();
    let hub = Hub::builder(router()).batching(window).build();
    let (mut client, writes) = connect(hub).await;
    let first = burst(&mut client, 5).await;
    // A lower bound only: a loaded machine makes it later, never sooner.
    assert!(first >= Duration::from_millis(300), "{first:?}");
    assert_eq!(writes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_a_window_the_burst_leaves_in_several_writes() {
    // On this single-threaded runtime each yield lets the writer take
    // what is queued: writes follow the wake-ups, not a window.
    let hub = Hub::builder(router()).build();
    let (mut client, writes) = connect(hub).await;
    burst(&mut client, 20).await;
    let writes = writes.load(Ordering::SeqCst);
    assert!(writes > 1, "{writes} writes");
}
