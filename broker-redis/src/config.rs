//! How a [`crate::RedisBroker`] connects, names things and times out.

use crate::{RedisBroker, RedisBrokerError};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The settings of a [`RedisBroker`], made by [`RedisBroker::builder`].
/// Every field has a safe default; see each setter.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) node_id: String,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) publish_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) health_interval: Duration,
    pub(crate) membership_refresh: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) subscribe_timeout: Duration,
    pub(crate) max_presence_size: usize,
}

impl RedisConfig {
    /// The Redis URL (`redis://host:port/db`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix of every channel and key this broker uses.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This node's id, carried on every message it publishes.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The Redis channel of `topic`.
    pub fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// The Redis hash holding the membership counts of `topic`.
    pub fn members_key(&self, topic: &str) -> String {
        format!("{}members:{topic}", self.prefix)
    }

    /// The Redis hash holding the position (epoch and top offset) of a
    /// topic with history.
    pub fn position_key(&self, topic: &str) -> String {
        format!("{}position:{topic}", self.prefix)
    }

    /// The Redis stream holding the kept publications of a topic with
    /// history.
    pub fn history_key(&self, topic: &str) -> String {
        format!("{}history:{topic}", self.prefix)
    }

    /// The Redis hash holding the presence entries of `topic`, one field
    /// per node.
    pub fn presence_key(&self, topic: &str) -> String {
        format!("{}presence:{topic}", self.prefix)
    }

    /// How long a membership count or a node's presence entries stay
    /// valid without a refresh: three refresh intervals, so one missed
    /// refresh does not drop a node.
    pub fn membership_ttl(&self) -> Duration {
        self.membership_refresh.saturating_mul(3)
    }
}

/// Builds a [`RedisBroker`]: `RedisBroker::builder(url)…build()`.
#[derive(Debug, Clone)]
pub struct RedisBrokerBuilder {
    config: RedisConfig,
}

/// A node id that is unlikely to collide: process id and a random number.
fn random_node_id() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:x}-{:08x}", std::process::id(), random as u32)
}

impl RedisBrokerBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        RedisBrokerBuilder {
            config: RedisConfig {
                url: url.into(),
                prefix: "signalbox:".to_owned(),
                node_id: random_node_id(),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(5),
                publish_timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(2),
                health_interval: Duration::from_secs(1),
                membership_refresh: Duration::from_secs(5),
                max_message_size: 2 * 1024 * 1024,
                subscribe_timeout: Duration::from_secs(2),
                max_presence_size: 8 * 1024 * 1024,
            },
        }
    }

    /// The prefix of every Redis channel (`{prefix}{topic}`) and key
    /// (`{prefix}members:{topic}`, `{prefix}position:{topic}`,
    /// `{prefix}history:{topic}`, `{prefix}presence:{topic}`). Nodes share topics only when they share
    /// the prefix, so one Redis can serve several applications. Default
    /// `signalbox:`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// This node's id. Every message carries its publisher's id so that a
    /// node skips its own messages (it delivered them locally already);
    /// the ids of the nodes sharing a Redis must differ. Default: the
    /// process id and a random number.
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.config.node_id = node_id.into();
        self
    }

    /// The wait before the first reconnection attempt after Redis is lost,
    /// doubled after each failure up to `max` (with jitter). Default 100 ms
    /// up to 5 s.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial.max(Duration::from_millis(1));
        self.config.backoff_max = max.max(self.config.backoff_initial);
        self
    }

    /// How long a publish may wait for Redis before it fails as
    /// unavailable. Default 1 s.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }

    /// How long one connection attempt may take. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How often an idle connection is pinged, so that a dead Redis is
    /// noticed (and reconnected to) before the next publish needs it.
    /// Default 1 s.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.config.health_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How often this node rewrites its membership counts and presence
    /// entries in Redis (and extends the life of the positions of the
    /// topics with history it holds); a node's counts and presence entries
    /// expire after three intervals without a refresh (a node that died):
    /// 15 s by default. Default 5 s.
    pub fn membership_refresh(mut self, interval: Duration) -> Self {
        self.config.membership_refresh = interval.max(Duration::from_millis(10));
        self
    }

    /// The largest message accepted from Redis, in bytes; larger ones are
    /// dropped and counted as malformed. Default 2 MiB (the hub's default
    /// maximum message size is 1 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// How long subscribing to a topic with history may wait for this
    /// node's subscription to the topic's channel to be confirmed by Redis
    /// before the subscriber's replay fails (it is then told "not
    /// recovered", docs/PROTOCOL.md §8). Default 2 s.
    pub fn subscribe_timeout(mut self, timeout: Duration) -> Self {
        self.config.subscribe_timeout = timeout;
        self
    }

    /// The largest presence value (one node's entries for one topic, as
    /// JSON) accepted from Redis, in bytes; larger ones are skipped and
    /// counted as malformed. Default 8 MiB.
    pub fn max_presence_size(mut self, bytes: usize) -> Self {
        self.config.max_presence_size = bytes;
        self
    }

    /// The settings as they stand.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Starts the broker: checks the URL and spawns the tasks that connect
    /// to Redis (in the background, retrying with backoff — an unreachable
    /// Redis is not an error here; see [`RedisBroker::wait_connected`]).
    ///
    /// # Errors
    /// An invalid URL, or no tokio runtime to spawn on.
    pub fn build(self) -> Result<RedisBroker, RedisBrokerError> {
        RedisBroker::start(self.config)
    }
}
