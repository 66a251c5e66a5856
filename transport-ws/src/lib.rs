//! signalbox-ws (work in progress).
