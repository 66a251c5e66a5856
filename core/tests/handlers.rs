//! What handlers may return (core/src/error.rs: an application's error
//! type, boxed errors, what the peer sees and what the error sink sees) and
//! shared state declared with `needs` (refused when the hub is built),
//! through the in-memory harness.

use serde::{Deserialize, Serialize};
use signalbox::testing::TestHub;
use signalbox::{
    BuildError, ConflictPolicy, Ctx, Error, ErrorCode, ErrorEvent, Route, Router, message,
};
use std::sync::{Arc, Mutex};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Save {
    key: String,
}
message!(Save = "SAVE");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Saved {
    key: String,
}
message!(Saved = "SAVED");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Load {
    key: String,
}
message!(Load = "LOAD");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Loaded {
    value: String,
}
message!(Loaded = "LOADED");

/// What the database of these tests fails with: its text names internals
/// the peer must not see.
const DB_FAILURE: &str = "connection refused by db-7.internal:5432";

/// An application's error type: signalbox errors, a database error, and a
/// "not found" the peer should hear about.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Signal(#[from] Error),
    #[error("database: {0}")]
    Db(#[from] std::io::Error),
    #[error("no value for {0:?}")]
    Missing(String),
}

impl From<AppError> for Error {
    fn from(e: AppError) -> Error {
        match e {
            AppError::Signal(e) => e,
            AppError::Db(e) => Error::internal_cause(e),
            AppError::Missing(key) => Error::not_found(format!("no value for {key:?}")),
        }
    }
}

/// A stand-in database: fails for the key "down".
fn db_get(key: &str) -> Result<Option<String>, std::io::Error> {
    match key {
        "down" => Err(std::io::Error::other(DB_FAILURE)),
        "k" => Ok(Some("v".into())),
        _ => Ok(None),
    }
}

/// What the error sink saw: (message type, code, message, source text).
type Seen = Arc<Mutex<Vec<(Option<String>, String, String, Option<String>)>>>;

fn sink(seen: &Seen) -> impl Fn(&ErrorEvent<'_>) + Send + Sync + 'static {
    let seen = seen.clone();
    move |ev| {
        seen.lock().unwrap().push((
            ev.message_type.map(str::to_owned),
            ev.error.code().to_string(),
            ev.error.message().to_owned(),
            std::error::Error::source(ev.error).map(|s| s.to_string()),
        ));
    }
}

fn app_router(seen: &Seen) -> Router<AppError> {
    Router::new()
        .handler_error::<AppError>()
        // `?` on a database error and on a signalbox call, no annotation.
        .on(|ctx: Ctx<Save>| async move {
            db_get(&ctx.payload().key)?;
            ctx.reply(&Saved {
                key: ctx.payload().key.clone(),
            })?;
            Ok(())
        })
        .rpc(|ctx: Ctx<Load>| async move {
            let key = &ctx.payload().key;
            let value = db_get(key)?.ok_or_else(|| AppError::Missing(key.clone()))?;
            Ok(Loaded { value })
        })
        .on_error(sink(seen))
}

#[tokio::test]
async fn an_application_error_reaches_the_peer_as_its_from_impl_says() {
    let seen = Seen::default();
    let hub = TestHub::from_builder(app_router(&seen).into_builder());
    let mut c = hub.connect("json").await;

    c.send(&Save { key: "k".into() }).await;
    assert_eq!(c.expect::<Saved>().await.0.key, "k");

    c.request(&Load { key: "k".into() }, "1").await;
    assert_eq!(c.expect::<Loaded>().await.0.value, "v");

    // The application chose to tell the peer: NOT_FOUND with its text.
    c.request(&Load { key: "nope".into() }, "2").await;
    let (error, meta) = c.expect_error("RPC_ERROR").await;
    assert_eq!(error.code, ErrorCode::NotFound);
    assert_eq!(error.message, r#"no value for "nope""#);
    assert_eq!(meta.correlation_id.as_deref(), Some("2"));
    assert_eq!(seen.lock().unwrap().last().unwrap().3, None);
}

#[tokio::test]
async fn a_cause_goes_to_the_error_sink_and_never_to_the_peer() {
    let seen = Seen::default();
    let hub = TestHub::from_builder(app_router(&seen).into_builder());
    let mut c = hub.connect("json").await;

    c.send(&Save { key: "down".into() }).await;
    let (error, _) = c.expect_error("ERROR").await;
    assert_eq!(error.code, ErrorCode::Internal);
    assert_eq!(error.message, "internal error");
    assert_eq!(error.details, None);

    c.request(&Load { key: "down".into() }, "3").await;
    let (error, meta) = c.expect_error("RPC_ERROR").await;
    assert_eq!(
        (error.code, error.message.as_str()),
        (ErrorCode::Internal, "internal error")
    );
    assert_eq!(meta.correlation_id.as_deref(), Some("3"));

    let seen = seen.lock().unwrap().clone();
    let cause = Some(DB_FAILURE.to_owned());
    assert_eq!(
        seen,
        [
            (
                Some("SAVE".into()),
                "INTERNAL".into(),
                "internal error".into(),
                cause.clone()
            ),
            (
                Some("LOAD".into()),
                "INTERNAL".into(),
                "internal error".into(),
                cause
            ),
        ]
    );
}

#[tokio::test]
async fn handlers_may_return_boxed_errors() {
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let seen = Seen::default();
    let router = Router::new()
        .handler_error::<BoxError>()
        .on(|ctx: Ctx<Save>| async move {
            match ctx.payload().key.as_str() {
                // A signalbox error in the box keeps its code and message.
                "denied" => Err(Error::permission_denied("read-only").into()),
                // Anything else becomes INTERNAL, the cause kept.
                key => {
                    let value: u32 = key.parse()?;
                    ctx.reply(&Saved {
                        key: value.to_string(),
                    })?;
                    Ok(())
                }
            }
        })
        .on_error(sink(&seen));
    let hub = TestHub::from_builder(router.into_builder());
    let mut c = hub.connect("msgpack").await;

    c.send(&Save { key: "12".into() }).await;
    assert_eq!(c.expect::<Saved>().await.0.key, "12");

    c.send(&Save {
        key: "denied".into(),
    })
    .await;
    let (error, _) = c.expect_error("ERROR").await;
    assert_eq!(
        (error.code, error.message.as_str()),
        (ErrorCode::PermissionDenied, "read-only")
    );

    c.send(&Save {
        key: "twelve".into(),
    })
    .await;
    let (error, _) = c.expect_error("ERROR").await;
    assert_eq!(
        (error.code, error.message.as_str()),
        (ErrorCode::Internal, "internal error")
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].3, None);
    assert_eq!(seen[1].3.as_deref(), Some("invalid digit found in string"));
}

#[tokio::test]
async fn routers_of_different_error_types_merge() {
    let seen = Seen::default();
    // The default router's handlers infer `signalbox::Error` from `?` alone.
    let plain = Router::new().on(|ctx: Ctx<Saved>| async move {
        ctx.subscribe(&ctx.payload().key)?;
        Ok(())
    });
    let router = plain
        .merge(app_router(&seen), ConflictPolicy::Error)
        .unwrap();
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    c.send(&Saved { key: "room".into() }).await;
    c.request(&Load { key: "k".into() }, "1").await;
    assert_eq!(c.expect::<Loaded>().await.0.value, "v");
    for _ in 0..1000 {
        if hub.hub().topic_size("room") == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(hub.hub().topic_size("room"), 1);
}

#[tokio::test]
async fn a_route_of_its_own_takes_the_router_error_type() {
    let router = Router::new().handler_error::<AppError>().route(
        Route::on(|ctx: Ctx<Save>| async move {
            db_get(&ctx.payload().key)?;
            Ok(())
        })
        .concurrent(),
    );
    let hub = TestHub::from_builder(router.into_builder());
    let mut c = hub.connect("json").await;
    c.send(&Save { key: "down".into() }).await;
    assert_eq!(c.expect_error("ERROR").await.0.code, ErrorCode::Internal);
}

struct Db;
struct Cache;

fn notes() -> Router {
    Router::new().needs::<Db>().on(|ctx: Ctx<Save>| async move {
        ctx.state::<Db>()?;
        Ok(())
    })
}

#[test]
fn a_declared_state_that_is_not_registered_fails_the_build() {
    let missing = Router::new()
        .merge(notes(), ConflictPolicy::Error)
        .unwrap()
        .into_builder()
        .try_build()
        .unwrap_err();
    assert_eq!(
        missing,
        BuildError::MissingState {
            type_name: std::any::type_name::<Db>(),
            route: None,
        }
    );
    assert!(missing.to_string().contains("handlers::Db"), "{missing}");

    let per_route = Router::new()
        .with_state(Db)
        .route(Route::on(|_: Ctx<Load>| async {}).needs::<Cache>())
        .into_builder()
        .try_build()
        .unwrap_err();
    assert_eq!(
        per_route,
        BuildError::MissingState {
            type_name: std::any::type_name::<Cache>(),
            route: Some("LOAD".into()),
        }
    );
    assert!(
        per_route.to_string().contains(r#"route "LOAD""#),
        "{per_route}"
    );
}

#[test]
#[should_panic(expected = "needs shared state of type")]
fn build_panics_on_a_missing_state() {
    let _ = notes().build();
}

#[tokio::test]
async fn state_registered_by_the_router_merged_into_meets_the_need() {
    let router = Router::new()
        .with_state(Db)
        .with_state(Cache)
        .route(
            Route::on(|ctx: Ctx<Load>| async move {
                ctx.state::<Cache>()?;
                ctx.reply(&Loaded { value: "ok".into() })
            })
            .needs::<Cache>(),
        )
        .mount("notes.", notes(), ConflictPolicy::Error)
        .unwrap();
    let hub = TestHub::from_builder(router.into_builder());
    let mut c = hub.connect("json").await;
    // Both routes are ordered: an error from notes.SAVE would come first.
    c.send_raw(&br#"{"type":"notes.SAVE","payload":{"key":"k"}}"#[..])
        .await;
    c.send(&Load { key: "k".into() }).await;
    assert_eq!(c.expect::<Loaded>().await.0.value, "ok");
}

#[cfg(feature = "anyhow")]
#[tokio::test]
async fn handlers_may_return_anyhow_errors() {
    use anyhow::Context as _;
    let seen = Seen::default();
    let router = Router::new()
        .handler_error::<anyhow::Error>()
        .on(|ctx: Ctx<Save>| async move {
            if ctx.payload().key == "denied" {
                return Err(Error::permission_denied("read-only").into());
            }
            db_get(&ctx.payload().key).context("loading the note")?;
            Ok(())
        })
        .on_error(sink(&seen));
    let hub = TestHub::from_builder(router.into_builder());
    let mut c = hub.connect("json").await;
    c.send(&Save { key: "down".into() }).await;
    let (error, _) = c.expect_error("ERROR").await;
    assert_eq!(
        (error.code, error.message.as_str()),
        (ErrorCode::Internal, "internal error")
    );
    c.send(&Save {
        key: "denied".into(),
    })
    .await;
    assert_eq!(
        c.expect_error("ERROR").await.0.code,
        ErrorCode::PermissionDenied
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].3.as_deref(), Some("loading the note"));
    assert_eq!(seen[1].3, None);
}
