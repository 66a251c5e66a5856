//! Hostile input through the in-memory harness: every attack gets the
//! The protocol's answer on the offending connection, and every other connection
//! keeps being served, losing nothing.
//!
//! The pattern of each test: bystanders (one per codec) join a room before
//! the attack; while the attacker sends its frames, the hub publishes a
//! numbered `NEWS` to the room after each one and a bystander asks for a
//! reply; afterwards every bystander must have every `NEWS`, in order, and
//! the attacker's connection must still be served (unless docs/PROTOCOL.md says
//! it is closed).
//!
//! Cases already pinned in `protocol.rs` and `router.rs` (one malformed
//! frame, one reserved type, one panic, one flood, one slow consumer) are
//! not repeated here; these add the "others unaffected" angle, more shapes
//! per attack, and the size, depth and memory bounds.

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use signalbox::codec::{ErrorPayload, WireCodec};
use signalbox::testing::{TestClient, TestHub};
use signalbox::transport::CloseKind;
use signalbox::{Config, Ctx, ErrorCode, Meta, Opaque, RateLimit, Router, message};
use std::io::Write;

// --- the application under attack ------------------------------------------

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Join {
    room: String,
}
message!(Join = "JOIN");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Joined;
message!(Joined = "JOINED");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Say {
    text: String,
}
message!(Say = "SAY");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Said {
    text: String,
    from: Option<String>,
}
message!(Said = "SAID");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Post {
    room: String,
    n: u32,
}
message!(Post = "POST");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct News {
    n: u32,
}
message!(News = "NEWS");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Pad {
    pad: String,
}
message!(Pad = "PAD");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct WhoAmI;
message!(WhoAmI = "WHOAMI");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct YouAre {
    id: String,
}
message!(YouAre = "YOU_ARE");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Boom;
message!(Boom = "BOOM");

/// A payload decoded into a value tree: depth limits apply.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Tree(serde_json::Value);
message!(Tree = "TREE");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct StrictPayload {
    a: u32,
}
message!(StrictPayload = "STRICT");

signalbox::opaque_message!(Echo = "ECHO");
signalbox::opaque_message!(Relay = "RELAY");

const ROOM: &str = "room";

fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Join>| async move {
            ctx.subscribe(&ctx.payload().room)?;
            ctx.reply(&Joined)
        })
        .on(|ctx: Ctx<Say>| async move {
            let from = ctx.meta().client_id.clone();
            ctx.reply(&Said {
                text: ctx.payload().text.clone(),
                from,
            })
        })
        .on(|ctx: Ctx<Post>| async move {
            let Post { room, n } = ctx.payload().clone();
            ctx.publish(&room, &News { n }).await.map(drop)
        })
        .rpc(|ctx: Ctx<WhoAmI>| async move {
            Ok(YouAre {
                id: ctx.client_id().to_owned(),
            })
        })
        .on(|_ctx: Ctx<Boom>| async move {
            if true {
                panic!("secret internals");
            }
        })
        .rpc(|_ctx: Ctx<Tree>| async move { Ok(Joined) })
        .on(|ctx: Ctx<StrictPayload>| async move { ctx.reply(&Joined) })
        .on(|ctx: Ctx<Pad>| async move { ctx.reply(&Joined) })
        .rpc(|ctx: Ctx<Echo>| async move { Ok(ctx.into_payload()) })
        // Publishes the payload as it came: same-codec subscribers get it
        // spliced, the others transcoded.
        .on(|ctx: Ctx<Relay>| async move {
            let relay = Relay(Opaque(ctx.payload().0.0.clone()));
            ctx.publish(ROOM, &relay).await.map(drop)
        })
}

// --- harness ----------------------------------------------------------------

fn meta(id: &str) -> Meta {
    Meta {
        correlation_id: Some(id.to_owned()),
        ..Meta::default()
    }
}

/// Clients that only want to be served: one per codec, all in the room.
struct Bystanders {
    clients: Vec<TestClient>,
    published: u32,
}

impl Bystanders {
    async fn join(hub: &TestHub) -> Self {
        let mut clients = Vec::new();
        for codec in ["json", "msgpack", "json+gzip", "msgpack+gzip"] {
            let mut c = hub.connect(codec).await;
            c.send(&Join { room: ROOM.into() }).await;
            c.expect::<Joined>().await;
            clients.push(c);
        }
        Bystanders {
            clients,
            published: 0,
        }
    }

    /// The hub publishes the next NEWS to the room.
    async fn publish(&mut self, hub: &TestHub) {
        let n = self.published;
        self.published += 1;
        let delivered = hub.hub().publish(ROOM, &News { n }).await.unwrap();
        assert!(delivered >= self.clients.len(), "{delivered}");
    }

    /// Every bystander has every NEWS so far, in order, and then answers a
    /// request: nothing lost, nothing else in between.
    async fn all_served(&mut self) {
        for (i, c) in self.clients.iter_mut().enumerate() {
            for n in 0..self.published {
                let (news, _) = c.expect::<News>().await;
                assert_eq!(news.n, n, "bystander {i} ({})", c.codec().name());
            }
            c.send_meta(
                &Say {
                    text: "still".into(),
                },
                meta("b"),
            )
            .await;
            let (said, m) = c.expect::<Said>().await;
            assert_eq!(said.text, "still");
            assert_eq!(m.correlation_id.as_deref(), Some("b"));
        }
        self.published = 0;
    }
}

/// Sends `frame` and expects an `ERROR` with `code`; returns it.
async fn refused(
    c: &mut TestClient,
    frame: impl Into<Bytes>,
    code: ErrorCode,
) -> (ErrorPayload, Meta) {
    c.send_raw(frame).await;
    let (err, m) = c.expect_error("ERROR").await;
    assert_eq!(err.code, code, "{err:?}");
    (err, m)
}

/// The attacker's own connection still works.
async fn still_served(c: &mut TestClient) {
    c.send_meta(&Say { text: "ok".into() }, meta("alive")).await;
    let (said, m) = c.expect::<Said>().await;
    assert_eq!(said.text, "ok");
    assert_eq!(m.correlation_id.as_deref(), Some("alive"));
}

mod mp {
    //! Hand-built MessagePack frames.
    pub fn map(n: u32) -> Vec<u8> {
        let mut f = Vec::new();
        rmp::encode::write_map_len(&mut f, n).unwrap();
        f
    }
    pub fn str(f: &mut Vec<u8>, s: &str) {
        rmp::encode::write_str(f, s).unwrap();
    }
    pub fn uint(f: &mut Vec<u8>, n: u64) {
        rmp::encode::write_uint(f, n).unwrap();
    }
    /// `{"type": ty, "meta": {"correlationId": id}}` followed by a
    /// `payload` key whose value the caller appends.
    pub fn with_payload(ty: &str, id: &str) -> Vec<u8> {
        let mut f = map(3);
        str(&mut f, "type");
        str(&mut f, ty);
        str(&mut f, "meta");
        rmp::encode::write_map_len(&mut f, 1).unwrap();
        str(&mut f, "correlationId");
        str(&mut f, id);
        str(&mut f, "payload");
        f
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// `inner` gzipped and wrapped in a COMPRESSED envelope of `codec`'s format.
fn compressed(codec: &WireCodec, inner: &[u8]) -> Bytes {
    compressed_gzip(codec, &gzip(inner))
}

fn compressed_gzip(codec: &WireCodec, gz: &[u8]) -> Bytes {
    use base64::Engine;
    if codec.format().is_text() {
        let data = base64::engine::general_purpose::STANDARD.encode(gz);
        format!(r#"{{"type":"COMPRESSED","payload":{{"encoding":"gzip","data":"{data}"}}}}"#).into()
    } else {
        let mut f = mp::map(2);
        mp::str(&mut f, "type");
        mp::str(&mut f, "COMPRESSED");
        mp::str(&mut f, "payload");
        rmp::encode::write_map_len(&mut f, 2).unwrap();
        mp::str(&mut f, "encoding");
        mp::str(&mut f, "gzip");
        mp::str(&mut f, "data");
        rmp::encode::write_bin(&mut f, gz).unwrap();
        f.into()
    }
}

/// Peak resident set of this process so far, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// --- malformed envelopes ------------------------------------------------------

fn malformed_json() -> Vec<(&'static str, Vec<u8>)> {
    let long_type = format!(
        r#"{{"type":"{}","meta":{{"correlationId":"m"}}}}"#,
        "T".repeat(129)
    );
    vec![
        ("empty frame", b"".to_vec()),
        ("whitespace", b"  \n ".to_vec()),
        ("not json", b"\xff\xfe garbage".to_vec()),
        ("truncated", br#"{"type":"SAY","meta":{"correlationId":"m"},"payload":{"te"#.to_vec()),
        ("array", br#"[{"type":"SAY"}]"#.to_vec()),
        ("string", br#""SAY""#.to_vec()),
        ("number type", br#"{"type":5,"meta":{"correlationId":"m"}}"#.to_vec()),
        ("null type", br#"{"type":null,"meta":{"correlationId":"m"}}"#.to_vec()),
        ("empty type", br#"{"type":"","meta":{"correlationId":"m"}}"#.to_vec()),
        ("long type", long_type.into_bytes()),
        ("missing type", br#"{"meta":{"correlationId":"m"},"payload":{}}"#.to_vec()),
        ("meta not object", br#"{"type":"SAY","meta":[1],"payload":{"text":"x"}}"#.to_vec()),
        ("meta id not string", br#"{"type":"SAY","meta":{"correlationId":5},"payload":{"text":"x"}}"#.to_vec()),
        ("meta timestamp negative", br#"{"type":"SAY","meta":{"correlationId":"m","timestamp":-1},"payload":{"text":"x"}}"#.to_vec()),
        ("clientId not string", br#"{"type":"SAY","meta":{"correlationId":"m","clientId":7},"payload":{"text":"x"}}"#.to_vec()),
        ("unknown top-level key", br#"{"type":"SAY","meta":{"correlationId":"m"},"payload":{"text":"x"},"extra":1}"#.to_vec()),
        ("duplicate type", br#"{"type":"SAY","type":"BOOM","meta":{"correlationId":"m"}}"#.to_vec()),
        ("duplicate payload", br#"{"type":"SAY","payload":{"text":"a"},"payload":{"text":"b"}}"#.to_vec()),
        ("trailing bytes", br#"{"type":"SAY","payload":{"text":"x"}} {}"#.to_vec()),
        ("lone surrogate", br#"{"type":"\ud800","meta":{"correlationId":"m"}}"#.to_vec()),
        ("invalid utf-8 in a string", b"{\"type\":\"S\xc3\x28Y\",\"payload\":{\"text\":\"x\"}}".to_vec()),
        ("nan", br#"{"type":"SAY","payload":{"text":NaN}}"#.to_vec()),
        ("bad compressed: not base64", br#"{"type":"COMPRESSED","payload":{"encoding":"gzip","data":"!!!"}}"#.to_vec()),
        ("bad compressed: not gzip", br#"{"type":"COMPRESSED","payload":{"encoding":"gzip","data":"aGVsbG8="}}"#.to_vec()),
        ("bad compressed: encoding", br#"{"type":"COMPRESSED","payload":{"encoding":"br","data":""}}"#.to_vec()),
        ("bad compressed: meta on wrapper", br#"{"type":"COMPRESSED","meta":{"correlationId":"m"},"payload":{"encoding":"gzip","data":""}}"#.to_vec()),
        ("bad compressed: no payload", br#"{"type":"COMPRESSED"}"#.to_vec()),
    ]
}

fn malformed_msgpack() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty frame", vec![]),
        ("nil", vec![0xc0]),
        ("array", vec![0x91, 0xa1, b'x']),
        ("reserved marker", vec![0xc1]),
        ("truncated map", vec![0x83, 0xa4, b't', b'y']),
        (
            "map32 lying length",
            vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0xa4],
        ),
        ("int key", vec![0x81, 0x01, 0x02]),
        (
            "str32 lying length",
            vec![0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, b't'],
        ),
    ];
    // {"type": 5}
    let mut f = mp::map(1);
    mp::str(&mut f, "type");
    mp::uint(&mut f, 5);
    cases.push(("number type", f));
    // {"type": <invalid utf-8>}
    let mut f = mp::map(1);
    mp::str(&mut f, "type");
    f.extend_from_slice(&[0xa2, 0xc3, 0x28]);
    cases.push(("invalid utf-8 type", f));
    // {"type":"SAY","meta":{"correlationId":"m"},"payload": <array32 claiming 4G elements>}
    let mut f = mp::with_payload("SAY", "m");
    f.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]);
    cases.push(("payload array32 lying length", f));
    // payload then trailing garbage
    let mut f = mp::with_payload("SAY", "m");
    f.extend_from_slice(&[0x80, 0x00]);
    cases.push(("trailing bytes", f));
    // meta that is a string
    let mut f = mp::map(2);
    mp::str(&mut f, "type");
    mp::str(&mut f, "SAY");
    mp::str(&mut f, "meta");
    mp::str(&mut f, "nope");
    cases.push(("meta not a map", f));
    // unknown top-level key
    let mut f = mp::map(2);
    mp::str(&mut f, "type");
    mp::str(&mut f, "SAY");
    mp::str(&mut f, "bogus");
    mp::uint(&mut f, 1);
    cases.push(("unknown top-level key", f));
    // ext payload of a reserved size that lies
    let mut f = mp::with_payload("ECHO", "m");
    f.extend_from_slice(&[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]);
    cases.push(("ext32 lying length", f));
    cases
}

#[tokio::test]
async fn malformed_envelopes_are_answered_and_nobody_else_notices() {
    for (codec, cases) in [("json", malformed_json()), ("msgpack", malformed_msgpack())] {
        let hub = TestHub::new(router());
        let mut by = Bystanders::join(&hub).await;
        let mut attacker = hub.connect(codec).await;
        for (what, frame) in cases {
            attacker.send_raw(frame).await;
            let env = attacker
                .recv()
                .await
                .unwrap_or_else(|| panic!("{codec} {what}: no answer"));
            assert_eq!(env.ty, "ERROR", "{codec} {what}: {env:?}");
            let err: ErrorPayload = env.decode_payload().unwrap();
            assert_eq!(
                err.code,
                ErrorCode::InvalidArgument,
                "{codec} {what}: {err:?}"
            );
            by.publish(&hub).await;
        }
        still_served(&mut attacker).await;
        by.all_served().await;
    }
}

#[tokio::test]
async fn wrong_payload_types_name_the_field_and_nobody_else_notices() {
    let hub = TestHub::new(router());
    let mut by = Bystanders::join(&hub).await;
    let mut json = hub.connect("json").await;
    let cases: [(&[u8], &str); 7] = [
        (br#"{"type":"SAY","meta":{"correlationId":"w"},"payload":{"text":5}}"#, "payload.text"),
        (br#"{"type":"SAY","meta":{"correlationId":"w"},"payload":{"text":null}}"#, "payload.text"),
        (br#"{"type":"SAY","meta":{"correlationId":"w"},"payload":[]}"#, "payload"),
        (br#"{"type":"SAY","meta":{"correlationId":"w"},"payload":"text"}"#, "payload"),
        (br#"{"type":"SAY","meta":{"correlationId":"w"},"payload":null}"#, "payload"),
        (br#"{"type":"POST","meta":{"correlationId":"w"},"payload":{"room":"r","n":-1}}"#, "payload.n"),
        (br#"{"type":"POST","meta":{"correlationId":"w"},"payload":{"room":"r","n":4294967296}}"#, "payload.n"),
    ];
    for (frame, path) in cases {
        let (err, m) = refused(&mut json, frame, ErrorCode::InvalidArgument).await;
        assert!(err.message.starts_with(path), "{path}: {}", err.message);
        assert_eq!(m.correlation_id.as_deref(), Some("w"));
        by.publish(&hub).await;
    }
    // A request route answers RPC_ERROR.
    json.send_raw(&br#"{"type":"WHOAMI","meta":{"correlationId":"r"},"payload":{"x":1}}"#[..])
        .await;
    let (err, m) = json.expect_error("RPC_ERROR").await;
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(m.correlation_id.as_deref(), Some("r"));

    // MessagePack: an integer or a non-UTF-8 bin where a string is
    // expected (rmp-serde takes a UTF-8 bin as a string), a string where a
    // map is.
    let mut msgpack = hub.connect("msgpack").await;
    let mut f = mp::with_payload("SAY", "w");
    rmp::encode::write_map_len(&mut f, 1).unwrap();
    mp::str(&mut f, "text");
    mp::uint(&mut f, 7);
    let (err, _) = refused(&mut msgpack, f, ErrorCode::InvalidArgument).await;
    assert!(err.message.starts_with("payload.text"), "{}", err.message);
    let mut f = mp::with_payload("SAY", "w");
    rmp::encode::write_map_len(&mut f, 1).unwrap();
    mp::str(&mut f, "text");
    rmp::encode::write_bin(&mut f, b"\xff\xfe").unwrap();
    let (err, _) = refused(&mut msgpack, f, ErrorCode::InvalidArgument).await;
    assert!(err.message.starts_with("payload.text"), "{}", err.message);
    let mut f = mp::with_payload("SAY", "w");
    mp::str(&mut f, "text");
    refused(&mut msgpack, f, ErrorCode::InvalidArgument).await;
    by.publish(&hub).await;

    still_served(&mut json).await;
    still_served(&mut msgpack).await;
    by.all_served().await;
}

#[tokio::test]
async fn unknown_keys_unknown_and_reserved_types_and_nobody_else_notices() {
    let hub = TestHub::new(router());
    let mut by = Bystanders::join(&hub).await;
    for codec in ["json", "msgpack"] {
        let mut c = hub.connect(codec).await;
        let codec = *c.codec();
        let encode = |ty: &str, id: &str| codec.encode::<()>(ty, &meta(id), None).unwrap();
        // Unknown and reserved types, plain and inside a compressed envelope.
        let unknown = encode("NO_SUCH_TYPE", "u");
        let reserved: Vec<Bytes> = ["$ws:rpc-progress", "$x", "__heartbeat_ack", "__proto__"]
            .iter()
            .map(|ty| encode(ty, "r"))
            .collect();
        let (err, m) = refused(&mut c, unknown.clone(), ErrorCode::Unimplemented).await;
        assert!(err.message.contains("NO_SUCH_TYPE"));
        assert_eq!(m.correlation_id.as_deref(), Some("u"));
        let (_, m) = refused(
            &mut c,
            compressed(&codec, &unknown),
            ErrorCode::Unimplemented,
        )
        .await;
        assert_eq!(m.correlation_id.as_deref(), Some("u"));
        for frame in &reserved {
            let (err, m) = refused(&mut c, frame.clone(), ErrorCode::InvalidArgument).await;
            assert!(err.message.contains("reserved"), "{}", err.message);
            assert_eq!(m.correlation_id.as_deref(), Some("r"));
            let (err, _) = refused(
                &mut c,
                compressed(&codec, frame),
                ErrorCode::InvalidArgument,
            )
            .await;
            assert!(err.message.contains("reserved"), "{}", err.message);
            by.publish(&hub).await;
        }
        // A compressed envelope inside a compressed envelope is refused.
        let inner = compressed(&codec, &encode("SAY", "n"));
        refused(
            &mut c,
            compressed(&codec, &inner),
            ErrorCode::InvalidArgument,
        )
        .await;
        // The one reserved type a client may send works, compressed too.
        let hb = encode("__heartbeat", "h");
        c.send_raw(compressed(&codec, &hb)).await;
        let ack = c.recv().await.unwrap();
        assert_eq!(ack.ty, "__heartbeat_ack");
        assert_eq!(ack.meta.correlation_id.as_deref(), Some("h"));
        still_served(&mut c).await;
    }
    // Unknown payload keys: ignored by a lenient payload type, named by a
    // strict one (the application's choice).
    let mut c = hub.connect("json").await;
    c.send_raw(&br#"{"type":"SAY","payload":{"text":"x","admin":true}}"#[..])
        .await;
    assert_eq!(c.expect::<Said>().await.0.text, "x");
    let (err, _) = refused(
        &mut c,
        &br#"{"type":"STRICT","payload":{"a":1,"admin":true}}"#[..],
        ErrorCode::InvalidArgument,
    )
    .await;
    assert!(err.message.contains("admin"), "{}", err.message);
    // Unknown meta keys are extended meta, not an error.
    c.send_raw(&br#"{"type":"SAY","meta":{"x-anything":{"deep":[1]}},"payload":{"text":"y"}}"#[..])
        .await;
    assert_eq!(c.expect::<Said>().await.0.text, "y");
    by.all_served().await;
}

// --- identity -------------------------------------------------------------------

#[tokio::test]
async fn a_spoofed_client_id_never_reaches_handlers_or_other_clients() {
    let hub = TestHub::new(router());
    let mut by = Bystanders::join(&hub).await;
    let mut victim = hub.connect("json").await;
    victim.request(&WhoAmI, "v").await;
    let victim_id = victim.expect::<YouAre>().await.0.id;
    for name in ["json", "msgpack", "json+gzip", "msgpack+gzip"] {
        let mut attacker = hub.connect(name).await;
        let codec = *attacker.codec();
        attacker.request(&WhoAmI, "a").await;
        let attacker_id = attacker.expect::<YouAre>().await.0.id;
        assert_ne!(attacker_id, victim_id);
        let spoofed = Meta {
            client_id: Some(victim_id.clone()),
            ..meta("s")
        };
        // Plain, and inside a compressed envelope (meta travels inside).
        let post = Post {
            room: ROOM.into(),
            n: 0,
        };
        let plain = signalbox::Message::encode(&post, &codec, &spoofed, false).unwrap();
        let wrapped = compressed(&codec, &plain);
        for frame in [plain, wrapped] {
            attacker.send_raw(frame).await;
            for c in &mut by.clients {
                let (news, m) = c.expect::<News>().await;
                assert_eq!(news.n, 0);
                assert_eq!(m.client_id.as_deref(), Some(attacker_id.as_str()), "{name}");
            }
        }
        // A handler never sees the spoofed id.
        attacker
            .send_meta(&Say { text: "me".into() }, spoofed.clone())
            .await;
        assert_eq!(attacker.expect::<Said>().await.0.from, None, "{name}");
    }
    by.all_served().await;
}

// --- size -------------------------------------------------------------------------

#[tokio::test]
async fn oversize_messages_are_refused_before_decoding_and_nobody_else_notices() {
    let mut config = Config::default();
    config.codec.max_message_size = 4096;
    let hub = TestHub::with_config(router(), config);
    let mut by = Bystanders::join(&hub).await;
    for codec in ["json", "msgpack"] {
        let mut c = hub.connect(codec).await;
        // Just under and just over the limit: a Say padded to the size.
        for (size, ok) in [(4096, true), (4097, false), (64 * 1024, false)] {
            // Built with the default 1 MiB limit: this client lies.
            let unlimited = WireCodec::from_name(codec).unwrap();
            let empty = signalbox::Message::encode(
                &Pad { pad: String::new() },
                &unlimited,
                &meta("o"),
                false,
            )
            .unwrap();
            // One byte of text is one byte of frame, except where the
            // MessagePack string header grows: converge on the size.
            let mut pad = size - empty.len();
            let mut frame = Bytes::new();
            for _ in 0..4 {
                frame = signalbox::Message::encode(
                    &Pad {
                        pad: "x".repeat(pad),
                    },
                    &unlimited,
                    &meta("o"),
                    false,
                )
                .unwrap();
                if frame.len() == size {
                    break;
                }
                pad = pad + size - frame.len();
            }
            assert_eq!(frame.len(), size, "{codec}");
            c.send_raw(frame).await;
            let env = c.recv().await.unwrap();
            if ok {
                assert_eq!(env.ty, "JOINED", "{codec} {size}");
            } else {
                assert_eq!(env.ty, "ERROR", "{codec} {size}");
                let err: ErrorPayload = env.decode_payload().unwrap();
                assert_eq!(err.code, ErrorCode::InvalidArgument);
                assert!(err.message.contains("4096"), "{}", err.message);
                // The correlationId is still read from the refused frame.
                assert_eq!(env.meta.correlation_id.as_deref(), Some("o"));
            }
            by.publish(&hub).await;
        }
        still_served(&mut c).await;
    }
    by.all_served().await;
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_with_memory_bounded_and_nobody_else_notices() {
    // 100 MiB of zeros gzip to about 100 KiB; the hub's limit is 1 MiB.
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..100 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    drop(zeros);
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());

    let hub = TestHub::new(router());
    let mut by = Bystanders::join(&hub).await;
    let before = vm_hwm_kib();
    for name in ["json", "msgpack", "json+gzip", "msgpack+gzip"] {
        let mut c = hub.connect(name).await;
        let frame = compressed_gzip(c.codec(), &bomb);
        assert!(frame.len() < 1 << 20);
        for _ in 0..3 {
            let (err, _) = refused(&mut c, frame.clone(), ErrorCode::InvalidArgument).await;
            assert!(err.message.contains("inflat"), "{}", err.message);
            by.publish(&hub).await;
        }
        still_served(&mut c).await;
    }
    // Twelve bombs of 100 MiB each: had any been inflated whole, the peak
    // resident set would have grown by 100 MiB. It grows by at most a few
    // times the 1 MiB limit (other tests run alongside in this process).
    let grown_mib = vm_hwm_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 48, "peak RSS grew by {grown_mib} MiB");
    by.all_served().await;
}

// --- depth --------------------------------------------------------------------------

const DEPTH: usize = 100_000;

fn deep_json(ty: &str, where_: &str) -> Vec<u8> {
    let nested = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    match where_ {
        "payload" => {
            format!(r#"{{"type":"{ty}","meta":{{"correlationId":"d"}},"payload":{nested}}}"#)
        }
        _ => format!(r#"{{"type":"{ty}","meta":{{"correlationId":"d","x":{nested}}}}}"#),
    }
    .into_bytes()
}

fn deep_msgpack(ty: &str, where_: &str) -> Vec<u8> {
    let mut nested = vec![0x91; DEPTH];
    nested.push(0xc0);
    match where_ {
        "payload" => {
            let mut f = mp::with_payload(ty, "d");
            f.extend_from_slice(&nested);
            f
        }
        _ => {
            let mut f = mp::map(2);
            mp::str(&mut f, "type");
            mp::str(&mut f, ty);
            mp::str(&mut f, "meta");
            rmp::encode::write_map_len(&mut f, 2).unwrap();
            mp::str(&mut f, "correlationId");
            mp::str(&mut f, "d");
            mp::str(&mut f, "x");
            f.extend_from_slice(&nested);
            f
        }
    }
}

/// 100,000 nested arrays in the payload and in meta, for a typed payload,
/// an opaque one echoed back, and an opaque one published to subscribers of
/// every codec (transcoded): no stack overflow, the protocol's answer, and
/// the connection and the bystanders carry on.
///
/// Runs on a multi-thread runtime: the driver's tasks run on worker
/// threads with tokio's default 2 MiB stacks, as in a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_input_does_not_overflow_the_stack() {
    let hub = TestHub::new(router());
    let mut by = Bystanders::join(&hub).await;
    for codec in ["json", "msgpack"] {
        let deep = |ty: &str, where_: &str| {
            if codec == "json" {
                deep_json(ty, where_)
            } else {
                deep_msgpack(ty, where_)
            }
        };
        let mut c = hub.connect(codec).await;
        // Deep meta: extended meta is decoded into a value tree.
        let (err, m) = refused(&mut c, deep("SAY", "meta"), ErrorCode::InvalidArgument).await;
        assert!(err.message.contains("meta"), "{codec}: {}", err.message);
        assert_eq!(m.correlation_id.as_deref(), Some("d"), "{codec}");
        // Deep payload into a value tree.
        c.send_raw(deep("TREE", "payload")).await;
        let (err, m) = c.expect_error("RPC_ERROR").await;
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{codec}: {err:?}");
        assert!(
            err.message.contains("recursion") || err.message.contains("depth"),
            "{codec}: {}",
            err.message
        );
        assert_eq!(m.correlation_id.as_deref(), Some("d"));
        // Deep opaque payload, echoed: found by an iterative skip (our
        // MessagePack `skip_value`, serde_json's raw-value scan), never
        // parsed, and spliced back byte for byte.
        c.send_raw(deep("ECHO", "payload")).await;
        let env = c.recv().await.unwrap();
        assert_eq!(env.ty, "ECHO", "{codec}");
        let echoed = env.payload.unwrap();
        let expected = if codec == "json" {
            2 * DEPTH
        } else {
            DEPTH + 1
        };
        assert_eq!(echoed.as_bytes().len(), expected, "{codec}");
        // Deep opaque payload, published to a room with subscribers of
        // every codec: the subscribers of the same format get it as it
        // came (spliced); a transcoded copy for the others would pass the
        // decoder's depth limit, so they are skipped (logged by the hub) and
        // the publisher's handler succeeds.
        c.send_raw(deep("RELAY", "payload")).await;
        for b in &mut by.clients {
            if b.codec().format() != c.codec().format() {
                continue;
            }
            let env = b.recv().await.unwrap();
            assert_eq!(env.ty, "RELAY", "{codec} to {}", b.codec().name());
            let relayed = env.payload.unwrap();
            let expected = if codec == "json" {
                2 * DEPTH
            } else {
                DEPTH + 1
            };
            assert_eq!(relayed.as_bytes().len(), expected);
        }
        still_served(&mut c).await;
        // Everybody, the skipped included, is served as before.
        by.publish(&hub).await;
        by.all_served().await;
    }
}

// --- floods -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_flood_is_limited_for_its_sender_only() {
    let mut config = Config::default();
    config.rate_limit = Some(RateLimit {
        per_second: 100,
        burst: 20,
    });
    let hub = TestHub::with_config(router(), config);
    let mut by = Bystanders::join(&hub).await;
    let mut flooder = hub.connect("json").await;
    // 200 messages at once (no time passes): the burst of 20 is handled,
    // the rest refused.
    let flood = 200;
    for i in 0..flood {
        flooder
            .send_meta(&Say { text: "f".into() }, meta(&format!("f{i}")))
            .await;
        if i % 10 == 0 {
            // The bystanders, meanwhile, are served as usual.
            by.publish(&hub).await;
        }
    }
    let (mut said, mut exhausted) = (0, 0);
    for _ in 0..flood {
        let env = flooder.recv().await.expect("an answer per message");
        match env.ty.as_str() {
            "SAID" => said += 1,
            "ERROR" => {
                let err: ErrorPayload = env.decode_payload().unwrap();
                assert_eq!(err.code, ErrorCode::ResourceExhausted);
                assert!(err.retry_after_ms.is_some());
                exhausted += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(said + exhausted, flood);
    assert!((20..=25).contains(&said), "{said}");
    // Every bystander has its own bucket: each of them is served in full
    // (a bystander's request right after the flood is not refused).
    by.all_served().await;
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_garbage_meets_the_rate_limit_too() {
    let mut config = Config::default();
    config.rate_limit = Some(RateLimit {
        per_second: 100,
        burst: 20,
    });
    let hub = TestHub::with_config(router(), config);
    let mut by = Bystanders::join(&hub).await;
    let mut flooder = hub.connect("json").await;
    let flood = 200;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..flood {
        flooder
            .send_raw(
                format!(r#"{{"type":"SAY","meta":{{"correlationId":"g{i}"}},"junk":1}}"#)
                    .into_bytes(),
            )
            .await;
        if let Some(env) = flooder.recv().await {
            let err: ErrorPayload = env.decode_payload().unwrap();
            assert_eq!(env.meta.correlation_id, Some(format!("g{i}")));
            *codes.entry(err.code.as_str().to_owned()).or_default() += 1;
        }
        if i % 10 == 0 {
            by.publish(&hub).await;
        }
    }
    // Undecodable frames cost a token like any other: past the burst they
    // are answered RESOURCE_EXHAUSTED, not decoded and answered one by one.
    assert!(
        codes.get("RESOURCE_EXHAUSTED").copied().unwrap_or(0) > 150,
        "{codes:?}"
    );
    assert!((20..=25).contains(&codes["INVALID_ARGUMENT"]), "{codes:?}");
    by.all_served().await;
}

// --- slow consumers -------------------------------------------------------------------

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_and_nobody_else_loses_anything() {
    let mut config = Config::default();
    // Big enough for the bursts a prompt reader sees between two runs of
    // its writer (the processor handles up to a queue of posts in a row),
    // small enough for the test to overflow it quickly.
    config.outbound_queue = 256;
    // The sender's 3,000 posts would meet the rate limit; this test is
    // about the sleeper.
    config.rate_limit = None;
    let hub = TestHub::with_config(router(), config);
    let mut by = Bystanders::join(&hub).await;
    let mut sleeper = hub.connect("msgpack").await;
    sleeper.send(&Join { room: ROOM.into() }).await;
    sleeper.expect::<Joined>().await;
    let mut publisher = hub.connect("json").await;
    publisher.send(&Join { room: ROOM.into() }).await;
    publisher.expect::<Joined>().await;
    // The sleeper never reads again. The memory pipe holds 1024 unread
    // frames, the outbound queue 256 more: 3,000 messages overflow it.
    let total = 3_000u32;
    let readers: Vec<_> = by
        .clients
        .drain(..)
        .chain(std::iter::once(publisher))
        .map(|mut c| {
            tokio::spawn(async move {
                for n in 0..total {
                    let (news, _) = c.expect::<News>().await;
                    assert_eq!(news.n, n, "{}", c.codec().name());
                }
                c
            })
        })
        .collect();
    let mut sender = hub.connect("json").await;
    for n in 0..total {
        sender
            .send(&Post {
                room: ROOM.into(),
                n,
            })
            .await;
    }
    let close = sleeper.closed().await.expect("the sleeper is closed");
    assert_eq!(close.kind, CloseKind::Policy);
    assert!(close.reason.contains("slow consumer"), "{}", close.reason);
    let mut served = Vec::new();
    for r in readers {
        let mut c = r.await.unwrap();
        still_served(&mut c).await;
        served.push(c);
    }
    still_served(&mut sender).await;
    // The sleeper left the room when it was closed; the others are in it.
    assert_eq!(hub.hub().topic_size(ROOM), served.len());
}

// --- panics ---------------------------------------------------------------------------

#[tokio::test]
async fn panicking_handlers_answer_internal_and_nobody_else_notices() {
    let hub = TestHub::new(router());
    let mut by = Bystanders::join(&hub).await;
    let mut c = hub.connect("json").await;
    for i in 0..50 {
        c.send_meta(&Boom, meta(&format!("p{i}"))).await;
        let (err, m) = c.expect_error("ERROR").await;
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(!err.message.contains("secret"), "{}", err.message);
        assert_eq!(m.correlation_id, Some(format!("p{i}")));
        by.publish(&hub).await;
    }
    still_served(&mut c).await;
    by.all_served().await;
    // The server takes new connections as before.
    let mut late = hub.connect("msgpack").await;
    still_served(&mut late).await;
}
