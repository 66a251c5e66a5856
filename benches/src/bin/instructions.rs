//! What `benches/instructions` runs under `valgrind --tool=callgrind`: `N`
//! encodes, decodes, or request → reply round trips through the in-memory
//! hub (connection driver, routing, handler, reply, writer), in one of the
//! built-in codecs. Instruction counts of `N` and of `0` give the cost of
//! one, repeatable on a busy machine where timings are not.
//!
//! ```text
//! instructions encode|decode|dispatch json|msgpack|json+gzip|msgpack+gzip N
//! ```
//!
//! It uses only API that predates application codecs, so the script can
//! build it at older revisions to compare.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use signalbox::testing::TestHub;
use signalbox::{Config, Ctx, Router, message};
use signalbox_codec::{Meta, WireCodec};
use std::hint::black_box;

#[derive(Serialize, Deserialize, Clone)]
struct Ping {
    n: u64,
    text: String,
}
message!(Ping = "PING");

#[derive(Serialize, Deserialize, Clone)]
struct Pong {
    n: u64,
    text: String,
}
message!(Pong = "PONG");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, what, name, n] = args.as_slice() else {
        eprintln!("usage: instructions encode|decode|dispatch CODEC N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N is a count");
    let codec = WireCodec::from_name(name).expect("a built-in codec");
    let payload = Pong {
        n: 7,
        text: "hello, world".into(),
    };
    let meta = Meta {
        timestamp: Some(1_700_000_000_000),
        correlation_id: Some("c1".into()),
        ..Meta::default()
    };
    match what.as_str() {
        "encode" => {
            for _ in 0..n {
                let frame = codec.encode("PONG", black_box(&meta), Some(black_box(&payload)));
                black_box(frame.expect("encodes"));
            }
        }
        "decode" => {
            let frame: Bytes = codec
                .encode("PONG", &meta, Some(&payload))
                .expect("encodes");
            for _ in 0..n {
                match codec.decode(black_box(frame.clone())) {
                    Ok(envelope) => black_box(envelope),
                    Err(_) => panic!("the frame decodes"),
                };
            }
        }
        "dispatch" => dispatch(name, n),
        other => panic!("unknown workload {other}"),
    }
}

fn dispatch(name: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let router = Router::new().on(|ctx: Ctx<Ping>| async move {
            let p = ctx.payload();
            ctx.reply(&Pong {
                n: p.n,
                text: p.text.clone(),
            })
        });
        let mut config = Config::default();
        config.rate_limit = None;
        let hub = TestHub::with_config(router, config);
        let mut client = hub.connect(name).await;
        let ping = Ping {
            n: 7,
            text: "hello, world".into(),
        };
        let frame = client
            .codec()
            .encode("PING", &Meta::default(), Some(&ping))
            .expect("encodes");
        // One round trip before counting, so that N = 0 includes first-use costs.
        client.send_raw(frame.clone()).await;
        client.recv_raw().await.expect("reply");
        for _ in 0..n {
            client.send_raw(frame.clone()).await;
            black_box(client.recv_raw().await.expect("reply"));
        }
    });
}
