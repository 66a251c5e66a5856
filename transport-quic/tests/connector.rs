//! `signalbox::client::Client` over QUIC with [`QuicConnector`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use signalbox::client::{Client, ConnectError, ConnectionState, Connector};
use signalbox::transport::Identity;
use signalbox::transport::{Close, CloseKind, PeerClose};
use signalbox_quic::{QuicConnector, QuicServer};
use std::time::Duration;

#[tokio::test]
async fn a_client_over_quic_makes_requests_and_receives_pushes() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .bind(localhost())
        .await
        .unwrap();
    let (ticks_tx, mut ticks) = tokio::sync::mpsc::channel(16);
    for codec in ["json", "msgpack+gzip"] {
        let connector =
            QuicConnector::new(server.local_addr(), server.cert_pem().as_bytes(), codec).unwrap();
        assert_eq!(connector.codec().name(), codec);
        let tx = ticks_tx.clone();
        let client = Client::builder(connector)
            .on(move |tick: Tick, _meta| {
                let _ = tx.try_send(tick);
            })
            .build();
        assert!(client.wait_connected(WAIT).await);
        let you: You = client.request(&WhoAmI, WAIT).await.unwrap();
        assert_eq!(you.transport, "quic");
        let done: Done = client.request(&Slow { ms: 5 }, WAIT).await.unwrap();
        assert_eq!(done, Done { ms: 5 });
        let joined: Joined = client
            .request(
                &Join {
                    topic: codec.replace('+', "-"),
                },
                WAIT,
            )
            .await
            .unwrap();
        hub.publish(&joined.topic, &Tick { n: 7 }).await.unwrap();
        let tick = tokio::time::timeout(WAIT, ticks.recv()).await.unwrap();
        assert_eq!(tick, Some(Tick { n: 7 }));
        client.close().await;
    }
    assert!(eventually(WAIT, || hub.connection_count() == 0).await);
}

#[tokio::test]
async fn the_client_reconnects_when_the_server_drops_it() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .bind(localhost())
        .await
        .unwrap();
    let connector =
        QuicConnector::new(server.local_addr(), server.cert_pem().as_bytes(), "msgpack").unwrap();
    let client = Client::builder(connector)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build();
    let first: You = client.request(&WhoAmI, WAIT).await.unwrap();
    hub.connection(&first.id)
        .unwrap()
        .close(Close::new(CloseKind::Policy, "go away"));
    // The application close code (3, policy) and reason reach the client.
    let mut state = client.state();
    let state = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| !matches!(s, ConnectionState::Connected)),
    )
    .await
    .expect("the close was noticed")
    .unwrap()
    .clone();
    let close = match state {
        ConnectionState::Disconnected { close, .. }
        | ConnectionState::Reconnecting { close, .. } => close,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        close,
        Some(PeerClose {
            code: 3,
            reason: "go away".into()
        })
    );
    let second = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(you) = client
                .request::<_, You>(&WhoAmI, Duration::from_millis(500))
                .await
                && you.id != first.id
            {
                return you;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("reconnected");
    assert_eq!(second.transport, "quic");
    client.close().await;
}

#[tokio::test]
async fn a_server_with_an_untrusted_certificate_is_refused() {
    let hub = hub();
    let server = QuicServer::builder(hub.clone())
        .bind(localhost())
        .await
        .unwrap();
    let stranger = Identity::self_signed::<&str>(&[]).unwrap().cert_pem();
    let connector = QuicConnector::new(server.local_addr(), stranger.as_bytes(), "json").unwrap();
    match connector.connect().await {
        Err(ConnectError::Refused(reason)) => assert!(!reason.is_empty()),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("connected to a server it should not trust"),
    }
    assert!(matches!(
        QuicConnector::new(server.local_addr(), b"", "json"),
        Err(ConnectError::Config(_))
    ));
    assert!(matches!(
        QuicConnector::new(server.local_addr(), server.cert_pem().as_bytes(), "xml"),
        Err(ConnectError::Config(_))
    ));
}
