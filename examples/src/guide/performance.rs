//! Performance Optimization:
//!
//! 1. Batching — the library batches at the connection: whatever a handler
//!    sends while the writer is busy is written together with one flush.
//!    `BURST {count}` sends that many messages from one handler. A
//!    connection may also open a batching window ([`signalbox::Batching`],
//!    off by default): its writer then waits up to a few milliseconds
//!    after a message for more, and writes them with one flush (at once
//!    when [`FEED_BATCH`]'s message count is queued). Feed subscribers
//!    here take a [`FEED_WINDOW`] window: fewer writes when the feed is
//!    busy, for at most that much added latency per item.
//! 2. Compression — `+gzip` clients get envelopes of 1 KiB or more
//!    compressed (the threshold is configurable); the `REPORT` route opts
//!    its replies out with [`signalbox::Route::uncompressed`] when the
//!    client asks for `raw`.
//! 3. Chunked broadcast — publishing to a big topic yields to other tasks
//!    every `fanout_chunk` subscribers (100 here, as in the guide), encoding
//!    the message once per codec.
//!
//! Long work shows progress: a report is built in quarters, and the
//! requester gets a `$ws:rpc-progress` message ([`ReportProgress`],
//! docs/PROTOCOL.md §7) after each one, before the reply.

use serde::{Deserialize, Serialize};
use signalbox::{Batching, Config, Ctx, Error, Hub, Route, Router, message};

/// Subscribers served per fan-out step.
pub const CHUNK: usize = 100;

/// The batching window of a feed subscriber: how long its writer waits
/// for more feed items after one.
pub const FEED_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

/// The feed items at which a subscriber's batch is written at once.
pub const FEED_BATCH: usize = 64;

/// `SUBSCRIBE_FEED`: join the `feed` topic.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubscribeFeed;
message!(SubscribeFeed = "SUBSCRIBE_FEED");

/// `FEED_JOINED`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedJoined;
message!(FeedJoined = "FEED_JOINED");

/// `BROADCAST {text}`: publish to `feed`.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct Broadcast {
    /// The text.
    pub text: String,
}
message!(Broadcast = "BROADCAST");

/// `FEED_ITEM {text}`.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct FeedItem {
    /// The text.
    pub text: String,
}
message!(FeedItem = "FEED_ITEM");

/// `BURST {count}`: the server sends `count` `TICK`s at once.
#[derive(Debug, Serialize, Deserialize)]
pub struct Burst {
    /// 1..=10,000.
    pub count: u32,
}
message!(Burst = "BURST", |m| signalbox::validate::range(
    "count",
    m.count,
    1..=10_000
));

/// `TICK {n}`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Tick {
    /// 0-based index in the burst.
    pub n: u32,
}
message!(Tick = "TICK");

/// `REPORT {size}` request: a report of `size` bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportRequest {
    /// Bytes of text, at most 100,000.
    pub size: usize,
}
message!(ReportRequest = "REPORT", |m| signalbox::validate::range(
    "size",
    m.size,
    0..=100_000
));

/// `RAW_REPORT {size}` request: the same, never compressed.
#[derive(Debug, Serialize, Deserialize)]
pub struct RawReportRequest {
    /// Bytes of text, at most 100,000.
    pub size: usize,
}
message!(RawReportRequest = "RAW_REPORT", |m| {
    signalbox::validate::range("size", m.size, 0..=100_000)
});

/// The reply to `REPORT` / `RAW_REPORT`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The text.
    pub text: String,
}
message!(Report = "REPORT_READY");

/// The payload of the progress messages of `REPORT` / `RAW_REPORT`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ReportProgress {
    /// Bytes of the report built so far.
    pub done: usize,
    /// Bytes of the whole report.
    pub total: usize,
}

/// Builds the report of `size` bytes in four parts, telling the requester
/// after each one.
async fn report<M: signalbox::Message>(ctx: &Ctx<M>, size: usize) -> Result<Report, Error> {
    let pattern = "signalbox ";
    let mut text = String::with_capacity(size);
    for quarter in 1..=4 {
        let until = size * quarter / 4;
        while text.len() < until {
            let offset = text.len() % pattern.len();
            let take = (until - text.len()).min(pattern.len() - offset);
            text.push_str(&pattern[offset..offset + take]);
        }
        ctx.progress(&ReportProgress {
            done: text.len(),
            total: size,
        })?;
        tokio::task::yield_now().await;
    }
    Ok(Report { text })
}

/// Feed, bursts and reports.
pub fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<SubscribeFeed>| async move {
            ctx.subscribe("feed")?;
            let window = Batching::new(FEED_WINDOW)
                .and_then(|w| w.with_max_messages(FEED_BATCH))
                .map_err(Error::internal_cause)?;
            ctx.set_batching(Some(window));
            ctx.reply(&FeedJoined)
        })
        .on(|ctx: Ctx<Broadcast>| async move {
            ctx.publish(
                "feed",
                &FeedItem {
                    text: ctx.payload().text.clone(),
                },
            )
            .await?;
            Ok(())
        })
        .on(|ctx: Ctx<Burst>| async move {
            for n in 0..ctx.payload().count {
                ctx.send(&Tick { n })?;
            }
            Ok(())
        })
        .rpc(|ctx: Ctx<ReportRequest>| async move { report(&ctx, ctx.payload().size).await })
        .route(
            Route::rpc(|ctx: Ctx<RawReportRequest>| async move {
                report(&ctx, ctx.payload().size).await
            })
            .uncompressed(),
        )
}

/// The hub of the example: fan-out in chunks of [`CHUNK`], an outbound
/// queue big enough for the largest burst (10,000 `TICK`s of about 65
/// bytes fit the default 1 MiB budget; the message ceiling is raised above
/// them).
pub fn hub() -> Hub {
    let mut config = Config::default();
    config.topics.fanout_chunk = CHUNK;
    config.outbound_queue = 16_384;
    router().into_builder().config(config).build()
}
