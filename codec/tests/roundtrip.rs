//! Property tests: encode → decode is the identity for every codec
//! (`json`, `msgpack`, `json+gzip`, `msgpack+gzip`), and gzip kicks in exactly
//! at the compression threshold.

use bytes::Bytes;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signalbox_codec::{COMPRESSED_TYPE, Codec, CodecLimits, Json, Meta, MsgPack, WireCodec};

/// A payload exercising the cases docs/PROTOCOL.md §1 says must round-trip exactly.
/// `bin` comes first so that the MessagePack test can find its marker by
/// walking the map from its start.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    #[serde(with = "serde_bytes")]
    bin: Vec<u8>,
    text: String,
    unsigned: u64,
    signed: i64,
    small: u8,
    float: f64,
    floats: Vec<f64>,
    nested: Vec<Vec<i32>>,
    maybe: Option<String>,
    maybe_list: Option<Vec<Option<u32>>>,
    inner: Inner,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inner {
    room_id: String,
    flag: bool,
}

/// Field-by-field equality, comparing floats by their bits so that `-0.0`
/// and `0.0` (equal under `==`) are told apart.
fn same_payload(a: &Payload, b: &Payload) -> bool {
    a.bin == b.bin
        && a.text == b.text
        && a.unsigned == b.unsigned
        && a.signed == b.signed
        && a.small == b.small
        && a.float.to_bits() == b.float.to_bits()
        && a.floats.len() == b.floats.len()
        && a.floats
            .iter()
            .zip(&b.floats)
            .all(|(x, y)| x.to_bits() == y.to_bits())
        && a.nested == b.nested
        && a.maybe == b.maybe
        && a.maybe_list == b.maybe_list
        && a.inner == b.inner
}

const CODECS: [&str; 4] = ["json", "msgpack", "json+gzip", "msgpack+gzip"];

fn codec(name: &str, compress_threshold: usize) -> WireCodec {
    WireCodec::from_name(name)
        .unwrap()
        .with_limits(CodecLimits {
            compress_threshold,
            ..CodecLimits::default()
        })
}

/// The envelope's type as sent, without unwrapping a compressed envelope.
fn wire_type(codec: &WireCodec, frame: &Bytes) -> String {
    let env = if codec.format().is_text() {
        Json::decode_envelope(frame).unwrap()
    } else {
        MsgPack::decode_envelope(frame).unwrap()
    };
    env.ty
}

fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
        Just(-0.0),
        Just(9_007_199_254_740_993.0),
    ]
}

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(u64::MAX),
        Just((1 << 53) + 1),
        (1u64 << 53)..=u64::MAX,
        0..=300u64,
    ]
}

fn extreme_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-(1 << 53) - 1),
        -300..=300i64,
    ]
}

/// A message type of 1..=128 bytes of arbitrary characters (control
/// characters, quotes and non-ASCII included).
fn message_type() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 1..=128).prop_map(|chars| {
            let mut ty = String::new();
            for c in chars {
                if ty.len() + c.len_utf8() > 128 {
                    break;
                }
                ty.push(c);
            }
            ty
        }),
        "[A-Z_]{1,128}",
        Just("x".repeat(128)),
        Just("€".repeat(42) + "ab"),
    ]
    .prop_filter("COMPRESSED is the wrapper's type", |ty| {
        ty != COMPRESSED_TYPE
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        extreme_u64().prop_map(Value::from),
        extreme_i64().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn extra_meta() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    proptest::collection::btree_map(
        ".{0,40}".prop_filter("known meta keys are not extra", |k| {
            !matches!(k.as_str(), "correlationId" | "timestamp" | "clientId")
        }),
        json_value(),
        0..5,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn meta() -> impl Strategy<Value = Meta> {
    (
        proptest::option::of(".{0,64}"),
        proptest::option::of(extreme_u64()),
        proptest::option::of("[a-zA-Z0-9-]{0,32}"),
        extra_meta(),
    )
        .prop_map(|(correlation_id, timestamp, client_id, extra)| Meta {
            correlation_id,
            timestamp,
            client_id,
            extra,
        })
}

fn payload() -> impl Strategy<Value = Payload> {
    (
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            ".{0,200}",
            extreme_u64(),
            extreme_i64(),
            any::<u8>(),
            finite_f64(),
            proptest::collection::vec(finite_f64(), 0..8),
        ),
        (
            proptest::collection::vec(proptest::collection::vec(any::<i32>(), 0..5), 0..5),
            proptest::option::of(".{0,20}"),
            proptest::option::of(proptest::collection::vec(
                proptest::option::of(any::<u32>()),
                0..6,
            )),
            ".{0,20}",
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (bin, text, unsigned, signed, small, float, floats),
                (nested, maybe, maybe_list, room_id, flag),
            )| {
                Payload {
                    bin,
                    text,
                    unsigned,
                    signed,
                    small,
                    float,
                    floats,
                    nested,
                    maybe,
                    maybe_list,
                    inner: Inner { room_id, flag },
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every codec gives back the type, meta and payload it was given, and a
    /// `+gzip` codec with a threshold of 1 byte really compresses.
    #[test]
    fn encode_then_decode_is_the_identity(ty in message_type(), meta in meta(), payload in payload()) {
        for name in CODECS {
            let codec = codec(name, 1);
            let frame = codec.encode(&ty, &meta, Some(&payload)).unwrap();
            let expected_wire_type = if codec.gzip() { COMPRESSED_TYPE } else { ty.as_str() };
            prop_assert_eq!(wire_type(&codec, &frame), expected_wire_type, "{}", name);
            let env = codec.decode(frame).unwrap();
            prop_assert_eq!(&env.ty, &ty, "{}", name);
            prop_assert_eq!(&env.meta, &meta, "{}", name);
            let back: Payload = env.decode_payload().unwrap();
            prop_assert!(same_payload(&back, &payload), "{}: {:?} != {:?}", name, back, payload);
        }
    }

    /// An envelope without payload decodes without one, in every codec.
    #[test]
    fn absent_payload_stays_absent(ty in message_type(), meta in meta()) {
        for name in CODECS {
            let codec = codec(name, 1);
            let frame = codec.encode::<()>(&ty, &meta, None).unwrap();
            let env = codec.decode(frame).unwrap();
            prop_assert_eq!(&env.ty, &ty, "{}", name);
            prop_assert_eq!(&env.meta, &meta, "{}", name);
            prop_assert!(env.payload.is_none(), "{}", name);
            let back: Option<Payload> = env.decode_payload().unwrap();
            prop_assert!(back.is_none(), "{}", name);
        }
    }

    /// Extended meta: keys other than the three known ones, with any JSON
    /// value, reach the receiver unchanged, in every codec.
    #[test]
    fn extra_meta_keys_survive(
        extra in extra_meta().prop_filter("at least one extra key", |m| !m.is_empty()),
        correlation_id in proptest::option::of("[a-z0-9-]{1,16}"),
    ) {
        let meta = Meta { correlation_id, extra: extra.clone(), ..Meta::default() };
        for name in CODECS {
            let codec = codec(name, 1);
            let frame = codec.encode("EXT", &meta, Some(&1u8)).unwrap();
            let env = codec.decode(frame).unwrap();
            prop_assert_eq!(&env.meta.extra, &extra, "{}", name);
            prop_assert_eq!(&env.meta.correlation_id, &meta.correlation_id, "{}", name);
            prop_assert_eq!(env.meta.timestamp, None);
            prop_assert_eq!(env.meta.client_id.as_deref(), None);
        }
    }

    /// `+gzip` compresses a message whose encoding is at least the threshold
    /// and never one below it; the plain codecs never compress.
    #[test]
    fn compression_starts_exactly_at_the_threshold(ty in message_type(), meta in meta(), payload in payload()) {
        for format in ["json", "msgpack"] {
            let plain = codec(format, 1).encode(&ty, &meta, Some(&payload)).unwrap();
            prop_assert_eq!(wire_type(&codec(format, 1), &plain), ty.as_str());
            let gz = format!("{format}+gzip");

            let at = codec(&gz, plain.len());
            let frame = at.encode(&ty, &meta, Some(&payload)).unwrap();
            prop_assert_eq!(wire_type(&at, &frame), COMPRESSED_TYPE, "{} at threshold", gz);
            // Compressed envelopes are accepted from any client.
            let env = codec(format, 1).decode(frame).unwrap();
            prop_assert_eq!(&env.ty, &ty);

            let above = codec(&gz, plain.len() + 1);
            let frame = above.encode(&ty, &meta, Some(&payload)).unwrap();
            prop_assert_eq!(&frame, &plain, "{} below threshold must send the plain encoding", gz);

            let opt_out = at.encode_with(&ty, &meta, Some(&payload), false).unwrap();
            prop_assert_eq!(&opt_out, &plain, "{} with compress=false", gz);
        }
    }

    /// MessagePack `bin` stays `bin` on the wire (not an array of integers)
    /// and comes back byte for byte.
    #[test]
    fn msgpack_bytes_travel_as_bin(payload in payload()) {
        for name in ["msgpack", "msgpack+gzip"] {
            let codec = codec(name, 1);
            let frame = codec.encode("BIN", &Meta::default(), Some(&payload)).unwrap();
            let env = codec.decode(frame).unwrap();
            let raw = env.payload.as_ref().unwrap().as_bytes();
            let mut rd = raw;
            let fields = rmp::decode::read_map_len(&mut rd).unwrap();
            prop_assert_eq!(fields, 11);
            let (key, rest) = rmp::decode::read_str_from_slice(rd).unwrap();
            prop_assert_eq!(key, "bin");
            let at = raw.len() - rest.len();
            let mut rd = rest;
            let marker = rmp::decode::read_marker(&mut rd).unwrap();
            prop_assert!(
                matches!(marker, rmp::Marker::Bin8 | rmp::Marker::Bin16 | rmp::Marker::Bin32),
                "{}: bytes encoded with marker {:?}", name, marker
            );
            let mut expected = Vec::new();
            rmp::encode::write_bin(&mut expected, &payload.bin).unwrap();
            prop_assert!(raw[at..].starts_with(&expected), "{}: bin value differs", name);
            let back: Payload = env.decode_payload().unwrap();
            prop_assert_eq!(&back.bin, &payload.bin);
        }
    }
}

#[test]
fn integers_above_2_pow_53_and_u64_i64_extremes_are_exact() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ints {
        a: u64,
        b: i64,
        c: i64,
        d: u64,
    }
    let ints = Ints {
        a: u64::MAX,
        b: i64::MIN,
        c: i64::MAX,
        d: (1 << 53) + 1,
    };
    for name in CODECS {
        let codec = codec(name, 1);
        let meta = Meta {
            timestamp: Some(u64::MAX),
            ..Meta::default()
        };
        let env = codec
            .decode(codec.encode("INTS", &meta, Some(&ints)).unwrap())
            .unwrap();
        assert_eq!(env.meta.timestamp, Some(u64::MAX), "{name}");
        assert_eq!(env.decode_payload::<Ints>().unwrap(), ints, "{name}");
    }
    let json = codec("json", 1)
        .encode("INTS", &Meta::default(), Some(&ints))
        .unwrap();
    let text = std::str::from_utf8(&json).unwrap();
    assert!(text.contains("18446744073709551615"), "{text}");
    assert!(text.contains("9007199254740993"), "{text}");
}

#[test]
fn json_floats_parse_back_to_the_same_bits() {
    // Values serde_json's default (non-`float_roundtrip`) parser reads back
    // one ulp off.
    let floats = [
        1.4603280784734967e-137,
        2.120444692633165e-308,
        0.1,
        f64::MAX,
        5e-324,
    ];
    let codec = codec("json", 1);
    for f in floats {
        let meta = Meta {
            extra: [("f".to_owned(), Value::from(f))].into_iter().collect(),
            ..Meta::default()
        };
        let env = codec
            .decode(codec.encode("F", &meta, Some(&f)).unwrap())
            .unwrap();
        assert_eq!(
            env.decode_payload::<f64>().unwrap().to_bits(),
            f.to_bits(),
            "payload {f:e}"
        );
        assert_eq!(
            env.meta.extra["f"].as_f64().unwrap().to_bits(),
            f.to_bits(),
            "meta {f:e}"
        );
    }
}

#[test]
fn raw_payload_is_spliced_within_a_format_and_transcoded_across() {
    use signalbox_codec::{Meta, WireCodec};
    let json = WireCodec::from_name("json").unwrap();
    let mp = WireCodec::from_name("msgpack").unwrap();
    let frame = bytes::Bytes::from_static(
        br#"{"type":"ECHO","payload":{"big":18446744073709551615,"f":0.1,"s":"\u00e9"}}"#,
    );
    let env = json.decode(frame).unwrap();
    let raw = env.payload.as_ref().unwrap();
    let meta = Meta {
        correlation_id: Some("r-1".into()),
        ..Meta::default()
    };
    let out = json.encode_raw("ECHO", &meta, Some(raw), false).unwrap();
    assert_eq!(
        &out[..],
        &br#"{"type":"ECHO","meta":{"correlationId":"r-1"},"payload":{"big":18446744073709551615,"f":0.1,"s":"\u00e9"}}"#[..]
    );
    // Across formats the value survives.
    let out = mp.encode_raw("ECHO", &meta, Some(raw), false).unwrap();
    let back = mp.decode(out).unwrap();
    let v: serde_json::Value = back.decode_payload().unwrap();
    assert_eq!(v["big"], serde_json::json!(18446744073709551615u64));
    assert_eq!(v["s"], "é");
    // A msgpack bin stays a bin within msgpack.
    let mut inner = Vec::new();
    rmp::encode::write_map_len(&mut inner, 2).unwrap();
    rmp::encode::write_str(&mut inner, "type").unwrap();
    rmp::encode::write_str(&mut inner, "ECHO").unwrap();
    rmp::encode::write_str(&mut inner, "payload").unwrap();
    rmp::encode::write_bin(&mut inner, &[0, 1, 255]).unwrap();
    let env = mp.decode(bytes::Bytes::from(inner.clone())).unwrap();
    let out = mp
        .encode_raw("ECHO", &Meta::default(), env.payload.as_ref(), false)
        .unwrap();
    assert_eq!(&out[..], &inner[..]);
    // No payload stays no payload.
    let out = json
        .encode_raw("ECHO", &Meta::default(), None, false)
        .unwrap();
    assert_eq!(&out[..], br#"{"type":"ECHO"}"#);
}
