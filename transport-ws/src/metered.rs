//! The socket under tungstenite, metered: the bytes read since the last
//! complete message are charged to the hub's budget for incomplete
//! messages, and a message that takes longer than its timeout is refused
//! (docs/PROTOCOL.md §4, "Incomplete messages").
//!
//! Counting bytes read from the socket is an upper bound of what
//! tungstenite holds of an incomplete message (its read buffer, the frame
//! being read, the fragments so far), less at most one read buffer read
//! ahead of a message that completed: after a complete message the count
//! starts again from zero. Control frames read whole are taken off the
//! count: from a client they are masked and at most 125 bytes long, so
//! each is exactly 6 bytes of header plus its payload.

use parking_lot::Mutex;
use signalbox::transport::{IncompleteRefusal, Reservation};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep_until};

/// Header bytes of a control frame from a client: 2, and the 4-byte mask.
const CLIENT_CONTROL_HEADER: usize = 6;

#[derive(Debug)]
struct State {
    reservation: Mutex<Reservation>,
    /// Bytes read are charged.
    counting: AtomicBool,
    /// The message timeout applies.
    timed: AtomicBool,
}

/// The handle shared by a [`Metered`] stream, which charges the bytes it
/// reads, and the connection's source, which tells it where messages end.
#[derive(Debug, Clone)]
pub(crate) struct Meter(Arc<State>);

impl Meter {
    pub(crate) fn new(reservation: Reservation) -> Self {
        Meter(Arc::new(State {
            reservation: Mutex::new(reservation),
            counting: AtomicBool::new(true),
            timed: AtomicBool::new(true),
        }))
    }

    /// A data message was read whole.
    pub(crate) fn message_complete(&self) {
        self.0.reservation.lock().complete();
    }

    /// A control frame with `payload` bytes was read whole.
    pub(crate) fn control_frame(&self, payload: usize) {
        self.0
            .reservation
            .lock()
            .remove(CLIENT_CONTROL_HEADER + payload);
    }

    /// The connection is closing: no message is awaited any more, so the
    /// timeout no longer applies (the close has its own time limit).
    pub(crate) fn closing(&self) {
        self.0.timed.store(false, Ordering::Release);
    }

    /// Bytes are read and discarded from now on, not buffered: they are not
    /// charged. What was charged stays so until the connection's buffers
    /// are freed (the meter drops).
    pub(crate) fn discarding(&self) {
        self.0.counting.store(false, Ordering::Release);
    }

    fn deadline(&self) -> Option<(Instant, IncompleteRefusal)> {
        if !self.0.timed.load(Ordering::Acquire) {
            return None;
        }
        let reservation = self.0.reservation.lock();
        reservation
            .deadline()
            .map(|deadline| (deadline, reservation.timed_out()))
    }

    fn charge(&self, bytes: usize) -> Result<(), IncompleteRefusal> {
        if !self.0.counting.load(Ordering::Acquire) {
            return Ok(());
        }
        self.0.reservation.lock().add(bytes)
    }
}

/// The refusal as the I/O error tungstenite passes on; see [`refusal_of`].
fn refused(refusal: IncompleteRefusal) -> io::Error {
    io::Error::other(refusal)
}

/// The refusal inside an I/O error made by [`Metered`].
pub(crate) fn refusal_of(error: &io::Error) -> Option<IncompleteRefusal> {
    error
        .get_ref()?
        .downcast_ref::<IncompleteRefusal>()
        .copied()
}

/// A byte stream whose reads are charged to a [`Meter`].
#[derive(Debug)]
pub(crate) struct Metered<S> {
    inner: S,
    meter: Meter,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, meter: Meter) -> Self {
        Metered {
            inner,
            meter,
            timer: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((deadline, refusal)) = this.meter.deadline() {
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            // Registers the wake-up at the deadline while the read waits.
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(refused(refusal)));
            }
        } else {
            this.timer = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                match this.meter.charge(read) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(refusal) => Poll::Ready(Err(refused(refusal))),
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox::transport::{IncompleteBudget, IncompleteLimits};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(budget: usize) -> IncompleteLimits {
        let mut limits = IncompleteLimits::default();
        limits.budget = budget;
        limits.allowance = 0;
        limits.timeout = Duration::from_secs(5);
        limits
    }

    #[tokio::test]
    async fn reads_are_charged_until_the_message_completes() {
        let budget = IncompleteBudget::new(limits(100));
        let meter = Meter::new(budget.reserve());
        let (mut peer, io) = tokio::io::duplex(1024);
        let mut metered = Metered::new(io, meter.clone());
        peer.write_all(&[0u8; 60]).await.unwrap();
        let mut buf = [0u8; 60];
        metered.read_exact(&mut buf).await.unwrap();
        assert_eq!(budget.used(), 60);
        meter.control_frame(4);
        assert_eq!(budget.used(), 50);
        meter.message_complete();
        assert_eq!(budget.used(), 0);
        // Past the budget: the read fails with the refusal.
        peer.write_all(&[0u8; 101]).await.unwrap();
        let mut buf = [0u8; 101];
        let error = metered.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(
            refusal_of(&error),
            Some(IncompleteRefusal::Budget { budget: 100 }),
            "{error}"
        );
        // Discarding: reads are no longer charged.
        meter.discarding();
        peer.write_all(&[0u8; 500]).await.unwrap();
        let mut buf = [0u8; 500];
        metered.read_exact(&mut buf).await.unwrap();
        drop(metered);
        drop(meter);
        assert_eq!(budget.used(), 0, "released with the meter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_stalled_past_its_timeout_fails_the_waiting_read() {
        let budget = IncompleteBudget::new(limits(1000));
        let meter = Meter::new(budget.reserve());
        let (mut peer, io) = tokio::io::duplex(1024);
        let mut metered = Metered::new(io, meter.clone());
        peer.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(metered.read(&mut buf).await.unwrap(), 1);
        let started = Instant::now();
        // Nothing more comes: the pending read fails at the deadline.
        let error = metered.read(&mut buf).await.unwrap_err();
        assert_eq!(
            refusal_of(&error),
            Some(IncompleteRefusal::Timeout(Duration::from_secs(5)))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // A closing connection is not timed.
        meter.closing();
        let waited = tokio::time::timeout(Duration::from_secs(60), metered.read(&mut buf)).await;
        assert!(waited.is_err(), "no timeout while closing");
    }

    #[tokio::test(start_paused = true)]
    async fn between_messages_there_is_no_deadline() {
        let budget = IncompleteBudget::new(limits(1000));
        let meter = Meter::new(budget.reserve());
        let (mut peer, io) = tokio::io::duplex(1024);
        let mut metered = Metered::new(io, meter.clone());
        peer.write_all(b"xy").await.unwrap();
        let mut buf = [0u8; 2];
        metered.read_exact(&mut buf).await.unwrap();
        meter.message_complete();
        let waited = tokio::time::timeout(Duration::from_secs(60), metered.read(&mut buf)).await;
        assert!(waited.is_err(), "idle, not late");
    }
}
