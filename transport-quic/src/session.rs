//! What carries one signalbox connection over QUIC: a native connection
//! (ALPN `signalbox/<codec>`) or a WebTransport session (ALPN `h3`), and
//! their streams. Both carry the same frames (docs/PROTOCOL.md §5); they
//! differ in how streams are opened and how the connection is closed, which
//! is all this module hides.

pub use crate::error::StreamError;
use bytes::Bytes;
use signalbox::transport::CloseKind;

/// A native QUIC connection or a WebTransport session.
#[derive(Clone, Debug)]
pub(crate) enum Session {
    /// A connection with the `signalbox/<codec>` ALPN.
    Native(quinn::Connection),
    /// A WebTransport session over HTTP/3 (one per QUIC connection);
    /// boxed, being much larger than a connection handle.
    Web(Box<web_transport_quinn::Session>),
}

impl Session {
    /// The QUIC connection underneath.
    pub(crate) fn connection(&self) -> &quinn::Connection {
        match self {
            Session::Native(connection) => connection,
            Session::Web(session) => session,
        }
    }

    /// The next bidirectional stream the peer opened.
    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), StreamError> {
        match self {
            Session::Native(connection) => connection
                .accept_bi()
                .await
                .map(|(send, recv)| (SendStream::Native(send), RecvStream::Native(recv)))
                .map_err(|e| StreamError::Closed(e.to_string())),
            Session::Web(session) => session
                .accept_bi()
                .await
                .map(|(send, recv)| (SendStream::Web(send), RecvStream::Web(recv)))
                .map_err(|e| StreamError::Closed(e.to_string())),
        }
    }

    /// Opens a bidirectional stream.
    pub(crate) async fn open_bi(&self) -> Result<(SendStream, RecvStream), StreamError> {
        match self {
            Session::Native(connection) => connection
                .open_bi()
                .await
                .map(|(send, recv)| (SendStream::Native(send), RecvStream::Native(recv)))
                .map_err(|e| StreamError::Closed(e.to_string())),
            Session::Web(session) => session
                .open_bi()
                .await
                .map(|(send, recv)| (SendStream::Web(send), RecvStream::Web(recv)))
                .map_err(|e| StreamError::Closed(e.to_string())),
        }
    }

    /// Closes with the application code of `kind` (docs/PROTOCOL.md §5)
    /// and `reason`: QUIC's CONNECTION_CLOSE, or for WebTransport the
    /// session's close (CLOSE_WEBTRANSPORT_SESSION, then the connection).
    pub(crate) fn close(&self, kind: CloseKind, reason: &str) {
        self.close_with(crate::stream::close_code(kind), reason);
    }

    /// Closes with an application `code` and `reason`.
    pub(crate) fn close_with(&self, code: u32, reason: &str) {
        match self {
            Session::Native(connection) => {
                connection.close(quinn::VarInt::from_u32(code), reason.as_bytes());
            }
            Session::Web(session) => session.close(code, reason.as_bytes()),
        }
    }

    /// Whether the connection is closed (or closing).
    pub(crate) fn is_closed(&self) -> bool {
        self.connection().close_reason().is_some()
    }

    /// Resolves once the connection is closed.
    pub(crate) async fn closed(&self) {
        self.connection().closed().await;
    }

    /// Waits for the close; the peer's application code and reason, if it
    /// closed with one.
    pub(crate) async fn peer_close(&self) -> Option<(u32, String)> {
        match self {
            Session::Native(connection) => match connection.closed().await {
                quinn::ConnectionError::ApplicationClosed(close) => Some((
                    u32::try_from(close.error_code.into_inner()).unwrap_or(u32::MAX),
                    String::from_utf8_lossy(&close.reason).into_owned(),
                )),
                _ => None,
            },
            Session::Web(session) => match session.closed().await {
                web_transport_quinn::SessionError::WebTransportError(
                    web_transport_quinn::WebTransportError::Closed(code, reason),
                ) => Some((code, reason)),
                web_transport_quinn::SessionError::ConnectionError(
                    quinn::ConnectionError::ApplicationClosed(close),
                ) => web_transport_quinn::proto::error_from_http3(close.error_code.into_inner())
                    .map(|code| (code, String::from_utf8_lossy(&close.reason).into_owned())),
                _ => None,
            },
        }
    }
}

/// The sending half of a stream of either kind.
#[derive(Debug)]
pub(crate) enum SendStream {
    Native(quinn::SendStream),
    Web(web_transport_quinn::SendStream),
}

impl SendStream {
    /// Writes all of `chunks`, waiting for flow-control credit only.
    pub(crate) async fn write_all_chunks(
        &mut self,
        chunks: &mut [Bytes],
    ) -> Result<(), StreamError> {
        match self {
            SendStream::Native(send) => send.write_all_chunks(chunks).await.map_err(|e| match e {
                quinn::WriteError::ConnectionLost(_)
                | quinn::WriteError::ClosedStream
                | quinn::WriteError::Stopped(_) => StreamError::Closed(e.to_string()),
                other => StreamError::Other(other.to_string()),
            }),
            SendStream::Web(send) => send.write_all_chunks(chunks).await.map_err(|e| match e {
                web_transport_quinn::WriteError::Stopped(_)
                | web_transport_quinn::WriteError::InvalidStopped(_)
                | web_transport_quinn::WriteError::SessionError(_)
                | web_transport_quinn::WriteError::ClosedStream => {
                    StreamError::Closed(e.to_string())
                }
                #[allow(unreachable_patterns)]
                other => StreamError::Other(other.to_string()),
            }),
        }
    }

    /// Finishes the stream; `false` if it was already finished or reset.
    pub(crate) fn finish(&mut self) -> bool {
        match self {
            SendStream::Native(send) => send.finish().is_ok(),
            SendStream::Web(send) => send.finish().is_ok(),
        }
    }

    /// Abandons the stream with a stream error code.
    pub(crate) fn reset(&mut self, code: u32) {
        match self {
            SendStream::Native(send) => {
                let _ = send.reset(quinn::VarInt::from_u32(code));
            }
            SendStream::Web(send) => {
                let _ = send.reset(code);
            }
        }
    }

    /// Resolves once the peer has acknowledged everything (or stopped the
    /// stream, or the connection is gone).
    pub(crate) async fn stopped(&self) {
        match self {
            SendStream::Native(send) => {
                let _ = send.stopped().await;
            }
            SendStream::Web(send) => {
                let _ = send.stopped().await;
            }
        }
    }
}

/// The receiving half of a stream of either kind.
#[derive(Debug)]
pub(crate) enum RecvStream {
    Native(quinn::RecvStream),
    Web(web_transport_quinn::RecvStream),
}

impl RecvStream {
    /// The next chunk of at most `max` bytes, in order; `None` at the end
    /// of the stream. Cancel-safe.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        match self {
            RecvStream::Native(recv) => recv
                .read_chunk(max, true)
                .await
                .map(|chunk| chunk.map(|c| c.bytes))
                .map_err(|e| match e {
                    quinn::ReadError::ConnectionLost(_)
                    | quinn::ReadError::ClosedStream
                    | quinn::ReadError::Reset(_) => StreamError::Closed(e.to_string()),
                    other => StreamError::Other(other.to_string()),
                }),
            RecvStream::Web(recv) => recv
                .read_chunk(max, true)
                .await
                .map(|chunk| chunk.map(|c| c.bytes))
                .map_err(|e| match e {
                    web_transport_quinn::ReadError::SessionError(_)
                    | web_transport_quinn::ReadError::ClosedStream
                    | web_transport_quinn::ReadError::Reset(_)
                    | web_transport_quinn::ReadError::InvalidReset(_) => {
                        StreamError::Closed(e.to_string())
                    }
                    other => StreamError::Other(other.to_string()),
                }),
        }
    }

    /// Asks the peer to stop sending.
    pub(crate) fn stop(&mut self) {
        match self {
            RecvStream::Native(recv) => {
                let _ = recv.stop(quinn::VarInt::from_u32(0));
            }
            RecvStream::Web(recv) => {
                let _ = recv.stop(0);
            }
        }
    }
}
