//! `WireCodec::decode`, the whole inbound path of a frame: size limit,
//! envelope, compressed-envelope unwrap (gzip, with the inflate cap), the
//! inner envelope, and the correlation-id probe on failure.
//!
//! The first byte picks the codec and how the rest is used:
//! - as the frame itself;
//! - as gzip bytes, wrapped in a well-formed COMPRESSED envelope (so the
//!   fuzzer works on the gzip stream itself, bombs included);
//! - as an inner envelope, gzipped and wrapped (so it works on what is
//!   found inside).
#![no_main]

use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
use signalbox_codec::{DecodeError, Format, WireCodec};
use signalbox_fuzz::{BoundedAlloc, MAX_MESSAGE, check_roundtrip, codec, frame, split};
use std::io::Write;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

fn wrap(codec: &WireCodec, gzip: &[u8]) -> Vec<u8> {
    match codec.format() {
        Format::Json => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(gzip);
            format!(r#"{{"type":"COMPRESSED","payload":{{"encoding":"gzip","data":"{b64}"}}}}"#)
                .into_bytes()
        }
        Format::MsgPack => {
            // {"type":"COMPRESSED","payload":{"encoding":"gzip","data":<bin32>}}
            let mut out = vec![0x82, 0xa4];
            out.extend_from_slice(b"type");
            out.push(0xaa);
            out.extend_from_slice(b"COMPRESSED");
            out.push(0xa7);
            out.extend_from_slice(b"payload");
            out.extend_from_slice(&[0x82, 0xa8]);
            out.extend_from_slice(b"encoding");
            out.push(0xa4);
            out.extend_from_slice(b"gzip");
            out.push(0xa4);
            out.extend_from_slice(b"data");
            out.push(0xc6);
            out.extend_from_slice(&u32::try_from(gzip.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(gzip);
            out
        }
        // `codec()` builds the built-in codecs only.
        Format::App(_) => unreachable!("no application codec in the fuzz targets"),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = split(data) else {
        return;
    };
    let codec = codec(selector & 0x03);
    let input = match (selector >> 2) % 3 {
        0 => rest.to_vec(),
        1 => wrap(&codec, rest),
        _ => wrap(&codec, &gzip(rest)),
    };
    match codec.decode(frame(&input)) {
        Ok(env) => {
            assert_ne!(env.ty, signalbox_codec::COMPRESSED_TYPE);
            check_roundtrip(&codec, &env);
        }
        Err(failure) => {
            // Every rejection is answerable: a message for the peer.
            assert!(!failure.error.to_string().is_empty());
            if input.len() > MAX_MESSAGE {
                assert!(matches!(failure.error, DecodeError::TooLarge { .. }));
            }
        }
    }
});
