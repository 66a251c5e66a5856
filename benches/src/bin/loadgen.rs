//! The signalbox load generator: a fleet of WebSocket or QUIC clients
//! speaking the envelopes of docs/PROTOCOL.md §1.
//!
//! ```text
//! loadgen echo   --ws 127.0.0.1:8080 [-c 50] [-k 1] [--size 20] [--codec json]
//! loadgen echo   --quic 127.0.0.1:4433 --cert /tmp/chat-cert.pem
//! loadgen chat   --ws 127.0.0.1:8080 [-n 32] [--batch 10]
//! loadgen fanout --ws 127.0.0.1:8080 [-s 1000] [--codecs json,msgpack]
//!                [--interval-ms 2 --window 1000]
//! loadgen idle   --ws 127.0.0.1:8080 --server-pid PID [-m 10000] [--rest 10]
//! loadgen cross-node --ws NODE_A --ws-b NODE_B [-n 32]
//! ```
//!
//! Progress goes to stderr every second; the result to stderr as text and
//! to stdout as one line `RESULT {json}` (for `benches/run`). With
//! `--server-pid PID`, echo, chat and fanout also report the server's CPU
//! time over the measured window (`server_cpu_s`), and every workload its
//! own (`loadgen_cpu_s`).

use clap::{Parser, Subcommand};
use signalbox_benches::workload::{chat, echo, fanout, idle};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about = "Load generator for signalbox")]
struct Cli {
    /// Worker threads of the client runtime (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Request/response round trips (ECHO), optionally pipelined.
    Echo(echo::EchoArgs),
    /// Bun's chat-room shape: N clients, one room, rounds of batches.
    Chat(chat::ChatArgs),
    /// One publisher, S subscribers: deliveries/s and publish→receive latency.
    Fanout(fanout::FanoutArgs),
    /// M idle connections: the server's memory per connection.
    Idle(idle::IdleArgs),
    /// The chat workload over two servers sharing rooms (--ws and --ws-b).
    CrossNode(chat::ChatArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    signalbox_benches::raise_fd_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.workload {
            Workload::Echo(args) => echo::run(args).await,
            Workload::Chat(args) => chat::run(args).await,
            Workload::Fanout(args) => fanout::run(args).await,
            Workload::Idle(args) => idle::run(args).await,
            Workload::CrossNode(args) => {
                if args.ws_b.is_none() {
                    Err(anyhow::anyhow!(
                        "cross-node needs --ws-b ADDR (the second node)"
                    ))
                } else {
                    chat::run(args).await
                }
            }
        }
    });
    // Connections still closing are not waited for.
    runtime.shutdown_background();
    match result {
        Ok(report) => {
            report.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
