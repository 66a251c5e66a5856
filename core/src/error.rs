//! The error a handler or middleware returns, and what the peer sees of it.

use crate::message::Invalid;
use signalbox_codec::{DecodeError, ErrorCode, ErrorPayload, PayloadError};
use std::fmt;
use std::sync::Arc;

/// The cause an [`Error`] keeps for the log and the error sink.
type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The message the peer is answered for an error it is not told about.
const GENERIC_INTERNAL: &str = "internal error";

/// The error a handler or middleware returns, and what the peer sees of it.
///
/// # From an application's error to the wire
///
/// A handler returns `Result<(), E>` (a request handler `Result<Resp, E>`)
/// for its router's error type `E` ([`crate::Router::handler_error`]): any
/// type with `Into<signalbox::Error>`. What the peer is answered
/// (docs/PROTOCOL.md §6) is the [`Error`] that conversion makes:
///
/// - a [`signalbox::Error`](Error) is answered as it is: its code, message
///   and details;
/// - an application error type answers what its `From` impl makes of it.
///   [`Error::internal_cause`] is the usual choice for a failure the peer
///   cannot act on (a database or HTTP error): INTERNAL with the generic
///   message `"internal error"`, the error itself kept as the
///   [`source`](std::error::Error::source);
/// - `Box<dyn std::error::Error + Send + Sync>` (and, with the `anyhow`
///   feature, `anyhow::Error`) answers the `signalbox::Error` it holds, if it
///   holds one, and otherwise INTERNAL `"internal error"` with the error as
///   the source.
///
/// The source never reaches the peer. It is logged (`tracing`, at error
/// level, with the message type) and reaches the router's error sink
/// ([`crate::Router::on_error`]) as `event.error.source()`, so the full
/// error is where the operator looks and nowhere else. To show the peer an
/// error's text, the application says so: `Error::internal(e.to_string())`.
///
/// An error answered to the peer as `ERROR` (or `RPC_ERROR` for a request):
/// a docs/PROTOCOL.md §6 code, a message and optional details, and
/// optionally the cause behind it, which stays on the server (see the
/// section above).
///
/// Handlers return it with `?`; the router sends it with the offending
/// message's correlationId and reports it to the error sink.
#[derive(Debug, Clone)]
pub struct Error {
    payload: ErrorPayload,
    source: Option<Source>,
}

/// Two errors are equal when the peer would be answered the same: their
/// sources are not compared.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.payload == other.payload
    }
}

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            payload: ErrorPayload::new(code, message),
            source: None,
        }
    }

    /// INTERNAL with the generic message `"internal error"`, keeping
    /// `cause` for the log and the error sink only: what an application's
    /// error the peer cannot act on (a database or HTTP failure) should
    /// become.
    ///
    /// ```
    /// use signalbox::{Error, ErrorCode};
    ///
    /// let io = std::io::Error::other("connection refused by 10.0.0.7:5432");
    /// let e = Error::internal_cause(io);
    /// assert_eq!(e.code(), &ErrorCode::Internal);
    /// assert_eq!(e.message(), "internal error");
    /// let source = std::error::Error::source(&e).map(|s| s.to_string());
    /// assert_eq!(source.as_deref(), Some("connection refused by 10.0.0.7:5432"));
    /// ```
    pub fn internal_cause(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::internal(GENERIC_INTERNAL).with_source(cause)
    }

    /// Keeps `cause` behind this error: logged and given to the error sink,
    /// never sent to the peer.
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(cause));
        self
    }

    /// An error from any boxed error: the [`Error`] it is, if it is one,
    /// otherwise [`Error::internal_cause`] of it.
    fn from_boxed(error: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(other) => Error {
                source: Some(Arc::from(other)),
                ..Error::internal(GENERIC_INTERNAL)
            },
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
        Error {
            payload,
            source: None,
        }
    }
}

/// What a handler returning `Result<_, Box<dyn std::error::Error + Send +
/// Sync>>` answers: the [`Error`] inside if the box holds one, otherwise
/// INTERNAL `"internal error"` with the boxed error as the source.
impl From<Box<dyn std::error::Error + Send + Sync + 'static>> for Error {
    fn from(error: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        Error::from_boxed(error)
    }
}

/// What a handler returning `anyhow::Result` answers: the [`Error`] inside
/// if the `anyhow::Error` wraps one, otherwise INTERNAL `"internal error"`
/// with the whole `anyhow::Error` (its context chain included) as the
/// source. Needs the `anyhow` feature.
#[cfg(feature = "anyhow")]
impl From<anyhow::Error> for Error {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast::<Error>() {
            Ok(error) => error,
            Err(other) => Error::from_boxed(other.into()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.payload.code, self.payload.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

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
