//! One framed QUIC stream (docs/PROTOCOL.md §5): frames read with the
//! hub's budget for incomplete messages, batches written with their length
//! prefixes in one write, and the close that lets the peer take the last
//! frames before CONNECTION_CLOSE.
//!
//! The main stream of a server connection, each request stream and the
//! client's streams are all a [`FramedStream`]; the main stream is split
//! into its [`FrameReader`] and [`FrameWriter`] (the hub reads and writes
//! it from different tasks).

use crate::framing::{FrameDecoder, FrameError, HEADER_LEN, encode_header};
use crate::session::{RecvStream, SendStream, Session, StreamError};
use bytes::{BufMut, Bytes, BytesMut};
use signalbox::transport::{Close, CloseKind, IncompleteRefusal, Reservation, TransportError};
use std::time::Duration;

/// The largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Frames up to this size are copied, with their length prefixes, into
/// one contiguous chunk per batch; larger ones are handed to quinn without
/// a copy. quinn keeps a stream's unacknowledged data as a list of the
/// chunks written and walks that list from its start for every STREAM
/// frame it builds, so a batch of many small chunks (two per message)
/// costs more than copying them: for chat messages of about 100 bytes
/// the walk was a fifth of the server's CPU (benches/README.md, "QUIC").
const COPY_LIMIT: usize = 1024;

/// The QUIC application close code for a close of `kind` (docs/PROTOCOL.md
/// §5): 0 normal, 1 going away, 2 protocol violation (a frame too big or
/// not UTF-8 included), 3 policy, 4 internal error.
pub fn close_code(kind: CloseKind) -> u32 {
    match kind {
        CloseKind::Normal => 0,
        CloseKind::GoingAway => 1,
        CloseKind::Protocol | CloseKind::InvalidData | CloseKind::TooBig => 2,
        CloseKind::Policy => 3,
        CloseKind::Internal => 4,
    }
}

/// Why reading a frame failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// A frame announced a length past the maximum message size.
    Frame(FrameError),
    /// The stream ended inside a frame.
    Truncated,
    /// The partial frame passed the hub's budget for incomplete messages,
    /// or its completion time.
    Refused(IncompleteRefusal),
    /// The stream or the connection failed.
    Stream(StreamError),
}

impl ReadError {
    /// The seam's error for this failure, and so the close code.
    pub(crate) fn into_transport(self) -> TransportError {
        match self {
            ReadError::Frame(error @ FrameError::TooLarge { .. }) => {
                TransportError::TooBig(error.to_string())
            }
            ReadError::Frame(error) => TransportError::Protocol(error.to_string()),
            ReadError::Truncated => {
                TransportError::Protocol("stream ended inside a frame".to_owned())
            }
            ReadError::Refused(refusal) => TransportError::Refused(refusal),
            ReadError::Stream(StreamError::Closed(_)) => TransportError::Closed,
            ReadError::Stream(other) => TransportError::Other(other.to_string()),
        }
    }
}

/// Why writing failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// A frame too long for the 4-byte length prefix.
    Frame(FrameError),
    /// The stream or the connection failed.
    Stream(StreamError),
}

impl WriteError {
    /// The seam's error for this failure.
    pub(crate) fn into_transport(self) -> TransportError {
        match self {
            WriteError::Frame(error) => TransportError::Other(error.to_string()),
            WriteError::Stream(StreamError::Closed(_)) => TransportError::Closed,
            WriteError::Stream(other) => TransportError::Other(other.to_string()),
        }
    }
}

/// A bidirectional stream (native QUIC or WebTransport) carrying
/// length-prefixed frames.
#[derive(Debug)]
pub(crate) struct FramedStream {
    pub(crate) reader: FrameReader,
    pub(crate) writer: FrameWriter,
}

impl FramedStream {
    /// Frames over `send` and `recv` of `session`, refusing frames
    /// longer than `max_frame` bytes.
    pub(crate) fn new(
        session: Session,
        send: SendStream,
        recv: RecvStream,
        max_frame: usize,
    ) -> Self {
        FramedStream {
            reader: FrameReader {
                recv,
                decoder: FrameDecoder::new(max_frame),
                reservation: None,
                finished: false,
            },
            writer: FrameWriter {
                session,
                send,
                headers: BytesMut::new(),
                chunks: Vec::new(),
            },
        }
    }

    /// Charges each partial frame to `reservation`, a share of the hub's
    /// budget for incomplete messages (docs/PROTOCOL.md §5).
    pub(crate) fn with_budget(mut self, reservation: Reservation) -> Self {
        self.reader.reservation = Some(reservation);
        self
    }

    /// The two halves, for reading and writing from different tasks.
    pub(crate) fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

/// The read half of a [`FramedStream`].
#[derive(Debug)]
pub(crate) struct FrameReader {
    recv: RecvStream,
    decoder: FrameDecoder,
    /// The decoder's partial frame, charged to the hub's budget.
    reservation: Option<Reservation>,
    finished: bool,
}

impl FrameReader {
    /// The next frame; `Ok(None)` once the peer finished the stream.
    ///
    /// Cancel-safe: bytes read live in the decoder until a frame is whole,
    /// and the awaited futures lose nothing when dropped.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(reservation) = &mut self.reservation {
                        reservation.complete();
                    }
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(error) => return Err(ReadError::Frame(error)),
            }
            if self.finished {
                if self.decoder.has_partial() {
                    return Err(ReadError::Truncated);
                }
                return Ok(None);
            }
            // What the decoder holds now is part of the next frame. Charged
            // (and its clock started) here rather than when it was read, so
            // that time spent not reading (backpressure) does not count.
            let deadline = match &mut self.reservation {
                Some(reservation) => {
                    reservation
                        .hold(self.decoder.buffered())
                        .map_err(ReadError::Refused)?;
                    reservation.deadline()
                }
                None => None,
            };
            let late = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = late => {
                    let refusal = self.reservation.as_ref().map(Reservation::timed_out);
                    if let Some(refusal) = refusal {
                        return Err(ReadError::Refused(refusal));
                    }
                }
                chunk = self.recv.read_chunk(READ_CHUNK) => match chunk {
                    Ok(Some(chunk)) => self.decoder.push(&chunk),
                    Ok(None) => self.finished = true,
                    Err(error) => return Err(ReadError::Stream(error)),
                },
            }
        }
    }

    /// Gives back the share of the hub's budget (nothing more is read
    /// against it).
    pub(crate) fn release_budget(&mut self) {
        self.reservation = None;
    }

    /// Asks the peer to stop sending: nothing more is read.
    pub(crate) fn stop(&mut self) {
        self.recv.stop();
    }
}

/// The write half of a [`FramedStream`].
#[derive(Debug)]
pub(crate) struct FrameWriter {
    session: Session,
    send: SendStream,
    /// The batch being written: length prefixes, and the frames up to
    /// [`COPY_LIMIT`] bytes, copied.
    headers: BytesMut,
    /// Contiguous runs of `headers` and the larger frames between them:
    /// one write for the batch.
    chunks: Vec<Bytes>,
}

impl FrameWriter {
    /// Writes each frame with its length prefix, in one write. Frames up
    /// to [`COPY_LIMIT`] bytes are copied next to their prefixes, larger
    /// ones are not copied. Waits for flow-control credit only, never for
    /// acknowledgements.
    pub(crate) async fn write_batch<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a Bytes>,
    ) -> Result<(), WriteError> {
        self.chunks.clear();
        self.headers.clear();
        for frame in frames {
            let header = encode_header(frame.len()).map_err(WriteError::Frame)?;
            if frame.len() <= COPY_LIMIT {
                self.headers.reserve(HEADER_LEN + frame.len());
                self.headers.put_slice(&header);
                self.headers.put_slice(frame);
            } else {
                self.headers.reserve(HEADER_LEN);
                self.headers.put_slice(&header);
                self.chunks.push(self.headers.split().freeze());
                self.chunks.push(frame.clone());
            }
        }
        if !self.headers.is_empty() {
            self.chunks.push(self.headers.split().freeze());
        }
        if self.chunks.is_empty() {
            return Ok(());
        }
        let written = self.send.write_all_chunks(&mut self.chunks).await;
        self.chunks.clear();
        written.map_err(WriteError::Stream)
    }

    /// Writes one frame with its length prefix.
    pub(crate) async fn write(&mut self, frame: &Bytes) -> Result<(), WriteError> {
        self.write_batch(std::iter::once(frame)).await
    }

    /// Finishes the stream: the peer reads to its end.
    pub(crate) fn finish(&mut self) {
        self.send.finish();
    }

    /// Abandons the stream with a stream-level error code.
    pub(crate) fn reset(&mut self, code: u32) {
        self.send.reset(code);
    }

    /// Closes the connection with `close`'s code and reason, after what was
    /// written. CONNECTION_CLOSE discards stream data not yet delivered: on
    /// a graceful close (normal, going away) the stream is finished and the
    /// peer gets up to `linger` to acknowledge it first. Other closes
    /// (protocol, policy, internal) go out at once.
    pub(crate) async fn close(&mut self, close: &Close, linger: Duration) {
        let graceful = matches!(close.kind, CloseKind::Normal | CloseKind::GoingAway);
        if self.send.finish() && graceful {
            let stopped = self.send.stopped();
            let lost = self.session.closed();
            tokio::select! {
                _ = tokio::time::timeout(linger, stopped) => {}
                _ = lost => {}
            }
        }
        self.session.close(close.kind, &close.reason);
    }
}
