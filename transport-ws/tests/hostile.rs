//! Hostile peers over real sockets: each gets the protocol's close code or
//! drop, while a bystander keeps being served, and the process's memory
//! stays bounded (resident set sampled during each attack; run with
//! `--nocapture` to see the numbers).
//!
//! The single-violation cases (1007, 1009, 1002, a silent socket at the
//! handshake timeout) are pinned in `protocol.rs`; these add variants, the
//! bystander, volume and memory.
//!
//! The tests of this file run one at a time (a lock) so that each one's
//! resident-set figures are its own.

mod common;

use common::*;
use signalbox::Config;
use signalbox::codec::Meta;
use signalbox::testing::RssSampler;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A client that keeps being served: an echo round trip on demand, and a
/// room it listens to.
struct Bystander {
    client: Client,
    rounds: u32,
}

impl Bystander {
    async fn join(addr: SocketAddr) -> Self {
        let mut client = connect(addr, "msgpack").await;
        client
            .send(
                &Join {
                    room: "calm".into(),
                },
                None,
            )
            .await;
        // The join is handled before the echo (ordered route first, and
        // the echo's reply proves the connection is served).
        let mut b = Bystander { client, rounds: 0 };
        b.served().await;
        b
    }

    /// An echo round trip, and a message published to its room arrives.
    async fn served(&mut self) {
        self.rounds += 1;
        let id = format!("b{}", self.rounds);
        let payload = serde_json::json!({ "round": self.rounds });
        let frame = self
            .client
            .codec
            .encode(
                "ECHO",
                &Meta {
                    correlation_id: Some(id.clone()),
                    ..Meta::default()
                },
                Some(&payload),
            )
            .unwrap();
        self.client.send_frame(frame).await;
        let env = self.client.recv().await;
        assert_eq!(env.ty, "ECHO");
        assert_eq!(env.meta.correlation_id.as_deref(), Some(id.as_str()));
        assert_eq!(env.decode_payload::<serde_json::Value>().unwrap(), payload);
    }

    async fn hears(&mut self, hub: &signalbox::Hub, text: &str) {
        let n = hub
            .publish(
                "calm",
                &Said {
                    text: text.to_owned(),
                },
            )
            .await
            .unwrap();
        assert!(n >= 1);
        let env = self.client.recv().await;
        assert_eq!(env.ty, "SAID");
        assert_eq!(env.decode_payload::<Said>().unwrap().text, text);
    }
}

/// A masked frame header (fin, opcode, length) with the zero mask key.
fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        n if n < 126 => h.push(0x80 | n as u8),
        n if n < 65_536 => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            h.push(0x80 | 127);
            h.extend_from_slice(&n.to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]); // mask key 0: payload as is
    h
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(fin, opcode, payload.len() as u64);
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_violations_close_the_offender_only() {
    let _serial = SERIAL.lock().await;
    let mut config = Config::default();
    config.codec.max_message_size = 4096;
    let (hub, addr) = start(config).await;
    let mut by = Bystander::join(addr).await;
    let rss = RssSampler::start();

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid UTF-8 split across fragments",
            [
                frame(false, 0x1, b"{\"type\":\"ECHO\",\"payload\":\"\xc3"),
                frame(true, 0x0, b"\x28\"}"),
            ]
            .concat(),
            1007,
        ),
        (
            "overlong UTF-8 encoding",
            frame(true, 0x1, b"{\"type\":\"ECHO\",\"payload\":\"\xc0\xaf\"}"),
            1007,
        ),
        (
            "UTF-8 surrogate",
            frame(
                true,
                0x1,
                b"{\"type\":\"ECHO\",\"payload\":\"\xed\xa0\x80\"}",
            ),
            1007,
        ),
        (
            "many small fragments past the limit",
            std::iter::once(frame(false, 0x2, &[0u8; 100]))
                .chain(std::iter::repeat_n(frame(false, 0x0, &[0u8; 100]), 60))
                .flatten()
                .collect(),
            1009,
        ),
        (
            "a frame announcing a terabyte",
            header(true, 0x2, 1 << 40),
            1009,
        ),
        (
            "a new message inside a fragmented one",
            [frame(false, 0x1, b"{\"ty"), frame(true, 0x1, b"{}")].concat(),
            1002,
        ),
        (
            "a continuation with nothing to continue",
            frame(true, 0x0, b"x"),
            1002,
        ),
        ("a fragmented ping", frame(false, 0x9, b"x"), 1002),
        ("a ping past 125 bytes", frame(true, 0x9, &[0u8; 200]), 1002),
        ("a reserved opcode", frame(true, 0x3, b"x"), 1002),
    ];
    for (what, bytes, code) in cases {
        let mut raw = RawClient::connect(addr, "json").await;
        raw.tcp.write_all(&bytes).await.unwrap();
        assert_eq!(raw.close_code().await, code, "{what}");
        by.served().await;
        by.hears(&hub, what).await;
    }
    let grown = rss.finish("framing violations");
    assert!(grown < 64, "+{grown} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_dribbled_a_byte_at_a_time() {
    let _serial = SERIAL.lock().await;
    let mut config = Config::default();
    config.heartbeat_interval = Duration::from_millis(200);
    config.heartbeat_timeout = Duration::from_millis(200);
    let (hub, addr) = start(config).await;
    let mut by = Bystander::join(addr).await;

    // A complete message, one byte per write: read across 40-odd reads and
    // answered like any other.
    let mut patient = RawClient::connect(addr, "json").await;
    let msg = frame(
        true,
        0x1,
        br#"{"type":"ECHO","meta":{"correlationId":"slow"},"payload":1}"#,
    );
    for b in &msg {
        patient.tcp.write_all(&[*b]).await.unwrap();
        patient.tcp.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut client = Client {
        ws: tokio_tungstenite::WebSocketStream::from_raw_socket(
            patient.tcp,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await,
        codec: signalbox::codec::WireCodec::from_name("json").unwrap(),
        protocol: Some("json".into()),
    };
    let env = client.recv().await;
    assert_eq!(env.meta.correlation_id.as_deref(), Some("slow"));

    // A frame that never ends (one byte every 20 ms of a declared 1000):
    // no message and no pong ever arrive, so the heartbeat closes it with
    // 1008 after interval + timeout, whatever it dribbles.
    let mut loris = RawClient::connect(addr, "json").await;
    let started = Instant::now();
    loris.tcp.write_all(&header(true, 0x1, 1000)).await.unwrap();
    let dribble = tokio::spawn(async move {
        let mut tcp = loris.tcp;
        for _ in 0..200 {
            if tcp.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tcp
    });
    // Meanwhile the bystander (whose messages keep it alive) is served,
    // until the loris stops dribbling: when the server, after its close and
    // the linger for the loris's own (docs/PROTOCOL.md §4), closes the
    // socket and the writes fail.
    let mut rounds = 0;
    while rounds < 5 || !dribble.is_finished() {
        by.served().await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        rounds += 1;
    }
    let tcp = dribble.await.unwrap();
    let mut loris = RawClient { tcp };
    assert_eq!(loris.close_code().await, 1008);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    by.hears(&hub, "after the loris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_never_finished_are_dropped_at_the_timeout() {
    let _serial = SERIAL.lock().await;
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| b.handshake_timeout(Duration::from_millis(500))).await;
    let mut by = Bystander::join(addr).await;
    let rss = RssSampler::start();
    let started = Instant::now();
    // 100 silent sockets, 100 that dribble a request header forever, 100
    // that send a request with a huge header they never finish.
    // Connected one after another: 300 at once can overflow the listen
    // queue, and then the kernel may forget a connection the client thinks
    // established (a syncookie ACK dropped), which a silent client never
    // learns of and the server never sees.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => {}
                1 => {
                    let line = b"GET /ws HTTP/1.1\r\nX-Slow: ";
                    let _ = tcp.write_all(line).await;
                    for _ in 0..400 {
                        if tcp.write_all(b"a").await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
                _ => {
                    let _ = tcp
                        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: ")
                        .await;
                    let _ = tcp.write_all(&vec![b'a'; 32 * 1024]).await;
                }
            }
            eof_within(&mut tcp, Duration::from_secs(15)).await
        }));
    }
    // A real client connects and is served while they hang.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = connect(addr, "json").await;
    late.send(&Echo(signalbox::Opaque(None)), Some("late"))
        .await;
    assert_eq!(
        late.recv().await.meta.correlation_id.as_deref(),
        Some("late")
    );
    by.served().await;
    for (i, t) in tasks.into_iter().enumerate() {
        let kind = ["silent", "dribbling", "oversized"][i % 3];
        assert!(
            t.await.unwrap(),
            "a hanging handshake ({kind}, #{i}) was not dropped"
        );
    }
    let took = started.elapsed();
    // Dropped at the timeout from accept (0.5 s), not from their last byte
    // (a dribbler that were let be would write for 10 s); the margin is for
    // a loaded machine.
    assert!(took < Duration::from_secs(8), "{took:?}");
    let grown = rss.finish("300 unfinished handshakes");
    assert!(grown < 64, "+{grown} MiB");
    by.hears(&hub, "after the handshakes").await;
}

/// Opens a WebSocket over a raw socket and drops it in one of four
/// abrupt ways.
async fn open_and_drop(addr: SocketAddr, how: usize) {
    let mut raw = RawClient::connect(
        addr,
        if how.is_multiple_of(2) {
            "json"
        } else {
            "msgpack"
        },
    )
    .await;
    match how % 4 {
        // Straight after the upgrade, with a reset.
        0 => {}
        // Half a frame, then a reset.
        1 => {
            let _ = raw.tcp.write_all(&header(true, 0x2, 500)[..4]).await;
        }
        // A whole request whose answer is never read, then a reset.
        2 => {
            let _ = raw
                .tcp
                .write_all(&frame(
                    true,
                    0x1,
                    br#"{"type":"ECHO","meta":{"correlationId":"x"},"payload":[1,2,3]}"#,
                ))
                .await;
        }
        // A join to the busy room, then an orderly FIN without a close frame.
        _ => {
            // {"type":"JOIN","payload":{"room":"busy"}} in MessagePack.
            let join = b"\x82\xa4type\xa4JOIN\xa7payload\x81\xa4room\xa4busy";
            let _ = raw.tcp.write_all(&frame(true, 0x2, join)).await;
            let _ = raw.tcp.shutdown().await;
            return;
        }
    }
    // Linger 0: the drop sends a reset, not a FIN (and never blocks).
    #[allow(deprecated)]
    let _ = raw.tcp.set_linger(Some(Duration::ZERO));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_dropped_abruptly() {
    let _serial = SERIAL.lock().await;
    let hub = hub(Config::default());
    let (addr, _) = start_with(&hub, |b| b.max_pending(4096)).await;
    let mut by = Bystander::join(addr).await;
    let rss = RssSampler::start();
    let started = Instant::now();
    const TOTAL: usize = 10_000;
    const AT_ONCE: usize = 64;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TOTAL {
                        break;
                    }
                    open_and_drop(addr, i).await;
                }
            })
        })
        .collect();
    // The bystander is served throughout, and hears the busy room's news.
    let mut rounds = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        by.served().await;
        rounds += 1;
        let _ = hub
            .publish(
                "busy",
                &Said {
                    text: "to the dropped".into(),
                },
            )
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    let opened = started.elapsed();
    // Every dropped connection is cleaned up: only the bystander is left,
    // and nobody is left in the busy room.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.connection_count() > 1 || hub.topic_size("busy") > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections, {} in the busy room",
            hub.connection_count(),
            hub.topic_size("busy")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{TOTAL} connections opened and dropped in {opened:?} ({rounds} bystander rounds meanwhile), cleaned up after {:?}",
        started.elapsed()
    );
    let grown = rss.finish("10,000 abrupt drops");
    by.served().await;
    by.hears(&hub, "after the drops").await;
    let mut late = connect(addr, "json").await;
    late.send(&Echo(signalbox::Opaque(None)), Some("late"))
        .await;
    assert_eq!(
        late.recv().await.meta.correlation_id.as_deref(),
        Some("late")
    );
    assert!(grown < 128, "+{grown} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_that_never_reads_is_closed_with_memory_bounded() {
    let _serial = SERIAL.lock().await;
    let mut config = Config::default();
    // Bounds on what one connection can make the server hold: 32 decoded
    // inbound messages, encoded outbound ones up to the default byte
    // budget (1 MiB plus one: about 17 replies of 60 KiB, well before the
    // 128-message ceiling), each at most 64 KiB.
    config.inbound_queue = 32;
    config.outbound_queue = 128;
    config.codec.max_message_size = 64 * 1024;
    config.rate_limit = None;
    // Its replies back up: once the queue stays half full this long the
    // peer is taken not to read.
    config.outbound_stall_timeout = Duration::from_secs(1);
    let closes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = closes.clone();
    let hub = signalbox::Hub::builder(router().on_close(move |_conn, close| {
        seen.lock().unwrap().push(close);
        async {}
    }))
    .config(config)
    .build();
    let (addr, _) = start_with(&hub, |b| b).await;
    let mut by = Bystander::join(addr).await;
    let rss = RssSampler::start();

    // ECHO requests of 60 KiB each, as fast as the socket takes them, and
    // never a read: every reply is 60 KiB the server has to keep somewhere.
    let mut raw = RawClient::connect(addr, "json").await;
    let body = format!(
        r#"{{"type":"ECHO","meta":{{"correlationId":"f"}},"payload":"{}"}}"#,
        "x".repeat(60 * 1024)
    );
    let one = frame(true, 0x1, body.as_bytes());
    let flood = tokio::spawn(async move {
        let mut sent = 0usize;
        // Up to 2,000 requests (120 MiB); the server closes long before.
        for _ in 0..2_000 {
            match tokio::time::timeout(Duration::from_secs(2), raw.tcp.write_all(&one)).await {
                Ok(Ok(())) => sent += 1,
                // Closed, or the server stopped reading (backpressure).
                _ => break,
            }
        }
        (raw, sent)
    });
    // The bystander is served meanwhile.
    for i in 0..10 {
        by.served().await;
        by.hears(&hub, &format!("flood {i}")).await;
    }
    let (raw, sent) = flood.await.unwrap();
    // The server closes it as a slow consumer (1008). The client may not
    // see the close frame: closing a socket with unread input resets it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let closed = closes.lock().unwrap().clone();
        if let Some(close) = closed.first() {
            assert_eq!(signalbox_ws::close_code(close.kind), 1008, "{close:?}");
            assert!(close.reason.contains("slow consumer"), "{close:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the flooder was not closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(raw);
    let grown = rss.finish(&format!("flood of {sent} 60 KiB requests never read"));
    by.served().await;
    // Queues of 32 messages of 64 KiB and 1 MiB plus one are about 3 MiB;
    // socket buffers and the test's own client side come on top.
    assert!(grown < 96, "+{grown} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_small_messages_meets_the_rate_limit_and_others_are_served() {
    let _serial = SERIAL.lock().await;
    let (hub, addr) = start(Config::default()).await;
    let mut by = Bystander::join(addr).await;
    let rss = RssSampler::start();
    // 20,000 requests in one go (default limit: bursts of 2,000, then
    // 1,000/s); the flooder reads what it is answered.
    let flooder = connect(addr, "json").await;
    let total = 20_000u32;
    let frame = flooder
        .codec
        .encode(
            "ECHO",
            &Meta {
                correlation_id: Some("f".into()),
                ..Meta::default()
            },
            Some(&1),
        )
        .unwrap();
    let sender = {
        use futures_util::SinkExt;
        let (mut sink, mut stream) = futures_util::StreamExt::split(flooder.ws);
        let frame = frame.clone();
        let send = tokio::spawn(async move {
            for _ in 0..total {
                let text = String::from_utf8(frame.to_vec()).unwrap();
                sink.feed(tokio_tungstenite::tungstenite::Message::Text(text.into()))
                    .await
                    .unwrap();
            }
            sink.flush().await.unwrap();
            sink
        });
        let read = tokio::spawn(async move {
            let (mut echoed, mut refused) = (0u32, 0u32);
            while echoed + refused < total {
                let Some(Ok(msg)) = futures_util::StreamExt::next(&mut stream).await else {
                    break;
                };
                let text = msg.into_text().unwrap();
                if text.starts_with(r#"{"type":"ECHO""#) {
                    echoed += 1;
                } else {
                    assert!(text.contains("RESOURCE_EXHAUSTED"), "{text}");
                    refused += 1;
                }
            }
            (echoed, refused)
        });
        (send, read)
    };
    for i in 0..10 {
        by.served().await;
        by.hears(&hub, &format!("small flood {i}")).await;
    }
    let _sink = sender.0.await.unwrap();
    let (echoed, refused) = sender.1.await.unwrap();
    assert_eq!(echoed + refused, total);
    assert!(refused > total / 2, "echoed {echoed}, refused {refused}");
    let grown = rss.finish(&format!(
        "flood of {total} small requests ({refused} refused)"
    ));
    by.served().await;
    assert!(grown < 64, "+{grown} MiB");
}
