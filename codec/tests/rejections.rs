//! Every way a frame is rejected, one test per behaviour, for both formats
//! where it applies: the [`DecodeError`] variant, the correlation id that
//! could still be read, and the paths of [`PayloadError`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::json;
use signalbox_codec::{
    CodecLimits, DecodeError, DecodeFailure, Envelope, ErrorCode, Meta, PayloadError, WireCodec,
};
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

fn json() -> WireCodec {
    WireCodec::from_name("json").unwrap()
}

fn msgpack() -> WireCodec {
    WireCodec::from_name("msgpack").unwrap()
}

fn with_max(codec: WireCodec, max_message_size: usize) -> WireCodec {
    codec.with_limits(CodecLimits {
        max_message_size,
        ..CodecLimits::default()
    })
}

fn decode(codec: &WireCodec, frame: impl AsRef<[u8]>) -> Result<Envelope, DecodeFailure> {
    codec.decode(Bytes::copy_from_slice(frame.as_ref()))
}

/// Decodes a frame that must be rejected.
#[track_caller]
fn reject(codec: &WireCodec, frame: impl AsRef<[u8]>) -> DecodeFailure {
    match decode(codec, frame.as_ref()) {
        Ok(env) => panic!(
            "{} accepted {:?}: {env:?}",
            codec.name(),
            String::from_utf8_lossy(frame.as_ref())
        ),
        Err(failure) => failure,
    }
}

/// MessagePack encoding of any serializable value (structs as maps).
fn mp<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap()
}

/// A MessagePack string.
fn mp_str(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_str(&mut out, s).unwrap();
    out
}

/// A MessagePack map with string keys and already encoded values, in order
/// (so that duplicates and unusual orders can be written).
fn mp_map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, u32::try_from(entries.len()).unwrap()).unwrap();
    for (key, value) in entries {
        rmp::encode::write_str(&mut out, key).unwrap();
        out.extend_from_slice(value);
    }
    out
}

fn mp_bin(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_bin(&mut out, data).unwrap();
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A JSON compressed envelope around `gzip_bytes` (not necessarily valid gzip).
fn json_wrapper(gzip_bytes: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"type":"COMPRESSED","payload":{{"encoding":"gzip","data":"{}"}}}}"#,
        BASE64.encode(gzip_bytes)
    )
    .into_bytes()
}

/// A MessagePack compressed envelope around `gzip_bytes`.
fn msgpack_wrapper(gzip_bytes: &[u8]) -> Vec<u8> {
    mp_map(&[
        ("type", mp_str("COMPRESSED")),
        (
            "payload",
            mp_map(&[("encoding", mp_str("gzip")), ("data", mp_bin(gzip_bytes))]),
        ),
    ])
}

#[track_caller]
fn assert_no_position(message: &str) {
    assert!(
        !message.contains(" at line "),
        "position leaked: {message:?}"
    );
    assert!(
        !message.contains(" column "),
        "position leaked: {message:?}"
    );
}

// ------------------------------------------------------------ frame size

#[test]
fn frame_over_the_maximum_size_is_too_large() {
    for codec in [json(), msgpack()] {
        let frame = codec
            .encode("A", &Meta::default(), Some(&"x".repeat(100)))
            .unwrap();
        let size = frame.len();
        let failure = reject(&with_max(codec, size - 1), &frame);
        assert_eq!(
            failure.error,
            DecodeError::TooLarge {
                size,
                limit: size - 1
            },
            "{}",
            codec.name()
        );
        // Exactly the maximum is fine.
        decode(&with_max(codec, size), &frame).unwrap();
    }
}

// ---------------------------------------------------------------- syntax

#[test]
fn json_malformed_bytes_are_a_syntax_error() {
    let frames: [&[u8]; 8] = [
        b"",
        b"   ",
        b"{",
        br#"{"type":"A""#,
        br#"{"type":"A",}"#,
        br#"{"type":"A" "payload":1}"#,
        br#"{"type":"A"} {}"#,
        b"{\"type\":\"A\",\"payload\":\"\xff\"}",
    ];
    for frame in frames {
        let failure = reject(&json(), frame);
        let DecodeError::Syntax(message) = &failure.error else {
            panic!("{:?}: {:?}", String::from_utf8_lossy(frame), failure.error);
        };
        assert_no_position(message);
        assert_eq!(failure.correlation_id, None);
    }
}

#[test]
fn json_syntax_error_in_payload_is_a_syntax_error() {
    let failure = reject(&json(), br#"{"type":"A","payload":{"text":}}"#);
    assert!(
        matches!(failure.error, DecodeError::Syntax(_)),
        "{:?}",
        failure.error
    );
}

#[test]
fn msgpack_empty_frame_is_a_syntax_error() {
    assert!(matches!(
        reject(&msgpack(), b"").error,
        DecodeError::Syntax(_)
    ));
}

#[test]
fn msgpack_trailing_bytes_after_the_envelope_are_a_syntax_error() {
    let mut frame = mp_map(&[("type", mp_str("A"))]);
    frame.push(0xc0);
    assert_eq!(
        reject(&msgpack(), &frame).error,
        DecodeError::Syntax("trailing bytes after the envelope".into())
    );
}

#[test]
fn msgpack_non_string_envelope_key_is_a_syntax_error() {
    // {1: "A"}
    let frame = [0x81, 0x01, 0xa1, b'A'];
    assert!(matches!(
        reject(&msgpack(), frame).error,
        DecodeError::Syntax(_)
    ));
}

// --------------------------------------------------------- not an object

#[test]
fn json_top_level_array_string_number_is_not_an_object() {
    for frame in [
        r#"[{"type":"A"}]"#,
        r#""SEND_MESSAGE""#,
        "5",
        "-1.5",
        "null",
        "true",
        "  [1]",
    ] {
        assert_eq!(
            reject(&json(), frame).error,
            DecodeError::NotAnObject,
            "{frame}"
        );
    }
}

#[test]
fn msgpack_top_level_array_string_number_is_not_an_object() {
    let frames = [
        mp(&json!([{"type": "A"}])),
        mp("SEND_MESSAGE"),
        mp(&5u8),
        mp(&-1.5f64),
        vec![0xc0],
    ];
    for frame in frames {
        assert_eq!(
            reject(&msgpack(), &frame).error,
            DecodeError::NotAnObject,
            "{frame:x?}"
        );
    }
}

// ------------------------------------------------------- unknown / dupes

#[test]
fn unknown_top_level_field_is_rejected_and_named_with_its_correlation_id() {
    let json_frame = r#"{"type":"A","meta":{"correlationId":"r-1"},"payload":1,"extra":true}"#;
    let mp_frame = mp_map(&[
        ("type", mp_str("A")),
        ("extra", mp(&true)),
        ("meta", mp(&json!({"correlationId": "r-1"}))),
    ]);
    for (codec, frame) in [
        (json(), json_frame.as_bytes().to_vec()),
        (msgpack(), mp_frame),
    ] {
        let failure = reject(&codec, &frame);
        assert_eq!(
            failure.error,
            DecodeError::UnknownField("extra".into()),
            "{}",
            codec.name()
        );
        assert_eq!(
            failure.correlation_id.as_deref(),
            Some("r-1"),
            "{}",
            codec.name()
        );
        assert_eq!(failure.error.code(), ErrorCode::InvalidArgument);
    }
}

#[test]
fn unknown_field_name_is_cut_to_64_characters() {
    let key = "k".repeat(1000);
    let json_frame = format!(r#"{{"{key}":1,"type":"A"}}"#);
    let mp_frame = mp_map(&[(&key, mp(&1u8)), ("type", mp_str("A"))]);
    for (codec, frame) in [(json(), json_frame.into_bytes()), (msgpack(), mp_frame)] {
        assert_eq!(
            reject(&codec, &frame).error,
            DecodeError::UnknownField("k".repeat(64))
        );
    }
}

#[test]
fn duplicate_top_level_field_is_rejected() {
    let cases = [
        (
            "type",
            r#"{"type":"A","type":"B"}"#,
            mp_map(&[("type", mp_str("A")), ("type", mp_str("B"))]),
        ),
        (
            "meta",
            r#"{"type":"A","meta":{},"meta":{}}"#,
            mp_map(&[
                ("type", mp_str("A")),
                ("meta", mp(&json!({}))),
                ("meta", mp(&json!({}))),
            ]),
        ),
        (
            "payload",
            r#"{"type":"A","payload":1,"payload":2}"#,
            mp_map(&[
                ("type", mp_str("A")),
                ("payload", mp(&1u8)),
                ("payload", mp(&2u8)),
            ]),
        ),
    ];
    for (field, json_frame, mp_frame) in cases {
        for (codec, frame) in [
            (json(), json_frame.as_bytes().to_vec()),
            (msgpack(), mp_frame),
        ] {
            assert_eq!(
                reject(&codec, &frame).error,
                DecodeError::DuplicateField(field.into()),
                "{} {field}",
                codec.name()
            );
        }
    }
}

// ------------------------------------------------------------------ type

#[test]
fn missing_type_is_rejected_with_its_correlation_id() {
    let json_frames = [
        r#"{}"#,
        r#"{"payload":{"type":"A"}}"#,
        r#"{"meta":{"correlationId":"r-2"}}"#,
    ];
    for frame in json_frames {
        assert_eq!(
            reject(&json(), frame).error,
            DecodeError::MissingType,
            "{frame}"
        );
    }
    let mp_frames = [
        mp_map(&[]),
        mp_map(&[("payload", mp(&json!({"type": "A"})))]),
        mp_map(&[("meta", mp(&json!({"correlationId": "r-2"})))]),
    ];
    for frame in &mp_frames {
        assert_eq!(reject(&msgpack(), frame).error, DecodeError::MissingType);
    }
    assert_eq!(
        reject(&json(), json_frames[2]).correlation_id.as_deref(),
        Some("r-2")
    );
    assert_eq!(
        reject(&msgpack(), &mp_frames[2]).correlation_id.as_deref(),
        Some("r-2")
    );
}

#[test]
fn empty_type_is_rejected() {
    assert_eq!(
        reject(&json(), r#"{"type":""}"#).error,
        DecodeError::InvalidType("must not be empty")
    );
    let frame = mp_map(&[("type", mp_str(""))]);
    assert_eq!(
        reject(&msgpack(), frame).error,
        DecodeError::InvalidType("must not be empty")
    );
}

#[test]
fn type_longer_than_128_bytes_is_rejected_counting_bytes_not_characters() {
    let too_long = [
        "A".repeat(129),
        "€".repeat(43), // 43 characters, 129 bytes
    ];
    for ty in &too_long {
        let json_frame = serde_json::to_vec(&json!({ "type": ty })).unwrap();
        let mp_frame = mp_map(&[("type", mp_str(ty))]);
        for (codec, frame) in [(json(), json_frame), (msgpack(), mp_frame)] {
            assert_eq!(
                reject(&codec, &frame).error,
                DecodeError::InvalidType("longer than 128 bytes"),
                "{}",
                codec.name()
            );
        }
    }
    // 128 bytes is the maximum, not past it.
    for ty in ["A".repeat(128), "€".repeat(42) + "ab"] {
        let json_frame = serde_json::to_vec(&json!({ "type": ty })).unwrap();
        assert_eq!(decode(&json(), json_frame).unwrap().ty, ty);
        assert_eq!(
            decode(&msgpack(), mp_map(&[("type", mp_str(&ty))]))
                .unwrap()
                .ty,
            ty
        );
    }
}

#[test]
fn type_that_is_not_a_string_is_rejected_with_its_correlation_id() {
    for value in [
        json!(5),
        json!(null),
        json!(["A"]),
        json!({"A": 1}),
        json!(true),
    ] {
        let frame = json!({"meta": {"correlationId": "r-3"}, "type": value});
        let json_frame = serde_json::to_vec(&frame).unwrap();
        let mp_frame = mp_map(&[
            ("meta", mp(&json!({"correlationId": "r-3"}))),
            ("type", mp(&value)),
        ]);
        for (codec, frame) in [(json(), json_frame), (msgpack(), mp_frame)] {
            let failure = reject(&codec, &frame);
            assert_eq!(
                failure.error,
                DecodeError::InvalidType("must be a string"),
                "{} {value}",
                codec.name()
            );
            assert_eq!(
                failure.correlation_id.as_deref(),
                Some("r-3"),
                "{} {value}",
                codec.name()
            );
        }
    }
    // MessagePack bin is not a string either.
    let frame = mp_map(&[("type", mp_bin(b"A"))]);
    assert_eq!(
        reject(&msgpack(), frame).error,
        DecodeError::InvalidType("must be a string")
    );
}

#[test]
fn too_long_type_still_reports_the_correlation_id() {
    let json_frame =
        serde_json::to_vec(&json!({"type": "A".repeat(200), "meta": {"correlationId": "r-4"}}))
            .unwrap();
    let mp_frame = mp_map(&[
        ("type", mp_str(&"A".repeat(200))),
        ("meta", mp(&json!({"correlationId": "r-4"}))),
    ]);
    for (codec, frame) in [(json(), json_frame), (msgpack(), mp_frame)] {
        assert_eq!(
            reject(&codec, &frame).correlation_id.as_deref(),
            Some("r-4"),
            "{}",
            codec.name()
        );
    }
}

// ------------------------------------------------------------------ meta

#[track_caller]
fn assert_invalid_meta(codec: &WireCodec, frame: &[u8]) -> DecodeFailure {
    let failure = reject(codec, frame);
    let DecodeError::InvalidMeta(message) = &failure.error else {
        panic!(
            "{}: {:?} for {:?}",
            codec.name(),
            failure.error,
            String::from_utf8_lossy(frame)
        );
    };
    assert_no_position(message);
    failure
}

#[test]
fn meta_that_is_not_an_object_is_invalid_meta() {
    for meta in [
        json!([]),
        json!(["correlationId", "r-5"]),
        json!("r-5"),
        json!(5),
        json!(true),
    ] {
        let json_frame = serde_json::to_vec(&json!({"type": "A", "meta": meta})).unwrap();
        assert_invalid_meta(&json(), &json_frame);
        assert_invalid_meta(
            &msgpack(),
            &mp_map(&[("type", mp_str("A")), ("meta", mp(&meta))]),
        );
    }
}

#[test]
fn correlation_id_that_is_not_a_string_is_invalid_meta() {
    for id in [json!(17), json!(["r-5"]), json!({"id": "r-5"}), json!(true)] {
        let meta = json!({ "correlationId": id });
        let json_frame = serde_json::to_vec(&json!({"type": "A", "meta": meta})).unwrap();
        let failure = assert_invalid_meta(&json(), &json_frame);
        assert_eq!(failure.correlation_id, None);
        let failure = assert_invalid_meta(
            &msgpack(),
            &mp_map(&[("type", mp_str("A")), ("meta", mp(&meta))]),
        );
        assert_eq!(failure.correlation_id, None);
    }
}

#[test]
fn bad_timestamp_or_client_id_is_invalid_meta_but_keeps_the_correlation_id() {
    let metas = [
        json!({"correlationId": "r-6", "timestamp": -1}),
        json!({"correlationId": "r-6", "timestamp": "yesterday"}),
        json!({"correlationId": "r-6", "timestamp": 1.5}),
        json!({"correlationId": "r-6", "clientId": 42}),
    ];
    for meta in metas {
        let json_frame = serde_json::to_vec(&json!({"type": "A", "meta": meta})).unwrap();
        let failure = assert_invalid_meta(&json(), &json_frame);
        assert_eq!(
            failure.correlation_id.as_deref(),
            Some("r-6"),
            "json {meta}"
        );
        let failure = assert_invalid_meta(
            &msgpack(),
            &mp_map(&[("type", mp_str("A")), ("meta", mp(&meta))]),
        );
        assert_eq!(
            failure.correlation_id.as_deref(),
            Some("r-6"),
            "msgpack {meta}"
        );
    }
}

#[test]
fn duplicate_meta_key_is_invalid_meta() {
    assert_invalid_meta(
        &json(),
        br#"{"type":"A","meta":{"correlationId":"a","correlationId":"b"}}"#,
    );
    let mut meta = Vec::new();
    rmp::encode::write_map_len(&mut meta, 2).unwrap();
    for id in ["a", "b"] {
        rmp::encode::write_str(&mut meta, "correlationId").unwrap();
        rmp::encode::write_str(&mut meta, id).unwrap();
    }
    assert_invalid_meta(
        &msgpack(),
        &mp_map(&[("type", mp_str("A")), ("meta", meta)]),
    );
}

#[test]
fn null_meta_reads_as_empty_meta() {
    let env = decode(&json(), r#"{"type":"A","meta":null}"#).unwrap();
    assert!(env.meta.is_empty());
    let env = decode(
        &msgpack(),
        mp_map(&[("type", mp_str("A")), ("meta", vec![0xc0])]),
    )
    .unwrap();
    assert!(env.meta.is_empty());
}

// ------------------------------------------------------------ compressed

#[test]
fn compressed_envelope_with_unsupported_encoding_is_rejected() {
    let json_frame = format!(
        r#"{{"type":"COMPRESSED","payload":{{"encoding":"deflate","data":"{}"}}}}"#,
        BASE64.encode(gzip(br#"{"type":"A"}"#))
    );
    let mp_frame = mp_map(&[
        ("type", mp_str("COMPRESSED")),
        (
            "payload",
            mp_map(&[
                ("encoding", mp_str("deflate")),
                ("data", mp_bin(&gzip(&mp_map(&[("type", mp_str("A"))])))),
            ]),
        ),
    ]);
    for (codec, frame) in [(json(), json_frame.into_bytes()), (msgpack(), mp_frame)] {
        assert_eq!(
            reject(&codec, &frame).error,
            DecodeError::Compressed("unsupported encoding \"deflate\"".into()),
            "{}",
            codec.name()
        );
    }
}

#[test]
fn json_compressed_data_that_is_not_base64_is_rejected() {
    for data in ["H4sI!!!!", "not base64 at all", "H4sIAAAAAAAA\u{e9}"] {
        let frame =
            format!(r#"{{"type":"COMPRESSED","payload":{{"encoding":"gzip","data":"{data}"}}}}"#);
        let failure = reject(&json(), frame);
        let DecodeError::Compressed(message) = &failure.error else {
            panic!("{:?}", failure.error)
        };
        assert!(message.contains("base64"), "{message}");
    }
}

#[test]
fn json_compressed_data_may_escape_slashes() {
    // Some JSON encoders (PHP's, for one) write "/" as "\/"; it is the same
    // string, so the envelope must unwrap all the same.
    let inner = br#"{"type":"INNER","payload":"????>>>>????>>>>"}"#;
    let mut gz = gzip(inner);
    // Find gzip bytes whose base64 has a '/' (gzip mtime/xfl bytes give
    // freedom: vary the OS byte until one shows up).
    let mut os = 0u8;
    while !BASE64.encode(&gz).contains('/') {
        gz[9] = os;
        os = os.wrapping_add(1);
        assert_ne!(os, 0, "no base64 with '/' found");
    }
    let data = BASE64.encode(&gz).replace('/', "\\/");
    let frame =
        format!(r#"{{"type":"COMPRESSED","payload":{{"encoding":"gzip","data":"{data}"}}}}"#);
    assert_eq!(decode(&json(), frame).unwrap().ty, "INNER");
}

#[test]
fn msgpack_compressed_data_that_is_not_bin_is_rejected() {
    let gz = gzip(&mp_map(&[("type", mp_str("A"))]));
    let frame = mp_map(&[
        ("type", mp_str("COMPRESSED")),
        (
            "payload",
            mp_map(&[
                ("encoding", mp_str("gzip")),
                ("data", mp_str(&BASE64.encode(gz))),
            ]),
        ),
    ]);
    assert!(matches!(
        reject(&msgpack(), frame).error,
        DecodeError::Compressed(_)
    ));
}

#[test]
fn compressed_data_that_is_not_gzip_is_rejected() {
    let mut truncated = gzip(&[b'x'; 4096]);
    truncated.truncate(truncated.len() / 2);
    let garbage: [&[u8]; 3] = [
        b"this is not gzip",
        &[0x1f, 0x8b, 0x08, 0x00, 0xff, 0xff],
        &truncated,
    ];
    for data in garbage {
        for (codec, frame) in [
            (json(), json_wrapper(data)),
            (msgpack(), msgpack_wrapper(data)),
        ] {
            let failure = reject(&codec, &frame);
            let DecodeError::Compressed(message) = &failure.error else {
                panic!("{}: {:?}", codec.name(), failure.error)
            };
            assert!(message.contains("gzip"), "{message}");
        }
    }
}

#[test]
fn compressed_envelope_inside_a_compressed_envelope_is_rejected() {
    let json_inner = json_wrapper(&gzip(br#"{"type":"A"}"#));
    let json_inner = String::from_utf8(json_inner).unwrap().replacen(
        r#""type":"COMPRESSED""#,
        r#""type":"COMPRESSED","meta":{"correlationId":"r-7"}"#,
        1,
    );
    let mp_inner = mp_map(&[
        ("type", mp_str("COMPRESSED")),
        ("meta", mp(&json!({"correlationId": "r-7"}))),
        (
            "payload",
            mp_map(&[
                ("encoding", mp_str("gzip")),
                ("data", mp_bin(&gzip(&mp_map(&[("type", mp_str("A"))])))),
            ]),
        ),
    ]);
    for (codec, frame) in [
        (json(), json_wrapper(&gzip(json_inner.as_bytes()))),
        (msgpack(), msgpack_wrapper(&gzip(&mp_inner))),
    ] {
        let failure = reject(&codec, &frame);
        assert_eq!(
            failure.error,
            DecodeError::Compressed("nested compressed envelope".into()),
            "{}",
            codec.name()
        );
        assert_eq!(
            failure.correlation_id.as_deref(),
            Some("r-7"),
            "{}",
            codec.name()
        );
    }
}

#[test]
fn compressed_wrapper_with_meta_is_rejected() {
    let json_frame = String::from_utf8(json_wrapper(&gzip(br#"{"type":"A"}"#)))
        .unwrap()
        .replacen(
            r#""type":"COMPRESSED""#,
            r#""type":"COMPRESSED","meta":{"timestamp":1}"#,
            1,
        );
    let mp_frame = mp_map(&[
        ("type", mp_str("COMPRESSED")),
        ("meta", mp(&json!({"timestamp": 1}))),
        (
            "payload",
            mp_map(&[
                ("encoding", mp_str("gzip")),
                ("data", mp_bin(&gzip(&mp_map(&[("type", mp_str("A"))])))),
            ]),
        ),
    ]);
    for (codec, frame) in [(json(), json_frame.into_bytes()), (msgpack(), mp_frame)] {
        let failure = reject(&codec, &frame);
        let DecodeError::Compressed(message) = &failure.error else {
            panic!("{:?}", failure.error)
        };
        assert!(message.contains("meta"), "{message}");
    }
}

#[test]
fn compressed_wrapper_without_payload_or_of_the_wrong_shape_is_rejected() {
    let json_frames = [
        r#"{"type":"COMPRESSED"}"#.to_owned(),
        r#"{"type":"COMPRESSED","payload":"H4sI"}"#.to_owned(),
        r#"{"type":"COMPRESSED","payload":{"encoding":"gzip"}}"#.to_owned(),
        format!(
            r#"{{"type":"COMPRESSED","payload":{{"encoding":"gzip","data":"{}","level":9}}}}"#,
            BASE64.encode(gzip(br#"{"type":"A"}"#))
        ),
    ];
    for frame in &json_frames {
        let failure = reject(&json(), frame);
        let DecodeError::Compressed(message) = &failure.error else {
            panic!("{frame}: {:?}", failure.error)
        };
        assert_no_position(message);
    }
    let data = mp_bin(&gzip(&mp_map(&[("type", mp_str("A"))])));
    let mp_frames = [
        mp_map(&[("type", mp_str("COMPRESSED"))]),
        mp_map(&[("type", mp_str("COMPRESSED")), ("payload", data.clone())]),
        mp_map(&[
            ("type", mp_str("COMPRESSED")),
            ("payload", mp_map(&[("encoding", mp_str("gzip"))])),
        ]),
        mp_map(&[
            ("type", mp_str("COMPRESSED")),
            (
                "payload",
                mp_map(&[
                    ("encoding", mp_str("gzip")),
                    ("data", data),
                    ("level", mp(&9u8)),
                ]),
            ),
        ]),
    ];
    for frame in &mp_frames {
        assert!(
            matches!(reject(&msgpack(), frame).error, DecodeError::Compressed(_)),
            "{frame:x?}"
        );
    }
}

#[test]
fn invalid_envelope_inside_a_compressed_wrapper_reports_its_correlation_id() {
    let json_inner = br#"{"type":"A","meta":{"correlationId":"r-8"},"bogus":1}"#;
    let mp_inner = mp_map(&[
        ("type", mp_str("A")),
        ("meta", mp(&json!({"correlationId": "r-8"}))),
        ("bogus", mp(&1u8)),
    ]);
    for (codec, frame) in [
        (json(), json_wrapper(&gzip(json_inner))),
        (msgpack(), msgpack_wrapper(&gzip(&mp_inner))),
    ] {
        let failure = reject(&codec, &frame);
        assert_eq!(
            failure.error,
            DecodeError::UnknownField("bogus".into()),
            "{}",
            codec.name()
        );
        assert_eq!(
            failure.correlation_id.as_deref(),
            Some("r-8"),
            "{}",
            codec.name()
        );
    }
}

/// gzip of 64 MiB of zeros, built in chunks so that the test itself never
/// holds the inflated size.
fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..1024 {
            encoder.write_all(&chunk).unwrap();
        }
        encoder.finish().unwrap()
    })
}

/// The process's peak resident set (Linux), reset to the current one first
/// when `reset`; `None` where /proc is not there.
fn peak_rss(reset: bool) -> Option<usize> {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn gzip_bomb_stops_at_the_limit_fast_and_in_bounded_memory() {
    const LIMIT: usize = 1 << 20;
    let bomb = bomb();
    assert!(
        bomb.len() < LIMIT / 4,
        "the bomb frame itself must fit: {}",
        bomb.len()
    );
    for (codec, frame) in [
        (json(), json_wrapper(bomb)),
        (msgpack(), msgpack_wrapper(bomb)),
    ] {
        let codec = with_max(codec, LIMIT);
        let frame = Bytes::from(frame);
        let before = peak_rss(true);
        let start = Instant::now();
        let failure = codec.decode(frame).unwrap_err();
        let elapsed = start.elapsed();
        let after = peak_rss(false);
        assert_eq!(
            failure.error,
            DecodeError::InflatedTooLarge { limit: LIMIT },
            "{}",
            codec.name()
        );
        assert_eq!(failure.correlation_id, None);
        assert!(
            elapsed < Duration::from_secs(5),
            "{}: took {elapsed:?}",
            codec.name()
        );
        if let (Some(before), Some(after)) = (before, after) {
            // Inflating the whole bomb would touch 64 MiB; the limit allows
            // ~1 MiB (plus buffer growth). Other tests of this binary run
            // alongside, hence the slack.
            let grown = after.saturating_sub(before);
            assert!(
                grown < 24 << 20,
                "{}: peak RSS grew by {} KiB",
                codec.name(),
                grown >> 10
            );
        }
    }
    // The probe itself must see a 64 MiB allocation, or the bound above
    // proves nothing.
    if let Some(before) = peak_rss(true) {
        let touched = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = peak_rss(false).unwrap();
        drop(touched);
        assert!(
            after.saturating_sub(before) >= 48 << 20,
            "peak RSS probe is blind"
        );
    }
}

#[test]
fn compressed_envelope_may_inflate_to_exactly_the_limit() {
    let json_inner =
        |pad: usize| format!(r#"{{"type":"A","payload":"{}"}}"#, "x".repeat(pad)).into_bytes();
    let mp_inner =
        |pad: usize| mp_map(&[("type", mp_str("A")), ("payload", mp_str(&"x".repeat(pad)))]);
    let inners = [(json(), json_inner(5000)), (msgpack(), mp_inner(5000))];
    for (codec, inner) in inners {
        let frame = if codec.format().is_text() {
            json_wrapper(&gzip(&inner))
        } else {
            msgpack_wrapper(&gzip(&inner))
        };
        let at_limit = with_max(codec, inner.len());
        assert_eq!(
            decode(&at_limit, &frame).unwrap().ty,
            "A",
            "{}",
            codec.name()
        );
        let below = with_max(codec, inner.len() - 1);
        assert_eq!(
            reject(&below, &frame).error,
            DecodeError::InflatedTooLarge {
                limit: inner.len() - 1
            },
            "{}",
            codec.name()
        );
    }
}

// --------------------------------------------- MessagePack lengths & markers

fn valid_msgpack_frame() -> Vec<u8> {
    mp_map(&[
        ("type", mp_str("SEND_MESSAGE")),
        (
            "meta",
            mp(&json!({"correlationId": "r-9", "timestamp": 1_764_160_000_000u64})),
        ),
        (
            "payload",
            mp(&json!({"roomId": "lobby", "text": "hi", "n": [1, 2, 3]})),
        ),
    ])
}

#[test]
fn msgpack_every_truncation_of_a_valid_frame_is_rejected() {
    let frame = valid_msgpack_frame();
    decode(&msgpack(), &frame).unwrap();
    let payload_at = frame.windows(8).position(|w| w == b"\xa7payload").unwrap() + 8;
    for len in 0..frame.len() {
        let failure = reject(&msgpack(), &frame[..len]);
        if len >= payload_at {
            // Cut inside the payload: a syntax error, and meta (read
            // before) still gives the correlation id.
            assert!(
                matches!(failure.error, DecodeError::Syntax(_)),
                "{len}: {:?}",
                failure.error
            );
            assert_eq!(failure.correlation_id.as_deref(), Some("r-9"), "{len}");
        }
    }
}

#[test]
fn msgpack_lying_string_length_in_payload_is_a_syntax_error() {
    // str8 announcing 200 bytes, 3 present.
    let frame = mp_map(&[
        ("type", mp_str("A")),
        ("payload", vec![0xd9, 200, b'a', b'b', b'c']),
    ]);
    assert!(matches!(
        reject(&msgpack(), frame).error,
        DecodeError::Syntax(_)
    ));
    // str32 announcing 4 GiB.
    let frame = mp_map(&[
        ("type", mp_str("A")),
        ("payload", vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a']),
    ]);
    assert!(matches!(
        reject(&msgpack(), frame).error,
        DecodeError::Syntax(_)
    ));
}

#[test]
fn msgpack_lying_container_lengths_fail_at_once() {
    let lies: [Vec<u8>; 4] = [
        vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01], // array32 of 4 G elements
        vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'k', 0x01], // map32 of 4 G entries
        vec![0xdc, 0xff, 0xff, 0x01, 0x02],       // array16 of 65535
        vec![0xc6, 0xff, 0xff, 0xff, 0xff, 0x00], // bin32 of 4 GiB
    ];
    for lie in lies {
        let start = Instant::now();
        let frame = mp_map(&[("type", mp_str("A")), ("payload", lie.clone())]);
        assert!(
            matches!(reject(&msgpack(), &frame).error, DecodeError::Syntax(_)),
            "{lie:x?}"
        );
        let frame = mp_map(&[("type", mp_str("A")), ("meta", lie.clone())]);
        assert!(
            matches!(reject(&msgpack(), &frame).error, DecodeError::Syntax(_)),
            "meta {lie:x?}"
        );
        assert!(start.elapsed() < Duration::from_secs(1), "{lie:x?}");
    }
}

#[test]
fn msgpack_envelope_map_claiming_more_entries_than_present_is_a_syntax_error() {
    // map32 of 4 G entries holding one; then a fixmap of 3 holding 2.
    let mut frame = vec![0xdf, 0xff, 0xff, 0xff, 0xff];
    frame.extend(mp_str("type"));
    frame.extend(mp_str("A"));
    assert!(matches!(
        reject(&msgpack(), &frame).error,
        DecodeError::Syntax(_)
    ));
    let mut frame = mp_map(&[("type", mp_str("A")), ("payload", mp(&1u8))]);
    frame[0] = 0x83;
    assert!(matches!(
        reject(&msgpack(), &frame).error,
        DecodeError::Syntax(_)
    ));
}

#[test]
fn msgpack_type_with_a_lying_length_is_rejected() {
    let frame = mp_map(&[("type", vec![0xd9, 100, b'A'])]);
    let failure = reject(&msgpack(), frame);
    assert!(
        matches!(
            failure.error,
            DecodeError::Syntax(_) | DecodeError::InvalidType(_)
        ),
        "{:?}",
        failure.error
    );
}

#[test]
fn msgpack_reserved_marker_0xc1_is_rejected() {
    let frame = mp_map(&[("type", mp_str("A")), ("payload", vec![0x91, 0xc1])]);
    let failure = reject(&msgpack(), frame);
    let DecodeError::Syntax(message) = &failure.error else {
        panic!("{:?}", failure.error)
    };
    assert!(message.contains("0xc1"), "{message}");
    let frame = mp_map(&[
        ("type", mp_str("A")),
        ("meta", vec![0x81, 0xa1, b'k', 0xc1]),
    ]);
    assert!(matches!(
        reject(&msgpack(), frame).error,
        DecodeError::Syntax(_)
    ));
    assert_eq!(reject(&msgpack(), [0xc1]).error, DecodeError::NotAnObject);
}

#[test]
fn every_decode_error_answers_invalid_argument() {
    let errors = [
        DecodeError::TooLarge { size: 2, limit: 1 },
        DecodeError::Syntax("x".into()),
        DecodeError::NotAnObject,
        DecodeError::UnknownField("x".into()),
        DecodeError::DuplicateField("type".into()),
        DecodeError::MissingType,
        DecodeError::InvalidType("x"),
        DecodeError::InvalidMeta("x".into()),
        DecodeError::Compressed("x".into()),
        DecodeError::InflatedTooLarge { limit: 1 },
    ];
    for error in errors {
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error:?}");
    }
}

// -------------------------------------------------------------- payloads

#[derive(Debug, PartialEq, Deserialize, Serialize)]
struct SendMessage {
    #[serde(rename = "roomId")]
    room_id: String,
    text: String,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Batch {
    user: User,
    items: Vec<u32>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct User {
    name: String,
}

/// The same envelope in both formats.
fn both(envelope: &serde_json::Value) -> [(WireCodec, Vec<u8>); 2] {
    [
        (json(), serde_json::to_vec(envelope).unwrap()),
        (msgpack(), mp(envelope)),
    ]
}

#[test]
fn payload_field_of_the_wrong_type_names_the_field() {
    for (codec, frame) in
        both(&json!({"type": "SEND_MESSAGE", "payload": {"roomId": "a", "text": 5}}))
    {
        let env = decode(&codec, &frame).unwrap();
        let err: PayloadError = env.decode_payload::<SendMessage>().unwrap_err();
        assert_eq!(err.path, "payload.text", "{}", codec.name());
        assert!(
            err.message.contains("string"),
            "{}: {}",
            codec.name(),
            err.message
        );
        assert_no_position(&err.message);
        assert_no_position(&err.to_string());
        assert!(err.to_string().starts_with("payload.text: "), "{err}");
    }
}

#[test]
fn payload_error_path_goes_through_nested_structs_and_sequences() {
    let envelope =
        json!({"type": "B", "payload": {"user": {"name": "x"}, "items": [1, 2, "three"]}});
    for (codec, frame) in both(&envelope) {
        let err = decode(&codec, &frame)
            .unwrap()
            .decode_payload::<Batch>()
            .unwrap_err();
        assert_eq!(err.path, "payload.items[2]", "{}", codec.name());
    }
    let envelope = json!({"type": "B", "payload": {"user": {"name": false}, "items": []}});
    for (codec, frame) in both(&envelope) {
        let err = decode(&codec, &frame)
            .unwrap()
            .decode_payload::<Batch>()
            .unwrap_err();
        assert_eq!(err.path, "payload.user.name", "{}", codec.name());
    }
    let envelope = json!({"type": "B", "payload": [1, 2, -3]});
    for (codec, frame) in both(&envelope) {
        let err = decode(&codec, &frame)
            .unwrap()
            .decode_payload::<Vec<u32>>()
            .unwrap_err();
        assert_eq!(err.path, "payload[2]", "{}", codec.name());
    }
}

#[test]
fn payload_missing_a_field_is_reported_at_payload() {
    for (codec, frame) in both(&json!({"type": "SEND_MESSAGE", "payload": {"roomId": "a"}})) {
        let err = decode(&codec, &frame)
            .unwrap()
            .decode_payload::<SendMessage>()
            .unwrap_err();
        assert_eq!(err.path, "payload", "{}", codec.name());
        assert!(
            err.message.contains("text"),
            "{}: {}",
            codec.name(),
            err.message
        );
    }
}

#[test]
fn absent_payload_into_a_struct_is_reported_at_payload() {
    for (codec, frame) in both(&json!({"type": "SEND_MESSAGE"})) {
        let env = decode(&codec, &frame).unwrap();
        assert!(env.payload.is_none());
        let err = env.decode_payload::<SendMessage>().unwrap_err();
        assert_eq!(err.path, "payload", "{}", codec.name());
    }
}

#[test]
fn absent_payload_decodes_as_none_and_unit() {
    #[derive(Debug, PartialEq, Deserialize)]
    struct Ping;
    for (codec, frame) in both(&json!({"type": "PING"})) {
        let env = decode(&codec, &frame).unwrap();
        assert_eq!(
            env.decode_payload::<Option<SendMessage>>().unwrap(),
            None,
            "{}",
            codec.name()
        );
        env.decode_payload::<()>().unwrap();
        assert_eq!(env.decode_payload::<Ping>().unwrap(), Ping);
    }
    // An explicit null is a payload, and reads as None too.
    for (codec, frame) in both(&json!({"type": "PING", "payload": null})) {
        let env = decode(&codec, &frame).unwrap();
        assert!(env.payload.is_some());
        assert_eq!(
            env.decode_payload::<Option<SendMessage>>().unwrap(),
            None,
            "{}",
            codec.name()
        );
    }
}

#[test]
fn json_error_messages_carry_no_position() {
    let failures = [
        reject(&json(), "{\n\n  \"type\": \"A\",\n  \"payload\": }"),
        reject(&json(), "{\"type\":\"A\",\n\"meta\":{\"timestamp\":\"x\"}}"),
        reject(
            &json(),
            "{\"type\":\"COMPRESSED\",\n\"payload\":{\"encoding\":5}}",
        ),
        reject(&json(), "\n\n{\"type\":\"A\"}\n\nx"),
    ];
    for failure in &failures {
        assert_no_position(&failure.to_string());
    }
    let env = decode(&json(), "{\"type\":\"A\",\n\"payload\":\n{\"roomId\":\n7}}").unwrap();
    let err = env.decode_payload::<SendMessage>().unwrap_err();
    assert_eq!(err.path, "payload.roomId");
    assert_no_position(&err.to_string());
}
