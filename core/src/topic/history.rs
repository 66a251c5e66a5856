//! Topic history: positions, the in-memory history, and the per-subscriber

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use signalbox_codec::{Meta, WireCodec};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Topic history: positions, the in-memory history, and the per-subscriber
/// gate that joins a replay to live delivery with no gap and no duplicate.
///
/// A topic with history (opted in on the hub with
/// [`HubBuilder::history`](crate::HubBuilder::history)) gives every
/// publication a [`Position`]: the topic's epoch and an offset one above
/// the previous publication's. Subscribers receive it in the publication's
/// meta (docs/PROTOCOL.md §8), and a reconnecting client presents the last
/// position it saw to have what it missed replayed.
///
/// The logic here is plain data: no sockets, no runtime. Time is passed in
/// as [`Instant`]s (tokio's, so tests pause and advance it).
///
/// Where a publication sits in its topic's history: the topic's epoch and
/// the publication's offset in it.
///
/// Offsets start at 1 and grow by one per publication. The epoch changes
/// whenever history may have been lost (a restart without persistence, a
/// flushed Redis, a topic whose history expired entirely): positions of
/// different epochs are not comparable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The topic's history generation.
    pub epoch: String,
    /// The publication's offset (0: before the first publication).
    pub offset: u64,
}

impl Position {
    /// A position.
    pub fn new(epoch: impl Into<String>, offset: u64) -> Self {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }
}

pub(crate) use signalbox_codec::vocab::{META_EPOCH, META_OFFSET, META_TOPIC};

/// Adds the topic and position keys to a publication's meta.
pub(crate) fn stamp(meta: &mut Meta, topic: &str, position: &Position) {
    meta.extra
        .insert(META_TOPIC.to_owned(), serde_json::Value::from(topic));
    meta.extra.insert(
        META_OFFSET.to_owned(),
        serde_json::Value::from(position.offset),
    );
    meta.extra.insert(
        META_EPOCH.to_owned(),
        serde_json::Value::from(position.epoch.as_str()),
    );
}

/// How much history a topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryLimits {
    /// Publications kept, newest first. Default 1,000.
    pub max_len: usize,
    /// How long a publication is kept. Default 5 minutes: a client that
    /// was away longer is told its topics were not recovered.
    pub max_age: Duration,
    /// Bytes of live publications held for one subscriber while its replay
    /// goes out (a broker's history, read asynchronously, or a replay
    /// longer than half the subscriber's outbound queue, sent at the pace
    /// it reads). Past it, the subscriber is told "not recovered" and
    /// starts from the live position. Default 1 MiB.
    pub max_pending_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits::DEFAULT
    }
}

impl HistoryLimits {
    /// The defaults: 1,000 publications, 5 minutes, 1 MiB held per
    /// subscriber during a replay.
    pub const DEFAULT: HistoryLimits = HistoryLimits {
        max_len: 1_000,
        max_age: Duration::from_secs(300),
        max_pending_bytes: 1 << 20,
    };

    /// These limits keeping at most `max_len` publications.
    pub const fn with_len(mut self, max_len: usize) -> Self {
        self.max_len = if max_len == 0 { 1 } else { max_len };
        self
    }

    /// These limits keeping publications for `max_age`.
    pub const fn with_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Limits keeping `max_len` publications for `max_age`.
    pub fn new(max_len: usize, max_age: Duration) -> Self {
        HistoryLimits {
            max_len: max_len.max(1),
            max_age,
            ..HistoryLimits::default()
        }
    }
}

/// Which topics a hub rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(String),
    /// Every topic starting with this prefix.
    Prefix(String),
}

impl TopicPattern {
    /// Exactly `topic`.
    pub fn exact(topic: impl Into<String>) -> Self {
        TopicPattern::Exact(topic.into())
    }

    /// Every topic starting with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        TopicPattern::Prefix(prefix.into())
    }

    /// Whether `topic` is covered.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(t) => t == topic,
            TopicPattern::Prefix(p) => topic.starts_with(p.as_str()),
        }
    }
}

/// Where a new subscriber starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// With the next publication.
    #[default]
    Now,
    /// With the `n` latest publications still in history (a joiner's
    /// recent messages), then live.
    Last(usize),
    /// Right after `Position`: everything since is replayed, or the
    /// subscriber is told it could not be.
    After(Position),
}

/// One publication kept in memory: its frames, one per codec it was
/// encoded for (shared with the fan-out, so keeping them copies nothing).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) at: Instant,
    pub(crate) frames: Arc<[(WireCodec, Bytes)]>,
    pub(crate) compress: bool,
}

/// What a replay request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Replay<T> {
    /// Everything after the asked position, in order (maybe nothing).
    Recovered(Vec<T>),
    /// History cannot cover it (another epoch, trimmed, expired).
    NotRecovered,
}

/// Decides what to replay from a history holding `entries` (ascending,
/// offsets of `offset_of`), whose current position is `epoch`/`top`.
///
/// The rule (docs/PROTOCOL.md §8): recovered only if the epochs match, the
/// asked offset is not ahead of the top, and the entries after it run
/// without a hole up to the top.
pub(crate) fn plan<T: Clone>(
    epoch: &str,
    top: u64,
    entries: &[T],
    offset_of: impl Fn(&T) -> u64,
    start: &Start,
) -> Replay<T> {
    match start {
        Start::Now => Replay::Recovered(Vec::new()),
        Start::Last(n) => {
            let from = entries.len().saturating_sub(*n);
            Replay::Recovered(entries[from..].to_vec())
        }
        Start::After(since) => {
            if since.epoch != epoch || since.offset > top {
                return Replay::NotRecovered;
            }
            let missed: Vec<T> = entries
                .iter()
                .filter(|e| offset_of(e) > since.offset)
                .cloned()
                .collect();
            let contiguous = missed
                .iter()
                .enumerate()
                .all(|(i, e)| offset_of(e) == since.offset + 1 + i as u64);
            if contiguous && since.offset + missed.len() as u64 == top {
                Replay::Recovered(missed)
            } else {
                Replay::NotRecovered
            }
        }
    }
}

/// A fresh epoch: random, short, printable.
pub(crate) fn new_epoch() -> String {
    let n = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:012x}", n & 0xffff_ffff_ffff)
}

/// The history of one topic, in memory.
#[derive(Debug)]
pub(crate) struct TopicHistory {
    pub(crate) epoch: String,
    pub(crate) top: u64,
    pub(crate) entries: VecDeque<Entry>,
}

impl TopicHistory {
    fn new() -> Self {
        TopicHistory {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
        }
    }

    /// Drops what is past the limits at `now`.
    pub(crate) fn trim(&mut self, limits: &HistoryLimits, now: Instant) {
        while self.entries.len() > limits.max_len.max(1) {
            self.entries.pop_front();
        }
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > limits.max_age)
        {
            self.entries.pop_front();
        }
    }

    /// The next publication's position.
    pub(crate) fn next_position(&self) -> Position {
        Position::new(self.epoch.clone(), self.top + 1)
    }

    /// Keeps a publication at the next offset.
    pub(crate) fn push(&mut self, entry: Entry) {
        self.top = entry.offset;
        self.entries.push_back(entry);
    }

    /// The current position (offset 0 before the first publication).
    pub(crate) fn position(&self) -> Position {
        Position::new(self.epoch.clone(), self.top)
    }

    /// What to replay for `start` (only the entries replayed are copied).
    pub(crate) fn plan(&mut self, start: &Start) -> Replay<Entry> {
        let entries = self.entries.make_contiguous();
        plan(&self.epoch, self.top, entries, |e| e.offset, start)
    }
}

const SHARDS: usize = 16;

/// One shard of [`MemoryHistory`]: topic → its history.
type HistoryShard = Mutex<HashMap<Arc<str>, Arc<Mutex<TopicHistory>>>>;

/// Every topic's history on this node, sharded by topic name. Each topic
/// has its own lock: publishing to a topic (assigning the offset, keeping
/// the entry and queueing it for every subscriber) and subscribing to it
/// happen under that lock, which is what orders a topic's publications the
/// same way for every subscriber and makes the replay/live seam exact.
pub(crate) struct MemoryHistory {
    shards: Vec<HistoryShard>,
}

impl MemoryHistory {
    pub(crate) fn new() -> Self {
        MemoryHistory {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, topic: &str) -> &HistoryShard {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// The topic's history, created (with a fresh epoch) if it has none.
    pub(crate) fn topic(&self, topic: &str) -> Arc<Mutex<TopicHistory>> {
        let mut shard = self.shard(topic).lock();
        if let Some(history) = shard.get(topic) {
            return history.clone();
        }
        shard
            .entry(Arc::from(topic))
            .or_insert_with(|| Arc::new(Mutex::new(TopicHistory::new())))
            .clone()
    }

    /// Forgets topics whose every entry expired and that nobody holds:
    /// their next publication starts a new epoch (nothing older can be
    /// recovered anyway). Returns how many were forgotten.
    pub(crate) fn sweep(
        &self,
        limits_of: impl Fn(&str) -> Option<HistoryLimits>,
        held: impl Fn(&str) -> bool,
        now: Instant,
    ) -> usize {
        let mut forgotten = 0;
        for shard in &self.shards {
            shard.lock().retain(|topic, history| {
                let Some(limits) = limits_of(topic) else {
                    forgotten += 1;
                    return false;
                };
                let mut h = history.lock();
                h.trim(&limits, now);
                let keep = !h.entries.is_empty() || held(topic);
                if !keep {
                    forgotten += 1;
                }
                keep
            });
        }
        forgotten
    }

    /// Topics with history in memory now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// Where one subscriber of a positioned topic stands: still receiving its
/// replay (live publications wait here), or live.
#[derive(Debug)]
pub(crate) enum Gate {
    /// The replay is being read; live publications are held, in order.
    Pending {
        held: Vec<(u64, Bytes)>,
        bytes: usize,
        /// Set once holding more would pass the limit: the latest offset
        /// that was not held.
        overflowed: Option<u64>,
    },
    /// Live: publications at or past `next` are delivered, older ones were
    /// replayed already.
    Live { next: u64 },
}

impl Gate {
    pub(crate) fn pending() -> Self {
        Gate::Pending {
            held: Vec::new(),
            bytes: 0,
            overflowed: None,
        }
    }

    /// What to do with a live publication at `offset`: returns the frame to
    /// queue now, if any.
    pub(crate) fn admit(&mut self, offset: u64, frame: Bytes, max_pending: usize) -> Option<Bytes> {
        match self {
            Gate::Live { next } => {
                if offset < *next {
                    return None;
                }
                *next = offset + 1;
                Some(frame)
            }
            Gate::Pending {
                held,
                bytes,
                overflowed,
            } => {
                if overflowed.is_some() || *bytes + frame.len() > max_pending {
                    *overflowed = Some(offset);
                    held.clear();
                    *bytes = 0;
                    return None;
                }
                *bytes += frame.len();
                held.push((offset, frame));
                None
            }
        }
    }

    /// Ends the replay: `replayed_to` is the last offset the replay gave
    /// (or the position the subscriber starts after). Returns the held
    /// publications past it, in order — or, when holding overflowed,
    /// nothing and the latest offset the subscriber missed (the caller
    /// reports "not recovered" from there).
    pub(crate) fn go_live(&mut self, replayed_to: u64) -> (Vec<Bytes>, Option<u64>) {
        let previous = std::mem::replace(
            self,
            Gate::Live {
                next: replayed_to + 1,
            },
        );
        match previous {
            Gate::Live { next } => {
                *self = Gate::Live {
                    next: next.max(replayed_to + 1),
                };
                (Vec::new(), None)
            }
            Gate::Pending {
                overflowed: Some(last),
                ..
            } => {
                let last = last.max(replayed_to);
                *self = Gate::Live { next: last + 1 };
                (Vec::new(), Some(last))
            }
            Gate::Pending { held, .. } => {
                let mut next = replayed_to + 1;
                let mut out = Vec::with_capacity(held.len());
                for (offset, frame) in held {
                    if offset >= next {
                        next = offset + 1;
                        out.push(frame);
                    }
                }
                *self = Gate::Live { next };
                (out, None)
            }
        }
    }

    /// The topic's epoch changed under a live subscriber (its history was
    /// lost): the new epoch's offsets start again at 1, and the subscriber
    /// takes them from there. A subscriber still reading its replay is
    /// left as it is.
    pub(crate) fn restart(&mut self) {
        if let Gate::Live { next } = self {
            *next = 1;
        }
    }

    /// The first offset a live subscriber takes next (`None` while pending).
    #[cfg(test)]
    pub(crate) fn next(&self) -> Option<u64> {
        match self {
            Gate::Live { next } => Some(*next),
            Gate::Pending { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: &str, offset: u64) -> Position {
        Position::new(epoch, offset)
    }

    #[test]
    fn plan_recovers_exactly_what_was_missed() {
        let entries: Vec<u64> = (5..=10).collect();
        let id = |e: &u64| *e;
        assert_eq!(
            plan("e", 10, &entries, id, &Start::After(pos("e", 7))),
            Replay::Recovered(vec![8, 9, 10])
        );
        // Nothing missed.
        assert_eq!(
            plan("e", 10, &entries, id, &Start::After(pos("e", 10))),
            Replay::Recovered(vec![])
        );
        // Oldest kept is 5: a client at 4 is covered, one at 3 is not.
        assert_eq!(
            plan("e", 10, &entries, id, &Start::After(pos("e", 4))),
            Replay::Recovered((5..=10).collect())
        );
        assert_eq!(
            plan("e", 10, &entries, id, &Start::After(pos("e", 3))),
            Replay::NotRecovered
        );
        // Another epoch, or a position from the future.
        assert_eq!(
            plan("f", 10, &entries, id, &Start::After(pos("e", 9))),
            Replay::NotRecovered
        );
        assert_eq!(
            plan("e", 10, &entries, id, &Start::After(pos("e", 11))),
            Replay::NotRecovered
        );
        // A hole in the middle is never papered over.
        let holed = vec![5, 6, 8, 9, 10];
        assert_eq!(
            plan("e", 10, &holed, id, &Start::After(pos("e", 5))),
            Replay::NotRecovered
        );
        // Everything expired but the top is where the client was: nothing missed.
        assert_eq!(
            plan("e", 10, &[], id, &Start::After(pos("e", 10))),
            Replay::Recovered(vec![])
        );
        assert_eq!(
            plan("e", 10, &[], id, &Start::After(pos("e", 9))),
            Replay::NotRecovered
        );
        assert_eq!(
            plan("e", 10, &entries, id, &Start::Last(2)),
            Replay::Recovered(vec![9, 10])
        );
        assert_eq!(
            plan("e", 10, &entries, id, &Start::Last(50)),
            Replay::Recovered((5..=10).collect())
        );
    }

    fn entry(offset: u64, at: Instant) -> Entry {
        Entry {
            offset,
            at,
            frames: Arc::from(Vec::new()),
            compress: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn history_trims_by_count_and_age() {
        let limits = HistoryLimits::new(3, Duration::from_secs(10));
        let mut h = TopicHistory::new();
        for _ in 0..5 {
            let p = h.next_position();
            h.push(entry(p.offset, Instant::now()));
            h.trim(&limits, Instant::now());
            tokio::time::advance(Duration::from_secs(4)).await;
        }
        let kept: Vec<u64> = h.entries.iter().map(|e| e.offset).collect();
        assert_eq!(kept, vec![3, 4, 5]);
        assert_eq!(h.position().offset, 5);
        // Entry 3 is 12 s old now, 4 is 8 s, 5 is 4 s.
        h.trim(&limits, Instant::now());
        let kept: Vec<u64> = h.entries.iter().map(|e| e.offset).collect();
        assert_eq!(kept, vec![4, 5]);
        let epoch = h.epoch.clone();
        assert_eq!(
            h.plan(&Start::After(pos(&epoch, 3))).map_offsets(),
            Some(vec![4, 5])
        );
        assert_eq!(h.plan(&Start::After(pos(&epoch, 2))).map_offsets(), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        h.trim(&limits, Instant::now());
        assert!(h.entries.is_empty());
        // The top survives the trim: a client that saw 5 missed nothing.
        assert_eq!(
            h.plan(&Start::After(pos(&epoch, 5))).map_offsets(),
            Some(vec![])
        );
        assert_eq!(h.plan(&Start::After(pos(&epoch, 4))).map_offsets(), None);
    }

    impl Replay<Entry> {
        fn map_offsets(self) -> Option<Vec<u64>> {
            match self {
                Replay::Recovered(v) => Some(v.iter().map(|e| e.offset).collect()),
                Replay::NotRecovered => None,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_forgets_expired_unheld_topics_so_their_epoch_changes() {
        let limits = HistoryLimits::new(10, Duration::from_secs(5));
        let memory = MemoryHistory::new();
        let first = {
            let t = memory.topic("a");
            let mut h = t.lock();
            let p = h.next_position();
            h.push(entry(p.offset, Instant::now()));
            h.epoch.clone()
        };
        memory.topic("b");
        tokio::time::advance(Duration::from_secs(6)).await;
        // "b" is held by a subscriber: kept although empty.
        let forgotten = memory.sweep(|_| Some(limits), |t| t == "b", Instant::now());
        assert_eq!(forgotten, 1);
        assert_eq!(memory.len(), 1);
        let again = memory.topic("a").lock().epoch.clone();
        assert_ne!(first, again);
    }

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn the_gate_holds_live_publications_during_the_replay_and_drops_the_overlap() {
        let mut gate = Gate::pending();
        // Live publications 9..=12 arrive while the replay (up to 10) is read.
        for o in 9..=12u8 {
            assert_eq!(gate.admit(u64::from(o), frame(o), 1024), None);
        }
        let (held, overflowed) = gate.go_live(10);
        assert_eq!(overflowed, None);
        assert_eq!(held, vec![frame(11), frame(12)]);
        assert_eq!(gate.next(), Some(13));
        // Live now: a duplicate is dropped, the next one passes.
        assert_eq!(gate.admit(12, frame(12), 1024), None);
        assert_eq!(gate.admit(13, frame(13), 1024), Some(frame(13)));
    }

    #[test]
    fn a_restarted_gate_takes_a_new_epoch_from_its_first_offset() {
        let mut gate = Gate::Live { next: 6 };
        assert_eq!(gate.admit(1, frame(1), 1024), None);
        gate.restart();
        assert_eq!(gate.admit(1, frame(1), 1024), Some(frame(1)));
        assert_eq!(gate.admit(1, frame(1), 1024), None);
        assert_eq!(gate.next(), Some(2));
        let mut pending = Gate::pending();
        pending.restart();
        assert_eq!(pending.next(), None);
    }

    #[test]
    fn a_gate_that_holds_too_much_reports_overflow() {
        let mut gate = Gate::pending();
        assert_eq!(gate.admit(1, Bytes::from(vec![0; 600]), 1000), None);
        assert_eq!(gate.admit(2, Bytes::from(vec![0; 600]), 1000), None);
        assert_eq!(gate.admit(3, frame(3), 1000), None);
        let (held, overflowed) = gate.go_live(0);
        assert_eq!(overflowed, Some(3));
        assert!(held.is_empty());
        assert_eq!(gate.next(), Some(4));
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        assert!(TopicPattern::exact("a").matches("a"));
        assert!(!TopicPattern::exact("a").matches("ab"));
        assert!(TopicPattern::prefix("room:").matches("room:x"));
        assert!(!TopicPattern::prefix("room:").matches("rooms"));
    }
}
