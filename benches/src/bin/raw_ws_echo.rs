//! Baseline: a raw tokio-tungstenite echo server with no routing. Every
//! text or binary message comes back as it was (tokio-tungstenite's own
//! echo example: the read half forwarded into the write half, which flushes
//! when no more input is ready). The first subprotocol a client offers is
//! accepted, so that codec offers do not fail the handshake.
//!
//! ```text
//! raw_ws_echo [--addr 127.0.0.1:0]
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
}

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

async fn serve(stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
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
    let listener = TcpListener::bind(&args.addr).await?;
    println!("listening ws={}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(stream).await;
        });
    }
}
