//! A conformance suite for transports: what every transport must carry
//! through the seam of [`crate::transport`] for docs/PROTOCOL.md to hold,
//! checked over the transport itself.
//!
//! The suite owns its router, its messages and each check's
//! configuration. A transport under test implements [`Transport`]: serve a
//! [`Hub`] (a listener on loopback) and hand out a
//! [`Connector`] per codec name, the same client seam a
//! [`Client`](crate::client::Client) uses. Each check then opens
//! connections through it and talks to the hub:
//!
//! | check | what it asks of the transport |
//! |---|---|
//! | `routing` | a typed message reaches its handler and the reply comes back, with the correlationId (§1, §7) |
//! | `codecs` | every codec it offers round-trips payloads exactly; `+gzip` clients get compressed envelopes above the threshold, others never; compressed input is unwrapped for every client; a topic reaches each member in its own codec (§1, §2, §3) |
//! | `errors` | unknown type, malformed envelope, invalid payload, reserved type → `ERROR`; invalid request payload and handler error → `RPC_ERROR`, each with its code and correlationId; the connection survives (§6) |
//! | `ordering` | messages of one connection handled and answered in order; publications reach each subscriber in order (§8) |
//! | `backpressure` | a subscriber that does not read is closed as a slow consumer (policy) while the server stays up and a reading subscriber of the same topic gets everything; under a drop policy it is kept, and misses what is dropped, counted (§4, §8) |
//! | `close_codes` | each close the server makes reaches the client as [`PeerClose`] with the transport's code, shutdown included (§4, §5) |
//! | `heartbeat` | a silent peer is closed (policy, by the hub) unless the transport does liveness itself; a peer sending `__heartbeat` is answered and kept (§4, §5) |
//!
//! A transport's tests make one `#[tokio::test]` per check with
//! [`conformance_tests!`](crate::conformance_tests), so that a failure
//! names its check; [`run`] runs them all and returns a [`Report`].
//!
//! ```
//! use signalbox::testing::conformance::{self, Memory};
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! conformance::run_check(&Memory, "routing").await.unwrap();
//! # });
//! ```

use super::memory_connection;
use crate::client::{ConnectError, Connector, Link};
use crate::config::Config;
use crate::connection::{
    Close, CloseKind, Frame, FrameSink, FrameSource, HEARTBEAT_ACK_TYPE, HEARTBEAT_TYPE, Inbound,
    OverflowPolicy, PeerClose, TransportError,
};
use crate::context::{ERROR_TYPE, RPC_ERROR_TYPE};
use crate::hub::Hub;
use crate::message::Message;
use crate::router::Router;
use crate::{ConnectionHandle, Ctx, Error};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use signalbox_codec::{Envelope, ErrorCode, ErrorPayload, Format, Meta, WireCodec};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long a check waits for anything the server should send, or for a
/// connection to end. Wide: CI machines are loaded.
const WAIT: Duration = Duration::from_secs(10);

/// The checks, by name, in the order [`run`] runs them.
pub const CHECKS: [&str; 7] = [
    "routing",
    "codecs",
    "errors",
    "ordering",
    "backpressure",
    "close_codes",
    "heartbeat",
];

/// A transport under test.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Serves `hub` on a new server (a listener on loopback) and returns
    /// how clients reach it. The server may stop when the endpoint is
    /// dropped; the suite shuts the hub down after each check.
    async fn serve(&self, hub: Hub) -> Result<Box<dyn Endpoint>, String>;

    /// The codec names its clients may ask for. Default: the four
    /// built-in codecs (docs/PROTOCOL.md §2).
    fn codecs(&self) -> Vec<&'static str> {
        WireCodec::NAMES.to_vec()
    }

    /// The code a client is shown ([`PeerClose::code`]) when the server
    /// closes a connection with `kind` (WebSocket: docs/PROTOCOL.md §4;
    /// QUIC: §5); `None` when the transport has no way to tell its
    /// clients why (then only the end of the connection is checked).
    fn close_code(&self, kind: CloseKind) -> Option<u16>;

    /// Whether the transport detects dead peers itself
    /// ([`FrameSource::liveness_by_transport`] of its server side): then a
    /// silent peer must be kept, not closed. Default false.
    fn liveness_by_transport(&self) -> bool {
        false
    }
}

/// A hub served by a [`Transport`]: how clients reach it.
pub trait Endpoint: Send + Sync {
    /// A connector to this server speaking the codec named `codec`.
    fn connector(&self, codec: &str) -> Result<Box<dyn Connector>, ConnectError>;
}

/// A check that failed: which, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conformance check `{check}` failed: {message}")]
pub struct CheckFailure {
    /// The check's name (one of [`CHECKS`]).
    pub check: String,
    /// What went wrong.
    pub message: String,
}

/// The result of one check in a [`Report`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The check's name.
    pub check: &'static str,
    /// Passed, or why not.
    pub result: Result<(), CheckFailure>,
    /// How long it took.
    pub elapsed: Duration,
}

/// What [`run`] found: one [`Outcome`] per check.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The outcomes, in the order of [`CHECKS`].
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.result.is_ok())
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckFailure> {
        self.outcomes.iter().filter_map(|o| o.result.as_ref().err())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for outcome in &self.outcomes {
            let secs = outcome.elapsed.as_secs_f64();
            match &outcome.result {
                Ok(()) => writeln!(f, "ok     {} ({secs:.2} s)", outcome.check)?,
                Err(failure) => writeln!(
                    f,
                    "FAILED {} ({secs:.2} s): {}",
                    outcome.check, failure.message
                )?,
            }
        }
        Ok(())
    }
}

/// Runs every check against `transport`, one after the other.
pub async fn run(transport: &dyn Transport) -> Report {
    let mut report = Report::default();
    for check in CHECKS {
        let started = Instant::now();
        let result = run_check(transport, check).await;
        report.outcomes.push(Outcome {
            check,
            result,
            elapsed: started.elapsed(),
        });
    }
    report
}

/// Runs the check named `check` (one of [`CHECKS`]) against `transport`,
/// on a hub of its own that is shut down afterwards.
pub async fn run_check(transport: &dyn Transport, check: &str) -> Result<(), CheckFailure> {
    let failure = |message: String| CheckFailure {
        check: check.to_owned(),
        message,
    };
    let mut config = Config::default();
    match check {
        "codecs" => config.codec.compress_threshold = 512,
        "backpressure" => {
            config.outbound_queue_bytes = 64 * 1024;
            config.rate_limit = None;
        }
        "heartbeat" => {
            config.heartbeat_interval = Duration::from_millis(300);
            config.heartbeat_timeout = Duration::from_millis(700);
        }
        "routing" | "errors" | "ordering" | "close_codes" => {}
        other => return Err(failure(format!("no check named {other:?}"))),
    }
    let suite = Suite::start(transport, config).await.map_err(failure)?;
    let result = match check {
        "routing" => routing(&suite).await,
        "codecs" => codecs(&suite).await,
        "errors" => errors(&suite).await,
        "ordering" => ordering(&suite).await,
        "backpressure" => backpressure(&suite).await,
        "close_codes" => close_codes(&suite).await,
        _ => heartbeat(&suite).await,
    };
    suite.stop().await;
    result.map_err(failure)
}

/// Makes one `#[tokio::test]` per conformance check
/// ([`testing::conformance`](crate::testing::conformance)) for a transport:
/// `conformance_tests!(MyTransport::new())` for all of them, or
/// `conformance_tests!(MyTransport::new() => routing, errors)` for some.
/// The expression is evaluated in each test; it must give a value whose
/// reference is a `&dyn Transport`. The tests run on tokio's multi-thread
/// runtime: the calling crate needs tokio with its `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($transport:expr) => {
        $crate::conformance_tests!(
            $transport => routing, codecs, errors, ordering, backpressure, close_codes, heartbeat
        );
    };
    ($transport:expr => $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let transport = $transport;
                if let ::core::result::Result::Err(failure) =
                    $crate::testing::conformance::run_check(&transport, ::core::stringify!($check))
                        .await
                {
                    ::core::panic!("{failure}");
                }
            }
        )+
    };
}

// ---------------------------------------------------------------------------
// The suite's messages and router.

crate::opaque_message!(Echo = "ECHO");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ping {
    n: u64,
}
crate::message!(Ping = "PING");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pong {
    n: u64,
}
crate::message!(Pong = "PONG");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}
crate::message!(Add = "ADD");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sum {
    sum: i64,
}
crate::message!(Sum = "SUM");

/// Answered with `RPC_ERROR` `NOT_FOUND`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fail;
crate::message!(Fail = "FAIL");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Join {
    topic: String,
}
crate::message!(Join = "JOIN");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Joined {
    topic: String,
}
crate::message!(Joined = "JOINED");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seq {
    i: u64,
}
crate::message!(Seq = "SEQ");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SeqAck {
    i: u64,
}
crate::message!(SeqAck = "SEQ_ACK");

/// Published by the suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tick {
    n: u64,
    text: String,
}
crate::message!(Tick = "TICK");

/// Asks the server to close this connection with the kind at `kind` in
/// [`CLOSE_KINDS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CloseMe {
    kind: usize,
}
crate::message!(CloseMe = "CLOSE_ME");

const CLOSE_KINDS: [CloseKind; 7] = [
    CloseKind::Normal,
    CloseKind::GoingAway,
    CloseKind::Protocol,
    CloseKind::InvalidData,
    CloseKind::Policy,
    CloseKind::TooBig,
    CloseKind::Internal,
];

/// The reason of the closes `CLOSE_ME` asks for.
const CLOSE_REASON: &str = "closed by the conformance suite";

type Closes = Arc<Mutex<Vec<Close>>>;

fn router(closes: Closes) -> Router {
    Router::new()
        .rpc(|ctx: Ctx<Echo>| async move { Ok::<_, Error>(ctx.into_payload()) })
        .on(|ctx: Ctx<Ping>| async move {
            ctx.reply(&Pong {
                n: ctx.payload().n + 1,
            })
        })
        .rpc(|ctx: Ctx<Add>| async move {
            let Add { a, b } = ctx.payload();
            Ok::<_, Error>(Sum { sum: a + b })
        })
        .rpc(|_ctx: Ctx<Fail>| async move {
            Err::<Sum, _>(Error::not_found("the conformance suite's FAIL"))
        })
        .on(|ctx: Ctx<Join>| async move {
            let topic = ctx.payload().topic.clone();
            ctx.subscribe(&topic)?;
            ctx.reply(&Joined { topic })
        })
        .on(|ctx: Ctx<Seq>| async move { ctx.reply(&SeqAck { i: ctx.payload().i }) })
        .on(|ctx: Ctx<CloseMe>| async move {
            let kind = CLOSE_KINDS
                .get(ctx.payload().kind)
                .copied()
                .ok_or_else(|| Error::invalid_argument("no such close kind"))?;
            ctx.conn().close(Close::new(kind, CLOSE_REASON));
            Ok::<_, Error>(())
        })
        .on_close(move |_conn, close| {
            closes.lock().push(close);
            async {}
        })
}

// ---------------------------------------------------------------------------
// A check's hub and its clients.

struct Suite<'t> {
    transport: &'t dyn Transport,
    hub: Hub,
    endpoint: Box<dyn Endpoint>,
    closes: Closes,
}

impl<'t> Suite<'t> {
    async fn start(transport: &'t dyn Transport, config: Config) -> Result<Self, String> {
        let closes = Closes::default();
        let hub = Hub::builder(router(closes.clone())).config(config).build();
        let endpoint = transport
            .serve(hub.clone())
            .await
            .map_err(|e| format!("the transport could not serve the hub: {e}"))?;
        Ok(Suite {
            transport,
            hub,
            endpoint,
            closes,
        })
    }

    /// The first codec the transport offers.
    fn first_codec(&self) -> Result<&'static str, String> {
        self.transport
            .codecs()
            .first()
            .copied()
            .ok_or_else(|| "the transport offers no codec".to_owned())
    }

    async fn open(&self, codec: &str) -> Result<Peer, String> {
        let connector = self
            .endpoint
            .connector(codec)
            .map_err(|e| format!("{codec}: no connector: {e}"))?;
        let link = tokio::time::timeout(WAIT, connector.connect())
            .await
            .map_err(|_| format!("{codec}: connecting took over {WAIT:?}"))?
            .map_err(|e| format!("{codec}: connecting failed: {e}"))?;
        let codec = connector.codec();
        if !self.transport.codecs().contains(&codec.name()) {
            return Err(format!("the connector speaks {}", codec.name()));
        }
        Ok(Peer {
            link,
            codec,
            label: codec.name().to_owned(),
        })
    }

    /// The closes the server made so far.
    fn closes(&self) -> Vec<Close> {
        self.closes.lock().clone()
    }

    /// Waits until the server made `n` closes.
    async fn closes_reach(&self, n: usize) -> Result<Vec<Close>, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let closes = self.closes();
            if closes.len() >= n {
                return Ok(closes);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the server made {} closes, expected {n}: {closes:?}",
                    closes.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Checks that a close of `kind` reached `peer` as the transport says.
    async fn expect_close(&self, peer: &mut Peer, kind: CloseKind) -> Result<(), String> {
        let close = peer.ended().await?;
        match (self.transport.close_code(kind), close) {
            (None, _) => Ok(()),
            (Some(code), Some(close)) if close.code == code => Ok(()),
            (Some(code), close) => Err(format!(
                "{}: a {kind:?} close should reach the client as code {code}, it saw {close:?}",
                peer.label
            )),
        }
    }

    async fn stop(self) {
        drop(self.endpoint);
        let _ = tokio::time::timeout(WAIT, self.hub.shutdown()).await;
    }
}

/// A client connection of the suite, over the transport's [`Link`].
struct Peer {
    link: Link,
    codec: WireCodec,
    label: String,
}

impl Peer {
    /// Writes one frame as it is. Every frame the suite sends goes through
    /// here.
    async fn send_frame(&mut self, frame: Bytes) -> Result<(), String> {
        self.link
            .sink
            .send_batch(&[Frame::new(frame)])
            .await
            .map_err(|e| format!("{}: sending failed: {e}", self.label))
    }

    async fn send<M: Message>(
        &mut self,
        msg: &M,
        correlation_id: Option<&str>,
    ) -> Result<(), String> {
        let frame = msg
            .encode(&self.codec, &meta(correlation_id), true)
            .map_err(|e| format!("encoding {}: {e}", M::TYPE))?;
        self.send_frame(frame).await
    }

    /// Sends an envelope of type `ty` with any payload.
    async fn send_value(
        &mut self,
        ty: &str,
        correlation_id: Option<&str>,
        payload: Option<&serde_json::Value>,
    ) -> Result<(), String> {
        let frame = self
            .codec
            .encode(ty, &meta(correlation_id), payload)
            .map_err(|e| format!("encoding {ty}: {e}"))?;
        self.send_frame(frame).await
    }

    /// The next message the server sent, as it came.
    async fn recv_frame(&mut self) -> Result<Bytes, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.link.source.recv()).await {
                Err(_) => return Err(format!("{}: nothing came within {WAIT:?}", self.label)),
                Ok(Ok(Some(Inbound::Message(frame)))) => return Ok(frame),
                Ok(Ok(Some(Inbound::Alive))) => {}
                Ok(Ok(Some(Inbound::Refused(refused)))) => {
                    return Err(format!(
                        "{}: the client's link reported a refusal: {refused:?}",
                        self.label
                    ));
                }
                Ok(Ok(None)) => {
                    return Err(format!(
                        "{}: the connection ended ({:?})",
                        self.label,
                        self.link.source.peer_close()
                    ));
                }
                Ok(Err(e)) => return Err(format!("{}: reading failed: {e}", self.label)),
            }
        }
    }

    async fn recv(&mut self) -> Result<Envelope, String> {
        let frame = self.recv_frame().await?;
        self.codec
            .decode(frame)
            .map_err(|f| format!("{}: undecodable message: {}", self.label, f.error))
    }

    /// The next message, which must be an `M` answering `correlation_id`.
    async fn expect<M: Message>(&mut self, correlation_id: Option<&str>) -> Result<M, String> {
        let envelope = self.recv().await?;
        if envelope.ty != M::TYPE || envelope.meta.correlation_id.as_deref() != correlation_id {
            return Err(format!(
                "{}: expected {} with correlationId {correlation_id:?}, got {} with {:?}",
                self.label,
                M::TYPE,
                envelope.ty,
                envelope.meta.correlation_id
            ));
        }
        if envelope.meta.timestamp.is_none() {
            return Err(format!("{}: {} carries no timestamp", self.label, M::TYPE));
        }
        M::decode(envelope.payload.as_ref())
            .map_err(|e| format!("{}: {} payload: {e}", self.label, M::TYPE))
    }

    /// The next message, which must be an error of type `ty` (`ERROR` or
    /// `RPC_ERROR`) with `code`, answering `correlation_id`.
    async fn expect_error(
        &mut self,
        ty: &str,
        code: ErrorCode,
        correlation_id: Option<&str>,
    ) -> Result<ErrorPayload, String> {
        let envelope = self.recv().await?;
        let payload: ErrorPayload = envelope
            .decode_payload()
            .map_err(|e| format!("{}: {} payload: {e}", self.label, envelope.ty))?;
        if envelope.ty != ty
            || payload.code != code
            || envelope.meta.correlation_id.as_deref() != correlation_id
        {
            return Err(format!(
                "{}: expected {ty} {code} with correlationId {correlation_id:?}, got {} {} ({}) with {:?}",
                self.label,
                envelope.ty,
                payload.code,
                payload.message,
                envelope.meta.correlation_id
            ));
        }
        Ok(payload)
    }

    /// A round trip: the connection is open and served.
    async fn echo(&mut self, id: &str) -> Result<(), String> {
        let payload = serde_json::json!({ "echo": id });
        self.send_value(Echo::TYPE, Some(id), Some(&payload))
            .await?;
        let reply = self.recv().await?;
        let back: serde_json::Value = reply
            .decode_payload()
            .map_err(|e| format!("{}: echo payload: {e}", self.label))?;
        if reply.ty != Echo::TYPE
            || reply.meta.correlation_id.as_deref() != Some(id)
            || back != payload
        {
            return Err(format!(
                "{}: echo {id} answered with {} {:?} {back}",
                self.label, reply.ty, reply.meta.correlation_id
            ));
        }
        Ok(())
    }

    /// Reads and discards until the connection ends; the close the server
    /// sent, as the transport reports it.
    async fn ended(&mut self) -> Result<Option<PeerClose>, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.link.source.recv()).await {
                Err(_) => {
                    return Err(format!(
                        "{}: the connection is still open after {WAIT:?}",
                        self.label
                    ));
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None) | Err(_)) => return Ok(self.link.source.peer_close()),
            }
        }
    }
}

fn meta(correlation_id: Option<&str>) -> Meta {
    Meta {
        correlation_id: correlation_id.map(str::to_owned),
        ..Meta::default()
    }
}

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(message()) }
}

// ---------------------------------------------------------------------------
// The checks.

/// docs/PROTOCOL.md §1, §7: a typed message reaches its handler, the reply
/// comes back stamped and with the correlationId.
async fn routing(suite: &Suite<'_>) -> Result<(), String> {
    let mut peer = suite.open(suite.first_codec()?).await?;
    peer.send(&Ping { n: 41 }, None).await?;
    let pong: Pong = peer.expect(None).await?;
    ensure(pong.n == 42, || format!("PING 41 answered with {pong:?}"))?;
    peer.send(&Ping { n: 1 }, Some("r-1")).await?;
    let pong: Pong = peer.expect(Some("r-1")).await?;
    ensure(pong.n == 2, || format!("PING 1 answered with {pong:?}"))?;
    peer.send(&Add { a: 2, b: 3 }, Some("r-2")).await?;
    let sum: Sum = peer.expect(Some("r-2")).await?;
    ensure(sum.sum == 5, || format!("ADD 2 3 answered with {sum:?}"))?;
    peer.echo("r-3").await?;
    ensure(suite.hub.connection_count() == 1, || {
        format!(
            "the hub serves {} connections for one client",
            suite.hub.connection_count()
        )
    })
}

/// docs/PROTOCOL.md §2, §3.
async fn codecs(suite: &Suite<'_>) -> Result<(), String> {
    let mut members = Vec::new();
    for name in suite.transport.codecs() {
        let mut peer = suite.open(name).await?;
        ensure(peer.codec.name() == name, || {
            format!("asked for {name}, got {}", peer.codec.name())
        })?;
        // A payload round-trips.
        let payload = serde_json::json!({
            "n": 1, "big": u64::MAX, "f": 0.1, "s": "ünï ✓", "list": [1, 2.5, null, true]
        });
        peer.send_value(Echo::TYPE, Some("c-1"), Some(&payload))
            .await?;
        let reply = peer.recv().await?;
        let back: serde_json::Value = reply.decode_payload().map_err(|e| e.to_string())?;
        ensure(back == payload, || format!("{name}: echo gave {back}"))?;
        // Above the threshold (512 bytes) only gzip clients get a
        // compressed envelope; below it nobody does.
        for (size, compressed) in [(100, false), (2000, peer.codec.gzip())] {
            let payload = serde_json::Value::String("a".repeat(size));
            let id = format!("c-{size}");
            peer.send_value(Echo::TYPE, Some(&id), Some(&payload))
                .await?;
            let raw = peer.recv_frame().await?;
            let on_wire = raw.windows(10).any(|w| w == b"COMPRESSED");
            ensure(on_wire == compressed, || {
                format!("{name}: a {size}-byte reply compressed: {on_wire}")
            })?;
            let reply = peer.codec.decode(raw).map_err(|f| f.error.to_string())?;
            let back: serde_json::Value = reply.decode_payload().map_err(|e| e.to_string())?;
            ensure(
                back == payload && reply.meta.correlation_id.as_deref() == Some(&id),
                || format!("{name}: the {size}-byte echo came back changed"),
            )?;
        }
        // A compressed message is unwrapped before routing, whatever the
        // client's codec.
        let payload = serde_json::Value::String("b".repeat(3000));
        let frame = WireCodec::new(peer.codec.format(), true)
            .encode(Echo::TYPE, &meta(Some("c-in")), Some(&payload))
            .map_err(|e| e.to_string())?;
        ensure(frame.windows(10).any(|w| w == b"COMPRESSED"), || {
            format!("{name}: the gzip form of the codec did not compress")
        })?;
        peer.send_frame(frame).await?;
        let reply = peer.recv().await?;
        let back: serde_json::Value = reply.decode_payload().map_err(|e| e.to_string())?;
        ensure(back == payload, || {
            format!("{name}: a compressed request was not unwrapped")
        })?;
        peer.send(
            &Join {
                topic: "codecs".into(),
            },
            Some("j"),
        )
        .await?;
        peer.expect::<Joined>(Some("j")).await?;
        members.push(peer);
    }
    // One publication reaches each member in its own codec.
    let tick = Tick {
        n: 7,
        text: "ünï".into(),
    };
    let queued = suite
        .hub
        .publish("codecs", &tick)
        .await
        .map_err(|e| e.to_string())?;
    ensure(queued == members.len(), || {
        format!("published to {queued} of {} members", members.len())
    })?;
    for member in &mut members {
        let got: Tick = member.expect(None).await?;
        ensure(got == tick, || format!("{}: got {got:?}", member.label))?;
    }
    Ok(())
}

/// docs/PROTOCOL.md §6.
async fn errors(suite: &Suite<'_>) -> Result<(), String> {
    let mut peers = Vec::new();
    for name in suite.transport.codecs() {
        let mut peer = suite.open(name).await?;
        // No route for the type.
        peer.send_value("NO_SUCH_TYPE", Some("e-1"), None).await?;
        peer.expect_error(ERROR_TYPE, ErrorCode::Unimplemented, Some("e-1"))
            .await?;
        // Bytes that are no envelope in any codec.
        peer.send_frame(Bytes::from_static(b"}{ not an envelope"))
            .await?;
        peer.expect_error(ERROR_TYPE, ErrorCode::InvalidArgument, None)
            .await?;
        // An envelope with a key the protocol does not have: the
        // correlationId is still read and carried back.
        if peer.codec.format() == Format::Json {
            let frame = Bytes::from_static(
                br#"{"type":"ECHO","meta":{"correlationId":"e-2"},"payload":1,"extra":true}"#,
            );
            peer.send_frame(frame).await?;
            peer.expect_error(ERROR_TYPE, ErrorCode::InvalidArgument, Some("e-2"))
                .await?;
        }
        // A payload of the wrong shape, on an ordered route: ERROR naming
        // the field.
        let wrong = serde_json::json!({"n": "not a number"});
        peer.send_value(Ping::TYPE, Some("e-3"), Some(&wrong))
            .await?;
        let error = peer
            .expect_error(ERROR_TYPE, ErrorCode::InvalidArgument, Some("e-3"))
            .await?;
        let path = error
            .details
            .as_ref()
            .and_then(|d| d.get("path"))
            .and_then(|p| p.as_str());
        ensure(path == Some("payload.n"), || {
            format!("{name}: an invalid PING payload names {path:?}, not payload.n")
        })?;
        // ... and on a request route: RPC_ERROR.
        let wrong = serde_json::json!({"a": 1});
        peer.send_value(Add::TYPE, Some("e-4"), Some(&wrong))
            .await?;
        peer.expect_error(RPC_ERROR_TYPE, ErrorCode::InvalidArgument, Some("e-4"))
            .await?;
        // A handler's error, with its code.
        peer.send(&Fail, Some("e-5")).await?;
        peer.expect_error(RPC_ERROR_TYPE, ErrorCode::NotFound, Some("e-5"))
            .await?;
        // A reserved type a client may not send.
        peer.send_value("$sb:not-for-clients", Some("e-6"), None)
            .await?;
        peer.expect_error(ERROR_TYPE, ErrorCode::InvalidArgument, Some("e-6"))
            .await?;
        // The connection survived all of it.
        peer.echo("e-7").await?;
        peers.push(peer);
    }
    let closes = suite.closes();
    ensure(closes.is_empty(), || {
        format!("errors closed connections: {closes:?}")
    })
}

/// Messages each check sends in a row.
const IN_A_ROW: u64 = 500;

/// docs/PROTOCOL.md §8: order per connection, and per topic.
async fn ordering(suite: &Suite<'_>) -> Result<(), String> {
    let codecs = suite.transport.codecs();
    let mut peer = suite.open(suite.first_codec()?).await?;
    for i in 0..IN_A_ROW {
        peer.send(&Seq { i }, None).await?;
    }
    for i in 0..IN_A_ROW {
        let ack: SeqAck = peer.expect(None).await?;
        ensure(ack.i == i, || format!("answer {i} was {ack:?}"))?;
    }
    let mut subscribers = Vec::new();
    for name in [codecs.first(), codecs.last()].into_iter().flatten() {
        let mut subscriber = suite.open(name).await?;
        subscriber
            .send(
                &Join {
                    topic: "order".into(),
                },
                Some("j"),
            )
            .await?;
        subscriber.expect::<Joined>(Some("j")).await?;
        subscribers.push(subscriber);
    }
    for n in 0..IN_A_ROW {
        let tick = Tick {
            n,
            text: String::new(),
        };
        suite
            .hub
            .publish("order", &tick)
            .await
            .map_err(|e| e.to_string())?;
    }
    for subscriber in &mut subscribers {
        for n in 0..IN_A_ROW {
            let tick: Tick = subscriber.expect(None).await?;
            ensure(tick.n == n, || {
                format!("{}: publication {n} was {}", subscriber.label, tick.n)
            })?;
        }
    }
    Ok(())
}

/// At most how many bytes the backpressure check publishes before it
/// gives up waiting for the slow consumer to be closed.
const FLOOD_LIMIT: usize = 256 << 20;

/// docs/PROTOCOL.md §4 (slow consumers), §8.
async fn backpressure(suite: &Suite<'_>) -> Result<(), String> {
    let codec = suite.first_codec()?;
    let mut slow = suite.open(codec).await?;
    slow.send(
        &Join {
            topic: "flood".into(),
        },
        Some("j"),
    )
    .await?;
    slow.expect::<Joined>(Some("j")).await?;
    let mut fast = suite.open(codec).await?;
    fast.send(
        &Join {
            topic: "flood".into(),
        },
        Some("j"),
    )
    .await?;
    fast.expect::<Joined>(Some("j")).await?;
    // One 32 KiB publication at a time, read by `fast` before the next:
    // its queue (64 KiB) never fills, while `slow`, never read, fills the
    // transport's buffers and then its queue.
    let text = "x".repeat(32 * 1024);
    let mut published = 0;
    let mut n = 0;
    while suite.closes().is_empty() {
        ensure(published < FLOOD_LIMIT, || {
            format!("{published} bytes published and the reader that does not read is still open")
        })?;
        let tick = Tick {
            n,
            text: text.clone(),
        };
        suite
            .hub
            .publish("flood", &tick)
            .await
            .map_err(|e| e.to_string())?;
        let got: Tick = fast.expect(None).await?;
        ensure(got.n == n, || format!("the reader got {} for {n}", got.n))?;
        published += text.len();
        n += 1;
    }
    let closes = suite.closes();
    ensure(
        closes.len() == 1
            && closes[0].kind == CloseKind::Policy
            && closes[0].reason.contains("slow consumer"),
        || format!("expected one slow-consumer close, the server made {closes:?}"),
    )?;
    // The slow reader's connection ends (it may not see the close itself:
    // its transport's buffers were full).
    slow.ended().await?;
    // The reader and the server are unaffected.
    fast.echo("after").await?;
    let tick = Tick {
        n,
        text: "last".into(),
    };
    suite
        .hub
        .publish("flood", &tick)
        .await
        .map_err(|e| e.to_string())?;
    let got: Tick = fast.expect(None).await?;
    ensure(got == tick, || format!("the reader got {got:?} last"))?;
    let mut late = suite.open(codec).await?;
    late.echo("late").await?;
    let closes = suite.closes();
    ensure(closes.len() == 1, || format!("closes: {closes:?}"))?;

    // Under a drop policy the reader that does not read is kept and
    // misses publications, counted; the reader that reads misses none.
    let mut config = suite.hub.config().clone();
    config.overflow = OverflowPolicy::DropNewest;
    let dropping = Suite::start(suite.transport, config).await?;
    let result = dropped_not_closed(&dropping, codec, &text).await;
    dropping.stop().await;
    result
}

/// The drop-policy half of [`backpressure`].
async fn dropped_not_closed(suite: &Suite<'_>, codec: &str, text: &str) -> Result<(), String> {
    let mut slow = suite.open(codec).await?;
    slow.send(
        &Join {
            topic: "flood".into(),
        },
        Some("j"),
    )
    .await?;
    slow.expect::<Joined>(Some("j")).await?;
    let mut fast = suite.open(codec).await?;
    fast.send(
        &Join {
            topic: "flood".into(),
        },
        Some("j"),
    )
    .await?;
    fast.expect::<Joined>(Some("j")).await?;
    let dropped = || {
        suite
            .hub
            .topic_members("flood")
            .iter()
            .map(ConnectionHandle::dropped)
            .sum::<u64>()
    };
    let (mut published, mut n) = (0, 0);
    while dropped() == 0 {
        ensure(published < FLOOD_LIMIT, || {
            format!("{published} bytes published and nothing was dropped")
        })?;
        let tick = Tick {
            n,
            text: text.to_owned(),
        };
        suite
            .hub
            .publish("flood", &tick)
            .await
            .map_err(|e| e.to_string())?;
        let got: Tick = fast.expect(None).await?;
        ensure(got.n == n, || format!("the reader got {} for {n}", got.n))?;
        published += text.len();
        n += 1;
    }
    // The slow reader, reading at last, gets an increasing run of what was
    // published, then is served as usual.
    let (mut last, mut received) = (None, 0);
    loop {
        let envelope = slow.recv().await?;
        if envelope.ty != Tick::TYPE {
            return Err(format!("the slow reader got {}", envelope.ty));
        }
        let tick: Tick = envelope.decode_payload().map_err(|e| e.to_string())?;
        ensure(last.is_none_or(|last| tick.n > last), || {
            format!("the slow reader got {} after {last:?}", tick.n)
        })?;
        last = Some(tick.n);
        received += 1;
        // Every publication was either received or dropped.
        if received + dropped() >= n {
            break;
        }
    }
    slow.echo("kept").await?;
    fast.echo("fast").await?;
    let closes = suite.closes();
    ensure(closes.is_empty(), || {
        format!("a drop policy closed connections: {closes:?}")
    })
}

/// docs/PROTOCOL.md §4, §5: the close codes the client sees.
async fn close_codes(suite: &Suite<'_>) -> Result<(), String> {
    let codec = suite.first_codec()?;
    for (index, kind) in CLOSE_KINDS.into_iter().enumerate() {
        let mut peer = suite.open(codec).await?;
        peer.send(&CloseMe { kind: index }, None).await?;
        suite.expect_close(&mut peer, kind).await?;
        let closes = suite.closes_reach(index + 1).await?;
        let close = &closes[index];
        ensure(close.kind == kind && close.reason == CLOSE_REASON, || {
            format!("asked for a {kind:?} close, the server made {close:?}")
        })?;
    }
    // Shutdown: going away, after what was queued.
    let mut peer = suite.open(codec).await?;
    peer.send(&Ping { n: 1 }, None).await?;
    peer.expect::<Pong>(None).await?;
    let hub = suite.hub.clone();
    let shutdown = tokio::spawn(async move { hub.shutdown().await });
    suite.expect_close(&mut peer, CloseKind::GoingAway).await?;
    let _ = tokio::time::timeout(WAIT, shutdown).await;
    let closes = suite.closes_reach(CLOSE_KINDS.len() + 1).await?;
    let last = closes.last().map(|c| c.kind);
    ensure(last == Some(CloseKind::GoingAway), || {
        format!("shutdown closed with {last:?}")
    })
}

/// docs/PROTOCOL.md §4 (heartbeat), §5 (liveness).
async fn heartbeat(suite: &Suite<'_>) -> Result<(), String> {
    let codec = suite.first_codec()?;
    let mut silent = suite.open(codec).await?;
    silent.echo("hello").await?;
    // The answering peer speaks the last codec: the acknowledgement comes
    // in the connection's codec.
    let last = suite.transport.codecs().last().copied().unwrap_or(codec);
    let mut answering = suite.open(last).await?;
    // Three seconds: past the interval plus the timeout (1 s) with a wide
    // margin. The silent peer neither sends nor reads meanwhile.
    for i in 0..30 {
        let id = format!("hb-{i}");
        answering
            .send_value(HEARTBEAT_TYPE, Some(&id), None)
            .await?;
        let ack = answering.recv().await?;
        ensure(
            ack.ty == HEARTBEAT_ACK_TYPE
                && ack.meta.correlation_id.as_deref() == Some(&id)
                && ack.meta.timestamp.is_some(),
            || format!("__heartbeat answered with {ack:?}"),
        )?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answering.echo("still here").await?;
    if suite.transport.liveness_by_transport() {
        // The transport keeps the silent peer alive; the hub must not
        // close it.
        silent.echo("kept").await.map_err(|e| {
            format!("the transport does liveness itself, yet the silent peer was not kept: {e}")
        })?;
        let closes = suite.closes();
        return ensure(closes.is_empty(), || {
            format!("the transport does liveness, yet the hub closed {closes:?}")
        });
    }
    // Its connection ends. It may not see the close itself: it read
    // nothing for seconds, and reading now may answer the pings queued
    // meanwhile on a socket the server has closed, which resets it (the
    // codes are the `close_codes` check's business).
    silent.ended().await?;
    let closes = suite.closes();
    ensure(
        closes.len() == 1
            && closes[0].kind == CloseKind::Policy
            && closes[0].reason.contains("heartbeat"),
        || format!("expected one heartbeat close, the server made {closes:?}"),
    )
}

// ---------------------------------------------------------------------------
// The in-memory transport under test.

/// The in-memory transport ([`memory_connection`]) as a transport under
/// test: a close reaches the client with the WebSocket numbering
/// ([`memory_close_code`]); no transport-level liveness.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory;

#[async_trait]
impl Transport for Memory {
    async fn serve(&self, hub: Hub) -> Result<Box<dyn Endpoint>, String> {
        Ok(Box::new(MemoryEndpoint { hub }))
    }

    fn close_code(&self, kind: CloseKind) -> Option<u16> {
        Some(memory_close_code(kind))
    }
}

/// The code the in-memory transport reports for a close of `kind`: the
/// WebSocket numbering of docs/PROTOCOL.md §4.
pub fn memory_close_code(kind: CloseKind) -> u16 {
    match kind {
        CloseKind::Normal => 1000,
        CloseKind::GoingAway => 1001,
        CloseKind::Protocol => 1002,
        CloseKind::InvalidData => 1007,
        CloseKind::Policy => 1008,
        CloseKind::TooBig => 1009,
        CloseKind::Internal => 1011,
    }
}

struct MemoryEndpoint {
    hub: Hub,
}

impl Endpoint for MemoryEndpoint {
    fn connector(&self, codec: &str) -> Result<Box<dyn Connector>, ConnectError> {
        let codec = self
            .hub
            .codecs()
            .from_name(codec)
            .ok_or_else(|| ConnectError::Config(format!("unknown codec {codec:?}")))?;
        Ok(Box::new(MemoryConnector {
            hub: self.hub.clone(),
            codec: self.hub.codec(codec),
        }))
    }
}

/// Connects over [`memory_connection`]: each connection is served by the
/// hub, and its client end reports the server's close.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    hub: Hub,
    codec: WireCodec,
}

impl MemoryConnector {
    /// A connector to `hub` speaking the codec named `codec`; `None` for a
    /// name the hub does not know.
    pub fn new(hub: Hub, codec: &str) -> Option<Self> {
        let codec = hub.codec(hub.codecs().from_name(codec)?);
        Some(MemoryConnector { hub, codec })
    }
}

#[async_trait]
impl Connector for MemoryConnector {
    fn codec(&self) -> WireCodec {
        self.codec
    }

    async fn connect(&self) -> Result<Link, ConnectError> {
        if self.hub.is_shutting_down() {
            return Err(ConnectError::Refused("the hub is shutting down".into()));
        }
        let (connection, peer) = memory_connection(self.codec);
        tokio::spawn(self.hub.serve(connection));
        Ok(Link {
            source: Box::new(PeerSource {
                rx: peer.rx,
                closed: peer.closed,
                peer_close: None,
            }),
            sink: Box::new(PeerSink { tx: peer.tx }),
        })
    }
}

/// What the server of an in-memory connection sends, and how it closed.
struct PeerSource {
    rx: mpsc::Receiver<Bytes>,
    closed: oneshot::Receiver<Close>,
    peer_close: Option<PeerClose>,
}

#[async_trait]
impl FrameSource for PeerSource {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        match self.rx.recv().await {
            Some(frame) => Ok(Some(Inbound::Message(frame))),
            None => {
                // The server's sink is gone; its close, if it sent one,
                // came before.
                if let Ok(close) = self.closed.try_recv() {
                    self.peer_close = Some(PeerClose {
                        code: memory_close_code(close.kind),
                        reason: close.reason.into_owned(),
                    });
                }
                Ok(None)
            }
        }
    }

    fn peer_close(&self) -> Option<PeerClose> {
        self.peer_close.clone()
    }
}

/// The client's write end of an in-memory connection.
struct PeerSink {
    tx: Option<mpsc::Sender<Inbound>>,
}

#[async_trait]
impl FrameSink for PeerSink {
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        for frame in frames {
            tx.send(Inbound::Message(frame.bytes().clone()))
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    async fn close(&mut self, _close: Close) -> Result<(), TransportError> {
        self.tx = None;
        Ok(())
    }
}
