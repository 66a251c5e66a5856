//! A CBOR (RFC 8949) application codec through `ciborium`, shared by the
//! WebSocket and QUIC tests of application codecs (docs/PROTOCOL.md §2).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde::{Deserialize, Serialize};
use signalbox::codec::erased_serde;
use signalbox::codec::{AppCodec, Codecs, DecodeError, EncodeError, FrameParts, Meta, WireCodec};

/// CBOR (RFC 8949) through `ciborium`. ciborium has no public streaming
/// deserializer, so a payload is read into a `ciborium::Value` and handed
/// on as MessagePack, which keeps every CBOR value kind the tests use
/// (maps, arrays, text, byte strings, integers, floats).
pub struct Cbor;

pub static CBOR: Cbor = Cbor;

#[derive(Serialize)]
struct OutEnvelope<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a Meta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a dyn erased_serde::Serialize>,
}

#[derive(Deserialize)]
struct InEnvelope {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    meta: Option<Meta>,
    #[serde(default)]
    payload: Option<ciborium::Value>,
}

impl AppCodec for Cbor {
    fn name(&self) -> &'static str {
        "cbor"
    }

    fn gzip_name(&self) -> Option<&'static str> {
        Some("cbor+gzip")
    }

    fn encode_envelope(
        &self,
        ty: &str,
        meta: Option<&Meta>,
        payload: Option<&dyn erased_serde::Serialize>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let envelope = OutEnvelope { ty, meta, payload };
        ciborium::into_writer(&envelope, out).map_err(|e| EncodeError::Serialize(e.to_string()))
    }

    fn decode_envelope(&self, frame: &bytes::Bytes) -> Result<FrameParts, DecodeError> {
        let envelope: InEnvelope =
            ciborium::from_reader(&frame[..]).map_err(|e| DecodeError::Syntax(e.to_string()))?;
        let payload = match envelope.payload {
            Some(value) => {
                let mut raw = Vec::new();
                ciborium::into_writer(&value, &mut raw)
                    .map_err(|e| DecodeError::Syntax(e.to_string()))?;
                Some(bytes::Bytes::from(raw))
            }
            None => None,
        };
        Ok(FrameParts {
            ty: envelope.ty,
            meta: envelope.meta.unwrap_or_default(),
            payload,
        })
    }

    fn deserialize_payload(
        &self,
        raw: &[u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'_>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), erased_serde::Error> {
        use serde::de::Error as _;
        let value: ciborium::Value =
            ciborium::from_reader(raw).map_err(erased_serde::Error::custom)?;
        let msgpack = rmp_serde::to_vec(&value).map_err(erased_serde::Error::custom)?;
        let mut de = rmp_serde::Deserializer::from_read_ref(&msgpack);
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de))
    }
}

/// The codec named `name` (`cbor` or `cbor+gzip`).
pub fn codec(name: &str) -> WireCodec {
    let mut codecs = Codecs::new();
    codecs.register(&CBOR).unwrap();
    codecs.from_name(name).unwrap()
}

/// The `type` of a CBOR envelope, read with a plain CBOR reader.
pub fn envelope_type(frame: &[u8]) -> String {
    let value: ciborium::Value = ciborium::from_reader(frame).unwrap();
    let map = value.as_map().expect("an envelope map");
    map.iter()
        .find(|(k, _)| k.as_text() == Some("type"))
        .and_then(|(_, v)| v.as_text())
        .expect("a text type")
        .to_owned()
}
