//! Schema versioning: a message type that accepts older payload versions
//! and migrates them, so the handler only ever sees the current one.
//!
//! The version travels in the payload's `version` field (absent means 1,
//! as in bun-ws-router's guide). A payload of the current version decodes
//! directly; an older one goes through [`Versioned::migrate`]; any other
//! version is refused with INVALID_ARGUMENT on `payload.version`.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use signalbox::codec::{PayloadError, RawPayload};
//! use signalbox::versioned::{self, Versioned};
//!
//! #[derive(Deserialize)]
//! struct UserUpdateV1 { name: String, email: String }
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct UserUpdate { name: String, email: String, avatar: Option<String>, version: u32 }
//!
//! impl Versioned for UserUpdate {
//!     const TYPE: &'static str = "USER_UPDATE";
//!     const VERSION: u32 = 2;
//!     fn migrate(version: u32, payload: Option<&RawPayload>) -> Result<Self, PayloadError> {
//!         match version {
//!             1 => {
//!                 let v1: UserUpdateV1 = RawPayload::decode_opt(payload)?;
//!                 Ok(UserUpdate { name: v1.name, email: v1.email, avatar: None, version: 2 })
//!             }
//!             other => Err(versioned::unsupported::<Self>(other)),
//!         }
//!     }
//! }
//! signalbox::versioned_message!(UserUpdate);
//! ```

use crate::message::Invalid;
use serde::Serialize;
use serde::de::DeserializeOwned;
use signalbox_codec::{PayloadError, RawPayload};

/// A payload type with a current version and migrations from older ones.
/// Implement it, then [`versioned_message!`](crate::versioned_message!) makes
/// it a [`crate::Message`].
pub trait Versioned: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The envelope `type`.
    const TYPE: &'static str;
    /// The current version: payloads with this `version` decode as `Self`.
    const VERSION: u32;

    /// Decodes a payload of an older `version` into the current type. Return
    /// [`unsupported`] for versions it does not know.
    fn migrate(version: u32, payload: Option<&RawPayload>) -> Result<Self, PayloadError>;

    /// Validation of the (migrated) payload; see [`crate::Message::validate`].
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// The error for a version nobody can read.
pub fn unsupported<T: Versioned>(version: u32) -> PayloadError {
    PayloadError {
        path: "payload.version".to_owned(),
        message: format!(
            "unsupported version {version} (this server reads 1..={})",
            T::VERSION
        ),
    }
}

#[derive(serde::Deserialize)]
struct VersionProbe {
    #[serde(default, rename = "version")]
    _version: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct VersionField {
    #[serde(default)]
    version: Option<u32>,
}

/// Reads the payload's version (absent: 1) and decodes or migrates it. The
/// body of [`crate::Message::decode`] for [`Versioned`] types.
pub fn decode<T: Versioned>(payload: Option<&RawPayload>) -> Result<T, PayloadError> {
    let version = match payload {
        None => 1,
        Some(raw) => {
            // A payload that is not even an object is not versioned data.
            raw.decode::<VersionProbe>()?;
            let field: VersionField = raw.decode().map_err(|_| PayloadError {
                path: "payload.version".to_owned(),
                message: "must be a positive integer".to_owned(),
            })?;
            field.version.unwrap_or(1)
        }
    };
    if version == T::VERSION {
        RawPayload::decode_opt(payload)
    } else if version == 0 || version > T::VERSION {
        Err(unsupported::<T>(version))
    } else {
        T::migrate(version, payload)
    }
}

/// Implements [`crate::Message`] for a [`Versioned`] type.
#[macro_export]
macro_rules! versioned_message {
    ($ty:ty) => {
        impl $crate::Message for $ty {
            const TYPE: &'static str = <$ty as $crate::versioned::Versioned>::TYPE;
            fn decode(
                payload: ::core::option::Option<&$crate::codec::RawPayload>,
            ) -> ::core::result::Result<Self, $crate::codec::PayloadError> {
                $crate::versioned::decode::<$ty>(payload)
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
                <$ty as $crate::versioned::Versioned>::validate(self)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use signalbox_codec::Format;

    #[derive(serde::Deserialize)]
    struct V1 {
        name: String,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct V3 {
        name: String,
        tags: Vec<String>,
        version: u32,
    }

    impl Versioned for V3 {
        const TYPE: &'static str = "T";
        const VERSION: u32 = 3;
        fn migrate(version: u32, payload: Option<&RawPayload>) -> Result<Self, PayloadError> {
            match version {
                1 => {
                    let v1: V1 = RawPayload::decode_opt(payload)?;
                    Ok(V3 {
                        name: v1.name,
                        tags: vec![],
                        version: 3,
                    })
                }
                other => Err(unsupported::<Self>(other)),
            }
        }
    }

    fn raw(json: &'static str) -> RawPayload {
        RawPayload::new(Format::Json, Bytes::from_static(json.as_bytes()))
    }

    #[test]
    fn current_decodes_old_migrates_unknown_is_refused() {
        let v3: V3 = decode(Some(&raw(r#"{"name":"a","tags":["x"],"version":3}"#))).unwrap();
        assert_eq!(v3.tags, ["x"]);
        let v1: V3 = decode(Some(&raw(r#"{"name":"a"}"#))).unwrap();
        assert_eq!(
            v1,
            V3 {
                name: "a".into(),
                tags: vec![],
                version: 3
            }
        );
        for (json, msg) in [
            (
                r#"{"name":"a","version":2}"#,
                "unsupported version 2 (this server reads 1..=3)",
            ),
            (
                r#"{"name":"a","version":9}"#,
                "unsupported version 9 (this server reads 1..=3)",
            ),
            (
                r#"{"name":"a","version":0}"#,
                "unsupported version 0 (this server reads 1..=3)",
            ),
            (
                r#"{"name":"a","version":"x"}"#,
                "must be a positive integer",
            ),
        ] {
            let err = decode::<V3>(Some(&raw(json))).unwrap_err();
            assert_eq!(err.path, "payload.version");
            assert_eq!(err.message, msg);
        }
    }
}
