//! An application's refusal of a connection, in terms every transport can
//! answer with.

use crate::connection::CloseKind;
use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A connection refused at admission: by the authentication hook
/// ([`super::AuthHook`]), or by the transport's own rules ([`super::Refusal`]).
///
/// Transports that answer HTTP (WebSocket, docs/PROTOCOL.md §4) send the
/// [`status`](Self::status), [`headers`](Self::headers) and
/// [`body`](Self::body) instead of upgrading. Transports that close a
/// connection instead (QUIC, docs/PROTOCOL.md §5) close it with the
/// [`close_kind`](Self::close_kind) of the status and the body as reason.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The status (401 for [`Rejection::unauthorized`]).
    pub status: StatusCode,
    /// Extra headers for an HTTP answer (`WWW-Authenticate`, …).
    pub headers: HeaderMap,
    /// The body of an HTTP answer, as plain text; the close reason of a
    /// closed connection.
    pub body: Bytes,
}

impl Rejection {
    /// A rejection with `status` and the status's reason as body.
    pub fn new(status: StatusCode) -> Self {
        Rejection {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from_static(status.canonical_reason().unwrap_or("").as_bytes()),
        }
    }

    /// 401 Unauthorized: the client did not say who it is, or not credibly.
    pub fn unauthorized() -> Self {
        Rejection::new(StatusCode::UNAUTHORIZED)
    }

    /// 403 Forbidden: the client is known and not allowed in.
    pub fn forbidden() -> Self {
        Rejection::new(StatusCode::FORBIDDEN)
    }

    /// 408 Request Timeout with body `authentication timed out`: the
    /// authentication hook did not answer within the handshake timeout.
    pub fn auth_timed_out() -> Self {
        Rejection::new(StatusCode::REQUEST_TIMEOUT).with_body("authentication timed out")
    }

    /// Replaces the body (the close reason, on transports that close).
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a header to the HTTP answer.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// How a transport that closes connections instead of answering HTTP
    /// closes a rejected one: 503 Service Unavailable is
    /// [`CloseKind::GoingAway`] (try another server), other server errors
    /// [`CloseKind::Internal`], everything else [`CloseKind::Policy`]
    /// (QUIC codes 1, 4 and 3, docs/PROTOCOL.md §5).
    pub fn close_kind(&self) -> CloseKind {
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            CloseKind::GoingAway
        } else if self.status.is_server_error() {
            CloseKind::Internal
        } else {
            CloseKind::Policy
        }
    }

    /// The body as text, for a close reason or a log line.
    pub fn reason(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

impl From<StatusCode> for Rejection {
    fn from(status: StatusCode) -> Self {
        Rejection::new(status)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.reason())
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_rejections_carry_their_status_and_reason() {
        let r = Rejection::unauthorized();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.reason(), "Unauthorized");
        assert_eq!(Rejection::forbidden().status, StatusCode::FORBIDDEN);
        let r = Rejection::forbidden().with_body("no msgpack");
        assert_eq!(r.reason(), "no msgpack");
        assert_eq!(r.to_string(), "403 Forbidden: no msgpack");
        let r = Rejection::unauthorized().with_header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        assert_eq!(r.headers.len(), 1);
    }

    #[test]
    fn statuses_map_to_close_kinds() {
        assert_eq!(Rejection::unauthorized().close_kind(), CloseKind::Policy);
        assert_eq!(Rejection::forbidden().close_kind(), CloseKind::Policy);
        assert_eq!(Rejection::auth_timed_out().close_kind(), CloseKind::Policy);
        let unavailable = Rejection::from(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.close_kind(), CloseKind::GoingAway);
        let internal = Rejection::from(StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(internal.close_kind(), CloseKind::Internal);
    }
}
