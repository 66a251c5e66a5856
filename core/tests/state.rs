//! The keyed state store with watchers, and schema versioning.

use serde::{Deserialize, Serialize};
use signalbox::codec::{PayloadError, RawPayload};
use signalbox::testing::TestHub;
use signalbox::versioned::{self, Versioned};
use signalbox::{Ctx, ErrorCode, Router, TopicPattern, message, validate};
use signalbox::{Projection, StateRemoved};
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

/// The room as a projection pushes it: a count, not the members.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct RoomSize {
    #[serde(rename = "userCount")]
    user_count: usize,
    newest: Option<String>,
}
message!(RoomSize = "ROOM_SIZE");

/// `LOOK {room, whole}`: watch a room, whole or through the size projection.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Look {
    room: String,
    whole: bool,
}
message!(Look = "LOOK");

/// Watchers that only look (whole or projected), and the `rooms` entries.
fn lookers() -> Router {
    let size = Projection::new(|room: &RoomState| RoomSize {
        user_count: room.members.len(),
        newest: room.members.last().cloned(),
    });
    rooms().on(move |ctx: Ctx<Look>| {
        let size = size.clone();
        async move {
            let key = format!("room:{}", ctx.payload().room);
            if ctx.payload().whole {
                ctx.store().watch::<RoomState>(&ctx, &key)?;
            } else {
                ctx.store().watch_with(&ctx, &key, &size)?;
            }
            Ok(())
        }
    })
}

fn look(room: &str, whole: bool) -> Look {
    Look {
        room: room.into(),
        whole,
    }
}

#[tokio::test]
async fn a_projected_watch_gets_the_derived_value_now_and_at_every_change() {
    let hub = TestHub::new(lookers());
    let store = hub.hub().store();
    store
        .set(
            "room:p",
            RoomState {
                members: vec!["ann".into()],
            },
        )
        .unwrap();
    // Two projected watchers in two codecs, one whole-value watcher.
    let mut json = hub.connect("json").await;
    json.send(&look("p", false)).await;
    let mut msgpack = hub.connect("msgpack+gzip").await;
    msgpack.send(&look("p", false)).await;
    let mut whole = hub.connect("json").await;
    whole.send(&look("p", true)).await;
    let first = RoomSize {
        user_count: 1,
        newest: Some("ann".into()),
    };
    assert_eq!(json.expect::<RoomSize>().await.0, first);
    assert_eq!(msgpack.expect::<RoomSize>().await.0, first);
    assert_eq!(whole.expect::<RoomState>().await.0.members, ["ann"]);
    assert_eq!(store.watchers("room:p"), 3);

    let (_, written) = store
        .update("room:p", |r: &mut RoomState| r.members.push("bob".into()))
        .unwrap();
    assert_eq!(written.sent, 3);
    let second = RoomSize {
        user_count: 2,
        newest: Some("bob".into()),
    };
    assert_eq!(json.expect::<RoomSize>().await.0, second);
    assert_eq!(msgpack.expect::<RoomSize>().await.0, second);
    assert_eq!(whole.expect::<RoomState>().await.0.members, ["ann", "bob"]);

    // A value of another type under the key is not the projection's to
    // render: only the whole-value watcher gets it.
    let written = store.set("room:p", Lobby { owner: "x".into() }).unwrap();
    assert_eq!(written.sent, 1);
    assert_eq!(whole.expect::<Lobby>().await.0.owner, "x");
    json.expect_silence(Duration::from_millis(100)).await;
    msgpack.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn remove_tells_watchers_and_subscribers_and_the_watch_goes_on() {
    let hub = TestHub::new(lookers());
    let store = hub.hub().store();
    let mut changes = store.subscribe::<RoomState>(TopicPattern::prefix("room:"));
    let mut projected = hub.connect("json").await;
    projected.send(&look("gone", false)).await;
    let mut whole = hub.connect("msgpack").await;
    whole
        .send(&Enter {
            room: "gone".into(),
        })
        .await;
    assert_eq!(whole.expect::<RoomState>().await.0.members.len(), 1);
    assert_eq!(projected.expect::<RoomSize>().await.0.user_count, 1);
    let set = changes.recv().await.unwrap();
    assert_eq!((&*set.key, set.version), ("room:gone", 1));

    assert!(store.remove("room:gone").unwrap());
    let removed = StateRemoved {
        key: "room:gone".into(),
    };
    assert_eq!(whole.expect::<StateRemoved>().await.0, removed);
    assert_eq!(projected.expect::<StateRemoved>().await.0, removed);
    let change = changes.recv().await.unwrap();
    assert_eq!((&*change.key, change.version), ("room:gone", 1));
    assert!(change.value.is_none(), "a removal carries no value");
    assert_eq!(store.version("room:gone"), 0);
    assert_eq!(store.get::<RoomState>("room:gone"), None);
    // Nothing to remove: nobody is told.
    assert!(!store.remove("room:gone").unwrap());
    whole.expect_silence(Duration::from_millis(100)).await;
    assert!(changes.try_recv().is_none());

    // The watches go on: a new value is pushed again, from version 1.
    let (_, written) = store
        .update("room:gone", |r: &mut RoomState| {
            r.members.push("new".into())
        })
        .unwrap();
    assert_eq!((written.version, written.sent), (1, 2));
    assert_eq!(whole.expect::<RoomState>().await.0.members, ["new"]);
    assert_eq!(projected.expect::<RoomSize>().await.0.user_count, 1);
    assert_eq!(changes.recv().await.unwrap().version, 1);
}

#[tokio::test]
async fn subscribers_see_their_pattern_and_type_in_order_until_dropped() {
    let hub = TestHub::new(Router::new());
    let store = hub.hub().store();
    let mut rooms = store.subscribe::<RoomState>(TopicPattern::prefix("room:"));
    let mut one = store.subscribe::<RoomState>(TopicPattern::exact("room:a"));
    assert_eq!(store.subscriptions(), 2);
    // A subscriber that receives as the changes come sees each of them.
    let mut seen = Vec::new();
    let mut versions = Vec::new();
    for n in 0..3 {
        store
            .update("room:a", |r: &mut RoomState| {
                r.members.push(format!("a{n}"))
            })
            .unwrap();
        store
            .update("room:b", |r: &mut RoomState| {
                r.members.push(format!("b{n}"))
            })
            .unwrap();
        // Not covered: another prefix, another type, a write changing nothing.
        store
            .update("lobby:a", |r: &mut RoomState| r.members.push("x".into()))
            .unwrap();
        store
            .set(
                "room:c",
                Lobby {
                    owner: format!("{n}"),
                },
            )
            .unwrap();
        store.update("room:a", |_: &mut RoomState| {}).unwrap();
        while let Some(change) = rooms.try_recv() {
            assert_eq!(change.skipped, 0);
            let value = change.value.expect("a value");
            seen.push((change.key.to_string(), change.version, value.members.len()));
        }
        versions.extend(std::iter::from_fn(|| one.try_recv()).map(|c| c.version));
    }
    let expected: Vec<_> = (1..=3)
        .flat_map(|v| {
            [
                ("room:a".to_string(), v, v as usize),
                ("room:b".to_string(), v, v as usize),
            ]
        })
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(versions, [1, 2, 3]);

    // Dropping ends a subscription; unsubscribe does too.
    drop(rooms);
    assert_eq!(store.subscriptions(), 1);
    one.unsubscribe();
    assert_eq!(store.subscriptions(), 0);
    store
        .update("room:a", |r: &mut RoomState| r.members.push("late".into()))
        .unwrap();

    // A waiting subscriber wakes for a change, and ends when the store goes.
    let fresh = TestHub::new(Router::new());
    let hub2 = fresh.hub().clone();
    let changes = hub2
        .store()
        .subscribe::<RoomState>(TopicPattern::prefix("room:"));
    let reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        changes
            .into_stream()
            .map(|c| c.version)
            .collect::<Vec<_>>()
            .await
    });
    tokio::task::yield_now().await;
    hub2.store()
        .update("room:z", |r: &mut RoomState| r.members.push("z".into()))
        .unwrap();
    hub2.store()
        .update("room:z", |r: &mut RoomState| r.members.push("y".into()))
        .unwrap();
    drop(hub2);
    drop(fresh);
    let versions = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends with its store")
        .unwrap();
    assert!(
        versions == [1, 2] || versions == [2],
        "a reader sees the changes in order, at worst the latest only: {versions:?}"
    );
}

#[tokio::test]
async fn a_slow_subscriber_holds_at_most_its_capacity_and_keeps_the_latest_values() {
    let hub = TestHub::new(Router::new());
    let store = hub.hub().store();
    let mut slow = store.subscribe_with::<RoomState>(TopicPattern::prefix("room:"), 4);
    // Many changes of one key: one waits, the latest.
    for n in 0..1000 {
        store
            .update("room:one", |r: &mut RoomState| {
                r.members.push(n.to_string())
            })
            .unwrap();
    }
    assert_eq!(slow.pending(), 1);
    let change = slow.try_recv().unwrap();
    assert_eq!((change.version, change.skipped), (1000, 999));
    assert_eq!(change.value.unwrap().members.len(), 1000);

    // Changes of more keys than the capacity: the oldest are dropped.
    for k in 0..10 {
        store
            .update(&format!("room:k{k}"), |r: &mut RoomState| {
                r.members.push("x".into())
            })
            .unwrap();
        assert!(slow.pending() <= 4);
    }
    let keys: Vec<(String, u64)> = std::iter::from_fn(|| slow.try_recv())
        .map(|c| (c.key.to_string(), c.skipped))
        .collect();
    assert_eq!(
        keys,
        [
            ("room:k6".to_string(), 6),
            ("room:k7".to_string(), 0),
            ("room:k8".to_string(), 0),
            ("room:k9".to_string(), 0)
        ]
    );
    // A subscriber that keeps up loses nothing.
    store
        .update("room:one", |r: &mut RoomState| r.members.clear())
        .unwrap();
    let change = slow.recv().await.unwrap();
    assert_eq!((change.version, change.skipped), (1001, 0));
}
