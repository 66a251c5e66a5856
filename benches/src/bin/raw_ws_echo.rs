//! Baseline: a raw tokio-tungstenite echo server with no routing. Every
//! text or binary message comes back as it was (tokio-tungstenite's own
//! echo example: the read half forwarded into the write half, which flushes
//! when no more input is ready). The first subprotocol a client offers is
//! accepted, so that codec offers do not fail the handshake.
//!
//! Its read and write buffers are 4 KiB by default (tungstenite's best
//! configuration here: its default 128 KiB read buffer is zero-filled for
//! every read); `--buffer-size 131072` gives tungstenite's defaults.
//!
//! ```text
//! raw_ws_echo [--addr 127.0.0.1:0] [--buffer-size 4096]
//! ```
//! Prints `listening ws=ADDR`.

use anyhow::Result;
use clap::Parser;
use futures_util::{StreamExt, TryStreamExt, future};
use std::io::Write;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Parser)]
#[command(name = "raw_ws_echo", about)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Read buffer and write buffer of each connection, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    buffer_size: usize,
}

/// The largest message echoed.
const MAX_MESSAGE: usize = 1 << 20;

/// Accepts the first subprotocol offered, if any (the error type is
/// tungstenite's, whatever clippy thinks of its size).
#[allow(clippy::result_large_err)]
fn pick_protocol(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .and_then(|first| HeaderValue::from_str(first).ok());
    if let Some(protocol) = offered {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", protocol);
    }
    Ok(response)
}

/// tungstenite's configuration with `buffer` bytes of read and write
/// buffer. The write buffer exceeds its target by one message at most: a
/// write the socket does not take makes the sink flush everything before
/// it accepts the next message (tokio-tungstenite's `poll_ready`).
fn config(buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(buffer.max(256))
        .write_buffer_size(buffer)
        .max_write_buffer_size(buffer + MAX_MESSAGE + 64)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

async fn serve(stream: TcpStream, config: WebSocketConfig) -> Result<()> {
    stream.set_nodelay(true)?;
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, pick_protocol, Some(config))
        .await?;
    let (write, read) = ws.split();
    read.try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    signalbox_benches::raise_fd_limit();
    let config = config(args.buffer_size);
    let listener = TcpListener::bind(&args.addr).await?;
    println!("listening ws={}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(stream, config).await;
        });
    }
}
