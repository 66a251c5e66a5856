//! The QUIC transport's length-prefixed framing (`signalbox_quic::framing`,
//! sans-IO) on an arbitrary byte stream delivered in arbitrary pieces.
//!
//! Input: one byte picking the maximum frame size, one byte per read
//! giving the split pattern, then the stream. Checked: no frame above the
//! maximum; what the decoder holds stays within the maximum plus a header
//! plus one read; the frames re-encode to exactly the bytes consumed; an
//! oversize length fails from the header alone and the decoder stays
//! failed.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use signalbox_fuzz::BoundedAlloc;
use signalbox_quic::framing::{FrameDecoder, FrameError, HEADER_LEN, encode_frame};

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let [max_sel, split_sel, stream @ ..] = data else {
        return;
    };
    // 0..=255 bytes, or 1 MiB (the default maximum message size).
    let max = if *max_sel == 255 {
        1 << 20
    } else {
        usize::from(*max_sel)
    };
    let mut decoder = FrameDecoder::new(max);
    let mut reencoded = BytesMut::new();
    let mut pushed = 0usize;
    let mut failure: Option<FrameError> = None;
    let mut rest = stream;
    let mut step = usize::from(*split_sel);
    while !rest.is_empty() {
        let take = (step % 17 + 1).min(rest.len());
        step = step.wrapping_mul(31).wrapping_add(7);
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        decoder.push(chunk);
        pushed += chunk.len();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max);
                    encode_frame(&frame, &mut reencoded).expect("a small frame encodes");
                }
                Ok(None) => break,
                Err(err) => {
                    if let Some(first) = &failure {
                        assert_eq!(first, &err, "a failed decoder stays failed");
                    }
                    assert!(
                        matches!(err, FrameError::TooLarge { len, max: m } if len > m as u64 && m == max)
                    );
                    failure = Some(err);
                    break;
                }
            }
        }
        if failure.is_some() {
            assert_eq!(decoder.buffered(), 0, "a failed decoder keeps nothing");
        } else {
            assert!(decoder.buffered() <= max + HEADER_LEN + take);
            // Everything pushed is either re-encoded or still buffered.
            assert_eq!(reencoded.len() + decoder.buffered(), pushed);
            assert_eq!(&reencoded[..], &stream[..reencoded.len()]);
        }
    }
});
