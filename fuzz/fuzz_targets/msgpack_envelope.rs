//! The MessagePack envelope decoder on arbitrary bytes: never panics, and what
//! decodes re-encodes to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox_codec::{Codec, Format, MsgPack};
use signalbox_fuzz::{BoundedAlloc, check_roundtrip, frame, plain};

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let bytes = frame(data);
    let _ = MsgPack::probe_correlation_id(data);
    if let Ok(env) = MsgPack::decode_envelope(&bytes) {
        check_roundtrip(&plain(Format::MsgPack), &env);
    }
});
