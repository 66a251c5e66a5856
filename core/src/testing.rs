//! An in-memory transport and a test harness: connect clients to a hub,
//! send them messages, collect what the server sent, and control time.
//!
//! For unit tests of routers and applications; the transports have their
//! own tests over real sockets, and run the [`conformance`] suite.
//!
//! Behind the `testing` feature (off by default): enable it in the
//! `[dev-dependencies]` that use it.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use signalbox::testing::TestHub;
//! use signalbox::{message, Ctx, Router};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Ping { n: u32 }
//! message!(Ping = "PING");
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Pong { n: u32 }
//! message!(Pong = "PONG");
//!
//! # tokio_test_block(async {
//! let router = Router::new().on(|ctx: Ctx<Ping>| async move { ctx.reply(&Pong { n: ctx.payload().n + 1 }) });
//! let hub = TestHub::new(router);
//! let mut client = hub.connect("json").await;
//! client.send(&Ping { n: 1 }).await;
//! let (pong, _meta) = client.expect::<Pong>().await;
//! assert_eq!(pong, Pong { n: 2 });
//! # });
//! # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

// The harness panics on purpose: it is for tests, where a panic is a
// failed assertion with a message.
#![allow(clippy::expect_used)]

pub mod conformance;
mod rss;

pub use rss::{RssSampler, vm_kib};

use crate::clock::ManualClock;
use crate::config::Config;
use crate::connection::{
    Close, Connection, ConnectionInfo, DataMap, Frame, FrameSink, FrameSource, Inbound,
    TransportError,
};
use crate::hub::{Hub, HubBuilder};
use crate::message::Message;
use crate::router::Router;
use async_trait::async_trait;
use bytes::Bytes;
use signalbox_codec::{Envelope, ErrorPayload, Meta, WireCodec};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Frames a test client may have in flight towards the server.
const CLIENT_TO_SERVER: usize = 64;
/// Frames the server may have written that the test client has not read.
const SERVER_TO_CLIENT: usize = 1024;

/// The server end of an in-memory connection.
#[derive(Debug)]
pub struct MemorySource {
    rx: mpsc::Receiver<Inbound>,
}

#[async_trait]
impl FrameSource for MemorySource {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        Ok(self.rx.recv().await)
    }
}

/// The server's write end of an in-memory connection.
#[derive(Debug)]
pub struct MemorySink {
    tx: mpsc::Sender<Bytes>,
    closed: Option<oneshot::Sender<Close>>,
}

#[async_trait]
impl FrameSink for MemorySink {
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        for frame in frames {
            self.tx
                .send(frame.bytes().clone())
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    async fn close(&mut self, close: Close) -> Result<(), TransportError> {
        if let Some(tx) = self.closed.take() {
            let _ = tx.send(close);
        }
        Ok(())
    }
}

/// A pair of in-memory ends: the [`Connection`] for the hub and the
/// [`MemoryPeer`] that plays the client.
pub fn memory_connection(codec: WireCodec) -> (Connection, MemoryPeer) {
    let (in_tx, in_rx) = mpsc::channel(CLIENT_TO_SERVER);
    let (out_tx, out_rx) = mpsc::channel(SERVER_TO_CLIENT);
    let (close_tx, close_rx) = oneshot::channel();
    let connection = Connection {
        info: ConnectionInfo {
            transport: "memory",
            peer_addr: None,
            codec,
        },
        data: DataMap::new(),
        source: Box::new(MemorySource { rx: in_rx }),
        sink: Box::new(MemorySink {
            tx: out_tx,
            closed: Some(close_tx),
        }),
    };
    let peer = MemoryPeer {
        tx: Some(in_tx),
        rx: out_rx,
        closed: close_rx,
        codec,
    };
    (connection, peer)
}

/// The client end of an in-memory connection.
#[derive(Debug)]
pub struct MemoryPeer {
    tx: Option<mpsc::Sender<Inbound>>,
    rx: mpsc::Receiver<Bytes>,
    closed: oneshot::Receiver<Close>,
    codec: WireCodec,
}

/// A hub with a manual clock, for tests.
#[derive(Debug, Clone)]
pub struct TestHub {
    hub: Hub,
    clock: ManualClock,
}

/// The timestamp a [`TestHub`]'s clock starts at.
pub const TEST_EPOCH_MS: u64 = 1_764_160_000_000;

impl TestHub {
    /// A hub for `router` with the default configuration.
    pub fn new(router: Router) -> Self {
        TestHub::with_config(router, Config::default())
    }

    /// A hub for `router` with `config`.
    pub fn with_config(router: Router, config: Config) -> Self {
        let clock = ManualClock::new(TEST_EPOCH_MS);
        let hub = Hub::builder(router)
            .config(config)
            .clock(clock.clone())
            .build();
        TestHub { hub, clock }
    }

    /// A hub from `builder` (router, configuration, broker as set there),
    /// with a manual clock: for tests of a broker, several hubs each with
    /// their own.
    pub fn from_builder(builder: HubBuilder) -> Self {
        let clock = ManualClock::new(TEST_EPOCH_MS);
        let hub = builder.clock(clock.clone()).build();
        TestHub { hub, clock }
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The clock stamped on messages.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Connects a client speaking the codec named `codec` (`json`,
    /// `msgpack+gzip`, …).
    ///
    /// # Panics
    /// On an unknown codec name.
    pub async fn connect(&self, codec: &str) -> TestClient {
        self.connect_with(codec, DataMap::new()).await
    }

    /// Connects a client whose connection starts with `data` (what an
    /// authentication hook would have stored).
    ///
    /// # Panics
    /// On an unknown codec name.
    pub async fn connect_with(&self, codec: &str, data: DataMap) -> TestClient {
        let codec =
            WireCodec::from_name(codec).unwrap_or_else(|| panic!("unknown codec {codec:?}"));
        let codec = self.hub.codec(codec);
        let (mut connection, peer) = memory_connection(codec);
        connection.data = data;
        tokio::spawn(self.hub.serve(connection));
        // Let the driver register the connection and run on_open.
        tokio::task::yield_now().await;
        TestClient {
            peer,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A client of a [`TestHub`].
#[derive(Debug)]
pub struct TestClient {
    peer: MemoryPeer,
    timeout: Duration,
}

impl TestClient {
    /// The client's codec.
    pub fn codec(&self) -> &WireCodec {
        &self.peer.codec
    }

    /// Sends a message with no meta.
    pub async fn send<M: Message>(&mut self, msg: &M) {
        self.send_meta(msg, Meta::default()).await;
    }

    /// Sends a message with `meta`.
    ///
    /// # Panics
    /// If the message cannot be encoded.
    pub async fn send_meta<M: Message>(&mut self, msg: &M, meta: Meta) {
        let frame = msg
            .encode(&self.peer.codec, &meta, true)
            .expect("encodable test message");
        self.send_raw(frame).await;
    }

    /// Sends a request with correlationId `id`.
    pub async fn request<M: Message>(&mut self, msg: &M, id: &str) {
        let meta = Meta {
            correlation_id: Some(id.to_owned()),
            ..Meta::default()
        };
        self.send_meta(msg, meta).await;
    }

    /// Sends raw bytes as one frame.
    pub async fn send_raw(&mut self, frame: impl Into<Bytes>) {
        if let Some(tx) = &self.peer.tx {
            let _ = tx.send(Inbound::Message(frame.into())).await;
        }
    }

    /// Sends a transport-level sign of life (a pong).
    pub async fn alive(&mut self) {
        if let Some(tx) = &self.peer.tx {
            let _ = tx.send(Inbound::Alive).await;
        }
    }

    /// Closes the client's side, as a peer hanging up.
    pub fn hang_up(&mut self) {
        self.peer.tx = None;
    }

    /// How long `recv` waits before giving up (default 5 s; tokio's paused
    /// clock advances through it instantly when nothing else runs).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The next frame the server sent, raw; `None` on timeout or when the
    /// server is done writing.
    pub async fn recv_raw(&mut self) -> Option<Bytes> {
        tokio::time::timeout(self.timeout, self.peer.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message the server sent, decoded; `None` on timeout or when
    /// the server is done writing.
    ///
    /// # Panics
    /// If the server sent something the client's codec cannot decode.
    pub async fn recv(&mut self) -> Option<Envelope> {
        let frame = self.recv_raw().await?;
        Some(
            self.peer
                .codec
                .decode(frame)
                .expect("server sent a decodable envelope"),
        )
    }

    /// The next message, which must be of type `M`.
    ///
    /// # Panics
    /// If nothing came, or something else did.
    pub async fn expect<M: Message>(&mut self) -> (M, Meta) {
        let envelope = self
            .recv()
            .await
            .unwrap_or_else(|| panic!("expected {}, got nothing", M::TYPE));
        assert_eq!(
            envelope.ty,
            M::TYPE,
            "expected {}, got {envelope:?}",
            M::TYPE
        );
        let msg = M::decode(envelope.payload.as_ref()).expect("payload decodes");
        (msg, envelope.meta)
    }

    /// The next message, which must be an `ERROR` or `RPC_ERROR` of type `ty`.
    ///
    /// # Panics
    /// If nothing came, or something else did.
    pub async fn expect_error(&mut self, ty: &str) -> (ErrorPayload, Meta) {
        let envelope = self
            .recv()
            .await
            .unwrap_or_else(|| panic!("expected {ty}, got nothing"));
        assert_eq!(envelope.ty, ty, "expected {ty}, got {envelope:?}");
        let payload: ErrorPayload = envelope.decode_payload().expect("error payload decodes");
        (payload, envelope.meta)
    }

    /// Asserts nothing arrives within `wait`.
    ///
    /// # Panics
    /// If something does.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(frame)) = tokio::time::timeout(wait, self.peer.rx.recv()).await {
            panic!("expected silence, got {:?}", self.peer.codec.decode(frame));
        }
    }

    /// Waits for the server to close the connection and returns how.
    pub async fn closed(&mut self) -> Option<Close> {
        let closed = &mut self.peer.closed;
        tokio::time::timeout(self.timeout, closed)
            .await
            .ok()
            .and_then(Result::ok)
    }
}
