//! A client for signalbox servers, independent of the transport.
//!
//! A [`Connector`] opens one connection (WebSocket: `signalbox_ws::WsConnector`;
//! QUIC: its own crate) and hands back the same seam the server side uses,
//! a [`FrameSource`] and a [`FrameSink`]. [`Client`] does the rest:
//! typed sends, requests with correlation ids and deadlines, typed handlers
//! and a bounded stream of what the server sends, reconnects with
//! exponential backoff and jitter, a bounded offline queue, and the
//! connection state as a [`tokio::sync::watch`].
//!
//! A request whose caller stopped waiting (its timeout, or the future
//! dropped) before it was written is withdrawn and never sent
//! ([`ClientError::Timeout`] says whether it was written). An upgrade the
//! server denies (401, 403) stops the client ([`ConnectionState::Refused`],
//! sends fail with [`ClientError::Refused`]) unless
//! [`ClientConfig::retry_denied`] is set. A connection the server closes
//! with a close frame shows its code and reason ([`PeerClose`] in
//! [`ConnectionState::Disconnected`]). [`ClientBuilder::on_connected`]
//! sends first on every (re)connect (re-join rooms), and
//! [`ClientBuilder::on_error`] receives, typed, the `ERROR`s that answer
//! fire-and-forget sends.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use signalbox::client::{Client, InProcess};
//! use signalbox::{message, Ctx, Router};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add { a: i64, b: i64 }
//! message!(Add = "ADD");
//! #[derive(Serialize, Deserialize)]
//! struct Sum { sum: i64 }
//! message!(Sum = "SUM");
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let hub = Router::new()
//!     .rpc(|ctx: Ctx<Add>| async move { Ok(Sum { sum: ctx.payload().a + ctx.payload().b }) })
//!     .build();
//! // A real application uses a transport's connector (`signalbox_ws::WsConnector`).
//! let client = Client::builder(InProcess::new(hub, "json").unwrap()).build();
//! let sum: Sum = client.request(&Add { a: 2, b: 3 }, Duration::from_secs(1)).await.unwrap();
//! assert_eq!(sum.sum, 5);
//! client.close().await;
//! # });
//! ```

mod backoff;
mod memory;
mod offline;
mod resume;
#[cfg(test)]
mod tests;

pub use crate::connection::PeerClose;
pub use memory::InProcess;
pub use offline::OfflinePolicy;
pub use resume::Recovery;

use crate::connection::{Close, CloseKind, Frame, FrameSink, FrameSource, Inbound};
use crate::context::{ERROR_TYPE, PROGRESS_TYPE, RPC_ERROR_TYPE};
use crate::error::Error;
use crate::message::Message;
use async_trait::async_trait;
use backoff::Backoff;
use bytes::Bytes;
use offline::{OfflineQueue, Queued};
use parking_lot::Mutex;
use signalbox_codec::{EncodeError, Envelope, ErrorPayload, Meta, PayloadError, WireCodec};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// One open connection, as a connector hands it over.
pub struct Link {
    /// What the server sends.
    pub source: Box<dyn FrameSource>,
    /// What the client sends.
    pub sink: Box<dyn FrameSink>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server answered, and refused (an HTTP status, a TLS alert); a
    /// later attempt may be let in.
    #[error("refused: {0}")]
    Refused(String),
    /// The server refused this client for good (HTTP 401 or 403): the same
    /// credentials will be refused again. The [`Client`] stops unless
    /// [`ClientConfig::retry_denied`] is set.
    #[error("denied: {0}")]
    Denied(String),
    /// The server could not be reached.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The attempt took too long.
    #[error("timed out")]
    Timeout,
    /// The server answered something this client does not speak.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The connector's configuration is wrong (a bad URL); retrying will not help.
    #[error("configuration: {0}")]
    Config(String),
}

/// Opens connections to one server. Transports implement it; the
/// [`Client`] calls it for the first connection and for every reconnect.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The codec this connector asks the server for. Every frame the client
    /// writes is encoded with it, including those queued while offline.
    fn codec(&self) -> WireCodec;

    /// Opens one connection, handshake included, speaking [`Connector::codec`].
    async fn connect(&self) -> Result<Link, ConnectError>;
}

/// Where the client stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first attempt is under way.
    Connecting,
    /// Connected: sends go out now.
    Connected,
    /// The connection was lost or could not be made; `reason` says why.
    /// Sends wait in the offline queue.
    Disconnected {
        /// Why.
        reason: String,
        /// The close code and reason the server sent, if it closed the
        /// connection with one (1001 and its reason at a server shutdown).
        close: Option<PeerClose>,
    },
    /// Waiting `delay` before reconnect attempt `attempt` (1 for the first),
    /// or making it,
    /// after losing the connection or failing to make it, for `reason`
    /// (the same as the `Disconnected` just before, which a watcher may
    /// not have seen).
    Reconnecting {
        /// The attempt about to be made.
        attempt: u32,
        /// How long until it is made.
        delay: Duration,
        /// Why the last connection or attempt ended.
        reason: String,
        /// The close code and reason the server sent when it ended the
        /// last connection, if it did.
        close: Option<PeerClose>,
    },
    /// Stopped for good because the server denied this client
    /// ([`ConnectError::Denied`], an upgrade answered 401 or 403): sends
    /// and requests fail with [`ClientError::Refused`]. Not entered when
    /// [`ClientConfig::retry_denied`] is set.
    Refused {
        /// What the server answered.
        reason: String,
    },
    /// Closed for good ([`Client::close`], every handle dropped, or a
    /// connector that says retrying cannot help).
    Closed,
}

/// A send or request that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered the request with `ERROR` or `RPC_ERROR`.
    #[error("server error {0}")]
    Server(Error),
    /// No reply within the timeout. `sent` says whether the request had
    /// been written to a connection: if not (offline, or waiting for room)
    /// it is withdrawn and never sent; if so the server may still run it.
    /// A route that is not an rpc answers only if its handler replies, so
    /// a request to it times out otherwise.
    #[error("{}", timeout_message(*sent))]
    Timeout {
        /// Whether the request was written before the deadline.
        sent: bool,
    },
    /// The connection was lost after the request was written: the server
    /// may or may not have handled it.
    #[error("connection lost before the reply")]
    Disconnected,
    /// Offline and the offline queue refused the message
    /// ([`OfflinePolicy::Reject`]).
    #[error("offline queue full")]
    QueueFull,
    /// The client is closed.
    #[error("client closed")]
    Closed,
    /// The server denied this client for good ([`ConnectionState::Refused`]).
    #[error("refused by the server: {0}")]
    Refused(String),
    /// The reply had the correlation id but an unexpected type.
    #[error("unexpected reply of type {0:?}")]
    UnexpectedReply(String),
    /// The message could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    /// The reply's payload did not decode as the response type.
    #[error("reply payload: {0}")]
    Payload(#[from] PayloadError),
}

fn timeout_message(sent: bool) -> &'static str {
    if sent {
        "no reply within the timeout: the request was written and the server may still run it \
         (a route that is not an rpc answers only if its handler replies)"
    } else {
        "no reply within the timeout: the request was not written yet and is withdrawn, \
         it will not be sent"
    }
}

/// Tuning of a [`Client`], each with a documented default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Reconnect after a lost connection or a failed attempt. Default true.
    pub reconnect: bool,
    /// First reconnect delay. Default 300 ms.
    pub initial_backoff: Duration,
    /// Longest reconnect delay. Default 10 s.
    pub max_backoff: Duration,
    /// Messages kept while disconnected. Default 256.
    pub offline_queue: usize,
    /// What a full offline queue does. Default [`OfflinePolicy::DropOldest`].
    pub offline_policy: OfflinePolicy,
    /// Messages written but not yet handed to the connection. Default 256;
    /// past it sends wait (backpressure).
    pub outgoing_queue: usize,
    /// Messages from the server with no typed handler, waiting in
    /// [`Client::incoming`]. Default 256; past it new ones are dropped and
    /// counted ([`Client::dropped_incoming`]).
    pub incoming_queue: usize,
    /// After a reconnect, resume the topics with history this client held
    /// (docs/PROTOCOL.md §8): subscriptions are restored and what was
    /// published meanwhile is replayed, or the application is told it
    /// could not be ([`Client::recoveries`]). Default true.
    pub resume: bool,
    /// Keep retrying after the server denied this client
    /// ([`ConnectError::Denied`]: an upgrade answered 401 or 403), with
    /// the usual backoff, for credentials that may become valid. Default
    /// false: the client stops in [`ConnectionState::Refused`].
    pub retry_denied: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            reconnect: true,
            initial_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_secs(10),
            offline_queue: 256,
            offline_policy: OfflinePolicy::DropOldest,
            outgoing_queue: 256,
            incoming_queue: 256,
            resume: true,
            retry_denied: false,
        }
    }
}

/// A frame on its way out, with the request it carries if any.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) frame: Bytes,
    pub(crate) correlation_id: Option<String>,
}

type Handler = Arc<dyn Fn(&Envelope) + Send + Sync>;
type ErrorHandler = Arc<dyn Fn(Error, Meta) + Send + Sync>;
type ConnectedHook = Arc<dyn Fn(&mut Connected<'_>) + Send + Sync>;

/// What a [`ClientBuilder::on_connected`] hook is given at every
/// (re)connect: messages it sends go out first on the new connection,
/// after the resume of topics (docs/PROTOCOL.md §8) and before what waited
/// in the offline queue.
pub struct Connected<'a> {
    codec: WireCodec,
    reconnect: bool,
    frames: &'a mut Vec<Outgoing>,
}

impl std::fmt::Debug for Connected<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("reconnect", &self.reconnect)
            .field("queued", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl Connected<'_> {
    /// Whether this is a reconnect (false for the first connection).
    pub fn is_reconnect(&self) -> bool {
        self.reconnect
    }

    /// Sends `msg` first on this connection (re-join a room, re-watch a
    /// key).
    pub fn send<M: Message>(&mut self, msg: &M) -> Result<(), EncodeError> {
        self.send_meta(msg, Meta::default())
    }

    /// Like [`Connected::send`], with `meta`.
    pub fn send_meta<M: Message>(&mut self, msg: &M, meta: Meta) -> Result<(), EncodeError> {
        let frame = msg.encode(&self.codec, &meta, true)?;
        self.frames.push(Outgoing {
            frame,
            correlation_id: None,
        });
        Ok(())
    }
}

struct Pending {
    reply: oneshot::Sender<Envelope>,
    progress: Option<mpsc::Sender<Envelope>>,
    /// The connection the request was written on, once it was.
    sent_on: Option<u64>,
}

enum Route {
    Online(mpsc::Sender<Outgoing>),
    Offline(OfflineQueue),
}

struct Shared {
    codec: WireCodec,
    config: ClientConfig,
    route: Mutex<Route>,
    /// Used while online, for what comes back from a dead connection.
    spare: Mutex<Option<OfflineQueue>>,
    pending: Mutex<HashMap<String, Pending>>,
    handlers: HashMap<&'static str, Handler>,
    on_error: Option<ErrorHandler>,
    on_connected: Option<ConnectedHook>,
    /// Why the server denied this client, once it did.
    refused: Mutex<Option<String>>,
    incoming: mpsc::Sender<Envelope>,
    state: watch::Sender<ConnectionState>,
    next_id: AtomicU64,
    dropped_offline: AtomicU64,
    dropped_incoming: AtomicU64,
    /// The last position seen per topic with history.
    positions: resume::Positions,
    stop: CancellationToken,
}

/// Cancels the driver when the last [`Client`] handle is dropped.
struct Owner {
    shared: Arc<Shared>,
    incoming: Mutex<Option<mpsc::Receiver<Envelope>>>,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// A connection to a signalbox server that survives disconnects. Cheap to
/// clone; every clone is the same client. Dropping the last clone closes it.
#[derive(Clone)]
pub struct Client {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("codec", &self.owner.shared.codec.name())
            .field("state", &*self.owner.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder<C> {
    connector: C,
    config: ClientConfig,
    handlers: HashMap<&'static str, Handler>,
    on_error: Option<ErrorHandler>,
    on_connected: Option<ConnectedHook>,
}

impl<C> std::fmt::Debug for ClientBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<C: Connector> ClientBuilder<C> {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Reconnect delays: `initial`, doubling up to `max`, with jitter.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.initial_backoff = initial;
        self.config.max_backoff = max;
        self
    }

    /// Whether to reconnect at all.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.config.reconnect = reconnect;
        self
    }

    /// The offline queue's bound and policy.
    pub fn offline_queue(mut self, capacity: usize, policy: OfflinePolicy) -> Self {
        self.config.offline_queue = capacity;
        self.config.offline_policy = policy;
        self
    }

    /// Calls `handler` for every message of type `M` the server sends that
    /// is not a reply to a request. It runs on the client's reader: keep it
    /// short (hand work to a task or a channel). A payload that does not
    /// decode as `M` is logged and skipped.
    pub fn on<M, F>(mut self, handler: F) -> Self
    where
        M: Message,
        F: Fn(M, Meta) + Send + Sync + 'static,
    {
        self.handlers.insert(
            M::TYPE,
            Arc::new(
                move |envelope: &Envelope| match M::decode(envelope.payload.as_ref()) {
                    Ok(msg) => handler(msg, envelope.meta.clone()),
                    Err(error) => tracing::warn!(r#type = M::TYPE, %error, "message skipped"),
                },
            ),
        );
        self
    }

    /// Whether to keep retrying after the server denied this client (see
    /// [`ClientConfig::retry_denied`]).
    pub fn retry_denied(mut self, retry: bool) -> Self {
        self.config.retry_denied = retry;
        self
    }

    /// Calls `handler` for every `ERROR` the server sends that answers no
    /// pending request (docs/PROTOCOL.md §6): the errors of fire-and-forget
    /// sends, typed, with the meta (the correlation id, if the send had
    /// one). It runs on the client's reader: keep it short. Without it
    /// those errors go to [`Client::incoming`] as envelopes.
    pub fn on_error<F>(mut self, handler: F) -> Self
    where
        F: Fn(Error, Meta) + Send + Sync + 'static,
    {
        self.on_error = Some(Arc::new(handler));
        self
    }

    /// Calls `hook` at every connect and reconnect, before anything queued
    /// offline is written: what it sends through [`Connected`] goes out
    /// first (re-join rooms, re-watch keys). Topics with history are
    /// resumed without it ([`ClientConfig::resume`]). It runs on the
    /// client's driver: keep it short.
    pub fn on_connected<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut Connected<'_>) + Send + Sync + 'static,
    {
        self.on_connected = Some(Arc::new(hook));
        self
    }

    /// Starts the client: it connects in the background (see
    /// [`Client::state`]). Needs a tokio runtime.
    pub fn build(self) -> Client {
        let config = self.config;
        let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_queue.max(1));
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let shared = Arc::new(Shared {
            codec: self.connector.codec(),
            route: Mutex::new(Route::Offline(OfflineQueue::new(
                config.offline_queue,
                config.offline_policy,
            ))),
            spare: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            handlers: self.handlers,
            on_error: self.on_error,
            on_connected: self.on_connected,
            refused: Mutex::new(None),
            incoming: incoming_tx,
            state,
            next_id: AtomicU64::new(1),
            dropped_offline: AtomicU64::new(0),
            dropped_incoming: AtomicU64::new(0),
            positions: resume::Positions::new(),
            stop: CancellationToken::new(),
            config,
        });
        let driver = tokio::spawn(drive(shared.clone(), self.connector));
        Client {
            owner: Arc::new(Owner {
                shared,
                incoming: Mutex::new(Some(incoming_rx)),
                driver: Mutex::new(Some(driver)),
            }),
        }
    }
}

/// Removes a request's pending entry however the request ends (reply,
/// timeout, or the caller dropping the future).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        withdraw(self.shared, &self.id);
    }
}

/// Forgets request `id`, whose caller stopped waiting; whether it had been
/// written. One not written yet is never sent: it leaves the offline
/// queue, and a connection skips it if it was on its way there.
fn withdraw(shared: &Shared, id: &str) -> bool {
    let removed = shared.pending.lock().remove(id);
    // Gone already (answered, or failed with its connection): it was sent.
    let sent = !matches!(removed, Some(Pending { sent_on: None, .. }));
    if !sent && let Route::Offline(queue) = &mut *shared.route.lock() {
        queue.withdraw(id);
    }
    sent
}

impl Client {
    /// Starts building a client that connects with `connector`.
    pub fn builder<C: Connector>(connector: C) -> ClientBuilder<C> {
        ClientBuilder {
            connector,
            config: ClientConfig::default(),
            handlers: HashMap::new(),
            on_error: None,
            on_connected: None,
        }
    }

    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// The codec the client speaks.
    pub fn codec(&self) -> WireCodec {
        self.shared().codec
    }

    /// What became of each topic with history at every resume after a
    /// reconnect, as it happens: recovered (everything missed was
    /// replayed, in order, before live messages) or not (the application
    /// should refetch). A receiver that falls behind by more than 256
    /// events is told so by `Lagged`.
    pub fn recoveries(&self) -> tokio::sync::broadcast::Receiver<Recovery> {
        self.shared().positions.events()
    }

    /// The last position seen on each topic with history this client
    /// holds, by topic name.
    pub fn positions(&self) -> Vec<(String, crate::Position)> {
        self.shared().positions.snapshot()
    }

    /// The connection state, now and as it changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared().state.subscribe()
    }

    /// Waits until connected, up to `timeout`; whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut state = self.state();
        tokio::time::timeout(
            timeout,
            state.wait_for(|s| {
                matches!(
                    s,
                    ConnectionState::Connected
                        | ConnectionState::Closed
                        | ConnectionState::Refused { .. }
                )
            }),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|s| *s == ConnectionState::Connected)
    }

    /// The messages from the server that are neither replies nor handled by
    /// a typed handler, in arrival order (bounded: see
    /// [`ClientConfig::incoming_queue`]). `None` after the first call.
    pub fn incoming(&self) -> Option<mpsc::Receiver<Envelope>> {
        self.owner.incoming.lock().take()
    }

    /// Messages dropped because [`Client::incoming`] was full.
    pub fn dropped_incoming(&self) -> u64 {
        self.shared().dropped_incoming.load(Ordering::Relaxed)
    }

    /// Messages dropped from (or refused by) the offline queue.
    pub fn dropped_offline(&self) -> u64 {
        self.shared().dropped_offline.load(Ordering::Relaxed)
    }

    /// Messages waiting in the offline queue now (0 while connected).
    pub fn queued_offline(&self) -> usize {
        match &*self.shared().route.lock() {
            Route::Offline(queue) => queue.len(),
            Route::Online(_) => 0,
        }
    }

    /// Sends `msg`. Connected: it is handed to the connection (waiting if
    /// the outgoing queue is full). Disconnected: it waits in the offline
    /// queue and goes out first after the reconnect.
    pub async fn send<M: Message>(&self, msg: &M) -> Result<(), ClientError> {
        self.send_meta(msg, Meta::default()).await
    }

    /// Sends `msg` with `meta` (extended keys, a correlation id of your own).
    pub async fn send_meta<M: Message>(&self, msg: &M, meta: Meta) -> Result<(), ClientError> {
        let frame = msg.encode(&self.shared().codec, &meta, true)?;
        self.enqueue(Outgoing {
            frame,
            correlation_id: None,
        })
        .await
    }

    async fn enqueue(&self, out: Outgoing) -> Result<(), ClientError> {
        enum Next {
            Wait(mpsc::Sender<Outgoing>),
            Retry,
        }
        let shared = self.shared();
        let mut out = out;
        loop {
            if shared.stop.is_cancelled() {
                return Err(shared.closed_error());
            }
            let next = match &mut *shared.route.lock() {
                Route::Online(tx) => match tx.try_send(out) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::TrySendError::Full(back)) => {
                        out = back;
                        Next::Wait(tx.clone())
                    }
                    // The connection just died; the driver switches to
                    // offline in a moment.
                    Err(mpsc::error::TrySendError::Closed(back)) => {
                        out = back;
                        Next::Retry
                    }
                },
                Route::Offline(queue) => {
                    return match queue.push(out) {
                        Queued::Yes => Ok(()),
                        Queued::DroppedOldest | Queued::DroppedNew => {
                            shared.dropped_offline.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        Queued::Rejected => {
                            shared.dropped_offline.fetch_add(1, Ordering::Relaxed);
                            Err(ClientError::QueueFull)
                        }
                    };
                }
            };
            match next {
                // Full: wait for room, without holding the lock.
                Next::Wait(tx) => {
                    if let Ok(permit) = tx.reserve().await {
                        permit.send(out);
                        return Ok(());
                    }
                }
                Next::Retry => tokio::task::yield_now().await,
            }
        }
    }

    /// Sends a request and waits up to `timeout` for its reply of type
    /// `Resp` (matched by correlation id). `ERROR` and `RPC_ERROR` answers
    /// become [`ClientError::Server`]. At the deadline, or when the future
    /// is dropped, the request is forgotten: if it was not written yet
    /// (offline, or waiting for room) it is withdrawn and never sent
    /// ([`ClientError::Timeout`] says `sent: false`); if it was, the server
    /// may still run it and a late reply is discarded. A route that is not
    /// an rpc answers only if its handler replies.
    pub async fn request<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        self.request_inner(req, timeout, None).await
    }

    /// Like [`Client::request`], and every progress message
    /// (`$ws:rpc-progress`) for it goes to `progress`; progress that does
    /// not fit in the channel is dropped.
    pub async fn request_with_progress<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        timeout: Duration,
        progress: mpsc::Sender<Envelope>,
    ) -> Result<Resp, ClientError> {
        self.request_inner(req, timeout, Some(progress)).await
    }

    async fn request_inner<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        timeout: Duration,
        progress: Option<mpsc::Sender<Envelope>>,
    ) -> Result<Resp, ClientError> {
        let shared = self.shared();
        let id = format!("c{}", shared.next_id.fetch_add(1, Ordering::Relaxed));
        let meta = Meta {
            correlation_id: Some(id.clone()),
            ..Meta::default()
        };
        let frame = req.encode(&shared.codec, &meta, true)?;
        let (tx, rx) = oneshot::channel();
        shared.pending.lock().insert(
            id.clone(),
            Pending {
                reply: tx,
                progress,
                sent_on: None,
            },
        );
        let _guard = PendingGuard {
            shared,
            id: id.clone(),
        };
        let wire_id = id.clone();
        let work = async {
            self.enqueue(Outgoing {
                frame,
                correlation_id: Some(wire_id),
            })
            .await?;
            rx.await.map_err(|_| match shared.refused.lock().clone() {
                Some(reason) => ClientError::Refused(reason),
                None => ClientError::Disconnected,
            })
        };
        let reply = match tokio::time::timeout(timeout, work).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    sent: withdraw(shared, &id),
                });
            }
        };
        if reply.ty == ERROR_TYPE || reply.ty == RPC_ERROR_TYPE {
            let payload: ErrorPayload = reply.decode_payload()?;
            return Err(ClientError::Server(Error::from(payload)));
        }
        if reply.ty != Resp::TYPE {
            return Err(ClientError::UnexpectedReply(reply.ty));
        }
        Ok(Resp::decode(reply.payload.as_ref())?)
    }

    /// Closes the connection normally and stops reconnecting; resolves when
    /// the client is done. Sends still queued are dropped.
    pub async fn close(&self) {
        self.shared().stop.cancel();
        let driver = self.owner.driver.lock().take();
        if let Some(driver) = driver {
            let _ = driver.await;
        }
    }
}

impl Shared {
    /// Why a send fails once the client stopped.
    fn closed_error(&self) -> ClientError {
        match self.refused.lock().clone() {
            Some(reason) => ClientError::Refused(reason),
            None => ClientError::Closed,
        }
    }
}

/// Connects, serves the connection, reconnects: until stopped.
async fn drive<C: Connector>(shared: Arc<Shared>, connector: C) {
    let config = shared.config.clone();
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    let mut epoch = 0u64;
    let mut last = ConnectionState::Closed;
    loop {
        let attempt = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            attempt = connector.connect() => attempt,
        };
        let (reason, close) = match attempt {
            Ok(link) => {
                backoff.reset();
                epoch += 1;
                let ended = serve_link(&shared, link, epoch).await;
                fail_sent(&shared, epoch);
                ended
            }
            Err(ConnectError::Config(reason)) => {
                tracing::warn!(%reason, "client cannot connect; not retrying");
                break;
            }
            Err(ConnectError::Denied(reason)) if !config.retry_denied => {
                tracing::warn!(%reason, "the server denied this client; not retrying");
                // Set before stopping, so that sends fail as refused.
                *shared.refused.lock() = Some(reason.clone());
                last = ConnectionState::Refused { reason };
                break;
            }
            Err(error) => (error.to_string(), None),
        };
        if shared.stop.is_cancelled() {
            break;
        }
        tracing::debug!(%reason, "client disconnected");
        shared.state.send_replace(ConnectionState::Disconnected {
            reason: reason.clone(),
            close: close.clone(),
        });
        if !config.reconnect {
            break;
        }
        let delay = backoff.next_delay();
        shared.state.send_replace(ConnectionState::Reconnecting {
            attempt: backoff.attempt(),
            delay,
            reason,
            close,
        });
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    shared.stop.cancel();
    // What waited offline will not be sent.
    if let Route::Offline(queue) = &mut *shared.route.lock() {
        let dropped = queue.take().len();
        shared
            .dropped_offline
            .fetch_add(dropped as u64, Ordering::Relaxed);
    }
    shared.state.send_replace(last);
    // Whoever still waits for a reply will not get one.
    shared.pending.lock().clear();
}

/// Fails the requests written on connection `epoch`, which is gone.
fn fail_sent(shared: &Shared, epoch: u64) {
    shared
        .pending
        .lock()
        .retain(|_, pending| pending.sent_on != Some(epoch));
}

/// Serves one connection until it ends; why it ended, and the close the
/// server sent if it did.
async fn serve_link(shared: &Arc<Shared>, link: Link, epoch: u64) -> (String, Option<PeerClose>) {
    let Link {
        mut source,
        mut sink,
    } = link;
    let (tx, mut rx) = mpsc::channel::<Outgoing>(shared.config.outgoing_queue.max(1));
    // Go online: what waited offline goes first, then new sends in order.
    let backlog = {
        let mut route = shared.route.lock();
        match std::mem::replace(&mut *route, Route::Online(tx)) {
            Route::Offline(mut queue) => {
                let backlog = queue.take();
                *shared.spare.lock() = Some(queue);
                backlog
            }
            Route::Online(_) => Vec::new(),
        }
    };
    shared.state.send_replace(ConnectionState::Connected);
    tracing::debug!(epoch, queued = backlog.len(), "client connected");

    let mut batch: Vec<Outgoing> = Vec::with_capacity(backlog.len() + 1);
    // A reconnect asks for the topics it held first, so that what waited
    // offline is handled by a server that knows them again.
    if epoch > 1
        && shared.config.resume
        && let Some(frame) = shared.positions.resume_frame(&shared.codec)
    {
        batch.push(Outgoing {
            frame,
            correlation_id: None,
        });
    }
    if let Some(hook) = &shared.on_connected {
        hook(&mut Connected {
            codec: shared.codec,
            reconnect: epoch > 1,
            frames: &mut batch,
        });
    }
    batch.extend(backlog);
    let mut frames: Vec<Frame> = Vec::new();
    let mut unsent: Vec<Outgoing> = Vec::new();
    let reason = loop {
        if !batch.is_empty() {
            {
                // A request whose caller gave up before this point is not
                // written (see `withdraw`); the others are marked sent.
                let mut pending = shared.pending.lock();
                batch.retain(|out| match out.correlation_id.as_ref() {
                    Some(id) => pending
                        .get_mut(id)
                        .map(|p| p.sent_on = Some(epoch))
                        .is_some(),
                    None => true,
                });
            }
            frames.clear();
            frames.extend(batch.iter().map(|o| Frame::new(o.frame.clone())));
            if !frames.is_empty()
                && let Err(error) = sink.send_batch(&frames).await
            {
                break (format!("write failed: {error}"), None);
            }
            batch.clear();
        }
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => {
                let _ = sink.close(Close::new(CloseKind::Normal, "client closing")).await;
                break ("closed".to_owned(), None);
            }
            inbound = source.recv() => match inbound {
                Ok(Some(Inbound::Message(frame))) => dispatch(shared, frame),
                // Refusals are the server side's: a client's transport
                // has nothing to refuse on the hub's behalf.
                Ok(Some(Inbound::Alive | Inbound::Refused(_))) => {}
                Ok(None) => {
                    let close = source.peer_close();
                    let reason = close
                        .as_ref()
                        .map_or_else(|| "the server closed the connection".to_owned(), ToString::to_string);
                    break (reason, close);
                }
                Err(error) => break (format!("read failed: {error}"), None),
            },
            out = rx.recv() => match out {
                Some(out) => {
                    batch.push(out);
                    while batch.len() < 64 {
                        match rx.try_recv() {
                            Ok(out) => batch.push(out),
                            Err(_) => break,
                        }
                    }
                }
                None => break ("closed".to_owned(), None),
            },
        }
    };
    // Back offline: messages handed over but never written go first in the
    // offline queue (those of a failed batch were perhaps written: they are
    // not repeated, and their requests fail as sent).
    let mut route = shared.route.lock();
    let mut queue = shared.spare.lock().take().unwrap_or_else(|| {
        OfflineQueue::new(shared.config.offline_queue, shared.config.offline_policy)
    });
    rx.close();
    {
        // Requests whose callers gave up meanwhile are not kept.
        let pending = shared.pending.lock();
        while let Ok(out) = rx.try_recv() {
            if out
                .correlation_id
                .as_ref()
                .is_none_or(|id| pending.contains_key(id))
            {
                unsent.push(out);
            }
        }
    }
    let dropped = queue.requeue_front(unsent);
    shared
        .dropped_offline
        .fetch_add(dropped as u64, Ordering::Relaxed);
    *route = Route::Offline(queue);
    reason
}

/// Routes one frame from the server: a reply or progress to its request, a
/// typed handler, or the incoming stream.
fn dispatch(shared: &Shared, frame: Bytes) {
    let envelope = match shared.codec.decode(frame) {
        Ok(envelope) => envelope,
        Err(failure) => {
            tracing::warn!(error = %failure.error, "undecodable message from the server");
            return;
        }
    };
    if !shared.positions.observe(&envelope) {
        return;
    }
    if let Some(id) = envelope.meta.correlation_id.as_deref() {
        let mut pending = shared.pending.lock();
        if envelope.ty == PROGRESS_TYPE {
            if let Some(progress) = pending.get(id).and_then(|p| p.progress.as_ref()) {
                let _ = progress.try_send(envelope);
            }
            return;
        }
        if let Some(p) = pending.remove(id) {
            let _ = p.reply.send(envelope);
            return;
        }
    }
    if let Some(handler) = shared.handlers.get(envelope.ty.as_str()) {
        handler(&envelope);
        return;
    }
    if let (true, Some(on_error)) = (envelope.ty == ERROR_TYPE, &shared.on_error) {
        match envelope.decode_payload::<ErrorPayload>() {
            Ok(payload) => on_error(Error::from(payload), envelope.meta),
            Err(error) => tracing::warn!(%error, "undecodable ERROR from the server"),
        }
        return;
    }
    if shared.incoming.try_send(envelope).is_err() {
        shared.dropped_incoming.fetch_add(1, Ordering::Relaxed);
    }
}
