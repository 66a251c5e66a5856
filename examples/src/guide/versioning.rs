//! Schema Versioning: `USER_UPDATE` is at version 2 (it gained `avatar`);
//! version-1 payloads (no `version` field) are migrated before the handler
//! sees them, and unknown versions get INVALID_ARGUMENT on
//! `payload.version`.

use serde::{Deserialize, Serialize};
use signalbox::codec::{PayloadError, RawPayload};
use signalbox::versioned::{self, Versioned};
use signalbox::{Ctx, Hub, Invalid, Router, message, validate};

/// The version-1 payload.
#[derive(Debug, Deserialize)]
pub struct UserUpdateV1 {
    /// Name.
    pub name: String,
    /// E-mail.
    pub email: String,
}

/// The current (version-2) payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserUpdate {
    /// Name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// Avatar URL.
    #[serde(default)]
    pub avatar: Option<String>,
    /// Always 2.
    pub version: u32,
}

impl Versioned for UserUpdate {
    const TYPE: &'static str = "USER_UPDATE";
    const VERSION: u32 = 2;

    fn migrate(version: u32, payload: Option<&RawPayload>) -> Result<Self, PayloadError> {
        match version {
            1 => {
                let v1: UserUpdateV1 = RawPayload::decode_opt(payload)?;
                Ok(UserUpdate {
                    name: v1.name,
                    email: v1.email,
                    avatar: None,
                    version: 2,
                })
            }
            other => Err(versioned::unsupported::<Self>(other)),
        }
    }

    fn validate(&self) -> Result<(), Invalid> {
        validate::chars("name", &self.name, 1..=64)?;
        validate::email("email", &self.email)?;
        match &self.avatar {
            Some(url) => validate::url("avatar", url),
            None => Ok(()),
        }
    }
}
signalbox::versioned_message!(UserUpdate);

/// `USER_UPDATED`: the update as the handler saw it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct UserUpdated {
    /// The migrated payload.
    pub user: UserUpdate,
}
message!(UserUpdated = "USER_UPDATED");

/// One versioned route.
pub fn router() -> Router {
    Router::new().on(|ctx: Ctx<UserUpdate>| async move {
        ctx.reply(&UserUpdated {
            user: ctx.payload().clone(),
        })
    })
}

/// The hub of the example.
pub fn hub() -> Hub {
    router().build()
}
