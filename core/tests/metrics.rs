//! What the hub records with the `metrics` feature (docs/DEPLOYMENT.md,
//! "Metrics"), read back from metrics-util's debugging recorder: a slow
//! consumer is counted once, closed with 1008, and the bytes it left
//! queued leave the outbound gauge with it. The chat over WebSocket, scraped
//! in the Prometheus format, is in examples/tests/metrics.rs.

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde::{Deserialize, Serialize};
use signalbox::testing::TestHub;
use signalbox::transport::CloseKind;
use signalbox::{Config, Ctx, Router, message};

#[derive(Debug, Serialize, Deserialize)]
struct Step {
    n: u32,
}
message!(Step = "STEP");

#[derive(Debug, Serialize, Deserialize)]
struct Done {
    n: u32,
}
message!(Done = "DONE");

/// One snapshot (taking it resets what it read).
type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The value of `name` with exactly `labels`, if recorded.
fn value<'a>(
    snapshot: &'a Snapshot,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot
        .iter()
        .find(|(key, _, _, _)| {
            let key = key.key();
            let mut have: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            let mut want = labels.to_vec();
            have.sort();
            want.sort();
            key.name() == name && have == want
        })
        .map(|(_, _, _, v)| v)
}

fn counter(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(s, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name}: {other:?}"),
    }
}

fn gauge(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(s, name, labels) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        None => 0.0,
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_consumer_is_counted_once_and_its_queued_bytes_leave_the_gauge() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let router = Router::new().on(|ctx: Ctx<Step>| async move {
        for n in 0..ctx.payload().n {
            if ctx.send(&Done { n }).is_err() {
                break;
            }
        }
    });
    let mut config = Config::default();
    config.outbound_queue = 8;
    let hub = TestHub::with_config(router, config);
    let mut c = hub.connect("json").await;
    let open = [("transport", "memory"), ("codec", "json")];
    // The in-memory pipe holds 1024 frames the client has not read; the
    // queue holds 8 more; the next one closes it as a slow consumer.
    c.send(&Step { n: 5000 }).await;
    let close = c.closed().await.expect("closed");
    assert_eq!(close.kind, CloseKind::Policy);
    while hub.hub().connection_count() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let s = &snapshotter.snapshot().into_vec();
    assert_eq!(counter(s, "signalbox_connections_opened_total", &open), 1);
    assert_eq!(counter(s, "signalbox_slow_consumer_closes_total", &[]), 1);
    let closed = [("transport", "memory"), ("code", "policy")];
    assert_eq!(counter(s, "signalbox_connections_closed_total", &closed), 1);
    assert_eq!(gauge(s, "signalbox_connections_open", &open), 0.0);
    assert_eq!(
        counter(s, "signalbox_messages_in_total", &[("type", "STEP")]),
        1
    );
    // What was queued before the overflow (the queue's 8, and what the
    // writer moved to the pipe meanwhile, at most its 1024): the handler
    // stopped there, long before 5,000.
    let out = counter(s, "signalbox_messages_out_total", &[("type", "DONE")]);
    assert!((8..1100).contains(&out), "{out} DONE queued");
    assert_eq!(gauge(s, "signalbox_outbound_queued_bytes", &[]), 0.0);
    match value(s, "signalbox_handler_duration_seconds", &[("type", "STEP")]) {
        Some(DebugValue::Histogram(v)) => assert_eq!(v.len(), 1),
        other => panic!("handler histogram: {other:?}"),
    }
}
