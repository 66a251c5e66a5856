//! The per-connection outbound queue: bounded by the bytes it holds and by
//! a frame count, with a policy for when full.

use super::Frame;
use crate::meter::{QueueGauge, Stamp};
use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::Notify;

/// What a full outbound queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Close the connection as a slow consumer (WS 1008). The default: a
    /// client that cannot keep up learns it, instead of silently missing
    /// messages.
    #[default]
    Close,
    /// Drop the oldest queued messages until the queue is under its bound
    /// (one, unless big ones are queued behind small), and count each.
    DropOldest,
    /// Drop the new message, and count it.
    DropNewest,
}

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    /// Queued.
    Queued,
    /// Queued, after dropping the oldest queued message (or as many as it
    /// took to get under the bound).
    DroppedOldest,
    /// Not queued: the queue was full and the policy drops new messages.
    DroppedNewest,
    /// Not queued: the queue was full and the connection is now closing.
    Overflow,
    /// Not queued: the connection is closed or closing.
    Closed,
}

/// How much one connection's outbound queue may hold: a byte budget, and
/// a ceiling on the number of frames as a secondary guard (tiny frames cost
/// a slot each whatever their size).
///
/// The queue takes a frame while what it already holds is under both
/// bounds: the bytes waiting are what says whether the peer reads, not the
/// size of the frame that comes next. It therefore holds at most `bytes`
/// plus one frame, and a frame larger than the whole budget still goes out
/// when the queue has room (in particular when it is empty) — one more
/// frame in a queue at its budget meets the overflow policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundBound {
    /// Encoded bytes (the frames' lengths; bookkeeping not counted).
    pub bytes: usize,
    /// Frames.
    pub frames: usize,
}

impl OutboundBound {
    /// A bound of `bytes` and `frames` (each at least 1).
    pub fn new(bytes: usize, frames: usize) -> Self {
        OutboundBound {
            bytes: bytes.max(1),
            frames: frames.max(1),
        }
    }

    /// Half of each bound (at least 1): where a connection stops taking
    /// messages from its peer (docs/ARCHITECTURE.md, concurrency rules).
    pub fn half(self) -> Self {
        OutboundBound::new(self.bytes / 2, self.frames / 2)
    }
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Frame>,
    /// When each queued frame's publish started (with the `metrics`
    /// feature; empty without it), in step with `frames`.
    stamps: VecDeque<Stamp>,
    /// The sum of the queued frames' lengths.
    bytes: usize,
    closed: bool,
    /// While the writer's batching window is open, what the queue must
    /// hold before a push wakes it ([`OutboundQueue::open_window`]).
    window: Option<OutboundBound>,
    dropped: u64,
    /// Bytes queued, summed over every connection's queue.
    gauge: QueueGauge,
}

impl State {
    /// Whether what is queued is under `bound` (bytes and frames).
    fn below(&self, bound: OutboundBound) -> bool {
        self.bytes < bound.bytes && self.frames.len() < bound.frames
    }

    fn push_back(&mut self, frame: Frame, stamp: Stamp) {
        self.bytes += frame.len();
        self.gauge.add(frame.len());
        self.frames.push_back(frame);
        self.stamps.push_back(stamp);
    }

    fn pop_front(&mut self) -> Option<Frame> {
        let frame = self.frames.pop_front()?;
        self.stamps.pop_front();
        self.bytes -= frame.len();
        self.gauge.sub(frame.len());
        Some(frame)
    }

    /// Moves every frame (and its stamp) out. Into an empty `batch` the
    /// queue's storage itself moves, so an idle queue holds no allocation
    /// (a connection at rest costs less memory; the writer drops the batch
    /// once written).
    fn drain(&mut self, batch: &mut Vec<Frame>, stamps: Option<&mut Vec<Stamp>>) {
        take_into(&mut self.frames, batch);
        match stamps {
            Some(stamps) => take_into(&mut self.stamps, stamps),
            None => self.stamps = VecDeque::new(),
        }
        self.gauge.sub(self.bytes);
        self.bytes = 0;
    }
}

/// Moves everything in `from` to the end of `to`, leaving `from` without
/// storage: into an empty `to`, the storage moves with it.
fn take_into<T>(from: &mut VecDeque<T>, to: &mut Vec<T>) {
    let taken = std::mem::take(from);
    if to.is_empty() {
        *to = Vec::from(taken);
    } else {
        to.extend(taken);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Frames never written (a drain timeout, a slow consumer) leave
        // the gauge with the queue.
        self.gauge.sub(self.bytes);
    }
}

/// A bounded single-consumer queue of encoded frames, bounded by the bytes
/// it holds and by a frame count ([`OutboundBound`]).
///
/// Producers (handlers, publishers on any task) push without waiting; the
/// connection's writer takes everything queued at once and writes it with
/// one flush. The lock is held only to move frames in or out (and to add
/// or subtract their lengths).
#[derive(Debug)]
pub(crate) struct OutboundQueue {
    state: Mutex<State>,
    bound: OutboundBound,
    policy: OverflowPolicy,
    ready: Notify,
    drained: Notify,
}

impl OutboundQueue {
    /// A queue holding what `bound` allows.
    pub fn new(bound: OutboundBound, policy: OverflowPolicy) -> Self {
        OutboundQueue {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                stamps: VecDeque::new(),
                bytes: 0,
                closed: false,
                window: None,
                dropped: 0,
                gauge: QueueGauge::new(),
            }),
            bound: OutboundBound::new(bound.bytes, bound.frames),
            policy,
            ready: Notify::new(),
            drained: Notify::new(),
        }
    }

    #[cfg(test)]
    /// Queues a frame, applying the overflow policy when the queue is at
    /// its bound (see [`OutboundBound`]).
    pub fn push(&self, frame: impl Into<Frame>) -> PushOutcome {
        self.push_stamped(frame.into(), Stamp::none())
    }

    /// [`OutboundQueue::push`] for a frame a publish queued at `stamp`.
    ///
    /// Wakes the writer, unless its batching window is open and the queue
    /// still holds less than the window's cut: then the window's end wakes
    /// it, and each push costs no wake-up.
    pub(crate) fn push_stamped(&self, frame: Frame, stamp: Stamp) -> PushOutcome {
        let (outcome, wake) = {
            let mut state = self.state.lock();
            if state.closed {
                return PushOutcome::Closed;
            }
            let outcome = if state.below(self.bound) {
                state.push_back(frame, stamp);
                PushOutcome::Queued
            } else {
                match self.policy {
                    OverflowPolicy::Close => {
                        state.closed = true;
                        PushOutcome::Overflow
                    }
                    OverflowPolicy::DropOldest => {
                        // As many as it takes to get under the bound: a
                        // big frame queued may be worth many small ones.
                        while !state.below(self.bound) && state.pop_front().is_some() {
                            state.dropped += 1;
                        }
                        state.push_back(frame, stamp);
                        PushOutcome::DroppedOldest
                    }
                    OverflowPolicy::DropNewest => {
                        state.dropped += 1;
                        return PushOutcome::DroppedNewest;
                    }
                }
            };
            let wake = state.closed || state.window.is_none_or(|cut| !state.below(cut));
            (outcome, wake)
        };
        if wake {
            self.ready.notify_one();
        }
        outcome
    }

    #[cfg(test)]
    /// Moves every queued frame into `batch`. Returns `false` once the queue
    /// is closed and empty.
    pub fn drain_into(&self, batch: &mut Vec<Frame>) -> bool {
        self.drain_stamped(batch, None)
    }

    /// [`OutboundQueue::drain_into`], moving the frames' publish stamps
    /// into `stamps` too.
    pub(crate) fn drain_stamped(
        &self,
        batch: &mut Vec<Frame>,
        stamps: Option<&mut Vec<Stamp>>,
    ) -> bool {
        let open = {
            let mut state = self.state.lock();
            state.drain(batch, stamps);
            state.window = None;
            !(state.closed && batch.is_empty())
        };
        self.drained.notify_waiters();
        open
    }

    /// Whether the queue holds less than `bound` (bytes and frames), or is
    /// closed.
    pub fn is_below(&self, bound: OutboundBound) -> bool {
        let state = self.state.lock();
        state.closed || state.below(bound)
    }

    /// Opens the writer's batching window ([`crate::Batching`]) if it
    /// should gather: something is queued, the queue is open, and it
    /// holds less than `cut` (bytes and frames). Until the next drain,
    /// pushes wake the writer only once the queue holds `cut` (or closes).
    /// Returns whether the window opened.
    pub fn open_window(&self, cut: OutboundBound) -> bool {
        let mut state = self.state.lock();
        let open = !state.closed && !state.frames.is_empty() && state.below(cut);
        if open {
            state.window = Some(cut);
        }
        open
    }

    /// Whether the open batching window should go on gathering: the
    /// queue is open and holds less than `cut`.
    pub fn gathering(&self, cut: OutboundBound) -> bool {
        let state = self.state.lock();
        !state.closed && state.below(cut)
    }

    /// Waits until the queue holds less than `bound` (bytes and frames), or
    /// is closed.
    pub async fn room_below(&self, bound: OutboundBound) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a drain in between is seen.
            drained.as_mut().enable();
            if self.is_below(bound) {
                return;
            }
            drained.await;
        }
    }

    /// Waits until something is pushed or the queue closes.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Stops accepting frames; those already queued can still be drained.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
        self.drained.notify_waiters();
    }

    #[cfg(test)]
    /// Whether the queue stopped accepting frames.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.state.lock().frames.len()
    }

    /// Bytes queued now (the sum of the queued frames' lengths).
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Frames dropped so far by the drop policies.
    pub fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }

    /// The configured bound.
    pub fn bound(&self) -> OutboundBound {
        self.bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::Duration;

    /// A one-byte frame holding `n`.
    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    /// A frame of `len` bytes, each `n`.
    fn sized(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }

    /// A bound of `frames` frames and a byte budget that never binds first.
    fn frames(frames: usize) -> OutboundBound {
        OutboundBound::new(1 << 20, frames)
    }

    /// A bound of `bytes` bytes and a frame ceiling that never binds first.
    fn bytes(bytes: usize) -> OutboundBound {
        OutboundBound::new(bytes, 1 << 20)
    }

    /// The first byte of each drained frame.
    fn drain(q: &OutboundQueue) -> Vec<u8> {
        let mut batch = Vec::new();
        q.drain_into(&mut batch);
        batch.iter().map(|f| f.bytes()[0]).collect()
    }

    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn close_policy_closes_on_overflow_and_keeps_what_was_queued() {
        let q = OutboundQueue::new(frames(2), OverflowPolicy::Close);
        assert_eq!(q.push(frame(1)), PushOutcome::Queued);
        assert_eq!(q.push(frame(2)), PushOutcome::Queued);
        assert_eq!(q.push(frame(3)), PushOutcome::Overflow);
        assert!(q.is_closed());
        assert_eq!(q.push(frame(4)), PushOutcome::Closed);
        assert_eq!(drain(&q), vec![1, 2]);
        let mut batch = Vec::new();
        assert!(!q.drain_into(&mut batch));
    }

    #[test]
    fn bytes_are_added_on_push_and_taken_away_on_drain() {
        let q = OutboundQueue::new(bytes(1000), OverflowPolicy::Close);
        assert_eq!((q.len(), q.bytes()), (0, 0));
        q.push(sized(1, 10));
        q.push(sized(2, 20));
        q.push(sized(3, 30));
        assert_eq!((q.len(), q.bytes()), (3, 60));
        assert_eq!(drain(&q), vec![1, 2, 3]);
        assert_eq!((q.len(), q.bytes()), (0, 0));
        q.push(sized(4, 5));
        assert_eq!(q.bytes(), 5);
    }

    #[test]
    fn the_byte_budget_binds_before_the_frame_ceiling() {
        let q = OutboundQueue::new(OutboundBound::new(100, 1000), OverflowPolicy::Close);
        // Taken while what is queued is under the budget: 0, 40, 80 bytes.
        for n in 1..=3 {
            assert_eq!(q.push(sized(n, 40)), PushOutcome::Queued, "frame {n}");
        }
        assert_eq!(q.bytes(), 120, "at most the budget plus one frame");
        // At the budget: one more byte meets the policy, 4 frames of 1,000.
        assert_eq!(q.push(frame(4)), PushOutcome::Overflow);
        assert!(q.is_closed());
        assert_eq!(drain(&q), vec![1, 2, 3]);
    }

    #[test]
    fn the_frame_ceiling_still_binds_tiny_frames() {
        let q = OutboundQueue::new(OutboundBound::new(1 << 20, 4), OverflowPolicy::Close);
        for n in 1..=4 {
            assert_eq!(q.push(frame(n)), PushOutcome::Queued);
        }
        assert_eq!(q.bytes(), 4);
        assert_eq!(q.push(frame(5)), PushOutcome::Overflow);
    }

    #[test]
    fn a_frame_larger_than_the_budget_goes_out_when_there_is_room() {
        // Into an empty queue: queued whole, under every policy.
        for policy in [
            OverflowPolicy::Close,
            OverflowPolicy::DropOldest,
            OverflowPolicy::DropNewest,
        ] {
            let q = OutboundQueue::new(bytes(100), policy);
            assert_eq!(q.push(sized(1, 500)), PushOutcome::Queued, "{policy:?}");
            assert_eq!(q.bytes(), 500);
        }
        // Behind a little: still under the budget, so queued.
        let q = OutboundQueue::new(bytes(100), OverflowPolicy::Close);
        assert_eq!(q.push(sized(1, 50)), PushOutcome::Queued);
        assert_eq!(q.push(sized(2, 500)), PushOutcome::Queued);
        assert_eq!(q.bytes(), 550);
        // Past the budget now: the next frame, however small, meets the
        // policy.
        assert_eq!(q.push(frame(3)), PushOutcome::Overflow);
        assert_eq!(drain(&q), vec![1, 2]);

        let q = OutboundQueue::new(bytes(100), OverflowPolicy::DropNewest);
        q.push(sized(1, 500));
        assert_eq!(q.push(frame(2)), PushOutcome::DroppedNewest);
        assert_eq!(q.dropped(), 1);
        assert_eq!(drain(&q), vec![1]);

        let q = OutboundQueue::new(bytes(100), OverflowPolicy::DropOldest);
        q.push(sized(1, 500));
        assert_eq!(q.push(frame(2)), PushOutcome::DroppedOldest);
        assert_eq!((q.dropped(), q.bytes()), (1, 1));
        assert_eq!(drain(&q), vec![2]);
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let q = OutboundQueue::new(frames(2), OverflowPolicy::DropOldest);
        for n in 1..=5 {
            q.push(frame(n));
        }
        assert_eq!(drain(&q), vec![4, 5]);
        assert_eq!(q.dropped(), 3);
    }

    #[test]
    fn drop_oldest_drops_as_many_as_it_takes_to_get_under_the_budget() {
        let q = OutboundQueue::new(bytes(100), OverflowPolicy::DropOldest);
        // Ten frames of 10 bytes: at the budget.
        for n in 1..=10 {
            assert_eq!(q.push(sized(n, 10)), PushOutcome::Queued);
        }
        assert_eq!(q.bytes(), 100);
        // One frame dropped gets it under: 90 + 60.
        assert_eq!(q.push(sized(11, 60)), PushOutcome::DroppedOldest);
        assert_eq!((q.dropped(), q.bytes()), (1, 150));
        // From 150, six frames of 10 go before it is under 100 again.
        assert_eq!(q.push(sized(12, 10)), PushOutcome::DroppedOldest);
        assert_eq!((q.dropped(), q.bytes()), (7, 100));
        assert_eq!(drain(&q), vec![8, 9, 10, 11, 12]);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn drop_newest_keeps_the_oldest_and_counts() {
        let q = OutboundQueue::new(frames(2), OverflowPolicy::DropNewest);
        for n in 1..=5 {
            q.push(frame(n));
        }
        assert_eq!(drain(&q), vec![1, 2]);
        assert_eq!(q.dropped(), 3);
    }

    #[test]
    fn drop_newest_counts_in_bytes_and_takes_frames_again_after_a_drain() {
        let q = OutboundQueue::new(bytes(100), OverflowPolicy::DropNewest);
        assert_eq!(q.push(sized(1, 60)), PushOutcome::Queued);
        assert_eq!(q.push(sized(2, 60)), PushOutcome::Queued);
        for _ in 0..3 {
            assert_eq!(q.push(frame(3)), PushOutcome::DroppedNewest);
        }
        assert_eq!((q.dropped(), q.bytes()), (3, 120));
        assert_eq!(drain(&q), vec![1, 2]);
        assert_eq!(q.push(frame(4)), PushOutcome::Queued);
        assert_eq!(drain(&q), vec![4]);
        assert_eq!(q.dropped(), 3);
    }

    #[test]
    fn half_a_bound_is_half_of_each_and_never_zero() {
        assert_eq!(
            OutboundBound::new(1 << 20, 8192).half(),
            OutboundBound::new(1 << 19, 4096)
        );
        assert_eq!(OutboundBound::new(0, 0), OutboundBound::new(1, 1));
        assert_eq!(OutboundBound::new(1, 1).half(), OutboundBound::new(1, 1));
    }

    #[tokio::test]
    async fn an_open_window_wakes_the_writer_only_at_its_cut() {
        let q = OutboundQueue::new(frames(100), OverflowPolicy::Close);
        // Whether the writer would wake now (taking the notification).
        let woken = || async {
            tokio::time::timeout(Duration::ZERO, q.ready())
                .await
                .is_ok()
        };
        // No window: every push wakes the writer.
        q.push(frame(1));
        assert!(woken().await);
        // A window cut at 3 frames: the second push does not wake it, the
        // third does.
        assert!(q.open_window(frames(3)));
        q.push(frame(2));
        assert!(!woken().await);
        q.push(frame(3));
        assert!(woken().await);
        assert!(!q.gathering(frames(3)));
        // A drain closes the window: the next push wakes the writer.
        assert_eq!(drain(&q), vec![1, 2, 3]);
        q.push(frame(4));
        assert!(woken().await);
        // No window on an empty queue, or one already at its cut.
        drain(&q);
        assert!(!q.open_window(frames(3)));
        q.push(frame(5));
        assert!(!q.open_window(frames(1)));
        // A close wakes the writer whatever the window.
        drain(&q);
        q.push(frame(6));
        assert!(woken().await);
        assert!(q.open_window(frames(3)));
        q.close();
        assert!(woken().await);
    }

    #[tokio::test]
    async fn room_below_waits_for_a_drain_or_a_close() {
        let q = Arc::new(OutboundQueue::new(frames(8), OverflowPolicy::Close));
        for n in 0..4 {
            q.push(frame(n));
        }
        // Below the bound already: no wait.
        assert!(
            tokio::time::timeout(SHORT, q.room_below(frames(5)))
                .await
                .is_ok()
        );
        // At it: waits until the writer drains.
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.room_below(frames(4)).await }
        });
        tokio::time::sleep(SHORT).await;
        assert!(!waiter.is_finished());
        drain(&q);
        assert!(tokio::time::timeout(SHORT, waiter).await.is_ok());
        // A closed queue never makes anyone wait.
        for n in 0..4 {
            q.push(frame(n));
        }
        q.close();
        assert!(
            tokio::time::timeout(SHORT, q.room_below(frames(1)))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn room_below_counts_bytes() {
        let bound = OutboundBound::new(100, 1000);
        let q = Arc::new(OutboundQueue::new(bound, OverflowPolicy::Close));
        // One frame, but half the budget in bytes: not below half.
        q.push(sized(1, 50));
        assert!(!q.is_below(bound.half()));
        assert!(q.is_below(bound));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.room_below(bound.half()).await }
        });
        tokio::time::sleep(SHORT).await;
        assert!(
            !waiter.is_finished(),
            "50 bytes of a 100-byte budget is half full"
        );
        drain(&q);
        assert!(tokio::time::timeout(SHORT, waiter).await.is_ok());
        // Under half in bytes, but half the frame ceiling: still waits.
        let q = OutboundQueue::new(OutboundBound::new(1 << 20, 4), OverflowPolicy::Close);
        q.push(frame(1));
        q.push(frame(2));
        assert!(!q.is_below(q.bound().half()));
        assert!(
            tokio::time::timeout(SHORT, q.room_below(q.bound().half()))
                .await
                .is_err()
        );
    }
}
