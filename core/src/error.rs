//! The error a handler or middleware returns, and what the peer sees of it.

use crate::message::Invalid;
use signalbox_codec::{DecodeError, ErrorCode, ErrorPayload, PayloadError};
use std::fmt;

/// An error answered to the peer as `ERROR` (or `RPC_ERROR` for a request):
/// a docs/PROTOCOL.md §6 code, a message and optional details.
///
/// Handlers return it with `?`; the router sends it with the offending
/// message's correlationId and reports it to the error sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    payload: ErrorPayload,
}

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            payload: ErrorPayload::new(code, message),
        }
    }

    /// UNAUTHENTICATED.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unauthenticated, message)
    }

    /// PERMISSION_DENIED.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::PermissionDenied, message)
    }

    /// INVALID_ARGUMENT.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    /// NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::NotFound, message)
    }

    /// FAILED_PRECONDITION.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::FailedPrecondition, message)
    }

    /// RESOURCE_EXHAUSTED, optionally saying when to retry.
    pub fn resource_exhausted(message: impl Into<String>, retry_after_ms: Option<u64>) -> Self {
        let mut e = Error::new(ErrorCode::ResourceExhausted, message);
        e.payload.retry_after_ms = retry_after_ms;
        e
    }

    /// UNAVAILABLE.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unavailable, message)
    }

    /// INTERNAL. The message reaches the peer: keep internals out of it.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }

    /// Adds structured details (any serde value).
    pub fn with_details(mut self, details: impl serde::Serialize) -> Self {
        self.payload.details = serde_json::to_value(details).ok().filter(|v| !v.is_null());
        self
    }

    /// Overrides whether retrying may succeed.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.payload.retryable = retryable;
        self
    }

    /// The code.
    pub fn code(&self) -> &ErrorCode {
        &self.payload.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.payload.message
    }

    /// The wire payload.
    pub fn payload(&self) -> &ErrorPayload {
        &self.payload
    }

    /// Converts into the wire payload.
    pub fn into_payload(self) -> ErrorPayload {
        self.payload
    }
}

impl From<ErrorPayload> for Error {
    fn from(payload: ErrorPayload) -> Self {
        Error { payload }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.payload.code, self.payload.message)
    }
}

impl std::error::Error for Error {}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        let path = invalid.path();
        Error::invalid_argument(format!("{path}: {}", invalid.message))
            .with_details(serde_json::json!({ "path": path }))
    }
}

impl From<PayloadError> for Error {
    fn from(e: PayloadError) -> Self {
        Error::invalid_argument(format!("{}: {}", e.path, e.message))
            .with_details(serde_json::json!({ "path": e.path }))
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::new(e.code(), e.to_string())
    }
}
