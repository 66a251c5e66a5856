//! RPC echo round trips per second, QUIC against WebSocket, on one chat hub
//! over loopback, in one run.
//!
//! ```text
//! cargo bench -p signalbox-examples --bench rtt
//! ```
//!
//! Three shapes, each on one connection with the msgpack codec:
//! - sequential: one ECHO in flight (latency-bound);
//! - windowed: 32 ECHOs in flight (throughput of one connection);
//! - QUIC only: one ECHO per request stream, 32 streams in flight.

use futures_util::{SinkExt, StreamExt};
use signalbox::codec::{Meta, WireCodec};
use signalbox_quic::{QuicClient, QuicServer, roots_from_pem};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SEQUENTIAL: usize = 3_000;
const WINDOWED: usize = 30_000;
const WINDOW: usize = 32;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn codec() -> WireCodec {
    WireCodec::from_name("msgpack").unwrap_or_else(|| unreachable!("a known codec"))
}

fn echo(n: usize) -> BenchResult<Vec<u8>> {
    let meta = Meta {
        correlation_id: Some(format!("r-{n}")),
        ..Meta::default()
    };
    let payload = serde_json::json!({"n": n, "text": "round trip"});
    Ok(codec().encode("ECHO", &meta, Some(&payload))?.to_vec())
}

/// Sends `total` requests keeping `window` in flight; waits for each reply.
async fn run<S, R>(total: usize, window: usize, mut send: S, mut recv: R) -> BenchResult<Duration>
where
    S: AsyncFnMut(Vec<u8>) -> BenchResult<()>,
    R: AsyncFnMut() -> BenchResult<()>,
{
    let start = Instant::now();
    let mut in_flight = 0;
    let mut sent = 0;
    let mut done = 0;
    while done < total {
        while in_flight < window && sent < total {
            send(echo(sent)?).await?;
            sent += 1;
            in_flight += 1;
        }
        recv().await?;
        in_flight -= 1;
        done += 1;
    }
    Ok(start.elapsed())
}

fn report(label: &str, total: usize, elapsed: Duration) {
    println!(
        "{label:<34} {:>9.0} round trips/s  ({total} in {:.2} s)",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

async fn quic_main(server: &QuicServer, total: usize, window: usize) -> BenchResult<Duration> {
    let client = QuicClient::builder(roots_from_pem(server.cert_pem().as_bytes())?)
        .codec(codec())
        .connect(server.local_addr())
        .await?;
    let client = tokio::sync::Mutex::new(client);
    run(
        total,
        window,
        async |frame| Ok(client.lock().await.send_frame(&frame).await?),
        async || {
            let frame = client.lock().await.recv_frame().await?;
            let reply = codec().decode(frame.ok_or("stream ended")?)?;
            if reply.ty != "ECHO" {
                return Err(format!("unexpected {}", reply.ty).into());
            }
            Ok(())
        },
    )
    .await
}

async fn quic_streams(server: &QuicServer, total: usize, window: usize) -> BenchResult<Duration> {
    let mut client = QuicClient::builder(roots_from_pem(server.cert_pem().as_bytes())?)
        .codec(codec())
        .connect(server.local_addr())
        .await?;
    // The main stream must exist before request streams are routed.
    client.send_frame(&echo(0)?).await?;
    client.recv_frame().await?;
    let pending = std::cell::RefCell::new(VecDeque::new());
    let client = &client;
    run(
        total,
        window,
        async |frame| {
            let stream = client.request(&frame).await?;
            pending.borrow_mut().push_back(stream);
            Ok(())
        },
        async || {
            let stream = pending.borrow_mut().pop_front();
            let mut stream = stream.ok_or("nothing in flight")?;
            let reply = codec().decode(stream.recv_frame().await?.ok_or("no reply")?)?;
            if reply.ty != "ECHO" {
                return Err(format!("unexpected {}", reply.ty).into());
            }
            Ok(())
        },
    )
    .await
}

async fn ws(addr: std::net::SocketAddr, total: usize, window: usize) -> BenchResult<Duration> {
    let mut req = format!("ws://{addr}/ws").into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "msgpack".parse()?);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    let (tx, rx) = ws.split();
    let tx = tokio::sync::Mutex::new(tx);
    let rx = tokio::sync::Mutex::new(rx);
    run(
        total,
        window,
        async |frame| Ok(tx.lock().await.send(WsMessage::binary(frame)).await?),
        async || loop {
            match rx.lock().await.next().await {
                Some(Ok(WsMessage::Binary(frame))) => {
                    let reply = codec().decode(frame)?;
                    if reply.ty != "ECHO" {
                        return Err(format!("unexpected {}", reply.ty).into());
                    }
                    return Ok(());
                }
                Some(Ok(_)) => continue,
                other => return Err(format!("websocket ended: {other:?}").into()),
            }
        },
    )
    .await
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    // `cargo bench` passes --bench; nothing here takes arguments.
    let mut config = signalbox_examples::chat::config();
    config.rate_limit = None;
    config.max_concurrent = 64;
    let hub = signalbox_examples::chat::hub_with(config);
    let ws_server = signalbox_examples::chat::ws_server(hub.clone(), "127.0.0.1:0").await?;
    let ws_addr = ws_server.local_addr();
    tokio::spawn(ws_server.serve());
    let quic = QuicServer::builder(hub.clone())
        .request_streams(64)
        .bind("127.0.0.1:0")
        .await?;

    // Warm up both paths.
    ws(ws_addr, 500, WINDOW).await?;
    quic_main(&quic, 500, WINDOW).await?;

    println!("RPC echo (ECHO, msgpack, one connection, loopback)");
    report(
        "websocket sequential",
        SEQUENTIAL,
        ws(ws_addr, SEQUENTIAL, 1).await?,
    );
    report(
        "quic sequential",
        SEQUENTIAL,
        quic_main(&quic, SEQUENTIAL, 1).await?,
    );
    report(
        "quic request streams sequential",
        SEQUENTIAL,
        quic_streams(&quic, SEQUENTIAL, 1).await?,
    );
    report(
        &format!("websocket window {WINDOW}"),
        WINDOWED,
        ws(ws_addr, WINDOWED, WINDOW).await?,
    );
    report(
        &format!("quic window {WINDOW}"),
        WINDOWED,
        quic_main(&quic, WINDOWED, WINDOW).await?,
    );
    report(
        &format!("quic request streams window {WINDOW}"),
        WINDOWED,
        quic_streams(&quic, WINDOWED, WINDOW).await?,
    );
    hub.shutdown().await;
    Ok(())
}
