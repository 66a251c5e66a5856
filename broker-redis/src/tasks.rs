//! The background tasks: the publishing connection's keeper, the
//! subscriber (reads every message Redis sends and reconciles
//! subscriptions), and the membership writer.

use crate::broker::{Publisher, Shared, bump};
use crate::history::{self, LuaScript};
use crate::wire;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use signalbox::{BrokerMessage, LocalDelivery, PresenceEntry};
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Channels named in one SUBSCRIBE / UNSUBSCRIBE / pipeline.
const BATCH: usize = 256;

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
    let options = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.publish_timeout));
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut generation = 0u64;
    loop {
        let connecting = tokio::time::timeout(
            config.connect_timeout,
            shared
                .client
                .get_multiplexed_async_connection_with_config(&options),
        );
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
async fn watch_publisher(
    shared: &Shared,
    generation: u64,
    mut conn: redis::aio::MultiplexedConnection,
) {
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
                let ping = tokio::time::timeout(
                    shared.config.publish_timeout,
                    redis::cmd("PING").query_async::<String>(&mut conn),
                ).await;
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
        let connecting =
            tokio::time::timeout(config.connect_timeout, shared.client.get_async_pubsub());
        let connected = tokio::select! {
            () = shared.stop.cancelled() => return,
            r = connecting => r,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                backoff.reset();
                sessions += 1;
                if sessions > 1 {
                    bump(&shared.counters.reconnects, 1);
                    crate::meter::reconnected("subscriber");
                }
                let ended = subscriber_session(&shared, &delivery, pubsub).await;
                shared.subscribed_change(HashSet::clear);
                shared.set_status(|s| s.subscriber = false);
                if shared.stop.is_cancelled() {
                    return;
                }
                tracing::warn!(url = %config.url, reason = %ended, "redis broker: subscriber connection lost");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "redis broker: subscriber cannot connect"),
            Err(_) => tracing::debug!("redis broker: subscriber connection attempt timed out"),
        }
        if pause(&shared, backoff.next_wait()).await {
            return;
        }
    }
}

/// One subscriber connection, until it fails. Reading and subscribing run
/// side by side, so that messages are read continuously (the Redis client
/// buffers what is not read without bound; this loop never stops reading
/// for long: local delivery only queues, it never waits for a client).
async fn subscriber_session(
    shared: &Shared,
    delivery: &LocalDelivery,
    pubsub: redis::aio::PubSub,
) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let reader = async {
        while let Some(msg) = stream.next().await {
            on_message(shared, delivery, &msg).await;
        }
    };
    let writer = async {
        // Start from what the hub holds now; changes from here on are
        // marked dirty again.
        shared.dirty.lock().subscriber.clear();
        let held = delivery.topics();
        {
            // What this node delivered of the topics it still holds is
            // kept: their next publication shows what was missed while the
            // connection was down.
            let still: std::collections::HashSet<&String> = held.iter().collect();
            shared.delivered_to.lock().retain(|t, _| still.contains(t));
        }
        subscribe(shared, &mut sink, held).await?;
        shared.set_status(|s| s.subscriber = true);
        tracing::info!(url = %shared.config.url, "redis broker: subscriber connected");
        loop {
            tokio::select! {
                () = shared.wake_subscriber.notified() => {
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
                    subscribe(shared, &mut sink, std::mem::take(&mut add)).await?;
                    unsubscribe(shared, &mut sink, std::mem::take(&mut remove)).await?;
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
async fn on_message(shared: &Shared, delivery: &LocalDelivery, msg: &redis::Msg) {
    let counters = &shared.counters;
    // A channel name that is not UTF-8 reads as "?", which no prefix of
    // ours starts and no valid topic is named.
    let Some(topic) = msg
        .get_channel_name()
        .strip_prefix(shared.config.prefix.as_str())
    else {
        bump(&counters.malformed, 1);
        return;
    };
    let payload = msg.get_payload_bytes();
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
/// trip, at most the publish timeout); what cannot be read back (trimmed,
/// Redis unreachable) stays missed, and clients see the jump in offsets.
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
    let read = match shared.read_kept(&msg.topic, Some(last)).await {
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
        let mut pipe = redis::pipe();
        let mut outcome = Vec::with_capacity(batch.len());
        for topic in batch {
            let key = key_of(topic);
            match value_of(topic) {
                Some(value) => {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg(&config.node_id)
                        .arg(value)
                        .ignore();
                    pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
                    outcome.push((topic, true));
                }
                None => {
                    pipe.cmd("HDEL").arg(&key).arg(&config.node_id).ignore();
                    outcome.push((topic, false));
                }
            }
        }
        let done =
            tokio::time::timeout(config.publish_timeout, pipe.query_async::<()>(&mut conn)).await;
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
    let Some((_, mut conn)) = shared.publisher() else {
        return Err(());
    };
    for batch in held.chunks(BATCH) {
        let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        let args: Vec<Vec<u8>> = batch
            .iter()
            .map(|(_, ttl)| ttl.to_string().into_bytes())
            .collect();
        let done = tokio::time::timeout(
            config.publish_timeout,
            KEEP_SCRIPT.run::<i64>(&mut conn, &keys, &args),
        )
        .await;
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
    for batch in keys.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for key in batch {
            pipe.cmd("HDEL")
                .arg(key)
                .arg(&shared.config.node_id)
                .ignore();
        }
        let _ = tokio::time::timeout(
            shared.config.publish_timeout,
            pipe.query_async::<()>(&mut conn),
        )
        .await;
    }
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
