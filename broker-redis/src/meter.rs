//! What the broker records for monitoring, through the `metrics` facade
//! (the `metrics` cargo feature; names in docs/DEPLOYMENT.md, "Metrics").
//! Without the feature every function here does nothing.

use crate::broker::Status;
use std::time::Instant;

/// The help text of each metric, once per broker.
pub(crate) fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(
            "signalbox_redis_connected",
            "1 while the Redis connection is up"
        );
        describe_counter!(
            "signalbox_redis_reconnects_total",
            "Redis connections re-established after a loss"
        );
        describe_histogram!(
            "signalbox_redis_publish_duration_seconds",
            Unit::Seconds,
            "Successful publishes to Redis, round trip"
        );
        describe_counter!(
            "signalbox_redis_publish_failures_total",
            "Publishes to Redis that failed"
        );
    }
}

/// The broker's connection status changed (or was first set).
pub(crate) fn status(status: Status) {
    #[cfg(feature = "metrics")]
    {
        let up = |b: bool| if b { 1.0 } else { 0.0 };
        metrics::gauge!("signalbox_redis_connected", "connection" => "publisher")
            .set(up(status.publisher));
        metrics::gauge!("signalbox_redis_connected", "connection" => "subscriber")
            .set(up(status.subscriber));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = status;
}

/// A connection (`"publisher"` or `"subscriber"`) was re-established after
/// a loss.
pub(crate) fn reconnected(connection: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("signalbox_redis_reconnects_total", "connection" => connection).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = connection;
}

/// A publish that started at `start` ended, `ok` or failed.
pub(crate) fn published(start: Option<Instant>, ok: bool) {
    #[cfg(feature = "metrics")]
    {
        if ok {
            if let Some(start) = start {
                metrics::histogram!("signalbox_redis_publish_duration_seconds")
                    .record(start.elapsed().as_secs_f64());
            }
        } else {
            metrics::counter!("signalbox_redis_publish_failures_total").increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (start, ok);
}

/// The start of a publish, when its latency is measured (with the
/// feature).
pub(crate) fn start() -> Option<Instant> {
    #[cfg(feature = "metrics")]
    return Some(Instant::now());
    #[cfg(not(feature = "metrics"))]
    None
}
