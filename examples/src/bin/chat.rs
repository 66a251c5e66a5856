//! The chat server of docs/PROTOCOL.md §9.
//!
//! ```text
//! chat [--ws 127.0.0.1:8080] [--quic 127.0.0.1:4433] [--cert-out PATH] [--redis URL]
//!      [--presence-refresh SECS] [--drain-delay SECS]
//! ```
//!
//! Prints `listening ws=ADDR quic=ADDR` once both listeners are ready (and
//! reports ready at `/readyz` from then on); stops on SIGINT or SIGTERM:
//! not ready for `--drain-delay`, then every client is closed as going away
//! (WebSocket 1001, QUIC 1).

use clap::Parser;
use signalbox::Hub;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// The chat example: a web page at `/`, WebSocket at `/ws`.
#[derive(Debug, Parser)]
#[command(name = "chat", version, about)]
struct Args {
    /// WebSocket (and web page) address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    ws: String,
    /// QUIC (UDP) address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4433")]
    quic: String,
    /// Where to write the QUIC certificate (PEM) for clients to trust.
    #[arg(long, value_name = "PATH")]
    cert_out: Option<std::path::PathBuf>,
    /// Share rooms with other chat processes through Redis.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// With --redis: how often this process rewrites its room members in
    /// Redis; a process that dies drops out of other processes' member
    /// lists after three intervals.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    presence_refresh: f64,
    /// On SIGTERM, how long `/readyz` answers 503 while clients are still
    /// served, before they are closed: time for a load balancer's health
    /// checks to notice.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    drain_delay: f64,
}

#[derive(Debug, thiserror::Error)]
enum ChatError {
    #[error("--redis: {0}")]
    Redis(#[from] signalbox_redis::RedisBrokerError),
    #[error(transparent)]
    Ws(#[from] signalbox_ws::ServerError),
    #[error("--quic {0}: not an address")]
    QuicAddr(String),
    #[error(transparent)]
    Quic(#[from] signalbox_quic::QuicError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("--presence-refresh {0}: not a positive number of seconds")]
    PresenceRefresh(f64),
    #[error("--drain-delay {0}: not a number of seconds")]
    DrainDelay(f64),
}

/// Starts the WebSocket listener; returns its address.
async fn start_ws(hub: &Hub, addr: &str) -> Result<SocketAddr, ChatError> {
    let server = signalbox_examples::chat::ws_server(hub.clone(), addr).await?;
    let local = server.local_addr();
    tokio::spawn(server.serve());
    Ok(local)
}

/// Starts the QUIC listener on the same hub (self-signed certificate,
/// written to `cert_out` as PEM when given).
async fn start_quic(
    hub: &Hub,
    addr: &str,
    cert_out: Option<&std::path::Path>,
) -> Result<signalbox_quic::QuicServer, ChatError> {
    let bind = tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ChatError::QuicAddr(addr.to_owned()))?;
    let server = signalbox_quic::QuicServer::builder(bind).start(hub)?;
    if let Some(path) = cert_out {
        server.write_cert_pem(path)?;
    }
    Ok(server)
}

async fn shutdown_signal() -> Result<(), ChatError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(ChatError::Signal)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(ChatError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(ChatError::Signal)
    }
}

async fn run(args: Args) -> Result<(), ChatError> {
    let mut config = signalbox_examples::chat::config();
    config.drain_delay = Duration::try_from_secs_f64(args.drain_delay)
        .map_err(|_| ChatError::DrainDelay(args.drain_delay))?;
    let (hub, broker) = match &args.redis {
        None => (signalbox_examples::chat::hub_with(config), None),
        Some(url) => {
            let refresh = Duration::try_from_secs_f64(args.presence_refresh)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or(ChatError::PresenceRefresh(args.presence_refresh))?;
            let broker = signalbox_redis::RedisBroker::builder(url.as_str())
                .membership_refresh(refresh)
                .build()?;
            let hub = signalbox_examples::chat::builder(config)
                .broker(broker.clone())
                .build();
            if !broker.wait_connected(Duration::from_secs(5)).await {
                eprintln!("chat: Redis at {url} not reachable yet; retrying in the background");
            }
            (hub, Some(broker))
        }
    };
    let ws = start_ws(&hub, &args.ws).await?;
    let quic = start_quic(&hub, &args.quic, args.cert_out.as_deref()).await?;
    // Listeners up, Redis connected or knowingly degraded (retrying).
    hub.set_ready();
    println!("listening ws={ws} quic={}", quic.local_addr());
    let _ = std::io::stdout().flush();
    let signalled = shutdown_signal().await;
    eprintln!("chat: shutting down");
    hub.shutdown().await;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    // Lets the QUIC close frames go out before the process ends.
    quic.closed().await;
    signalled
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat: {error}");
            ExitCode::FAILURE
        }
    }
}
