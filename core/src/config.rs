//! Limits and timings of a [`crate::Hub`], each with a documented default.

use crate::connection::{Batching, IncompleteLimits, OverflowPolicy};
use signalbox_codec::{CodecLimits, Codecs};
use std::time::Duration;

/// Everything a hub lets you tune. Start from [`Config::default`] and change
/// what you need:
///
/// ```
/// use std::time::Duration;
/// let mut config = signalbox::Config::default();
/// config.outbound_queue_bytes = 4 << 20;
/// config.rpc_deadline = Duration::from_secs(5);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Message size, compression threshold and level. Default: 1 MiB,
    /// 1024 bytes, level 6. Transports take their size limits from here.
    pub codec: CodecLimits,
    /// The codecs clients may negotiate (docs/PROTOCOL.md §2): the built-in
    /// `json`, `msgpack`, `json+gzip`, `msgpack+gzip`, and any application
    /// codecs registered here or with [`crate::HubBuilder::codec`].
    /// Default: the built-in four.
    pub codecs: Codecs,
    /// Decoded messages waiting for their connection's handlers. When full,
    /// the connection stops reading (backpressure onto the peer). Default 64.
    pub inbound_queue: usize,
    /// Bytes of encoded messages waiting to be written to one connection:
    /// the outbound queue's bound (docs/PROTOCOL.md §4, slow consumers).
    /// The queue takes a message while it holds less than this, so it
    /// holds at most this plus one message; a message larger than the
    /// whole budget still goes out when the queue is under it (when empty,
    /// always). Messages published to many connections are encoded once
    /// per codec and shared, so this bounds what one connection keeps
    /// alive rather than what it alone costs. Default 1 MiB (1,048,576):
    /// a burst of 4,000 messages of 200 bytes (800,000 bytes) into a room
    /// fits whole even if the writer has not run yet.
    pub outbound_queue_bytes: usize,
    /// Encoded messages waiting to be written to one connection: a ceiling
    /// besides [`Config::outbound_queue_bytes`], for tiny messages that
    /// cost a queue slot each whatever their size. Default 8,192: twice the
    /// 4,000-message burst above, so the byte budget is what binds for
    /// messages averaging over 128 bytes, and the slots (32 bytes each)
    /// take at most 256 KiB.
    pub outbound_queue: usize,
    /// What a full outbound queue (either bound reached) does. Default:
    /// close the connection as a slow consumer (WS 1008).
    pub overflow: OverflowPolicy,
    /// The batching window every connection starts with ([`Batching`]):
    /// once a message is queued, the writer waits up to its delay for
    /// more and writes them with one flush. Default `None`: no window,
    /// the writer writes what is queued as soon as it wakes (no added
    /// latency). A connection may set or clear its own
    /// ([`crate::ConnectionHandle::set_batching`]).
    pub batching: Option<Batching>,
    /// How long a connection's intake may wait for its outbound queue to
    /// drain below half its bound (under half its bytes and half its
    /// messages). While the queue is half full the connection takes no
    /// further message (it is not read: backpressure onto the peer), so
    /// answers to a peer's own messages push back rather than overflow (a
    /// handler that alone sends more than the room left still meets the
    /// overflow policy). A queue that does not drain within
    /// this time means the peer does not read: the connection is closed as
    /// a slow consumer. Default 5 s.
    pub outbound_stall_timeout: Duration,
    /// Handlers of concurrent routes (requests, by default) running at once
    /// on one connection. Default 16.
    pub max_concurrent: usize,
    /// How long a request handler may take before DEADLINE_EXCEEDED is
    /// answered for it, unless its route says otherwise. Default 30 s.
    pub rpc_deadline: Duration,
    /// How often the server pings an idle connection. Default 30 s.
    pub heartbeat_interval: Duration,
    /// How long after a ping, with nothing heard from the peer, the
    /// connection is closed (policy). Default 10 s.
    pub heartbeat_timeout: Duration,
    /// Per-connection inbound rate limit. Default: 1,000 messages per
    /// second with bursts of 2,000. `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// On shutdown, how long queued outbound messages may take to drain
    /// before connections are closed regardless. Default 5 s.
    pub drain_timeout: Duration,
    /// On shutdown, how long the hub reports itself not ready
    /// ([`crate::Hub::readiness`]) while still serving everything, before it
    /// stops accepting and closes connections: time for a load balancer's
    /// health checks to take the process out of rotation, so that clients
    /// reconnecting after the close are not sent back to it. Set it to the
    /// balancer's check interval times the failed checks it needs, plus a
    /// margin (docs/DEPLOYMENT.md, "Health"). Default 0 (no balancer).
    pub drain_delay: Duration,
    /// Topic rules: name length and characters, subscriptions per
    /// connection, fan-out chunk size.
    pub topics: TopicLimits,
    /// The rule every state-store key meets (set, update, watch, remove).
    /// Default: 1 to 256 bytes of ASCII letters, digits and `-_.:/@#`.
    pub store_keys: crate::state::KeyRule,
    /// Incomplete inbound messages (docs/PROTOCOL.md §4, §5): the bytes all
    /// connections together may hold of messages not yet received whole
    /// (default 64 MiB, beyond 16 KiB per connection that is never
    /// charged), and how long a message may take from its first byte to
    /// its last (default 20 s). A connection that would pass the budget, or
    /// whose message is late, is closed (policy: WS 1008, QUIC 3).
    pub incomplete: IncompleteLimits,
    /// After the server sends its close (docs/PROTOCOL.md §4), how long it
    /// goes on reading, and discarding, what the peer still sends, waiting
    /// for the peer's own close or end of stream before it closes the
    /// socket. Closing a socket with unread data resets it, and the peer
    /// then loses the close frame and its reason. Default 1 s.
    pub close_linger: Duration,
    /// At most how many bytes are read and discarded after the server's
    /// close (see [`Config::close_linger`]). Default 4 MiB: the rest of a
    /// message of up to four times the maximum size.
    pub close_drain_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            codec: CodecLimits::default(),
            codecs: Codecs::new(),
            inbound_queue: 64,
            outbound_queue_bytes: 1 << 20,
            outbound_queue: 8192,
            outbound_stall_timeout: Duration::from_secs(5),
            overflow: OverflowPolicy::Close,
            batching: None,
            max_concurrent: 16,
            rpc_deadline: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(10),
            rate_limit: Some(RateLimit {
                per_second: 1_000,
                burst: 2_000,
            }),
            drain_timeout: Duration::from_secs(5),
            drain_delay: Duration::ZERO,
            topics: TopicLimits::default(),
            store_keys: crate::state::KeyRule::default(),
            incomplete: IncompleteLimits::default(),
            close_linger: Duration::from_secs(1),
            close_drain_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A token bucket: `per_second` refill, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// Messages allowed at once after a quiet spell.
    pub burst: u32,
}

/// Rules for topic names and subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicLimits {
    /// Longest topic name, in bytes. Default 256.
    pub max_name_len: usize,
    /// Characters allowed besides ASCII letters and digits. Default `-_.:/@#`.
    pub extra_chars: String,
    /// Topics one connection may hold. Default 1,000.
    pub max_per_connection: usize,
    /// Subscribers served per fan-out step before yielding to other tasks.
    /// Default 1,024: a step queues the message for that many connections,
    /// about 0.56 ms on average on a 2-core machine under load. Smaller
    /// steps let other rooms in sooner but cost throughput, as each yield
    /// lets the writers woken so far run (and write one message each)
    /// before the rest of the fan-out: 10,000 WebSocket subscribers got
    /// about 130k deliveries/s with steps of 256 and 230–265k with 1,024.
    pub fanout_chunk: usize,
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits {
            max_name_len: 256,
            extra_chars: "-_.:/@#".to_owned(),
            max_per_connection: 1_000,
            fanout_chunk: 1024,
        }
    }
}

impl TopicLimits {
    /// Checks a topic name against the rules.
    pub fn check(&self, topic: &str) -> Result<(), crate::Error> {
        if topic.is_empty() || topic.len() > self.max_name_len {
            return Err(crate::Error::invalid_argument(format!(
                "topic name must have 1..={} bytes",
                self.max_name_len
            )));
        }
        if let Some(c) = topic
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && !self.extra_chars.contains(*c))
        {
            return Err(crate::Error::invalid_argument(format!(
                "topic name may not contain {c:?}"
            )));
        }
        Ok(())
    }
}
