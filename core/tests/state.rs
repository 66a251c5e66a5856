//! The keyed state store with watchers, and schema versioning.

use serde::{Deserialize, Serialize};
use signalbox::codec::{PayloadError, RawPayload};
use signalbox::testing::TestHub;
use signalbox::versioned::{self, Versioned};
use signalbox::{Ctx, ErrorCode, Router, message, validate};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
struct RoomState {
    members: Vec<String>,
}
message!(RoomState = "ROOM_STATE");

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Enter {
    room: String,
}
message!(Enter = "ENTER");

fn rooms() -> Router {
    Router::new()
        .on(|ctx: Ctx<Enter>| async move {
            let key = format!("room:{}", ctx.payload().room);
            ctx.store().watch::<RoomState>(&ctx, &key)?;
            let me = ctx.id().to_owned();
            ctx.store()
                .update(&key, |s: &mut RoomState| s.members.push(me));
            Ok(())
        })
        .on_close(|conn, _| async move {
            let id = conn.id().to_owned();
            for key in conn.store_keys() {
                conn.store()
                    .update(&key, |s: &mut RoomState| s.members.retain(|m| *m != id));
            }
        })
}

#[tokio::test]
async fn watchers_get_the_current_value_then_every_change_and_leave_on_close() {
    let hub = TestHub::new(rooms());
    let mut a = hub.connect("json").await;
    a.send(&Enter { room: "r".into() }).await;
    let (s1, _) = a.expect::<RoomState>().await;
    assert_eq!(s1.members.len(), 1);

    let mut b = hub.connect("msgpack").await;
    b.send(&Enter { room: "r".into() }).await;
    // b first gets the value as it was, then the change it made.
    assert_eq!(b.expect::<RoomState>().await.0, s1);
    let (s2, _) = b.expect::<RoomState>().await;
    assert_eq!(s2.members.len(), 2);
    assert_eq!(a.expect::<RoomState>().await.0, s2);
    assert_eq!(hub.hub().store().watchers("room:r"), 2);
    assert_eq!(hub.hub().store().version("room:r"), 2);

    b.hang_up();
    let (s3, _) = a.expect::<RoomState>().await;
    assert_eq!(s3.members, s1.members);
    for _ in 0..100 {
        if hub.hub().store().watchers("room:r") == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(hub.hub().store().watchers("room:r"), 1);
    assert_eq!(hub.hub().store().get::<RoomState>("room:r"), Some(s3));
}

#[tokio::test]
async fn concurrent_updates_reach_every_watcher_in_one_order() {
    let hub = TestHub::new(rooms());
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = hub.connect("json").await;
        c.send(&Enter {
            room: "busy".into(),
        })
        .await;
        clients.push(c);
    }
    let store_hub = hub.hub().clone();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let h = store_hub.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    h.store().update("room:busy", |s: &mut RoomState| {
                        s.members.push(format!("w{w}-{i}"))
                    });
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let last = hub.hub().store().get::<RoomState>("room:busy").unwrap();
    for c in &mut clients {
        c.set_timeout(Duration::from_millis(200));
        let mut seen = None;
        while let Some(env) = c.recv().await {
            seen = Some(env.decode_payload::<RoomState>().unwrap());
        }
        assert_eq!(seen.as_ref(), Some(&last));
    }
}

#[derive(Deserialize)]
struct UserUpdateV1 {
    name: String,
    email: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserUpdate {
    name: String,
    email: String,
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
                    email: v1.email,
                    avatar: None,
                    version: 2,
                })
            }
            other => Err(versioned::unsupported::<Self>(other)),
        }
    }
    fn validate(&self) -> Result<(), signalbox::Invalid> {
        validate::email("email", &self.email)?;
        if let Some(url) = &self.avatar {
            validate::url("avatar", url)?;
        }
        Ok(())
    }
}
signalbox::versioned_message!(UserUpdate);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Updated {
    user: UserUpdate,
}
message!(Updated = "UPDATED");

#[tokio::test]
async fn a_v1_payload_reaches_the_v2_handler_migrated() {
    let router = Router::new().on(|ctx: Ctx<UserUpdate>| async move {
        ctx.reply(&Updated {
            user: ctx.payload().clone(),
        })
    });
    let hub = TestHub::new(router);
    for codec in ["json", "msgpack"] {
        let mut c = hub.connect(codec).await;
        let v1 = serde_json::json!({"name": "Ada", "email": "ada@example.org"});
        let frame = c
            .codec()
            .encode("USER_UPDATE", &Default::default(), Some(&v1))
            .unwrap();
        c.send_raw(frame).await;
        let (up, _) = c.expect::<Updated>().await;
        assert_eq!(
            up.user,
            UserUpdate {
                name: "Ada".into(),
                email: "ada@example.org".into(),
                avatar: None,
                version: 2
            }
        );

        let v2 = serde_json::json!({"name": "Ada", "email": "ada@example.org", "avatar": "https://x.org/a.png", "version": 2});
        let frame = c
            .codec()
            .encode("USER_UPDATE", &Default::default(), Some(&v2))
            .unwrap();
        c.send_raw(frame).await;
        assert_eq!(
            c.expect::<Updated>().await.0.user.avatar.as_deref(),
            Some("https://x.org/a.png")
        );

        for (bad, path) in [
            (
                serde_json::json!({"name": "Ada", "email": "ada@example.org", "version": 7}),
                "payload.version",
            ),
            (
                serde_json::json!({"name": "Ada", "email": "not-an-email"}),
                "payload.email",
            ),
            (
                serde_json::json!({"name": "Ada", "email": "a@b.co", "avatar": "nope", "version": 2}),
                "payload.avatar",
            ),
        ] {
            let frame = c
                .codec()
                .encode("USER_UPDATE", &Default::default(), Some(&bad))
                .unwrap();
            c.send_raw(frame).await;
            let (err, _) = c.expect_error("ERROR").await;
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert_eq!(
                err.details,
                Some(serde_json::json!({ "path": path })),
                "{bad}"
            );
        }
    }
}

/// The macros name nothing the caller's module could shadow.
mod shadowing {
    #[allow(dead_code)]
    type Result = ();
    #[allow(dead_code)]
    type Option = ();
    #[derive(serde::Serialize, serde::Deserialize)]
    #[allow(dead_code)]
    pub struct Plain {
        pub n: u32,
    }
    signalbox::message!(Plain = "PLAIN");
    signalbox::opaque_message!(pub Raw = "RAW");
}
