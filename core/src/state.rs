//! A keyed state store shared by every connection of a hub, whose changes

use crate::config::TopicLimits;
use crate::context::{ConnectionHandle, encode_error};
use crate::error::Error;
use crate::message::Message;
use crate::topic::EncodeCache;
use crate::topic::history::TopicPattern;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use signalbox_codec::{EncodeError, Meta, WireCodec};
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::Notify;

/// The envelope type of [`StateRemoved`].
pub(crate) use signalbox_codec::vocab::STATE_REMOVED as STATE_REMOVED_TYPE;

/// The default capacity of a [`StateChanges`] subscription
/// ([`StateStore::subscribe`]): changes waiting to be received.
pub const DEFAULT_CHANGES_CAPACITY: usize = 256;

/// `$sb:state-removed`: what every watcher of a key receives when
/// [`StateStore::remove`] removes its value (docs/PROTOCOL.md §8.3). The
/// watch goes on: a later write of the key is pushed as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRemoved {
    /// The key whose value was removed.
    pub key: String,
}
crate::message!(StateRemoved = STATE_REMOVED_TYPE);

struct Slot {
    value: Arc<dyn Any + Send + Sync>,
    version: u64,
}

/// A value made ready to encode for a watcher: the value itself, its
/// projection, or a removal notice.
trait Render: Send + Sync {
    fn render(&self, codec: &WireCodec, meta: &Meta) -> Result<Bytes, EncodeError>;
}

impl<M: Message> Render for M {
    fn render(&self, codec: &WireCodec, meta: &Meta) -> Result<Bytes, EncodeError> {
        self.encode(codec, meta, true)
    }
}

/// A projection with its value type erased: `None` when the value is not
/// of the projection's type.
trait Project: Send + Sync {
    fn project(&self, value: &(dyn Any + Send + Sync)) -> Option<Box<dyn Render>>;
}

struct ProjectFn<T, F> {
    f: F,
    value: PhantomData<fn(&T)>,
}

impl<T, P, F> Project for ProjectFn<T, F>
where
    T: 'static,
    P: Message,
    F: Fn(&T) -> P + Send + Sync,
{
    fn project(&self, value: &(dyn Any + Send + Sync)) -> Option<Box<dyn Render>> {
        let value = value.downcast_ref::<T>()?;
        Some(Box::new((self.f)(value)))
    }
}

/// What a watcher receives instead of the whole value: a message derived
/// from it ([`StateStore::watch_with`]). The guide's rooms store every
/// member and push `{userCount, latestMessages}`
/// (`examples/src/guide/state.rs`).
///
/// Make one projection and clone it for every watch (a clone is a
/// reference count): a change is then projected once for all the watchers
/// sharing it and encoded once per codec among them. Watches given
/// projections made separately each project and encode on their own.
pub struct Projection<T> {
    project: Arc<dyn Project>,
    value: PhantomData<fn(&T)>,
}

impl<T> Clone for Projection<T> {
    fn clone(&self) -> Self {
        Projection {
            project: self.project.clone(),
            value: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Projection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("of", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: Send + Sync + 'static> Projection<T> {
    /// A projection pushing `f(value)`, a message of its own type, to the
    /// watchers. `f` runs under the store's lock, once per change for all
    /// the watchers sharing this projection: keep it quick, and do not call
    /// the store from it.
    pub fn new<P, F>(f: F) -> Self
    where
        P: Message,
        F: Fn(&T) -> P + Send + Sync + 'static,
    {
        Projection {
            project: Arc::new(ProjectFn {
                f,
                value: PhantomData,
            }),
            value: PhantomData,
        }
    }
}

/// One connection watching one key, and how the value is rendered for it.
struct Watch {
    conn: ConnectionHandle,
    /// `None`: the whole value.
    view: Option<Arc<dyn Project>>,
}

/// One projection's rendering of a change, while it is delivered.
struct ViewFrames {
    /// The projection's identity (its address).
    id: usize,
    /// `None`: the value is not of the projection's type.
    rendered: Option<Box<dyn Render>>,
    /// The rendering encoded, per codec.
    frames: EncodeCache,
}

/// What the store's lock guards: values, and who watches which key.
#[derive(Default)]
struct Inner {
    slots: HashMap<Arc<str>, Slot>,
    /// Key → connection id → watch.
    watches: HashMap<Arc<str>, HashMap<Arc<str>, Watch>>,
}

/// One change, as a server-side subscriber ([`StateStore::subscribe`])
/// receives it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StateChange<T> {
    /// The key that changed.
    pub key: Arc<str>,
    /// The key's version after the change; for a removal, the version the
    /// removed value had.
    pub version: u64,
    /// The new value; `None` when [`StateStore::remove`] removed it.
    pub value: Option<Arc<T>>,
    /// Changes this subscription lost since the one it received before:
    /// replaced by a later change of the same key while waiting, or dropped
    /// because the subscription was full. 0 for a subscriber that keeps up.
    pub skipped: u64,
}

/// A change offered to a subscriber, value type erased.
trait Feed: Send + Sync {
    fn offer(
        &self,
        key: &Arc<str>,
        version: u64,
        value: &Arc<dyn Any + Send + Sync>,
        removed: bool,
    );
    fn close(&self);
}

struct QueueState<T> {
    pending: VecDeque<StateChange<T>>,
    skipped: u64,
    closed: bool,
}

/// A subscriber's bounded queue of changes.
struct ChangeQueue<T> {
    state: Mutex<QueueState<T>>,
    ready: Notify,
    capacity: usize,
}

impl<T: Send + Sync + 'static> Feed for ChangeQueue<T> {
    fn offer(
        &self,
        key: &Arc<str>,
        version: u64,
        value: &Arc<dyn Any + Send + Sync>,
        removed: bool,
    ) {
        let Ok(value) = Arc::clone(value).downcast::<T>() else {
            return;
        };
        let change = StateChange {
            key: key.clone(),
            version,
            value: (!removed).then_some(value),
            skipped: 0,
        };
        {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            // A state is a value: a waiting change of the same key is
            // superseded by this one, so a slow subscriber lags in values,
            // not in memory.
            if let Some(at) = state.pending.iter().position(|c| c.key == *key) {
                state.pending.remove(at);
                state.skipped += 1;
            } else if state.pending.len() >= self.capacity {
                state.pending.pop_front();
                state.skipped += 1;
            }
            state.pending.push_back(change);
        }
        self.ready.notify_one();
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
    }
}

struct Subscriber {
    id: u64,
    pattern: TopicPattern,
    feed: Arc<dyn Feed>,
}

type Subscribers = Mutex<Vec<Subscriber>>;

/// A server-side subscription to the changes of values of type `T` under
/// the keys of a pattern ([`StateStore::subscribe`]). Dropping it (or
/// [`StateChanges::unsubscribe`]) ends it.
///
/// It is bounded: at most its capacity of changes wait to be received
/// ([`DEFAULT_CHANGES_CAPACITY`] unless given to
/// [`StateStore::subscribe_with`]). A subscriber that keeps up receives
/// every change, in the order the store made them. One that falls behind
/// loses intermediate values, never the latest: a change waiting to be
/// received is replaced by a later change of the same key, and when changes
/// of more keys than the capacity wait, the oldest is dropped.
/// [`StateChange::skipped`] counts what was lost; after a drop a subscriber
/// that must know every key's value reads it again with [`StateStore::get`].
/// Writers never wait for a subscriber.
pub struct StateChanges<T> {
    queue: Arc<ChangeQueue<T>>,
    subscribers: Weak<Subscribers>,
    id: u64,
}

impl<T> std::fmt::Debug for StateChanges<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateChanges")
            .field("id", &self.id)
            .field("capacity", &self.queue.capacity)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> StateChanges<T> {
    /// The next change, waiting for one; `None` once the store is gone
    /// (its hub dropped) and every change was received.
    pub async fn recv(&mut self) -> Option<StateChange<T>> {
        loop {
            {
                let mut state = self.queue.state.lock();
                if let Some(change) = Self::take(&mut state) {
                    return Some(change);
                }
                if state.closed {
                    return None;
                }
            }
            self.queue.ready.notified().await;
        }
    }

    /// The next change if one is waiting.
    pub fn try_recv(&mut self) -> Option<StateChange<T>> {
        Self::take(&mut self.queue.state.lock())
    }

    /// Changes waiting to be received.
    pub fn pending(&self) -> usize {
        self.queue.state.lock().pending.len()
    }

    /// Ends the subscription (as dropping it does).
    pub fn unsubscribe(self) {}

    /// The subscription as a stream of changes.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = StateChange<T>> + Send {
        futures_util::stream::unfold(self, |mut changes| async move {
            let change = changes.recv().await?;
            Some((change, changes))
        })
    }

    fn take(state: &mut QueueState<T>) -> Option<StateChange<T>> {
        let mut change = state.pending.pop_front()?;
        change.skipped = std::mem::take(&mut state.skipped);
        Some(change)
    }
}

impl<T> Drop for StateChanges<T> {
    fn drop(&mut self) {
        if let Some(subscribers) = self.subscribers.upgrade() {
            subscribers.lock().retain(|s| s.id != self.id);
        }
    }
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

/// A keyed state store shared by every connection of a hub, whose changes
/// are pushed to the connections watching a key (a room's state, pushed to
/// its members as it changes: `examples/src/guide/state.rs`).
///
/// Values are [`Message`]s: a watcher receives the new value as a message
/// of its type whenever it changes, and the current value when it starts
/// watching — or, watching with a [`Projection`], a message derived from
/// the value (a room's `{userCount, latestMessages}` rather than the whole
/// room). [`StateStore::remove`] tells the watchers with [`StateRemoved`]
/// (`$sb:state-removed`, docs/PROTOCOL.md §8.3). Watches end when the
/// connection closes. Server code follows changes with
/// [`StateStore::subscribe`], a bounded subscription ([`StateChanges`])
/// ended by dropping it. The store is local to one node; across nodes,
/// publish changes through topics.
///
/// Keys follow one [`KeyRule`], checked by every call that takes a key
/// ([`StateStore::set`], [`StateStore::update`], [`StateStore::try_update`],
/// [`StateStore::remove`], [`StateStore::watch`], [`StateStore::watch_with`]),
/// so a key a handler can write is a key it can watch. A write that leaves
/// the value equal to what it was is no change: no new version, nothing
/// pushed.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use signalbox::{message, Ctx, Router};
///
/// #[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
/// struct RoomState { members: Vec<String> }
/// message!(RoomState = "ROOM_STATE");
///
/// #[derive(Serialize, Deserialize)]
/// struct Enter { room: String }
/// message!(Enter = "ENTER");
///
/// let router = Router::new().on(|ctx: Ctx<Enter>| async move {
///     let key = format!("room:{}", ctx.payload().room);
///     ctx.store().watch::<RoomState>(&ctx, &key)?;
///     let me = ctx.id().to_owned();
///     ctx.store().update(&key, |s: &mut RoomState| s.members.push(me))?;
///     Ok(())
/// });
/// # let _ = router;
/// ```
///
/// Typed values under string keys, with watchers per key and server-side
/// subscribers.
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
/// A change reaches three kinds of listeners, all under the store's lock
/// and without waiting (docs/ARCHITECTURE.md, "State-store changes are
/// pushed under the store lock"): connections watching the key, each with
/// the whole value ([`StateStore::watch`]) or a [`Projection`] of it
/// ([`StateStore::watch_with`]); server-side subscribers of the key's
/// pattern ([`StateStore::subscribe`]). [`StateStore::remove`] tells them
/// too: watchers receive [`StateRemoved`], subscribers a [`StateChange`]
/// without a value.
///
/// Closures given to [`StateStore::update`] and [`StateStore::try_update`]
/// run under the store's lock, which is what keeps the changes of a key in
/// one order: they must be quick and must not call the store themselves.
pub struct StateStore {
    inner: Mutex<Inner>,
    subscribers: Arc<Subscribers>,
    next_subscriber: AtomicU64,
    clock: Arc<dyn crate::Clock>,
    keys: KeyRule,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("keys", &self.inner.lock().slots.len())
            .field("subscribers", &self.subscribers.lock().len())
            .finish()
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        for subscriber in self.subscribers.lock().drain(..) {
            subscriber.feed.close();
        }
    }
}

impl StateStore {
    pub(crate) fn new(clock: Arc<dyn crate::Clock>, keys: KeyRule) -> Self {
        StateStore {
            inner: Mutex::new(Inner::default()),
            subscribers: Arc::new(Mutex::new(Vec::new())),
            next_subscriber: AtomicU64::new(1),
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
        self.inner
            .lock()
            .slots
            .get(key)
            .and_then(|s| s.value.downcast_ref::<T>())
            .cloned()
    }

    /// The version of the value under `key`: 0 when not set, 1 once set,
    /// one more for every write that changed it (writes that change
    /// nothing do not count). A removed key starts again from 0.
    pub fn version(&self, key: &str) -> u64 {
        self.inner.lock().slots.get(key).map_or(0, |s| s.version)
    }

    /// Sets the value under `key` and, if it differs from the current one,
    /// pushes it to the key's watchers and subscribers. A bad key is
    /// refused and nothing is stored.
    pub fn set<T: Message + Clone + PartialEq>(
        &self,
        key: &str,
        value: T,
    ) -> Result<Written, Error> {
        self.keys.check(key)?;
        let mut inner = self.inner.lock();
        Ok(self.commit(&mut inner, key, value))
    }

    /// Updates the value under `key` (starting from `T::default()` when
    /// unset or of another type) and, if `f` changed it, pushes the result
    /// to the watchers and subscribers. Returns the value now under `key`
    /// and what the write did. Updates of one key are applied and pushed in
    /// one order, so every watcher ends with the last value. A bad key is
    /// refused before `f` runs.
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
        let mut inner = self.inner.lock();
        let current = inner
            .slots
            .get(key)
            .and_then(|s| s.value.downcast_ref::<T>());
        let value = f(current)?;
        let written = self.commit(&mut inner, key, value.clone());
        drop(inner);
        Ok((value, written))
    }

    /// Stores `value` under `key` unless it equals the current value, and
    /// pushes it then. Called under the store lock.
    fn commit<T: Message + PartialEq>(&self, inner: &mut Inner, key: &str, value: T) -> Written {
        let Inner { slots, watches } = inner;
        let (key, version) = match slots.get_key_value(key) {
            Some((key, slot)) => {
                if slot.value.downcast_ref::<T>() == Some(&value) {
                    return Written {
                        changed: false,
                        version: slot.version,
                        sent: 0,
                    };
                }
                (key.clone(), slot.version + 1)
            }
            None => (Arc::from(key), 1),
        };
        let sent = self.deliver(watches.get(&key), &value, Some(&value));
        let value: Arc<dyn Any + Send + Sync> = Arc::new(value);
        self.offer(&key, version, &value, false);
        slots.insert(key, Slot { value, version });
        Written {
            changed: true,
            version,
            sent,
        }
    }

    /// Queues the change for every watch of a key: `whole` for the watches
    /// of the whole value, the projection of `value` for the others (those
    /// whose projection is of another type are skipped; with no `value`,
    /// every watch gets `whole`). Each projection runs once and each
    /// rendering is encoded once per codec. Pushing never waits, so callers
    /// do it under the store lock: that is what keeps concurrent changes of
    /// a key in one order for every watcher. Returns how many it was queued
    /// for.
    fn deliver(
        &self,
        watches: Option<&HashMap<Arc<str>, Watch>>,
        whole: &dyn Render,
        value: Option<&(dyn Any + Send + Sync)>,
    ) -> usize {
        let Some(watches) = watches else {
            return 0;
        };
        let meta = Meta {
            timestamp: Some(self.clock.now_ms()),
            ..Meta::default()
        };
        let mut views: Vec<ViewFrames> = Vec::new();
        let mut whole_frames = EncodeCache::default();
        let mut sent = 0;
        for watch in watches.values() {
            let codec = watch.conn.codec();
            let frame = match (&watch.view, value) {
                (Some(project), Some(value)) => {
                    let id = Arc::as_ptr(project).cast::<()>() as usize;
                    let at = match views.iter().position(|v| v.id == id) {
                        Some(at) => at,
                        None => {
                            views.push(ViewFrames {
                                id,
                                rendered: project.project(value),
                                frames: EncodeCache::default(),
                            });
                            views.len() - 1
                        }
                    };
                    let ViewFrames {
                        rendered, frames, ..
                    } = &mut views[at];
                    let Some(rendered) = rendered else {
                        continue;
                    };
                    frames.frame_for(codec, &|c| rendered.render(c, &meta))
                }
                _ => whole_frames.frame_for(codec, &|c| whole.render(c, &meta)),
            };
            if let Some(frame) = frame
                && watch.conn.push(frame).is_ok()
            {
                sent += 1;
            }
        }
        sent
    }

    /// Offers a change to the subscribers whose pattern covers `key`.
    /// Called under the store lock, so they see one order too.
    fn offer(
        &self,
        key: &Arc<str>,
        version: u64,
        value: &Arc<dyn Any + Send + Sync>,
        removed: bool,
    ) {
        for subscriber in self.subscribers.lock().iter() {
            if subscriber.pattern.matches(key) {
                subscriber.feed.offer(key, version, value, removed);
            }
        }
    }

    /// Removes the value under `key`. Its watchers receive
    /// [`StateRemoved`] (`$sb:state-removed`, docs/PROTOCOL.md §8.3) and
    /// keep watching: a later write is pushed to them as usual. Its
    /// subscribers receive a [`StateChange`] without a value. Returns
    /// whether there was a value; a bad key is refused.
    pub fn remove(&self, key: &str) -> Result<bool, Error> {
        self.keys.check(key)?;
        let mut inner = self.inner.lock();
        let Some((key, slot)) = inner.slots.remove_entry(key) else {
            return Ok(false);
        };
        let notice = StateRemoved {
            key: key.to_string(),
        };
        self.deliver(inner.watches.get(&key), &notice, None);
        self.offer(&key, slot.version, &slot.value, true);
        Ok(true)
    }

    /// Makes `conn` a watcher of `key` and sends it the current value, if
    /// one of type `T` is set; every change is then pushed to it whole. A
    /// connection watches a key once: watching it again, with or without a
    /// projection, is a no-op. A bad key is refused. At most
    /// [`crate::TopicLimits::max_per_connection`] keys per connection.
    pub fn watch<T: Message + Clone>(
        &self,
        conn: &ConnectionHandle,
        key: &str,
    ) -> Result<(), Error> {
        self.start_watch::<T>(conn, key, None)
    }

    /// Makes `conn` a watcher of `key` that receives `projection` of the
    /// value rather than the value: now, if a value of type `T` is set, and
    /// at every change to a value of type `T` (a value of another type
    /// under the key is not pushed to it). Otherwise as
    /// [`StateStore::watch`]; removal is told as [`StateRemoved`].
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use signalbox::Projection;
    /// use signalbox::{message, Ctx, Router};
    /// use std::collections::BTreeMap;
    ///
    /// #[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
    /// struct Room { members: BTreeMap<String, String> }
    /// message!(Room = "ROOM");
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct RoomSize { #[serde(rename = "userCount")] user_count: usize }
    /// message!(RoomSize = "ROOM_SIZE");
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Enter { room: String, name: String }
    /// message!(Enter = "ENTER");
    ///
    /// let size = Projection::new(|room: &Room| RoomSize { user_count: room.members.len() });
    /// let router = Router::new().on(move |ctx: Ctx<Enter>| {
    ///     let size = size.clone();
    ///     async move {
    ///         let key = format!("room:{}", ctx.payload().room);
    ///         ctx.store().watch_with(&ctx, &key, &size)?;
    ///         let (me, name) = (ctx.id().to_owned(), ctx.payload().name.clone());
    ///         ctx.store().update(&key, |r: &mut Room| { r.members.insert(me, name); })?;
    ///         Ok(())
    ///     }
    /// });
    /// # let _ = router;
    /// ```
    pub fn watch_with<T: Message>(
        &self,
        conn: &ConnectionHandle,
        key: &str,
        projection: &Projection<T>,
    ) -> Result<(), Error> {
        self.start_watch::<T>(conn, key, Some(projection.project.clone()))
    }

    fn start_watch<T: Message>(
        &self,
        conn: &ConnectionHandle,
        key: &str,
        view: Option<Arc<dyn Project>>,
    ) -> Result<(), Error> {
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
        // Under the store lock, so no change slips between the snapshot
        // and the registration.
        let mut inner = self.inner.lock();
        let watch = Watch {
            conn: conn.clone(),
            view: view.clone(),
        };
        inner
            .watches
            .entry(key.clone())
            .or_default()
            .insert(conn.shared.id.clone(), watch);
        if conn.is_closed() {
            drop(inner);
            self.unwatch(conn, &key);
            return Err(Error::unavailable("connection closed"));
        }
        let Some(value) = inner
            .slots
            .get(&key)
            .and_then(|s| s.value.downcast_ref::<T>())
        else {
            return Ok(());
        };
        match view {
            None => conn.send(value),
            Some(project) => match project.project(value) {
                Some(rendered) => {
                    let meta = Meta {
                        timestamp: Some(self.clock.now_ms()),
                        ..Meta::default()
                    };
                    let frame = rendered.render(conn.codec(), &meta).map_err(encode_error)?;
                    conn.push(frame)
                }
                None => Ok(()),
            },
        }
    }

    /// Stops `conn` watching `key`.
    pub fn unwatch(&self, conn: &ConnectionHandle, key: &str) -> bool {
        if !conn.shared.watching.lock().remove(key) {
            return false;
        }
        self.remove_watch(key, conn.id())
    }

    pub(crate) fn forget_watcher(&self, key: &str, conn_id: &str) {
        self.remove_watch(key, conn_id);
    }

    fn remove_watch(&self, key: &str, conn_id: &str) -> bool {
        let mut inner = self.inner.lock();
        let Some(watches) = inner.watches.get_mut(key) else {
            return false;
        };
        let removed = watches.remove(conn_id).is_some();
        if watches.is_empty() {
            inner.watches.remove(key);
        }
        removed
    }

    /// Connections watching `key` on this node.
    pub fn watchers(&self, key: &str) -> usize {
        self.inner.lock().watches.get(key).map_or(0, HashMap::len)
    }

    /// Subscribes to the changes of values of type `T` under the keys
    /// `pattern` covers, from now on: every write that changes such a
    /// value, and every removal of one. Bounded by
    /// [`DEFAULT_CHANGES_CAPACITY`]; see [`StateChanges`] for what a slow
    /// subscriber loses. To start from the current value, subscribe, then
    /// [`StateStore::get`] it: a change whose version is not above the one
    /// read is already in the value read.
    ///
    /// ```
    /// # async fn run(hub: signalbox::Hub) {
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Clone, Default, PartialEq, Debug)]
    /// # struct Room { members: Vec<String> }
    /// # signalbox::message!(Room = "ROOM");
    /// use signalbox::TopicPattern;
    ///
    /// let mut rooms = hub.store().subscribe::<Room>(TopicPattern::prefix("room:"));
    /// tokio::spawn(async move {
    ///     while let Some(change) = rooms.recv().await {
    ///         match change.value {
    ///             Some(room) => println!("{} v{}: {room:?}", change.key, change.version),
    ///             None => println!("{} removed", change.key),
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    pub fn subscribe<T: Send + Sync + 'static>(&self, pattern: TopicPattern) -> StateChanges<T> {
        self.subscribe_with(pattern, DEFAULT_CHANGES_CAPACITY)
    }

    /// [`StateStore::subscribe`] with at most `capacity` changes waiting
    /// (at least 1).
    pub fn subscribe_with<T: Send + Sync + 'static>(
        &self,
        pattern: TopicPattern,
        capacity: usize,
    ) -> StateChanges<T> {
        let capacity = capacity.max(1);
        let queue = Arc::new(ChangeQueue {
            state: Mutex::new(QueueState {
                pending: VecDeque::new(),
                skipped: 0,
                closed: false,
            }),
            ready: Notify::new(),
            capacity,
        });
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.subscribers.lock().push(Subscriber {
            id,
            pattern,
            feed: queue.clone(),
        });
        StateChanges {
            queue,
            subscribers: Arc::downgrade(&self.subscribers),
            id,
        }
    }

    /// Server-side subscriptions ([`StateStore::subscribe`]) now open.
    pub fn subscriptions(&self) -> usize {
        self.subscribers.lock().len()
    }
}
