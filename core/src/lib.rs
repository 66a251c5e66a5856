//! signalbox (work in progress).
