//! docs/PROTOCOL.md §1, §6 and §7 through the in-memory harness: error answers,
//! correlation ids, reserved types, clientId, heartbeats, requests.

use serde::{Deserialize, Serialize};
use signalbox::testing::{TEST_EPOCH_MS, TestHub};
use signalbox::{Config, Ctx, Error, ErrorCode, Meta, RateLimit, Route, Router, message, validate};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Say {
    text: String,
}
message!(Say = "SAY", |m| validate::chars("text", &m.text, 1..=5));

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Said {
    text: String,
    from: Option<String>,
}
message!(Said = "SAID");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Sleep {
    ms: u64,
}
message!(Sleep = "SLEEP");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Slept {
    ms: u64,
}
message!(Slept = "SLEPT");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Boom;
message!(Boom = "BOOM");

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Fail;
message!(Fail = "FAIL");

signalbox::opaque_message!(Echo = "ECHO");

fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Say>| async move {
            let from = ctx.meta().client_id.clone();
            ctx.reply(&Said {
                text: ctx.payload().text.clone(),
                from,
            })
        })
        .rpc(|ctx: Ctx<Sleep>| async move {
            ctx.progress(&serde_json::json!({ "started": true }))?;
            tokio::time::sleep(Duration::from_millis(ctx.payload().ms)).await;
            Ok(Slept {
                ms: ctx.payload().ms,
            })
        })
        .on(|_ctx: Ctx<Boom>| async move {
            if true {
                panic!("secret internals");
            }
        })
        .on(|_ctx: Ctx<Fail>| async move {
            Err(Error::failed_precondition("not now")
                .with_details(serde_json::json!({"why": "test"})))
        })
        .rpc(|ctx: Ctx<Echo>| async move { Ok(ctx.into_payload()) })
}

fn meta(id: &str) -> Meta {
    Meta {
        correlation_id: Some(id.to_owned()),
        ..Meta::default()
    }
}

#[tokio::test]
async fn undecodable_message_gets_invalid_argument_with_correlation_id() {
    for codec in ["json", "msgpack"] {
        let hub = TestHub::new(router());
        let mut c = hub.connect(codec).await;
        if codec == "json" {
            c.send_raw(&br#"{"type":"SAY","meta":{"correlationId":"r-1"},"payload":{"text":"x"},"extra":1}"#[..])
                .await;
        } else {
            // {"type":"SAY","meta":{"correlationId":"r-1"},"bogus":1}
            let mut f = Vec::new();
            rmp::encode::write_map_len(&mut f, 3).unwrap();
            rmp::encode::write_str(&mut f, "type").unwrap();
            rmp::encode::write_str(&mut f, "SAY").unwrap();
            rmp::encode::write_str(&mut f, "meta").unwrap();
            rmp::encode::write_map_len(&mut f, 1).unwrap();
            rmp::encode::write_str(&mut f, "correlationId").unwrap();
            rmp::encode::write_str(&mut f, "r-1").unwrap();
            rmp::encode::write_str(&mut f, "bogus").unwrap();
            rmp::encode::write_uint(&mut f, 1).unwrap();
            c.send_raw(f).await;
        }
        let (err, meta) = c.expect_error("ERROR").await;
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{codec}");
        assert_eq!(meta.correlation_id.as_deref(), Some("r-1"), "{codec}");
        assert_eq!(meta.timestamp, Some(TEST_EPOCH_MS));
        // The connection lives on.
        c.send(&Say { text: "hi".into() }).await;
        assert_eq!(c.expect::<Said>().await.0.text, "hi");
    }
}

#[tokio::test]
async fn garbage_bytes_get_invalid_argument() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.send_raw(&b"\xff\x00not json"[..]).await;
    let (err, meta) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(meta.correlation_id, None);
}

#[tokio::test]
async fn unknown_type_gets_unimplemented() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.send_raw(&br#"{"type":"NOPE","meta":{"correlationId":"q"}}"#[..])
        .await;
    let (err, meta) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::Unimplemented);
    assert!(err.message.contains("NOPE"));
    assert_eq!(meta.correlation_id.as_deref(), Some("q"));
}

#[tokio::test]
async fn payload_of_the_wrong_shape_names_the_field() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.send_raw(&br#"{"type":"SAY","meta":{"correlationId":"a"},"payload":{"text":5}}"#[..])
        .await;
    let (err, meta) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.starts_with("payload.text:"), "{}", err.message);
    assert_eq!(
        err.details,
        Some(serde_json::json!({"path": "payload.text"}))
    );
    assert_eq!(meta.correlation_id.as_deref(), Some("a"));
    // Missing payload entirely.
    c.send_raw(&br#"{"type":"SAY"}"#[..]).await;
    let (err, _) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.starts_with("payload"), "{}", err.message);
}

#[tokio::test]
async fn a_broken_validation_rule_names_the_field() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("msgpack").await;
    c.send_meta(
        &Say {
            text: "toolong".into(),
        },
        meta("v"),
    )
    .await;
    let (err, meta) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.message, "payload.text: must have at most 5 characters");
    assert_eq!(
        err.details,
        Some(serde_json::json!({"path": "payload.text"}))
    );
    assert_eq!(meta.correlation_id.as_deref(), Some("v"));
}

#[tokio::test]
async fn handler_error_is_answered_with_its_code_and_details() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.send_meta(&Fail, meta("f")).await;
    let (err, meta) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert_eq!(err.message, "not now");
    assert_eq!(err.details, Some(serde_json::json!({"why": "test"})));
    assert_eq!(meta.correlation_id.as_deref(), Some("f"));
}

#[tokio::test]
async fn handler_panic_is_internal_without_internals_and_the_connection_lives() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.send_meta(&Boom, meta("p")).await;
    let (err, meta) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::Internal);
    assert!(!err.message.contains("secret"));
    assert_eq!(meta.correlation_id.as_deref(), Some("p"));
    c.send(&Say { text: "ok".into() }).await;
    assert_eq!(c.expect::<Said>().await.0.text, "ok");
}

#[tokio::test]
async fn reserved_types_from_clients_are_refused() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    for ty in ["$ws:rpc-progress", "__anything", "$x"] {
        c.send_raw(format!(r#"{{"type":"{ty}","meta":{{"correlationId":"r"}}}}"#).into_bytes())
            .await;
        let (err, meta) = c.expect_error("ERROR").await;
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{ty}");
        assert!(err.message.contains("reserved"));
        assert_eq!(meta.correlation_id.as_deref(), Some("r"));
    }
}

#[tokio::test]
async fn a_client_id_sent_by_a_client_never_reaches_a_handler() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.send_raw(&br#"{"type":"SAY","meta":{"clientId":"admin","x":1},"payload":{"text":"hi"}}"#[..])
        .await;
    let (said, _) = c.expect::<Said>().await;
    assert_eq!(said.from, None);
}

#[tokio::test]
async fn extended_meta_reaches_the_handler() {
    let router = Router::new().on(|ctx: Ctx<Say>| async move {
        let trace = ctx
            .meta()
            .extra
            .get("traceId")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        ctx.reply(&Said {
            text: ctx.payload().text.clone(),
            from: trace,
        })
    });
    let hub = TestHub::new(router);
    let mut c = hub.connect("msgpack").await;
    let mut m = Meta::default();
    m.extra.insert("traceId".into(), "t-9".into());
    c.send_meta(&Say { text: "x".into() }, m).await;
    assert_eq!(c.expect::<Said>().await.0.from.as_deref(), Some("t-9"));
}

#[tokio::test]
async fn heartbeat_is_answered_in_the_connection_codec() {
    for codec in ["json", "msgpack", "json+gzip"] {
        let hub = TestHub::new(router());
        let mut c = hub.connect(codec).await;
        let frame = c
            .codec()
            .encode::<()>("__heartbeat", &Meta::default(), None)
            .unwrap();
        c.send_raw(frame).await;
        let env = c.recv().await.expect("ack");
        assert_eq!(env.ty, "__heartbeat_ack");
        assert_eq!(env.meta.timestamp, Some(TEST_EPOCH_MS));
        assert!(env.payload.is_none());
    }
}

#[tokio::test]
async fn rpc_reply_and_progress_carry_the_correlation_id() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.request(&Sleep { ms: 1 }, "r-17").await;
    let progress = c.recv().await.unwrap();
    assert_eq!(progress.ty, "$ws:rpc-progress");
    assert_eq!(progress.meta.correlation_id.as_deref(), Some("r-17"));
    let (slept, meta) = c.expect::<Slept>().await;
    assert_eq!(slept.ms, 1);
    assert_eq!(meta.correlation_id.as_deref(), Some("r-17"));
}

#[tokio::test]
async fn rpc_errors_are_rpc_error() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.send_raw(&br#"{"type":"SLEEP","meta":{"correlationId":"bad"},"payload":{"ms":"x"}}"#[..])
        .await;
    let (err, meta) = c.expect_error("RPC_ERROR").await;
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(meta.correlation_id.as_deref(), Some("bad"));
}

/// docs/PROTOCOL.md §6: `RPC_ERROR` is chosen by the route the message was
/// routed to, not by whether it carries a correlationId.
#[tokio::test]
async fn rpc_error_is_chosen_by_the_route_not_by_the_correlation_id() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    // A request route, with and without a correlationId: RPC_ERROR both times.
    c.send_raw(&br#"{"type":"SLEEP","meta":{"correlationId":"with"},"payload":{"ms":"x"}}"#[..])
        .await;
    let (err, meta) = c.expect_error("RPC_ERROR").await;
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(meta.correlation_id.as_deref(), Some("with"));
    c.send_raw(&br#"{"type":"SLEEP","payload":{"ms":"x"}}"#[..])
        .await;
    let (err, meta) = c.expect_error("RPC_ERROR").await;
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(meta.correlation_id, None);
    // A successful reply to a request without a correlationId has none either.
    c.send(&Sleep { ms: 0 }).await;
    let progress = c.recv().await.expect("progress");
    assert_eq!(progress.ty, "$ws:rpc-progress");
    assert_eq!(progress.meta.correlation_id, None);
    let (slept, meta) = c.expect::<Slept>().await;
    assert_eq!(slept.ms, 0);
    assert_eq!(meta.correlation_id, None);
    // Any other route, with and without a correlationId: ERROR both times.
    c.send_meta(&Fail, crate::meta("f")).await;
    let (err, meta) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert_eq!(meta.correlation_id.as_deref(), Some("f"));
    c.send(&Fail).await;
    let (err, meta) = c.expect_error("ERROR").await;
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert_eq!(meta.correlation_id, None);
}

/// docs/PROTOCOL.md §6: a message refused before routing gets `ERROR` even
/// when its type names a request route.
#[tokio::test(start_paused = true)]
async fn a_request_refused_before_routing_gets_error_not_rpc_error() {
    let mut config = Config::default();
    config.rate_limit = Some(RateLimit {
        per_second: 1,
        burst: 1,
    });
    let hub = TestHub::with_config(router(), config);
    let mut c = hub.connect("json").await;
    c.request(&Sleep { ms: 0 }, "first").await;
    c.request(&Sleep { ms: 0 }, "second").await;
    let mut slept = false;
    let mut refused = None;
    for _ in 0..3 {
        let env = c.recv().await.expect("answer");
        match env.ty.as_str() {
            "$ws:rpc-progress" => {}
            "SLEPT" => {
                assert_eq!(env.meta.correlation_id.as_deref(), Some("first"));
                slept = true;
            }
            "ERROR" => {
                let err = env
                    .decode_payload::<signalbox::codec::ErrorPayload>()
                    .unwrap();
                refused = Some((err, env.meta));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(slept);
    let (err, meta) = refused.expect("the second request is refused with ERROR");
    assert_eq!(err.code, ErrorCode::ResourceExhausted);
    assert_eq!(meta.correlation_id.as_deref(), Some("second"));
}

#[tokio::test(start_paused = true)]
async fn rpc_past_its_deadline_gets_deadline_exceeded() {
    let router = Router::new().route(
        Route::rpc(|ctx: Ctx<Sleep>| async move {
            tokio::time::sleep(Duration::from_millis(ctx.payload().ms)).await;
            Ok(Slept {
                ms: ctx.payload().ms,
            })
        })
        .deadline(Duration::from_millis(100)),
    );
    let hub = TestHub::new(router);
    let mut c = hub.connect("json").await;
    c.request(&Sleep { ms: 50 }, "fast").await;
    assert_eq!(
        c.expect::<Slept>().await.1.correlation_id.as_deref(),
        Some("fast")
    );
    c.request(&Sleep { ms: 500 }, "slow").await;
    let (err, meta) = c.expect_error("RPC_ERROR").await;
    assert_eq!(err.code, ErrorCode::DeadlineExceeded);
    assert_eq!(meta.correlation_id.as_deref(), Some("slow"));
    // And no late reply follows.
    c.expect_silence(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn the_default_rpc_deadline_comes_from_config() {
    let mut config = Config::default();
    config.rpc_deadline = Duration::from_millis(200);
    let hub = TestHub::with_config(router(), config);
    let mut c = hub.connect("json").await;
    c.request(&Sleep { ms: 10_000 }, "s").await;
    assert_eq!(c.recv().await.unwrap().ty, "$ws:rpc-progress");
    let (err, _) = c.expect_error("RPC_ERROR").await;
    assert_eq!(err.code, ErrorCode::DeadlineExceeded);
}

#[tokio::test(start_paused = true)]
async fn a_slow_request_does_not_hold_up_others() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.request(&Sleep { ms: 1000 }, "slow").await;
    c.request(&Sleep { ms: 10 }, "fast").await;
    let mut replies = Vec::new();
    while replies.len() < 2 {
        let env = c.recv().await.unwrap();
        if env.ty == "SLEPT" {
            replies.push(env.meta.correlation_id.unwrap());
        }
    }
    assert_eq!(replies, ["fast", "slow"]);
}

#[tokio::test]
async fn echo_returns_the_payload_byte_for_byte_and_no_payload_as_none() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json").await;
    c.send_raw(&br#"{"type":"ECHO","meta":{"correlationId":"e"},"payload":{"n":18446744073709551615,"f":1.0000000000000002}}"#[..])
        .await;
    let raw = c.recv_raw().await.unwrap();
    let text = std::str::from_utf8(&raw).unwrap();
    assert!(
        text.contains(r#""payload":{"n":18446744073709551615,"f":1.0000000000000002}"#),
        "{text}"
    );
    c.send_raw(&br#"{"type":"ECHO","meta":{"correlationId":"n"}}"#[..])
        .await;
    let env = c.recv().await.unwrap();
    assert_eq!(env.ty, "ECHO");
    assert!(env.payload.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_flood_meets_the_rate_limit_with_retry_after() {
    let mut config = Config::default();
    config.rate_limit = Some(RateLimit {
        per_second: 10,
        burst: 3,
    });
    let hub = TestHub::with_config(router(), config);
    let mut c = hub.connect("json").await;
    for i in 0..4 {
        c.send_meta(&Say { text: "x".into() }, meta(&format!("m{i}")))
            .await;
    }
    // The refusal is answered as the message is read, so it may overtake
    // the replies to the three admitted messages.
    let mut said = 0;
    let mut refused = None;
    for _ in 0..4 {
        let env = c.recv().await.unwrap();
        match env.ty.as_str() {
            "SAID" => said += 1,
            "ERROR" => {
                refused = Some((
                    env.decode_payload::<signalbox::codec::ErrorPayload>()
                        .unwrap(),
                    env.meta,
                ))
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(said, 3);
    let (err, meta) = refused.expect("one refusal");
    assert_eq!(err.code, ErrorCode::ResourceExhausted);
    assert_eq!(meta.correlation_id.as_deref(), Some("m3"));
    let wait = err.retry_after_ms.expect("retryAfterMs");
    assert!((1..=100).contains(&wait), "{wait}");
    tokio::time::sleep(Duration::from_millis(wait)).await;
    c.send(&Say {
        text: "again".into(),
    })
    .await;
    assert_eq!(c.expect::<Said>().await.0.text, "again");
}

#[tokio::test]
async fn gzip_clients_get_compressed_envelopes_only_above_the_threshold() {
    let hub = TestHub::new(router());
    let mut c = hub.connect("json+gzip").await;
    let big = "x".repeat(3000);
    c.send_raw(
        format!(r#"{{"type":"ECHO","meta":{{"correlationId":"b"}},"payload":"{big}"}}"#)
            .into_bytes(),
    )
    .await;
    let raw = c.recv_raw().await.unwrap();
    assert!(raw.starts_with(br#"{"type":"COMPRESSED""#));
    let env = c.codec().decode(raw).unwrap();
    assert_eq!(env.decode_payload::<String>().unwrap(), big);
    c.send_raw(&br#"{"type":"ECHO","meta":{"correlationId":"s"},"payload":"small"}"#[..])
        .await;
    let raw = c.recv_raw().await.unwrap();
    assert!(raw.starts_with(br#"{"type":"ECHO""#));
}
