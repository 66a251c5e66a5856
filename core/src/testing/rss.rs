//! The resident memory of the test process, for tests that bound what a
//! hostile peer can make the server hold (Linux: read from
//! `/proc/self/status`; elsewhere every reading is 0).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often [`RssSampler`] reads the resident set.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// A field of `/proc/self/status` in KiB (`"VmRSS:"`, `"VmHWM:"`); 0 when
/// it cannot be read.
pub fn vm_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the resident set (VmRSS) every 2 ms on a thread of its own
/// until [`RssSampler::finish`]; reports the baseline, the peak and the end.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    baseline: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Takes the baseline and starts sampling.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let baseline = vm_kib("VmRSS:");
        let peak = Arc::new(AtomicUsize::new(baseline));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(vm_kib("VmRSS:"), Ordering::Relaxed);
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        RssSampler {
            stop,
            peak,
            baseline,
            thread: Some(thread),
        }
    }

    /// Stops sampling; prints (to stderr, labelled `what`) and returns the
    /// growth of the peak over the baseline, in MiB.
    pub fn finish(mut self, what: &str) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let peak = self.peak.load(Ordering::Relaxed).max(vm_kib("VmRSS:"));
        let grown = peak.saturating_sub(self.baseline) / 1024;
        eprintln!(
            "rss {what}: baseline {} MiB, peak {} MiB (+{grown} MiB), now {} MiB, process VmHWM {} MiB",
            self.baseline / 1024,
            peak / 1024,
            vm_kib("VmRSS:") / 1024,
            vm_kib("VmHWM:") / 1024,
        );
        grown
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
