//! Several hubs sharing one real Redis: every member receives every
//! message exactly once, in its own codec, with its payload exact; "every
//! subscriber but the sender" holds across nodes; Redis lost and back;
//! membership counts across nodes.

mod support;

use signalbox::ErrorCode;
use signalbox::testing::TestClient;
use signalbox_redis::RedisBroker;
use std::time::{Duration, Instant};
use support::{Body, Leave, Left, Node, Post, Posted, RedisServer, eventually, post};

const QUIET: Duration = Duration::from_millis(150);

/// Collects `n` POSTED texts from `c`, then checks nothing more comes.
async fn texts(c: &mut TestClient, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(c.expect::<Posted>().await.0.0.text);
    }
    c.expect_silence(QUIET).await;
    got
}

async fn every_member_gets_every_message_once(nodes: usize) {
    let redis = RedisServer::start().await;
    let codecs = ["json", "msgpack", "msgpack+gzip", "json+gzip"];
    let mut cluster = Vec::new();
    for i in 0..nodes {
        cluster.push(Node::start(&redis.url(), &format!("n{i}"), "once:").await);
    }
    let mut members = Vec::new();
    for (i, node) in cluster.iter().enumerate() {
        for codec in &codecs[..2] {
            members.push((i, node.member(codec, "room").await));
        }
        // A third client on another codec per node, rotating.
        members.push((i, node.member(codecs[2 + i % 2], "room").await));
    }
    let mut outsider = cluster[0].hub.connect("json").await;
    for node in &cluster {
        node.subscribed("room").await;
    }
    let mut sent = Vec::new();
    for (k, (node, c)) in members.iter_mut().enumerate() {
        let text = format!("from n{node} client {k}");
        c.send(&post("room", &text)).await;
        sent.push(text);
    }
    sent.sort();
    for (node, c) in &mut members {
        let mut got = texts(c, sent.len()).await;
        got.sort();
        assert_eq!(got, sent, "member on n{node} ({})", c.codec().name());
    }
    outsider.expect_silence(QUIET).await;
    let others = 3 * (nodes as u64 - 1);
    for node in &cluster {
        let broker = node.broker.clone();
        eventually(
            "every echo and receipt counted",
            Duration::from_secs(5),
            || {
                let s = broker.stats();
                async move { s.published == 3 && s.own_skipped == 3 && s.received == others }
            },
        )
        .await;
        assert_eq!(node.broker.stats().malformed, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_every_room_message_to_every_member_exactly_once() {
    every_member_gets_every_message_once(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_room_message_to_every_member_exactly_once() {
    every_member_gets_every_message_once(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_stay_exact_across_nodes_in_every_codec() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "exact:").await;
    let b = Node::start(&redis.url(), "b", "exact:").await;
    let mut sender = a.member("msgpack", "r").await;
    let mut json = b.member("json", "r").await;
    let mut msgpack = b.member("msgpack", "r").await;
    let mut gzip = b.member("msgpack+gzip", "r").await;
    b.subscribed("r").await;
    let body = Body {
        text: "é ✓ ".repeat(1000),
        big: u64::MAX - 1,
        bin: vec![0, 1, 2, 254, 255],
        float: 0.1,
    };
    sender
        .send(&Post {
            topic: "r".into(),
            body: body.clone(),
            others_only: false,
        })
        .await;
    let (mine, my_meta) = sender.expect::<Posted>().await;
    assert_eq!(mine.0, body);
    for c in [&mut msgpack, &mut gzip] {
        let (got, meta) = c.expect::<Posted>().await;
        assert_eq!(got.0, body, "{}", c.codec().name());
        assert_eq!(meta.client_id, my_meta.client_id, "clientId crosses nodes");
        assert_eq!(meta.timestamp, my_meta.timestamp);
    }
    // JSON has no bin: it carries the bytes as an array of numbers; the big
    // integer and the float stay exact.
    let envelope = json.recv().await.expect("a message for the JSON member");
    assert_eq!(envelope.ty, "POSTED");
    let value: serde_json::Value = envelope.decode_payload().expect("JSON payload");
    assert_eq!(value["big"].as_u64(), Some(u64::MAX - 1));
    assert_eq!(value["bin"], serde_json::json!([0, 1, 2, 254, 255]));
    assert_eq!(value["float"].as_f64(), Some(0.1));
    assert_eq!(value["text"].as_str(), Some(body.text.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_reaches_gzip_members_on_other_nodes_compressed() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "gz:").await;
    let b = Node::start(&redis.url(), "b", "gz:").await;
    let mut sender = a.member("json", "r").await;
    let mut gzip = b.member("json+gzip", "r").await;
    b.subscribed("r").await;
    let text = "hello ".repeat(2000);
    sender.send(&post("r", &text)).await;
    let frame = gzip.recv_raw().await.expect("a frame");
    assert!(
        frame.len() < text.len() / 4,
        "a {}-byte frame for a {}-byte text was not compressed",
        frame.len(),
        text.len()
    );
    let envelope = gzip.codec().decode(frame).expect("decodes");
    let posted: Posted = envelope.decode_payload().expect("payload");
    assert_eq!(posted.0.text, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_but_the_sender_holds_across_nodes() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "excl:").await;
    let b = Node::start(&redis.url(), "b", "excl:").await;
    let mut sender = a.member("json", "r").await;
    let mut near = a.member("msgpack", "r").await;
    let mut far = b.member("json", "r").await;
    b.subscribed("r").await;
    let mut p = post("r", "not to me");
    p.others_only = true;
    sender.send(&p).await;
    assert_eq!(texts(&mut near, 1).await, ["not to me"]);
    assert_eq!(texts(&mut far, 1).await, ["not to me"]);
    sender.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_publishes_fail_as_unavailable_and_recover_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "down:").await;
    let b = Node::start(&redis.url(), "b", "down:").await;
    let mut sender = a.member("json", "r").await;
    let mut near = a.member("msgpack", "r").await;
    let mut far = b.member("json", "r").await;
    b.subscribed("r").await;

    redis.kill();
    for i in 0..3 {
        let started = Instant::now();
        sender.send(&post("r", &format!("while down {i}"))).await;
        // Local members still get it, the sender included...
        assert_eq!(
            sender.expect::<Posted>().await.0.0.text,
            format!("while down {i}")
        );
        assert_eq!(texts(&mut near, 1).await, [format!("while down {i}")]);
        // ...and the sender is told it did not reach the other nodes.
        let (error, _) = sender.expect_error("ERROR").await;
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "publish took {:?} to fail",
            started.elapsed()
        );
    }
    far.expect_silence(QUIET).await;
    assert!(a.broker.stats().publish_failures >= 3);

    redis.restart().await;
    for node in [&a, &b] {
        assert!(
            node.broker.wait_connected(Duration::from_secs(5)).await,
            "reconnected"
        );
    }
    // The subscription is restored on the new Redis.
    b.subscribed("r").await;
    sender.send(&post("r", "back")).await;
    assert_eq!(texts(&mut sender, 1).await, ["back"]);
    assert_eq!(texts(&mut near, 1).await, ["back"]);
    assert_eq!(texts(&mut far, 1).await, ["back"]);
    // And the other way round.
    far.send(&post("r", "from b")).await;
    assert_eq!(texts(&mut far, 1).await, ["from b"]);
    assert_eq!(texts(&mut sender, 1).await, ["from b"]);
    assert_eq!(texts(&mut near, 1).await, ["from b"]);
    assert!(b.broker.stats().reconnects >= 2);
    // Membership counts are written again on the new Redis.
    let hub = a.hub.hub().clone();
    eventually("counts restored", Duration::from_secs(5), || {
        let hub = hub.clone();
        async move { hub.topic_size_everywhere("r").await.ok() == Some(3) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_started_before_redis_fails_fast_then_connects() {
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    // A long publish timeout, so that failing "at once" is told apart from
    // failing when the timeout passes.
    let broker = RedisBroker::builder(&url)
        .node_id("a")
        .prefix("late:")
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .publish_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("broker builds");
    let a = Node {
        hub: signalbox::testing::TestHub::from_builder(
            signalbox::Hub::builder(support::router()).broker(broker.clone()),
        ),
        broker,
    };
    let mut near = a.member("json", "r").await;
    let started = Instant::now();
    near.send(&post("r", "early")).await;
    assert_eq!(near.expect::<Posted>().await.0.0.text, "early");
    let (error, _) = near.expect_error("ERROR").await;
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "no Redis yet: publish must fail at once, took {:?}",
        started.elapsed()
    );
    assert!(!a.broker.status().publisher);

    let _redis = RedisServer::start_on(port).await;
    assert!(a.broker.wait_connected(Duration::from_secs(5)).await);
    a.subscribed("r").await;
    let b = Node::start(&url, "b", "late:").await;
    let mut far = b.member("msgpack", "r").await;
    b.subscribed("r").await;
    far.send(&post("r", "hi")).await;
    assert_eq!(texts(&mut near, 1).await, ["hi"]);
    assert_eq!(texts(&mut far, 1).await, ["hi"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_nodes_carry_on_when_one_is_dropped() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "drop:").await;
    let b = Node::start(&redis.url(), "b", "drop:").await;
    let c = Node::start(&redis.url(), "c", "drop:").await;
    let mut ma = a.member("json", "r").await;
    let mut mb = b.member("msgpack", "r").await;
    let mut mc = c.member("json", "r").await;
    for node in [&a, &b, &c] {
        node.subscribed("r").await;
    }
    ma.send(&post("r", "three")).await;
    for m in [&mut ma, &mut mb, &mut mc] {
        assert_eq!(texts(m, 1).await, ["three"]);
    }
    // Dropped without a shutdown: hub, broker and client simply go away.
    drop(mc);
    drop(c);
    ma.send(&post("r", "two")).await;
    mb.send(&post("r", "two again")).await;
    for m in [&mut ma, &mut mb] {
        let mut got = texts(m, 2).await;
        got.sort();
        assert_eq!(got, ["two", "two again"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_sizes_count_the_members_of_every_node() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "size:").await;
    let b = Node::start(&redis.url(), "b", "size:").await;
    let _a1 = a.member("json", "r").await;
    let _a2 = a.member("json", "r").await;
    let mut b1 = b.member("json", "r").await;
    let _b2 = b.member("json", "r").await;
    let _b3 = b.member("json", "other").await;
    let size = |node: &Node, topic: &'static str| {
        let hub = node.hub.hub().clone();
        async move { hub.topic_size_everywhere(topic).await.ok() }
    };
    let wait_for = |node: &'static str, hub: &Node, topic: &'static str, want: usize| {
        let hub = hub.hub.hub().clone();
        async move {
            eventually(
                &format!("{node} to count {want} in {topic}"),
                Duration::from_secs(5),
                || {
                    let hub = hub.clone();
                    async move { hub.topic_size_everywhere(topic).await.ok() == Some(want) }
                },
            )
            .await;
        }
    };
    wait_for("a", &a, "r", 4).await;
    wait_for("b", &b, "r", 4).await;
    wait_for("a", &a, "other", 1).await;
    assert_eq!(size(&a, "nobody").await, Some(0));
    assert_eq!(
        signalbox::Broker::remote_size(&a.broker, "r").await.ok(),
        Some(2)
    );

    // A member leaves: counted at the next refresh (200 ms here).
    b1.send(&Leave { topic: "r".into() }).await;
    b1.expect::<Left>().await;
    wait_for("a", &a, "r", 3).await;

    // A node that shuts down takes its counts with it at once.
    b.stop().await;
    assert_eq!(size(&a, "r").await, Some(2));
    assert_eq!(size(&a, "other").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_from_redis_is_dropped_and_counted() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", "junk:").await;
    let mut m = a.member("msgpack", "r").await;
    a.subscribed("r").await;
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    for junk in [&b"hello"[..], b"\x98\x01", b""] {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("junk:r")
            .arg(junk)
            .query_async(&mut conn)
            .await
            .expect("published");
        assert_eq!(receivers, 1);
    }
    let broker = a.broker.clone();
    eventually(
        "three malformed frames counted",
        Duration::from_secs(5),
        || {
            let n = broker.stats().malformed;
            async move { n == 3 }
        },
    )
    .await;
    m.expect_silence(QUIET).await;
    // The node still works afterwards.
    m.send(&post("r", "fine")).await;
    assert_eq!(texts(&mut m, 1).await, ["fine"]);
}
