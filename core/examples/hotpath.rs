//! A fixed amount of work on the hub's hot paths, over the in-memory
//! transport, for counting instructions (a repeatable measure on a busy
//! machine, where timings are not):
//!
//! ```text
//! cargo build --release -p signalbox --example hotpath
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/hotpath rpc 20000
//! ```
//!
//! Modes, each after the same setup (a hub, one client, and for `fanout`
//! 300 subscribers in json, msgpack and json+gzip):
//!
//! - `dispatch N`: N messages to an `.on` route that replies, each read
//!   back (no correlationId: the reply answers nothing).
//! - `rpc N`: N requests with a correlationId to an `.rpc` route, each
//!   reply read back (the reply carries what it answers).
//! - `fanout N`: N publications to the 300 subscribers, each read by all.
//!
//! Run each mode with N = 0 as well: the difference, divided by N, is the
//! cost of one operation without the setup.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use serde::{Deserialize, Serialize};
use signalbox::testing::{TestClient, TestHub};
use signalbox::{Config, Ctx, Error, Router, message};

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

#[derive(Serialize, Deserialize, Clone)]
struct Echo {
    n: u64,
    text: String,
}
message!(Echo = "ECHO");

const SUBSCRIBERS: usize = 300;

fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Ping>| async move {
            let p = ctx.payload();
            ctx.reply(&Pong {
                n: p.n,
                text: p.text.clone(),
            })
        })
        .rpc(|ctx: Ctx<Echo>| async move { Ok::<_, Error>(ctx.into_payload()) })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "dispatch".to_owned());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut config = Config::default();
        config.rate_limit = None;
        let hub = TestHub::with_config(router(), config);
        let mut client = hub.connect("json").await;
        match mode.as_str() {
            "dispatch" => {
                let frame = r#"{"type":"PING","payload":{"n":7,"text":"hello, world"}}"#;
                for _ in 0..n {
                    client.send_raw(frame.as_bytes().to_vec()).await;
                    client.recv_raw().await.expect("reply");
                }
            }
            "rpc" => {
                let frame = r#"{"type":"ECHO","meta":{"correlationId":"r-17"},"payload":{"n":7,"text":"hello, world"}}"#;
                for _ in 0..n {
                    client.send_raw(frame.as_bytes().to_vec()).await;
                    client.recv_raw().await.expect("reply");
                }
            }
            "fanout" => {
                let mut clients: Vec<TestClient> = Vec::new();
                for i in 0..SUBSCRIBERS {
                    clients.push(hub.connect(["json", "msgpack", "json+gzip"][i % 3]).await);
                }
                tokio::task::yield_now().await;
                for conn in hub.hub().connections() {
                    conn.subscribe("room").expect("subscribe");
                }
                let msg = Pong {
                    n: 1,
                    text: "x".repeat(200),
                };
                for _ in 0..n {
                    let delivered = hub.hub().publish("room", &msg).await.expect("publish");
                    assert_eq!(delivered, SUBSCRIBERS + 1);
                    for c in &mut clients {
                        c.recv_raw().await.expect("delivered");
                    }
                    client.recv_raw().await.expect("delivered");
                }
            }
            other => panic!("unknown mode {other:?}: dispatch, rpc or fanout"),
        }
        hub.hub().shutdown().await;
    });
}
