//! signalbox-examples (work in progress).
