//! The broker handle and the state its background tasks share.

use crate::config::{RedisBrokerBuilder, RedisConfig, Topology};
use crate::conn::{Conn, RedisClient};
use crate::history::{self, LuaScript};
use crate::{tasks, wire};
use async_trait::async_trait;
use parking_lot::Mutex;
use signalbox::{
    Broker, BrokerError, BrokerMessage, HistoryLimits, HistoryRead, LocalDelivery, Position,
    PresenceEntry,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

/// Failures to start a [`RedisBroker`].
#[derive(Debug, thiserror::Error)]
pub enum RedisBrokerError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    /// The TLS material (CA or client certificate, key) does not parse, or
    /// was given for a URL that is not `rediss://`.
    #[error("invalid TLS settings for Redis: {0}")]
    Tls(#[source] redis::RedisError),
    /// A cluster's prefix holds `{` or `}`, which would change the hash
    /// tag that keeps a topic's keys in one slot.
    #[error("a Redis Cluster prefix cannot hold '{{' or '}}': {0:?}")]
    InvalidPrefix(String),
    /// A cluster or Sentinel builder was given no startup node or Sentinel.
    #[error("a Redis Cluster needs a startup node, and Sentinel a Sentinel")]
    NoNodes,
    /// TLS settings were given for a master found through Sentinel (not
    /// built).
    #[error("TLS to a master found through Sentinel is not supported")]
    SentinelTls,
    /// `build` was called outside a tokio runtime.
    #[error("a RedisBroker must be built inside a tokio runtime")]
    NoRuntime,
}

/// Whether the broker's two Redis connections are up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// The connection that publishes and keeps membership counts.
    pub publisher: bool,
    /// The connection that receives the other nodes' messages, with every
    /// topic held on this node subscribed.
    pub subscriber: bool,
}

impl Status {
    /// Both connections are up.
    pub fn is_connected(&self) -> bool {
        self.publisher && self.subscriber
    }
}

/// Counters since the broker started, for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handed to Redis (plain and positioned).
    pub published: u64,
    /// Publishes that failed (Redis unreachable, timed out or refused);
    /// each was reported to its publisher as UNAVAILABLE.
    pub publish_failures: u64,
    /// Messages received from Redis and delivered: plain ones from other
    /// nodes, and positioned ones (topics with history) from every node,
    /// this one included.
    pub received: u64,
    /// Local deliveries of those (one per receiving connection).
    pub delivered: u64,
    /// This node's own plain messages echoed back by Redis and skipped.
    pub own_skipped: u64,
    /// Positioned publications this node missed on its subscriber
    /// connection (it was down) and read back from the topic's history
    /// before the next one was delivered.
    pub caught_up: u64,
    /// Messages, kept publications and presence values from Redis that
    /// were not well-formed (dropped).
    pub malformed: u64,
    /// Connections re-established after a loss (both connections counted).
    pub reconnects: u64,
    /// Messages from a cluster dropped because more than
    /// [`RedisBrokerBuilder::max_pending_messages`] waited for the hub.
    pub dropped: u64,
    /// Positioned publications that arrived with an offset at or below
    /// one this node had already delivered of the same epoch: Redis lost
    /// publications it had acknowledged (a restart from an older
    /// snapshot; on a cluster a failover starts a new epoch instead). Each time
    /// the topic gets a new epoch, so clients resuming from before are
    /// told "not recovered" (docs/PROTOCOL.md §8) rather than silently
    /// missing what the lost offsets were reused for.
    pub rewound: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) own_skipped: AtomicU64,
    pub(crate) caught_up: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) rewound: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Topics whose local interest changed since a task last looked: one set
/// for the subscriber, one for the membership writer. Sets, not queues:
/// their size is bounded by the number of topics.
#[derive(Default)]
pub(crate) struct Dirty {
    pub(crate) subscriber: HashSet<String>,
    pub(crate) members: HashSet<String>,
    pub(crate) presence: HashSet<String>,
}

/// The publishing connection, tagged so that a failure reported against an
/// old connection does not drop a newer one.
pub(crate) struct Publisher {
    pub(crate) generation: u64,
    pub(crate) conn: Conn,
}

/// What the handle and the background tasks share.
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) client: RedisClient,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) delivery: OnceLock<LocalDelivery>,
    pub(crate) dirty: Mutex<Dirty>,
    pub(crate) wake_subscriber: Notify,
    pub(crate) wake_members: Notify,
    /// Set when every membership count must be written again (a new
    /// publishing connection: Redis may have restarted empty).
    pub(crate) members_lost: AtomicBool,
    pub(crate) publisher: Mutex<Option<Publisher>>,
    pub(crate) publisher_lost: Notify,
    /// Channels subscribed on the current subscriber connection, as Redis
    /// confirmed them (topic names, without the prefix).
    pub(crate) subscribed: Mutex<HashSet<String>>,
    /// Bumped whenever `subscribed` changes (a read of a topic's history
    /// waits on it for the topic's subscription).
    pub(crate) subscriptions: watch::Sender<u64>,
    /// The position of the latest publication this node delivered, per
    /// topic with history it is subscribed to: a later one arriving past
    /// it shows what the node missed (its subscriber connection was down),
    /// which is then read back from the topic's history. Forgotten when
    /// the node subscribes to the topic anew.
    pub(crate) delivered_to: Mutex<HashMap<String, Position>>,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) counters: Counters,
    pub(crate) stop: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Shared {
    /// Reads the position of `topic` and its kept publications after
    /// `after` (see [`Broker::read_history`]), without waiting for
    /// anything.
    pub(crate) async fn read_kept(
        &self,
        topic: &str,
        after: Option<u64>,
    ) -> Result<HistoryRead, BrokerError> {
        let Some((generation, mut conn)) = self.publisher() else {
            return Err(BrokerError::Unavailable("not connected to Redis".into()));
        };
        let config = &self.config;
        let limits = self
            .delivery
            .get()
            .and_then(|d| d.history_limits(topic))
            .unwrap_or_default();
        let keys = [config.position_key(topic), config.history_key(topic)];
        let args = [
            history::new_epoch().into_bytes(),
            history::read_mode(after).into_bytes(),
            history::age_ms(&limits).to_string().into_bytes(),
            config.writer_check().to_vec(),
        ];
        let read = tokio::time::timeout(
            config.publish_timeout,
            READ_SCRIPT.run::<history::ReadReply, _>(&mut conn, &keys, &args),
        )
        .await;
        let (epoch, top, raw) = settle(self, generation, read)?;
        let entries = history::entries(topic, &epoch, raw, config.max_message_size, |why| {
            bump(&self.counters.malformed, 1);
            tracing::warn!(topic, ?why, "redis broker: kept publication left out");
        });
        Ok(HistoryRead {
            epoch,
            top,
            entries,
        })
    }

    /// Changes the confirmed subscriptions and wakes whoever waits on them.
    pub(crate) fn subscribed_change(&self, change: impl FnOnce(&mut HashSet<String>)) {
        change(&mut self.subscribed.lock());
        self.subscriptions.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A clone of the publishing connection, if it is up.
    pub(crate) fn publisher(&self) -> Option<(u64, Conn)> {
        self.publisher
            .lock()
            .as_ref()
            .map(|p| (p.generation, p.conn.clone()))
    }

    /// Changes the connection status (and its gauges).
    pub(crate) fn set_status(&self, change: impl FnOnce(&mut Status)) {
        self.status.send_modify(change);
        crate::meter::status(*self.status.borrow());
    }

    /// The publishing connection for one publish, or why there is none
    /// (counted as a publish failure).
    pub(crate) fn publishing(&self) -> Result<(u64, Conn), BrokerError> {
        let reason = if self.stop.is_cancelled() {
            "broker stopped"
        } else if let Some(publisher) = self.publisher() {
            return Ok(publisher);
        } else {
            "not connected to Redis"
        };
        bump(&self.counters.publish_failures, 1);
        crate::meter::published(None, false);
        Err(BrokerError::Unavailable(reason.into()))
    }

    /// The publishing connection of `generation` failed: drop it (unless a
    /// newer one replaced it) and wake the task that reconnects.
    pub(crate) fn publisher_failed(&self, generation: u64) {
        let dropped = {
            let mut publisher = self.publisher.lock();
            if publisher
                .as_ref()
                .is_some_and(|p| p.generation == generation)
            {
                *publisher = None;
                true
            } else {
                false
            }
        };
        if dropped {
            self.set_status(|s| s.publisher = false);
            self.publisher_lost.notify_one();
        }
    }
}

/// Errors after which a connection is not worth keeping: it is replaced
/// rather than tried again.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        // A master demoted to a replica (a failover behind Sentinel): the
        // next connection goes to the new master.
        || e.code() == Some("READONLY")
}

/// What became of a command sent on the publishing connection of
/// `generation` with a timeout: its answer, or the failure as the hub
/// reports it (a dead or silent connection is dropped to be replaced).
pub(crate) fn settle<T>(
    shared: &Shared,
    generation: u64,
    sent: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
) -> Result<T, BrokerError> {
    match sent {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) if is_connection_error(&e) => {
            shared.publisher_failed(generation);
            Err(BrokerError::Unavailable(format!("Redis: {e}")))
        }
        Ok(Err(e)) => Err(BrokerError::Unavailable(format!("Redis refused: {e}"))),
        Err(_) => {
            shared.publisher_failed(generation);
            Err(BrokerError::Unavailable(
                "Redis did not answer in time".into(),
            ))
        }
    }
}

/// The publish script (see [`crate::history`]).
static PUBLISH_SCRIPT: LuaScript = LuaScript::new(history::PUBLISH_SCRIPT);
/// The read script (see [`crate::history`]).
static READ_SCRIPT: LuaScript = LuaScript::new(history::READ_SCRIPT);

/// Stops the background tasks when the last handle is dropped.
struct Handle {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

/// A [`Broker`] over Redis pub/sub: topics span every node that shares the
/// Redis server and the prefix. See the [crate documentation](crate).
///
/// Cheap to clone: every clone is the same broker. The background tasks
/// stop when the last clone (including the one the hub holds) is dropped,
/// or at [`RedisBroker::shutdown`].
#[derive(Clone)]
pub struct RedisBroker {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node_id", &self.shared().config.node_id)
            .field("prefix", &self.shared().config.prefix)
            .field("status", &self.status())
            .finish()
    }
}

impl RedisBroker {
    /// Starts configuring a broker for the Redis at `url`
    /// (`redis://host:port/db`, or `rediss://host:port/db` for TLS; see
    /// [`RedisBrokerBuilder::tls_ca_pem`]).
    pub fn builder(url: impl Into<String>) -> RedisBrokerBuilder {
        RedisBrokerBuilder::new(url, Topology::Single)
    }

    /// Starts configuring a broker for a Redis Cluster (Redis 7 or later),
    /// reached through any of `nodes` (`redis://host:port` or
    /// `rediss://host:port`; the others are found from the cluster). See
    /// the crate documentation, "Redis Cluster".
    pub fn cluster_builder<I, S>(nodes: I) -> RedisBrokerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let url = nodes.first().cloned().unwrap_or_default();
        RedisBrokerBuilder::new(url, Topology::Cluster(nodes))
    }

    /// Starts configuring a broker for the master that Redis Sentinel
    /// monitors as `service`, asked of any of `sentinels`
    /// (`redis://host:26379`). The master is looked up again at every
    /// reconnection, so after a failover the broker follows the promoted
    /// replica. See the crate documentation, "Sentinel".
    pub fn sentinel_builder<I, S>(sentinels: I, service: impl Into<String>) -> RedisBrokerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let sentinels: Vec<String> = sentinels.into_iter().map(Into::into).collect();
        let url = sentinels.first().cloned().unwrap_or_default();
        RedisBrokerBuilder::new(
            url,
            Topology::Sentinel {
                sentinels,
                service: service.into(),
            },
        )
    }

    pub(crate) fn start(config: RedisConfig) -> Result<Self, RedisBrokerError> {
        let no_nodes = match &config.topology {
            Topology::Single => false,
            Topology::Cluster(nodes) => nodes.is_empty(),
            Topology::Sentinel { sentinels, .. } => sentinels.is_empty(),
        };
        if no_nodes {
            return Err(RedisBrokerError::NoNodes);
        }
        let client = RedisClient::new(&config)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisBrokerError::NoRuntime)?;
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            config,
            client,
            runtime,
            delivery: OnceLock::new(),
            dirty: Mutex::new(Dirty::default()),
            wake_subscriber: Notify::new(),
            wake_members: Notify::new(),
            members_lost: AtomicBool::new(false),
            publisher: Mutex::new(None),
            publisher_lost: Notify::new(),
            subscribed: Mutex::new(HashSet::new()),
            subscriptions: watch::Sender::new(0),
            delivered_to: Mutex::new(HashMap::new()),
            status: watch::Sender::new(Status::default()),
            counters: Counters::default(),
            stop: stop.clone(),
            tracker: TaskTracker::new(),
        });
        crate::meter::describe();
        crate::meter::status(Status::default());
        shared
            .tracker
            .spawn_on(tasks::run_publisher(shared.clone()), &shared.runtime);
        Ok(RedisBroker {
            handle: Arc::new(Handle {
                shared,
                _stop: stop.drop_guard(),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.shared().config
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared().config.node_id
    }

    /// Whether the connections are up now.
    pub fn status(&self) -> Status {
        *self.shared().status.borrow()
    }

    /// Waits until both connections are up (the subscriber connects once
    /// the broker is attached to a hub), at most `timeout`. Returns whether
    /// they are.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared().status.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(Status::is_connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether Redis has confirmed this node's subscription to `topic` on
    /// the current connection: from then on, messages the other nodes
    /// publish to it reach this node.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.shared().subscribed.lock().contains(topic)
    }

    /// Counters since the broker started.
    pub fn stats(&self) -> Stats {
        let c = &self.shared().counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            published: get(&c.published),
            publish_failures: get(&c.publish_failures),
            received: get(&c.received),
            delivered: get(&c.delivered),
            own_skipped: get(&c.own_skipped),
            caught_up: get(&c.caught_up),
            malformed: get(&c.malformed),
            reconnects: get(&c.reconnects),
            dropped: get(&c.dropped),
            rewound: get(&c.rewound),
        }
    }

    /// Stops the broker: this node's membership counts are removed from
    /// Redis (best effort, within the publish timeout), the connections
    /// close, and publishes fail as unavailable from then on. Call it after
    /// the hub's own shutdown.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.stop.cancel();
        shared.tracker.close();
        let grace = shared.config.publish_timeout + Duration::from_millis(100);
        let _ = tokio::time::timeout(grace, shared.tracker.wait()).await;
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn attach(&self, delivery: LocalDelivery) {
        let shared = &self.handle.shared;
        if shared.delivery.set(delivery).is_err() {
            tracing::error!("a RedisBroker serves one hub; attach to a second was ignored");
            return;
        }
        shared
            .tracker
            .spawn_on(tasks::run_subscriber(shared.clone()), &shared.runtime);
        shared
            .tracker
            .spawn_on(tasks::run_membership(shared.clone()), &shared.runtime);
    }

    fn crosses_nodes(&self) -> bool {
        true
    }

    /// Both Redis connections are up ([`RedisBroker::status`]).
    fn is_connected(&self) -> bool {
        self.status().is_connected()
    }

    fn interest(&self, topic: &str, interested: bool) {
        let _ = interested; // The tasks read the truth from the hub.
        let shared = self.shared();
        {
            let mut dirty = shared.dirty.lock();
            dirty.subscriber.insert(topic.to_owned());
            dirty.members.insert(topic.to_owned());
        }
        shared.wake_subscriber.notify_one();
        shared.wake_members.notify_one();
    }

    async fn publish(&self, msg: BrokerMessage) -> Result<(), BrokerError> {
        let shared = self.shared();
        let fail = |e: BrokerError| {
            bump(&shared.counters.publish_failures, 1);
            crate::meter::published(None, false);
            Err(e)
        };
        let (generation, mut conn) = shared.publishing()?;
        let start = crate::meter::start();
        let frame = match wire::encode(&shared.config.node_id, &msg) {
            Ok(frame) => frame,
            Err(e) => return fail(BrokerError::Other(e.to_string())),
        };
        let channel = shared.config.channel(&msg.topic);
        let sent = tokio::time::timeout(
            shared.config.publish_timeout,
            redis::cmd(shared.config.publish_command())
                .arg(channel)
                .arg(frame)
                .query_async::<i64>(&mut conn),
        )
        .await;
        match settle(shared, generation, sent) {
            Ok(_receivers) => {
                bump(&shared.counters.published, 1);
                crate::meter::published(start, true);
                Ok(())
            }
            Err(e) => fail(e),
        }
    }

    async fn remote_size(&self, topic: &str) -> Result<usize, BrokerError> {
        let shared = self.shared();
        let Some((generation, mut conn)) = shared.publisher() else {
            return Err(BrokerError::Unavailable("not connected to Redis".into()));
        };
        let key = shared.config.members_key(topic);
        let fields = tokio::time::timeout(
            shared.config.publish_timeout,
            redis::cmd("HGETALL")
                .arg(key)
                .query_async::<Vec<(String, String)>>(&mut conn),
        )
        .await;
        let fields = settle(shared, generation, fields)?;
        let now = tasks::now_ms();
        Ok(fields
            .iter()
            .filter(|(node, _)| *node != shared.config.node_id)
            .filter_map(|(_, value)| tasks::parse_member_count(value, now))
            .sum())
    }

    fn keeps_history(&self) -> bool {
        true
    }

    async fn publish_to_history(
        &self,
        msg: BrokerMessage,
        limits: HistoryLimits,
    ) -> Result<Position, BrokerError> {
        let shared = self.shared();
        let fail = |e: BrokerError| {
            bump(&shared.counters.publish_failures, 1);
            crate::meter::published(None, false);
            Err(e)
        };
        let (generation, mut conn) = shared.publishing()?;
        let start = crate::meter::start();
        let head = match wire::encode_positioned_head(&shared.config.node_id, &msg) {
            Ok(head) => head,
            Err(e) => return fail(BrokerError::Other(e.to_string())),
        };
        let config = &shared.config;
        let keys = [
            config.position_key(&msg.topic),
            config.history_key(&msg.topic),
        ];
        let args = [
            history::new_epoch().into_bytes(),
            head,
            limits.max_len.max(1).to_string().into_bytes(),
            history::age_ms(&limits).to_string().into_bytes(),
            config.channel(&msg.topic).into_bytes(),
            config.publish_command().as_bytes().to_vec(),
            config.writer_check().to_vec(),
        ];
        let sent = tokio::time::timeout(
            config.publish_timeout,
            PUBLISH_SCRIPT.run::<(String, u64), _>(&mut conn, &keys, &args),
        )
        .await;
        match settle(shared, generation, sent) {
            Ok((epoch, offset)) => {
                bump(&shared.counters.published, 1);
                crate::meter::published(start, true);
                Ok(Position::new(epoch, offset))
            }
            Err(e) => fail(e),
        }
    }

    async fn read_history(
        &self,
        topic: &str,
        after: Option<u64>,
    ) -> Result<HistoryRead, BrokerError> {
        let shared = self.shared();
        if shared.stop.is_cancelled() {
            return Err(BrokerError::Unavailable("broker stopped".into()));
        }
        self.wait_subscribed(topic).await?;
        shared.read_kept(topic, after).await
    }

    fn presence_changed(&self, topic: &str) {
        let shared = self.shared();
        shared.dirty.lock().presence.insert(topic.to_owned());
        shared.wake_members.notify_one();
    }

    async fn remote_presence(&self, topic: &str) -> Result<Vec<PresenceEntry>, BrokerError> {
        let shared = self.shared();
        let Some((generation, mut conn)) = shared.publisher() else {
            return Err(BrokerError::Unavailable("not connected to Redis".into()));
        };
        let key = shared.config.presence_key(topic);
        let fields = tokio::time::timeout(
            shared.config.publish_timeout,
            redis::cmd("HGETALL")
                .arg(key)
                .query_async::<Vec<(String, Vec<u8>)>>(&mut conn),
        )
        .await;
        let fields = settle(shared, generation, fields)?;
        let now = tasks::now_ms();
        let mut entries = Vec::new();
        for (node, value) in fields {
            if node == shared.config.node_id {
                continue;
            }
            match tasks::parse_presence(&value, now, shared.config.max_presence_size) {
                Ok(Some(list)) => entries.extend(list),
                Ok(None) => {}
                Err(error) => {
                    bump(&shared.counters.malformed, 1);
                    tracing::warn!(topic, node, error, "redis broker: presence value skipped");
                }
            }
        }
        Ok(entries)
    }
}

impl RedisBroker {
    /// Waits until Redis has confirmed this node's subscription to `topic`
    /// when a connection of this node holds it (so that every publication
    /// after a read of its history reaches this node), at most the
    /// subscribe timeout.
    async fn wait_subscribed(&self, topic: &str) -> Result<(), BrokerError> {
        let shared = self.shared();
        let Some(delivery) = shared.delivery.get() else {
            return Ok(());
        };
        let mut changes = shared.subscriptions.subscribe();
        let ready = || shared.subscribed.lock().contains(topic) || delivery.topic_size(topic) == 0;
        let waited = tokio::time::timeout(shared.config.subscribe_timeout, async {
            while !ready() {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        waited.map_err(|_| {
            BrokerError::Unavailable(format!(
                "the subscription to {topic} was not confirmed by Redis in time"
            ))
        })
    }
}
