//! The authentication hook every transport runs after its handshake.

use super::{Handshake, Rejection};
use crate::connection::DataMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What an [`AuthHook`] returns.
pub type AuthFuture = Pin<Box<dyn Future<Output = Result<DataMap, Rejection>> + Send>>;

/// An authentication hook: turns a [`Handshake`] into the connection's
/// data (read by handlers with [`ConnectionHandle::data`](crate::ConnectionHandle::data)) or a
/// [`Rejection`], after which the connection never reaches a handler.
/// Cheap to clone.
#[derive(Clone)]
pub struct AuthHook {
    hook: Arc<dyn Fn(Handshake) -> AuthFuture + Send + Sync>,
}

impl std::fmt::Debug for AuthHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthHook").finish_non_exhaustive()
    }
}

impl AuthHook {
    /// Wraps an async function of the handshake.
    pub fn new<F, Fut>(hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DataMap, Rejection>> + Send + 'static,
    {
        AuthHook {
            hook: Arc::new(move |handshake| Box::pin(hook(handshake))),
        }
    }

    /// Runs the hook on `handshake`.
    pub fn check(&self, handshake: Handshake) -> AuthFuture {
        (self.hook)(handshake)
    }
}
