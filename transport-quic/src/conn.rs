//! One QUIC connection: handshake, authentication, the main stream as the
//! hub's [`FrameSource`] and [`FrameSink`], and the request-stream lane.

use crate::framing::{FrameDecoder, FrameError, HEADER_LEN};
use crate::lanes::{self, LaneTable};
use crate::server::Settings;
use crate::tls;
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use quinn::crypto::rustls::HandshakeData;
use rustls_pki_types::CertificateDer;
use signalbox::codec::{Codecs, WireCodec};
use signalbox::connection::{
    Close, CloseKind, Connection, ConnectionInfo, FrameSink, FrameSource, Inbound, Reservation,
    TransportError,
};
use signalbox::transport::Handshake;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Closes `connection` with the application code of `kind`.
pub(crate) fn close(connection: &quinn::Connection, kind: CloseKind, reason: &str) {
    connection.close(quinn::VarInt::from_u32(kind.quic_code()), reason.as_bytes());
}

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
        close(&connection, CloseKind::Protocol, "unknown ALPN");
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
            close(&connection, CloseKind::GoingAway, "server shutting down");
            return;
        }
        opened = opening => match opened {
            Ok(opened) => opened,
            Err((kind, reason)) => {
                tracing::debug!(peer = %peer_addr, %reason, "connection ended before its stream");
                close(&connection, kind, &reason);
                return;
            }
        },
    };

    let max = codec.limits().max_message_size;
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
            recv,
            decoder: FrameDecoder::new(max),
            reservation: hub.incomplete_budget().reserve(),
            finished: false,
            lanes: lane_rx,
        }),
        sink: Box::new(QuicSink {
            connection: connection.clone(),
            send,
            lanes: table,
            codec,
            linger: settings.close_linger,
            chunks: Vec::new(),
        }),
    };
    tokio::spawn(hub.serve(connection_for_hub)).await.ok();
    // The sink closed the connection with its code; if that was cut short,
    // make sure the peer hears of it.
    if connection.close_reason().is_none() {
        close(&connection, CloseKind::Normal, "");
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

/// The read half: frames from the main stream, and requests from the
/// request-stream lane.
struct QuicSource {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    /// The decoder's partial frame, charged to the hub's budget for
    /// incomplete messages (docs/PROTOCOL.md §5).
    reservation: Reservation,
    finished: bool,
    lanes: Option<mpsc::Receiver<Bytes>>,
}

#[async_trait]
impl FrameSource for QuicSource {
    async fn recv(&mut self) -> Result<Option<Inbound>, TransportError> {
        // Cancel-safe: bytes read live in the decoder until a frame is
        // whole, and both awaited futures lose nothing when dropped.
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.reservation.complete();
                    return Ok(Some(Inbound::Message(frame)));
                }
                Ok(None) => {}
                Err(error @ FrameError::TooLarge { .. }) => {
                    return Err(TransportError::TooBig(error.to_string()));
                }
                Err(error) => return Err(TransportError::Protocol(error.to_string())),
            }
            if self.finished {
                if self.decoder.has_partial() {
                    return Err(TransportError::Protocol(
                        "stream ended inside a frame".to_owned(),
                    ));
                }
                return Ok(None);
            }
            // What the decoder holds now is part of the next frame. Charged
            // (and its clock started) here rather than when it was read, so
            // that time spent not reading (backpressure) does not count.
            self.reservation.hold(self.decoder.buffered())?;
            let deadline = self.reservation.deadline();
            let late = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let lanes = async {
                match &mut self.lanes {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = late => return Err(TransportError::Refused(self.reservation.timed_out())),
                request = lanes => match request {
                    Some(frame) => return Ok(Some(Inbound::Message(frame))),
                    None => self.lanes = None,
                },
                chunk = self.recv.read_chunk(READ_CHUNK, true) => match chunk {
                    Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                    Ok(None) => self.finished = true,
                    Err(error) => return Err(read_error(error)),
                },
            }
        }
    }

    fn liveness_by_transport(&self) -> bool {
        // QUIC's idle timeout and keep-alives detect dead peers.
        true
    }
}

fn read_error(error: quinn::ReadError) -> TransportError {
    match error {
        quinn::ReadError::ConnectionLost(_) | quinn::ReadError::ClosedStream => {
            TransportError::Closed
        }
        quinn::ReadError::Reset(_) => TransportError::Closed,
        other => TransportError::Other(other.to_string()),
    }
}

fn write_error(error: quinn::WriteError) -> TransportError {
    match error {
        quinn::WriteError::ConnectionLost(_)
        | quinn::WriteError::ClosedStream
        | quinn::WriteError::Stopped(_) => TransportError::Closed,
        other => TransportError::Other(other.to_string()),
    }
}

/// The write half: the main stream, with replies to requests that came on
/// their own stream diverted back there.
struct QuicSink {
    connection: quinn::Connection,
    send: quinn::SendStream,
    lanes: Option<Arc<LaneTable>>,
    codec: WireCodec,
    linger: Duration,
    chunks: Vec<Bytes>,
}

#[async_trait]
impl FrameSink for QuicSink {
    async fn send_batch(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        let mut headers = BytesMut::with_capacity(frames.len() * HEADER_LEN);
        self.chunks.clear();
        for frame in frames {
            if let Some(table) = &self.lanes {
                if let Some(lane) = table.route(&self.codec, frame) {
                    lane.deliver(frame.clone()).await;
                    continue;
                }
            }
            let header = crate::framing::encode_header(frame.len())
                .map_err(|e| TransportError::Other(e.to_string()))?;
            headers.put_slice(&header);
            self.chunks.push(headers.split().freeze());
            self.chunks.push(frame.clone());
        }
        if self.chunks.is_empty() {
            return Ok(());
        }
        // Waits for flow-control credit only, never for acknowledgements.
        let result = self.send.write_all_chunks(&mut self.chunks).await;
        self.chunks.clear();
        result.map_err(write_error)
    }

    async fn close(&mut self, close: Close) -> Result<(), TransportError> {
        // CONNECTION_CLOSE discards stream data not yet delivered: on a
        // graceful close, finish the stream and give the peer a bounded
        // moment to acknowledge it, then close with the application code.
        // Other closes (protocol, policy, internal) go out at once.
        let graceful = matches!(close.kind, CloseKind::Normal | CloseKind::GoingAway);
        if self.send.finish().is_ok() && graceful {
            let stopped = self.send.stopped();
            let lost = self.connection.closed();
            tokio::select! {
                _ = tokio::time::timeout(self.linger, stopped) => {}
                _ = lost => {}
            }
        }
        self::close(&self.connection, close.kind, &close.reason);
        Ok(())
    }
}
