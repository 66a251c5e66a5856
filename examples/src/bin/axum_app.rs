//! An axum application with signalbox mounted at `/ws`: see
//! [`signalbox_examples::embed`].
//!
//! `cargo run -p signalbox-examples --bin axum_app -- --listen 127.0.0.1:8095 --user alice:alice-token`
//! then open `http://127.0.0.1:8095/`.

use clap::Parser;
use parking_lot::Mutex;
use signalbox_examples::embed::{self, App, Notes, Users};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The command line.
#[derive(Debug, Parser)]
struct Args {
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8095")]
    listen: String,
    /// A user and the token it authenticates with, `NAME:TOKEN`; repeat for more.
    #[arg(long = "user", value_parser = Users::parse_entry)]
    users: Vec<(String, String)>,
    /// The directory of static files (default: the example's `web/notes`).
    #[arg(long)]
    static_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    if args.users.is_empty() {
        tracing::warn!("no --user given: every authenticated route answers 401");
    }
    let users = args
        .users
        .into_iter()
        .fold(Users::new(), |users, (name, token)| users.with(name, token));
    let notes = Arc::new(Mutex::new(Notes::default()));
    let hub = embed::hub(notes.clone());
    let app = embed::router(
        App::new(hub.clone(), users, notes),
        args.static_dir.unwrap_or_else(embed::default_static_dir),
    );
    let listener = tokio::net::TcpListener::bind(args.listen.as_str()).await?;
    println!("listening http={}", listener.local_addr()?);
    // The order of the `signalbox_ws::axum` module docs: the hub's shutdown
    // starts axum's graceful shutdown, then both are awaited.
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(hub.shutdown_started())
        .into_future(),
    );
    stop_signal().await?;
    hub.shutdown().await;
    server.await??;
    Ok(())
}

async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}
