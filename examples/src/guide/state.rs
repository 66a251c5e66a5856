//! State Management: room state in the hub's keyed store. Joining updates
//! the room and watches it; every change is pushed to the watchers as
//! `ROOM_STATE_UPDATE`; a disconnect removes the user (the watch ends by
//! itself).

use serde::{Deserialize, Serialize};
use signalbox::{Ctx, Error, Hub, Router, message, validate};
use std::collections::BTreeMap;

/// Messages kept per room.
pub const KEEP_MESSAGES: usize = 10;

/// `JOIN_ROOM {roomId, username}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRoom {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// A display name.
    pub username: String,
}
message!(JoinRoom = "JOIN_ROOM", |m| {
    validate::chars("roomId", &m.room_id, 1..=64)?;
    validate::chars("username", &m.username, 1..=32)
});

/// `POST {roomId, text}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Post {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// The text.
    pub text: String,
}
message!(Post = "POST", |m| validate::chars(
    "text",
    &m.text,
    1..=1000
));

/// One message of a room's recent history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoomMessage {
    /// Sequence number in the room.
    pub id: u64,
    /// The text.
    pub text: String,
    /// The sender's connection id.
    #[serde(rename = "userId")]
    pub user_id: String,
}

/// A room's state, as stored and as pushed to its watchers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RoomState {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// Connection id → username.
    pub users: BTreeMap<String, String>,
    /// The last [`KEEP_MESSAGES`] messages.
    #[serde(rename = "latestMessages")]
    pub latest_messages: Vec<RoomMessage>,
    /// Messages ever posted.
    pub posted: u64,
}
message!(RoomState = "ROOM_STATE_UPDATE");

fn key(room: &str) -> String {
    format!("room:{room}")
}

/// Rooms whose state lives in the store.
pub fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<JoinRoom>| async move {
            let JoinRoom { room_id, username } = ctx.payload();
            let key = key(room_id);
            ctx.store().watch::<RoomState>(&ctx, &key)?;
            let me = ctx.id().to_owned();
            ctx.store().update(&key, |room: &mut RoomState| {
                room.room_id.clone_from(room_id);
                room.users.insert(me, username.clone());
            })?;
            Ok(())
        })
        .on(|ctx: Ctx<Post>| async move {
            let Post { room_id, text } = ctx.payload();
            let key = key(room_id);
            if !ctx.store_keys().contains(&key) {
                return Err(Error::permission_denied("join the room first"));
            }
            let me = ctx.id().to_owned();
            ctx.store().update(&key, |room: &mut RoomState| {
                room.posted += 1;
                room.latest_messages.push(RoomMessage {
                    id: room.posted,
                    text: text.clone(),
                    user_id: me,
                });
                let excess = room.latest_messages.len().saturating_sub(KEEP_MESSAGES);
                room.latest_messages.drain(..excess);
            })?;
            Ok(())
        })
        .on_close(|conn, _| async move {
            let me = conn.id().to_owned();
            for key in conn.store_keys() {
                // A watched key passed the store's key rule already, so the
                // update cannot be refused.
                let _ = conn.store().update(&key, |room: &mut RoomState| {
                    room.users.remove(&me);
                });
            }
        })
}

/// The hub of the example.
pub fn hub() -> Hub {
    router().build()
}
