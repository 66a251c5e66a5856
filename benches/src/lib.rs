//! signalbox-benches (work in progress).
