//! A keyed state store shared by every connection of a hub, whose changes
//! are pushed to the connections watching a key (a room's state, pushed to
//! its members as it changes: `examples/src/guide/state.rs`).
//!
//! Values are [`Message`]s: a watcher receives the new value as a message
//! of its type whenever it changes, and the current value when it starts
//! watching. Watches end when the connection closes. The store is local to
//! one node; across nodes, publish changes through topics.
//!
//! Keys follow one [`KeyRule`], checked by every call that takes a key
//! ([`StateStore::set`], [`StateStore::update`], [`StateStore::try_update`],
//! [`StateStore::remove`], [`StateStore::watch`]), so a key a handler can
//! write is a key it can watch. A write that leaves the value equal to what
//! it was is no change: no new version, nothing pushed.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use signalbox::{message, Ctx, Router};
//!
//! #[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
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
//!     ctx.store().update(&key, |s: &mut RoomState| s.members.push(me))?;
//!     Ok(())
//! });
//! # let _ = router;
//! ```

use crate::config::TopicLimits;
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

/// The rule every state key meets: 1 to [`KeyRule::max_len`] bytes of ASCII
/// letters, digits and [`KeyRule::extra_chars`]. The defaults are those of
/// topic names ([`TopicLimits`]), so a topic name is also a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRule {
    /// Longest key, in bytes. Default 256.
    pub max_len: usize,
    /// Characters allowed besides ASCII letters and digits. Default `-_.:/@#`.
    pub extra_chars: String,
}

impl Default for KeyRule {
    fn default() -> Self {
        let topics = TopicLimits::default();
        KeyRule {
            max_len: topics.max_name_len,
            extra_chars: topics.extra_chars,
        }
    }
}

impl KeyRule {
    /// Checks a state key against the rule: `INVALID_ARGUMENT` naming the
    /// length or the first character refused.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        if key.is_empty() || key.len() > self.max_len {
            return Err(Error::invalid_argument(format!(
                "state key must have 1..={} bytes",
                self.max_len
            )));
        }
        if let Some(c) = key
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && !self.extra_chars.contains(*c))
        {
            return Err(Error::invalid_argument(format!(
                "state key may not contain {c:?}"
            )));
        }
        Ok(())
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Written {
    /// Whether the value changed. A write of a value equal to the current
    /// one changes nothing: no new version, nothing pushed.
    pub changed: bool,
    /// The key's version after the write (see [`StateStore::version`]).
    pub version: u64,
    /// How many watchers the new value was queued for (0 when unchanged).
    pub sent: usize,
}

/// Typed values under string keys, with watchers per key.
///
/// Every call taking a key checks it against the store's [`KeyRule`]
/// (see [`StateStore::key_rule`]) and refuses a bad one with
/// `INVALID_ARGUMENT` before touching anything.
///
/// Writes compare the new value with the current one with `PartialEq`
/// rather than comparing encoded forms: the comparison needs no codec,
/// costs no encoding when nothing changed, and does not see a change where
/// only the encoding differs (map order, for one). A value type whose
/// `PartialEq` never holds (a `NaN` field, say) is pushed on every write,
/// as every write was before.
///
/// Closures given to [`StateStore::update`] and [`StateStore::try_update`]
/// run under the store's lock, which is what keeps the changes of a key in
/// one order: they must be quick and must not call the store themselves.
pub struct StateStore {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
    watchers: Registry,
    clock: Arc<dyn crate::Clock>,
    keys: KeyRule,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("keys", &self.slots.lock().len())
            .finish()
    }
}

impl StateStore {
    pub(crate) fn new(clock: Arc<dyn crate::Clock>, keys: KeyRule) -> Self {
        StateStore {
            slots: Mutex::new(HashMap::new()),
            watchers: Registry::new(crate::meter::TopicGauges::none()),
            clock,
            keys,
        }
    }

    /// The rule keys are checked against.
    pub fn key_rule(&self) -> &KeyRule {
        &self.keys
    }

    /// A copy of the value under `key`, if it is set and of type `T`.
    pub fn get<T: Clone + Send + Sync + 'static>(&self, key: &str) -> Option<T> {
        self.slots
            .lock()
            .get(key)
            .and_then(|s| s.value.downcast_ref::<T>())
            .cloned()
    }

    /// The version of the value under `key`: 0 when not set, 1 once set,
    /// one more for every write that changed it (writes that change
    /// nothing do not count).
    pub fn version(&self, key: &str) -> u64 {
        self.slots.lock().get(key).map_or(0, |s| s.version)
    }

    /// Sets the value under `key` and, if it differs from the current one,
    /// pushes it to the key's watchers. A bad key is refused and nothing is
    /// stored.
    pub fn set<T: Message + Clone + PartialEq>(
        &self,
        key: &str,
        value: T,
    ) -> Result<Written, Error> {
        self.keys.check(key)?;
        let mut slots = self.slots.lock();
        Ok(self.commit(&mut slots, key, value))
    }

    /// Updates the value under `key` (starting from `T::default()` when
    /// unset or of another type) and, if `f` changed it, pushes the result
    /// to the watchers. Returns the value now under `key` and what the
    /// write did. Updates of one key are applied and pushed in one order,
    /// so every watcher ends with the last value. A bad key is refused
    /// before `f` runs.
    pub fn update<T: Message + Clone + Default + PartialEq>(
        &self,
        key: &str,
        f: impl FnOnce(&mut T),
    ) -> Result<(T, Written), Error> {
        self.try_update(key, |current: Option<&T>| {
            let mut value = current.cloned().unwrap_or_default();
            f(&mut value);
            Ok(value)
        })
    }

    /// Updates the value under `key` unless `f` refuses. `f` sees the
    /// current value (`None` when unset or of another type) and returns the
    /// new one, or an error: then nothing is stored or pushed and the error
    /// is returned. As with [`StateStore::update`], an unchanged value is
    /// not pushed. The check and the write are one step under the store's
    /// lock, so conditional writes do not race:
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use signalbox::{message, Error, ErrorCode, StateStore};
    /// #[derive(Serialize, Deserialize, Clone, PartialEq)]
    /// struct Lobby { owner: String }
    /// message!(Lobby = "LOBBY");
    ///
    /// // Create only if absent: of racing creators, one wins.
    /// fn create(store: &StateStore, key: &str, me: &str) -> Result<(), Error> {
    ///     store.try_update(key, |current: Option<&Lobby>| match current {
    ///         Some(_) => Err(Error::new(ErrorCode::AlreadyExists, "lobby exists")),
    ///         None => Ok(Lobby { owner: me.to_owned() }),
    ///     })?;
    ///     Ok(())
    /// }
    ///
    /// // Owner-only changes.
    /// fn hand_over(store: &StateStore, key: &str, me: &str, to: &str) -> Result<(), Error> {
    ///     store.try_update(key, |current: Option<&Lobby>| {
    ///         let lobby = current.ok_or_else(|| Error::not_found("no such lobby"))?;
    ///         if lobby.owner != me {
    ///             return Err(Error::permission_denied("not the owner"));
    ///         }
    ///         Ok(Lobby { owner: to.to_owned() })
    ///     })?;
    ///     Ok(())
    /// }
    /// # let _ = (create, hand_over);
    /// ```
    pub fn try_update<T: Message + Clone + PartialEq>(
        &self,
        key: &str,
        f: impl FnOnce(Option<&T>) -> Result<T, Error>,
    ) -> Result<(T, Written), Error> {
        self.keys.check(key)?;
        let mut slots = self.slots.lock();
        let current = slots.get(key).and_then(|s| s.value.downcast_ref::<T>());
        let value = f(current)?;
        let written = self.commit(&mut slots, key, value.clone());
        drop(slots);
        Ok((value, written))
    }

    /// Stores `value` under `key` unless it equals the current value, and
    /// pushes it then. Called under the store lock.
    fn commit<T: Message + PartialEq>(
        &self,
        slots: &mut HashMap<Arc<str>, Slot>,
        key: &str,
        value: T,
    ) -> Written {
        if let Some(slot) = slots.get_mut(key) {
            if slot.value.downcast_ref::<T>() == Some(&value) {
                return Written {
                    changed: false,
                    version: slot.version,
                    sent: 0,
                };
            }
            slot.version += 1;
            let sent = self.push(key, &value);
            slot.value = Box::new(value);
            return Written {
                changed: true,
                version: slot.version,
                sent,
            };
        }
        let sent = self.push(key, &value);
        slots.insert(
            Arc::from(key),
            Slot {
                value: Box::new(value),
                version: 1,
            },
        );
        Written {
            changed: true,
            version: 1,
            sent,
        }
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

    /// Removes the value under `key` (watchers are not told). Returns
    /// whether there was one; a bad key is refused.
    pub fn remove(&self, key: &str) -> Result<bool, Error> {
        self.keys.check(key)?;
        Ok(self.slots.lock().remove(key).is_some())
    }

    /// Makes `conn` a watcher of `key` and sends it the current value, if
    /// one of type `T` is set. Watching twice is a no-op. A bad key is
    /// refused. At most [`crate::TopicLimits::max_per_connection`] keys per
    /// connection.
    pub fn watch<T: Message + Clone>(&self, conn: &Conn, key: &str) -> Result<(), Error> {
        let hub = &conn.shared.hub;
        self.keys.check(key)?;
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
