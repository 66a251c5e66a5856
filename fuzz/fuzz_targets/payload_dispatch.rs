//! An envelope, then its payload into the handler's type, as the router
//! does it: serde messages through `Message::decode` and `validate`, a
//! versioned message with its migration, `Opaque` passed through and
//! re-encoded for both codecs (spliced or transcoded).
//!
//! The first byte picks the format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use signalbox::codec::{Format, PayloadError, RawPayload};
use signalbox::versioned::{self, Versioned};
use signalbox::{Message, Opaque, message, opaque_message, validate};
use signalbox_fuzz::{BoundedAlloc, frame, meta_with_id, plain, split};
use std::collections::BTreeMap;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

#[derive(Serialize, Deserialize, Debug)]
struct SendMessage {
    #[serde(rename = "roomId")]
    room_id: String,
    text: String,
}
message!(SendMessage = "SEND_MESSAGE", |m| {
    validate::chars("roomId", &m.room_id, 1..=128)?;
    validate::chars("text", &m.text, 1..=4096)
});

#[derive(Serialize, Deserialize, Debug)]
struct JoinRoom {
    #[serde(rename = "roomId")]
    room_id: String,
    username: Option<String>,
}
message!(JoinRoom = "JOIN_ROOM");

#[derive(Serialize, Deserialize, Debug)]
struct Ping;
message!(Ping = "PING");

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Shape {
    Circle { r: f64 },
    Rect { w: u32, h: u32 },
    Empty,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(untagged)]
enum Either {
    Num(i64),
    Text(String),
    List(Vec<Either>),
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Everything {
    a: Option<u64>,
    b: Vec<i32>,
    c: Option<f64>,
    d: Option<bool>,
    e: Option<serde_bytes::ByteBuf>,
    f: BTreeMap<String, String>,
    g: Option<Shape>,
    h: Option<Either>,
    i: Option<serde_json::Value>,
    j: Option<(u8, char, String)>,
}
message!(Everything = "EVERYTHING", |m| validate::range(
    "a",
    m.a.unwrap_or(0),
    0..=1000
));

#[derive(Deserialize)]
struct UserUpdateV1 {
    name: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct UserUpdate {
    name: String,
    avatar: Option<String>,
    version: u32,
}

impl Versioned for UserUpdate {
    const TYPE: &'static str = "USER_UPDATE";
    const VERSION: u32 = 2;
    fn migrate(version: u32, payload: Option<&RawPayload>) -> Result<Self, PayloadError> {
        match version {
            1 => {
                let v1: UserUpdateV1 = RawPayload::decode_opt(payload)?;
                Ok(UserUpdate {
                    name: v1.name,
                    avatar: None,
                    version: 2,
                })
            }
            other => Err(versioned::unsupported::<Self>(other)),
        }
    }
}
signalbox::versioned_message!(UserUpdate);

opaque_message!(Echo = "ECHO");

fn typed<M: Message>(payload: Option<&RawPayload>) {
    match M::decode(payload) {
        Ok(msg) => {
            let _ = msg.validate();
        }
        Err(err) => {
            // Every payload error names a field under `payload`.
            assert!(err.path.starts_with("payload"), "{err:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = split(data) else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Json
    } else {
        Format::MsgPack
    };
    let Ok(env) = plain(format).decode(frame(rest)) else {
        return;
    };
    let payload = env.payload.as_ref();
    typed::<SendMessage>(payload);
    typed::<JoinRoom>(payload);
    typed::<Ping>(payload);
    typed::<Everything>(payload);
    typed::<UserUpdate>(payload);
    let _ = RawPayload::decode_opt::<serde_json::Value>(payload);

    // Opaque: what the ECHO route does, answered in the sender's codec and
    // published to subscribers of the other one.
    let echo = Echo::decode(payload).expect("an opaque payload always decodes");
    let _ = Opaque::decode::<Vec<serde_json::Value>>(&echo.0);
    for target in [Format::Json, Format::MsgPack] {
        let codec = plain(target);
        let meta = meta_with_id("fuzz");
        let Ok(out) = echo.encode(&codec, &meta, false) else {
            continue;
        };
        let back = codec
            .decode(out.clone())
            .unwrap_or_else(|e| panic!("an encoded echo must decode: {e:?}\n{out:?}"));
        assert_eq!(back.ty, "ECHO");
        assert_eq!(back.payload.is_some(), payload.is_some());
        if target == format {
            assert_eq!(
                back.payload.as_ref().map(|p| p.as_bytes()),
                payload.map(|p| p.as_bytes())
            );
        }
    }
});
