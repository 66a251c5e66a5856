//! Router composition, middleware, contexts, lifecycle hooks and the
//! connection driver's queues, through the in-memory harness.

use serde::{Deserialize, Serialize};
use signalbox::testing::TestHub;
use signalbox::transport::CloseKind;
use signalbox::{
    Config, ConflictPolicy, Ctx, Error, ErrorCode, MergeError, Next, Request, Route, Router,
    message,
};
use signalbox::{DataMap, OverflowPolicy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Step {
    n: u32,
    ms: u64,
}
message!(Step = "STEP");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Done {
    n: u32,
}
message!(Done = "DONE");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Who;
message!(Who = "WHO");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Name {
    name: String,
}
message!(Name = "NAME");

#[derive(Clone, Debug)]
struct User(String);

async fn require_auth(req: Request, next: Next) -> Result<(), Error> {
    if req.conn().data::<User>().is_none() {
        return Err(Error::unauthenticated("sign in first"));
    }
    next.run(req).await
}

fn who_router(tag: &'static str) -> Router {
    Router::new().on(move |ctx: Ctx<Who>| async move { ctx.reply(&Name { name: tag.into() }) })
}

#[tokio::test(start_paused = true)]
async fn ordered_messages_are_handled_in_arrival_order_while_a_handler_awaits() {
    let router = Router::new().on(|ctx: Ctx<Step>| async move {
        tokio::time::sleep(Duration::from_millis(ctx.payload().ms)).await;
        ctx.send(&Done { n: ctx.payload().n })
    });
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    for (n, ms) in [(1, 300), (2, 10), (3, 100), (4, 0)] {
        c.send(&Step { n, ms }).await;
    }
    for n in 1..=4 {
        assert_eq!(c.expect::<Done>().await.0.n, n);
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_routes_run_up_to_the_limit() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let router = Router::new().route(
        Route::on(move |ctx: Ctx<Step>| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ctx.payload().ms)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                ctx.send(&Done { n: ctx.payload().n })
            }
        })
        .concurrent(),
    );
    let mut config = Config::default();
    config.max_concurrent = 3;
    let hub = TestHub::with_config(router, config);
    let mut c = hub.connect("json").await;
    for n in 0..10 {
        c.send(&Step { n, ms: 100 }).await;
    }
    for _ in 0..10 {
        c.expect::<Done>().await;
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn middleware_can_short_circuit_and_measure_around_next() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = log.clone();
    let logging = move |req: Request, next: Next| {
        let l = l.clone();
        async move {
            let ty = req.message_type().to_owned();
            l.lock().unwrap().push(format!("before {ty}"));
            let result = next.run(req).await;
            l.lock()
                .unwrap()
                .push(format!("after {ty} ok={}", result.is_ok()));
            result
        }
    };
    let router = who_router("x").layer(logging).layer(require_auth);
    let hub = TestHub::new(router);

    let mut anon = hub.connect("json").await;
    anon.send(&Who).await;
    let (err, _) = anon.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::Unauthenticated);

    let mut data = DataMap::new();
    data.insert(User("ada".into()));
    let mut ada = hub.connect_with("json", data).await;
    ada.send(&Who).await;
    assert_eq!(ada.expect::<Name>().await.0.name, "x");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "before WHO",
            "after WHO ok=false",
            "before WHO",
            "after WHO ok=true"
        ]
    );
}

#[tokio::test]
async fn middleware_runs_before_the_payload_is_decoded() {
    let router = Router::new()
        .on(|ctx: Ctx<Step>| async move { ctx.send(&Done { n: ctx.payload().n }) })
        .layer(require_auth);
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    // A malformed payload from an unauthenticated client is refused as
    // unauthenticated: its payload was never parsed.
    c.send_raw(&br#"{"type":"STEP","payload":{"n":"garbage"}}"#[..])
        .await;
    assert_eq!(
        c.expect_error("ERROR").await.0.code,
        ErrorCode::Unauthenticated
    );
}

#[tokio::test]
async fn route_middleware_applies_to_its_route_only() {
    let router = Router::new()
        .route(
            Route::on(|ctx: Ctx<Who>| async move { ctx.reply(&Name { name: "w".into() }) })
                .layer(require_auth),
        )
        .on(|ctx: Ctx<Step>| async move { ctx.send(&Done { n: ctx.payload().n }) });
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    c.send(&Step { n: 1, ms: 0 }).await;
    assert_eq!(c.expect::<Done>().await.0.n, 1);
    c.send(&Who).await;
    assert_eq!(
        c.expect_error("ERROR").await.0.code,
        ErrorCode::Unauthenticated
    );
}

#[test]
fn merge_honours_the_conflict_policy() {
    let err = who_router("a")
        .merge(who_router("b"), ConflictPolicy::Error)
        .unwrap_err();
    assert_eq!(err, MergeError::Conflict("WHO".into()));
    assert!(
        who_router("a")
            .merge(who_router("b"), ConflictPolicy::Skip)
            .is_ok()
    );
}

#[tokio::test]
async fn merge_skip_keeps_the_first_and_replace_takes_the_second() {
    for (policy, expected) in [(ConflictPolicy::Skip, "a"), (ConflictPolicy::Replace, "b")] {
        let router = who_router("a").merge(who_router("b"), policy).unwrap();
        let hub = TestHub::new(router);
        let mut c = hub.connect("json").await;
        c.send(&Who).await;
        assert_eq!(c.expect::<Name>().await.0.name, expected);
    }
}

#[tokio::test]
async fn merged_routers_keep_their_middleware_scoped() {
    let admin = who_router("admin").layer(require_auth);
    let public =
        Router::new().on(|ctx: Ctx<Step>| async move { ctx.send(&Done { n: ctx.payload().n }) });
    let router = public.merge(admin, ConflictPolicy::Error).unwrap();
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    c.send(&Step { n: 7, ms: 0 }).await;
    assert_eq!(c.expect::<Done>().await.0.n, 7);
    c.send(&Who).await;
    assert_eq!(
        c.expect_error("ERROR").await.0.code,
        ErrorCode::Unauthenticated
    );
}

#[tokio::test]
async fn mount_prefixes_the_types() {
    let router = who_router("root")
        .mount("admin.", who_router("admin"), ConflictPolicy::Error)
        .unwrap();
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    c.send_raw(&br#"{"type":"admin.WHO"}"#[..]).await;
    assert_eq!(c.expect::<Name>().await.0.name, "admin");
    c.send(&Who).await;
    assert_eq!(c.expect::<Name>().await.0.name, "root");
}

#[test]
#[should_panic(expected = "routed twice")]
fn routing_one_type_twice_in_one_router_panics_at_startup() {
    let _ = who_router("a").on(|_ctx: Ctx<Who>| async {});
}

#[tokio::test]
async fn per_connection_data_and_shared_state() {
    struct Greeting(&'static str);
    #[derive(Default)]
    struct Count(u32);
    let router = Router::new()
        .with_state(Greeting("hello"))
        .on(|ctx: Ctx<Step>| async move {
            let n = ctx.update_data(|c: &mut Count| {
                c.0 += ctx.payload().n;
                c.0
            });
            ctx.set_data(User(format!("{} {n}", ctx.state::<Greeting>()?.0)));
            ctx.send(&Done { n })
        })
        .on(|ctx: Ctx<Who>| async move {
            let name = ctx.data::<User>().map(|u| u.0).unwrap_or_default();
            ctx.reply(&Name { name })
        });
    let hub = TestHub::new(router);
    let mut a = hub.connect("json").await;
    let mut b = hub.connect("json").await;
    a.send(&Step { n: 2, ms: 0 }).await;
    a.send(&Step { n: 3, ms: 0 }).await;
    b.send(&Step { n: 10, ms: 0 }).await;
    assert_eq!(a.expect::<Done>().await.0.n, 2);
    assert_eq!(a.expect::<Done>().await.0.n, 5);
    assert_eq!(b.expect::<Done>().await.0.n, 10);
    a.send(&Who).await;
    assert_eq!(a.expect::<Name>().await.0.name, "hello 5");
}

#[tokio::test]
async fn missing_state_is_an_internal_error_not_a_panic() {
    struct Missing;
    let router = Router::new().on(|ctx: Ctx<Who>| async move {
        ctx.state::<Missing>()?;
        Ok(())
    });
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    c.send(&Who).await;
    assert_eq!(c.expect_error("ERROR").await.0.code, ErrorCode::Internal);
}

#[tokio::test]
async fn lifecycle_hooks_and_the_error_sink() {
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let (e1, e2, e3) = (events.clone(), events.clone(), events.clone());
    let router = who_router("x")
        .on_open(move |conn| {
            let e = e1.clone();
            async move {
                e.lock().unwrap().push("open".into());
                conn.subscribe("everyone").map(drop)
            }
        })
        .on_close(move |conn, close| {
            let e = e2.clone();
            async move {
                e.lock().unwrap().push(format!(
                    "close {:?} topics={:?}",
                    close.kind,
                    conn.topics()
                ));
            }
        })
        .on_error(move |ev| {
            e3.lock()
                .unwrap()
                .push(format!("error {} {:?}", ev.error.code(), ev.message_type));
        });
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    c.send_raw(&br#"{"type":"NOPE"}"#[..]).await;
    c.expect_error("ERROR").await;
    assert_eq!(hub.hub().topic_size("everyone"), 1);
    c.hang_up();
    assert_eq!(c.recv().await, None);
    for _ in 0..100 {
        if hub.hub().connection_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(hub.hub().topic_size("everyone"), 0);
    assert_eq!(
        *events.lock().unwrap(),
        [
            "open",
            "error UNIMPLEMENTED Some(\"NOPE\")",
            "close Normal topics=[\"everyone\"]"
        ]
    );
}

#[tokio::test]
async fn an_on_open_error_closes_the_connection_with_policy() {
    let router = who_router("x").on_open(|_conn| async { Err(Error::unauthenticated("no token")) });
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    let (err, _) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    let close = c.closed().await.expect("closed");
    assert_eq!(close.kind, CloseKind::Policy);
    assert_eq!(close.reason, "no token");
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_closed_after_the_heartbeat_timeout() {
    let mut config = Config::default();
    config.heartbeat_interval = Duration::from_secs(30);
    config.heartbeat_timeout = Duration::from_secs(10);
    let hub = TestHub::with_config(who_router("x"), config);
    let mut c = hub.connect("json").await;
    c.set_timeout(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(35)).await;
    c.alive().await; // a pong keeps it open
    tokio::time::sleep(Duration::from_secs(35)).await;
    c.send(&Who).await; // so does a message
    assert_eq!(c.expect::<Name>().await.0.name, "x");
    let started = tokio::time::Instant::now();
    let close = c.closed().await.expect("closed");
    assert_eq!(close.kind, CloseKind::Policy);
    assert_eq!(close.reason, "heartbeat timeout");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(39) && waited <= Duration::from_secs(41),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_what_was_queued_then_closes_going_away() {
    let router = Router::new().on(|ctx: Ctx<Step>| async move {
        for n in 0..ctx.payload().n {
            ctx.send(&Done { n })?;
        }
        Ok(())
    });
    let hub = TestHub::new(router);
    let mut c = hub.connect("msgpack").await;
    c.send(&Step { n: 500, ms: 0 }).await;
    // Wait until the handler queued its messages, without reading them.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let h = hub.hub().clone();
    let shutdown = tokio::spawn(async move { h.shutdown().await });
    for n in 0..500 {
        assert_eq!(c.expect::<Done>().await.0.n, n);
    }
    assert_eq!(c.closed().await.expect("closed").kind, CloseKind::GoingAway);
    shutdown.await.unwrap();
    assert_eq!(hub.hub().connection_count(), 0);
}

#[tokio::test]
async fn a_full_outbound_queue_closes_a_slow_consumer_by_default() {
    let router = Router::new().on(|ctx: Ctx<Step>| async move {
        for n in 0..ctx.payload().n {
            if ctx.send(&Done { n }).is_err() {
                break;
            }
        }
    });
    let mut config = Config::default();
    config.outbound_queue = 8;
    let hub = TestHub::with_config(router, config);
    let mut c = hub.connect("json").await;
    // The in-memory pipe holds 1024 frames the client has not read; the
    // queue holds 8 more.
    c.send(&Step { n: 5000, ms: 0 }).await;
    let close = c.closed().await.expect("closed");
    assert_eq!(close.kind, CloseKind::Policy);
    assert!(close.reason.contains("slow consumer"));
}

fn one_done_per_step() -> Router {
    Router::new().on(|ctx: Ctx<Step>| async move {
        for n in 0..ctx.payload().n {
            ctx.send(&Done { n })?;
        }
        Ok(())
    })
}

#[tokio::test]
async fn replies_to_a_peer_that_reads_late_wait_for_room_instead_of_overflowing() {
    let mut config = Config::default();
    config.outbound_queue = 8;
    let hub = TestHub::with_config(one_done_per_step(), config);
    let mut c = hub.connect("json").await;
    // 1,050 requests, none read until all are sent: more replies than
    // the in-memory pipe (1,024) and the queue (8) hold together, so a
    // queue that took every reply would overflow. The pipe takes 1,024
    // replies, the queue half of its 8; then the connection takes no
    // further request until the client reads, and the requests wait in
    // the client's pipe (64).
    let total = 1_050;
    for _ in 0..total {
        c.send(&Step { n: 1, ms: 0 }).await;
    }
    for _ in 0..total {
        let (done, _) = c.expect::<Done>().await;
        assert_eq!(done.n, 0);
    }
    c.expect_silence(Duration::from_millis(50)).await;
    assert_eq!(hub.hub().connection_count(), 1);
}

#[tokio::test]
async fn a_peer_whose_replies_back_up_past_the_stall_timeout_is_a_slow_consumer() {
    let mut config = Config::default();
    config.outbound_queue = 8;
    config.outbound_stall_timeout = Duration::from_millis(200);
    let hub = TestHub::with_config(one_done_per_step(), config);
    let mut c = hub.connect("json").await;
    for _ in 0..1_100 {
        c.send(&Step { n: 1, ms: 0 }).await;
    }
    // Never read: the queue stays half full past the timeout (it never
    // overflows: replies to the peer's own requests wait for room).
    let close = c.closed().await.expect("closed");
    assert_eq!(close.kind, CloseKind::Policy);
    assert!(
        close
            .reason
            .contains("slow consumer: outbound queue not drained"),
        "{close:?}"
    );
}

#[tokio::test]
async fn drop_policies_count_what_they_drop() {
    for policy in [OverflowPolicy::DropOldest, OverflowPolicy::DropNewest] {
        let router = Router::new().on(|ctx: Ctx<Step>| async move {
            for n in 0..ctx.payload().n {
                ctx.send(&Done { n })?;
            }
            ctx.set_data(ctx.dropped());
            Ok(())
        });
        let mut config = Config::default();
        config.outbound_queue = 4;
        config.overflow = policy;
        let hub = TestHub::with_config(router, config);
        let mut c = hub.connect("json").await;
        c.send(&Step { n: 3000, ms: 0 }).await;
        c.set_timeout(Duration::from_millis(200));
        let mut got = Vec::new();
        while let Some(env) = c.recv().await {
            got.push(env.decode_payload::<Done>().unwrap().n);
        }
        let conn = hub.hub().connections().pop().unwrap();
        let dropped = conn.data::<u64>().unwrap();
        assert!(dropped > 0, "{policy:?}");
        assert_eq!(got.len() as u64 + dropped, 3000, "{policy:?}");
        if policy == OverflowPolicy::DropOldest {
            assert_eq!(*got.last().unwrap(), 2999);
        } else {
            assert_eq!(got[..], (0..got.len() as u32).collect::<Vec<_>>()[..]);
        }
    }
}
