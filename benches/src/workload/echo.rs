//! `echo`: C connections, each keeping K `ECHO` requests in flight (K = 1:
//! one round trip at a time; K > 1: pipelined). A reply is matched to its
//! request by correlationId, so the workload runs unchanged against the raw
//! echo servers, whose reply *is* the request envelope.

use super::{STALL, TargetArgs, TimeArgs, connect_many};
use crate::client::Conn;
use crate::proto;
use crate::stats::{self, CpuProbe, Progress, Report, Window};
use anyhow::Result;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Parameters of `echo`.
#[derive(Debug, Clone, clap::Args)]
pub struct EchoArgs {
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to run.
    #[command(flatten)]
    pub time: TimeArgs,
    /// Codec of every connection.
    #[arg(long, default_value = "json")]
    pub codec: String,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub conns: usize,
    /// Requests in flight per connection.
    #[arg(long, short = 'k', default_value_t = 1)]
    pub inflight: usize,
    /// Payload size in bytes: the length of the string in `{"data": …}`.
    #[arg(long, default_value_t = 20)]
    pub size: usize,
}

struct Outcome {
    hist: Histogram<u64>,
    errors: u64,
}

/// Runs `echo`.
pub async fn run(args: &EchoArgs) -> Result<Report> {
    let target = args.target.target()?;
    let codec = crate::client::codec(&args.codec)?;
    let conns = connect_many(&target, &[codec], args.conns, 64).await?;
    let progress = Progress::start("echo", "round trips");
    let counter = progress.counter();
    let window = Window::after(args.time.warmup(), args.time.duration());
    let cpu = CpuProbe::over(args.time.server_pid, window);
    let payload: Arc<str> = Arc::from("x".repeat(args.size));
    let measured = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(conns.len());
    for conn in conns {
        let payload = payload.clone();
        let counter = counter.clone();
        let measured = measured.clone();
        let inflight = args.inflight.max(1);
        tasks.push(tokio::spawn(async move {
            one_connection(conn, &payload, inflight, window, &counter, &measured).await
        }));
    }
    let mut hist = stats::histogram();
    let mut errors = 0;
    for task in tasks {
        match task.await? {
            Ok(outcome) => {
                hist.add(&outcome.hist)?;
                errors += outcome.errors;
            }
            Err(e) => {
                eprintln!("echo: connection failed: {e:#}");
                errors += 1;
            }
        }
    }
    progress.stop();
    let ops = measured.load(Ordering::Relaxed);
    let cpu = cpu.await?;
    Ok(Report {
        workload: "echo".into(),
        transport: target.transport().into(),
        codec: args.codec.clone(),
        params: format!(
            "conns={} inflight={} size={}",
            args.conns, args.inflight, args.size
        ),
        ops,
        seconds: window.seconds(),
        value: ops as f64 / window.seconds(),
        unit: "round trips/s".into(),
        errors,
        ..Report::default()
    }
    .with_latency(&hist)
    .with_cpu(cpu))
}

async fn one_connection(
    conn: Conn,
    payload: &str,
    inflight: usize,
    window: Window,
    counter: &AtomicU64,
    measured: &AtomicU64,
) -> Result<Outcome> {
    let Conn {
        mut tx,
        mut rx,
        codec,
    } = conn;
    let mut hist = stats::histogram();
    let mut errors = 0;
    // (correlation id, sent at); never longer than `inflight`.
    let mut pending: Vec<(u64, Instant)> = Vec::with_capacity(inflight);
    let mut seq = 0u64;
    for _ in 0..inflight {
        tx.feed(proto::echo(&codec, seq, payload)?).await?;
        pending.push((seq, Instant::now()));
        seq += 1;
    }
    tx.flush().await?;
    while !pending.is_empty() {
        let frame = rx.recv_within(STALL).await?;
        let now = Instant::now();
        let envelope = proto::decode(&codec, frame)?;
        let Some(id) = proto::correlation_seq(&envelope) else {
            continue; // not an answer (e.g. a heartbeat)
        };
        let Some(at) = pending.iter().position(|(s, _)| *s == id) else {
            continue;
        };
        let (_, sent) = pending.swap_remove(at);
        if proto::is_error(&envelope.ty) {
            errors += 1;
            if errors <= 3 {
                eprintln!("echo: {}", proto::describe_error(&envelope));
            }
        } else {
            counter.fetch_add(1, Ordering::Relaxed);
            if window.contains(now) {
                stats::record(&mut hist, now - sent);
                measured.fetch_add(1, Ordering::Relaxed);
            }
        }
        if now < window.end {
            tx.send(proto::echo(&codec, seq, payload)?).await?;
            pending.push((seq, Instant::now()));
            seq += 1;
        }
    }
    tx.close().await;
    Ok(Outcome { hist, errors })
}
