//! Router Composition: an auth router, a chat router and an admin router,
//! each a module of its own with its own middleware, merged into one with
//! an explicit conflict policy, plus connection hooks.

use serde::{Deserialize, Serialize};
use signalbox::transport::{Close, CloseKind};
use signalbox::{
    ConflictPolicy, Ctx, Error, Hub, MergeError, Next, Request, Router, message, validate,
};

/// Who a connection is, once logged in.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The name given at login.
    pub name: String,
    /// `"admin"` for the name `admin`, `"user"` otherwise (a demo rule).
    pub roles: Vec<String>,
}

/// `LOGIN {username}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Login {
    /// 1..=32 characters.
    pub username: String,
}
message!(Login = "LOGIN", |m| validate::chars(
    "username",
    &m.username,
    1..=32
));

/// `LOGGED_IN {userId, roles}`, the reply to `LOGIN`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoggedIn {
    /// The connection id.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// Granted roles.
    pub roles: Vec<String>,
}
message!(LoggedIn = "LOGGED_IN");

/// `LOGOUT`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Logout;
message!(Logout = "LOGOUT");

/// `SEND_MESSAGE {text}` to the general channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct SendMessage {
    /// 1..=4096 characters.
    pub text: String,
}
message!(SendMessage = "SEND_MESSAGE", |m| validate::chars(
    "text",
    &m.text,
    1..=4096
));

/// `NEW_MESSAGE {from, text}` to everyone logged in.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewMessage {
    /// The sender's name.
    pub from: String,
    /// The text.
    pub text: String,
}
message!(NewMessage = "NEW_MESSAGE");

/// `KICK_USER {userId}` (admins only): closes that connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct KickUser {
    /// The connection to close.
    #[serde(rename = "userId")]
    pub user_id: String,
}
message!(KickUser = "KICK_USER");

/// `KICKED {userId}`, the reply to `KICK_USER`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Kicked {
    /// The connection closed.
    #[serde(rename = "userId")]
    pub user_id: String,
}
message!(Kicked = "KICKED");

/// `WELCOME {userId}`, sent when a connection opens.
#[derive(Debug, Serialize, Deserialize)]
pub struct Welcome {
    /// The connection id.
    #[serde(rename = "userId")]
    pub user_id: String,
}
message!(Welcome = "WELCOME");

const GENERAL: &str = "general";

/// Logging in and out.
pub fn auth_router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Login>| async move {
            let name = ctx.payload().username.clone();
            let roles = if name == "admin" {
                vec!["admin".into(), "user".into()]
            } else {
                vec!["user".into()]
            };
            ctx.set_data(User {
                name,
                roles: roles.clone(),
            });
            ctx.subscribe(GENERAL)?;
            ctx.reply(&LoggedIn {
                user_id: ctx.id().to_owned(),
                roles,
            })
        })
        .on(|ctx: Ctx<Logout>| async move {
            ctx.remove_data::<User>();
            ctx.unsubscribe(GENERAL);
        })
}

async fn require_login(req: Request, next: Next) -> Result<(), Error> {
    if req.conn().data::<User>().is_none() {
        return Err(Error::unauthenticated("log in first"));
    }
    next.run(req).await
}

async fn require_admin(req: Request, next: Next) -> Result<(), Error> {
    match req.conn().data::<User>() {
        Some(user) if user.roles.iter().any(|r| r == "admin") => next.run(req).await,
        Some(_) => Err(Error::permission_denied("admins only")),
        None => Err(Error::unauthenticated("log in first")),
    }
}

/// The general channel; every route needs a login.
pub fn chat_router() -> Router {
    Router::new()
        .on(|ctx: Ctx<SendMessage>| async move {
            let from = ctx.data::<User>().map(|u| u.name).unwrap_or_default();
            ctx.publish(
                GENERAL,
                &NewMessage {
                    from,
                    text: ctx.payload().text.clone(),
                },
            )
            .await?;
            Ok(())
        })
        .layer(require_login)
}

/// Moderation; every route needs the admin role.
pub fn admin_router() -> Router {
    Router::new()
        .on(|ctx: Ctx<KickUser>| async move {
            let target = &ctx.payload().user_id;
            let conn = ctx
                .hub()
                .connection(target)
                .ok_or_else(|| Error::not_found("no such user"))?;
            conn.close(Close::new(CloseKind::Policy, "kicked by an admin"));
            ctx.reply(&Kicked {
                user_id: target.clone(),
            })
        })
        .layer(require_admin)
}

/// The three routers merged (a type routed twice is an error), with the
/// connection hooks of the main router.
pub fn router() -> Result<Router, MergeError> {
    Router::new()
        .on_open(|conn| async move {
            conn.send(&Welcome {
                user_id: conn.id().to_owned(),
            })
        })
        .on_close(|conn, close| async move {
            tracing::info!(id = conn.id(), kind = close.kind.as_str(), "disconnected");
        })
        .merge(auth_router(), ConflictPolicy::Error)?
        .merge(chat_router(), ConflictPolicy::Error)?
        .merge(admin_router(), ConflictPolicy::Error)
}

/// The hub of the example.
pub fn hub() -> Result<Hub, MergeError> {
    Ok(router()?.build())
}
