//! Error codes of the protocol and the errors of decoding and encoding.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// An error code of docs/PROTOCOL.md §6 (gRPC-aligned), or an application's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No valid credentials.
    Unauthenticated,
    /// Authenticated, but not allowed.
    PermissionDenied,
    /// The message or its payload is malformed or breaks a rule.
    InvalidArgument,
    /// The system is not in the state the operation needs.
    FailedPrecondition,
    /// The thing named does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// No route for this message type.
    Unimplemented,
    /// The operation was cancelled.
    Cancelled,
    /// The deadline passed before the operation completed.
    DeadlineExceeded,
    /// A limit (rate, quota, size) was hit.
    ResourceExhausted,
    /// The service is unavailable for now; retrying may work.
    Unavailable,
    /// The operation was aborted (e.g. a concurrency conflict).
    Aborted,
    /// An internal error; no details are given to the peer.
    Internal,
    /// An application-defined code.
    Other(Cow<'static, str>),
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Other(s) => s,
            known => known.as_static_str().unwrap_or_default(),
        }
    }

    /// The code as a `&'static str`: every code of docs/PROTOCOL.md §6 and
    /// an application code given as a constant; `None` for one built at run
    /// time (or parsed from the wire), which could be anything.
    pub fn as_static_str(&self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Other(Cow::Borrowed(s)) => s,
            ErrorCode::Other(Cow::Owned(_)) => return None,
        })
    }

    /// Parses a wire code; unknown codes become [`ErrorCode::Other`].
    pub fn parse(s: &str) -> ErrorCode {
        match s {
            "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
            "PERMISSION_DENIED" => ErrorCode::PermissionDenied,
            "INVALID_ARGUMENT" => ErrorCode::InvalidArgument,
            "FAILED_PRECONDITION" => ErrorCode::FailedPrecondition,
            "NOT_FOUND" => ErrorCode::NotFound,
            "ALREADY_EXISTS" => ErrorCode::AlreadyExists,
            "UNIMPLEMENTED" => ErrorCode::Unimplemented,
            "CANCELLED" => ErrorCode::Cancelled,
            "DEADLINE_EXCEEDED" => ErrorCode::DeadlineExceeded,
            "RESOURCE_EXHAUSTED" => ErrorCode::ResourceExhausted,
            "UNAVAILABLE" => ErrorCode::Unavailable,
            "ABORTED" => ErrorCode::Aborted,
            "INTERNAL" => ErrorCode::Internal,
            other => ErrorCode::Other(Cow::Owned(other.to_owned())),
        }
    }

    /// Whether a client may retry the same request as it is (the default of
    /// the `retryable` field).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorCode::DeadlineExceeded
                | ErrorCode::ResourceExhausted
                | ErrorCode::Unavailable
                | ErrorCode::Aborted
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

/// The payload of an `ERROR` / `RPC_ERROR` message (docs/PROTOCOL.md §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    /// The error code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// Structured details, e.g. `{"path": "payload.text"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// Whether retrying the same request may succeed.
    #[serde(default)]
    pub retryable: bool,
    /// When a rate limit says when to retry, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorPayload {
    /// An error with the code's default `retryable` flag and no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorPayload {
            retryable: code.is_retryable(),
            code,
            message: message.into(),
            details: None,
            retry_after_ms: None,
        }
    }
}

/// Why a frame could not be decoded into an envelope. Every variant is
/// answered with `INVALID_ARGUMENT` (see [`DecodeError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is larger than the maximum message size.
    #[error("message of {size} bytes exceeds the maximum of {limit} bytes")]
    TooLarge {
        /// Size of the frame.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// The bytes are not valid JSON / MessagePack.
    #[error("malformed envelope: {0}")]
    Syntax(String),
    /// The envelope is not an object / map.
    #[error("envelope must be an object with a \"type\" field")]
    NotAnObject,
    /// A top-level key other than `type`, `meta`, `payload`.
    #[error("unknown envelope field {0:?}")]
    UnknownField(String),
    /// A top-level key appears twice.
    #[error("duplicate envelope field {0:?}")]
    DuplicateField(String),
    /// `type` is missing.
    #[error("envelope has no \"type\"")]
    MissingType,
    /// `type` is not a non-empty string of at most 128 bytes.
    #[error("invalid \"type\": {0}")]
    InvalidType(&'static str),
    /// `meta` is not an object of the expected shape.
    #[error("invalid \"meta\": {0}")]
    InvalidMeta(String),
    /// A compressed envelope that cannot be unwrapped.
    #[error("invalid compressed envelope: {0}")]
    Compressed(String),
    /// A compressed envelope inflates past the maximum message size.
    #[error("compressed envelope inflates past the maximum of {limit} bytes")]
    InflatedTooLarge {
        /// The configured maximum.
        limit: usize,
    },
}

impl DecodeError {
    /// The error code an answer to this failure carries.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

/// A [`DecodeError`] with whatever correlation id could still be read from
/// the rejected frame (docs/PROTOCOL.md §6: errors carry it whenever it could be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeFailure {
    /// What went wrong.
    pub error: DecodeError,
    /// `meta.correlationId` of the rejected frame, if readable.
    pub correlation_id: Option<String>,
}

/// A payload that does not match its message type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PayloadError {
    /// Where in the envelope: `payload`, `payload.text`, `payload.items[2]`.
    pub path: String,
    /// What was wrong there.
    pub message: String,
}

impl PayloadError {
    pub(crate) fn from_path<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> Self {
        let path = err.path().to_string();
        let path = if path == "." || path.is_empty() {
            "payload".to_owned()
        } else if path.starts_with('[') {
            format!("payload{path}")
        } else {
            format!("payload.{path}")
        };
        let mut message = err.inner().to_string();
        // serde_json appends a position that means nothing to the peer.
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        PayloadError { path, message }
    }
}

/// Why an envelope could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The payload's `Serialize` implementation failed.
    #[error("payload could not be serialized: {0}")]
    Serialize(String),
    /// The encoded message is larger than the maximum message size.
    #[error("encoded message of {size} bytes exceeds the maximum of {limit} bytes")]
    TooLarge {
        /// Size of the encoded message.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// The envelope type is empty or too long.
    #[error("invalid message type: {0}")]
    InvalidType(&'static str),
}
