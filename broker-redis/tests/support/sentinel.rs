//! A master, its replica and a Redis Sentinel watching them, on loopback.

use super::cluster::cli;
use super::{RedisServer, free_port};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the Sentinel monitors the master under.
pub const SERVICE: &str = "sbmaster";

/// A master, a replica, and one Sentinel (quorum 1).
pub struct Watched {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinel: Child,
    sentinel_port: u16,
    dir: std::path::PathBuf,
}

impl Watched {
    /// Starts them and waits until the replica is in sync and the
    /// Sentinel knows the master and its replica.
    pub async fn start() -> Self {
        let master = RedisServer::start().await;
        let replica = RedisServer::start_with(
            free_port(),
            vec![
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                master.port().to_string(),
            ],
            false,
        )
        .await;
        let sentinel_port = free_port();
        let dir = std::env::temp_dir().join(format!("signalbox-sentinel-{sentinel_port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 5000\n",
                dir.display(),
                master.port()
            ),
        )
        .unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel runs");
        let watched = Watched {
            master,
            replica,
            sentinel,
            sentinel_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let synced = cli(watched.replica.port(), &["info", "replication"])
                .await
                .contains("master_link_status:up");
            let known = cli(sentinel_port, &["sentinel", "replicas", SERVICE])
                .await
                .contains(&watched.replica.port().to_string());
            if synced && known {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinel setup did not settle"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        watched
    }

    /// The Sentinel's URL.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.sentinel_port)
    }

    /// The port of the master the Sentinel names now.
    pub async fn master_port(&self) -> Option<u16> {
        cli(
            self.sentinel_port,
            &["sentinel", "get-master-addr-by-name", SERVICE],
        )
        .await
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
