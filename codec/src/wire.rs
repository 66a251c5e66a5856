//! The per-connection codec: a format, optional gzip, and the size limits.

use crate::app::{AppFormat, CompressedPayload, GzipBytes, SizedRef};
use crate::{
    COMPRESSED_TYPE, Codec, DecodeError, DecodeFailure, EncodeError, Envelope, Json, Meta, MsgPack,
    RawPayload, compress,
};
use bytes::Bytes;
use serde::Serialize;

/// The wire formats: the built-in two and the registered application
/// codecs ([`crate::Codecs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON ([`Json`]).
    Json,
    /// MessagePack ([`MsgPack`]).
    MsgPack,
    /// An application codec ([`crate::AppCodec`]).
    App(AppFormat),
}

impl Format {
    /// Whether frames of this format are text (WebSocket text frames).
    pub fn is_text(self) -> bool {
        match self {
            Format::Json => true,
            Format::MsgPack => false,
            Format::App(app) => app.codec().is_text(),
        }
    }
}

/// Size limits and compression settings for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecLimits {
    /// Largest message accepted or sent, in bytes, before and after
    /// inflating. Default 1 MiB.
    pub max_message_size: usize,
    /// For `+gzip` connections: outgoing messages whose encoding is at least
    /// this many bytes are compressed, smaller ones never. Default 1024.
    pub compress_threshold: usize,
    /// gzip level, 0 (store) to 9 (smallest). Default 6.
    pub compression_level: u32,
}

impl Default for CodecLimits {
    fn default() -> Self {
        CodecLimits {
            max_message_size: 1024 * 1024,
            compress_threshold: 1024,
            compression_level: 6,
        }
    }
}

/// The codec a connection negotiated: a [`Format`], whether the client takes
/// compressed envelopes, and the limits.
///
/// Decoding accepts compressed envelopes from every client; only `+gzip`
/// connections are sent compressed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireCodec {
    format: Format,
    gzip: bool,
    limits: CodecLimits,
}

/// The outcome of choosing a codec from a client's offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// The client offered nothing: the default, `json`.
    Default(WireCodec),
    /// The first known name in the client's order.
    Picked(WireCodec),
    /// The client offered only names this server does not know.
    Refused,
}

impl WireCodec {
    /// Every name a client may offer, in the server's preference order.
    pub const NAMES: [&'static str; 4] = ["json", "msgpack", "json+gzip", "msgpack+gzip"];

    /// A codec with default limits.
    pub fn new(format: Format, gzip: bool) -> Self {
        WireCodec {
            format,
            gzip,
            limits: CodecLimits::default(),
        }
    }

    /// The built-in codec named `name` (`json`, `msgpack`, `json+gzip`,
    /// `msgpack+gzip`); [`crate::Codecs::from_name`] knows application
    /// codecs too.
    pub fn from_name(name: &str) -> Option<Self> {
        let (format, gzip) = match name {
            "json" => (Format::Json, false),
            "msgpack" => (Format::MsgPack, false),
            "json+gzip" => (Format::Json, true),
            "msgpack+gzip" => (Format::MsgPack, true),
            _ => return None,
        };
        Some(WireCodec::new(format, gzip))
    }

    /// Picks the first built-in name in the client's order
    /// (docs/PROTOCOL.md §2); [`crate::Codecs::negotiate`] knows
    /// application codecs too.
    pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Negotiation {
        WireCodec::negotiate_with(offers, WireCodec::from_name)
    }

    pub(crate) fn negotiate_with<'a>(
        offers: impl IntoIterator<Item = &'a str>,
        from_name: impl Fn(&str) -> Option<WireCodec>,
    ) -> Negotiation {
        let mut offered = false;
        for offer in offers {
            let offer = offer.trim();
            if offer.is_empty() {
                continue;
            }
            offered = true;
            if let Some(codec) = from_name(offer) {
                return Negotiation::Picked(codec);
            }
        }
        if offered {
            Negotiation::Refused
        } else {
            Negotiation::Default(WireCodec::new(Format::Json, false))
        }
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: CodecLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The codec's name as negotiated.
    pub fn name(&self) -> &'static str {
        match (self.format, self.gzip) {
            (Format::Json, false) => "json",
            (Format::MsgPack, false) => "msgpack",
            (Format::Json, true) => "json+gzip",
            (Format::MsgPack, true) => "msgpack+gzip",
            (Format::App(app), false) => app.name(),
            // A gzip codec of an application format is only built from its
            // gzip name (`Codecs::from_name`).
            (Format::App(app), true) => app.codec().gzip_name().unwrap_or(app.name()),
        }
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the client takes compressed envelopes.
    pub fn gzip(&self) -> bool {
        self.gzip
    }

    /// The limits.
    pub fn limits(&self) -> &CodecLimits {
        &self.limits
    }

    /// Decodes one frame, unwrapping a compressed envelope.
    pub fn decode(&self, frame: Bytes) -> Result<Envelope, DecodeFailure> {
        let limit = self.limits.max_message_size;
        if frame.len() > limit {
            return Err(self.fail(
                &frame,
                DecodeError::TooLarge {
                    size: frame.len(),
                    limit,
                },
            ));
        }
        let envelope = self
            .decode_plain(&frame)
            .map_err(|e| self.fail(&frame, e))?;
        if envelope.ty != COMPRESSED_TYPE {
            return Ok(envelope);
        }
        let inner = self.inflate(&envelope).map_err(|e| self.fail(&frame, e))?;
        match self.decode_plain(&inner) {
            Ok(inner) if inner.ty == COMPRESSED_TYPE => Err(DecodeFailure {
                correlation_id: inner.meta.correlation_id,
                error: DecodeError::Compressed("nested compressed envelope".into()),
            }),
            Ok(inner) => Ok(inner),
            Err(error) => Err(self.fail(&inner, error)),
        }
    }

    fn decode_plain(&self, frame: &Bytes) -> Result<Envelope, DecodeError> {
        match self.format {
            Format::Json => Json::decode_envelope(frame),
            Format::MsgPack => MsgPack::decode_envelope(frame),
            Format::App(app) => decode_app(app, frame),
        }
    }

    fn inflate(&self, wrapper: &Envelope) -> Result<Bytes, DecodeError> {
        if !wrapper.meta.is_empty() {
            return Err(DecodeError::Compressed(
                "the wrapper carries no meta; meta travels inside".into(),
            ));
        }
        let raw = wrapper
            .payload
            .as_ref()
            .ok_or_else(|| DecodeError::Compressed("missing payload".into()))?;
        let gzip = match self.format {
            Format::Json => Json::compressed_data(raw.as_bytes())?,
            Format::MsgPack => MsgPack::compressed_data(raw.as_bytes())?,
            Format::App(_) => {
                let wrapper: CompressedPayload = raw
                    .decode()
                    .map_err(|e| DecodeError::Compressed(e.to_string()))?;
                if wrapper.encoding != "gzip" {
                    return Err(DecodeError::Compressed(format!(
                        "unknown encoding {:?}",
                        wrapper.encoding
                    )));
                }
                wrapper.data.0
            }
        };
        compress::inflate(&gzip, self.limits.max_message_size).map(Bytes::from)
    }

    fn fail(&self, frame: &[u8], error: DecodeError) -> DecodeFailure {
        let correlation_id = match self.format {
            Format::Json => Json::probe_correlation_id(frame),
            Format::MsgPack => MsgPack::probe_correlation_id(frame),
            Format::App(app) => app.codec().probe_correlation_id(frame),
        };
        DecodeFailure {
            error,
            correlation_id,
        }
    }

    /// Encodes an envelope, compressing it for `+gzip` clients when it
    /// reaches the threshold.
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        ty: &str,
        meta: &Meta,
        payload: Option<&T>,
    ) -> Result<Bytes, EncodeError> {
        self.encode_with(ty, meta, payload, true)
    }

    /// Encodes an envelope whose payload is a [`RawPayload`] as received.
    ///
    /// When the payload is already in this codec's format its bytes are
    /// copied in unchanged (a MessagePack `bin`, a big integer, a float all
    /// stay exactly what they were); otherwise it is transcoded value by
    /// value, without building a value tree.
    pub fn encode_raw(
        &self,
        ty: &str,
        meta: &Meta,
        payload: Option<&RawPayload>,
        compress: bool,
    ) -> Result<Bytes, EncodeError> {
        match payload {
            Some(raw) if raw.format() == self.format => {
                self.encode_inner(ty, meta, compress, |meta, out| match self.format {
                    Format::Json => Json::encode_envelope_spliced(ty, meta, raw.as_bytes(), out),
                    Format::MsgPack => {
                        MsgPack::encode_envelope_spliced(ty, meta, raw.as_bytes(), out)
                    }
                    Format::App(app) => app.codec().encode_envelope(
                        ty,
                        meta,
                        Some(raw as &dyn erased_serde::Serialize),
                        out,
                    ),
                })
            }
            other => self.encode_with(ty, meta, other, compress),
        }
    }

    /// Like [`WireCodec::encode`]; `compress: false` never compresses (the
    /// per-route or per-message opt-out).
    pub fn encode_with<T: Serialize + ?Sized>(
        &self,
        ty: &str,
        meta: &Meta,
        payload: Option<&T>,
        compress: bool,
    ) -> Result<Bytes, EncodeError> {
        self.encode_inner(ty, meta, compress, |meta, out| match self.format {
            Format::Json => Json::encode_envelope(ty, meta, payload, out),
            Format::MsgPack => MsgPack::encode_envelope(ty, meta, payload, out),
            Format::App(app) => {
                let payload = payload.map(SizedRef);
                let payload = payload.as_ref().map(|p| p as &dyn erased_serde::Serialize);
                app.codec().encode_envelope(ty, meta, payload, out)
            }
        })
    }

    fn encode_inner(
        &self,
        ty: &str,
        meta: &Meta,
        compress: bool,
        write: impl FnOnce(Option<&Meta>, &mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<Bytes, EncodeError> {
        if ty.is_empty() {
            return Err(EncodeError::InvalidType("must not be empty"));
        }
        if ty.len() > crate::MAX_TYPE_LEN {
            return Err(EncodeError::InvalidType("longer than 128 bytes"));
        }
        let meta = (!meta.is_empty()).then_some(meta);
        let mut out = Vec::with_capacity(128);
        write(meta, &mut out)?;
        if compress && self.gzip && out.len() >= self.limits.compress_threshold {
            let gzip = compress::deflate(&out, self.limits.compression_level);
            out.clear();
            match self.format {
                Format::Json => Json::encode_compressed(&gzip, &mut out)?,
                Format::MsgPack => MsgPack::encode_compressed(&gzip, &mut out)?,
                Format::App(app) => {
                    let wrapper = CompressedPayload {
                        encoding: "gzip".to_owned(),
                        data: GzipBytes(gzip),
                    };
                    app.codec().encode_envelope(
                        COMPRESSED_TYPE,
                        None,
                        Some(&wrapper as &dyn erased_serde::Serialize),
                        &mut out,
                    )?
                }
            }
        }
        if out.len() > self.limits.max_message_size {
            return Err(EncodeError::TooLarge {
                size: out.len(),
                limit: self.limits.max_message_size,
            });
        }
        Ok(Bytes::from(out))
    }
}

/// Decodes an envelope of an application format, checking the `type` as the
/// built-in formats do.
fn decode_app(app: AppFormat, frame: &Bytes) -> Result<Envelope, DecodeError> {
    let parts = app.codec().decode_envelope(frame)?;
    crate::envelope::check_type(&parts.ty)?;
    Ok(Envelope {
        ty: parts.ty,
        meta: parts.meta,
        payload: parts
            .payload
            .map(|bytes| RawPayload::new(Format::App(app), bytes)),
    })
}
