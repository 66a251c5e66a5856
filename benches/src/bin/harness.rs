//! The benchmark harness behind `benches/run`: starts each server on free
//! ports, runs each workload of the load generator against signalbox and
//! its baselines (interleaved: every run of a case measures each server in
//! turn, a fresh process each time), takes medians over the runs, prints
//! the table and writes it into `benches/README.md` between the markers
//! `<!-- results:start -->` and `<!-- results:end -->`; then sweeps the
//! scaling curves (idle memory, fan-out, echo) and draws them as SVG into
//! `benches/curves/`, shown in the README between `<!-- curves:start -->`
//! and `<!-- curves:end -->`.
//!
//! By default every server process runs on CPU 0 (`taskset -c 0`) and the
//! load generator on CPU 1 (`taskset -c 1`), so that neither takes the
//! other's core; `--unpinned` lets the scheduler place them.
//!
//! ```text
//! harness [--runs 3] [--duration 4] [--warmup 1] [--only echo,chat]
//!         [--idle-conns 10000] [--idle-max 19000] [--fanout-big 10000]
//!         [--unpinned] [--no-curves] [--curve-runs 1] [--no-bun] [--no-write]
//! ```

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::Value;
use signalbox_benches::plot::{Chart, Series};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "harness",
    about = "Runs the signalbox benchmarks and writes the table"
)]
struct Args {
    /// Runs per case and server (the table shows medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Warm-up seconds per run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Only the cases whose name contains one of these (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Idle connections for the memory case.
    #[arg(long, default_value_t = 10_000)]
    idle_conns: usize,
    /// Idle connections of the heartbeat case and the top of the idle
    /// curve: as many as one server process may hold (its file-descriptor
    /// limit, less some).
    #[arg(long, default_value_t = 19_000)]
    idle_max: usize,
    /// Seconds between heartbeats in the heartbeat case.
    #[arg(long, default_value_t = 1.0)]
    heartbeat_interval: f64,
    /// Seconds at rest over which the heartbeat case reads the server's CPU.
    #[arg(long, default_value_t = 10.0)]
    rest: f64,
    /// Subscribers of the large fan-out case.
    #[arg(long, default_value_t = 10_000)]
    fanout_big: usize,
    /// Let the scheduler place servers and load generator (default: server
    /// on CPU `--server-cpu`, load generator on CPU `--loadgen-cpu`).
    #[arg(long)]
    unpinned: bool,
    /// The CPU(s) the servers are pinned to (a `taskset -c` list).
    #[arg(long, value_name = "LIST", default_value = "0")]
    server_cpu: String,
    /// The CPU(s) the load generator is pinned to (a `taskset -c` list,
    /// e.g. `1-3` where there are more cores).
    #[arg(long, value_name = "LIST", default_value = "1")]
    loadgen_cpu: String,
    /// Skip the scaling curves.
    #[arg(long)]
    no_curves: bool,
    /// Runs per point of the scaling curves (medians).
    #[arg(long, default_value_t = 1)]
    curve_runs: usize,
    /// Where the curves' SVG files go.
    #[arg(long, default_value = "benches/curves")]
    curves_dir: PathBuf,
    /// Skip the ws-kit on Bun baseline.
    #[arg(long)]
    no_bun: bool,
    /// Print the table only; leave benches/README.md and the curves alone.
    #[arg(long)]
    no_write: bool,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The bun binary (installed by `npm ci` in benches/bun).
    #[arg(long, default_value = "benches/bun/node_modules/.bin/bun")]
    bun: PathBuf,
    /// The README to write the table into.
    #[arg(long, default_value = "benches/README.md")]
    readme: PathBuf,
}

impl Args {
    /// `program` as a command, pinned to `cpus` unless unpinned.
    fn command(&self, program: impl AsRef<OsStr>, cpus: &str) -> Command {
        if self.unpinned {
            Command::new(program)
        } else {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(program);
            cmd
        }
    }

    /// Whether this is the full run the README's final figures come from.
    fn is_full_run(&self) -> bool {
        self.runs >= 3 && self.duration >= 4.0 && self.warmup >= 1.0
    }
}

/// The servers measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    /// `bench_server`: the chat router and hub, rate limit off.
    Signalbox,
    /// `raw_ws_echo` with 4 KiB buffers, or `raw_quic_echo`.
    Raw,
    /// `raw_ws_echo` with tungstenite's default buffers (128 KiB).
    RawDefault,
    /// `chat_floor`: the hand-written chat on tokio-tungstenite.
    Floor,
    /// ws-kit on Bun (`benches/bun/server.ts`).
    Bun,
    /// Two `bench_server`s sharing rooms through a throwaway redis-server.
    SignalboxRedis,
}

impl Server {
    /// The name in the verdicts and the curves' legends.
    fn label(self) -> &'static str {
        match self {
            Server::Signalbox => "signalbox",
            Server::Raw => "raw",
            Server::RawDefault => "raw, default buffers",
            Server::Floor => "chat floor",
            Server::Bun => "Bun",
            Server::SignalboxRedis => "signalbox + Redis",
        }
    }

    /// The legend of a curve.
    fn legend(self) -> &'static str {
        match self {
            Server::Raw => "raw tokio-tungstenite (4 KiB buffers)",
            Server::RawDefault => "raw tokio-tungstenite (default buffers)",
            Server::Floor => "hand-written chat floor",
            Server::Bun => "ws-kit on Bun",
            other => other.label(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Ws,
    Quic,
    /// WebTransport sessions at `/wt` on the QUIC port (bench_server only).
    Wt,
    /// WebSocket over TLS (`wss://`, bench_server only): what QUIC, always
    /// encrypted, is compared with.
    Wss,
}

/// A number a run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    /// Operations per second.
    Rate,
    /// 99th percentile latency.
    P99,
    /// Server RSS per connection.
    Bytes,
    /// Server CPU time per operation.
    CpuPerOp,
    /// Server CPU over the measured window, in cores.
    CpuCores,
    /// Server CPU time per heartbeat at rest.
    CpuPerHeartbeat,
    /// The load generator's CPU over the measured window, in cores (read
    /// in every run; marks rates the client may have bounded).
    LoadgenCores,
}

/// Which way a target points.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    AtLeast,
    AtMost,
}

/// What a target compares signalbox with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Against {
    /// `factor` × a baseline's median.
    Server(Server, f64),
    /// A fixed value (in the metric's unit: bytes, µs, cores).
    Value(f64),
    /// `factor` × signalbox's median in an earlier row of the table (the
    /// case of that name), e.g. QUIC against `wss://`.
    Case(&'static str, f64),
}

/// A target for one metric of a case (the table's last column; the
/// README lists them).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Goal {
    metric: Metric,
    cmp: Cmp,
    against: Against,
}

fn at_least(metric: Metric, server: Server, factor: f64) -> Goal {
    Goal {
        metric,
        cmp: Cmp::AtLeast,
        against: Against::Server(server, factor),
    }
}

fn at_most(metric: Metric, server: Server, factor: f64) -> Goal {
    Goal {
        metric,
        cmp: Cmp::AtMost,
        against: Against::Server(server, factor),
    }
}

/// The scaling curves: what is swept, and what is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Curve {
    /// Server RSS per connection against idle connections.
    Idle,
    /// Fan-out deliveries/s and p99 against subscribers.
    Fanout,
    /// Echo round trips/s against connections.
    Echo,
}

struct Case {
    name: String,
    transport: Transport,
    /// Load generator arguments (workload and parameters, no target).
    args: Vec<String>,
    /// Extra arguments of `bench_server`.
    server_args: Vec<String>,
    servers: Vec<Server>,
    metrics: Vec<Metric>,
    goals: Vec<Goal>,
    /// A point of a scaling curve (not a row of the table).
    curve: Option<(Curve, f64)>,
}

impl Case {
    fn new(name: impl Into<String>, transport: Transport, args: Vec<String>) -> Case {
        Case {
            name: name.into(),
            transport,
            args,
            server_args: Vec::new(),
            servers: vec![Server::Signalbox],
            metrics: vec![Metric::Rate],
            goals: Vec::new(),
            curve: None,
        }
    }

    fn servers(mut self, servers: &[Server]) -> Case {
        self.servers = servers.to_vec();
        self
    }

    fn metrics(mut self, metrics: &[Metric]) -> Case {
        self.metrics = metrics.to_vec();
        self
    }

    fn goals(mut self, goals: &[Goal]) -> Case {
        self.goals = goals.to_vec();
        self
    }

    fn workload(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or("")
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The rows of the table, with the targets of benches/README.md ("Targets";
/// ratios of medians in one run).
fn cases(args: &Args) -> Vec<Case> {
    use Metric::*;
    use Server::*;
    use Transport::*;
    let mut cases = Vec::new();
    for (name, extra, goals) in [
        (
            "echo ws json 20 B",
            s(&["--size", "20"]),
            vec![at_least(Rate, Raw, 0.9), at_least(Rate, Bun, 3.0)],
        ),
        ("echo ws json 1 KiB", s(&["--size", "1024"]), vec![]),
        (
            "echo ws json 16 KiB",
            s(&["--size", "16384"]),
            vec![at_least(Rate, Bun, 2.0)],
        ),
        (
            "echo ws json 20 B pipelined k=16",
            s(&["--size", "20", "-k", "16"]),
            vec![],
        ),
    ] {
        let mut a = s(&["echo", "-c", "100", "--codec", "json"]);
        a.extend(extra);
        cases.push(
            Case::new(name, Ws, a)
                .servers(&[Signalbox, Raw, RawDefault, Bun])
                .metrics(&[Rate, P99])
                .goals(&goals),
        );
    }
    cases.push(
        Case::new(
            "echo ws msgpack 20 B",
            Ws,
            s(&["echo", "-c", "100", "--codec", "msgpack", "--size", "20"]),
        )
        .servers(&[Signalbox, Raw])
        .metrics(&[Rate, P99]),
    );
    for (name, size) in [
        ("echo quic json 20 B", "20"),
        ("echo quic json 1 KiB", "1024"),
    ] {
        cases.push(
            Case::new(
                name,
                Quic,
                s(&["echo", "-c", "100", "--codec", "json", "--size", size]),
            )
            .servers(&[Signalbox, Raw])
            .metrics(&[Rate, P99, CpuPerOp])
            .goals(&[at_least(Rate, Raw, 0.9)]),
        );
    }
    cases.push(
        Case::new(
            "echo wss json 20 B",
            Wss,
            s(&["echo", "-c", "100", "--codec", "json", "--size", "20"]),
        )
        .metrics(&[Rate, P99, CpuPerOp]),
    );
    cases.push(
        Case::new(
            "chat ws json 32 clients × 10",
            Ws,
            s(&["chat", "-n", "32", "--batch", "10"]),
        )
        .servers(&[Signalbox, Floor, Bun])
        .metrics(&[Rate, CpuPerOp])
        .goals(&[
            at_least(Rate, Bun, 1.0),
            at_most(CpuPerOp, Bun, 0.2),
            at_most(CpuPerOp, Floor, 1.3),
        ]),
    );
    cases.push(
        Case::new(
            "chat ws json 32 clients × 30",
            Ws,
            s(&["chat", "-n", "32", "--batch", "30"]),
        )
        .servers(&[Signalbox, Floor, Bun])
        .metrics(&[Rate, CpuPerOp])
        .goals(&[at_most(CpuPerOp, Bun, 0.2), at_most(CpuPerOp, Floor, 1.3)]),
    );
    // docs/PROTOCOL.md §8: a burst into a room closes no member that
    // reads. Each round is a burst: 3,200 publishes at once, all
    // 3,200 delivered to each of the 32 members before the next round;
    // bench_server's configuration is the default but for the rate limit.
    cases.push(
        Case::new(
            "chat burst ws json 32 clients × 100 (default config)",
            Ws,
            s(&["chat", "-n", "32", "--batch", "100"]),
        )
        .servers(&[Signalbox, Floor, Bun])
        .metrics(&[Rate, CpuPerOp]),
    );
    // QUIC always encrypts: its fair comparison is WebSocket over TLS,
    // served by the same bench_server with the same certificate (the
    // `wss` row runs first so that the QUIC row's target can name it).
    cases.push(
        Case::new(
            "chat wss json 32 clients × 10",
            Wss,
            s(&["chat", "-n", "32", "--batch", "10"]),
        )
        .metrics(&[Rate, CpuPerOp]),
    );
    cases.push(
        Case::new(
            "chat quic json 32 clients × 10",
            Quic,
            s(&["chat", "-n", "32", "--batch", "10"]),
        )
        .metrics(&[Rate, CpuPerOp])
        .goals(&[Goal {
            metric: CpuPerOp,
            cmp: Cmp::AtMost,
            against: Against::Case("chat wss json 32 clients × 10", 1.0),
        }]),
    );
    // Browsers' QUIC: the same server, port and workloads over
    // WebTransport sessions (docs/PROTOCOL.md §5), next to the rows above.
    cases.push(
        Case::new(
            "echo webtransport json 20 B",
            Wt,
            s(&["echo", "-c", "100", "--codec", "json", "--size", "20"]),
        )
        .metrics(&[Rate, P99, CpuPerOp]),
    );
    cases.push(
        Case::new(
            "chat webtransport json 32 clients × 10",
            Wt,
            s(&["chat", "-n", "32", "--batch", "10"]),
        )
        .metrics(&[Rate, CpuPerOp]),
    );
    cases.push(
        Case::new(
            "fanout ws json 1,000 subscribers",
            Ws,
            s(&["fanout", "-s", "1000", "--codecs", "json"]),
        )
        .servers(&[Signalbox, Floor, Bun])
        .metrics(&[Rate, P99, CpuPerOp])
        .goals(&[at_least(Rate, Bun, 1.0)]),
    );
    // Paced fan-outs: one message per 2 ms to 1,000 (500k
    // deliveries/s offered) and one per 20 ms (50k/s, the light pace).
    for (name, interval, goals) in [
        (
            "fanout ws json 1,000 subscribers, one per 2 ms",
            "2",
            vec![at_least(Rate, Bun, 1.0), at_most(P99, Bun, 1.0)],
        ),
        (
            "fanout ws json 1,000 subscribers, one per 20 ms",
            "20",
            vec![at_most(CpuCores, Bun, 1.0)],
        ),
    ] {
        cases.push(
            Case::new(
                name,
                Ws,
                s(&[
                    "fanout",
                    "-s",
                    "1000",
                    "--codecs",
                    "json",
                    "--interval-ms",
                    interval,
                    "--window",
                    "1000",
                ]),
            )
            .servers(&[Signalbox, Floor, Bun])
            .metrics(&[Rate, P99, CpuCores])
            .goals(&goals),
        );
    }
    // The batching window (signalbox::Batching, bench_server --batch-ms):
    // what a 1 ms and a 5 ms window cost in latency and save in server CPU
    // on the paced fan-out, and do to chat rounds (each round waits for
    // its last delivery, so a window shows as fewer deliveries/s; the row
    // without a window is "chat ws json 32 clients × 10" above).
    let paced = s(&[
        "fanout",
        "-s",
        "1000",
        "--codecs",
        "json",
        "--interval-ms",
        "2",
        "--window",
        "1000",
    ]);
    for window in ["off", "1", "5"] {
        let label = if window == "off" {
            "off".to_owned()
        } else {
            format!("{window} ms")
        };
        let mut case = Case::new(
            format!("fanout ws json 1,000 subscribers, one per 2 ms, batching window {label}"),
            Ws,
            paced.clone(),
        )
        .metrics(&[Rate, P99, CpuPerOp]);
        if window != "off" {
            case.server_args = s(&["--batch-ms", window]);
            cases.push(case);
            let mut chat = Case::new(
                format!("chat ws json 32 clients × 10, batching window {label}"),
                Ws,
                s(&["chat", "-n", "32", "--batch", "10"]),
            )
            .metrics(&[Rate, CpuPerOp]);
            chat.server_args = s(&["--batch-ms", window]);
            cases.push(chat);
        } else {
            cases.push(case);
        }
    }
    cases.push(
        Case::new(
            "fanout ws json+msgpack 1,000 subscribers",
            Ws,
            s(&["fanout", "-s", "1000", "--codecs", "json,msgpack"]),
        )
        .metrics(&[Rate, P99]),
    );
    let big = args.fanout_big.to_string();
    cases.push(
        Case::new(
            format!("fanout ws json {} subscribers", thousands(args.fanout_big)),
            Ws,
            s(&["fanout", "-s", &big, "--codecs", "json"]),
        )
        .servers(&[Signalbox, Floor, Bun])
        .metrics(&[Rate, P99, CpuPerOp])
        .goals(&[at_least(Rate, Bun, 1.2)]),
    );
    let m = args.idle_conns.to_string();
    cases.push(
        Case::new(
            format!("idle ws {} connections", thousands(args.idle_conns)),
            Ws,
            s(&["idle", "-m", &m]),
        )
        .servers(&[Signalbox, Raw, RawDefault, Floor, Bun])
        .metrics(&[Bytes])
        .goals(&[Goal {
            metric: Bytes,
            cmp: Cmp::AtMost,
            against: Against::Value(4096.0),
        }]),
    );
    let max = args.idle_max.to_string();
    let mut heartbeats = Case::new(
        format!(
            "idle ws {} connections, heartbeat every {} s",
            thousands(args.idle_max),
            args.heartbeat_interval
        ),
        Ws,
        s(&["idle", "-m", &max, "--rest", &args.rest.to_string()]),
    )
    .metrics(&[Bytes, CpuCores, CpuPerHeartbeat]);
    heartbeats.server_args = s(&["--heartbeat-interval", &args.heartbeat_interval.to_string()]);
    cases.push(heartbeats);
    cases.push(
        Case::new(
            "cross-node chat ws json 32 clients × 10 (2 nodes, Redis)",
            Ws,
            s(&["cross-node", "-n", "32", "--batch", "10"]),
        )
        .servers(&[SignalboxRedis]),
    );
    cases
}

/// The points of the scaling curves.
fn curve_cases(args: &Args) -> Vec<Case> {
    use Metric::*;
    use Server::*;
    let mut cases = Vec::new();
    let mut idle_points = vec![1_000, 5_000, 10_000];
    if args.idle_max > 10_000 {
        idle_points.push(args.idle_max);
    }
    for m in idle_points {
        let mut case = Case::new(
            format!("curve: idle ws {} connections", thousands(m)),
            Transport::Ws,
            s(&["idle", "-m", &m.to_string()]),
        )
        .servers(&[Signalbox, Raw, Floor, Bun])
        .metrics(&[Bytes]);
        case.curve = Some((Curve::Idle, m as f64));
        cases.push(case);
    }
    for subscribers in [100, 1_000, 3_000, 10_000] {
        let mut case = Case::new(
            format!(
                "curve: fanout ws json {} subscribers",
                thousands(subscribers)
            ),
            Transport::Ws,
            s(&["fanout", "-s", &subscribers.to_string(), "--codecs", "json"]),
        )
        .servers(&[Signalbox, Floor, Bun])
        .metrics(&[Rate, P99]);
        case.curve = Some((Curve::Fanout, subscribers as f64));
        cases.push(case);
    }
    for conns in [1, 10, 100, 1_000] {
        let mut case = Case::new(
            format!("curve: echo ws json 20 B {} connections", thousands(conns)),
            Transport::Ws,
            s(&["echo", "-c", &conns.to_string(), "--size", "20"]),
        )
        .servers(&[Signalbox, Raw, Bun])
        .metrics(&[Rate]);
        case.curve = Some((Curve::Echo, conns as f64));
        cases.push(case);
    }
    cases
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A started server: its processes (killed on drop) and addresses.
struct Running {
    children: Vec<Child>,
    ws: Option<String>,
    ws_b: Option<String>,
    wss: Option<String>,
    quic: Option<String>,
    cert: Option<PathBuf>,
    /// The server process whose memory and CPU are read (none for the
    /// two-node case).
    pid: Option<u32>,
}

impl Running {
    fn one(child: Child, addrs: &BTreeMap<String, String>, cert: Option<PathBuf>) -> Running {
        Running {
            pid: Some(child.id()),
            children: vec![child],
            ws: addrs.get("ws").cloned(),
            ws_b: None,
            wss: addrs.get("wss").cloned(),
            quic: addrs.get("quic").cloned(),
            cert,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns `cmd` and waits for its `listening …` line.
fn spawn_listening(mut cmd: Command) -> Result<(Child, BTreeMap<String, String>)> {
    let program = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.starts_with("listening") {
                let _ = tx.send(line);
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} printed no `listening` line");
        }
    };
    let addrs = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok((child, addrs))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start(args: &Args, case: &Case, server: Server, tmp: &Path) -> Result<Running> {
    let bin = |name: &str| args.command(args.bin_dir.join(name), &args.server_cpu);
    let cert = tmp.join(format!("cert-{}.pem", std::process::id()));
    match server {
        Server::Signalbox => {
            let mut cmd = bin("bench_server");
            cmd.args(["--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--cert-out"])
                .arg(&cert)
                .args(&case.server_args);
            let (child, addrs) = spawn_listening(cmd)?;
            Ok(Running::one(child, &addrs, Some(cert)))
        }
        Server::Raw | Server::RawDefault => {
            let cmd = match case.transport {
                Transport::Ws => {
                    let mut cmd = bin("raw_ws_echo");
                    let buffer = if server == Server::Raw {
                        4096
                    } else {
                        128 * 1024
                    };
                    cmd.args(["--buffer-size", &buffer.to_string()]);
                    cmd
                }
                Transport::Wss => bail!("no raw wss:// baseline"),
                Transport::Quic | Transport::Wt => {
                    let mut cmd = bin("raw_quic_echo");
                    cmd.arg("--cert-out").arg(&cert);
                    cmd
                }
            };
            let (child, addrs) = spawn_listening(cmd)?;
            Ok(Running::one(child, &addrs, Some(cert)))
        }
        Server::Floor => {
            let (child, addrs) = spawn_listening(bin("chat_floor"))?;
            Ok(Running::one(child, &addrs, None))
        }
        Server::Bun => {
            let mut cmd = args.command(std::fs::canonicalize(&args.bun)?, &args.server_cpu);
            cmd.arg("server.ts").arg("0").current_dir("benches/bun");
            let (child, addrs) = spawn_listening(cmd)?;
            Ok(Running::one(child, &addrs, None))
        }
        Server::SignalboxRedis => {
            let port = free_port()?;
            let mut redis = args
                .command("redis-server", &args.server_cpu)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server")?;
            let url = format!("redis://127.0.0.1:{port}");
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = redis.kill();
                    let _ = redis.wait();
                    bail!("redis-server did not listen");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut running = Running {
                pid: None,
                children: vec![redis],
                ws: None,
                ws_b: None,
                wss: None,
                quic: None,
                cert: None,
            };
            for node in 0..2 {
                let mut cmd = bin("bench_server");
                cmd.args([
                    "--ws",
                    "127.0.0.1:0",
                    "--wss",
                    "off",
                    "--quic",
                    "off",
                    "--redis",
                    &url,
                ]);
                let (child, addrs) = spawn_listening(cmd)?;
                running.children.push(child);
                if node == 0 {
                    running.ws = addrs.get("ws").cloned();
                } else {
                    running.ws_b = addrs.get("ws").cloned();
                }
            }
            Ok(running)
        }
    }
}

/// One loadgen run against a started server: the parsed `RESULT` line.
fn measure(args: &Args, case: &Case, running: &Running) -> Result<Value> {
    let mut cmd = args.command(args.bin_dir.join("loadgen"), &args.loadgen_cpu);
    cmd.args(&case.args);
    match case.transport {
        Transport::Ws => {
            cmd.arg("--ws")
                .arg(running.ws.as_deref().context("no ws address")?);
        }
        Transport::Wss => {
            cmd.arg("--wss")
                .arg(running.wss.as_deref().context("no wss address")?)
                .arg("--cert")
                .arg(running.cert.as_deref().context("no certificate")?);
        }
        Transport::Quic | Transport::Wt => {
            cmd.arg("--quic")
                .arg(running.quic.as_deref().context("no quic address")?)
                .arg("--cert")
                .arg(running.cert.as_deref().context("no certificate")?);
            if case.transport == Transport::Wt {
                cmd.args(["--webtransport", "/wt"]);
            }
        }
    }
    if let Some(b) = &running.ws_b {
        cmd.arg("--ws-b").arg(b);
    }
    if case.workload() != "idle" {
        cmd.arg("--duration")
            .arg(args.duration.to_string())
            .arg("--warmup")
            .arg(args.warmup.to_string());
    }
    if let Some(pid) = running.pid {
        cmd.arg("--server-pid").arg(pid.to_string());
    } else if case.workload() == "idle" {
        bail!("the idle workload needs one server process");
    }
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running loadgen")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(json) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        bail!("loadgen failed ({})", output.status);
    };
    let value: Value = serde_json::from_str(json)?;
    let errors = value["errors"].as_u64().unwrap_or(0);
    if errors > 0 {
        bail!("loadgen counted {errors} errors");
    }
    Ok(value)
}

fn metric_of(report: &Value, metric: Metric) -> Option<f64> {
    let ops = report["ops"].as_f64().filter(|&n| n > 0.0);
    let cpu = report["server_cpu_s"].as_f64();
    match metric {
        Metric::Rate | Metric::Bytes => report["value"].as_f64(),
        Metric::P99 => report["p99_us"].as_f64(),
        Metric::CpuPerOp => Some(cpu? * 1e6 / ops?),
        Metric::CpuCores => Some(cpu? / report["seconds"].as_f64().filter(|&s| s > 0.0)?),
        Metric::CpuPerHeartbeat => {
            let beats = report["heartbeats"].as_f64().filter(|&n| n > 0.0)?;
            Some(cpu? * 1e6 / beats)
        }
        Metric::LoadgenCores => Some(
            report["loadgen_cpu_s"].as_f64()? / report["seconds"].as_f64().filter(|&s| s > 0.0)?,
        ),
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn fmt_value(metric: Metric, v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) => match metric {
            Metric::Rate => thousands(v.round() as usize),
            Metric::P99 => format!("{:.2} ms", v / 1000.0),
            Metric::Bytes => format!("{} B", thousands(v.round() as usize)),
            Metric::CpuPerOp | Metric::CpuPerHeartbeat => format!("{v:.2} µs"),
            Metric::CpuCores | Metric::LoadgenCores => format!("{v:.3}"),
        },
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into())
}

/// The verdicts of the goals on `metric`, given signalbox's median, the
/// baselines' (`of`) and signalbox's in earlier rows (`of_case`, by case
/// name).
fn verdict(
    goals: &[Goal],
    metric: Metric,
    sb: Option<f64>,
    of: &dyn Fn(Server) -> Option<f64>,
    of_case: &dyn Fn(&str) -> Option<f64>,
) -> String {
    let mark = |ok: bool| if ok { "met" } else { "**not met**" };
    let mut parts = Vec::new();
    for goal in goals.iter().filter(|g| g.metric == metric) {
        let sign = match goal.cmp {
            Cmp::AtLeast => "≥",
            Cmp::AtMost => "≤",
        };
        let (bound, what) = match goal.against {
            Against::Server(server, factor) => (
                of(server).map(|v| v * factor),
                format!("{sign} {factor}× {}", server.label()),
            ),
            Against::Value(v) => (Some(v), format!("{sign} {}", fmt_value(metric, Some(v)))),
            Against::Case(name, factor) => (
                of_case(name).map(|v| v * factor),
                format!("{sign} {factor}× {name}"),
            ),
        };
        match (sb, bound) {
            (Some(v), Some(bound)) => {
                let ok = match goal.cmp {
                    Cmp::AtLeast => v >= bound,
                    Cmp::AtMost => v <= bound,
                };
                parts.push(format!("{what}: {}", mark(ok)));
            }
            _ => parts.push(format!("{what}: not measured")),
        }
    }
    parts.join("; ")
}

fn metric_name(metric: Metric, workload: &str) -> &'static str {
    match (metric, workload) {
        (Metric::Rate, "echo") => "round trips/s",
        (Metric::Rate, _) => "deliveries/s",
        (Metric::P99, "fanout") => "p99 publish→receive",
        (Metric::P99, _) => "p99 latency",
        (Metric::Bytes, _) => "server RSS per connection",
        (Metric::CpuPerOp, "echo") => "server CPU per round trip",
        (Metric::CpuPerOp, _) => "server CPU per delivery",
        (Metric::CpuCores, "idle") => "server CPU at rest (cores)",
        (Metric::CpuCores, _) => "server CPU (cores)",
        (Metric::CpuPerHeartbeat, _) => "server CPU per heartbeat",
        (Metric::LoadgenCores, _) => "load generator CPU (cores)",
    }
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Medians per server and metric of one case's runs.
type Medians = BTreeMap<Server, BTreeMap<Metric, (f64, usize)>>;

/// Runs every server of `case` `runs` times, interleaved; failures are
/// added to `failures`.
fn run_case(
    args: &Args,
    case: &Case,
    servers: &[Server],
    runs: usize,
    started: Instant,
    failures: &mut Vec<String>,
) -> Medians {
    let tmp = std::env::temp_dir();
    let mut values: BTreeMap<Server, BTreeMap<Metric, Vec<f64>>> = BTreeMap::new();
    for run in 0..runs {
        // Alternate the order so that no server always goes first.
        let mut order = servers.to_vec();
        if run % 2 == 1 {
            order.reverse();
        }
        for &server in &order {
            eprintln!(
                "\n== {} | {:?} | run {}/{} ({:.0}s elapsed)",
                case.name,
                server,
                run + 1,
                runs,
                started.elapsed().as_secs_f64()
            );
            let outcome =
                start(args, case, server, &tmp).and_then(|running| measure(args, case, &running));
            match outcome {
                Ok(report) => {
                    let per = values.entry(server).or_default();
                    for &m in case.metrics.iter().chain([&Metric::LoadgenCores]) {
                        if let Some(v) = metric_of(&report, m) {
                            per.entry(m).or_default().push(v);
                        }
                    }
                }
                Err(e) => {
                    eprintln!("harness: {} / {server:?}: {e:#}", case.name);
                    failures.push(format!("{} / {server:?} run {}: {e:#}", case.name, run + 1));
                }
            }
        }
    }
    values
        .into_iter()
        .map(|(server, per)| {
            let medians = per
                .into_iter()
                .filter_map(|(m, mut v)| Some((m, (median(&mut v)?, v.len()))))
                .collect();
            (server, medians)
        })
        .collect()
}

/// The table's columns after the metric: signalbox, then the baselines.
const BASELINES: [Server; 4] = [Server::Raw, Server::RawDefault, Server::Floor, Server::Bun];

/// The load generator's share of its core above which a rate is marked as
/// possibly bounded by the client (pinned runs only).
const CLIENT_BOUND: f64 = 0.9;

/// How many CPUs a `taskset -c` list names (`1`, `1-3,5`: 1, 4); at
/// least one.
fn cpu_count(list: &str) -> usize {
    let n: usize = list
        .split(',')
        .map(|part| match part.trim().split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum();
    n.max(1)
}

/// The mark after a rate the load generator may have bounded.
const CLIENT_MARK: &str = " †";

/// The table's rows of `case`; `earlier` holds the medians of the cases
/// already run, by name (for [`Against::Case`]).
fn table_rows(
    args: &Args,
    case: &Case,
    medians: &Medians,
    earlier: &BTreeMap<String, Medians>,
    bun_ok: bool,
) -> Vec<String> {
    let mut rows = Vec::new();
    let client_cores = cpu_count(&args.loadgen_cpu) as f64;
    let client_bound = |server: Server| {
        !args.unpinned
            && medians
                .get(&server)
                .and_then(|m| m.get(&Metric::LoadgenCores))
                .is_some_and(|m| m.0 >= CLIENT_BOUND * client_cores)
    };
    for &metric in &case.metrics {
        let med = |server: Server| medians.get(&server)?.get(&metric).map(|m| m.0);
        let mark = |server: Server| {
            if metric == Metric::Rate && client_bound(server) {
                CLIENT_MARK
            } else {
                ""
            }
        };
        let sb_server = if case.servers.contains(&Server::SignalboxRedis) {
            Server::SignalboxRedis
        } else {
            Server::Signalbox
        };
        let sb = med(sb_server);
        let n_sb = medians
            .get(&sb_server)
            .and_then(|m| m.get(&metric))
            .map_or(0, |m| m.1);
        let mut row = format!(
            "| {} | {} | {}",
            case.name,
            metric_name(metric, case.workload()),
            fmt_value(metric, sb) + mark(sb_server) + if n_sb < args.runs { " ⚠" } else { "" },
        );
        for baseline in BASELINES {
            let cell = if !case.servers.contains(&baseline) {
                "n/a".to_owned()
            } else if baseline == Server::Bun && !bun_ok {
                "not run".to_owned()
            } else {
                fmt_value(metric, med(baseline)) + mark(baseline)
            };
            row.push_str(&format!(" | {cell}"));
        }
        for baseline in [Server::Raw, Server::Floor, Server::Bun] {
            row.push_str(&format!(" | {}", fmt_ratio(ratio(sb, med(baseline)))));
        }
        let of_case = |name: &str| {
            earlier
                .get(name)?
                .get(&Server::Signalbox)?
                .get(&metric)
                .map(|m| m.0)
        };
        row.push_str(&format!(
            " | {} |",
            verdict(&case.goals, metric, sb, &med, &of_case)
        ));
        rows.push(row);
    }
    rows
}

/// The medians of the curves' points: (x, y) per curve, metric and server.
type CurvePoints = BTreeMap<(Curve, Metric), BTreeMap<Server, Vec<(f64, f64)>>>;

/// The curves' charts from the medians of their points.
fn charts(points: &CurvePoints) -> Vec<(String, Chart)> {
    let mut charts = Vec::new();
    for ((curve, metric), per_server) in points {
        let (file, title, x_label, y_label, log_x, scale) = match (curve, metric) {
            (Curve::Idle, Metric::Bytes) => (
                "idle-rss",
                "Server RSS per idle WebSocket connection",
                "idle connections",
                "bytes per connection",
                false,
                1.0,
            ),
            (Curve::Fanout, Metric::Rate) => (
                "fanout-rate",
                "Fan-out: deliveries per second",
                "subscribers (log scale)",
                "deliveries/s",
                true,
                1.0,
            ),
            (Curve::Fanout, Metric::P99) => (
                "fanout-p99",
                "Fan-out: p99 publish → receive",
                "subscribers (log scale)",
                "p99 (ms)",
                true,
                1e-3,
            ),
            (Curve::Echo, Metric::Rate) => (
                "echo-rate",
                "Echo (JSON, 20 B, one in flight): round trips per second",
                "connections (log scale)",
                "round trips/s",
                true,
                1.0,
            ),
            _ => continue,
        };
        let series = per_server
            .iter()
            .filter(|(_, pts)| !pts.is_empty())
            .map(|(server, pts)| Series {
                name: server.legend().to_owned(),
                color: *server as usize,
                points: pts.iter().map(|&(x, y)| (x, y * scale)).collect(),
            })
            .collect::<Vec<_>>();
        if series.is_empty() {
            continue;
        }
        charts.push((
            file.to_owned(),
            Chart {
                title: title.into(),
                x_label: x_label.into(),
                y_label: y_label.into(),
                log_x,
                series,
            },
        ));
    }
    charts
}

/// The README section of the curves: each picture and its numbers.
fn curves_section(args: &Args, charts: &[(String, Chart)], placement: &str) -> String {
    let mut out = format!(
        "- Date: {}; {placement}; {} run(s) per point (medians), {} s measured after {} s of warm-up\n\n",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        args.curve_runs,
        args.duration,
        args.warmup,
    );
    let dir = args
        .curves_dir
        .strip_prefix("benches")
        .unwrap_or(&args.curves_dir);
    for (file, chart) in charts {
        out.push_str(&format!(
            "![{}]({}/{file}.svg)\n\n",
            chart.title,
            dir.display()
        ));
        let mut xs: Vec<f64> = chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        out.push_str(&format!(
            "| {} |",
            chart.x_label.trim_end_matches(" (log scale)")
        ));
        for s in &chart.series {
            out.push_str(&format!(" {} |", s.name));
        }
        out.push_str("\n|---:|");
        for _ in &chart.series {
            out.push_str("---:|");
        }
        out.push('\n');
        for x in xs {
            out.push_str(&format!("| {} |", thousands(x as usize)));
            for s in &chart.series {
                let cell = s
                    .points
                    .iter()
                    .find(|p| p.0 == x)
                    .map_or("—".to_owned(), |p| {
                        if p.1 >= 100.0 {
                            thousands(p.1.round() as usize)
                        } else {
                            format!("{:.2}", p.1)
                        }
                    });
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
        out.push_str(&format!("\nValues: {}.\n\n", chart.y_label));
    }
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    signalbox_benches::raise_fd_limit();
    if !args.unpinned && Command::new("taskset").arg("-V").output().is_err() {
        bail!("taskset (util-linux) is needed to pin; install it or pass --unpinned");
    }
    let only: Vec<String> = args
        .only
        .as_deref()
        .map(|o| o.split(',').map(|x| x.trim().to_owned()).collect())
        .unwrap_or_default();
    let selected =
        |case: &Case| only.is_empty() || only.iter().any(|o| case.name.contains(o.as_str()));
    let bun_ok = !args.no_bun && args.bun.exists();
    if !args.no_bun && !bun_ok {
        eprintln!(
            "harness: {} not found (npm ci in benches/bun); ws-kit on Bun skipped",
            args.bun.display()
        );
    }
    let runnable = |case: &Case| -> Vec<Server> {
        case.servers
            .iter()
            .copied()
            .filter(|s| *s != Server::Bun || bun_ok)
            .collect()
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut earlier = BTreeMap::new();
    for case in cases(&args).iter().filter(|c| selected(c)) {
        let medians = run_case(
            &args,
            case,
            &runnable(case),
            args.runs,
            started,
            &mut failures,
        );
        rows.extend(table_rows(&args, case, &medians, &earlier, bun_ok));
        earlier.insert(case.name.clone(), medians.clone());
    }
    let table_seconds = started.elapsed().as_secs_f64();
    let mut points = CurvePoints::new();
    if !args.no_curves {
        for case in curve_cases(&args).iter().filter(|c| selected(c)) {
            let Some((curve, x)) = case.curve else {
                continue;
            };
            let medians = run_case(
                &args,
                case,
                &runnable(case),
                args.curve_runs,
                started,
                &mut failures,
            );
            for (server, per) in medians {
                for (metric, (v, _)) in per {
                    points
                        .entry((curve, metric))
                        .or_default()
                        .entry(server)
                        .or_default()
                        .push((x, v));
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let placement = if args.unpinned {
        "unpinned: servers and load generator share every CPU".to_owned()
    } else {
        format!(
            "pinned: each server process on CPU {} (`taskset -c {}`), the load generator on CPU {} (`taskset -c {}`), a fresh server process per run",
            args.server_cpu, args.server_cpu, args.loadgen_cpu, args.loadgen_cpu
        )
    };
    let kind = if args.is_full_run() {
        "full run".to_owned()
    } else {
        format!(
            "**short run** (`--runs {} --duration {} --warmup {}`): it shows that every case works; its numbers are not the figures to quote, which come from a full `benches/run` (3 runs of 4 s per case) on a quiet machine",
            args.runs, args.duration, args.warmup
        )
    };
    let mut table = String::from(
        "| workload | metric | signalbox | raw tokio-tungstenite 4 KiB buffers / raw quinn | raw tokio-tungstenite default buffers | hand-written chat floor | ws-kit on Bun | signalbox ÷ raw | signalbox ÷ floor | signalbox ÷ Bun | target |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in &rows {
        table.push_str(row);
        table.push('\n');
    }
    let machine = format!(
        "- Date: {}\n- Machine: {} cores ({}), {} RAM; `{}`\n- Placement: {placement}\n- Kind: {kind}\n- Runs: {} per case and server, medians shown; {} s measured after {} s of warm-up per run (idle: {} connections; heartbeats: {} connections pinged every {} s, CPU read over {} s at rest); table {:.0} s, whole run with curves {:.0} s\n- Load: `uptime` at the end: {}\n",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        sh("nproc --all"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'"),
        sh("free -h | awk '/^Mem:/ {print $2}'"),
        sh("uname -sr"),
        args.runs,
        args.duration,
        args.warmup,
        thousands(args.idle_conns),
        thousands(args.idle_max),
        args.heartbeat_interval,
        args.rest,
        table_seconds,
        elapsed,
        sh("uptime | sed 's/.*load average/load average/'"),
    );
    let mut section = format!("{machine}\n{table}");
    if rows.iter().any(|r| r.contains(CLIENT_MARK)) {
        section.push_str(&format!(
            "\n†: the load generator used at least {:.0}% of its CPU(s) in that run (median): the client may be what bounds the rate.\n",
            CLIENT_BOUND * 100.0
        ));
    }
    if !failures.is_empty() {
        section.push_str("\nRuns that failed (⚠ marks a median over fewer runs):\n\n");
        for f in &failures {
            section.push_str(&format!("- {f}\n"));
        }
    }
    println!("\n{section}");
    let charts = charts(&points);
    let curves = curves_section(&args, &charts, &placement);
    if !charts.is_empty() {
        println!("\n{curves}");
    }
    if !args.no_write {
        if !rows.is_empty() {
            write_between(&args.readme, RESULTS, &section)?;
            eprintln!("harness: table written to {}", args.readme.display());
        }
        if !charts.is_empty() {
            std::fs::create_dir_all(&args.curves_dir)?;
            for (file, chart) in &charts {
                chart.write_svg(&args.curves_dir.join(format!("{file}.svg")))?;
            }
            write_between(&args.readme, CURVES, &curves)?;
            eprintln!(
                "harness: {} curves written to {}",
                charts.len(),
                args.curves_dir.display()
            );
        }
    }
    eprintln!("harness: done in {elapsed:.0} s");
    Ok(())
}

/// The start and end markers of a generated section of the README.
type Markers = (&'static str, &'static str);

const RESULTS: Markers = ("<!-- results:start -->", "<!-- results:end -->");
const CURVES: Markers = ("<!-- curves:start -->", "<!-- curves:end -->");

/// Replaces what is between `markers` in the file at `path` with
/// `section`; appends the markers and section if they are not there.
fn write_between(path: &Path, (start, end): Markers, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{start}\n{section}{}", &old[..a], &old[b..]),
        _ if old.is_empty() => format!("# signalbox benchmarks\n\n{start}\n{section}{end}\n"),
        _ => format!("{old}\n{start}\n{section}{end}\n"),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_runs() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn a_section_replaces_only_what_is_between_its_markers() {
        let dir = std::env::temp_dir().join(format!("harness-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("README.md");
        let (s, e) = RESULTS;
        let (cs, ce) = CURVES;
        std::fs::write(
            &path,
            format!("intro\n{s}\nold\n{e}\nmid\n{cs}\nold\n{ce}\nnotes\n"),
        )
        .unwrap();
        write_between(&path, RESULTS, "new\n").unwrap();
        write_between(&path, CURVES, "pictures\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("intro\n{s}\nnew\n{e}\nmid\n{cs}\npictures\n{ce}\nnotes\n")
        );
        std::fs::remove_file(&path).unwrap();
        write_between(&path, RESULTS, "first\n").unwrap();
        write_between(&path, CURVES, "second\n").unwrap();
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(fresh.contains(&format!("{s}\nfirst\n{e}")), "{fresh}");
        assert!(fresh.contains(&format!("{cs}\nsecond\n{ce}")), "{fresh}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verdicts_name_what_is_missed() {
        let goals = [
            at_least(Metric::Rate, Server::Raw, 0.9),
            at_least(Metric::Rate, Server::Bun, 3.0),
            at_most(Metric::CpuPerOp, Server::Floor, 1.3),
        ];
        let of = |server: Server| match server {
            Server::Raw => Some(100.0),
            Server::Bun => Some(50.0),
            _ => None,
        };
        let v = verdict(&goals, Metric::Rate, Some(95.0), &of, &|_| None);
        assert_eq!(v, "≥ 0.9× raw: met; ≥ 3× Bun: **not met**");
        let v = verdict(&goals, Metric::CpuPerOp, Some(1.0), &of, &|_| None);
        assert_eq!(v, "≤ 1.3× chat floor: not measured");
        let bytes = [Goal {
            metric: Metric::Bytes,
            cmp: Cmp::AtMost,
            against: Against::Value(4096.0),
        }];
        let v = verdict(&bytes, Metric::Bytes, Some(4097.0), &of, &|_| None);
        assert_eq!(v, "≤ 4,096 B: **not met**");
        assert_eq!(verdict(&bytes, Metric::P99, Some(1.0), &of, &|_| None), "");
        let quic = [Goal {
            metric: Metric::CpuPerOp,
            cmp: Cmp::AtMost,
            against: Against::Case("chat wss", 1.0),
        }];
        let wss = |name: &str| (name == "chat wss").then_some(0.7);
        let v = verdict(&quic, Metric::CpuPerOp, Some(0.95), &of, &wss);
        assert_eq!(v, "≤ 1× chat wss: **not met**");
        let v = verdict(&quic, Metric::CpuPerOp, Some(0.6), &of, &wss);
        assert_eq!(v, "≤ 1× chat wss: met");
        let v = verdict(&quic, Metric::CpuPerOp, Some(0.6), &of, &|_| None);
        assert_eq!(v, "≤ 1× chat wss: not measured");
    }

    #[test]
    fn metrics_come_from_the_result_line() {
        let report: Value = serde_json::from_str(
            r#"{"ops":2000,"seconds":4.0,"value":500.0,"p99_us":1500,"server_cpu_s":0.5,"heartbeats":1000}"#,
        )
        .unwrap();
        assert_eq!(metric_of(&report, Metric::Rate), Some(500.0));
        assert_eq!(metric_of(&report, Metric::P99), Some(1500.0));
        assert_eq!(metric_of(&report, Metric::CpuPerOp), Some(250.0));
        assert_eq!(metric_of(&report, Metric::CpuCores), Some(0.125));
        assert_eq!(metric_of(&report, Metric::CpuPerHeartbeat), Some(500.0));
        let no_cpu: Value =
            serde_json::from_str(r#"{"ops":10,"seconds":1.0,"value":10.0}"#).unwrap();
        assert_eq!(metric_of(&no_cpu, Metric::CpuPerOp), None);
    }

    #[test]
    fn rates_the_client_may_have_bounded_are_marked_when_pinned() {
        let mut args = Args::parse_from(["harness", "--runs", "1"]);
        let case = Case::new("echo", Transport::Ws, s(&["echo"]))
            .servers(&[Server::Signalbox, Server::Raw])
            .metrics(&[Metric::Rate, Metric::P99]);
        let mut medians = Medians::new();
        for (server, rate, client) in [(Server::Signalbox, 100.0, 0.5), (Server::Raw, 200.0, 0.95)]
        {
            let per = medians.entry(server).or_default();
            per.insert(Metric::Rate, (rate, 1));
            per.insert(Metric::P99, (1000.0, 1));
            per.insert(Metric::LoadgenCores, (client, 1));
        }
        let rows = table_rows(&args, &case, &medians, &BTreeMap::new(), true);
        assert!(
            rows[0].starts_with("| echo | round trips/s | 100 | 200 † |"),
            "{}",
            rows[0]
        );
        assert!(!rows[1].contains(CLIENT_MARK), "only rates: {}", rows[1]);
        args.unpinned = true;
        let rows = table_rows(&args, &case, &medians, &BTreeMap::new(), true);
        assert!(!rows[0].contains(CLIENT_MARK), "{}", rows[0]);
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_count("1"), 1);
        assert_eq!(cpu_count("1-3"), 3);
        assert_eq!(cpu_count("1-3,5"), 4);
        assert_eq!(cpu_count(""), 1);
    }

    #[test]
    fn pinned_commands_go_through_taskset() {
        let mut args = Args::parse_from(["harness"]);
        let cmd = args.command("loadgen", "1");
        assert_eq!(cmd.get_program(), "taskset");
        let argv: Vec<_> = cmd.get_args().collect();
        assert_eq!(argv, ["-c", "1", "loadgen"]);
        args.unpinned = true;
        assert_eq!(args.command("loadgen", "1").get_program(), "loadgen");
    }

    #[test]
    fn every_case_and_curve_point_has_a_signalbox_server_and_metrics() {
        let args = Args::parse_from(["harness"]);
        let all: Vec<Case> = cases(&args).into_iter().chain(curve_cases(&args)).collect();
        let mut earlier: Vec<&Case> = Vec::new();
        for case in &all {
            assert!(
                case.servers.contains(&Server::Signalbox)
                    || case.servers.contains(&Server::SignalboxRedis),
                "{}",
                case.name
            );
            assert!(!case.metrics.is_empty(), "{}", case.name);
            for goal in &case.goals {
                assert!(case.metrics.contains(&goal.metric), "{}", case.name);
                match goal.against {
                    Against::Server(server, _) => {
                        assert!(case.servers.contains(&server), "{}", case.name);
                    }
                    Against::Case(name, _) => assert!(
                        earlier
                            .iter()
                            .any(|c: &&Case| c.name == name && c.metrics.contains(&goal.metric)),
                        "{} names {name}, which is not an earlier row with that metric",
                        case.name
                    ),
                    Against::Value(_) => {}
                }
            }
            earlier.push(case);
        }
        let curves = curve_cases(&args);
        assert_eq!(
            curves
                .iter()
                .filter(|c| c.curve.map(|c| c.0) == Some(Curve::Idle))
                .count(),
            4
        );
    }
}
