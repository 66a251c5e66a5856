//! One program per section of the advanced-usage guide, each built on what
//! the library provides rather than hand-written plumbing:
//!
//! | section | module | binary |
//! |---|---|---|
//! | Router Composition | [`composition`] | `guide_composition` |
//! | Middleware Pattern | [`middleware`] | `guide_middleware` |
//! | Custom Context Extensions | [`extended_context`] | `guide_extended_context` |
//! | State Management | [`state`] | `guide_state` |
//! | Message Queuing | [`queuing`] | `guide_queuing` |
//! | Connection Pooling | [`pools`] | `guide_pools` |
//! | Schema Versioning | [`versioning`] | `guide_versioning` |
//! | Performance Optimization | [`performance`] | `guide_performance` |
//!
//! Each binary serves its router over WebSocket (`--ws ADDR`, default
//! `127.0.0.1:8090`, path `/ws`) and prints `listening ws=ADDR`.

pub mod composition;
pub mod extended_context;
pub mod middleware;
pub mod performance;
pub mod pools;
pub mod queuing;
pub mod state;
pub mod versioning;

use clap::Parser;
use signalbox::Hub;
use signalbox_ws::WsServer;

/// The command line of the guide programs.
#[derive(Debug, Parser)]
struct Args {
    /// WebSocket listen address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    ws: String,
}

/// Serves `hub` over WebSocket until SIGINT/SIGTERM, then shuts down
/// gracefully. The body of every guide binary.
pub async fn serve(hub: Hub) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let server = WsServer::builder(hub.clone())
        .bind(args.ws.as_str())
        .await?;
    println!("listening ws={}", server.local_addr());
    tokio::spawn(server.serve());
    stop_signal().await?;
    hub.shutdown().await;
    Ok(())
}

async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}
