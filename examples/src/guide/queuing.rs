//! Message Queuing: each connection's messages are handled one at a time in
//! arrival order, even while a handler awaits; messages that arrive
//! meanwhile wait in a bounded queue (when it is full the server stops
//! reading from that client, so nothing is dropped); a failing message is
//! answered, reported to the error sink and does not stall the queue; what
//! is still queued when the connection closes is cleared with it.

use serde::{Deserialize, Serialize};
use signalbox::{Config, Ctx, Error, Hub, Router, message};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Messages waiting per connection (the library's default is 64).
pub const QUEUE: usize = 16;

/// `QUEUED_MESSAGE {seq, workMs, fail}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The client's sequence number.
    pub seq: u64,
    /// How long processing takes, in ms (at most 1,000).
    #[serde(rename = "workMs", default)]
    pub work_ms: u64,
    /// Whether processing fails.
    #[serde(default)]
    pub fail: bool,
}
message!(QueuedMessage = "QUEUED_MESSAGE", |m| {
    signalbox::validate::range("workMs", m.work_ms, 0..=1000)
});

/// `PROCESSED {seq}`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Processed {
    /// The sequence number processed.
    pub seq: u64,
}
message!(Processed = "PROCESSED");

/// `FAILURES` request: how many failures the error sink saw.
#[derive(Debug, Serialize, Deserialize)]
pub struct FailuresRequest;
message!(FailuresRequest = "FAILURES");

/// The reply to `FAILURES`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Failures {
    /// Errors reported to the sink.
    pub count: u64,
}
message!(Failures = "FAILURE_COUNT");

/// Ordered processing with a failure counter in the error sink.
pub fn router() -> Router {
    let failures = Arc::new(AtomicU64::new(0));
    let seen = failures.clone();
    Router::new()
        .on(|ctx: Ctx<QueuedMessage>| async move {
            let m = ctx.payload();
            tokio::time::sleep(Duration::from_millis(m.work_ms)).await;
            if m.fail {
                return Err(Error::new(
                    signalbox::ErrorCode::Aborted,
                    format!("message {} failed", m.seq),
                ));
            }
            ctx.send(&Processed { seq: m.seq })
        })
        .rpc(move |_ctx: Ctx<FailuresRequest>| {
            let count = seen.load(Ordering::Relaxed);
            async move { Ok(Failures { count }) }
        })
        .on_error(move |event| {
            failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id = event.conn.id(), error = %event.error, "message failed");
        })
}

/// The hub of the example, with a small inbound queue.
pub fn hub() -> Hub {
    let mut config = Config::default();
    config.inbound_queue = QUEUE;
    router().into_builder().config(config).build()
}
