//! The benchmark harness behind `benches/run`: starts each server on free
//! ports, runs each workload of the load generator against signalbox and
//! its baselines (interleaved: every run of a case measures each server in
//! turn, a fresh process each time), takes medians over the runs, prints
//! the table and writes it into `benches/README.md` between the markers
//! `<!-- results:start -->` and `<!-- results:end -->`.
//!
//! ```text
//! harness [--runs 3] [--duration 4] [--warmup 1] [--only echo,chat]
//!         [--idle-conns 10000] [--fanout-big 10000] [--no-bun] [--no-write]
//! ```

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::Value;
use std::collections::BTreeMap;
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
    /// Subscribers of the large fan-out case.
    #[arg(long, default_value_t = 10_000)]
    fanout_big: usize,
    /// Skip the ws-kit on Bun baseline.
    #[arg(long)]
    no_bun: bool,
    /// Print the table only; leave benches/README.md alone.
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

/// The servers measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    /// `bench_server`: the chat router and hub, rate limit off.
    Signalbox,
    /// `raw_ws_echo` or `raw_quic_echo`.
    Raw,
    /// ws-kit on Bun (`benches/bun/server.ts`).
    Bun,
    /// Two `bench_server`s sharing rooms through a throwaway redis-server.
    SignalboxRedis,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Ws,
    Quic,
}

/// A headline number of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    Rate,
    P99,
    Bytes,
}

/// What a case is held to.
#[derive(Debug, Clone, Copy)]
enum Goal {
    None,
    /// signalbox ≥ `raw`× raw and ≥ `bun`× Bun.
    Echo {
        raw: f64,
        bun: f64,
    },
    /// signalbox ≥ Bun.
    AtLeastBun,
    /// signalbox ≤ this many bytes per connection.
    AtMostBytes(f64),
}

struct Case {
    name: String,
    transport: Transport,
    /// Load generator arguments (workload and parameters, no target).
    args: Vec<String>,
    servers: Vec<Server>,
    metrics: Vec<Metric>,
    goal: Goal,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn cases(args: &Args) -> Vec<Case> {
    use Metric::*;
    use Server::*;
    let echo_goal = Goal::Echo { raw: 0.8, bun: 2.0 };
    let mut cases = Vec::new();
    for (name, extra, goal) in [
        ("echo ws json 20 B", s(&["--size", "20"]), echo_goal),
        ("echo ws json 1 KiB", s(&["--size", "1024"]), echo_goal),
        ("echo ws json 16 KiB", s(&["--size", "16384"]), echo_goal),
        (
            "echo ws json 20 B pipelined k=16",
            s(&["--size", "20", "-k", "16"]),
            echo_goal,
        ),
    ] {
        let mut a = s(&["echo", "-c", "50", "--codec", "json"]);
        a.extend(extra);
        cases.push(Case {
            name: name.into(),
            transport: Transport::Ws,
            args: a,
            servers: vec![Signalbox, Raw, Bun],
            metrics: vec![Rate, P99],
            goal,
        });
    }
    cases.push(Case {
        name: "echo ws msgpack 20 B".into(),
        transport: Transport::Ws,
        args: s(&["echo", "-c", "50", "--codec", "msgpack", "--size", "20"]),
        servers: vec![Signalbox, Raw],
        metrics: vec![Rate, P99],
        goal: Goal::None,
    });
    for (name, size) in [
        ("echo quic json 20 B", "20"),
        ("echo quic json 1 KiB", "1024"),
    ] {
        cases.push(Case {
            name: name.into(),
            transport: Transport::Quic,
            args: s(&["echo", "-c", "50", "--codec", "json", "--size", size]),
            servers: vec![Signalbox, Raw],
            metrics: vec![Rate, P99],
            goal: Goal::None,
        });
    }
    cases.push(Case {
        name: "chat ws json 32 clients".into(),
        transport: Transport::Ws,
        args: s(&["chat", "-n", "32", "--batch", "10"]),
        servers: vec![Signalbox, Bun],
        metrics: vec![Rate],
        goal: Goal::AtLeastBun,
    });
    // docs/PROTOCOL.md §8: a burst into a room closes no member that
    // reads. Each round is the issue's burst: 3,200 publishes at once, all
    // 3,200 delivered to each of the 32 members before the next round.
    cases.push(Case {
        name: "chat burst ws json 32 clients × 100".into(),
        transport: Transport::Ws,
        args: s(&["chat", "-n", "32", "--batch", "100"]),
        servers: vec![Signalbox, Bun],
        metrics: vec![Rate],
        goal: Goal::None,
    });
    cases.push(Case {
        name: "chat quic json 32 clients".into(),
        transport: Transport::Quic,
        args: s(&["chat", "-n", "32", "--batch", "10"]),
        servers: vec![Signalbox],
        metrics: vec![Rate],
        goal: Goal::None,
    });
    cases.push(Case {
        name: "fanout ws json 1,000 subscribers".into(),
        transport: Transport::Ws,
        args: s(&["fanout", "-s", "1000", "--codecs", "json"]),
        servers: vec![Signalbox, Bun],
        metrics: vec![Rate, P99],
        goal: Goal::AtLeastBun,
    });
    cases.push(Case {
        name: "fanout ws json+msgpack 1,000 subscribers".into(),
        transport: Transport::Ws,
        args: s(&["fanout", "-s", "1000", "--codecs", "json,msgpack"]),
        servers: vec![Signalbox],
        metrics: vec![Rate, P99],
        goal: Goal::None,
    });
    let big = args.fanout_big.to_string();
    cases.push(Case {
        name: format!("fanout ws json {} subscribers", thousands(args.fanout_big)),
        transport: Transport::Ws,
        args: s(&["fanout", "-s", &big, "--codecs", "json"]),
        servers: vec![Signalbox, Bun],
        metrics: vec![Rate, P99],
        goal: Goal::AtLeastBun,
    });
    let m = args.idle_conns.to_string();
    cases.push(Case {
        name: format!("idle ws {} connections", thousands(args.idle_conns)),
        transport: Transport::Ws,
        args: s(&["idle", "-m", &m]),
        servers: vec![Signalbox, Raw, Bun],
        metrics: vec![Bytes],
        goal: Goal::AtMostBytes(10_240.0),
    });
    cases.push(Case {
        name: "cross-node chat ws json 32 clients (2 nodes, Redis)".into(),
        transport: Transport::Ws,
        args: s(&["cross-node", "-n", "32", "--batch", "10"]),
        servers: vec![SignalboxRedis],
        metrics: vec![Rate],
        goal: Goal::None,
    });
    cases
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
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
    quic: Option<String>,
    cert: Option<PathBuf>,
    pid: u32,
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

fn start(args: &Args, server: Server, transport: Transport, tmp: &Path) -> Result<Running> {
    let bin = |name: &str| args.bin_dir.join(name);
    let cert = tmp.join(format!("cert-{}.pem", std::process::id()));
    match server {
        Server::Signalbox => {
            let mut cmd = Command::new(bin("bench_server"));
            cmd.args(["--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--cert-out"])
                .arg(&cert);
            let (child, addrs) = spawn_listening(cmd)?;
            Ok(Running {
                pid: child.id(),
                children: vec![child],
                ws: addrs.get("ws").cloned(),
                ws_b: None,
                quic: addrs.get("quic").cloned(),
                cert: Some(cert),
            })
        }
        Server::Raw => {
            let cmd = match transport {
                Transport::Ws => Command::new(bin("raw_ws_echo")),
                Transport::Quic => {
                    let mut cmd = Command::new(bin("raw_quic_echo"));
                    cmd.arg("--cert-out").arg(&cert);
                    cmd
                }
            };
            let (child, addrs) = spawn_listening(cmd)?;
            Ok(Running {
                pid: child.id(),
                children: vec![child],
                ws: addrs.get("ws").cloned(),
                ws_b: None,
                quic: addrs.get("quic").cloned(),
                cert: Some(cert),
            })
        }
        Server::Bun => {
            let mut cmd = Command::new(std::fs::canonicalize(&args.bun)?);
            cmd.arg("server.ts").arg("0").current_dir("benches/bun");
            let (child, addrs) = spawn_listening(cmd)?;
            Ok(Running {
                pid: child.id(),
                children: vec![child],
                ws: addrs.get("ws").cloned(),
                ws_b: None,
                quic: None,
                cert: None,
            })
        }
        Server::SignalboxRedis => {
            let port = free_port()?;
            let mut redis = Command::new("redis-server")
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
                    bail!("redis-server did not listen");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut running = Running {
                pid: redis.id(),
                children: vec![redis],
                ws: None,
                ws_b: None,
                quic: None,
                cert: None,
            };
            for node in 0..2 {
                let mut cmd = Command::new(bin("bench_server"));
                cmd.args(["--ws", "127.0.0.1:0", "--quic", "off", "--redis", &url]);
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
    let mut cmd = Command::new(args.bin_dir.join("loadgen"));
    cmd.args(&case.args);
    match case.transport {
        Transport::Ws => {
            cmd.arg("--ws")
                .arg(running.ws.as_deref().context("no ws address")?);
        }
        Transport::Quic => {
            cmd.arg("--quic")
                .arg(running.quic.as_deref().context("no quic address")?)
                .arg("--cert")
                .arg(running.cert.as_deref().context("no certificate")?);
        }
    }
    if let Some(b) = &running.ws_b {
        cmd.arg("--ws-b").arg(b);
    }
    let workload = case.args.first().map(String::as_str).unwrap_or("");
    match workload {
        "idle" => {
            cmd.arg("--server-pid").arg(running.pid.to_string());
        }
        _ => {
            cmd.arg("--duration")
                .arg(args.duration.to_string())
                .arg("--warmup")
                .arg(args.warmup.to_string());
        }
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
    match metric {
        Metric::Rate | Metric::Bytes => report["value"].as_f64(),
        Metric::P99 => report["p99_us"].as_f64(),
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

fn verdict(
    goal: Goal,
    metric: Metric,
    sb: Option<f64>,
    raw: Option<f64>,
    bun: Option<f64>,
) -> String {
    let mark = |ok: bool| if ok { "met" } else { "**not met**" };
    match (goal, metric) {
        (Goal::Echo { raw: r, bun: b }, Metric::Rate) => {
            let mut parts = Vec::new();
            if let Some(x) = ratio(sb, raw) {
                parts.push(format!("≥{r}× raw: {}", mark(x >= r)));
            }
            if let Some(x) = ratio(sb, bun) {
                parts.push(format!("≥{b}× Bun: {}", mark(x >= b)));
            }
            parts.join("; ")
        }
        (Goal::AtLeastBun, Metric::Rate) => match ratio(sb, bun) {
            Some(x) => format!("≥ Bun: {}", mark(x >= 1.0)),
            None => String::new(),
        },
        (Goal::AtMostBytes(max), Metric::Bytes) => match sb {
            Some(v) => format!(
                "≤ {} KiB ({} B): {}",
                max / 1024.0,
                thousands(max as usize),
                mark(v <= max)
            ),
            None => String::new(),
        },
        _ => String::new(),
    }
}

fn metric_name(metric: Metric, workload: &str) -> &'static str {
    match (metric, workload) {
        (Metric::Rate, "echo") => "round trips/s",
        (Metric::Rate, _) => "deliveries/s",
        (Metric::P99, "fanout") => "p99 publish→receive",
        (Metric::P99, _) => "p99 latency",
        (Metric::Bytes, _) => "server RSS per connection",
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

fn main() -> Result<()> {
    let args = Args::parse();
    signalbox_benches::raise_fd_limit();
    let tmp = std::env::temp_dir();
    let only: Vec<String> = args
        .only
        .as_deref()
        .map(|o| o.split(',').map(|x| x.trim().to_owned()).collect())
        .unwrap_or_default();
    let bun_ok = !args.no_bun && args.bun.exists();
    if !args.no_bun && !bun_ok {
        eprintln!(
            "harness: {} not found (npm ci in benches/bun); ws-kit on Bun skipped",
            args.bun.display()
        );
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for case in cases(&args) {
        if !only.is_empty() && !only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        let servers: Vec<Server> = case
            .servers
            .iter()
            .copied()
            .filter(|s| *s != Server::Bun || bun_ok)
            .collect();
        // values[server][metric] over runs
        let mut values: BTreeMap<Server, Vec<Vec<f64>>> = BTreeMap::new();
        for run in 0..args.runs {
            // Alternate the order so that neither server always goes first.
            let mut order = servers.clone();
            if run % 2 == 1 {
                order.reverse();
            }
            for &server in &order {
                eprintln!(
                    "\n== {} | {:?} | run {}/{} ({:.0}s elapsed)",
                    case.name,
                    server,
                    run + 1,
                    args.runs,
                    started.elapsed().as_secs_f64()
                );
                let outcome = start(&args, server, case.transport, &tmp)
                    .and_then(|running| measure(&args, &case, &running));
                match outcome {
                    Ok(report) => {
                        let per = values
                            .entry(server)
                            .or_insert_with(|| vec![Vec::new(); case.metrics.len()]);
                        for (i, m) in case.metrics.iter().enumerate() {
                            if let Some(v) = metric_of(&report, *m) {
                                per[i].push(v);
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
        let workload = case.args.first().cloned().unwrap_or_default();
        for (i, metric) in case.metrics.iter().enumerate() {
            let med = |server: Server| {
                values
                    .get(&server)
                    .and_then(|per| median(&mut per[i].clone()))
            };
            let sb = med(Server::Signalbox).or_else(|| med(Server::SignalboxRedis));
            let raw = med(Server::Raw);
            let bun = med(Server::Bun);
            let n_sb = values
                .get(&Server::Signalbox)
                .or_else(|| values.get(&Server::SignalboxRedis))
                .map_or(0, |p| p[i].len());
            rows.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                case.name,
                metric_name(*metric, &workload),
                fmt_value(*metric, sb) + if n_sb < args.runs { " ⚠" } else { "" },
                if case.servers.contains(&Server::Raw) {
                    fmt_value(*metric, raw)
                } else {
                    "n/a".into()
                },
                if case.servers.contains(&Server::Bun) {
                    if bun_ok {
                        fmt_value(*metric, bun)
                    } else {
                        "not run".into()
                    }
                } else {
                    "n/a".into()
                },
                fmt_ratio(ratio(sb, raw)),
                fmt_ratio(ratio(sb, bun)),
                verdict(case.goal, *metric, sb, raw, bun),
            ));
        }
    }
    let mut table = String::from(
        "| workload | metric | signalbox | raw tokio-tungstenite / quinn | ws-kit on Bun | signalbox ÷ raw | signalbox ÷ Bun | target |\n|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for row in &rows {
        table.push_str(row);
        table.push('\n');
    }
    let elapsed = started.elapsed().as_secs_f64();
    let machine = format!(
        "- Date: {}\n- Machine: {} cores ({}), {} RAM; `{}`\n- Runs: {} per case and server, medians shown; {} s measured after {} s of warm-up per run (idle: {} connections); whole run {:.0} s\n- Load: `uptime` at the end: {}\n",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'"),
        sh("free -h | awk '/^Mem:/ {print $2}'"),
        sh("uname -sr"),
        args.runs,
        args.duration,
        args.warmup,
        args.idle_conns,
        elapsed,
        sh("uptime | sed 's/.*load average/load average/'"),
    );
    let mut section = format!("{machine}\n{table}");
    if !failures.is_empty() {
        section.push_str("\nRuns that failed (⚠ marks a median over fewer runs):\n\n");
        for f in &failures {
            section.push_str(&format!("- {f}\n"));
        }
    }
    println!("\n{section}");
    if !args.no_write {
        write_readme(&args.readme, &section)?;
        eprintln!("harness: table written to {}", args.readme.display());
    }
    Ok(())
}

const START: &str = "<!-- results:start -->";
const END: &str = "<!-- results:end -->";

fn write_readme(path: &Path, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{START}\n{section}{}", &old[..a], &old[b..]),
        _ => format!("# signalbox benchmarks\n\n{START}\n{section}{END}\n\n{old}"),
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
    fn the_table_replaces_only_what_is_between_the_markers() {
        let dir = std::env::temp_dir().join(format!("harness-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("README.md");
        std::fs::write(&path, format!("intro\n{START}\nold\n{END}\nnotes\n")).unwrap();
        write_readme(&path, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("intro\n{START}\nnew\n{END}\nnotes\n")
        );
        std::fs::remove_file(&path).unwrap();
        write_readme(&path, "first\n").unwrap();
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(fresh.contains(&format!("{START}\nfirst\n{END}")), "{fresh}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verdicts_name_what_is_missed() {
        let echo = Goal::Echo { raw: 0.8, bun: 2.0 };
        let v = verdict(echo, Metric::Rate, Some(90.0), Some(100.0), Some(50.0));
        assert_eq!(v, "≥0.8× raw: met; ≥2× Bun: **not met**");
        let v = verdict(
            Goal::AtMostBytes(10_240.0),
            Metric::Bytes,
            Some(10_241.0),
            None,
            None,
        );
        assert!(v.ends_with("**not met**"), "{v}");
        assert_eq!(
            verdict(Goal::AtLeastBun, Metric::P99, Some(1.0), None, Some(2.0)),
            ""
        );
    }
}
