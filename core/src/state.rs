//! A keyed state store shared by every connection of a hub, whose changes
//! are pushed to the connections watching a key (the seed's room state,
//! pushed to members as it changes).
//!
//! Values are [`Message`]s: a watcher receives the new value as a message
//! of its type whenever it is set, and the current value when it starts
//! watching. Watches end when the connection closes. The store is local to
//! one node; across nodes, publish changes through topics.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use signalbox::{message, Ctx, Router};
//!
//! #[derive(Serialize, Deserialize, Clone, Default)]
//! struct RoomState { members: Vec<String> }
//! message!(RoomState = "ROOM_STATE");
//!
//! #[derive(Serialize, Deserialize)]
//! struct Enter { room: String }
//! message!(Enter = "ENTER");
//!
//! let router = Router::new().on(|ctx: Ctx<Enter>| async move {
//!     let key = format!("room:{}", ctx.payload().room);
//!     ctx.store().watch::<RoomState>(&ctx, &key)?;
//!     let me = ctx.id().to_owned();
//!     ctx.store().update(&key, |s: &mut RoomState| s.members.push(me));
//!     Ok(())
//! });
//! # let _ = router;
//! ```

use crate::context::Conn;
use crate::error::Error;
use crate::message::Message;
use crate::topic::{EncodeCache, Registry};
use parking_lot::Mutex;
use signalbox_codec::Meta;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

struct Slot {
    value: Box<dyn Any + Send + Sync>,
    version: u64,
}

/// Typed values under string keys, with watchers per key.
pub struct StateStore {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
    watchers: Registry,
    clock: Arc<dyn crate::Clock>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("keys", &self.slots.lock().len())
            .finish()
    }
}

impl StateStore {
    pub(crate) fn new(clock: Arc<dyn crate::Clock>) -> Self {
        StateStore {
            slots: Mutex::new(HashMap::new()),
            watchers: Registry::new(),
            clock,
        }
    }

    /// A copy of the value under `key`, if it is set and of type `T`.
    pub fn get<T: Clone + Send + Sync + 'static>(&self, key: &str) -> Option<T> {
        self.slots
            .lock()
            .get(key)
            .and_then(|s| s.value.downcast_ref::<T>())
            .cloned()
    }

    /// How many times the value under `key` was set (0: never).
    pub fn version(&self, key: &str) -> u64 {
        self.slots.lock().get(key).map_or(0, |s| s.version)
    }

    /// Sets the value under `key` and pushes it to the key's watchers.
    /// Returns how many watchers it was queued for.
    pub fn set<T: Message + Clone>(&self, key: &str, value: T) -> usize {
        let mut slots = self.slots.lock();
        let slot = slots.entry(Arc::from(key)).or_insert_with(|| Slot {
            value: Box::new(()),
            version: 0,
        });
        slot.version += 1;
        let sent = self.push(key, &value);
        slot.value = Box::new(value);
        drop(slots);
        sent
    }

    /// Queues `value` for every watcher of `key`. Pushing never waits, so
    /// callers do it under the store lock: that is what keeps concurrent
    /// changes of a key in one order for every watcher.
    fn push<T: Message>(&self, key: &str, value: &T) -> usize {
        let meta = Meta {
            timestamp: Some(self.clock.now_ms()),
            ..Meta::default()
        };
        let members = self.watchers.members(key);
        EncodeCache::default().deliver(&members, None, &|codec| value.encode(codec, &meta, true))
    }

    /// Updates the value under `key` (starting from `T::default()` when
    /// unset or of another type), pushes the result to the watchers, and
    /// returns it with how many watchers it was queued for. Updates of one
    /// key are applied and pushed in one order, so every watcher ends with
    /// the last value.
    pub fn update<T: Message + Clone + Default>(
        &self,
        key: &str,
        f: impl FnOnce(&mut T),
    ) -> (T, usize) {
        let mut slots = self.slots.lock();
        let slot = slots.entry(Arc::from(key)).or_insert_with(|| Slot {
            value: Box::new(T::default()),
            version: 0,
        });
        if !slot.value.is::<T>() {
            slot.value = Box::new(T::default());
        }
        let Some(value) = slot.value.downcast_mut::<T>() else {
            unreachable!("the slot holds a T: checked above")
        };
        f(value);
        slot.version += 1;
        let value = value.clone();
        let sent = self.push(key, &value);
        drop(slots);
        (value, sent)
    }

    /// Removes the value under `key` (watchers are not told).
    pub fn remove(&self, key: &str) -> bool {
        self.slots.lock().remove(key).is_some()
    }

    /// Makes `conn` a watcher of `key` and sends it the current value, if
    /// one of type `T` is set. Watching twice is a no-op. At most
    /// [`crate::TopicLimits::max_per_connection`] keys per connection.
    pub fn watch<T: Message + Clone>(&self, conn: &Conn, key: &str) -> Result<(), Error> {
        let hub = &conn.shared.hub;
        hub.config.topics.check(key)?;
        let key: Arc<str> = Arc::from(key);
        {
            let mut held = conn.shared.watching.lock();
            if held.contains(&key) {
                return Ok(());
            }
            if held.len() >= hub.config.topics.max_per_connection {
                return Err(Error::resource_exhausted(
                    format!(
                        "at most {} watched keys per connection",
                        hub.config.topics.max_per_connection
                    ),
                    None,
                ));
            }
            held.insert(key.clone());
        }
        // Under the store lock, so no update slips between the snapshot
        // and the registration.
        let slots = self.slots.lock();
        self.watchers.insert(&key, conn);
        if conn.is_closed() {
            drop(slots);
            self.unwatch(conn, &key);
            return Err(Error::unavailable("connection closed"));
        }
        if let Some(value) = slots.get(&key).and_then(|s| s.value.downcast_ref::<T>()) {
            conn.send(value)?;
        }
        Ok(())
    }

    /// Stops `conn` watching `key`.
    pub fn unwatch(&self, conn: &Conn, key: &str) -> bool {
        if !conn.shared.watching.lock().remove(key) {
            return false;
        }
        self.watchers.remove(key, conn.id()).0
    }

    pub(crate) fn forget_watcher(&self, key: &str, conn_id: &str) {
        self.watchers.remove(key, conn_id);
    }

    /// Connections watching `key` on this node.
    pub fn watchers(&self, key: &str) -> usize {
        self.watchers.size(key)
    }
}
