//! The bounded queue of messages written while disconnected.

use super::Outgoing;
use std::collections::VecDeque;

/// What a full offline queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfflinePolicy {
    /// Drop the oldest queued message to make room (the default: the
    /// freshest state wins).
    #[default]
    DropOldest,
    /// Drop the new message.
    DropNewest,
    /// Refuse the new message: the send fails with
    /// [`super::ClientError::QueueFull`].
    Reject,
}

/// What happened to a message offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    Yes,
    DroppedOldest,
    DroppedNew,
    Rejected,
}

#[derive(Debug)]
pub(crate) struct OfflineQueue {
    frames: VecDeque<Outgoing>,
    capacity: usize,
    policy: OfflinePolicy,
}

impl OfflineQueue {
    pub(crate) fn new(capacity: usize, policy: OfflinePolicy) -> Self {
        OfflineQueue {
            frames: VecDeque::new(),
            capacity,
            policy,
        }
    }

    pub(crate) fn push(&mut self, out: Outgoing) -> Queued {
        if self.frames.len() < self.capacity {
            self.frames.push_back(out);
            return Queued::Yes;
        }
        match self.policy {
            OfflinePolicy::DropOldest if self.capacity > 0 => {
                self.frames.pop_front();
                self.frames.push_back(out);
                Queued::DroppedOldest
            }
            OfflinePolicy::DropOldest | OfflinePolicy::DropNewest => Queued::DroppedNew,
            OfflinePolicy::Reject => Queued::Rejected,
        }
    }

    /// Puts back, in front and in order, messages that were handed to a
    /// connection that died before writing them. Past the capacity the
    /// oldest are dropped; returns how many.
    pub(crate) fn requeue_front(&mut self, outs: Vec<Outgoing>) -> usize {
        for out in outs.into_iter().rev() {
            self.frames.push_front(out);
        }
        let mut dropped = 0;
        while self.frames.len() > self.capacity {
            self.frames.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Takes out the request with correlation id `id`, whose caller gave
    /// up before it was written; whether it was here.
    pub(crate) fn withdraw(&mut self, id: &str) -> bool {
        let before = self.frames.len();
        self.frames
            .retain(|out| out.correlation_id.as_deref() != Some(id));
        self.frames.len() != before
    }

    pub(crate) fn take(&mut self) -> Vec<Outgoing> {
        self.frames.drain(..).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn out(n: u8) -> Outgoing {
        Outgoing {
            frame: Bytes::from(vec![n]),
            correlation_id: None,
        }
    }

    fn frames(q: &mut OfflineQueue) -> Vec<u8> {
        q.take().into_iter().map(|o| o.frame[0]).collect()
    }

    #[test]
    fn each_policy_does_what_it_says_when_full() {
        let mut q = OfflineQueue::new(2, OfflinePolicy::DropOldest);
        assert_eq!(q.push(out(1)), Queued::Yes);
        assert_eq!(q.push(out(2)), Queued::Yes);
        assert_eq!(q.push(out(3)), Queued::DroppedOldest);
        assert_eq!(frames(&mut q), [2, 3]);

        let mut q = OfflineQueue::new(2, OfflinePolicy::DropNewest);
        q.push(out(1));
        q.push(out(2));
        assert_eq!(q.push(out(3)), Queued::DroppedNew);
        assert_eq!(frames(&mut q), [1, 2]);

        let mut q = OfflineQueue::new(2, OfflinePolicy::Reject);
        q.push(out(1));
        q.push(out(2));
        assert_eq!(q.push(out(3)), Queued::Rejected);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_withdrawn_request_leaves_the_queue_and_the_rest_stays_in_order() {
        let mut q = OfflineQueue::new(4, OfflinePolicy::DropOldest);
        q.push(out(1));
        q.push(Outgoing {
            frame: Bytes::from(vec![2]),
            correlation_id: Some("c2".into()),
        });
        q.push(out(3));
        assert!(!q.withdraw("c9"));
        assert!(q.withdraw("c2"));
        assert!(!q.withdraw("c2"));
        assert_eq!(frames(&mut q), [1, 3]);
    }

    #[test]
    fn requeued_messages_go_first_in_order() {
        let mut q = OfflineQueue::new(3, OfflinePolicy::DropOldest);
        q.push(out(3));
        assert_eq!(q.requeue_front(vec![out(1), out(2)]), 0);
        assert_eq!(frames(&mut q), [1, 2, 3]);
        q.push(out(3));
        q.push(out(4));
        assert_eq!(q.requeue_front(vec![out(1), out(2)]), 1);
        assert_eq!(frames(&mut q), [2, 3, 4]);
    }
}
