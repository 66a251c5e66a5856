//! `fanout`: one publisher, S subscribers of one room (joined silently with
//! `BENCH_SUBSCRIBE`, see [`crate::proto`]), codecs mixed among them. The
//! publisher sends `SEND_MESSAGE`s whose text is its send time; each
//! subscriber measures publish → receive latency from it. At most `window`
//! messages are in flight (sent and not yet received by every subscriber,
//! counted in aggregate) so that the server's per-connection queues stay far
//! below their bound. With `--interval-ms`, the publisher also keeps a pace
//! (one message per interval: S / interval deliveries offered per second),
//! and `--window` should then be large enough not to be what limits it.
//! Counts deliveries per second.

use super::{STALL, TargetArgs, TimeArgs, codecs, connect_many};
use crate::client::{Conn, Rx};
use crate::proto;
use crate::stats::{self, CpuProbe, Progress, Report, Window};
use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use signalbox_codec::WireCodec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Parameters of `fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to run.
    #[command(flatten)]
    pub time: TimeArgs,
    /// Subscribers.
    #[arg(long, short = 's', default_value_t = 1000)]
    pub subscribers: usize,
    /// Codecs of the subscribers, assigned round-robin.
    #[arg(long, default_value = "json,msgpack")]
    pub codecs: String,
    /// Codec of the publisher.
    #[arg(long, default_value = "json")]
    pub publisher_codec: String,
    /// Messages in flight at most.
    #[arg(long, default_value_t = 8)]
    pub window: u64,
    /// Milliseconds between two publications (0: as fast as the window
    /// allows).
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    pub interval_ms: f64,
    /// The room.
    #[arg(long, default_value = "fanout")]
    pub room: String,
}

const SHARDS: usize = 16;

struct Shared {
    /// Every delivery, measured or not.
    delivered: AtomicU64,
    /// Deliveries received inside the window.
    measured: AtomicU64,
    progress: Arc<AtomicU64>,
    wake: Notify,
    hists: Vec<Mutex<Histogram<u64>>>,
    base: Instant,
    window: Window,
}

/// Runs `fanout`.
pub async fn run(args: &FanoutArgs) -> Result<Report> {
    crate::raise_fd_limit();
    let target = args.target.target()?;
    let sub_codecs = codecs(&args.codecs)?;
    let pub_codec = crate::client::codec(&args.publisher_codec)?;
    let s = args.subscribers.max(1);
    eprintln!("[fanout] connecting {s} subscribers");
    let mut subs = connect_many(&target, &sub_codecs, s, 128).await?;
    // Subscribe everyone, pipelined, then collect the answers.
    for (i, conn) in subs.iter_mut().enumerate() {
        conn.tx
            .send(proto::bench_subscribe(&conn.codec, &args.room, i as u64)?)
            .await?;
    }
    for conn in &mut subs {
        loop {
            let envelope = proto::decode(&conn.codec, conn.rx.recv_within(STALL).await?)?;
            if proto::is_error(&envelope.ty) {
                bail!("BENCH_SUBSCRIBE: {}", proto::describe_error(&envelope));
            }
            if envelope.meta.correlation_id.is_some() {
                break;
            }
        }
    }
    let mut publisher = target.connect(pub_codec).await?;
    publisher
        .tx
        .send(proto::join_room(&pub_codec, &args.room, Some("publisher"))?)
        .await?;
    eprintln!("[fanout] {s} subscribed; publishing");
    let progress = Progress::start("fanout", "deliveries");
    let base = Instant::now();
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        progress: progress.counter(),
        wake: Notify::new(),
        hists: (0..SHARDS)
            .map(|_| Mutex::new(stats::histogram()))
            .collect(),
        base,
        window: Window::after(args.time.warmup(), args.time.duration()),
    });
    let cpu = CpuProbe::over(args.time.server_pid, shared.window);
    let mut readers = tokio::task::JoinSet::new();
    for (i, conn) in subs.into_iter().enumerate() {
        let shared = shared.clone();
        let Conn { tx, rx, codec } = conn;
        readers.spawn(async move {
            let result = subscriber(rx, &codec, i % SHARDS, &shared).await;
            drop(tx);
            result
        });
    }
    // The publisher's own copies are drained (and not counted).
    let Conn {
        tx: mut pub_tx,
        rx: mut pub_rx,
        codec: _,
    } = publisher;
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = pub_rx.recv().await {} });
    let mut sent = 0u64;
    let window = shared.window;
    let mut stalled_since = Instant::now();
    let mut last_delivered = 0;
    let mut pace = (args.interval_ms > 0.0)
        .then(|| tokio::time::interval(Duration::from_secs_f64(args.interval_ms / 1000.0)));
    while Instant::now() < window.end {
        let delivered = shared.delivered.load(Ordering::Acquire);
        if delivered != last_delivered {
            last_delivered = delivered;
            stalled_since = Instant::now();
        } else if stalled_since.elapsed() > STALL {
            bail!("no delivery for {STALL:?} ({delivered} so far)");
        }
        if sent.saturating_sub(delivered / s as u64) >= args.window {
            let _ = tokio::time::timeout(Duration::from_millis(5), shared.wake.notified()).await;
            continue;
        }
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        let micros = base.elapsed().as_micros();
        let frame = proto::send_message(&pub_codec, &args.room, &format!("t{micros}"))?;
        pub_tx.send(frame).await?;
        sent += 1;
    }
    // Let what is in flight arrive, then stop the readers.
    let expected = sent * s as u64;
    let deadline = Instant::now() + STALL;
    while shared.delivered.load(Ordering::Acquire) < expected && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(20), shared.wake.notified()).await;
    }
    progress.stop();
    let delivered = shared.delivered.load(Ordering::Acquire);
    let mut errors = 0;
    readers.abort_all();
    while let Some(joined) = readers.join_next().await {
        if let Ok(Err(e)) = joined {
            errors += 1;
            if errors <= 3 {
                eprintln!("fanout: subscriber failed: {e:#}");
            }
        }
    }
    drain.abort();
    pub_tx.close().await;
    if delivered < expected {
        eprintln!(
            "fanout: {} of {expected} deliveries missing",
            expected - delivered
        );
        errors += expected - delivered;
    }
    let mut hist = stats::histogram();
    for shard in &shared.hists {
        if let Ok(h) = shard.lock() {
            hist.add(&*h)?;
        }
    }
    let ops = shared.measured.load(Ordering::Relaxed);
    let cpu = cpu.await?;
    Ok(Report {
        workload: "fanout".into(),
        transport: target.transport().into(),
        codec: args.codecs.clone(),
        params: format!(
            "subscribers={s} window={} interval_ms={}",
            args.window, args.interval_ms
        ),
        ops,
        seconds: window.seconds(),
        value: ops as f64 / window.seconds(),
        unit: "deliveries/s".into(),
        errors,
        ..Report::default()
    }
    .with_latency(&hist)
    .with_cpu(cpu))
}

async fn subscriber(mut rx: Rx, codec: &WireCodec, shard: usize, shared: &Shared) -> Result<()> {
    loop {
        let Some(frame) = rx.recv().await? else {
            bail!("the server closed the connection");
        };
        let now = Instant::now();
        let envelope = proto::decode(codec, frame)?;
        if envelope.ty != proto::NEW_MESSAGE {
            if proto::is_error(&envelope.ty) {
                bail!("{}", proto::describe_error(&envelope));
            }
            continue;
        }
        let message: proto::NewMessageText = envelope.decode_payload()?;
        let sent = message
            .text
            .strip_prefix('t')
            .and_then(|t| t.parse::<u64>().ok())
            .map(|micros| shared.base + Duration::from_micros(micros));
        if shared.window.contains(now) {
            if let (Some(sent), Ok(mut h)) = (sent, shared.hists[shard].lock()) {
                stats::record(&mut h, now.saturating_duration_since(sent));
            }
            shared.measured.fetch_add(1, Ordering::Relaxed);
        }
        shared.progress.fetch_add(1, Ordering::Relaxed);
        shared.delivered.fetch_add(1, Ordering::Release);
        shared.wake.notify_one();
    }
}
