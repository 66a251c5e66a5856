//! The chat server of docs/PROTOCOL.md §9.
//!
//! ```text
//! chat [--ws 127.0.0.1:8080] [--quic 127.0.0.1:4433] [--cert-out PATH] [--redis URL]
//!      [--presence-refresh SECS] [--metrics ADDR]
//! ```
//!
//! Prints `listening ws=ADDR quic=ADDR` (and ` metrics=ADDR` with
//! `--metrics`) once the listeners are ready; stops on SIGINT or SIGTERM,
//! closing every client as going away (WebSocket 1001, QUIC 1).

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
    /// Serve metrics in the Prometheus text format at `http://ADDR/metrics`
    /// (docs/DEPLOYMENT.md, "Metrics").
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
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
    #[error("--metrics: {0}")]
    Metrics(String),
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

/// `--metrics ADDR`: installs the Prometheus recorder (before the hub is
/// built: its meters bind to the recorder installed then) and serves its
/// text format at `GET /metrics` on `addr`; returns the bound address.
/// At most 16 scrapes are served at once, each connection for at most 10 s.
#[cfg(feature = "metrics")]
async fn serve_metrics(addr: &str) -> Result<SocketAddr, ChatError> {
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::header::{CONTENT_TYPE, HeaderValue};
    use hyper::{Method, Request, Response, StatusCode};
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let error = |e: &dyn std::fmt::Display| ChatError::Metrics(format!("{addr}: {e}"));
    // Seconds: 100 µs to 10 s.
    const BUCKETS: &[f64] = &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ];
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| error(&e))?;
    let local = listener.local_addr().map_err(|e| error(&e))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| error(&e))?
        .install_recorder()
        .map_err(|e| error(&e))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let scrapes = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, most likely: wait for some.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = scrapes.clone().acquire_owned().await else {
                return;
            };
            let handle = handle.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut response = Response::new(Full::new(Bytes::new()));
                if req.method() == Method::GET && req.uri().path() == "/metrics" {
                    *response.body_mut() = Full::new(Bytes::from(handle.render()));
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                } else {
                    *response.status_mut() = StatusCode::NOT_FOUND;
                }
                std::future::ready(Ok::<_, std::convert::Infallible>(response))
            });
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                drop(permit);
            });
        }
    });
    Ok(local)
}

#[cfg(not(feature = "metrics"))]
async fn serve_metrics(_: &str) -> Result<SocketAddr, ChatError> {
    Err(ChatError::Metrics(
        "this chat was built without the `metrics` feature".into(),
    ))
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
    let metrics = match &args.metrics {
        Some(addr) => Some(serve_metrics(addr).await?),
        None => None,
    };
    let (hub, broker) = match &args.redis {
        None => (signalbox_examples::chat::hub(), None),
        Some(url) => {
            let refresh = Duration::try_from_secs_f64(args.presence_refresh)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or(ChatError::PresenceRefresh(args.presence_refresh))?;
            let broker = signalbox_redis::RedisBroker::builder(url.as_str())
                .membership_refresh(refresh)
                .build()?;
            let hub = signalbox_examples::chat::builder(signalbox_examples::chat::config())
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
    match metrics {
        Some(m) => println!("listening ws={ws} quic={} metrics={m}", quic.local_addr()),
        None => println!("listening ws={ws} quic={}", quic.local_addr()),
    }
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
