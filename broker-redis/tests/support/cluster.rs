//! A throwaway Redis Cluster on loopback: `redis-server --cluster-enabled
//! yes` × N, joined by `redis-cli --cluster create`.

use super::tls::{Pki, write_pem};
use super::{RedisServer, free_port};
use std::time::{Duration, Instant};

/// A cluster of masters, each with its replicas.
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
    /// `redis-cli`'s TLS arguments when the cluster speaks TLS only.
    cli_tls: Vec<String>,
    /// Where the TLS files are, removed on drop.
    tls_dir: Option<std::path::PathBuf>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// For a replica, its master's id.
    pub master_id: Option<String>,
    /// Slot ranges served (masters).
    pub slots: Vec<(u16, u16)>,
}

/// Runs `redis-cli` against `port`; its standard output.
pub async fn cli(port: u16, args: &[&str]) -> String {
    cli_with(&[], port, args).await
}

async fn cli_with(tls: &[String], port: u16, args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args(tls)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli runs (scripts/setup installs it with redis-server)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits
    /// until the cluster is up and every replica in sync.
    pub async fn start(masters: usize, replicas: usize) -> Self {
        Self::start_with(masters, replicas, None).await
    }

    /// The same, every port (clients, cluster bus, replication) speaking
    /// TLS only with `pki`'s server certificate and requiring a client
    /// certificate from its CA.
    pub async fn start_tls(masters: usize, replicas: usize, pki: &Pki) -> Self {
        Self::start_with(masters, replicas, Some(pki)).await
    }

    async fn start_with(masters: usize, replicas: usize, pki: Option<&Pki>) -> Self {
        let mut servers = Vec::new();
        let mut server_tls = Vec::new();
        let mut cli_tls = Vec::new();
        let mut tls_dir = None;
        if let Some(pki) = pki {
            let dir =
                std::env::temp_dir().join(format!("signalbox-redis-cluster-tls-{}", free_port()));
            std::fs::create_dir_all(&dir).unwrap();
            let ca = write_pem(&dir, "ca.pem", &pki.ca_pem);
            // The nodes present the server certificate to each other too
            // (cluster bus, replication): it is good for both ends.
            let cert = write_pem(&dir, "server.pem", &pki.server_pem);
            let key = write_pem(&dir, "server.key", &pki.server_key);
            let client = write_pem(&dir, "client.pem", &pki.client_pem);
            let client_key = write_pem(&dir, "client.key", &pki.client_key);
            tls_dir = Some(dir.clone());
            server_tls = [
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "yes",
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
            ]
            .map(str::to_owned)
            .to_vec();
            cli_tls = [
                "--tls",
                "--cacert",
                &ca,
                "--cert",
                &client,
                "--key",
                &client_key,
            ]
            .map(str::to_owned)
            .to_vec();
        }
        for _ in 0..masters * (1 + replicas) {
            let mut extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                // Any replica may take over, however far behind it is.
                "--cluster-replica-validity-factor",
                "0",
                // The slots of the other masters keep serving while one
                // master is down.
                "--cluster-require-full-coverage",
                "no",
            ]
            .map(str::to_owned)
            .to_vec();
            extra.extend(server_tls.iter().cloned());
            servers.push(RedisServer::start_with(free_port(), extra, pki.is_some()).await);
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        let replicas = replicas.to_string();
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let out = tokio::process::Command::new("redis-cli")
            .args(&cli_tls)
            .args(&args)
            .output()
            .await
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster {
            servers,
            cli_tls,
            tls_dir,
        };
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    }

    /// The URLs of every server (`rediss://` when it speaks TLS).
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.cli_tls.is_empty() {
            "redis"
        } else {
            "rediss"
        };
        self.servers
            .iter()
            .map(|s| format!("{scheme}://127.0.0.1:{}/", s.port()))
            .collect()
    }

    /// Runs `redis-cli` against the server on `port`.
    pub async fn cli(&self, port: u16, args: &[&str]) -> String {
        cli_with(&self.cli_tls, port, args).await
    }

    /// The server listening on `port`.
    pub fn server(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .expect("a server of the cluster")
    }

    /// `CLUSTER NODES` as seen by the server on `port`.
    pub async fn nodes_seen_by(&self, port: u16) -> Vec<ClusterNode> {
        self.cli(port, &["cluster", "nodes"])
            .await
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 8 {
                    return None;
                }
                let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
                let flags = f[2];
                let slots = f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|n| (n, n)),
                    })
                    .collect();
                Some(ClusterNode {
                    id: f[0].to_owned(),
                    port,
                    master: flags.contains("master"),
                    failed: flags.contains("fail"),
                    master_id: (f[3] != "-").then(|| f[3].to_owned()),
                    slots,
                })
            })
            .collect()
    }

    /// The port of the master serving `slot`, as the server on `ask` sees
    /// it.
    pub async fn master_of_slot(&self, ask: u16, slot: u16) -> Option<u16> {
        self.nodes_seen_by(ask)
            .await
            .into_iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
    }

    /// The slot of `key` (asked of the server on `ask`).
    pub async fn slot_of(&self, ask: u16, key: &str) -> u16 {
        self.cli(ask, &["cluster", "keyslot", key])
            .await
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The ports of the replicas of the master on `port`.
    pub async fn replicas_of(&self, ask: u16, port: u16) -> Vec<u16> {
        let nodes = self.nodes_seen_by(ask).await;
        let Some(master) = nodes.iter().find(|n| n.port == port) else {
            return Vec::new();
        };
        nodes
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(&master.id))
            .map(|n| n.port)
            .collect()
    }

    /// Waits until every running server says `cluster_state:ok` and every
    /// running replica's link to its master is up.
    pub async fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut ok = true;
            for server in self.servers.iter().filter(|s| s.pid().is_some()) {
                let info = self.cli(server.port(), &["cluster", "info"]).await;
                if !info.contains("cluster_state:ok") {
                    ok = false;
                    break;
                }
                let replication = self.cli(server.port(), &["info", "replication"]).await;
                if replication.contains("role:slave")
                    && !replication.contains("master_link_status:up")
                {
                    ok = false;
                    break;
                }
            }
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
