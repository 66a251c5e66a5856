//! The router: routes from envelope `type` to handler, with middleware,
//! lifecycle hooks and shared state, composed with `merge` and `mount`.

use crate::connection::{Close, DataMap};
use crate::context::{ConnectionHandle, Ctx};
use crate::error::Error;
use crate::hub::{Hub, HubBuilder, TopicAction};
use crate::message::Message;
use crate::middleware::{Endpoint, Middleware, Next, Request};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use signalbox_codec::Meta;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// What a handler of [`Router::on`] may return: nothing, or
/// `Result<(), E>` for the router's error type `E`
/// ([`Router::handler_error`]; [`Error`] unless chosen).
///
/// The error type is the router's, not each handler's, so that a handler
/// that only uses `?` and ends with `Ok(())` needs no annotation: there is
/// one `Result` this trait accepts, and the compiler takes it. What an
/// error becomes on the wire is in [`Error`](crate::Error).
///
/// A handler of `.on` that returns a value gets a compiler error pointing
/// to [`Router::rpc`] (`core/tests/ui/on_returns_a_value.rs`).
#[diagnostic::on_unimplemented(
    message = "a handler of `.on` (or an `on_open` hook) returns `{Self}`; it may return only `()` or `Result<(), {E}>`, the router's error type",
    label = "returns `{Self}`",
    note = "to answer a request with a value, route it with `.rpc` (the handler returns `Result<Response, {E}>`, docs/PROTOCOL.md §7)",
    note = "to send a message from a handler of `.on`, use `ctx.reply(&msg)` or `ctx.conn().send(&msg)` and return `Ok(())`",
    note = "to return another error type (one with `Into<signalbox::Error>`), choose it for the router with `.handler_error::<YourError>()`"
)]
pub trait HandlerResult<E = Error>: Send + 'static {
    /// As a result, the error converted for the wire.
    fn into_result(self) -> Result<(), Error>;
}

impl<E> HandlerResult<E> for () {
    fn into_result(self) -> Result<(), Error> {
        Ok(())
    }
}

impl<E: Into<Error> + Send + 'static> HandlerResult<E> for Result<(), E> {
    fn into_result(self) -> Result<(), Error> {
        self.map_err(Into::into)
    }
}

/// A shared-state type a router or route declared it uses
/// ([`Router::needs`], [`Route::needs`]).
#[derive(Clone, Copy)]
struct Need {
    type_name: &'static str,
    registered: fn(&DataMap) -> bool,
}

impl Need {
    fn of<T: Send + Sync + 'static>() -> Need {
        fn registered<T: Send + Sync + 'static>(state: &DataMap) -> bool {
            state.get::<T>().is_some()
        }
        Need {
            type_name: std::any::type_name::<T>(),
            registered: registered::<T>,
        }
    }
}

/// Why a hub could not be built from a router ([`HubBuilder::try_build`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A router or route declared it needs shared state of a type that no
    /// router registered with [`Router::with_state`].
    #[error("{} needs shared state of type {type_name}, which no router registers with with_state", .route.as_deref().map_or_else(|| "a router".to_owned(), |r| format!("route {r:?}")))]
    MissingState {
        /// The state's type, as `std::any::type_name` spells it.
        type_name: &'static str,
        /// The route that declared it ([`Route::needs`]); `None` when a
        /// router did ([`Router::needs`]).
        route: Option<String>,
    },
}

/// One route: a message type, its handler, and how it runs.
///
/// `E` is the error type its handler returns; a route added with
/// [`Router::route`] takes the router's, so it is rarely written.
pub struct Route<E = Error> {
    name: String,
    rpc: bool,
    concurrent: bool,
    deadline: Option<Duration>,
    compress: bool,
    layers: Vec<Arc<dyn Middleware>>,
    needs: Vec<Need>,
    handler: Arc<dyn Fn(bool) -> Endpoint + Send + Sync>,
    error: PhantomData<fn() -> E>,
}

impl<E> std::fmt::Debug for Route<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("rpc", &self.rpc)
            .field("concurrent", &self.concurrent)
            .field("deadline", &self.deadline)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl<E: Into<Error> + Send + 'static> Route<E> {
    /// A route for messages of type `M`, handled in arrival order.
    pub fn on<M, H, Fut>(handler: H) -> Route<E>
    where
        M: Message,
        H: Fn(Ctx<M>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult<E>,
    {
        let handler = Arc::new(handler);
        Route {
            name: M::TYPE.to_owned(),
            rpc: false,
            concurrent: false,
            deadline: None,
            compress: true,
            layers: Vec::new(),
            needs: Vec::new(),
            error: PhantomData,
            handler: Arc::new(move |compress| {
                let handler = handler.clone();
                Arc::new(move |req: Request| {
                    let handler = handler.clone();
                    Box::pin(async move {
                        let ctx = decode::<M>(req, false, compress)?;
                        HandlerResult::<E>::into_result(handler(ctx).await)
                    }) as BoxFuture<'static, Result<(), Error>>
                })
            }),
        }
    }

    /// A request/response route: the handler's `Ok` is sent back as `Resp`
    /// with the request's correlationId, its `Err` (converted as
    /// [`Error`](crate::Error) describes) as `RPC_ERROR` (also for a request
    /// without a correlationId, docs/PROTOCOL.md §6). Requests run
    /// concurrently (up to [`crate::Config::max_concurrent`]) and get
    /// DEADLINE_EXCEEDED when they take longer than the deadline.
    pub fn rpc<Req, Resp, H, Fut>(handler: H) -> Route<E>
    where
        Req: Message,
        Resp: Message,
        H: Fn(Ctx<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Route {
            name: Req::TYPE.to_owned(),
            rpc: true,
            concurrent: true,
            deadline: None,
            compress: true,
            layers: Vec::new(),
            needs: Vec::new(),
            error: PhantomData,
            handler: Arc::new(move |compress| {
                let handler = handler.clone();
                Arc::new(move |req: Request| {
                    let handler = handler.clone();
                    Box::pin(async move {
                        let ctx = decode::<Req>(req, true, compress)?;
                        let conn = ctx.conn.clone();
                        let meta = Meta {
                            correlation_id: ctx.meta.correlation_id.clone(),
                            ..Meta::default()
                        };
                        let resp = handler(ctx).await.map_err(Into::into)?;
                        conn.send_with(&resp, meta, compress)
                    }) as BoxFuture<'static, Result<(), Error>>
                })
            }),
        }
    }
}

impl<E> Route<E> {
    /// Declares that this route's handler uses shared state of type `T`
    /// ([`ConnectionHandle::state`]): building a hub whose routers register no `T`
    /// ([`Router::with_state`]) then fails with
    /// [`BuildError::MissingState`] instead of answering INTERNAL to a peer
    /// when the handler runs. [`Router::needs`] declares it for a whole
    /// router.
    pub fn needs<T: Send + Sync + 'static>(mut self) -> Self {
        self.needs.push(Need::of::<T>());
        self
    }

    /// Adds middleware that runs for this route only, after the router's.
    pub fn layer(mut self, middleware: impl Middleware) -> Self {
        self.layers.push(Arc::new(middleware));
        self
    }

    /// How long the handler (with its middleware) may take; past it the
    /// peer gets DEADLINE_EXCEEDED. Requests default to
    /// [`crate::Config::rpc_deadline`]; other routes have none unless set.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Handles this route's messages in arrival order with the connection's
    /// other ordered messages (the default for [`Route::on`]).
    pub fn ordered(mut self) -> Self {
        self.concurrent = false;
        self
    }

    /// Handles this route's messages concurrently, up to
    /// [`crate::Config::max_concurrent`] per connection (the default for
    /// [`Route::rpc`]).
    pub fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    /// Never gzip what this route's handler replies (per-route opt-out).
    pub fn uncompressed(mut self) -> Self {
        self.compress = false;
        self
    }

    /// The wire type this route answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same route, typed for a router of another error type (its
    /// handler was converted when it was made).
    fn cast<E2>(self) -> Route<E2> {
        Route {
            name: self.name,
            rpc: self.rpc,
            concurrent: self.concurrent,
            deadline: self.deadline,
            compress: self.compress,
            layers: self.layers,
            needs: self.needs,
            handler: self.handler,
            error: PhantomData,
        }
    }
}

fn decode<M: Message>(req: Request, rpc: bool, compress: bool) -> Result<Ctx<M>, Error> {
    let payload = M::decode(req.envelope.payload.as_ref())?;
    payload.validate()?;
    Ok(Ctx {
        conn: req.conn,
        payload,
        meta: req.envelope.meta,
        rpc,
        compress,
    })
}

/// What to do when two routers being merged both route one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Fail the merge with [`MergeError::Conflict`].
    Error,
    /// Keep the route already there.
    Skip,
    /// Take the incoming route.
    Replace,
}

/// A merge that met a conflict under [`ConflictPolicy::Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// Both routers route this type.
    #[error("both routers route message type {0:?}")]
    Conflict(String),
}

/// An error reported to the router's error sink.
#[derive(Debug)]
pub struct ErrorEvent<'a> {
    /// The connection concerned.
    pub conn: &'a ConnectionHandle,
    /// The message type, when the error concerns one that was read.
    pub message_type: Option<&'a str>,
    /// The error, as answered to the peer; its
    /// [`source`](std::error::Error::source), if any, is the cause the peer
    /// was not told about ([`Error`](crate::Error)).
    pub error: &'a Error,
}

pub(crate) type OpenHook =
    Arc<dyn Fn(ConnectionHandle) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;
pub(crate) type CloseHook =
    Arc<dyn Fn(ConnectionHandle, Close) -> BoxFuture<'static, ()> + Send + Sync>;
pub(crate) type ErrorHook = Arc<dyn Fn(&ErrorEvent<'_>) + Send + Sync>;
pub(crate) type AuthorizeHook =
    Arc<dyn Fn(&ConnectionHandle, &str, TopicAction) -> Result<(), Error> + Send + Sync>;

#[derive(Default, Clone)]
pub(crate) struct Hooks {
    pub(crate) on_open: Vec<OpenHook>,
    pub(crate) on_close: Vec<CloseHook>,
    pub(crate) on_error: Option<ErrorHook>,
    pub(crate) authorize: Option<AuthorizeHook>,
}

/// A route ready to serve.
pub(crate) struct RouteEntry {
    pub(crate) name: Arc<str>,
    pub(crate) rpc: bool,
    pub(crate) concurrent: bool,
    pub(crate) deadline: Option<Duration>,
    pub(crate) chain: Arc<[Arc<dyn Middleware>]>,
    pub(crate) endpoint: Endpoint,
    pub(crate) meters: crate::meter::RouteMeters,
}

/// Routes, middleware, hooks and state; [`Router::build`] turns it into a
/// [`Hub`].
///
/// `E` is the error type its handlers return: [`Error`] for
/// [`Router::new`], any type with `Into<Error>` after
/// [`Router::handler_error`] (what the peer is answered is in
/// [`Error`](crate::Error)).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use signalbox::{message, Ctx, Error, Router};
///
/// #[derive(Serialize, Deserialize)]
/// struct Add { a: i64, b: i64 }
/// message!(Add = "ADD");
/// #[derive(Serialize, Deserialize)]
/// struct Sum { sum: i64 }
/// message!(Sum = "SUM");
///
/// let router = Router::new()
///     .rpc(|ctx: Ctx<Add>| async move {
///         let Add { a, b } = *ctx.payload();
///         a.checked_add(b).map(|sum| Sum { sum }).ok_or_else(|| Error::invalid_argument("overflow"))
///     });
/// # let _ = router;
/// ```
pub struct Router<E = Error> {
    routes: Vec<Route>,
    layers: Vec<Arc<dyn Middleware>>,
    hooks: Hooks,
    state: DataMap,
    needs: Vec<Need>,
    error: PhantomData<fn() -> E>,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            routes: Vec::new(),
            layers: Vec::new(),
            hooks: Hooks::default(),
            state: DataMap::default(),
            needs: Vec::new(),
            error: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for Router<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// An empty router whose handlers return [`Error`].
    pub fn new() -> Self {
        Router::default()
    }
}

impl<E: Into<Error> + Send + 'static> Router<E> {
    /// Handlers added from here on return `E` in their `Err`: any error type
    /// with `Into<signalbox::Error>` (what the peer is answered is in
    /// [`Error`](crate::Error)). Handlers already added keep theirs.
    ///
    /// With an application error type, `?` works on signalbox calls, the
    /// database and everything else the error type converts from, without a
    /// `map_err`:
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use signalbox::{message, Ctx, Error, Router};
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// enum AppError {
    ///     #[error(transparent)]
    ///     Signal(#[from] Error),
    ///     #[error("database: {0}")]
    ///     Db(#[from] std::io::Error),
    /// }
    ///
    /// impl From<AppError> for Error {
    ///     fn from(e: AppError) -> Error {
    ///         match e {
    ///             AppError::Signal(e) => e,
    ///             // INTERNAL "internal error" to the peer; the cause to the log.
    ///             AppError::Db(e) => Error::internal_cause(e),
    ///         }
    ///     }
    /// }
    ///
    /// # fn save(_: &str) -> Result<(), std::io::Error> { Ok(()) }
    /// #[derive(Serialize, Deserialize)]
    /// struct Note { text: String }
    /// message!(Note = "NOTE");
    ///
    /// let router = Router::new()
    ///     .handler_error::<AppError>()
    ///     .on(|ctx: Ctx<Note>| async move {
    ///         save(&ctx.payload().text)?;
    ///         ctx.reply(ctx.payload())?;
    ///         Ok(())
    ///     });
    /// # let _ = router;
    /// ```
    pub fn handler_error<E2: Into<Error> + Send + 'static>(self) -> Router<E2> {
        Router {
            routes: self.routes,
            layers: self.layers,
            hooks: self.hooks,
            state: self.state,
            needs: self.needs,
            error: PhantomData,
        }
    }

    /// Routes messages of type `M` to `handler`, in arrival order.
    ///
    /// # Panics
    /// If this router already routes `M::TYPE` (use [`Router::merge`] to
    /// combine routers with a conflict policy).
    pub fn on<M, H, Fut>(self, handler: H) -> Self
    where
        M: Message,
        H: Fn(Ctx<M>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult<E>,
    {
        self.route(Route::<E>::on::<M, H, Fut>(handler))
    }

    /// Routes requests of type `Req` to `handler`, answering `Resp`; see
    /// [`Route::rpc`].
    ///
    /// # Panics
    /// If this router already routes `Req::TYPE`.
    pub fn rpc<Req, Resp, H, Fut>(self, handler: H) -> Self
    where
        Req: Message,
        Resp: Message,
        H: Fn(Ctx<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        self.route(Route::<E>::rpc::<Req, Resp, H, Fut>(handler))
    }

    /// Adds a configured [`Route`].
    ///
    /// # Panics
    /// If this router already routes the route's type: two handlers for one
    /// type is a programming error, caught at startup.
    pub fn route(mut self, route: Route<E>) -> Self {
        let route = route.cast::<Error>();
        assert!(
            !self.routes.iter().any(|r| r.name == route.name),
            "signalbox: message type {:?} is routed twice; use Router::merge with a ConflictPolicy",
            route.name
        );
        self.routes.push(route);
        self
    }

    /// Adds middleware for every route of this router (including routes
    /// merged in later). Middleware runs in the order added.
    pub fn layer(mut self, middleware: impl Middleware) -> Self {
        self.layers.push(Arc::new(middleware));
        self
    }

    /// Runs when a connection opens, before its first message is handled.
    /// An error closes the connection (policy) with the error's message.
    pub fn on_open<H, Fut>(mut self, hook: H) -> Self
    where
        H: Fn(ConnectionHandle) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult<E>,
    {
        let hook = Arc::new(hook);
        self.hooks.on_open.push(Arc::new(move |conn| {
            let hook = hook.clone();
            Box::pin(async move { HandlerResult::<E>::into_result(hook(conn).await) })
        }));
        self
    }

    /// Runs when a connection has closed, with why. The connection still
    /// lists its topics here (so it can tell its rooms it left); they are
    /// cleaned up right after.
    pub fn on_close<H, Fut>(mut self, hook: H) -> Self
    where
        H: Fn(ConnectionHandle, Close) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hook = Arc::new(hook);
        self.hooks.on_close.push(Arc::new(move |conn, close| {
            let hook = hook.clone();
            Box::pin(async move { hook(conn, close).await })
        }));
        self
    }

    /// The error sink: sees every error answered to a peer (undecodable
    /// messages, unknown types, invalid payloads, handler errors, panics,
    /// rate limits), with the cause the peer is not told about as
    /// `event.error.source()` ([`Error`](crate::Error)). One per hub; setting it
    /// again replaces it.
    pub fn on_error(mut self, sink: impl Fn(&ErrorEvent<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.on_error = Some(Arc::new(sink));
        self
    }

    /// Decides who may subscribe and publish to which topic. Default: all.
    pub fn authorize_topics(
        mut self,
        hook: impl Fn(&ConnectionHandle, &str, TopicAction) -> Result<(), Error> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.authorize = Some(Arc::new(hook));
        self
    }

    /// Registers shared application state, reached with
    /// [`ConnectionHandle::state`]. One value per type.
    pub fn with_state<T: Send + Sync + 'static>(mut self, state: T) -> Self {
        self.state.insert(state);
        self
    }

    /// Declares that this router's handlers use shared state of type `T`
    /// ([`ConnectionHandle::state`]), registered here or by a router this one is merged
    /// into. Building a hub without it fails ([`HubBuilder::try_build`]
    /// returns [`BuildError::MissingState`], [`HubBuilder::build`] panics)
    /// instead of answering INTERNAL to a peer when a handler asks for it.
    ///
    /// ```
    /// use signalbox::{BuildError, Router};
    ///
    /// struct Db;
    /// // A module's routes say what they use; the application registers it.
    /// fn notes() -> Router { Router::new().needs::<Db>() }
    ///
    /// let forgot = Router::new().merge(notes(), signalbox::ConflictPolicy::Error).unwrap();
    /// assert!(matches!(forgot.into_builder().try_build(), Err(BuildError::MissingState { .. })));
    ///
    /// let app = Router::new().with_state(Db).merge(notes(), signalbox::ConflictPolicy::Error).unwrap();
    /// assert!(app.into_builder().try_build().is_ok());
    /// ```
    pub fn needs<T: Send + Sync + 'static>(mut self) -> Self {
        self.needs.push(Need::of::<T>());
        self
    }

    /// Takes every route, hook and state of `other` (bun-ws-router's
    /// `addRoutes`). `other`'s middleware stays scoped to `other`'s routes;
    /// this router's middleware applies to all. Lifecycle hooks of both
    /// run; `other`'s error sink and topic hook are used only if this
    /// router has none.
    pub fn merge<E2>(self, other: Router<E2>, policy: ConflictPolicy) -> Result<Self, MergeError> {
        self.mount("", other, policy)
    }

    /// Like [`Router::merge`], with `prefix` put before each of `other`'s
    /// types (`mount("admin.", r)` routes `admin.KICK` to `r`'s `KICK`
    /// handler).
    pub fn mount<E2>(
        mut self,
        prefix: &str,
        other: Router<E2>,
        policy: ConflictPolicy,
    ) -> Result<Self, MergeError> {
        let Router {
            routes,
            layers,
            hooks,
            state,
            needs,
            error: _,
        } = other;
        let mut incoming = Vec::with_capacity(routes.len());
        for mut route in routes {
            route.name = format!("{prefix}{}", route.name);
            let mut scoped = layers.clone();
            scoped.append(&mut route.layers);
            route.layers = scoped;
            incoming.push(route);
        }
        if policy == ConflictPolicy::Error
            && let Some(dup) = incoming
                .iter()
                .find(|r| self.routes.iter().any(|mine| mine.name == r.name))
        {
            return Err(MergeError::Conflict(dup.name.clone()));
        }
        for route in incoming {
            match self.routes.iter().position(|mine| mine.name == route.name) {
                Some(_) if policy == ConflictPolicy::Skip => {}
                Some(i) => self.routes[i] = route,
                None => self.routes.push(route),
            }
        }
        self.hooks.on_open.extend(hooks.on_open);
        self.hooks.on_close.extend(hooks.on_close);
        if self.hooks.on_error.is_none() {
            self.hooks.on_error = hooks.on_error;
        }
        if self.hooks.authorize.is_none() {
            self.hooks.authorize = hooks.authorize;
        }
        self.state.extend(state);
        self.needs.extend(needs);
        Ok(self)
    }

    /// The types this router routes, in the order added.
    pub fn route_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }

    /// Builds a hub with the default configuration; see [`Hub::builder`]
    /// to choose configuration, broker or clock.
    ///
    /// # Panics
    /// If a state type declared with [`Router::needs`] or [`Route::needs`]
    /// is not registered; [`HubBuilder::try_build`] returns it as a
    /// [`BuildError`] instead.
    pub fn build(self) -> Hub {
        Hub::builder(self).build()
    }

    /// Starts a [`HubBuilder`].
    pub fn into_builder(self) -> HubBuilder {
        Hub::builder(self)
    }

    /// The same router, typed as one whose handlers return [`Error`]: what
    /// a hub is built from (its handlers were converted when added).
    pub(crate) fn erase(self) -> Router {
        self.handler_error::<Error>()
    }

    /// The first declared need that no router registered.
    fn missing_state(&self) -> Option<BuildError> {
        let unmet = |need: &Need| !(need.registered)(&self.state);
        let missing = |need: &Need, route: Option<&str>| BuildError::MissingState {
            type_name: need.type_name,
            route: route.map(str::to_owned),
        };
        if let Some(need) = self.needs.iter().find(|n| unmet(n)) {
            return Some(missing(need, None));
        }
        self.routes.iter().find_map(|route| {
            route
                .needs
                .iter()
                .find(|n| unmet(n))
                .map(|need| missing(need, Some(&route.name)))
        })
    }

    /// The route table, hooks and state a hub serves, or why they cannot
    /// be served.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(
        self,
    ) -> Result<(HashMap<Box<str>, Arc<RouteEntry>>, Hooks, DataMap), BuildError> {
        if let Some(missing) = self.missing_state() {
            return Err(missing);
        }
        let mut table = HashMap::with_capacity(self.routes.len());
        for route in self.routes {
            let chain: Vec<Arc<dyn Middleware>> = self
                .layers
                .iter()
                .cloned()
                .chain(route.layers.iter().cloned())
                .collect();
            let entry = RouteEntry {
                name: Arc::from(route.name.as_str()),
                rpc: route.rpc,
                concurrent: route.concurrent,
                deadline: route.deadline,
                chain: chain.into(),
                endpoint: (route.handler)(route.compress),
                meters: crate::meter::RouteMeters::new(&route.name),
            };
            table.insert(route.name.into_boxed_str(), Arc::new(entry));
        }
        Ok((table, self.hooks, self.state))
    }
}

/// An error that [`dispatch`] leaves the connection driver to answer
/// (docs/PROTOCOL.md §6).
pub(crate) struct ErrorAnswer {
    /// `RPC_ERROR` for a request/response route, `ERROR` otherwise.
    pub(crate) answer_type: &'static str,
    /// The failed message's correlationId, carried back.
    pub(crate) correlation_id: Option<String>,
    /// What went wrong.
    pub(crate) error: Error,
}

/// Runs one routed message through its middleware and handler. Errors,
/// panics and missed deadlines come back as the [`ErrorAnswer`] to send;
/// the caller answers it.
pub(crate) async fn dispatch(
    route: &RouteEntry,
    req: Request,
    default_deadline: Duration,
) -> Result<(), ErrorAnswer> {
    let correlation_id = req.envelope.meta.correlation_id.clone();
    let start = crate::meter::Stamp::now();
    let run = Next::new(route.chain.clone(), route.endpoint.clone()).run(req);
    let run = AssertUnwindSafe(run).catch_unwind();
    let deadline = route.deadline.or(route.rpc.then_some(default_deadline));
    let outcome = match deadline {
        Some(deadline) => match tokio::time::timeout(deadline, run).await {
            Ok(outcome) => outcome,
            Err(_) => Ok(Err(Error::new(
                signalbox_codec::ErrorCode::DeadlineExceeded,
                format!("no answer within {} ms", deadline.as_millis()),
            ))),
        },
        None => run.await,
    };
    route.meters.handled(start);
    let error = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, r#type = %route.name, "handler panicked");
            Error::internal("internal error")
        }
    };
    if let Some(cause) = std::error::Error::source(&error) {
        // The cause stays here and with the error sink (core/src/error.rs).
        tracing::error!(r#type = %route.name, %error, %cause, "handler failed");
    }
    // docs/PROTOCOL.md §6: the route decides, not the correlationId.
    let answer_type = if route.rpc {
        signalbox_codec::vocab::RPC_ERROR
    } else {
        signalbox_codec::vocab::ERROR
    };
    Err(ErrorAnswer {
        answer_type,
        correlation_id,
        error,
    })
}
