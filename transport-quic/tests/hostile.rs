//! Hostile QUIC peers: garbage on the stream and on the UDP port, framing
//! violations, peers that vanish mid-frame, a flood that never reads. Each
//! gets the protocol's answer (ERROR, or a close with code 2 or 3, or the
//! idle timeout), a bystander keeps being served, and the resident set of
//! the process is sampled during each attack (`--nocapture` prints it).
//!
//! The single oversize length, the single vanished peer and the plain slow
//! consumer are pinned in `quic.rs`; these add variants, volume, the
//! bystander and memory. Tests here run one at a time (a lock) so that
//! each one's memory figures are its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use signalbox::Config;
use signalbox::codec::ErrorPayload;
use signalbox::testing::RssSampler;
use signalbox_quic::QuicServer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A client that only wants to be served.
async fn served(by: &mut Client, round: &mut u32) {
    *round += 1;
    let id = format!("b{round}");
    by.send("ECHO", Some(&id), json!({ "round": *round })).await;
    let env = by.expect("ECHO").await;
    assert_eq!(env.meta.correlation_id.as_deref(), Some(id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_stream_is_answered_or_closes_only_the_offender() {
    let _serial = SERIAL.lock().await;
    let mut config = Config::default();
    config.codec.max_message_size = 4096;
    let hub = hub_with(config);
    let server = QuicServer::builder(hub.clone())
        .bind(localhost())
        .await
        .unwrap();
    let mut by = Client::connect(&server, "msgpack").await;
    let mut round = 0;
    served(&mut by, &mut round).await;

    // Well-framed garbage is an undecodable message: ERROR, and the
    // connection carries on.
    for codec in ["json", "msgpack"] {
        let mut c = Client::connect(&server, codec).await;
        for body in [
            &b""[..],
            &b"\xff\xfe\xfd"[..],
            &b"\x00\x00\x00\x04abcd"[..],
            &[0xc1; 100][..],
            &[0x7b; 4096][..],
        ] {
            c.send_frame(body).await;
            let env = c.expect("ERROR").await;
            let err: ErrorPayload = env.decode_payload().unwrap();
            assert_eq!(err.code, signalbox::ErrorCode::InvalidArgument, "{codec}");
        }
        c.send("ECHO", Some("still"), json!(1)).await;
        c.expect("ECHO").await;
        served(&mut by, &mut round).await;
    }

    // Framing violations close with code 2.
    let cases: [(&str, Vec<u8>); 3] = [
        ("a length one past the limit after frames at it", {
            let mut wire = Vec::new();
            for _ in 0..3 {
                wire.extend_from_slice(&4096u32.to_be_bytes());
                wire.extend(std::iter::repeat_n(b' ', 4096));
            }
            wire.extend_from_slice(&4097u32.to_be_bytes());
            wire
        }),
        ("a length of 2^31", (1u32 << 31).to_be_bytes().to_vec()),
        ("a frame cut short by the end of the stream", {
            let mut wire = 100u32.to_be_bytes().to_vec();
            wire.extend_from_slice(b"{\"type\":");
            wire
        }),
    ];
    for (what, wire) in cases {
        let mut c = Client::connect(&server, "json").await;
        c.send.write_all(&wire).await.unwrap();
        let _ = c.send.finish();
        assert_eq!(c.close_code().await, Some(2), "{what}");
        served(&mut by, &mut round).await;
    }

    // Garbage datagrams at the port: not QUIC, or QUIC-looking with bogus
    // connection ids. Ignored; everyone carries on, newcomers included.
    let rss = RssSampler::start();
    let udp = UdpSocket::bind(localhost()).await.unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..3_000usize {
        let len = 1 + (i * 7919) % 1400;
        let mut datagram = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            datagram.push(seed as u8);
        }
        if i % 3 == 0 {
            // Long header, version 1, Initial: makes the server look closer.
            datagram[0] = 0xc0 | (datagram[0] & 0x0f);
            if len > 5 {
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        let _ = udp.send_to(&datagram, server.local_addr()).await;
        if i % 500 == 0 {
            served(&mut by, &mut round).await;
        }
    }
    served(&mut by, &mut round).await;
    let mut late = Client::connect(&server, "json").await;
    late.send("ECHO", Some("late"), json!(null)).await;
    late.expect("ECHO").await;
    let grown = rss.finish("3,000 garbage datagrams");
    assert!(grown < 32, "+{grown} MiB");
}

/// A UDP relay for many clients that can go silent for all of them at
/// once: peers that vanish without a close.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind(localhost()).await.unwrap());
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let task = {
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok((n, from)) = front.recv_from(&mut buf).await else {
                        return;
                    };
                    if cut.load(Ordering::Relaxed) {
                        continue;
                    }
                    let back = match backs.get(&from) {
                        Some(back) => back.clone(),
                        None => {
                            let back = Arc::new(UdpSocket::bind(localhost()).await.unwrap());
                            back.connect(server).await.unwrap();
                            backs.insert(from, back.clone());
                            let (front, reader, cut) = (front.clone(), back.clone(), cut.clone());
                            tokio::spawn(async move {
                                let mut buf = vec![0u8; 65536];
                                while let Ok(n) = reader.recv(&mut buf).await {
                                    if !cut.load(Ordering::Relaxed) {
                                        let _ = front.send_to(&buf[..n], from).await;
                                    }
                                }
                            });
                            back
                        }
                    };
                    let _ = back.send(&buf[..n]).await;
                }
            })
        };
        Relay { addr, cut, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_vanish_mid_frame_are_cleaned_up_and_others_served() {
    let _serial = SERIAL.lock().await;
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .idle_timeout(Duration::from_millis(800))
        .keep_alive(Some(Duration::from_millis(200)))
        .bind(localhost())
        .await
        .unwrap();
    let mut by = Client::connect(&server, "json").await;
    let mut round = 0;
    served(&mut by, &mut round).await;
    let relay = Relay::start(server.local_addr()).await;
    let rss = RssSampler::start();
    const PEERS: usize = 200;
    let mut peers = Vec::new();
    for i in 0..PEERS {
        let mut c = Client::connect_to(relay.addr, &server.cert_pem(), "msgpack").await;
        match i % 3 {
            // Half a frame.
            0 => c.send.write_all(&1000u32.to_be_bytes()[..3]).await.unwrap(),
            // A header and part of the body.
            1 => {
                c.send.write_all(&1000u32.to_be_bytes()).await.unwrap();
                c.send.write_all(&[0x80; 10]).await.unwrap();
            }
            // A request whose reply is never read, in a room.
            _ => {
                c.send("JOIN", None, json!({"topic": "gone"})).await;
                c.send("ECHO", Some("x"), json!([1, 2, 3])).await;
            }
        }
        peers.push(c);
        if i % 50 == 0 {
            served(&mut by, &mut round).await;
        }
    }
    assert!(
        eventually(WAIT, || hub.connection_count() == PEERS + 1).await,
        "{}",
        hub.connection_count()
    );
    // The network drops every packet of theirs: no close ever arrives.
    relay.cut.store(true, Ordering::Relaxed);
    let cut = Instant::now();
    while hub.connection_count() > 1 {
        assert!(
            cut.elapsed() < Duration::from_secs(5),
            "{} connections left",
            hub.connection_count()
        );
        served(&mut by, &mut round).await;
        let _ = hub.publish("gone", &Tick { n: 0 }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cut.elapsed() >= Duration::from_millis(700),
        "{:?}",
        cut.elapsed()
    );
    assert_eq!(hub.topic_size("gone"), 0);
    eprintln!(
        "{PEERS} vanished peers cleaned up {:?} after the cut",
        cut.elapsed()
    );
    let grown = rss.finish("200 peers vanishing mid-frame");
    drop(peers);
    served(&mut by, &mut round).await;
    // Both ends of 200 QUIC connections live in this process (each client
    // its own endpoint, TLS session and windows): about 250 KiB a pair.
    assert!(grown < 128, "+{grown} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_that_never_reads_is_closed_with_code_3_and_memory_bounded() {
    let _serial = SERIAL.lock().await;
    let mut config = Config::default();
    // Outbound, the default byte budget (1 MiB plus one reply) binds
    // before the 128-message ceiling.
    config.inbound_queue = 32;
    config.outbound_queue = 128;
    config.codec.max_message_size = 64 * 1024;
    config.rate_limit = None;
    // Its replies back up: once the queue stays half full this long the
    // peer is taken not to read.
    config.outbound_stall_timeout = Duration::from_secs(1);
    let hub = hub_with(config);
    let server = QuicServer::builder(hub.clone())
        .bind(localhost())
        .await
        .unwrap();
    let mut by = Client::connect(&server, "msgpack").await;
    let mut round = 0;
    served(&mut by, &mut round).await;
    let rss = RssSampler::start();

    // ECHO requests of 60 KiB each, never a read.
    let mut flooder = Client::connect(&server, "json").await;
    let one = flooder.encode("ECHO", Some("f"), &json!("x".repeat(60 * 1024)));
    let conn = flooder.conn.clone();
    let flood = tokio::spawn(async move {
        let mut sent = 0usize;
        for _ in 0..2_000 {
            let mut out = bytes::BytesMut::new();
            signalbox_quic::framing::encode_frame(&one, &mut out).unwrap();
            match tokio::time::timeout(Duration::from_secs(2), flooder.send.write_all(&out)).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        (flooder, sent)
    });
    for _ in 0..10 {
        served(&mut by, &mut round).await;
    }
    assert_eq!(close_code(&conn).await, Some(3), "slow consumer");
    let (_flooder, sent) = flood.await.unwrap();
    let grown = rss.finish(&format!("flood of {sent} 60 KiB requests never read"));
    served(&mut by, &mut round).await;
    // Queues of 32 messages of 64 KiB and 1 MiB plus one are about 3 MiB;
    // QUIC's stream and connection windows and the test's own client come
    // on top.
    assert!(grown < 96, "+{grown} MiB");
}
