//! The hub's readiness (docs/DEPLOYMENT.md, "Health"): starting until the
//! application marks it ready, degraded (still ready) while its broker is
//! not connected, draining from the start of a shutdown, through the drain
//! delay, before connections are closed.

use signalbox::testing::TestHub;
use signalbox::transport::CloseKind;
use signalbox::{Broker, Config, Hub, Readiness, Router};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A broker whose connection the test switches.
#[derive(Clone, Default)]
struct Switch(Arc<AtomicBool>);

impl Broker for Switch {
    fn is_connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[tokio::test]
async fn starting_until_set_ready_then_ready_or_degraded_as_the_broker_is_connected() {
    let broker = Switch::default();
    let hub = Hub::builder(Router::new()).broker(broker.clone()).build();
    assert_eq!(hub.readiness(), Readiness::Starting);
    assert!(!hub.readiness().is_ready());
    hub.set_ready();
    assert_eq!(hub.readiness(), Readiness::Degraded);
    assert!(hub.readiness().is_ready(), "degraded is still ready");
    broker.0.store(true, Ordering::Relaxed);
    assert_eq!(hub.readiness(), Readiness::Ready);
    broker.0.store(false, Ordering::Relaxed);
    assert_eq!(hub.readiness(), Readiness::Degraded);
}

#[tokio::test]
async fn shutdown_drains_for_the_delay_before_it_closes_anything() {
    let mut config = Config::default();
    config.drain_delay = Duration::from_millis(400);
    let test = TestHub::with_config(Router::new(), config);
    let hub = test.hub().clone();
    hub.set_ready();
    assert_eq!(hub.readiness(), Readiness::Ready);
    let mut client = test.connect("json").await;

    let shutdown = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(hub.readiness(), Readiness::Draining);
    assert!(!hub.is_shutting_down(), "transports still accept");
    assert_eq!(hub.connection_count(), 1, "nobody closed yet");
    // A second call waits for the same delay.
    tokio::time::timeout(Duration::from_secs(5), hub.shutdown())
        .await
        .expect("the second shutdown ends with the first");
    assert!(hub.is_shutting_down());
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown ends")
        .expect("no panic");
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(hub.readiness(), Readiness::Draining);
    let close = client.closed().await.expect("closed");
    assert_eq!(close.kind, CloseKind::GoingAway);
}
