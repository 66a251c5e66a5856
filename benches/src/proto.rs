//! The messages the load generator sends and reads: the chat protocol of
//! docs/PROTOCOL.md §9, plus one bench-only request.
//!
//! `BENCH_SUBSCRIBE {"roomId"}` (answered with `BENCH_SUBSCRIBED {"roomId"}`
//! and the request's correlationId) makes the connection a member of the
//! room *without* the `USER_JOINED` broadcast: with `JOIN_ROOM`, 10,000
//! subscribers joining one room would cost 50 million `USER_JOINED`
//! deliveries before the fan-out benchmark starts. Both bench servers
//! (`bench_server` and `benches/bun/server.ts`) implement it; the stock chat
//! example does not.

use anyhow::{Result, anyhow};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use signalbox::{Ctx, Error, Router, message};
use signalbox_codec::{Envelope, Meta, WireCodec};

/// `ECHO`.
pub const ECHO: &str = "ECHO";
/// `JOIN_ROOM`.
pub const JOIN_ROOM: &str = "JOIN_ROOM";
/// `SEND_MESSAGE`.
pub const SEND_MESSAGE: &str = "SEND_MESSAGE";
/// `NEW_MESSAGE`.
pub const NEW_MESSAGE: &str = "NEW_MESSAGE";
/// `USER_JOINED`.
pub const USER_JOINED: &str = "USER_JOINED";

/// Whether an envelope type is an error answer.
pub fn is_error(ty: &str) -> bool {
    ty == "ERROR" || ty == "RPC_ERROR"
}

/// `BENCH_SUBSCRIBE`: become a member of a room silently (bench servers only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSubscribe {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
}
message!(BenchSubscribe = "BENCH_SUBSCRIBE");

/// `BENCH_SUBSCRIBED`: the answer to [`BenchSubscribe`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSubscribed {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
}
message!(BenchSubscribed = "BENCH_SUBSCRIBED");

/// The chat router of the examples with the bench-only `BENCH_SUBSCRIBE`.
pub fn bench_router() -> Router {
    signalbox_examples::chat::router().rpc(|ctx: Ctx<BenchSubscribe>| async move {
        let room_id = ctx.payload().room_id.clone();
        ctx.subscribe(&signalbox_examples::chat::room_topic(&room_id))?;
        Ok::<_, Error>(BenchSubscribed { room_id })
    })
}

#[derive(Serialize)]
struct Room<'a> {
    #[serde(rename = "roomId")]
    room_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
}

#[derive(Serialize)]
struct Said<'a> {
    #[serde(rename = "roomId")]
    room_id: &'a str,
    text: &'a str,
}

/// The `text` of a `NEW_MESSAGE` (other fields are not read).
#[derive(Deserialize)]
pub struct NewMessageText {
    /// The text as sent.
    pub text: String,
}

fn meta(correlation_id: Option<String>) -> Meta {
    Meta {
        correlation_id,
        ..Meta::default()
    }
}

/// The payload of the load generator's `ECHO`s: `{"data": "xx…"}` (an
/// object, as ws-kit's schemas require).
#[derive(Serialize)]
struct EchoData<'a> {
    data: &'a str,
}

/// `ECHO` with payload `{"data": data}` and correlationId `seq`.
pub fn echo(codec: &WireCodec, seq: u64, data: &str) -> Result<Bytes> {
    Ok(codec.encode(ECHO, &meta(Some(seq.to_string())), Some(&EchoData { data }))?)
}

/// `JOIN_ROOM`.
pub fn join_room(codec: &WireCodec, room_id: &str, username: Option<&str>) -> Result<Bytes> {
    Ok(codec.encode(
        JOIN_ROOM,
        &Meta::default(),
        Some(&Room { room_id, username }),
    )?)
}

/// `BENCH_SUBSCRIBE` with correlationId `seq`.
pub fn bench_subscribe(codec: &WireCodec, room_id: &str, seq: u64) -> Result<Bytes> {
    Ok(codec.encode(
        "BENCH_SUBSCRIBE",
        &meta(Some(seq.to_string())),
        Some(&Room {
            room_id,
            username: None,
        }),
    )?)
}

/// `SEND_MESSAGE`.
pub fn send_message(codec: &WireCodec, room_id: &str, text: &str) -> Result<Bytes> {
    Ok(codec.encode(
        SEND_MESSAGE,
        &Meta::default(),
        Some(&Said { room_id, text }),
    )?)
}

/// Decodes an envelope (the payload stays raw).
pub fn decode(codec: &WireCodec, frame: Bytes) -> Result<Envelope> {
    codec
        .decode(frame)
        .map_err(|failure| anyhow!("undecodable message from the server: {}", failure.error))
}

/// The correlationId of an envelope as a number, if it is one.
pub fn correlation_seq(envelope: &Envelope) -> Option<u64> {
    envelope.meta.correlation_id.as_deref()?.parse().ok()
}

/// A short description of an error envelope for the logs.
pub fn describe_error(envelope: &Envelope) -> String {
    match &envelope.payload {
        Some(raw) => match raw.decode::<serde_json::Value>() {
            Ok(value) => format!("{} {value}", envelope.ty),
            Err(_) => envelope.ty.clone(),
        },
        None => envelope.ty.clone(),
    }
}
