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
    pub(crate) tls: Tls,
    pub(crate) topology: Topology,
    pub(crate) max_pending_pushes: usize,
}

/// One Redis server, or a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server (`PUBLISH`/`SUBSCRIBE`; keys named as before clusters).
    Single,
    /// A Redis Cluster reached through these startup nodes: sharded pub/sub
    /// (`SPUBLISH`/`SSUBSCRIBE`), every key and the channel of a topic in
    /// one hash slot.
    Cluster(Vec<String>),
    /// The master of `service`, found through these Sentinels (and found
    /// again at every reconnection, so a failover moves the broker to the
    /// promoted replica).
    Sentinel {
        /// The Sentinels' URLs.
        sentinels: Vec<String>,
        /// The name the Sentinels monitor the master under.
        service: String,
    },
}

/// TLS settings for `rediss://` URLs.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    /// CA certificates (PEM) that the server's certificate must chain to,
    /// instead of the platform's roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key (PEM), for servers that require
    /// one (`tls-auth-clients yes`).
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Tls")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

impl Tls {
    /// The certificates in the form the redis client takes, when any was
    /// given.
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.ca_pem.is_none() && self.client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        })
    }
}

/// A 64-bit FNV-1a hash: stable across processes and versions, so every
/// node derives the same hash tag from a topic name.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl RedisConfig {
    /// The Redis URL (`redis://host:port/db` or `rediss://…`); on a
    /// cluster, the first startup node's; behind Sentinel, the first
    /// Sentinel's.
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

    /// Whether the broker talks to a Redis Cluster
    /// ([`RedisBroker::cluster_builder`]).
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    /// The name of `topic`'s channel (`kind` empty) or of one of its keys.
    /// On one server: `{prefix}{kind}{topic}`. On a cluster every name of
    /// a topic carries the same hash tag, so that its keys and its shard
    /// channel live in one slot (the scripts touch them together):
    /// `{prefix}{{topic}}` and `{prefix}{{topic}}:{kind}`, or, for a topic
    /// that is empty or holds a `}` (which would end the tag early), a tag
    /// made of the topic's hash: `{prefix}{#hash}:{topic}` and
    /// `{prefix}{#hash}:{topic}:{kind}`.
    fn name(&self, kind: &str, topic: &str) -> String {
        let prefix = &self.prefix;
        if !self.is_cluster() {
            return if kind.is_empty() {
                format!("{prefix}{topic}")
            } else {
                format!("{prefix}{kind}:{topic}")
            };
        }
        let mut name = if topic.is_empty() || topic.contains('}') {
            format!("{prefix}{{#{:016x}}}:{topic}", fnv1a(topic.as_bytes()))
        } else {
            format!("{prefix}{{{topic}}}")
        };
        if !kind.is_empty() {
            name.push(':');
            name.push_str(kind);
        }
        name
    }

    /// The topic whose channel is `channel` ([`RedisConfig::channel`]
    /// read backwards); `None` for a channel that is not one of ours.
    pub fn topic_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.prefix.as_str())?;
        if !self.is_cluster() {
            return Some(rest);
        }
        let rest = rest.strip_prefix('{')?;
        let close = rest.find('}')?;
        if close + 1 == rest.len() {
            return Some(&rest[..close]).filter(|t| !t.is_empty());
        }
        let topic = rest[close..].strip_prefix("}:")?;
        let hash = rest[..close].strip_prefix('#')?;
        (hash == format!("{:016x}", fnv1a(topic.as_bytes()))).then_some(topic)
    }

    /// What the history scripts check the position's writer against (see
    /// `history::PUBLISH_SCRIPT`): the cluster node, the master's
    /// replication id behind Sentinel, nothing on one server.
    pub(crate) fn writer_check(&self) -> &'static [u8] {
        match self.topology {
            Topology::Single => b"single",
            Topology::Cluster(_) => b"cluster",
            Topology::Sentinel { .. } => b"replicated",
        }
    }

    /// The command that publishes on a channel: `PUBLISH`, or
    /// `SPUBLISH` (sharded pub/sub) on a cluster.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// The Redis channel of `topic` (a shard channel on a cluster).
    pub fn channel(&self, topic: &str) -> String {
        self.name("", topic)
    }

    /// The Redis hash holding the membership counts of `topic`.
    pub fn members_key(&self, topic: &str) -> String {
        self.name("members", topic)
    }

    /// The Redis hash holding the position (epoch and top offset) of a
    /// topic with history.
    pub fn position_key(&self, topic: &str) -> String {
        self.name("position", topic)
    }

    /// The Redis stream holding the kept publications of a topic with
    /// history.
    pub fn history_key(&self, topic: &str) -> String {
        self.name("history", topic)
    }

    /// The Redis hash holding the presence entries of `topic`, one field
    /// per node.
    pub fn presence_key(&self, topic: &str) -> String {
        self.name("presence", topic)
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
    pub(crate) fn new(url: impl Into<String>, topology: Topology) -> Self {
        RedisBrokerBuilder {
            config: RedisConfig {
                url: url.into(),
                tls: Tls::default(),
                topology,
                max_pending_pushes: 65_536,
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

    /// The CA certificates (PEM, one or more) that a `rediss://` server's
    /// certificate must chain to, instead of the platform's roots: for a
    /// Redis whose certificate comes from a private CA. Checked at
    /// [`build`](Self::build).
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.tls.ca_pem = Some(pem.into());
        self
    }

    /// A client certificate chain and its private key (both PEM), sent to
    /// a `rediss://` server that asks for one (redis-server's
    /// `tls-auth-clients`). Checked at [`build`](Self::build).
    pub fn tls_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.config.tls.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// On a cluster, the most messages received from Redis and not yet
    /// handed to the hub; more are dropped and counted in
    /// [`Stats::dropped`](crate::Stats::dropped) (the reader never waits
    /// for a client, so this fills only when the hub falls behind by that
    /// much). Default 65,536.
    pub fn max_pending_messages(mut self, messages: usize) -> Self {
        self.config.max_pending_pushes = messages.max(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cluster: bool) -> RedisConfig {
        let topology = if cluster {
            Topology::Cluster(vec!["redis://127.0.0.1:7000".into()])
        } else {
            Topology::Single
        };
        RedisBrokerBuilder::new("redis://127.0.0.1:7000", topology)
            .prefix("sb:")
            .config()
            .clone()
    }

    /// The hash tag of a Redis key: what lies between its first `{` and
    /// the first `}` after it when that is not empty, else the whole key.
    fn tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn one_server_keeps_the_names_it_always_had() {
        let c = config(false);
        assert_eq!(c.channel("room"), "sb:room");
        assert_eq!(c.members_key("room"), "sb:members:room");
        assert_eq!(c.position_key("room"), "sb:position:room");
        assert_eq!(c.history_key("room"), "sb:history:room");
        assert_eq!(c.presence_key("room"), "sb:presence:room");
        assert_eq!(c.topic_of("sb:room"), Some("room"));
        assert_eq!(c.topic_of("other:room"), None);
        assert_eq!(c.publish_command(), "PUBLISH");
    }

    #[test]
    fn on_a_cluster_every_name_of_a_topic_has_the_same_hash_tag() {
        let c = config(true);
        assert_eq!(c.channel("room"), "sb:{room}");
        assert_eq!(c.history_key("room"), "sb:{room}:history");
        assert_eq!(c.publish_command(), "SPUBLISH");
        for topic in ["room", "a{b", "}x", "a}b{c}", "{", "}", "", "#0000:x", "é"] {
            let names = [
                c.channel(topic),
                c.members_key(topic),
                c.position_key(topic),
                c.history_key(topic),
                c.presence_key(topic),
            ];
            let first = tag(&names[0]);
            assert!(
                !first.is_empty() && first != names[0],
                "{topic:?}: {names:?}"
            );
            for name in &names {
                assert_eq!(tag(name), first, "{topic:?}: {name}");
            }
            assert_eq!(c.topic_of(&names[0]), Some(topic), "{topic:?}: {names:?}");
        }
        // Distinct topics, distinct names.
        let topics = ["a", "a}", "a}b", "#x", "b"];
        let channels: std::collections::HashSet<String> =
            topics.iter().map(|t| c.channel(t)).collect();
        assert_eq!(channels.len(), topics.len());
        // Not ours, or a hash that does not match its topic.
        assert_eq!(c.topic_of("sb:room"), None);
        assert_eq!(c.topic_of("sb:{}"), None);
        assert_eq!(c.topic_of("sb:{#0000000000000000}:a}"), None);
        assert_eq!(c.topic_of("x:{room}"), None);
    }
}
