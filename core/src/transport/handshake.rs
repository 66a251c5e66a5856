//! What a transport knows of a client when it decides whether to let it in.

use http::header::{AsHeaderName, HeaderMap};
use http::{Extensions, Uri};
use rustls_pki_types::CertificateDer;
use signalbox_codec::WireCodec;
use std::net::SocketAddr;
use std::sync::Arc;

/// What an authentication hook ([`super::AuthHook`]) sees of a client: the
/// same view on every transport, each filling in what it has.
///
/// - Every transport: [`transport`](Self::transport), [`codec`](Self::codec),
///   and the [`peer_addr`](Self::peer_addr) when known.
/// - HTTP upgrades (WebSocket, docs/PROTOCOL.md §4): the request's
///   [`uri`](Self::uri) (so [`query_param`](Self::query_param)),
///   [`headers`](Self::headers) and [`extensions`](Self::extensions).
/// - TLS transports (QUIC, docs/PROTOCOL.md §5): the [`alpn`](Self::alpn),
///   the [`server_name`](Self::server_name) the client asked for and the
///   client's verified certificate chain ([`client_certs`](Self::client_certs)).
///
/// What a transport does not have stays empty (`None`, no headers, no
/// extensions, no certificates). A transport makes one with
/// [`Handshake::new`] and sets the fields it has.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Handshake {
    /// The transport's name, as in
    /// [`ConnectionInfo::transport`](crate::connection::ConnectionInfo::transport)
    /// (`"ws"`, `"quic"`).
    pub transport: &'static str,
    /// The peer's address, when known.
    pub peer_addr: Option<SocketAddr>,
    /// The codec negotiated for the connection.
    pub codec: WireCodec,
    /// The HTTP request's URI, with its query, where there is a request.
    pub uri: Option<Uri>,
    /// The HTTP request's headers (`Authorization`, `Cookie`, `Origin`, …);
    /// empty where there is no request.
    pub headers: HeaderMap,
    /// The HTTP request's extensions: what the HTTP stack in front of the
    /// upgrade put there. Mounted in an axum application that is every
    /// value a tower or axum layer inserted (an authenticated user, say),
    /// so an authentication done by a layer reaches the hook, which moves
    /// it into the connection's data (see [`Handshake::extension`]). Empty
    /// where there is no request.
    pub extensions: Extensions,
    /// The ALPN protocol agreed in the TLS handshake (`signalbox/json`, …),
    /// where there is one.
    pub alpn: Option<String>,
    /// The server name the client asked for (TLS SNI), if it sent one.
    pub server_name: Option<String>,
    /// The client's certificate chain, leaf first, already verified against
    /// the roots the transport was configured with; empty when the client
    /// sent none or the transport does not ask for one.
    pub client_certs: Arc<[CertificateDer<'static>]>,
}

impl Handshake {
    /// A handshake on `transport` that negotiated `codec`, with nothing else
    /// known yet.
    pub fn new(transport: &'static str, codec: WireCodec) -> Self {
        Handshake {
            transport,
            peer_addr: None,
            codec,
            uri: None,
            headers: HeaderMap::new(),
            extensions: Extensions::new(),
            alpn: None,
            server_name: None,
            client_certs: Arc::from(Vec::new()),
        }
    }

    /// The first value of query parameter `name` of the request URI,
    /// percent-decoded (`?token=abc` → `Some("abc")`); `None` without one
    /// or without a request.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.uri.as_ref()?.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: impl AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request extension of type `T`, if a layer inserted one (see
    /// [`Handshake::extensions`]).
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json() -> WireCodec {
        WireCodec::from_name("json").unwrap()
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let mut handshake = Handshake::new("ws", json());
        handshake.uri = Some("/ws?a=1&token=x%2By+z&empty".parse().unwrap());
        assert_eq!(handshake.query_param("token").as_deref(), Some("x+y z"));
        assert_eq!(handshake.query_param("a").as_deref(), Some("1"));
        assert_eq!(handshake.query_param("empty").as_deref(), Some(""));
        assert_eq!(handshake.query_param("none"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn a_handshake_without_a_request_has_no_query_headers_or_extensions() {
        let handshake = Handshake::new("quic", json());
        assert_eq!(handshake.query_param("token"), None);
        assert_eq!(handshake.header("authorization"), None);
        assert_eq!(handshake.extension::<u32>(), None);
        assert!(handshake.client_certs.is_empty());
    }

    #[test]
    fn headers_and_extensions_are_read_back() {
        let mut handshake = Handshake::new("ws", json());
        handshake
            .headers
            .insert("x-user", http::HeaderValue::from_static("ada"));
        handshake.extensions.insert(7u32);
        assert_eq!(handshake.header("x-user"), Some("ada"));
        assert_eq!(handshake.extension::<u32>(), Some(&7));
    }
}
