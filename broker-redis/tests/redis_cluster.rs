//! A Redis Cluster (three masters, one replica each) started by the test:
//! sharded pub/sub carries messages between nodes for topics on every
//! master, each topic's keys live in its channel's slot, history is kept
//! and resumed; a master is killed and its replica promoted while a
//! publisher runs: publications keep flowing, and what the failover may
//! have lost is reported (a new epoch: resumes from before are "not
//! recovered"), never silent.

mod support;

use signalbox::Position;
use signalbox_redis::RedisBroker;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::cluster::{RedisCluster, cli};
use support::positions::{HistoryNode, enter, resume, resumed, said};
use support::tls::pki;
use support::{Node, Posted, cluster_broker_builder, eventually, post};

fn broker(cluster: &RedisCluster, node: &str, prefix: &str) -> RedisBroker {
    cluster_broker_builder(&cluster.urls(), node, prefix)
        .build()
        .expect("broker builds")
}

/// The port of the master serving `topic`'s channel.
async fn master_of(cluster: &RedisCluster, broker: &RedisBroker, topic: &str) -> u16 {
    let ask = cluster.servers[0].port();
    let slot = cluster.slot_of(ask, &broker.config().channel(topic)).await;
    cluster
        .master_of_slot(ask, slot)
        .await
        .expect("a master serves the slot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_on_every_master_cross_nodes_with_their_keys_in_their_slot() {
    let cluster = RedisCluster::start(3, 1).await;
    let a = Node::start_with(broker(&cluster, "a", "cl:")).await;
    let b = Node::start_with(broker(&cluster, "b", "cl:")).await;
    // Enough topics that every master serves some.
    let topics: Vec<String> = (0..12).map(|i| format!("room-{i}")).collect();
    let mut masters = HashSet::new();
    for topic in &topics {
        masters.insert(master_of(&cluster, &a.broker, topic).await);
    }
    assert_eq!(masters.len(), 3, "the topics land on all three masters");
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for topic in &topics {
        senders.push(a.member("json", topic).await);
        receivers.push(b.member("msgpack", topic).await);
    }
    for topic in &topics {
        a.subscribed(topic).await;
        b.subscribed(topic).await;
    }
    for (topic, c) in topics.iter().zip(&mut senders) {
        c.send(&post(topic, &format!("hello {topic}"))).await;
    }
    for (topic, c) in topics.iter().zip(&mut receivers) {
        assert_eq!(
            c.expect::<Posted>().await.0.0.text,
            format!("hello {topic}")
        );
    }
    let n = topics.len() as u64;
    let (sender, receiver) = (a.broker.clone(), b.broker.clone());
    eventually(
        "A and B count what they did",
        Duration::from_secs(5),
        || {
            let (s, r) = (sender.stats(), receiver.stats());
            async move { s.published == n && r.received == n }
        },
    )
    .await;
    assert_eq!(a.broker.stats().malformed + b.broker.stats().malformed, 0);
    // Membership counts cross nodes too (hashes in the topics' slots).
    let hub_b = b.hub.hub().clone();
    eventually("B sees A's member", Duration::from_secs(5), || {
        let hub = hub_b.clone();
        async move { hub.topic_size_everywhere("room-0").await.ok() == Some(2) }
    })
    .await;
    // The membership hash is on the master of the topic's channel.
    let config = a.broker.config();
    let owner = master_of(&cluster, &a.broker, "room-0").await;
    let key = config.members_key("room-0");
    assert!(key.contains("{room-0}"), "{key}");
    assert_eq!(
        cli(owner, &["exists", &key]).await.trim(),
        "1",
        "{key} on {owner}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_a_cluster_is_shared_and_resumed_on_the_other_node() {
    let cluster = RedisCluster::start(3, 1).await;
    let a = HistoryNode::start(broker(&cluster, "a", "clh:")).await;
    let b = HistoryNode::start(broker(&cluster, "b", "clh:")).await;
    history_is_shared(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_carries_messages_and_history() {
    let pki = pki("signalbox test CA");
    let cluster = RedisCluster::start_tls(3, 1, &pki).await;
    assert!(cluster.urls()[0].starts_with("rediss://"));
    let tls = |node: &str| {
        cluster_broker_builder(&cluster.urls(), node, "cltls:")
            .tls_ca_pem(pki.ca_pem.as_bytes())
            .tls_client_cert(pki.client_pem.as_bytes(), pki.client_key.as_bytes())
            .build()
            .expect("broker builds")
    };
    let a = HistoryNode::start(tls("a")).await;
    let b = HistoryNode::start(tls("b")).await;
    history_is_shared(&a, &b).await;
    // Without the client certificate the cluster refuses the broker.
    let refused = cluster_broker_builder(&cluster.urls(), "x", "cltls:")
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .build()
        .expect("broker builds");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!refused.status().publisher);
}

/// Publications on A reach B's subscriber with their positions, and a
/// client resumes on A from history; for topic names with and without
/// braces.
async fn history_is_shared(a: &HistoryNode, b: &HistoryNode) {
    // Braces in a topic name (when the hub allows them) do not break the
    // hash tag: a `}` makes the tag the topic's hash.
    for topic in ["room:plain", "room:{odd", "room:}odd{"] {
        let mut on_b = b.hub.connect("json").await;
        let start = enter(&mut on_b, topic).await;
        b.subscribed(topic).await;
        for n in 1..=5 {
            a.publish_retrying(topic, n, Duration::from_secs(1)).await;
        }
        for n in 1..=5 {
            let (value, position) = said(&mut on_b).await;
            assert_eq!((value, position.offset), (n, start.offset + n), "{topic}");
            assert_eq!(position.epoch, start.epoch);
        }
        let mut on_a = a.hub.connect("msgpack").await;
        resume(&mut on_a, topic, &Position::new(start.epoch.clone(), 2)).await;
        let (replay, notice) = resumed(&mut on_a).await;
        assert_eq!(replay, [(3, 3), (4, 4), (5, 5)], "{topic}");
        assert_eq!(notice.recovered, Some(true));
    }
}

/// Publishes 1, 2, … on `topic` from `node` until `stop`, retrying each
/// value while the cluster is unavailable; returns every value whose
/// publish was acknowledged, and the failed attempts.
fn publisher(
    node: &HistoryNode,
    topic: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u32)> {
    let hub = node.hub.hub().clone();
    tokio::spawn(async move {
        let (mut n, mut failed) = (0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let deadline = Instant::now() + Duration::from_secs(20);
            while hub
                .publish(topic, &support::positions::Said { n })
                .await
                .is_err()
            {
                failed += 1;
                assert!(Instant::now() < deadline, "publish {n} never succeeded");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (n, failed)
    })
}

/// Waits until the replica on `replica` has taken over as a master.
async fn promoted(replica: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(replica, &["info", "replication"])
        .await
        .contains("role:master")
    {
        assert!(Instant::now() < deadline, "the replica was not promoted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_keep_flowing_when_a_master_fails_over_to_its_replica() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let a = HistoryNode::start(broker(&cluster, "a", "fo:")).await;
    let b = HistoryNode::start(broker(&cluster, "b", "fo:")).await;
    let topic = "room:failover";
    let mut on_b = b.hub.connect("json").await;
    let start = enter(&mut on_b, topic).await;
    b.subscribed(topic).await;
    let master = master_of(&cluster, &a.broker, topic).await;
    let replica = cluster.replicas_of(cluster.servers[0].port(), master).await[0];

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = publisher(&a, topic, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    cluster.server(master).kill();
    promoted(replica).await;
    let failover = killed_at.elapsed();
    // Publishing goes on through the new master for a while.
    b.subscribed(topic).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (last, failed) = running.await.expect("publisher");
    assert!(
        failed > 0,
        "no publish failed: the master was not the topic's"
    );

    // B's client gets every value up to the last; a value whose publish
    // failed and was retried may come twice (the first attempt reached
    // Redis but its answer did not come back).
    let mut got: Vec<(u64, Position)> = Vec::new();
    while got.last().map(|(n, _)| *n) != Some(last) {
        got.push(said(&mut on_b).await);
    }
    let values: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    let mut distinct = values.clone();
    distinct.dedup();
    let missing: Vec<u64> = (1..=last).filter(|n| !distinct.contains(n)).collect();
    let epochs: Vec<&str> = {
        let mut e: Vec<&str> = got.iter().map(|(_, p)| p.epoch.as_str()).collect();
        e.dedup();
        e
    };
    eprintln!(
        "failover after {failover:?}: {last} values, {failed} failed attempts, {} received, \
         missing {missing:?}, epochs {epochs:?}, rewound {}, caught up {}",
        values.len(),
        b.broker.stats().rewound,
        b.broker.stats().caught_up
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    // In order: values only go up (a repeat is a retried one).
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    // The new master may lack the dead one's last publications: the topic
    // starts a new epoch there, so a resume from before the failover is
    // told "not recovered" rather than trusting the replica's history.
    assert_eq!(
        epochs.len(),
        2,
        "one new epoch after the failover: {epochs:?}"
    );
    assert_eq!(epochs[0], start.epoch);
    let last_before = got
        .iter()
        .rev()
        .find(|(_, p)| p.epoch == start.epoch)
        .map(|(_, p)| p.clone())
        .expect("publications before the failover");
    let top = a_position(&a, topic).await;
    assert_eq!(&top, &got.last().expect("got").1);
    let mut late = a.hub.connect("json").await;
    resume(&mut late, topic, &last_before).await;
    let (_, notice) = resumed(&mut late).await;
    assert_eq!(notice.recovered, Some(false));
    // A resume within the new epoch is recovered.
    let mut later = b.hub.connect("json").await;
    resume(&mut later, topic, &Position::new(top.epoch.clone(), 1)).await;
    let (replay, notice) = resumed(&mut later).await;
    assert_eq!(notice.recovered, Some(true));
    assert_eq!(replay.len() as u64, top.offset - 1);
}

async fn a_position(node: &HistoryNode, topic: &str) -> Position {
    node.position(topic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_a_failover_lost_are_reported_by_a_new_epoch() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let a = HistoryNode::start(broker(&cluster, "a", "lost:")).await;
    let b = HistoryNode::start(broker(&cluster, "b", "lost:")).await;
    let topic = "room:lost";
    let mut on_b = b.hub.connect("json").await;
    let start = enter(&mut on_b, topic).await;
    b.subscribed(topic).await;
    let master = master_of(&cluster, &a.broker, topic).await;
    let replica = cluster.replicas_of(cluster.servers[0].port(), master).await[0];
    for n in 1..=3 {
        a.publish_retrying(topic, n, Duration::from_secs(1)).await;
    }
    // The replica is frozen and the master drops its link: the next five
    // reach the master and B but never the replica (what the master had
    // sent before is still read by the replica from its socket). Then the
    // master dies and the replica takes over.
    let replica_pid = cluster.server(replica).pid().expect("running");
    signal(replica_pid, "STOP").await;
    cli(master, &["client", "kill", "type", "replica"]).await;
    for n in 4..=8 {
        a.publish_retrying(topic, n, Duration::from_secs(1)).await;
    }
    let mut before = Vec::new();
    for _ in 1..=8 {
        before.push(said(&mut on_b).await);
    }
    let seen = before.last().expect("eight").1.clone();
    assert_eq!(seen, Position::new(start.epoch.clone(), start.offset + 8));
    cluster.server(master).kill();
    signal(replica_pid, "CONT").await;
    promoted(replica).await;
    b.subscribed(topic).await;
    // The new master has offsets up to 3 only, written by the old master:
    // the first publication on it starts a new epoch.
    for n in 9..=12 {
        a.publish_retrying(topic, n, Duration::from_secs(20)).await;
    }
    let mut after = Vec::new();
    while after.last().map(|(n, _)| *n) != Some(12) {
        after.push(said(&mut on_b).await);
    }
    eprintln!("after the failover B got {after:?}");
    let values: Vec<u64> = after.iter().map(|(n, _)| *n).collect();
    assert_eq!(values, [9, 10, 11, 12]);
    let now = a.position(topic).await;
    assert_ne!(now.epoch, start.epoch, "a new epoch after the loss");
    let offsets: Vec<u64> = after.iter().map(|(_, p)| p.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
    assert!(after.iter().all(|(_, p)| p.epoch == now.epoch));
    // A client resuming from what it saw before the failover is told it
    // is not recovered: 4 to 8 are gone from Redis.
    let mut late = a.hub.connect("msgpack").await;
    resume(&mut late, topic, &seen).await;
    let (_, notice) = resumed(&mut late).await;
    assert_eq!(notice.recovered, Some(false));
    assert_eq!(notice.epoch, now.epoch);
}

async fn signal(pid: u32, which: &str) {
    let ok = tokio::process::Command::new("kill")
        .args([&format!("-{which}"), &pid.to_string()])
        .status()
        .await
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{which} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_does_not_disturb_the_brokers() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let a = Node::start_with(broker(&cluster, "a", "rep:")).await;
    let b = Node::start_with(broker(&cluster, "b", "rep:")).await;
    let topics: Vec<String> = (0..6).map(|i| format!("room-{i}")).collect();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for topic in &topics {
        senders.push(a.member("json", topic).await);
        receivers.push(b.member("json", topic).await);
        b.subscribed(topic).await;
    }
    let ask = cluster.servers[0].port();
    let master = master_of(&cluster, &a.broker, &topics[0]).await;
    let replica = cluster.replicas_of(ask, master).await[0];
    cluster.server(replica).kill();
    // The brokers may notice (a node connection lost) and resubscribe
    // once; then they settle, with the replica still down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for topic in &topics {
        b.subscribed(topic).await;
    }
    let settled = (a.broker.stats().reconnects, b.broker.stats().reconnects);
    for round in 0..5 {
        for (topic, c) in topics.iter().zip(&mut senders) {
            c.send(&post(topic, &format!("{round} {topic}"))).await;
        }
        for (topic, c) in topics.iter().zip(&mut receivers) {
            assert_eq!(
                c.expect::<Posted>().await.0.0.text,
                format!("{round} {topic}")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        (a.broker.stats().reconnects, b.broker.stats().reconnects),
        settled,
        "the brokers kept reconnecting while a replica was down"
    );
    assert!(a.broker.status().is_connected() && b.broker.status().is_connected());
}
