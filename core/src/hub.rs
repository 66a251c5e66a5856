//! The hub: a built router with its configuration, topics and connections.
//! Transports hand it connections; applications push through it.

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::connection::{Connection, DataMap, IncompleteBudget};
use crate::context::Conn;
use crate::error::Error;
use crate::message::Message;
use crate::router::{Hooks, RouteEntry, Router};
use crate::state::StateStore;
use crate::topic::{Broker, BrokerMessage, LocalBroker, LocalDelivery, Registry, fan_out};
use parking_lot::Mutex;
use signalbox_codec::{Format, Meta, WireCodec};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a topic authorization hook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAction {
    /// A connection subscribes.
    Subscribe,
    /// A connection publishes.
    Publish,
}

/// Options of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOptions {
    /// Do not deliver to the publishing connection.
    pub exclude_sender: bool,
    /// Allow gzip for `+gzip` subscribers (default true).
    pub compress: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            exclude_sender: false,
            compress: true,
        }
    }
}

impl PublishOptions {
    /// Every subscriber but the sender.
    pub fn excluding_sender() -> Self {
        PublishOptions {
            exclude_sender: true,
            ..PublishOptions::default()
        }
    }
}

pub(crate) struct HubInner {
    pub(crate) routes: HashMap<Box<str>, Arc<RouteEntry>>,
    pub(crate) hooks: Hooks,
    pub(crate) state: DataMap,
    pub(crate) config: Config,
    pub(crate) topics: Registry,
    pub(crate) store: StateStore,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) conns: Mutex<HashMap<Arc<str>, Conn>>,
    incomplete: Arc<IncompleteBudget>,
    node: String,
    next_id: AtomicU64,
}

/// A running router: give it connections with [`Hub::serve`], push to
/// topics with [`Hub::publish`], stop it with [`Hub::shutdown`].
///
/// Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.inner.node)
            .field("routes", &self.inner.routes.len())
            .field("connections", &self.connection_count())
            .finish()
    }
}

/// Builds a [`Hub`] from a [`Router`].
pub struct HubBuilder {
    router: Router,
    config: Config,
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// Limits and timings (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The pub/sub broker (default: [`LocalBroker`], in-process).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Arc::new(broker);
        self
    }

    /// The clock for message timestamps (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        let (routes, hooks, state) = self.router.into_parts();
        let node = format!(
            "{:08x}",
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32
        );
        let incomplete = IncompleteBudget::new(self.config.incomplete);
        let inner = Arc::new(HubInner {
            routes,
            hooks,
            state,
            config: self.config,
            topics: Registry::new(),
            store: StateStore::new(self.clock.clone()),
            broker: self.broker,
            clock: self.clock,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            conns: Mutex::new(HashMap::new()),
            incomplete,
            node,
            next_id: AtomicU64::new(1),
        });
        inner.broker.attach(LocalDelivery {
            hub: Arc::downgrade(&inner),
        });
        Hub { inner }
    }
}

impl Hub {
    /// Starts building a hub around `router`.
    pub fn builder(router: Router) -> HubBuilder {
        HubBuilder {
            router,
            config: Config::default(),
            broker: Arc::new(LocalBroker),
            clock: Arc::new(SystemClock),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The budget for incomplete inbound messages, shared by every
    /// connection of this hub on every transport ([`Config::incomplete`]).
    /// Transports take a [`crate::connection::Reservation`] from it per
    /// connection.
    pub fn incomplete_budget(&self) -> &Arc<IncompleteBudget> {
        &self.inner.incomplete
    }

    /// The codec a connection that negotiated `codec` uses, with this hub's
    /// limits applied.
    pub fn codec(&self, codec: WireCodec) -> WireCodec {
        codec.with_limits(self.inner.config.codec)
    }

    /// Serves one connection until it closes. Transports spawn this for each
    /// connection after the handshake.
    pub fn serve(&self, connection: Connection) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        self.inner
            .tracker
            .track_future(crate::connection::serve(inner, connection))
    }

    /// Whether [`Hub::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Resolves when shutdown begins: transports stop accepting then.
    pub fn shutdown_started(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.inner.shutdown.clone();
        async move { token.cancelled().await }
    }

    /// Shuts down gracefully: every connection is closed as going away
    /// (WS 1001, QUIC 1) after its queued messages are written, up to the
    /// drain timeout. Resolves when every connection is done.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().len()
    }

    /// The connection with id `id`, if open on this node.
    pub fn connection(&self, id: &str) -> Option<Conn> {
        self.inner.conns.lock().get(id).cloned()
    }

    /// Every connection open on this node.
    pub fn connections(&self) -> Vec<Conn> {
        self.inner.conns.lock().values().cloned().collect()
    }

    /// Publishes from the server (no `clientId`) to every subscriber of
    /// `topic`, on every node. Returns how many local subscribers it was
    /// queued for.
    pub async fn publish<M: Message>(&self, topic: &str, msg: &M) -> Result<usize, Error> {
        self.publish_from(None, topic, msg, PublishOptions::default())
            .await
    }

    pub(crate) async fn publish_from<M: Message>(
        &self,
        from: Option<&Conn>,
        topic: &str,
        msg: &M,
        options: PublishOptions,
    ) -> Result<usize, Error> {
        let inner = &self.inner;
        inner.config.topics.check(topic)?;
        let meta = Meta {
            client_id: from.map(|c| c.id().to_owned()),
            timestamp: Some(inner.clock.now_ms()),
            ..Meta::default()
        };
        let exclude = from
            .filter(|_| options.exclude_sender)
            .map(|c| c.id().to_owned());
        let members = inner.topics.members(topic);
        let delivered = fan_out(
            members,
            exclude.as_deref(),
            inner.config.topics.fanout_chunk,
            |codec| msg.encode(codec, &meta, options.compress),
        )
        .await;
        if inner.broker.crosses_nodes() {
            let canonical = WireCodec::new(Format::MsgPack, false).with_limits(inner.config.codec);
            let frame = msg
                .encode(&canonical, &Meta::default(), false)
                .map_err(|e| {
                    tracing::error!(error = %e, "publish could not be encoded for the broker");
                    Error::internal("internal error")
                })?;
            let payload = canonical.decode(frame).map_err(|e| {
                tracing::error!(error = %e, "publish could not be re-read for the broker");
                Error::internal("internal error")
            })?;
            let remote = BrokerMessage {
                topic: topic.to_owned(),
                ty: M::TYPE.to_owned(),
                meta,
                payload: payload.payload,
                exclude,
                compress: options.compress,
            };
            inner
                .broker
                .publish(remote)
                .await
                .map_err(|e| Error::unavailable(e.to_string()))?;
        }
        Ok(delivered)
    }

    /// The keyed state store.
    pub fn store(&self) -> &StateStore {
        &self.inner.store
    }

    /// Subscribers of `topic` on this node.
    pub fn topic_size(&self, topic: &str) -> usize {
        self.inner.topics.size(topic)
    }

    /// Subscribers of `topic` on every node, as far as the broker knows
    /// (see the broker's documentation for how exact that is).
    pub async fn topic_size_everywhere(&self, topic: &str) -> Result<usize, Error> {
        let remote = self
            .inner
            .broker
            .remote_size(topic)
            .await
            .map_err(|e| Error::unavailable(e.to_string()))?;
        Ok(self.topic_size(topic) + remote)
    }

    /// The local subscribers of `topic`.
    pub fn topic_members(&self, topic: &str) -> Vec<Conn> {
        self.inner.topics.members(topic)
    }

    /// Topics with at least one local subscriber, in name order.
    pub fn topics(&self) -> Vec<String> {
        self.inner.topics.topics()
    }
}

impl HubInner {
    pub(crate) fn next_conn_id(&self) -> Arc<str> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}-{n:x}", self.node))
    }

    pub(crate) fn authorize(
        &self,
        conn: &Conn,
        topic: &str,
        action: TopicAction,
    ) -> Result<(), Error> {
        self.config.topics.check(topic)?;
        match &self.hooks.authorize {
            Some(hook) => hook(conn, topic, action),
            None => Ok(()),
        }
    }

    pub(crate) fn subscribe(&self, conn: &Conn, topic: &str) -> Result<bool, Error> {
        self.authorize(conn, topic, TopicAction::Subscribe)?;
        if conn.is_closed() {
            return Err(Error::unavailable("connection closed"));
        }
        let topic: Arc<str> = Arc::from(topic);
        {
            let mut held = conn.shared.topics.lock();
            if held.contains(&topic) {
                return Ok(false);
            }
            if held.len() >= self.config.topics.max_per_connection {
                return Err(Error::resource_exhausted(
                    format!(
                        "at most {} topics per connection",
                        self.config.topics.max_per_connection
                    ),
                    None,
                ));
            }
            held.insert(topic.clone());
        }
        let (added, first) = self.topics.insert(&topic, conn);
        if first {
            self.broker.interest(&topic, true);
        }
        // Closing takes the held set after marking the connection closed; a
        // subscribe that raced with it undoes itself here.
        if conn.is_closed() {
            self.unsubscribe(conn, &topic);
            return Err(Error::unavailable("connection closed"));
        }
        Ok(added)
    }

    pub(crate) fn unsubscribe(&self, conn: &Conn, topic: &str) -> bool {
        if !conn.shared.topics.lock().remove(topic) {
            return false;
        }
        let (removed, last) = self.topics.remove(topic, conn.id());
        if last {
            self.broker.interest(topic, false);
        }
        removed
    }
}
