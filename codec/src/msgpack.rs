//! The MessagePack format: envelopes as maps with string keys, binary frames.

use crate::envelope::check_type;
use crate::{Codec, DecodeError, EncodeError, Envelope, Format, Meta, PayloadError, RawPayload};
use bytes::Bytes;
use rmp::Marker;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// MessagePack envelopes: a map with string keys `type`, `meta`, `payload`,
/// readable by @msgpack/msgpack, msgpackr and Python's msgpack.
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPack;

impl MsgPack {
    /// Encodes `value` alone as a MessagePack payload: byte for byte what
    /// the `payload` field of an envelope encoded by this codec holds
    /// (docs/PROTOCOL.md §2), without an envelope around it.
    pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<RawPayload, EncodeError> {
        let mut out = Vec::new();
        write_value(&mut out, value)?;
        Ok(RawPayload::new(Format::MsgPack, Bytes::from(out)))
    }
}

impl Codec for MsgPack {
    const FORMAT: Format = Format::MsgPack;

    fn decode_envelope(frame: &Bytes) -> Result<Envelope, DecodeError> {
        let buf: &[u8] = frame;
        let mut pos = 0;
        let entries = match read_map_len(buf, &mut pos) {
            Some(n) => n,
            None if buf.is_empty() => return Err(DecodeError::Syntax("empty message".into())),
            None => return Err(DecodeError::NotAnObject),
        };
        let mut ty: Option<String> = None;
        let mut meta: Option<Meta> = None;
        let mut payload: Option<RawPayload> = None;
        for _ in 0..entries {
            let key = read_str(buf, &mut pos)
                .ok_or_else(|| DecodeError::Syntax("envelope keys must be strings".into()))?;
            match key {
                "type" => {
                    if ty.is_some() {
                        return Err(DecodeError::DuplicateField("type".into()));
                    }
                    let value = read_str(buf, &mut pos)
                        .ok_or(DecodeError::InvalidType("must be a string"))?;
                    check_type(value)?;
                    ty = Some(value.to_owned());
                }
                "meta" => {
                    if meta.is_some() {
                        return Err(DecodeError::DuplicateField("meta".into()));
                    }
                    let start = pos;
                    pos = skip_value(buf, pos)?;
                    let mut de = deserializer(buf.get(start..pos).unwrap_or_default());
                    let value = Option::<Meta>::deserialize(&mut de)
                        .map_err(|e| DecodeError::InvalidMeta(e.to_string()))?;
                    meta = Some(value.unwrap_or_default());
                }
                "payload" => {
                    if payload.is_some() {
                        return Err(DecodeError::DuplicateField("payload".into()));
                    }
                    let start = pos;
                    pos = skip_value(buf, pos)?;
                    payload = Some(RawPayload::new(Format::MsgPack, frame.slice(start..pos)));
                }
                other => {
                    return Err(DecodeError::UnknownField(other.chars().take(64).collect()));
                }
            }
        }
        if pos != buf.len() {
            return Err(DecodeError::Syntax(
                "trailing bytes after the envelope".into(),
            ));
        }
        Ok(Envelope {
            ty: ty.ok_or(DecodeError::MissingType)?,
            meta: meta.unwrap_or_default(),
            payload,
        })
    }

    fn encode_envelope<T: Serialize + ?Sized>(
        ty: &str,
        meta: Option<&Meta>,
        payload: Option<&T>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let len = 1 + u32::from(meta.is_some()) + u32::from(payload.is_some());
        // Writes into a Vec cannot fail.
        let _ = rmp::encode::write_map_len(out, len);
        let _ = rmp::encode::write_str(out, "type");
        let _ = rmp::encode::write_str(out, ty);
        if let Some(meta) = meta {
            let _ = rmp::encode::write_str(out, "meta");
            write_value(out, meta)?;
        }
        if let Some(payload) = payload {
            let _ = rmp::encode::write_str(out, "payload");
            write_value(out, payload)?;
        }
        Ok(())
    }

    fn encode_envelope_spliced(
        ty: &str,
        meta: Option<&Meta>,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let len = 2 + u32::from(meta.is_some());
        let _ = rmp::encode::write_map_len(out, len);
        let _ = rmp::encode::write_str(out, "type");
        let _ = rmp::encode::write_str(out, ty);
        if let Some(meta) = meta {
            let _ = rmp::encode::write_str(out, "meta");
            write_value(out, meta)?;
        }
        let _ = rmp::encode::write_str(out, "payload");
        out.extend_from_slice(payload);
        Ok(())
    }

    fn decode_payload<T: DeserializeOwned>(raw: &[u8]) -> Result<T, PayloadError> {
        let mut de = deserializer(raw);
        serde_path_to_error::deserialize(&mut de).map_err(PayloadError::from_path)
    }

    fn probe_correlation_id(frame: &[u8]) -> Option<String> {
        let mut pos = 0;
        let entries = read_map_len(frame, &mut pos)?;
        for _ in 0..entries {
            let key = read_str(frame, &mut pos)?;
            let start = pos;
            pos = skip_value(frame, pos).ok()?;
            if key == "meta" {
                let mut mpos = start;
                let n = read_map_len(frame, &mut mpos)?;
                for _ in 0..n {
                    let k = read_str(frame, &mut mpos)?;
                    if k == "correlationId" {
                        return read_str(frame, &mut mpos).map(str::to_owned);
                    }
                    mpos = skip_value(frame, mpos).ok()?;
                }
                return None;
            }
        }
        None
    }

    fn encode_compressed(gzip: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let _ = rmp::encode::write_map_len(out, 2);
        let _ = rmp::encode::write_str(out, "type");
        let _ = rmp::encode::write_str(out, crate::vocab::COMPRESSED);
        let _ = rmp::encode::write_str(out, "payload");
        let _ = rmp::encode::write_map_len(out, 2);
        let _ = rmp::encode::write_str(out, "encoding");
        let _ = rmp::encode::write_str(out, "gzip");
        let _ = rmp::encode::write_str(out, "data");
        let _ = rmp::encode::write_bin(out, gzip);
        Ok(())
    }

    fn compressed_data(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let shape =
            || DecodeError::Compressed("payload must be {encoding: \"gzip\", data: <bin>}".into());
        let mut pos = 0;
        let entries = read_map_len(raw, &mut pos).ok_or_else(shape)?;
        let (mut encoding, mut data) = (None, None);
        for _ in 0..entries {
            match read_str(raw, &mut pos).ok_or_else(shape)? {
                "encoding" => encoding = Some(read_str(raw, &mut pos).ok_or_else(shape)?),
                "data" => data = Some(read_bin(raw, &mut pos).ok_or_else(shape)?),
                _ => return Err(shape()),
            }
        }
        match (encoding, data) {
            (Some("gzip"), Some(data)) => Ok(data.to_vec()),
            (Some(other), Some(_)) => Err(DecodeError::Compressed(format!(
                "unsupported encoding {other:?}"
            ))),
            _ => Err(shape()),
        }
    }
}

/// How deeply arrays and maps may nest in a value that is deserialized
/// (meta, a typed payload, a transcoded payload): the same as serde_json's
/// recursion limit. rmp-serde's own default (1024) lets a small frame of
/// nested arrays overflow a 2 MiB task stack; values that are only skipped
/// ([`skip_value`]) or passed through have no depth limit.
pub(crate) const MAX_DEPTH: usize = 128;

/// An rmp-serde deserializer over `bytes` with the depth limit.
pub(crate) fn deserializer(
    bytes: &[u8],
) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    de
}

fn write_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), EncodeError> {
    let mut ser = rmp_serde::Serializer::new(out).with_struct_map();
    value
        .serialize(&mut ser)
        .map_err(|e| EncodeError::Serialize(e.to_string()))
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(n)?;
    let bytes = buf.get(*pos..end)?;
    *pos = end;
    Some(bytes)
}

fn read_uint(buf: &[u8], pos: &mut usize, width: usize) -> Option<usize> {
    let bytes = take(buf, pos, width)?;
    Some(
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
    )
}

fn read_map_len(buf: &[u8], pos: &mut usize) -> Option<usize> {
    let marker = Marker::from_u8(*buf.get(*pos)?);
    *pos += 1;
    match marker {
        Marker::FixMap(n) => Some(usize::from(n)),
        Marker::Map16 => read_uint(buf, pos, 2),
        Marker::Map32 => read_uint(buf, pos, 4),
        _ => None,
    }
}

fn read_str<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a str> {
    let marker = Marker::from_u8(*buf.get(*pos)?);
    *pos += 1;
    let len = match marker {
        Marker::FixStr(n) => usize::from(n),
        Marker::Str8 => read_uint(buf, pos, 1)?,
        Marker::Str16 => read_uint(buf, pos, 2)?,
        Marker::Str32 => read_uint(buf, pos, 4)?,
        _ => return None,
    };
    std::str::from_utf8(take(buf, pos, len)?).ok()
}

fn read_bin<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let marker = Marker::from_u8(*buf.get(*pos)?);
    *pos += 1;
    let len = match marker {
        Marker::Bin8 => read_uint(buf, pos, 1)?,
        Marker::Bin16 => read_uint(buf, pos, 2)?,
        Marker::Bin32 => read_uint(buf, pos, 4)?,
        _ => return None,
    };
    take(buf, pos, len)
}

/// Returns the position just past the value starting at `pos`.
///
/// Iterative, so nesting depth costs no stack; a declared length is checked
/// against the bytes left (every value takes at least one byte) before it
/// is trusted, so a lying header fails at once.
pub(crate) fn skip_value(buf: &[u8], mut pos: usize) -> Result<usize, DecodeError> {
    let truncated = || DecodeError::Syntax("truncated MessagePack value".into());
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        let marker = Marker::from_u8(*buf.get(pos).ok_or_else(truncated)?);
        pos += 1;
        let (skip, children) = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (usize::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (read_uint(buf, &mut pos, 1).ok_or_else(truncated)?, 0),
            Marker::Str16 | Marker::Bin16 => {
                (read_uint(buf, &mut pos, 2).ok_or_else(truncated)?, 0)
            }
            Marker::Str32 | Marker::Bin32 => {
                (read_uint(buf, &mut pos, 4).ok_or_else(truncated)?, 0)
            }
            Marker::FixArray(n) => (0, usize::from(n)),
            Marker::Array16 => (0, read_uint(buf, &mut pos, 2).ok_or_else(truncated)?),
            Marker::Array32 => (0, read_uint(buf, &mut pos, 4).ok_or_else(truncated)?),
            Marker::FixMap(n) => (0, 2 * usize::from(n)),
            Marker::Map16 => (0, 2 * read_uint(buf, &mut pos, 2).ok_or_else(truncated)?),
            Marker::Map32 => (0, 2 * read_uint(buf, &mut pos, 4).ok_or_else(truncated)?),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (read_uint(buf, &mut pos, 1).ok_or_else(truncated)? + 1, 0),
            Marker::Ext16 => (read_uint(buf, &mut pos, 2).ok_or_else(truncated)? + 1, 0),
            Marker::Ext32 => (read_uint(buf, &mut pos, 4).ok_or_else(truncated)? + 1, 0),
            Marker::Reserved => {
                return Err(DecodeError::Syntax(
                    "reserved MessagePack marker 0xc1".into(),
                ));
            }
        };
        pos = pos.checked_add(skip).ok_or_else(truncated)?;
        if pos > buf.len() {
            return Err(truncated());
        }
        pending = pending.checked_add(children).ok_or_else(truncated)?;
        if pending > buf.len() - pos {
            return Err(truncated());
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_value_rejects_a_lying_array_length_without_walking_it() {
        // array32 claiming 4 billion elements, followed by one byte.
        let buf = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(skip_value(&buf, 0).is_err());
    }

    /// `{"type":"X","meta":{"k":<depth nested arrays>}}`, or the nesting
    /// as the payload.
    fn deep(depth: usize, in_meta: bool) -> Bytes {
        let mut f = vec![0x82, 0xa4];
        f.extend_from_slice(b"type");
        f.extend_from_slice(&[0xa1, b'X']);
        if in_meta {
            f.push(0xa4);
            f.extend_from_slice(b"meta");
            f.extend_from_slice(&[0x81, 0xa1, b'k']);
        } else {
            f.push(0xa7);
            f.extend_from_slice(b"payload");
        }
        f.extend(std::iter::repeat_n(0x91, depth));
        f.push(0xc0);
        Bytes::from(f)
    }

    #[test]
    fn deep_meta_fails_at_the_depth_limit_instead_of_overflowing_the_stack() {
        // Run on a 2 MiB stack, as a tokio worker's; 1,000 levels (under
        // rmp-serde's own limit) overflowed it before the limit was set.
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                for depth in [1_000, 100_000] {
                    let err = MsgPack::decode_envelope(&deep(depth, true)).unwrap_err();
                    assert!(matches!(err, DecodeError::InvalidMeta(_)), "{err:?}");
                }
                let ok = MsgPack::decode_envelope(&deep(MAX_DEPTH - 2, true));
                assert!(ok.is_ok(), "{ok:?}");
            })
            .unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn deep_payloads_fail_at_the_depth_limit_when_decoded_or_transcoded() {
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let env = MsgPack::decode_envelope(&deep(100_000, false)).unwrap();
                let raw = env.payload.unwrap();
                assert!(raw.decode::<serde_json::Value>().is_err());
                let json = crate::WireCodec::new(Format::Json, false);
                assert!(
                    json.encode_raw("X", &Meta::default(), Some(&raw), false)
                        .is_err()
                );
                // Within the limit both work.
                let env = MsgPack::decode_envelope(&deep(MAX_DEPTH - 1, false)).unwrap();
                let raw = env.payload.unwrap();
                assert!(raw.decode::<serde_json::Value>().is_ok());
                assert!(
                    json.encode_raw("X", &Meta::default(), Some(&raw), false)
                        .is_ok()
                );
            })
            .unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn skip_value_handles_deep_nesting_without_recursion() {
        let mut buf = vec![0x91; 100_000]; // [[[[…]]]]
        buf.push(0xc0);
        assert_eq!(skip_value(&buf, 0), Ok(buf.len()));
    }
}
