//! docs/PROTOCOL.md §4 (slow consumers) and §8 through the chat binary in its
//! default configuration: a burst into a room does not close members that
//! read continuously. In its own test binary: it is heavy, and would slow
//! the other chat tests down if it ran beside them.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

/// Members of the room.
const MEMBERS: usize = 32;
/// `SEND_MESSAGE`s each member sends at once.
const EACH: usize = 100;
/// How long every delivery may take, all members together (wide: CI is a
/// loaded 2-core machine and both sides are debug builds).
const BURST_WAIT: Duration = Duration::from_secs(120);

/// How long a member waits for its next message before it stops counting
/// (another member closed early sends no more, so the count stays short).
const QUIET: Duration = Duration::from_secs(20);

/// Kills the chat process when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one member saw of the burst.
#[derive(Debug)]
struct Seen {
    member: usize,
    new_messages: usize,
    /// The close frame, or the transport error, that ended it early.
    ended: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_into_a_room_does_not_close_members_that_read() {
    let (child, addr) = spawn_chat_binary(Stdio::inherit()).await;
    let _server = Server(child);

    // Everyone joins, one after the other: a member subscribes before its
    // USER_JOINED is published, so the first USER_JOINED it gets is its
    // own, and once it has it every NEW_MESSAGE reaches it.
    let mut clients = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS {
        let mut client = connect(addr, "json").await;
        client
            .send_json("JOIN_ROOM", None, json!({"roomId": "burst"}))
            .await;
        client.expect("USER_JOINED").await;
        clients.push(client);
    }

    let expected = MEMBERS * EACH;
    let start = Arc::new(Barrier::new(MEMBERS));
    let mut members = Vec::with_capacity(MEMBERS);
    for (member, client) in clients.into_iter().enumerate() {
        let start = start.clone();
        members.push(tokio::spawn(async move {
            let Client { ws, codec } = client;
            let (mut tx, mut rx) = ws.split();
            // The reader runs from before the burst to its end.
            let reader = tokio::spawn(async move {
                let mut seen = Seen {
                    member,
                    new_messages: 0,
                    ended: None,
                };
                while seen.new_messages < expected {
                    let Ok(next) = tokio::time::timeout(QUIET, rx.next()).await else {
                        seen.ended = Some(format!("nothing more within {QUIET:?}"));
                        break;
                    };
                    let frame = match next {
                        Some(Ok(Message::Text(text))) => bytes::Bytes::from(text),
                        Some(Ok(Message::Close(close))) => {
                            seen.ended = Some(format!("closed: {close:?}"));
                            break;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => {
                            seen.ended = Some(format!("transport error: {error}"));
                            break;
                        }
                        None => {
                            seen.ended = Some("stream ended".into());
                            break;
                        }
                    };
                    let envelope = codec.decode(frame).expect("a frame the codec reads");
                    if envelope.ty == "NEW_MESSAGE" {
                        seen.new_messages += 1;
                    }
                }
                (seen, rx)
            });
            start.wait().await;
            for n in 0..EACH {
                let frame = codec
                    .encode(
                        "SEND_MESSAGE",
                        &signalbox::Meta::default(),
                        Some(&json!({"roomId": "burst", "text": format!("member {member:02} says {n:03}")})),
                    )
                    .expect("encodes");
                let text = String::from_utf8(frame.to_vec()).expect("JSON is text");
                if tx.feed(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            let _ = tx.flush().await;
            let (seen, rx) = reader.await.expect("reader task");
            (seen, tx, rx)
        }));
    }

    let all = tokio::time::timeout(BURST_WAIT, futures_util::future::join_all(members))
        .await
        .expect("every member got the whole burst, or was closed, within the wait");
    let mut survivors = Vec::new();
    let mut short = Vec::new();
    for result in all {
        let (seen, tx, rx) = result.expect("member task");
        if seen.new_messages != expected || seen.ended.is_some() {
            short.push(seen);
        } else {
            survivors.push((tx, rx));
        }
    }
    let members: Vec<usize> = short.iter().map(|seen| seen.member).collect();
    assert!(
        short.is_empty(),
        "members {members:?} did not get all {expected} NEW_MESSAGEs: {short:?}"
    );

    // Zero closes: every connection still answers (all of them kept open
    // until the end, or the others would hear USER_LEFT).
    let mut clients: Vec<Client> = survivors
        .into_iter()
        .map(|(tx, rx)| Client {
            ws: tx.reunite(rx).expect("halves of one stream"),
            codec: signalbox::codec::WireCodec::from_name("json").expect("json"),
        })
        .collect();
    for (n, client) in clients.iter_mut().enumerate() {
        let before = client.sync(&format!("after-{n}")).await;
        assert!(
            before.is_empty(),
            "member {n}: more than the burst: {before:?}"
        );
    }
}
