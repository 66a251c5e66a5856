//! The wire vocabulary: every `type` the protocol itself defines, and the
//! rule for which types belong to it (docs/PROTOCOL.md §1).
//!
//! Applications name their own types freely, except that types starting
//! with one of [`RESERVED_PREFIXES`] belong to the protocol. The core, the
//! transports and clients use these constants instead of literals, so the
//! vocabulary is written down once.
//!
//! ```
//! use signalbox_codec::vocab;
//!
//! assert!(vocab::is_reserved(vocab::HEARTBEAT));
//! assert!(vocab::is_reserved("$sb:anything"));
//! assert!(!vocab::is_reserved(vocab::ERROR));
//! assert!(!vocab::is_reserved("SEND_MESSAGE"));
//! ```

/// The `type` of an error answer to anything but a request
/// (docs/PROTOCOL.md §6).
pub const ERROR: &str = "ERROR";

/// The `type` of an error answer to a request (docs/PROTOCOL.md §6,
/// ws-kit's name).
pub const RPC_ERROR: &str = "RPC_ERROR";

/// The `type` of a progress message before a reply (docs/PROTOCOL.md §7).
pub const RPC_PROGRESS: &str = "$ws:rpc-progress";

/// The `type` of a compressed envelope (docs/PROTOCOL.md §3).
pub const COMPRESSED: &str = "COMPRESSED";

/// The `type` a browser sends instead of a ping frame (docs/PROTOCOL.md §4).
pub const HEARTBEAT: &str = "__heartbeat";

/// The answer to [`HEARTBEAT`] (docs/PROTOCOL.md §4).
pub const HEARTBEAT_ACK: &str = "__heartbeat_ack";

/// The `type` of a client's request to resume its topics after a
/// reconnect (docs/PROTOCOL.md §8.1).
pub const RESUME: &str = "$sb:resume";

/// The answer to [`RESUME`] (docs/PROTOCOL.md §8.1).
pub const RESUMED: &str = "$sb:resumed";

/// The `type` of the message that tells a subscriber of a topic with
/// history where it starts (docs/PROTOCOL.md §8.1).
pub const SUBSCRIBED: &str = "$sb:subscribed";

/// The `type` of the message that tells a subscriber of a topic with
/// history that it no longer holds it (docs/PROTOCOL.md §8.1).
pub const UNSUBSCRIBED: &str = "$sb:unsubscribed";

/// The `type` of a presence event: a subscriber joined (docs/PROTOCOL.md §8.2).
pub const PRESENCE_JOIN: &str = "$sb:join";

/// The `type` of a presence event: a subscriber left (docs/PROTOCOL.md §8.2).
pub const PRESENCE_LEAVE: &str = "$sb:leave";

/// The `type` a watcher of a key receives when its value is removed
/// (docs/PROTOCOL.md §8.3).
pub const STATE_REMOVED: &str = "$sb:state-removed";

/// The meta key of a positioned publication's topic (docs/PROTOCOL.md §8).
pub const META_TOPIC: &str = "topic";

/// The meta key of a positioned publication's offset (docs/PROTOCOL.md §8).
pub const META_OFFSET: &str = "offset";

/// The meta key of a positioned publication's epoch (docs/PROTOCOL.md §8).
pub const META_EPOCH: &str = "epoch";

/// Prefixes of the types that belong to the protocol (docs/PROTOCOL.md §1).
pub const RESERVED_PREFIXES: &[&str] = &["$", "__"];

/// Whether `ty` belongs to the protocol: it starts with one of
/// [`RESERVED_PREFIXES`] (docs/PROTOCOL.md §1).
pub fn is_reserved(ty: &str) -> bool {
    RESERVED_PREFIXES
        .iter()
        .any(|prefix| ty.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_rule_covers_both_prefixes_and_nothing_else() {
        assert!(is_reserved("$"));
        assert!(is_reserved("$x"));
        assert!(is_reserved("__"));
        assert!(is_reserved("__x"));
        assert!(!is_reserved("_x"));
        assert!(!is_reserved("x$"));
        assert!(!is_reserved(""));
        assert!(!is_reserved(ERROR));
        assert!(!is_reserved(RPC_ERROR));
        assert!(!is_reserved(COMPRESSED));
    }

    #[test]
    fn every_protocol_type_but_the_error_and_compressed_types_is_reserved() {
        let reserved = [
            RPC_PROGRESS,
            HEARTBEAT,
            HEARTBEAT_ACK,
            RESUME,
            RESUMED,
            SUBSCRIBED,
            UNSUBSCRIBED,
            PRESENCE_JOIN,
            PRESENCE_LEAVE,
            STATE_REMOVED,
        ];
        for ty in reserved {
            assert!(is_reserved(ty), "{ty}");
        }
    }
}
