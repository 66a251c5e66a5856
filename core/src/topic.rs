//! Topics: the registry of who holds what, local fan-out, and the broker
//! seam through which topics span nodes.

use crate::context::Conn;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use signalbox_codec::{EncodeError, Meta, RawPayload, WireCodec};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

const SHARDS: usize = 16;

/// One shard: topic → its members by connection id.
type Shard = RwLock<HashMap<Arc<str>, HashMap<Arc<str>, Conn>>>;

/// Which connections hold which topics, on this node. Sharded by topic name
/// so unrelated topics do not contend.
pub(crate) struct Registry {
    shards: Vec<Shard>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, topic: &str) -> &Shard {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Adds `conn` to `topic`; returns `(added, topic_was_empty)`.
    pub(crate) fn insert(&self, topic: &Arc<str>, conn: &Conn) -> (bool, bool) {
        let mut shard = self.shard(topic).write();
        let members = shard.entry(topic.clone()).or_default();
        let was_empty = members.is_empty();
        let added = members
            .insert(conn.shared.id.clone(), conn.clone())
            .is_none();
        (added, was_empty && added)
    }

    /// Removes `conn` from `topic`; returns `(removed, topic_now_empty)`.
    pub(crate) fn remove(&self, topic: &str, conn_id: &str) -> (bool, bool) {
        let mut shard = self.shard(topic).write();
        let Some(members) = shard.get_mut(topic) else {
            return (false, false);
        };
        let removed = members.remove(conn_id).is_some();
        let empty = members.is_empty();
        if empty {
            shard.remove(topic);
        }
        (removed, removed && empty)
    }

    pub(crate) fn members(&self, topic: &str) -> Vec<Conn> {
        self.shard(topic)
            .read()
            .get(topic)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn size(&self, topic: &str) -> usize {
        self.shard(topic).read().get(topic).map_or(0, HashMap::len)
    }

    pub(crate) fn topics(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| s.read().keys().map(|k| k.to_string()).collect::<Vec<_>>())
            .collect();
        all.sort();
        all
    }
}

/// Encodes one message for each codec in use among the recipients, once,
/// and queues the shared bytes for each of them. Yields to the runtime
/// after every `chunk` recipients. Returns how many it was queued for.
pub(crate) async fn fan_out(
    members: Vec<Conn>,
    exclude: Option<&str>,
    chunk: usize,
    encode: impl Fn(&WireCodec) -> Result<Bytes, EncodeError>,
) -> usize {
    let mut cache = EncodeCache::default();
    let mut delivered = 0;
    for (i, part) in members.chunks(chunk.max(1)).enumerate() {
        if i > 0 {
            tokio::task::yield_now().await;
        }
        delivered += cache.deliver(part, exclude, &encode);
    }
    delivered
}

/// Frames already encoded for a fan-out, one per codec.
#[derive(Default)]
pub(crate) struct EncodeCache {
    frames: Vec<(WireCodec, Option<Bytes>)>,
}

impl EncodeCache {
    /// Queues the message for each of `members` (but `exclude`), encoding
    /// it at most once per codec. Returns how many it was queued for.
    pub(crate) fn deliver(
        &mut self,
        members: &[Conn],
        exclude: Option<&str>,
        encode: &impl Fn(&WireCodec) -> Result<Bytes, EncodeError>,
    ) -> usize {
        let mut delivered = 0;
        for conn in members {
            if exclude.is_some_and(|x| x == conn.id()) {
                continue;
            }
            let codec = *conn.codec();
            let frame = match self.frames.iter().find(|(c, _)| *c == codec) {
                Some((_, frame)) => frame.clone(),
                None => {
                    let frame = encode(&codec)
                        .map_err(|error| {
                            tracing::warn!(%error, codec = codec.name(), "message could not be encoded");
                        })
                        .ok();
                    self.frames.push((codec, frame.clone()));
                    frame
                }
            };
            if let Some(frame) = frame {
                if conn.push(frame).is_ok() {
                    delivered += 1;
                }
            }
        }
        delivered
    }
}

/// A published message as it crosses nodes: the payload travels as
/// MessagePack (which keeps binary data and big integers exact) and is
/// transcoded for each receiving connection's codec.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerMessage {
    /// The topic.
    pub topic: String,
    /// The envelope type.
    pub ty: String,
    /// Meta as published (with `clientId` when a connection published).
    pub meta: Meta,
    /// The payload, MessagePack-encoded, if any.
    pub payload: Option<RawPayload>,
    /// A connection that must not receive it ("exclude the sender").
    pub exclude: Option<String>,
    /// Whether it may be compressed for `+gzip` clients.
    pub compress: bool,
}

/// Failures of a broker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The distributed engine cannot be reached now.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("broker error: {0}")]
    Other(String),
}

/// Where a broker hands messages that arrived from other nodes.
#[derive(Clone)]
pub struct LocalDelivery {
    pub(crate) hub: std::sync::Weak<crate::hub::HubInner>,
}

impl std::fmt::Debug for LocalDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalDelivery")
    }
}

impl LocalDelivery {
    /// Delivers a message from another node to this node's subscribers.
    /// Returns how many connections it was queued for.
    pub async fn deliver(&self, msg: &BrokerMessage) -> usize {
        let Some(hub) = self.hub.upgrade() else {
            return 0;
        };
        let members = hub.topics.members(&msg.topic);
        let chunk = hub.config.topics.fanout_chunk;
        fan_out(members, msg.exclude.as_deref(), chunk, |codec| {
            codec.encode_raw(&msg.ty, &msg.meta, msg.payload.as_ref(), msg.compress)
        })
        .await
    }

    /// Topics this node's connections hold now (to resubscribe after a
    /// broker reconnect).
    pub fn topics(&self) -> Vec<String> {
        self.hub
            .upgrade()
            .map(|h| h.topics.topics())
            .unwrap_or_default()
    }

    /// Subscribers of `topic` on this node now. A broker reads it to tell
    /// whether a topic is still held (interest notifications from
    /// concurrent subscribes may arrive out of order) and to share
    /// membership counts with other nodes.
    pub fn topic_size(&self, topic: &str) -> usize {
        self.hub.upgrade().map_or(0, |h| h.topics.size(topic))
    }
}

/// The seam between a hub and a distributed pub/sub engine.
///
/// The hub always delivers to its own subscribers itself; a broker carries
/// only what crosses nodes. Every method has a default that does nothing,
/// which is the in-process broker ([`LocalBroker`]).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Called once when the hub is built, with where to deliver messages
    /// that arrive from other nodes.
    fn attach(&self, delivery: LocalDelivery) {
        let _ = delivery;
    }

    /// Whether publishes must be handed to [`Broker::publish`]. When false
    /// the hub does not even encode the cross-node form.
    fn crosses_nodes(&self) -> bool {
        false
    }

    /// This node gained its first subscriber of `topic` (`true`) or lost
    /// its last (`false`). Must not block: record the interest and act on it
    /// in the broker's own task.
    fn interest(&self, topic: &str, interested: bool) {
        let _ = (topic, interested);
    }

    /// Sends a message to the other nodes (this node delivered it locally
    /// already and must not get it back).
    async fn publish(&self, msg: BrokerMessage) -> Result<(), BrokerError> {
        let _ = msg;
        Ok(())
    }

    /// Subscribers of `topic` on the other nodes, as far as the engine
    /// knows.
    async fn remote_size(&self, topic: &str) -> Result<usize, BrokerError> {
        let _ = topic;
        Ok(0)
    }
}

/// The in-process broker: topics stay on this node.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalBroker;

impl Broker for LocalBroker {}
