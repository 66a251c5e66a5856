//! The per-connection inbound queue: messages the reader admitted, waiting
//! for the processor, bounded by `inbound_queue`.
//!
//! One producer (the reader) and one consumer (the processor). It
//! allocates nothing until a message waits in it and keeps at most
//! [`KEPT_SLOTS`] slots once it empties, so an idle connection pays little
//! more than the struct itself; a full queue makes the reader wait, which stops it reading
//! (backpressure onto the peer).

use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::Notify;

/// Storage kept between messages: up to this many slots stay allocated
/// when the queue empties; a burst's larger storage is freed.
const KEPT_SLOTS: usize = 4;

#[derive(Debug)]
struct State<T> {
    messages: VecDeque<T>,
    /// The consumer took a message and has not yet said it is done with
    /// it ([`InboundQueue::idle`]), or the producer claimed the turn
    /// ([`InboundQueue::claim`]).
    busy: bool,
    /// No more pushes: the reader finished, or the processor closed.
    closed: bool,
}

/// The queue between a connection's reader and its processor.
#[derive(Debug)]
pub(crate) struct InboundQueue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Woken when a message is pushed, or the queue closes.
    pushed: Notify,
    /// Woken when a message is taken, or the queue closes.
    taken: Notify,
}

/// Why [`InboundQueue::try_push`] did not queue.
enum TryPush<T> {
    Full(T),
    Shut,
}
use TryPush::{Full, Shut};

/// The queue no longer takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

impl<T> InboundQueue<T> {
    /// A queue of at most `capacity` messages (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        InboundQueue {
            state: Mutex::new(State {
                messages: VecDeque::new(),
                busy: false,
                closed: false,
            }),
            capacity: capacity.max(1),
            pushed: Notify::new(),
            taken: Notify::new(),
        }
    }

    /// Queues `message`, waiting while the queue is full. Fails once the
    /// queue is closed. Cancel-safe: a cancelled push queued nothing.
    pub(crate) async fn push(&self, message: T) -> Result<(), Closed> {
        let mut message = match self.try_push(message) {
            Ok(()) => return Ok(()),
            Err(Full(message)) => Some(message),
            Err(Shut) => return Err(Closed),
        };
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            // Registered before the check, so a pop in between is seen.
            taken.as_mut().enable();
            if let Some(m) = message.take() {
                match self.try_push(m) {
                    Ok(()) => return Ok(()),
                    Err(Full(m)) => message = Some(m),
                    Err(Shut) => return Err(Closed),
                }
            }
            taken.await;
        }
    }

    /// The next message; `None` once the queue is closed and empty.
    /// Cancel-safe.
    pub(crate) async fn pop(&self) -> Option<T> {
        // Without waiting first: no wake-up to register when a message is
        // already there.
        if let Some(message) = self.take() {
            return Some(message);
        }
        loop {
            let pushed = self.pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            if let Some(message) = self.take() {
                return Some(message);
            }
            {
                let state = self.state.lock();
                if state.closed {
                    if state.messages.is_empty() {
                        return None;
                    }
                    // Pushed just before the close, after the look above.
                    continue;
                }
            }
            pushed.await;
        }
    }

    /// Takes the next message if there is one.
    fn take(&self) -> Option<T> {
        let message = {
            let mut state = self.state.lock();
            let message = state.messages.pop_front()?;
            state.busy = true;
            if state.messages.is_empty() && state.messages.capacity() > KEPT_SLOTS {
                state.messages = VecDeque::new();
            }
            message
        };
        self.taken.notify_one();
        Some(message)
    }

    /// Queues `message` if there is room.
    fn try_push(&self, message: T) -> Result<(), TryPush<T>> {
        {
            let mut state = self.state.lock();
            if state.closed {
                return Err(Shut);
            }
            if state.messages.len() >= self.capacity {
                return Err(Full(message));
            }
            state.messages.push_back(message);
        }
        self.pushed.notify_one();
        Ok(())
    }

    /// The consumer is done with what it took.
    pub(crate) fn idle(&self) {
        self.state.lock().busy = false;
    }

    /// Takes the consumer's turn when nothing is queued and the consumer
    /// is idle: the producer may then handle one message itself, in order,
    /// and either says [`InboundQueue::idle`] after or pushes what is left
    /// of it (the turn passes to the consumer with it).
    pub(crate) fn claim(&self) -> bool {
        let mut state = self.state.lock();
        if state.closed || state.busy || !state.messages.is_empty() {
            return false;
        }
        state.busy = true;
        true
    }

    /// No more pushes; what is queued can still be taken.
    pub(crate) fn finish(&self) {
        self.state.lock().closed = true;
        self.wake_all();
    }

    /// No more pushes, and what is queued is dropped.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut state = self.state.lock();
            state.closed = true;
            std::mem::take(&mut state.messages)
        };
        drop(dropped);
        self.wake_all();
    }

    fn wake_all(&self) {
        self.pushed.notify_waiters();
        self.pushed.notify_one();
        self.taken.notify_waiters();
        self.taken.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn keeps_order_and_waits_for_room() {
        let q = Arc::new(InboundQueue::new(2));
        q.push(1).await.unwrap();
        q.push(2).await.unwrap();
        // Full: the third push waits until a pop makes room.
        let pusher = {
            let q = q.clone();
            tokio::spawn(async move { q.push(3).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pusher.is_finished(), "a push into a full queue waits");
        assert_eq!(q.pop().await, Some(1));
        pusher.await.unwrap().unwrap();
        assert_eq!(q.pop().await, Some(2));
        assert_eq!(q.pop().await, Some(3));
    }

    #[tokio::test]
    async fn finish_lets_the_queued_out_then_ends() {
        let q = InboundQueue::new(4);
        q.push(1).await.unwrap();
        q.finish();
        assert_eq!(q.push(2).await, Err(Closed));
        assert_eq!(q.pop().await, Some(1));
        assert_eq!(q.pop().await, None);
    }

    #[tokio::test]
    async fn close_drops_the_queued_and_wakes_a_waiting_pusher() {
        let q = Arc::new(InboundQueue::new(1));
        q.push(1).await.unwrap();
        let pusher = {
            let q = q.clone();
            tokio::spawn(async move { q.push(2).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.close();
        assert_eq!(pusher.await.unwrap(), Err(Closed));
        assert_eq!(q.pop().await, None);
    }

    #[tokio::test]
    async fn a_waiting_pop_wakes_on_push_and_on_finish() {
        let q = Arc::new(InboundQueue::new(1));
        let popper = {
            let q = q.clone();
            tokio::spawn(async move { (q.pop().await, q.pop().await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.push(7).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.finish();
        assert_eq!(popper.await.unwrap(), (Some(7), None));
    }

    #[tokio::test]
    async fn a_claim_needs_an_empty_queue_and_an_idle_consumer() {
        let q = InboundQueue::new(4);
        assert!(q.claim());
        assert!(!q.claim(), "claimed already");
        q.idle();
        q.push(1).await.unwrap();
        assert!(!q.claim(), "a message is queued");
        assert_eq!(q.pop().await, Some(1));
        assert!(!q.claim(), "the consumer is busy with it");
        q.idle();
        assert!(q.claim());
        q.idle();
        q.finish();
        assert!(!q.claim(), "closed");
    }

    #[tokio::test]
    async fn a_burst_frees_its_storage_once_empty() {
        let q = InboundQueue::new(64);
        for n in 0..64 {
            q.push(n).await.unwrap();
        }
        for _ in 0..64 {
            q.pop().await.unwrap();
        }
        assert_eq!(q.state.lock().messages.capacity(), 0);
    }
}
