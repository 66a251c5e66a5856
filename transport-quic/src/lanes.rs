//! The request-stream lane: a request on its own bidirectional stream, its
//! answers back on that stream.
//!
//! Besides its main stream, a client may open further bidirectional
//! streams, each carrying exactly one framed request envelope with a
//! `meta.correlationId`. The request is routed as if it had come on the main
//! stream — same connection, same data, same rooms, same rate limit — so
//! the core needs no change. On the way out, the connection's sink looks at
//! the correlationId of each message while any request stream is open:
//! progress messages (`$ws:rpc-progress`) for a pending request go to its
//! stream, and the first other message carrying that correlationId (the
//! reply, `RPC_ERROR` or `ERROR`) goes there too, after which the server
//! finishes the stream. A lost packet on one stream delays only that
//! stream: requests do not wait behind each other, or behind the main
//! stream.

use crate::conn;
use crate::framing::{FrameDecoder, FrameError, encode_frame};
use crate::server::Settings;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use signalbox::codec::vocab;
use signalbox::codec::{ErrorCode, ErrorPayload, Meta, WireCodec};
use signalbox::connection::{CloseKind, Refusal, Reservation};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// Messages one request stream may have waiting to be written (a reply and
/// the progress messages before it).
const LANE_QUEUE: usize = 16;

/// Stream error code for a request stream abandoned by the server:
/// the protocol code, as a stream-level reset.
const LANE_PROTOCOL_ERROR: u32 = 2;

struct LaneFrame {
    frame: Bytes,
    last: bool,
}

struct Entry {
    id: u64,
    tx: mpsc::Sender<LaneFrame>,
}

/// Pending requests by correlationId, shared by the sink and the lane
/// tasks of one connection.
#[derive(Default)]
pub(crate) struct LaneTable {
    entries: Mutex<HashMap<String, Entry>>,
    len: AtomicUsize,
    next_id: AtomicU64,
}

/// Where one outgoing message goes: a request stream.
pub(crate) struct Lane {
    tx: mpsc::Sender<LaneFrame>,
    last: bool,
}

impl Lane {
    /// Hands the message to the stream's task; waits if the stream is
    /// behind (backpressure, as on the main stream). A stream the client
    /// abandoned drops the message.
    pub(crate) async fn deliver(self, frame: Bytes) {
        let _ = self
            .tx
            .send(LaneFrame {
                frame,
                last: self.last,
            })
            .await;
    }
}

impl LaneTable {
    /// The request stream `frame` belongs on, if any. Costs one atomic load
    /// while no request stream is open; decodes the frame's envelope
    /// otherwise.
    pub(crate) fn route(&self, codec: &WireCodec, frame: &Bytes) -> Option<Lane> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let envelope = codec.decode(frame.clone()).ok()?;
        let id = envelope.meta.correlation_id?;
        let last = envelope.ty != vocab::RPC_PROGRESS;
        let mut entries = self.entries.lock();
        let tx = if last {
            let entry = entries.remove(&id)?;
            self.len.fetch_sub(1, Ordering::AcqRel);
            entry.tx
        } else {
            entries.get(&id)?.tx.clone()
        };
        Some(Lane { tx, last })
    }

    fn register(&self, correlation_id: &str, id: u64, tx: mpsc::Sender<LaneFrame>) -> bool {
        let mut entries = self.entries.lock();
        if entries.contains_key(correlation_id) {
            return false;
        }
        entries.insert(correlation_id.to_owned(), Entry { id, tx });
        self.len.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn unregister(&self, correlation_id: &str, id: u64) {
        let mut entries = self.entries.lock();
        if entries.get(correlation_id).is_some_and(|e| e.id == id) {
            entries.remove(correlation_id);
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Accepts request streams until the connection closes.
pub(crate) async fn accept(
    connection: quinn::Connection,
    table: Arc<LaneTable>,
    inbound: mpsc::Sender<Bytes>,
    codec: WireCodec,
    settings: Arc<Settings>,
) {
    while let Ok((send, recv)) = connection.accept_bi().await {
        let id = table.next_id.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(
            Stream {
                connection: connection.clone(),
                send,
                recv,
                codec,
            },
            id,
            table.clone(),
            inbound.clone(),
            settings.clone(),
        ));
    }
}

struct Stream {
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    codec: WireCodec,
}

enum ReadOne {
    Frame(Bytes),
    Empty,
    TooLarge(FrameError),
    Refused(Refusal),
    Broken,
}

impl Stream {
    /// Reads the stream's one request; its bytes, until whole, are charged
    /// to the hub's budget for incomplete messages (docs/PROTOCOL.md §5).
    async fn read_one(&mut self, reservation: &mut Reservation) -> ReadOne {
        let mut decoder = FrameDecoder::new(self.codec.limits().max_message_size);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    reservation.complete();
                    return ReadOne::Frame(frame);
                }
                Ok(None) => {}
                Err(error) => return ReadOne::TooLarge(error),
            }
            if let Err(refusal) = reservation.hold(decoder.buffered()) {
                return ReadOne::Refused(refusal);
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => decoder.push(&chunk.bytes),
                Ok(None) if decoder.has_partial() => return ReadOne::Broken,
                Ok(None) => return ReadOne::Empty,
                Err(_) => return ReadOne::Broken,
            }
        }
    }

    /// Answers on this stream with an `ERROR` and finishes it.
    async fn refuse(mut self, correlation_id: Option<String>, code: ErrorCode, message: &str) {
        let meta = Meta {
            correlation_id,
            timestamp: Some(now_ms()),
            ..Meta::default()
        };
        let payload = ErrorPayload::new(code, message);
        if let Ok(frame) = self.codec.encode(vocab::ERROR, &meta, Some(&payload)) {
            self.write(&frame).await;
        }
        let _ = self.send.finish();
    }

    async fn write(&mut self, frame: &[u8]) -> bool {
        let mut out = BytesMut::new();
        if encode_frame(frame, &mut out).is_err() {
            return false;
        }
        self.send.write_chunk(out.freeze()).await.is_ok()
    }
}

async fn serve(
    mut stream: Stream,
    id: u64,
    table: Arc<LaneTable>,
    inbound: mpsc::Sender<Bytes>,
    settings: Arc<Settings>,
) {
    let mut reservation = settings.hub.incomplete_budget().reserve();
    let read = tokio::time::timeout(
        settings.handshake_timeout,
        stream.read_one(&mut reservation),
    )
    .await;
    drop(reservation);
    let frame = match read {
        Ok(ReadOne::Frame(frame)) => frame,
        Ok(ReadOne::Empty) => {
            let _ = stream.send.finish();
            return;
        }
        Ok(ReadOne::TooLarge(error)) => {
            conn::close(&stream.connection, CloseKind::TooBig, &error.to_string());
            return;
        }
        Ok(ReadOne::Refused(refusal)) => {
            conn::close(&stream.connection, CloseKind::Policy, &refusal.to_string());
            return;
        }
        Ok(ReadOne::Broken) | Err(_) => {
            let _ = stream
                .send
                .reset(quinn::VarInt::from_u32(LANE_PROTOCOL_ERROR));
            return;
        }
    };
    // One request per stream: whatever follows it is not read.
    let _ = stream.recv.stop(quinn::VarInt::from_u32(0));

    let correlation_id = match stream.codec.decode(frame.clone()) {
        Ok(envelope) => envelope.meta.correlation_id,
        Err(failure) => {
            let message = failure.error.to_string();
            stream
                .refuse(failure.correlation_id, ErrorCode::InvalidArgument, &message)
                .await;
            return;
        }
    };
    let Some(correlation_id) = correlation_id else {
        stream
            .refuse(
                None,
                ErrorCode::InvalidArgument,
                "a request stream needs meta.correlationId",
            )
            .await;
        return;
    };
    let (tx, mut rx) = mpsc::channel(LANE_QUEUE);
    if !table.register(&correlation_id, id, tx) {
        stream
            .refuse(
                Some(correlation_id),
                ErrorCode::AlreadyExists,
                "a request with this correlationId is already in flight on a request stream",
            )
            .await;
        return;
    }
    if inbound.send(frame).await.is_err() {
        table.unregister(&correlation_id, id);
        return;
    }

    let deadline = tokio::time::sleep(settings.request_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(LaneFrame { frame, last }) => {
                    if !stream.write(&frame).await {
                        table.unregister(&correlation_id, id);
                        return;
                    }
                    if last {
                        let _ = stream.send.finish();
                        return;
                    }
                }
                None => return,
            },
            () = &mut deadline => {
                tracing::debug!(%correlation_id, "request stream timed out without a reply");
                table.unregister(&correlation_id, id);
                let _ = stream.send.finish();
                return;
            }
            _ = stream.connection.closed() => {
                table.unregister(&correlation_id, id);
                return;
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
