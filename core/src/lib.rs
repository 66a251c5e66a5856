//! signalbox: a transport-agnostic router for typed real-time messages.
//!
//! A [`Router`] maps envelope `type`s to handlers, with middleware,
//! per-connection data, shared state, ordered and concurrent processing,
//! and pub/sub topics. [`Router::build`] makes a [`Hub`], to which
//! transports (`signalbox-ws`, `signalbox-quic`) hand connections; each
//! client picks its codec (`signalbox-codec`).
//!
//! The example uses `signalbox::testing::TestHub`, the in-memory harness of
//! the `testing` feature (off by default; tests enable it).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use signalbox::testing::TestHub;
//! use signalbox::{message, validate, Ctx, Error, Router};
//!
//! #[derive(Serialize, Deserialize)]
//! struct JoinRoom { #[serde(rename = "roomId")] room_id: String }
//! message!(JoinRoom = "JOIN_ROOM");
//!
//! #[derive(Serialize, Deserialize, Debug)]
//! struct SendMessage { #[serde(rename = "roomId")] room_id: String, text: String }
//! message!(SendMessage = "SEND_MESSAGE", |m| validate::chars("text", &m.text, 1..=4096));
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct NewMessage { #[serde(rename = "roomId")] room_id: String, text: String }
//! message!(NewMessage = "NEW_MESSAGE");
//!
//! let router = Router::new()
//!     .on(|ctx: Ctx<JoinRoom>| async move {
//!         ctx.subscribe(&ctx.payload().room_id)?;
//!         Ok(())
//!     })
//!     .on(|ctx: Ctx<SendMessage>| async move {
//!         let SendMessage { room_id, text } = ctx.payload();
//!         if !ctx.is_subscribed(room_id) {
//!             return Err(Error::permission_denied("join the room first"));
//!         }
//!         ctx.publish(room_id, &NewMessage { room_id: room_id.clone(), text: text.clone() }).await?;
//!         Ok(())
//!     });
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let hub = TestHub::new(router);
//! let mut alice = hub.connect("json").await;
//! let mut bob = hub.connect("msgpack").await;
//! for c in [&mut alice, &mut bob] {
//!     c.send(&JoinRoom { room_id: "lobby".into() }).await;
//! }
//! tokio::task::yield_now().await;
//! alice.send(&SendMessage { room_id: "lobby".into(), text: "hi".into() }).await;
//! let (msg, meta) = bob.expect::<NewMessage>().await;
//! assert_eq!(msg.text, "hi");
//! assert!(meta.client_id.is_some());
//! # });
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
mod clock;
mod config;
mod connection;
mod context;
mod error;
mod hub;
mod message;
mod meter;
mod middleware;
mod router;
mod state;
#[cfg(feature = "testing")]
pub mod testing;
mod topic;
pub mod transport;
pub mod versioned;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, RateLimit, TopicLimits};
pub use connection::{Batching, BatchingError, DataMap, OutboundBound, OverflowPolicy};
pub use context::{ConnectionHandle, Ctx};
pub use error::Error;
pub use hub::{
    Hub, HubBuilder, PublishOptions, Readiness, SubscribeOptions, Subscribed, TopicAction,
};
pub use message::{
    Invalid, Message, Opaque, broker_payload_serde, decode_serde, encode_serde, validate,
};
pub use middleware::{Middleware, Next, Request};
pub use router::{
    BuildError, ConflictPolicy, ErrorEvent, HandlerResult, MergeError, Route, Router,
};
pub use state::{
    DEFAULT_CHANGES_CAPACITY, KeyRule, Projection, StateChange, StateChanges, StateRemoved,
    StateStore, Written,
};
pub use topic::history::{HistoryLimits, Position, Start, TopicPattern};
pub use topic::presence::{PresenceEntry, PresenceJoined, PresenceLeft};
pub use topic::{Broker, BrokerError, BrokerMessage, HistoryRead, LocalBroker, LocalDelivery};

/// The codec crate, re-exported: envelopes, codecs, error codes, and the
/// wire vocabulary (`codec::vocab`: reserved types and meta keys).
pub use signalbox_codec as codec;
pub use signalbox_codec::{ErrorCode, Meta};

#[doc(hidden)]
pub use bytes;
