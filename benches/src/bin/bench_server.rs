//! The signalbox server the load generator measures: the chat example's
//! router and hub ([`signalbox_examples::chat`]) with a bench configuration
//! (no per-connection rate limit unless asked for), the bench-only
//! `BENCH_SUBSCRIBE` route ([`signalbox_benches::proto`]), WebSocket at
//! `/ws`, WebSocket over TLS (`wss://`, also at `/ws`) and QUIC, both
//! encrypted transports presenting the same self-signed certificate.
//!
//! ```text
//! bench_server [--ws 127.0.0.1:0] [--wss 127.0.0.1:0] [--quic 127.0.0.1:0]
//!              [--cert-out PATH]
//!              [--rate-limit off|N] [--outbound-queue-bytes N]
//!              [--outbound-queue N] [--heartbeat-interval SECS] [--redis URL]
//!              [--batch-ms MS [--batch-max N]]
//! ```
//!
//! `--batch-ms` turns on the batching window (`signalbox::Batching`) for
//! every connection: each writer waits up to that long for more messages
//! before it writes, and writes at once when `--batch-max` are queued.
//!
//! Prints `listening ws=ADDR wss=ADDR quic=ADDR` once ready; exits on SIGINT or
//! SIGTERM after a graceful shutdown of at most two seconds.
//!
//! Built with the `metrics` feature, it records every metric into the
//! Prometheus recorder the chat's `--metrics` installs (not served: what is
//! measured is the recording), for benches/metrics-cost.

use anyhow::{Context, Result};
use clap::Parser;
use signalbox::transport::Identity;
use signalbox::{Batching, Hub, RateLimit};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "bench_server", version, about)]
struct Args {
    /// WebSocket address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    ws: String,
    /// WebSocket over TLS (`wss://`) address; `off` for none.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    wss: String,
    /// QUIC (UDP) address; `off` for none.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    quic: String,
    /// Where to write the certificate of the QUIC and `wss://` ports (PEM).
    #[arg(long, value_name = "PATH")]
    cert_out: Option<PathBuf>,
    /// Per-connection rate limit in messages per second (burst: twice
    /// that), or `off`.
    #[arg(long, value_name = "N|off", default_value = "off")]
    rate_limit: String,
    /// Outbound queue bound per connection (bytes).
    #[arg(long, value_name = "N")]
    outbound_queue_bytes: Option<usize>,
    /// Outbound queue ceiling per connection (messages).
    #[arg(long, value_name = "N")]
    outbound_queue: Option<usize>,
    /// Subscribers a fan-out queues for between yields to the runtime.
    #[arg(long, value_name = "N")]
    fanout_chunk: Option<usize>,
    /// How often an idle connection is pinged, seconds (default: the
    /// configuration's, 30 s).
    #[arg(long, value_name = "SECS")]
    heartbeat_interval: Option<f64>,
    /// Share rooms with other bench servers through Redis.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// A batching window on every connection, milliseconds (default: none).
    #[arg(long, value_name = "MS")]
    batch_ms: Option<f64>,
    /// With `--batch-ms`: messages at which a batch is written at once
    /// (default: `signalbox::Batching::DEFAULT_MAX_MESSAGES`).
    #[arg(long, value_name = "N", requires = "batch_ms")]
    batch_max: Option<usize>,
}

async fn run(args: Args) -> Result<()> {
    signalbox_benches::raise_fd_limit();
    #[cfg(feature = "metrics")]
    {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                &[0.0001, 0.001, 0.01, 0.1, 1.0, 10.0],
            )?
            .install_recorder()?;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        });
    }
    let mut config = signalbox_examples::chat::config();
    config.rate_limit = match args.rate_limit.as_str() {
        "off" => None,
        n => {
            let per_second: u32 = n.parse().context("--rate-limit: a number or off")?;
            Some(RateLimit {
                per_second,
                burst: per_second.saturating_mul(2),
            })
        }
    };
    if let Some(n) = args.outbound_queue_bytes {
        config.outbound_queue_bytes = n;
    }
    if let Some(n) = args.outbound_queue {
        config.outbound_queue = n;
    }
    if let Some(secs) = args.heartbeat_interval {
        config.heartbeat_interval =
            Duration::try_from_secs_f64(secs).context("--heartbeat-interval: seconds")?;
    }
    if let Some(n) = args.fanout_chunk {
        config.topics.fanout_chunk = n;
    }
    let mut builder = Hub::builder(signalbox_benches::proto::bench_router()).config(config);
    if let Some(ms) = args.batch_ms {
        let delay = Duration::try_from_secs_f64(ms / 1000.0).context("--batch-ms")?;
        let mut batching = Batching::new(delay).context("--batch-ms")?;
        if let Some(n) = args.batch_max {
            batching = batching.with_max_messages(n).context("--batch-max")?;
        }
        builder = builder.batching(batching);
    }
    let broker = match &args.redis {
        Some(url) => {
            let broker = signalbox_redis::RedisBroker::builder(url.clone())
                .prefix("bench:")
                .build()?;
            builder = builder.broker(broker.clone());
            Some(broker)
        }
        None => None,
    };
    let hub = builder.build();
    // The broker connects once attached to the hub.
    if let Some(broker) = &broker
        && !broker.wait_connected(Duration::from_secs(5)).await
    {
        anyhow::bail!(
            "Redis at {} is not reachable",
            args.redis.as_deref().unwrap_or("")
        );
    }
    let ws = signalbox_examples::chat::ws_server(hub.clone(), &args.ws).await?;
    let mut line = format!("listening ws={}", ws.local_addr());
    tokio::spawn(ws.serve());
    // One self-signed certificate for both encrypted transports, so that
    // wss:// and QUIC pay for the same key and chain.
    let identity = Identity::self_signed::<&str>(&[]).context("self-signed certificate")?;
    if let Some(path) = &args.cert_out {
        identity.write_cert_pem(path)?;
    }
    if args.wss != "off" {
        let wss = signalbox_examples::chat::ws_builder(hub.clone())
            .identity(identity.clone())
            .bind(&args.wss)
            .await?;
        line.push_str(&format!(" wss={}", wss.local_addr()));
        tokio::spawn(wss.serve());
    }
    let _quic = if args.quic != "off" {
        // WebTransport at /wt on the same port (docs/PROTOCOL.md §5).
        let server = signalbox_quic::QuicServer::builder(hub.clone())
            .identity(identity)
            .webtransport("/wt")
            .bind(&args.quic)
            .await?;
        line.push_str(&format!(" quic={}", server.local_addr()));
        Some(server)
    } else {
        None
    };
    println!("{line}");
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), hub.shutdown()).await;
    if let Some(broker) = broker {
        let _ = tokio::time::timeout(Duration::from_secs(1), broker.shutdown()).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
