//! The batching window: how long a connection's writer may wait for more
//! messages before it writes what is queued (docs/ARCHITECTURE.md, "The
//! connection driver").

use super::OutboundBound;
use std::time::Duration;

/// A batching window for a connection's writer: once a message is queued,
/// the writer waits up to [`Batching::max_delay`] for more before it writes
/// them all with one flush, and writes at once when
/// [`Batching::max_messages`] messages or [`Batching::max_bytes`] bytes are
/// queued.
///
/// Off by default: without a window the writer writes whatever is queued
/// as soon as it wakes, so messages that arrive together leave together
/// only by chance, and none waits. A window trades latency (each message
/// may wait up to `max_delay`) for fewer writes and flushes (fewer
/// syscalls and, on the wire, fewer packets) when many messages go to one
/// connection in a short time. Set it hub-wide with
/// [`crate::HubBuilder::batching`] ([`crate::Config::batching`]) or per
/// connection with [`crate::ConnectionHandle::set_batching`].
///
/// The window never delays a heartbeat ping, a close, or the drain of the
/// queue at close, and it never lets the outbound queue fill: once the
/// queue holds half its bound ([`OutboundBound::half`], where the
/// connection stops reading its peer), the writer writes.
///
/// ```
/// use std::time::Duration;
/// use signalbox::Batching;
/// let window = Batching::new(Duration::from_millis(5))?.with_max_messages(32)?;
/// assert_eq!(window.max_delay(), Duration::from_millis(5));
/// assert_eq!(window.max_messages(), 32);
/// assert_eq!(window.max_bytes(), Batching::DEFAULT_MAX_BYTES);
/// assert!(Batching::new(Duration::ZERO).is_err());
/// # Ok::<(), signalbox::BatchingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    max_delay: Duration,
    max_messages: usize,
    max_bytes: usize,
}

/// Why a [`Batching`] window was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchingError {
    /// A window of no time: leave batching off instead.
    #[error("batching: max_delay must be more than zero (leave batching off for no window)")]
    ZeroDelay,
    /// A window longer than [`Batching::MAX_DELAY`].
    #[error("batching: max_delay {0:?} is over the {max:?} ceiling", max = Batching::MAX_DELAY)]
    DelayTooLong(Duration),
    /// A batch of no messages.
    #[error("batching: max_messages must be at least 1")]
    ZeroMessages,
    /// A batch of no bytes.
    #[error("batching: max_bytes must be at least 1")]
    ZeroBytes,
}

impl Batching {
    /// The longest window allowed: 1 s. A message held longer than that
    /// is no longer real time.
    pub const MAX_DELAY: Duration = Duration::from_secs(1);
    /// The messages at which a batch is written, unless set: 64.
    pub const DEFAULT_MAX_MESSAGES: usize = 64;
    /// The bytes at which a batch is written, unless set: 64 KiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

    /// A window of `max_delay` (more than zero, at most
    /// [`Batching::MAX_DELAY`]), cut at [`Batching::DEFAULT_MAX_MESSAGES`]
    /// messages or [`Batching::DEFAULT_MAX_BYTES`] bytes.
    pub fn new(max_delay: Duration) -> Result<Self, BatchingError> {
        if max_delay.is_zero() {
            return Err(BatchingError::ZeroDelay);
        }
        if max_delay > Self::MAX_DELAY {
            return Err(BatchingError::DelayTooLong(max_delay));
        }
        Ok(Batching {
            max_delay,
            max_messages: Self::DEFAULT_MAX_MESSAGES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        })
    }

    /// Writes as soon as `max_messages` messages (at least 1) are queued.
    pub fn with_max_messages(mut self, max_messages: usize) -> Result<Self, BatchingError> {
        if max_messages == 0 {
            return Err(BatchingError::ZeroMessages);
        }
        self.max_messages = max_messages;
        Ok(self)
    }

    /// Writes as soon as `max_bytes` bytes (at least 1; the encoded
    /// messages' lengths) are queued.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Result<Self, BatchingError> {
        if max_bytes == 0 {
            return Err(BatchingError::ZeroBytes);
        }
        self.max_bytes = max_bytes;
        Ok(self)
    }

    /// How long the first message of a batch may wait for others.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The messages at which a batch is written at once.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// The bytes at which a batch is written at once.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// What a queue of `bound` may hold before the writer writes: this
    /// window's sizes, capped at half the bound (where the connection
    /// stops reading, so that the window never lets the queue fill).
    pub(crate) fn cut(&self, bound: OutboundBound) -> OutboundBound {
        let half = bound.half();
        OutboundBound::new(
            self.max_bytes.min(half.bytes),
            self.max_messages.min(half.frames),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_absurd_values_are_refused() {
        assert_eq!(Batching::new(Duration::ZERO), Err(BatchingError::ZeroDelay));
        let long = Batching::MAX_DELAY + Duration::from_millis(1);
        assert_eq!(Batching::new(long), Err(BatchingError::DelayTooLong(long)));
        assert!(Batching::new(Batching::MAX_DELAY).is_ok());
        let window = Batching::new(Duration::from_millis(1)).unwrap();
        assert_eq!(
            window.with_max_messages(0),
            Err(BatchingError::ZeroMessages)
        );
        assert_eq!(window.with_max_bytes(0), Err(BatchingError::ZeroBytes));
        assert!(
            BatchingError::DelayTooLong(long)
                .to_string()
                .contains("ceiling")
        );
    }

    #[test]
    fn the_cut_is_capped_at_half_the_queue_bound() {
        let window = Batching::new(Duration::from_millis(5))
            .unwrap()
            .with_max_messages(100)
            .unwrap()
            .with_max_bytes(10_000)
            .unwrap();
        assert_eq!(
            window.cut(OutboundBound::new(1 << 20, 8192)),
            OutboundBound::new(10_000, 100)
        );
        assert_eq!(
            window.cut(OutboundBound::new(1000, 8)),
            OutboundBound::new(500, 4)
        );
    }
}
