//! Custom Context Extensions: bun-ws-router's `ExtendedContext` (`has_role`,
//! `send_error`, `broadcast`, `reply`) as an extension trait implemented
//! once for every `Ctx<M>` — no handler is wrapped.

use serde::{Deserialize, Serialize};
use signalbox::{Ctx, Error, ErrorCode, Hub, Message, Router, message};

/// The roles of a connection.
#[derive(Debug, Clone, Default)]
pub struct Roles(pub Vec<String>);

/// `CLAIM_ROLE {role}`: a demo stand-in for real authentication.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClaimRole {
    /// The role to add.
    pub role: String,
}
message!(ClaimRole = "CLAIM_ROLE");

/// `ROLE_GRANTED {role}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoleGranted {
    /// The role added.
    pub role: String,
}
message!(RoleGranted = "ROLE_GRANTED");

/// `ADMIN_MESSAGE {text}`: admins broadcast it to everyone.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct AdminMessage {
    /// The announcement.
    pub text: String,
}
message!(AdminMessage = "ADMIN_MESSAGE");

/// `ADMIN_ANNOUNCEMENT {text}`, to every connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminAnnouncement {
    /// The announcement.
    pub text: String,
}
message!(AdminAnnouncement = "ADMIN_ANNOUNCEMENT");

/// Every connection holds this topic.
pub const GLOBAL: &str = "global";

/// The application's extensions of the context.
pub trait AppCtx {
    /// Whether the connection holds `role`.
    fn has_role(&self, role: &str) -> bool;
    /// Sends an `ERROR` with the standard payload, carrying the message's
    /// correlationId.
    fn send_error(&self, code: ErrorCode, message: &str) -> Result<(), Error>;
    /// Publishes to every connection.
    fn broadcast<B: Message>(&self, msg: &B) -> impl Future<Output = Result<usize, Error>> + Send;
}

impl<M: Message> AppCtx for Ctx<M> {
    fn has_role(&self, role: &str) -> bool {
        self.data::<Roles>()
            .is_some_and(|r| r.0.iter().any(|r| r == role))
    }

    fn send_error(&self, code: ErrorCode, message: &str) -> Result<(), Error> {
        self.error(code, message, None)
    }

    fn broadcast<B: Message>(&self, msg: &B) -> impl Future<Output = Result<usize, Error>> + Send {
        self.publish(GLOBAL, msg)
    }
}

/// Admin announcements, guarded by a role check through the extension.
/// (`reply` needs no extension: `Ctx::reply` carries the correlationId.)
pub fn router() -> Router {
    Router::new()
        .on_open(|conn| async move {
            conn.subscribe(GLOBAL)?;
            Ok(())
        })
        .on(|ctx: Ctx<ClaimRole>| async move {
            let role = ctx.payload().role.clone();
            ctx.update_data(|r: &mut Roles| r.0.push(role.clone()));
            ctx.reply(&RoleGranted { role })
        })
        .on(|ctx: Ctx<AdminMessage>| async move {
            if !ctx.has_role("admin") {
                return ctx.send_error(ErrorCode::PermissionDenied, "Admin access required");
            }
            ctx.broadcast(&AdminAnnouncement {
                text: ctx.payload().text.clone(),
            })
            .await?;
            Ok(())
        })
}

/// The hub of the example.
pub fn hub() -> Hub {
    router().build()
}
