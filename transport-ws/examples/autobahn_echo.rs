//! A WebSocket echo server for the Autobahn conformance cases
//! (`scripts/autobahn`): every text or binary message goes back as it came.
//!
//! It is built on signalbox-ws's own connection halves: the stream is
//! configured by [`signalbox_ws::websocket_config`] (buffers, frame and
//! message limits), split by [`signalbox_ws::split`], read by
//! [`WsSource::recv_message`] (what the hub's [`FrameSource::recv`](signalbox::transport::FrameSource::recv) reads,
//! with the same error mapping) and written by [`WsSink::send_messages`]
//! (what [`FrameSink::send_batch`] writes). A violation closes the
//! connection through [`FrameSink::close`] with the close code the hub
//! would use ([`signalbox::transport::TransportError::close_kind`]: 1002
//! protocol, 1007 invalid UTF-8, 1009 too big).
//!
//! The hub itself is not in the loop: it routes envelopes, and Autobahn
//! sends arbitrary bytes whose frame kind must come back unchanged, while
//! the seam carries message bytes without their kind. The handshake is
//! tungstenite's (the standalone listener's hyper upgrade is covered by the
//! crate's tests). Only the maximum message size is raised (64 MiB, for the
//! 16 MiB messages of cases 9.*); signalbox's own limits are tested in
//! `tests/hostile.rs`.
//!
//! ```text
//! cargo run -p signalbox-ws --example autobahn_echo -- 127.0.0.1:9001
//! ```
//! prints `listening ws=127.0.0.1:9001` once ready.

use signalbox::codec::{CodecLimits, WireCodec};
use signalbox::transport::{Close, CloseKind, FrameSink};
use signalbox_ws::{Buffers, WsSink, WsSource, split, websocket_config};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

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
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let Some(codec) = WireCodec::from_name("json") else {
        return;
    };
    let (mut source, mut sink): (WsSource<TcpStream>, WsSink<TcpStream>) = split(ws, &codec);
    let close = loop {
        match source.recv_message().await {
            Ok(Some(message @ (Message::Text(_) | Message::Binary(_)))) => {
                if let Err(error) = sink.send_messages([message]).await {
                    break Close::new(error.close_kind(), error.to_string());
                }
            }
            // tungstenite answers pings itself.
            Ok(Some(_)) => {}
            // The peer closed: tungstenite has queued the echo of its close
            // frame, which `close` flushes.
            Ok(None) => break Close::new(CloseKind::Normal, ""),
            Err(error) => break Close::new(error.close_kind(), error.to_string()),
        }
    };
    let _ = sink.close(close).await;
}
