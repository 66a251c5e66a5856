//! Route dispatch and fan-out through the hub, over the in-memory
//! transport (no sockets: this is the router's own cost).
//!
//! - `dispatch/{1,100}_routes`: one request → reply round trip through the
//!   connection driver (decode, route lookup, payload decode, handler,
//!   encode, outbound queue, writer), with 1 or 100 routes registered.
//! - `fanout/1000_subscribers`: one publish to 1,000 subscribers in three
//!   codecs (encoded once per codec), until every subscriber has it.
//! - `history/{off,on}/{1,32}_subscribers`: one ~100-byte chat message
//!   published to a topic without and with in-memory history (positions,
//!   the kept entry, the per-subscriber gate), until every subscriber has
//!   it: the cost of history per publish.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use signalbox::testing::{TestClient, TestHub};
use signalbox::{Config, ConflictPolicy, Ctx, Router, message};
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize, Clone)]
struct Ping {
    n: u64,
    text: String,
}
message!(Ping = "PING");

#[derive(Serialize, Deserialize, Clone)]
struct Pong {
    n: u64,
    text: String,
}
message!(Pong = "PONG");

fn ping_router() -> Router {
    Router::new().on(|ctx: Ctx<Ping>| async move {
        let p = ctx.payload();
        ctx.reply(&Pong {
            n: p.n,
            text: p.text.clone(),
        })
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn config() -> Config {
    let mut config = Config::default();
    config.rate_limit = None;
    config
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    for routes in [1usize, 100] {
        let rt = runtime();
        let mut router = Router::new();
        for i in 0..routes {
            router = router
                .mount(&format!("r{i}."), ping_router(), ConflictPolicy::Error)
                .expect("distinct");
        }
        let target = format!("r{}.PING", routes / 2);
        let (hub, mut client) = rt.block_on(async {
            let hub = TestHub::with_config(router, config());
            let client = hub.connect("json").await;
            (hub, client)
        });
        let frame = format!(r#"{{"type":"{target}","payload":{{"n":7,"text":"hello, world"}}}}"#);
        group.bench_function(format!("{routes}_routes"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        client.send_raw(frame.clone().into_bytes()).await;
                        client.recv_raw().await.expect("reply");
                    }
                    start.elapsed()
                })
            })
        });
        drop(hub);
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    let subscribers = 1000;
    let (hub, mut clients) = rt.block_on(async {
        let hub = TestHub::with_config(ping_router(), config());
        let mut clients: Vec<TestClient> = Vec::new();
        for i in 0..subscribers {
            clients.push(hub.connect(["json", "msgpack", "json+gzip"][i % 3]).await);
        }
        tokio::task::yield_now().await;
        for conn in hub.hub().connections() {
            conn.subscribe("room").expect("subscribe");
        }
        (hub, clients)
    });
    let msg = Pong {
        n: 1,
        text: "x".repeat(200),
    };
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(subscribers as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("1000_subscribers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let n = hub.hub().publish("room", &msg).await.expect("publish");
                    assert_eq!(n, subscribers);
                    for c in &mut clients {
                        c.recv_raw().await.expect("delivered");
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn history(c: &mut Criterion) {
    let mut group = c.benchmark_group("history");
    group.measurement_time(Duration::from_secs(4));
    for with_history in [false, true] {
        for subscribers in [1usize, 32] {
            let rt = runtime();
            let (hub, mut clients) = rt.block_on(async {
                let mut builder = signalbox::Hub::builder(ping_router()).config(config());
                if with_history {
                    builder = builder.history(
                        signalbox::TopicPattern::prefix("room:"),
                        signalbox::HistoryLimits::default(),
                    );
                }
                let hub = TestHub::from_builder(builder);
                let mut clients: Vec<TestClient> = Vec::new();
                for _ in 0..subscribers {
                    clients.push(hub.connect("json").await);
                }
                tokio::task::yield_now().await;
                for conn in hub.hub().connections() {
                    conn.subscribe("room:lobby").expect("subscribe");
                }
                if with_history {
                    for c in &mut clients {
                        c.recv_raw().await.expect("$sb:subscribed");
                    }
                }
                (hub, clients)
            });
            let msg = Pong {
                n: 1,
                text: "a chat message of about a hundred bytes, as the chat burst sends".into(),
            };
            group.throughput(Throughput::Elements(subscribers as u64));
            let name = format!(
                "{}/{subscribers}_subscribers",
                if with_history { "on" } else { "off" }
            );
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            hub.hub()
                                .publish("room:lobby", &msg)
                                .await
                                .expect("publish");
                            for c in &mut clients {
                                c.recv_raw().await.expect("delivered");
                            }
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, dispatch, fanout, history);
criterion_main!(benches);
