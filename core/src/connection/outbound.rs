//! The per-connection outbound queue: bounded, with a policy for when full.

use bytes::Bytes;
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
    /// Drop the oldest queued message to make room, and count it.
    DropOldest,
    /// Drop the new message, and count it.
    DropNewest,
}

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued.
    Queued,
    /// Queued, after dropping the oldest queued message.
    DroppedOldest,
    /// Not queued: the queue was full and the policy drops new messages.
    DroppedNewest,
    /// Not queued: the queue was full and the connection is now closing.
    Overflow,
    /// Not queued: the connection is closed or closing.
    Closed,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Bytes>,
    closed: bool,
    dropped: u64,
}

/// A bounded single-consumer queue of encoded frames.
///
/// Producers (handlers, publishers on any task) push without waiting; the
/// connection's writer takes everything queued at once and writes it with
/// one flush. The lock is held only to move frames in or out.
#[derive(Debug)]
pub struct OutboundQueue {
    state: Mutex<State>,
    capacity: usize,
    policy: OverflowPolicy,
    ready: Notify,
    drained: Notify,
}

impl OutboundQueue {
    /// A queue holding at most `capacity` frames (at least 1).
    pub fn new(capacity: usize, policy: OverflowPolicy) -> Self {
        OutboundQueue {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                closed: false,
                dropped: 0,
            }),
            capacity: capacity.max(1),
            policy,
            ready: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// Queues a frame, applying the overflow policy when full.
    pub fn push(&self, frame: Bytes) -> PushOutcome {
        let outcome = {
            let mut state = self.state.lock();
            if state.closed {
                return PushOutcome::Closed;
            }
            if state.frames.len() < self.capacity {
                state.frames.push_back(frame);
                PushOutcome::Queued
            } else {
                match self.policy {
                    OverflowPolicy::Close => {
                        state.closed = true;
                        PushOutcome::Overflow
                    }
                    OverflowPolicy::DropOldest => {
                        state.frames.pop_front();
                        state.frames.push_back(frame);
                        state.dropped += 1;
                        PushOutcome::DroppedOldest
                    }
                    OverflowPolicy::DropNewest => {
                        state.dropped += 1;
                        return PushOutcome::DroppedNewest;
                    }
                }
            }
        };
        self.ready.notify_one();
        outcome
    }

    /// Moves every queued frame into `batch`. Returns `false` once the queue
    /// is closed and empty.
    pub fn drain_into(&self, batch: &mut Vec<Bytes>) -> bool {
        let open = {
            let mut state = self.state.lock();
            batch.extend(state.frames.drain(..));
            !(state.closed && batch.is_empty())
        };
        self.drained.notify_waiters();
        open
    }

    /// Waits until fewer than `below` frames are queued, or the queue is
    /// closed.
    pub async fn room_below(&self, below: usize) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a drain in between is seen.
            drained.as_mut().enable();
            {
                let state = self.state.lock();
                if state.closed || state.frames.len() < below {
                    return;
                }
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

    /// Whether the queue stopped accepting frames.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.state.lock().frames.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames dropped so far by the drop policies.
    pub fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }

    /// The configured bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn drain(q: &OutboundQueue) -> Vec<u8> {
        let mut batch = Vec::new();
        q.drain_into(&mut batch);
        batch.iter().map(|b| b[0]).collect()
    }

    #[test]
    fn close_policy_closes_on_overflow_and_keeps_what_was_queued() {
        let q = OutboundQueue::new(2, OverflowPolicy::Close);
        assert_eq!(q.push(frame(1)), PushOutcome::Queued);
        assert_eq!(q.push(frame(2)), PushOutcome::Queued);
        assert_eq!(q.push(frame(3)), PushOutcome::Overflow);
        assert!(q.is_closed());
        assert_eq!(q.push(frame(4)), PushOutcome::Closed);
        assert_eq!(drain(&q), vec![1, 2]);
        let mut batch = Vec::new();
        assert!(!q.drain_into(&mut batch));
    }

    #[tokio::test]
    async fn room_below_waits_for_a_drain_or_a_close() {
        let q = std::sync::Arc::new(OutboundQueue::new(8, OverflowPolicy::Close));
        for n in 0..4 {
            q.push(frame(n));
        }
        let short = std::time::Duration::from_millis(50);
        // Below the bound already: no wait.
        assert!(tokio::time::timeout(short, q.room_below(5)).await.is_ok());
        // At it: waits until the writer drains.
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.room_below(4).await }
        });
        tokio::time::sleep(short).await;
        assert!(!waiter.is_finished());
        drain(&q);
        assert!(tokio::time::timeout(short, waiter).await.is_ok());
        // A closed queue never makes anyone wait.
        for n in 0..4 {
            q.push(frame(n));
        }
        q.close();
        assert!(tokio::time::timeout(short, q.room_below(1)).await.is_ok());
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let q = OutboundQueue::new(2, OverflowPolicy::DropOldest);
        for n in 1..=5 {
            q.push(frame(n));
        }
        assert_eq!(drain(&q), vec![4, 5]);
        assert_eq!(q.dropped(), 3);
    }

    #[test]
    fn drop_newest_keeps_the_oldest_and_counts() {
        let q = OutboundQueue::new(2, OverflowPolicy::DropNewest);
        for n in 1..=5 {
            q.push(frame(n));
        }
        assert_eq!(drain(&q), vec![1, 2]);
        assert_eq!(q.dropped(), 3);
    }
}
