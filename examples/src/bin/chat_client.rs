//! A line-oriented chat member on the Rust client (`signalbox::client`), for
//! driving from other programs (the TypeScript client's tests put it in a
//! room with TypeScript clients; the browser test with a page on
//! WebTransport).
//!
//! ```text
//! chat_client --url ws://127.0.0.1:8080/ws --codec msgpack --room lobby [--username NAME]
//! chat_client --quic 127.0.0.1:4433 --trust cert.pem --codec msgpack --room lobby
//! ```
//!
//! With `--quic` it connects over native QUIC (docs/PROTOCOL.md §5,
//! `signalbox_quic::QuicConnector`) instead of WebSocket, trusting the
//! certificate the chat wrote with `--cert-out`.
//!
//! Joins the room (again after every reconnect), prints `joined` once the
//! room is subscribed, then every `NEW_MESSAGE` of the room as one JSON line
//! (`{"userId", "text"}`); each line read from stdin is sent as the text of a
//! `SEND_MESSAGE`. Ends at the end of stdin.

use clap::Parser;
use signalbox::client::{Client, Connector};
use signalbox_examples::chat::{JoinRoom, NewMessage, SendMessage, room_topic};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A chat member reading messages to send from stdin.
#[derive(Debug, Parser)]
#[command(name = "chat_client", version, about)]
struct Args {
    /// The chat's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// The codec: json, msgpack, json+gzip or msgpack+gzip.
    #[arg(long, default_value = "json")]
    codec: String,
    /// The room to join.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// The display name.
    #[arg(long)]
    username: Option<String>,
    /// Connect over native QUIC to this address instead of WebSocket.
    #[arg(long, value_name = "ADDR", requires = "trust")]
    quic: Option<SocketAddr>,
    /// With --quic: the certificate (PEM) to trust, e.g. the chat's --cert-out.
    #[arg(long, value_name = "PATH")]
    trust: Option<PathBuf>,
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn run(args: Args) -> Result<(), String> {
    match (args.quic, &args.trust) {
        (Some(addr), Some(trust)) => {
            let pem =
                std::fs::read(trust).map_err(|e| format!("--trust {}: {e}", trust.display()))?;
            let connector = signalbox_quic::QuicConnector::new(addr, &pem, &args.codec)
                .map_err(|e| e.to_string())?;
            run_on(connector, args).await
        }
        _ => {
            let connector = signalbox_ws::WsConnector::new(&args.url, &args.codec)
                .map_err(|e| e.to_string())?;
            run_on(connector, args).await
        }
    }
}

/// Joins, prints and sends over `connector`.
async fn run_on<C: Connector>(connector: C, args: Args) -> Result<(), String> {
    let join = JoinRoom {
        room_id: args.room.clone(),
        username: args.username.clone(),
    };
    let client = Client::builder(connector)
        .on(|m: NewMessage, _| {
            let line = serde_json::json!({ "userId": m.user_id, "text": m.text });
            print_line(&line.to_string());
        })
        .on_connected(move |connected| {
            if let Err(error) = connected.send(&join) {
                eprintln!("chat_client: JOIN_ROOM not encoded: {error}");
            }
        })
        .build();
    let topic = room_topic(&args.room);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !client.positions().iter().any(|(t, _)| *t == topic) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("room {:?} not joined within 10 s", args.room));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    print_line("joined");
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(text) = lines.recv().await {
        let msg = SendMessage {
            room_id: args.room.clone(),
            text,
        };
        client.send(&msg).await.map_err(|e| e.to_string())?;
    }
    client.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat_client: {error}");
            ExitCode::FAILURE
        }
    }
}
