//! The `[nats]` section: everything the Python `NATSPubSub` config dict and
//! `get_nats_config` know, with the same key names, and the JetStream keys
//! (`mode`, `stream*`, `consumer`, `deliver_*`, `fetch_*`, `publish_*`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use pubsub_core::config::env::parse_duration;
use pubsub_core::config::{redact_url, serialize_redacted_urls, Env, EnvSource, Secret, Section};
use pubsub_core::{Error, Result};

/// Settings of the NATS backend. Key names follow the Python original's
/// config dict (`servers`, `user`, `password`, `token`, `nkeys_seed`,
/// `user_jwt`, `user_credentials`, `tls`, `tls_ca_cert`, `tls_cert`,
/// `tls_key`, `tls_verify`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Server URLs (`nats://host:port`, `tls://host:port`); the client fails
    /// over between them. Default `["nats://localhost:4222"]`. Credentials
    /// in a URL (`nats://user:pass@host`, `nats://token@host`) are used for
    /// authentication and shown redacted.
    #[serde(serialize_with = "serialize_redacted_urls")]
    pub servers: Vec<String>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<Secret>,
    /// Authentication token.
    pub token: Option<Secret>,
    /// NKey seed (`SU...`). Alone: NKey authentication. With `user_jwt`: signs the JWT challenge.
    pub nkeys_seed: Option<Secret>,
    /// User JWT, signed with `nkeys_seed`.
    pub user_jwt: Option<Secret>,
    /// Path of a `.creds` file (JWT and NKey seed together).
    pub user_credentials: Option<PathBuf>,
    /// Require TLS. Also implied by a `tls://` server URL.
    pub tls: bool,
    /// CA certificate (PEM) to verify the server with, instead of the system roots.
    pub tls_ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub tls_key: Option<PathBuf>,
    /// Verify the server certificate (default true). Turning it off is for tests only.
    pub tls_verify: bool,
    /// Client name shown by the server (`connz`).
    pub name: Option<String>,
    /// Messages the client library buffers per subscription before it drops
    /// (slow consumer); our own receive buffer sits behind it.
    pub subscription_capacity: usize,
    /// Reconnect attempts after a connection loss; `None` retries forever.
    pub max_reconnects: Option<usize>,
    /// Longest pause between reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay_max: Duration,
    /// Interval of client PINGs that detect a dead connection.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// `core` (default: core NATS, at most once, as the Python original) or
    /// `jetstream` (messages kept in a stream, at least once, manual ack).
    pub mode: NatsMode,
    /// JetStream: the stream of a topic. A name with `{token}` is a
    /// template: `{token}` is replaced by the topic's first token
    /// (`sensors.camera.front` -> `msight_sensors`, the default `msight_{token}`),
    /// so every first token gets a stream of its own; without it, one stream
    /// for every topic.
    pub stream: String,
    /// JetStream: the subjects the stream captures when this library creates
    /// it (`{token}` replaced as in `stream`). Empty (default): `{token}` and
    /// `{token}.>` for a templated stream; a fixed stream name needs them
    /// unless the stream exists already.
    pub stream_subjects: Vec<String>,
    /// JetStream: `file` (default when created) or `memory`.
    pub stream_storage: Option<StreamStorage>,
    /// JetStream: copies of the stream in a cluster (default 1 when created).
    pub stream_replicas: Option<usize>,
    /// JetStream: oldest message kept (default 24 h when created; `0s`: no limit).
    #[serde(with = "humantime_serde")]
    pub stream_max_age: Option<Duration>,
    /// JetStream: most bytes kept (default 1 GiB when created; 0: no limit).
    pub stream_max_bytes: Option<u64>,
    /// JetStream: most messages kept (default 1,000,000 when created; 0: no limit).
    pub stream_max_msgs: Option<u64>,
    /// JetStream: what goes when a limit is reached: `old` (default when
    /// created) or `new` (a publish is then refused).
    pub stream_discard: Option<StreamDiscard>,
    /// JetStream: a durable consumer name for plain subscriptions, which then
    /// resume where they stopped after a restart (default: an ephemeral
    /// consumer per subscription).
    pub consumer: Option<String>,
    /// JetStream: where a new consumer starts: `new` (default), `all`,
    /// `last`, `last_per_subject`, `by_start_time` (with
    /// `deliver_start_time`) or `by_start_sequence` (with
    /// `deliver_start_sequence`).
    pub deliver_policy: DeliverFrom,
    /// JetStream: RFC 3339 time for `deliver_policy = "by_start_time"`.
    pub deliver_start_time: Option<String>,
    /// JetStream: stream sequence for `deliver_policy = "by_start_sequence"`.
    pub deliver_start_sequence: Option<u64>,
    /// JetStream: most messages asked for by one pull request (default 256).
    pub fetch_batch: usize,
    /// JetStream: most bytes asked for by one pull request (default 8 MiB).
    pub fetch_max_bytes: usize,
    /// JetStream: most publishes sent and not yet acknowledged by the
    /// stream (default 1,024); `publish` waits for room beyond.
    pub publish_max_pending: usize,
    /// JetStream: most payload bytes of those (default 64 MiB).
    pub publish_max_pending_bytes: usize,
    /// JetStream: how long a publish may go unconfirmed (sent again
    /// meanwhile with the same `Nats-Msg-Id`) before `flush` reports it
    /// (default 10 s).
    #[serde(with = "humantime_serde")]
    pub publish_ack_timeout: Duration,
}

/// How the NATS backend carries messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsMode {
    /// Core NATS publish/subscribe, as the Python original: nothing is
    /// kept, at most once.
    #[default]
    Core,
    /// JetStream: messages kept in a stream and read through pull
    /// consumers, at least once, manual ack available.
    #[serde(rename = "jetstream")]
    JetStream,
}

impl std::str::FromStr for NatsMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "core" => Ok(NatsMode::Core),
            "jetstream" | "js" => Ok(NatsMode::JetStream),
            _ => Err("expected \"core\" or \"jetstream\"".into()),
        }
    }
}

/// Where a JetStream stream keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStorage {
    /// On disk: survives a server restart.
    File,
    /// In memory: lost with the server.
    Memory,
}

impl std::str::FromStr for StreamStorage {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "file" => Ok(StreamStorage::File),
            "memory" => Ok(StreamStorage::Memory),
            _ => Err("expected \"file\" or \"memory\"".into()),
        }
    }
}

/// What a JetStream stream discards at its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamDiscard {
    /// The oldest messages make room.
    Old,
    /// New messages are refused (the publish fails at `flush`).
    New,
}

impl std::str::FromStr for StreamDiscard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "old" => Ok(StreamDiscard::Old),
            "new" => Ok(StreamDiscard::New),
            _ => Err("expected \"old\" or \"new\"".into()),
        }
    }
}

/// Where a new JetStream consumer starts reading its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverFrom {
    /// Messages published after the consumer was made (as core NATS).
    #[default]
    New,
    /// Everything the stream has.
    All,
    /// The last message of the stream, then what follows.
    Last,
    /// The last message of each subject, then what follows.
    LastPerSubject,
    /// From `deliver_start_time` on.
    ByStartTime,
    /// From stream sequence `deliver_start_sequence` on.
    ByStartSequence,
}

impl std::str::FromStr for DeliverFrom {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "new" => Ok(DeliverFrom::New),
            "all" => Ok(DeliverFrom::All),
            "last" => Ok(DeliverFrom::Last),
            "last_per_subject" => Ok(DeliverFrom::LastPerSubject),
            "by_start_time" => Ok(DeliverFrom::ByStartTime),
            "by_start_sequence" => Ok(DeliverFrom::ByStartSequence),
            _ => Err("expected \"new\", \"all\", \"last\", \"last_per_subject\", \"by_start_time\" or \"by_start_sequence\"".into()),
        }
    }
}

/// The default stream name template: a stream per first token of the topic.
pub const DEFAULT_STREAM: &str = "msight_{token}";

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(|s| redact_url(s)).collect();
        f.debug_struct("NatsConfig")
            .field("servers", &servers)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("nkeys_seed", &self.nkeys_seed)
            .field("user_jwt", &self.user_jwt)
            .field("user_credentials", &self.user_credentials)
            .field("tls", &self.tls)
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_verify", &self.tls_verify)
            .field("name", &self.name)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("max_reconnects", &self.max_reconnects)
            .field("reconnect_delay_max", &self.reconnect_delay_max)
            .field("ping_interval", &self.ping_interval)
            .field("mode", &self.mode)
            .field("stream", &self.stream)
            .field("stream_subjects", &self.stream_subjects)
            .field("stream_storage", &self.stream_storage)
            .field("stream_replicas", &self.stream_replicas)
            .field("stream_max_age", &self.stream_max_age)
            .field("stream_max_bytes", &self.stream_max_bytes)
            .field("stream_max_msgs", &self.stream_max_msgs)
            .field("stream_discard", &self.stream_discard)
            .field("consumer", &self.consumer)
            .field("deliver_policy", &self.deliver_policy)
            .field("deliver_start_time", &self.deliver_start_time)
            .field("deliver_start_sequence", &self.deliver_start_sequence)
            .field("fetch_batch", &self.fetch_batch)
            .field("fetch_max_bytes", &self.fetch_max_bytes)
            .field("publish_max_pending", &self.publish_max_pending)
            .field("publish_max_pending_bytes", &self.publish_max_pending_bytes)
            .field("publish_ack_timeout", &self.publish_ack_timeout)
            .finish()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://localhost:4222".to_string()],
            user: None,
            password: None,
            token: None,
            nkeys_seed: None,
            user_jwt: None,
            user_credentials: None,
            tls: false,
            tls_ca_cert: None,
            tls_cert: None,
            tls_key: None,
            tls_verify: true,
            name: None,
            subscription_capacity: 65_536,
            max_reconnects: None,
            reconnect_delay_max: Duration::from_secs(4),
            ping_interval: Duration::from_secs(30),
            mode: NatsMode::Core,
            stream: DEFAULT_STREAM.to_string(),
            stream_subjects: Vec::new(),
            stream_storage: None,
            stream_replicas: None,
            stream_max_age: None,
            stream_max_bytes: None,
            stream_max_msgs: None,
            stream_discard: None,
            consumer: None,
            deliver_policy: DeliverFrom::New,
            deliver_start_time: None,
            deliver_start_sequence: None,
            fetch_batch: 256,
            fetch_max_bytes: 8 << 20,
            publish_max_pending: 1024,
            publish_max_pending_bytes: 64 << 20,
            publish_ack_timeout: Duration::from_secs(10),
        }
    }
}

/// The environment variables of the NATS section, with the config key each sets.
pub const NATS_ENV: &[(&str, &str)] = &[
    ("MSIGHT_NATS_SERVERS", "nats.servers"),
    ("MSIGHT_NATS_USERNAME", "nats.user"),
    ("MSIGHT_NATS_PASSWORD", "nats.password"),
    ("MSIGHT_NATS_TOKEN", "nats.token"),
    ("MSIGHT_NATS_NKEY_SEED", "nats.nkeys_seed"),
    ("MSIGHT_NATS_USER_JWT", "nats.user_jwt"),
    ("MSIGHT_NATS_USER_CREDENTIALS", "nats.user_credentials"),
    ("MSIGHT_NATS_USE_TLS", "nats.tls"),
    ("MSIGHT_NATS_TLS_CA_CERT_FILE", "nats.tls_ca_cert"),
    ("MSIGHT_NATS_TLS_CERT_FILE", "nats.tls_cert"),
    ("MSIGHT_NATS_TLS_KEY_FILE", "nats.tls_key"),
    ("MSIGHT_NATS_TLS_VERIFY", "nats.tls_verify"),
    ("MSIGHT_NATS_MODE", "nats.mode"),
    ("MSIGHT_NATS_STREAM", "nats.stream"),
    ("MSIGHT_NATS_STREAM_SUBJECTS", "nats.stream_subjects"),
    ("MSIGHT_NATS_STREAM_STORAGE", "nats.stream_storage"),
    ("MSIGHT_NATS_STREAM_REPLICAS", "nats.stream_replicas"),
    ("MSIGHT_NATS_STREAM_MAX_AGE", "nats.stream_max_age"),
    ("MSIGHT_NATS_STREAM_MAX_BYTES", "nats.stream_max_bytes"),
    ("MSIGHT_NATS_STREAM_MAX_MSGS", "nats.stream_max_msgs"),
    ("MSIGHT_NATS_STREAM_DISCARD", "nats.stream_discard"),
    ("MSIGHT_NATS_CONSUMER", "nats.consumer"),
    ("MSIGHT_NATS_DELIVER_POLICY", "nats.deliver_policy"),
    ("MSIGHT_NATS_DELIVER_START_TIME", "nats.deliver_start_time"),
    (
        "MSIGHT_NATS_DELIVER_START_SEQUENCE",
        "nats.deliver_start_sequence",
    ),
];

impl Section for NatsConfig {
    const NAME: &'static str = "nats";
    const ENV: &'static [(&'static str, &'static str)] = NATS_ENV;

    /// Override fields from the `MSIGHT_NATS_*` variables (see [`NATS_ENV`]).
    fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
        let env = Env(source);
        env.list(
            "MSIGHT_NATS_SERVERS",
            &["nats://host:4222", "nats://other:4222"],
            &mut self.servers,
        )?;
        env.string("MSIGHT_NATS_USERNAME", &mut self.user);
        env.secret("MSIGHT_NATS_PASSWORD", &mut self.password);
        env.secret("MSIGHT_NATS_TOKEN", &mut self.token);
        env.secret("MSIGHT_NATS_NKEY_SEED", &mut self.nkeys_seed);
        env.secret("MSIGHT_NATS_USER_JWT", &mut self.user_jwt);
        env.path("MSIGHT_NATS_USER_CREDENTIALS", &mut self.user_credentials);
        env.bool("MSIGHT_NATS_USE_TLS", &mut self.tls)?;
        env.path("MSIGHT_NATS_TLS_CA_CERT_FILE", &mut self.tls_ca_cert);
        env.path("MSIGHT_NATS_TLS_CERT_FILE", &mut self.tls_cert);
        env.path("MSIGHT_NATS_TLS_KEY_FILE", &mut self.tls_key);
        env.bool("MSIGHT_NATS_TLS_VERIFY", &mut self.tls_verify)?;
        env.parse("MSIGHT_NATS_MODE", &mut self.mode)?;
        env.string_req("MSIGHT_NATS_STREAM", &mut self.stream);
        env.list(
            "MSIGHT_NATS_STREAM_SUBJECTS",
            &["events", "events.>"],
            &mut self.stream_subjects,
        )?;
        parse_opt(&env, "MSIGHT_NATS_STREAM_STORAGE", &mut self.stream_storage)?;
        parse_opt(
            &env,
            "MSIGHT_NATS_STREAM_REPLICAS",
            &mut self.stream_replicas,
        )?;
        if let Some(v) = source.var("MSIGHT_NATS_STREAM_MAX_AGE") {
            let v = v.trim();
            self.stream_max_age = Some(if v.eq_ignore_ascii_case("none") {
                Duration::ZERO
            } else {
                parse_duration("MSIGHT_NATS_STREAM_MAX_AGE", v)?
            });
        }
        parse_opt(
            &env,
            "MSIGHT_NATS_STREAM_MAX_BYTES",
            &mut self.stream_max_bytes,
        )?;
        parse_opt(
            &env,
            "MSIGHT_NATS_STREAM_MAX_MSGS",
            &mut self.stream_max_msgs,
        )?;
        parse_opt(&env, "MSIGHT_NATS_STREAM_DISCARD", &mut self.stream_discard)?;
        env.string("MSIGHT_NATS_CONSUMER", &mut self.consumer);
        env.parse("MSIGHT_NATS_DELIVER_POLICY", &mut self.deliver_policy)?;
        env.string(
            "MSIGHT_NATS_DELIVER_START_TIME",
            &mut self.deliver_start_time,
        );
        parse_opt(
            &env,
            "MSIGHT_NATS_DELIVER_START_SEQUENCE",
            &mut self.deliver_start_sequence,
        )?;
        Ok(())
    }

    /// Checks that need no network: at least one server, each a URL with a
    /// NATS scheme, credentials that go together, and settings in range.
    fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(Error::config(
                "nats.servers",
                "at least one server URL is required",
            ));
        }
        for (i, s) in self.servers.iter().enumerate() {
            validate_server_url(
                &format!("nats.servers[{i}]"),
                s,
                &["nats", "tls", "ws", "wss"],
            )?;
        }
        if self.password.is_some() && self.user.is_none() {
            return Err(Error::config(
                "nats.password",
                "a password needs a user (nats.user / MSIGHT_NATS_USERNAME)",
            ));
        }
        if self.user_jwt.is_some() && self.nkeys_seed.is_none() {
            return Err(Error::config(
                "nats.user_jwt",
                "a user JWT needs the NKey seed that signs it (nats.nkeys_seed / MSIGHT_NATS_NKEY_SEED)",
            ));
        }
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.nkeys_seed.is_some(),
            self.user_credentials.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if methods > 1 {
            return Err(Error::config(
                "nats",
                "choose one authentication method: user/password, token, nkeys_seed (optionally with user_jwt), or user_credentials",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let missing = if self.tls_cert.is_some() {
                "nats.tls_key"
            } else {
                "nats.tls_cert"
            };
            return Err(Error::config(
                missing,
                "mutual TLS needs both a client certificate (nats.tls_cert) and its key (nats.tls_key)",
            ));
        }
        if self.subscription_capacity == 0 {
            return Err(Error::config(
                "nats.subscription_capacity",
                "must be at least 1",
            ));
        }
        self.validate_jetstream()
    }
}

/// A variable parsed into an optional field by the field type's `FromStr`.
fn parse_opt<T: std::str::FromStr>(env: &Env<'_>, name: &str, field: &mut Option<T>) -> Result<()>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = env.0.var(name) {
        *field = Some(
            v.trim()
                .parse()
                .map_err(|e| Error::config(name, format!("{e} (got {:?})", v.trim())))?,
        );
    }
    Ok(())
}

/// Why `name` cannot be a JetStream stream or consumer name, if it cannot
/// (the server refuses `.`, `*`, `>`, whitespace, path separators and
/// control characters; names become file names, so 255 bytes at most).
pub(crate) fn bad_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 255 {
        Some("is longer than 255 bytes")
    } else if name
        .chars()
        .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control())
    {
        Some("has a character JetStream refuses in names ('.', '*', '>', '/', '\\', whitespace or a control character)")
    } else {
        None
    }
}

impl NatsConfig {
    /// The JetStream keys (checked in either mode: a file may switch modes).
    fn validate_jetstream(&self) -> Result<()> {
        let template = self.stream.replace("{token}", "t");
        if let Some(why) = bad_name(&template) {
            return Err(Error::config(
                "nats.stream",
                format!(
                    "{:?} {why}; use a name like \"EVENTS\" or a template like \"{DEFAULT_STREAM}\"",
                    self.stream
                ),
            ));
        }
        for (i, s) in self.stream_subjects.iter().enumerate() {
            let s = s.replace("{token}", "t");
            if crate::backend::check_subject(&s, false).is_err() {
                return Err(Error::config(
                    &format!("nats.stream_subjects[{i}]"),
                    format!(
                        "{:?} is not a NATS subject (dot-separated tokens, wildcards `*` and `>` as whole tokens, `>` last)",
                        self.stream_subjects[i]
                    ),
                ));
            }
        }
        if self.stream_replicas.is_some_and(|r| !(1..=5).contains(&r)) {
            return Err(Error::config(
                "nats.stream_replicas",
                format!(
                    "{} is not from 1 to 5 (JetStream keeps at most 5 copies)",
                    self.stream_replicas.unwrap_or_default()
                ),
            ));
        }
        for (key, v) in [
            ("nats.stream_max_bytes", self.stream_max_bytes),
            ("nats.stream_max_msgs", self.stream_max_msgs),
        ] {
            if v.is_some_and(|v| v > i64::MAX as u64) {
                return Err(Error::config(key, "is larger than JetStream can take"));
            }
        }
        if let Some(c) = &self.consumer {
            if let Some(why) = bad_name(c) {
                return Err(Error::config("nats.consumer", format!("{c:?} {why}")));
            }
        }
        match (self.deliver_policy, &self.deliver_start_time, self.deliver_start_sequence) {
            (DeliverFrom::ByStartTime, None, _) => {
                return Err(Error::config(
                    "nats.deliver_start_time",
                    "deliver_policy = \"by_start_time\" needs a start time (RFC 3339, e.g. \"2024-05-01T12:00:00Z\")",
                ))
            }
            (DeliverFrom::ByStartSequence, _, None | Some(0)) => {
                return Err(Error::config(
                    "nats.deliver_start_sequence",
                    "deliver_policy = \"by_start_sequence\" needs a stream sequence of 1 or more",
                ))
            }
            _ => {}
        }
        if let Some(t) = &self.deliver_start_time {
            if let Err(e) = async_nats::datetime::parse_rfc3339(t) {
                return Err(Error::config(
                    "nats.deliver_start_time",
                    format!("{t:?} is not an RFC 3339 time like \"2024-05-01T12:00:00Z\" ({e})"),
                ));
            }
        }
        for (key, v) in [
            ("nats.fetch_batch", self.fetch_batch),
            ("nats.fetch_max_bytes", self.fetch_max_bytes),
            ("nats.publish_max_pending", self.publish_max_pending),
            (
                "nats.publish_max_pending_bytes",
                self.publish_max_pending_bytes,
            ),
        ] {
            if v == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        if self.publish_ack_timeout < Duration::from_millis(100) {
            return Err(Error::config(
                "nats.publish_ack_timeout",
                "must be at least 100ms",
            ));
        }
        Ok(())
    }
}

/// Check that `url` parses as `scheme://host[:port]` (or `host:port`) with a
/// scheme from `schemes`. The error names `key` and shows the URL with any
/// password removed.
pub fn validate_server_url(key: &str, url: &str, schemes: &[&str]) -> Result<()> {
    let shown = redact_url(url);
    let expected = format!("expected a URL like \"{}://host:port\"", schemes[0]);
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !schemes.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Err(Error::config(
                    key,
                    format!(
                        "unknown URL scheme {scheme:?} in {shown:?}; use one of {}",
                        schemes.join(", ")
                    ),
                ));
            }
            rest
        }
        None => url,
    };
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(Error::config(key, format!("{expected}, got {shown:?}"))),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(Error::config(key, format!("{expected}, got {shown:?}")));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
            return Err(Error::config(
                key,
                format!("port {p:?} in {shown:?} is not a number from 1 to 65535"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_read() {
        let env = [
            (
                "MSIGHT_NATS_SERVERS",
                "['nats://s1:4222', 'nats://s2:4223']",
            ),
            ("MSIGHT_NATS_USERNAME", "alice"),
            ("MSIGHT_NATS_PASSWORD", "pw"),
            ("MSIGHT_NATS_TOKEN", "tok"),
            ("MSIGHT_NATS_NKEY_SEED", "SUseed"),
            ("MSIGHT_NATS_USER_JWT", "eyJ"),
            ("MSIGHT_NATS_USER_CREDENTIALS", "/etc/u.creds"),
            ("MSIGHT_NATS_USE_TLS", "Yes"),
            ("MSIGHT_NATS_TLS_CA_CERT_FILE", "/ca.pem"),
            ("MSIGHT_NATS_TLS_CERT_FILE", "/c.pem"),
            ("MSIGHT_NATS_TLS_KEY_FILE", "/k.pem"),
            ("MSIGHT_NATS_TLS_VERIFY", "false"),
        ];
        let mut c = NatsConfig::default();
        c.apply_env(&env).unwrap();
        assert_eq!(c.servers, ["nats://s1:4222", "nats://s2:4223"]);
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "pw");
        assert_eq!(c.token.as_ref().unwrap().expose(), "tok");
        assert_eq!(c.nkeys_seed.as_ref().unwrap().expose(), "SUseed");
        assert_eq!(c.user_jwt.as_ref().unwrap().expose(), "eyJ");
        assert_eq!(c.user_credentials, Some(PathBuf::from("/etc/u.creds")));
        assert!(c.tls);
        assert_eq!(c.tls_ca_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/k.pem")));
        assert!(!c.tls_verify);
        assert_eq!(NATS_ENV.len(), 25);
    }

    #[test]
    fn defaults_match_the_python_original() {
        let mut c = NatsConfig::default();
        c.apply_env(&[("UNRELATED", "x")]).unwrap();
        assert_eq!(c.servers, ["nats://localhost:4222"]);
        assert!(!c.tls);
        assert!(c.tls_verify);
        c.validate().unwrap();
    }

    #[test]
    fn malformed_variables_name_themselves() {
        for (var, value, fragment) in [
            (
                "MSIGHT_NATS_SERVERS",
                "['nats://a:1'",
                "Python list literal",
            ),
            ("MSIGHT_NATS_SERVERS", "[]", "comma-separated"),
            ("MSIGHT_NATS_USE_TLS", "sure", "expected true/false"),
            ("MSIGHT_NATS_TLS_VERIFY", "2", "expected true/false"),
        ] {
            let mut c = NatsConfig::default();
            let e = c.apply_env(&[(var, value)]).unwrap_err();
            assert_eq!(e.kind(), pubsub_core::ErrorKind::InvalidConfig);
            let msg = e.to_string();
            assert!(msg.contains(var) && msg.contains(fragment), "{msg}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let cases: Vec<(NatsConfig, &str)> = vec![
            (
                NatsConfig {
                    servers: vec![],
                    ..Default::default()
                },
                "nats.servers",
            ),
            (
                NatsConfig {
                    servers: vec!["nats://a:4222".into(), "http://b:4222".into()],
                    ..Default::default()
                },
                "nats.servers[1]: unknown URL scheme \"http\"",
            ),
            (
                NatsConfig {
                    servers: vec!["nats://a:notaport".into()],
                    ..Default::default()
                },
                "nats.servers[0]: port \"notaport\"",
            ),
            (
                NatsConfig {
                    servers: vec!["nats://:4222".into()],
                    ..Default::default()
                },
                "nats.servers[0]: expected a URL",
            ),
            (
                NatsConfig {
                    password: Some(Secret::new("p")),
                    ..Default::default()
                },
                "nats.password",
            ),
            (
                NatsConfig {
                    user_jwt: Some(Secret::new("j")),
                    ..Default::default()
                },
                "nats.user_jwt",
            ),
            (
                NatsConfig {
                    tls_cert: Some("/c".into()),
                    ..Default::default()
                },
                "nats.tls_key",
            ),
            (
                NatsConfig {
                    token: Some(Secret::new("t")),
                    user: Some("u".into()),
                    ..Default::default()
                },
                "choose one authentication method",
            ),
        ];
        for (c, fragment) in cases {
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains(fragment), "{e}");
        }
    }

    #[test]
    fn url_validation_accepts_the_forms_nats_accepts() {
        for u in [
            "nats://127.0.0.1:4222",
            "tls://host:4443",
            "localhost:4222",
            "nats://user:pw@host:4222",
            "nats://[::1]:4222",
            "nats://host",
            "ws://host:8080/path",
        ] {
            validate_server_url("k", u, &["nats", "tls", "ws", "wss"]).unwrap();
        }
        let e = validate_server_url("k", "nats://user:hunter2@host:99999", &["nats"]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let c = NatsConfig {
            servers: vec!["nats://u:hunter2@h:1".into()],
            ..Default::default()
        };
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(
            !shown.contains("hunter2") && shown.contains("u:***@h:1"),
            "{shown}"
        );
    }

    #[test]
    fn the_document_reads_the_nats_section() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "backend = \"nats\"\n[nats]\nservers = [\"nats://f:4222\"]\nuser = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        // Loaded before the backend is registered: read when asked for.
        let c = pubsub_core::Config::loader()
            .file(&f)
            .env([("MSIGHT_NATS_SERVERS", "nats://e:1,nats://e:2")])
            .load()
            .unwrap();
        let nats = c.section::<NatsConfig>().unwrap();
        assert_eq!(nats.servers, ["nats://e:1", "nats://e:2"]);
        assert_eq!(nats.user.as_deref(), Some("u"));
        crate::register();
        // Registered: the same result, and its mistakes show at load.
        let c = pubsub_core::Config::loader()
            .file(&f)
            .env([("MSIGHT_NATS_SERVERS", "nats://e:1,nats://e:2")])
            .load()
            .unwrap();
        assert_eq!(c.section::<NatsConfig>().unwrap(), nats);
        let e = pubsub_core::Config::loader()
            .file(&f)
            .env([("MSIGHT_NATS_SERVERS", "['a'")])
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("MSIGHT_NATS_SERVERS"), "{e}");
        std::fs::write(&f, "[nats]\nserver = [\"nats://a:1\"]\n").unwrap();
        let msg = pubsub_core::Config::from_file(&f).unwrap_err().to_string();
        assert!(msg.contains("c.toml") && msg.contains("server"), "{msg}");
    }

    #[test]
    fn secrets_are_redacted_in_the_whole_config() {
        let mut c = pubsub_core::Config::default();
        let nats = c.section_mut::<NatsConfig>().unwrap();
        nats.user = Some("alice".into());
        nats.password = Some(Secret::new("hunter2-marker"));
        nats.token = Some(Secret::new("token-marker"));
        let dbg = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for out in [&dbg, &json] {
            assert!(
                !out.contains("hunter2-marker") && !out.contains("token-marker"),
                "{out}"
            );
            assert!(out.contains("<redacted>") && out.contains("alice"), "{out}");
        }
    }
}
