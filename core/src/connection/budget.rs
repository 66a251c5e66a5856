//! The global budget for incomplete inbound messages; see
//! [`IncompleteBudget`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The limits on incomplete inbound messages, part of [`crate::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncompleteLimits {
    /// Bytes of incomplete messages the hub holds at most, across all
    /// connections and transports (beyond each connection's allowance).
    /// Default 64 MiB.
    pub budget: usize,
    /// Bytes of one connection's incomplete message that are not charged to
    /// the budget. Default 16 KiB: room for ordinary messages, so that they
    /// are served even while large incomplete ones hold the whole budget.
    pub allowance: usize,
    /// How long a message may take from its first byte to its last. One
    /// still incomplete after it closes its connection (policy). Default
    /// 20 s: a message of the default maximum size (1 MiB) arrives in 20 s
    /// over a link of 420 kbit/s, and a stalled one is cut well before the
    /// heartbeat would notice (interval + timeout, 40 s by default).
    pub timeout: Duration,
}

impl Default for IncompleteLimits {
    fn default() -> Self {
        IncompleteLimits {
            budget: 64 * 1024 * 1024,
            allowance: 16 * 1024,
            timeout: Duration::from_secs(20),
        }
    }
}

/// Why an incomplete message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IncompleteRefusal {
    /// Charging the message's bytes would pass the hub's budget.
    #[error("the server's budget for incomplete messages is exhausted ({budget} bytes)")]
    Budget {
        /// The budget, in bytes.
        budget: usize,
    },
    /// The message was not completed within the timeout.
    #[error("message not completed within {0:?}")]
    Timeout(Duration),
}

/// The hub-wide budget for incomplete inbound messages (docs/PROTOCOL.md
/// §4 and §5, "Incomplete messages").
///
/// A transport buffers the bytes of a message until it has it whole. Each
/// connection may do so up to the maximum message size, so without a bound
/// across connections, many connections that each start a large message and
/// stall hold many times that. [`IncompleteBudget`] is that bound, one per
/// hub and shared by every transport: each connection holds a
/// [`Reservation`], charges it as the bytes of its incomplete message are
/// buffered, and releases it when the message is whole (or when the
/// reservation is dropped, with the connection). A charge that does not fit
/// is refused, and the transport closes that connection (policy: WS 1008,
/// QUIC 3) while the others go on.
///
/// The first [`IncompleteLimits::allowance`] bytes of each connection's
/// incomplete message are not charged: ordinary small messages never touch
/// the budget, so connections holding it cannot starve them. The memory
/// bound is therefore the budget plus the allowance per connection.
///
/// A reservation also keeps the time its message started, so that a message
/// not completed within [`IncompleteLimits::timeout`] can be refused too.
///
/// ```
/// use signalbox::transport::{IncompleteBudget, IncompleteLimits};
///
/// let mut limits = IncompleteLimits::default();
/// limits.budget = 100;
/// limits.allowance = 10;
/// let budget = IncompleteBudget::new(limits);
/// let mut a = budget.reserve();
/// let mut b = budget.reserve();
/// a.add(60).unwrap(); // 50 charged: the first 10 bytes are free
/// assert_eq!(budget.used(), 50);
/// assert!(b.add(70).is_err()); // 60 more would pass 100
/// b.add(10).unwrap(); // within the allowance: always accepted
/// a.complete(); // the message is whole: its bytes are released
/// assert_eq!(budget.used(), 0);
/// ```
#[derive(Debug)]
pub struct IncompleteBudget {
    limits: IncompleteLimits,
    used: AtomicUsize,
    /// The most ever charged at once, for tests and sizing.
    peak: AtomicUsize,
}

impl IncompleteBudget {
    /// A budget with `limits`, nothing charged.
    pub fn new(limits: IncompleteLimits) -> Arc<Self> {
        Arc::new(IncompleteBudget {
            limits,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// A reservation for one connection, holding nothing yet.
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
            charged: 0,
            started: None,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &IncompleteLimits {
        &self.limits
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The most bytes charged at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    fn charge(&self, bytes: usize) -> Result<(), IncompleteRefusal> {
        let budget = self.limits.budget;
        let before = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= budget)
            })
            .map_err(|_| IncompleteRefusal::Budget { budget })?;
        self.peak.fetch_max(before + bytes, Ordering::AcqRel);
        Ok(())
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One connection's share of the budget: the bytes of its incomplete
/// message. Released when the message completes or the reservation drops.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<IncompleteBudget>,
    held: usize,
    charged: usize,
    started: Option<Instant>,
}

impl Reservation {
    /// The incomplete message now holds `bytes` (more or fewer than
    /// before). On a refusal nothing changes: the connection is to be
    /// closed.
    pub fn hold(&mut self, bytes: usize) -> Result<(), IncompleteRefusal> {
        let charge = bytes.saturating_sub(self.budget.limits.allowance);
        // Within the allowance the shared counter is not touched at all.
        if charge > self.charged {
            self.budget.charge(charge - self.charged)?;
        } else if charge < self.charged {
            self.budget.release(self.charged - charge);
        }
        self.charged = charge;
        self.held = bytes;
        match (bytes, self.started) {
            (0, _) => self.started = None,
            (_, None) => self.started = Some(Instant::now()),
            _ => {}
        }
        Ok(())
    }

    /// `bytes` more were buffered for the incomplete message.
    pub fn add(&mut self, bytes: usize) -> Result<(), IncompleteRefusal> {
        self.hold(self.held.saturating_add(bytes))
    }

    /// `bytes` of what was counted turned out to be no part of an
    /// incomplete message (a control frame read whole, say).
    pub fn remove(&mut self, bytes: usize) {
        // Shrinking never fails.
        let _ = self.hold(self.held.saturating_sub(bytes));
    }

    /// The message is whole: nothing is held any more.
    pub fn complete(&mut self) {
        self.remove(self.held);
    }

    /// Bytes of the incomplete message.
    pub fn held(&self) -> usize {
        self.held
    }

    /// When the incomplete message must be whole, if one has started.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|t| t + self.budget.limits.timeout)
    }

    /// The refusal for a message past its deadline.
    pub fn timed_out(&self) -> IncompleteRefusal {
        IncompleteRefusal::Timeout(self.budget.limits.timeout)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(budget: usize, allowance: usize) -> Arc<IncompleteBudget> {
        IncompleteBudget::new(IncompleteLimits {
            budget,
            allowance,
            timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn charges_beyond_the_allowance_and_refuses_past_the_budget() {
        let b = budget(1000, 100);
        let mut r1 = b.reserve();
        let mut r2 = b.reserve();
        r1.add(100).unwrap();
        assert_eq!(b.used(), 0);
        r1.add(500).unwrap();
        assert_eq!(b.used(), 500);
        r2.add(600).unwrap();
        assert_eq!(b.used(), 1000);
        assert_eq!(
            r2.add(1),
            Err(IncompleteRefusal::Budget { budget: 1000 }),
            "one byte past the budget"
        );
        // A refused charge changes nothing.
        assert_eq!(r2.held(), 600);
        assert_eq!(b.used(), 1000);
        r1.complete();
        assert_eq!(b.used(), 500);
        r2.add(1).unwrap();
        assert_eq!(b.peak(), 1000);
    }

    #[test]
    fn dropping_a_reservation_releases_it() {
        let b = budget(1000, 0);
        let mut r = b.reserve();
        r.add(700).unwrap();
        assert!(b.reserve().add(400).is_err());
        drop(r);
        assert_eq!(b.used(), 0);
        b.reserve().add(1000).unwrap();
        assert_eq!(b.used(), 0, "released again when the temporary dropped");
    }

    #[test]
    fn remove_and_hold_shrink_without_failing() {
        let b = budget(1000, 10);
        let mut r = b.reserve();
        r.hold(510).unwrap();
        assert_eq!(b.used(), 500);
        r.remove(5);
        assert_eq!((r.held(), b.used()), (505, 495));
        r.remove(10_000);
        assert_eq!((r.held(), b.used()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_message_has_a_deadline_until_it_completes() {
        let b = budget(1000, 0);
        let mut r = b.reserve();
        assert_eq!(r.deadline(), None);
        let start = Instant::now();
        r.add(1).unwrap();
        assert_eq!(r.deadline(), Some(start + Duration::from_secs(1)));
        // More bytes do not move the deadline.
        tokio::time::advance(Duration::from_millis(300)).await;
        r.add(1).unwrap();
        assert_eq!(r.deadline(), Some(start + Duration::from_secs(1)));
        // A whole message clears it; the next one starts its own.
        r.complete();
        assert_eq!(r.deadline(), None);
        r.add(1).unwrap();
        assert_eq!(
            r.deadline(),
            Some(start + Duration::from_millis(1300)),
            "counted from the new message's first byte"
        );
        assert_eq!(
            r.timed_out(),
            IncompleteRefusal::Timeout(Duration::from_secs(1))
        );
    }

    #[test]
    fn concurrent_charges_never_pass_the_budget() {
        let b = budget(10_000, 0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut r = b.reserve();
                    let mut refused = 0;
                    for _ in 0..10_000 {
                        if r.add(7).is_err() {
                            refused += 1;
                            r.complete();
                        }
                        assert!(b.used() <= 10_000);
                    }
                    refused
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.used(), 0);
        assert!(b.peak() <= 10_000);
    }
}
