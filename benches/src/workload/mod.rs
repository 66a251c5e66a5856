//! The workloads of the load generator, one module each, and the arguments
//! they share.

pub mod chat;
pub mod echo;
pub mod fanout;
pub mod idle;

use crate::client::{Conn, Target};
use anyhow::{Context, Result, bail};
use signalbox_codec::WireCodec;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a client waits for an expected message before giving up.
pub const STALL: Duration = Duration::from_secs(10);

/// Where to connect.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// WebSocket server address (host:port).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["quic", "wss"])]
    pub ws: Option<SocketAddr>,
    /// WebSocket-over-TLS (`wss://`) server address (host:port); needs
    /// --cert.
    #[arg(long, value_name = "ADDR", conflicts_with = "quic")]
    pub wss: Option<SocketAddr>,
    /// WebSocket upgrade path.
    #[arg(long, value_name = "PATH", default_value = "/ws")]
    pub path: String,
    /// QUIC server address (host:port).
    #[arg(long, value_name = "ADDR")]
    pub quic: Option<SocketAddr>,
    /// PEM certificate(s) to trust for QUIC or `wss://`.
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// With --quic: connect over WebTransport to this session path (e.g.
    /// `/wt`) instead of natively.
    #[arg(long, value_name = "PATH", requires = "quic")]
    pub webtransport: Option<String>,
    /// QUIC client endpoints (UDP sockets) the connections are spread over.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub quic_endpoints: usize,
}

impl TargetArgs {
    /// The target these arguments name.
    pub fn target(&self) -> Result<Target> {
        let pem = || -> Result<Vec<u8>> {
            let Some(cert) = &self.cert else {
                bail!("--quic and --wss need --cert PEM");
            };
            std::fs::read(cert).with_context(|| format!("{}", cert.display()))
        };
        match (self.ws, self.wss, self.quic) {
            (Some(addr), None, None) => Ok(Target::ws(addr, self.path.clone())),
            (None, Some(addr), None) => Target::wss(addr, self.path.clone(), &pem()?),
            (None, None, Some(addr)) => {
                let pem = pem()?;
                match &self.webtransport {
                    Some(path) => Target::webtransport(addr, &pem, self.quic_endpoints, path),
                    None => Target::quic(addr, &pem, self.quic_endpoints),
                }
            }
            _ => bail!("give one of --ws ADDR, --wss ADDR --cert PEM or --quic ADDR --cert PEM"),
        }
    }
}

/// How long to run.
#[derive(Debug, Clone, clap::Args)]
pub struct TimeArgs {
    /// Seconds measured (after the warm-up).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of warm-up, not measured.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,
    /// The server's process id: its CPU time over the measured window is
    /// read from /proc and reported (per operation, too).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

impl TimeArgs {
    /// The measured duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.1))
    }

    /// The warm-up.
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }
}

/// Opens `n` connections, at most `parallel` handshakes at a time; the
/// codec of connection `i` is `codecs[i % codecs.len()]`.
pub async fn connect_many(
    target: &Target,
    codecs: &[WireCodec],
    n: usize,
    parallel: usize,
) -> Result<Vec<Conn>> {
    if codecs.is_empty() {
        bail!("no codec given");
    }
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let target = target.clone();
        let codec = codecs[i % codecs.len()];
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            target.connect(codec).await
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for (i, task) in tasks.into_iter().enumerate() {
        conns.push(
            task.await
                .context("connect task")?
                .with_context(|| format!("connection {i}"))?,
        );
    }
    Ok(conns)
}

/// Parses a comma-separated list of codec names.
pub fn codecs(list: &str) -> Result<Vec<WireCodec>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(crate::client::codec)
        .collect()
}
