//! Reads from the socket in large chunks without a read buffer held per
//! connection.
//!
//! tungstenite reads into its own buffer, allocated when the connection
//! starts and kept for its life, and never asks for more than that buffer's
//! size at once: a large buffer costs every idle connection its size, a
//! small one costs a read from the socket per few hundred bytes.
//! [`ReadAhead`] takes both apart: tungstenite keeps a small buffer
//! ([`FRAMING_BUFFER`]), and each read from the socket fills a chunk of up
//! to `chunk` bytes on the stack; what tungstenite did not take is kept on
//! the heap only until it takes it. A connection at rest holds nothing here.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// tungstenite's own read buffer under a [`ReadAhead`]: what an idle
/// connection keeps allocated for reading.
pub(crate) const FRAMING_BUFFER: usize = 256;

/// The largest chunk read from the socket at once (the stack space a read
/// uses).
pub(crate) const MAX_CHUNK: usize = 64 * 1024;

/// A byte stream read `chunk` bytes at a time, whatever the reader asks for.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    chunk: usize,
    /// Read from the socket, not yet taken: `ahead[taken..]`.
    ahead: Vec<u8>,
    taken: usize,
}

impl<S> ReadAhead<S> {
    /// Reads `chunk` bytes at a time (clamped to
    /// [`FRAMING_BUFFER`]..=[`MAX_CHUNK`]).
    pub(crate) fn new(inner: S, chunk: usize) -> Self {
        ReadAhead {
            inner,
            chunk: chunk.clamp(FRAMING_BUFFER, MAX_CHUNK),
            ahead: Vec::new(),
            taken: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.ahead.len() {
            let rest = &this.ahead[this.taken..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.taken += n;
            if this.taken == this.ahead.len() {
                this.ahead = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= this.chunk {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut space = [MaybeUninit::<u8>::uninit(); MAX_CHUNK];
        let mut chunk = ReadBuf::uninit(&mut space[..this.chunk]);
        match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
            Poll::Ready(Ok(())) => {
                let read = chunk.filled();
                let n = read.len().min(buf.remaining());
                buf.put_slice(&read[..n]);
                if n < read.len() {
                    this.ahead = read[n..].to_vec();
                    this.taken = 0;
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_take_a_large_chunk_in_turns_and_then_hold_nothing() {
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&message).await.unwrap();
        drop(a);
        let mut reader = ReadAhead::new(b, 4096);
        let mut got = Vec::new();
        let mut small = [0u8; 100];
        loop {
            let n = reader.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(reader.ahead.len() <= 4096, "holds at most one chunk");
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, message);
        assert_eq!(reader.ahead.capacity(), 0, "nothing kept once taken");
    }

    #[tokio::test]
    async fn a_read_as_large_as_a_chunk_goes_straight_to_the_socket() {
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        a.write_all(&[7u8; 5000]).await.unwrap();
        let mut reader = ReadAhead::new(b, 1024);
        let mut big = vec![0u8; 8192];
        let n = reader.read(&mut big).await.unwrap();
        assert_eq!(n, 5000);
        assert!(reader.ahead.is_empty());
    }
}
