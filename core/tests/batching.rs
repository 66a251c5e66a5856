//! The batching window ([`Batching`]), seen through the transport seam: a
//! sink that records each `send_batch` (one write, one flush), each ping
//! and the close, with when they happened. The clock is tokio's paused
//! one, so a window's length is exact and nothing here depends on the
//! machine's speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use signalbox::codec::WireCodec;
use signalbox::transport::{
    Close, Connection, ConnectionInfo, Frame, FrameSink, FrameSource, Inbound, TransportError,
};
use signalbox::{
    Batching, Config, Ctx, DataMap, Hub, HubBuilder, ManualClock, Message, Meta, Router, message,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Asks the server to send `n` ticks, yielding to other tasks (the
/// writer among them) after each.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Burst {
    n: u32,
}
message!(Burst = "BURST");

/// Like [`Burst`], after turning the connection's window off.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UrgentBurst {
    n: u32,
}
message!(UrgentBurst = "URGENT_BURST");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    n: u32,
}
message!(Tick = "TICK");

async fn ticks(ctx: &signalbox::ConnectionHandle, n: u32) -> Result<(), signalbox::Error> {
    for n in 0..n {
        ctx.send(&Tick { n })?;
        tokio::task::yield_now().await;
    }
    Ok(())
}

fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Burst>| async move { ticks(&ctx, ctx.payload().n).await })
        .on(|ctx: Ctx<UrgentBurst>| async move {
            ctx.set_batching(None);
            ticks(&ctx, ctx.payload().n).await
        })
}

/// What the server's writer did, and when.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// One `send_batch` of this many frames.
    Batch(usize),
    Ping,
    Close,
}

struct Source(mpsc::Receiver<Inbound>);

#[async_trait]
impl FrameSource for Source {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        Ok(self.0.recv().await)
    }
}

/// Records every write, ping and close.
struct Counting(mpsc::UnboundedSender<(Event, Instant)>);

impl Counting {
    fn record(&self, event: Event) {
        let _ = self.0.send((event, Instant::now()));
    }
}

#[async_trait]
impl FrameSink for Counting {
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        self.record(Event::Batch(frames.len()));
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        self.record(Event::Ping);
        Ok(())
    }

    async fn close(&mut self, _close: Close) -> Result<(), TransportError> {
        self.record(Event::Close);
        Ok(())
    }
}

struct Peer {
    tx: Option<mpsc::Sender<Inbound>>,
    events: mpsc::UnboundedReceiver<(Event, Instant)>,
    start: Instant,
}

impl Peer {
    async fn send<M: Message>(&self, msg: &M) {
        let codec = WireCodec::from_name("json").unwrap();
        let frame = msg.encode(&codec, &Default::default(), false).unwrap();
        let tx = self.tx.as_ref().expect("not hung up");
        tx.send(Inbound::Message(frame)).await.unwrap();
    }

    /// The next event, and how long after the start (in the paused
    /// clock's time) it happened.
    async fn next(&mut self) -> (Event, Duration) {
        let (event, at) = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("an event in time")
            .expect("the sink is alive");
        (event, at - self.start)
    }

    /// Batches until `n` frames were written: their sizes and times.
    async fn batches(&mut self, n: usize) -> Vec<(usize, Duration)> {
        let mut seen = Vec::new();
        let mut total = 0;
        while total < n {
            match self.next().await {
                (Event::Batch(len), at) => {
                    total += len;
                    seen.push((len, at));
                }
                (Event::Ping, _) => {}
                (Event::Close, at) => panic!("closed at {at:?} after {seen:?}"),
            }
        }
        assert_eq!(total, n, "{seen:?}");
        seen
    }
}

const NOW: u64 = 1_700_000_000_000;

fn connect(builder: HubBuilder) -> (Hub, Peer) {
    let hub = builder.clock(ManualClock::new(NOW)).build();
    let (in_tx, in_rx) = mpsc::channel(16);
    let (events_tx, events) = mpsc::unbounded_channel();
    let start = Instant::now();
    tokio::spawn(hub.serve(Connection {
        info: ConnectionInfo {
            transport: "counting",
            peer_addr: None,
            codec: WireCodec::from_name("json").unwrap(),
        },
        data: DataMap::new(),
        source: Box::new(Source(in_rx)),
        sink: Box::new(Counting(events_tx)),
    }));
    let peer = Peer {
        tx: Some(in_tx),
        events,
        start,
    };
    (hub, peer)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn window(delay: Duration) -> Batching {
    Batching::new(delay).unwrap()
}

#[tokio::test(start_paused = true)]
async fn without_a_window_nothing_waits_and_writes_follow_the_writers_wakeups() {
    let (_hub, mut peer) = connect(Hub::builder(router()));
    peer.send(&Burst { n: 10 }).await;
    let batches = peer.batches(10).await;
    // Each yield lets the writer take what is queued: coalescing only by
    // chance, and never a wait (the paused clock never moved).
    assert!(batches.len() > 1, "{batches:?}");
    assert!(
        batches.iter().all(|&(_, at)| at == Duration::ZERO),
        "{batches:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_gathers_a_burst_into_one_write() {
    let (_hub, mut peer) = connect(Hub::builder(router()).batching(window(ms(50))));
    peer.send(&Burst { n: 10 }).await;
    // Ten messages with yields in between: one write, when the window ends.
    assert_eq!(peer.batches(10).await, vec![(10, ms(50))]);
    // The next message opens a new window.
    peer.send(&Burst { n: 3 }).await;
    let batches = peer.batches(3).await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].0, 3);
    assert_eq!(batches[0].1 - ms(50), ms(50), "{batches:?}");
}

#[tokio::test(start_paused = true)]
async fn max_messages_cuts_a_batch() {
    let batching = window(ms(50)).with_max_messages(4).unwrap();
    let (_hub, mut peer) = connect(Hub::builder(router()).batching(batching));
    peer.send(&Burst { n: 10 }).await;
    // Two full batches at once, the rest when the window ends.
    assert_eq!(
        peer.batches(10).await,
        vec![(4, Duration::ZERO), (4, Duration::ZERO), (2, ms(50))]
    );
}

#[tokio::test(start_paused = true)]
async fn max_bytes_cuts_a_batch() {
    // Every tick n < 10 encodes to the same length, stamped by the
    // manual clock.
    let codec = WireCodec::from_name("json").unwrap();
    let meta = Meta {
        timestamp: Some(NOW),
        ..Meta::default()
    };
    let tick = Tick { n: 0 }.encode(&codec, &meta, true).unwrap().len();
    // Over two ticks: the third cuts the batch.
    let batching = window(ms(50)).with_max_bytes(2 * tick + 1).unwrap();
    let (_hub, mut peer) = connect(Hub::builder(router()).batching(batching));
    peer.send(&Burst { n: 5 }).await;
    assert_eq!(
        peer.batches(5).await,
        vec![(3, Duration::ZERO), (2, ms(50))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_never_lets_the_queue_pass_half_its_bound() {
    let mut config = Config::default();
    config.outbound_queue = 8;
    let (_hub, mut peer) = connect(
        Hub::builder(router())
            .config(config)
            .batching(window(ms(50))),
    );
    peer.send(&Burst { n: 6 }).await;
    // Half of 8 messages is where the connection stops reading: written
    // at once there, the default 64 notwithstanding.
    assert_eq!(
        peer.batches(6).await,
        vec![(4, Duration::ZERO), (2, ms(50))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_close_during_the_window_is_not_delayed() {
    let (_hub, mut peer) = connect(Hub::builder(router()).batching(window(Batching::MAX_DELAY)));
    peer.send(&Burst { n: 3 }).await;
    // Let the handler queue its ticks (the window opens), then hang up.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    peer.tx = None;
    // Drained at once, then closed: neither waits for the window.
    let batches = peer.batches(3).await;
    assert!(
        batches.iter().all(|&(_, at)| at < Batching::MAX_DELAY),
        "{batches:?}"
    );
    let (event, at) = peer.next().await;
    assert_eq!(event, Event::Close);
    assert!(at < Batching::MAX_DELAY, "closed after {at:?}");
}

#[tokio::test(start_paused = true)]
async fn pings_go_out_during_a_window() {
    let mut config = Config::default();
    config.heartbeat_interval = ms(100);
    let (_hub, mut peer) = connect(
        Hub::builder(router())
            .config(config)
            .batching(window(ms(450))),
    );
    peer.send(&Burst { n: 1 }).await;
    let mut pings = Vec::new();
    loop {
        match peer.next().await {
            (Event::Ping, at) => pings.push(at),
            (Event::Batch(1), at) => {
                assert_eq!(at, ms(450));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pings, vec![ms(100), ms(200), ms(300), ms(400)]);
}

#[tokio::test(start_paused = true)]
async fn a_connection_sets_its_own_window_or_clears_the_hubs() {
    // Off hub-wide, on for this connection from on_open.
    let router_with_window = router().on_open(|conn: signalbox::ConnectionHandle| async move {
        conn.set_batching(Some(window(ms(20))));
        assert_eq!(conn.batching(), Some(window(ms(20))));
    });
    let (_hub, mut peer) = connect(Hub::builder(router_with_window));
    peer.send(&Burst { n: 5 }).await;
    assert_eq!(peer.batches(5).await, vec![(5, ms(20))]);

    // On hub-wide, cleared by a handler before it sends.
    let (_hub, mut peer) = connect(Hub::builder(router()).batching(window(ms(20))));
    peer.send(&UrgentBurst { n: 5 }).await;
    let batches = peer.batches(5).await;
    assert!(batches.len() > 1, "{batches:?}");
    assert!(
        batches.iter().all(|&(_, at)| at == Duration::ZERO),
        "{batches:?}"
    );
}
