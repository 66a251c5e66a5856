//! Middleware Pattern: `require_auth` stops unauthenticated messages before
//! their payload is even parsed; `log_messages` measures around `next` and
//! keeps per-type counts that the `STATS` request reports.

use serde::{Deserialize, Serialize};
use signalbox::{Ctx, Error, Hub, Middleware, Next, Request, Route, Router, message};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Marks a connection as authenticated.
#[derive(Debug, Clone)]
pub struct Authenticated;

/// `AUTHENTICATE {token}`: the demo accepts the token `"secret"`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Authenticate {
    /// The token.
    pub token: String,
}
message!(Authenticate = "AUTHENTICATE");

/// `AUTHENTICATED`, the reply to a good token.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuthOk;
message!(AuthOk = "AUTHENTICATED");

/// `PROTECTED_ACTION {action}`: only for authenticated connections.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProtectedAction {
    /// What to do.
    pub action: String,
}
message!(ProtectedAction = "PROTECTED_ACTION");

/// `ACTION_DONE {action}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActionDone {
    /// What was done.
    pub action: String,
}
message!(ActionDone = "ACTION_DONE");

/// `STATS` request.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatsRequest;
message!(StatsRequest = "STATS");

/// The reply to `STATS`: messages seen per type and how many failed.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Messages that went through the logging middleware, per type.
    pub seen: BTreeMap<String, u64>,
    /// Of those, how many ended in an error.
    pub failed: u64,
}
message!(Stats = "STATS_REPORT");

/// bun-ws-router's `requireAuth`.
pub async fn require_auth(req: Request, next: Next) -> Result<(), Error> {
    if req.conn().data::<Authenticated>().is_none() {
        return Err(Error::unauthenticated("Authentication required"));
    }
    next.run(req).await
}

/// bun-ws-router's `logMessages`, recording into shared [`Stats`].
pub fn log_messages(stats: Arc<Mutex<Stats>>) -> impl Middleware {
    move |req: Request, next: Next| {
        let stats = stats.clone();
        async move {
            let ty = req.message_type().to_owned();
            let client = req.conn().id().to_owned();
            tracing::info!(%client, %ty, "received");
            let started = Instant::now();
            let result = next.run(req).await;
            tracing::info!(%client, %ty, elapsed = ?started.elapsed(), ok = result.is_ok(), "processed");
            if let Ok(mut s) = stats.lock() {
                *s.seen.entry(ty).or_default() += 1;
                s.failed += u64::from(result.is_err());
            }
            result
        }
    }
}

/// Logging for every route; authentication for the protected one.
pub fn router() -> Router {
    let stats = Arc::new(Mutex::new(Stats::default()));
    let report = stats.clone();
    Router::new()
        .layer(log_messages(stats))
        .on(|ctx: Ctx<Authenticate>| async move {
            if ctx.payload().token != "secret" {
                return Err(Error::unauthenticated("bad token"));
            }
            ctx.set_data(Authenticated);
            ctx.reply(&AuthOk)
        })
        .route(
            Route::on(|ctx: Ctx<ProtectedAction>| async move {
                ctx.reply(&ActionDone {
                    action: ctx.payload().action.clone(),
                })
            })
            .layer(require_auth),
        )
        .rpc(move |_ctx: Ctx<StatsRequest>| {
            let report = report.clone();
            async move {
                report
                    .lock()
                    .map(|s| s.clone())
                    .map_err(|_| Error::internal("stats unavailable"))
            }
        })
}

/// The hub of the example.
pub fn hub() -> Hub {
    router().build()
}
