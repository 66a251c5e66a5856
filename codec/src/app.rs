//! Application codecs: wire formats beyond JSON and MessagePack, registered
//! by name and negotiated like the built-in ones (docs/PROTOCOL.md §2).

use crate::{DecodeError, EncodeError, Format, Meta, Negotiation, PayloadError, WireCodec};
use bytes::Bytes;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A wire format an application brings (CBOR, Protobuf, …).
///
/// It is the object-safe counterpart of [`crate::Codec`]: payloads reach it
/// as [`erased_serde::Serialize`] and leave it through an
/// [`erased_serde::Deserializer`], so handler types need nothing beyond
/// `Serialize`/`Deserialize`. Register it with [`Codecs::register`] (or the
/// hub builder's `codec`); clients then select it by [`AppCodec::name`]
/// exactly as they select `json` or `msgpack` (docs/PROTOCOL.md §2).
///
/// A codec is registered as a `&'static` reference: a unit struct in a
/// `static` is the usual shape.
pub trait AppCodec: Send + Sync + 'static {
    /// The name clients offer: the WebSocket subprotocol and the QUIC ALPN
    /// `signalbox/<name>`. Lowercase ASCII letters, digits, `-`, `.` and
    /// `_`, at most 64 bytes ([`Codecs::register`] checks).
    fn name(&self) -> &'static str;

    /// `Some("<name>+gzip")` to offer the gzip-compressed form as well
    /// (docs/PROTOCOL.md §3). Default: `None`.
    fn gzip_name(&self) -> Option<&'static str> {
        None
    }

    /// Whether frames are text (WebSocket text frames). Default: binary.
    fn is_text(&self) -> bool {
        false
    }

    /// Encodes one envelope (docs/PROTOCOL.md §1) appending to `out`: a map
    /// of `type`, then `meta` and `payload` when they are `Some`.
    fn encode_envelope(
        &self,
        ty: &str,
        meta: Option<&Meta>,
        payload: Option<&dyn erased_serde::Serialize>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError>;

    /// Decodes one frame into its type, meta and the payload value, still
    /// encoded in this format ([`FrameParts::payload`]).
    fn decode_envelope(&self, frame: &Bytes) -> Result<FrameParts, DecodeError>;

    /// Calls `visit` once with a deserializer over one payload value as
    /// [`AppCodec::decode_envelope`] returned it.
    fn deserialize_payload(
        &self,
        raw: &[u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'_>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), erased_serde::Error>;

    /// Reads `meta.correlationId` out of a frame that failed to decode, so
    /// that the error answer can still carry it. Default: `None`.
    fn probe_correlation_id(&self, frame: &[u8]) -> Option<String> {
        let _ = frame;
        None
    }
}

/// What [`AppCodec::decode_envelope`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameParts {
    /// The envelope's `type`.
    pub ty: String,
    /// The envelope's meta (empty when absent).
    pub meta: Meta,
    /// The `payload` value, still encoded in the codec's format; `None`
    /// when the envelope had no payload.
    pub payload: Option<Bytes>,
}

/// A registered application codec inside [`Format::App`]. Two are equal
/// when their names are; a [`Codecs`] registry holds one per name.
#[derive(Clone, Copy)]
pub struct AppFormat(&'static dyn AppCodec);

impl AppFormat {
    /// The codec.
    pub fn codec(self) -> &'static dyn AppCodec {
        self.0
    }

    /// The codec's name.
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl PartialEq for AppFormat {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name()
    }
}

impl Eq for AppFormat {}

impl std::hash::Hash for AppFormat {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name().hash(state);
    }
}

impl fmt::Debug for AppFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppFormat({})", self.0.name())
    }
}

/// Why [`Codecs::register`] refused a codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecNameError {
    /// The name is empty, too long or has a character outside
    /// `a-z 0-9 - . _`.
    #[error("codec name {0:?} is not 1 to 64 of a-z, 0-9, '-', '.', '_'")]
    Invalid(String),
    /// The gzip name is not the name followed by `+gzip`.
    #[error("codec {name:?}: the gzip name must be {name:?} + \"+gzip\", not {gzip:?}")]
    GzipName {
        /// The codec's name.
        name: String,
        /// The gzip name it gave.
        gzip: String,
    },
    /// A built-in or already registered codec has this name.
    #[error("codec name {0:?} is already taken")]
    Taken(String),
}

/// The longest application codec name, in bytes.
pub const MAX_CODEC_NAME_LEN: usize = 64;

/// The codecs a server offers: the built-in four of [`WireCodec::NAMES`]
/// and the registered [`AppCodec`]s (docs/PROTOCOL.md §2).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Codecs {
    apps: Vec<AppFormat>,
}

impl fmt::Debug for Codecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Codecs {
    /// The built-in codecs only.
    pub fn new() -> Self {
        Codecs::default()
    }

    /// Adds an application codec under its name (and its gzip name, if it
    /// has one).
    pub fn register(&mut self, codec: &'static dyn AppCodec) -> Result<(), CodecNameError> {
        let name = codec.name();
        let valid = !name.is_empty()
            && name.len() <= MAX_CODEC_NAME_LEN
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
            });
        if !valid {
            return Err(CodecNameError::Invalid(name.to_owned()));
        }
        if let Some(gzip) = codec.gzip_name()
            && gzip.strip_suffix("+gzip") != Some(name)
        {
            return Err(CodecNameError::GzipName {
                name: name.to_owned(),
                gzip: gzip.to_owned(),
            });
        }
        if self.from_name(name).is_some() {
            return Err(CodecNameError::Taken(name.to_owned()));
        }
        self.apps.push(AppFormat(codec));
        Ok(())
    }

    /// The codec named `name`: a built-in one, a registered one, or a
    /// registered one's gzip form.
    pub fn from_name(&self, name: &str) -> Option<WireCodec> {
        if let Some(codec) = WireCodec::from_name(name) {
            return Some(codec);
        }
        self.apps.iter().find_map(|app| {
            if app.name() == name {
                Some(WireCodec::new(Format::App(*app), false))
            } else if app.codec().gzip_name() == Some(name) {
                Some(WireCodec::new(Format::App(*app), true))
            } else {
                None
            }
        })
    }

    /// Picks the first name in the client's order that this registry knows
    /// (docs/PROTOCOL.md §2); no offer at all means `json`.
    pub fn negotiate<'a>(&self, offers: impl IntoIterator<Item = &'a str>) -> Negotiation {
        WireCodec::negotiate_with(offers, |name| self.from_name(name))
    }

    /// Every name a client may offer: the built-in four, then each
    /// registered codec's name and gzip name.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = WireCodec::NAMES.to_vec();
        for app in &self.apps {
            names.push(app.name());
            names.extend(app.codec().gzip_name());
        }
        names
    }
}

/// `T: ?Sized` made sized, so that it coerces to `dyn erased_serde::Serialize`.
pub(crate) struct SizedRef<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for SizedRef<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Decodes a payload of an application format into `T`.
pub(crate) fn decode_payload<T: serde::de::DeserializeOwned>(
    app: AppFormat,
    raw: &[u8],
) -> Result<T, PayloadError> {
    let mut result = None;
    let outer = app.codec().deserialize_payload(raw, &mut |de| {
        result =
            Some(serde_path_to_error::deserialize::<_, T>(de).map_err(PayloadError::from_path));
        Ok(())
    });
    match (result, outer) {
        (Some(result), _) => result,
        (None, Err(e)) => Err(PayloadError {
            path: "payload".to_owned(),
            message: e.to_string(),
        }),
        (None, Ok(())) => Err(PayloadError {
            path: "payload".to_owned(),
            message: format!("codec {} did not read the payload", app.name()),
        }),
    }
}

/// Transcodes a payload of an application format into `serializer`.
pub(crate) fn transcode_payload<S: Serializer>(
    app: AppFormat,
    raw: &[u8],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    let mut serializer = Some(serializer);
    let mut result = None;
    let outer = app.codec().deserialize_payload(raw, &mut |de| {
        if let Some(serializer) = serializer.take() {
            result = Some(serde_transcode::transcode(de, serializer));
        }
        Ok(())
    });
    match (result, outer) {
        (Some(result), _) => result,
        (None, Err(e)) => Err(S::Error::custom(e)),
        (None, Ok(())) => Err(S::Error::custom(format!(
            "codec {} did not read the payload",
            app.name()
        ))),
    }
}

/// The payload of a compressed envelope in an application format
/// (docs/PROTOCOL.md §3): `{encoding: "gzip", data: <bytes>}`.
#[derive(Serialize, Deserialize)]
pub(crate) struct CompressedPayload {
    pub(crate) encoding: String,
    pub(crate) data: GzipBytes,
}

/// Bytes that serialize as a byte string and accept a byte string or a
/// sequence of bytes.
pub(crate) struct GzipBytes(pub(crate) Vec<u8>);

impl Serialize for GzipBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for GzipBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = GzipBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<GzipBytes, E> {
                Ok(GzipBytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<GzipBytes, E> {
                Ok(GzipBytes(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GzipBytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(GzipBytes(out))
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}
