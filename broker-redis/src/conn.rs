//! The connections for commands, to one Redis server or to a Redis
//! Cluster, behind one type, and how commands that name several topics are
//! sent to each.

use crate::RedisBrokerError;
use crate::config::{RedisConfig, Topology};
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisFuture, RedisResult, Value};

/// Commands in one pipeline on one server; on a cluster, the pipelines of
/// this many topics in flight at once.
pub(crate) const BATCH: usize = 256;

/// How the broker reaches Redis.
pub(crate) enum RedisClient {
    /// One server.
    Single(redis::Client),
    /// A cluster: the startup nodes' client (every connection it makes finds
    /// the cluster's nodes and slots by itself).
    Cluster(ClusterClient),
    /// The master named `service` by these Sentinels, asked again at every
    /// connection.
    Sentinel {
        /// The Sentinels.
        sentinels: Vec<redis::ConnectionInfo>,
        /// The monitored master's name.
        service: String,
    },
}

impl RedisClient {
    /// The client for `config`: checks the URLs and the TLS material.
    pub(crate) fn new(config: &RedisConfig) -> Result<Self, RedisBrokerError> {
        if let Some(pem) = &config.tls.ca_pem {
            check_ca_pem(pem)?;
        }
        let nodes = match &config.topology {
            Topology::Single => std::slice::from_ref(&config.url),
            Topology::Cluster(nodes) => nodes.as_slice(),
            Topology::Sentinel { sentinels, .. } => sentinels.as_slice(),
        };
        if nodes.iter().any(|url| url.starts_with("rediss://")) {
            // The redis client's TLS takes the process's rustls provider;
            // when the application chose none, ring (this crate's) is it.
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
        }
        let certificates = config.tls.certificates();
        match &config.topology {
            Topology::Single => {
                let client = match certificates {
                    Some(certs) => redis::Client::build_with_tls(config.url.as_str(), certs)
                        .map_err(RedisBrokerError::Tls)?,
                    None => redis::Client::open(config.url.as_str())
                        .map_err(RedisBrokerError::InvalidUrl)?,
                };
                Ok(RedisClient::Single(client))
            }
            Topology::Sentinel { sentinels, service } => {
                if certificates.is_some() || sentinels.iter().any(|u| u.starts_with("rediss://")) {
                    return Err(RedisBrokerError::SentinelTls);
                }
                let sentinels = sentinels
                    .iter()
                    .map(|url| {
                        redis::IntoConnectionInfo::into_connection_info(url.as_str())
                            .map_err(RedisBrokerError::InvalidUrl)
                    })
                    .collect::<Result<_, _>>()?;
                Ok(RedisClient::Sentinel {
                    sentinels,
                    service: service.clone(),
                })
            }
            Topology::Cluster(nodes) => {
                if config.prefix.contains(['{', '}']) {
                    return Err(RedisBrokerError::InvalidPrefix(config.prefix.clone()));
                }
                cluster_builder(config, nodes)
                    .build()
                    .map(RedisClient::Cluster)
                    .map_err(|e| {
                        if certificates_given(config) {
                            RedisBrokerError::Tls(e)
                        } else {
                            RedisBrokerError::InvalidUrl(e)
                        }
                    })
            }
        }
    }

    /// A connection for commands (publishes, scripts, counts).
    pub(crate) async fn connect(&self, config: &RedisConfig) -> RedisResult<Conn> {
        let options = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.publish_timeout));
        match self {
            RedisClient::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            _ => self
                .server()
                .await?
                .get_multiplexed_async_connection_with_config(&options)
                .await
                .map(Conn::Single),
        }
    }

    /// The client of the one server to use now: the configured one, or the
    /// master the Sentinels name now. Not for a cluster.
    pub(crate) async fn server(&self) -> RedisResult<redis::Client> {
        match self {
            RedisClient::Single(client) => Ok(client.clone()),
            RedisClient::Sentinel { sentinels, service } => {
                let mut sentinel = redis::sentinel::Sentinel::build(sentinels.clone())?;
                sentinel.async_master_for(service, None).await
            }
            RedisClient::Cluster(_) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a cluster has no one server",
            ))),
        }
    }
}

/// A CA PEM must hold at least one certificate, each one well formed
/// (the redis client takes an empty one as "trust nothing").
fn check_ca_pem(pem: &[u8]) -> Result<(), RedisBrokerError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| {
            RedisBrokerError::Tls(redis::RedisError::from(std::io::Error::other(format!(
                "the CA PEM does not parse: {e}"
            ))))
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(RedisBrokerError::Tls(redis::RedisError::from(
            std::io::Error::other("the CA PEM holds no certificate"),
        )));
    }
    Ok(())
}

fn certificates_given(config: &RedisConfig) -> bool {
    config.tls.certificates().is_some()
}

/// A cluster client for `nodes` with the broker's timeouts and TLS
/// material (the subscriber adds RESP3 and its push sender).
pub(crate) fn cluster_builder(config: &RedisConfig, nodes: &[String]) -> ClusterClientBuilder {
    let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.publish_timeout)
        // The broker retries at its own level (the next publish, the next
        // session); the client's own retries are few, within the timeout.
        .retries(2);
    if let Some(certs) = config.tls.certificates() {
        builder = builder.certs(certs);
    }
    builder
}

/// A connection for commands: one server's, or a cluster connection that
/// routes each command to the node serving its key's slot.
#[derive(Clone)]
pub(crate) enum Conn {
    /// To one server.
    Single(MultiplexedConnection),
    /// To a cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Asks one node whether it answers (on a cluster, any master: the
    /// cluster connection itself follows nodes that fail, and a replica
    /// that is down serves nothing the broker uses).
    pub(crate) async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Conn::Single(c) => redis::cmd("PING").query_async::<String>(c).await.map(drop),
            Conn::Cluster(c) => c
                .route_command(
                    redis::cmd("PING"),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                )
                .await
                .map(drop),
        }
    }

    /// Runs groups of commands whose answers are ignored, each group about
    /// one topic (so its keys share a slot on a cluster): on one server in
    /// pipelines of up to [`BATCH`] groups; on a cluster one pipeline per
    /// group, [`BATCH`] of them in flight at once. Stops at the first
    /// failure.
    pub(crate) async fn run_groups(&mut self, groups: Vec<Vec<Cmd>>) -> RedisResult<()> {
        match self {
            Conn::Single(conn) => {
                for batch in groups.chunks(BATCH) {
                    let mut pipe = redis::pipe();
                    for cmd in batch.iter().flatten() {
                        pipe.add_command(cmd.clone()).ignore();
                    }
                    pipe.query_async::<()>(conn).await?;
                }
                Ok(())
            }
            Conn::Cluster(conn) => {
                let mut runs = futures_util::stream::iter(groups)
                    .map(|group| {
                        let mut conn = conn.clone();
                        async move {
                            let mut pipe = redis::pipe();
                            for cmd in group {
                                pipe.add_command(cmd).ignore();
                            }
                            pipe.query_async::<()>(&mut conn).await
                        }
                    })
                    .buffer_unordered(BATCH);
                while let Some(done) = runs.next().await {
                    done?;
                }
                Ok(())
            }
        }
    }
}
