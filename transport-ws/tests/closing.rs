//! The closing handshake over real sockets (docs/PROTOCOL.md §4): a close
//! the server starts reaches a client that is still writing, because the
//! server reads and discards what follows until the client's own close
//! (or its end of stream) instead of resetting the connection.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use signalbox::Config;
use tokio_tungstenite::tungstenite::Message;

/// A client sends a 2 MiB text message in one frame (twice the default
/// maximum): the server refuses it from its header, and the client, which
/// goes on writing the rest, still reads close 1009 and its reason. Fifty
/// times, each on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_gets_1009_and_its_reason_every_time() {
    let (_hub, addr) = start(Config::default()).await;
    let text = format!(
        r#"{{"type":"ECHO","payload":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let mut seen = Vec::new();
    for _ in 0..50 {
        let mut client = connect(addr, "json").await;
        let sent = client.ws.send(Message::Text(text.clone().into())).await;
        let got = tokio::time::timeout(WAIT, client.ws.next()).await;
        let outcome = match (sent, got) {
            (Ok(()), Ok(Some(Ok(Message::Close(Some(frame)))))) => {
                format!("{} {}", u16::from(frame.code), frame.reason)
            }
            (sent, got) => format!("send {sent:?}, then {got:?}"),
        };
        seen.push(outcome);
    }
    let good = seen
        .iter()
        .filter(|o| o.starts_with("1009 ") && o.contains("too big"))
        .count();
    eprintln!(
        "{good} of 50 read close 1009 with its reason; first: {}",
        seen[0]
    );
    assert_eq!(good, 50, "{seen:#?}");
}
