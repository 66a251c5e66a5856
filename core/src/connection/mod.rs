//! The transport seam, and the per-connection machinery that drives it.
//!
//! A transport (WebSocket, QUIC, the in-memory one of `signalbox::testing`)
//! finishes its handshake, then hands the hub a [`Connection`]: what the
//! handshake revealed ([`ConnectionInfo`]), a [`FrameSource`] of inbound
//! messages and a [`FrameSink`] for outbound ones. [`crate::Hub::serve`]
//! does everything else: decoding, routing, queues, heartbeats, closing.

mod batching;
mod budget;
mod data;
mod driver;
mod inbound;
mod outbound;
mod rate;

pub use batching::{Batching, BatchingError};
pub use budget::{IncompleteBudget, IncompleteLimits, IncompleteRefusal, Reservation};
pub use data::DataMap;
#[cfg(feature = "testing")]
pub(crate) use driver::{HEARTBEAT_ACK_TYPE, HEARTBEAT_TYPE};
pub(crate) use driver::{RESUME_TYPE, RESUMED_TYPE};
pub(crate) use driver::{room_for_answers, serve};
pub use outbound::{OutboundBound, OverflowPolicy};
pub(crate) use outbound::{OutboundQueue, PushOutcome};
pub(crate) use rate::TokenBucket;

use crate::error::Error;
use async_trait::async_trait;
use bytes::Bytes;
use signalbox_codec::WireCodec;
use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

/// What the transport learnt during the handshake.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The transport's name: `"ws"`, `"quic"`, `"memory"`.
    pub transport: &'static str,
    /// The peer's address, when there is one.
    pub peer_addr: Option<SocketAddr>,
    /// The codec the client negotiated.
    pub codec: WireCodec,
}

/// A connection after its handshake, ready for [`crate::Hub::serve`].
pub struct Connection {
    /// What the handshake revealed.
    pub info: ConnectionInfo,
    /// Per-connection data to start with: what an authentication hook
    /// learnt at the handshake (a user id, roles, claims).
    pub data: DataMap,
    /// Inbound messages.
    pub source: Box<dyn FrameSource>,
    /// Outbound messages.
    pub sink: Box<dyn FrameSink>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Something the transport read.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// One complete message (one WebSocket message, one QUIC frame).
    Message(Bytes),
    /// A sign of life that carries no message (a WebSocket pong). It resets
    /// the heartbeat timer and nothing else.
    Alive,
    /// A message the transport read but refused to hand on (a QUIC request
    /// stream without a correlationId, docs/PROTOCOL.md §5). The hub
    /// answers it like any other error (docs/PROTOCOL.md §6): an `ERROR`
    /// stamped by the hub's clock, reported to the router's error hook,
    /// queued as a [`Frame`] whose [`ReplyTo::Refused`] carries the
    /// refusal's tag back to the transport. Boxed: the common variants
    /// stay as small as the bytes they carry.
    Refused(Box<RefusedMessage>),
}

/// A message the transport refused: what to answer, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedMessage {
    /// The error to answer with (`ERROR`, docs/PROTOCOL.md §6).
    pub error: Error,
    /// The refused message's type, when the transport could read it.
    pub message_type: Option<String>,
    /// The refused message's correlationId, carried back in the answer.
    pub correlation_id: Option<String>,
    /// The transport's own mark for the refusal, returned on the answer's
    /// frame ([`ReplyTo::Refused`]) so that it can deliver the answer where
    /// the message came from.
    pub tag: u64,
}

/// One outbound message: its encoded bytes, and what it answers when it is
/// an answer.
///
/// A transport that delivers answers apart from its main channel (QUIC's
/// request streams, docs/PROTOCOL.md §5) routes by [`Frame::reply_to`]
/// instead of decoding the bytes. Publications and other messages that
/// answer nothing carry no metadata and cost nothing beyond their bytes; a
/// publication's fan-out shares one encoded [`Bytes`] among its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    reply_to: Option<ReplyTo>,
}

impl Frame {
    /// A frame that answers nothing (a publication, a push).
    pub fn new(bytes: Bytes) -> Self {
        Frame {
            bytes,
            reply_to: None,
        }
    }

    /// A frame answering what `reply_to` names.
    pub fn reply(bytes: Bytes, reply_to: ReplyTo) -> Self {
        Frame {
            bytes,
            reply_to: Some(reply_to),
        }
    }

    /// The encoded message.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// What the frame answers, if anything.
    pub fn reply_to(&self) -> Option<&ReplyTo> {
        self.reply_to.as_ref()
    }

    /// The encoded message, without the metadata.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoded message is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        Frame::new(bytes)
    }
}

/// What an outbound [`Frame`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTo {
    /// The peer's message with this correlationId (docs/PROTOCOL.md §6):
    /// a progress message (`$ws:rpc-progress`), after which more answers
    /// follow, or the last answer (the reply, `RPC_ERROR`, `ERROR`, any
    /// other message carrying the correlationId).
    Request {
        /// The correlationId the frame carries.
        correlation_id: Box<str>,
        /// Whether this is a progress message rather than the last answer.
        progress: bool,
    },
    /// A message the transport refused ([`Inbound::Refused`]), by the tag
    /// the transport gave it. This is the refusal's only answer.
    Refused {
        /// [`RefusedMessage::tag`].
        tag: u64,
    },
}

/// The read half of a connection.
#[async_trait]
pub trait FrameSource: Send + 'static {
    /// The next inbound item; `Ok(None)` when the peer closed the connection.
    ///
    /// Must be cancel-safe: the driver races it against timers.
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError>;

    /// Whether the transport itself detects dead peers (QUIC's idle
    /// timeout). If so the driver does not close connections that send
    /// nothing; otherwise it closes those silent for longer than the
    /// heartbeat interval plus timeout.
    fn liveness_by_transport(&self) -> bool {
        false
    }

    /// The close the peer sent, once [`FrameSource::recv`] has returned
    /// `Ok(None)` for it: its code and reason (a WebSocket close frame,
    /// docs/PROTOCOL.md §4; a QUIC application close, §5). `None` when the
    /// peer sent none or the transport does not report one (the default).
    fn peer_close(&self) -> Option<PeerClose> {
        None
    }
}

/// The close code and reason a peer sent when it closed the connection
/// (WebSocket: docs/PROTOCOL.md §4; QUIC: §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClose {
    /// The close code in the transport's numbering: WebSocket 1000 normal,
    /// 1001 going away, 1008 policy, ...; QUIC 0 normal, 1 going away,
    /// 2 protocol, 3 policy, 4 internal.
    pub code: u16,
    /// The reason text, possibly empty.
    pub reason: String,
}

impl std::fmt::Display for PeerClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            write!(f, "closed by the server with {}", self.code)
        } else {
            write!(
                f,
                "closed by the server with {}: {}",
                self.code, self.reason
            )
        }
    }
}

/// The write half of a connection.
#[async_trait]
pub trait FrameSink: Send + 'static {
    /// Writes every frame, in order, and flushes once. A transport that
    /// sends answers apart from its main channel routes them by
    /// [`Frame::reply_to`]; the others write [`Frame::bytes`].
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError>;

    /// Sends a transport-level heartbeat (a WebSocket ping). Transports with
    /// their own keep-alive (QUIC) need not do anything.
    async fn ping(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Closes the connection with `close`, after everything sent before.
    async fn close(&mut self, close: Close) -> Result<(), TransportError>;

    /// The code a close of `kind` carries in this transport's numbering
    /// (WebSocket: docs/PROTOCOL.md §4; QUIC: §5), for metrics and logs.
    /// `None` (the default) for a transport without close codes: the
    /// metrics then name the kind ([`CloseKind::as_str`]).
    fn close_code(&self, kind: CloseKind) -> Option<u32> {
        let _ = kind;
        None
    }
}

/// Why a connection closes. Each transport maps the kind onto its own codes
/// (WebSocket: docs/PROTOCOL.md §4, `signalbox_ws::close_code`; QUIC: §5,
/// `signalbox_quic::close_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseKind {
    /// Normal closure (WS 1000, QUIC 0).
    Normal,
    /// The server is going away, e.g. shutting down (WS 1001, QUIC 1).
    GoingAway,
    /// The peer broke the protocol (WS 1002, QUIC 2).
    Protocol,
    /// A text frame was not UTF-8 (WS 1007, QUIC 2).
    InvalidData,
    /// A policy was violated: authentication lost, slow consumer, heartbeat
    /// timeout, incomplete-message budget or timeout (WS 1008, QUIC 3).
    Policy,
    /// A message was too big (WS 1009, QUIC 2).
    TooBig,
    /// The server failed (WS 1011, QUIC 4).
    Internal,
}

impl CloseKind {
    /// The kind's name, for logs and for the metrics of transports without
    /// close codes: `normal`, `going_away`, `protocol`, `invalid_data`,
    /// `policy`, `too_big`, `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::Normal => "normal",
            CloseKind::GoingAway => "going_away",
            CloseKind::Protocol => "protocol",
            CloseKind::InvalidData => "invalid_data",
            CloseKind::Policy => "policy",
            CloseKind::TooBig => "too_big",
            CloseKind::Internal => "internal",
        }
    }
}

/// A close: its kind and a short reason for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Why.
    pub kind: CloseKind,
    /// A reason for humans (kept under 123 bytes, the WebSocket limit).
    pub reason: Cow<'static, str>,
}

impl Close {
    /// A close of `kind` with `reason`.
    pub fn new(kind: CloseKind, reason: impl Into<Cow<'static, str>>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = Cow::Owned(reason[..end].to_owned());
        }
        Close { kind, reason }
    }
}

/// A failure of the transport under a connection.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer broke the transport's framing rules.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A frame or message was larger than allowed before it was read whole.
    #[error("message too big: {0}")]
    TooBig(String),
    /// A text frame held invalid UTF-8.
    #[error("invalid UTF-8 in a text frame")]
    InvalidUtf8,
    /// The connection is already closed.
    #[error("connection closed")]
    Closed,
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A limit on incomplete messages refused the message being read: the
    /// hub's budget, or the time to complete it.
    #[error("{0}")]
    Refused(#[from] IncompleteRefusal),
    /// Anything else the transport reports.
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// How a connection that hit this error is closed.
    pub fn close_kind(&self) -> CloseKind {
        match self {
            TransportError::Protocol(_) => CloseKind::Protocol,
            TransportError::TooBig(_) => CloseKind::TooBig,
            TransportError::InvalidUtf8 => CloseKind::InvalidData,
            TransportError::Closed | TransportError::Io(_) => CloseKind::Normal,
            TransportError::Refused(_) => CloseKind::Policy,
            TransportError::Other(_) => CloseKind::Internal,
        }
    }
}
