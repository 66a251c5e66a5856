//! The envelope model of docs/PROTOCOL.md §1.

use crate::{Codec, DecodeError, Format, Json, MsgPack, PayloadError};
use bytes::Bytes;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The longest `type` accepted, in bytes.
pub const MAX_TYPE_LEN: usize = 128;

/// One decoded message: its type, meta and raw payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The message type, e.g. `SEND_MESSAGE`.
    pub ty: String,
    /// The envelope's meta (empty when the peer sent none).
    pub meta: Meta,
    /// The payload, still encoded; `None` when the envelope had no `payload`.
    pub payload: Option<RawPayload>,
}

impl Envelope {
    /// Decodes the payload into `T`. An absent payload decodes as unit, so
    /// `()`, unit structs and `Option<_>` accept it and structs report
    /// `payload` as the missing field.
    pub fn decode_payload<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        RawPayload::decode_opt(self.payload.as_ref())
    }
}

/// `type` rules shared by both formats.
pub(crate) fn check_type(ty: &str) -> Result<(), DecodeError> {
    if ty.is_empty() {
        Err(DecodeError::InvalidType("must not be empty"))
    } else if ty.len() > MAX_TYPE_LEN {
        Err(DecodeError::InvalidType("longer than 128 bytes"))
    } else {
        Ok(())
    }
}

/// A payload as received: the bytes of the `payload` value in the format of
/// the connection, shared with the frame it came in (no copy).
#[derive(Clone, PartialEq, Eq)]
pub struct RawPayload {
    format: Format,
    bytes: Bytes,
}

impl RawPayload {
    /// Wraps bytes that hold one complete value in `format`.
    pub fn new(format: Format, bytes: Bytes) -> Self {
        RawPayload { format, bytes }
    }

    /// The format of the bytes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The encoded value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes the value into `T`, naming the offending field on failure.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        match self.format {
            Format::Json => Json::decode_payload(&self.bytes),
            Format::MsgPack => MsgPack::decode_payload(&self.bytes),
            Format::App(app) => crate::app::decode_payload(app, &self.bytes),
        }
    }

    /// Decodes an optional payload; absence reads as unit.
    pub fn decode_opt<T: DeserializeOwned>(raw: Option<&RawPayload>) -> Result<T, PayloadError> {
        match raw {
            Some(raw) => raw.decode(),
            None => {
                let unit = serde::de::value::UnitDeserializer::<serde::de::value::Error>::new();
                T::deserialize(unit).map_err(|_| PayloadError {
                    path: "payload".to_owned(),
                    message: "required".to_owned(),
                })
            }
        }
    }
}

/// Serializing a raw payload transcodes it into the target format value by
/// value (no value tree). A MessagePack `bin` becomes a byte sequence, which
/// JSON writes as an array of numbers.
impl Serialize for RawPayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        match self.format {
            Format::Json => {
                let mut de = serde_json::Deserializer::from_slice(&self.bytes);
                serde_transcode::transcode(&mut de, serializer)
            }
            Format::MsgPack => {
                let mut de = crate::msgpack::deserializer(&self.bytes);
                serde_transcode::transcode(&mut de, serializer)
            }
            Format::App(app) => return crate::app::transcode_payload(app, &self.bytes, serializer),
        }
        .map_err(|e| S::Error::custom(format!("raw payload: {e}")))
    }
}

impl fmt::Debug for RawPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format {
            Format::Json => write!(
                f,
                "RawPayload(json {})",
                String::from_utf8_lossy(&self.bytes)
            ),
            Format::MsgPack => write!(f, "RawPayload(msgpack {} bytes)", self.bytes.len()),
            Format::App(app) => write!(f, "RawPayload({} {} bytes)", app.name(), self.bytes.len()),
        }
    }
}

/// Envelope meta (docs/PROTOCOL.md §1). Unknown keys are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// Set by a requester; echoed on every reply, progress message and error.
    pub correlation_id: Option<String>,
    /// Milliseconds since the Unix epoch; the server stamps what it sends.
    pub timestamp: Option<u64>,
    /// Set by the server only, naming the originating connection.
    pub client_id: Option<String>,
    /// Any other keys (extended meta), in arrival order of the map.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Meta {
    /// Meta with nothing set.
    pub fn new() -> Self {
        Meta::default()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.correlation_id.is_none()
            && self.timestamp.is_none()
            && self.client_id.is_none()
            && self.extra.is_empty()
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = usize::from(self.correlation_id.is_some())
            + usize::from(self.timestamp.is_some())
            + usize::from(self.client_id.is_some())
            + self.extra.len();
        let mut map = s.serialize_map(Some(len))?;
        if let Some(id) = &self.correlation_id {
            map.serialize_entry("correlationId", id)?;
        }
        if let Some(ts) = &self.timestamp {
            map.serialize_entry("timestamp", ts)?;
        }
        if let Some(id) = &self.client_id {
            map.serialize_entry("clientId", id)?;
        }
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MetaVisitor;
        impl<'de> Visitor<'de> for MetaVisitor {
            type Value = Meta;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E>(self) -> Result<Meta, E> {
                Ok(Meta::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                use serde::de::Error;
                let mut meta = Meta::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let dup = |k: &str| A::Error::custom(format_args!("duplicate key {k:?}"));
                    match &*key {
                        "correlationId" => {
                            if meta.correlation_id.is_some() {
                                return Err(dup("correlationId"));
                            }
                            meta.correlation_id = map.next_value::<Option<String>>()?;
                        }
                        "timestamp" => {
                            if meta.timestamp.is_some() {
                                return Err(dup("timestamp"));
                            }
                            meta.timestamp = map.next_value::<Option<u64>>()?;
                        }
                        "clientId" => {
                            if meta.client_id.is_some() {
                                return Err(dup("clientId"));
                            }
                            meta.client_id = map.next_value::<Option<String>>()?;
                        }
                        _ => {
                            let value = map.next_value::<serde_json::Value>()?;
                            meta.extra.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(meta)
            }
        }
        d.deserialize_map(MetaVisitor)
    }
}
