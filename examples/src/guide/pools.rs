//! Connection Pooling: pools are topics. Every connection joins `global` on
//! open; `JOIN_POOL` joins another and tells the others (not the joiner)
//! with the pool's size; `POOL_INFO` answers size and members; a disconnect
//! leaves every pool by itself. The server also pushes `SERVER_TIME` to
//! `global` every second, from outside any handler.

use serde::{Deserialize, Serialize};
use signalbox::{Ctx, Hub, PublishOptions, Router, message};
use std::time::Duration;

/// The pool every connection is in.
pub const GLOBAL: &str = "global";

/// `JOIN_POOL {poolId}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinPool {
    /// The pool.
    #[serde(rename = "poolId")]
    pub pool_id: String,
}
message!(JoinPool = "JOIN_POOL");

/// `LEAVE_POOL {poolId}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeavePool {
    /// The pool.
    #[serde(rename = "poolId")]
    pub pool_id: String,
}
message!(LeavePool = "LEAVE_POOL");

/// `USER_JOINED_POOL {poolId, userId, poolSize}`, to the other members.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct UserJoinedPool {
    /// The pool.
    #[serde(rename = "poolId")]
    pub pool_id: String,
    /// Who joined.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// Members now, on this node.
    #[serde(rename = "poolSize")]
    pub pool_size: usize,
}
message!(UserJoinedPool = "USER_JOINED_POOL");

/// `POOL_INFO {poolId}` request.
#[derive(Debug, Serialize, Deserialize)]
pub struct PoolInfoRequest {
    /// The pool.
    #[serde(rename = "poolId")]
    pub pool_id: String,
}
message!(PoolInfoRequest = "POOL_INFO");

/// The reply to `POOL_INFO`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolInfo {
    /// Members on this node.
    pub size: usize,
    /// Their connection ids, sorted.
    pub members: Vec<String>,
}
message!(PoolInfo = "POOL_INFO_REPLY");

/// `SERVER_TIME {ms}`, pushed to `global`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerTime {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
}
message!(ServerTime = "SERVER_TIME");

/// Pools as topics.
pub fn router() -> Router {
    Router::new()
        .on_open(|conn| async move {
            conn.subscribe(GLOBAL)?;
            Ok(())
        })
        .on(|ctx: Ctx<JoinPool>| async move {
            let pool = &ctx.payload().pool_id;
            if ctx.subscribe(pool)? {
                let joined = UserJoinedPool {
                    pool_id: pool.clone(),
                    user_id: ctx.id().to_owned(),
                    pool_size: ctx.hub().topic_size(pool),
                };
                ctx.publish_with(pool, &joined, PublishOptions::excluding_sender())
                    .await?;
            }
            Ok(())
        })
        .on(|ctx: Ctx<LeavePool>| async move {
            ctx.unsubscribe(&ctx.payload().pool_id);
        })
        .rpc(|ctx: Ctx<PoolInfoRequest>| async move {
            let hub = ctx.hub();
            let mut members: Vec<String> = hub
                .topic_members(&ctx.payload().pool_id)
                .iter()
                .map(|c| c.id().to_owned())
                .collect();
            members.sort();
            Ok(PoolInfo {
                size: members.len(),
                members,
            })
        })
}

/// The hub of the example, with its clock task pushing `SERVER_TIME`.
/// Must be called inside a tokio runtime.
pub fn hub() -> Hub {
    let hub = router().build();
    let pusher = hub.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = pusher.shutdown_started() => break,
                _ = tick.tick() => {}
            }
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Err(error) = pusher.publish(GLOBAL, &ServerTime { ms }).await {
                tracing::warn!(%error, "server push failed");
            }
        }
    });
    hub
}
