//! Measures what keeping topic history costs in Redis memory: bytes per
//! kept publication for chat messages of about 100 bytes, published by
//! clients (so each carries its `clientId` and timestamp, as in an app).
//!
//! ```text
//! cargo run --release -p signalbox-redis --example history_memory [-- REDIS_URL]
//! ```
//!
//! Without a URL it starts a throwaway `redis-server` on a free loopback
//! port. It keeps `KEPT` publications in each of `TOPICS` topics, then
//! reads `MEMORY USAGE` of each topic's keys and the growth of
//! `used_memory` (`INFO memory`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::Redis;
use serde::{Deserialize, Serialize};
use signalbox::testing::TestHub;
use signalbox::{Config, Ctx, HistoryLimits, Hub, Router, TopicPattern, message};
use signalbox_redis::RedisBroker;
use std::time::Duration;

/// Publish `text` from `user` to `topic`.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Say {
    topic: String,
    user: String,
    text: String,
}
message!(Say = "SAY");

/// What subscribers receive: about 100 bytes as JSON.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct ChatMessage {
    user: String,
    text: String,
}
message!(ChatMessage = "CHAT_MESSAGE");

const KEPT: usize = 10_000;
const TOPICS: usize = 4;

fn router() -> Router {
    Router::new().on(|ctx: Ctx<Say>| async move {
        let Say { topic, user, text } = ctx.payload().clone();
        ctx.publish(&topic, &ChatMessage { user, text }).await?;
        Ok(())
    })
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

async fn memory_usage(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async::<Option<i64>>(conn)
        .await
        .unwrap()
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let redis = Redis::start(std::env::args().nth(1));
    let client = redis::Client::open(redis.1.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let broker = RedisBroker::builder(&redis.1)
        .prefix("mem:")
        .build()
        .unwrap();
    let mut config = Config::default();
    config.rate_limit = None;
    let hub = TestHub::from_builder(
        Hub::builder(router())
            .config(config)
            .broker(broker.clone())
            .history(
                TopicPattern::prefix("room:"),
                HistoryLimits::new(KEPT, Duration::from_secs(3600)),
            ),
    );
    assert!(broker.wait_connected(Duration::from_secs(5)).await);
    let before = used_memory(&mut conn).await;

    let text = "Are we still on for lunch tomorrow? I can book the place near the station.";
    let mut sample = None;
    for t in 0..TOPICS {
        let topic = format!("room:{t}");
        let mut c = hub.connect("json").await;
        // Twice what is kept: the figure is for a history at its limit.
        for i in 0..2 * KEPT {
            c.send(&Say {
                topic: topic.clone(),
                user: format!("user-{:04}", i % 1000),
                text: text.into(),
            })
            .await;
        }
        loop {
            let top = hub.hub().position(&topic).await.unwrap().unwrap().offset;
            if top == 2 * KEPT as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if sample.is_none() {
            let json = serde_json::to_vec(&ChatMessage {
                user: "user-0001".into(),
                text: text.into(),
            })
            .unwrap();
            let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
                .arg(format!("mem:history:{topic}"))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await
                .unwrap();
            sample = Some((json.len(), entries[0].1[1].len()));
        }
    }
    let after = used_memory(&mut conn).await;
    let mut stream = 0;
    let mut position = 0;
    for t in 0..TOPICS {
        stream += memory_usage(&mut conn, &format!("mem:history:room:{t}")).await;
        position += memory_usage(&mut conn, &format!("mem:position:room:{t}")).await;
    }
    let (json, frame) = sample.unwrap();
    let kept = (KEPT * TOPICS) as f64;
    println!(
        "{TOPICS} topics x {KEPT} kept publications (each topic published {} times)",
        2 * KEPT
    );
    println!("payload as JSON: {json} B; frame kept in Redis: {frame} B");
    println!(
        "MEMORY USAGE history streams: {stream} B = {:.0} B per kept publication",
        stream as f64 / kept
    );
    println!(
        "MEMORY USAGE position hashes: {} B per topic",
        position / TOPICS as i64
    );
    println!(
        "INFO used_memory grew {} B = {:.0} B per kept publication",
        after - before,
        (after - before) as f64 / kept
    );
    broker.shutdown().await;
}
