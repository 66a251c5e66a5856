//! The connection driver: one reader, one processor and one writer per
//! connection, from open to close.
//!
//! ```text
//! FrameSource ─► reader ─► bounded inbound queue ─► processor ─► handlers
//!   (decode, heartbeat, rate limit,                 (ordered inline,
//!    reserved and unknown types)                     concurrent spawned)
//! handlers / publishers ─► OutboundQueue ─► writer ─► FrameSink
//!                                           (batches, pings, drain, close)
//! ```

use super::inbound::InboundQueue;
use super::{Close, CloseKind, Connection, Frame, Inbound, RefusedMessage, TokenBucket};
use crate::connection::{FrameSink, FrameSource, OutboundBound, OutboundQueue};
use crate::context::{ConnShared, ConnectionHandle, ERROR_TYPE};
use crate::error::Error;
use crate::hub::HubInner;
use crate::meter::Stamp;
use crate::middleware::Request;
use crate::router::{ErrorAnswer, ErrorEvent, RouteEntry, dispatch};
use bytes::Bytes;
use parking_lot::Mutex;
use signalbox_codec::{Envelope, Meta};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub(crate) use signalbox_codec::vocab::{
    HEARTBEAT as HEARTBEAT_TYPE, HEARTBEAT_ACK as HEARTBEAT_ACK_TYPE, RESUME as RESUME_TYPE,
    RESUMED as RESUMED_TYPE,
};

/// What the reader hands the processor.
enum Work {
    /// A decoded message and the route it goes to.
    Message(Arc<RouteEntry>, Box<Envelope>),
    /// A handler the reader started that did not finish at once: an
    /// ordered one finishes before the next message, a concurrent one goes
    /// on in its own task.
    Started {
        work: Pin<Box<dyn Future<Output = ()> + Send>>,
        concurrent: bool,
    },
}

/// How long closing a slow consumer may wait for the transport to take the
/// close itself (its buffers are full).
const SLOW_CONSUMER_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Sends an error answer and reports it to the error sink.
fn answer_error(
    conn: &ConnectionHandle,
    ty: &str,
    message_type: Option<&str>,
    correlation_id: Option<String>,
    error: Error,
) {
    answer_error_to(conn, ty, message_type, correlation_id, error, None);
}

/// Answers a message the transport refused ([`Inbound::Refused`]): an
/// `ERROR` like any other (docs/PROTOCOL.md §6), whose frame carries the
/// refusal's tag back to the transport.
fn answer_refusal(conn: &ConnectionHandle, refused: RefusedMessage) {
    let RefusedMessage {
        error,
        message_type,
        correlation_id,
        tag,
    } = refused;
    answer_error_to(
        conn,
        ERROR_TYPE,
        message_type.as_deref(),
        correlation_id,
        error,
        Some(tag),
    );
}

/// [`answer_error`], the frame marked as the answer to the refusal tagged
/// `refused` when there is one.
fn answer_error_to(
    conn: &ConnectionHandle,
    ty: &str,
    message_type: Option<&str>,
    correlation_id: Option<String>,
    error: Error,
    refused: Option<u64>,
) {
    let hub = &conn.shared.hub;
    hub.meter.error_answered(error.code());
    if let Some(sink) = &hub.hooks.on_error {
        sink(&ErrorEvent {
            conn,
            message_type,
            error: &error,
        });
    }
    tracing::debug!(code = %error.code(), message = error.message(), "error answered");
    let _ = conn.send_error_to(ty, correlation_id, error.payload(), refused);
}

pub(crate) async fn serve(hub: Arc<HubInner>, connection: Connection) {
    let Connection {
        info,
        data,
        source,
        sink,
    } = connection;
    let id = hub.next_conn_id();
    let span = tracing::info_span!(
        "connection",
        id = %id,
        transport = info.transport,
        peer = ?info.peer_addr,
        codec = info.codec.name()
    );
    let conn = ConnectionHandle {
        shared: Arc::new(ConnShared {
            id: id.clone(),
            info,
            data: Mutex::new(data),
            outbound: OutboundQueue::new(
                OutboundBound::new(hub.config.outbound_queue_bytes, hub.config.outbound_queue),
                hub.config.overflow,
            ),
            batching: Mutex::new(hub.config.batching),
            topics: Mutex::new(BTreeSet::new()),
            watching: Mutex::new(BTreeSet::new()),
            close: Mutex::new(None),
            abandon_queue: CancellationToken::new(),
            closing: hub.shutdown.child_token(),
            hub: hub.clone(),
        }),
    };
    run(hub, conn, source, sink).instrument(span).await;
}

async fn run(
    hub: Arc<HubInner>,
    conn: ConnectionHandle,
    source: Box<dyn FrameSource>,
    sink: Box<dyn FrameSink>,
) {
    hub.conns
        .lock()
        .insert(conn.shared.id.clone(), conn.clone());
    tracing::debug!("connection open");
    hub.meter.connection_opened(conn.info());
    let writer = tokio::spawn(write_loop(conn.clone(), sink).in_current_span());

    for hook in &hub.hooks.on_open {
        if let Err(error) = hook(conn.clone()).await {
            let reason = error.message().to_owned();
            answer_error(&conn, ERROR_TYPE, None, None, error);
            conn.close(Close::new(CloseKind::Policy, reason));
            break;
        }
    }

    let inbound = Arc::new(InboundQueue::new(hub.config.inbound_queue));
    let limit = Arc::new(Semaphore::new(hub.config.max_concurrent.max(1)));
    let processor =
        tokio::spawn(process_loop(conn.clone(), inbound.clone(), limit.clone()).in_current_span());
    read_loop(&conn, source, &inbound, &limit).await;
    inbound.finish();

    // The reader has stopped: nothing new comes in. Let the processor and
    // the writer finish (both bounded by the drain timeout).
    let _ = processor.await;
    let code = writer.await.ok().flatten();

    let close = conn.close_reason();
    tracing::debug!(kind = close.kind.as_str(), code, reason = %close.reason, "connection closed");
    hub.meter.connection_closed(conn.info(), &close, code);
    for hook in &hub.hooks.on_close {
        hook(conn.clone(), close.clone()).await;
    }
    let held: Vec<Arc<str>> = std::mem::take(&mut *conn.shared.topics.lock())
        .into_iter()
        .collect();
    for topic in held {
        let (removed, last) = hub.topics.remove(&topic, conn.id());
        if last {
            hub.broker.interest(&topic, false);
        }
        if removed {
            hub.presence_left(&conn, &topic);
        }
    }
    let watched: Vec<Arc<str>> = std::mem::take(&mut *conn.shared.watching.lock())
        .into_iter()
        .collect();
    for key in watched {
        hub.store.forget_watcher(&key, conn.id());
    }
    hub.conns.lock().remove(conn.id());
}

async fn read_loop(
    conn: &ConnectionHandle,
    mut source: Box<dyn FrameSource>,
    queue: &InboundQueue<Work>,
    limit: &Arc<Semaphore>,
) {
    let hub = conn.shared.hub.clone();
    let config = &hub.config;
    let idle_limit = config.heartbeat_interval + config.heartbeat_timeout;
    let watch_idle = !source.liveness_by_transport();
    let mut idle_deadline = Instant::now() + idle_limit;
    let mut bucket = config
        .rate_limit
        .map(|r| TokenBucket::new(r.per_second, r.burst, Instant::now()));
    // One wait for the close across the loop: registered once, not per
    // message.
    let closing = conn.shared.closing.cancelled();
    tokio::pin!(closing);
    loop {
        let inbound = tokio::select! {
            biased;
            _ = &mut closing => break,
            _ = sleep_until(idle_deadline), if watch_idle => {
                conn.close(Close::new(CloseKind::Policy, "heartbeat timeout"));
                break;
            }
            r = source.recv() => r,
        };
        let frame = match inbound {
            Ok(Some(Inbound::Alive)) => {
                idle_deadline = Instant::now() + idle_limit;
                continue;
            }
            // The idle timer restarts below, after any wait for room.
            Ok(Some(Inbound::Message(frame))) => frame,
            Ok(Some(Inbound::Refused(refused))) => {
                // Answered like a message that failed to decode: after any
                // wait for room, without a rate-limit token (the transport
                // bounds what it refuses).
                if !room_for_answers(conn).await {
                    break;
                }
                idle_deadline = Instant::now() + idle_limit;
                hub.meter.received_other();
                answer_refusal(conn, *refused);
                continue;
            }
            Ok(None) => {
                conn.close(Close::new(CloseKind::Normal, ""));
                break;
            }
            Err(error) => {
                tracing::debug!(%error, "transport error");
                conn.close(Close::new(error.close_kind(), error.to_string()));
                break;
            }
        };
        // Answers to this frame (an error, a rate-limit refusal) and to
        // what it starts wait for room; waiting is not idleness.
        if !room_for_answers(conn).await {
            break;
        }
        idle_deadline = Instant::now() + idle_limit;
        let Some((route, envelope)) = admit(conn, frame, bucket.as_mut()) else {
            continue;
        };
        // With nothing queued and the processor idle, the handler starts
        // here, in order: one that answers at once costs no hand-over.
        let work = if queue.claim() {
            match start_here(conn, route, envelope, limit).await {
                None => {
                    queue.idle();
                    continue;
                }
                Some(work) => work,
            }
        } else {
            Work::Message(route, envelope)
        };
        // A full queue stops reading: backpressure onto the peer. Waiting on
        // a full queue is not idleness, so the heartbeat timer restarts after.
        tokio::select! {
            biased;
            _ = &mut closing => break,
            pushed = queue.push(work) => if pushed.is_err() { break },
        }
        idle_deadline = Instant::now() + idle_limit;
    }
    if !conn.is_closed() {
        conn.close(Close::new(CloseKind::Normal, ""));
    }
}

/// Waits while the connection's outbound queue is half full (half its
/// bytes or half its messages, [`OutboundBound::half`]). The reader
/// and the processor answer the peer's own messages; holding them here
/// makes those answers push back on the peer (it is not read meanwhile)
/// instead of overflowing the queue, so the bound keeps meaning "the peer
/// does not read". Returns `false` when the connection is closing, or has
/// just been closed as a slow consumer because the queue did not drain
/// within `outbound_stall_timeout`.
pub(crate) async fn room_for_answers(conn: &ConnectionHandle) -> bool {
    let outbound = &conn.shared.outbound;
    let half = outbound.bound().half();
    if outbound.is_below(half) {
        return true;
    }
    let stall = conn.shared.hub.config.outbound_stall_timeout;
    let room = tokio::time::timeout(stall, outbound.room_below(half));
    tokio::select! {
        biased;
        _ = conn.shared.closing.cancelled() => false,
        room = room => {
            if room.is_err() {
                conn.close_slow_consumer("slow consumer: outbound queue not drained");
            }
            room.is_ok()
        }
    }
}

/// Decodes one frame and decides whether it goes to a handler; answers
/// everything that does not.
fn admit(
    conn: &ConnectionHandle,
    frame: Bytes,
    bucket: Option<&mut TokenBucket>,
) -> Option<(Arc<RouteEntry>, Box<Envelope>)> {
    let hub = &conn.shared.hub;
    let decoded = conn.codec().decode(frame);
    // Every frame costs a token, whether it decodes or not: a flood of
    // garbage is limited like any other.
    let limited = bucket.and_then(|bucket| bucket.take(Instant::now()).err());
    let mut envelope = match decoded {
        Ok(envelope) => envelope,
        Err(failure) => {
            hub.meter.received_other();
            if limited.is_some() {
                hub.meter.rate_limited();
            }
            let error = match limited {
                Some(wait) => rate_limited(wait),
                None => Error::from(failure.error),
            };
            answer_error(conn, ERROR_TYPE, None, failure.correlation_id, error);
            return None;
        }
    };
    // docs/PROTOCOL.md §1: a clientId from a client is never trusted.
    envelope.meta.client_id = None;
    let route = hub.routes.get(envelope.ty.as_str());
    match (&route, envelope.ty.as_str()) {
        (Some(route), _) => route.meters.received(),
        (None, HEARTBEAT_TYPE) => hub.meter.received_reserved(HEARTBEAT_TYPE),
        (None, RESUME_TYPE) => hub.meter.received_reserved(RESUME_TYPE),
        (None, _) => hub.meter.received_other(),
    }
    if let Some(wait) = limited {
        hub.meter.rate_limited();
        answer_error(
            conn,
            ERROR_TYPE,
            Some(&envelope.ty),
            envelope.meta.correlation_id,
            rate_limited(wait),
        );
        return None;
    }
    if envelope.ty == HEARTBEAT_TYPE {
        let meta = Meta {
            correlation_id: envelope.meta.correlation_id,
            ..Meta::default()
        };
        let _ = conn.send_serde::<()>(HEARTBEAT_ACK_TYPE, meta, None, false);
        return None;
    }
    if envelope.ty == RESUME_TYPE {
        resume(conn, &envelope);
        return None;
    }
    if signalbox_codec::vocab::is_reserved(&envelope.ty) {
        let error = Error::invalid_argument(format!("type {:?} is reserved", envelope.ty));
        answer_error(
            conn,
            ERROR_TYPE,
            Some(&envelope.ty),
            envelope.meta.correlation_id,
            error,
        );
        return None;
    }
    match route {
        // Boxed: the inbound queue's slots stay small on idle connections.
        Some(route) => Some((route.clone(), Box::new(envelope))),
        None => {
            let error = Error::new(
                signalbox_codec::ErrorCode::Unimplemented,
                format!("no route for type {:?}", envelope.ty),
            );
            answer_error(
                conn,
                ERROR_TYPE,
                Some(&envelope.ty),
                envelope.meta.correlation_id,
                error,
            );
            None
        }
    }
}

/// One topic a resuming client asks for.
#[derive(serde::Deserialize)]
struct ResumeTopic {
    topic: String,
    epoch: String,
    offset: u64,
}

#[derive(serde::Deserialize)]
struct ResumeRequest {
    topics: Vec<ResumeTopic>,
}

/// What became of one topic of a resume.
#[derive(serde::Serialize)]
struct ResumeOutcome {
    topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<signalbox_codec::ErrorPayload>,
}

#[derive(serde::Serialize)]
struct ResumeReply {
    topics: Vec<ResumeOutcome>,
}

/// `$sb:resume`: subscribes again to each topic the client held, starting
/// right after the position it last saw (docs/PROTOCOL.md §8). Each topic
/// is authorized like any subscribe; the reply lists each one, with an
/// error where it was refused. What is replayed, and whether everything
/// was, arrives per topic: the replayed publications, then
/// `$sb:subscribed` with `recovered`.
fn resume(conn: &ConnectionHandle, envelope: &Envelope) {
    let correlation_id = envelope.meta.correlation_id.clone();
    let request = match envelope
        .payload
        .as_ref()
        .map(|p| p.decode::<ResumeRequest>())
    {
        Some(Ok(request)) => request,
        Some(Err(error)) => {
            let error = Error::invalid_argument(format!("{RESUME_TYPE}: {error}"));
            answer_error(conn, ERROR_TYPE, Some(RESUME_TYPE), correlation_id, error);
            return;
        }
        None => {
            let error =
                Error::invalid_argument(format!("{RESUME_TYPE}: payload.topics is required"));
            answer_error(conn, ERROR_TYPE, Some(RESUME_TYPE), correlation_id, error);
            return;
        }
    };
    let max = conn.shared.hub.config.topics.max_per_connection;
    if request.topics.len() > max {
        let error = Error::invalid_argument(format!(
            "{RESUME_TYPE}: at most {max} topics per connection"
        ));
        answer_error(conn, ERROR_TYPE, Some(RESUME_TYPE), correlation_id, error);
        return;
    }
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let options =
                crate::SubscribeOptions::default().after(crate::Position::new(t.epoch, t.offset));
            // A topic this connection holds already keeps its place: a
            // replay now could only repeat what it was given.
            let subscribed = if conn.is_subscribed(&t.topic) {
                Err(Error::new(
                    signalbox_codec::ErrorCode::AlreadyExists,
                    "already subscribed on this connection",
                ))
            } else {
                conn.subscribe_with(&t.topic, options)
            };
            let error = subscribed.err().map(|e| {
                if let Some(sink) = &conn.shared.hub.hooks.on_error {
                    sink(&ErrorEvent {
                        conn,
                        message_type: Some(RESUME_TYPE),
                        error: &e,
                    });
                }
                e.payload().clone()
            });
            ResumeOutcome {
                topic: t.topic,
                error,
            }
        })
        .collect();
    let meta = Meta {
        correlation_id,
        ..Meta::default()
    };
    let _ = conn.send_serde(RESUMED_TYPE, meta, Some(&ResumeReply { topics }), false);
}

fn rate_limited(wait: Duration) -> Error {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    Error::resource_exhausted("rate limit exceeded", Some(ms))
}

async fn process_loop(
    conn: ConnectionHandle,
    inbound: Arc<InboundQueue<Work>>,
    limit: Arc<Semaphore>,
) {
    let hub = conn.shared.hub.clone();
    let config = &hub.config;
    let mut running = JoinSet::new();
    let grace = config.drain_timeout;
    // One wait for the close across the loop: registered once, not per
    // message.
    let closing = conn.shared.closing.cancelled();
    tokio::pin!(closing);
    loop {
        inbound.idle();
        while running.try_join_next().is_some() {}
        let next = tokio::select! {
            biased;
            _ = &mut closing => break,
            next = inbound.pop() => next,
        };
        let (work, concurrent) = match next {
            None => break,
            Some(Work::Started { work, concurrent }) => (work, concurrent),
            Some(Work::Message(route, envelope)) => {
                if !room_for_answers(&conn).await {
                    break;
                }
                let concurrent = route.concurrent;
                let permit = if concurrent {
                    tokio::select! {
                        biased;
                        _ = &mut closing => break,
                        permit = limit.clone().acquire_owned() => match permit { Ok(p) => Some(p), Err(_) => break },
                    }
                } else {
                    None
                };
                let mut work = handle(&conn, route, envelope, permit);
                // Run it here as far as it goes without waiting: a handler
                // that answers at once costs no task, and its reply joins
                // the batch the writer takes next.
                if std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx)))
                    .await
                    .is_ready()
                {
                    continue;
                }
                (work, concurrent)
            }
        };
        if concurrent {
            // One that waits goes on in its own task (the poll there
            // registers its own waker).
            running.spawn(work);
        } else {
            tokio::select! {
                () = work => {}
                () = closed_then(&conn, grace) => {
                    tracing::warn!("handler still running when the connection closed; cancelled");
                    break;
                }
            }
        }
    }
    // Closing: what waits in the queue is dropped (the connection is gone);
    // handlers already running get the drain timeout to finish.
    inbound.close();
    let drained = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(handlers = running.len(), "handlers cancelled at close");
        running.shutdown().await;
    }
}

/// The whole handling of one message: the handler, then its answer.
fn handle(
    conn: &ConnectionHandle,
    route: Arc<RouteEntry>,
    envelope: Box<Envelope>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let span = tracing::debug_span!("message", r#type = %route.name);
    let deadline = conn.shared.hub.config.rpc_deadline;
    let conn = conn.clone();
    Box::pin(
        async move {
            let req = Request {
                conn: conn.clone(),
                envelope: *envelope,
            };
            let outcome = dispatch(&route, req, deadline).await;
            settle(&conn, &route, outcome);
            drop(permit);
        }
        .instrument(span),
    )
}

/// Starts handling a message in the reader, whose turn it is
/// ([`InboundQueue::claim`]): polls it once. `None` when it finished;
/// otherwise what the processor goes on with (a concurrent message that
/// finds no free place among `max_concurrent` waits there, unstarted).
async fn start_here(
    conn: &ConnectionHandle,
    route: Arc<RouteEntry>,
    envelope: Box<Envelope>,
    limit: &Arc<Semaphore>,
) -> Option<Work> {
    let concurrent = route.concurrent;
    let permit = if concurrent {
        match limit.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return Some(Work::Message(route, envelope)),
        }
    } else {
        None
    };
    let mut work = handle(conn, route, envelope, permit);
    if std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx)))
        .await
        .is_ready()
    {
        return None;
    }
    Some(Work::Started { work, concurrent })
}

/// Answers what [`dispatch`] left to answer: the driver alone sends error
/// answers (docs/PROTOCOL.md §6).
fn settle(conn: &ConnectionHandle, route: &RouteEntry, outcome: Result<(), ErrorAnswer>) {
    if let Err(answer) = outcome {
        answer_error(
            conn,
            answer.answer_type,
            Some(&route.name),
            answer.correlation_id,
            answer.error,
        );
    }
}

/// Resolves `grace` after the connection starts closing.
async fn closed_then(conn: &ConnectionHandle, grace: Duration) {
    conn.shared.closing.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Writes until the connection closes, then closes the sink. Returns the
/// close code the transport used ([`FrameSink::close_code`]).
///
/// Without a batching window ([`crate::Batching`]) each wake-up writes
/// everything queued as one batch. With one, the first message queued
/// opens the window and the batch is written when it ends, or sooner once
/// the queue holds the window's size or half its bound (only then does a
/// push wake the writer during the window, [`OutboundQueue::open_window`]);
/// pings go out during the window, and a close ends it (the drain below
/// writes at once).
async fn write_loop(conn: ConnectionHandle, mut sink: Box<dyn FrameSink>) -> Option<u32> {
    let hub = conn.shared.hub.clone();
    let config = &hub.config;
    let outbound = &conn.shared.outbound;
    let mut batch: Vec<Frame> = Vec::new();
    let mut stamps: Vec<Stamp> = Vec::new();
    let mut ping = tokio::time::interval_at(
        Instant::now() + config.heartbeat_interval,
        config.heartbeat_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The open window's end, and what cuts it short.
    let window = tokio::time::sleep_until(Instant::now());
    tokio::pin!(window);
    let mut gathering: Option<OutboundBound> = None;
    let mut failed = false;
    // One wait for the close across the loop: registered once, not per
    // message.
    let closing = conn.shared.closing.cancelled();
    tokio::pin!(closing);
    loop {
        tokio::select! {
            biased;
            _ = &mut closing => break,
            () = outbound.ready() => {
                match gathering {
                    Some(cut) if outbound.gathering(cut) => continue,
                    Some(_) => gathering = None,
                    None => {
                        let batching = *conn.shared.batching.lock();
                        if let Some(batching) = batching {
                            let cut = batching.cut(outbound.bound());
                            if outbound.open_window(cut) {
                                window.as_mut().reset(Instant::now() + batching.max_delay());
                                gathering = Some(cut);
                                continue;
                            }
                        }
                    }
                }
                if !write_queued(&conn, sink.as_mut(), &mut batch, &mut stamps, &mut failed).await {
                    break;
                }
            }
            () = &mut window, if gathering.is_some() => {
                gathering = None;
                if !write_queued(&conn, sink.as_mut(), &mut batch, &mut stamps, &mut failed).await {
                    break;
                }
            }
            _ = ping.tick() => {
                if sink.ping().await.is_err() {
                    conn.close(Close::new(CloseKind::Normal, "ping failed"));
                    failed = true;
                    break;
                }
            }
        }
    }
    // Closing: write what is queued (up to the drain timeout), then close.
    // A slow consumer's queue is not drained: it is not reading.
    outbound.close();
    let abandoned = conn.shared.abandon_queue.is_cancelled();
    if !failed && !abandoned {
        let drain = async {
            loop {
                batch.clear();
                stamps.clear();
                outbound.drain_stamped(&mut batch, Some(&mut stamps));
                if batch.is_empty() {
                    return;
                }
                if sink.send_batch(&batch).await.is_err() {
                    return;
                }
                hub.meter.written(&stamps);
            }
        };
        if tokio::time::timeout(config.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::debug!(
                left = outbound.len(),
                left_bytes = outbound.bytes(),
                "drain timeout; queued messages not written"
            );
        }
    }
    let close = conn.close_reason();
    let close_wait = if abandoned {
        SLOW_CONSUMER_CLOSE_WAIT.min(config.drain_timeout)
    } else {
        config.drain_timeout
    };
    let code = sink.close_code(close.kind);
    let _ = tokio::time::timeout(close_wait, sink.close(close)).await;
    code
}

/// Takes everything queued and writes it as one batch (one
/// [`FrameSink::send_batch`], one flush). Returns `false` when the writer
/// must stop: the write failed (`failed` is set and the connection closed),
/// or it was given up because the peer does not read.
async fn write_queued(
    conn: &ConnectionHandle,
    sink: &mut dyn FrameSink,
    batch: &mut Vec<Frame>,
    stamps: &mut Vec<Stamp>,
    failed: &mut bool,
) -> bool {
    conn.shared
        .outbound
        .drain_stamped(batch, Some(&mut *stamps));
    if batch.is_empty() {
        return true;
    }
    // A write blocked on a peer that does not read is given up once the
    // connection is closed as a slow consumer.
    let sent = tokio::select! {
        sent = sink.send_batch(batch) => sent,
        () = conn.shared.abandon_queue.cancelled() => return false,
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "write failed");
        conn.close(Close::new(error.close_kind(), error.to_string()));
        *failed = true;
        return false;
    }
    conn.shared.hub.meter.written(stamps);
    // Dropped, not kept: a connection at rest holds no buffer (the
    // queue's own storage came with the batch).
    *batch = Vec::new();
    *stamps = Vec::new();
    true
}
