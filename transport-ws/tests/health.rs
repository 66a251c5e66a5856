//! The health endpoints (`WsServerBuilder::health`, docs/DEPLOYMENT.md,
//! "Health"): liveness, readiness from start to shutdown, and the order of a
//! shutdown with a drain delay — readiness answers 503 while every client is
//! still served, and only then are clients closed with 1001.

mod common;

use common::*;
use signalbox::{Config, Readiness};
use signalbox_ws::HealthPaths;
use std::time::Duration;

fn body(response: &(u16, String, Vec<u8>)) -> String {
    String::from_utf8(response.2.clone()).unwrap()
}

#[tokio::test]
async fn readiness_is_503_until_the_application_marks_the_hub_ready_and_liveness_is_200() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| b.health(HealthPaths::default())).await;

    let ready = http_get(addr, "GET", "/readyz").await;
    assert_eq!((ready.0, body(&ready).as_str()), (503, "starting"));
    assert!(
        ready
            .1
            .to_ascii_lowercase()
            .contains("cache-control: no-store")
    );
    let live = http_get(addr, "GET", "/healthz").await;
    assert_eq!((live.0, body(&live).as_str()), (200, "live"));

    hub.set_ready();
    let ready = http_get(addr, "GET", "/readyz").await;
    assert_eq!((ready.0, body(&ready).as_str()), (200, "ready"));
    assert_eq!(http_get(addr, "HEAD", "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "POST", "/readyz").await.0, 405);
    hub.shutdown().await;
}

#[tokio::test]
async fn health_is_off_by_default_and_its_paths_are_configurable() {
    let hub = hub(Config::default());
    hub.set_ready();
    let (plain, _) = start_with(&hub, |b| b).await;
    assert_eq!(http_get(plain, "GET", "/healthz").await.0, 404);
    assert_eq!(http_get(plain, "GET", "/readyz").await.0, 404);

    let paths = HealthPaths {
        live: "/-/live".into(),
        ready: "/-/ready".into(),
    };
    let (custom, _) = start_with(&hub, |b| b.health(paths)).await;
    assert_eq!(http_get(custom, "GET", "/-/live").await.0, 200);
    assert_eq!(http_get(custom, "GET", "/-/ready").await.0, 200);
    assert_eq!(http_get(custom, "GET", "/readyz").await.0, 404);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_drain_delay_readiness_is_503_while_clients_are_served_then_they_get_1001() {
    let mut config = Config::default();
    config.drain_delay = Duration::from_millis(1_500);
    let hub = hub(config);
    let (addr, server) = start_with(&hub, |b| b.health(HealthPaths::default())).await;
    hub.set_ready();
    let mut client = connect(addr, "json").await;
    assert_eq!(http_get(addr, "GET", "/readyz").await.0, 200);

    let shutdown = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown().await }
    });
    // Readiness flips at once (the hub's own state, no waiting).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = http_get(addr, "GET", "/readyz").await;
        if ready.0 == 503 {
            assert_eq!(body(&ready), "draining");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never flipped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hub.readiness(), Readiness::Draining);
    // Not ready, yet still serving: the client is answered, liveness is 200,
    // and a new client is still let in (a balancer may not have noticed yet).
    client.send(&WhoAmI, Some("1")).await;
    let reply = client.recv().await;
    assert_eq!(
        (reply.ty.as_str(), reply.meta.correlation_id.as_deref()),
        ("USER", Some("1"))
    );
    assert_eq!(http_get(addr, "GET", "/healthz").await.0, 200);
    let mut late = connect(addr, "json").await;
    assert!(!shutdown.is_finished(), "the drain delay is not over yet");

    // Then, after the delay, everyone is closed as going away.
    assert_eq!(client.closed().await.0, 1001);
    assert_eq!(late.closed().await.0, 1001);
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}
