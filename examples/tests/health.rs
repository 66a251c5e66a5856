//! The chat binary's health endpoints (docs/DEPLOYMENT.md, "Health") with a
//! real Redis: liveness stays 200 through a Redis outage while readiness
//! says "ready, degraded" (every node shares the one Redis: taking them all
//! out of the balancer would make the outage total), readiness comes back
//! to plain "ready" with Redis, and on SIGTERM readiness answers 503 while
//! clients are still served, before they are closed with 1001.

mod common;

use common::*;
use std::process::{Child, Stdio};
use std::time::Duration;

/// The chat binary, killed on drop if the test did not stop it.
struct Chat(Child);

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `path` until it answers `want`; fails the test past `limit`.
async fn wait_for_answer(
    addr: std::net::SocketAddr,
    path: &str,
    want: (u16, &str),
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, body) = http_get(addr, path).await;
        if (status, body.as_str()) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: {status} {body:?}, not {want:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_stays_200_through_a_redis_outage_and_readiness_reports_it_degraded() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let (child, addr) =
        spawn_chat_binary_with(&["--redis", &url, "--drain-delay", "1"], Stdio::null()).await;
    let chat = Chat(child);
    assert_eq!(http_get(addr, "/healthz").await, (200, "live".to_owned()));
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready".to_owned()));
    let mut client = connect(addr, "json").await;

    redis.kill();
    // The broker notices within its health interval (1 s) or at once when
    // the connections drop.
    wait_for_answer(
        addr,
        "/readyz",
        (200, "ready, degraded: broker not connected"),
        Duration::from_secs(10),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(http_get(addr, "/healthz").await, (200, "live".to_owned()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connected client is still served.
    client.sync("during-outage").await;

    redis.restart_empty().await;
    wait_for_answer(addr, "/readyz", (200, "ready"), Duration::from_secs(15)).await;
    assert_eq!(http_get(addr, "/healthz").await, (200, "live".to_owned()));
    client.sync("after-outage").await;
    drop(chat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_readiness_is_503_before_clients_are_closed_with_1001() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let (child, addr) =
        spawn_chat_binary_with(&["--redis", &url, "--drain-delay", "2"], Stdio::null()).await;
    let chat = Chat(child);
    let mut client = connect(addr, "json").await;
    assert_eq!(http_get(addr, "/readyz").await.0, 200);

    terminate(&chat.0);
    wait_for_answer(addr, "/readyz", (503, "draining"), Duration::from_secs(5)).await;
    // Out of rotation, still serving: the client gets its answer, and no
    // close has come yet.
    client.sync("draining").await;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(client.closed().await, 1001);
    let status = tokio::task::spawn_blocking(move || {
        let mut chat = chat;
        chat.0.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status:?}");
}
