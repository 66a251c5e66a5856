//! gzip for compressed envelopes (docs/PROTOCOL.md §3), with a hard cap on what
//! inflating may produce.

use crate::DecodeError;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use std::io::{Read, Write};

/// Inflates `gzip`, failing as soon as the output would pass `limit` bytes.
///
/// Memory is bounded by `limit` (plus one read chunk), never by what the
/// stream claims or would inflate to: a gzip bomb stops at `limit + 1`.
pub(crate) fn inflate(gzip: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::with_capacity(gzip.len().saturating_mul(4).min(limit).min(64 * 1024));
    MultiGzDecoder::new(gzip)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Compressed(format!("corrupt gzip data: {e}")))?;
    if out.len() > limit {
        return Err(DecodeError::InflatedTooLarge { limit });
    }
    Ok(out)
}

/// Compresses `data` as one gzip member at `level` (0–9).
pub(crate) fn deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 64),
        Compression::new(level),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflate_stops_a_gzip_bomb_at_the_limit() {
        let bomb = deflate(&vec![0u8; 64 * 1024 * 1024], 9);
        assert!(bomb.len() < 128 * 1024);
        assert_eq!(
            inflate(&bomb, 1 << 20),
            Err(DecodeError::InflatedTooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn inflate_accepts_exactly_the_limit() {
        let data = vec![7u8; 1000];
        assert_eq!(inflate(&deflate(&data, 6), 1000).unwrap(), data);
    }

    #[test]
    fn inflate_rejects_garbage() {
        assert!(matches!(
            inflate(b"not gzip", 100),
            Err(DecodeError::Compressed(_))
        ));
    }
}
