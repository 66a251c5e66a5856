//! Interop fixtures: envelopes as other implementations write them
//! (@msgpack/msgpack, Python's msgpack, msgpackr, JSON.stringify, Python's
//! json and gzip) and the examples of the protocol, decoded and re-encoded.
//!
//! The MessagePack fixtures are written out by hand; those given as hex were
//! produced by Python's `msgpack.packb` (msgpack 1.x, default options), which
//! writes the same bytes as @msgpack/msgpack's `encode` for these values.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use signalbox_codec::{Envelope, ErrorCode, ErrorPayload, Format, Meta, WireCodec};

fn json() -> WireCodec {
    WireCodec::from_name("json").unwrap()
}

fn msgpack() -> WireCodec {
    WireCodec::from_name("msgpack").unwrap()
}

fn decode(codec: &WireCodec, frame: impl AsRef<[u8]>) -> Envelope {
    codec
        .decode(Bytes::copy_from_slice(frame.as_ref()))
        .unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A fixstr: 0xa0 | len, then the bytes.
fn fixstr(s: &str) -> Vec<u8> {
    assert!(s.len() < 32);
    let mut out = vec![0xa0 | u8::try_from(s.len()).unwrap()];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A str8: 0xd9, len, bytes (what encoders use for 32..=255 bytes, and what
/// some use for every short string).
fn str8(s: &str) -> Vec<u8> {
    let mut out = vec![0xd9, u8::try_from(s.len()).unwrap()];
    out.extend_from_slice(s.as_bytes());
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SendMessage {
    #[serde(rename = "roomId")]
    room_id: String,
    text: String,
}

/// docs/PROTOCOL.md §1, as written there.
const PROTOCOL_SEND_MESSAGE: &str = r#"{"type":"SEND_MESSAGE","meta":{"correlationId":"r-17","timestamp":1764160000000},"payload":{"roomId":"lobby","text":"hi"}}"#;

/// docs/PROTOCOL.md §6, as written there.
const PROTOCOL_ERROR: &str = r#"{"type":"ERROR","meta":{"correlationId":"r-17","timestamp":1764160000000},"payload":{"code":"INVALID_ARGUMENT","message":"payload.text: expected a string","details":{"path":"payload.text"},"retryable":false}}"#;

/// docs/PROTOCOL.md §1's envelope as MessagePack, by hand: a fixmap of 3 with fixstr
/// keys, the timestamp (> 2^32) as uint64 — what @msgpack/msgpack and
/// Python's msgpack write.
fn send_message_msgpack() -> Vec<u8> {
    cat(&[
        &[0x83],
        &fixstr("type"),
        &fixstr("SEND_MESSAGE"),
        &fixstr("meta"),
        &[0x82],
        &fixstr("correlationId"),
        &fixstr("r-17"),
        &fixstr("timestamp"),
        &[0xcf, 0x00, 0x00, 0x01, 0x9a, 0xc0, 0x21, 0x50, 0x00],
        &fixstr("payload"),
        &[0x82],
        &fixstr("roomId"),
        &fixstr("lobby"),
        &fixstr("text"),
        &fixstr("hi"),
    ])
}

/// `msgpack.packb` of docs/PROTOCOL.md §1's envelope.
const PYTHON_SEND_MESSAGE: &str = "83a474797065ac53454e445f4d455353414745a46d65746182ad636f7272656c6174696f6e4964a4722d3137a974696d657374616d70cf0000019ac0215000a77061796c6f616482a6726f6f6d4964a56c6f626279a474657874a26869";

/// `msgpack.packb` of docs/PROTOCOL.md §6's envelope.
const PYTHON_ERROR: &str = "83a474797065a54552524f52a46d65746182ad636f7272656c6174696f6e4964a4722d3137a974696d657374616d70cf0000019ac0215000a77061796c6f616484a4636f6465b0494e56414c49445f415247554d454e54a76d657373616765bf7061796c6f61642e746578743a206578706563746564206120737472696e67a764657461696c7381a470617468ac7061796c6f61642e74657874a9726574727961626c65c2";

#[track_caller]
fn assert_send_message(env: &Envelope) {
    assert_eq!(env.ty, "SEND_MESSAGE");
    assert_eq!(env.meta.correlation_id.as_deref(), Some("r-17"));
    assert_eq!(env.meta.timestamp, Some(1_764_160_000_000));
    assert_eq!(env.meta.client_id, None);
    assert!(env.meta.extra.is_empty());
    let payload: SendMessage = env.decode_payload().unwrap();
    assert_eq!(
        payload,
        SendMessage {
            room_id: "lobby".into(),
            text: "hi".into()
        }
    );
}

fn send_message_meta() -> Meta {
    Meta {
        correlation_id: Some("r-17".into()),
        timestamp: Some(1_764_160_000_000),
        ..Meta::default()
    }
}

#[test]
fn hand_written_msgpack_fixture_is_what_python_msgpack_writes() {
    assert_eq!(send_message_msgpack(), hex(PYTHON_SEND_MESSAGE));
}

#[test]
fn msgpack_envelope_from_msgpack_js_and_python_decodes() {
    assert_send_message(&decode(&msgpack(), send_message_msgpack()));
}

#[test]
fn msgpack_encoding_is_byte_for_byte_what_python_msgpack_writes() {
    let payload = SendMessage {
        room_id: "lobby".into(),
        text: "hi".into(),
    };
    let frame = msgpack()
        .encode("SEND_MESSAGE", &send_message_meta(), Some(&payload))
        .unwrap();
    assert_eq!(frame.as_ref(), hex(PYTHON_SEND_MESSAGE).as_slice());
}

#[test]
fn msgpack_with_non_minimal_headers_decodes() {
    // map16 / map32 headers, str8 / str16 keys and values, a timestamp as
    // uint32-sized uint64: legal, and written by some encoders (msgpackr's
    // record-less mode uses str8 for short strings).
    let mut str16_type = vec![0xda, 0x00, 12];
    str16_type.extend_from_slice(b"SEND_MESSAGE");
    let frame = cat(&[
        &[0xde, 0x00, 0x03],
        &str8("type"),
        &str16_type,
        &str8("meta"),
        &[0xdf, 0x00, 0x00, 0x00, 0x02],
        &str8("correlationId"),
        &str8("r-17"),
        &str8("timestamp"),
        &[0xcf, 0x00, 0x00, 0x01, 0x9a, 0xc0, 0x21, 0x50, 0x00],
        &str8("payload"),
        &[0xde, 0x00, 0x02],
        &str8("roomId"),
        &str8("lobby"),
        &str8("text"),
        &str8("hi"),
    ]);
    assert_send_message(&decode(&msgpack(), &frame));

    // Keys in another order, timestamp in a small uint form.
    let frame = cat(&[
        &[0x83],
        &fixstr("payload"),
        &[0x82],
        &fixstr("text"),
        &fixstr("hi"),
        &fixstr("roomId"),
        &fixstr("lobby"),
        &fixstr("meta"),
        &[0x81],
        &fixstr("timestamp"),
        &[0xce, 0x00, 0x01, 0x00, 0x00],
        &fixstr("type"),
        &fixstr("SEND_MESSAGE"),
    ]);
    let env = decode(&msgpack(), &frame);
    assert_eq!(env.ty, "SEND_MESSAGE");
    assert_eq!(env.meta.timestamp, Some(65_536));
    assert_eq!(env.decode_payload::<SendMessage>().unwrap().text, "hi");
}

#[test]
fn msgpack_str8_type_map16_meta_and_str8_meta_key_decode() {
    // msgpack.packb({"type": "T"*40, "meta": {"correlationId": "r-19",
    // "k00": 0, …, "k15": 15}, "payload": None}): str8 type, map16 meta.
    let python = hex(concat!(
        "83a474797065d92854545454545454545454545454545454545454545454545454545454545454545454",
        "545454545454a46d657461de0011ad636f7272656c6174696f6e4964a4722d3139a36b303000a36b3031",
        "01a36b303202a36b303303a36b303404a36b303505a36b303606a36b303707a36b303808a36b303909a3",
        "6b31300aa36b31310ba36b31320ca36b31330da36b31340ea36b31350fa77061796c6f6164c0",
    ));
    let env = decode(&msgpack(), &python);
    assert_eq!(env.ty, "T".repeat(40));
    assert_eq!(env.meta.correlation_id.as_deref(), Some("r-19"));
    assert_eq!(env.meta.extra.len(), 16);
    for i in 0..16u64 {
        assert_eq!(env.meta.extra[&format!("k{i:02}")], json!(i));
    }
    // `None` is a payload (nil): it reads as None / unit.
    assert_eq!(env.payload.as_ref().unwrap().as_bytes(), [0xc0]);
    assert_eq!(env.decode_payload::<Option<SendMessage>>().unwrap(), None);

    // msgpack.packb({"type": "A", "meta": {"x"*40: True}}): a str8 meta key.
    let python = hex(concat!(
        "82a474797065a141a46d65746181d928787878787878787878787878787878787878787878787878787878",
        "78787878787878787878787878c3"
    ));
    let env = decode(&msgpack(), &python);
    assert_eq!(env.meta.extra["x".repeat(40).as_str()], json!(true));
    assert!(env.payload.is_none());
}

#[test]
fn msgpack_bin_extreme_integers_floats_and_nil_from_python_decode() {
    #[derive(Debug, PartialEq, Deserialize)]
    struct Upload {
        name: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        size: u64,
        delta: i64,
        ratio: f64,
        neg: i16,
        note: Option<String>,
    }
    // msgpack.packb({"type": "UPLOAD", "meta": {"correlationId": "r-18"},
    //   "payload": {"name": "a.bin", "data": b"\x00\x01\xff", "size": 2**64-1,
    //   "delta": -2**63, "ratio": 0.1, "neg": -200, "note": None}})
    let python = hex(concat!(
        "83a474797065a655504c4f4144a46d65746181ad636f7272656c6174696f6e4964a4722d3138a77061",
        "796c6f616487a46e616d65a5612e62696ea464617461c4030001ffa473697a65cfffffffffffffffffa5",
        "64656c7461d38000000000000000a5726174696fcb3fb999999999999aa36e6567d1ff38a46e6f7465c0",
    ));
    let env = decode(&msgpack(), &python);
    assert_eq!(env.ty, "UPLOAD");
    assert_eq!(env.meta.correlation_id.as_deref(), Some("r-18"));
    let upload: Upload = env.decode_payload().unwrap();
    assert_eq!(
        upload,
        Upload {
            name: "a.bin".into(),
            data: vec![0, 1, 0xff],
            size: u64::MAX,
            delta: i64::MIN,
            ratio: 0.1,
            neg: -200,
            note: None,
        }
    );
}

#[test]
fn msgpack_undefined_meta_and_payload_from_msgpack_js_decode() {
    // @msgpack/msgpack encodes `undefined` as nil:
    // encode({type: "PING", meta: undefined, payload: undefined}).
    let frame = cat(&[
        &[0x83],
        &fixstr("type"),
        &fixstr("PING"),
        &fixstr("meta"),
        &[0xc0],
        &fixstr("payload"),
        &[0xc0],
    ]);
    let env = decode(&msgpack(), &frame);
    assert_eq!(env.ty, "PING");
    assert!(env.meta.is_empty());
    env.decode_payload::<()>().unwrap();
    assert_eq!(env.decode_payload::<Option<SendMessage>>().unwrap(), None);
}

#[test]
fn msgpack_compressed_envelope_from_python_unwraps() {
    // msgpack.packb({"type": "COMPRESSED", "payload": {"encoding": "gzip",
    //   "data": gzip.compress(<PYTHON_SEND_MESSAGE>, mtime=0)}})
    let python = hex(concat!(
        "82a474797065aa434f4d50524553534544a77061796c6f616482a8656e636f64696e67a4677a6970a464",
        "617461c4721f8b08000000000002036b5e52525990ba26d8d5cf25ded73538d8d1dd75496e6a4962d3da",
        "e4fca2a2d49cc492ccfc3ccf942545ba86e62b4b3273538b4b12730bce333030ce3aa018c0b0bc20b132",
        "273f31a56959517e7eae67cad29cfca4a4ca2525a915258b323201ee8dd68d5d000000",
    ));
    assert_send_message(&decode(&msgpack(), &python));
}

#[test]
fn json_envelope_from_the_protocol_decodes_and_re_encodes_identically() {
    let env = decode(&json(), PROTOCOL_SEND_MESSAGE);
    assert_send_message(&env);
    let payload: SendMessage = env.decode_payload().unwrap();
    let frame = json().encode(&env.ty, &env.meta, Some(&payload)).unwrap();
    assert_eq!(std::str::from_utf8(&frame).unwrap(), PROTOCOL_SEND_MESSAGE);
    // Text frame for JSON, binary for MessagePack.
    assert_eq!(json().format(), Format::Json);
    assert!(json().format().is_text());
    assert!(!msgpack().format().is_text());
}

#[test]
fn json_from_python_json_dumps_and_pretty_printers_decodes() {
    let python = r#"{"type": "SEND_MESSAGE", "meta": {"correlationId": "r-17", "timestamp": 1764160000000}, "payload": {"roomId": "lobby", "text": "hi"}}"#;
    assert_send_message(&decode(&json(), python));
    let pretty = "{\n  \"type\": \"SEND_MESSAGE\",\n  \"meta\": {\n    \"correlationId\": \"r-17\",\n    \"timestamp\": 1764160000000\n  },\n  \"payload\": {\n    \"roomId\": \"lobby\",\n    \"text\": \"hi\"\n  }\n}\n";
    assert_send_message(&decode(&json(), pretty));
    // JSON.stringify / json.dumps(ensure_ascii=True) escapes: the same strings.
    let escaped = r#"{"type":"SEND_\u004dESSAGE","meta":{"correlationId":"r-17","timestamp":1764160000000},"payload":{"roomId":"lobby","text":"h\u0069"}}"#;
    assert_send_message(&decode(&json(), escaped));
    // JSON over a binary frame is the same bytes.
    assert_send_message(
        &json()
            .decode(Bytes::from_static(PROTOCOL_SEND_MESSAGE.as_bytes()))
            .unwrap(),
    );
}

#[test]
fn json_compressed_envelope_from_python_gzip_unwraps() {
    // base64.b64encode(gzip.compress(PROTOCOL_SEND_MESSAGE, mtime=0)), the
    // shape of docs/PROTOCOL.md §3's example.
    let data = "H4sIAAAAAAACA6tWKqksSFWyUgp29XOJ93UNDnZ0d1XSUcpNLUlUsqpWSs4vKkrNSSzJzM/zTAEqK9I1NAdKl2TmphaXJOYWKFkZmpuZGJoZQECtjlJBYmVOfmIKSHNRfn4uWFdOflJSJUhbakUJkJuRqVRbCwC6soBHegAAAA==";
    let frame =
        format!(r#"{{"type":"COMPRESSED","payload":{{"encoding":"gzip","data":"{data}"}}}}"#);
    assert_send_message(&decode(&json(), &frame));
    // Payload keys in the other order, as a hand-built object might have them.
    let frame =
        format!(r#"{{"payload":{{"data":"{data}","encoding":"gzip"}},"type":"COMPRESSED"}}"#);
    assert_send_message(&decode(&json(), &frame));
}

#[test]
fn json_compressed_envelope_we_send_has_the_protocol_shape() {
    let codec = WireCodec::from_name("json+gzip").unwrap();
    let text = "hi ".repeat(1000);
    let payload = SendMessage {
        room_id: "lobby".into(),
        text,
    };
    let frame = codec
        .encode("SEND_MESSAGE", &send_message_meta(), Some(&payload))
        .unwrap();
    let wrapper: Value = serde_json::from_slice(&frame).unwrap();
    let object = wrapper.as_object().unwrap();
    assert_eq!(object.len(), 2, "no meta on the wrapper: {wrapper}");
    assert_eq!(wrapper["type"], "COMPRESSED");
    assert_eq!(wrapper["payload"]["encoding"], "gzip");
    assert_eq!(wrapper["payload"].as_object().unwrap().len(), 2);
    let data = wrapper["payload"]["data"].as_str().unwrap();
    assert!(data.starts_with("H4sI"), "gzip magic in base64: {data:.12}");
    assert_eq!(data.len() % 4, 0, "padded base64");
}

#[test]
fn heartbeat_envelopes_of_the_protocol() {
    let env = decode(&json(), r#"{"type":"__heartbeat"}"#);
    assert_eq!(env.ty, "__heartbeat");
    assert!(env.meta.is_empty());
    assert!(env.payload.is_none());
    let meta = Meta {
        timestamp: Some(1_764_160_000_000),
        ..Meta::default()
    };
    let ack = json().encode::<()>("__heartbeat_ack", &meta, None).unwrap();
    assert_eq!(
        ack.as_ref(),
        br#"{"type":"__heartbeat_ack","meta":{"timestamp":1764160000000}}"#
    );
    let ack = msgpack()
        .encode::<()>("__heartbeat_ack", &meta, None)
        .unwrap();
    let env = decode(&msgpack(), &ack);
    assert_eq!(
        (env.ty.as_str(), env.meta.timestamp),
        ("__heartbeat_ack", Some(1_764_160_000_000))
    );
    // And the fixmap-of-1 Python writes for {"type": "__heartbeat"}.
    assert_eq!(
        decode(&msgpack(), hex("81a474797065ab5f5f686561727462656174")).ty,
        "__heartbeat"
    );
}

#[test]
fn error_example_of_the_protocol_decodes_into_error_payload_and_re_encodes() {
    let env = decode(&json(), PROTOCOL_ERROR);
    assert_eq!(env.ty, "ERROR");
    assert_eq!(env.meta, send_message_meta());
    let error: ErrorPayload = env.decode_payload().unwrap();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert_eq!(error.message, "payload.text: expected a string");
    assert_eq!(error.details, Some(json!({"path": "payload.text"})));
    assert!(!error.retryable);
    assert_eq!(error.retry_after_ms, None);

    let frame = json().encode("ERROR", &env.meta, Some(&error)).unwrap();
    let ours: Value = serde_json::from_slice(&frame).unwrap();
    let theirs: Value = serde_json::from_str(PROTOCOL_ERROR).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(std::str::from_utf8(&frame).unwrap(), PROTOCOL_ERROR);

    // The same message in MessagePack: Python's bytes decode to the same
    // error, and ours are Python's bytes.
    let env = decode(&msgpack(), hex(PYTHON_ERROR));
    assert_eq!(env.decode_payload::<ErrorPayload>().unwrap(), error);
    let frame = msgpack().encode("ERROR", &env.meta, Some(&error)).unwrap();
    assert_eq!(frame.as_ref(), hex(PYTHON_ERROR).as_slice());
}

#[test]
fn error_payload_with_retry_after_and_an_application_code_round_trips() {
    let theirs = json!({
        "type": "ERROR",
        "payload": {"code": "RESOURCE_EXHAUSTED", "message": "slow down", "retryable": true, "retryAfterMs": 250}
    });
    let env = decode(&json(), serde_json::to_vec(&theirs).unwrap());
    let error: ErrorPayload = env.decode_payload().unwrap();
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert_eq!(error.retry_after_ms, Some(250));
    let frame = json()
        .encode("ERROR", &Meta::default(), Some(&error))
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&frame).unwrap(), theirs);

    let custom = json!({"type": "ERROR", "payload": {"code": "ROOM_FULL", "message": "full"}});
    let env = decode(&json(), serde_json::to_vec(&custom).unwrap());
    let error: ErrorPayload = env.decode_payload().unwrap();
    assert_eq!(error.code.as_str(), "ROOM_FULL");
    assert!(!error.retryable, "retryable defaults to false when absent");
}
