//! signalbox-redis: a [`signalbox::Broker`] over Redis pub/sub, so that
//! topics span every node (process) that shares one Redis server (over TLS
//! with `rediss://`), one Redis Cluster (sharded pub/sub, see "Redis
//! Cluster" below) or a master found through Redis Sentinel.
//!
//! ```no_run
//! use signalbox::{Hub, Router};
//! use signalbox_redis::RedisBroker;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = RedisBroker::builder("redis://127.0.0.1:6379")
//!     .prefix("chat:")
//!     .publish_timeout(Duration::from_secs(1))
//!     .build()?;
//! let hub = Hub::builder(Router::new()).broker(broker.clone()).build();
//! if !broker.wait_connected(Duration::from_secs(5)).await {
//!     eprintln!("Redis is not reachable yet; retrying in the background");
//! }
//! // Hand connections to `hub` with a transport; publishes now reach the
//! // subscribers of every node.
//! hub.shutdown().await;
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **Publish.** The hub delivers a publish to its own subscribers first,
//!   then hands it to the broker, which sends it with `PUBLISH` on the
//!   channel `{prefix}{topic}` as a compact MessagePack frame (see
//!   [`wire`]): type, meta, the payload bytes as they are (a `bin` or an
//!   integer above 2^53 stays exact), the connection to exclude ("every
//!   subscriber but the sender" holds across nodes) and the publishing node's
//!   id, by which a node skips its own messages when Redis echoes them.
//! - **Subscribe.** Each node subscribes to the channels of the topics its
//!   connections hold. The hub tells the broker when a topic gains its first
//!   local subscriber or loses its last; the broker only marks the topic and
//!   wakes its subscriber task, which reads the hub's registry and sends
//!   `SUBSCRIBE` / `UNSUBSCRIBE` (so a hub call never waits on Redis, and
//!   notifications that race arrive at the right state). A subscription
//!   takes one round trip to Redis: messages published elsewhere before it
//!   is confirmed ([`RedisBroker::is_subscribed`]) do not reach this node.
//! - **Receive.** One task reads the subscriber connection without pause
//!   and hands each message to the hub's [`signalbox::LocalDelivery`],
//!   which encodes it once per codec in use and queues it on each local
//!   subscriber (each connection's outbound queue is bounded and applies
//!   its overflow policy). The broker itself adds no queue.
//! - **Redis lost.** Local delivery goes on (the hub does it before the
//!   broker is asked). A publish fails at once with
//!   [`signalbox::BrokerError::Unavailable`] while the connection is down,
//!   and within the publish timeout (default 1 s) when Redis stops
//!   answering; the hub answers the publisher UNAVAILABLE — nothing is
//!   dropped silently. Both connections are pinged every health interval
//!   (default 1 s) and re-established with exponential backoff (100 ms up to
//!   5 s, with jitter); the subscriber then subscribes again to every topic
//!   held on the node. Messages published while a node's subscriber
//!   connection was down are not replayed to it (Redis pub/sub keeps no
//!   history; on topics with history a client can resume, below).
//!
//! # Topic history and positions (docs/PROTOCOL.md §8)
//!
//! A topic the hub keeps history for ([`signalbox::HubBuilder::history`])
//! has its history in Redis, shared by every node, so that a client can
//! resume on any node ([`signalbox::Broker::keeps_history`] is true):
//!
//! - **Keys.** `{prefix}position:{topic}`, a hash with the topic's `epoch`
//!   (random, chosen by the first writer) and `top` (the latest offset);
//!   `{prefix}history:{topic}`, a stream of the kept publications, one
//!   entry each (field `f`: the positioned frame, see [`wire`]).
//! - **Publish.** One Lua script (`EVALSHA`, loaded again after a Redis
//!   restart) increments `top`, creates the epoch if the hash is missing,
//!   appends the frame with its position to the stream, trims it to
//!   `max_len` entries (`XADD … MAXLEN`) and to `max_age` (`XTRIM MINID`,
//!   entry ids are Redis time), sets both keys to expire `max_age` after
//!   this publication, and `PUBLISH`es the frame on the topic's channel.
//!   Redis runs one script at a time, so every node receives a topic's
//!   publications in offset order; each node — the publishing one included
//!   — hands them to the hub one at a time as they arrive, and the hub
//!   delivers them to its subscribers with their position.
//! - **Read** (a subscribe, a resume, [`signalbox::Hub::position`]). Waits
//!   until Redis has confirmed this node's subscription to the topic when a
//!   connection of this node holds it (at most
//!   [`RedisBrokerBuilder::subscribe_timeout`], default 2 s, then the
//!   subscriber is told "not recovered"), so no publication falls between
//!   the read and live delivery; then one script returns the epoch, the
//!   top and the kept entries after the asked offset (trimmed by age
//!   first). Kept frames are checked like messages (size, layout, epoch);
//!   a bad one is left out and counted in [`Stats::malformed`], which the
//!   hub sees as a hole: "not recovered", never a wrong replay.
//! - **Epochs.** A missing position hash — Redis restarted empty, flushed,
//!   or the topic had no publication for `max_age` while no node held it —
//!   is created with a new epoch, so a client resuming with the old one is
//!   told "not recovered". Live subscribers go on with the new epoch from
//!   its first publication: a node that receives a publication of another
//!   epoch than the last one it delivered of the topic tells the hub
//!   ([`signalbox::LocalDelivery::epoch_changed`]) before delivering it.
//!   While a node holds the topic it extends the hash's life at every
//!   membership refresh, so a quiet topic that is held keeps its epoch (as
//!   the hub's in-memory history does).
//! - **A node that missed some.** A node whose subscriber connection was
//!   down missed the positioned publications made meanwhile. It remembers
//!   the position it last delivered of each topic it stays subscribed to;
//!   when the next publication arrives past it, the reader reads the
//!   missed ones back from the topic's history and delivers them first, in
//!   order ([`Stats::caught_up`]); after an epoch change, the new epoch's
//!   publications it did not receive. What history no longer holds
//!   (trimmed, or Redis unreachable for the read) stays missed:
//!   subscribers see a jump in offsets, and a client resumes from its last
//!   position. A subscriber whose replay was being read while the epoch
//!   changed may miss the new epoch's publications until their offsets
//!   pass the old top (the hub's gate compares offsets only); it is not
//!   handled.
//!
//! - **Redis went back.** A server restarted from an older snapshot (or,
//!   were it not for the new epoch of a failover, below, a promoted replica
//!   that lacks the last publications) gives the offsets of the lost
//!   publications again to new ones. A node that
//!   receives a publication at or below an offset it already delivered of
//!   the same epoch reports it: [`Stats::rewound`], a warning, the hub's
//!   live subscribers take the publications from there
//!   ([`signalbox::LocalDelivery::epoch_changed`]), and the topic gets a
//!   new epoch in Redis, so a client resuming from a position of the old
//!   one is told "not recovered" instead of missing the reused offsets.
//!   Publications given a reused offset before this node noticed, while
//!   its subscription was being restored, are not read back (their
//!   offsets cannot tell them from the lost ones); clients see the jump.
//!
//! # TLS (`rediss://`)
//!
//! A `rediss://` URL connects over TLS (rustls; ring is installed as the
//! process's provider when the application chose none). The server's
//! certificate is checked against the platform's roots, or against the CA
//! certificates given to [`RedisBrokerBuilder::tls_ca_pem`];
//! [`RedisBrokerBuilder::tls_client_cert`] sends a client certificate to a
//! server that requires one (`tls-auth-clients yes`). TLS material that
//! does not parse is refused by [`RedisBrokerBuilder::build`].
//!
//! # Redis Cluster ([`RedisBroker::cluster_builder`])
//!
//! On a Redis Cluster (Redis 7 or later: sharded pub/sub) the broker works
//! as above with these differences:
//!
//! - **Names.** Every name of a topic carries the same hash tag, so that
//!   its keys and its channel are in one slot, served by one master (the
//!   scripts touch them together): channel `{prefix}{{topic}}`, keys
//!   `{prefix}{{topic}}:position`, `…:history`, `…:members`, `…:presence`.
//!   A topic whose name holds `}` (the hub's default rules forbid it) is
//!   tagged with a hash of its name instead: `{prefix}{#hash}:{topic}…`.
//!   The prefix may not hold `{` or `}`.
//! - **Publish.** `SPUBLISH` on the topic's shard channel (in the publish
//!   script too), sent by the cluster connection to the master of the slot.
//! - **Subscribe.** One cluster connection in RESP3 subscribes with
//!   `SSUBSCRIBE`, one topic per command, each to the master of its slot;
//!   the nodes push the messages to it. Pushes wait for the hub in a queue
//!   of at most [`RedisBrokerBuilder::max_pending_messages`] (more are
//!   dropped and counted in [`Stats::dropped`]; the reader never waits for
//!   a client, so it does not fill in practice). When a node's connection
//!   is lost or a node drops a subscription (its slot moved: a failover or
//!   a resharding), the subscriber drops its cluster connection and a new
//!   one subscribes to every held topic again; the publications
//!   of topics with history missed meanwhile are read back as under "A
//!   node that missed some" above.
//! - **Failover.** While a master is down and until its replica is
//!   promoted (about the cluster's node timeout, plus the election),
//!   publishes to its slots fail at once or within the publish timeout and
//!   are answered UNAVAILABLE; the other masters' slots keep working when
//!   the cluster runs with `cluster-require-full-coverage no`. The
//!   promoted replica may lack the last publications the dead master
//!   acknowledged (replication is asynchronous), and nothing tells which:
//!   so the position hash of a topic names the master that wrote it
//!   (`node`, its `CLUSTER MYID`), and the publish and read scripts take a
//!   position written by another master as lost — the topic starts a new
//!   epoch. Every topic of a failed-over (or resharded) slot thus starts a
//!   new epoch: live subscribers go on (as under "Epochs" above; what a
//!   node missed of the new epoch while resubscribing is read back), and a
//!   client resuming from before the failover is told "not recovered",
//!   even when nothing was lost.
//! - **Several keys at once** (membership counts, presence, the position
//!   refresh): one pipeline or script per topic, many in flight, instead
//!   of one pipeline for many topics.
//!
//! # Sentinel ([`RedisBroker::sentinel_builder`])
//!
//! Behind Redis Sentinel the broker works as with one server, on the
//! master the Sentinels name: it asks them again at every reconnection, so
//! after a failover (the old master unreachable, or answering `READONLY`
//! as a replica) both connections move to the promoted replica and every
//! held topic is subscribed again. As on a cluster, the replica may lack
//! the last publications the old master acknowledged: the position hash
//! names the master's replication id (`master_replid`, which a promoted
//! replica changes) and a position written under another one starts a new
//! epoch. TLS to a master found through Sentinel is not built.
//!
//! Topics without history have no positions: a message published while a
//! node's subscription was being restored does not reach that node and is
//! not reported, on a cluster or behind Sentinel as on one server.
//!
//! # Presence ([`signalbox::Hub::presence`])
//!
//! Each node keeps, in the Redis hash `{prefix}presence:{topic}`, a field
//! named by its node id holding `expires_at_ms:` and its entries as a JSON
//! array. It is written at once when the topic's presence changes on the
//! node, and rewritten with the membership counts every membership refresh
//! interval; readers skip their own node's field and expired values. The
//! entries of a node that died without shutting down are listed until
//! they expire: three refresh intervals, 15 s by default.
//! [`RedisBroker::shutdown`] removes them at once.
//!
//! # Membership counts ([`signalbox::Hub::topic_size_everywhere`])
//!
//! Each node keeps, in the Redis hash `{prefix}members:{topic}`, a field
//! named by its node id holding `count:expires_at_ms`. A topic's count is
//! written at once when the topic gains its first local subscriber or loses
//! its last one, and every node rewrites all its counts every membership
//! refresh interval (default 5 s). So a count is exact when subscriptions
//! are quiet, and otherwise lags by up to one interval; the count of a node
//! that died without shutting down still counts until its entry expires
//! (three intervals, default 15 s). The expiry is judged by each reader's
//! clock: nodes whose clocks differ by more than an interval over- or
//! under-count. [`RedisBroker::shutdown`] removes the node's counts.
//!
//! # Bounds
//!
//! No queue of this crate grows without bound: interest and presence
//! changes are kept as sets of topic names; a topic's history in Redis is
//! bounded by its `max_len` and `max_age`; publishes wait on Redis for at
//! most the publish timeout; messages read from Redis are delivered as
//! they are read (the redis client's own buffer between socket and reader
//! stays small because the reader never waits for a client). Frames larger
//! than [`RedisBrokerBuilder::max_message_size`] (default 2 MiB) or that do
//! not parse are dropped and counted in [`Stats::malformed`], whether they
//! came on a channel or from a topic's history; so are presence values
//! larger than [`RedisBrokerBuilder::max_presence_size`] (default 8 MiB).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod broker;
mod config;
mod conn;
mod history;
mod meter;
mod tasks;
pub mod wire;

pub use broker::{RedisBroker, RedisBrokerError, Stats, Status};
pub use config::{RedisBrokerBuilder, RedisConfig};
