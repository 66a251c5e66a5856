//! signalbox-quic (work in progress).
