//! The background tasks: the publishing connection's keeper, the
//! subscriber (reads every message Redis sends and reconciles
//! subscriptions), and the membership writer.

use crate::broker::{Publisher, Shared, bump};
use crate::config::Topology;
use crate::conn::{BATCH, Conn, RedisClient, cluster_builder};
use crate::history::{self, LuaScript};
use crate::wire;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use redis::{PushInfo, PushKind, Value};
use signalbox::{BrokerMessage, LocalDelivery, Position, PresenceEntry};
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A membership value is `count:expires_at_ms`; `None` when it expired or
/// does not parse (it came from Redis).
pub(crate) fn parse_member_count(value: &str, now: u64) -> Option<usize> {
    let (count, expires) = value.split_once(':')?;
    let expires: u64 = expires.parse().ok()?;
    (expires >= now).then(|| count.parse().ok()).flatten()
}

/// Exponential backoff with jitter between reconnection attempts.
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1;
        Backoff {
            initial,
            max,
            next: initial,
            seed,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The wait before the next attempt: between half and all of the
    /// current step, which then doubles up to the maximum.
    pub(crate) fn next_wait(&mut self) -> Duration {
        // xorshift64: jitter only, no need for a real generator.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let fraction = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        step.mul_f64(fraction)
    }
}

/// Sleeps `wait` unless the broker stops first; returns whether it stopped.
async fn pause(shared: &Shared, wait: Duration) -> bool {
    tokio::select! {
        () = shared.stop.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

/// Keeps the publishing connection: connects (with backoff), pings it while
/// idle, and replaces it when a publish or a ping finds it dead.
pub(crate) async fn run_publisher(shared: Arc<Shared>) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut generation = 0u64;
    loop {
        let connecting =
            tokio::time::timeout(config.connect_timeout, shared.client.connect(config));
        let connected = tokio::select! {
            () = shared.stop.cancelled() => return,
            r = connecting => r,
        };
        match connected {
            Ok(Ok(conn)) => {
                backoff.reset();
                generation += 1;
                if generation > 1 {
                    bump(&shared.counters.reconnects, 1);
                    crate::meter::reconnected("publisher");
                }
                *shared.publisher.lock() = Some(Publisher {
                    generation,
                    conn: conn.clone(),
                });
                shared.set_status(|s| s.publisher = true);
                tracing::info!(url = %config.url, "redis broker: publisher connected");
                // Membership counts may be missing after a Redis restart.
                shared.members_lost.store(true, Ordering::Relaxed);
                shared.wake_members.notify_one();
                watch_publisher(&shared, generation, conn).await;
                if shared.stop.is_cancelled() {
                    // Left in place for the membership task's last words;
                    // publishes check the stop themselves.
                    return;
                }
                shared.publisher_failed(generation);
                tracing::warn!(url = %config.url, "redis broker: publisher connection lost");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "redis broker: publisher cannot connect"),
            Err(_) => tracing::debug!("redis broker: publisher connection attempt timed out"),
        }
        if pause(&shared, backoff.next_wait()).await {
            return;
        }
    }
}

/// Returns when the connection of `generation` is found dead (by a publish
/// or by a ping) or the broker stops.
async fn watch_publisher(shared: &Shared, generation: u64, mut conn: Conn) {
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = shared.publisher_lost.notified() => {
                let current = shared.publisher.lock().as_ref().map(|p| p.generation);
                if current != Some(generation) {
                    return;
                }
            }
            () = tokio::time::sleep(shared.config.health_interval) => {
                let ping = tokio::time::timeout(shared.config.publish_timeout, conn.ping()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

/// Keeps the subscriber connection: connects (with backoff), subscribes to
/// every topic held on this node, follows interest changes, and hands
/// every message to the hub.
pub(crate) async fn run_subscriber(shared: Arc<Shared>) {
    let Some(delivery) = shared.delivery.get().cloned() else {
        return;
    };
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut sessions = 0u64;
    loop {
        let ended = match (&shared.client, &config.topology) {
            (RedisClient::Single(_) | RedisClient::Sentinel { .. }, _) => {
                let connecting = tokio::time::timeout(config.connect_timeout, async {
                    shared.client.server().await?.get_async_pubsub().await
                });
                let connected = tokio::select! {
                    () = shared.stop.cancelled() => return,
                    r = connecting => r,
                };
                match connected {
                    Ok(Ok(pubsub)) => {
                        sessions += 1;
                        Some(subscriber_session(&shared, &delivery, pubsub, sessions).await)
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "redis broker: subscriber cannot connect");
                        None
                    }
                    Err(_) => {
                        tracing::debug!("redis broker: subscriber connection attempt timed out");
                        None
                    }
                }
            }
            (RedisClient::Cluster(_), Topology::Cluster(nodes)) => {
                cluster_subscriber_session(&shared, &delivery, nodes, &mut sessions).await
            }
            (RedisClient::Cluster(_), _) => return,
        };
        if let Some(ended) = ended {
            backoff.reset();
            shared.subscribed_change(HashSet::clear);
            shared.set_status(|s| s.subscriber = false);
            if shared.stop.is_cancelled() {
                return;
            }
            tracing::warn!(url = %config.url, reason = %ended, "redis broker: subscriber connection lost");
        }
        if pause(&shared, backoff.next_wait()).await {
            return;
        }
    }
}

/// Counts a new subscriber session (every one after the first is a
/// reconnect).
fn session_started(shared: &Shared, sessions: u64) {
    if sessions > 1 {
        bump(&shared.counters.reconnects, 1);
        crate::meter::reconnected("subscriber");
    }
}

/// Marks the topics the hub holds now for subscription and forgets what
/// was delivered of the others (a new session starts from the hub's
/// registry; changes from here on are marked dirty again).
fn session_topics(shared: &Shared, delivery: &LocalDelivery) -> Vec<String> {
    shared.dirty.lock().subscriber.clear();
    let held = delivery.topics();
    {
        // What this node delivered of the topics it still holds is kept:
        // their next publication shows what was missed while the
        // connection was down.
        let still: HashSet<&String> = held.iter().collect();
        shared.delivered_to.lock().retain(|t, _| still.contains(t));
    }
    held
}

/// The dirty topics to subscribe and to unsubscribe, by what the hub holds
/// and what is subscribed now.
fn reconcile(shared: &Shared, delivery: &LocalDelivery) -> (Vec<String>, Vec<String>) {
    let dirty = std::mem::take(&mut shared.dirty.lock().subscriber);
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    {
        let subscribed = shared.subscribed.lock();
        for topic in dirty {
            let wanted = delivery.topic_size(&topic) > 0;
            let has = subscribed.contains(&topic);
            if wanted && !has {
                add.push(topic);
            } else if !wanted && has {
                remove.push(topic);
            }
        }
    }
    {
        // A new subscription: nothing was missed on it.
        let mut delivered_to = shared.delivered_to.lock();
        for topic in &add {
            delivered_to.remove(topic);
        }
    }
    (add, remove)
}

/// One subscriber connection, until it fails. Reading and subscribing run
/// side by side, so that messages are read continuously (the Redis client
/// buffers what is not read without bound; this loop never stops reading
/// for long: local delivery only queues, it never waits for a client).
async fn subscriber_session(
    shared: &Shared,
    delivery: &LocalDelivery,
    pubsub: redis::aio::PubSub,
    sessions: u64,
) -> String {
    session_started(shared, sessions);
    let (mut sink, mut stream) = pubsub.split();
    let reader = async {
        while let Some(msg) = stream.next().await {
            on_message(
                shared,
                delivery,
                msg.get_channel_name(),
                msg.get_payload_bytes(),
            )
            .await;
        }
    };
    let writer = async {
        let held = session_topics(shared, delivery);
        subscribe(shared, &mut sink, held).await?;
        shared.set_status(|s| s.subscriber = true);
        tracing::info!(url = %shared.config.url, "redis broker: subscriber connected");
        loop {
            tokio::select! {
                () = shared.wake_subscriber.notified() => {
                    let (add, remove) = reconcile(shared, delivery);
                    subscribe(shared, &mut sink, add).await?;
                    unsubscribe(shared, &mut sink, remove).await?;
                }
                () = tokio::time::sleep(shared.config.health_interval) => {
                    let ping = tokio::time::timeout(
                        shared.config.publish_timeout,
                        sink.ping::<redis::Value>(),
                    ).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        return Err("ping failed".to_owned());
                    }
                }
            }
        }
    };
    tokio::select! {
        () = shared.stop.cancelled() => "stopped".to_owned(),
        () = reader => "connection closed".to_owned(),
        r = writer => match r {
            Ok(()) => "stopped".to_owned(),
            Err(e) => e,
        },
    }
}

/// One subscriber session on a cluster: a cluster connection in RESP3
/// whose nodes push the messages of the shard channels it subscribed to
/// (`SSUBSCRIBE`, one per topic, sent to the node serving the topic's
/// slot). The session ends — and the next one subscribes to every held
/// topic again on a fresh connection — when a node's connection is lost
/// or a node drops a subscription (its slot moved: a failover or a
/// resharding). `None` when no connection could be made. `sessions`
/// counts the sessions that got connected.
async fn cluster_subscriber_session(
    shared: &Arc<Shared>,
    delivery: &LocalDelivery,
    nodes: &[String],
    sessions: &mut u64,
) -> Option<String> {
    let config = &shared.config;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<PushInfo>(config.max_pending_pushes);
    // A node lost while the queue was full: its Disconnection push could
    // not be queued, so the session is ended at the next check.
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let shared = shared.clone();
        let broken = broken.clone();
        move |info: PushInfo| -> Result<(), ()> {
            let disconnection = info.kind == PushKind::Disconnection;
            if tx.try_send(info).is_err() {
                if disconnection {
                    broken.store(true, Ordering::Relaxed);
                } else {
                    bump(&shared.counters.dropped, 1);
                }
            }
            Ok(())
        }
    };
    let client = match cluster_builder(config, nodes)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(sender)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "redis broker: cluster subscriber cannot be configured");
            return None;
        }
    };
    let connecting = tokio::time::timeout(config.connect_timeout, client.get_async_connection());
    let conn = tokio::select! {
        () = shared.stop.cancelled() => return None,
        r = connecting => match r {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis broker: cluster subscriber cannot connect");
                return None;
            }
            Err(_) => {
                tracing::debug!("redis broker: cluster subscriber connection attempt timed out");
                return None;
            }
        },
    };
    *sessions += 1;
    session_started(shared, *sessions);
    let run = async {
        let held = session_topics(shared, delivery);
        ssubscribe(shared, &conn, held).await?;
        shared.set_status(|s| s.subscriber = true);
        tracing::info!(url = %config.url, "redis broker: cluster subscriber connected");
        loop {
            tokio::select! {
                push = rx.recv() => {
                    let Some(push) = push else {
                        return Err("the cluster connection closed".to_owned());
                    };
                    on_push(shared, delivery, push).await?;
                }
                () = shared.wake_subscriber.notified() => {
                    let (add, remove) = reconcile(shared, delivery);
                    ssubscribe(shared, &conn, add).await?;
                    sunsubscribe(shared, &conn, remove).await?;
                }
                () = tokio::time::sleep(config.health_interval) => {
                    if broken.load(Ordering::Relaxed) {
                        return Err("a cluster node's connection was lost".to_owned());
                    }
                    let ping = tokio::time::timeout(
                        config.publish_timeout,
                        Conn::Cluster(conn.clone()).ping(),
                    ).await;
                    if !matches!(ping, Ok(Ok(()))) {
                        return Err("ping failed".to_owned());
                    }
                }
            }
        }
    };
    let ended = tokio::select! {
        () = shared.stop.cancelled() => "stopped".to_owned(),
        r = run => match r {
            Ok(()) => "stopped".to_owned(),
            Err(e) => e,
        },
    };
    // Dropping the connection (and its client) closes every node's
    // connection, which ends its subscriptions: nothing to unsubscribe
    // from a node that may be gone.
    drop(conn);
    drop(client);
    Some(ended)
}

/// One push from a cluster node: a message, a lost connection, or a
/// subscription the node dropped.
async fn on_push(shared: &Shared, delivery: &LocalDelivery, push: PushInfo) -> Result<(), String> {
    let bytes = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => Some(b.clone()),
        Some(Value::SimpleString(s)) => Some(s.clone().into_bytes()),
        _ => None,
    };
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            let (Some(channel), Some(payload)) =
                (bytes(push.data.first()), bytes(push.data.get(1)))
            else {
                bump(&shared.counters.malformed, 1);
                return Ok(());
            };
            let channel = std::str::from_utf8(&channel).unwrap_or("?");
            on_message(shared, delivery, channel, &payload).await;
            Ok(())
        }
        PushKind::Disconnection => Err("a cluster node's connection was lost".to_owned()),
        PushKind::SUnsubscribe => {
            // Ours (an unsubscribe) finished before this is read, and the
            // topic left the subscribed set then; a topic still in it was
            // dropped by the node: its slot moved.
            let channel = bytes(push.data.first()).unwrap_or_default();
            let channel = std::str::from_utf8(&channel).unwrap_or("?");
            match shared.config.topic_of(channel) {
                Some(topic) if shared.subscribed.lock().contains(topic) => Err(format!(
                    "a node dropped the subscription to {topic} (its slot moved)"
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Subscribes to the shard channels of `topics`, each on the node serving
/// its slot.
async fn ssubscribe(
    shared: &Shared,
    conn: &redis::cluster_async::ClusterConnection,
    topics: Vec<String>,
) -> Result<(), String> {
    sharded(shared, conn, "SSUBSCRIBE", topics).await
}

/// Unsubscribes from the shard channels of `topics`.
async fn sunsubscribe(
    shared: &Shared,
    conn: &redis::cluster_async::ClusterConnection,
    topics: Vec<String>,
) -> Result<(), String> {
    sharded(shared, conn, "SUNSUBSCRIBE", topics).await
}

/// Sends `command` (`SSUBSCRIBE` or `SUNSUBSCRIBE`) for each topic,
/// [`BATCH`] at once, and records each confirmed one.
async fn sharded(
    shared: &Shared,
    conn: &redis::cluster_async::ClusterConnection,
    command: &'static str,
    topics: Vec<String>,
) -> Result<(), String> {
    let subscribing = command == "SSUBSCRIBE";
    let mut runs = futures_util::stream::iter(topics)
        .map(|topic| {
            let mut conn = conn.clone();
            let channel = shared.config.channel(&topic);
            async move {
                let mut cmd = redis::cmd(command);
                cmd.arg(channel);
                let done = tokio::time::timeout(
                    shared.config.publish_timeout,
                    cmd.query_async::<Value>(&mut conn),
                )
                .await;
                (topic, done)
            }
        })
        .buffer_unordered(BATCH);
    while let Some((topic, done)) = runs.next().await {
        match done {
            Ok(Ok(_)) => shared.subscribed_change(|subscribed| {
                if subscribing {
                    subscribed.insert(topic);
                } else {
                    subscribed.remove(&topic);
                    shared.delivered_to.lock().remove(&topic);
                }
            }),
            Ok(Err(e)) => return Err(format!("{command} {topic}: {e}")),
            Err(_) => return Err(format!("{command} {topic} timed out")),
        }
    }
    Ok(())
}

async fn subscribe(
    shared: &Shared,
    sink: &mut PubSubSink,
    topics: Vec<String>,
) -> Result<(), String> {
    for batch in topics.chunks(BATCH) {
        let channels: Vec<String> = batch.iter().map(|t| shared.config.channel(t)).collect();
        let done =
            tokio::time::timeout(shared.config.publish_timeout, sink.subscribe(&channels)).await;
        match done {
            Ok(Ok(())) => shared.subscribed_change(|s| s.extend(batch.iter().cloned())),
            Ok(Err(e)) => return Err(format!("subscribe: {e}")),
            Err(_) => return Err("subscribe timed out".to_owned()),
        }
    }
    Ok(())
}

async fn unsubscribe(
    shared: &Shared,
    sink: &mut PubSubSink,
    topics: Vec<String>,
) -> Result<(), String> {
    for batch in topics.chunks(BATCH) {
        let channels: Vec<String> = batch.iter().map(|t| shared.config.channel(t)).collect();
        let done =
            tokio::time::timeout(shared.config.publish_timeout, sink.unsubscribe(&channels)).await;
        match done {
            Ok(Ok(())) => shared.subscribed_change(|subscribed| {
                let mut delivered_to = shared.delivered_to.lock();
                for topic in batch {
                    subscribed.remove(topic);
                    delivered_to.remove(topic);
                }
            }),
            Ok(Err(e)) => return Err(format!("unsubscribe: {e}")),
            Err(_) => return Err("unsubscribe timed out".to_owned()),
        }
    }
    Ok(())
}

/// One message from Redis: checked, skipped when this node published it
/// without a position (it delivered it locally already), else delivered to
/// this node's subscribers. Positioned messages (topics with history) are
/// delivered on every node, the publishing one included, one at a time in
/// the order Redis sends them, which is their offset order.
async fn on_message(shared: &Shared, delivery: &LocalDelivery, channel: &str, payload: &[u8]) {
    let counters = &shared.counters;
    // A channel name that is not UTF-8 reads as "?", which no prefix of
    // ours starts and no valid topic is named.
    let Some(topic) = shared.config.topic_of(channel) else {
        bump(&counters.malformed, 1);
        return;
    };
    if payload.len() > shared.config.max_message_size {
        bump(&counters.malformed, 1);
        tracing::warn!(
            topic,
            bytes = payload.len(),
            "redis broker: oversized message dropped"
        );
        return;
    }
    match wire::decode(topic, payload) {
        Ok(frame) if frame.message.position.is_none() && frame.origin == shared.config.node_id => {
            bump(&counters.own_skipped, 1);
        }
        Ok(frame) => {
            bump(&counters.received, 1);
            let n = catch_up(shared, delivery, &frame.message).await
                + delivery.deliver(&frame.message).await;
            bump(&counters.delivered, n as u64);
        }
        Err(error) => {
            bump(&counters.malformed, 1);
            tracing::warn!(topic, %error, "redis broker: malformed message dropped");
        }
    }
}

/// Before a positioned publication is delivered: if this node delivered
/// an earlier one of the same epoch and some came in between that it did
/// not receive (its subscriber connection was down), reads them back from
/// the topic's history and delivers them first, in order. If the earlier
/// one was of another epoch (the history was lost), the hub's live
/// subscribers are restarted on the new epoch and those of its
/// publications this node did not receive are read back the same way. Returns how many
/// local deliveries that made. The reader waits for this read (one round
/// trip, at most the publish timeout; when it fails, once more after the
/// publishing connection is back, waiting at most the subscribe timeout);
/// what cannot be read back (trimmed, Redis unreachable) stays missed, and
/// clients see the jump in offsets.
async fn catch_up(shared: &Shared, delivery: &LocalDelivery, msg: &BrokerMessage) -> usize {
    let Some(position) = &msg.position else {
        return 0;
    };
    let previous = {
        // Only for a topic still subscribed (in the same lock order as the
        // unsubscribe that forgets it), so the map holds no more topics
        // than the node subscribes to.
        let subscribed = shared.subscribed.lock();
        if !subscribed.contains(&msg.topic) {
            return 0;
        }
        shared
            .delivered_to
            .lock()
            .insert(msg.topic.clone(), position.clone())
    };
    let Some(previous) = previous else {
        return 0;
    };
    let last = if previous.epoch == position.epoch {
        if position.offset <= previous.offset {
            rewound(shared, delivery, &msg.topic, position).await;
            return 0;
        }
        previous.offset
    } else {
        // The topic's history was lost (Redis restarted empty or flushed):
        // live subscribers start again with the new epoch, from its first
        // publication.
        delivery.epoch_changed(&msg.topic);
        0
    };
    if position.offset <= last.saturating_add(1) || delivery.topic_size(&msg.topic) == 0 {
        return 0;
    }
    let mut read = shared.read_kept(&msg.topic, Some(last)).await;
    if read.is_err() {
        // The publishing connection may be a moment behind the subscriber
        // (a failover: this message came from the new master while the
        // publishing connection still pointed at the old one): once it is
        // back, at most the subscribe timeout, read again.
        let mut status = shared.status.subscribe();
        let back = tokio::time::timeout(
            shared.config.subscribe_timeout,
            status.wait_for(|s| s.publisher),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if back {
            read = shared.read_kept(&msg.topic, Some(last)).await;
        }
    }
    let read = match read {
        Ok(read) if read.epoch == position.epoch => read,
        Ok(_) => return 0,
        Err(error) => {
            tracing::warn!(topic = %msg.topic, %error, "redis broker: missed publications not read back");
            return 0;
        }
    };
    let mut delivered = 0;
    for missed in &read.entries {
        let offset = missed.position.as_ref().map_or(0, |p| p.offset);
        if offset > last && offset < position.offset {
            bump(&shared.counters.caught_up, 1);
            delivered += delivery.deliver(missed).await;
        }
    }
    delivered
}

/// A positioned publication came with an offset this node had already
/// delivered of the same epoch: Redis lost publications it had
/// acknowledged (a server restarted from an older snapshot; a cluster's
/// failover starts a new epoch instead, see `history::PUBLISH_SCRIPT`) and
/// reuses their offsets. Reported, never silent: counted ([`crate::Stats::rewound`]),
/// logged, and the topic gets a new epoch in Redis (so a client resuming
/// from a position of the old one is told "not recovered",
/// docs/PROTOCOL.md §8); this node's live subscribers take the
/// publications from here on (the hub's gates restart, as for a new
/// epoch).
async fn rewound(shared: &Shared, delivery: &LocalDelivery, topic: &str, position: &Position) {
    bump(&shared.counters.rewound, 1);
    tracing::warn!(
        topic,
        epoch = %position.epoch,
        offset = position.offset,
        "redis broker: Redis went back on a topic's offsets (publications were lost); \
         the topic gets a new epoch"
    );
    delivery.epoch_changed(topic);
    let Some((generation, mut conn)) = shared.publisher() else {
        return;
    };
    let keys = [
        shared.config.position_key(topic),
        shared.config.history_key(topic),
    ];
    let args = [
        position.epoch.clone().into_bytes(),
        history::new_epoch().into_bytes(),
    ];
    let done = tokio::time::timeout(
        shared.config.publish_timeout,
        REWIND_SCRIPT.run::<i64, _>(&mut conn, &keys, &args),
    )
    .await;
    if let Err(error) = crate::broker::settle(shared, generation, done) {
        // Another node that saw the same may do it; if none can, clients
        // resuming from before the loss are not told (the warning above
        // is the report).
        tracing::warn!(topic, %error, "redis broker: the new epoch was not written");
    }
}

/// The script that gives a topic a new epoch after Redis went back.
static REWIND_SCRIPT: LuaScript = LuaScript::new(history::REWIND_SCRIPT);

/// Keeps this node's membership counts and presence entries in Redis: at
/// once for topics whose interest or presence changed, all of them every
/// refresh interval (when it also extends the life of the positions of
/// the topics with history held here), and removes them when the broker
/// stops.
pub(crate) async fn run_membership(shared: Arc<Shared>) {
    let Some(delivery) = shared.delivery.get().cloned() else {
        return;
    };
    let mut announced: HashSet<String> = HashSet::new();
    let mut present: HashSet<String> = HashSet::new();
    let mut next_full = tokio::time::Instant::now();
    loop {
        let full = tokio::select! {
            () = shared.stop.cancelled() => break,
            () = shared.wake_members.notified() => shared.members_lost.swap(false, Ordering::Relaxed),
            () = tokio::time::sleep_until(next_full) => true,
        };
        let (topics, presence): (Vec<String>, Vec<String>) = if full {
            next_full = tokio::time::Instant::now() + shared.config.membership_refresh;
            {
                let mut dirty = shared.dirty.lock();
                dirty.members.clear();
                dirty.presence.clear();
            }
            let mut all: HashSet<String> = delivery.topics().into_iter().collect();
            all.extend(announced.iter().cloned());
            let mut with_presence: HashSet<String> =
                delivery.presence_topics().into_iter().collect();
            with_presence.extend(present.iter().cloned());
            (
                all.into_iter().collect(),
                with_presence.into_iter().collect(),
            )
        } else {
            let mut dirty = shared.dirty.lock();
            (
                std::mem::take(&mut dirty.members).into_iter().collect(),
                std::mem::take(&mut dirty.presence).into_iter().collect(),
            )
        };
        let counts = write_counts(&shared, &delivery, &topics, &mut announced).await;
        let entries = write_presence(&shared, &delivery, &presence, &mut present).await;
        let kept = if full {
            keep_positions(&shared, &delivery).await
        } else {
            Ok(())
        };
        if counts.is_err() || entries.is_err() || kept.is_err() {
            // Try every topic again at the next refresh.
            next_full = next_full.min(tokio::time::Instant::now() + shared.config.backoff_max);
        }
    }
    remove_counts(&shared, &announced, &present).await;
}

/// A presence value is `expires_at_ms:` followed by the node's entries as
/// a JSON array. `Ok(None)` when it expired; an error when it does not
/// parse or is larger than `max` bytes (it came from Redis).
pub(crate) fn parse_presence(
    value: &[u8],
    now: u64,
    max: usize,
) -> Result<Option<Vec<PresenceEntry>>, &'static str> {
    if value.len() > max {
        return Err("too large");
    }
    let colon = value.iter().position(|&b| b == b':').ok_or("no expiry")?;
    let expires: u64 = std::str::from_utf8(&value[..colon])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad expiry")?;
    if expires < now {
        return Ok(None);
    }
    serde_json::from_slice(&value[colon + 1..])
        .map(Some)
        .map_err(|_| "not a list of entries")
}

/// The presence value of `entries`, valid until `expires` (ms).
fn presence_value(entries: &[PresenceEntry], expires: u64) -> Option<Vec<u8>> {
    let mut value = format!("{expires}:").into_bytes();
    serde_json::to_writer(&mut value, entries).ok()?;
    Some(value)
}

/// Writes this node's presence entries of each of `topics` (or removes
/// them when it has none any more).
async fn write_presence(
    shared: &Shared,
    delivery: &LocalDelivery,
    topics: &[String],
    present: &mut HashSet<String>,
) -> Result<(), ()> {
    let config = &shared.config;
    let ttl = u64::try_from(config.membership_ttl().as_millis()).unwrap_or(u64::MAX);
    let expires = now_ms().saturating_add(ttl);
    let value_of = |topic: &str| {
        let entries = delivery.presence(topic);
        if entries.is_empty() {
            return None;
        }
        let value = presence_value(&entries, expires)?;
        if value.len() > config.max_presence_size {
            tracing::warn!(
                topic,
                bytes = value.len(),
                "redis broker: presence larger than other nodes accept"
            );
        }
        Some(value)
    };
    write_node_fields(
        shared,
        topics,
        |t| config.presence_key(t),
        value_of,
        present,
    )
    .await
}

/// Writes this node's field in one Redis hash per topic (`key_of`), in
/// pipelined batches: the value `value_of` gives, expiring with the
/// membership TTL, or no field when it gives `None`. `written` is kept to
/// the topics this node has a field for.
async fn write_node_fields(
    shared: &Shared,
    topics: &[String],
    key_of: impl Fn(&str) -> String,
    value_of: impl Fn(&str) -> Option<Vec<u8>>,
    written: &mut HashSet<String>,
) -> Result<(), ()> {
    if topics.is_empty() {
        return Ok(());
    }
    let Some((_, mut conn)) = shared.publisher() else {
        return Err(());
    };
    let config = &shared.config;
    let ttl = u64::try_from(config.membership_ttl().as_millis()).unwrap_or(u64::MAX);
    for batch in topics.chunks(BATCH) {
        let mut groups = Vec::with_capacity(batch.len());
        let mut outcome = Vec::with_capacity(batch.len());
        for topic in batch {
            let key = key_of(topic);
            match value_of(topic) {
                Some(value) => {
                    let mut set = redis::cmd("HSET");
                    set.arg(&key).arg(&config.node_id).arg(value);
                    let mut expire = redis::cmd("PEXPIRE");
                    expire.arg(&key).arg(ttl);
                    groups.push(vec![set, expire]);
                    outcome.push((topic, true));
                }
                None => {
                    let mut del = redis::cmd("HDEL");
                    del.arg(&key).arg(&config.node_id);
                    groups.push(vec![del]);
                    outcome.push((topic, false));
                }
            }
        }
        let done = tokio::time::timeout(config.publish_timeout, conn.run_groups(groups)).await;
        if !matches!(done, Ok(Ok(()))) {
            return Err(());
        }
        for (topic, has_field) in outcome {
            if has_field {
                written.insert(topic.clone());
            } else {
                written.remove(topic);
            }
        }
    }
    Ok(())
}

/// Extends the life of the positions of the topics with history held on
/// this node to at least their `max_age` and three refresh intervals, so
/// that a held topic keeps its epoch however long it stays quiet (as the
/// hub's in-memory history does).
async fn keep_positions(shared: &Shared, delivery: &LocalDelivery) -> Result<(), ()> {
    let config = &shared.config;
    let floor = u64::try_from(config.membership_ttl().as_millis()).unwrap_or(u64::MAX);
    let held: Vec<(String, u64)> = delivery
        .topics()
        .into_iter()
        .filter_map(|t| {
            let limits = delivery.history_limits(&t)?;
            Some((config.position_key(&t), history::age_ms(&limits).max(floor)))
        })
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    let Some((_, conn)) = shared.publisher() else {
        return Err(());
    };
    // On a cluster the keys of one script must share a slot: one key each.
    let batch_len = if config.is_cluster() { 1 } else { BATCH };
    let calls: Vec<(Vec<String>, Vec<Vec<u8>>)> = held
        .chunks(batch_len)
        .map(|batch| {
            let keys = batch.iter().map(|(k, _)| k.clone()).collect();
            let args = batch
                .iter()
                .map(|(_, ttl)| ttl.to_string().into_bytes())
                .collect();
            (keys, args)
        })
        .collect();
    let mut runs = futures_util::stream::iter(calls)
        .map(|(keys, args)| {
            let mut conn = conn.clone();
            async move {
                tokio::time::timeout(
                    config.publish_timeout,
                    KEEP_SCRIPT.run::<i64, _>(&mut conn, &keys, &args),
                )
                .await
            }
        })
        .buffer_unordered(if config.is_cluster() { BATCH } else { 1 });
    while let Some(done) = runs.next().await {
        if !matches!(done, Ok(Ok(_))) {
            return Err(());
        }
    }
    Ok(())
}

/// Writes the count of each of `topics` (or removes it when none is held
/// here any more).
async fn write_counts(
    shared: &Shared,
    delivery: &LocalDelivery,
    topics: &[String],
    announced: &mut HashSet<String>,
) -> Result<(), ()> {
    let config = &shared.config;
    let ttl = u64::try_from(config.membership_ttl().as_millis()).unwrap_or(u64::MAX);
    let expires = now_ms().saturating_add(ttl);
    let value_of = |topic: &str| {
        let n = delivery.topic_size(topic);
        (n > 0).then(|| format!("{n}:{expires}").into_bytes())
    };
    write_node_fields(
        shared,
        topics,
        |t| config.members_key(t),
        value_of,
        announced,
    )
    .await
}

/// Removes this node's counts and presence entries (best effort: they
/// expire anyway).
async fn remove_counts(shared: &Shared, announced: &HashSet<String>, present: &HashSet<String>) {
    let Some((_, mut conn)) = shared.publisher() else {
        return;
    };
    let keys: Vec<String> = announced
        .iter()
        .map(|t| shared.config.members_key(t))
        .chain(present.iter().map(|t| shared.config.presence_key(t)))
        .collect();
    let groups = keys
        .iter()
        .map(|key| {
            let mut del = redis::cmd("HDEL");
            del.arg(key).arg(&shared.config.node_id);
            vec![del]
        })
        .collect();
    let _ = tokio::time::timeout(shared.config.publish_timeout, conn.run_groups(groups)).await;
}

/// The script that extends held topics' positions.
static KEEP_SCRIPT: LuaScript = LuaScript::new(history::KEEP_SCRIPT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_counts_parse_and_expire() {
        assert_eq!(parse_member_count("3:1000", 999), Some(3));
        assert_eq!(parse_member_count("3:1000", 1000), Some(3));
        assert_eq!(parse_member_count("3:1000", 1001), None);
        assert_eq!(parse_member_count("x:1000", 0), None);
        assert_eq!(parse_member_count("3", 0), None);
        assert_eq!(parse_member_count("", 0), None);
    }

    #[test]
    fn presence_values_round_trip_expire_and_are_checked() {
        let entries = vec![PresenceEntry {
            client_id: "n1-2".into(),
            info: serde_json::json!({"name": "ann"}),
        }];
        let value = presence_value(&entries, 1000).expect("encodes");
        assert_eq!(
            parse_presence(&value, 999, 1 << 20),
            Ok(Some(entries.clone()))
        );
        assert_eq!(parse_presence(&value, 1000, 1 << 20), Ok(Some(entries)));
        assert_eq!(parse_presence(&value, 1001, 1 << 20), Ok(None));
        assert!(parse_presence(&value, 0, value.len() - 1).is_err());
        for junk in [&b""[..], b"1000", b"x:[]", b"1000:{", b"1000:[1]"] {
            assert!(parse_presence(junk, 0, 1 << 20).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_wait()).collect();
        let steps = [100u64, 200, 400, 400, 400];
        for (wait, step) in waits.iter().zip(steps) {
            let step = Duration::from_millis(step);
            assert!(
                *wait >= step / 2 && *wait <= step,
                "{wait:?} for step {step:?}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
