//! A master found through Redis Sentinel: two nodes share it; the master
//! is killed and Sentinel promotes its replica while a publisher runs:
//! the brokers follow the new master, publications keep flowing, and the
//! topic starts a new epoch on it (the replica may lack the last
//! publications), so a resume from before is "not recovered".

mod support;

use signalbox::Position;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::positions::{HistoryNode, Said, enter, resume, resumed, said};
use support::sentinel::{SERVICE, Watched};
use support::sentinel_broker_builder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_follow_a_failover_behind_sentinel() {
    let mut watched = Watched::start().await;
    let sentinels = vec![watched.sentinel_url()];
    let node = |name: &str| {
        sentinel_broker_builder(&sentinels, SERVICE, name, "sen:")
            .build()
            .expect("broker builds")
    };
    let a = HistoryNode::start(node("a")).await;
    let b = HistoryNode::start(node("b")).await;
    let topic = "room:sentinel";
    let mut on_b = b.hub.connect("json").await;
    let start = enter(&mut on_b, topic).await;
    b.subscribed(topic).await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let hub = a.hub.hub().clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut n, mut failed) = (0u64, 0u32);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let deadline = Instant::now() + Duration::from_secs(30);
                while hub.publish(topic, &Said { n }).await.is_err() {
                    failed += 1;
                    assert!(Instant::now() < deadline, "publish {n} never succeeded");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (n, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replica = watched.replica.port();
    let killed_at = Instant::now();
    watched.master.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while watched.master_port().await != Some(replica) {
        assert!(
            Instant::now() < deadline,
            "Sentinel did not promote the replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failover = killed_at.elapsed();
    b.subscribed(topic).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let (last, failed) = running.await.expect("publisher");
    assert!(failed > 0, "no publish failed: the master was not killed");

    let mut got: Vec<(u64, Position)> = Vec::new();
    while got.last().map(|(n, _)| *n) != Some(last) {
        got.push(said(&mut on_b).await);
    }
    let values: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    let mut distinct = values.clone();
    distinct.dedup();
    let missing: Vec<u64> = (1..=last).filter(|n| !distinct.contains(n)).collect();
    let mut epochs: Vec<&str> = got.iter().map(|(_, p)| p.epoch.as_str()).collect();
    epochs.dedup();
    eprintln!(
        "failover after {failover:?}: {last} values, {failed} failed attempts, {} received, \
         missing {missing:?}, epochs {epochs:?}, caught up {}",
        values.len(),
        b.broker.stats().caught_up
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    assert_eq!(
        epochs.len(),
        2,
        "one new epoch on the new master: {epochs:?}"
    );
    assert_eq!(epochs[0], start.epoch);
    let last_before = got
        .iter()
        .rev()
        .find(|(_, p)| p.epoch == start.epoch)
        .map(|(_, p)| p.clone())
        .expect("publications before the failover");
    let mut late = a.hub.connect("msgpack").await;
    resume(&mut late, topic, &last_before).await;
    let (_, notice) = resumed(&mut late).await;
    assert_eq!(notice.recovered, Some(false));
    assert_eq!(
        notice.epoch,
        got.last().expect("got").1.epoch,
        "the new master's epoch"
    );
}

#[tokio::test]
async fn tls_behind_sentinel_is_refused_at_build() {
    let err = signalbox_redis::RedisBroker::sentinel_builder(["rediss://127.0.0.1:1/"], SERVICE)
        .build()
        .expect_err("not built");
    assert!(err.to_string().contains("Sentinel"), "{err}");
}
