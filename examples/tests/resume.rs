//! Resume over real sockets (docs/PROTOCOL.md §8): a chat member whose TCP
//! connection is reset mid-stream reconnects with the Rust client and ends
//! with every message of its room exactly once and in order.

mod common;

use common::Proxy;
use signalbox::client::Client;
use signalbox_examples::chat::{JoinRoom, NewMessage, room_topic};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reset_mid_stream_resumes_with_every_message_once_and_in_order() {
    const TOTAL: u64 = 10_000;
    let (hub, addr) = common::start_chat().await;
    let proxy = Proxy::start(addr).await;
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let connector =
        signalbox_ws::WsConnector::new(&format!("ws://{}/ws", proxy.addr), "json").unwrap();
    let client = Client::builder(connector)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .on({
            let seen = seen.clone();
            move |m: NewMessage, _| {
                let n = m.text.parse::<u64>().expect("a number");
                seen.lock().unwrap().push(n);
            }
        })
        .build();
    let mut recoveries = client.recoveries();
    assert!(client.wait_connected(Duration::from_secs(5)).await);
    client
        .send(&JoinRoom {
            room_id: "resume".into(),
            username: Some("r".into()),
        })
        .await
        .unwrap();
    let topic = room_topic("resume");
    common::wait_until("subscribed", Duration::from_secs(5), || {
        client.positions().iter().any(|(t, _)| *t == topic)
    })
    .await;

    let publisher = tokio::spawn({
        let hub = hub.clone();
        let topic = topic.clone();
        async move {
            for n in 1..=TOTAL {
                let msg = NewMessage {
                    room_id: "resume".into(),
                    user_id: "server".into(),
                    text: n.to_string(),
                    timestamp: 0,
                };
                hub.publish(&topic, &msg).await.unwrap();
                if n % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    });
    // Cut once a fifth has arrived, while the publisher goes on.
    common::wait_until("a fifth of the stream", Duration::from_secs(20), || {
        seen.lock().unwrap().len() >= 2_000
    })
    .await;
    assert!(!publisher.is_finished(), "the cut must fall mid-stream");
    common::cut_and_wait(&client, &proxy).await;
    let recovery = tokio::time::timeout(Duration::from_secs(10), recoveries.recv())
        .await
        .expect("a recovery report")
        .unwrap();
    assert_eq!(recovery.topic, topic);
    assert!(recovery.recovered, "{recovery:?}");
    publisher.await.unwrap();
    common::wait_until("every message", Duration::from_secs(20), || {
        seen.lock().unwrap().len() as u64 >= TOTAL
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    common::assert_exactly_once_in_order(&seen.lock().unwrap(), TOTAL);
    client.close().await;
}
