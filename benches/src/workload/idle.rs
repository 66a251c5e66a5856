//! `idle`: opens M connections that each make one `ECHO` round trip (so the
//! server has fully set them up) and then stay silent; reads the server's
//! resident memory (`VmRSS` of `/proc/PID/status`) before and after, and
//! reports the difference per connection.
//!
//! The connections keep reading while they idle, so they answer the
//! server's heartbeat pings (docs/PROTOCOL.md §4) and are not closed for
//! silence. With `--rest SECS`, the server's CPU time over that long a rest
//! (nothing but heartbeats) is reported too, with the pings counted in it.

use super::{STALL, TargetArgs};
use crate::client::{Conn, Rx};
use crate::proto;
use crate::stats::{CpuProbe, Report};
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// Parameters of `idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The server's process id (its memory is read from /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: u32,
    /// Codec of every connection.
    #[arg(long, default_value = "json")]
    pub codec: String,
    /// Idle connections.
    #[arg(long, short = 'm', default_value_t = 10_000)]
    pub conns: usize,
    /// Seconds to wait, connections open, before reading the memory.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds, after the memory reading, over which the server's CPU time
    /// at rest is measured (0: not measured).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub rest: f64,
}

/// The resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// The `VmRSS` line of a `/proc/PID/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// Runs `idle`.
pub async fn run(args: &IdleArgs) -> Result<Report> {
    crate::raise_fd_limit();
    let target = args.target.target()?;
    let codec = crate::client::codec(&args.codec)?;
    let before = rss_bytes(args.server_pid)?;
    eprintln!(
        "[idle] server RSS before: {:.1} MiB; opening {} connections",
        before as f64 / 1048576.0,
        args.conns
    );
    let started = std::time::Instant::now();
    let m = args.conns.max(1);
    // Each connection, once open, makes its round trip and then reads
    // (answering pings) until the end: while thousands more are still
    // opening, the first ones must not go silent past the server's
    // heartbeat timeout. The sending halves stay open until the end.
    let pings = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(128));
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<()>>(m);
    let mut readers = tokio::task::JoinSet::new();
    for i in 0..m {
        let (target, pings, closed) = (target.clone(), pings.clone(), closed.clone());
        let (permits, ready_tx) = (permits.clone(), ready_tx.clone());
        readers.spawn(async move {
            let opened = async {
                let _permit = permits.acquire_owned().await?;
                let mut conn = target.connect(codec).await?;
                conn.tx
                    .send(proto::echo(&conn.codec, i as u64, "x")?)
                    .await?;
                let envelope = proto::decode(&conn.codec, conn.rx.recv_within(STALL).await?)?;
                if proto::is_error(&envelope.ty) {
                    bail!("ECHO: {}", proto::describe_error(&envelope));
                }
                Ok::<_, anyhow::Error>(conn)
            }
            .await
            .with_context(|| format!("connection {i}"));
            let Conn { tx, rx, .. } = match opened {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(())).await;
                    conn
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e)).await;
                    return;
                }
            };
            drop(ready_tx);
            // Returns only once the connection is closed or broken.
            let _ = hold(rx, &pings).await;
            closed.fetch_add(1, Ordering::Relaxed);
            drop(tx);
        });
    }
    drop(ready_tx);
    for _ in 0..m {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => bail!("a connection task ended without a word"),
        }
    }
    eprintln!(
        "[idle] {m} connections open and answered in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    let after = rss_bytes(args.server_pid)?;
    let per = after.saturating_sub(before) as f64 / m as f64;
    eprintln!(
        "[idle] server RSS after: {:.1} MiB",
        after as f64 / 1048576.0
    );
    let mut report = Report {
        workload: "idle".into(),
        transport: target.transport().into(),
        codec: args.codec.clone(),
        params: format!("conns={m}"),
        ops: m as u64,
        seconds: args.settle,
        value: per,
        unit: "bytes/conn".into(),
        ..Report::default()
    };
    if args.rest > 0.0 {
        let mut probe = CpuProbe::new(Some(args.server_pid));
        let pings_before = pings.load(Ordering::Relaxed);
        probe.start();
        tokio::time::sleep(Duration::from_secs_f64(args.rest)).await;
        let spent = probe.spent();
        let heartbeats = pings.load(Ordering::Relaxed) - pings_before;
        report.seconds = args.rest;
        report.heartbeats = Some(heartbeats);
        report = report.with_cpu(spent);
        eprintln!(
            "[idle] at rest for {:.1}s: {heartbeats} pings, server CPU {:.3} s",
            args.rest,
            report.server_cpu_s.unwrap_or(0.0)
        );
    }
    let lost = closed.load(Ordering::Relaxed);
    if lost > 0 {
        eprintln!("[idle] {lost} connections were closed while idle");
        report.errors = lost;
    }
    readers.abort_all();
    Ok(report)
}

/// Reads a connection until it closes, counting the server's pings.
async fn hold(rx: Rx, pings: &AtomicU64) -> Result<()> {
    match rx {
        Rx::Ws(mut stream) => {
            while let Some(message) = stream.next().await {
                if message?.is_ping() {
                    pings.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        mut rx => while rx.recv().await?.is_some() {},
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tchat\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 100 * 1024, "{rss}");
    }
}
