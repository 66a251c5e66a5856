//! The request-stream lane: a request on its own bidirectional stream, its
//! answers back on that stream (docs/PROTOCOL.md §5).
//!
//! Besides its main stream, a client may open further bidirectional
//! streams, each carrying exactly one framed request envelope with a
//! `meta.correlationId`. The request is routed as if it had come on the main
//! stream — same connection, same data, same rooms, same rate limit. On the
//! way out the hub marks every answer with what it answers
//! ([`Frame::reply_to`]): progress messages (`$ws:rpc-progress`) for a
//! pending request go to its stream, and its last answer (the reply,
//! `RPC_ERROR` or `ERROR`) goes there too, after which the server finishes
//! the stream. Nothing outbound is decoded. A lost packet on one stream
//! delays only that stream: requests do not wait behind each other, or
//! behind the main stream.
//!
//! A request the lane cannot take (it does not decode, has no
//! correlationId, or has one already pending on another stream) is handed
//! to the hub as [`Inbound::Refused`], tagged with the stream's id: the hub
//! answers it like any error (its clock, its error hook, its metrics), and
//! the answer, marked [`ReplyTo::Refused`] with that tag, comes back here
//! to be written on the refused stream.

use crate::server::Settings;
use crate::session::Session;
use crate::stream::{FramedStream, ReadError};
use bytes::Bytes;
use parking_lot::Mutex;
use signalbox::Error;
use signalbox::codec::{ErrorCode, WireCodec};
use signalbox::transport::{CloseKind, Frame, Inbound, RefusedMessage, ReplyTo};
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

/// The request streams of one connection waiting for answers, shared by
/// the sink and the lane tasks.
#[derive(Default)]
pub(crate) struct LaneTable {
    /// Pending requests, by correlationId.
    requests: Mutex<HashMap<String, Entry>>,
    /// Refused requests waiting for the hub's answer, by stream id (the
    /// refusal's tag).
    refusals: Mutex<HashMap<u64, mpsc::Sender<LaneFrame>>>,
    /// Entries in both maps: while zero the sink looks at nothing.
    waiting: AtomicUsize,
    next_id: AtomicU64,
}

/// Where one outgoing frame goes.
pub(crate) enum Route {
    /// The main stream.
    Main,
    /// A request stream.
    Lane(Lane),
    /// Nowhere: the answer to a refusal whose stream stopped waiting.
    Drop,
}

/// A request stream waiting for a frame.
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

/// Whether `frame` answers a refused request (and so never belongs on the
/// main stream).
pub(crate) fn is_refusal(frame: &Frame) -> bool {
    matches!(frame.reply_to(), Some(ReplyTo::Refused { .. }))
}

impl LaneTable {
    /// Whether any request stream waits for an answer.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Where `frame` goes, by its metadata.
    pub(crate) fn route(&self, frame: &Frame) -> Route {
        match frame.reply_to() {
            None => Route::Main,
            Some(ReplyTo::Request {
                correlation_id,
                progress,
            }) => {
                let mut requests = self.requests.lock();
                let tx = if *progress {
                    requests.get(&**correlation_id).map(|e| e.tx.clone())
                } else {
                    let entry = requests.remove(&**correlation_id);
                    if entry.is_some() {
                        self.waiting.fetch_sub(1, Ordering::AcqRel);
                    }
                    entry.map(|e| e.tx)
                };
                match tx {
                    Some(tx) => Route::Lane(Lane {
                        tx,
                        last: !*progress,
                    }),
                    // Not from a request stream, or one that gave up: the
                    // main stream.
                    None => Route::Main,
                }
            }
            Some(ReplyTo::Refused { tag }) => match self.refusals.lock().remove(tag) {
                Some(tx) => {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    Route::Lane(Lane { tx, last: true })
                }
                None => Route::Drop,
            },
        }
    }

    fn register(&self, correlation_id: &str, id: u64, tx: mpsc::Sender<LaneFrame>) -> bool {
        let mut requests = self.requests.lock();
        if requests.contains_key(correlation_id) {
            return false;
        }
        requests.insert(correlation_id.to_owned(), Entry { id, tx });
        self.waiting.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn unregister(&self, correlation_id: &str, id: u64) {
        let mut requests = self.requests.lock();
        if requests.get(correlation_id).is_some_and(|e| e.id == id) {
            requests.remove(correlation_id);
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn await_refusal(&self, id: u64, tx: mpsc::Sender<LaneFrame>) {
        if self.refusals.lock().insert(id, tx).is_none() {
            self.waiting.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn forget_refusal(&self, id: u64) {
        if self.refusals.lock().remove(&id).is_some() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Accepts request streams until the connection closes.
pub(crate) async fn accept(
    session: Session,
    table: Arc<LaneTable>,
    inbound: mpsc::Sender<Inbound>,
    codec: WireCodec,
    settings: Arc<Settings>,
) {
    let max = codec.limits().max_message_size;
    while let Ok((send, recv)) = session.accept_bi().await {
        let id = table.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = FramedStream::new(session.clone(), send, recv, max)
            .with_budget(settings.hub.incomplete_budget().reserve());
        tokio::spawn(serve(
            LaneStream {
                session: session.clone(),
                stream,
                id,
                table: table.clone(),
                inbound: inbound.clone(),
                settings: settings.clone(),
            },
            codec,
        ));
    }
}

/// One request stream and what it needs.
struct LaneStream {
    session: Session,
    stream: FramedStream,
    id: u64,
    table: Arc<LaneTable>,
    inbound: mpsc::Sender<Inbound>,
    settings: Arc<Settings>,
}

async fn serve(mut lane: LaneStream, codec: WireCodec) {
    // Its bytes, until whole, are charged to the hub's budget for
    // incomplete messages (docs/PROTOCOL.md §5).
    let read =
        tokio::time::timeout(lane.settings.handshake_timeout, lane.stream.reader.next()).await;
    lane.stream.reader.release_budget();
    let frame = match read {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => {
            lane.stream.writer.finish();
            return;
        }
        Ok(Err(ReadError::Frame(error))) => {
            lane.session.close(CloseKind::TooBig, &error.to_string());
            return;
        }
        Ok(Err(ReadError::Refused(refusal))) => {
            lane.session.close(CloseKind::Policy, &refusal.to_string());
            return;
        }
        Ok(Err(ReadError::Truncated | ReadError::Stream(_))) | Err(_) => {
            lane.stream.writer.reset(LANE_PROTOCOL_ERROR);
            return;
        }
    };
    // One request per stream: whatever follows it is not read.
    lane.stream.reader.stop();

    // The request's own correlationId and type, to wait for its answers
    // by (the hub decodes it again to route it).
    let (correlation_id, message_type) = match codec.decode(frame.clone()) {
        Ok(envelope) => (envelope.meta.correlation_id, envelope.ty),
        Err(failure) => {
            let error = Error::from(failure.error);
            return refuse(lane, None, failure.correlation_id, error).await;
        }
    };
    let Some(correlation_id) = correlation_id else {
        let error = Error::invalid_argument("a request stream needs meta.correlationId");
        return refuse(lane, Some(message_type), None, error).await;
    };
    let (tx, rx) = mpsc::channel(LANE_QUEUE);
    if !lane.table.register(&correlation_id, lane.id, tx) {
        let error = Error::new(
            ErrorCode::AlreadyExists,
            "a request with this correlationId is already in flight on a request stream",
        );
        return refuse(lane, Some(message_type), Some(correlation_id), error).await;
    }
    if lane.inbound.send(Inbound::Message(frame)).await.is_err() {
        lane.table.unregister(&correlation_id, lane.id);
        return;
    }
    let (table, id) = (lane.table.clone(), lane.id);
    answer(lane, rx, &correlation_id, || {
        table.unregister(&correlation_id, id);
    })
    .await;
}

/// Hands the hub a request this stream refuses; its answer comes back
/// tagged with the stream's id and is written here.
async fn refuse(
    lane: LaneStream,
    message_type: Option<String>,
    correlation_id: Option<String>,
    error: Error,
) {
    let (tx, rx) = mpsc::channel(1);
    lane.table.await_refusal(lane.id, tx);
    let refused = RefusedMessage {
        error,
        message_type,
        correlation_id,
        tag: lane.id,
    };
    if lane
        .inbound
        .send(Inbound::Refused(Box::new(refused)))
        .await
        .is_err()
    {
        lane.table.forget_refusal(lane.id);
        return;
    }
    let (table, id) = (lane.table.clone(), lane.id);
    answer(lane, rx, "(refused)", || table.forget_refusal(id)).await;
}

/// Writes what comes for this stream until its last answer, then finishes
/// it. A stream whose answer does not come within the request timeout is
/// finished without one; `give_up` takes it out of the table.
async fn answer(
    mut lane: LaneStream,
    mut rx: mpsc::Receiver<LaneFrame>,
    what: &str,
    give_up: impl FnOnce(),
) {
    let deadline = tokio::time::sleep(lane.settings.request_timeout);
    tokio::pin!(deadline);
    let answered = loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(LaneFrame { frame, last }) => {
                    if lane.stream.writer.write(&frame).await.is_err() {
                        break false;
                    }
                    if last {
                        lane.stream.writer.finish();
                        break true;
                    }
                }
                // The table let go of this stream: nothing more comes.
                None => break true,
            },
            () = &mut deadline => {
                tracing::debug!(request = what, "request stream timed out without a reply");
                lane.stream.writer.finish();
                break false;
            }
            () = lane.session.closed() => break false,
        }
    };
    if !answered {
        give_up();
    }
}
