//! Counting, latency histograms, the progress line and the result line.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
#[allow(clippy::expect_used)]
pub fn histogram() -> Histogram<u64> {
    // Constant bounds that `new_with_bounds` accepts (low ≥ 1, high ≥ 2·low).
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` (saturating at the histogram's bounds).
pub fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    hist.saturating_record(micros);
}

/// The window in which operations count: `[start, end)` after the warm-up.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When measuring starts (the warm-up is over).
    pub start: Instant,
    /// When measuring ends.
    pub end: Instant,
}

impl Window {
    /// A window starting `warmup` from now and lasting `duration`.
    pub fn after(warmup: Duration, duration: Duration) -> Window {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + duration,
        }
    }

    /// Whether `at` is inside the window.
    pub fn contains(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }

    /// The window's length in seconds.
    pub fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// Prints a progress line to stderr every second: elapsed time, operations
/// so far, and the rate over the last second.
pub struct Progress {
    ops: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts printing, labelled `name`, counting `unit`s.
    pub fn start(name: &str, unit: &str) -> Progress {
        let ops = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let label = format!("[{name}]");
        let unit = unit.to_owned();
        let task = {
            let ops = ops.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut last = 0u64;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let now = ops.load(Ordering::Relaxed);
                    eprintln!(
                        "{label} {:5.1}s {unit}={now} rate={}/s",
                        started.elapsed().as_secs_f64(),
                        now - last
                    );
                    last = now;
                }
            })
        };
        Progress { ops, stop, task }
    }

    /// The counter to add operations to.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.ops.clone()
    }

    /// Stops printing.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// The outcome of one workload run, printed to stdout as one line
/// `RESULT {json}` for the harness (and as text to stderr).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// `echo`, `chat`, `fanout`, `idle`, `cross-node`.
    pub workload: String,
    /// `ws` or `quic`.
    pub transport: String,
    /// The codec(s) used.
    pub codec: String,
    /// The parameters, e.g. `conns=50 inflight=1 size=20`.
    pub params: String,
    /// Operations counted in the measured window.
    pub ops: u64,
    /// The measured window, seconds.
    pub seconds: f64,
    /// The headline number: operations per second, or bytes per
    /// connection for `idle`.
    pub value: f64,
    /// What `value` counts.
    pub unit: String,
    /// Median latency, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<u64>,
    /// 99th percentile latency, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<u64>,
    /// 99.9th percentile latency, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_us: Option<u64>,
    /// Error answers and failed connections.
    pub errors: u64,
    /// CPU time the server process spent in the measured window (user and
    /// system, all threads), seconds; with `--server-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// Heartbeat pings the clients received in the measured window (`idle`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeats: Option<u64>,
    /// CPU time this load generator spent in the measured window, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loadgen_cpu_s: Option<f64>,
}

impl Report {
    /// Fills the latency percentiles from `hist` (left empty when it holds
    /// nothing).
    pub fn with_latency(mut self, hist: &Histogram<u64>) -> Report {
        if !hist.is_empty() {
            self.p50_us = Some(hist.value_at_quantile(0.50));
            self.p99_us = Some(hist.value_at_quantile(0.99));
            self.p999_us = Some(hist.value_at_quantile(0.999));
        }
        self
    }

    /// Fills the CPU times from a probe's reading.
    pub fn with_cpu(mut self, cpu: Option<CpuSpent>) -> Report {
        if let Some(cpu) = cpu {
            self.server_cpu_s = cpu.server;
            self.loadgen_cpu_s = Some(cpu.loadgen);
        }
        self
    }

    /// Server CPU microseconds per operation, if the server was probed.
    pub fn server_cpu_us_per_op(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.ops > 0).then(|| cpu * 1e6 / self.ops as f64)
    }

    /// Prints the report: text to stderr, `RESULT {json}` to stdout.
    pub fn print(&self) {
        let mut line = format!(
            "{} {} {} [{}]: {:.0} {} ({} in {:.2}s)",
            self.workload,
            self.transport,
            self.codec,
            self.params,
            self.value,
            self.unit,
            self.ops,
            self.seconds
        );
        if let (Some(p50), Some(p99), Some(p999)) = (self.p50_us, self.p99_us, self.p999_us) {
            line.push_str(&format!(" latency p50={p50}µs p99={p99}µs p999={p999}µs"));
        }
        if let Some(cpu) = self.server_cpu_s {
            line.push_str(&format!(
                " server CPU {:.2} cores",
                cpu / self.seconds.max(1e-9)
            ));
            match self.heartbeats {
                Some(beats) if beats > 0 => {
                    let per = cpu * 1e6 / beats as f64;
                    line.push_str(&format!(" ({per:.2} µs per heartbeat)"));
                }
                Some(_) => {}
                None => {
                    if let Some(per) = self.server_cpu_us_per_op() {
                        line.push_str(&format!(" ({per:.2} µs/op)"));
                    }
                }
            }
        }
        if let Some(cpu) = self.loadgen_cpu_s {
            line.push_str(&format!(
                ", load generator CPU {:.2} cores",
                cpu / self.seconds.max(1e-9)
            ));
        }
        if self.errors > 0 {
            line.push_str(&format!(" ERRORS={}", self.errors));
        }
        eprintln!("{line}");
        match serde_json::to_string(self) {
            Ok(json) => println!("RESULT {json}"),
            Err(e) => eprintln!("report not serialisable: {e}"),
        }
    }
}

/// Clock ticks per second of the CPU times in `/proc/PID/stat` (`USER_HZ`,
/// 100 on every Linux architecture this runs on).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, every thread) process `pid` has used so far, in
/// seconds, from `/proc/PID/stat`; `None` if the process is gone or the
/// file unreadable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in ticks.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted after its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU spent between two readings of a [`CpuProbe`], seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSpent {
    /// By the server (`None` without a server pid).
    pub server: Option<f64>,
    /// By this process.
    pub loadgen: f64,
}

/// Reads the CPU time of the server (if its pid is known) and of this
/// process, to tell what a measured window cost each.
#[derive(Debug, Clone, Copy)]
pub struct CpuProbe {
    server_pid: Option<u32>,
    start: Option<(Option<f64>, f64)>,
}

impl CpuProbe {
    /// A probe of `server_pid` (and of this process).
    pub fn new(server_pid: Option<u32>) -> CpuProbe {
        CpuProbe {
            server_pid,
            start: None,
        }
    }

    fn read(&self) -> (Option<f64>, f64) {
        let server = self.server_pid.and_then(cpu_seconds);
        let own = cpu_seconds(std::process::id()).unwrap_or(0.0);
        (server, own)
    }

    /// Takes the starting reading.
    pub fn start(&mut self) {
        self.start = Some(self.read());
    }

    /// What was spent since [`CpuProbe::start`] (`None` if it was not
    /// called).
    pub fn spent(&self) -> Option<CpuSpent> {
        let (server0, own0) = self.start?;
        let (server1, own1) = self.read();
        Some(CpuSpent {
            server: match (server0, server1) {
                (Some(a), Some(b)) => Some((b - a).max(0.0)),
                _ => None,
            },
            loadgen: (own1 - own0).max(0.0),
        })
    }

    /// Spawns a task that takes the starting reading at `window.start` and
    /// the final one at `window.end`.
    pub fn over(
        server_pid: Option<u32>,
        window: Window,
    ) -> tokio::task::JoinHandle<Option<CpuSpent>> {
        tokio::spawn(async move {
            let mut probe = CpuProbe::new(server_pid);
            tokio::time::sleep_until(window.start.into()).await;
            probe.start();
            tokio::time::sleep_until(window.end.into()).await;
            probe.spent()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1 0 0 0 \
                    250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_has_spent_cpu_and_the_probe_sees_more_after_work() {
        let mut probe = CpuProbe::new(Some(std::process::id()));
        probe.start();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let spent = probe.spent().unwrap();
        // 200 ms of spinning; ticks are 10 ms and a busy machine may
        // deschedule the spinner, hence the wide margin.
        assert!(spent.loadgen > 0.0, "{spent:?}");
        assert!(spent.server.is_some_and(|s| s > 0.0), "{spent:?}");
    }
}
