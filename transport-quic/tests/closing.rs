//! Closes the server starts on QUIC carry their application code and
//! reason to a peer that is still writing (docs/PROTOCOL.md §5), and the
//! hub's budget and timeout for incomplete messages apply to QUIC
//! connections as to WebSocket ones. Over real UDP loopback with real TLS
//! handshakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use signalbox::Config;
use signalbox_quic::QuicServer;
use std::time::{Duration, Instant};

const KIB: usize = 1024;

async fn start(hub: &signalbox::Hub) -> QuicServer {
    QuicServer::builder(hub.clone())
        .bind(localhost())
        .await
        .unwrap()
}

/// The application close (code and reason) `conn` ended with, if it ended
/// within `wait`.
async fn closed_within(conn: &quinn::Connection, wait: Duration) -> Option<(u64, String)> {
    match tokio::time::timeout(wait, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => Some((
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        )),
        Ok(other) => panic!("closed otherwise: {other}"),
        Err(_) => None,
    }
}

/// Writes the 4-byte length `announced` and then `sent` bytes of the frame
/// on the main stream, in a task of its own that keeps the client (the
/// write may be cut short by the close; the stream stays open after it).
/// The connection, to watch.
fn start_a_message(mut client: Client, announced: u32, sent: usize) -> quinn::Connection {
    let conn = client.conn.clone();
    tokio::spawn(async move {
        let _ = client.send.write_all(&announced.to_be_bytes()).await;
        let chunk = vec![b' '; 64 * KIB];
        let mut left = sent;
        while left > 0 {
            let n = left.min(chunk.len());
            if client.send.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            left -= n;
        }
        // Holds the client until its connection ends.
        let _ = client.conn.closed().await;
    });
    conn
}

/// A peer writing a frame whose length is past the maximum (2 MiB of 1 MiB)
/// is closed with code 2, and sees the reason, while it is still writing
/// the frame. Ten times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_length_mid_write_gets_code_2_and_its_reason() {
    let hub = hub_with(Config::default());
    let server = start(&hub).await;
    for _ in 0..10 {
        let client = Client::connect(&server, "json").await;
        let conn = start_a_message(client, 2 * 1024 * 1024, 2 * 1024 * 1024);
        let (code, reason) = closed_within(&conn, WAIT)
            .await
            .expect("closed within the wait");
        assert_eq!(code, 2, "{reason}");
        assert!(
            reason.contains("frame of 2097152 bytes announced, the maximum is 1048576"),
            "{reason}"
        );
    }
}

/// Twelve connections each send 900 KiB of a 1,000 KiB frame and stall,
/// against a budget of 4 MiB: those that would pass it are closed with
/// code 3 and the budget's reason, the others keep their message, and a
/// well-behaved client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_incomplete_messages_are_bounded_by_the_budget() {
    const BUDGET: usize = 4 * 1024 * KIB;
    let mut config = Config::default();
    config.incomplete.budget = BUDGET;
    config.incomplete.timeout = Duration::from_secs(60);
    let hub = hub_with(config);
    let server = start(&hub).await;
    let mut calm = Client::connect(&server, "msgpack").await;

    let mut conns = Vec::new();
    for _ in 0..12 {
        let client = Client::connect(&server, "json").await;
        conns.push(start_a_message(client, 1000 * KIB as u32, 900 * KIB));
    }
    // Every connection's bytes arrive (or it is refused) well within this.
    let mut refused = 0;
    let mut held = 0;
    for (n, conn) in conns.iter().enumerate() {
        calm.send("ECHO", Some(&format!("calm-{n}")), json!(n))
            .await;
        calm.expect("ECHO").await;
        match closed_within(conn, Duration::from_secs(2)).await {
            Some((code, reason)) => {
                assert_eq!(code, 3, "{reason}");
                assert!(reason.contains("budget"), "{reason}");
                refused += 1;
            }
            None => held += 1,
        }
    }
    let budget = hub.incomplete_budget();
    eprintln!(
        "{refused} refused, {held} held; budget used {} KiB, peak {} KiB",
        budget.used() / KIB,
        budget.peak() / KIB
    );
    assert!(budget.peak() <= BUDGET);
    // 4 MiB holds four of them beyond their 16 KiB allowance (three if
    // two that were refused had been charged part of theirs side by side).
    assert!((3..=4).contains(&held), "{held} held");
    assert_eq!(refused + held, 12);
    calm.send("ECHO", Some("calm-end"), json!("end")).await;
    calm.expect("ECHO").await;
    for conn in &conns {
        conn.close(0u32.into(), b"done");
    }
    assert!(eventually(WAIT, || budget.used() == 0).await, "released");
}

/// A frame started and not completed within the timeout closes the
/// connection with code 3 and the reason; a connection idle between
/// messages for longer is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_not_completed_in_time_is_closed_with_code_3() {
    let mut config = Config::default();
    config.incomplete.timeout = Duration::from_millis(500);
    let hub = hub_with(config);
    let server = start(&hub).await;
    let mut idle = Client::connect(&server, "json").await;
    idle.send("ECHO", Some("before"), json!(1)).await;
    idle.expect("ECHO").await;

    let started = Instant::now();
    let client = Client::connect(&server, "json").await;
    let conn = start_a_message(client, 10 * KIB as u32, 5 * KIB);
    let (code, reason) = closed_within(&conn, WAIT)
        .await
        .expect("closed within the wait");
    let took = started.elapsed();
    assert_eq!(code, 3, "{reason}");
    assert!(reason.contains("not completed within"), "{reason}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    idle.send("ECHO", Some("after"), json!(2)).await;
    idle.expect("ECHO").await;
}

/// Request streams count against the same budget: three that each send
/// 600 KiB of a 700 KiB request and stall, against a budget of 1 MiB, get
/// their connection closed with code 3 and the budget's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_streams_are_bounded_by_the_budget() {
    let mut config = Config::default();
    config.incomplete.budget = 1024 * KIB;
    let hub = hub_with(config);
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;
    // The main stream first: it opens the connection for the hub.
    client.send("ECHO", Some("open"), json!(1)).await;
    client.expect("ECHO").await;
    let mut writers = Vec::new();
    for _ in 0..3 {
        let (mut send, recv) = client.conn.open_bi().await.unwrap();
        writers.push(tokio::spawn(async move {
            let _ = send.write_all(&(700 * KIB as u32).to_be_bytes()).await;
            let _ = send.write_all(&vec![b' '; 600 * KIB]).await;
            // Kept open, unfinished.
            (send, recv)
        }));
    }
    let (code, reason) = closed_within(&client.conn, WAIT)
        .await
        .expect("closed within the wait");
    assert_eq!(code, 3, "{reason}");
    assert!(reason.contains("budget"), "{reason}");
    assert!(hub.incomplete_budget().peak() <= 1024 * KIB);
    for writer in writers {
        drop(writer.await.unwrap());
    }
    let budget = hub.incomplete_budget();
    assert!(eventually(WAIT, || budget.used() == 0).await, "released");
}

/// A request stream's frame started and not completed within the timeout
/// closes the connection with code 3, as on the main stream
/// (docs/PROTOCOL.md §5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_completed_in_time_is_closed_with_code_3() {
    let mut config = Config::default();
    config.incomplete.timeout = Duration::from_millis(500);
    let hub = hub_with(config);
    let server = start(&hub).await;
    let mut client = Client::connect(&server, "json").await;
    client.send("ECHO", Some("open"), json!(1)).await;
    client.expect("ECHO").await;

    let started = Instant::now();
    let (mut send, recv) = client.conn.open_bi().await.unwrap();
    send.write_all(&(10 * KIB as u32).to_be_bytes())
        .await
        .unwrap();
    send.write_all(&[b' '; 100]).await.unwrap();
    let (code, reason) = closed_within(&client.conn, WAIT)
        .await
        .expect("closed within the wait");
    let took = started.elapsed();
    assert_eq!(code, 3, "{reason}");
    assert!(reason.contains("not completed within"), "{reason}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    drop((send, recv));
}
