//! The seam: a WebSocket stream as a [`FrameSource`] and a [`FrameSink`].

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use signalbox::codec::{CodecLimits, WireCodec};
use signalbox::connection::{Close, FrameSink, FrameSource, Inbound, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// Read buffer per connection, allocated at the upgrade. Small, so that idle
/// connections stay cheap (see the crate docs for the measurement); a
/// message larger than it grows it as needed. Raise it for connections that
/// read a lot: fewer reads from the socket per message.
pub const DEFAULT_READ_BUFFER: usize = 2 * 1024;
/// Bytes of outgoing frames gathered before a write to the socket within a
/// batch (every batch is flushed whole at its end).
pub const DEFAULT_WRITE_BUFFER: usize = 4 * 1024;

/// Buffer sizes of one WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    /// See [`DEFAULT_READ_BUFFER`].
    pub read: usize,
    /// See [`DEFAULT_WRITE_BUFFER`].
    pub write: usize,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            read: DEFAULT_READ_BUFFER,
            write: DEFAULT_WRITE_BUFFER,
        }
    }
}

/// The tungstenite configuration for a connection with these limits: the
/// largest frame and message are the hub's maximum message size, so an
/// oversize message fails before it is read whole (close 1009).
pub fn websocket_config(limits: &CodecLimits, buffers: Buffers) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(buffers.read.max(256))
        .write_buffer_size(buffers.write)
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_message_size))
}

/// Splits a WebSocket into the two halves of the seam. `codec` decides the
/// frame kind of what is sent: text for JSON, binary for MessagePack.
pub fn split<S>(ws: WebSocketStream<S>, codec: &WireCodec) -> (WsSource<S>, WsSink<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    (
        WsSource { stream },
        WsSink {
            sink,
            text: codec.format().is_text(),
        },
    )
}

/// The read half of a WebSocket connection.
#[derive(Debug)]
pub struct WsSource<S> {
    stream: SplitStream<WebSocketStream<S>>,
}

impl<S> WsSource<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The next text, binary, ping or pong message with its frame kind;
    /// `Ok(None)` when the peer closed the connection. What
    /// [`FrameSource::recv`] reads: the hub treats both data kinds alike,
    /// a program that must tell them apart (an echo) reads here.
    /// Cancel-safe.
    pub async fn recv_message(&mut self) -> Result<Option<Message>, TransportError> {
        // `StreamExt::next` on the split stream is cancel-safe: tungstenite
        // keeps partial frames in its own buffer between polls.
        loop {
            let Some(item) = self.stream.next().await else {
                return Ok(None);
            };
            return match item {
                Ok(Message::Close(_)) => Ok(None),
                Ok(Message::Frame(_)) => continue,
                Ok(message) => Ok(Some(message)),
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                ) => Ok(None),
                Err(error) => Err(transport_error(error)),
            };
        }
    }
}

#[async_trait]
impl<S> FrameSource for WsSource<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        Ok(self.recv_message().await?.map(|message| match message {
            Message::Text(text) => Inbound::Message(Bytes::from(text)),
            Message::Binary(data) => Inbound::Message(data),
            // tungstenite answers pings itself; both are signs of life.
            _ => Inbound::Alive,
        }))
    }
}

/// The write half of a WebSocket connection.
#[derive(Debug)]
pub struct WsSink<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    text: bool,
}

impl<S> WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Writes `messages` (text or binary, as given, rather than as the
    /// codec decides) and flushes once: [`FrameSink::send_batch`] with the
    /// frame kinds chosen by the caller.
    pub async fn send_messages(
        &mut self,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<(), TransportError> {
        for message in messages {
            self.sink.feed(message).await.map_err(transport_error)?;
        }
        self.sink.flush().await.map_err(transport_error)
    }

    fn message(&self, frame: &Bytes) -> Result<Message, TransportError> {
        if self.text {
            let text = Utf8Bytes::try_from(frame.clone())
                .map_err(|_| TransportError::Other("a JSON frame was not UTF-8".into()))?;
            Ok(Message::Text(text))
        } else {
            Ok(Message::Binary(frame.clone()))
        }
    }
}

#[async_trait]
impl<S> FrameSink for WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn send_batch(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        for frame in frames {
            let message = self.message(frame)?;
            self.sink.feed(message).await.map_err(transport_error)?;
        }
        self.sink.flush().await.map_err(transport_error)
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        self.sink
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(transport_error)
    }

    async fn close(&mut self, close: Close) -> Result<(), TransportError> {
        let frame = CloseFrame {
            code: CloseCode::from(close.kind.ws_code()),
            reason: Utf8Bytes::from(close.reason.as_ref()),
        };
        let sent = self.sink.send(Message::Close(Some(frame))).await;
        // When the peer closed first, tungstenite has queued its echo of the
        // peer's close frame: the flush writes it.
        let _ = self.sink.flush().await;
        let _ = self.sink.close().await;
        match sent {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)
            | Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::SendAfterClosing,
            )) => Ok(()),
            Err(error) => Err(transport_error(error)),
        }
    }
}

/// Maps a tungstenite error onto the seam's, and so onto a close code.
pub(crate) fn transport_error(error: tungstenite::Error) -> TransportError {
    match error {
        tungstenite::Error::Capacity(e) => TransportError::TooBig(e.to_string()),
        tungstenite::Error::Utf8(_) => TransportError::InvalidUtf8,
        tungstenite::Error::Protocol(e) => TransportError::Protocol(e.to_string()),
        tungstenite::Error::AttackAttempt => TransportError::Protocol("attack attempt".into()),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            TransportError::Closed
        }
        tungstenite::Error::Io(e) => TransportError::Io(e),
        other => TransportError::Other(other.to_string()),
    }
}
