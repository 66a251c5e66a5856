//! Admission: the rules a connection passes before it is served, and the
//! shutdown-aware accept loop (docs/PROTOCOL.md §4 and §5).

use super::{AuthHook, Handshake, Rejection};
use crate::Hub;
use crate::connection::DataMap;
use http::StatusCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

/// The default [`AdmissionBuilder::handshake_timeout`]: 10 s
/// (docs/PROTOCOL.md §4 and §5).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`AdmissionBuilder::max_connections`]. Transports set their
/// own (see their builders).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default [`AcceptLoop::retry_delay`]: 50 ms.
pub const DEFAULT_ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Why a transport refused a connection on its own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The connection limit is reached.
    #[error("too many connections")]
    Full,
    /// The hub's shutdown has begun.
    #[error("server shutting down")]
    ShuttingDown,
}

impl Refusal {
    /// The refusal as a [`Rejection`]: 503 Service Unavailable with the
    /// refusal's text (a client should try another server).
    pub fn to_rejection(self) -> Rejection {
        Rejection::new(StatusCode::SERVICE_UNAVAILABLE).with_body(self.to_string())
    }
}

/// A handshake that did not finish within its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("handshake timed out")]
pub struct HandshakeTimedOut;

/// A limit on connections served at once: each admitted connection holds
/// a [`ConnectionPermit`] until it ends. Cheap to clone (clones share the
/// count).
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` connections (0 admits none; values above what a
    /// semaphore can count are lowered to it).
    pub fn new(max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A permit, unless `max` connections hold one.
    pub fn try_acquire(&self) -> Option<ConnectionPermit> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|place| ConnectionPermit { _place: place })
    }

    /// Connections holding a permit now.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One connection's place under a [`ConnectionLimit`]; dropping it frees
/// the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    _place: OwnedSemaphorePermit,
}

/// Builds an [`Admission`].
#[derive(Debug)]
pub struct AdmissionBuilder {
    hub: Hub,
    max_connections: usize,
    handshake_timeout: Duration,
    auth: Option<AuthHook>,
}

impl AdmissionBuilder {
    /// Connections served at once; past it [`Admission::admit`] refuses
    /// with [`Refusal::Full`]. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// How long a transport's handshake ([`Admission::within_handshake`])
    /// and the authentication hook ([`Admission::authenticate`]) may each
    /// take. Default [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Authenticates each connection with `hook` (see [`AuthHook`]).
    /// Without one every connection starts with empty data.
    pub fn authenticate<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DataMap, Rejection>> + Send + 'static,
    {
        self.auth_hook(AuthHook::new(hook))
    }

    /// Authenticates each connection with an [`AuthHook`] already made.
    pub fn auth_hook(mut self, hook: AuthHook) -> Self {
        self.auth = Some(hook);
        self
    }

    /// The limit set by [`max_connections`](Self::max_connections).
    pub fn max_connections_value(&self) -> usize {
        self.max_connections
    }

    /// The timeout set by [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout_value(&self) -> Duration {
        self.handshake_timeout
    }

    /// Builds the admission.
    pub fn build(self) -> Admission {
        Admission {
            inner: Arc::new(Inner {
                limit: ConnectionLimit::new(self.max_connections),
                hub: self.hub,
                handshake_timeout: self.handshake_timeout,
                auth: self.auth,
            }),
        }
    }
}

#[derive(Debug)]
struct Inner {
    hub: Hub,
    limit: ConnectionLimit,
    handshake_timeout: Duration,
    auth: Option<AuthHook>,
}

/// The rules a connection passes before it is served, the same on every
/// transport: not while the hub shuts down, not past the connection limit
/// ([`admit`](Self::admit)), a handshake within the timeout
/// ([`within_handshake`](Self::within_handshake)), and the authentication
/// hook ([`authenticate`](Self::authenticate)). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

impl Admission {
    /// Starts building the admission rules of `hub`'s connections.
    pub fn builder(hub: Hub) -> AdmissionBuilder {
        AdmissionBuilder {
            hub,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            auth: None,
        }
    }

    /// The hub connections go to.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The connection limit.
    pub fn limit(&self) -> &ConnectionLimit {
        &self.inner.limit
    }

    /// Connections admitted and not yet ended.
    pub fn connection_count(&self) -> usize {
        self.inner.limit.open()
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }

    /// Whether an authentication hook is set.
    pub fn has_auth_hook(&self) -> bool {
        self.inner.auth.is_some()
    }

    /// A place for one more connection, held until the permit is dropped;
    /// refused while the hub shuts down or when the limit is reached.
    pub fn admit(&self) -> Result<ConnectionPermit, Refusal> {
        if self.inner.hub.is_shutting_down() {
            return Err(Refusal::ShuttingDown);
        }
        self.inner.limit.try_acquire().ok_or(Refusal::Full)
    }

    /// Runs `handshake`, giving up after the handshake timeout.
    pub async fn within_handshake<F: Future>(
        &self,
        handshake: F,
    ) -> Result<F::Output, HandshakeTimedOut> {
        tokio::time::timeout(self.inner.handshake_timeout, handshake)
            .await
            .map_err(|_| HandshakeTimedOut)
    }

    /// Runs the authentication hook on `handshake` within the handshake
    /// timeout: the connection's data, the hook's rejection, or
    /// [`Rejection::auth_timed_out`]. Without a hook: empty data.
    pub async fn authenticate(&self, handshake: Handshake) -> Result<DataMap, Rejection> {
        match &self.inner.auth {
            None => Ok(DataMap::new()),
            Some(hook) => match self.within_handshake(hook.check(handshake)).await {
                Ok(decided) => decided,
                Err(HandshakeTimedOut) => Err(Rejection::auth_timed_out()),
            },
        }
    }
}

/// Where an [`AcceptLoop`] gets its connections: a TCP listener, a QUIC
/// endpoint, a test's channel.
pub trait Listener: Send {
    /// One accepted connection, not yet admitted.
    type Incoming: Send + 'static;

    /// The next connection; `Some(Err(_))` for a failure the loop retries
    /// after [`AcceptLoop::retry_delay`] (out of file descriptors, say),
    /// `None` once the listener is closed for good.
    fn accept(&mut self) -> impl Future<Output = Option<std::io::Result<Self::Incoming>>> + Send;

    /// Turns `incoming` away (the default drops it).
    fn refuse(&mut self, incoming: Self::Incoming, refusal: Refusal) {
        let _ = (incoming, refusal);
    }
}

/// The accept loop every transport runs: accepts until the hub's shutdown
/// begins, turns connections past its [`ConnectionLimit`] away
/// ([`Listener::refuse`] with [`Refusal::Full`]) and serves each other one
/// on its own task, holding a [`ConnectionPermit`].
///
/// When the shutdown begins the loop stops accepting. By default it returns
/// then, leaving the connections it started to finish on their own; with
/// [`drain`](Self::drain) it keeps refusing newcomers
/// ([`Refusal::ShuttingDown`]) until every connection it started has ended.
#[derive(Debug)]
pub struct AcceptLoop {
    hub: Hub,
    limit: ConnectionLimit,
    drain: bool,
    retry_delay: Duration,
}

impl AcceptLoop {
    /// A loop for `hub`'s connections under `limit`.
    pub fn new(hub: &Hub, limit: ConnectionLimit) -> Self {
        AcceptLoop {
            hub: hub.clone(),
            limit,
            drain: false,
            retry_delay: DEFAULT_ACCEPT_RETRY,
        }
    }

    /// After the shutdown begins, waits for the connections started here,
    /// refusing newcomers meanwhile. Default off.
    pub fn drain(mut self, drain: bool) -> Self {
        self.drain = drain;
        self
    }

    /// How long to wait after a failed accept before the next one, rather
    /// than spin. Default [`DEFAULT_ACCEPT_RETRY`].
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Runs the loop: `serve` is called for each admitted connection and
    /// the future it returns is spawned; the connection's permit is held
    /// until that future ends.
    pub async fn run<L, S, Fut>(self, mut listener: L, mut serve: S)
    where
        L: Listener,
        S: FnMut(L::Incoming) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tracker = TaskTracker::new();
        let shutdown = self.hub.shutdown_started();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let incoming = match accepted {
                Some(Ok(incoming)) => incoming,
                Some(Err(error)) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(self.retry_delay).await;
                    continue;
                }
                None => return,
            };
            match self.limit.try_acquire() {
                Some(permit) => {
                    let served = serve(incoming);
                    tracker.spawn(async move {
                        served.await;
                        drop(permit);
                    });
                }
                None => {
                    tracing::debug!("connection limit reached; refused");
                    listener.refuse(incoming, Refusal::Full);
                }
            }
        }
        tracker.close();
        if !self.drain {
            return;
        }
        tracing::debug!(open = tracker.len(), "draining");
        let done = tracker.wait();
        tokio::pin!(done);
        loop {
            tokio::select! {
                () = &mut done => return,
                accepted = listener.accept() => match accepted {
                    Some(Ok(incoming)) => listener.refuse(incoming, Refusal::ShuttingDown),
                    Some(Err(_)) => tokio::time::sleep(self.retry_delay).await,
                    None => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Router;
    use parking_lot::Mutex;
    use signalbox_codec::WireCodec;
    use tokio::sync::{mpsc, oneshot};

    /// Connections from a channel; refusals recorded.
    struct Channel {
        incoming: mpsc::Receiver<u32>,
        refused: Arc<Mutex<Vec<(u32, Refusal)>>>,
    }

    impl Listener for Channel {
        type Incoming = u32;
        async fn accept(&mut self) -> Option<std::io::Result<u32>> {
            self.incoming.recv().await.map(Ok)
        }
        fn refuse(&mut self, incoming: u32, refusal: Refusal) {
            self.refused.lock().push((incoming, refusal));
        }
    }

    type Refused = Arc<Mutex<Vec<(u32, Refusal)>>>;

    fn channel() -> (mpsc::Sender<u32>, Channel, Refused) {
        let (tx, rx) = mpsc::channel(16);
        let refused = Refused::default();
        let listener = Channel {
            incoming: rx,
            refused: refused.clone(),
        };
        (tx, listener, refused)
    }

    /// Serves each connection until its release arrives; reports starts.
    type Started = mpsc::UnboundedReceiver<(u32, oneshot::Sender<()>)>;

    fn held_connections() -> (
        impl FnMut(u32) -> futures_util::future::BoxFuture<'static, ()>,
        Started,
    ) {
        let (started_tx, started_rx) = mpsc::unbounded_channel();
        let serve = move |n: u32| {
            let (release_tx, release_rx) = oneshot::channel::<()>();
            let _ = started_tx.send((n, release_tx));
            let fut: futures_util::future::BoxFuture<'static, ()> = Box::pin(async move {
                let _ = release_rx.await;
            });
            fut
        };
        (serve, started_rx)
    }

    fn json() -> WireCodec {
        WireCodec::from_name("json").unwrap()
    }

    #[tokio::test]
    async fn the_accept_loop_refuses_past_the_limit_and_frees_places_as_connections_end() {
        let hub = Router::new().build();
        let limit = ConnectionLimit::new(2);
        let (tx, listener, refused) = channel();
        let (serve, mut started) = held_connections();
        let running = tokio::spawn(AcceptLoop::new(&hub, limit.clone()).run(listener, serve));

        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let (_, release_1) = started.recv().await.unwrap();
        let (_, _release_2) = started.recv().await.unwrap();
        assert_eq!(limit.open(), 2);
        tx.send(3).await.unwrap();
        while refused.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(*refused.lock(), vec![(3, Refusal::Full)]);

        release_1.send(()).unwrap();
        while limit.open() != 1 {
            tokio::task::yield_now().await;
        }
        tx.send(4).await.unwrap();
        assert_eq!(started.recv().await.unwrap().0, 4);
        assert_eq!(limit.open(), 2);
        assert_eq!(refused.lock().len(), 1);

        drop(tx); // the listener closes: the loop ends
        running.await.unwrap();
    }

    #[tokio::test]
    async fn the_accept_loop_returns_when_the_shutdown_begins_leaving_connections_running() {
        let hub = Router::new().build();
        let limit = ConnectionLimit::new(4);
        let (tx, listener, _refused) = channel();
        let (serve, mut started) = held_connections();
        let running = tokio::spawn(AcceptLoop::new(&hub, limit.clone()).run(listener, serve));
        tx.send(1).await.unwrap();
        let (_, release) = started.recv().await.unwrap();

        hub.shutdown().await;
        running.await.unwrap();
        // The connection it started is still served, with its place.
        assert_eq!(limit.open(), 1);
        release.send(()).unwrap();
        while limit.open() != 0 {
            tokio::task::yield_now().await;
        }
        // Nothing accepts any more.
        assert!(tx.send(2).await.is_err(), "the listener was dropped");
    }

    #[tokio::test]
    async fn a_draining_loop_refuses_newcomers_until_its_connections_end() {
        let hub = Router::new().build();
        let limit = ConnectionLimit::new(4);
        let (tx, listener, refused) = channel();
        let (serve, mut started) = held_connections();
        let running = tokio::spawn(
            AcceptLoop::new(&hub, limit.clone())
                .drain(true)
                .run(listener, serve),
        );
        tx.send(1).await.unwrap();
        let (_, release) = started.recv().await.unwrap();

        hub.shutdown().await;
        tx.send(2).await.unwrap();
        while refused.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(*refused.lock(), vec![(2, Refusal::ShuttingDown)]);
        assert!(!running.is_finished(), "connection 1 is still served");

        release.send(()).unwrap();
        running.await.unwrap();
        assert_eq!(limit.open(), 0);
        assert!(started.try_recv().is_err(), "2 was never served");
    }

    #[tokio::test]
    async fn admit_refuses_when_full_and_when_shutting_down() {
        let hub = Router::new().build();
        let admission = Admission::builder(hub.clone()).max_connections(1).build();
        let permit = admission.admit().unwrap();
        assert_eq!(admission.connection_count(), 1);
        assert_eq!(admission.admit().unwrap_err(), Refusal::Full);
        drop(permit);
        assert_eq!(admission.connection_count(), 0);
        let again = admission.admit().unwrap();
        drop(again);

        hub.shutdown().await;
        assert_eq!(admission.admit().unwrap_err(), Refusal::ShuttingDown);
        let rejection = Refusal::ShuttingDown.to_rejection();
        assert_eq!(rejection.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rejection.reason(), "server shutting down");
        assert_eq!(ConnectionLimit::new(0).try_acquire().map(drop), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handshake_past_the_timeout_is_given_up() {
        let hub = Router::new().build();
        let admission = Admission::builder(hub)
            .handshake_timeout(Duration::from_secs(5))
            .build();
        let quick = admission
            .within_handshake(async {
                tokio::time::sleep(Duration::from_secs(4)).await;
                7
            })
            .await;
        assert_eq!(quick, Ok(7));
        let started = tokio::time::Instant::now();
        let slow = admission
            .within_handshake(std::future::pending::<()>())
            .await;
        assert_eq!(slow, Err(HandshakeTimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_auth_hook_decides_within_the_handshake_timeout() {
        let hub = Router::new().build();
        let admission = Admission::builder(hub.clone())
            .handshake_timeout(Duration::from_secs(5))
            .authenticate(|handshake: Handshake| async move {
                match handshake.query_param("token").as_deref() {
                    Some("good") => {
                        let mut data = DataMap::new();
                        data.insert(String::from("ada"));
                        Ok(data)
                    }
                    Some("slow") => std::future::pending().await,
                    _ => Err(Rejection::unauthorized()),
                }
            })
            .build();
        assert!(admission.has_auth_hook());
        let with_token = |token: &str| {
            let mut handshake = Handshake::new("test", json());
            handshake.uri = Some(format!("/ws?token={token}").parse().unwrap());
            handshake
        };
        let data = admission.authenticate(with_token("good")).await.unwrap();
        assert_eq!(data.get::<String>().map(String::as_str), Some("ada"));
        let refused = admission.authenticate(with_token("bad")).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        let late = admission
            .authenticate(with_token("slow"))
            .await
            .unwrap_err();
        assert_eq!(late.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(late.reason(), "authentication timed out");

        let open = Admission::builder(hub).build();
        assert!(!open.has_auth_hook());
        assert!(open.authenticate(with_token("bad")).await.is_ok());
    }
}
