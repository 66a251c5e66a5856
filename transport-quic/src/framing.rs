//! Length-prefixed frames, without I/O (docs/PROTOCOL.md §5).
//!
//! On a QUIC stream every message travels as a 4-byte big-endian length
//! followed by that many bytes. [`FrameDecoder`] takes bytes as they arrive
//! and yields whole frames; it checks each announced length against the
//! maximum message size before it reserves room for the frame, so a peer
//! cannot make the server allocate more than the limit by announcing a
//! large length. [`encode_header`] and [`encode_frame`] write the prefix.
//!
//! ```
//! use signalbox_quic::framing::{encode_frame, FrameDecoder};
//!
//! let mut wire = bytes::BytesMut::new();
//! encode_frame(b"{\"type\":\"PING\"}", &mut wire).unwrap();
//! encode_frame(b"{\"type\":\"PONG\"}", &mut wire).unwrap();
//!
//! let mut decoder = FrameDecoder::new(1024);
//! // Bytes may arrive in any split.
//! decoder.push(&wire[..7]);
//! assert_eq!(decoder.next_frame().unwrap(), None);
//! decoder.push(&wire[7..]);
//! assert_eq!(decoder.next_frame().unwrap().unwrap(), &b"{\"type\":\"PING\"}"[..]);
//! assert_eq!(decoder.next_frame().unwrap().unwrap(), &b"{\"type\":\"PONG\"}"[..]);
//! assert_eq!(decoder.next_frame().unwrap(), None);
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame's length prefix.
pub const HEADER_LEN: usize = 4;

/// A framing violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame announced a length above the maximum message size.
    #[error("frame of {len} bytes announced, the maximum is {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The maximum message size.
        max: usize,
    },
    /// A frame to send does not fit the 4-byte length prefix.
    #[error("frame of {0} bytes does not fit a 4-byte length")]
    Unencodable(usize),
}

/// Splits a byte stream into frames.
///
/// Holds at most one partial frame plus whatever arrived after it; callers
/// take frames out with [`FrameDecoder::next_frame`] before pushing more,
/// which keeps the buffer under the maximum message size plus one read.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max: max_frame,
            failed: None,
        }
    }

    /// The largest frame accepted.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a frame has begun but not ended: at the end of the stream,
    /// that is a truncated frame.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the decoder stays failed: every later call returns the
    /// same error and pushed bytes are discarded.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut prefix = [0u8; HEADER_LEN];
        prefix.copy_from_slice(header);
        let len = u32::from_be_bytes(prefix);
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        if len_usize > self.max {
            let error = FrameError::TooLarge {
                len: u64::from(len),
                max: self.max,
            };
            self.failed = Some(error.clone());
            self.buf = BytesMut::new();
            return Err(error);
        }
        let total = HEADER_LEN + len_usize;
        if self.buf.len() < total {
            // The length is within the limit: room for the rest of this one
            // frame may be reserved now, once, instead of growing piecemeal.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(self.buf.split_to(len_usize).freeze()))
    }
}

/// The length prefix for a frame of `len` bytes.
pub fn encode_header(len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| FrameError::Unencodable(len))
}

/// Appends `frame` with its length prefix to `out`.
pub fn encode_frame(frame: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    let header = encode_header(frame.len())?;
    out.reserve(HEADER_LEN + frame.len());
    out.put_slice(&header);
    out.put_slice(frame);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&[u8]]) -> BytesMut {
        let mut out = BytesMut::new();
        for f in frames {
            encode_frame(f, &mut out).unwrap();
        }
        out
    }

    fn drain(decoder: &mut FrameDecoder) -> Vec<Bytes> {
        let mut got = Vec::new();
        while let Some(f) = decoder.next_frame().unwrap() {
            got.push(f);
        }
        got
    }

    #[test]
    fn frames_survive_every_split_point() {
        let frames: [&[u8]; 4] = [b"a", b"", b"hello world", &[0u8; 300]];
        let wire = framed(&frames);
        for split in 0..=wire.len() {
            let mut decoder = FrameDecoder::new(1024);
            decoder.push(&wire[..split]);
            let mut got = drain(&mut decoder);
            decoder.push(&wire[split..]);
            got.extend(drain(&mut decoder));
            assert_eq!(got.len(), frames.len(), "split at {split}");
            for (g, f) in got.iter().zip(frames) {
                assert_eq!(&g[..], f);
            }
            assert!(!decoder.has_partial());
        }
    }

    #[test]
    fn frames_survive_byte_by_byte_delivery() {
        let wire = framed(&[b"one", b"two", b"three"]);
        let mut decoder = FrameDecoder::new(16);
        let mut got = Vec::new();
        for b in wire.iter() {
            decoder.push(&[*b]);
            got.extend(drain(&mut decoder));
        }
        assert_eq!(got, vec![&b"one"[..], &b"two"[..], &b"three"[..]]);
    }

    #[test]
    fn a_length_at_the_limit_is_accepted() {
        let body = vec![7u8; 64];
        let wire = framed(&[&body]);
        let mut decoder = FrameDecoder::new(64);
        decoder.push(&wire);
        assert_eq!(decoder.next_frame().unwrap().unwrap(), &body[..]);
    }

    #[test]
    fn an_oversize_length_fails_from_the_header_alone() {
        let mut decoder = FrameDecoder::new(64);
        decoder.push(&65u32.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { len: 65, max: 64 })
        );
    }

    #[test]
    fn a_huge_length_reserves_nothing() {
        let mut decoder = FrameDecoder::new(1024 * 1024);
        decoder.push(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { len, .. }) if len == u64::from(u32::MAX)
        ));
        // Nothing kept, nothing reserved, and later bytes are dropped.
        decoder.push(&[0u8; 4096]);
        assert_eq!(decoder.buffered(), 0);
        assert!(decoder.buf.capacity() < 4096);
    }

    #[test]
    fn a_failed_decoder_stays_failed() {
        let mut decoder = FrameDecoder::new(8);
        decoder.push(&100u32.to_be_bytes());
        let first = decoder.next_frame();
        assert!(first.is_err());
        decoder.push(&framed(&[b"ok"]));
        assert_eq!(decoder.next_frame(), first);
    }

    #[test]
    fn a_partial_frame_is_reported() {
        let wire = framed(&[b"abcdef"]);
        let mut decoder = FrameDecoder::new(64);
        decoder.push(&wire[..6]);
        assert_eq!(decoder.next_frame().unwrap(), None);
        assert!(decoder.has_partial());
    }

    #[test]
    fn header_is_big_endian() {
        assert_eq!(encode_header(0x0102_0304).unwrap(), [1, 2, 3, 4]);
        let mut out = BytesMut::new();
        encode_frame(b"xy", &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 2, b'x', b'y']);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn lengths_past_u32_cannot_be_encoded() {
        let len = u32::MAX as usize + 1;
        assert_eq!(encode_header(len), Err(FrameError::Unencodable(len)));
    }
}
