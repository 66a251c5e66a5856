//! Topic history, positions and presence kept in a real Redis shared by
//! several hubs: positions are the same on every node, a client resumes
//! on another node than the one it left, a flushed or restarted Redis
//! starts a new epoch (and one restarted from an older snapshot is
//! reported), presence spans nodes and a node that dies without
//! cleaning up leaves it within the configured expiry.

mod support;

use serde::{Deserialize, Serialize};
use serde_json::json;
use signalbox::codec::vocab;
use signalbox::testing::{TestClient, TestHub};
use signalbox::{
    Config, Ctx, HistoryLimits, Hub, Position, Router, SubscribeOptions, Subscribed, TopicPattern,
    message,
};
use signalbox_redis::RedisBroker;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::positions::{Said, position, resume, resumed, said};
use support::{RedisServer, eventually};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Join {
    topic: String,
    #[serde(default)]
    name: Option<String>,
}
message!(Join = "JOIN");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Leave {
    topic: String,
}
message!(Leave = "LEAVE");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Left;
message!(Left = "LEFT");

fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Join>| async move {
            let Join { topic, name } = ctx.payload();
            let mut options = SubscribeOptions::default();
            if let Some(name) = name {
                options = options.presence(json!({ "name": name }));
            }
            ctx.subscribe_with(topic, options).map(drop)
        })
        .on(|ctx: Ctx<Leave>| async move {
            ctx.unsubscribe(&ctx.payload().topic);
            ctx.reply(&Left)
        })
}

/// A node whose hub keeps history and presence for `room:*` in Redis.
struct Node {
    hub: TestHub,
    broker: RedisBroker,
}

impl Node {
    async fn start(url: &str, name: &str, prefix: &str, limits: HistoryLimits) -> Node {
        Node::start_with(support::broker(url, name, prefix), limits).await
    }

    async fn start_with(broker: RedisBroker, limits: HistoryLimits) -> Node {
        let mut config = Config::default();
        // Room for a replay of thousands of publications in one go.
        config.outbound_queue = 1 << 15;
        let hub = TestHub::from_builder(
            Hub::builder(router())
                .config(config)
                .broker(broker.clone())
                .history(TopicPattern::prefix("room:"), limits)
                .presence(TopicPattern::prefix("room:")),
        );
        assert!(
            broker.wait_connected(Duration::from_secs(5)).await,
            "node {} did not connect to Redis",
            broker.node_id()
        );
        Node { hub, broker }
    }

    async fn publish(&self, topic: &str, n: u64) {
        self.hub
            .hub()
            .publish(topic, &Said { n })
            .await
            .expect("published");
    }

    /// Waits until Redis confirmed this node's subscription to `topic`.
    async fn subscribed(&self, topic: &str) {
        let broker = self.broker.clone();
        eventually(
            "the subscription to reach Redis",
            Duration::from_secs(5),
            || {
                let ok = broker.is_subscribed(topic);
                async move { ok }
            },
        )
        .await;
    }

    /// The topic's position, read again while the broker is reconnecting
    /// (a read fails, UNAVAILABLE, until it notices a lost Redis).
    async fn position(&self, topic: &str) -> Position {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.hub.hub().position(topic).await {
                Ok(position) => return position.expect("a topic with history"),
                Err(e) => assert!(Instant::now() < deadline, "position: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn limits(max_len: usize) -> HistoryLimits {
    let mut limits = HistoryLimits::new(max_len, Duration::from_secs(300));
    limits.max_pending_bytes = 16 << 20;
    limits
}

/// Joins `topic` and reads the `$sb:subscribed` notice.
async fn join(c: &mut TestClient, topic: &str, name: Option<&str>) -> Subscribed {
    c.send(&Join {
        topic: topic.into(),
        name: name.map(str::to_owned),
    })
    .await;
    subscribed(c).await
}

async fn subscribed(c: &mut TestClient) -> Subscribed {
    let envelope = c.recv().await.expect("a message");
    assert_eq!(envelope.ty, vocab::SUBSCRIBED, "got {envelope:?}");
    envelope.decode_payload().expect("a subscribed payload")
}

/// Reads `n` publications: each value with its offset, checking the epoch.
async fn collect(c: &mut TestClient, n: usize, epoch: &str) -> Vec<(u64, u64)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let (value, p) = said(c).await;
        assert_eq!(p.epoch, epoch, "publication {} of another epoch", got.len());
        got.push((p.offset, value));
    }
    got
}

/// Offsets must run `from`, `from + 1`, … without a hole or a repeat.
fn assert_contiguous(got: &[(u64, u64)], from: u64, who: &str) {
    for (i, (offset, _)) in got.iter().enumerate() {
        assert_eq!(
            *offset,
            from + i as u64,
            "{who}: publication {i} has offset {offset}"
        );
    }
}

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_the_same_on_both_nodes_under_concurrent_publishers() {
    const PER_PUBLISHER: u64 = 400;
    const PUBLISHERS: u64 = 4;
    const TOTAL: u64 = PER_PUBLISHER * PUBLISHERS;
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "pos:", limits(10_000)).await;
    let b = Node::start(&redis.url(), "b", "pos:", limits(10_000)).await;
    let c = Node::start(&redis.url(), "c", "pos:", limits(10_000)).await;
    let mut on_a = a.hub.connect("json").await;
    let start = join(&mut on_a, "room:x", None).await;
    assert_eq!(start.offset, 0);
    assert!(!start.epoch.is_empty());
    let mut early_b = b.hub.connect("msgpack").await;
    assert_eq!(join(&mut early_b, "room:x", None).await, start);

    // Two publishers per node, each publishing in its own order.
    let nodes = [a.hub.hub().clone(), b.hub.hub().clone()];
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let hub = nodes[(p % 2) as usize].clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                hub.publish(
                    "room:x",
                    &Said {
                        n: p * 1_000_000 + i,
                    },
                )
                .await
                .expect("published");
            }
        }));
    }
    // The first subscriber on C, joining while they run, starts right
    // after the position it is told, with nothing missing: its read of the
    // history waited for C's subscription to the topic.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut late_c = c.hub.connect("json").await;
    let late = join(&mut late_c, "room:x", None).await;
    assert!(late.offset < TOTAL, "joined before the end");
    assert_eq!(late.epoch, start.epoch);

    let got_a = collect(&mut on_a, TOTAL as usize, &start.epoch).await;
    let got_b = collect(&mut early_b, TOTAL as usize, &start.epoch).await;
    let got_late = collect(&mut late_c, (TOTAL - late.offset) as usize, &start.epoch).await;
    for p in publishers {
        p.await.expect("publisher");
    }
    assert_contiguous(&got_a, 1, "on A");
    assert_eq!(
        got_a, got_b,
        "the same publication at each offset on A and B"
    );
    assert_contiguous(&got_late, late.offset + 1, "late on C");
    assert_eq!(&got_a[late.offset as usize..], &got_late[..]);
    // Exactly what was published, each publisher's in its order.
    let values: HashSet<u64> = got_a.iter().map(|(_, v)| *v).collect();
    assert_eq!(values.len(), TOTAL as usize);
    for p in 0..PUBLISHERS {
        let mine: Vec<u64> = got_a
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| v / 1_000_000 == p)
            .collect();
        let expected: Vec<u64> = (0..PER_PUBLISHER).map(|i| p * 1_000_000 + i).collect();
        assert_eq!(mine, expected, "publisher {p}");
    }
    for c in [&mut on_a, &mut early_b, &mut late_c] {
        c.expect_silence(QUIET).await;
    }
    let top = Position::new(start.epoch.clone(), TOTAL);
    assert_eq!(a.position("room:x").await, top);
    assert_eq!(b.position("room:x").await, top);
    assert_eq!(c.position("room:x").await, top);
    for node in [&a, &b, &c] {
        let stats = node.broker.stats();
        assert_eq!(stats.malformed, 0);
        assert_eq!(stats.own_skipped, 0, "positioned messages are not skipped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_subscriber_starts_only_once_its_node_is_subscribed() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "wait:", limits(10_000)).await;
    // C reconnects slowly: its subscription stays down 150-300 ms.
    let c = Node::start_with(
        support::broker_builder(&redis.url(), "c", "wait:")
            .reconnect_backoff(Duration::from_millis(300), Duration::from_millis(300))
            .build()
            .expect("broker builds"),
        limits(10_000),
    )
    .await;
    let publishing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let publisher = {
        let hub = a.hub.hub().clone();
        let publishing = publishing.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while publishing.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                hub.publish("room:w", &Said { n }).await.expect("published");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        })
    };
    // C holds another topic, so that its subscriber connection is the one
    // with a subscription: cut it.
    let mut other = c.hub.connect("json").await;
    join(&mut other, "room:other", None).await;
    c.subscribed("room:other").await;
    kill_the_subscriber(&redis).await;
    let broker = c.broker.clone();
    eventually("C's subscriber to notice", Duration::from_secs(2), || {
        let down = !broker.status().subscriber;
        async move { down }
    })
    .await;
    let mut on_c = c.hub.connect("json").await;
    let start = join(&mut on_c, "room:w", None).await;
    assert!(
        c.broker.is_subscribed("room:w"),
        "told where it starts before its node was subscribed"
    );
    let got = collect(&mut on_c, 200, &start.epoch).await;
    publishing.store(false, std::sync::atomic::Ordering::Relaxed);
    let last = publisher.await.expect("publisher");
    assert_contiguous(&got, start.offset + 1, "on C");
    let rest = collect(
        &mut on_c,
        (last - start.offset) as usize - 200,
        &start.epoch,
    )
    .await;
    assert_contiguous(&rest, start.offset + 201, "on C, the rest");
    on_c.expect_silence(QUIET).await;
}

/// Kills the one Redis connection with a subscription (the subscriber
/// connection of the only node holding a topic).
async fn kill_the_subscriber(redis: &RedisServer) {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .expect("client list");
    let subscribers: Vec<&str> = clients
        .lines()
        .filter(|l| l.contains(" sub=1 "))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next())
        .collect();
    assert_eq!(subscribers.len(), 1, "{clients}");
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(subscribers[0])
        .query_async(&mut conn)
        .await
        .expect("killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_missed_while_a_nodes_subscriber_was_down_are_read_back_in_order() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "gap:", limits(10_000)).await;
    // B reconnects after 100-200 ms: what A publishes meanwhile does not
    // reach B on its channel.
    let b = Node::start_with(
        support::broker_builder(&redis.url(), "b", "gap:")
            .reconnect_backoff(Duration::from_millis(200), Duration::from_millis(200))
            .build()
            .expect("broker builds"),
        limits(10_000),
    )
    .await;
    let mut on_b = b.hub.connect("json").await;
    let start = join(&mut on_b, "room:g", None).await;
    let publishing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let publisher = {
        let hub = a.hub.hub().clone();
        let publishing = publishing.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while publishing.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                hub.publish("room:g", &Said { n }).await.expect("published");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        })
    };
    let first = collect(&mut on_b, 20, &start.epoch).await;
    kill_the_subscriber(&redis).await;
    let broker = b.broker.clone();
    eventually("B's subscriber to notice", Duration::from_secs(2), || {
        let down = !broker.status().subscriber;
        async move { down }
    })
    .await;
    b.subscribed("room:g").await;
    // Some more after B is back, then stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    publishing.store(false, std::sync::atomic::Ordering::Relaxed);
    let total = publisher.await.expect("publisher");
    let rest = collect(&mut on_b, (total - 20) as usize, &start.epoch).await;
    let all: Vec<(u64, u64)> = first.into_iter().chain(rest).collect();
    assert_contiguous(&all, 1, "on B");
    let values: Vec<u64> = all.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, (1..=total).collect::<Vec<_>>());
    on_b.expect_silence(QUIET).await;
    assert!(
        b.broker.stats().caught_up > 0,
        "nothing was missed: the test did not test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_the_other_node_exactly_where_it_left() {
    const TOTAL: u64 = 10_000;
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "resume:", limits(20_000)).await;
    let b = Node::start(&redis.url(), "b", "resume:", limits(20_000)).await;
    let mut on_a = a.hub.connect("json").await;
    let start = join(&mut on_a, "room:r", None).await;
    // B publishes the whole time, the resume included.
    let publisher = {
        let hub = b.hub.hub().clone();
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                hub.publish("room:r", &Said { n }).await.expect("published");
            }
        })
    };
    let mut seen = Vec::new();
    let mut last = Position::new(start.epoch.clone(), 0);
    while seen.len() < 3_000 {
        let (n, p) = said(&mut on_a).await;
        seen.push(n);
        last = p;
    }
    on_a.hang_up();
    drop(on_a);

    let mut on_b = b.hub.connect("msgpack").await;
    resume(&mut on_b, "room:r", &last).await;
    let mut notice = None;
    let mut offsets = Vec::new();
    while seen.len() < TOTAL as usize {
        let envelope = on_b.recv().await.expect("the rest of the publications");
        match envelope.ty.as_str() {
            "SAID" => {
                let p = position(&envelope.meta);
                assert_eq!(p.epoch, start.epoch);
                offsets.push(p.offset);
                seen.push(envelope.decode_payload::<Said>().expect("said").n);
            }
            vocab::SUBSCRIBED => {
                assert!(notice.is_none(), "a second $sb:subscribed");
                notice = Some(envelope.decode_payload::<Subscribed>().expect("notice"));
            }
            "$sb:resumed" => {}
            other => panic!("unexpected {other}"),
        }
    }
    publisher.await.expect("publisher");
    let notice = notice.expect("$sb:subscribed");
    assert_eq!(notice.recovered, Some(true));
    assert_eq!(notice.epoch, start.epoch);
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(seen, expected, "every publication once, in order");
    let expected_offsets: Vec<u64> = (last.offset + 1..=TOTAL).collect();
    assert_eq!(offsets, expected_offsets);
    on_b.expect_silence(QUIET).await;
}

/// A client that saw publications 1..=5, then Redis loses everything
/// (`lose`), then three more are published: resuming with the old
/// position is not recovered and replays nothing.
async fn losing_redis_data_starts_a_new_epoch(lose: impl AsyncFnOnce(&mut RedisServer)) {
    let mut redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "lost:", limits(100)).await;
    let b = Node::start(&redis.url(), "b", "lost:", limits(100)).await;
    let mut on_a = a.hub.connect("json").await;
    let start = join(&mut on_a, "room:l", None).await;
    // A subscriber on B that stays through the loss.
    let mut stays = b.hub.connect("msgpack").await;
    assert_eq!(join(&mut stays, "room:l", None).await, start);
    for n in 1..=5 {
        a.publish("room:l", n).await;
    }
    let got = collect(&mut on_a, 5, &start.epoch).await;
    assert_contiguous(&got, 1, "before");
    assert_eq!(collect(&mut stays, 5, &start.epoch).await, got);
    on_a.hang_up();
    drop(on_a);

    lose(&mut redis).await;
    // The first publish may fail (UNAVAILABLE) until A notices a
    // restarted Redis and reconnects.
    let hub = a.hub.hub().clone();
    eventually("a publish to succeed", Duration::from_secs(5), || {
        let hub = hub.clone();
        async move { hub.publish("room:l", &Said { n: 6 }).await.is_ok() }
    })
    .await;
    for n in 7..=8 {
        a.publish("room:l", n).await;
    }
    let now = b.position("room:l").await;
    assert_ne!(now.epoch, start.epoch, "a new epoch");
    assert_eq!(now.offset, 3);

    let mut on_b = b.hub.connect("json").await;
    resume(&mut on_b, "room:l", &Position::new(start.epoch.clone(), 5)).await;
    let (replay, notice) = resumed(&mut on_b).await;
    assert_eq!(replay, vec![]);
    assert_eq!(notice.recovered, Some(false));
    assert_eq!(
        (notice.epoch.as_str(), notice.offset),
        (now.epoch.as_str(), 3)
    );
    // Nothing replayed; live from there, once.
    on_b.expect_silence(QUIET).await;
    a.publish("room:l", 9).await;
    assert_eq!(
        said(&mut on_b).await,
        (9, Position::new(now.epoch.clone(), 4))
    );
    on_b.expect_silence(QUIET).await;
    // The subscriber that stayed gets every publication of the new epoch,
    // in order, once (those its node missed while reconnecting read back
    // from the new history).
    assert_eq!(
        collect(&mut stays, 4, &now.epoch).await,
        vec![(1, 6), (2, 7), (3, 8), (4, 9)]
    );
    stays.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_starts_a_new_epoch_and_resumes_are_not_recovered() {
    losing_redis_data_starts_a_new_epoch(async |redis: &mut RedisServer| {
        let client = redis::Client::open(redis.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut conn)
            .await
            .expect("flushed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_empty_redis_starts_a_new_epoch_and_resumes_are_not_recovered() {
    losing_redis_data_starts_a_new_epoch(async |redis: &mut RedisServer| {
        redis.restart().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_from_an_older_snapshot_is_reported_and_starts_a_new_epoch() {
    let mut redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "old:", limits(100)).await;
    let b = Node::start(&redis.url(), "b", "old:", limits(100)).await;
    let mut stays = b.hub.connect("msgpack").await;
    let start = join(&mut stays, "room:o", None).await;
    b.subscribed("room:o").await;
    for n in 1..=3 {
        a.publish("room:o", n).await;
    }
    // A snapshot at offset 3, then three more that only the live
    // subscriber gets: Redis comes back from the snapshot.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let _: () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("saved");
    for n in 4..=6 {
        a.publish("room:o", n).await;
    }
    let before = collect(&mut stays, 6, &start.epoch).await;
    assert_contiguous(&before, 1, "before");
    let reconnects = b.broker.stats().reconnects;
    redis.restart().await;
    // B back on both connections, subscribed again, before 7 is published.
    let broker = b.broker.clone();
    eventually("B to reconnect", Duration::from_secs(10), || {
        let again = broker.stats().reconnects >= reconnects + 2;
        let subscribed = broker.is_subscribed("room:o");
        async move { again && subscribed }
    })
    .await;
    // The same epoch, top 3: offsets 4.. are given again.
    let hub = a.hub.hub().clone();
    eventually("a publish to succeed", Duration::from_secs(5), || {
        let hub = hub.clone();
        async move { hub.publish("room:o", &Said { n: 7 }).await.is_ok() }
    })
    .await;
    let broker = b.broker.clone();
    eventually(
        "B to report Redis going back",
        Duration::from_secs(5),
        || {
            let rewound = broker.stats().rewound;
            async move { rewound >= 1 }
        },
    )
    .await;
    // The live subscriber still gets it (offset 4 of the old epoch again),
    // and what follows comes in a new epoch.
    let (n, p) = said(&mut stays).await;
    assert_eq!((n, p), (7, Position::new(start.epoch.clone(), 4)));
    a.publish("room:o", 8).await;
    let (n, p) = said(&mut stays).await;
    assert_eq!(n, 8);
    assert_ne!(p.epoch, start.epoch, "a new epoch after Redis went back");
    assert_eq!(p.offset, 1);
    // A client that saw 6 of the old epoch is told it is not recovered.
    let mut late = a.hub.connect("json").await;
    resume(&mut late, "room:o", &Position::new(start.epoch.clone(), 6)).await;
    let (_, notice) = resumed(&mut late).await;
    assert_eq!(notice.recovered, Some(false));
    assert_eq!(notice.epoch, p.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_by_count_in_redis() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "trim:", limits(5)).await;
    let b = Node::start(&redis.url(), "b", "trim:", limits(5)).await;
    for n in 1..=10 {
        a.publish("room:t", n).await;
    }
    let epoch = a.position("room:t").await.epoch;
    // 6..=10 kept: a client at 5 is recovered, one at 4 is not.
    let mut c = b.hub.connect("json").await;
    resume(&mut c, "room:t", &Position::new(epoch.clone(), 5)).await;
    let (replay, notice) = resumed(&mut c).await;
    assert_contiguous(&replay, 6, "replay");
    assert_eq!(replay.len(), 5);
    assert_eq!(notice.recovered, Some(true));
    let mut d = b.hub.connect("json").await;
    resume(&mut d, "room:t", &Position::new(epoch, 4)).await;
    let (replay, notice) = resumed(&mut d).await;
    assert_eq!((replay, notice.recovered), (vec![], Some(false)));
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let kept: u64 = redis::cmd("XLEN")
        .arg("trim:history:room:t")
        .query_async(&mut conn)
        .await
        .expect("xlen");
    assert_eq!(kept, 5);
    let ttl: i64 = redis::cmd("PTTL")
        .arg("trim:history:room:t")
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(ttl > 0 && ttl <= 300_000, "the history expires: {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_by_age_in_redis() {
    let redis = RedisServer::start().await;
    let two_seconds = HistoryLimits::new(100, Duration::from_secs(2));
    let a = Node::start(&redis.url(), "a", "age:", two_seconds).await;
    let b = Node::start(&redis.url(), "b", "age:", two_seconds).await;
    for n in 1..=3 {
        a.publish("room:g", n).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for n in 4..=5 {
        a.publish("room:g", n).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // 1..=3 are past max_age now, 4 and 5 are not.
    let epoch = b.position("room:g").await.epoch;
    let mut c = b.hub.connect("json").await;
    resume(&mut c, "room:g", &Position::new(epoch.clone(), 3)).await;
    let (replay, notice) = resumed(&mut c).await;
    assert_eq!(
        (replay, notice.recovered),
        (vec![(4, 4), (5, 5)], Some(true))
    );
    let mut d = b.hub.connect("json").await;
    resume(&mut d, "room:g", &Position::new(epoch, 2)).await;
    let (replay, notice) = resumed(&mut d).await;
    assert_eq!((replay, notice.recovered), (vec![], Some(false)));
}

fn names(list: &[signalbox::PresenceEntry]) -> Vec<String> {
    let mut names: Vec<String> = list
        .iter()
        .map(|e| e.info["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    names.sort();
    names
}

async fn wait_names(hub: &Hub, topic: &'static str, want: &[&str], within: Duration) {
    let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    eventually(&format!("presence {want:?}"), within, || {
        let hub = hub.clone();
        let want = want.clone();
        async move { hub.presence(topic).await.ok().map(|l| names(&l)) == Some(want) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_a_dead_node_leaves_it_within_the_expiry() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let refresh = Duration::from_millis(500);
    let expiry = refresh * 3;
    let a = Node::start_with(
        support::broker_builder(&url, "a", "here:")
            .membership_refresh(refresh)
            .build()
            .expect("broker builds"),
        limits(10),
    )
    .await;
    let mut ann = a.hub.connect("json").await;
    join(&mut ann, "room:p", Some("ann")).await;

    // Node B runs on a runtime of its own, which is then dropped: its tasks
    // stop where they are, with no cleanup (as when its process is killed).
    let b_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let b_url = url.clone();
    b_runtime.spawn(async move {
        let b = Node::start_with(
            support::broker_builder(&b_url, "b", "here:")
                .membership_refresh(refresh)
                .build()
                .expect("broker builds"),
            limits(10),
        )
        .await;
        let mut bob = b.hub.connect("json").await;
        join(&mut bob, "room:p", Some("bob")).await;
        let mut cy = b.hub.connect("json").await;
        join(&mut cy, "room:p", Some("cy")).await;
        cy.send(&Leave {
            topic: "room:p".into(),
        })
        .await;
        assert_eq!(cy.recv().await.expect("a notice").ty, "$sb:unsubscribed");
        cy.expect::<Left>().await;
        let _ = ready_tx.send(());
        // Keep the node and its clients until the runtime goes.
        let _keep = (b, bob, cy);
        std::future::pending::<()>().await;
    });
    ready_rx.await.expect("node b started");
    let hub = a.hub.hub().clone();
    // Both nodes' entries; the one who left is not listed.
    wait_names(&hub, "room:p", &["ann", "bob"], Duration::from_secs(3)).await;

    b_runtime.shutdown_background();
    let crashed = Instant::now();
    assert_eq!(
        names(&hub.presence("room:p").await.expect("presence")),
        ["ann", "bob"],
        "bob is still listed right after the crash: nothing cleaned up"
    );
    wait_names(&hub, "room:p", &["ann"], expiry + Duration::from_secs(5)).await;
    let gone = crashed.elapsed();
    assert!(gone <= expiry + Duration::from_secs(2), "took {gone:?}");
    // The live node keeps its own entry in Redis past the expiry.
    tokio::time::sleep(expiry).await;
    let c = Node::start(&url, "c", "here:", limits(10)).await;
    wait_names(c.hub.hub(), "room:p", &["ann"], Duration::from_secs(2)).await;
    // A node that shuts down takes its entries with it at once.
    a.hub.hub().shutdown().await;
    a.broker.shutdown().await;
    assert!(
        c.hub
            .hub()
            .presence("room:p")
            .await
            .expect("presence")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_topic_keeps_its_position_while_held_and_loses_it_when_not() {
    let redis = RedisServer::start().await;
    let short = HistoryLimits::new(100, Duration::from_secs(1));
    let a = Node::start(&redis.url(), "a", "quiet:", short).await;
    let b = Node::start(&redis.url(), "b", "quiet:", short).await;
    let mut holder = a.hub.connect("json").await;
    let start = join(&mut holder, "room:q", None).await;
    for n in 1..=3 {
        b.publish("room:q", n).await;
    }
    collect(&mut holder, 3, &start.epoch).await;
    // Quiet for longer than max_age: the publications expired, the
    // position did not (A holds the topic and keeps it alive).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        b.position("room:q").await,
        Position::new(start.epoch.clone(), 3)
    );
    let mut c = b.hub.connect("json").await;
    resume(&mut c, "room:q", &Position::new(start.epoch.clone(), 3)).await;
    assert_eq!(
        resumed(&mut c).await.1.recovered,
        Some(true),
        "missed nothing"
    );
    let mut d = b.hub.connect("json").await;
    resume(&mut d, "room:q", &Position::new(start.epoch.clone(), 2)).await;
    assert_eq!(resumed(&mut d).await.1.recovered, Some(false), "expired");
    // Nobody holds it any more: after max_age its position is gone too,
    // and the topic starts a new epoch.
    for client in [&mut holder, &mut c, &mut d] {
        client
            .send(&Leave {
                topic: "room:q".into(),
            })
            .await;
        assert_eq!(
            client.recv().await.expect("a notice").ty,
            "$sb:unsubscribed"
        );
        client.expect::<Left>().await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let now = a.position("room:q").await;
    assert_ne!(now.epoch, start.epoch);
    assert_eq!(now.offset, 0);
}
