//! Benchmarks of signalbox.
//!
//! - `benches/router.rs`: criterion micro-benchmarks of the router (no
//!   sockets).
//! - The load generator (`loadgen`): a tokio client fleet speaking the
//!   envelopes of docs/PROTOCOL.md §1 over WebSocket (tokio-tungstenite) or QUIC
//!   (quinn), in JSON or MessagePack, with the workloads `echo`, `chat`,
//!   `fanout`, `idle` and `cross-node` ([`workload`]).
//! - The servers it measures: `bench_server` (the chat example's router and
//!   hub without the per-connection rate limit, plus the bench-only silent
//!   subscription of [`proto`]), and the baselines `raw_ws_echo` and
//!   `raw_quic_echo` (no routing: every message comes back as it was) and
//!   `chat_floor` (the chat protocol hand-written on tokio-tungstenite, no
//!   router). The ws-kit on Bun baseline lives in `benches/bun/`.
//! - The harness (`harness`, run through `benches/run`): starts each server
//!   pinned to one CPU and the load generator to another, runs each
//!   workload against signalbox and its baselines, interleaved, writes the
//!   table of medians to `benches/README.md`, and draws the scaling curves
//!   ([`plot`]).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod plot;
pub mod proto;
pub mod stats;
pub mod workload;

/// Raises this process's open-file limit as far as the hard limit allows
/// (10,000 connections need more than the usual 1,024); returns the limit
/// now in force.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}
