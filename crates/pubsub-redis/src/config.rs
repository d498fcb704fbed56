//! The `[redis]` section: the connection settings the Python `RedisPubSub`
//! reads from `MSIGHT_REDIS_MESSAGE_BROKER_*`, plus the delivery mode and the
//! Redis Streams settings it did not have.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use pubsub_core::config::{redact_url, serialize_redacted_urls, Env, EnvSource, Secret, Section};
use pubsub_core::{Error, Result};

/// How messages travel through Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// `PUBLISH` / `SUBSCRIBE` on a channel named exactly like the topic, as
    /// the Python original does: every subscriber gets every message,
    /// nothing is stored, no groups (at most once).
    #[default]
    #[serde(rename = "pubsub")]
    PubSub,
    /// One Redis Stream per topic (`XADD` with an approximate `MAXLEN`).
    /// Subscribers with a group share the messages through a consumer group
    /// and acknowledge them (`XACK`) after the application took them (at
    /// least once); plain subscribers read every new entry.
    Streams,
}

impl std::str::FromStr for RedisMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "pubsub" => Ok(RedisMode::PubSub),
            "streams" | "stream" => Ok(RedisMode::Streams),
            _ => Err("expected \"pubsub\" or \"streams\"".into()),
        }
    }
}

/// Settings of the Redis backend. The connection keys mirror the
/// `MSIGHT_REDIS_MESSAGE_BROKER_*` variables of the Python original.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Host name or address of the Redis server (default `localhost`).
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// Database number selected after connecting (default 0). Redis Cluster only has database 0.
    pub db: i64,
    /// ACL user name (Redis 6+); with `password`.
    pub username: Option<String>,
    /// Password (`AUTH`); alone it authenticates the `default` user.
    pub password: Option<Secret>,
    /// Connect with TLS (`rediss://`).
    pub tls: bool,
    /// CA certificate (PEM) to verify the server with, instead of the system roots.
    pub tls_ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub tls_key: Option<PathBuf>,
    /// Verify the server certificate (default true). Turning it off is for tests only.
    pub tls_verify: bool,
    /// Connect to a Redis Cluster through `cluster_nodes`.
    pub cluster: bool,
    /// Cluster seed nodes as `"host:port"`; empty means `host:port` above.
    /// Shown redacted, in case one carries credentials (which are refused).
    #[serde(serialize_with = "serialize_redacted_urls")]
    pub cluster_nodes: Vec<String>,
    /// Path of a Unix socket; when set it takes precedence over TCP (as in the Python original).
    pub unix_socket_path: Option<PathBuf>,
    /// Delivery mode: `"pubsub"` (default) or `"streams"`.
    pub mode: RedisMode,
    /// Largest payload accepted by `publish` (default 16 MiB). In `pubsub`
    /// mode keep it well below the server's `client-output-buffer-limit
    /// pubsub` hard limit (32 MB by default): Redis disconnects a subscriber
    /// whose pending output passes it.
    pub max_payload: usize,
    /// Streams mode: approximate most entries kept per stream (`XADD ... MAXLEN ~ N`),
    /// default 100,000; 0 keeps everything.
    pub stream_maxlen: u64,
    /// Streams mode: entries pending longer than this at another group
    /// member (one that went away) are claimed (`XCLAIM`) by this one (default 30 s).
    #[serde(with = "pubsub_core::config::duration")]
    pub stream_claim_idle: Duration,
    /// Streams mode: how long one `XREAD`/`XREADGROUP` waits for new entries
    /// before it polls again (default 1 s). It is not cut short by any
    /// response timeout.
    #[serde(with = "pubsub_core::config::duration")]
    pub stream_block: Duration,
    /// Streams mode: most entries fetched by one read (default 100).
    pub stream_read_count: usize,
    /// Streams mode: this handle's consumer name in its groups. Default: a
    /// unique name made of host name, process id and a counter. Give a fixed
    /// name to take over the pending entries of a previous run at once.
    pub stream_consumer: Option<String>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.cluster_nodes.iter().map(|n| redact_url(n)).collect();
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_verify", &self.tls_verify)
            .field("cluster", &self.cluster)
            .field("cluster_nodes", &nodes)
            .field("unix_socket_path", &self.unix_socket_path)
            .field("mode", &self.mode)
            .field("max_payload", &self.max_payload)
            .field("stream_maxlen", &self.stream_maxlen)
            .field("stream_claim_idle", &self.stream_claim_idle)
            .field("stream_block", &self.stream_block)
            .field("stream_read_count", &self.stream_read_count)
            .field("stream_consumer", &self.stream_consumer)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            host: "localhost".to_string(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            tls: false,
            tls_ca_cert: None,
            tls_cert: None,
            tls_key: None,
            tls_verify: true,
            cluster: false,
            cluster_nodes: Vec::new(),
            unix_socket_path: None,
            mode: RedisMode::PubSub,
            max_payload: 16 * 1024 * 1024,
            stream_maxlen: 100_000,
            stream_claim_idle: Duration::from_secs(30),
            stream_block: Duration::from_secs(1),
            stream_read_count: 100,
            stream_consumer: None,
        }
    }
}

/// The environment variables of the Redis section, with the config key each sets.
/// The `MSIGHT_REDIS_MESSAGE_BROKER_*` connection names are the Python original's.
pub const REDIS_ENV: &[(&str, &str)] = &[
    ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "redis.host"),
    ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", "redis.port"),
    ("MSIGHT_REDIS_MESSAGE_BROKER_DB", "redis.db"),
    ("MSIGHT_REDIS_MESSAGE_BROKER_USERNAME", "redis.username"),
    ("MSIGHT_REDIS_MESSAGE_BROKER_PASSWORD", "redis.password"),
    ("MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS", "redis.tls"),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_TLS_CERT_FILE",
        "redis.tls_cert",
    ),
    ("MSIGHT_REDIS_MESSAGE_BROKER_TLS_KEY_FILE", "redis.tls_key"),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_TLS_CA_CERT_FILE",
        "redis.tls_ca_cert",
    ),
    ("MSIGHT_REDIS_MESSAGE_BROKER_TLS_VERIFY", "redis.tls_verify"),
    ("MSIGHT_REDIS_MESSAGE_BROKER_USE_CLUSTER", "redis.cluster"),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES",
        "redis.cluster_nodes",
    ),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_UNIX_SOCKET_PATH",
        "redis.unix_socket_path",
    ),
    ("MSIGHT_REDIS_MESSAGE_BROKER_MODE", "redis.mode"),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_MAX_PAYLOAD",
        "redis.max_payload",
    ),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_STREAM_MAXLEN",
        "redis.stream_maxlen",
    ),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_STREAM_CLAIM_IDLE",
        "redis.stream_claim_idle",
    ),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_STREAM_BLOCK",
        "redis.stream_block",
    ),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_STREAM_READ_COUNT",
        "redis.stream_read_count",
    ),
    (
        "MSIGHT_REDIS_MESSAGE_BROKER_STREAM_CONSUMER",
        "redis.stream_consumer",
    ),
];

const P: &str = "MSIGHT_REDIS_MESSAGE_BROKER_";

fn var(suffix: &str) -> String {
    format!("{P}{suffix}")
}

impl Section for RedisConfig {
    const NAME: &'static str = "redis";
    const ENV: &'static [(&'static str, &'static str)] = REDIS_ENV;

    /// Override fields from the `MSIGHT_REDIS_MESSAGE_BROKER_*` variables (see [`REDIS_ENV`]).
    fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
        let env = Env(source);
        env.string_req(&var("HOST"), &mut self.host);
        env.number(&var("PORT"), &mut self.port)?;
        if let Some(v) = source.var(&var("DB")) {
            let v = v.trim();
            self.db = v.parse().map_err(|_| {
                Error::config(
                    &var("DB"),
                    format!("expected a database number like \"0\", got {v:?}"),
                )
            })?;
        }
        env.string(&var("USERNAME"), &mut self.username);
        env.secret(&var("PASSWORD"), &mut self.password);
        env.bool(&var("USE_TLS"), &mut self.tls)?;
        env.path(&var("TLS_CERT_FILE"), &mut self.tls_cert);
        env.path(&var("TLS_KEY_FILE"), &mut self.tls_key);
        env.path(&var("TLS_CA_CERT_FILE"), &mut self.tls_ca_cert);
        env.bool(&var("TLS_VERIFY"), &mut self.tls_verify)?;
        env.bool(&var("USE_CLUSTER"), &mut self.cluster)?;
        env.list(
            &var("CLUSTER_NODES"),
            &["host1:6379", "host2:6379"],
            &mut self.cluster_nodes,
        )?;
        env.path(&var("UNIX_SOCKET_PATH"), &mut self.unix_socket_path);
        env.parse(&var("MODE"), &mut self.mode)?;
        env.number(&var("MAX_PAYLOAD"), &mut self.max_payload)?;
        env.number(&var("STREAM_MAXLEN"), &mut self.stream_maxlen)?;
        env.duration(&var("STREAM_CLAIM_IDLE"), &mut self.stream_claim_idle)?;
        env.duration(&var("STREAM_BLOCK"), &mut self.stream_block)?;
        env.number(&var("STREAM_READ_COUNT"), &mut self.stream_read_count)?;
        env.string(&var("STREAM_CONSUMER"), &mut self.stream_consumer);
        Ok(())
    }

    /// Checks that need no network; errors name the key at fault.
    fn validate(&self) -> Result<()> {
        validate_address(self)?;
        if self.password.is_none() && self.username.is_some() {
            return Err(Error::config(
                "redis.password",
                "a user name (redis.username) needs a password",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let missing = if self.tls_cert.is_some() {
                "redis.tls_key"
            } else {
                "redis.tls_cert"
            };
            return Err(Error::config(
                missing,
                "mutual TLS needs both a client certificate (redis.tls_cert) and its key (redis.tls_key)",
            ));
        }
        if self.max_payload == 0 {
            return Err(Error::config("redis.max_payload", "must be at least 1"));
        }
        if self.stream_read_count == 0 {
            return Err(Error::config(
                "redis.stream_read_count",
                "must be at least 1",
            ));
        }
        if self.stream_block.is_zero() {
            return Err(Error::config(
                "redis.stream_block",
                "must be more than zero (0 would block forever in Redis)",
            ));
        }
        if self.stream_claim_idle.is_zero() {
            return Err(Error::config(
                "redis.stream_claim_idle",
                "must be more than zero",
            ));
        }
        if let Some(c) = &self.stream_consumer {
            if c.is_empty() || c.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::config(
                    "redis.stream_consumer",
                    format!("{c:?} must be non-empty, without whitespace or control characters"),
                ));
            }
        }
        Ok(())
    }
}

/// The checks of where to connect: host and port, Unix socket, database,
/// cluster nodes.
fn validate_address(r: &RedisConfig) -> Result<()> {
    if r.unix_socket_path.is_none() && !r.cluster {
        if r.host.trim().is_empty() {
            return Err(Error::config("redis.host", "must not be empty"));
        }
        if r.host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(Error::config(
                "redis.host",
                format!(
                    "expected a host name or address like \"localhost\", got {:?}",
                    r.host
                ),
            ));
        }
        if r.port == 0 {
            return Err(Error::config(
                "redis.port",
                "must be a port number from 1 to 65535",
            ));
        }
    }
    if let Some(p) = &r.unix_socket_path {
        if p.as_os_str().is_empty() {
            return Err(Error::config("redis.unix_socket_path", "must not be empty"));
        }
    }
    if r.db < 0 {
        return Err(Error::config(
            "redis.db",
            format!("must be 0 or more, got {}", r.db),
        ));
    }
    if r.cluster {
        if r.unix_socket_path.is_some() {
            return Err(Error::config(
                "redis.unix_socket_path",
                "a Unix socket cannot be used with redis.cluster = true",
            ));
        }
        if r.db != 0 {
            return Err(Error::config(
                "redis.db",
                "Redis Cluster only has database 0",
            ));
        }
    }
    for (i, node) in r.cluster_nodes.iter().enumerate() {
        validate_node(&format!("redis.cluster_nodes[{i}]"), node)?;
    }
    Ok(())
}

impl RedisConfig {
    /// The cluster seed nodes: `cluster_nodes`, or `host:port` when it is empty.
    pub fn cluster_seeds(&self) -> Vec<String> {
        if self.cluster_nodes.is_empty() {
            vec![format!("{}:{}", self.host, self.port)]
        } else {
            self.cluster_nodes.clone()
        }
    }
}

/// Split a `"host:port"` cluster node (IPv6 as `"[::1]:7000"`); the error
/// names `key` and shows the expected form.
pub fn parse_node(key: &str, node: &str) -> Result<(String, u16)> {
    let n = node.trim();
    // Shown in errors with any credentials replaced by `***`.
    let shown = redact_url(n);
    let bad = || {
        Error::config(
            key,
            format!("expected \"host:port\" like \"10.0.0.1:6379\", got {shown:?}"),
        )
    };
    let n = n
        .strip_prefix("redis://")
        .or_else(|| n.strip_prefix("rediss://"))
        .unwrap_or(n);
    if n.contains('@') {
        return Err(Error::config(
            key,
            format!(
                "{shown:?}: put credentials in redis.username and redis.password (MSIGHT_REDIS_MESSAGE_BROKER_USERNAME / _PASSWORD), not in the node address"
            ),
        ));
    }
    let (host, port) = if let Some(v6) = n.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or_else(bad)?;
        (h, p.strip_prefix(':').ok_or_else(bad)?)
    } else {
        n.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == ',')
    {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok((host.to_string(), p)),
        _ => Err(Error::config(
            key,
            format!(
                "port {port:?} in {shown:?} is not a number from 1 to 65535 (expected \"host:port\")"
            ),
        )),
    }
}

fn validate_node(key: &str, node: &str) -> Result<()> {
    parse_node(key, node).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn every_variable_is_read() {
        let env = [
            ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "redis.example"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", "6380"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_DB", "3"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_USERNAME", "alice"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_PASSWORD", "pw-marker"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS", "TRUE"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_TLS_CERT_FILE", "/c.pem"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_TLS_KEY_FILE", "/k.pem"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_TLS_CA_CERT_FILE", "/ca.pem"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_TLS_VERIFY", "no"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_USE_CLUSTER", "1"),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES",
                "['10.0.0.1:7000', '10.0.0.2:7001']",
            ),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_UNIX_SOCKET_PATH",
                "/run/r.sock",
            ),
            ("MSIGHT_REDIS_MESSAGE_BROKER_MODE", "Streams"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_MAX_PAYLOAD", "1048576"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_STREAM_MAXLEN", "5000"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_STREAM_CLAIM_IDLE", "2s"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_STREAM_BLOCK", "250ms"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_STREAM_READ_COUNT", "10"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_STREAM_CONSUMER", "node-a"),
        ];
        let mut c = RedisConfig::default();
        c.apply_env(&env).unwrap();
        assert_eq!(c.host, "redis.example");
        assert_eq!(c.port, 6380);
        assert_eq!(c.db, 3);
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "pw-marker");
        assert!(c.tls);
        assert_eq!(c.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/k.pem")));
        assert_eq!(c.tls_ca_cert, Some(PathBuf::from("/ca.pem")));
        assert!(!c.tls_verify);
        assert!(c.cluster);
        assert_eq!(c.cluster_nodes, ["10.0.0.1:7000", "10.0.0.2:7001"]);
        assert_eq!(c.unix_socket_path, Some(PathBuf::from("/run/r.sock")));
        assert_eq!(c.mode, RedisMode::Streams);
        assert_eq!(c.max_payload, 1 << 20);
        assert_eq!(c.stream_maxlen, 5000);
        assert_eq!(c.stream_claim_idle, Duration::from_secs(2));
        assert_eq!(c.stream_block, Duration::from_millis(250));
        assert_eq!(c.stream_read_count, 10);
        assert_eq!(c.stream_consumer.as_deref(), Some("node-a"));
        assert_eq!(REDIS_ENV.len(), env.len());
        for (name, _) in REDIS_ENV {
            assert!(env.iter().any(|(n, _)| n == name), "{name} untested");
        }
        assert!(!format!("{c:?}").contains("pw-marker"));
    }

    #[test]
    fn defaults_match_the_python_original() {
        let mut c = RedisConfig::default();
        c.apply_env(&[("UNRELATED", "x")]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("localhost", 6379, 0));
        assert!(!c.tls && !c.cluster && c.tls_verify);
        assert_eq!(c.mode, RedisMode::PubSub);
        assert!(c.unix_socket_path.is_none());
        c.validate().unwrap();
        assert_eq!(c.cluster_seeds(), ["localhost:6379"]);
    }

    #[test]
    fn cluster_nodes_in_both_forms() {
        for v in [
            "['a:7000', 'b:7001']",
            "[\"a:7000\",\"b:7001\"]",
            "a:7000,b:7001",
            " a:7000 , b:7001 ",
        ] {
            let mut c = RedisConfig::default();
            c.apply_env(&[("MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES", v)])
                .unwrap();
            assert_eq!(c.cluster_nodes, ["a:7000", "b:7001"], "{v}");
            c.validate().unwrap();
        }
    }

    #[test]
    fn malformed_variables_name_themselves_and_show_the_form() {
        for (var, value, fragment) in [
            ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", "http", "whole number"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", "70000", "out of range"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", "-1", "whole number"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_DB", "zero", "database number"),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS",
                "sure",
                "expected true/false",
            ),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_TLS_VERIFY",
                "2",
                "expected true/false",
            ),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_USE_CLUSTER",
                "y",
                "expected true/false",
            ),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES",
                "['a:7000'",
                "['host1:6379', 'host2:6379']",
            ),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES",
                "[]",
                "host1:6379,host2:6379",
            ),
            ("MSIGHT_REDIS_MESSAGE_BROKER_MODE", "kafka", "\"streams\""),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_MAX_PAYLOAD",
                "1MB",
                "whole number",
            ),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_STREAM_MAXLEN",
                "lots",
                "whole number",
            ),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_STREAM_CLAIM_IDLE",
                "soon",
                "duration",
            ),
            ("MSIGHT_REDIS_MESSAGE_BROKER_STREAM_BLOCK", "x", "duration"),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_STREAM_READ_COUNT",
                "1.5",
                "whole number",
            ),
        ] {
            let mut c = RedisConfig::default();
            let e = c.apply_env(&[(var, value)]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            let msg = e.to_string();
            assert!(msg.contains(var) && msg.contains(fragment), "{msg}");
        }
    }

    #[test]
    fn credentials_in_a_node_are_refused_and_never_shown() {
        for node in [
            "redis://alice:node-marker@10.0.0.1:7000",
            "alice:node-marker@10.0.0.1:7000",
            "rediss://node-marker@10.0.0.1:bad",
        ] {
            let c = RedisConfig {
                cluster_nodes: vec![node.to_string()],
                ..Default::default()
            };
            let e = c.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(e.to_string().contains("redis.cluster_nodes[0]"), "{e}");
            for out in [
                e.to_string(),
                format!("{c:?}"),
                serde_json::to_string(&c).unwrap(),
            ] {
                assert!(!out.contains("node-marker"), "{out}");
            }
        }
    }

    #[test]
    fn password_never_shows_in_errors_or_output() {
        let mut c = RedisConfig::default();
        c.apply_env(&[
            ("MSIGHT_REDIS_MESSAGE_BROKER_PASSWORD", "hunter2-marker"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", "0"),
        ])
        .unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("redis.port"), "{e}");
        for out in [
            format!("{c:?}"),
            serde_json::to_string(&c).unwrap(),
            e.to_string(),
        ] {
            assert!(!out.contains("hunter2-marker"), "{out}");
        }
    }

    #[test]
    fn address_validation_names_the_key() {
        let cases: Vec<(RedisConfig, &str)> = vec![
            (
                RedisConfig {
                    port: 0,
                    ..Default::default()
                },
                "redis.port: must be a port number",
            ),
            (
                RedisConfig {
                    host: " ".into(),
                    ..Default::default()
                },
                "redis.host",
            ),
            (
                RedisConfig {
                    host: "redis://h".into(),
                    ..Default::default()
                },
                "redis.host: expected a host name",
            ),
            (
                RedisConfig {
                    db: -1,
                    ..Default::default()
                },
                "redis.db",
            ),
            (
                RedisConfig {
                    cluster_nodes: vec!["a:7000".into(), "b".into()],
                    ..Default::default()
                },
                "redis.cluster_nodes[1]: expected \"host:port\"",
            ),
            (
                RedisConfig {
                    cluster_nodes: vec!["a:99999".into()],
                    ..Default::default()
                },
                "redis.cluster_nodes[0]: port \"99999\"",
            ),
            (
                RedisConfig {
                    cluster_nodes: vec![":7000".into()],
                    ..Default::default()
                },
                "redis.cluster_nodes[0]",
            ),
            (
                RedisConfig {
                    cluster: true,
                    db: 2,
                    ..Default::default()
                },
                "redis.db: Redis Cluster only has database 0",
            ),
        ];
        assert_invalid(cases);
        // A Unix socket makes host and port irrelevant.
        RedisConfig {
            port: 0,
            unix_socket_path: Some("/run/r.sock".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn validation_names_the_key() {
        let cases: Vec<(RedisConfig, &str)> = vec![
            (
                RedisConfig {
                    tls_cert: Some("/c".into()),
                    ..Default::default()
                },
                "redis.tls_key",
            ),
            (
                RedisConfig {
                    tls_key: Some("/k".into()),
                    ..Default::default()
                },
                "redis.tls_cert",
            ),
            (
                RedisConfig {
                    username: Some("u".into()),
                    ..Default::default()
                },
                "redis.password",
            ),
            (
                RedisConfig {
                    stream_read_count: 0,
                    ..Default::default()
                },
                "redis.stream_read_count",
            ),
            (
                RedisConfig {
                    stream_block: Duration::ZERO,
                    ..Default::default()
                },
                "redis.stream_block",
            ),
            (
                RedisConfig {
                    stream_consumer: Some("a b".into()),
                    ..Default::default()
                },
                "redis.stream_consumer",
            ),
        ];
        assert_invalid(cases);
    }

    /// Each config fails validation with an error naming its fragment.
    fn assert_invalid(cases: Vec<(RedisConfig, &str)>) {
        for (c, fragment) in cases {
            let e = c.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(e.to_string().contains(fragment), "{e}");
        }
    }

    #[test]
    fn node_parsing() {
        assert_eq!(parse_node("k", "h:1").unwrap(), ("h".to_string(), 1));
        assert_eq!(
            parse_node("k", "[::1]:7000").unwrap(),
            ("::1".to_string(), 7000)
        );
        assert_eq!(
            parse_node("k", "redis://10.0.0.1:7000").unwrap(),
            ("10.0.0.1".to_string(), 7000)
        );
        assert!(parse_node("k", "h:0").is_err());
        assert!(parse_node("k", "h").is_err());
    }

    #[test]
    fn mode_from_file_and_env_spelling() {
        let c: RedisConfig = serde_json::from_str(r#"{"mode": "streams"}"#).unwrap();
        assert_eq!(c.mode, RedisMode::Streams);
        let c: RedisConfig = serde_json::from_str(r#"{"mode": "pubsub"}"#).unwrap();
        assert_eq!(c.mode, RedisMode::PubSub);
        assert!(serde_json::from_str::<RedisConfig>(r#"{"mode": "pub_sub"}"#).is_err());
        assert!(serde_json::from_str::<RedisConfig>(r#"{"hots": "x"}"#).is_err());
        assert_eq!("pub-sub".parse::<RedisMode>().unwrap(), RedisMode::PubSub);
    }
}
