//! `chat`: the shape of Bun's chat-room benchmark. N clients join one room;
//! in each round every client sends a batch of short `SEND_MESSAGE`s, the
//! server publishes each as `NEW_MESSAGE` to the whole room (sender
//! included), and the next round starts once every client has received all
//! N × batch messages. Counts deliveries (messages received) per second.
//!
//! With `--ws-b`/`--quic-b`, clients alternate between two servers (the
//! `cross-node` workload: two chat processes sharing rooms through Redis).

use super::{STALL, TargetArgs, TimeArgs, connect_many};
use crate::client::{Conn, Target};
use crate::proto;
use crate::stats::{CpuProbe, CpuSpent, Progress, Report};
use anyhow::{Result, bail};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Barrier, Mutex};

/// Parameters of `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
    /// A second WebSocket server: odd clients connect there (cross-node).
    #[arg(long, value_name = "ADDR")]
    pub ws_b: Option<SocketAddr>,
    /// How long to run.
    #[command(flatten)]
    pub time: TimeArgs,
    /// Codec of every client.
    #[arg(long, default_value = "json")]
    pub codec: String,
    /// Clients in the room.
    #[arg(long, short = 'n', default_value_t = 32)]
    pub clients: usize,
    /// Messages each client sends per round.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// The room.
    #[arg(long, default_value = "bench")]
    pub room: String,
}

/// Shared by the clients of one run.
struct Round {
    barrier: Barrier,
    go_on: AtomicBool,
    /// Whether the round about to run is measured.
    measuring: AtomicBool,
    /// Deliveries in measured rounds.
    measured: AtomicU64,
    /// (start of the first measured round, end of the last).
    span: Mutex<(Option<Instant>, Option<Instant>)>,
    /// CPU probe started with the span; its reading at the span's end.
    cpu: Mutex<(CpuProbe, Option<CpuSpent>)>,
    warm_until: Instant,
    stop_at: Instant,
}

/// Runs `chat` (or `cross-node` when a second server is given).
pub async fn run(args: &ChatArgs) -> Result<Report> {
    let target = args.target.target()?;
    let codec = crate::client::codec(&args.codec)?;
    let n = args.clients.max(1);
    let mut conns = connect_many(&target, &[codec], n.div_ceil(2), 64).await?;
    let second = match args.ws_b {
        Some(addr) => Target::ws(addr, args.target.path.clone()),
        None => target.clone(),
    };
    let others = connect_many(&second, &[codec], n / 2, 64).await?;
    conns.extend(others);
    let cross = args.ws_b.is_some();
    // Everyone joins, and has seen every member's USER_JOINED, before the
    // first round (so that no NEW_MESSAGE misses a member).
    for conn in &mut conns {
        conn.tx
            .send(proto::join_room(&conn.codec, &args.room, None)?)
            .await?;
    }
    for conn in &mut conns {
        let mut joined = 0;
        let deadline = Instant::now() + STALL;
        // Members see the USER_JOINED of those who joined after them;
        // across nodes only those of their own node are guaranteed to be
        // ordered, so wait for its own at least.
        while joined < 1 {
            if Instant::now() > deadline {
                bail!("no USER_JOINED");
            }
            let envelope = proto::decode(&conn.codec, conn.rx.recv_within(STALL).await?)?;
            if envelope.ty == proto::USER_JOINED {
                joined += 1;
            } else if proto::is_error(&envelope.ty) {
                bail!("joining: {}", proto::describe_error(&envelope));
            }
        }
    }
    if cross {
        // Redis subscriptions take a round trip to be confirmed.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let progress = Progress::start(if cross { "cross-node" } else { "chat" }, "deliveries");
    let counter = progress.counter();
    let start = Instant::now();
    let round = Arc::new(Round {
        barrier: Barrier::new(n),
        go_on: AtomicBool::new(true),
        measuring: AtomicBool::new(false),
        measured: AtomicU64::new(0),
        span: Mutex::new((None, None)),
        cpu: Mutex::new((CpuProbe::new(args.time.server_pid), None)),
        warm_until: start + args.time.warmup(),
        stop_at: start + args.time.warmup() + args.time.duration(),
    });
    let mut tasks = Vec::with_capacity(n);
    for conn in conns {
        let round = round.clone();
        let counter = counter.clone();
        let room = args.room.clone();
        let batch = args.batch.max(1);
        tasks.push(tokio::spawn(async move {
            client(conn, &room, n, batch, &round, &counter).await
        }));
    }
    let mut errors = 0;
    for task in tasks {
        if let Err(e) = task.await? {
            eprintln!("chat: client failed: {e:#}");
            errors += 1;
        }
    }
    progress.stop();
    let (first, last) = *round.span.lock().await;
    let seconds = match (first, last) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let ops = round.measured.load(Ordering::Relaxed);
    let cpu = round.cpu.lock().await.1;
    if errors > 0 || seconds == 0.0 {
        bail!("chat run failed ({errors} clients failed, {ops} deliveries measured)");
    }
    Ok(Report {
        workload: if cross { "cross-node" } else { "chat" }.into(),
        transport: target.transport().into(),
        codec: args.codec.clone(),
        params: format!("clients={n} batch={}", args.batch),
        ops,
        seconds,
        value: ops as f64 / seconds,
        unit: "deliveries/s".into(),
        errors,
        ..Report::default()
    }
    .with_cpu(cpu))
}

async fn client(
    conn: Conn,
    room: &str,
    n: usize,
    batch: usize,
    round: &Round,
    counter: &AtomicU64,
) -> Result<()> {
    let Conn {
        mut tx,
        mut rx,
        codec,
    } = conn;
    let text = "hello, room! ~20 B";
    let expected = n * batch;
    loop {
        // Round boundary: the leader decides whether another round runs
        // and whether it is measured; everyone reads the decision after the
        // second barrier.
        if round.barrier.wait().await.is_leader() {
            let now = Instant::now();
            let mut span = round.span.lock().await;
            let measure = now >= round.warm_until;
            if measure {
                let mut cpu = round.cpu.lock().await;
                if span.0.is_none() {
                    span.0 = Some(now);
                    cpu.0.start();
                }
                span.1 = Some(now);
                cpu.1 = cpu.0.spent();
            }
            round.measuring.store(measure, Ordering::Relaxed);
            round.go_on.store(now < round.stop_at, Ordering::Relaxed);
        }
        round.barrier.wait().await;
        if !round.go_on.load(Ordering::Relaxed) {
            break;
        }
        let measured = round.measuring.load(Ordering::Relaxed);
        for _ in 0..batch {
            tx.feed(proto::send_message(&codec, room, text)?).await?;
        }
        tx.flush().await?;
        let mut got = 0;
        while got < expected {
            let envelope = proto::decode(&codec, rx.recv_within(STALL).await?)?;
            if envelope.ty == proto::NEW_MESSAGE {
                got += 1;
            } else if proto::is_error(&envelope.ty) {
                bail!("{}", proto::describe_error(&envelope));
            }
        }
        counter.fetch_add(got as u64, Ordering::Relaxed);
        // A round counts when it started after the warm-up; the span ends
        // at the barrier after the last one.
        if measured {
            round.measured.fetch_add(got as u64, Ordering::Relaxed);
        }
    }
    tx.close().await;
    Ok(())
}
