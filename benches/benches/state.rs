//! The state store pushing a change to its watchers, over the in-memory
//! transport (no sockets: the store's and the hub's own cost).
//!
//! One update of a room (100 users, the last 10 messages) watched by 1,000
//! connections in three codecs, until every watcher has it:
//!
//! - `state/whole/1000_watchers`: the whole value pushed (encoded once per
//!   codec);
//! - `state/projection_shared/1000_watchers`: `{userCount, latestMessages}`
//!   through one `Projection` cloned into every watch (projected once,
//!   encoded once per codec);
//! - `state/projection_each/1000_watchers`: the same projection made
//!   separately for every watch (projected and encoded once per watcher).
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use signalbox::Projection;
use signalbox::testing::{TestClient, TestHub};
use signalbox::{Config, Router, message};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WATCHERS: usize = 1000;
const KEY: &str = "room:bench";

#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
struct Room {
    users: BTreeMap<String, String>,
    #[serde(rename = "latestMessages")]
    latest_messages: Vec<String>,
    posted: u64,
}
message!(Room = "ROOM");

#[derive(Serialize, Deserialize)]
struct RoomView {
    #[serde(rename = "userCount")]
    user_count: usize,
    #[serde(rename = "latestMessages")]
    latest_messages: Vec<String>,
}
message!(RoomView = "ROOM_VIEW");

fn view() -> Projection<Room> {
    Projection::new(|room: &Room| RoomView {
        user_count: room.users.len(),
        latest_messages: room.latest_messages.clone(),
    })
}

#[derive(Clone, Copy)]
enum Watch {
    Whole,
    Shared,
    Each,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn setup(rt: &tokio::runtime::Runtime, watch: Watch) -> (TestHub, Vec<TestClient>) {
    rt.block_on(async {
        let mut config = Config::default();
        config.rate_limit = None;
        let hub = TestHub::with_config(Router::new(), config);
        let store = hub.hub().store();
        let room = Room {
            users: (0..100)
                .map(|i| (format!("conn-{i}"), format!("user {i}")))
                .collect(),
            latest_messages: (0..10)
                .map(|i| format!("message {i} {}", "x".repeat(60)))
                .collect(),
            posted: 10,
        };
        store.set(KEY, room).expect("set");
        let mut clients = Vec::new();
        for i in 0..WATCHERS {
            clients.push(hub.connect(["json", "msgpack", "json+gzip"][i % 3]).await);
        }
        tokio::task::yield_now().await;
        let shared = view();
        for conn in hub.hub().connections() {
            match watch {
                Watch::Whole => store.watch::<Room>(&conn, KEY),
                Watch::Shared => store.watch_with(&conn, KEY, &shared),
                Watch::Each => store.watch_with(&conn, KEY, &view()),
            }
            .expect("watch");
        }
        // The current value each watcher gets first.
        for c in &mut clients {
            c.recv_raw().await.expect("current value");
        }
        (hub, clients)
    })
}

fn state(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(WATCHERS as u64));
    group.measurement_time(Duration::from_secs(5));
    for (name, watch) in [
        ("whole", Watch::Whole),
        ("projection_shared", Watch::Shared),
        ("projection_each", Watch::Each),
    ] {
        let (hub, mut clients) = setup(&rt, watch);
        group.bench_function(format!("{name}/1000_watchers"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let (_, written) = hub
                            .hub()
                            .store()
                            .update(KEY, |room: &mut Room| {
                                room.posted += 1;
                                room.latest_messages.remove(0);
                                room.latest_messages
                                    .push(format!("message {}", room.posted));
                            })
                            .expect("update");
                        assert_eq!(written.sent, WATCHERS);
                        for c in &mut clients {
                            c.recv_raw().await.expect("delivered");
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, state);
criterion_main!(benches);
