//! What the hub tells the transport about each outbound frame
//! ([`Frame::reply_to`]), seen by a sink that keeps the frames whole, and
//! how it answers a message the transport refused ([`Inbound::Refused`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use signalbox::DataMap;
use signalbox::codec::{Envelope, WireCodec};
use signalbox::transport::{
    Close, Connection, ConnectionInfo, Frame, FrameSink, FrameSource, Inbound, RefusedMessage,
    ReplyTo, TransportError,
};
use signalbox::{Ctx, Error, ErrorCode, Hub, ManualClock, Router, message};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const NOW: u64 = 1_700_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Steps {
    n: u32,
}
message!(Steps = "STEPS");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    n: u32,
}
message!(Tick = "TICK");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Done {
    n: u32,
}
message!(Done = "DONE");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Join {
    topic: String,
}
message!(Join = "JOIN");

struct Source(mpsc::Receiver<Inbound>);

#[async_trait]
impl FrameSource for Source {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        Ok(self.0.recv().await)
    }
}

/// Keeps every frame with its metadata.
struct Keep(mpsc::Sender<Frame>);

#[async_trait]
impl FrameSink for Keep {
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        for frame in frames {
            self.0
                .send(frame.clone())
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    async fn close(&mut self, _close: Close) -> Result<(), TransportError> {
        Ok(())
    }
}

struct Peer {
    tx: mpsc::Sender<Inbound>,
    rx: mpsc::Receiver<Frame>,
    codec: WireCodec,
}

impl Peer {
    async fn send(&self, json: &str) {
        let frame = json.as_bytes().to_vec().into();
        self.tx.send(Inbound::Message(frame)).await.unwrap();
    }

    async fn next(&mut self) -> (Envelope, Option<ReplyTo>) {
        let frame = tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a frame in time")
            .expect("the connection is open");
        let reply_to = frame.reply_to().cloned();
        (self.codec.decode(frame.into_bytes()).unwrap(), reply_to)
    }
}

fn request(id: &str, progress: bool) -> Option<ReplyTo> {
    Some(ReplyTo::Request {
        correlation_id: id.into(),
        progress,
    })
}

type Seen = Arc<Mutex<Vec<(Option<String>, ErrorCode)>>>;

fn start() -> (Hub, Peer, Seen) {
    let seen: Seen = Arc::default();
    let router = Router::new()
        .rpc(|ctx: Ctx<Steps>| async move {
            for n in 0..ctx.payload().n {
                ctx.progress(&Tick { n })?;
            }
            Ok::<_, Error>(Done { n: ctx.payload().n })
        })
        .on(|ctx: Ctx<Join>| async move {
            ctx.subscribe(&ctx.payload().topic)?;
            ctx.reply(&Done { n: 0 })
        })
        .on_error({
            let seen = seen.clone();
            move |event| {
                seen.lock().unwrap().push((
                    event.message_type.map(str::to_owned),
                    event.error.code().clone(),
                ))
            }
        });
    let hub = Hub::builder(router).clock(ManualClock::new(NOW)).build();
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, out_rx) = mpsc::channel(64);
    let codec = WireCodec::from_name("json").unwrap();
    tokio::spawn(hub.serve(Connection {
        info: ConnectionInfo {
            transport: "kept",
            peer_addr: None,
            codec,
        },
        data: DataMap::new(),
        source: Box::new(Source(in_rx)),
        sink: Box::new(Keep(out_tx)),
    }));
    let peer = Peer {
        tx: in_tx,
        rx: out_rx,
        codec,
    };
    (hub, peer, seen)
}

#[tokio::test]
async fn answers_name_the_correlation_id_they_answer_and_whether_more_follow() {
    let (_hub, mut peer, _) = start();
    peer.send(r#"{"type":"STEPS","meta":{"correlationId":"s-1"},"payload":{"n":2}}"#)
        .await;
    for n in 0..2 {
        let (envelope, reply_to) = peer.next().await;
        assert_eq!(
            envelope.ty,
            signalbox::codec::vocab::RPC_PROGRESS,
            "progress {n}"
        );
        assert_eq!(reply_to, request("s-1", true));
    }
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(envelope.ty, "DONE");
    assert_eq!(reply_to, request("s-1", false));

    // An error answer to a message with a correlationId is its last answer.
    peer.send(r#"{"type":"STEPS","meta":{"correlationId":"s-2"},"payload":{"n":"two"}}"#)
        .await;
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(envelope.ty, signalbox::codec::vocab::RPC_ERROR);
    assert_eq!(reply_to, request("s-2", false));
    peer.send(r#"{"type":"NOPE","meta":{"correlationId":"s-3"}}"#)
        .await;
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(envelope.ty, signalbox::codec::vocab::ERROR);
    assert_eq!(reply_to, request("s-3", false));
    peer.send(r#"{"type":"__heartbeat","meta":{"correlationId":"h"}}"#)
        .await;
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(envelope.ty, "__heartbeat_ack");
    assert_eq!(reply_to, request("h", false));
}

#[tokio::test]
async fn messages_that_answer_nothing_carry_no_metadata() {
    let (hub, mut peer, _) = start();
    // A reply to a message without a correlationId.
    peer.send(r#"{"type":"JOIN","payload":{"topic":"room"}}"#)
        .await;
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(envelope.ty, "DONE");
    assert_eq!(reply_to, None);
    // A publication.
    assert_eq!(hub.publish("room", &Tick { n: 9 }).await.unwrap(), 1);
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(envelope.ty, "TICK");
    assert_eq!(reply_to, None);
    // An error for a frame that did not decode, without a correlationId.
    peer.send("{not json").await;
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(envelope.ty, signalbox::codec::vocab::ERROR);
    assert_eq!(reply_to, None);
}

#[tokio::test]
async fn a_refusal_is_answered_by_the_hub_and_its_answer_carries_the_tag() {
    let (_hub, mut peer, seen) = start();
    let refused = RefusedMessage {
        error: Error::invalid_argument("a request stream needs meta.correlationId"),
        message_type: Some("STEPS".to_owned()),
        correlation_id: Some("r-1".to_owned()),
        tag: 42,
    };
    peer.tx
        .send(Inbound::Refused(Box::new(refused)))
        .await
        .unwrap();
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(reply_to, Some(ReplyTo::Refused { tag: 42 }));
    assert_eq!(envelope.ty, signalbox::codec::vocab::ERROR);
    assert_eq!(envelope.meta.correlation_id.as_deref(), Some("r-1"));
    assert_eq!(envelope.meta.timestamp, Some(NOW));
    let payload: serde_json::Value = envelope.decode_payload().unwrap();
    assert_eq!(payload["code"], "INVALID_ARGUMENT");
    assert_eq!(
        payload["message"],
        "a request stream needs meta.correlationId"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(Some("STEPS".to_owned()), ErrorCode::InvalidArgument)]
    );
    // The connection carries on.
    peer.send(r#"{"type":"STEPS","meta":{"correlationId":"after"},"payload":{"n":0}}"#)
        .await;
    let (envelope, reply_to) = peer.next().await;
    assert_eq!(envelope.ty, "DONE");
    assert_eq!(reply_to, request("after", false));
}
