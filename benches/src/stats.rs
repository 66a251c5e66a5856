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
