//! signalbox-redis (work in progress).
