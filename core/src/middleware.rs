//! Middleware: code that runs around handlers.

use crate::context::ConnectionHandle;
use crate::error::Error;
use futures_util::future::BoxFuture;
use signalbox_codec::{Envelope, Meta, PayloadError, RawPayload};
use std::future::Future;
use std::sync::Arc;

/// A message on its way to a handler, as middleware sees it.
#[derive(Debug)]
pub struct Request {
    pub(crate) conn: ConnectionHandle,
    pub(crate) envelope: Envelope,
}

impl Request {
    /// The connection the message came from.
    pub fn conn(&self) -> &ConnectionHandle {
        &self.conn
    }

    /// The envelope `type`.
    pub fn message_type(&self) -> &str {
        &self.envelope.ty
    }

    /// The envelope meta (a client's `clientId` already removed).
    pub fn meta(&self) -> &Meta {
        &self.envelope.meta
    }

    /// The envelope meta, mutably: middleware may add keys for handlers.
    pub fn meta_mut(&mut self) -> &mut Meta {
        &mut self.envelope.meta
    }

    /// The payload as received, still encoded.
    pub fn raw_payload(&self) -> Option<&RawPayload> {
        self.envelope.payload.as_ref()
    }

    /// Decodes the payload as `T` (the handler decodes it again into its
    /// own type: use this only when a middleware must look inside).
    pub fn decode_payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError> {
        RawPayload::decode_opt(self.envelope.payload.as_ref())
    }
}

/// Middleware: code that runs around handlers.
///
/// A middleware is an `async fn(Request, Next) -> Result<(), Error>`. It runs
/// after the envelope is decoded and routed but *before* the payload is
/// decoded into the handler's type, so an authentication check rejects a
/// message without parsing its payload, and one middleware serves every
/// message type. It can stop the message by returning an error (answered to
/// the peer like a handler error), or measure around `next.run(req)`:
///
/// ```
/// use signalbox::{Error, Next, Request, Router};
///
/// #[derive(Clone)]
/// struct User { id: String }
///
/// async fn require_auth(req: Request, next: Next) -> Result<(), Error> {
///     if req.conn().data::<User>().is_none() {
///         return Err(Error::unauthenticated("sign in first"));
///     }
///     next.run(req).await
/// }
///
/// async fn log_messages(req: Request, next: Next) -> Result<(), Error> {
///     let started = std::time::Instant::now();
///     let ty = req.message_type().to_owned();
///     let result = next.run(req).await;
///     tracing::info!(%ty, elapsed = ?started.elapsed(), ok = result.is_ok());
///     result
/// }
///
/// let router = Router::new().layer(log_messages).layer(require_auth);
/// ```
///
/// Something that runs around handlers, as described above.
pub trait Middleware: Send + Sync + 'static {
    /// Handles `req`, calling `next.run(req)` to go on.
    fn call(&self, req: Request, next: Next) -> BoxFuture<'static, Result<(), Error>>;
}

impl<F, Fut> Middleware for F
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    fn call(&self, req: Request, next: Next) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(self(req, next))
    }
}

/// The end of a chain: the route's decoder and handler.
pub(crate) type Endpoint =
    Arc<dyn Fn(Request) -> BoxFuture<'static, Result<(), Error>> + Send + Sync + 'static>;

/// The rest of the chain after the current middleware.
pub struct Next {
    chain: Arc<[Arc<dyn Middleware>]>,
    index: usize,
    endpoint: Endpoint,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("remaining", &(self.chain.len() - self.index))
            .finish()
    }
}

impl Next {
    pub(crate) fn new(chain: Arc<[Arc<dyn Middleware>]>, endpoint: Endpoint) -> Self {
        Next {
            chain,
            index: 0,
            endpoint,
        }
    }

    /// Runs the rest of the chain, ending with the handler.
    pub fn run(mut self, req: Request) -> BoxFuture<'static, Result<(), Error>> {
        match self.chain.get(self.index).cloned() {
            Some(mw) => {
                self.index += 1;
                mw.call(req, self)
            }
            None => (self.endpoint)(req),
        }
    }
}
