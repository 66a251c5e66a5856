//! Measures what crossing nodes through Redis costs: delivery rate and
//! one-way latency (p50/p99) of a message published on one hub to a
//! subscriber on another, next to the same on a single hub, and the same
//! again on a topic whose history is kept in Redis.
//!
//! ```text
//! cargo run --release -p signalbox-redis --example cross_node [-- REDIS_URL]
//! cargo run --release -p signalbox-redis --example cross_node -- --cluster URL[,URL…]
//! ```
//!
//! Without a URL it starts a throwaway `redis-server` on a free loopback
//! port (and stops it at the end). `--cluster` measures against a running
//! Redis Cluster reached through the given startup URLs. For a `rediss://`
//! URL, `REDIS_CA_PEM` (and `REDIS_CLIENT_CERT`, `REDIS_CLIENT_KEY`) name
//! PEM files to trust and to present. Clients are in-memory (the core's test
//! harness), so the numbers are the router plus Redis, without a network
//! transport.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::Redis;
use serde::{Deserialize, Serialize};
use signalbox::testing::{TestClient, TestHub};
use signalbox::{Config, Ctx, HistoryLimits, Hub, Router, TopicPattern, message};
use signalbox_redis::{RedisBroker, RedisBrokerBuilder};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Join {
    topic: String,
}
message!(Join = "JOIN");

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Joined;
message!(Joined = "JOINED");

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Tick {
    seq: u64,
    sent_ns: u64,
    text: String,
}
message!(Tick = "TICK");

const RATE_MESSAGES: u64 = 50_000;
const PUBLISHERS: u64 = 16;
const LATENCY_MESSAGES: u64 = 5_000;
const LATENCY_GAP: Duration = Duration::from_micros(200);
/// The topic that keeps history (in Redis) in the last measurement.
const HISTORY_TOPIC: &str = "bench-history";

fn router() -> Router {
    Router::new().on(|ctx: Ctx<Join>| async move {
        ctx.subscribe(&ctx.payload().topic)?;
        ctx.reply(&Joined)
    })
}

/// A broker's builder for the measured Redis: `nodes` when measuring a
/// cluster, else the one server at `url`; with the TLS files named in the
/// environment.
fn builder(url: &str, nodes: &Option<Vec<String>>) -> RedisBrokerBuilder {
    let mut builder = match nodes {
        Some(nodes) => RedisBroker::cluster_builder(nodes.iter().cloned()),
        None => RedisBroker::builder(url),
    };
    let read = |var: &str| {
        std::env::var(var)
            .ok()
            .map(|path| std::fs::read(path).unwrap())
    };
    if let Some(ca) = read("REDIS_CA_PEM") {
        builder = builder.tls_ca_pem(ca);
    }
    if let (Some(cert), Some(key)) = (read("REDIS_CLIENT_CERT"), read("REDIS_CLIENT_KEY")) {
        builder = builder.tls_client_cert(cert, key);
    }
    builder
}

fn config() -> Config {
    let mut config = Config::default();
    config.outbound_queue = 1 << 20;
    config.outbound_queue_bytes = 1 << 30;
    config.rate_limit = None;
    config
}

/// Joins `topic`; on a topic with history, also reads the
/// `$sb:subscribed` notice (which may come before or after the reply).
async fn subscriber(hub: &TestHub, topic: &str) -> TestClient {
    let mut c = hub.connect("msgpack").await;
    c.send(&Join {
        topic: topic.into(),
    })
    .await;
    let history = topic == HISTORY_TOPIC;
    let (mut joined, mut notice) = (false, !history);
    while !(joined && notice) {
        match c.recv().await.expect("an answer").ty.as_str() {
            "JOINED" => joined = true,
            signalbox::codec::vocab::SUBSCRIBED => notice = true,
            other => panic!("unexpected {other}"),
        }
    }
    c
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Measured {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Publishes from `from` to a subscriber on `to`: first as fast as
/// `PUBLISHERS` tasks can, then paced, one at a time, for latency.
async fn measure(
    from: &Hub,
    to: &TestHub,
    topic: &str,
    wait_subscribed: impl Fn() -> bool,
) -> Measured {
    let mut sub = subscriber(to, topic).await;
    while !wait_subscribed() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let epoch = Arc::new(Instant::now());
    let text = "x".repeat(64);

    // Rate.
    let started = Instant::now();
    let per_task = RATE_MESSAGES / PUBLISHERS;
    let mut tasks = Vec::new();
    for t in 0..PUBLISHERS {
        let hub = from.clone();
        let topic = topic.to_owned();
        let text = text.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let tick = Tick {
                    seq: t * per_task + i,
                    sent_ns: 0,
                    text: text.clone(),
                };
                hub.publish(&topic, &tick).await.expect("published");
            }
        }));
    }
    let total = per_task * PUBLISHERS;
    for _ in 0..total {
        sub.recv_raw().await.expect("a tick");
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }

    // Latency: paced so that no queue builds up; the subscriber reads in
    // its own task, so a publish waiting on Redis does not delay it.
    let clock = epoch.clone();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(LATENCY_MESSAGES as usize);
        for _ in 0..LATENCY_MESSAGES {
            let (got, _) = sub.expect::<Tick>().await;
            latencies.push(clock.elapsed().as_nanos() as u64 - got.sent_ns);
        }
        latencies
    });
    for seq in 0..LATENCY_MESSAGES {
        let tick = Tick {
            seq,
            sent_ns: epoch.elapsed().as_nanos() as u64,
            text: text.clone(),
        };
        from.publish(topic, &tick).await.expect("published");
        tokio::time::sleep(LATENCY_GAP).await;
    }
    let mut latencies = receiver.await.unwrap();
    latencies.sort_unstable();
    Measured {
        rate,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodes: Option<Vec<String>> = match args.as_slice() {
        [flag, list] if flag == "--cluster" => Some(list.split(',').map(str::to_owned).collect()),
        _ => None,
    };
    let redis = Redis::start(if nodes.is_some() {
        Some(String::new())
    } else {
        args.first().cloned()
    });

    // One node, no broker.
    let single = TestHub::from_builder(Hub::builder(router()).config(config()));
    let local = measure(single.hub(), &single, "bench", || true).await;

    // One node with the Redis broker: local delivery plus a PUBLISH.
    let solo = builder(&redis.1, &nodes)
        .node_id("solo")
        .prefix("bench-solo:")
        .build()
        .unwrap();
    let solo_hub =
        TestHub::from_builder(Hub::builder(router()).config(config()).broker(solo.clone()));
    assert!(
        solo.wait_connected(Duration::from_secs(5)).await,
        "Redis reachable"
    );
    let with_broker = measure(solo_hub.hub(), &solo_hub, "bench", || true).await;

    // Two nodes: publish on A, the subscriber on B.
    let a = builder(&redis.1, &nodes)
        .node_id("a")
        .prefix("bench:")
        .build()
        .unwrap();
    let b = builder(&redis.1, &nodes)
        .node_id("b")
        .prefix("bench:")
        .build()
        .unwrap();
    let hub_a = TestHub::from_builder(Hub::builder(router()).config(config()).broker(a.clone()));
    let hub_b = TestHub::from_builder(Hub::builder(router()).config(config()).broker(b.clone()));
    assert!(a.wait_connected(Duration::from_secs(5)).await);
    assert!(b.wait_connected(Duration::from_secs(5)).await);
    let b_probe = b.clone();
    let cross = measure(hub_a.hub(), &hub_b, "bench", move || {
        b_probe.is_subscribed("bench")
    })
    .await;

    // The same with history kept in Redis: each publish runs the publish
    // script (offset, stream, trim, PUBLISH).
    let ha = builder(&redis.1, &nodes)
        .node_id("ha")
        .prefix("bench:")
        .build()
        .unwrap();
    let hb = builder(&redis.1, &nodes)
        .node_id("hb")
        .prefix("bench:")
        .build()
        .unwrap();
    let with_history = |broker: &RedisBroker| {
        TestHub::from_builder(
            Hub::builder(router())
                .config(config())
                .broker(broker.clone())
                .history(
                    TopicPattern::exact(HISTORY_TOPIC),
                    HistoryLimits::new(1_000, Duration::from_secs(300)),
                ),
        )
    };
    let hub_ha = with_history(&ha);
    let hub_hb = with_history(&hb);
    assert!(ha.wait_connected(Duration::from_secs(5)).await);
    assert!(hb.wait_connected(Duration::from_secs(5)).await);
    let hb_probe = hb.clone();
    let history = measure(hub_ha.hub(), &hub_hb, HISTORY_TOPIC, move || {
        hb_probe.is_subscribed(HISTORY_TOPIC)
    })
    .await;

    println!(
        "payload ~80 bytes, msgpack subscriber, {PUBLISHERS} concurrent publishers for the rate"
    );
    println!(
        "{:<34} {:>12} {:>10} {:>10}",
        "", "msgs/s", "p50 µs", "p99 µs"
    );
    for (name, r) in [
        ("single node (no broker)", &local),
        ("single node + Redis broker", &with_broker),
        ("cross-node via Redis (A -> B)", &cross),
        ("cross-node, history in Redis", &history),
    ] {
        println!(
            "{name:<34} {:>12.0} {:>10.1} {:>10.1}",
            r.rate, r.p50_us, r.p99_us
        );
    }
    println!(
        "added by crossing nodes: p50 +{:.1} µs, p99 +{:.1} µs",
        cross.p50_us - local.p50_us,
        cross.p99_us - local.p99_us
    );
    println!(
        "added by keeping history: p50 +{:.1} µs, p99 +{:.1} µs",
        history.p50_us - cross.p50_us,
        history.p99_us - cross.p99_us
    );
    solo.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
    ha.shutdown().await;
    hb.shutdown().await;
}
