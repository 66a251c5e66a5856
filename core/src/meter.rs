//! What the hub records for monitoring, through the [`metrics`] facade
//! (the `metrics` cargo feature). The application installs a recorder
//! (e.g. `metrics-exporter-prometheus`) before it builds the hub; the
//! names and labels are listed in docs/DEPLOYMENT.md, "Metrics".
//!
//! Without the feature every type here is empty and every method does
//! nothing, so recording compiles away.
//!
//! Label values are bounded: a message `type` label is one of the router's
//! routes, a reserved type (docs/PROTOCOL.md §1, §4, §6, §7, §8), a type
//! the server's own code sends (`Message::TYPE`, a constant), or `other`;
//! topics are never labels.

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

/// The label of message types no route, reserved type or typed send
/// names.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const OTHER: &str = "other";

#[cfg(feature = "metrics")]
mod on {
    use crate::connection::{Close, ConnectionInfo};
    use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
    use parking_lot::RwLock;
    use signalbox_codec::{ErrorCode, vocab};
    use std::collections::HashMap;
    use std::time::Instant;

    /// Types the hub itself sends or answers, labelled by name.
    const RESERVED: &[&str] = &[
        vocab::ERROR,
        vocab::RPC_ERROR,
        vocab::RPC_PROGRESS,
        vocab::SUBSCRIBED,
        vocab::UNSUBSCRIBED,
        vocab::HEARTBEAT,
        vocab::HEARTBEAT_ACK,
        vocab::RESUME,
        vocab::RESUMED,
    ];

    /// When something started, to measure how long it took.
    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct Stamp(Option<Instant>);

    impl Stamp {
        /// Now.
        pub(crate) fn now() -> Self {
            Stamp(Some(Instant::now()))
        }

        /// No start: nothing is measured.
        pub(crate) fn none() -> Self {
            Stamp(None)
        }
    }

    /// A route's meters: messages received and handler latency.
    pub(crate) struct RouteMeters {
        received: Counter,
        handled: Histogram,
    }

    impl RouteMeters {
        pub(crate) fn new(name: &str) -> Self {
            let ty = name.to_owned();
            RouteMeters {
                received: counter!("signalbox_messages_in_total", "type" => ty.clone()),
                handled: histogram!("signalbox_handler_duration_seconds", "type" => ty),
            }
        }

        /// A message for this route was admitted.
        pub(crate) fn received(&self) {
            self.received.increment(1);
        }

        /// Its handler (with middleware) finished, started at `start`.
        pub(crate) fn handled(&self, start: Stamp) {
            if let Some(at) = start.0 {
                self.handled.record(at.elapsed().as_secs_f64());
            }
        }
    }

    /// The hub's meters.
    pub(crate) struct HubMeter {
        /// Messages queued to connections, by type label.
        sent: RwLock<HashMap<Box<str>, Counter>>,
        sent_other: Counter,
        received_other: Counter,
        rate_limited: Counter,
        slow_consumers: Counter,
        replayed: Counter,
        publish_to_write: Histogram,
    }

    impl HubMeter {
        /// Meters for a hub routing `routes`.
        pub(crate) fn new<'a>(routes: impl Iterator<Item = &'a str>) -> Self {
            describe();
            let sent = routes
                .chain(RESERVED.iter().copied())
                .map(|ty| (Box::from(ty), out_counter(ty.to_owned())))
                .collect();
            HubMeter {
                sent: RwLock::new(sent),
                sent_other: out_counter(super::OTHER.to_owned()),
                received_other: counter!("signalbox_messages_in_total", "type" => super::OTHER),
                rate_limited: counter!("signalbox_rate_limited_total"),
                slow_consumers: counter!("signalbox_slow_consumer_closes_total"),
                replayed: counter!("signalbox_history_replayed_total"),
                publish_to_write: histogram!("signalbox_publish_to_write_seconds"),
            }
        }

        /// A connection opened.
        pub(crate) fn connection_opened(&self, info: &ConnectionInfo) {
            let (transport, codec) = (info.transport, info.codec.name());
            gauge!("signalbox_connections_open", "transport" => transport, "codec" => codec)
                .increment(1.0);
            counter!("signalbox_connections_opened_total", "transport" => transport, "codec" => codec)
                .increment(1);
        }

        /// A connection closed with `close`, which the transport sent as
        /// `code` (when it has close codes).
        pub(crate) fn connection_closed(
            &self,
            info: &ConnectionInfo,
            close: &Close,
            code: Option<u32>,
        ) {
            let (transport, codec) = (info.transport, info.codec.name());
            gauge!("signalbox_connections_open", "transport" => transport, "codec" => codec)
                .decrement(1.0);
            // The close code in the transport's own numbering
            // (docs/PROTOCOL.md §4 for WebSocket, §5 for QUIC), or the
            // kind's name for a transport without codes.
            let code = match code {
                Some(code) => code.to_string(),
                None => close.kind.as_str().to_owned(),
            };
            counter!("signalbox_connections_closed_total", "transport" => transport, "code" => code)
                .increment(1);
        }

        /// A message whose type is neither routed nor reserved arrived (or
        /// one that did not decode).
        pub(crate) fn received_other(&self) {
            self.received_other.increment(1);
        }

        /// A reserved message type arrived.
        pub(crate) fn received_reserved(&self, ty: &'static str) {
            counter!("signalbox_messages_in_total", "type" => ty).increment(1);
        }

        /// `n` messages of a type the server's code names (a constant) were
        /// queued.
        pub(crate) fn sent_typed(&self, ty: &'static str, n: usize) {
            if n == 0 {
                return;
            }
            if let Some(counter) = self.sent.read().get(ty) {
                counter.increment(n as u64);
                return;
            }
            let counter = out_counter(ty);
            counter.increment(n as u64);
            self.sent.write().insert(Box::from(ty), counter);
        }

        /// `n` messages of type `ty` (from anywhere: another node through
        /// the broker) were queued: labelled by type when the type is
        /// known here, `other` if not.
        pub(crate) fn sent(&self, ty: &str, n: usize) {
            if n == 0 {
                return;
            }
            match self.sent.read().get(ty) {
                Some(counter) => counter.increment(n as u64),
                None => self.sent_other.increment(n as u64),
            }
        }

        /// `n` publications were queued from a topic's history (a replay,
        /// or live ones a replay held back).
        pub(crate) fn replayed(&self, n: usize) {
            self.replayed.increment(n as u64);
        }

        /// An error was answered to a peer.
        pub(crate) fn error_answered(&self, code: &ErrorCode) {
            // Application codes are labelled when they are constants of
            // the code; one built at run time could be anything.
            let label = code.as_static_str().unwrap_or("OTHER");
            counter!("signalbox_errors_total", "code" => label).increment(1);
        }

        /// A message was refused by the per-connection rate limit.
        pub(crate) fn rate_limited(&self) {
            self.rate_limited.increment(1);
        }

        /// A connection was closed as a slow consumer.
        pub(crate) fn slow_consumer_closed(&self) {
            self.slow_consumers.increment(1);
        }

        /// Frames were written to a connection; those queued by a publish
        /// carry the publish's stamp.
        pub(crate) fn written(&self, stamps: &[Stamp]) {
            let mut now = None;
            for stamp in stamps {
                if let Some(at) = stamp.0 {
                    let now = *now.get_or_insert_with(Instant::now);
                    self.publish_to_write
                        .record(now.saturating_duration_since(at).as_secs_f64());
                }
            }
        }
    }

    /// The help text of each metric (docs/DEPLOYMENT.md, "Metrics").
    fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_gauge!("signalbox_connections_open", "Connections open now");
        describe_counter!(
            "signalbox_connections_opened_total",
            "Connections accepted after the handshake"
        );
        describe_counter!(
            "signalbox_connections_closed_total",
            "Connections closed, by the transport's close code"
        );
        describe_counter!("signalbox_messages_in_total", "Messages received, by type");
        describe_counter!(
            "signalbox_messages_out_total",
            "Messages queued to connections, by type"
        );
        describe_counter!(
            "signalbox_history_replayed_total",
            "Publications queued from topic history (replays)"
        );
        describe_counter!("signalbox_errors_total", "Error answers sent, by code");
        describe_counter!(
            "signalbox_rate_limited_total",
            "Messages refused by the per-connection rate limit"
        );
        describe_counter!(
            "signalbox_slow_consumer_closes_total",
            "Connections closed as slow consumers"
        );
        describe_gauge!(
            "signalbox_outbound_queued_bytes",
            Unit::Bytes,
            "Bytes queued outbound, over all connections"
        );
        describe_histogram!(
            "signalbox_handler_duration_seconds",
            Unit::Seconds,
            "Middleware and handler time per message, by type"
        );
        describe_histogram!(
            "signalbox_publish_to_write_seconds",
            Unit::Seconds,
            "From a publish to its frame written to a connection"
        );
        describe_gauge!("signalbox_topics", "Topics with a subscriber on this node");
        describe_gauge!("signalbox_subscriptions", "Subscriptions on this node");
    }

    fn out_counter(ty: impl Into<metrics::SharedString>) -> Counter {
        counter!("signalbox_messages_out_total", "type" => ty.into())
    }

    /// Gauges of the hub's topic registry: topics and subscriptions on
    /// this node.
    pub(crate) struct TopicGauges {
        topics: Gauge,
        subscriptions: Gauge,
    }

    impl TopicGauges {
        /// The hub's topics.
        pub(crate) fn topics() -> Self {
            TopicGauges {
                topics: gauge!("signalbox_topics"),
                subscriptions: gauge!("signalbox_subscriptions"),
            }
        }

        /// A subscription was added; `first`: it made a new topic.
        pub(crate) fn added(&self, first: bool) {
            self.subscriptions.increment(1.0);
            if first {
                self.topics.increment(1.0);
            }
        }

        /// A subscription was removed; `last`: its topic is gone.
        pub(crate) fn removed(&self, last: bool) {
            self.subscriptions.decrement(1.0);
            if last {
                self.topics.decrement(1.0);
            }
        }
    }

    /// The gauge of bytes queued outbound, summed over connections.
    #[derive(Debug)]
    pub(crate) struct QueueGauge(Gauge);

    impl QueueGauge {
        pub(crate) fn new() -> Self {
            QueueGauge(gauge!("signalbox_outbound_queued_bytes"))
        }

        pub(crate) fn add(&self, bytes: usize) {
            self.0.increment(bytes as f64);
        }

        pub(crate) fn sub(&self, bytes: usize) {
            if bytes > 0 {
                self.0.decrement(bytes as f64);
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::unused_self)]
mod off {
    use crate::connection::{Close, ConnectionInfo};
    use signalbox_codec::ErrorCode;

    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct Stamp;

    impl Stamp {
        #[inline(always)]
        pub(crate) fn now() -> Self {
            Stamp
        }
        #[inline(always)]
        pub(crate) fn none() -> Self {
            Stamp
        }
    }

    pub(crate) struct RouteMeters;

    impl RouteMeters {
        #[inline(always)]
        pub(crate) fn new(_: &str) -> Self {
            RouteMeters
        }
        #[inline(always)]
        pub(crate) fn received(&self) {}
        #[inline(always)]
        pub(crate) fn handled(&self, _: Stamp) {}
    }

    pub(crate) struct HubMeter;

    impl HubMeter {
        #[inline(always)]
        pub(crate) fn new<'a>(_: impl Iterator<Item = &'a str>) -> Self {
            HubMeter
        }
        #[inline(always)]
        pub(crate) fn connection_opened(&self, _: &ConnectionInfo) {}
        #[inline(always)]
        pub(crate) fn connection_closed(&self, _: &ConnectionInfo, _: &Close, _: Option<u32>) {}
        #[inline(always)]
        pub(crate) fn received_other(&self) {}
        #[inline(always)]
        pub(crate) fn received_reserved(&self, _: &'static str) {}
        #[inline(always)]
        pub(crate) fn sent_typed(&self, _: &'static str, _: usize) {}
        #[inline(always)]
        pub(crate) fn sent(&self, _: &str, _: usize) {}
        #[inline(always)]
        pub(crate) fn replayed(&self, _: usize) {}
        #[inline(always)]
        pub(crate) fn error_answered(&self, _: &ErrorCode) {}
        #[inline(always)]
        pub(crate) fn rate_limited(&self) {}
        #[inline(always)]
        pub(crate) fn slow_consumer_closed(&self) {}
        #[inline(always)]
        pub(crate) fn written(&self, _: &[Stamp]) {}
    }

    pub(crate) struct TopicGauges;

    impl TopicGauges {
        #[inline(always)]
        pub(crate) fn topics() -> Self {
            TopicGauges
        }
        #[inline(always)]
        pub(crate) fn added(&self, _: bool) {}
        #[inline(always)]
        pub(crate) fn removed(&self, _: bool) {}
    }

    #[derive(Debug)]
    pub(crate) struct QueueGauge;

    impl QueueGauge {
        #[inline(always)]
        pub(crate) fn new() -> Self {
            QueueGauge
        }
        #[inline(always)]
        pub(crate) fn add(&self, _: usize) {}
        #[inline(always)]
        pub(crate) fn sub(&self, _: usize) {}
    }
}
