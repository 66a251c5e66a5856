//! Topic history, positions, resume and presence, through the in-memory
//! harness: the replay/live seam, trimming by count and age, epochs.

use serde::{Deserialize, Serialize};
use serde_json::json;
use signalbox::codec::Meta;
use signalbox::codec::vocab;
use signalbox::testing::{TestClient, TestHub};
use signalbox::{
    Ctx, Error, HistoryLimits, Hub, Position, Router, SubscribeOptions, Subscribed, TopicAction,
    TopicPattern, message,
};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Join {
    topic: String,
    #[serde(default)]
    last: usize,
    #[serde(default)]
    name: Option<String>,
}
message!(Join = "JOIN");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Said {
    n: u64,
}
message!(Said = "SAID");

fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Join>| async move {
            let Join { topic, last, name } = ctx.payload();
            let mut options = SubscribeOptions::default().last(*last);
            if let Some(name) = name {
                options = options.presence(json!({ "name": name }));
            }
            ctx.subscribe_with(topic, options).map(drop)
        })
        .authorize_topics(|_conn, topic, action| {
            if action == TopicAction::Subscribe && topic.starts_with("room:secret") {
                return Err(Error::permission_denied("not for you"));
            }
            Ok(())
        })
}

fn hub_with(limits: HistoryLimits) -> TestHub {
    TestHub::from_builder(
        Hub::builder(router())
            .history(TopicPattern::prefix("room:"), limits)
            .presence(TopicPattern::prefix("room:")),
    )
}

fn join(topic: &str) -> Join {
    Join {
        topic: topic.into(),
        last: 0,
        name: None,
    }
}

/// Reads a `$sb:subscribed` notice.
async fn subscribed(c: &mut TestClient) -> Subscribed {
    let envelope = c.recv().await.expect("a message");
    assert_eq!(envelope.ty, vocab::SUBSCRIBED, "got {envelope:?}");
    envelope.decode_payload().expect("a subscribed payload")
}

/// Reads a publication and its position.
async fn said(c: &mut TestClient) -> (u64, Position) {
    let (msg, meta) = c.expect::<Said>().await;
    (msg.n, position(&meta))
}

fn position(meta: &Meta) -> Position {
    Position::new(
        meta.extra["epoch"].as_str().expect("epoch"),
        meta.extra["offset"].as_u64().expect("offset"),
    )
}

async fn resume(c: &mut TestClient, topics: serde_json::Value, id: &str) {
    let meta = Meta {
        correlation_id: Some(id.into()),
        ..Meta::default()
    };
    let frame = c
        .codec()
        .encode("$sb:resume", &meta, Some(&json!({ "topics": topics })))
        .expect("encodable");
    c.send_raw(frame).await;
}

async fn publish(hub: &TestHub, topic: &str, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        hub.hub()
            .publish(topic, &Said { n })
            .await
            .expect("published");
    }
}

#[tokio::test]
async fn publications_carry_their_topic_and_position_and_subscribing_tells_where_it_starts() {
    let hub = hub_with(HistoryLimits::default());
    publish(&hub, "room:a", 1..=2).await;
    let mut a = hub.connect("json").await;
    a.send(&join("room:a")).await;
    let start = subscribed(&mut a).await;
    assert_eq!(start.topic, "room:a");
    assert_eq!(start.offset, 2);
    assert_eq!(start.recovered, None);
    publish(&hub, "room:a", 3..=5).await;
    for expected in 3..=5 {
        let envelope = a.recv().await.expect("a publication");
        assert_eq!(envelope.meta.extra["topic"], "room:a");
        let p = position(&envelope.meta);
        assert_eq!(
            (p.epoch.as_str(), p.offset),
            (start.epoch.as_str(), expected)
        );
    }
    assert_eq!(
        hub.hub().position("room:a").await.unwrap(),
        Some(Position::new(start.epoch, 5))
    );
    // A topic without history has no position and no notice.
    assert_eq!(hub.hub().position("other").await.unwrap(), None);
}

#[tokio::test]
async fn a_resume_replays_exactly_what_was_missed_then_goes_live() {
    let hub = hub_with(HistoryLimits::default());
    let mut a = hub.connect("json").await;
    a.send(&join("room:a")).await;
    let start = subscribed(&mut a).await;
    publish(&hub, "room:a", 1..=3).await;
    let mut last = None;
    for n in 1..=3 {
        let (got, p) = said(&mut a).await;
        assert_eq!(got, n);
        last = Some(p);
    }
    let last = last.unwrap();
    assert_eq!(last.epoch, start.epoch);
    a.hang_up();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&hub, "room:a", 4..=10).await;

    // Another codec than the one the history was encoded in: transcoded.
    let mut b = hub.connect("msgpack").await;
    resume(
        &mut b,
        json!([{ "topic": "room:a", "epoch": last.epoch, "offset": last.offset }]),
        "r1",
    )
    .await;
    for n in 4..=10 {
        let (got, p) = said(&mut b).await;
        assert_eq!((got, p.offset), (n, n));
    }
    let notice = subscribed(&mut b).await;
    assert_eq!(notice.recovered, Some(true));
    assert_eq!(notice.offset, 10);
    let reply = b.recv().await.expect("the resume reply");
    assert_eq!(reply.ty, "$sb:resumed");
    assert_eq!(reply.meta.correlation_id.as_deref(), Some("r1"));
    let body: serde_json::Value = reply.decode_payload().unwrap();
    assert_eq!(body, json!({ "topics": [{ "topic": "room:a" }] }));
    publish(&hub, "room:a", 11..=11).await;
    assert_eq!(said(&mut b).await.0, 11);
    b.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test(start_paused = true)]
async fn what_history_cannot_cover_is_reported_not_recovered() {
    let hub = hub_with(HistoryLimits::new(5, Duration::from_secs(60)));
    publish(&hub, "room:a", 1..=10).await;
    let epoch = hub.hub().position("room:a").await.unwrap().unwrap().epoch;
    let mut c = hub.connect("json").await;
    // Trimmed by count: 6..=10 kept, a client at 4 missed 5.
    resume(
        &mut c,
        json!([{ "topic": "room:a", "epoch": epoch, "offset": 4 }]),
        "1",
    )
    .await;
    let notice = subscribed(&mut c).await;
    assert_eq!((notice.recovered, notice.offset), (Some(false), 10));
    assert_eq!(c.recv().await.unwrap().ty, "$sb:resumed");

    // Another epoch (a restart, a flushed store): never a silent gap.
    let mut d = hub.connect("json").await;
    resume(
        &mut d,
        json!([{ "topic": "room:a", "epoch": "elsewhere", "offset": 9 }]),
        "2",
    )
    .await;
    assert_eq!(subscribed(&mut d).await.recovered, Some(false));

    // Trimmed by age: after the window only a client that missed nothing
    // is recovered.
    tokio::time::advance(Duration::from_secs(61)).await;
    let mut e = hub.connect("json").await;
    resume(
        &mut e,
        json!([
            { "topic": "room:a", "epoch": epoch, "offset": 10 },
            { "topic": "room:b", "epoch": "x", "offset": 0 }
        ]),
        "3",
    )
    .await;
    let notice = subscribed(&mut e).await;
    assert_eq!(
        (notice.topic.as_str(), notice.recovered),
        ("room:a", Some(true))
    );
    assert_eq!(subscribed(&mut e).await.recovered, Some(false));
    let mut f = hub.connect("json").await;
    resume(
        &mut f,
        json!([{ "topic": "room:a", "epoch": epoch, "offset": 9 }]),
        "4",
    )
    .await;
    assert_eq!(subscribed(&mut f).await.recovered, Some(false));
}

#[tokio::test]
async fn a_joiner_can_start_with_the_latest_publications() {
    let hub = hub_with(HistoryLimits::default());
    publish(&hub, "room:a", 1..=80).await;
    let mut c = hub.connect("json").await;
    c.send(&Join {
        topic: "room:a".into(),
        last: 50,
        name: None,
    })
    .await;
    for n in 31..=80 {
        assert_eq!(said(&mut c).await.0, n);
    }
    assert_eq!(subscribed(&mut c).await.offset, 80);
    publish(&hub, "room:a", 81..=81).await;
    assert_eq!(said(&mut c).await.0, 81);
}

#[tokio::test]
async fn resume_refusals_are_listed_and_bad_requests_answered() {
    let hub = hub_with(HistoryLimits::default());
    let mut c = hub.connect("json").await;
    resume(
        &mut c,
        json!([
            { "topic": "room:secret", "epoch": "e", "offset": 1 },
            { "topic": "bad topic!", "epoch": "e", "offset": 1 }
        ]),
        "r",
    )
    .await;
    let reply = c.recv().await.unwrap();
    assert_eq!(reply.ty, "$sb:resumed");
    let body: serde_json::Value = reply.decode_payload().unwrap();
    assert_eq!(body["topics"][0]["error"]["code"], "PERMISSION_DENIED");
    assert_eq!(body["topics"][1]["error"]["code"], "INVALID_ARGUMENT");
    // Not a list of topics: an error, and the connection goes on.
    let frame = c
        .codec()
        .encode(
            "$sb:resume",
            &Meta::default(),
            Some(&json!({ "topics": 3 })),
        )
        .unwrap();
    c.send_raw(frame).await;
    let (error, _) = c.expect_error("ERROR").await;
    assert_eq!(error.code.as_str(), "INVALID_ARGUMENT");
    c.send(&join("room:a")).await;
    assert_eq!(subscribed(&mut c).await.offset, 0);
    // A topic held already is left as it is.
    resume(
        &mut c,
        json!([{ "topic": "room:a", "epoch": "e", "offset": 0 }]),
        "again",
    )
    .await;
    let reply = c.recv().await.unwrap();
    assert_eq!(reply.ty, "$sb:resumed");
    let body: serde_json::Value = reply.decode_payload().unwrap();
    assert_eq!(body["topics"][0]["error"]["code"], "ALREADY_EXISTS");
}

/// The seam between a replay and live delivery, with a publisher running
/// on another thread the whole time: every publication exactly once, in
/// order. The resumer missed more than half an outbound queue, so its
/// replay goes out at the pace it reads while live publications wait in
/// its gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_and_live_seam_has_no_gap_and_no_duplicate_under_concurrent_publishes() {
    const TOTAL: u64 = 5_000;
    // A small outbound queue (64 KiB), so that the replay is far more than
    // half of it.
    let mut config = signalbox::Config::default();
    config.outbound_queue_bytes = 64 * 1024;
    let hub = TestHub::from_builder(Hub::builder(router()).config(config).history(
        TopicPattern::prefix("room:"),
        HistoryLimits::new(10_000, Duration::from_secs(300)),
    ));
    let mut a = hub.connect("json").await;
    a.send(&join("room:a")).await;
    subscribed(&mut a).await;
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                hub.hub().publish("room:a", &Said { n }).await.unwrap();
                // Paced like a busy room, not a flood: a reader keeps up.
                if n % 32 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut seen = Vec::new();
    let mut last = None;
    while seen.len() < 700 {
        let (n, p) = said(&mut a).await;
        seen.push(n);
        last = Some(p);
    }
    a.hang_up();
    let last = last.unwrap();
    // Let it miss at least 1,500 (over 100 KB: more than half the queue).
    loop {
        let top = hub.hub().position("room:a").await.unwrap().unwrap().offset;
        if top >= last.offset + 1_500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        !publisher.is_finished(),
        "the resume must overlap publishing"
    );
    let mut b = hub.connect("msgpack").await;
    resume(
        &mut b,
        json!([{ "topic": "room:a", "epoch": last.epoch, "offset": last.offset }]),
        "r",
    )
    .await;
    let mut recovered = None;
    while seen.len() < TOTAL as usize {
        let Some(envelope) = b.recv().await else {
            panic!(
                "stream ended after {} publications: {:?}",
                seen.len(),
                b.closed().await
            );
        };
        match envelope.ty.as_str() {
            "SAID" => seen.push(envelope.decode_payload::<Said>().unwrap().n),
            vocab::SUBSCRIBED => {
                recovered = envelope.decode_payload::<Subscribed>().unwrap().recovered;
            }
            "$sb:resumed" => {}
            other => panic!("unexpected {other}"),
        }
    }
    publisher.await.unwrap();
    assert_eq!(recovered, Some(true));
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(seen, expected);
    b.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn presence_lists_subscribers_with_their_info() {
    let hub = hub_with(HistoryLimits::default());
    let mut a = hub.connect("json").await;
    let mut b = hub.connect("json").await;
    for (c, name) in [(&mut a, "ann"), (&mut b, "bob")] {
        c.send(&Join {
            topic: "room:a".into(),
            last: 0,
            name: Some(name.into()),
        })
        .await;
        subscribed(c).await;
    }
    let list = hub.hub().presence("room:a").await.unwrap();
    let names: Vec<&str> = list
        .iter()
        .map(|e| e.info["name"].as_str().unwrap())
        .collect();
    assert_eq!(list.len(), 2);
    assert!(names.contains(&"ann") && names.contains(&"bob"));
    b.hang_up();
    let mut left = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if hub.hub().presence("room:a").await.unwrap().len() == 1 {
            left = true;
            break;
        }
    }
    assert!(left, "bob's entry outlived its connection");
    assert!(hub.hub().presence("other").await.unwrap().is_empty());
}

#[tokio::test]
async fn presence_events_tell_subscribers_who_comes_and_goes() {
    let hub = TestHub::from_builder(
        Hub::builder(router()).presence_events(TopicPattern::prefix("lobby")),
    );
    let mut a = hub.connect("json").await;
    let mut b = hub.connect("msgpack").await;
    a.send(&Join {
        topic: "lobby".into(),
        last: 0,
        name: Some("ann".into()),
    })
    .await;
    let (own, _) = a.expect::<signalbox::PresenceJoined>().await;
    assert_eq!(own.info, json!({ "name": "ann" }));
    b.send(&Join {
        topic: "lobby".into(),
        last: 0,
        name: None,
    })
    .await;
    let (joined, _) = a.expect::<signalbox::PresenceJoined>().await;
    let (own, _) = b.expect::<signalbox::PresenceJoined>().await;
    assert_eq!(joined, own);
    assert_eq!(joined.info, serde_json::Value::Null);
    b.hang_up();
    let (left, _) = a.expect::<signalbox::PresenceLeft>().await;
    assert_eq!(left.client_id, joined.client_id);
    assert_eq!(left.topic, "lobby");
    // Without events, presence is only listed.
    let quiet = hub_with(HistoryLimits::default());
    let mut c = quiet.connect("json").await;
    c.send(&join("room:q")).await;
    subscribed(&mut c).await;
    c.expect_silence(Duration::from_millis(50)).await;
}
