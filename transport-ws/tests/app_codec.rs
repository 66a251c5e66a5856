//! An application codec (CBOR) registered on the hub and negotiated over a
//! real socket like the built-in ones (docs/PROTOCOL.md §2).

mod cbor;
mod common;

use cbor::{CBOR, envelope_type};
use common::*;
use serde::{Deserialize, Serialize};
use signalbox::codec::erased_serde;
use signalbox::codec::{
    AppCodec, CodecNameError, Codecs, DecodeError, EncodeError, Envelope, FrameParts, Meta,
};
use signalbox::{Config, Hub};

fn hub() -> Hub {
    Hub::builder(router())
        .config(Config::default())
        .codec(&CBOR)
        .unwrap()
        .build()
}

/// Sends ECHO with `payload`; the reply envelope, checked for type and id.
async fn echo<T: Serialize>(client: &mut Client, payload: &T, cid: &str) -> Envelope {
    let meta = Meta {
        correlation_id: Some(cid.to_owned()),
        ..Meta::default()
    };
    let frame = client.codec.encode("ECHO", &meta, Some(payload)).unwrap();
    client.send_frame(frame).await;
    let reply = client.recv().await;
    assert_eq!(reply.ty, "ECHO");
    assert_eq!(reply.meta.correlation_id.as_deref(), Some(cid));
    reply
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sample {
    text: String,
    n: i64,
    x: f64,
    #[serde(with = "serde_bytes_like")]
    blob: Vec<u8>,
    list: Vec<Option<u32>>,
}

/// Byte strings as CBOR byte strings (major type 2), not arrays.
mod serde_bytes_like {
    use serde::{Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

fn sample() -> Sample {
    Sample {
        text: "ünï".into(),
        n: -(1 << 40),
        x: 2.5,
        blob: vec![0, 1, 254, 255],
        list: vec![Some(1), None, Some(7)],
    }
}

#[tokio::test]
async fn a_cbor_client_is_answered_in_cbor_binary_frames() {
    let hub = hub();
    let (addr, _) = start_with(&hub, |b| b).await;
    let mut client = connect_codec(addr, cbor::codec("cbor")).await;
    let reply = echo(&mut client, &sample(), "c-1").await;
    let back: Sample = reply.decode_payload().unwrap();
    assert_eq!(back, sample());
    // The reply really is CBOR: a plain CBOR reader sees the envelope map.
    let frame = client
        .codec
        .encode("ECHO", &Meta::default(), Some(&1u8))
        .unwrap();
    client.send_frame(frame).await;
    let (raw, text) = client.recv_raw().await;
    assert!(!text, "CBOR travels in binary frames");
    assert_eq!(envelope_type(&raw), "ECHO");
}

#[tokio::test]
async fn a_room_fans_out_to_cbor_and_json_members_each_in_its_codec() {
    let hub = hub();
    let (addr, _) = start_with(&hub, |b| b).await;
    let mut members = vec![
        connect_codec(addr, cbor::codec("cbor")).await,
        connect(addr, "json").await,
        connect_codec(addr, cbor::codec("cbor+gzip")).await,
        connect(addr, "msgpack").await,
    ];
    for member in &mut members {
        member
            .send(
                &Join {
                    room: "mixed".into(),
                },
                None,
            )
            .await;
        // A request after the join: its reply means the join was handled.
        echo(member, &(), "sync").await;
    }
    for (from, text) in [(0, "from cbor"), (1, "from json")] {
        members[from]
            .send(
                &Say {
                    room: "mixed".into(),
                    text: text.into(),
                },
                None,
            )
            .await;
        for member in &mut members {
            let env = member.recv().await;
            assert_eq!(env.ty, "SAID", "{}", member.codec.name());
            let said: Said = env.decode_payload().unwrap();
            assert_eq!(said.text, text, "{}", member.codec.name());
            assert!(env.meta.client_id.is_some());
        }
    }
}

#[tokio::test]
async fn cbor_gzip_compresses_large_replies_and_accepts_compressed_requests() {
    let hub = hub();
    let (addr, _) = start_with(&hub, |b| b).await;
    let mut client = connect_codec(addr, cbor::codec("cbor+gzip")).await;
    let big = "abc".repeat(2000);
    // The client's codec compresses this request (over the threshold).
    let reply = echo(&mut client, &big, "big").await;
    let back: String = reply.decode_payload().unwrap();
    assert_eq!(back, big);
    // On the wire the reply was a COMPRESSED envelope.
    let frame = client
        .codec
        .encode("ECHO", &Meta::default(), Some(&big))
        .unwrap();
    assert!(frame.len() < big.len() / 4, "the request was compressed");
    client.send_frame(frame).await;
    let (raw, _) = client.recv_raw().await;
    assert!(raw.len() < big.len() / 4, "the reply was compressed");
    assert_eq!(envelope_type(&raw), "COMPRESSED");
    // A small reply is not.
    let reply = echo(&mut client, &"small", "small").await;
    let back: String = reply.decode_payload().unwrap();
    assert_eq!(back, "small");
    let frame = client
        .codec
        .encode("ECHO", &Meta::default(), Some(&"small"))
        .unwrap();
    client.send_frame(frame).await;
    let (raw, _) = client.recv_raw().await;
    assert_eq!(envelope_type(&raw), "ECHO");
}

#[tokio::test]
async fn a_malformed_cbor_frame_is_answered_and_the_connection_survives() {
    let hub = hub();
    let (addr, _) = start_with(&hub, |b| b).await;
    let mut client = connect_codec(addr, cbor::codec("cbor")).await;
    client
        .send_frame(bytes::Bytes::from_static(&[0xff, 0x00, 0x13]))
        .await;
    let error = client.recv().await;
    assert_eq!(error.ty, "ERROR");
    let reply = echo(&mut client, &"still here", "after").await;
    let back: String = reply.decode_payload().unwrap();
    assert_eq!(back, "still here");
}

#[tokio::test]
async fn a_server_without_the_codec_refuses_it_and_names_what_it_has() {
    // Without registration, `cbor` is an unknown offer: 400.
    let plain = Hub::builder(router()).build();
    let (addr, _) = start_with(&plain, |b| b).await;
    assert_eq!(
        try_connect(addr, "/ws", &["cbor"], &[]).await.err(),
        Some(400)
    );
    // With it, the client's order decides, as for the built-in names.
    let hub = hub();
    let (addr, _) = start_with(&hub, |b| b).await;
    let client = try_connect(addr, "/ws", &["x-unknown", "msgpack", "cbor"], &[])
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("msgpack"));
}

struct Named(&'static str, Option<&'static str>);

impl AppCodec for Named {
    fn name(&self) -> &'static str {
        self.0
    }
    fn gzip_name(&self) -> Option<&'static str> {
        self.1
    }
    fn encode_envelope(
        &self,
        _: &str,
        _: Option<&Meta>,
        _: Option<&dyn erased_serde::Serialize>,
        _: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        Err(EncodeError::Serialize("not used".into()))
    }
    fn decode_envelope(&self, _: &bytes::Bytes) -> Result<FrameParts, DecodeError> {
        Err(DecodeError::MissingType)
    }
    fn deserialize_payload(
        &self,
        _: &[u8],
        _: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'_>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), erased_serde::Error> {
        Ok(())
    }
}

#[test]
fn registration_refuses_bad_and_taken_names() {
    static JSON: Named = Named("json", None);
    static PLUS: Named = Named("a+b", None);
    static EMPTY: Named = Named("", None);
    static UPPER: Named = Named("CBOR", None);
    static BAD_GZIP: Named = Named("x", Some("y+gzip"));
    let mut codecs = Codecs::new();
    codecs.register(&CBOR).unwrap();
    assert_eq!(
        codecs.register(&CBOR),
        Err(CodecNameError::Taken("cbor".into()))
    );
    assert_eq!(
        codecs.register(&JSON),
        Err(CodecNameError::Taken("json".into()))
    );
    for bad in [&PLUS, &EMPTY, &UPPER] {
        assert!(matches!(
            codecs.register(bad),
            Err(CodecNameError::Invalid(_))
        ));
    }
    assert!(matches!(
        codecs.register(&BAD_GZIP),
        Err(CodecNameError::GzipName { .. })
    ));
    assert_eq!(
        codecs.names(),
        [
            "json",
            "msgpack",
            "json+gzip",
            "msgpack+gzip",
            "cbor",
            "cbor+gzip"
        ]
    );
}
