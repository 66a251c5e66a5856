//! The custom transport of `examples/src/ndjson.rs` (newline-delimited
//! JSON over TCP) runs the conformance suite of
//! `signalbox::testing::conformance`, over real sockets on loopback.

use async_trait::async_trait;
use signalbox::client::{ConnectError, Connector};
use signalbox::testing::conformance::{Endpoint, Memory, Transport};
use signalbox::transport::CloseKind;
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
        let task = tokio::spawn(ndjson::serve(listener, hub));
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ndjson::serve(listener, hub.clone()));
    (hub, TcpStream::connect(addr).await.unwrap())
}

async fn read_to_end(tcp: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut seen),
    )
    .await
    .expect("the server ends the stream")
    .unwrap();
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
