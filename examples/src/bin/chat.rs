//! The chat server of docs/PROTOCOL.md §9.
//!
//! ```text
//! chat [--ws 127.0.0.1:8080] [--quic 127.0.0.1:4433] [--cert-out PATH]
//!      [--tls-cert PATH --tls-key PATH] [--redis URL] [--presence-refresh SECS]
//!      [--presence-events] [--drain-delay SECS] [--metrics ADDR]
//!      [--log-format text|json]
//! ```
//!
//! Every flag can also come from an environment variable (`SIGNALBOX_WS`,
//! `SIGNALBOX_TLS_CERT`, …; see `--help`); a flag on the command line wins.
//! Prints `listening ws=ADDR quic=ADDR` (and ` metrics=ADDR` with
//! `--metrics`) on stdout once the listeners are ready (and reports ready at
//! `/readyz` from then on); logs go to stderr (level from `RUST_LOG`). Stops
//! on SIGINT or SIGTERM: not ready for `--drain-delay`, then every client is
//! closed as going away (WebSocket 1001, QUIC 1).
//!
//! The QUIC port also takes WebTransport sessions at `/wt`; the page finds
//! them at `GET /webtransport` (docs/PROTOCOL.md §9).

use clap::{Parser, ValueEnum};
use signalbox::Hub;
use signalbox::transport::{Identity, IdentityError};
use signalbox_examples::chat::{WEBTRANSPORT_PATH, WebTransportInfo};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::Duration;

/// The chat example: a web page at `/`, WebSocket at `/ws`, QUIC beside it.
#[derive(Debug, Parser)]
#[command(name = "chat", version, about)]
struct Args {
    /// WebSocket (and web page) address.
    #[arg(
        long,
        env = "SIGNALBOX_WS",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    ws: String,
    /// QUIC (UDP) address.
    #[arg(
        long,
        env = "SIGNALBOX_QUIC",
        value_name = "ADDR",
        default_value = "127.0.0.1:4433"
    )]
    quic: String,
    /// Where to write the QUIC certificate (PEM) for clients to trust.
    #[arg(long, env = "SIGNALBOX_CERT_OUT", value_name = "PATH")]
    cert_out: Option<PathBuf>,
    /// Certificate chain (PEM, leaf first) for both listeners: WebSocket
    /// becomes wss:// (the page https://) and QUIC serves it instead of a
    /// self-signed one. Needs --tls-key.
    #[arg(
        long,
        env = "SIGNALBOX_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "SIGNALBOX_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Share rooms with other chat processes through Redis.
    #[arg(
        long,
        env = "SIGNALBOX_REDIS",
        value_name = "URL",
        hide_env_values = true
    )]
    redis: Option<String>,
    /// With --redis: how often this process rewrites its room members in
    /// Redis; a process that dies drops out of other processes' member
    /// lists after three intervals.
    #[arg(
        long,
        env = "SIGNALBOX_PRESENCE_REFRESH",
        value_name = "SECS",
        default_value_t = 5.0
    )]
    presence_refresh: f64,
    /// Also send room members `$sb:join` / `$sb:leave` as members come and
    /// go (docs/PROTOCOL.md §8.2), besides `USER_JOINED` / `USER_LEFT`.
    #[arg(long, env = "SIGNALBOX_PRESENCE_EVENTS")]
    presence_events: bool,
    /// On SIGTERM, how long `/readyz` answers 503 while clients are still
    /// served, before they are closed: time for a load balancer's health
    /// checks to notice.
    #[arg(
        long,
        env = "SIGNALBOX_DRAIN_DELAY",
        value_name = "SECS",
        default_value_t = 0.0
    )]
    drain_delay: f64,
    /// Serve metrics in the Prometheus text format at `http://ADDR/metrics`
    /// (docs/DEPLOYMENT.md, "Metrics").
    #[arg(long, env = "SIGNALBOX_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// Log lines on stderr as text or as one JSON object each; the level
    /// comes from RUST_LOG (default: warnings, and the chat's own start and
    /// stop).
    #[arg(
        long,
        env = "SIGNALBOX_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format).
    Json,
}

#[derive(Debug, thiserror::Error)]
enum ChatError {
    #[error("--redis: {0}")]
    Redis(#[from] signalbox_redis::RedisBrokerError),
    #[error(transparent)]
    Ws(#[from] signalbox_ws::ServerError),
    #[error(transparent)]
    Quic(#[from] signalbox_quic::QuicError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("--presence-refresh {0}: not a positive number of seconds")]
    PresenceRefresh(f64),
    #[error("{flag} {path}: {source}")]
    TlsRead {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(#[from] IdentityError),
    #[error("--drain-delay {0}: not a number of seconds")]
    DrainDelay(f64),
    #[error("--metrics: {0}")]
    Metrics(String),
}

/// The certificate of `--tls-cert`/`--tls-key`, read once for both
/// listeners; a file that cannot be read is named with its flag.
fn load_identity(cert: &Path, key: &Path) -> Result<Identity, ChatError> {
    let read = |flag, path: &Path| {
        std::fs::read(path).map_err(|source| ChatError::TlsRead {
            flag,
            path: path.display().to_string(),
            source,
        })
    };
    let (cert, key) = (read("--tls-cert", cert)?, read("--tls-key", key)?);
    Ok(Identity::from_pem(&cert, &key)?)
}

/// Starts the WebSocket listener (TLS when `identity` is given), which also
/// answers `GET /webtransport` with `webtransport`; returns its address.
async fn start_ws(
    hub: &Hub,
    addr: &str,
    identity: Option<Identity>,
    webtransport: &WebTransportInfo,
) -> Result<SocketAddr, ChatError> {
    let mut builder = signalbox_examples::chat::ws_builder(hub.clone());
    builder = signalbox_examples::chat::serve_webtransport_info(builder, webtransport);
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    let server = builder.bind(addr).await?;
    let local = server.local_addr();
    tokio::spawn(server.serve());
    Ok(local)
}

/// Starts the QUIC listener on the same hub with `identity`, or a
/// self-signed certificate, taking WebTransport sessions at
/// [`WEBTRANSPORT_PATH`] beside native QUIC; writes the certificate to
/// `cert_out` as PEM when given.
async fn start_quic(
    hub: &Hub,
    addr: &str,
    identity: Option<Identity>,
    cert_out: Option<&Path>,
) -> Result<signalbox_quic::QuicServer, ChatError> {
    let mut builder =
        signalbox_quic::QuicServer::builder(hub.clone()).webtransport(WEBTRANSPORT_PATH);
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    let server = builder.bind(addr).await?;
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

/// Listens for SIGINT and SIGTERM from now on (so that a signal sent as
/// soon as `listening` is printed stops the chat gracefully instead of
/// killing it); the future resolves at the first one.
fn shutdown_signal() -> Result<impl Future<Output = Result<(), ChatError>>, ChatError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(ChatError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ChatError::Signal)?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => Ok(()),
                _ = term.recv() => Ok(()),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async { tokio::signal::ctrl_c().await.map_err(ChatError::Signal) })
    }
}

async fn run(args: Args) -> Result<(), ChatError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(load_identity(cert, key)?),
        _ => None,
    };
    let mut config = signalbox_examples::chat::config();
    config.drain_delay = Duration::try_from_secs_f64(args.drain_delay)
        .map_err(|_| ChatError::DrainDelay(args.drain_delay))?;
    let builder = signalbox_examples::chat::builder_with(config, args.presence_events);
    let metrics = match &args.metrics {
        Some(addr) => Some(serve_metrics(addr).await?),
        None => None,
    };
    let (hub, broker) = match &args.redis {
        None => (builder.build(), None),
        Some(url) => {
            let refresh = Duration::try_from_secs_f64(args.presence_refresh)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or(ChatError::PresenceRefresh(args.presence_refresh))?;
            let broker = signalbox_redis::RedisBroker::builder(url.as_str())
                .membership_refresh(refresh)
                .build()?;
            let hub = builder.broker(broker.clone()).build();
            if !broker.wait_connected(Duration::from_secs(5)).await {
                tracing::warn!("Redis not reachable yet; retrying in the background");
            }
            (hub, Some(broker))
        }
    };
    let secure = tls.is_some();
    let quic = start_quic(&hub, &args.quic, tls.clone(), args.cert_out.as_deref()).await?;
    // Browsers trust the self-signed certificate by its hash; an operator's
    // certificate as any other (docs/PROTOCOL.md §9).
    let hash = quic.identity().certificate_sha256();
    let webtransport = WebTransportInfo::new(
        quic.local_addr().port(),
        WEBTRANSPORT_PATH,
        (!secure).then_some(&hash[..]),
    );
    let ws = start_ws(&hub, &args.ws, tls, &webtransport).await?;
    // Listeners up, Redis connected or knowingly degraded (retrying).
    hub.set_ready();
    let signal = shutdown_signal()?;
    match metrics {
        Some(m) => println!("listening ws={ws} quic={} metrics={m}", quic.local_addr()),
        None => println!("listening ws={ws} quic={}", quic.local_addr()),
    }
    let _ = std::io::stdout().flush();
    tracing::info!(ws = %ws, quic = %quic.local_addr(), tls = secure, "listening");
    let signalled = signal.await;
    tracing::info!("shutting down");
    hub.shutdown().await;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    // Lets the QUIC close frames go out before the process ends.
    quic.closed().await;
    signalled
}

/// Logs to stderr in `format` (colours only on a terminal); the level comes
/// from `RUST_LOG`, by default warnings and the chat's own start and stop.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,chat=info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logs(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
