//! Encode/decode of a small and a large envelope per codec, with and without gzip.
#![allow(missing_docs)]

fn main() {}
