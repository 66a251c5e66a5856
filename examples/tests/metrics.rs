//! The chat binary's `--metrics ADDR` (docs/DEPLOYMENT.md, "Metrics"): a
//! short chat over real WebSocket connections (JSON and MessagePack), then
//! `GET /metrics` parsed by Prometheus's own Python parser
//! (`prometheus_client.parser`, installed by scripts/setup): the counters
//! move as the traffic says, and 10,000 distinct rooms (topics) add no
//! series.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One parsed sample: its name and labels.
type Series = (String, BTreeMap<String, String>);

/// A parsed scrape: every sample's value by series.
struct Scrape(BTreeMap<Series, f64>);

impl Scrape {
    /// The value of `name` with exactly `labels`; 0 when absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn series(&self) -> BTreeSet<Series> {
        self.0.keys().cloned().collect()
    }
}

struct Chat {
    child: Child,
    ws: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the chat binary with `--metrics` on an ephemeral port (and
/// `extra` arguments); reads both addresses from its first line.
async fn spawn_chat(extra: &[&str]) -> Chat {
    let args: Vec<&str> = ["--metrics", "127.0.0.1:0"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    let (child, line) = spawn_chat_binary_line(&args, Stdio::inherit()).await;
    let (ws, metrics) = (
        listening_addr(&line, "ws="),
        listening_addr(&line, "metrics="),
    );
    Chat { child, ws, metrics }
}

/// `GET path` over a fresh connection: the status code and the body
/// (`/metrics` must come as the Prometheus text format).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, head, body) = http_get_with_head(addr, path).await;
    if path == "/metrics" {
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
    }
    (status, body)
}

/// Scrapes `/metrics` and parses it with `prometheus_client.parser`.
async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/parse.py");
    let mut python = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup installs what this test needs)");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser failed (scripts/setup installs prometheus_client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut parsed = BTreeMap::new();
    for s in samples {
        let labels = s["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let name = s["name"].as_str().unwrap().to_owned();
        let previous = parsed.insert((name, labels), s["value"].as_f64().unwrap());
        assert!(previous.is_none(), "a series appears twice: {s}");
    }
    Scrape(parsed)
}

/// Scrapes until `done` holds (what the server records after writing may
/// trail what the client has read), at most 20 s; returns the last scrape.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(addr).await;
        if done(&s) || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn join(client: &mut Client, room: &str) {
    client
        .send_json(
            "JOIN_ROOM",
            None,
            json!({ "roomId": room, "username": "u" }),
        )
        .await;
}

const IN: &str = "signalbox_messages_in_total";
const OUT: &str = "signalbox_messages_out_total";

#[tokio::test]
async fn metrics_follow_a_chat_and_topics_never_become_labels() {
    let chat = spawn_chat(&[]).await;
    assert_eq!(get(chat.metrics, "/").await.0, 404);

    let mut alice = connect(chat.ws, "json").await;
    let mut bob = connect(chat.ws, "msgpack").await;
    let s = scrape_until(chat.metrics, |s| {
        s.get(
            "signalbox_connections_open",
            &[("transport", "ws"), ("codec", "msgpack")],
        ) == 1.0
    })
    .await;
    for codec in ["json", "msgpack"] {
        let labels = [("transport", "ws"), ("codec", codec)];
        assert_eq!(s.get("signalbox_connections_open", &labels), 1.0);
        assert_eq!(s.get("signalbox_connections_opened_total", &labels), 1.0);
    }

    // Alice joins, then Bob (who is replayed Alice's USER_JOINED from the
    // room's history).
    join(&mut alice, "lobby").await;
    alice.expect("ROOM_MEMBERS").await;
    join(&mut bob, "lobby").await;
    bob.expect("ROOM_MEMBERS").await;
    alice.expect("USER_JOINED").await;
    // 3 messages from Alice, 2 from Bob: each to both members.
    for (client, n) in [(&mut alice, 3), (&mut bob, 2)] {
        for i in 0..n {
            client
                .send_json(
                    "SEND_MESSAGE",
                    None,
                    json!({ "roomId": "lobby", "text": format!("m{i}") }),
                )
                .await;
        }
    }
    for client in [&mut alice, &mut bob] {
        for _ in 0..5 {
            client.expect("NEW_MESSAGE").await;
        }
    }
    // Refused: a room not joined (PERMISSION_DENIED), a type with no route
    // (UNIMPLEMENTED, received as "other").
    alice
        .send_json(
            "SEND_MESSAGE",
            None,
            json!({ "roomId": "elsewhere", "text": "x" }),
        )
        .await;
    assert_eq!(
        json(&alice.expect("ERROR").await)["code"],
        "PERMISSION_DENIED"
    );
    alice.send_json("NO_SUCH_TYPE", None, json!({})).await;
    assert_eq!(json(&alice.expect("ERROR").await)["code"], "UNIMPLEMENTED");
    alice.sync("a1").await;
    bob.sync("b1").await;

    // 13 publications delivered (3 USER_JOINED, 10 NEW_MESSAGE), each
    // measured once written.
    let publish_count = "signalbox_publish_to_write_seconds_count";
    let s = scrape_until(chat.metrics, |s| s.get(publish_count, &[]) >= 13.0).await;
    let expected_in = [
        ("JOIN_ROOM", 2.0),
        ("SEND_MESSAGE", 6.0),
        ("ECHO", 2.0),
        ("other", 1.0),
    ];
    for (ty, n) in expected_in {
        assert_eq!(s.get(IN, &[("type", ty)]), n, "in {ty}");
    }
    let expected_out = [
        ("USER_JOINED", 3.0),
        ("NEW_MESSAGE", 10.0),
        ("ROOM_MEMBERS", 2.0),
        ("$sb:subscribed", 2.0),
        ("ERROR", 2.0),
        ("ECHO", 2.0),
    ];
    for (ty, n) in expected_out {
        assert_eq!(s.get(OUT, &[("type", ty)]), n, "out {ty}");
    }
    assert_eq!(s.get("signalbox_history_replayed_total", &[]), 1.0);
    assert_eq!(
        s.get("signalbox_errors_total", &[("code", "PERMISSION_DENIED")]),
        1.0
    );
    assert_eq!(
        s.get("signalbox_errors_total", &[("code", "UNIMPLEMENTED")]),
        1.0
    );
    assert_eq!(s.get("signalbox_topics", &[]), 1.0);
    assert_eq!(s.get("signalbox_subscriptions", &[]), 2.0);
    assert_eq!(s.get(publish_count, &[]), 13.0);
    assert_eq!(
        s.get(
            "signalbox_handler_duration_seconds_count",
            &[("type", "SEND_MESSAGE")]
        ),
        6.0
    );
    let le_inf = [("type", "SEND_MESSAGE"), ("le", "+Inf")];
    assert_eq!(
        s.get("signalbox_handler_duration_seconds_bucket", &le_inf),
        6.0
    );
    assert_eq!(s.get("signalbox_rate_limited_total", &[]), 0.0);
    assert_eq!(s.get("signalbox_slow_consumer_closes_total", &[]), 0.0);

    // Alice leaves by closing (1000): Bob gets USER_LEFT.
    alice.ws.close(None).await.unwrap();
    bob.expect("USER_LEFT").await;
    let closed = [("transport", "ws"), ("code", "1000")];
    let s = scrape_until(chat.metrics, |s| {
        s.get("signalbox_connections_closed_total", &closed) == 1.0
    })
    .await;
    assert_eq!(s.get("signalbox_connections_closed_total", &closed), 1.0);
    let json_conns = [("transport", "ws"), ("codec", "json")];
    assert_eq!(s.get("signalbox_connections_open", &json_conns), 0.0);
    assert_eq!(s.get(OUT, &[("type", "USER_LEFT")]), 1.0);
    assert_eq!(s.get("signalbox_subscriptions", &[]), 1.0);

    // The rate limit (1,000 messages/s, bursts of 2,000): 4,000 ECHOs at
    // once. Every refusal the client sees is counted, and no other.
    let mut carol = connect(chat.ws, "json").await;
    let n = 4_000;
    let frames: Vec<_> = (0..n)
        .map(|i| {
            let meta = signalbox::codec::Meta {
                correlation_id: Some(format!("e{i}")),
                ..Default::default()
            };
            carol.codec.encode("ECHO", &meta, Some(&json!({}))).unwrap()
        })
        .collect();
    for frame in frames {
        carol.send_frame(frame).await;
    }
    let mut refused = 0;
    for _ in 0..n {
        let env = carol.recv().await;
        match env.ty.as_str() {
            "ECHO" => {}
            "ERROR" | "RPC_ERROR" => {
                assert_eq!(json(&env)["code"], "RESOURCE_EXHAUSTED");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "4,000 at once pass a burst of 2,000");
    let s = scrape(chat.metrics).await;
    assert_eq!(
        s.get("signalbox_rate_limited_total", &[]),
        f64::from(refused)
    );
    assert_eq!(
        s.get("signalbox_errors_total", &[("code", "RESOURCE_EXHAUSTED")]),
        f64::from(refused)
    );
    carol.ws.close(None).await.unwrap();

    // 10,000 distinct rooms (topics), each joined (subscribe, publish
    // USER_JOINED) and left (publish USER_LEFT), by 20 connections side by
    // side; one room first so that every series exists before.
    let mut dave = connect(chat.ws, "msgpack").await;
    join(&mut dave, "warm-up").await;
    dave.send_json("LEAVE_ROOM", None, json!({ "roomId": "warm-up" }))
        .await;
    dave.sync("d1").await;
    let before = scrape_until(chat.metrics, |s| {
        s.get("signalbox_subscriptions", &[]) == 1.0
    })
    .await;
    let joins_before = before.get(IN, &[("type", "JOIN_ROOM")]);
    let workers: Vec<_> = (0..20)
        .map(|w| {
            let addr = chat.ws;
            tokio::spawn(async move {
                let codec = if w % 2 == 0 { "json" } else { "msgpack" };
                let mut c = connect(addr, codec).await;
                for batch in 0..5 {
                    for i in 0..100 {
                        let room = format!("room-{w}-{batch}-{i}");
                        join(&mut c, &room).await;
                        c.send_json("LEAVE_ROOM", None, json!({ "roomId": room }))
                            .await;
                    }
                    c.sync(&format!("w{w}-{batch}")).await;
                }
                c.ws.close(None).await.unwrap();
            })
        })
        .collect();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("10,000 rooms within two minutes")
            .unwrap();
    }
    let after = scrape_until(chat.metrics, |s| {
        s.get("signalbox_subscriptions", &[]) == 1.0
            && s.get(
                "signalbox_connections_open",
                &[("transport", "ws"), ("codec", "json")],
            ) == 0.0
    })
    .await;
    assert_eq!(
        after.get(IN, &[("type", "JOIN_ROOM")]) - joins_before,
        10_000.0
    );
    assert_eq!(
        after.get(IN, &[("type", "LEAVE_ROOM")]) - before.get(IN, &[("type", "LEAVE_ROOM")]),
        10_000.0
    );
    assert_eq!(
        after.get("signalbox_topics", &[]),
        1.0,
        "only the lobby is held"
    );
    let (b, a) = (before.series(), after.series());
    let added: Vec<_> = a.difference(&b).collect();
    assert!(added.is_empty(), "10,000 rooms added series: {added:?}");
    assert!(a.len() < 400, "{} series", a.len());
    for (name, labels) in &a {
        for value in labels.values() {
            assert!(
                !value.contains("room"),
                "a topic became a label: {name} {labels:?}"
            );
        }
    }
}

#[tokio::test]
async fn redis_broker_metrics_follow_its_connections_and_publishes() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let chat = spawn_chat(&["--redis", &url]).await;
    let connected =
        |s: &Scrape, conn: &str| s.get("signalbox_redis_connected", &[("connection", conn)]);
    let s = scrape_until(chat.metrics, |s| {
        connected(s, "publisher") == 1.0 && connected(s, "subscriber") == 1.0
    })
    .await;
    assert_eq!(
        (connected(&s, "publisher"), connected(&s, "subscriber")),
        (1.0, 1.0)
    );
    let publishes = "signalbox_redis_publish_duration_seconds_count";
    assert_eq!(s.get(publishes, &[]), 0.0);

    // Rooms keep their history in Redis: USER_JOINED and 3 NEW_MESSAGE are
    // 4 publishes to Redis, each delivered back through it.
    let mut alice = connect(chat.ws, "json").await;
    join(&mut alice, "lobby").await;
    alice.expect("USER_JOINED").await;
    for i in 0..3 {
        alice
            .send_json(
                "SEND_MESSAGE",
                None,
                json!({ "roomId": "lobby", "text": format!("m{i}") }),
            )
            .await;
        alice.expect("NEW_MESSAGE").await;
    }
    // A publish is timed when Redis answers the script, which may be after
    // its message came back through the subscriber.
    let s = scrape_until(chat.metrics, |s| s.get(publishes, &[]) >= 4.0).await;
    assert_eq!(s.get(publishes, &[]), 4.0);
    assert_eq!(s.get("signalbox_redis_publish_failures_total", &[]), 0.0);
    let reconnects =
        |s: &Scrape, conn: &str| s.get("signalbox_redis_reconnects_total", &[("connection", conn)]);
    assert_eq!(
        (reconnects(&s, "publisher"), reconnects(&s, "subscriber")),
        (0.0, 0.0)
    );

    // Redis restarts: both connections are lost and come back.
    redis.restart_empty().await;
    let s = scrape_until(chat.metrics, |s| {
        reconnects(s, "publisher") == 1.0
            && reconnects(s, "subscriber") == 1.0
            && connected(s, "publisher") == 1.0
            && connected(s, "subscriber") == 1.0
    })
    .await;
    assert_eq!(
        (reconnects(&s, "publisher"), reconnects(&s, "subscriber")),
        (1.0, 1.0)
    );
    assert_eq!(
        (connected(&s, "publisher"), connected(&s, "subscriber")),
        (1.0, 1.0)
    );
}
