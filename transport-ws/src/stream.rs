//! The seam: a WebSocket stream as a [`FrameSource`] and a [`FrameSink`].

use crate::metered::{Meter, refusal_of};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use signalbox::codec::{CodecLimits, WireCodec};
use signalbox::transport::{
    Close, CloseKind, Frame, FrameSink, FrameSource, Inbound, PeerClose, TransportError,
};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// Bytes read from the socket at once. They are read into the stack, and
/// only what is not yet framed is kept, on the heap, while it waits: an
/// idle connection holds no read buffer of this size. Larger means fewer
/// reads per large message and more held per connection while a burst is
/// framed. (Programs that call [`split`] on a stream of their own, with
/// [`websocket_config`], get tungstenite's buffer of this size instead.)
pub const DEFAULT_READ_BUFFER: usize = 4 * 1024;
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

/// How long, and for how many bytes, a close started by this side waits for
/// the peer's close (docs/PROTOCOL.md §4, "Closing").
///
/// After sending its close frame, [`WsSink::close`] goes on reading what the
/// peer still sends, and discards it, until the peer's close frame or end
/// of stream, for at most `time` and `bytes`; only then is the socket
/// closed. A socket closed with unread data in its receive buffer is reset,
/// and a peer still writing (the rest of a message refused for its size)
/// would then read the reset instead of the close frame and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// The longest wait.
    pub time: Duration,
    /// The most bytes read and discarded.
    pub bytes: usize,
}

/// [`websocket_config`] for a stream read through a read-ahead (the
/// server's and [`crate::WsConnector`]'s): tungstenite keeps only a small
/// buffer of its own.
pub(crate) fn framed_config(limits: &CodecLimits, buffers: Buffers) -> WebSocketConfig {
    websocket_config(limits, buffers).read_buffer_size(crate::read_ahead::FRAMING_BUFFER)
}

/// Splits a WebSocket into the two halves of the seam. `codec` decides the
/// frame kind of what is sent: text for JSON, binary for MessagePack.
///
/// The sink's close does not linger; see [`WsSink::with_linger`].
pub fn split<S>(ws: WebSocketStream<S>, codec: &WireCodec) -> (WsSource<S>, WsSink<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (handoff, read_half) = oneshot::channel();
    (
        WsSource {
            stream: Some(stream),
            failed: false,
            meter: None,
            handoff: Some(handoff),
            peer_close: None,
        },
        WsSink {
            sink: Some(sink),
            text: codec.format().is_text(),
            linger: None,
            read_half: Some(read_half),
        },
    )
}

/// What the source leaves the sink when it is dropped: the read half, for
/// the sink's close to read and discard what the peer still sends.
struct ReadHalf<S> {
    stream: SplitStream<WebSocketStream<S>>,
    /// tungstenite failed (a frame too big, a protocol error): what follows
    /// is not read as frames but as raw bytes.
    failed: bool,
    meter: Option<Meter>,
}

/// The read half of a WebSocket connection.
pub struct WsSource<S> {
    stream: Option<SplitStream<WebSocketStream<S>>>,
    failed: bool,
    meter: Option<Meter>,
    handoff: Option<oneshot::Sender<ReadHalf<S>>>,
    /// The peer's close frame, once read.
    peer_close: Option<PeerClose>,
}

impl<S> std::fmt::Debug for WsSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSource")
            .field("failed", &self.failed)
            .field("metered", &self.meter.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> WsSource<S> {
    /// Tells `meter` where messages end: the socket under this source is
    /// the [`crate::metered::Metered`] stream charging it.
    pub(crate) fn metered(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }
}

impl<S> Drop for WsSource<S> {
    fn drop(&mut self) {
        if let (Some(stream), Some(handoff)) = (self.stream.take(), self.handoff.take()) {
            if let Some(meter) = &self.meter {
                meter.closing();
            }
            let _ = handoff.send(ReadHalf {
                stream,
                failed: self.failed,
                meter: self.meter.take(),
            });
        }
    }
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
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        loop {
            let Some(item) = stream.next().await else {
                return Ok(None);
            };
            if let (Ok(message), Some(meter)) = (&item, &self.meter) {
                match message {
                    Message::Text(_) | Message::Binary(_) => meter.message_complete(),
                    Message::Ping(payload) | Message::Pong(payload) => {
                        meter.control_frame(payload.len());
                    }
                    Message::Close(_) | Message::Frame(_) => {}
                }
            }
            return match item {
                Ok(Message::Close(frame)) => {
                    self.peer_close = frame.map(|frame| PeerClose {
                        code: frame.code.into(),
                        reason: frame.reason.to_string(),
                    });
                    Ok(None)
                }
                Ok(Message::Frame(_)) => continue,
                Ok(message) => Ok(Some(message)),
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                ) => Ok(None),
                Err(error) => {
                    self.failed = true;
                    Err(transport_error(error))
                }
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

    fn peer_close(&self) -> Option<PeerClose> {
        self.peer_close.clone()
    }
}

/// The write half of a WebSocket connection.
pub struct WsSink<S> {
    /// `None` once the close reunited it with the read half.
    sink: Option<SplitSink<WebSocketStream<S>, Message>>,
    text: bool,
    linger: Option<Linger>,
    read_half: Option<oneshot::Receiver<ReadHalf<S>>>,
}

impl<S> std::fmt::Debug for WsSink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSink")
            .field("text", &self.text)
            .field("linger", &self.linger)
            .finish_non_exhaustive()
    }
}

impl<S> WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Makes [`FrameSink::close`] linger for the peer's close: see
    /// [`Linger`]. It reads what the peer still sends through the read
    /// half, which it gets when the [`WsSource`] of the same connection is
    /// dropped (as the hub does when its reader stops): a close while the
    /// source lives waits for its drop within `linger.time`.
    pub fn with_linger(mut self, linger: Linger) -> Self {
        self.linger = Some(linger);
        self
    }

    fn sink(&mut self) -> Result<&mut SplitSink<WebSocketStream<S>, Message>, TransportError> {
        self.sink.as_mut().ok_or(TransportError::Closed)
    }

    /// Writes `messages` (text or binary, as given, rather than as the
    /// codec decides) and flushes once: [`FrameSink::send_batch`] with the
    /// frame kinds chosen by the caller.
    pub async fn send_messages(
        &mut self,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<(), TransportError> {
        let sink = self.sink()?;
        for message in messages {
            sink.feed(message).await.map_err(transport_error)?;
        }
        sink.flush().await.map_err(transport_error)
    }

    /// After the close frame went out: reads and discards until the peer's
    /// close or end of stream, within `linger`.
    async fn drain_after_close(&mut self, linger: Linger) {
        let Some(read_half) = self.read_half.take() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + linger.time;
        let drained = tokio::time::timeout_at(deadline, async {
            let Ok(ReadHalf {
                mut stream,
                failed,
                meter,
            }) = read_half.await
            else {
                return;
            };
            let mut discarded = 0usize;
            if !failed {
                // The frames are whole so far: read them as frames, to see
                // the peer's close.
                loop {
                    match stream.next().await {
                        None | Some(Ok(Message::Close(_))) => return,
                        Some(Ok(message)) => {
                            discarded = discarded.saturating_add(message.len());
                            if discarded > linger.bytes {
                                return;
                            }
                        }
                        Some(Err(_)) => break,
                    }
                }
            }
            // tungstenite stopped inside a frame (one too big, say): what
            // follows is the rest of it and whatever comes after, read as
            // raw bytes until the peer's end of stream.
            if let Some(meter) = &meter {
                meter.discarding();
            }
            let Some(sink) = self.sink.take() else {
                return;
            };
            let Ok(mut ws) = stream.reunite(sink) else {
                return;
            };
            let io = ws.get_mut();
            let mut scratch = vec![0u8; 8 * 1024];
            while discarded < linger.bytes {
                match io.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => discarded = discarded.saturating_add(n),
                }
            }
            tracing::debug!(discarded, "close: the peer went on sending; closed anyway");
        })
        .await;
        if drained.is_err() {
            tracing::debug!("close: no close or end of stream from the peer within the linger");
        }
    }
}

fn message(text: bool, frame: &Bytes) -> Result<Message, TransportError> {
    if text {
        let text = Utf8Bytes::try_from(frame.clone())
            .map_err(|_| TransportError::Other("a JSON frame was not UTF-8".into()))?;
        Ok(Message::Text(text))
    } else {
        Ok(Message::Binary(frame.clone()))
    }
}

#[async_trait]
impl<S> FrameSink for WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        let text = self.text;
        let sink = self.sink()?;
        for frame in frames {
            let message = message(text, frame.bytes())?;
            sink.feed(message).await.map_err(transport_error)?;
        }
        sink.flush().await.map_err(transport_error)
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        self.sink()?
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(transport_error)
    }

    async fn close(&mut self, close: Close) -> Result<(), TransportError> {
        let frame = CloseFrame {
            code: CloseCode::from(close_code(close.kind)),
            reason: Utf8Bytes::from(close.reason.as_ref()),
        };
        let sink = self.sink()?;
        let sent = sink.send(Message::Close(Some(frame))).await;
        // When the peer closed first, tungstenite has queued its echo of the
        // peer's close frame: the flush writes it.
        let _ = sink.flush().await;
        let _ = sink.close().await;
        if let Some(linger) = self.linger {
            self.drain_after_close(linger).await;
        }
        match sent {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)
            | Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::SendAfterClosing,
            )) => Ok(()),
            Err(error) => Err(transport_error(error)),
        }
    }

    fn close_code(&self, kind: CloseKind) -> Option<u32> {
        Some(u32::from(close_code(kind)))
    }
}

/// The WebSocket close code for a close of `kind` (docs/PROTOCOL.md §4):
/// 1000 normal, 1001 going away, 1002 protocol, 1007 invalid data, 1008
/// policy, 1009 too big, 1011 internal.
pub fn close_code(kind: CloseKind) -> u16 {
    match kind {
        CloseKind::Normal => 1000,
        CloseKind::GoingAway => 1001,
        CloseKind::Protocol => 1002,
        CloseKind::InvalidData => 1007,
        CloseKind::Policy => 1008,
        CloseKind::TooBig => 1009,
        CloseKind::Internal => 1011,
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
        tungstenite::Error::Io(e) => match refusal_of(&e) {
            Some(refusal) => TransportError::Refused(refusal),
            None => TransportError::Io(e),
        },
        other => TransportError::Other(other.to_string()),
    }
}
