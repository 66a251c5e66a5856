//! The chat example (docs/PROTOCOL.md §9): rooms are topics, members get every
//! message of their rooms, each in its own codec.
//!
//! | type | direction | payload |
//! |---|---|---|
//! | `JOIN_ROOM` | → | `{"roomId", "username"?}` |
//! | `USER_JOINED` | ← to the room, joiner included | `{"roomId", "userId", "username"?}` |
//! | `SEND_MESSAGE` | → | `{"roomId", "text"}` (text 1..=4096 characters) |
//! | `NEW_MESSAGE` | ← to every member, sender included | `{"roomId", "userId", "text", "timestamp"}` |
//! | `LEAVE_ROOM` | → | `{"roomId"}` |
//! | `USER_LEFT` | ← to the room, for a member announced by `USER_JOINED` | `{"roomId", "userId"}` |
//! | `ECHO` | → request, ← reply | any payload, returned byte for byte |
//! | `ROOM_MEMBERS` | ← to a joiner | `{"roomId", "members": [{"userId", "username"?}]}` |
//!
//! Rooms keep history and presence (docs/PROTOCOL.md §8): a joiner first
//! gets the room's latest [`RECENT`] messages, then the member list; a
//! client that reconnects resumes its rooms with nothing lost within the
//! history window ([`HISTORY`]).

use serde::{Deserialize, Serialize};
use signalbox::transport::Close;
use signalbox::{
    Config, ConnectionHandle, Ctx, Error, HistoryLimits, Hub, HubBuilder, PublishOptions, Router,
    SubscribeOptions, TopicPattern, message, validate,
};
use signalbox_ws::{HealthPaths, ServerError, WsServer, WsServerBuilder};
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// The chat web page, served at `/`.
pub const INDEX_HTML: &[u8] = include_bytes!("../web/index.html");
/// The page's client library, served at `/signalbox.js`: the committed
/// browser bundle of the TypeScript client (clients/typescript, one ES
/// module with MessagePack included), so that the chat needs no npm. Its
/// own tests check it against its sources (`npm run bundle` rebuilds it).
pub const SIGNALBOX_JS: &[u8] =
    include_bytes!("../../clients/typescript/dist/signalbox.browser.js");

/// Room ids have 1..=128 characters.
const ROOM_ID_CHARS: std::ops::RangeInclusive<usize> = 1..=128;

/// `JOIN_ROOM`: become a member of a room (a no-op for a member).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JoinRoom {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// A display name, passed on as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}
message!(JoinRoom = "JOIN_ROOM", |m| validate::chars(
    "roomId",
    &m.room_id,
    ROOM_ID_CHARS
));

/// `USER_JOINED`: someone (perhaps the receiver) joined a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UserJoined {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// The joiner's connection id.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// The joiner's display name, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}
message!(UserJoined = "USER_JOINED");

/// `SEND_MESSAGE`: say something in a room the sender is a member of.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SendMessage {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// The text, 1..=4096 Unicode scalar values.
    pub text: String,
}
message!(SendMessage = "SEND_MESSAGE", |m| {
    validate::chars("roomId", &m.room_id, ROOM_ID_CHARS)?;
    validate::chars("text", &m.text, 1..=4096)
});

/// `NEW_MESSAGE`: a message said in a room, to every member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct NewMessage {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// The sender's connection id (also in `meta.clientId`).
    #[serde(rename = "userId")]
    pub user_id: String,
    /// The text.
    pub text: String,
    /// When the server relayed it, ms since the Unix epoch.
    pub timestamp: u64,
}
message!(NewMessage = "NEW_MESSAGE");

/// `LEAVE_ROOM`: stop being a member (a no-op for a non-member).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LeaveRoom {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
}
message!(LeaveRoom = "LEAVE_ROOM", |m| validate::chars(
    "roomId",
    &m.room_id,
    ROOM_ID_CHARS
));

/// `USER_LEFT`: someone left a room, or disconnected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UserLeft {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// The leaver's connection id.
    #[serde(rename = "userId")]
    pub user_id: String,
}
message!(UserLeft = "USER_LEFT");

/// One member of a room, as [`RoomMembers`] lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Member {
    /// The member's connection id.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// The member's display name, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// `ROOM_MEMBERS`: who is in a room (on every node), sent to a joiner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct RoomMembers {
    /// The room.
    #[serde(rename = "roomId")]
    pub room_id: String,
    /// Its members, the joiner included.
    pub members: Vec<Member>,
}
message!(RoomMembers = "ROOM_MEMBERS");

/// Messages a joiner gets from the room's history.
pub const RECENT: usize = 50;

/// How much history each room keeps: what a reconnecting client can
/// recover. 10,000 messages or 5 minutes, whichever is less.
pub const HISTORY: HistoryLimits = HistoryLimits::DEFAULT.with_len(10_000);

/// The rooms this connection announced itself in (one `USER_JOINED` per
/// room and connection, also when a resume restored the subscription).
#[derive(Default)]
struct Announced(BTreeSet<String>);

signalbox::opaque_message!(
    /// `ECHO`: a request answered with exactly its payload (or none).
    pub Echo = "ECHO"
);

/// The topic of a room. Room ids may hold any character; topic names only a
/// few, so everything else is percent-encoded (reversibly: see
/// [`room_of_topic`]).
pub fn room_topic(room_id: &str) -> String {
    let mut topic = String::with_capacity(5 + room_id.len());
    topic.push_str("room:");
    for b in room_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            topic.push(char::from(b));
        } else {
            topic.push_str(&format!("%{b:02X}"));
        }
    }
    topic
}

/// The room id of a topic made by [`room_topic`]; `None` for other topics.
pub fn room_of_topic(topic: &str) -> Option<String> {
    let encoded = topic.strip_prefix("room:")?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2)?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn join(ctx: Ctx<JoinRoom>) -> Result<(), Error> {
    let JoinRoom { room_id, username } = ctx.payload();
    let topic = room_topic(room_id);
    // Subscribe first, so that the joiner gets its own USER_JOINED, after
    // the room's recent messages.
    let info = serde_json::json!({ "username": username });
    ctx.subscribe_with(
        &topic,
        SubscribeOptions::default().last(RECENT).presence(info),
    )?;
    if !ctx.update_data(|a: &mut Announced| a.0.insert(topic.clone())) {
        return Ok(());
    }
    let joined = UserJoined {
        room_id: room_id.clone(),
        user_id: ctx.client_id().to_owned(),
        username: username.clone(),
    };
    ctx.publish(&topic, &joined).await?;
    let members = ctx
        .hub()
        .presence(&topic)
        .await?
        .into_iter()
        .map(|entry| Member {
            user_id: entry.client_id,
            username: entry.info["username"].as_str().map(str::to_owned),
        })
        .collect();
    ctx.send(&RoomMembers {
        room_id: room_id.clone(),
        members,
    })?;
    Ok(())
}

async fn send(ctx: Ctx<SendMessage>) -> Result<(), Error> {
    let SendMessage { room_id, text } = ctx.payload();
    let topic = room_topic(room_id);
    if !ctx.is_subscribed(&topic) {
        return Err(Error::permission_denied(format!(
            "join room {room_id:?} before sending to it"
        )));
    }
    let message = NewMessage {
        room_id: room_id.clone(),
        user_id: ctx.client_id().to_owned(),
        text: text.clone(),
        timestamp: now_ms(),
    };
    ctx.publish(&topic, &message).await?;
    Ok(())
}

async fn leave(ctx: Ctx<LeaveRoom>) -> Result<(), Error> {
    let room_id = &ctx.payload().room_id;
    let topic = room_topic(room_id);
    // USER_LEFT answers a USER_JOINED: a connection that only resumed the
    // room (docs/PROTOCOL.md §9) leaves it silently.
    let announced = ctx.update_data(|a: &mut Announced| a.0.remove(&topic));
    if ctx.unsubscribe(&topic) && announced {
        let left = UserLeft {
            room_id: room_id.clone(),
            user_id: ctx.client_id().to_owned(),
        };
        ctx.publish(&topic, &left).await?;
    }
    Ok(())
}

/// A disconnect leaves every room it was announced in (the connection still
/// holds its topics when the close hook runs); rooms it only resumed are
/// left silently, as by `LEAVE_ROOM`.
async fn left_everything(conn: ConnectionHandle, _close: Close) {
    let announced = conn.update_data(|a: &mut Announced| std::mem::take(&mut a.0));
    for topic in conn.topics() {
        if !announced.contains(&topic) {
            continue;
        }
        let Some(room_id) = room_of_topic(&topic) else {
            continue;
        };
        let left = UserLeft {
            room_id,
            user_id: conn.id().to_owned(),
        };
        if let Err(error) = conn
            .publish_with(&topic, &left, PublishOptions::excluding_sender())
            .await
        {
            tracing::warn!(%error, topic, "USER_LEFT not published");
        }
    }
}

/// The path of the chat's WebTransport sessions on its QUIC port
/// (docs/PROTOCOL.md §5).
pub const WEBTRANSPORT_PATH: &str = "/wt";

/// Where the page asks for the WebTransport endpoint (docs/PROTOCOL.md §9),
/// on the listener that serves it.
pub const WEBTRANSPORT_INFO_PATH: &str = "/webtransport";

/// The answer to `GET /webtransport` (docs/PROTOCOL.md §9): how a page of
/// this origin reaches the chat over WebTransport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebTransportInfo {
    /// The QUIC (UDP) port, on the page's host.
    pub port: u16,
    /// The session path.
    pub path: String,
    /// Base64 SHA-256 of the certificate (DER), for
    /// `serverCertificateHashes`: present for the chat's self-signed
    /// certificate, absent for one an operator gave (trusted by the Web PKI).
    #[serde(
        rename = "certificateHashes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_hashes: Option<Vec<String>>,
}

impl WebTransportInfo {
    /// The endpoint at `port` and `path`; `certificate_sha256` is the
    /// SHA-256 of a self-signed certificate, `None` for a CA-issued one.
    pub fn new(port: u16, path: &str, certificate_sha256: Option<&[u8]>) -> Self {
        use base64::Engine as _;
        WebTransportInfo {
            port,
            path: path.to_owned(),
            certificate_hashes: certificate_sha256
                .map(|hash| vec![base64::engine::general_purpose::STANDARD.encode(hash)]),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of a number, strings and a list serializes without fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Adds `GET /webtransport` answering `info` to the chat's HTTP listener.
pub fn serve_webtransport_info(
    builder: WsServerBuilder,
    info: &WebTransportInfo,
) -> WsServerBuilder {
    builder.static_file(WEBTRANSPORT_INFO_PATH, "application/json", info.to_json())
}

/// The chat router.
pub fn router() -> Router {
    Router::new()
        .on(join)
        .on(send)
        .on(leave)
        .rpc(|ctx: Ctx<Echo>| async move { Ok::<_, Error>(ctx.into_payload()) })
        .on_close(left_everything)
}

/// The chat hub's configuration: the defaults, with topic names that can
/// hold any percent-encoded room id.
pub fn config() -> Config {
    let mut config = Config::default();
    config.topics.extra_chars.push('%');
    config.topics.max_name_len = config.topics.max_name_len.max(5 + 128 * 4 * 3);
    config
}

/// The chat hub, in memory.
pub fn hub() -> Hub {
    hub_with(config())
}

/// The chat hub with `config` (tests shorten timings).
pub fn hub_with(config: Config) -> Hub {
    builder(config).build()
}

/// The chat hub's builder: the router, `config`, and history and presence
/// for rooms. Add a broker to it to span nodes.
pub fn builder(config: Config) -> HubBuilder {
    builder_with(config, false)
}

/// Like [`builder`]; with `presence_events` rooms also send their members
/// `$sb:join` / `$sb:leave` (docs/PROTOCOL.md §8.2).
pub fn builder_with(config: Config, presence_events: bool) -> HubBuilder {
    let builder = Hub::builder(router())
        .config(config)
        .history(TopicPattern::prefix("room:"), HISTORY);
    if presence_events {
        builder.presence_events(TopicPattern::prefix("room:"))
    } else {
        builder.presence(TopicPattern::prefix("room:"))
    }
}

/// The WebSocket listener of the chat: the page at `/`, its client library
/// at `/signalbox.js`, WebSocket at `/ws`, liveness at `/healthz` and
/// readiness at `/readyz` ([`HealthPaths`]). The chat binary adds
/// `/webtransport` ([`serve_webtransport_info`]).
pub async fn ws_server(hub: Hub, addr: &str) -> Result<WsServer, ServerError> {
    ws_builder(hub).bind(addr).await
}

/// [`ws_server`] before it binds, for more settings (TLS:
/// [`WsServerBuilder::identity`]; the page then picks `wss://` by itself).
pub fn ws_builder(hub: Hub) -> WsServerBuilder {
    WsServer::builder(hub)
        .path("/ws")
        .health(HealthPaths::default())
        .static_file("/", "text/html; charset=utf-8", INDEX_HTML)
        .static_file("/index.html", "text/html; charset=utf-8", INDEX_HTML)
        .static_file(
            "/signalbox.js",
            "text/javascript; charset=utf-8",
            SIGNALBOX_JS,
        )
}

#[cfg(test)]
mod typescript;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_topics_round_trip_and_pass_the_topic_rules() {
        let config = config();
        for room in [
            "lobby",
            "a b/c%d",
            "ünïcødé 🚀",
            &"x".repeat(128),
            &"🚀".repeat(128),
        ] {
            let topic = room_topic(room);
            config.topics.check(&topic).unwrap();
            assert_eq!(room_of_topic(&topic).as_deref(), Some(room));
        }
        assert_eq!(room_of_topic("other"), None);
        assert_eq!(room_of_topic("room:%4"), None);
    }

    #[test]
    fn the_webtransport_info_names_port_path_and_the_hash_in_base64_only_when_given() {
        let hash: Vec<u8> = (0u8..32).collect();
        let info = WebTransportInfo::new(4433, WEBTRANSPORT_PATH, Some(&hash));
        let json: serde_json::Value = serde_json::from_slice(&info.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "port": 4433,
                "path": "/wt",
                "certificateHashes": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="],
            })
        );
        let info = WebTransportInfo::new(443, "/x", None);
        let json: serde_json::Value = serde_json::from_slice(&info.to_json()).unwrap();
        assert_eq!(json, serde_json::json!({ "port": 443, "path": "/x" }));
    }
}
