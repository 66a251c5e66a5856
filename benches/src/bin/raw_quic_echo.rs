//! Baseline: a raw quinn echo server with no routing. Each bidirectional
//! stream a client opens gets back every byte it sends (so the 4-byte
//! length framing of docs/PROTOCOL.md §5 comes back intact). Any `signalbox/…` ALPN
//! is accepted; the certificate is self-signed for `localhost` and
//! `127.0.0.1`.
//!
//! ```text
//! raw_quic_echo [--addr 127.0.0.1:0] --cert-out PATH
//! ```
//! Prints `listening quic=ADDR`.

use anyhow::{Context, Result};
use clap::Parser;
use quinn::crypto::rustls::QuicServerConfig;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "raw_quic_echo", about)]
struct Args {
    /// Listen address (UDP).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Where to write the certificate (PEM).
    #[arg(long, value_name = "PATH")]
    cert_out: PathBuf,
}

fn server_config(cert_out: &std::path::Path) -> Result<quinn::ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    std::fs::write(cert_out, certified.cert.pem())
        .with_context(|| format!("{}", cert_out.display()))?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
    crypto.alpn_protocols = ["json", "msgpack", "json+gzip", "msgpack+gzip"]
        .iter()
        .map(|c| format!("signalbox/{c}").into_bytes())
        .collect();
    let mut config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(crypto)?));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(std::time::Duration::from_secs(30).try_into()?));
    transport.max_concurrent_bidi_streams(16u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

async fn echo_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<()> {
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        send.write_chunk(chunk.bytes).await?;
    }
    send.finish()?;
    Ok(())
}

async fn serve(incoming: quinn::Incoming) -> Result<()> {
    let connection = incoming.await?;
    loop {
        let (send, recv) = connection.accept_bi().await?;
        tokio::spawn(async move {
            let _ = echo_stream(send, recv).await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    signalbox_benches::raise_fd_limit();
    let bind = tokio::net::lookup_host(&args.addr)
        .await?
        .next()
        .context("--addr: not an address")?;
    let endpoint = quinn::Endpoint::server(server_config(&args.cert_out)?, bind)?;
    println!("listening quic={}", endpoint.local_addr()?);
    std::io::stdout().flush()?;
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let _ = serve(incoming).await;
        });
    }
    Ok(())
}
