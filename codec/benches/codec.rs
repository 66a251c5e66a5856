//! Encode/decode of a small (~100 B) and a large (~16 KiB) envelope per
//! codec (`json`, `msgpack`), with and without gzip (`json+gzip`,
//! `msgpack+gzip`, default threshold 1024 bytes: only the large one is
//! compressed). Decoding includes decoding the payload into its type.
//!
//! Throughput is counted in bytes of the uncompressed encoding in the
//! codec's format, so the MB/s of a `+gzip` codec compare with its plain
//! one.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use signalbox_codec::{Meta, WireCodec};
use std::hint::black_box;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SendMessage {
    #[serde(rename = "roomId")]
    room_id: String,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatMessage {
    room_id: String,
    user_id: String,
    text: String,
    timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct History {
    #[serde(rename = "roomId")]
    room_id: String,
    messages: Vec<ChatMessage>,
}

fn meta() -> Meta {
    Meta {
        correlation_id: Some("r-17".into()),
        timestamp: Some(1_764_160_000_000),
        ..Meta::default()
    }
}

/// docs/PROTOCOL.md §1's example: 123 bytes in JSON.
fn small() -> SendMessage {
    SendMessage {
        room_id: "lobby".into(),
        text: "hi".into(),
    }
}

/// A room's history: 16 KiB in JSON.
fn large() -> History {
    let words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
    ];
    let messages = (0u64..120)
        .map(|i| ChatMessage {
            room_id: "lobby".into(),
            user_id: format!("c-{:08x}", i * 2_654_435_761 % 0xffff_ffff),
            text: (0..9)
                .map(|w| words[((i + w) % 8) as usize])
                .collect::<Vec<_>>()
                .join(" "),
            timestamp: 1_764_160_000_000 + i * 1_337,
        })
        .collect();
    History {
        room_id: "lobby".into(),
        messages,
    }
}

fn bench_one<T>(c: &mut Criterion, size: &str, ty: &str, payload: &T)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let meta = meta();
    for name in ["json", "msgpack", "json+gzip", "msgpack+gzip"] {
        let codec = WireCodec::from_name(name).unwrap();
        let plain = codec.encode_with(ty, &meta, Some(payload), false).unwrap();
        let frame = codec.encode(ty, &meta, Some(payload)).unwrap();
        // Sanity: what is measured decodes back.
        let back: T = codec
            .decode(frame.clone())
            .unwrap()
            .decode_payload()
            .unwrap();
        assert_eq!(&back, payload);

        let mut group = c.benchmark_group(format!("{size}/{name}"));
        group.throughput(Throughput::Bytes(plain.len() as u64));
        group.bench_function(BenchmarkId::new("encode", plain.len()), |b| {
            b.iter(|| {
                codec
                    .encode(black_box(ty), black_box(&meta), Some(black_box(payload)))
                    .unwrap()
            });
        });
        group.bench_function(BenchmarkId::new("decode", frame.len()), |b| {
            b.iter(|| {
                let env = codec.decode(Bytes::clone(black_box(&frame))).unwrap();
                let payload: T = env.decode_payload().unwrap();
                (env.meta, payload)
            });
        });
        group.finish();
    }
}

fn codecs(c: &mut Criterion) {
    bench_one(c, "small", "SEND_MESSAGE", &small());
    bench_one(c, "large", "HISTORY", &large());
}

criterion_group!(benches, codecs);
criterion_main!(benches);
