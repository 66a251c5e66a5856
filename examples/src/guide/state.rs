//! State Management: room state in the hub's keyed store. Joining updates
//! the room and watches it through a projection: the store keeps every
//! member and message count, the watchers get `ROOM_STATE_UPDATE`
//! `{roomId, userCount, latestMessages}` on every change. A member may
//! close the room: the store removes it and every watcher receives
//! `$sb:state-removed` (docs/PROTOCOL.md §8.3). A disconnect removes the
//! user (the watch ends by itself). On the server side, a subscriber to the
//! store's room changes keeps a directory of open rooms, answered by
//! `LIST_ROOMS`.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use signalbox::{Ctx, Error, Hub, Router, TopicPattern, message, validate};
use signalbox::{Projection, StateChanges};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// `CLOSE_ROOM {roomId}`: a member removes the room's state.
#[derive(Debug, Serialize, Deserialize)]
pub struct CloseRoom {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
}
message!(CloseRoom = "CLOSE_ROOM");

/// `LIST_ROOMS`: a request for the open rooms.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ListRooms {}
message!(ListRooms = "LIST_ROOMS");

/// `ROOM_LIST {rooms: {roomId: userCount}}`: the answer to `LIST_ROOMS`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RoomList {
    /// Open rooms and how many users each has.
    pub rooms: BTreeMap<String, usize>,
}
message!(RoomList = "ROOM_LIST");

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

/// A room's state as stored: everything the server needs.
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
message!(RoomState = "ROOM_STATE");

/// A room as its watchers see it: derived from [`RoomState`] by
/// [`room_view`] at every change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoomView {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// How many users are in it.
    #[serde(rename = "userCount")]
    pub user_count: usize,
    /// Its last [`KEEP_MESSAGES`] messages.
    #[serde(rename = "latestMessages")]
    pub latest_messages: Vec<RoomMessage>,
}
message!(RoomView = "ROOM_STATE_UPDATE");

/// The projection every watch of a room uses (made once, shared by every
/// watch, so a change is projected once and encoded once per codec).
pub fn room_view() -> Projection<RoomState> {
    Projection::new(|room: &RoomState| RoomView {
        room_id: room.room_id.clone(),
        user_count: room.users.len(),
        latest_messages: room.latest_messages.clone(),
    })
}

/// The open rooms, kept by [`keep_directory`] from the store's changes.
#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<Mutex<BTreeMap<String, usize>>>);

impl Directory {
    /// The rooms now open and their user counts.
    pub fn rooms(&self) -> BTreeMap<String, usize> {
        self.0.lock().clone()
    }
}

const ROOM_PREFIX: &str = "room:";

fn key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// Rooms whose state lives in the store. `LIST_ROOMS` answers from the
/// [`Directory`] the application registers with `with_state`: the router
/// declares it with `needs`, so a hub built without one fails at startup
/// instead of answering INTERNAL to the first `LIST_ROOMS`.
pub fn router() -> Router {
    let view = room_view();
    Router::new()
        .needs::<Directory>()
        .on(move |ctx: Ctx<JoinRoom>| {
            let view = view.clone();
            async move {
                let JoinRoom { room_id, username } = ctx.payload();
                let key = key(room_id);
                ctx.store().watch_with(&ctx, &key, &view)?;
                let me = ctx.id().to_owned();
                ctx.store().update(&key, |room: &mut RoomState| {
                    room.room_id.clone_from(room_id);
                    room.users.insert(me, username.clone());
                })?;
                Ok(())
            }
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
        .on(|ctx: Ctx<CloseRoom>| async move {
            let key = key(&ctx.payload().room_id);
            if !ctx.store_keys().contains(&key) {
                return Err(Error::permission_denied("join the room first"));
            }
            ctx.store().remove(&key)?;
            Ok(())
        })
        .rpc(|ctx: Ctx<ListRooms>| async move {
            Ok(RoomList {
                rooms: ctx.state::<Directory>()?.rooms(),
            })
        })
        .on_close(|conn, _| async move {
            let me = conn.id().to_owned();
            for key in conn.store_keys() {
                // Only a room still there loses the user: a closed room is
                // not brought back by its members leaving.
                let _ = conn.store().try_update(&key, |room: Option<&RoomState>| {
                    let mut room = room
                        .cloned()
                        .ok_or_else(|| Error::not_found("room closed"))?;
                    room.users.remove(&me);
                    Ok(room)
                });
            }
        })
}

/// Follows the store's room changes into `directory` until the
/// subscription ends (its hub dropped). A server-side subscriber: it may
/// lag behind a burst of changes, losing intermediate values but never a
/// room's latest ([`StateChanges`]).
pub async fn keep_directory(mut changes: StateChanges<RoomState>, directory: Directory) {
    while let Some(change) = changes.recv().await {
        let room = change.key.trim_start_matches(ROOM_PREFIX).to_owned();
        let mut rooms = directory.0.lock();
        match change.value {
            Some(state) => rooms.insert(room, state.users.len()),
            None => rooms.remove(&room),
        };
    }
}

/// The hub of the example, with its directory kept by a task (call within
/// a Tokio runtime).
pub fn hub() -> Hub {
    let directory = Directory::default();
    let hub = router().with_state(directory.clone()).build();
    let changes = hub
        .store()
        .subscribe::<RoomState>(TopicPattern::prefix(ROOM_PREFIX));
    tokio::spawn(keep_directory(changes, directory));
    hub
}
