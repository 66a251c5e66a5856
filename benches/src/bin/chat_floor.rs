//! Baseline: the hand-written chat floor. A minimal chat server on
//! tokio-tungstenite with no router: the JSON envelopes of
//! docs/PROTOCOL.md §1 and the chat types of §9 that the load generator
//! speaks (`JOIN_ROOM` → `USER_JOINED`, `SEND_MESSAGE` → `NEW_MESSAGE`,
//! `LEAVE_ROOM` → `USER_LEFT`, `ECHO`, and the bench-only silent join
//! `BENCH_SUBSCRIBE` of `signalbox_benches::proto`).
//!
//! Each connection is a reader (the task that decodes and handles what the
//! client sends) and a writer (a task draining a bounded queue into the
//! socket, flushing when the queue is empty). A room is a shared list of
//! its members' queues, replaced whole on a join or leave; a publication is
//! encoded once and the same bytes are queued to every member. A member
//! whose queue is full is closed as a slow consumer (docs/PROTOCOL.md §8).
//!
//! What signalbox does beyond this (validation, routing, middleware, the
//! hub's topics and presence, metering, rate limits, heartbeats, typed
//! errors) is what the difference between the two measures. Not a server
//! to deploy: JSON only, no heartbeats, no validation of lengths.
//!
//! ```text
//! chat_floor [--addr 127.0.0.1:0] [--buffer-size 4096] [--queue 8192]
//! ```
//! Prints `listening ws=ADDR`.

use anyhow::{Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

#[derive(Debug, Parser)]
#[command(name = "chat_floor", about)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Read buffer and write buffer of each connection, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    buffer_size: usize,
    /// Messages queued for one connection at most; a member whose queue is
    /// full is closed as a slow consumer.
    #[arg(long, value_name = "N", default_value_t = 8192)]
    queue: usize,
}

/// The largest message accepted.
const MAX_MESSAGE: usize = 1 << 20;

/// One member of a room: where its messages go, and how to close it.
#[derive(Clone)]
struct Member {
    id: u64,
    outbox: mpsc::Sender<Message>,
    kick: Arc<Notify>,
}

impl Member {
    /// Queues `message`; a full queue closes the member.
    fn deliver(&self, message: Message) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outbox.try_send(message) {
            self.kick.notify_one();
        }
    }
}

/// Every room's members. The lock guards only the swap of a room's list;
/// a publication clones the list's `Arc` and queues outside the lock.
#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Vec<Member>>>>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<Member>>>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `member`; false if it already was one.
    fn join(&self, room: &str, member: &Member) -> bool {
        let mut rooms = self.lock();
        let list = rooms.entry(room.to_owned()).or_default();
        if list.iter().any(|m| m.id == member.id) {
            return false;
        }
        let mut next = Vec::with_capacity(list.len() + 1);
        next.extend(list.iter().cloned());
        next.push(member.clone());
        *list = Arc::new(next);
        true
    }

    /// Removes member `id`; false if it was none.
    fn leave(&self, room: &str, id: u64) -> bool {
        let mut rooms = self.lock();
        let Some(list) = rooms.get_mut(room) else {
            return false;
        };
        if !list.iter().any(|m| m.id == id) {
            return false;
        }
        let next: Vec<Member> = list.iter().filter(|m| m.id != id).cloned().collect();
        if next.is_empty() {
            rooms.remove(room);
        } else {
            *list = Arc::new(next);
        }
        true
    }

    /// Queues `message` to every member of `room`.
    fn publish(&self, room: &str, message: Message) {
        let members = self.lock().get(room).cloned();
        for member in members.iter().flat_map(|m| m.iter()) {
            member.deliver(message.clone());
        }
    }
}

struct State {
    rooms: Rooms,
    next_id: AtomicU64,
    config: WebSocketConfig,
    queue: usize,
}

/// An envelope from a client; the payload stays raw until its type is known.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    meta: Option<InMeta>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InMeta {
    #[serde(rename = "correlationId")]
    correlation_id: Option<String>,
}

/// `JOIN_ROOM`, `LEAVE_ROOM` and `BENCH_SUBSCRIBE`.
#[derive(Deserialize)]
struct RoomRequest<'a> {
    #[serde(rename = "roomId", borrow)]
    room_id: Cow<'a, str>,
    #[serde(default, borrow)]
    username: Option<Cow<'a, str>>,
}

/// `SEND_MESSAGE`.
#[derive(Deserialize)]
struct Say<'a> {
    #[serde(rename = "roomId", borrow)]
    room_id: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
}

#[derive(Serialize)]
struct Outgoing<'a, P> {
    #[serde(rename = "type")]
    ty: &'a str,
    meta: OutMeta<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<P>,
}

#[derive(Serialize)]
struct OutMeta<'a> {
    #[serde(rename = "correlationId", skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    timestamp: u64,
    #[serde(rename = "clientId", skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

#[derive(Serialize)]
struct RoomEvent<'a> {
    #[serde(rename = "roomId")]
    room_id: &'a str,
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
}

#[derive(Serialize)]
struct NewMessage<'a> {
    #[serde(rename = "roomId")]
    room_id: &'a str,
    #[serde(rename = "userId")]
    user_id: &'a str,
    text: &'a str,
    timestamp: u64,
}

#[derive(Serialize)]
struct ErrorPayload<'a> {
    code: &'a str,
    message: &'a str,
    retryable: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Encodes one envelope into a text frame.
fn encode<P: Serialize>(
    ty: &str,
    correlation_id: Option<&str>,
    client_id: Option<&str>,
    payload: Option<P>,
) -> Result<Message> {
    let envelope = Outgoing {
        ty,
        meta: OutMeta {
            correlation_id,
            timestamp: now_ms(),
            client_id,
        },
        payload,
    };
    Ok(Message::Text(serde_json::to_string(&envelope)?.into()))
}

/// One connection's side of the chat: who it is and which rooms it is in
/// (and whether it was announced there with `USER_JOINED`).
struct Session {
    me: Member,
    client_id: String,
    rooms: Vec<(String, bool)>,
}

impl Session {
    fn reply<P: Serialize>(&self, ty: &str, correlation_id: Option<&str>, payload: P) {
        match encode(ty, correlation_id, None, Some(payload)) {
            Ok(message) => self.me.deliver(message),
            Err(e) => eprintln!("chat_floor: encoding {ty}: {e}"),
        }
    }

    fn error(&self, correlation_id: Option<&str>, code: &str, message: &str) {
        let payload = ErrorPayload {
            code,
            message,
            retryable: false,
        };
        self.reply("ERROR", correlation_id, payload);
    }

    /// Handles one envelope's text.
    fn handle(&mut self, state: &State, text: &str) -> Result<()> {
        let incoming: Incoming<'_> = match serde_json::from_str(text) {
            Ok(incoming) => incoming,
            Err(e) => {
                self.error(None, "INVALID_ARGUMENT", &e.to_string());
                return Ok(());
            }
        };
        let correlation_id = incoming
            .meta
            .as_ref()
            .and_then(|m| m.correlation_id.as_deref());
        let payload = incoming.payload.map_or("null", RawValue::get);
        match incoming.ty.as_ref() {
            "SEND_MESSAGE" => {
                let say: Say<'_> = match serde_json::from_str(payload) {
                    Ok(say) => say,
                    Err(e) => {
                        self.error(correlation_id, "INVALID_ARGUMENT", &e.to_string());
                        return Ok(());
                    }
                };
                if !self.rooms.iter().any(|(r, _)| *r == say.room_id) {
                    self.error(correlation_id, "PERMISSION_DENIED", "join the room first");
                    return Ok(());
                }
                let message = NewMessage {
                    room_id: &say.room_id,
                    user_id: &self.client_id,
                    text: &say.text,
                    timestamp: now_ms(),
                };
                let frame = encode("NEW_MESSAGE", None, Some(&self.client_id), Some(message))?;
                state.rooms.publish(&say.room_id, frame);
            }
            "ECHO" => {
                let frame = encode("ECHO", correlation_id, None, incoming.payload)?;
                self.me.deliver(frame);
            }
            ty @ ("JOIN_ROOM" | "BENCH_SUBSCRIBE" | "LEAVE_ROOM") => {
                let request: RoomRequest<'_> = match serde_json::from_str(payload) {
                    Ok(request) => request,
                    Err(e) => {
                        self.error(correlation_id, "INVALID_ARGUMENT", &e.to_string());
                        return Ok(());
                    }
                };
                let room = request.room_id.as_ref();
                match ty {
                    "LEAVE_ROOM" => self.leave(state, room)?,
                    "BENCH_SUBSCRIBE" => {
                        if state.rooms.join(room, &self.me) {
                            self.rooms.push((room.to_owned(), false));
                        }
                        let answer = RoomEvent {
                            room_id: room,
                            user_id: None,
                            username: None,
                        };
                        self.reply("BENCH_SUBSCRIBED", correlation_id, answer);
                    }
                    _ => {
                        if state.rooms.join(room, &self.me) {
                            self.rooms.push((room.to_owned(), true));
                            let joined = RoomEvent {
                                room_id: room,
                                user_id: Some(&self.client_id),
                                username: request.username.as_deref(),
                            };
                            let frame =
                                encode("USER_JOINED", None, Some(&self.client_id), Some(joined))?;
                            state.rooms.publish(room, frame);
                        }
                    }
                }
            }
            other => {
                let message = format!("unknown type {other:?}");
                self.error(correlation_id, "INVALID_ARGUMENT", &message);
            }
        }
        Ok(())
    }

    /// Leaves `room`, announcing it if the join was announced.
    fn leave(&mut self, state: &State, room: &str) -> Result<()> {
        let Some(at) = self.rooms.iter().position(|(r, _)| r == room) else {
            return Ok(());
        };
        let (room, announced) = self.rooms.swap_remove(at);
        state.rooms.leave(&room, self.me.id);
        if announced {
            let left = RoomEvent {
                room_id: &room,
                user_id: Some(&self.client_id),
                username: None,
            };
            let frame = encode("USER_LEFT", None, Some(&self.client_id), Some(left))?;
            state.rooms.publish(&room, frame);
        }
        Ok(())
    }
}

async fn serve(stream: TcpStream, state: Arc<State>) -> Result<()> {
    stream.set_nodelay(true)?;
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(state.config)).await?;
    let (mut sink, mut read) = ws.split();
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (outbox, mut inbox) = mpsc::channel::<Message>(state.queue.max(1));
    let kick = Arc::new(Notify::new());
    let writer = {
        let kick = kick.clone();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    message = inbox.recv() => message,
                    _ = kick.notified() => {
                        let close = CloseFrame {
                            code: CloseCode::Policy,
                            reason: "slow consumer".into(),
                        };
                        let _ = sink.send(Message::Close(Some(close))).await;
                        return;
                    }
                };
                let Some(first) = first else { return };
                if sink.feed(first).await.is_err() {
                    return;
                }
                while let Ok(next) = inbox.try_recv() {
                    if sink.feed(next).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        })
    };
    let mut session = Session {
        me: Member { id, outbox, kick },
        client_id: format!("c{id}"),
        rooms: Vec::new(),
    };
    let outcome = async {
        while let Some(message) = read.next().await {
            match message? {
                Message::Text(text) => session.handle(&state, text.as_str())?,
                Message::Binary(_) => bail!("binary frames are not JSON"),
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    let rooms: Vec<String> = session.rooms.iter().map(|(r, _)| r.clone()).collect();
    for room in rooms {
        // The member is out of the room even if the announcement fails.
        let _ = session.leave(&state, &room);
    }
    // The rooms no longer hold this member's queue: dropping the last
    // sender ends the writer once it has sent what was queued.
    drop(session);
    let _ = writer.await;
    outcome
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    signalbox_benches::raise_fd_limit();
    let buffer = args.buffer_size;
    let state = Arc::new(State {
        rooms: Rooms::default(),
        next_id: AtomicU64::new(1),
        config: WebSocketConfig::default()
            .read_buffer_size(buffer.max(256))
            .write_buffer_size(buffer)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE)),
        queue: args.queue,
    });
    let listener = TcpListener::bind(&args.addr).await?;
    println!("listening ws={}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let _ = serve(stream, state).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn member(id: u64, queue: usize) -> (Member, mpsc::Receiver<Message>) {
        let (outbox, inbox) = mpsc::channel(queue);
        let kick = Arc::new(Notify::new());
        (Member { id, outbox, kick }, inbox)
    }

    #[tokio::test]
    async fn a_publication_reaches_each_member_once_and_a_full_queue_kicks() {
        let rooms = Rooms::default();
        let (a, mut a_in) = member(1, 8);
        let (b, mut b_in) = member(2, 1);
        assert!(rooms.join("lobby", &a));
        assert!(!rooms.join("lobby", &a), "a second join is a no-op");
        assert!(rooms.join("lobby", &b));
        rooms.publish("lobby", Message::text("one"));
        assert_eq!(a_in.try_recv().unwrap(), Message::text("one"));
        assert!(a_in.try_recv().is_err(), "delivered once");
        // b's queue holds one message: the second publication kicks it.
        rooms.publish("lobby", Message::text("two"));
        let kicked = tokio::time::timeout(Duration::from_secs(5), b.kick.notified()).await;
        assert!(kicked.is_ok(), "a full queue closes the member");
        assert_eq!(b_in.try_recv().unwrap(), Message::text("one"));
        assert!(rooms.leave("lobby", 2));
        assert!(!rooms.leave("lobby", 2));
        rooms.publish("lobby", Message::text("three"));
        assert!(b_in.try_recv().is_err(), "a member that left gets nothing");
        assert!(rooms.leave("lobby", 1));
        assert!(rooms.lock().is_empty(), "an empty room is dropped");
    }

    #[test]
    fn envelopes_are_read_and_written_in_the_protocol_shape() {
        let text = r#"{"type":"ECHO","meta":{"correlationId":"7","x":1},"payload":{"data":"hi"}}"#;
        let incoming: Incoming<'_> = serde_json::from_str(text).unwrap();
        assert_eq!(incoming.ty, "ECHO");
        assert_eq!(incoming.meta.unwrap().correlation_id.as_deref(), Some("7"));
        let Message::Text(out) = encode("ECHO", Some("7"), None, incoming.payload).unwrap() else {
            panic!("a text frame");
        };
        let value: serde_json::Value = serde_json::from_str(out.as_str()).unwrap();
        assert_eq!(value["type"], "ECHO");
        assert_eq!(value["meta"]["correlationId"], "7");
        assert!(value["meta"]["timestamp"].as_u64().unwrap() > 0);
        assert_eq!(value["payload"], serde_json::json!({"data": "hi"}));
    }
}
