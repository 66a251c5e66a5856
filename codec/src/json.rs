//! The JSON format: envelopes as JSON objects, WebSocket text frames.

use crate::envelope::check_type;
use crate::{Codec, DecodeError, EncodeError, Envelope, Format, Meta, PayloadError, RawPayload};
use base64::Engine;
use bytes::Bytes;
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::fmt;

/// JSON envelopes (`{"type":…,"meta":…,"payload":…}`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

/// Standard base64; padding required when encoding, optional when decoding.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

impl Codec for Json {
    const FORMAT: Format = Format::Json;

    fn decode_envelope(frame: &Bytes) -> Result<Envelope, DecodeError> {
        let rejection = RefCell::new(None);
        let seed = EnvelopeSeed {
            frame,
            rejection: &rejection,
        };
        let mut de = serde_json::Deserializer::from_slice(frame);
        let result = seed
            .deserialize(&mut de)
            .and_then(|env| de.end().map(|()| env));
        match result {
            Ok(env) => Ok(env),
            Err(err) => Err(rejection.into_inner().unwrap_or_else(|| {
                let first = frame.iter().find(|b| !b.is_ascii_whitespace());
                if err.is_data() && first != Some(&b'{') {
                    DecodeError::NotAnObject
                } else {
                    DecodeError::Syntax(strip_position(err.to_string()))
                }
            })),
        }
    }

    fn encode_envelope<T: Serialize + ?Sized>(
        ty: &str,
        meta: Option<&Meta>,
        payload: Option<&T>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        out.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut *out, ty).map_err(ser)?;
        if let Some(meta) = meta {
            out.extend_from_slice(b",\"meta\":");
            serde_json::to_writer(&mut *out, meta).map_err(ser)?;
        }
        if let Some(payload) = payload {
            out.extend_from_slice(b",\"payload\":");
            serde_json::to_writer(&mut *out, payload).map_err(ser)?;
        }
        out.push(b'}');
        Ok(())
    }

    fn encode_envelope_spliced(
        ty: &str,
        meta: Option<&Meta>,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        out.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut *out, ty).map_err(ser)?;
        if let Some(meta) = meta {
            out.extend_from_slice(b",\"meta\":");
            serde_json::to_writer(&mut *out, meta).map_err(ser)?;
        }
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(payload);
        out.push(b'}');
        Ok(())
    }

    fn decode_payload<T: DeserializeOwned>(raw: &[u8]) -> Result<T, PayloadError> {
        let mut de = serde_json::Deserializer::from_slice(raw);
        let value = serde_path_to_error::deserialize(&mut de).map_err(PayloadError::from_path)?;
        de.end().map_err(|e| PayloadError {
            path: "payload".to_owned(),
            message: strip_position(e.to_string()),
        })?;
        Ok(value)
    }

    fn probe_correlation_id(frame: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Probe {
            meta: Option<ProbeMeta>,
        }
        #[derive(Deserialize)]
        struct ProbeMeta {
            #[serde(rename = "correlationId")]
            correlation_id: Option<String>,
        }
        let probe: Probe = serde_json::from_slice(frame).ok()?;
        probe.meta?.correlation_id
    }

    fn encode_compressed(gzip: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(crate::vocab::COMPRESSED.as_bytes());
        out.extend_from_slice(br#"","payload":{"encoding":"gzip","data":""#);
        let start = out.len();
        out.resize(
            start + base64::encoded_len(gzip.len(), true).unwrap_or(0),
            0,
        );
        let written = BASE64
            .encode_slice(gzip, &mut out[start..])
            .map_err(|e| EncodeError::Serialize(e.to_string()))?;
        out.truncate(start + written);
        out.extend_from_slice(b"\"}}");
        Ok(())
    }

    fn compressed_data(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrapper<'a> {
            // Cow: a string with escapes (`"\/"`) cannot be borrowed.
            #[serde(borrow)]
            encoding: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            data: std::borrow::Cow<'a, str>,
        }
        let wrapper: Wrapper<'_> = serde_json::from_slice(raw).map_err(|e| {
            DecodeError::Compressed(format!(
                "payload must be {{\"encoding\":\"gzip\",\"data\":<base64>}}: {}",
                strip_position(e.to_string())
            ))
        })?;
        if wrapper.encoding != "gzip" {
            return Err(DecodeError::Compressed(format!(
                "unsupported encoding {:?}",
                wrapper.encoding
            )));
        }
        BASE64
            .decode(wrapper.data.as_bytes())
            .map_err(|e| DecodeError::Compressed(format!("data is not base64: {e}")))
    }
}

fn ser(e: serde_json::Error) -> EncodeError {
    EncodeError::Serialize(e.to_string())
}

/// serde_json appends "at line 1 column 7", which means nothing to a peer
/// that sent one frame.
fn strip_position(mut message: String) -> String {
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    message
}

/// Reads the envelope keys one by one so that each rejection gets its own
/// [`DecodeError`] (stored aside, since serde's error type is a string).
struct EnvelopeSeed<'f, 'r> {
    frame: &'f Bytes,
    rejection: &'r RefCell<Option<DecodeError>>,
}

impl EnvelopeSeed<'_, '_> {
    fn reject<E: serde::de::Error>(&self, error: DecodeError) -> E {
        let message = error.to_string();
        *self.rejection.borrow_mut() = Some(error);
        E::custom(message)
    }
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_, '_> {
    type Value = Envelope;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Envelope, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_, '_> {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut ty: Option<String> = None;
        let mut meta: Option<Meta> = None;
        let mut payload: Option<&'de RawValue> = None;
        while let Some(key) = map.next_key::<KeyName>()? {
            match key {
                KeyName::Type => {
                    if ty.is_some() {
                        return Err(self.reject(DecodeError::DuplicateField("type".into())));
                    }
                    let value = map
                        .next_value::<String>()
                        .map_err(|_| self.reject(DecodeError::InvalidType("must be a string")))?;
                    check_type(&value).map_err(|e| self.reject(e))?;
                    ty = Some(value);
                }
                KeyName::Meta => {
                    if meta.is_some() {
                        return Err(self.reject(DecodeError::DuplicateField("meta".into())));
                    }
                    let value = map.next_value::<Option<Meta>>().map_err(|e: A::Error| {
                        self.reject(DecodeError::InvalidMeta(strip_position(e.to_string())))
                    })?;
                    meta = Some(value.unwrap_or_default());
                }
                KeyName::Payload => {
                    if payload.is_some() {
                        return Err(self.reject(DecodeError::DuplicateField("payload".into())));
                    }
                    payload = Some(map.next_value::<&'de RawValue>()?);
                }
                KeyName::Unknown(name) => {
                    return Err(self.reject(DecodeError::UnknownField(name)));
                }
            }
        }
        let ty = ty.ok_or_else(|| self.reject(DecodeError::MissingType))?;
        let payload = payload
            .map(|raw| RawPayload::new(Format::Json, self.frame.slice_ref(raw.get().as_bytes())));
        Ok(Envelope {
            ty,
            meta: meta.unwrap_or_default(),
            payload,
        })
    }
}

enum KeyName {
    Type,
    Meta,
    Payload,
    Unknown(String),
}

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<KeyName, E> {
                Ok(match key {
                    "type" => KeyName::Type,
                    "meta" => KeyName::Meta,
                    "payload" => KeyName::Payload,
                    other => KeyName::Unknown(other.chars().take(64).collect()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}
