//! What handlers hold: [`ConnectionHandle`], a handle to one connection, and [`Ctx`],

use crate::connection::{
    Batching, Close, CloseKind, ConnectionInfo, DataMap, Frame, OutboundQueue, PushOutcome, ReplyTo,
};
use crate::error::Error;
use crate::hub::{HubInner, PublishOptions, SubscribeOptions};
use crate::message::Message;
use crate::meter::Stamp;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use signalbox_codec::{EncodeError, ErrorCode, ErrorPayload, Meta, WireCodec};
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) use signalbox_codec::vocab::{
    ERROR as ERROR_TYPE, RPC_ERROR as RPC_ERROR_TYPE, RPC_PROGRESS as PROGRESS_TYPE,
};

/// A handle to one connection: cheap to clone, usable from any task.
///
/// Sending never waits: messages go into the connection's outbound queue,
/// bounded by the bytes it holds (`Config::outbound_queue_bytes`) and by a
/// message count (`Config::outbound_queue`), and a full queue applies the
/// configured
/// [`OverflowPolicy`](crate::connection::OverflowPolicy).
#[derive(Clone)]
pub struct ConnectionHandle {
    pub(crate) shared: Arc<ConnShared>,
}

pub(crate) struct ConnShared {
    pub(crate) id: Arc<str>,
    pub(crate) info: ConnectionInfo,
    pub(crate) data: Mutex<DataMap>,
    pub(crate) outbound: OutboundQueue,
    /// The writer's batching window, if any ([`ConnectionHandle::set_batching`]).
    pub(crate) batching: Mutex<Option<Batching>>,
    pub(crate) topics: Mutex<BTreeSet<Arc<str>>>,
    pub(crate) watching: Mutex<BTreeSet<Arc<str>>>,
    pub(crate) close: Mutex<Option<Close>>,
    /// Set when the peer is known not to read (a slow consumer): closing
    /// then skips draining the queue into a connection that takes nothing.
    pub(crate) abandon_queue: CancellationToken,
    pub(crate) closing: CancellationToken,
    pub(crate) hub: Arc<HubInner>,
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.shared.id)
            .field("transport", &self.shared.info.transport)
            .field("codec", &self.shared.info.codec.name())
            .finish()
    }
}

impl ConnectionHandle {
    /// The server's id for this connection: unique across nodes, and the
    /// `clientId` on messages it publishes.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// What the transport learnt at the handshake.
    pub fn info(&self) -> &ConnectionInfo {
        &self.shared.info
    }

    /// The connection's codec.
    pub fn codec(&self) -> &WireCodec {
        &self.shared.info.codec
    }

    /// Sends a message (stamped with the server's timestamp).
    pub fn send<M: Message>(&self, msg: &M) -> Result<(), Error> {
        self.send_with(msg, Meta::new(), true)
    }

    /// Sends a message with the given meta; `compress: false` opts it out
    /// of gzip for `+gzip` clients.
    pub fn send_with<M: Message>(
        &self,
        msg: &M,
        mut meta: Meta,
        compress: bool,
    ) -> Result<(), Error> {
        meta.timestamp = Some(self.shared.hub.clock.now_ms());
        let frame = msg
            .encode(self.codec(), &meta, compress)
            .map_err(encode_error)?;
        self.push_frame(answer(frame, M::TYPE, meta.correlation_id), Stamp::none())?;
        self.shared.hub.meter.sent_typed(M::TYPE, 1);
        Ok(())
    }

    /// Sends an `ERROR` message (not tied to a request).
    pub fn send_error(&self, error: &Error) -> Result<(), Error> {
        self.send_error_as(ERROR_TYPE, None, error.payload())
    }

    pub(crate) fn send_error_as(
        &self,
        ty: &str,
        correlation_id: Option<String>,
        payload: &ErrorPayload,
    ) -> Result<(), Error> {
        self.send_error_to(ty, correlation_id, payload, None)
    }

    /// Sends an error answer; `refused` is the tag of a message the
    /// transport refused ([`crate::connection::Inbound::Refused`]), which
    /// the answer's frame carries back to it.
    pub(crate) fn send_error_to(
        &self,
        ty: &str,
        correlation_id: Option<String>,
        payload: &ErrorPayload,
        refused: Option<u64>,
    ) -> Result<(), Error> {
        let meta = Meta {
            correlation_id,
            timestamp: Some(self.shared.hub.clock.now_ms()),
            ..Meta::default()
        };
        let frame = self
            .codec()
            .encode(ty, &meta, Some(payload))
            .map_err(encode_error)?;
        let frame = match refused {
            Some(tag) => Frame::reply(frame, ReplyTo::Refused { tag }),
            None => answer(frame, ty, meta.correlation_id),
        };
        self.push_frame(frame, Stamp::none())?;
        self.shared.hub.meter.sent(ty, 1);
        Ok(())
    }

    pub(crate) fn send_serde<P: Serialize + ?Sized>(
        &self,
        ty: &str,
        meta: Meta,
        payload: Option<&P>,
        compress: bool,
    ) -> Result<(), Error> {
        let mut meta = meta;
        meta.timestamp = Some(self.shared.hub.clock.now_ms());
        let frame = self
            .codec()
            .encode_with(ty, &meta, payload, compress)
            .map_err(encode_error)?;
        self.push_frame(answer(frame, ty, meta.correlation_id), Stamp::none())?;
        self.shared.hub.meter.sent(ty, 1);
        Ok(())
    }

    /// Queues an encoded frame that answers nothing (a publication, a
    /// state view).
    pub(crate) fn push(&self, frame: Bytes) -> Result<(), Error> {
        self.push_frame(Frame::new(frame), Stamp::none())
    }

    /// Queues an encoded frame of a publish that started at `stamp`.
    pub(crate) fn push_stamped(&self, frame: Bytes, stamp: Stamp) -> Result<(), Error> {
        self.push_frame(Frame::new(frame), stamp)
    }

    /// Queues a frame, with its metadata, stamped at `stamp`.
    fn push_frame(&self, frame: Frame, stamp: Stamp) -> Result<(), Error> {
        match self.shared.outbound.push_stamped(frame, stamp) {
            PushOutcome::Queued | PushOutcome::DroppedOldest | PushOutcome::DroppedNewest => Ok(()),
            PushOutcome::Overflow => {
                self.close_slow_consumer("slow consumer: outbound queue full");
                Err(Error::unavailable("connection closed: outbound queue full"))
            }
            PushOutcome::Closed => Err(Error::unavailable("connection closed")),
        }
    }

    /// Closes the connection as one whose peer does not read: what is
    /// queued is not drained into it.
    pub(crate) fn close_slow_consumer(&self, reason: &'static str) {
        if !self.shared.abandon_queue.is_cancelled() && !self.is_closed() {
            self.shared.hub.meter.slow_consumer_closed();
        }
        self.shared.abandon_queue.cancel();
        self.close(Close::new(CloseKind::Policy, reason));
    }

    /// Sets this connection's batching window ([`Batching`]), or with
    /// `None` turns it off; it starts as the hub's
    /// ([`crate::Config::batching`], default off). Takes effect from the
    /// next batch the writer gathers: an application turns it on from an
    /// `on_open` hook or a handler for a connection that receives many
    /// messages in bursts, and off for one that needs each message at
    /// once.
    pub fn set_batching(&self, batching: Option<Batching>) {
        *self.shared.batching.lock() = batching;
    }

    /// This connection's batching window, if any.
    pub fn batching(&self) -> Option<Batching> {
        *self.shared.batching.lock()
    }

    /// Messages the outbound queue dropped under a drop policy.
    pub fn dropped(&self) -> u64 {
        self.shared.outbound.dropped()
    }

    /// A copy of the connection's value of type `T`.
    pub fn data<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.shared.data.lock().get::<T>().cloned()
    }

    /// Sets the connection's value of type `T`, returning the old one.
    pub fn set_data<T: Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.shared.data.lock().insert(value)
    }

    /// Updates the connection's value of type `T` (starting from
    /// `T::default()`) and returns what `f` returns. `f` runs under a lock:
    /// keep it short, and do not call back into this connection's data.
    pub fn update_data<T: Default + Send + Sync + 'static, R>(
        &self,
        f: impl FnOnce(&mut T) -> R,
    ) -> R {
        f(self.shared.data.lock().get_or_default::<T>())
    }

    /// Removes the connection's value of type `T`.
    pub fn remove_data<T: Send + Sync + 'static>(&self) -> Option<T> {
        self.shared.data.lock().remove::<T>()
    }

    /// Shared application state registered with [`crate::Router::with_state`].
    ///
    /// A type no router registered is an INTERNAL error here, when the
    /// handler runs; declared with [`crate::Router::needs`] (or
    /// [`crate::Route::needs`]) it is refused when the hub is built instead.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&T, Error> {
        self.shared.hub.state.get::<T>().ok_or_else(|| {
            tracing::error!(
                state = std::any::type_name::<T>(),
                "state not registered (declare it with Router::needs to have the hub refuse to build without it)"
            );
            Error::internal("internal error")
        })
    }

    /// The state-store keys this connection watches, in name order.
    pub fn store_keys(&self) -> Vec<String> {
        self.shared
            .watching
            .lock()
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// The hub's keyed state store.
    pub fn store(&self) -> &crate::state::StateStore {
        &self.shared.hub.store
    }

    /// The hub this connection belongs to.
    pub fn hub(&self) -> crate::Hub {
        crate::Hub {
            inner: self.shared.hub.clone(),
        }
    }

    /// Subscribes to `topic`. Subscribing twice is a no-op; returns whether
    /// the connection was not subscribed before.
    ///
    /// On a topic with history, the connection is first sent
    /// `$sb:subscribed` with the topic's position (docs/PROTOCOL.md §8).
    pub fn subscribe(&self, topic: &str) -> Result<bool, Error> {
        self.shared
            .hub
            .subscribe(self, topic, SubscribeOptions::default())
    }

    /// Subscribes to `topic` with options: where to start in its history,
    /// what its presence lists for this connection. Subscribing again only
    /// updates the presence; returns whether the connection was not
    /// subscribed before.
    pub fn subscribe_with(&self, topic: &str, options: SubscribeOptions) -> Result<bool, Error> {
        self.shared.hub.subscribe(self, topic, options)
    }

    /// Unsubscribes from `topic`; returns whether it was subscribed.
    pub fn unsubscribe(&self, topic: &str) -> bool {
        self.shared.hub.unsubscribe(self, topic)
    }

    /// Whether the connection holds `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.shared.topics.lock().contains(topic)
    }

    /// The topics this connection holds, in name order.
    pub fn topics(&self) -> Vec<String> {
        self.shared
            .topics
            .lock()
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// Publishes to every subscriber of `topic`, this connection included,
    /// with `meta.clientId` naming this connection. Returns the number of
    /// local subscribers it was queued for.
    pub async fn publish<M: Message>(&self, topic: &str, msg: &M) -> Result<usize, Error> {
        self.publish_with(topic, msg, PublishOptions::default())
            .await
    }

    /// Publishes with options (exclude the sender, no compression).
    pub async fn publish_with<M: Message>(
        &self,
        topic: &str,
        msg: &M,
        options: PublishOptions,
    ) -> Result<usize, Error> {
        self.shared
            .hub
            .authorize(self, topic, crate::TopicAction::Publish)?;
        let hub = crate::Hub {
            inner: self.shared.hub.clone(),
        };
        hub.publish_from(Some(self), topic, msg, options).await
    }

    /// Asks the connection to close with `close` once what is queued has
    /// been written (up to the drain timeout). The first close wins.
    pub fn close(&self, close: Close) {
        {
            let mut slot = self.shared.close.lock();
            if slot.is_none() {
                *slot = Some(close);
            }
        }
        self.shared.closing.cancel();
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.is_cancelled()
    }

    /// Waits until the connection starts closing.
    pub async fn closed(&self) {
        self.shared.closing.cancelled().await;
    }

    pub(crate) fn close_reason(&self) -> Close {
        if let Some(close) = self.shared.close.lock().clone() {
            return close;
        }
        if self.shared.hub.shutdown.is_cancelled() {
            Close::new(CloseKind::GoingAway, "server shutting down")
        } else {
            Close::new(CloseKind::Normal, "")
        }
    }
}

/// The frame of a message of type `ty` sent with `correlation_id`: a
/// message carrying a correlationId answers the peer's message with that
/// id (docs/PROTOCOL.md §6), and is the last answer unless it is progress.
/// The id's string moves into the frame's metadata (no copy: the ids
/// here are clones or decoded strings, whose capacity is their length).
fn answer(frame: Bytes, ty: &str, correlation_id: Option<String>) -> Frame {
    match correlation_id {
        Some(id) => Frame::reply(
            frame,
            ReplyTo::Request {
                correlation_id: id.into_boxed_str(),
                progress: ty == PROGRESS_TYPE,
            },
        ),
        None => Frame::new(frame),
    }
}

pub(crate) fn encode_error(e: EncodeError) -> Error {
    match e {
        EncodeError::TooLarge { .. } => Error::resource_exhausted(e.to_string(), None),
        other => {
            tracing::error!(error = %other, "message could not be encoded");
            Error::internal("internal error")
        }
    }
}

/// What handlers hold: [`ConnectionHandle`], a handle to one connection, and [`Ctx`],
/// one message with its connection.
///
/// Applications extend the context with their own methods through an
/// extension trait, implemented once for every `Ctx<M>` (bun-ws-router's
/// `ExtendedContext`, without wrapping a single handler):
///
/// ```
/// use signalbox::{Ctx, Error, Message};
///
/// #[derive(Clone)]
/// struct Roles(Vec<String>);
///
/// trait AppCtx {
///     fn has_role(&self, role: &str) -> bool;
///     fn require_role(&self, role: &str) -> Result<(), Error>;
/// }
///
/// impl<M: Message> AppCtx for Ctx<M> {
///     fn has_role(&self, role: &str) -> bool {
///         self.data::<Roles>().is_some_and(|r| r.0.iter().any(|r| r == role))
///     }
///     fn require_role(&self, role: &str) -> Result<(), Error> {
///         if self.has_role(role) { Ok(()) } else { Err(Error::permission_denied(format!("{role} only"))) }
///     }
/// }
/// ```
///
/// One message and its connection: what a handler receives.
///
/// Dereferences to [`ConnectionHandle`], so `ctx.send(..)`, `ctx.data::<T>()`,
/// `ctx.subscribe(..)` and `ctx.publish(..)` work directly.
pub struct Ctx<M> {
    pub(crate) conn: ConnectionHandle,
    pub(crate) payload: M,
    pub(crate) meta: Meta,
    pub(crate) rpc: bool,
    pub(crate) compress: bool,
}

impl<M: fmt::Debug> fmt::Debug for Ctx<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("conn", &self.conn)
            .field("payload", &self.payload)
            .field("meta", &self.meta)
            .finish()
    }
}

impl<M> Deref for Ctx<M> {
    type Target = ConnectionHandle;
    fn deref(&self) -> &ConnectionHandle {
        &self.conn
    }
}

impl<M> Ctx<M> {
    /// The decoded, validated payload.
    pub fn payload(&self) -> &M {
        &self.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> M {
        self.payload
    }

    /// The envelope meta (extended keys included; a client's `clientId`
    /// is never here).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The connection.
    pub fn conn(&self) -> &ConnectionHandle {
        &self.conn
    }

    /// The connection's id (`clientId` on what it publishes).
    pub fn client_id(&self) -> &str {
        self.conn.id()
    }

    /// Sends `msg` carrying this message's correlationId.
    pub fn reply<R: Message>(&self, msg: &R) -> Result<(), Error> {
        let meta = Meta {
            correlation_id: self.meta.correlation_id.clone(),
            ..Meta::default()
        };
        self.conn.send_with(msg, meta, self.compress)
    }

    /// Sends a progress message (`$ws:rpc-progress`) for this request.
    pub fn progress<P: Serialize + ?Sized>(&self, payload: &P) -> Result<(), Error> {
        let meta = Meta {
            correlation_id: self.meta.correlation_id.clone(),
            ..Meta::default()
        };
        self.conn
            .send_serde(PROGRESS_TYPE, meta, Some(payload), self.compress)
    }

    /// Sends an error for this message (`RPC_ERROR` for a request, `ERROR`
    /// otherwise) with its correlationId. The handler goes on; to stop, return
    /// the error instead.
    pub fn error(
        &self,
        code: ErrorCode,
        message: impl Into<String>,
        details: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let mut payload = ErrorPayload::new(code, message);
        payload.details = details;
        let ty = if self.rpc { RPC_ERROR_TYPE } else { ERROR_TYPE };
        self.conn
            .send_error_as(ty, self.meta.correlation_id.clone(), &payload)
    }
}
