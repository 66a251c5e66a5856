//! WebTransport sessions on the QUIC endpoint (docs/PROTOCOL.md §5,
//! "WebTransport"): a connection whose ALPN is `h3` does the HTTP/3
//! exchange (SETTINGS, then an extended CONNECT with `:protocol
//! webtransport`), picks its codec, passes the authentication hook and is
//! then served exactly as a native connection, its session's streams
//! carrying the same frames. The HTTP/3 part is `web-transport-quinn`'s.

use crate::conn;
use crate::server::Settings;
use crate::session::Session;
use http::StatusCode;
use signalbox::codec::{Codecs, Format, WireCodec};
use signalbox::transport::Rejection;
use std::net::SocketAddr;
use std::sync::Arc;
use web_transport_quinn::proto::ConnectResponse;

/// HTTP/3's H3_GENERAL_PROTOCOL_ERROR: the connection close for an HTTP/3
/// exchange that went wrong before a session existed.
const H3_GENERAL_PROTOCOL_ERROR: u32 = 0x101;
/// HTTP/3's H3_NO_ERROR: the connection close after a refused CONNECT.
const H3_NO_ERROR: u32 = 0x100;

/// The query parameter that picks the codec when the client offers no
/// subprotocol (`?codec=msgpack`).
pub const CODEC_QUERY: &str = "codec";

/// Why a CONNECT asked for no codec the server has.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownCodec(pub(crate) String);

/// The codec a WebTransport CONNECT selects (docs/PROTOCOL.md §5): the
/// first subprotocol the server knows, in the client's order; without
/// subprotocols the `codec` query parameter; with neither, `json`. The
/// second value is the subprotocol to confirm in the response, if one was
/// offered.
pub(crate) fn negotiate(
    codecs: &Codecs,
    protocols: &[String],
    query: Option<&str>,
) -> Result<(WireCodec, Option<String>), UnknownCodec> {
    if !protocols.is_empty() {
        return protocols
            .iter()
            .find_map(|name| {
                codecs
                    .from_name(name)
                    .map(|codec| (codec, Some(name.clone())))
            })
            .ok_or_else(|| UnknownCodec(protocols.join(", ")));
    }
    let asked = query.and_then(|query| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == CODEC_QUERY).then(|| percent_decode(value))
        })
    });
    match asked {
        None => Ok((WireCodec::new(Format::Json, false), None)),
        Some(name) => codecs
            .from_name(&name)
            .map(|codec| (codec, None))
            .ok_or(UnknownCodec(name)),
    }
}

/// Decodes `%XX` escapes (a codec name's `+` arrives as `%2B`; a bare `+`
/// is a space in a query, which no codec name has).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                out.push((hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves a connection whose ALPN is `h3`: the HTTP/3 exchange within the
/// handshake timeout, then the session as a signalbox connection.
pub(crate) async fn handle(
    connection: quinn::Connection,
    peer_addr: SocketAddr,
    settings: Arc<Settings>,
) {
    let Some(path) = settings.webtransport.clone() else {
        return;
    };
    let hub = settings.hub.clone();
    let exchange = web_transport_quinn::Request::accept(connection.clone());
    let request = tokio::select! {
        biased;
        () = hub.shutdown_started() => {
            connection.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"server shutting down");
            return;
        }
        request = settings.admission.within_handshake(exchange) => match request {
            Ok(Ok(request)) => request,
            Ok(Err(error)) => {
                // A malformed or foreign request: nothing to answer it
                // with but the connection's close and its reason.
                let reason = format!("not a WebTransport CONNECT: {error}");
                tracing::debug!(peer = %peer_addr, %reason, "WebTransport refused");
                close_h3(&connection, H3_GENERAL_PROTOCOL_ERROR, &reason);
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer_addr, "WebTransport CONNECT not received in time");
                close_h3(&connection, H3_GENERAL_PROTOCOL_ERROR, "no CONNECT within the handshake timeout");
                return;
            }
        },
    };

    if request.url.path() != path {
        let reason = format!("no WebTransport endpoint at {}", request.url.path());
        return refuse(
            request,
            &connection,
            Rejection::new(StatusCode::NOT_FOUND),
            &reason,
            &settings,
        )
        .await;
    }
    let (codec, protocol) = match negotiate(hub.codecs(), &request.protocols, request.url.query()) {
        Ok(negotiated) => negotiated,
        Err(UnknownCodec(asked)) => {
            let reason = format!("no codec among {asked}");
            return refuse(
                request,
                &connection,
                Rejection::new(StatusCode::BAD_REQUEST),
                &reason,
                &settings,
            )
            .await;
        }
    };
    let Some(mut handshake) = conn::handshake_of(&connection, "webtransport", peer_addr, codec)
    else {
        close_h3(&connection, H3_GENERAL_PROTOCOL_ERROR, "no handshake data");
        return;
    };
    handshake.uri = request.url.as_str().parse().ok();
    handshake.headers = request.headers.clone();

    let authenticated = tokio::select! {
        biased;
        () = hub.shutdown_started() => Err(Rejection::new(StatusCode::SERVICE_UNAVAILABLE)),
        authenticated = settings.admission.authenticate(handshake) => authenticated,
    };
    let data = match authenticated {
        Ok(data) => data,
        Err(rejection) => {
            let reason = rejection.reason().into_owned();
            return refuse(request, &connection, rejection, &reason, &settings).await;
        }
    };
    let response = match protocol {
        Some(protocol) => ConnectResponse::OK.with_protocol(protocol),
        None => ConnectResponse::OK,
    };
    let session = match request.respond(response).await {
        Ok(session) => Session::Web(Box::new(session)),
        Err(error) => {
            tracing::debug!(peer = %peer_addr, %error, "WebTransport response failed");
            close_h3(&connection, H3_GENERAL_PROTOCOL_ERROR, &error.to_string());
            return;
        }
    };
    conn::serve(session, "webtransport", codec, data, peer_addr, settings).await;
}

/// Answers the CONNECT with the rejection's status, gives the client the
/// close linger to read it and hang up, then closes the connection.
async fn refuse(
    request: web_transport_quinn::Request,
    connection: &quinn::Connection,
    rejection: Rejection,
    reason: &str,
    settings: &Settings,
) {
    tracing::debug!(peer = %connection.remote_address(), status = %rejection.status, %reason, "WebTransport session refused");
    if request.reject(rejection.status).await.is_ok() {
        let _ = tokio::time::timeout(settings.close_linger, connection.closed()).await;
    }
    close_h3(connection, H3_NO_ERROR, reason);
}

fn close_h3(connection: &quinn::Connection, code: u32, reason: &str) {
    connection.close(quinn::VarInt::from_u32(code), reason.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(codec: Result<(WireCodec, Option<String>), UnknownCodec>) -> (String, Option<String>) {
        let (codec, protocol) = codec.unwrap();
        (codec.name().to_owned(), protocol)
    }

    #[test]
    fn subprotocols_pick_the_codec_in_the_clients_order() {
        let codecs = Codecs::new();
        let offered = vec!["cbor".to_owned(), "msgpack".to_owned(), "json".to_owned()];
        assert_eq!(
            names(negotiate(&codecs, &offered, Some("codec=json"))),
            ("msgpack".to_owned(), Some("msgpack".to_owned()))
        );
        assert_eq!(
            negotiate(&codecs, &["cbor".to_owned()], None).unwrap_err(),
            UnknownCodec("cbor".to_owned())
        );
    }

    #[test]
    fn without_subprotocols_the_query_picks_and_json_is_the_default() {
        let codecs = Codecs::new();
        assert_eq!(
            names(negotiate(&codecs, &[], None)),
            ("json".to_owned(), None)
        );
        assert_eq!(
            names(negotiate(
                &codecs,
                &[],
                Some("token=a&codec=msgpack%2Bgzip")
            )),
            ("msgpack+gzip".to_owned(), None)
        );
        assert_eq!(
            names(negotiate(&codecs, &[], Some("token=a"))),
            ("json".to_owned(), None)
        );
        assert_eq!(
            negotiate(&codecs, &[], Some("codec=xml")).unwrap_err(),
            UnknownCodec("xml".to_owned())
        );
    }

    #[test]
    fn percent_escapes_decode_and_broken_ones_stay() {
        assert_eq!(percent_decode("json%2bgzip"), "json+gzip");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
