//! The hub: a built router with its configuration, topics and connections.
//! Transports hand it connections; applications push through it.

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::connection::{Batching, Connection, DataMap, IncompleteBudget};
use crate::context::ConnectionHandle;
use crate::error::Error;
use crate::message::Message;
use crate::meter::{HubMeter, TopicGauges};
use crate::router::{BuildError, Hooks, RouteEntry, Router};
use crate::state::StateStore;
use crate::topic::history::{
    self, Entry, Gate, HistoryLimits, MemoryHistory, Position, Replay, Start, TopicPattern,
};
use crate::topic::presence::{self, PresenceEntry, PresenceJoined, PresenceLeft};
use crate::topic::{
    Broker, BrokerMessage, EncodeCache, LocalBroker, LocalDelivery, Member, Registry, TopicRules,
    fan_out,
};
use bytes::Bytes;
use parking_lot::Mutex;
use signalbox_codec::{Format, Meta, WireCodec};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Options of a subscribe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeOptions {
    /// Where the subscriber starts on a topic with history (default: with
    /// the next publication). Ignored on topics without history.
    pub start: Start,
    /// What the topic's presence lists for this subscriber (a user name,
    /// say). Ignored on topics without presence. Subscribing again with
    /// presence replaces it.
    pub presence: Option<serde_json::Value>,
}

impl SubscribeOptions {
    /// Start with the `n` latest publications kept in history.
    pub fn last(mut self, n: usize) -> Self {
        self.start = Start::Last(n);
        self
    }

    /// Start right after `position`: what was published since is replayed,
    /// or the subscriber is told it could not be.
    pub fn after(mut self, position: Position) -> Self {
        self.start = Start::After(position);
        self
    }

    /// Be listed in the topic's presence with `info`.
    pub fn presence(mut self, info: serde_json::Value) -> Self {
        self.presence = Some(info);
        self
    }
}

pub(crate) use signalbox_codec::vocab::{
    SUBSCRIBED as SUBSCRIBED_TYPE, UNSUBSCRIBED as UNSUBSCRIBED_TYPE,
};

/// The payload of [`SUBSCRIBED_TYPE`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscribed {
    /// The topic.
    pub topic: String,
    /// Its epoch ("" when its history could not be read).
    pub epoch: String,
    /// The offset after which live publications follow.
    pub offset: u64,
    /// On a resume only: whether everything since the asked position was
    /// replayed before this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// Whether a hub should be given new connections, as a load balancer's
/// readiness check asks (`signalbox_ws::WsServerBuilder::health` serves it;
/// docs/DEPLOYMENT.md, "Health").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The application has not called [`Hub::set_ready`] yet: its
    /// listeners are not all up, or its broker has not connected and it
    /// has not decided to go on without it. Not ready.
    Starting,
    /// Ready: marked ready, and the broker connected.
    Ready,
    /// Ready, knowingly degraded: marked ready, but the broker is not
    /// connected now ([`Broker::is_connected`]). Local delivery works;
    /// publishes that must cross nodes are answered UNAVAILABLE until it
    /// is back. Ready rather than not, since every node shares the broker:
    /// taking them all out of rotation would turn a broker outage into a
    /// full one.
    Degraded,
    /// [`Hub::shutdown`] began: not ready, while it waits
    /// [`Config::drain_delay`] and then closes every connection.
    Draining,
}

impl Readiness {
    /// Whether a balancer should send new connections here
    /// ([`Readiness::Ready`] or [`Readiness::Degraded`]).
    pub fn is_ready(self) -> bool {
        matches!(self, Readiness::Ready | Readiness::Degraded)
    }

    /// A short description, as the readiness endpoint answers it.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Starting => "starting",
            Readiness::Ready => "ready",
            Readiness::Degraded => "ready, degraded: broker not connected",
            Readiness::Draining => "draining",
        }
    }
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// Set by [`Hub::set_ready`].
    ready: AtomicBool,
    /// Set when [`Hub::shutdown`] begins, before its drain delay.
    draining: AtomicBool,
    pub(crate) tracker: TaskTracker,
    pub(crate) conns: Mutex<HashMap<Arc<str>, ConnectionHandle>>,
    pub(crate) rules: TopicRules,
    pub(crate) history: MemoryHistory,
    /// Publishes to and subscribes on in-memory history topics, counted
    /// to sweep it every [`SWEEP_EVERY`].
    history_uses: AtomicU64,
    incomplete: Arc<IncompleteBudget>,
    node: String,
    next_id: AtomicU64,
    pub(crate) meter: HubMeter,
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
    rules: TopicRules,
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

    /// Turns on a batching window for every connection ([`Batching`],
    /// [`Config::batching`]; default: off). Connections may change their
    /// own ([`ConnectionHandle::set_batching`]). [`HubBuilder::config`]
    /// replaces the whole configuration, this window included: call it
    /// first.
    pub fn batching(mut self, batching: Batching) -> Self {
        self.config.batching = Some(batching);
        self
    }

    /// Registers an application codec ([`crate::codec::AppCodec`]):
    /// clients select it by its name, as a WebSocket subprotocol or the
    /// QUIC ALPN `signalbox/<name>`, exactly like the built-in codecs
    /// (docs/PROTOCOL.md §2). Refuses a name that is malformed or taken.
    /// [`HubBuilder::config`] replaces the whole configuration, registered
    /// codecs included: call it first.
    pub fn codec(
        mut self,
        codec: &'static dyn signalbox_codec::AppCodec,
    ) -> Result<Self, signalbox_codec::CodecNameError> {
        self.config.codecs.register(codec)?;
        Ok(self)
    }

    /// Keeps history for the topics `pattern` covers (first matching rule
    /// wins): each publication gets a [`Position`], subscribers receive it,
    /// and a reconnecting client can resume where it left off
    /// (docs/PROTOCOL.md §8). With a broker that
    /// [keeps history](Broker::keeps_history) (Redis) the history and its
    /// positions are shared by every node; otherwise each node keeps its
    /// own in memory.
    pub fn history(mut self, pattern: TopicPattern, limits: HistoryLimits) -> Self {
        self.rules.history.push((pattern, limits));
        self
    }

    /// Keeps presence for the topics `pattern` covers: who subscribes,
    /// with what the application says about each ([`Hub::presence`]).
    pub fn presence(mut self, pattern: TopicPattern) -> Self {
        self.rules.presence.push((pattern, false));
        self
    }

    /// Keeps presence for the topics `pattern` covers, and tells their
    /// subscribers who comes and goes: `$sb:join` and `$sb:leave`
    /// ([`PresenceJoined`], [`PresenceLeft`]) are published to the topic,
    /// on every node, outside its history (docs/PROTOCOL.md §8.2).
    pub fn presence_events(mut self, pattern: TopicPattern) -> Self {
        self.rules.presence.push((pattern, true));
        self
    }

    /// Builds the hub.
    ///
    /// # Panics
    /// If a state type the routers declared they need ([`Router::needs`],
    /// [`crate::Route::needs`]) is not registered: a wiring mistake, caught
    /// at startup. [`HubBuilder::try_build`] returns it instead.
    pub fn build(self) -> Hub {
        self.try_build()
            .unwrap_or_else(|error| panic!("signalbox: cannot build the hub: {error}"))
    }

    /// Builds the hub, or says why it cannot: a state type the routers
    /// declared they need ([`Router::needs`], [`crate::Route::needs`]) that
    /// none registers ([`BuildError::MissingState`]).
    pub fn try_build(self) -> Result<Hub, BuildError> {
        let (routes, hooks, state) = self.router.into_parts()?;
        let node = format!(
            "{:08x}",
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32
        );
        let incomplete = IncompleteBudget::new(self.config.incomplete);
        let meter = HubMeter::new(routes.keys().map(|name| &**name));
        let store_keys = self.config.store_keys.clone();
        let inner = Arc::new(HubInner {
            routes,
            hooks,
            state,
            config: self.config,
            topics: Registry::new(TopicGauges::topics()),
            store: StateStore::new(self.clock.clone(), store_keys),
            broker: self.broker,
            clock: self.clock,
            shutdown: CancellationToken::new(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            conns: Mutex::new(HashMap::new()),
            rules: self.rules,
            history: MemoryHistory::new(),
            history_uses: AtomicU64::new(0),
            incomplete,
            node,
            next_id: AtomicU64::new(1),
            meter,
        });
        inner.broker.attach(LocalDelivery {
            hub: Arc::downgrade(&inner),
        });
        Ok(Hub { inner })
    }
}

impl Hub {
    /// Starts building a hub around `router`.
    pub fn builder<E: Into<Error> + Send + 'static>(router: Router<E>) -> HubBuilder {
        HubBuilder {
            router: router.erase(),
            config: Config::default(),
            rules: TopicRules::default(),
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

    /// The codecs clients may negotiate ([`Config::codecs`]).
    pub fn codecs(&self) -> &signalbox_codec::Codecs {
        &self.inner.config.codecs
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

    /// Marks the hub ready for new connections: the application calls it
    /// once its listeners are up and its broker connected (or it decided to
    /// go on without it). See [`Hub::readiness`].
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// Whether a load balancer should send new connections here: not
    /// before [`Hub::set_ready`], not once [`Hub::shutdown`] began, and
    /// [`Readiness::Degraded`] (still ready) while the broker is not
    /// connected.
    pub fn readiness(&self) -> Readiness {
        if self.inner.draining.load(Ordering::Acquire) || self.is_shutting_down() {
            Readiness::Draining
        } else if !self.inner.ready.load(Ordering::Acquire) {
            Readiness::Starting
        } else if !self.inner.broker.is_connected() {
            Readiness::Degraded
        } else {
            Readiness::Ready
        }
    }

    /// Shuts down gracefully. First the hub reports itself not ready
    /// ([`Readiness::Draining`]) and keeps serving everything for
    /// [`Config::drain_delay`], so that a load balancer takes it out of
    /// rotation; then the transports stop accepting and every connection
    /// is closed as going away (WS 1001, QUIC 1) after its queued messages
    /// are written, up to the drain timeout. Resolves when every
    /// connection is done.
    pub async fn shutdown(&self) {
        let first = !self.inner.draining.swap(true, Ordering::AcqRel);
        let delay = self.inner.config.drain_delay;
        if !delay.is_zero() && !self.is_shutting_down() {
            if first {
                tracing::info!(?delay, "not ready; draining before closing connections");
            }
            // A second call waits for the first one's delay (at most as long).
            let _ = tokio::time::timeout(delay, self.inner.shutdown.cancelled()).await;
        }
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().len()
    }

    /// The connection with id `id`, if open on this node.
    pub fn connection(&self, id: &str) -> Option<ConnectionHandle> {
        self.inner.conns.lock().get(id).cloned()
    }

    /// Every connection open on this node.
    pub fn connections(&self) -> Vec<ConnectionHandle> {
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
        from: Option<&ConnectionHandle>,
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
        if let Some(limits) = inner.rules.history(topic) {
            return self
                .publish_positioned(topic, msg, meta, exclude, options, limits)
                .await;
        }
        self.publish_plain(topic, msg, meta, exclude, options).await
    }

    /// Publishes without history: queued for this node's subscribers as
    /// they stand, handed to the broker for the others.
    async fn publish_plain<M: Message>(
        &self,
        topic: &str,
        msg: &M,
        meta: Meta,
        exclude: Option<String>,
        options: PublishOptions,
    ) -> Result<usize, Error> {
        let inner = &self.inner;
        let members = inner.topics.members(topic);
        let delivered = fan_out(
            members,
            exclude.as_deref(),
            inner.config.topics.fanout_chunk,
            |codec| msg.encode(codec, &meta, options.compress),
        )
        .await;
        inner.meter.sent_typed(M::TYPE, delivered);
        inner
            .forward(topic, msg, meta, exclude, options.compress)
            .await?;
        Ok(delivered)
    }

    /// Publishes on a topic with history: the publication gets the next
    /// position and is kept. In memory, offset, keeping and queueing happen
    /// under the topic's lock, so every subscriber gets the topic's
    /// publications in offset order; a broker that keeps history assigns
    /// the position and delivers to every node, this one included.
    async fn publish_positioned<M: Message>(
        &self,
        topic: &str,
        msg: &M,
        meta: Meta,
        exclude: Option<String>,
        options: PublishOptions,
        limits: HistoryLimits,
    ) -> Result<usize, Error> {
        let inner = &self.inner;
        if inner.broker.keeps_history() {
            let remote = inner.broker_message(topic, msg, meta, exclude, options.compress)?;
            inner
                .broker
                .publish_to_history(remote, limits)
                .await
                .map_err(|e| Error::unavailable(e.to_string()))?;
            return Ok(inner.topics.size(topic));
        }
        let delivered = {
            let history = inner.history.topic(topic);
            let mut history = history.lock();
            let now = tokio::time::Instant::now();
            history.trim(&limits, now);
            let position = history.next_position();
            let mut stamped = meta.clone();
            history::stamp(&mut stamped, topic, &position);
            let meta = stamped;
            let members = inner.topics.entries(topic);
            let mut cache = EncodeCache::published();
            let encode = |codec: &WireCodec| msg.encode(codec, &meta, options.compress);
            let delivered = cache.deliver_positioned(
                &members,
                exclude.as_deref(),
                position.offset,
                limits.max_pending_bytes,
                &encode,
            );
            // Kept for replay in the codecs it was encoded for; at least one.
            let canonical = self.codec(WireCodec::new(Format::Json, false));
            cache.frame_for(&canonical, &encode);
            history.push(Entry {
                offset: position.offset,
                at: now,
                frames: cache.into_frames().into(),
                compress: options.compress,
            });
            delivered
        };
        inner.meter.sent_typed(M::TYPE, delivered);
        inner.count_history_use();
        // Other nodes get it without a position: their history is their
        // own (see HubBuilder::history).
        inner
            .forward(topic, msg, meta, exclude, options.compress)
            .await?;
        Ok(delivered)
    }

    /// Everyone subscribed to `topic` with presence, on every node the
    /// broker reaches, by client id.
    pub async fn presence(&self, topic: &str) -> Result<Vec<PresenceEntry>, Error> {
        let mut entries = presence::local(&self.inner.topics, topic);
        if self.inner.broker.crosses_nodes() {
            let remote = self
                .inner
                .broker
                .remote_presence(topic)
                .await
                .map_err(|e| Error::unavailable(e.to_string()))?;
            entries.extend(remote);
            entries.sort_by(|a, b| a.client_id.cmp(&b.client_id));
            entries.dedup_by(|a, b| a.client_id == b.client_id);
        }
        Ok(entries)
    }

    /// The position of `topic`'s latest publication, if it keeps history
    /// (offset 0: nothing published yet in this epoch).
    pub async fn position(&self, topic: &str) -> Result<Option<Position>, Error> {
        if self.inner.rules.history(topic).is_none() {
            return Ok(None);
        }
        if self.inner.broker.keeps_history() {
            let read = self
                .inner
                .broker
                .read_history(topic, Some(u64::MAX))
                .await
                .map_err(|e| Error::unavailable(e.to_string()))?;
            return Ok(Some(Position::new(read.epoch, read.top)));
        }
        Ok(Some(self.inner.history.topic(topic).lock().position()))
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
    pub fn topic_members(&self, topic: &str) -> Vec<ConnectionHandle> {
        self.inner.topics.members(topic)
    }

    /// Topics with at least one local subscriber, in name order.
    pub fn topics(&self) -> Vec<String> {
        self.inner.topics.topics()
    }
}

/// Uses of the in-memory history (publishes, subscribes) between two
/// sweeps: subscribes count too, so that topics subscribed to and left
/// without a publication do not pile up.
const SWEEP_EVERY: u64 = 4096;

impl HubInner {
    /// Hands a publish to the broker for the other nodes, when it has any.
    async fn forward<M: Message>(
        &self,
        topic: &str,
        msg: &M,
        meta: Meta,
        exclude: Option<String>,
        compress: bool,
    ) -> Result<(), Error> {
        if !self.broker.crosses_nodes() {
            return Ok(());
        }
        let remote = self.broker_message(topic, msg, meta, exclude, compress)?;
        self.broker
            .publish(remote)
            .await
            .map_err(|e| Error::unavailable(e.to_string()))
    }

    /// The cross-node form of a publish: the payload as MessagePack.
    fn broker_message<M: Message>(
        &self,
        topic: &str,
        msg: &M,
        meta: Meta,
        exclude: Option<String>,
        compress: bool,
    ) -> Result<BrokerMessage, Error> {
        let payload = msg.broker_payload(&self.config.codec).map_err(|e| {
            tracing::error!(error = %e, "publish could not be encoded for the broker");
            Error::internal("internal error")
        })?;
        Ok(BrokerMessage {
            topic: topic.to_owned(),
            ty: M::TYPE.to_owned(),
            meta,
            payload,
            exclude,
            compress,
            position: None,
        })
    }

    /// A subscriber of `topic` is gone (unsubscribed, or its connection
    /// closed): tells the broker, and the topic's subscribers if it has
    /// presence events.
    pub(crate) fn presence_left(self: &Arc<Self>, conn: &ConnectionHandle, topic: &str) {
        if !self.rules.presence(topic) {
            return;
        }
        self.broker.presence_changed(topic);
        if self.rules.presence_events(topic) {
            let left = PresenceLeft {
                topic: topic.to_owned(),
                client_id: conn.id().to_owned(),
            };
            self.announce(topic, left);
        }
    }

    /// Publishes a presence event to `topic`, outside its history, from a
    /// task of the hub's (subscribing and closing do not wait for it).
    fn announce<M: Message>(self: &Arc<Self>, topic: &str, event: M) {
        let hub = Hub {
            inner: self.clone(),
        };
        let topic = topic.to_owned();
        self.tracker.spawn(async move {
            let meta = Meta {
                timestamp: Some(hub.inner.clock.now_ms()),
                ..Meta::default()
            };
            let options = PublishOptions {
                compress: false,
                ..PublishOptions::default()
            };
            if let Err(error) = hub.publish_plain(&topic, &event, meta, None, options).await {
                tracing::debug!(%error, topic, "presence event not published");
            }
        });
    }

    /// Counts one use of the in-memory history; sweeps it every
    /// [`SWEEP_EVERY`] uses.
    fn count_history_use(&self) {
        if self.history_uses.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep_history();
        }
    }

    /// Forgets in-memory histories that expired entirely and nobody holds.
    fn sweep_history(&self) {
        let forgotten = self.history.sweep(
            |t| self.rules.history(t),
            |t| self.topics.size(t) > 0,
            tokio::time::Instant::now(),
        );
        if forgotten > 0 {
            tracing::debug!(forgotten, "expired topic histories forgotten");
        }
    }

    pub(crate) fn next_conn_id(&self) -> Arc<str> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}-{n:x}", self.node))
    }

    pub(crate) fn authorize(
        &self,
        conn: &ConnectionHandle,
        topic: &str,
        action: TopicAction,
    ) -> Result<(), Error> {
        self.config.topics.check(topic)?;
        match &self.hooks.authorize {
            Some(hook) => hook(conn, topic, action),
            None => Ok(()),
        }
    }

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        conn: &ConnectionHandle,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<bool, Error> {
        self.authorize(conn, topic, TopicAction::Subscribe)?;
        if conn.is_closed() {
            return Err(Error::unavailable("connection closed"));
        }
        let topic: Arc<str> = Arc::from(topic);
        let presence = self
            .rules
            .presence(&topic)
            .then(|| Arc::new(options.presence.clone().unwrap_or_default()));
        {
            let mut held = conn.shared.topics.lock();
            if held.contains(&topic) {
                drop(held);
                if let (Some(info), Some(_)) = (presence, &options.presence)
                    && self.topics.set_presence(&topic, conn.id(), info)
                {
                    self.broker.presence_changed(&topic);
                }
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
        let has_presence = presence.is_some();
        let mut member = Member {
            conn: conn.clone(),
            gate: None,
            presence,
        };
        let (added, first) = match self.rules.history(&topic) {
            None => self.topics.insert_member(&topic, member),
            Some(limits) if !self.broker.keeps_history() => {
                self.subscribe_in_memory(member, &topic, &options.start, &limits)
            }
            Some(_) => {
                let gate = Arc::new(parking_lot::Mutex::new(Gate::pending()));
                member.gate = Some(gate.clone());
                let inserted = self.topics.insert_member(&topic, member);
                let hub = self.clone();
                let conn = conn.clone();
                let topic = topic.clone();
                let start = options.start.clone();
                self.tracker.spawn(async move {
                    hub.replay_from_broker(conn, topic, gate, start).await;
                });
                inserted
            }
        };
        if first {
            self.broker.interest(&topic, true);
        }
        if has_presence {
            self.broker.presence_changed(&topic);
            if self.rules.presence_events(&topic) {
                let info = options.presence.clone().unwrap_or_default();
                let joined = PresenceJoined {
                    topic: topic.to_string(),
                    client_id: conn.id().to_owned(),
                    info,
                };
                self.announce(&topic, joined);
            }
        }
        // Closing takes the held set after marking the connection closed; a
        // subscribe that raced with it undoes itself here.
        if conn.is_closed() {
            self.unsubscribe(conn, &topic);
            return Err(Error::unavailable("connection closed"));
        }
        Ok(added)
    }

    /// Subscribes to a topic whose history is in memory. Under the topic's
    /// lock it takes the replay and joins as a member, so no publication
    /// can fall between the two. A replay that fits in half the
    /// connection's outbound queue (in bytes and in messages) is queued
    /// right there, with the `$sb:subscribed` notice, and the member needs
    /// no gate. A longer one is sent by a task at the pace the peer reads,
    /// while the member's gate holds the live publications that come
    /// meanwhile.
    fn subscribe_in_memory(
        self: &Arc<Self>,
        mut member: Member,
        topic: &Arc<str>,
        start: &Start,
        limits: &HistoryLimits,
    ) -> (bool, bool) {
        self.count_history_use();
        let conn = member.conn.clone();
        let history = self.history.topic(topic);
        let mut history = history.lock();
        history.trim(limits, tokio::time::Instant::now());
        let (replay, recovered) = match history.plan(start) {
            Replay::Recovered(entries) => (entries, true),
            Replay::NotRecovered => (Vec::new(), false),
        };
        let position = history.position();
        let notice = resumed(start, recovered);
        // Frame sizes in another codec differ a little: the first kept
        // frame's size is the estimate.
        let replay_bytes: usize = replay
            .iter()
            .map(|e| e.frames.first().map_or(0, |(_, f)| f.len()))
            .sum();
        let outbound = &conn.shared.outbound;
        let half = outbound.bound().half();
        if outbound.len() + replay.len() < half.frames
            && outbound.bytes() + replay_bytes < half.bytes
        {
            for entry in &replay {
                if let Some(frame) = entry_frame(entry, conn.codec())
                    && conn.push(frame).is_ok()
                {
                    self.meter.replayed(1);
                }
            }
            send_subscribed(&conn, topic, &position, notice);
            member.gate = None;
            return self.topics.insert_member(topic, member);
        }
        let gate = Arc::new(parking_lot::Mutex::new(Gate::pending()));
        member.gate = Some(gate.clone());
        let inserted = self.topics.insert_member(topic, member);
        drop(history);
        let hub = self.clone();
        let topic = topic.clone();
        self.tracker.spawn(async move {
            let codec = *conn.codec();
            let frames = replay.iter().filter_map(|e| entry_frame(e, &codec));
            hub.finish_replay(&conn, &topic, &gate, frames, position, notice)
                .await;
        });
        inserted
    }

    /// Finishes a subscribe to a topic whose history the broker keeps:
    /// reads the replay, then sends it like a long one from memory.
    async fn replay_from_broker(
        &self,
        conn: ConnectionHandle,
        topic: Arc<str>,
        gate: Arc<parking_lot::Mutex<Gate>>,
        start: Start,
    ) {
        let after = match &start {
            Start::Now => Some(u64::MAX),
            Start::Last(_) => None,
            Start::After(p) => Some(p.offset),
        };
        let read = match self.broker.read_history(&topic, after).await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, topic = &*topic, "topic history could not be read");
                let frames = std::iter::empty();
                let position = Position::new("", 0);
                self.finish_replay(&conn, &topic, &gate, frames, position, Some(false))
                    .await;
                return;
            }
        };
        let planned = history::plan(
            &read.epoch,
            read.top,
            &read.entries,
            |m| m.position.as_ref().map_or(0, |p| p.offset),
            &start,
        );
        let (replay, recovered) = match planned {
            Replay::Recovered(entries) => (entries, true),
            Replay::NotRecovered => (Vec::new(), false),
        };
        let codec = *conn.codec();
        let frames = replay.iter().filter_map(|m| {
            let position = m.position.as_ref()?;
            let mut meta = m.meta.clone();
            history::stamp(&mut meta, &topic, position);
            codec
                .encode_raw(&m.ty, &meta, m.payload.as_ref(), m.compress)
                .ok()
        });
        let position = Position::new(read.epoch.clone(), read.top);
        self.finish_replay(
            &conn,
            &topic,
            &gate,
            frames,
            position,
            resumed(&start, recovered),
        )
        .await;
    }

    /// Sends a replay at the pace the peer reads it (waiting while the
    /// outbound queue is half full, as answers do), then the
    /// `$sb:subscribed` notice, then the live publications the gate held
    /// meanwhile — those the replay did not give.
    async fn finish_replay(
        &self,
        conn: &ConnectionHandle,
        topic: &str,
        gate: &parking_lot::Mutex<Gate>,
        frames: impl Iterator<Item = Bytes>,
        position: Position,
        notice: Option<bool>,
    ) {
        for frame in frames {
            // Closed, or unsubscribed meanwhile: the rest is not wanted.
            if !crate::connection::room_for_answers(conn).await || !conn.is_subscribed(topic) {
                return;
            }
            if conn.push(frame).is_ok() {
                self.meter.replayed(1);
            }
        }
        if !conn.is_subscribed(topic) {
            return;
        }
        let mut gate = gate.lock();
        let (held, overflow) = gate.go_live(position.offset);
        let (position, notice) = match overflow {
            // Live publications came faster than the replay went out: the
            // subscriber starts after the last one it missed.
            Some(last) => (Position::new(position.epoch, last), Some(false)),
            None => (position, notice),
        };
        send_subscribed(conn, topic, &position, notice);
        for frame in held {
            if conn.push(frame).is_ok() {
                self.meter.replayed(1);
            }
        }
    }

    pub(crate) fn unsubscribe(self: &Arc<Self>, conn: &ConnectionHandle, topic: &str) -> bool {
        if !conn.shared.topics.lock().remove(topic) {
            return false;
        }
        let (removed, last) = self.topics.remove(topic, conn.id());
        if last {
            self.broker.interest(topic, false);
        }
        if removed {
            self.presence_left(conn, topic);
        }
        if removed && self.rules.history(topic).is_some() {
            let notice = serde_json::json!({ "topic": topic });
            let _ = conn.send_serde(UNSUBSCRIBED_TYPE, Meta::default(), Some(&notice), false);
        }
        removed
    }
}

/// On a resume (a start after a position), whether it was recovered.
fn resumed(start: &Start, recovered: bool) -> Option<bool> {
    matches!(start, Start::After(_)).then_some(recovered)
}

/// Queues `$sb:subscribed` for `conn`.
fn send_subscribed(
    conn: &ConnectionHandle,
    topic: &str,
    position: &Position,
    recovered: Option<bool>,
) {
    let notice = Subscribed {
        topic: topic.to_owned(),
        epoch: position.epoch.clone(),
        offset: position.offset,
        recovered,
    };
    let _ = conn.send_serde(SUBSCRIBED_TYPE, Meta::default(), Some(&notice), false);
}

/// A kept publication encoded for `codec`: the frame kept for it, or
/// another codec's frame transcoded.
fn entry_frame(entry: &Entry, codec: &WireCodec) -> Option<Bytes> {
    if let Some((_, frame)) = entry.frames.iter().find(|(c, _)| c == codec) {
        return Some(frame.clone());
    }
    let (kept, frame) = entry.frames.first()?;
    let envelope = kept
        .decode(frame.clone())
        .map_err(|e| tracing::warn!(error = %e.error, "kept publication could not be re-read"))
        .ok()?;
    codec
        .encode_raw(
            &envelope.ty,
            &envelope.meta,
            envelope.payload.as_ref(),
            entry.compress,
        )
        .map_err(|e| tracing::warn!(error = %e, "kept publication could not be re-encoded"))
        .ok()
}
