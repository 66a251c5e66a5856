//! Messages: Rust types tied to their wire `type`, and their validation.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use signalbox_codec::{
    CodecLimits, EncodeError, Format, Meta, MsgPack, PayloadError, RawPayload, WireCodec,
};
use std::fmt;

/// A Rust type that travels as the payload of one envelope `type`.
///
/// Most messages are plain serde types and implement this trait with the
/// [`message!`](crate::message!) macro. Implement it by hand to take over
/// decoding (schema versions and migrations, see [`crate::versioned`]) or
/// to keep the payload raw (an echo that returns exactly what it got).
///
/// A type used as a message without this trait gets a compiler error that
/// says so (`core/tests/ui/not_a_message.rs`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a signalbox message",
    label = "`{Self}` does not implement `signalbox::Message`",
    note = "declare it with `signalbox::message!({Self} = \"TYPE\")` (serde types), with `signalbox::opaque_message!` (raw payloads), or implement `Message` by hand"
)]
pub trait Message: Send + Sync + Sized + 'static {
    /// The envelope `type`, e.g. `"SEND_MESSAGE"`.
    const TYPE: &'static str;

    /// Decodes the payload of an envelope of this type; `None` when the
    /// envelope had no payload.
    fn decode(payload: Option<&RawPayload>) -> Result<Self, PayloadError>;

    /// Encodes an envelope of this type for a connection's codec.
    /// `compress: false` opts this message out of gzip.
    fn encode(&self, codec: &WireCodec, meta: &Meta, compress: bool) -> Result<Bytes, EncodeError>;

    /// The payload alone in MessagePack, as a [`crate::Broker`] carries a
    /// publication to other nodes ([`crate::BrokerMessage::payload`]);
    /// `None` when the message has no payload. `limits` bound its size.
    ///
    /// The default encodes the whole envelope in MessagePack with
    /// [`Message::encode`] and reads the payload back out of it. Serde
    /// messages ([`message!`](crate::message!),
    /// [`versioned_message!`](crate::versioned_message!)) encode the payload
    /// directly ([`broker_payload_serde`]).
    fn broker_payload(&self, limits: &CodecLimits) -> Result<Option<RawPayload>, EncodeError> {
        let canonical = WireCodec::new(Format::MsgPack, false).with_limits(*limits);
        let frame = self.encode(&canonical, &Meta::default(), false)?;
        let envelope = canonical.decode(frame).map_err(|e| {
            EncodeError::Serialize(format!("the MessagePack envelope did not read back: {e}"))
        })?;
        Ok(envelope.payload)
    }

    /// Rules serde cannot express (length, range, shape). A failure is
    /// answered with INVALID_ARGUMENT naming the field.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// Decodes a serde payload: the body of [`Message::decode`] for serde types.
/// An absent payload reads as unit, so a unit struct needs none.
pub fn decode_serde<T: DeserializeOwned>(payload: Option<&RawPayload>) -> Result<T, PayloadError> {
    RawPayload::decode_opt(payload)
}

/// Encodes a serde payload: the body of [`Message::encode`] for serde types.
/// Zero-sized types (unit structs) are sent without a payload.
pub fn encode_serde<T: Serialize>(
    ty: &str,
    value: &T,
    codec: &WireCodec,
    meta: &Meta,
    compress: bool,
) -> Result<Bytes, EncodeError> {
    let payload = (size_of::<T>() != 0).then_some(value);
    codec.encode_with(ty, meta, payload, compress)
}

/// Encodes a serde payload alone in MessagePack for a broker: the body of
/// [`Message::broker_payload`] for serde types. Zero-sized types (unit
/// structs) have no payload, as in [`encode_serde`]; a payload larger than
/// `limits.max_message_size` is refused.
pub fn broker_payload_serde<T: Serialize>(
    value: &T,
    limits: &CodecLimits,
) -> Result<Option<RawPayload>, EncodeError> {
    if size_of::<T>() == 0 {
        return Ok(None);
    }
    let payload = MsgPack::encode_payload(value)?;
    let size = payload.as_bytes().len();
    if size > limits.max_message_size {
        return Err(EncodeError::TooLarge {
            size,
            limit: limits.max_message_size,
        });
    }
    Ok(Some(payload))
}

/// Implements [`Message`] for serde types.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use signalbox::{message, validate};
///
/// #[derive(Serialize, Deserialize)]
/// struct JoinRoom { #[serde(rename = "roomId")] room_id: String }
/// message!(JoinRoom = "JOIN_ROOM");
///
/// #[derive(Serialize, Deserialize)]
/// struct SendMessage { text: String }
/// // With validation rules serde cannot express:
/// message!(SendMessage = "SEND_MESSAGE", |m| validate::chars("text", &m.text, 1..=4096));
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping;
/// message!(Ping = "PING"); // sent and received without a payload
/// ```
#[macro_export]
macro_rules! message {
    ($ty:ty = $name:expr) => {
        $crate::message!($ty = $name, |_m| ::core::result::Result::Ok(()));
    };
    ($ty:ty = $name:expr, |$m:ident| $validate:expr) => {
        impl $crate::Message for $ty {
            const TYPE: &'static str = $name;
            fn decode(
                payload: ::core::option::Option<&$crate::codec::RawPayload>,
            ) -> ::core::result::Result<Self, $crate::codec::PayloadError> {
                $crate::decode_serde(payload)
            }
            fn encode(
                &self,
                codec: &$crate::codec::WireCodec,
                meta: &$crate::codec::Meta,
                compress: bool,
            ) -> ::core::result::Result<$crate::bytes::Bytes, $crate::codec::EncodeError> {
                $crate::encode_serde(<Self as $crate::Message>::TYPE, self, codec, meta, compress)
            }
            fn broker_payload(
                &self,
                limits: &$crate::codec::CodecLimits,
            ) -> ::core::result::Result<
                ::core::option::Option<$crate::codec::RawPayload>,
                $crate::codec::EncodeError,
            > {
                $crate::broker_payload_serde(self, limits)
            }
            fn validate(&self) -> ::core::result::Result<(), $crate::Invalid> {
                let $m = self;
                $validate
            }
        }
    };
}

/// A payload kept exactly as it arrived: for messages whose payload the
/// server passes on without looking inside (the chat example's `ECHO`).
///
/// Re-encoded for a connection of the same codec its bytes are copied
/// unchanged; for another codec they are transcoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Opaque(pub Option<RawPayload>);

impl Opaque {
    /// Decodes the payload as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        RawPayload::decode_opt(self.0.as_ref())
    }

    /// Encodes an envelope of type `ty` carrying this payload.
    pub fn encode(
        &self,
        ty: &str,
        codec: &WireCodec,
        meta: &Meta,
        compress: bool,
    ) -> Result<Bytes, EncodeError> {
        codec.encode_raw(ty, meta, self.0.as_ref(), compress)
    }
}

/// Declares a message whose payload is [`Opaque`]: any payload, kept raw.
///
/// ```
/// signalbox::opaque_message!(
///     /// `ECHO`: any payload, answered unchanged.
///     pub Echo = "ECHO"
/// );
/// ```
#[macro_export]
macro_rules! opaque_message {
    ($(#[$attr:meta])* $vis:vis $name:ident = $ty:expr) => {
        $(#[$attr])*
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::default::Default, ::core::cmp::PartialEq)]
        $vis struct $name(pub $crate::Opaque);

        impl $crate::Message for $name {
            const TYPE: &'static str = $ty;
            fn decode(
                payload: ::core::option::Option<&$crate::codec::RawPayload>,
            ) -> ::core::result::Result<Self, $crate::codec::PayloadError> {
                ::core::result::Result::Ok($name($crate::Opaque(payload.cloned())))
            }
            fn encode(
                &self,
                codec: &$crate::codec::WireCodec,
                meta: &$crate::codec::Meta,
                compress: bool,
            ) -> ::core::result::Result<$crate::bytes::Bytes, $crate::codec::EncodeError> {
                self.0.encode(<Self as $crate::Message>::TYPE, codec, meta, compress)
            }
        }
    };
}

/// A broken validation rule: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field, relative to the payload: `text`, `items[2].name`.
    pub field: String,
    /// What is wrong, for humans.
    pub message: String,
}

impl Invalid {
    /// A broken rule on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The path as errors report it: `payload.text`.
    pub fn path(&self) -> String {
        if self.field.is_empty() {
            "payload".to_owned()
        } else {
            format!("payload.{}", self.field)
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path(), self.message)
    }
}

impl std::error::Error for Invalid {}

/// Validation rules for [`Message::validate`]: the constraints a zod schema
/// would state, each returning the [`Invalid`] that names the field.
pub mod validate {
    use super::Invalid;
    use std::ops::RangeInclusive;

    /// `value` has a length in Unicode scalar values within `range`.
    pub fn chars(field: &str, value: &str, range: RangeInclusive<usize>) -> Result<(), Invalid> {
        // Stop counting past the maximum: a huge string costs no more.
        let n = value.chars().take(range.end().saturating_add(1)).count();
        if range.contains(&n) {
            Ok(())
        } else if n < *range.start() {
            Err(Invalid::new(
                field,
                format!("must have at least {} characters", range.start()),
            ))
        } else {
            Err(Invalid::new(
                field,
                format!("must have at most {} characters", range.end()),
            ))
        }
    }

    /// `value` lies within `range`.
    pub fn range<T: PartialOrd + std::fmt::Display>(
        field: &str,
        value: T,
        range: RangeInclusive<T>,
    ) -> Result<(), Invalid> {
        if range.contains(&value) {
            Ok(())
        } else {
            Err(Invalid::new(
                field,
                format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    }

    /// `value` has the shape of an e-mail address (`local@domain.tld`, no
    /// spaces). Deliverability is not checked.
    pub fn email(field: &str, value: &str) -> Result<(), Invalid> {
        let ok = value.len() <= 254
            && !value.chars().any(char::is_whitespace)
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.split('.').count() >= 2
                    && domain.split('.').all(|label| !label.is_empty())
            });
        if ok {
            Ok(())
        } else {
            Err(Invalid::new(field, "must be an e-mail address"))
        }
    }

    /// `value` has the shape of an absolute `http`/`https` URL with a host.
    pub fn url(field: &str, value: &str) -> Result<(), Invalid> {
        let rest = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"));
        let ok = value.len() <= 2048
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && rest.is_some_and(|r| {
                let host = r.split(['/', '?', '#']).next().unwrap_or("");
                !host.is_empty() && !host.starts_with(':')
            });
        if ok {
            Ok(())
        } else {
            Err(Invalid::new(field, "must be an http(s) URL"))
        }
    }

    /// `value` is one of `allowed`.
    pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), Invalid> {
        if allowed.contains(&value) {
            Ok(())
        } else {
            Err(Invalid::new(
                field,
                format!("must be one of {}", allowed.join(", ")),
            ))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn chars_counts_scalar_values() {
            assert!(chars("t", "héllo", 1..=5).is_ok());
            assert_eq!(
                chars("t", "", 1..=5).unwrap_err().message,
                "must have at least 1 characters"
            );
            assert!(chars("t", "héllo!", 1..=5).is_err());
        }

        #[test]
        fn shapes() {
            assert!(email("e", "a@b.co").is_ok());
            for bad in ["a", "a@b", "@b.co", "a@b..co", "a b@c.d", "a@b@c.d"] {
                assert!(email("e", bad).is_err(), "{bad}");
            }
            assert!(url("u", "https://example.com/x?y").is_ok());
            for bad in ["example.com", "ftp://x.y", "https://", "http:// x"] {
                assert!(url("u", bad).is_err(), "{bad}");
            }
            assert!(range("n", 5, 1..=10).is_ok());
            assert!(range("n", 0, 1..=10).is_err());
            assert!(one_of("r", "admin", &["admin", "user"]).is_ok());
        }
    }
}

#[cfg(test)]
mod broker_payload_tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Note {
        text: String,
        big: u64,
        ratio: f64,
        tags: Vec<Option<String>>,
        by: BTreeMap<String, i64>,
    }
    crate::message!(Note = "NOTE");

    /// The same message through the default `broker_payload`: the whole
    /// envelope encoded, then read back.
    struct ViaEnvelope<T>(T);

    impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Message for ViaEnvelope<T> {
        const TYPE: &'static str = "NOTE";
        fn decode(payload: Option<&RawPayload>) -> Result<Self, PayloadError> {
            decode_serde(payload).map(ViaEnvelope)
        }
        fn encode(
            &self,
            codec: &WireCodec,
            meta: &Meta,
            compress: bool,
        ) -> Result<Bytes, EncodeError> {
            encode_serde(Self::TYPE, &self.0, codec, meta, compress)
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    struct Ping;
    crate::message!(Ping = "PING");

    fn note() -> Note {
        Note {
            text: "héllo ✓".into(),
            big: (1 << 53) + 1,
            ratio: 0.1,
            tags: vec![Some("a".into()), None],
            by: [("x".to_owned(), -3), ("y".to_owned(), 70_000)].into(),
        }
    }

    #[test]
    fn direct_encoding_gives_the_bytes_the_envelope_round_trip_gave() {
        let limits = CodecLimits::default();
        let direct = note().broker_payload(&limits).unwrap().unwrap();
        let via = ViaEnvelope(note())
            .broker_payload(&limits)
            .unwrap()
            .unwrap();
        assert_eq!(direct.format(), Format::MsgPack);
        assert_eq!(direct.as_bytes(), via.as_bytes());
        assert_eq!(direct.decode::<Note>().unwrap(), note());
    }

    #[test]
    fn a_unit_message_has_no_payload_either_way() {
        let limits = CodecLimits::default();
        assert_eq!(Ping.broker_payload(&limits).unwrap(), None);
        assert_eq!(ViaEnvelope(Ping).broker_payload(&limits).unwrap(), None);
    }

    #[test]
    fn a_payload_over_the_maximum_message_size_is_refused() {
        let limits = CodecLimits {
            max_message_size: 16,
            ..CodecLimits::default()
        };
        let refused = note().broker_payload(&limits).unwrap_err();
        assert!(
            matches!(refused, EncodeError::TooLarge { limit: 16, .. }),
            "{refused:?}"
        );
        assert!(ViaEnvelope(note()).broker_payload(&limits).is_err());
    }
}
