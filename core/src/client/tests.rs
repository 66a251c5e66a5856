//! The client against in-process hubs: requests, errors, timeouts,
//! cancellation, progress, handlers, offline queue and reconnects.

use super::*;
use crate::{Ctx, Router, message};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicUsize;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Add {
    a: i64,
    b: i64,
}
message!(Add = "ADD");

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sum {
    sum: i64,
}
message!(Sum = "SUM");

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Slow {
    ms: u64,
}
message!(Slow = "SLOW");

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Note {
    text: String,
}
message!(Note = "NOTE");

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Noted {
    text: String,
}
message!(Noted = "NOTED");

fn router() -> Router {
    Router::new()
        .rpc(|ctx: Ctx<Add>| async move {
            let Add { a, b } = *ctx.payload();
            for step in 0..2 {
                ctx.progress(&step)?;
            }
            a.checked_add(b)
                .map(|sum| Sum { sum })
                .ok_or_else(|| Error::invalid_argument("overflow"))
        })
        .rpc(|ctx: Ctx<Slow>| async move {
            tokio::time::sleep(Duration::from_millis(ctx.payload().ms)).await;
            Ok::<_, Error>(Sum { sum: 0 })
        })
        .on(|ctx: Ctx<Note>| async move {
            ctx.send(&Noted {
                text: ctx.payload().text.clone(),
            })
        })
}

const WAIT: Duration = Duration::from_secs(5);

fn client(hub: &crate::Hub) -> Client {
    Client::builder(InProcess::new(hub.clone(), "msgpack").unwrap()).build()
}

#[tokio::test]
async fn a_request_gets_its_reply_and_an_error_answer_is_typed() {
    let hub = router().build();
    let client = client(&hub);
    let sum: Sum = client.request(&Add { a: 2, b: 40 }, WAIT).await.unwrap();
    assert_eq!(sum.sum, 42);
    let err = client
        .request::<Add, Sum>(&Add { a: i64::MAX, b: 1 }, WAIT)
        .await
        .unwrap_err();
    match err {
        ClientError::Server(e) => {
            assert_eq!(*e.code(), signalbox_codec::ErrorCode::InvalidArgument);
            assert_eq!(e.message(), "overflow");
        }
        other => panic!("{other:?}"),
    }
    // Concurrent requests are matched by correlation id, not order.
    let (slow, fast) = tokio::join!(
        client.request::<Slow, Sum>(&Slow { ms: 100 }, WAIT),
        client.request::<Add, Sum>(&Add { a: 1, b: 1 }, WAIT)
    );
    assert_eq!(slow.unwrap().sum, 0);
    assert_eq!(fast.unwrap().sum, 2);
    client.close().await;
}

#[tokio::test]
async fn progress_messages_are_observable() {
    let hub = router().build();
    let client = client(&hub);
    let (tx, mut rx) = mpsc::channel(8);
    let sum: Sum = client
        .request_with_progress(&Add { a: 1, b: 2 }, WAIT, tx)
        .await
        .unwrap();
    assert_eq!(sum.sum, 3);
    for step in 0..2 {
        let progress = rx.recv().await.unwrap();
        assert_eq!(progress.ty, PROGRESS_TYPE);
        assert_eq!(progress.decode_payload::<i32>().unwrap(), step);
    }
}

#[tokio::test]
async fn a_request_times_out_and_a_dropped_request_is_forgotten() {
    let hub = router().build();
    let client = client(&hub);
    let err = client
        .request::<Slow, Sum>(&Slow { ms: 500 }, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(client.shared().pending.lock().is_empty());
    {
        let request = client.request::<Slow, Sum>(&Slow { ms: 200 }, WAIT);
        tokio::pin!(request);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut request)
                .await
                .is_err()
        );
        assert_eq!(client.shared().pending.lock().len(), 1);
    }
    assert!(
        client.shared().pending.lock().is_empty(),
        "dropping cancels"
    );
    // The late replies arrive and go nowhere; the client still works.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sum: Sum = client.request(&Add { a: 0, b: 0 }, WAIT).await.unwrap();
    assert_eq!(sum.sum, 0);
}

#[tokio::test]
async fn typed_handlers_and_the_incoming_stream_get_what_is_not_a_reply() {
    let hub = router().build();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let client = Client::builder(InProcess::new(hub.clone(), "json").unwrap())
        .on(move |noted: Noted, _meta: Meta| {
            assert_eq!(noted.text, "typed");
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let mut incoming = client.incoming().unwrap();
    assert!(client.incoming().is_none(), "taken once");
    client
        .send(&Note {
            text: "typed".into(),
        })
        .await
        .unwrap();
    // Unknown to the server: the ERROR goes to the incoming stream.
    client.send(&Sum { sum: 1 }).await.unwrap();
    let error = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(error.ty, ERROR_TYPE);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

/// A connector whose target can be swapped or taken away: a server that
/// goes down and comes back.
#[derive(Clone)]
struct Switchable {
    hub: Arc<Mutex<Option<crate::Hub>>>,
    attempts: Arc<AtomicUsize>,
}

#[async_trait]
impl Connector for Switchable {
    fn codec(&self) -> WireCodec {
        WireCodec::from_name("json").unwrap()
    }

    async fn connect(&self) -> Result<Link, ConnectError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let hub = self.hub.lock().clone();
        match hub {
            Some(hub) => InProcess::new(hub, "json").unwrap().connect().await,
            None => Err(ConnectError::Io(
                std::io::ErrorKind::ConnectionRefused.into(),
            )),
        }
    }
}

#[tokio::test]
async fn sends_wait_offline_and_go_out_first_after_the_reconnect() {
    let target = Switchable {
        hub: Arc::new(Mutex::new(None)),
        attempts: Arc::new(AtomicUsize::new(0)),
    };
    let client = Client::builder(target.clone())
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .offline_queue(3, OfflinePolicy::DropOldest)
        .build();
    let mut incoming = client.incoming().unwrap();
    let mut state = client.state();
    state
        .wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        .await
        .unwrap();
    for text in ["one", "two", "three", "four"] {
        client.send(&Note { text: text.into() }).await.unwrap();
    }
    assert_eq!(client.queued_offline(), 3);
    assert_eq!(client.dropped_offline(), 1, "the oldest made room");
    // A request made offline waits too (and makes room in turn: "two" goes).
    let request = {
        let client = client.clone();
        tokio::spawn(async move { client.request::<Add, Sum>(&Add { a: 3, b: 4 }, WAIT).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        target.attempts.load(Ordering::SeqCst) >= 2,
        "it keeps trying"
    );
    *target.hub.lock() = Some(router().build());
    assert!(client.wait_connected(WAIT).await);
    for text in ["three", "four"] {
        let env = tokio::time::timeout(WAIT, incoming.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.decode_payload::<Noted>().unwrap().text, text);
    }
    assert_eq!(request.await.unwrap().unwrap().sum, 7);
}

#[tokio::test]
async fn a_full_offline_queue_can_reject_or_drop_the_newest() {
    let target = Switchable {
        hub: Arc::new(Mutex::new(None)),
        attempts: Arc::new(AtomicUsize::new(0)),
    };
    let reject = Client::builder(target.clone())
        .offline_queue(1, OfflinePolicy::Reject)
        .build();
    reject.send(&Note { text: "a".into() }).await.unwrap();
    let err = reject.send(&Note { text: "b".into() }).await.unwrap_err();
    assert!(matches!(err, ClientError::QueueFull), "{err:?}");
    let newest = Client::builder(target.clone())
        .offline_queue(1, OfflinePolicy::DropNewest)
        .build();
    newest.send(&Note { text: "a".into() }).await.unwrap();
    newest.send(&Note { text: "b".into() }).await.unwrap();
    assert_eq!((newest.queued_offline(), newest.dropped_offline()), (1, 1));
}

#[tokio::test]
async fn a_server_restart_is_survived_and_in_flight_requests_fail() {
    let config = crate::Config {
        drain_timeout: Duration::from_millis(50),
        ..crate::Config::default()
    };
    let first = crate::Hub::builder(router()).config(config).build();
    let target = Switchable {
        hub: Arc::new(Mutex::new(Some(first.clone()))),
        attempts: Arc::new(AtomicUsize::new(0)),
    };
    let client = Client::builder(target.clone())
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .build();
    assert!(client.wait_connected(WAIT).await);
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .request::<Slow, Sum>(&Slow { ms: 10_000 }, WAIT)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    *target.hub.lock() = None;
    let mut state = client.state();
    first.shutdown().await;
    state
        .wait_for(|s| {
            matches!(
                s,
                ConnectionState::Disconnected { .. } | ConnectionState::Reconnecting { .. }
            )
        })
        .await
        .unwrap();
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::Disconnected), "{err:?}");
    *target.hub.lock() = Some(router().build());
    assert!(client.wait_connected(WAIT).await);
    let sum: Sum = client.request(&Add { a: 1, b: 1 }, WAIT).await.unwrap();
    assert_eq!(sum.sum, 2);
}

#[tokio::test]
async fn closing_stops_the_client_and_dropping_every_handle_too() {
    let hub = router().build();
    let client = client(&hub);
    assert!(client.wait_connected(WAIT).await);
    let mut state = client.state();
    client.close().await;
    assert_eq!(*state.borrow_and_update(), ConnectionState::Closed);
    assert!(matches!(
        client.send(&Note { text: "x".into() }).await,
        Err(ClientError::Closed)
    ));
    let other = self::client(&hub);
    assert!(other.wait_connected(WAIT).await);
    let mut state = other.state();
    drop(other);
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == ConnectionState::Closed))
        .await
        .unwrap()
        .unwrap();
    // The server saw both go.
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.connection_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_request_dropped_while_offline_is_withdrawn_from_the_queue() {
    let target = Switchable {
        hub: Arc::new(Mutex::new(None)),
        attempts: Arc::new(AtomicUsize::new(0)),
    };
    let client = Client::builder(target.clone())
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .build();
    let mut incoming = client.incoming().unwrap();
    {
        let request = client.request::<Add, Sum>(&Add { a: 1, b: 2 }, WAIT);
        tokio::pin!(request);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut request)
                .await
                .is_err()
        );
        assert_eq!(client.queued_offline(), 1);
    }
    assert_eq!(client.queued_offline(), 0, "dropping withdraws it");
    let err = client
        .request::<Add, Sum>(&Add { a: 1, b: 2 }, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { sent: false }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not be sent"), "{err}");
    client
        .send(&Note {
            text: "kept".into(),
        })
        .await
        .unwrap();
    assert_eq!(client.queued_offline(), 1);
    *target.hub.lock() = Some(router().build());
    assert!(client.wait_connected(WAIT).await);
    // Only the note went out: the next thing in is its answer, then the
    // reply to a fresh request (no stray replies to withdrawn ones).
    let env = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.decode_payload::<Noted>().unwrap().text, "kept");
    let sum: Sum = client.request(&Add { a: 2, b: 2 }, WAIT).await.unwrap();
    assert_eq!(sum.sum, 4);
    assert!(incoming.try_recv().is_err());
}

/// A connector the server always denies (an upgrade answered 401).
#[derive(Clone)]
struct Denying {
    attempts: Arc<AtomicUsize>,
}

#[async_trait]
impl Connector for Denying {
    fn codec(&self) -> WireCodec {
        WireCodec::from_name("json").unwrap()
    }

    async fn connect(&self) -> Result<Link, ConnectError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(ConnectError::Denied("HTTP 401 Unauthorized".into()))
    }
}

#[tokio::test]
async fn a_denied_client_stops_and_fails_its_sends_as_refused() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let client = Client::builder(Denying {
        attempts: attempts.clone(),
    })
    .backoff(Duration::from_millis(5), Duration::from_millis(10))
    .build();
    let mut state = client.state();
    let seen = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Refused { .. })),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(
        seen,
        ConnectionState::Refused {
            reason: "HTTP 401 Unauthorized".into()
        }
    );
    assert!(!client.wait_connected(WAIT).await);
    let err = client
        .request::<Add, Sum>(&Add { a: 1, b: 1 }, WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("401")),
        "{err:?}"
    );
    let err = client.send(&Note { text: "x".into() }).await.unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "no retry");

    // As a policy: keeps trying, with the reason in the state.
    let attempts = Arc::new(AtomicUsize::new(0));
    let client = Client::builder(Denying {
        attempts: attempts.clone(),
    })
    .backoff(Duration::from_millis(5), Duration::from_millis(10))
    .retry_denied(true)
    .build();
    let deadline = tokio::time::Instant::now() + WAIT;
    while attempts.load(Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "it retries");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        &*client.state().borrow(),
        ConnectionState::Disconnected { reason, .. } | ConnectionState::Reconnecting { reason, .. }
            if reason.contains("401")
    ));
}

#[tokio::test]
async fn a_request_waiting_offline_fails_as_refused_when_the_client_is_denied() {
    // Offline first, then denied: the queued request fails at once.
    let target = Switchable {
        hub: Arc::new(Mutex::new(None)),
        attempts: Arc::new(AtomicUsize::new(0)),
    };
    let deny = Arc::new(std::sync::atomic::AtomicBool::new(false));
    #[derive(Clone)]
    struct Flip(Switchable, Arc<std::sync::atomic::AtomicBool>);
    #[async_trait]
    impl Connector for Flip {
        fn codec(&self) -> WireCodec {
            self.0.codec()
        }
        async fn connect(&self) -> Result<Link, ConnectError> {
            if self.1.load(Ordering::SeqCst) {
                return Err(ConnectError::Denied("HTTP 403 Forbidden".into()));
            }
            self.0.connect().await
        }
    }
    let client = Client::builder(Flip(target, deny.clone()))
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build();
    let request = {
        let client = client.clone();
        tokio::spawn(async move { client.request::<Add, Sum>(&Add { a: 1, b: 1 }, WAIT).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    deny.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let err = request.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("403")),
        "{err:?}"
    );
    assert!(started.elapsed() < WAIT / 2, "not by its timeout");
    assert_eq!(client.queued_offline(), 0);
}

#[tokio::test]
async fn the_connected_hook_sends_first_at_every_connect() {
    let target = Switchable {
        hub: Arc::new(Mutex::new(None)),
        attempts: Arc::new(AtomicUsize::new(0)),
    };
    let client = Client::builder(target.clone())
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .on_connected(|connected: &mut Connected<'_>| {
            let text = if connected.is_reconnect() {
                "hook again"
            } else {
                "hook"
            };
            connected.send(&Note { text: text.into() }).unwrap();
        })
        .build();
    let mut incoming = client.incoming().unwrap();
    client
        .send(&Note {
            text: "queued".into(),
        })
        .await
        .unwrap();
    let first = crate::Hub::builder(router())
        .config(crate::Config {
            drain_timeout: Duration::from_millis(50),
            ..crate::Config::default()
        })
        .build();
    *target.hub.lock() = Some(first.clone());
    assert!(client.wait_connected(WAIT).await);
    let mut next = async || {
        let env = tokio::time::timeout(WAIT, incoming.recv())
            .await
            .unwrap()
            .unwrap();
        env.decode_payload::<Noted>().unwrap().text
    };
    assert_eq!(next().await, "hook");
    assert_eq!(next().await, "queued");
    // A restart: the hook runs again.
    *target.hub.lock() = Some(router().build());
    first.shutdown().await;
    assert_eq!(next().await, "hook again");
}

#[tokio::test]
async fn errors_answering_sends_reach_the_typed_error_handler() {
    let hub = router().build();
    let (tx, mut rx) = mpsc::channel(4);
    let client = Client::builder(InProcess::new(hub.clone(), "json").unwrap())
        .on_error(move |error: Error, meta: Meta| {
            let _ = tx.try_send((error, meta));
        })
        .build();
    let mut incoming = client.incoming().unwrap();
    // Unknown to the server.
    client
        .send_meta(
            &Sum { sum: 1 },
            Meta {
                correlation_id: Some("mine".into()),
                ..Meta::default()
            },
        )
        .await
        .unwrap();
    let (error, meta) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*error.code(), signalbox_codec::ErrorCode::Unimplemented);
    assert_eq!(meta.correlation_id.as_deref(), Some("mine"));
    assert!(incoming.try_recv().is_err(), "not on the incoming stream");
}
