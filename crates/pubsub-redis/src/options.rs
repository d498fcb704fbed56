//! The `[redis]` config section to [`Options`], which build the redis-rs
//! clients: address (Unix socket, TCP or TLS), credentials, RESP3, TLS
//! certificates, cluster nodes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pubsub_core::config::redact_url;
use pubsub_core::tls::TlsFiles;
use pubsub_core::{Config, Error, ErrorKind, Result};

use crate::config::{parse_node, RedisConfig};
use redis::aio::AsyncPushSender;
use redis::cluster::ClusterClientBuilder;
use redis::{
    ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
    TlsCertificates,
};

/// Receives the RESP3 pushes (pub/sub messages, disconnections); must not block.
pub(crate) type PushCallback =
    Arc<dyn Fn(redis::PushInfo) -> std::result::Result<(), ()> + Send + Sync>;

/// Timeout of ordinary commands (publish pipelines, subscribe, XACK, ...).
/// Blocking stream reads use their own, longer one.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to open connections, checked once at connect. The
/// client library's options are made per connection, by [`Options::client`]
/// and [`Options::cluster_client`], since each connection has its own push
/// callback and response timeout.
#[derive(Clone)]
pub(crate) struct Options {
    pub redis: RedisConfig,
    /// The address as shown in errors and logs, password replaced by `***`.
    pub shown: String,
    /// Whether connections use TLS (`tls = true`, and not a Unix socket).
    pub tls: bool,
    /// `redis.stream_consumer`, or one generated for this handle.
    pub consumer: String,
    pub connect_timeout: Duration,
    pub close_timeout: Duration,
    certs: Option<Arc<TlsCertificates>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("address", &self.shown)
            .field("mode", &self.redis.mode)
            .field("cluster", &self.redis.cluster)
            .finish()
    }
}

impl Options {
    /// Build the options from the common settings and the (checked)
    /// `[redis]` section (TLS files are read here, so their errors come
    /// before any network traffic).
    pub fn new(config: &Config, redis: RedisConfig) -> Result<Options> {
        if redis.unix_socket_path.is_some() && redis.tls {
            tracing::warn!(
                "redis.unix_socket_path is set: it takes precedence over TCP, and TLS settings are not used on it"
            );
        }
        if let Some(path) = &redis.unix_socket_path {
            check_unix_socket(path)?;
        }
        if redis.tls {
            // One rustls provider (ring) for the process, before any TLS connect.
            pubsub_core::tls::install_default_provider();
        }
        let tls = redis.tls && redis.unix_socket_path.is_none();
        let certs = if tls {
            Some(Arc::new(tls_certificates(&redis)?))
        } else {
            if !redis.tls {
                pubsub_core::tls::warn_files_without_tls(
                    &tls_files(&redis),
                    "set redis.tls = true (MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS=true)",
                );
            }
            None
        };
        Ok(Options {
            shown: shown_address(&redis),
            tls,
            consumer: redis
                .stream_consumer
                .clone()
                .unwrap_or_else(generated_consumer),
            connect_timeout: config.connect_timeout,
            close_timeout: config.close_timeout,
            certs,
            redis,
        })
    }

    fn redis_settings(&self) -> RedisConnectionInfo {
        let r = &self.redis;
        let mut info = RedisConnectionInfo::default()
            .set_db(r.db)
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(u) = &r.username {
            info = info.set_username(u);
        }
        if let Some(p) = &r.password {
            info = info.set_password(p.expose());
        }
        info
    }

    fn addr(&self, host: &str, port: u16) -> ConnectionAddr {
        if self.redis.tls {
            ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: !self.redis.tls_verify,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_string(), port)
        }
    }

    /// A standalone client (Unix socket if configured, else TCP or TLS).
    pub fn client(&self) -> Result<redis::Client> {
        let r = &self.redis;
        let addr = match &r.unix_socket_path {
            Some(p) => ConnectionAddr::Unix(p.clone()),
            None => self.addr(&r.host, r.port),
        };
        let info = addr
            .into_connection_info()
            .map_err(|e| self.config_error(e))?
            .set_redis_settings(self.redis_settings());
        let client = match (&self.certs, &addr_is_tls(&info)) {
            (Some(certs), true) => redis::Client::build_with_tls(info, (**certs).clone()),
            _ => redis::Client::open(info),
        };
        client.map_err(|e| self.config_error(e))
    }

    /// A cluster client over `cluster_nodes`; `push` receives pub/sub messages.
    pub fn cluster_client(
        &self,
        push: Option<PushCallback>,
        response_timeout: Duration,
    ) -> Result<redis::cluster::ClusterClient> {
        let r = &self.redis;
        let mut nodes = Vec::new();
        for (i, n) in r.cluster_seeds().iter().enumerate() {
            let (host, port) = parse_node(&format!("redis.cluster_nodes[{i}]"), n)?;
            nodes.push(
                self.addr(&host, port)
                    .into_connection_info()
                    .map_err(|e| self.config_error(e))?
                    .set_redis_settings(self.redis_settings()),
            );
        }
        let mut b = ClusterClientBuilder::new(nodes)
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(self.connect_timeout)
            .response_timeout(response_timeout)
            .retries(8)
            .min_retry_wait(50)
            .max_retry_wait(1000);
        if let Some(u) = &r.username {
            b = b.username(u);
        }
        if let Some(p) = &r.password {
            b = b.password(p.expose());
        }
        if r.tls {
            b = b.tls(if r.tls_verify {
                redis::TlsMode::Secure
            } else {
                redis::TlsMode::Insecure
            });
            if let Some(certs) = &self.certs {
                b = b.certs((**certs).clone());
            }
        }
        if let Some(push) = push {
            b = b.push_sender(PushFn(push));
        }
        b.build().map_err(|e| self.config_error(e))
    }

    fn config_error(&self, e: redis::RedisError) -> Error {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("redis {}: cannot build the client", self.shown),
        )
        .with_source(e)
    }
}

/// A push sender made of a shared closure.
struct PushFn(PushCallback);

impl AsyncPushSender for PushFn {
    fn send(&self, info: redis::PushInfo) -> std::result::Result<(), redis::aio::SendError> {
        (self.0)(info).map_err(|_| redis::aio::SendError)
    }
}

fn addr_is_tls(info: &redis::ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

/// A consumer name no other handle is likely to use: host, process id, a
/// per-process counter and the time.
fn generated_consumer() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0);
    format!(
        "{host}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `redis://user:***@host:port/db`, `rediss://...`, `unix:///path`, or the cluster node list.
fn shown_address(r: &RedisConfig) -> String {
    let auth = match (&r.username, &r.password) {
        (Some(u), Some(_)) => format!("{u}:***@"),
        (None, Some(_)) => ":***@".to_string(),
        (Some(u), None) => format!("{u}@"),
        (None, None) => String::new(),
    };
    let scheme = if r.tls { "rediss" } else { "redis" };
    let url = if let Some(p) = &r.unix_socket_path {
        format!("unix://{auth}{}", p.display())
    } else if r.cluster {
        let nodes = r.cluster_seeds().join(",");
        format!("{scheme}://{auth}{nodes} (cluster)")
    } else {
        format!("{scheme}://{auth}{}:{}/{}", r.host, r.port, r.db)
    };
    redact_url(&url)
}

/// The Unix socket must be there when connecting: a path that does not
/// exist (or cannot be looked at) is a configuration error naming
/// `redis.unix_socket_path` and the path, found before any connect.
fn check_unix_socket(path: &Path) -> Result<()> {
    std::fs::metadata(path).map(|_| ()).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist (is redis-server running, with `unixsocket` set to it?)".to_string()
        } else {
            format!("cannot be read: {e}")
        };
        Error::config(
            "redis.unix_socket_path",
            format!("{} {what}", path.display()),
        )
    })
}

/// The TLS files and switches of the section, for core's TLS setup.
fn tls_files(r: &RedisConfig) -> TlsFiles<'_> {
    TlsFiles {
        section: "redis",
        ca_key: "tls_ca_cert",
        cert_key: "tls_cert",
        key_key: "tls_key",
        ca: r.tls_ca_cert.as_deref(),
        cert: r.tls_cert.as_deref(),
        key: r.tls_key.as_deref(),
        verify: r.tls_verify,
    }
}

/// Check the TLS files through core (clear errors naming the key), then
/// hand their PEM bytes to redis-rs.
fn tls_certificates(r: &RedisConfig) -> Result<TlsCertificates> {
    // Installs the `ring` provider and checks every file.
    pubsub_core::tls::client_config(&tls_files(r))?;
    // Read again for redis-rs: only a file removed or changed since the
    // check can fail here.
    let read = |key: &str, p: &Path| {
        std::fs::read(p).map_err(|e| {
            Error::config(
                &format!("redis.{key}"),
                format!("file {} cannot be read: {e}", p.display()),
            )
        })
    };
    let root_cert = match &r.tls_ca_cert {
        Some(p) => Some(read("tls_ca_cert", p)?),
        None => None,
    };
    let client_tls = match (&r.tls_cert, &r.tls_key) {
        (Some(c), Some(k)) => Some(ClientTlsConfig {
            client_cert: read("tls_cert", c)?,
            client_key: read("tls_key", k)?,
        }),
        _ => None,
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsub_core::Secret;

    #[test]
    fn shown_address_hides_the_password() {
        let mut r = RedisConfig {
            username: Some("alice".into()),
            password: Some(Secret::new("hunter2")),
            ..RedisConfig::default()
        };
        assert_eq!(shown_address(&r), "redis://alice:***@localhost:6379/0");
        r.username = None;
        r.tls = true;
        assert_eq!(shown_address(&r), "rediss://:***@localhost:6379/0");
        r.unix_socket_path = Some("/run/redis.sock".into());
        assert!(!shown_address(&r).contains("hunter2"));
        assert!(shown_address(&r).contains("/run/redis.sock"));
    }

    #[test]
    fn tls_file_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::default();
        let mut r = RedisConfig {
            tls: true,
            tls_ca_cert: Some(dir.path().join("missing-ca.pem")),
            ..RedisConfig::default()
        };
        let e = Options::new(&c, r.clone()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("redis.tls_ca_cert"), "{e}");
        assert!(e.to_string().contains("missing-ca.pem"), "{e}");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        r.tls_ca_cert = Some(not_pem);
        let e = Options::new(&c, r).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(e.to_string().contains("redis.tls_ca_cert"), "{e}");
    }

    #[test]
    fn a_missing_unix_socket_names_the_key_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("redis.sock");
        let r = RedisConfig {
            unix_socket_path: Some(missing.clone()),
            ..RedisConfig::default()
        };
        let e = Options::new(&Config::default(), r).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let msg = e.to_string();
        assert!(msg.contains("redis.unix_socket_path"), "{msg}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
    }
}
