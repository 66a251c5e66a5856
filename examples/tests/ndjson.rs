//! The custom transport of `examples/src/ndjson.rs` (newline-delimited
//! JSON over TCP) runs the conformance suite of
//! `signalbox::testing::conformance`, over real sockets on loopback.

use async_trait::async_trait;
use signalbox::client::{ConnectError, Connector};
use signalbox::testing::conformance::{Endpoint, Memory, Transport};
use signalbox::transport::{Admission, CloseKind, Rejection};
use signalbox::{Hub, Router};
use signalbox_examples::ndjson::{self, NdjsonConnector};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Ndjson;

#[async_trait]
impl Transport for Ndjson {
    async fn serve(&self, hub: Hub) -> Result<Box<dyn Endpoint>, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(ndjson::serve(listener, Admission::builder(hub).build()));
        Ok(Box::new(Served { addr, task }))
    }

    fn codecs(&self) -> Vec<&'static str> {
        vec!["json", "json+gzip"]
    }

    /// docs/PROTOCOL.md §4's numbering, as for WebSocket.
    fn close_code(&self, kind: CloseKind) -> Option<u16> {
        Memory.close_code(kind)
    }
}

struct Served {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint for Served {
    fn connector(&self, codec: &str) -> Result<Box<dyn Connector>, ConnectError> {
        Ok(Box::new(NdjsonConnector::new(self.addr, codec)?))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

signalbox::conformance_tests!(Ndjson);

/// A server for an empty router, and a raw socket to it.
async fn raw() -> (Hub, TcpStream) {
    let hub = Router::new().build();
    let addr = start(Admission::builder(hub.clone()).build()).await;
    (hub, TcpStream::connect(addr).await.unwrap())
}

async fn start(admission: Admission) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ndjson::serve(listener, admission));
    addr
}

/// Everything the server sends until it ends the stream. A reset counts as
/// the end: a server that drops a socket it did not read resets it.
async fn read_to_end(tcp: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut seen),
    )
    .await
    .expect("the server ends the stream");
    if let Err(error) = read {
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    }
    String::from_utf8(seen).unwrap()
}

#[tokio::test]
async fn a_binary_codec_is_refused_at_the_hello() {
    let (_hub, mut tcp) = raw().await;
    tcp.write_all(b"msgpack\n").await.unwrap();
    assert_eq!(read_to_end(&mut tcp).await, "");
    assert!(NdjsonConnector::new("127.0.0.1:1".parse().unwrap(), "msgpack").is_err());
}

#[tokio::test]
async fn a_line_past_the_maximum_message_size_closes_with_1009() {
    let (hub, mut tcp) = raw().await;
    tcp.write_all(b"json\n").await.unwrap();
    let long = vec![b'x'; hub.config().codec.max_message_size + 10];
    // The server may stop reading before all of it is written.
    let _ = tcp.write_all(&long).await;
    let seen = read_to_end(&mut tcp).await;
    assert!(seen.starts_with("json\n#close 1009 "), "{seen:?}");
}

#[tokio::test]
async fn the_kit_admits_past_the_limit_nobody_and_the_hook_decides() {
    let hub = Router::new().build();
    // One connection at a time, and a hook that turns away one codec.
    let admission = Admission::builder(hub.clone())
        .max_connections(1)
        .authenticate(|handshake| async move {
            if handshake.codec.gzip() {
                Err(Rejection::forbidden().with_body("no gzip here"))
            } else {
                Ok(signalbox::DataMap::new())
            }
        })
        .build();
    let addr = start(admission).await;

    let mut refused = TcpStream::connect(addr).await.unwrap();
    refused.write_all(b"json+gzip\n").await.unwrap();
    assert_eq!(
        read_to_end(&mut refused).await,
        "#close 1008 no gzip here\n"
    );

    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"json\n").await.unwrap();
    let mut answer = [0u8; 5];
    first.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"json\n");
    // The limit is reached: the next connection is dropped unanswered.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let _ = second.write_all(b"json\n").await;
    assert_eq!(read_to_end(&mut second).await, "");
    // Once the first ends, its place is free again.
    drop(first);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut again = TcpStream::connect(addr).await.unwrap();
        again.write_all(b"json\n").await.unwrap();
        let mut answer = [0u8; 5];
        if again.read_exact(&mut answer).await.is_ok() {
            assert_eq!(&answer, b"json\n");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
