//! What an idle WebSocket connection costs the server: the resident memory
//! of 2,000 idle connections (server, hub and the test's own client sockets,
//! all in this process), divided by 2,000. Alone in its own test binary so
//! that no other test's allocations blur it.

mod common;

use common::*;
use signalbox::Config;
use std::time::Duration;

/// The bound this test enforces, per idle connection, all told.
const IDLE_BYTES_PER_CONNECTION: usize = 10 * 1024;
const WARM_UP: usize = 200;
const MEASURED: usize = 2_000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

async fn open(addr: std::net::SocketAddr, n: usize, into: &mut Vec<RawClient>) {
    for _ in 0..n {
        into.push(RawClient::connect(addr, "msgpack").await);
    }
}

async fn wait_for(hub: &signalbox::Hub, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hub.connection_count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} connections",
            hub.connection_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_less_than_10_kib() {
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| {
        b.max_pending(4096).buffers(signalbox_ws::Buffers {
            read: 1024,
            write: 4096,
        })
    })
    .await;
    let mut clients = Vec::with_capacity(WARM_UP + MEASURED);
    // Warm up: the runtime, the allocator's arenas, the hub's maps.
    open(addr, WARM_UP, &mut clients).await;
    wait_for(&hub, WARM_UP).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    open(addr, MEASURED, &mut clients).await;
    wait_for(&hub, WARM_UP + MEASURED).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    let per_connection = after.saturating_sub(before) / MEASURED;
    println!(
        "idle memory: {per_connection} bytes per connection ({MEASURED} connections, RSS {} KiB -> {} KiB)",
        before / 1024,
        after / 1024
    );
    assert!(
        per_connection < IDLE_BYTES_PER_CONNECTION,
        "{per_connection} bytes per idle connection"
    );
    drop(clients);
}
