//! Shared pieces of the fuzz targets: the codecs under test, a bounded
//! allocator, and the invariants checked on every input that decodes.

use bytes::Bytes;
use signalbox_codec::{CodecLimits, Envelope, Format, Meta, WireCodec};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The maximum message size the targets run with: small, so that gzip
/// bombs reach it within a few milliseconds.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// No single allocation may exceed this. A decoder that sizes a buffer from
/// a length the peer announced shows up here as a crash, whatever the
/// engine's own limits.
pub const MAX_ALLOCATION: usize = 16 * 1024 * 1024;

/// Nor may the live heap exceed this.
pub const MAX_LIVE: usize = 256 * 1024 * 1024;

/// The system allocator with hard caps: an allocation past
/// [`MAX_ALLOCATION`], or a live heap past [`MAX_LIVE`], aborts (which
/// libFuzzer reports as a crash and saves the input).
pub struct BoundedAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);

fn over(what: &[u8]) -> ! {
    // No allocation here: stderr is unbuffered.
    let mut err = std::io::stderr();
    let _ = err.write_all(b"\n== bounded allocator: ");
    let _ = err.write_all(what);
    let _ = err.write_all(b"\n");
    std::process::abort()
}

fn admit(size: usize) {
    if size > MAX_ALLOCATION {
        over(b"one allocation above MAX_ALLOCATION (16 MiB)");
    }
    if LIVE.fetch_add(size, Ordering::Relaxed) + size > MAX_LIVE {
        over(b"live heap above MAX_LIVE (256 MiB)");
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments,
// and only adds bookkeeping.
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        admit(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The limits every target uses.
pub fn limits() -> CodecLimits {
    CodecLimits {
        max_message_size: MAX_MESSAGE,
        compress_threshold: 256,
        compression_level: 1,
    }
}

/// One of the four negotiated codecs, picked by a selector byte.
pub fn codec(selector: u8) -> WireCodec {
    let name = WireCodec::NAMES[usize::from(selector) % WireCodec::NAMES.len()];
    WireCodec::from_name(name)
        .expect("a known codec name")
        .with_limits(limits())
}

/// The uncompressed codec of `format`.
pub fn plain(format: Format) -> WireCodec {
    WireCodec::new(format, false).with_limits(limits())
}

/// Splits a selector byte off the input.
pub fn split(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(s, rest)| (*s, rest))
}

/// What decoded must encode again, and the encoding must decode to the
/// same envelope: type, meta and payload bytes (a payload in the
/// connection's own format is spliced, byte for byte).
pub fn check_roundtrip(codec: &WireCodec, env: &Envelope) {
    let Ok(frame) = codec.encode_raw(&env.ty, &env.meta, env.payload.as_ref(), false) else {
        // Too large once re-encoded (meta keys re-serialized); nothing to check.
        return;
    };
    let back = codec
        .decode(frame.clone())
        .unwrap_or_else(|e| panic!("re-encoded envelope does not decode: {e:?}\n{frame:?}"));
    assert_eq!(back.ty, env.ty);
    assert_eq!(back.meta, env.meta);
    assert_eq!(
        back.payload.as_ref().map(|p| p.as_bytes()),
        env.payload.as_ref().map(|p| p.as_bytes())
    );
}

/// Bytes as a frame.
pub fn frame(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}

/// A meta with a correlation id, for building frames.
pub fn meta_with_id(id: &str) -> Meta {
    Meta {
        correlation_id: Some(id.to_owned()),
        ..Meta::default()
    }
}
