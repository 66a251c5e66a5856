//! `rediss://`: two nodes share a Redis that speaks TLS only and requires
//! a client certificate (both from a CA made for the test). Messages cross
//! nodes, topic history is kept and read over TLS; a broker that does not
//! trust the CA, or has no client certificate, never connects.

mod support;

use std::time::Duration;
use support::positions::{HistoryNode, enter, resume, resumed, said};
use support::tls::{Pki, pki, server};
use support::{Node, Posted, RedisServer, broker_builder, eventually, post};

fn url(redis: &RedisServer) -> String {
    format!("rediss://127.0.0.1:{}/", redis.port())
}

/// Whether the broker's publishing connection comes up within `within`
/// (no hub is attached, so its subscriber never starts).
async fn publisher_up(broker: &signalbox_redis::RedisBroker, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if broker.status().publisher {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn trusted(
    redis: &RedisServer,
    pki: &Pki,
    node: &str,
    prefix: &str,
) -> signalbox_redis::RedisBroker {
    broker_builder(&url(redis), node, prefix)
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .tls_client_cert(pki.client_pem.as_bytes(), pki.client_key.as_bytes())
        .build()
        .expect("broker builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_tls_deliver_across_nodes() {
    let pki = pki("signalbox test CA");
    let redis = server(&pki).await;
    let a = Node::start_with(trusted(&redis, &pki, "a", "tls:")).await;
    let b = Node::start_with(trusted(&redis, &pki, "b", "tls:")).await;
    let mut on_a = a.member("json", "room").await;
    let mut on_b = b.member("msgpack", "room").await;
    a.subscribed("room").await;
    b.subscribed("room").await;
    on_a.send(&post("room", "from a")).await;
    on_b.send(&post("room", "from b")).await;
    for c in [&mut on_a, &mut on_b] {
        let mut got = vec![
            c.expect::<Posted>().await.0.0.text,
            c.expect::<Posted>().await.0.0.text,
        ];
        got.sort();
        assert_eq!(got, ["from a", "from b"]);
    }
    // Each counted its publish (after its answer, which may come after the
    // delivery) and the other's message.
    let (ba, bb) = (a.broker.clone(), b.broker.clone());
    eventually("the counts", Duration::from_secs(5), || {
        let (sa, sb) = (ba.stats(), bb.stats());
        async move { (sa.published, sa.received, sb.published, sb.received) == (1, 1, 1, 1) }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_tls_is_shared_and_resumed_on_the_other_node() {
    let pki = pki("signalbox test CA");
    let redis = server(&pki).await;
    let a = HistoryNode::start(trusted(&redis, &pki, "a", "tlsh:")).await;
    let b = HistoryNode::start(trusted(&redis, &pki, "b", "tlsh:")).await;
    let mut on_b = b.hub.connect("json").await;
    let start = enter(&mut on_b, "room:t").await;
    b.subscribed("room:t").await;
    for n in 1..=5 {
        a.publish_retrying("room:t", n, Duration::from_secs(1))
            .await;
    }
    let mut last = None;
    for n in 1..=5 {
        let (value, position) = said(&mut on_b).await;
        assert_eq!(value, n);
        assert_eq!(position.epoch, start.epoch);
        assert_eq!(position.offset, start.offset + n);
        last = Some(position);
    }
    let last = last.expect("five publications");
    assert_eq!(a.position("room:t").await, last);
    // A client that saw only the first two resumes on A: the other three
    // are read back from Redis over TLS.
    let mut on_a = a.hub.connect("msgpack").await;
    let from = signalbox::Position::new(start.epoch.clone(), start.offset + 2);
    resume(&mut on_a, "room:t", &from).await;
    let (replay, notice) = resumed(&mut on_a).await;
    let values: Vec<u64> = replay.iter().map(|(_, n)| *n).collect();
    assert_eq!(values, [3, 4, 5]);
    assert_eq!(notice.recovered, Some(true));
    assert_eq!(notice.offset, last.offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_does_not_trust_the_ca_or_has_no_client_certificate_never_connects() {
    let pki = pki("signalbox test CA");
    let other = support::tls::pki("another CA");
    let redis = server(&pki).await;
    // Trusts another CA: the server's certificate is refused.
    let wrong_ca = broker_builder(&url(&redis), "x", "tlsx:")
        .tls_ca_pem(other.ca_pem.as_bytes())
        .tls_client_cert(pki.client_pem.as_bytes(), pki.client_key.as_bytes())
        .build()
        .expect("broker builds");
    // Trusts the CA but shows no client certificate: the server refuses.
    let no_cert = broker_builder(&url(&redis), "y", "tlsx:")
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .build()
        .expect("broker builds");
    // The same server over plain TCP: no answer (the port speaks TLS).
    let plain = broker_builder(
        &format!("redis://127.0.0.1:{}/", redis.port()),
        "z",
        "tlsx:",
    )
    .build()
    .expect("broker builds");
    let good = trusted(&redis, &pki, "g", "tlsx:");
    assert!(publisher_up(&good, Duration::from_secs(5)).await);
    for (what, broker) in [
        ("wrong CA", &wrong_ca),
        ("no client certificate", &no_cert),
        ("plain TCP", &plain),
    ] {
        assert!(
            !publisher_up(broker, Duration::from_secs(1)).await,
            "{what}: connected"
        );
        assert!(!broker.status().publisher, "{what}");
    }
}

#[tokio::test]
async fn bad_tls_material_is_refused_at_build() {
    let err = signalbox_redis::RedisBroker::builder("rediss://127.0.0.1:1/")
        .tls_ca_pem(&b"not a certificate"[..])
        .build()
        .expect_err("a CA that is not PEM");
    assert!(err.to_string().contains("TLS"), "{err}");
}
