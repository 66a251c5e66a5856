//! Topics: the registry of who holds what, local fan-out, the broker seam
//! through which topics span nodes, and topic history ([`history`]).

pub mod history;
pub mod presence;

use crate::context::ConnectionHandle;
use crate::meter::{Stamp, TopicGauges};
use async_trait::async_trait;
use bytes::Bytes;
use history::{Gate, HistoryLimits, Position};
use parking_lot::Mutex;
use parking_lot::RwLock;
use presence::PresenceEntry;
use signalbox_codec::{EncodeError, Meta, RawPayload, WireCodec};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

const SHARDS: usize = 16;

/// Which topics keep history and which have presence: the hub's rules,
/// first match wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicRules {
    pub(crate) history: Vec<(history::TopicPattern, HistoryLimits)>,
    /// Patterns with presence, and whether join/leave events are sent.
    pub(crate) presence: Vec<(history::TopicPattern, bool)>,
}

impl TopicRules {
    /// The history limits of `topic`, if it keeps history.
    pub(crate) fn history(&self, topic: &str) -> Option<HistoryLimits> {
        self.history
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map(|(_, l)| *l)
    }

    /// Whether `topic` has presence.
    pub(crate) fn presence(&self, topic: &str) -> bool {
        self.presence.iter().any(|(p, _)| p.matches(topic))
    }

    /// Whether `topic`'s subscribers are told who comes and goes.
    pub(crate) fn presence_events(&self, topic: &str) -> bool {
        self.presence
            .iter()
            .find(|(p, _)| p.matches(topic))
            .is_some_and(|(_, events)| *events)
    }
}

/// One subscriber of a topic.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) conn: ConnectionHandle,
    /// On a positioned topic: where the subscriber stands (replaying or
    /// live), so that each publication reaches it once and in order.
    pub(crate) gate: Option<Arc<Mutex<Gate>>>,
    /// On a topic with presence: what the application said about it.
    pub(crate) presence: Option<Arc<serde_json::Value>>,
}

/// One shard: topic → its members by connection id.
type Shard = RwLock<HashMap<Arc<str>, HashMap<Arc<str>, Member>>>;

/// Which connections hold which topics, on this node. Sharded by topic name
/// so unrelated topics do not contend.
pub(crate) struct Registry {
    shards: Vec<Shard>,
    gauges: TopicGauges,
}

impl Registry {
    /// An empty registry, counted in `gauges`.
    pub(crate) fn new(gauges: TopicGauges) -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            gauges,
        }
    }

    fn shard(&self, topic: &str) -> &Shard {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Adds a member to `topic`; returns `(added, topic_was_empty)`.
    pub(crate) fn insert_member(&self, topic: &Arc<str>, member: Member) -> (bool, bool) {
        let mut shard = self.shard(topic).write();
        let members = shard.entry(topic.clone()).or_default();
        let was_empty = members.is_empty();
        let added = members
            .insert(member.conn.shared.id.clone(), member)
            .is_none();
        if added {
            self.gauges.added(was_empty);
        }
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
        if removed {
            self.gauges.removed(empty);
        }
        (removed, removed && empty)
    }

    pub(crate) fn members(&self, topic: &str) -> Vec<ConnectionHandle> {
        self.shard(topic)
            .read()
            .get(topic)
            .map(|m| m.values().map(|m| m.conn.clone()).collect())
            .unwrap_or_default()
    }

    /// Replaces a member's presence; returns whether it is a member.
    pub(crate) fn set_presence(
        &self,
        topic: &str,
        conn_id: &str,
        info: Arc<serde_json::Value>,
    ) -> bool {
        let mut shard = self.shard(topic).write();
        match shard.get_mut(topic).and_then(|m| m.get_mut(conn_id)) {
            Some(member) => {
                member.presence = Some(info);
                true
            }
            None => false,
        }
    }

    /// The members of `topic` with their gates and presence.
    pub(crate) fn entries(&self, topic: &str) -> Vec<Member> {
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
    members: Vec<ConnectionHandle>,
    exclude: Option<&str>,
    chunk: usize,
    encode: impl Fn(&WireCodec) -> Result<Bytes, EncodeError>,
) -> usize {
    let mut cache = EncodeCache::published();
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
    /// When the publish started: its frames carry it to the writer, which
    /// measures publish-to-write latency (the `metrics` feature).
    stamp: Stamp,
}

impl EncodeCache {
    /// The cache of one publication, stamped now.
    pub(crate) fn published() -> Self {
        EncodeCache {
            frames: Vec::new(),
            stamp: Stamp::now(),
        }
    }

    /// The message encoded for `codec`, encoding it on first use. `None`
    /// when it cannot be encoded for that codec (logged once).
    pub(crate) fn frame_for(
        &mut self,
        codec: &WireCodec,
        encode: &impl Fn(&WireCodec) -> Result<Bytes, EncodeError>,
    ) -> Option<Bytes> {
        if let Some((_, frame)) = self.frames.iter().find(|(c, _)| c == codec) {
            return frame.clone();
        }
        let frame = encode(codec)
            .map_err(|error| {
                tracing::warn!(%error, codec = codec.name(), "message could not be encoded");
            })
            .ok();
        self.frames.push((*codec, frame.clone()));
        frame
    }

    /// Every frame encoded so far, by codec.
    pub(crate) fn into_frames(self) -> Vec<(WireCodec, Bytes)> {
        self.frames
            .into_iter()
            .filter_map(|(codec, frame)| frame.map(|f| (codec, f)))
            .collect()
    }

    /// Queues the message for each of `members` (but `exclude`), encoding
    /// it at most once per codec. Returns how many it was queued for.
    pub(crate) fn deliver(
        &mut self,
        members: &[ConnectionHandle],
        exclude: Option<&str>,
        encode: &impl Fn(&WireCodec) -> Result<Bytes, EncodeError>,
    ) -> usize {
        let mut delivered = 0;
        for conn in members {
            if exclude.is_some_and(|x| x == conn.id()) {
                continue;
            }
            if let Some(frame) = self.frame_for(conn.codec(), encode)
                && conn.push_stamped(frame, self.stamp).is_ok()
            {
                delivered += 1;
            }
        }
        delivered
    }

    /// Queues a positioned publication (at `offset`) for each member, each
    /// through its gate: a member still reading its replay holds it, a
    /// live one takes it unless the replay gave it already. Never yields:
    /// callers hold what orders the topic's publications.
    pub(crate) fn deliver_positioned(
        &mut self,
        members: &[Member],
        exclude: Option<&str>,
        offset: u64,
        max_pending: usize,
        encode: &impl Fn(&WireCodec) -> Result<Bytes, EncodeError>,
    ) -> usize {
        let mut delivered = 0;
        for member in members {
            let conn = &member.conn;
            if exclude.is_some_and(|x| x == conn.id()) {
                continue;
            }
            let Some(frame) = self.frame_for(conn.codec(), encode) else {
                continue;
            };
            let ready = match &member.gate {
                Some(gate) => gate.lock().admit(offset, frame, max_pending),
                None => Some(frame),
            };
            if let Some(frame) = ready
                && conn.push_stamped(frame, self.stamp).is_ok()
            {
                delivered += 1;
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
    /// Its place in the topic's history, on a topic with history whose
    /// positions the broker assigns ([`Broker::keeps_history`]); `None`
    /// otherwise.
    pub position: Option<Position>,
}

/// A topic's history as a broker read it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryRead {
    /// The topic's epoch now.
    pub epoch: String,
    /// The offset of its latest publication (0: none yet).
    pub top: u64,
    /// Publications kept, in ascending offset order, each with its
    /// position: every one after the asked offset, or all kept ones when
    /// none was asked. May have holes where history was trimmed.
    pub entries: Vec<BrokerMessage>,
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
    ///
    /// A message with a [`position`](BrokerMessage::position) (a topic
    /// whose history the broker keeps) is stamped with it and passes each
    /// subscriber's gate, so a subscriber reading its replay gets it after
    /// the replay, and none gets it twice. The broker must hand over a
    /// topic's positioned messages one at a time, in offset order.
    pub async fn deliver(&self, msg: &BrokerMessage) -> usize {
        let Some(hub) = self.hub.upgrade() else {
            return 0;
        };
        if let Some(position) = &msg.position {
            let max_pending = hub
                .rules
                .history(&msg.topic)
                .map_or(0, |l| l.max_pending_bytes);
            let mut meta = msg.meta.clone();
            history::stamp(&mut meta, &msg.topic, position);
            let members = hub.topics.entries(&msg.topic);
            let delivered = EncodeCache::published().deliver_positioned(
                &members,
                msg.exclude.as_deref(),
                position.offset,
                max_pending,
                &|codec| codec.encode_raw(&msg.ty, &meta, msg.payload.as_ref(), msg.compress),
            );
            hub.meter.sent(&msg.ty, delivered);
            return delivered;
        }
        let members = hub.topics.members(&msg.topic);
        let chunk = hub.config.topics.fanout_chunk;
        let delivered = fan_out(members, msg.exclude.as_deref(), chunk, |codec| {
            codec.encode_raw(&msg.ty, &msg.meta, msg.payload.as_ref(), msg.compress)
        })
        .await;
        hub.meter.sent(&msg.ty, delivered);
        delivered
    }

    /// The epoch of `topic` changed while this node's subscribers were
    /// live (the broker's history was lost: a restarted or flushed store):
    /// each live subscriber takes the new epoch's publications from the
    /// first one. A broker calls it before delivering the first publication
    /// of the new epoch, in the same order as its deliveries.
    pub fn epoch_changed(&self, topic: &str) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        for member in hub.topics.entries(topic) {
            if let Some(gate) = &member.gate {
                gate.lock().restart();
            }
        }
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

    /// The presence entries of this node's subscribers of `topic` (a
    /// broker shares them with the other nodes).
    pub fn presence(&self, topic: &str) -> Vec<PresenceEntry> {
        self.hub
            .upgrade()
            .map(|h| presence::local(&h.topics, topic))
            .unwrap_or_default()
    }

    /// The history limits of `topic` by this hub's rules, if it keeps
    /// history (a broker that keeps history reads them to trim and expire
    /// what it reads and to keep a held topic's position alive).
    pub fn history_limits(&self, topic: &str) -> Option<HistoryLimits> {
        self.hub.upgrade().and_then(|h| h.rules.history(topic))
    }

    /// Topics with presence held on this node now.
    pub fn presence_topics(&self) -> Vec<String> {
        self.hub
            .upgrade()
            .map(|h| {
                h.topics
                    .topics()
                    .into_iter()
                    .filter(|t| h.rules.presence(t))
                    .collect()
            })
            .unwrap_or_default()
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

    /// Whether the engine is reachable now: when false the hub reports
    /// itself [`crate::Readiness::Degraded`]. Default true (nothing to
    /// reach).
    fn is_connected(&self) -> bool {
        true
    }

    /// Whether the engine keeps topic history and assigns positions
    /// itself, so that positions are the same on every node. When false
    /// (the default) the hub keeps history in memory, per node.
    fn keeps_history(&self) -> bool {
        false
    }

    /// Appends a publication to the history of `msg.topic` (keeping at
    /// most what `limits` says), assigns its position atomically, and
    /// sends it to every node, this one included, where it must reach
    /// [`LocalDelivery::deliver`] with its position, in offset order.
    /// Only called when [`Broker::keeps_history`] is true.
    async fn publish_to_history(
        &self,
        msg: BrokerMessage,
        limits: HistoryLimits,
    ) -> Result<Position, BrokerError> {
        let _ = (msg, limits);
        Err(BrokerError::Other("this broker keeps no history".into()))
    }

    /// Reads the history of `topic`: its epoch and top, and the kept
    /// publications after `after` (all kept ones when `None`). Must not
    /// return before every publication after the read is sure to reach
    /// [`LocalDelivery::deliver`] on this node (the node's subscription to
    /// the topic is in place), or a subscriber could miss one between its
    /// replay and live delivery. Only called when [`Broker::keeps_history`]
    /// is true.
    async fn read_history(
        &self,
        topic: &str,
        after: Option<u64>,
    ) -> Result<HistoryRead, BrokerError> {
        let _ = (topic, after);
        Err(BrokerError::Other("this broker keeps no history".into()))
    }

    /// The presence of `topic` changed on this node (a subscriber with
    /// presence came or went). Must not block: the broker reads
    /// [`LocalDelivery::presence`] in its own task and shares it.
    fn presence_changed(&self, topic: &str) {
        let _ = topic;
    }

    /// The presence entries of `topic` on the other nodes. Entries of a
    /// node that stopped without cleaning up must disappear within a
    /// bounded time the broker documents.
    async fn remote_presence(&self, topic: &str) -> Result<Vec<PresenceEntry>, BrokerError> {
        let _ = topic;
        Ok(Vec::new())
    }
}

/// The in-process broker: topics stay on this node.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalBroker;

impl Broker for LocalBroker {}
