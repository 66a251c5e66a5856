//! Envelopes and wire codecs for signalbox.
//!
//! Every message on the wire is one [`Envelope`]: a `type`, optional [`Meta`]
//! and an optional payload. This crate turns bytes into envelopes and back,
//! for two formats ([`Json`] and [`MsgPack`]) and the gzip-compressed
//! envelope layer on top of either ([`WireCodec`]). It knows nothing of
//! connections or routing.
//!
//! Applications add formats of their own (CBOR, Protobuf, …) by
//! implementing [`AppCodec`] and registering it in a [`Codecs`] registry,
//! which negotiates them by name beside the built-in ones
//! (docs/PROTOCOL.md §2).
//!
//! Decoding keeps the payload raw ([`RawPayload`], a slice of the received
//! frame): it is decoded straight into the handler's type once the route is
//! known, and never through a generic value tree.
//!
//! ```
//! use signalbox_codec::{Meta, WireCodec};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct SendMessage { #[serde(rename = "roomId")] room_id: String, text: String }
//!
//! // The per-connection codec a client negotiated ("json", "msgpack+gzip", …).
//! let codec = WireCodec::from_name("msgpack").unwrap();
//! let msg = SendMessage { room_id: "lobby".into(), text: "hi".into() };
//! let meta = Meta { correlation_id: Some("r-17".into()), ..Meta::default() };
//! let frame = codec.encode("SEND_MESSAGE", &meta, Some(&msg)).unwrap();
//!
//! let envelope = codec.decode(frame).unwrap();
//! assert_eq!(envelope.ty, "SEND_MESSAGE");
//! assert_eq!(envelope.meta.correlation_id.as_deref(), Some("r-17"));
//! let back: SendMessage = envelope.decode_payload().unwrap();
//! assert_eq!(back, msg);
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod app;
mod compress;
mod envelope;
mod error;
mod json;
mod msgpack;
pub mod vocab;
mod wire;

pub use app::{AppCodec, AppFormat, CodecNameError, Codecs, FrameParts, MAX_CODEC_NAME_LEN};
pub use envelope::{Envelope, MAX_TYPE_LEN, Meta, RawPayload};
pub use error::{DecodeError, DecodeFailure, EncodeError, ErrorCode, ErrorPayload, PayloadError};
pub use json::Json;
pub use msgpack::MsgPack;
pub use wire::{CodecLimits, Format, Negotiation, WireCodec};

/// Re-exported for implementing [`AppCodec`].
pub use erased_serde;

/// The `type` of a compressed envelope (docs/PROTOCOL.md §3): a re-export
/// of [`vocab::COMPRESSED`].
pub use vocab::COMPRESSED as COMPRESSED_TYPE;

/// One wire format: how an envelope and its payload become bytes.
///
/// The two implementations, [`Json`] and [`MsgPack`], are zero-sized; a
/// connection picks one at run time through [`Format`], which dispatches
/// statically to them. Application formats implement the object-safe
/// [`AppCodec`] instead.
pub trait Codec {
    /// The format tag stored in every [`RawPayload`] this codec produces.
    const FORMAT: Format;

    /// Decodes a whole envelope. The payload stays raw: a slice of `frame`.
    fn decode_envelope(frame: &bytes::Bytes) -> Result<Envelope, DecodeError>;

    /// Encodes an envelope, appending to `out`. `payload: None` omits the field.
    fn encode_envelope<T: serde::Serialize + ?Sized>(
        ty: &str,
        meta: Option<&Meta>,
        payload: Option<&T>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError>;

    /// Encodes an envelope whose payload is already encoded in this format:
    /// `payload` is copied in as it is.
    fn encode_envelope_spliced(
        ty: &str,
        meta: Option<&Meta>,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError>;

    /// Decodes a raw payload (as produced by [`Codec::decode_envelope`]) into `T`.
    fn decode_payload<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, PayloadError>;

    /// Reads `meta.correlationId` out of a frame that failed to decode, so
    /// that the error answer can still carry it.
    fn probe_correlation_id(frame: &[u8]) -> Option<String>;

    /// Writes the compressed-envelope wrapper around gzip bytes.
    fn encode_compressed(gzip: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Extracts the gzip bytes from a compressed envelope's raw payload.
    fn compressed_data(raw: &[u8]) -> Result<Vec<u8>, DecodeError>;
}
