//! Throwaway Redis servers and signalbox nodes for the broker's tests.
//!
//! Every test starts its own `redis-server` on a free loopback port and
//! kills it when the guard drops. A machine without `redis-server` fails
//! the tests with a pointer to `scripts/setup`.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use serde::{Deserialize, Serialize};
use signalbox::testing::{TestClient, TestHub};
use signalbox::{Ctx, Hub, PublishOptions, Router, message};
use signalbox_redis::{RedisBroker, RedisBrokerBuilder};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod cluster;
pub mod positions;
pub mod sentinel;
pub mod tls;

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// More arguments (TLS, cluster mode).
    extra: Vec<String>,
    /// The port speaks TLS only (readiness is then a TCP accept).
    tls: bool,
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts a server on `port` and waits until it answers PING.
    pub async fn start_on(port: u16) -> Self {
        Self::start_with(port, Vec::new(), false).await
    }

    /// Starts a server on `port` with more arguments; `tls` when the port
    /// speaks TLS only.
    pub async fn start_with(port: u16, extra: Vec<String>, tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("signalbox-redis-test-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            extra,
            tls,
        };
        server.spawn().await;
        server
    }

    /// The server's scratch directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if self.tls {
            command
                .args(["--port", "0"])
                .args(["--tls-port", &self.port.to_string()]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: run scripts/setup \
                 (or apt-get install -y redis-server) before these tests"
            ),
            Err(e) => panic!("redis-server could not be started: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping().await {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if self.tls {
            return true;
        }
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"+PONG\r\n"
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 10 ms until it holds, for at most `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// --- a small chat router -------------------------------------------------

/// Join a topic.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Join {
    pub topic: String,
}
message!(Join = "JOIN");

/// The answer to [`Join`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Joined;
message!(Joined = "JOINED");

/// Leave a topic.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Leave {
    pub topic: String,
}
message!(Leave = "LEAVE");

/// The answer to [`Leave`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Left;
message!(Left = "LEFT");

/// Publish `body` to `topic` as [`Posted`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Post {
    pub topic: String,
    pub body: Body,
    pub others_only: bool,
}
message!(Post = "POST");

/// What travels: text and the values that must stay exact.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Body {
    pub text: String,
    #[serde(default)]
    pub big: u64,
    #[serde(default, with = "serde_bytes")]
    pub bin: Vec<u8>,
    #[serde(default)]
    pub float: f64,
}

/// A published [`Body`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Posted(pub Body);
message!(Posted = "POSTED");

/// The router every node runs.
pub fn router() -> Router {
    Router::new()
        .on(|ctx: Ctx<Join>| async move {
            ctx.subscribe(&ctx.payload().topic)?;
            ctx.reply(&Joined)
        })
        .on(|ctx: Ctx<Leave>| async move {
            ctx.unsubscribe(&ctx.payload().topic);
            ctx.reply(&Left)
        })
        .on(|ctx: Ctx<Post>| async move {
            let Post {
                topic,
                body,
                others_only,
            } = ctx.payload().clone();
            let options = if others_only {
                PublishOptions::excluding_sender()
            } else {
                PublishOptions::default()
            };
            ctx.publish_with(&topic, &Posted(body), options).await?;
            Ok(())
        })
}

/// A text-only post.
pub fn post(topic: &str, text: &str) -> Post {
    Post {
        topic: topic.into(),
        body: Body {
            text: text.into(),
            ..Body::default()
        },
        others_only: false,
    }
}

/// One node: a hub with its own broker.
pub struct Node {
    pub hub: TestHub,
    pub broker: RedisBroker,
}

/// A broker with timings short enough for tests.
pub fn broker(url: &str, node: &str, prefix: &str) -> RedisBroker {
    broker_builder(url, node, prefix)
        .build()
        .expect("broker builds")
}

/// The builder of [`broker`], to change a setting first.
pub fn broker_builder(url: &str, node: &str, prefix: &str) -> RedisBrokerBuilder {
    RedisBroker::builder(url)
        .node_id(node)
        .prefix(prefix)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .health_interval(Duration::from_millis(100))
        .publish_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .membership_refresh(Duration::from_millis(200))
}

/// A broker's builder for the master Sentinel names `service`, with
/// timings short enough for tests.
pub fn sentinel_broker_builder(
    sentinels: &[String],
    service: &str,
    node: &str,
    prefix: &str,
) -> RedisBrokerBuilder {
    RedisBroker::sentinel_builder(sentinels.iter().cloned(), service)
        .node_id(node)
        .prefix(prefix)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .health_interval(Duration::from_millis(100))
        .publish_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .membership_refresh(Duration::from_millis(200))
}

/// A cluster broker's builder with timings short enough for tests.
pub fn cluster_broker_builder(urls: &[String], node: &str, prefix: &str) -> RedisBrokerBuilder {
    RedisBroker::cluster_builder(urls.iter().cloned())
        .node_id(node)
        .prefix(prefix)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .health_interval(Duration::from_millis(100))
        .publish_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .membership_refresh(Duration::from_millis(200))
}

impl Node {
    /// Starts a node and waits until its broker is connected.
    pub async fn start(url: &str, name: &str, prefix: &str) -> Self {
        Self::start_with(broker(url, name, prefix)).await
    }

    /// Starts a node on `broker` and waits until it is connected.
    pub async fn start_with(broker: RedisBroker) -> Self {
        let name = broker.node_id().to_owned();
        let hub = TestHub::from_builder(Hub::builder(router()).broker(broker.clone()));
        assert!(
            broker.wait_connected(Duration::from_secs(5)).await,
            "node {name} did not connect to Redis"
        );
        Node { hub, broker }
    }

    /// Connects a client and joins `topic`.
    pub async fn member(&self, codec: &str, topic: &str) -> TestClient {
        let mut c = self.hub.connect(codec).await;
        join(&mut c, topic).await;
        c
    }

    /// Waits until Redis confirmed this node's subscription to `topic`.
    pub async fn subscribed(&self, topic: &str) {
        let broker = self.broker.clone();
        eventually(
            "the subscription to reach Redis",
            Duration::from_secs(5),
            || {
                let ok = broker.is_subscribed(topic);
                async move { ok }
            },
        )
        .await;
    }

    /// Shuts the node down: its hub, then its broker.
    pub async fn stop(self) {
        self.hub.hub().shutdown().await;
        self.broker.shutdown().await;
    }
}

/// Joins `topic` and waits for the answer.
pub async fn join(c: &mut TestClient, topic: &str) {
    c.send(&Join {
        topic: topic.into(),
    })
    .await;
    c.expect::<Joined>().await;
}
