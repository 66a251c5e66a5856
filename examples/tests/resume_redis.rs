//! Resume across nodes (docs/PROTOCOL.md §8.1): two chat nodes sharing a
//! real Redis, real WebSocket connections, the Rust client. A member cut
//! off mid-stream reconnects to the other node and ends with every message
//! exactly once and in order; after Redis lost its data it is told "not
//! recovered" instead of meeting a silent gap.

mod common;

use common::{Proxy, RedisServer, cut_and_wait, wait_until};
use signalbox::Hub;
use signalbox::client::{Client, Recovery};
use signalbox_examples::chat::{self, JoinRoom, NewMessage, room_topic};
use signalbox_redis::RedisBroker;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A chat node in this process: its hub, its WebSocket address, its broker.
async fn node(redis: &str) -> (Hub, SocketAddr, RedisBroker) {
    let broker = RedisBroker::builder(redis).build().unwrap();
    let hub = chat::builder(chat::config()).broker(broker.clone()).build();
    assert!(broker.wait_connected(Duration::from_secs(5)).await);
    let server = chat::ws_server(hub.clone(), "127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    (hub, addr, broker)
}

/// A client through `proxy` that records the numbers of the NEW_MESSAGEs it
/// gets, joined to `room`.
async fn member(proxy: &Proxy, room: &str) -> (Client, Arc<Mutex<Vec<u64>>>) {
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let connector =
        signalbox_ws::WsConnector::new(&format!("ws://{}/ws", proxy.addr), "msgpack").unwrap();
    let client = Client::builder(connector)
        .backoff(Duration::from_millis(50), Duration::from_millis(300))
        .on({
            let seen = seen.clone();
            move |m: NewMessage, _| seen.lock().unwrap().push(m.text.parse().expect("a number"))
        })
        .build();
    assert!(client.wait_connected(Duration::from_secs(5)).await);
    client
        .send(&JoinRoom {
            room_id: room.into(),
            username: Some("m".into()),
        })
        .await
        .unwrap();
    let topic = room_topic(room);
    wait_until("subscribed", Duration::from_secs(5), || {
        client.positions().iter().any(|(t, _)| *t == topic)
    })
    .await;
    (client, seen)
}

fn said(room: &str, n: u64) -> NewMessage {
    NewMessage {
        room_id: room.into(),
        user_id: "server".into(),
        text: n.to_string(),
        timestamp: 0,
    }
}

async fn recovery(recoveries: &mut tokio::sync::broadcast::Receiver<Recovery>) -> Recovery {
    tokio::time::timeout(Duration::from_secs(10), recoveries.recv())
        .await
        .expect("a recovery report")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_resumes_on_the_other_node_with_every_message_once_and_in_order() {
    const TOTAL: u64 = 10_000;
    let redis = RedisServer::start().await;
    let (_a, a_addr, _) = node(&redis.url()).await;
    let (b, b_addr, _) = node(&redis.url()).await;
    let proxy = Proxy::start(a_addr).await;
    let (client, seen) = member(&proxy, "across").await;
    let mut recoveries = client.recoveries();

    // Published on node B; the member is on node A, then on B.
    let publisher = tokio::spawn(async move {
        let topic = room_topic("across");
        for n in 1..=TOTAL {
            b.publish(&topic, &said("across", n)).await.unwrap();
            if n % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    wait_until("a fifth of the stream", Duration::from_secs(20), || {
        seen.lock().unwrap().len() >= 2_000
    })
    .await;
    assert!(!publisher.is_finished(), "the cut must fall mid-stream");
    proxy.switch_to(b_addr);
    cut_and_wait(&client, &proxy).await;
    let recovered = recovery(&mut recoveries).await;
    assert!(recovered.recovered, "{recovered:?}");
    publisher.await.unwrap();
    wait_until("every message", Duration::from_secs(30), || {
        seen.lock().unwrap().len() as u64 >= TOTAL
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    common::assert_exactly_once_in_order(&seen.lock().unwrap(), TOTAL);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_lost_its_data_a_resume_is_not_recovered_and_nothing_comes_twice() {
    let mut redis = RedisServer::start().await;
    let (_a, a_addr, a_broker) = node(&redis.url()).await;
    let (b, b_addr, b_broker) = node(&redis.url()).await;
    let topic = room_topic("flushed");
    let proxy = Proxy::start(a_addr).await;
    let (client, seen) = member(&proxy, "flushed").await;
    let mut recoveries = client.recoveries();
    for n in 1..=100 {
        b.publish(&topic, &said("flushed", n)).await.unwrap();
    }
    wait_until("the first hundred", Duration::from_secs(10), || {
        seen.lock().unwrap().len() >= 100
    })
    .await;
    let before = client
        .positions()
        .into_iter()
        .find(|(t, _)| *t == topic)
        .expect("a position")
        .1;

    proxy.switch_to(b_addr);
    cut_and_wait(&client, &proxy).await;
    redis.restart_empty().await;
    for broker in [&a_broker, &b_broker] {
        assert!(broker.wait_connected(Duration::from_secs(10)).await);
    }
    // Said while the member was away, in a history that starts anew.
    let mut published = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while published < 50 {
        if b.publish(&topic, &said("flushed", 101 + published))
            .await
            .is_ok()
        {
            published += 1;
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing never resumed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let report = recovery(&mut recoveries).await;
    assert!(!report.recovered, "{report:?}");
    assert_ne!(report.position.epoch, before.epoch, "a new epoch");
    for n in 151..=160 {
        b.publish(&topic, &said("flushed", n)).await.unwrap();
    }
    wait_until("the live ones", Duration::from_secs(10), || {
        seen.lock().unwrap().contains(&160)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "something came twice: {seen:?}");
    assert!(
        (1..=100).chain(151..=160).all(|n| seen.contains(&n)),
        "{seen:?}"
    );
    client.close().await;
}
