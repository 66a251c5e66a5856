//! One QUIC connection: handshake, authentication, the main stream as the
//! hub's [`FrameSource`] and [`FrameSink`], and the request-stream lane.

use crate::lanes::{self, LaneTable, Route};
use crate::server::Settings;
use crate::stream::{FrameReader, FrameWriter, FramedStream, close_code, close_connection};
use crate::tls;
use async_trait::async_trait;
use bytes::Bytes;
use quinn::crypto::rustls::HandshakeData;
use rustls_pki_types::CertificateDer;
use signalbox::codec::Codecs;
use signalbox::transport::Handshake;
use signalbox::transport::{
    Close, CloseKind, Connection, ConnectionInfo, Frame, FrameSink, FrameSource, Inbound,
    TransportError,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Serves one incoming connection from handshake to close.
pub(crate) async fn handle(incoming: quinn::Incoming, settings: Arc<Settings>) {
    let peer_addr = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            tracing::debug!(peer = %peer_addr, %error, "incoming connection failed");
            return;
        }
    };
    let connection = match settings.admission.within_handshake(connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(peer = %peer_addr, %error, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer_addr, "handshake timed out");
            return;
        }
    };
    let hub = &settings.hub;
    let Some(handshake) = handshake_of(&connection, peer_addr, hub.codecs()) else {
        // rustls refuses unknown ALPNs during the handshake; this is a
        // second line of defence.
        close_connection(&connection, CloseKind::Protocol, "unknown ALPN");
        return;
    };
    let codec = hub.codec(handshake.codec);

    let opening = async {
        let data = match settings.admission.authenticate(handshake).await {
            Ok(data) => data,
            Err(rejection) => {
                return Err((rejection.close_kind(), rejection.reason().into_owned()));
            }
        };
        // The client's first bidirectional stream carries the connection.
        // It exists for the server once the client sends on it; until then
        // the connection is idle, as an idle WebSocket is, and QUIC's idle
        // timeout watches it.
        match connection.accept_bi().await {
            Ok((send, recv)) => Ok((data, send, recv)),
            Err(error) => Err((CloseKind::Normal, error.to_string())),
        }
    };
    let shutdown = hub.shutdown_started();
    let (data, send, recv) = tokio::select! {
        biased;
        () = shutdown => {
            close_connection(&connection, CloseKind::GoingAway, "server shutting down");
            return;
        }
        opened = opening => match opened {
            Ok(opened) => opened,
            Err((kind, reason)) => {
                tracing::debug!(peer = %peer_addr, %reason, "connection ended before its stream");
                close_connection(&connection, kind, &reason);
                return;
            }
        },
    };

    let max = codec.limits().max_message_size;
    let (reader, writer) = FramedStream::new(connection.clone(), send, recv, max)
        .with_budget(hub.incomplete_budget().reserve())
        .split();
    let lanes = if settings.request_streams > 0 {
        let table = Arc::new(LaneTable::default());
        let (tx, rx) = mpsc::channel(settings.request_streams as usize);
        tokio::spawn(lanes::accept(
            connection.clone(),
            table.clone(),
            tx,
            codec,
            settings.clone(),
        ));
        Some((table, rx))
    } else {
        None
    };
    let (table, lane_rx) = match lanes {
        Some((table, rx)) => (Some(table), Some(rx)),
        None => (None, None),
    };
    let connection_for_hub = Connection {
        info: ConnectionInfo {
            transport: "quic",
            peer_addr: Some(peer_addr),
            codec,
        },
        data,
        source: Box::new(QuicSource {
            reader,
            lanes: lane_rx,
        }),
        sink: Box::new(QuicSink {
            writer,
            lanes: table,
            linger: settings.close_linger,
            main: Vec::new(),
        }),
    };
    tokio::spawn(hub.serve(connection_for_hub)).await.ok();
    // The sink closed the connection with its code; if that was cut short,
    // make sure the peer hears of it.
    if connection.close_reason().is_none() {
        close_connection(&connection, CloseKind::Normal, "");
    }
}

fn handshake_of(
    connection: &quinn::Connection,
    peer_addr: std::net::SocketAddr,
    codecs: &Codecs,
) -> Option<Handshake> {
    let data = connection
        .handshake_data()?
        .downcast::<HandshakeData>()
        .ok()?;
    let alpn_bytes = data.protocol.as_deref()?;
    let codec = tls::codec_for_alpn(codecs, alpn_bytes)?;
    let alpn = String::from_utf8_lossy(alpn_bytes).into_owned();
    let client_certs: Arc<[CertificateDer<'static>]> = connection
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| Arc::from(*chain))
        .unwrap_or_else(|| Arc::from(Vec::new()));
    let mut handshake = Handshake::new("quic", codec);
    handshake.peer_addr = Some(peer_addr);
    handshake.alpn = Some(alpn);
    handshake.server_name = data.server_name;
    handshake.client_certs = client_certs;
    Some(handshake)
}

/// The read half: frames from the main stream, and requests (or their
/// refusals) from the request-stream lane.
struct QuicSource {
    reader: FrameReader,
    lanes: Option<mpsc::Receiver<Inbound>>,
}

#[async_trait]
impl FrameSource for QuicSource {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        // Cancel-safe: the reader keeps partial frames, and a channel
        // receive loses nothing when dropped.
        loop {
            let lanes = async {
                match &mut self.lanes {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = lanes => match request {
                    Some(inbound) => return Ok(Some(inbound)),
                    None => self.lanes = None,
                },
                frame = self.reader.next() => {
                    return match frame {
                        Ok(frame) => Ok(frame.map(Inbound::Message)),
                        Err(error) => Err(error.into_transport()),
                    };
                }
            }
        }
    }

    fn liveness_by_transport(&self) -> bool {
        // QUIC's idle timeout and keep-alives detect dead peers.
        true
    }
}

/// The write half: the main stream, with answers to requests that came on
/// their own stream diverted back there by their metadata
/// ([`Frame::reply_to`]), never by decoding them.
struct QuicSink {
    writer: FrameWriter,
    lanes: Option<Arc<LaneTable>>,
    linger: Duration,
    /// The main stream's frames of a batch in which some went to request
    /// streams (kept for its capacity).
    main: Vec<Bytes>,
}

#[async_trait]
impl FrameSink for QuicSink {
    async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        let Some(table) = self.lanes.as_ref().filter(|t| t.is_waiting()) else {
            // No request stream waits for an answer: everything is the
            // main stream's (one atomic load per batch), but the answer to
            // a refusal whose stream gave up waiting, which goes nowhere.
            return self
                .writer
                .write_batch(
                    frames
                        .iter()
                        .filter(|f| !lanes::is_refusal(f))
                        .map(Frame::bytes),
                )
                .await
                .map_err(|e| e.into_transport());
        };
        // Answers go to their request streams as they come (waiting only
        // for that stream); the rest is written in one go after.
        self.main.clear();
        for frame in frames {
            match table.route(frame) {
                Route::Main => self.main.push(frame.bytes().clone()),
                Route::Lane(lane) => lane.deliver(frame.bytes().clone()).await,
                Route::Drop => {}
            }
        }
        let written = self.writer.write_batch(&self.main).await;
        self.main.clear();
        written.map_err(|e| e.into_transport())
    }

    async fn close(&mut self, close: Close) -> Result<(), TransportError> {
        self.writer.close(&close, self.linger).await;
        Ok(())
    }

    fn close_code(&self, kind: CloseKind) -> Option<u32> {
        Some(close_code(kind))
    }
}
