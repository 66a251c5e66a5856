//! The form of a [`BrokerMessage`] on a Redis channel: one MessagePack array
//!
//! ```text
//! [1, origin, type, meta, payload_format, payload, exclude, compress]
//! [2, origin, type, meta, payload_format, payload, exclude, compress, epoch, offset]
//! ```
//!
//! - `1`: a plain publication; `2`: a publication on a topic with history,
//!   with its position (docs/PROTOCOL.md §8). The publishing node encodes
//!   the head of a positioned frame ([`encode_positioned_head`]) and the
//!   publish script in Redis appends `epoch` (str) and `offset` (uint 64,
//!   always the 9-byte form) once it has assigned them; the same bytes are
//!   kept in the topic's history and published on its channel;
//! - `origin` (str): the publishing node's id, so that it skips its own;
//! - `type` (str): the envelope type;
//! - `meta` (bin holding a MessagePack map, or nil when empty);
//! - `payload_format` (0 none, 1 MessagePack, 2 JSON) and `payload` (bin
//!   holding the encoded value, or nil): the payload bytes travel as they
//!   are, so a MessagePack `bin` or an integer above 2^53 stays exact;
//! - `exclude` (str or nil): the connection that must not receive it;
//! - `compress` (bool): whether `+gzip` subscribers may get it compressed.
//!
//! The topic is the channel name less the prefix. Everything read from
//! Redis is checked: a frame that does not parse, or whose payload is not
//! one complete value, is rejected rather than passed on to clients.

use bytes::Bytes;
use rmp::Marker;
use signalbox::codec::{Format, RawPayload};
use signalbox::{BrokerMessage, Meta, Position};

const VERSION: u8 = 1;
const FIELDS: u32 = 8;
const POSITIONED_VERSION: u8 = 2;
const POSITIONED_FIELDS: u32 = 10;
/// How deeply arrays and maps may nest in meta or a payload read from
/// Redis: the codec's own limit (and serde_json's). rmp-serde's default
/// (1024) lets a small frame overflow a task's stack.
const MAX_DEPTH: usize = 128;

/// Why a frame from Redis was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not the layout above.
    #[error("malformed broker frame: {0}")]
    Malformed(&'static str),
    /// A layout version this node does not know.
    #[error("unknown broker frame version {0}")]
    Version(u64),
    /// The meta map could not be encoded or read.
    #[error("broker frame meta: {0}")]
    Meta(String),
    /// A payload in an application codec's format could not be transcoded
    /// to MessagePack.
    #[error("broker frame payload: {0}")]
    Payload(String),
}

/// A frame read back: who published it and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The publishing node.
    pub origin: String,
    /// The message (its `topic` is the one given to [`decode`]).
    pub message: BrokerMessage,
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_str(buf, s);
}

fn write_bin(buf: &mut Vec<u8>, b: &[u8]) {
    let _ = rmp::encode::write_bin(buf, b);
}

fn write_nil(buf: &mut Vec<u8>) {
    let _ = rmp::encode::write_nil(buf);
}

/// Encodes `msg` as published by node `origin`.
///
/// # Errors
/// Meta that MessagePack cannot carry (it always can: meta comes from a
/// decoded envelope).
pub fn encode(origin: &str, msg: &BrokerMessage) -> Result<Vec<u8>, FrameError> {
    encode_fields(origin, msg, FIELDS, VERSION)
}

/// Encodes the head of a positioned frame: every field but `epoch` and
/// `offset`, which the publish script appends (see the module docs).
///
/// # Errors
/// As [`encode`].
pub fn encode_positioned_head(origin: &str, msg: &BrokerMessage) -> Result<Vec<u8>, FrameError> {
    encode_fields(origin, msg, POSITIONED_FIELDS, POSITIONED_VERSION)
}

/// Appends `epoch` and `offset` to a positioned head, as the publish
/// script does (for tests of the layout).
#[cfg(test)]
pub(crate) fn append_position(head: &mut Vec<u8>, position: &Position) {
    write_str(head, &position.epoch);
    head.push(0xcf);
    head.extend_from_slice(&position.offset.to_be_bytes());
}

fn encode_fields(
    origin: &str,
    msg: &BrokerMessage,
    fields: u32,
    version: u8,
) -> Result<Vec<u8>, FrameError> {
    let payload_len = msg.payload.as_ref().map_or(0, |p| p.as_bytes().len());
    let mut buf = Vec::with_capacity(64 + origin.len() + msg.ty.len() + payload_len);
    let _ = rmp::encode::write_array_len(&mut buf, fields);
    let _ = rmp::encode::write_uint(&mut buf, u64::from(version));
    write_str(&mut buf, origin);
    write_str(&mut buf, &msg.ty);
    if msg.meta.is_empty() {
        write_nil(&mut buf);
    } else {
        let meta = rmp_serde::to_vec(&msg.meta).map_err(|e| FrameError::Meta(e.to_string()))?;
        write_bin(&mut buf, &meta);
    }
    match &msg.payload {
        None => {
            let _ = rmp::encode::write_uint(&mut buf, 0);
            write_nil(&mut buf);
        }
        Some(payload) => match payload.format() {
            Format::MsgPack => {
                let _ = rmp::encode::write_uint(&mut buf, 1);
                write_bin(&mut buf, payload.as_bytes());
            }
            Format::Json => {
                let _ = rmp::encode::write_uint(&mut buf, 2);
                write_bin(&mut buf, payload.as_bytes());
            }
            // Other nodes may not have the application's codec: its
            // payloads travel as MessagePack.
            Format::App(_) => {
                let msgpack =
                    rmp_serde::to_vec(payload).map_err(|e| FrameError::Payload(e.to_string()))?;
                let _ = rmp::encode::write_uint(&mut buf, 1);
                write_bin(&mut buf, &msgpack);
            }
        },
    }
    match &msg.exclude {
        Some(id) => write_str(&mut buf, id),
        None => write_nil(&mut buf),
    }
    let _ = rmp::encode::write_bool(&mut buf, msg.compress);
    Ok(buf)
}

/// A cursor over a frame that never reads past its end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn marker(&mut self) -> Result<Marker, FrameError> {
        let (&first, rest) = self
            .rest
            .split_first()
            .ok_or(FrameError::Malformed("truncated"))?;
        self.rest = rest;
        Ok(Marker::from_u8(first))
    }

    fn peek_nil(&mut self) -> bool {
        if self.rest.first() == Some(&0xc0) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError::Malformed("truncated"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn be(&mut self, n: usize) -> Result<u64, FrameError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn uint(&mut self) -> Result<u64, FrameError> {
        match self.marker()? {
            Marker::FixPos(n) => Ok(u64::from(n)),
            Marker::U8 => self.be(1),
            Marker::U16 => self.be(2),
            Marker::U32 => self.be(4),
            Marker::U64 => self.be(8),
            _ => Err(FrameError::Malformed("expected an unsigned integer")),
        }
    }

    fn array_len(&mut self) -> Result<u64, FrameError> {
        match self.marker()? {
            Marker::FixArray(n) => Ok(u64::from(n)),
            Marker::Array16 => self.be(2),
            Marker::Array32 => self.be(4),
            _ => Err(FrameError::Malformed("expected an array")),
        }
    }

    fn str(&mut self) -> Result<&'a str, FrameError> {
        let len = match self.marker()? {
            Marker::FixStr(n) => u64::from(n),
            Marker::Str8 => self.be(1)?,
            Marker::Str16 => self.be(2)?,
            Marker::Str32 => self.be(4)?,
            _ => return Err(FrameError::Malformed("expected a string")),
        };
        let bytes = self.take(usize::try_from(len).unwrap_or(usize::MAX))?;
        std::str::from_utf8(bytes).map_err(|_| FrameError::Malformed("string is not UTF-8"))
    }

    fn bin(&mut self) -> Result<&'a [u8], FrameError> {
        let len = match self.marker()? {
            Marker::Bin8 => self.be(1)?,
            Marker::Bin16 => self.be(2)?,
            Marker::Bin32 => self.be(4)?,
            _ => return Err(FrameError::Malformed("expected bin")),
        };
        self.take(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn bool(&mut self) -> Result<bool, FrameError> {
        match self.marker()? {
            Marker::True => Ok(true),
            Marker::False => Ok(false),
            _ => Err(FrameError::Malformed("expected a bool")),
        }
    }
}

/// Checks that `bytes` hold exactly one complete value in `format`.
fn check_value(format: Format, bytes: &[u8]) -> Result<(), FrameError> {
    use serde::de::{Deserialize, IgnoredAny};
    match format {
        Format::MsgPack => {
            let mut rest = bytes;
            let mut de = rmp_serde::Deserializer::new(&mut rest);
            de.set_max_depth(MAX_DEPTH);
            IgnoredAny::deserialize(&mut de)
                .map_err(|_| FrameError::Malformed("payload is not MessagePack"))?;
            drop(de);
            if rest.is_empty() {
                Ok(())
            } else {
                Err(FrameError::Malformed("payload has trailing bytes"))
            }
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            IgnoredAny::deserialize(&mut de)
                .and_then(|_| de.end())
                .map_err(|_| FrameError::Malformed("payload is not one JSON value"))
        }
        // `decode` only reads the two tags above.
        Format::App(_) => Err(FrameError::Malformed(
            "application formats travel as MessagePack",
        )),
    }
}

/// Decodes a frame that arrived on the channel of `topic`.
///
/// # Errors
/// Anything but a well-formed frame of a known version.
pub fn decode(topic: &str, frame: &[u8]) -> Result<Frame, FrameError> {
    let mut r = Reader { rest: frame };
    let fields = r.array_len()?;
    let version = r.uint()?;
    let positioned = match version {
        v if v == u64::from(VERSION) => false,
        v if v == u64::from(POSITIONED_VERSION) => true,
        v => return Err(FrameError::Version(v)),
    };
    let expected = if positioned {
        POSITIONED_FIELDS
    } else {
        FIELDS
    };
    if fields != u64::from(expected) {
        return Err(FrameError::Malformed("wrong number of fields"));
    }
    let origin = r.str()?.to_owned();
    let ty = r.str()?.to_owned();
    if ty.is_empty() {
        return Err(FrameError::Malformed("empty type"));
    }
    let meta = if r.peek_nil() {
        Meta::default()
    } else {
        use serde::Deserialize;
        let mut de = rmp_serde::Deserializer::new(r.bin()?);
        de.set_max_depth(MAX_DEPTH);
        Meta::deserialize(&mut de).map_err(|e| FrameError::Meta(e.to_string()))?
    };
    let format = r.uint()?;
    let payload = if r.peek_nil() {
        if format != 0 {
            return Err(FrameError::Malformed("payload format without payload"));
        }
        None
    } else {
        let format = match format {
            1 => Format::MsgPack,
            2 => Format::Json,
            _ => return Err(FrameError::Malformed("unknown payload format")),
        };
        let bytes = r.bin()?;
        check_value(format, bytes)?;
        Some(RawPayload::new(format, Bytes::copy_from_slice(bytes)))
    };
    let exclude = if r.peek_nil() {
        None
    } else {
        Some(r.str()?.to_owned())
    };
    let compress = r.bool()?;
    let position = if positioned {
        let epoch = r.str()?.to_owned();
        if epoch.is_empty() {
            return Err(FrameError::Malformed("empty epoch"));
        }
        let offset = r.uint()?;
        if offset == 0 {
            return Err(FrameError::Malformed("offset 0"));
        }
        Some(Position::new(epoch, offset))
    } else {
        None
    };
    if !r.rest.is_empty() {
        return Err(FrameError::Malformed("trailing bytes"));
    }
    Ok(Frame {
        origin,
        message: BrokerMessage {
            topic: topic.to_owned(),
            ty,
            meta,
            payload,
            exclude,
            compress,
            position,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack_payload<T: serde::Serialize>(value: &T) -> RawPayload {
        let bytes = rmp_serde::to_vec_named(value).expect("encodable");
        RawPayload::new(Format::MsgPack, Bytes::from(bytes))
    }

    fn sample() -> BrokerMessage {
        let mut meta = Meta {
            client_id: Some("n1-7".into()),
            timestamp: Some(1_764_160_000_000),
            correlation_id: None,
            ..Meta::default()
        };
        meta.extra
            .insert("trace".into(), serde_json::json!({"id": u64::MAX}));
        BrokerMessage {
            topic: "room:1".into(),
            ty: "NEW_MESSAGE".into(),
            meta,
            payload: Some(msgpack_payload(&(
                u64::MAX,
                serde_bytes::Bytes::new(&[0, 1, 255]),
                1.5f64,
            ))),
            exclude: Some("n1-7".into()),
            compress: true,
            position: None,
        }
    }

    #[test]
    fn a_message_round_trips_exactly() {
        let msg = sample();
        let frame = encode("node-a", &msg).expect("encodes");
        let back = decode("room:1", &frame).expect("decodes");
        assert_eq!(back.origin, "node-a");
        assert_eq!(back.message, msg);
    }

    #[test]
    fn a_message_without_payload_meta_or_exclude_round_trips() {
        let msg = BrokerMessage {
            topic: "t".into(),
            ty: "PING".into(),
            meta: Meta::default(),
            payload: None,
            exclude: None,
            compress: false,
            position: None,
        };
        let frame = encode("n", &msg).expect("encodes");
        assert_eq!(decode("t", &frame).expect("decodes").message, msg);
    }

    fn positioned_frame(msg: &BrokerMessage, position: &Position) -> Vec<u8> {
        let mut frame = encode_positioned_head("node-a", msg).expect("encodes");
        append_position(&mut frame, position);
        frame
    }

    #[test]
    fn a_positioned_message_round_trips_with_its_position() {
        let msg = sample();
        let position = Position::new("0123456789ab", (1 << 53) + 7);
        let back = decode("room:1", &positioned_frame(&msg, &position)).expect("decodes");
        assert_eq!(back.origin, "node-a");
        assert_eq!(back.message.position.as_ref(), Some(&position));
        assert_eq!(
            BrokerMessage {
                position: None,
                ..back.message
            },
            msg
        );
        // A head without its position is not a frame.
        let head = encode_positioned_head("node-a", &msg).expect("encodes");
        assert!(decode("room:1", &head).is_err());
        // Nor is a position of offset 0 or without an epoch.
        for bad in [Position::new("e", 0), Position::new("", 1)] {
            assert!(decode("room:1", &positioned_frame(&msg, &bad)).is_err());
        }
    }

    #[test]
    fn every_truncation_of_a_frame_is_rejected() {
        let plain = encode("node-a", &sample()).expect("encodes");
        let positioned = positioned_frame(&sample(), &Position::new("e", 9));
        for frame in [plain, positioned] {
            for cut in 0..frame.len() {
                assert!(
                    decode("room:1", &frame[..cut]).is_err(),
                    "a frame cut at {cut} bytes was accepted"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_versions_are_rejected() {
        let mut frame = encode("node-a", &sample()).expect("encodes");
        frame.push(0);
        assert!(matches!(
            decode("room:1", &frame),
            Err(FrameError::Malformed(_))
        ));
        let mut frame = encode("node-a", &sample()).expect("encodes");
        frame[1] = 9;
        assert_eq!(decode("room:1", &frame), Err(FrameError::Version(9)));
        // A plain frame that claims to be positioned has too few fields.
        let mut frame = encode("node-a", &sample()).expect("encodes");
        frame[1] = POSITIONED_VERSION;
        assert!(matches!(
            decode("room:1", &frame),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_payload_that_is_not_one_value_is_rejected() {
        let mut msg = sample();
        // A map header announcing one entry, with nothing after it.
        msg.payload = Some(RawPayload::new(
            Format::MsgPack,
            Bytes::from_static(&[0x81]),
        ));
        let frame = encode("node-a", &msg).expect("encodes");
        assert!(decode("room:1", &frame).is_err());
        // Two values where one is expected.
        msg.payload = Some(RawPayload::new(
            Format::MsgPack,
            Bytes::from_static(&[1, 2]),
        ));
        let frame = encode("node-a", &msg).expect("encodes");
        assert!(decode("room:1", &frame).is_err());
    }

    /// `depth` nested one-element arrays around a nil.
    fn nested(depth: usize) -> Vec<u8> {
        let mut v = vec![0x91; depth];
        v.push(0xc0);
        v
    }

    #[test]
    fn deep_nesting_is_rejected_instead_of_overflowing_the_stack() {
        for depth in [1_000, 100_000] {
            let mut msg = sample();
            msg.payload = Some(RawPayload::new(Format::MsgPack, Bytes::from(nested(depth))));
            let frame = encode("node-a", &msg).expect("encodes");
            assert!(decode("room:1", &frame).is_err(), "payload depth {depth}");

            // A frame whose meta is the map {"k": <nested>}.
            let mut meta = vec![0x81, 0xa1, b'k'];
            meta.extend(nested(depth));
            let mut forged = Vec::new();
            rmp::encode::write_array_len(&mut forged, FIELDS).expect("writes");
            rmp::encode::write_uint(&mut forged, u64::from(VERSION)).expect("writes");
            write_str(&mut forged, "node-a");
            write_str(&mut forged, "T");
            write_bin(&mut forged, &meta);
            rmp::encode::write_uint(&mut forged, 0).expect("writes");
            write_nil(&mut forged);
            write_nil(&mut forged);
            rmp::encode::write_bool(&mut forged, false).expect("writes");
            assert!(
                matches!(decode("room:1", &forged), Err(FrameError::Meta(_))),
                "meta depth {depth}"
            );
        }
        // Nesting within the limit still passes.
        let mut msg = sample();
        msg.payload = Some(RawPayload::new(Format::MsgPack, Bytes::from(nested(100))));
        let frame = encode("node-a", &msg).expect("encodes");
        assert_eq!(decode("room:1", &frame).expect("decodes").message, msg);
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        for junk in [
            &b""[..],
            b"\xc0",
            b"\x98",
            b"hello",
            b"\xdd\xff\xff\xff\xff",
        ] {
            assert!(decode("t", junk).is_err(), "{junk:?} was accepted");
        }
    }
}
