//! Pub/sub topics: publish from handlers, hooks and outside any handler;
//! exclude the sender; encode once per codec; limits and authorization;
//! cleanup on disconnect; membership queries.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use signalbox::codec::{EncodeError, Meta, PayloadError, RawPayload, WireCodec};
use signalbox::testing::{TestClient, TestHub};
use signalbox::{
    Config, Ctx, Error, ErrorCode, Message, PublishOptions, Router, TopicAction, message,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Join {
    topic: String,
}
message!(Join = "JOIN");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Leave {
    topic: String,
}
message!(Leave = "LEAVE");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Post {
    topic: String,
    text: String,
    others_only: bool,
}
message!(Post = "POST");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Posted {
    text: String,
}
message!(Posted = "POSTED");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Joined;
message!(Joined = "JOINED");

fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Join>| async move {
            ctx.subscribe(&ctx.payload().topic)?;
            ctx.reply(&Joined)
        })
        .on(|ctx: Ctx<Leave>| async move {
            ctx.unsubscribe(&ctx.payload().topic);
        })
        .on(|ctx: Ctx<Post>| async move {
            let Post {
                topic,
                text,
                others_only,
            } = ctx.payload().clone();
            let options = if others_only {
                PublishOptions::excluding_sender()
            } else {
                PublishOptions::default()
            };
            ctx.publish_with(&topic, &Posted { text }, options).await?;
            Ok(())
        })
}

async fn join(c: &mut TestClient, topic: &str) {
    c.send(&Join {
        topic: topic.into(),
    })
    .await;
    c.expect::<Joined>().await;
}

#[tokio::test]
async fn publish_reaches_every_member_in_its_own_codec_with_the_sender_id() {
    let hub = TestHub::new(router());
    let mut clients = Vec::new();
    for codec in ["json", "msgpack", "json+gzip", "msgpack+gzip"] {
        let mut c = hub.connect(codec).await;
        join(&mut c, "room").await;
        clients.push(c);
    }
    let mut outsider = hub.connect("json").await;
    let sender_id = hub.hub().topic_members("room").len();
    assert_eq!(sender_id, 4);
    clients[0]
        .send(&Post {
            topic: "room".into(),
            text: "hi".into(),
            others_only: false,
        })
        .await;
    let mut ids = Vec::new();
    for c in &mut clients {
        let (posted, meta) = c.expect::<Posted>().await;
        assert_eq!(posted.text, "hi");
        ids.push(meta.client_id.expect("clientId on a published message"));
    }
    assert!(ids.iter().all(|id| *id == ids[0]));
    outsider.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn publish_can_exclude_the_sender() {
    let hub = TestHub::new(router());
    let mut a = hub.connect("json").await;
    let mut b = hub.connect("json").await;
    join(&mut a, "t").await;
    join(&mut b, "t").await;
    a.send(&Post {
        topic: "t".into(),
        text: "x".into(),
        others_only: true,
    })
    .await;
    assert_eq!(b.expect::<Posted>().await.0.text, "x");
    a.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn the_server_publishes_outside_any_handler() {
    let hub = TestHub::new(router());
    let mut a = hub.connect("msgpack").await;
    join(&mut a, "news").await;
    let n = hub
        .hub()
        .publish(
            "news",
            &Posted {
                text: "extra".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (posted, meta) = a.expect::<Posted>().await;
    assert_eq!(posted.text, "extra");
    assert_eq!(meta.client_id, None);
}

#[tokio::test]
async fn unsubscribe_and_disconnect_clean_up_membership() {
    let hub = TestHub::new(router());
    let mut a = hub.connect("json").await;
    let mut b = hub.connect("json").await;
    join(&mut a, "x").await;
    join(&mut a, "y").await;
    join(&mut b, "x").await;
    assert_eq!(hub.hub().topic_size("x"), 2);
    assert_eq!(hub.hub().topics(), ["x", "y"]);
    let a_conn = hub.hub().topic_members("y").pop().unwrap();
    assert_eq!(a_conn.topics(), ["x", "y"]);
    a.send(&Leave { topic: "y".into() }).await;
    b.send(&Post {
        topic: "x".into(),
        text: "sync".into(),
        others_only: false,
    })
    .await;
    a.expect::<Posted>().await;
    assert_eq!(hub.hub().topic_size("y"), 0);
    a.hang_up();
    assert_eq!(a.recv().await, None);
    for _ in 0..100 {
        if hub.hub().topic_size("x") == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(hub.hub().topic_size("x"), 1);
    assert_eq!(hub.hub().topics(), ["x"]);
}

#[tokio::test]
async fn topic_names_and_subscription_counts_are_limited() {
    let mut config = Config::default();
    config.topics.max_per_connection = 2;
    let hub = TestHub::with_config(router(), config);
    let mut a = hub.connect("json").await;
    for bad in ["", "has space", &"x".repeat(300)] {
        a.send(&Join {
            topic: bad.to_owned(),
        })
        .await;
        let (err, _) = a.expect_error("ERROR").await;
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}");
    }
    join(&mut a, "one").await;
    join(&mut a, "two").await;
    join(&mut a, "two").await; // already held: no-op, not counted
    a.send(&Join {
        topic: "three".into(),
    })
    .await;
    let (err, _) = a.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::ResourceExhausted);
}

#[tokio::test]
async fn the_authorization_hook_decides_subscribe_and_publish() {
    let router = router().authorize_topics(|_conn, topic, action| match (topic, action) {
        ("secret", _) => Err(Error::permission_denied("no")),
        ("readonly", TopicAction::Publish) => Err(Error::permission_denied("read only")),
        _ => Ok(()),
    });
    let hub = TestHub::new(router);
    let mut a = hub.connect("json").await;
    a.send(&Join {
        topic: "secret".into(),
    })
    .await;
    assert_eq!(
        a.expect_error("ERROR").await.0.code,
        ErrorCode::PermissionDenied
    );
    join(&mut a, "readonly").await;
    a.send(&Post {
        topic: "readonly".into(),
        text: "x".into(),
        others_only: false,
    })
    .await;
    let (err, _) = a.expect_error("ERROR").await;
    assert_eq!(err.message, "read only");
}

static ENCODES: AtomicUsize = AtomicUsize::new(0);

/// A message that counts its encodings.
struct Counted(String);

impl Message for Counted {
    const TYPE: &'static str = "COUNTED";
    fn decode(payload: Option<&RawPayload>) -> Result<Self, PayloadError> {
        signalbox::decode_serde(payload).map(Counted)
    }
    fn encode(&self, codec: &WireCodec, meta: &Meta, compress: bool) -> Result<Bytes, EncodeError> {
        ENCODES.fetch_add(1, Ordering::SeqCst);
        signalbox::encode_serde(Self::TYPE, &self.0, codec, meta, compress)
    }
}

#[tokio::test]
async fn fan_out_encodes_once_per_codec_and_shares_the_bytes() {
    let hub = TestHub::new(router());
    let mut clients = Vec::new();
    for i in 0..600 {
        let codec = ["json", "msgpack", "json+gzip"][i % 3];
        let mut c = hub.connect(codec).await;
        join(&mut c, "big").await;
        clients.push(c);
    }
    ENCODES.store(0, Ordering::SeqCst);
    let n = hub
        .hub()
        .publish("big", &Counted("y".repeat(2000)))
        .await
        .unwrap();
    assert_eq!(n, 600);
    assert_eq!(ENCODES.load(Ordering::SeqCst), 3);
    let mut frames: Vec<Bytes> = Vec::new();
    for c in &mut clients {
        frames.push(c.recv_raw().await.expect("delivered"));
    }
    // Same codec, same allocation.
    assert_eq!(frames[0].as_ptr(), frames[3].as_ptr());
    assert_eq!(frames[2].as_ptr(), frames[599].as_ptr());
    assert_ne!(frames[0].as_ptr(), frames[1].as_ptr());
    assert!(frames[2].starts_with(br#"{"type":"COMPRESSED""#));
}

#[tokio::test]
async fn a_large_fan_out_yields_to_other_tasks() {
    let mut config = Config::default();
    config.topics.fanout_chunk = 10;
    let hub = TestHub::with_config(router(), config);
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut c = hub.connect("json").await;
        join(&mut c, "room").await;
        clients.push(c);
    }
    // A task that counts how often it gets to run during the publish.
    let ticks = std::sync::Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let counter = tokio::spawn(async move {
        loop {
            t.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
    });
    tokio::task::yield_now().await;
    let before = ticks.load(Ordering::SeqCst);
    hub.hub()
        .publish("room", &Posted { text: "x".into() })
        .await
        .unwrap();
    let during = ticks.load(Ordering::SeqCst) - before;
    counter.abort();
    assert!(during >= 9, "the publish yielded {during} times");
}

#[tokio::test]
async fn a_slow_subscriber_meets_its_queue_policy_and_delays_no_one_else() {
    let mut config = Config::default();
    config.outbound_queue = 16;
    let hub = TestHub::with_config(router(), config);
    let mut slow = hub.connect("json").await;
    join(&mut slow, "room").await;
    let mut fast: Vec<TestClient> = Vec::new();
    for codec in ["json", "msgpack"] {
        let mut c = hub.connect(codec).await;
        join(&mut c, "room").await;
        fast.push(c);
    }
    let mut publisher = hub.connect("json").await;
    // The slow subscriber never reads: its in-memory pipe (1024 frames)
    // and then its queue (16) fill, and it is closed as a slow consumer.
    // The others read as they go and get every message, in order.
    let total = 1500;
    for i in 0..total {
        publisher
            .send(&Post {
                topic: "room".into(),
                text: i.to_string(),
                others_only: false,
            })
            .await;
        for c in &mut fast {
            assert_eq!(c.expect::<Posted>().await.0.text, i.to_string());
        }
    }
    let close = slow.closed().await.expect("the slow subscriber is closed");
    assert_eq!(close.kind, signalbox::transport::CloseKind::Policy);
    assert!(close.reason.contains("slow consumer"));
    publisher.expect_silence(Duration::from_millis(20)).await;
}
