//! A raw WebSocket echo server for the Autobahn conformance cases
//! (`scripts/autobahn`): every text or binary message goes back as it came.
//!
//! signalbox routes envelopes, and its seam ([`signalbox_ws::split`])
//! carries message bytes without their frame kind, so an echo of
//! arbitrary frames cannot go through a hub. This program runs the same
//! WebSocket engine with the same configuration a `WsServer` connection
//! gets ([`signalbox_ws::websocket_config`]: buffers, frame and message
//! limits) and closes on errors with the codes a `WsServer` connection
//! uses (1002 protocol, 1007 invalid UTF-8, 1009 too big). Only the
//! maximum message size is raised (64 MiB, for the 16 MiB messages of
//! cases 9.*); signalbox's own limits are tested in `tests/hostile.rs`.
//!
//! ```text
//! cargo run -p signalbox-ws --example autobahn_echo -- 127.0.0.1:9001
//! ```
//! prints `listening ws=127.0.0.1:9001` once ready.

use futures_util::{SinkExt, StreamExt};
use signalbox::codec::CodecLimits;
use signalbox_ws::{Buffers, websocket_config};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening ws={}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(echo(tcp));
    }
}

async fn echo(tcp: TcpStream) {
    let limits = CodecLimits {
        max_message_size: 64 << 20,
        ..CodecLimits::default()
    };
    let config = websocket_config(&limits, Buffers::default());
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    while let Some(item) = ws.next().await {
        let code = match item {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(message).await.is_err() {
                    return;
                }
                continue;
            }
            // tungstenite answers pings and close frames itself.
            Ok(_) => continue,
            Err(Error::Utf8(_)) => CloseCode::Invalid,
            Err(Error::Capacity(_)) => CloseCode::Size,
            Err(Error::Protocol(_) | Error::AttackAttempt) => CloseCode::Protocol,
            Err(_) => return,
        };
        let frame = CloseFrame {
            code,
            reason: "".into(),
        };
        let _ = ws.send(Message::Close(Some(frame))).await;
        let _ = ws.close(None).await;
        return;
    }
}
