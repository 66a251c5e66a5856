//! One QUIC connection: handshake, authentication, the main stream as the
//! hub's [`FrameSource`] and [`FrameSink`], and the request-stream lane.

use crate::lanes::{self, LaneTable, Route};
use crate::server::Settings;
use crate::session::Session;
use crate::stream::{FrameReader, FrameWriter, FramedStream, close_code};
use crate::tls;
use async_trait::async_trait;
use bytes::Bytes;
use quinn::crypto::rustls::HandshakeData;
use rustls_pki_types::CertificateDer;
use signalbox::DataMap;
use signalbox::codec::WireCodec;
use signalbox::transport::Handshake;
use signalbox::transport::{
    Close, CloseKind, Connection, ConnectionInfo, Frame, FrameSink, FrameSource, Inbound,
    TransportError,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Serves one incoming connection from handshake to close: a native
/// connection here, a WebTransport session ([`crate::webtransport`]) when
/// its ALPN is `h3` and the server offers WebTransport.
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
    if settings.webtransport.is_some()
        && alpn_of(&connection).as_deref() == Some(web_transport_quinn::ALPN.as_bytes())
    {
        return crate::webtransport::handle(connection, peer_addr, settings).await;
    }
    let hub = &settings.hub;
    let codec = alpn_of(&connection).and_then(|alpn| tls::codec_for_alpn(hub.codecs(), &alpn));
    let Some(handshake) =
        codec.and_then(|codec| handshake_of(&connection, "quic", peer_addr, codec))
    else {
        // rustls refuses unknown ALPNs during the handshake; this is a
        // second line of defence.
        let session = Session::Native(connection);
        session.close(CloseKind::Protocol, "unknown ALPN");
        return;
    };
    let codec = handshake.codec;
    let session = Session::Native(connection);
    let authenticated = tokio::select! {
        biased;
        () = hub.shutdown_started() => Err((CloseKind::GoingAway, "server shutting down".to_owned())),
        authenticated = settings.admission.authenticate(handshake) => authenticated
            .map_err(|rejection| (rejection.close_kind(), rejection.reason().into_owned())),
    };
    match authenticated {
        Ok(data) => serve(session, "quic", codec, data, peer_addr, settings).await,
        Err((kind, reason)) => {
            tracing::debug!(peer = %peer_addr, %reason, "connection refused");
            session.close(kind, &reason);
        }
    }
}

/// Serves an admitted connection (native or WebTransport) until it
/// closes: its first bidirectional stream is the main stream, further ones
/// the request-stream lane (docs/PROTOCOL.md §5).
pub(crate) async fn serve(
    session: Session,
    transport: &'static str,
    codec: WireCodec,
    data: DataMap,
    peer_addr: SocketAddr,
    settings: Arc<Settings>,
) {
    let hub = &settings.hub;
    let codec = hub.codec(codec);
    // The client's first bidirectional stream carries the connection. It
    // exists for the server once the client sends on it; until then the
    // connection is idle, as an idle WebSocket is, and QUIC's idle timeout
    // watches it.
    let (send, recv) = tokio::select! {
        biased;
        () = hub.shutdown_started() => {
            session.close(CloseKind::GoingAway, "server shutting down");
            return;
        }
        opened = session.accept_bi() => match opened {
            Ok(opened) => opened,
            Err(error) => {
                tracing::debug!(peer = %peer_addr, %error, "connection ended before its stream");
                session.close(CloseKind::Normal, &error.to_string());
                return;
            }
        },
    };

    let max = codec.limits().max_message_size;
    let (reader, writer) = FramedStream::new(session.clone(), send, recv, max)
        .with_budget(hub.incomplete_budget().reserve())
        .split();
    let lanes = if settings.request_streams > 0 {
        let table = Arc::new(LaneTable::default());
        let (tx, rx) = mpsc::channel(settings.request_streams as usize);
        tokio::spawn(lanes::accept(
            session.clone(),
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
            transport,
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
    if !session.is_closed() {
        session.close(CloseKind::Normal, "");
    }
}

/// The ALPN the handshake settled on.
pub(crate) fn alpn_of(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<HandshakeData>()
        .ok()?
        .protocol
}

/// The kit's view of a connection's handshake: peer, ALPN, server name and
/// client certificates, with the codec the caller settled on (the ALPN's
/// natively, the CONNECT's for WebTransport).
pub(crate) fn handshake_of(
    connection: &quinn::Connection,
    transport: &'static str,
    peer_addr: SocketAddr,
    codec: WireCodec,
) -> Option<Handshake> {
    let data = connection
        .handshake_data()?
        .downcast::<HandshakeData>()
        .ok()?;
    let alpn = String::from_utf8_lossy(data.protocol.as_deref()?).into_owned();
    let client_certs: Arc<[CertificateDer<'static>]> = connection
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| Arc::from(*chain))
        .unwrap_or_else(|| Arc::from(Vec::new()));
    let mut handshake = Handshake::new(transport, codec);
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
