//! Nodes whose hubs keep topic history in Redis, and a client's view of
//! positions: joins, publications with their positions, resumes.

use super::eventually;
use serde::{Deserialize, Serialize};
use serde_json::json;
use signalbox::codec::Meta;
use signalbox::codec::vocab;
use signalbox::testing::{TestClient, TestHub};
use signalbox::{
    Config, Ctx, HistoryLimits, Hub, Position, Router, Subscribed, TopicPattern, message,
};
use signalbox_redis::RedisBroker;
use std::time::{Duration, Instant};

/// Join a topic (answered by the `$sb:subscribed` notice).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Enter {
    pub topic: String,
}
message!(Enter = "ENTER");

/// What is published.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Said {
    pub n: u64,
}
message!(Said = "SAID");

fn router() -> Router {
    Router::new().on(|ctx: Ctx<Enter>| async move { ctx.subscribe(&ctx.payload().topic).map(drop) })
}

/// History limits large enough for any test here.
pub fn limits() -> HistoryLimits {
    let mut limits = HistoryLimits::new(10_000, Duration::from_secs(300));
    limits.max_pending_bytes = 16 << 20;
    limits
}

/// A node whose hub keeps history for `room:*` in Redis.
pub struct HistoryNode {
    pub hub: TestHub,
    pub broker: RedisBroker,
}

impl HistoryNode {
    /// Starts a node on `broker` and waits until it is connected.
    pub async fn start(broker: RedisBroker) -> Self {
        let mut config = Config::default();
        config.outbound_queue = 1 << 15;
        // Braces allowed, to try the names of topics that hold them.
        config.topics.extra_chars.push_str("{}");
        let hub = TestHub::from_builder(
            Hub::builder(router())
                .config(config)
                .broker(broker.clone())
                .history(TopicPattern::prefix("room:"), limits()),
        );
        assert!(
            broker.wait_connected(Duration::from_secs(10)).await,
            "node {} did not connect to Redis",
            broker.node_id()
        );
        HistoryNode { hub, broker }
    }

    /// Publishes `n` on `topic`, retrying while Redis is unavailable for
    /// at most `within`; returns how many attempts failed.
    pub async fn publish_retrying(&self, topic: &str, n: u64, within: Duration) -> u32 {
        let deadline = Instant::now() + within;
        let mut failed = 0;
        loop {
            match self.hub.hub().publish(topic, &Said { n }).await {
                Ok(_) => return failed,
                Err(e) => {
                    failed += 1;
                    assert!(Instant::now() < deadline, "publish {n}: {e:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Waits until Redis confirmed this node's subscription to `topic`.
    pub async fn subscribed(&self, topic: &str) {
        let broker = self.broker.clone();
        eventually(
            "the subscription to reach Redis",
            Duration::from_secs(10),
            || {
                let ok = broker.is_subscribed(topic);
                async move { ok }
            },
        )
        .await;
    }

    /// The topic's position, read again while Redis is unavailable.
    pub async fn position(&self, topic: &str) -> Position {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.hub.hub().position(topic).await {
                Ok(position) => return position.expect("a topic with history"),
                Err(e) => assert!(Instant::now() < deadline, "position: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Joins `topic` and reads the `$sb:subscribed` notice.
pub async fn enter(c: &mut TestClient, topic: &str) -> Subscribed {
    c.send(&Enter {
        topic: topic.into(),
    })
    .await;
    notice(c).await
}

async fn notice(c: &mut TestClient) -> Subscribed {
    let envelope = c.recv().await.expect("a message");
    assert_eq!(envelope.ty, vocab::SUBSCRIBED, "got {envelope:?}");
    envelope.decode_payload().expect("a subscribed payload")
}

/// The position a publication carries.
pub fn position(meta: &Meta) -> Position {
    Position::new(
        meta.extra["epoch"].as_str().expect("epoch"),
        meta.extra["offset"].as_u64().expect("offset"),
    )
}

/// Reads a publication: its value and position.
pub async fn said(c: &mut TestClient) -> (u64, Position) {
    let (msg, meta) = c.expect::<Said>().await;
    (msg.n, position(&meta))
}

/// Asks to resume `topic` after `from`.
pub async fn resume(c: &mut TestClient, topic: &str, from: &Position) {
    let meta = Meta {
        correlation_id: Some("r".into()),
        ..Meta::default()
    };
    let topics = json!([{ "topic": topic, "epoch": from.epoch, "offset": from.offset }]);
    let frame = c
        .codec()
        .encode("$sb:resume", &meta, Some(&json!({ "topics": topics })))
        .expect("encodable");
    c.send_raw(frame).await;
}

/// Reads what answers a resume of one topic: the replayed publications
/// (offset, value) and the `$sb:subscribed` notice after them.
pub async fn resumed(c: &mut TestClient) -> (Vec<(u64, u64)>, Subscribed) {
    let (mut replay, mut notice, mut replied) = (Vec::new(), None, false);
    while notice.is_none() || !replied {
        let envelope = c.recv().await.expect("the answer to a resume");
        match envelope.ty.as_str() {
            "SAID" => {
                assert!(notice.is_none(), "a replayed publication after the notice");
                let n = envelope.decode_payload::<Said>().expect("said").n;
                replay.push((position(&envelope.meta).offset, n));
            }
            vocab::SUBSCRIBED => {
                assert!(notice.is_none(), "a second $sb:subscribed");
                notice = Some(envelope.decode_payload().expect("notice"));
            }
            "$sb:resumed" => {
                assert!(!replied, "a second $sb:resumed");
                replied = true;
            }
            other => panic!("unexpected {other}"),
        }
    }
    (replay, notice.expect("notice"))
}
