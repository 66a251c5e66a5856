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
                .update(&key, |s: &mut RoomState| s.members.push(me))?;
            Ok(())
        })
        .on_close(|conn, _| async move {
            let id = conn.id().to_owned();
            for key in conn.store_keys() {
                conn.store()
                    .update(&key, |s: &mut RoomState| s.members.retain(|m| *m != id))
                    .expect("watched keys are valid");
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
                    h.store()
                        .update("room:busy", |s: &mut RoomState| {
                            s.members.push(format!("w{w}-{i}"))
                        })
                        .unwrap();
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

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
struct Lobby {
    owner: String,
}
message!(Lobby = "LOBBY");

#[derive(Serialize, Deserialize, Debug, Clone)]
struct CreateLobby {
    name: String,
}
message!(CreateLobby = "CREATE_LOBBY");

/// Writes first, watches second: the order that left orphaned state when
/// only `watch` checked keys.
fn lobbies() -> Router {
    Router::new().on(|ctx: Ctx<CreateLobby>| async move {
        let key = format!("lobby:{}", ctx.payload().name);
        if ctx.store().get::<Lobby>(&key).is_some() {
            return Err(signalbox::Error::new(
                ErrorCode::AlreadyExists,
                "lobby exists",
            ));
        }
        ctx.store().set(
            &key,
            Lobby {
                owner: ctx.id().to_owned(),
            },
        )?;
        ctx.store().watch::<Lobby>(&ctx, &key)?;
        Ok(())
    })
}

#[tokio::test]
async fn a_bad_key_is_refused_by_the_write_and_leaves_nothing_stored() {
    let hub = TestHub::new(lobbies());
    let mut c = hub.connect("json").await;
    for _ in 0..2 {
        c.send(&CreateLobby {
            name: "my lobby".into(),
        })
        .await;
        let (err, _) = c.expect_error("ERROR").await;
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
        assert!(err.message.contains("state key"), "{err:?}");
        assert_eq!(hub.hub().store().version("lobby:my lobby"), 0);
        assert_eq!(hub.hub().store().get::<Lobby>("lobby:my lobby"), None);
    }
    // A good key still works.
    c.send(&CreateLobby {
        name: "mine".into(),
    })
    .await;
    assert!(!c.expect::<Lobby>().await.0.owner.is_empty());
    assert_eq!(hub.hub().store().version("lobby:mine"), 1);
}

#[tokio::test]
async fn an_update_that_changes_nothing_neither_bumps_nor_pushes() {
    let hub = TestHub::new(rooms());
    let mut a = hub.connect("json").await;
    a.send(&Enter {
        room: "calm".into(),
    })
    .await;
    let (s1, _) = a.expect::<RoomState>().await;
    let store = hub.hub().store();
    assert_eq!(store.version("room:calm"), 1);

    let (same, written) = store.update("room:calm", |_: &mut RoomState| {}).unwrap();
    assert_eq!(same, s1);
    assert!(!written.changed);
    assert_eq!((written.version, written.sent), (1, 0));
    let (_, written) = store
        .update("room:calm", |s: &mut RoomState| {
            s.members.retain(|m| !m.is_empty())
        })
        .unwrap();
    assert!(!written.changed);
    assert!(!store.set("room:calm", s1.clone()).unwrap().changed);
    assert_eq!(store.version("room:calm"), 1);
    a.expect_silence(Duration::from_millis(200)).await;

    // A real change still bumps and pushes.
    let (_, written) = store
        .update("room:calm", |s: &mut RoomState| s.members.push("x".into()))
        .unwrap();
    assert!(written.changed);
    assert_eq!((written.version, written.sent), (2, 1));
    assert_eq!(store.version("room:calm"), 2);
    assert_eq!(a.expect::<RoomState>().await.0.members.len(), 2);
}

#[tokio::test]
async fn every_call_taking_a_key_refuses_a_bad_one_and_names_it_a_state_key() {
    let hub = TestHub::new(rooms());
    let store = hub.hub().store();
    let long = "k".repeat(store.key_rule().max_len + 1);
    for bad in ["my lobby", "", long.as_str(), "caf\u{e9}"] {
        let errs = [
            store.set(bad, RoomState::default()).unwrap_err(),
            store.update(bad, |_: &mut RoomState| {}).unwrap_err(),
            store
                .try_update(
                    bad,
                    |_: Option<&RoomState>| -> Result<_, signalbox::Error> {
                        panic!("the closure does not run for a bad key")
                    },
                )
                .unwrap_err(),
            store.remove(bad).unwrap_err(),
        ];
        for err in errs {
            assert_eq!(*err.code(), ErrorCode::InvalidArgument, "{bad:?}");
            assert!(err.message().starts_with("state key"), "{err:?}");
        }
        assert_eq!(store.version(bad), 0);
    }
    let at_limit = "k".repeat(store.key_rule().max_len);
    assert!(store.set(&at_limit, RoomState::default()).unwrap().changed);
    assert!(store.remove(&at_limit).unwrap());

    // The rule is the hub's to configure.
    let mut config = signalbox::Config::default();
    config.store_keys.extra_chars.push(' ');
    let spaced = TestHub::with_config(rooms(), config);
    let store = spaced.hub().store();
    assert!(store.set("my lobby", RoomState::default()).unwrap().changed);
    assert!(store.set("my\tlobby", RoomState::default()).is_err());
}

#[tokio::test]
async fn a_refused_try_update_leaves_value_and_watchers_untouched() {
    let hub = TestHub::new(rooms());
    let mut a = hub.connect("json").await;
    a.send(&Enter {
        room: "kept".into(),
    })
    .await;
    let (s1, _) = a.expect::<RoomState>().await;
    let store = hub.hub().store();

    let err = store
        .try_update("room:kept", |current: Option<&RoomState>| {
            let mut next = current.cloned().unwrap_or_default();
            next.members.push("intruder".into());
            if next.members.len() > 1 {
                return Err(signalbox::Error::permission_denied("room is full"));
            }
            Ok(next)
        })
        .unwrap_err();
    assert_eq!(*err.code(), ErrorCode::PermissionDenied);
    assert_eq!(store.get::<RoomState>("room:kept"), Some(s1.clone()));
    assert_eq!(store.version("room:kept"), 1);
    a.expect_silence(Duration::from_millis(200)).await;

    // Accepted but equal: no push either; a real change is pushed.
    let (_, written) = store
        .try_update("room:kept", |current: Option<&RoomState>| {
            Ok(current.cloned().unwrap_or_default())
        })
        .unwrap();
    assert!(!written.changed);
    a.expect_silence(Duration::from_millis(200)).await;
    let (next, written) = store
        .try_update("room:kept", |current: Option<&RoomState>| {
            let mut next = current.cloned().unwrap_or_default();
            next.members.clear();
            Ok(next)
        })
        .unwrap();
    assert!(written.changed);
    assert_eq!((written.version, written.sent), (2, 1));
    assert_eq!(a.expect::<RoomState>().await.0, next);
}

#[test]
fn of_racing_creators_exactly_one_wins() {
    let hub = TestHub::new(Router::new());
    let store_hub = hub.hub().clone();
    for round in 0..20 {
        let key = format!("lobby:race-{round}");
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let (h, key, start) = (store_hub.clone(), key.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    h.store()
                        .try_update(&key, |current: Option<&Lobby>| match current {
                            Some(_) => Err(signalbox::Error::new(
                                ErrorCode::AlreadyExists,
                                "lobby exists",
                            )),
                            None => Ok(Lobby {
                                owner: format!("c{n}"),
                            }),
                        })
                        .map(|(lobby, _)| lobby.owner)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(*e.code(), ErrorCode::AlreadyExists);
            }
        }
        let stored = store_hub.store().get::<Lobby>(&key).unwrap();
        assert_eq!(&stored.owner, winners[0]);
        assert_eq!(store_hub.store().version(&key), 1);
    }
}
