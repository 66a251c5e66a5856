//! An existing axum application with a signalbox hub mounted at `/ws`.
//!
//! The application has REST routes, static files and its own
//! authentication; signalbox is one more route of it:
//!
//! | route | authenticated | what it does |
//! |---|---|---|
//! | `GET /api/health` | no | `{"status":"ok","connections":n}` |
//! | `GET /api/notes` | yes | the notes, oldest first |
//! | `POST /api/notes` | yes | `{"text"}` → 201 and the note; pushed to every WebSocket client as `NOTE_ADDED` |
//! | `GET /ws` | yes | the WebSocket upgrade (docs/PROTOCOL.md §4) |
//! | anything else | no | static files of a directory (`web/notes/` by default) |
//!
//! Authentication is one axum layer ([`require_user`]) in front of the
//! routes that need it: a bearer token (`Authorization: Bearer <token>`)
//! or, for browsers, which cannot set headers on a WebSocket, a cookie
//! (`sb_token=<token>`). A request without a known token is refused with
//! 401 before it reaches a route. An accepted one carries a [`UserId`] in
//! its extensions; the upgrade's authentication hook moves it into the
//! connection's typed data (`signalbox::transport::Handshake::extensions`),
//! where the WebSocket handlers read it (`ConnectionHandle::data`).
//!
//! WebSocket messages:
//!
//! | type | direction | payload |
//! |---|---|---|
//! | `WHOAMI` | → request, ← reply `YOU_ARE` | `{}` → `{"userId"}` |
//! | `ADD_NOTE` | → | `{"text"}` (1..=1000 characters) |
//! | `NOTE_ADDED` | ← to every connection | `{"id", "author", "text"}` |
//!
//! Notes added over WebSocket and over REST are the same notes: each is
//! pushed as `NOTE_ADDED` with its author, the authenticated user.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use signalbox::DataMap;
use signalbox::transport::Rejection;
use signalbox::{ConnectionHandle, Ctx, Error, Hub, message, validate};
use signalbox_ws::Upgrader;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// The topic every WebSocket connection is subscribed to.
pub const NOTES_TOPIC: &str = "notes";
/// Notes kept; past it the oldest are forgotten.
pub const MAX_NOTES: usize = 1000;
/// The cookie a browser authenticates with.
pub const TOKEN_COOKIE: &str = "sb_token";

/// Who a request or a connection belongs to: what [`require_user`] puts in
/// the request's extensions and the upgrade moves into the connection's
/// data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserId(pub String);

/// The application's users: token → user.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_token: HashMap<String, UserId>,
}

impl Users {
    /// No users yet.
    pub fn new() -> Self {
        Users::default()
    }

    /// Adds a user who authenticates with `token`.
    pub fn with(mut self, user: impl Into<String>, token: impl Into<String>) -> Self {
        self.by_token.insert(token.into(), UserId(user.into()));
        self
    }

    /// Parses `NAME:TOKEN` (the binary's `--user`).
    pub fn parse_entry(entry: &str) -> Result<(String, String), String> {
        match entry.split_once(':') {
            Some((user, token)) if !user.is_empty() && !token.is_empty() => {
                Ok((user.to_owned(), token.to_owned()))
            }
            _ => Err(format!("expected NAME:TOKEN, got {entry:?}")),
        }
    }

    /// The user of `token`, if any.
    pub fn find(&self, token: &str) -> Option<&UserId> {
        self.by_token.get(token)
    }
}

/// One note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// Its number, from 1.
    pub id: u64,
    /// Who wrote it.
    pub author: String,
    /// The text.
    pub text: String,
}

/// The notes: the last [`MAX_NOTES`] of them.
#[derive(Debug, Default)]
pub struct Notes {
    next_id: u64,
    kept: VecDeque<Note>,
}

impl Notes {
    /// Adds a note by `author`, forgetting the oldest past [`MAX_NOTES`].
    pub fn add(&mut self, author: &UserId, text: String) -> Note {
        self.next_id += 1;
        let note = Note {
            id: self.next_id,
            author: author.0.clone(),
            text,
        };
        if self.kept.len() == MAX_NOTES {
            self.kept.pop_front();
        }
        self.kept.push_back(note.clone());
        note
    }

    /// The notes kept, oldest first.
    pub fn list(&self) -> Vec<Note> {
        self.kept.iter().cloned().collect()
    }
}

/// `WHOAMI`: asks who the connection belongs to.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WhoAmI {}
message!(WhoAmI = "WHOAMI");

/// `YOU_ARE`: the answer to `WHOAMI`.
#[derive(Debug, Serialize, Deserialize)]
pub struct YouAre {
    /// The authenticated user.
    #[serde(rename = "userId")]
    pub user_id: String,
}
message!(YouAre = "YOU_ARE");

/// `ADD_NOTE {text}`, and the body of `POST /api/notes`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddNote {
    /// The text.
    pub text: String,
}
message!(AddNote = "ADD_NOTE", |m| validate::chars(
    "text",
    &m.text,
    1..=1000
));

/// `NOTE_ADDED`: a note, pushed to every connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct NoteAdded(pub Note);
message!(NoteAdded = "NOTE_ADDED");

/// What the routes share.
#[derive(Clone)]
pub struct App {
    hub: Hub,
    users: Arc<Users>,
    notes: Arc<Mutex<Notes>>,
}

impl App {
    /// The application's state around `hub` (built by [`hub`] with the
    /// same `notes`).
    pub fn new(hub: Hub, users: Users, notes: Arc<Mutex<Notes>>) -> Self {
        App {
            hub,
            users: Arc::new(users),
            notes,
        }
    }

    /// Adds a note and pushes it to every WebSocket connection.
    async fn add_note(&self, author: &UserId, text: String) -> Result<Note, Error> {
        let note = self.notes.lock().add(author, text);
        self.hub
            .publish(NOTES_TOPIC, &NoteAdded(note.clone()))
            .await?;
        Ok(note)
    }
}

/// The user a connection belongs to: set at the upgrade from what
/// [`require_user`] found, so every connection of this hub has one.
fn user_of(conn: &ConnectionHandle) -> Result<UserId, Error> {
    conn.data::<UserId>()
        .ok_or_else(|| Error::unauthenticated("connection without a user"))
}

/// The hub: notes over WebSocket, sharing `notes` with the REST routes.
pub fn hub(notes: Arc<Mutex<Notes>>) -> Hub {
    signalbox::Router::new()
        .on_open(|conn: ConnectionHandle| async move {
            conn.subscribe(NOTES_TOPIC)?;
            Ok(())
        })
        .rpc(|ctx: Ctx<WhoAmI>| async move {
            Ok(YouAre {
                user_id: user_of(&ctx)?.0,
            })
        })
        .on(move |ctx: Ctx<AddNote>| {
            let notes = notes.clone();
            async move {
                let author = user_of(&ctx)?;
                let note = notes.lock().add(&author, ctx.payload().text.clone());
                ctx.publish(NOTES_TOPIC, &NoteAdded(note)).await?;
                Ok(())
            }
        })
        .build()
}

/// The token a request presents: `Authorization: Bearer <token>`, else
/// the [`TOKEN_COOKIE`] cookie.
fn token_of(req: &Request) -> Option<&str> {
    let headers = req.headers();
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(token.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then_some(value)
        })
}

/// The authentication layer: a request with a known token goes on with its
/// [`UserId`] in its extensions; any other is answered 401.
pub async fn require_user(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let Some(user) = token_of(&req).and_then(|t| app.users.find(t)).cloned() else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthenticated",
        )
            .into_response();
    };
    req.extensions_mut().insert(user);
    next.run(req).await
}

async fn health(State(app): State<App>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "connections": app.hub.connection_count(),
    }))
}

async fn list_notes(State(app): State<App>) -> Json<Vec<Note>> {
    Json(app.notes.lock().list())
}

async fn post_note(
    State(app): State<App>,
    Extension(user): Extension<UserId>,
    Json(body): Json<AddNote>,
) -> Response {
    if let Err(error) = signalbox::Message::validate(&body) {
        return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
    }
    match app.add_note(&user, body.text).await {
        Ok(note) => (StatusCode::CREATED, Json(note)).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

/// The upgrade of `/ws`: the hook takes the [`UserId`] that
/// [`require_user`] put in the request's extensions and makes it the
/// connection's data.
pub fn upgrader(hub: Hub) -> Upgrader {
    Upgrader::builder(hub)
        .authenticate(|req| async move {
            let user = req
                .extension::<UserId>()
                .cloned()
                .ok_or_else(Rejection::unauthorized)?;
            let mut data = DataMap::new();
            data.insert(user);
            Ok(data)
        })
        .build()
}

/// The whole application: REST routes and `/ws` behind [`require_user`]
/// (except the health check), static files of `static_dir` for the rest.
pub fn router(app: App, static_dir: PathBuf) -> Router {
    let authenticated = Router::new()
        .route("/api/notes", get(list_notes).post(post_note))
        .route("/ws", signalbox_ws::axum::route(upgrader(app.hub.clone())))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_user));
    Router::new()
        .route("/api/health", get(health))
        .merge(authenticated)
        .fallback_service(tower_http::services::ServeDir::new(static_dir))
        .with_state(app)
}

/// The static files served by default: `examples/web/notes/`.
pub fn default_static_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web/notes"))
}
