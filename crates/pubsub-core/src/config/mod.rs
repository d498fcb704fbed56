//! Configuration: one document with the chosen `backend`, the `group_id`,
//! common settings, and one section per backend.
//!
//! Sources, weakest first: defaults, an optional file (TOML, YAML or JSON,
//! chosen by extension), then environment variables (the `MSIGHT_*` names of
//! the Python original, plus `MSIGHT_PUBSUB_*` for settings it did not have).
//!
//! ```
//! use pubsub_core::Config;
//! let config = Config::loader()
//!     .env([("MSIGHT_PUBSUB_BACKEND", "nats"), ("MSIGHT_NATS_SERVERS", "['nats://a:4222', 'nats://b:4222']")])
//!     .load()?;
//! assert_eq!(config.backend, "nats");
//! assert_eq!(config.nats.servers.len(), 2);
//! # Ok::<(), pubsub_core::Error>(())
//! ```

pub mod env;
mod mqtt;
mod nats;
mod redis;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use env::{EnvSource, ProcessEnv};
pub use mqtt::{MqttBroker, MqttConfig, MQTT_ENV, MQTT_MAX_PACKET_SIZE, MQTT_PACKET_OVERHEAD};
pub use nats::{validate_server_url, NatsConfig, NATS_ENV};
pub use redis::{parse_node, RedisConfig, RedisMode, REDIS_ENV};

use crate::error::{Error, Result};
use env::Env;

/// A secret string (password, token, seed, JWT). Its `Debug`, `Display` and
/// `Serialize` output is `"<redacted>"`; [`Secret::expose`] gives the value.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself; pass it to the client library, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// `url` with the password of any `user:password@` part replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{user}:***@{host}")
            } else {
                format!("***@{host}")
            }
        }
        None => authority.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// Serialise an optional URL with its password replaced by `***`.
pub fn serialize_redacted_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&redact_url(u)),
        None => s.serialize_none(),
    }
}

/// `text` (for example a malformed list of addresses, echoed in an error)
/// with the credentials of every `user:password@` or `token@` part replaced
/// by `***`. The credentials of a part start after its `scheme://`, or else
/// after the last quote, bracket, comma or whitespace before its `@`.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        let start = match before.rfind("://") {
            Some(i) => i + 3,
            // Past the whole separator: it may be a multi-byte whitespace.
            None => before
                .char_indices()
                .rev()
                .find(|(_, c)| matches!(c, '\'' | '"' | '[' | ',') || c.is_whitespace())
                .map(|(i, c)| i + c.len_utf8())
                .unwrap_or(0),
        };
        let userinfo = &before[start..];
        out.push_str(&before[..start]);
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***");
            }
            None => out.push_str("***"),
        }
        out.push('@');
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out
}

/// Serialise a list of URLs with passwords replaced by `***`.
pub fn serialize_redacted_urls<S: serde::Serializer>(
    urls: &[String],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact_url(u)))
}

/// What happens when messages arrive faster than the application takes them
/// and the receive buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Drop the oldest buffered message to make room (the freshest data wins;
    /// right for sensor streams). Dropped messages are counted.
    #[default]
    DropOldest,
    /// Drop the arriving message. Dropped messages are counted.
    DropNewest,
    /// Stop reading from the broker until there is room. Nothing is dropped
    /// by our buffer; what the broker or its client does when the backlog
    /// grows is backend-specific (NATS: the client drops and we count it).
    Block,
}

impl std::str::FromStr for OverflowPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "drop_oldest" => Ok(OverflowPolicy::DropOldest),
            "drop_newest" => Ok(OverflowPolicy::DropNewest),
            "block" => Ok(OverflowPolicy::Block),
            _ => Err("expected drop_oldest, drop_newest or block".into()),
        }
    }
}

/// The bounded buffer between the broker client and `listen()` / the message stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// Most messages held (default 10,000).
    pub capacity: usize,
    /// Most payload bytes held (default 64 MiB).
    pub max_bytes: usize,
    /// What to do when either bound is reached.
    pub overflow: OverflowPolicy,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            capacity: 10_000,
            max_bytes: 64 * 1024 * 1024,
            overflow: OverflowPolicy::DropOldest,
        }
    }
}

/// Settings of the in-process `memory` backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Handles with the same namespace in one process see each other's messages.
    pub namespace: String,
    /// Largest payload accepted (default 8 MiB).
    pub max_payload: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            namespace: "default".to_string(),
            max_payload: 8 * 1024 * 1024,
        }
    }
}

/// The whole configuration document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Backend name: `memory` (default), `nats`, `redis`, `mqtt`.
    pub backend: String,
    /// Group of this node: subscribers of one group share the messages.
    pub group_id: Option<String>,
    /// Limit for connecting (default 5 s).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit for the calls that wait for the broker: `subscribe`,
    /// `unsubscribe`, `flush` and `close` (default 10 s).
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Limit for one `publish` to be accepted by the client (default 5 s).
    /// Publishing normally returns at once; it waits only when the client's
    /// queue is full, e.g. while the broker is unreachable.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// The receive buffer.
    pub buffer: BufferConfig,
    /// `[memory]` section.
    pub memory: MemoryConfig,
    /// `[nats]` section.
    pub nats: NatsConfig,
    /// `[redis]` section.
    pub redis: RedisConfig,
    /// `[mqtt]` section.
    pub mqtt: MqttConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: "memory".to_string(),
            group_id: None,
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(5),
            buffer: BufferConfig::default(),
            memory: MemoryConfig::default(),
            nats: NatsConfig::default(),
            redis: RedisConfig::default(),
            mqtt: MqttConfig::default(),
        }
    }
}

/// The common environment variables, with the config key each sets.
pub const PUBSUB_ENV: &[(&str, &str)] = &[
    ("MSIGHT_PUBSUB_CONFIG", "(path of the config file)"),
    ("MSIGHT_PUBSUB_BACKEND", "backend"),
    ("MSIGHT_PUBSUB_GROUP_ID", "group_id"),
    ("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "connect_timeout"),
    ("MSIGHT_PUBSUB_CLOSE_TIMEOUT", "close_timeout"),
    ("MSIGHT_PUBSUB_PUBLISH_TIMEOUT", "publish_timeout"),
    ("MSIGHT_PUBSUB_BUFFER_CAPACITY", "buffer.capacity"),
    ("MSIGHT_PUBSUB_BUFFER_MAX_BYTES", "buffer.max_bytes"),
    ("MSIGHT_PUBSUB_OVERFLOW", "buffer.overflow"),
];

impl Config {
    /// Defaults, then the file named by `MSIGHT_PUBSUB_CONFIG` if set, then
    /// the process environment.
    pub fn load() -> Result<Config> {
        Config::loader().load()
    }

    /// The Python original's `get_nats_config(group_id)`, for any backend:
    /// defaults, then the `MSIGHT_*` environment variables (not the
    /// `MSIGHT_PUBSUB_CONFIG` file), with `backend` and the given group,
    /// checked. Each backend crate's `get_<name>_config` calls this.
    pub fn from_env_for(backend: &str, group_id: Option<&str>) -> Result<Config> {
        let mut config = Config::loader().no_default_file().load()?;
        config.backend = backend.to_string();
        if let Some(g) = group_id {
            config.group_id = Some(g.to_string());
        }
        config.validate()?;
        Ok(config)
    }

    /// A loader to choose the file and the environment explicitly.
    pub fn loader() -> ConfigLoader {
        ConfigLoader::default()
    }

    /// Defaults and the given file only (no environment).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        Config::loader().file(path).no_env().load()
    }

    /// Override fields from environment variables: the common
    /// `MSIGHT_PUBSUB_*` ones ([`PUBSUB_ENV`]) and each backend section's.
    pub fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
        let env = Env(source);
        env.string_req("MSIGHT_PUBSUB_BACKEND", &mut self.backend);
        env.string("MSIGHT_PUBSUB_GROUP_ID", &mut self.group_id);
        env.duration("MSIGHT_PUBSUB_CONNECT_TIMEOUT", &mut self.connect_timeout)?;
        env.duration("MSIGHT_PUBSUB_CLOSE_TIMEOUT", &mut self.close_timeout)?;
        env.duration("MSIGHT_PUBSUB_PUBLISH_TIMEOUT", &mut self.publish_timeout)?;
        env.number("MSIGHT_PUBSUB_BUFFER_CAPACITY", &mut self.buffer.capacity)?;
        env.number("MSIGHT_PUBSUB_BUFFER_MAX_BYTES", &mut self.buffer.max_bytes)?;
        env.parse("MSIGHT_PUBSUB_OVERFLOW", &mut self.buffer.overflow)?;
        self.nats.apply_env(source)?;
        self.redis.apply_env(source)?;
        self.mqtt.apply_env(source)?;
        Ok(())
    }

    /// Checks of the common settings that need no network. Each backend
    /// checks its own section when it connects.
    pub fn validate(&self) -> Result<()> {
        if self.backend.trim().is_empty() {
            return Err(Error::config("backend", "must not be empty"));
        }
        if let Some(g) = &self.group_id {
            if g.is_empty() || g.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::config(
                    "group_id",
                    format!("{g:?} must be non-empty, without whitespace or control characters"),
                ));
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config("connect_timeout", "must be more than zero"));
        }
        if self.close_timeout.is_zero() {
            return Err(Error::config("close_timeout", "must be more than zero"));
        }
        if self.publish_timeout.is_zero() {
            return Err(Error::config("publish_timeout", "must be more than zero"));
        }
        if self.buffer.capacity == 0 {
            return Err(Error::config("buffer.capacity", "must be at least 1"));
        }
        if self.buffer.max_bytes == 0 {
            return Err(Error::config("buffer.max_bytes", "must be at least 1"));
        }
        Ok(())
    }
}

/// Builds a [`Config`] from defaults, an optional file and the environment.
#[derive(Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    no_file_from_env: bool,
    env: Option<Box<dyn EnvSource>>,
    no_env: bool,
}

impl fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("file", &self.file)
            .field("custom_env", &self.env.is_some())
            .field("no_env", &self.no_env)
            .finish()
    }
}

impl ConfigLoader {
    /// Read this file (TOML, YAML or JSON, by extension) instead of `MSIGHT_PUBSUB_CONFIG`.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Do not read a file named by `MSIGHT_PUBSUB_CONFIG`.
    pub fn no_default_file(mut self) -> Self {
        self.no_file_from_env = true;
        self
    }

    /// Read variables from `source` instead of the process environment.
    pub fn env(mut self, source: impl EnvSource + 'static) -> Self {
        self.env = Some(Box::new(source));
        self
    }

    /// Ignore environment variables (also `MSIGHT_PUBSUB_CONFIG`).
    pub fn no_env(mut self) -> Self {
        self.no_env = true;
        self
    }

    /// Load and validate.
    pub fn load(self) -> Result<Config> {
        let process = ProcessEnv;
        let source: &dyn EnvSource = match &self.env {
            Some(s) => s.as_ref(),
            None => &process,
        };
        let file = match (&self.file, self.no_env || self.no_file_from_env) {
            (Some(f), _) => Some(f.clone()),
            (None, false) => source.var("MSIGHT_PUBSUB_CONFIG").map(PathBuf::from),
            (None, true) => None,
        };
        let mut config = match &file {
            Some(path) => read_file(path)?,
            None => Config::default(),
        };
        if !self.no_env {
            config.apply_env(source)?;
        }
        config.validate()?;
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<Config> {
    let shown = path.display();
    if !path.is_file() {
        return Err(Error::config(
            "config file",
            format!("{shown} does not exist or is not a file"),
        ));
    }
    let format = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) if e == "toml" => config::FileFormat::Toml,
        Some(e) if e == "yaml" || e == "yml" => config::FileFormat::Yaml,
        Some(e) if e == "json" => config::FileFormat::Json,
        _ => {
            return Err(Error::config(
                "config file",
                format!("{shown}: unknown format; use a .toml, .yaml, .yml or .json file"),
            ))
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config("config file", format!("cannot read {shown}: {e}")))?;
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, format))
        .build()
        .map_err(|e| Error::config("config file", format!("{shown}: {e}")))?;
    built
        .try_deserialize::<Config>()
        .map_err(|e| Error::config("config file", format!("{shown}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_then_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            &dir,
            "c.toml",
            "backend = \"nats\"\ngroup_id = \"g1\"\nconnect_timeout = \"2s\"\n[nats]\nservers = [\"nats://f:4222\"]\nuser = \"u\"\npassword = \"p\"\n[buffer]\noverflow = \"drop_newest\"\n",
        );
        let c = Config::loader().file(&f).no_env().load().unwrap();
        assert_eq!(c.backend, "nats");
        assert_eq!(c.group_id.as_deref(), Some("g1"));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.nats.servers, ["nats://f:4222"]);
        assert_eq!(c.buffer.overflow, OverflowPolicy::DropNewest);
        assert_eq!(c.buffer.capacity, 10_000);

        let c = Config::loader()
            .file(&f)
            .env([
                ("MSIGHT_NATS_SERVERS", "nats://e:1,nats://e:2"),
                ("MSIGHT_PUBSUB_GROUP_ID", "g2"),
                ("MSIGHT_PUBSUB_OVERFLOW", "block"),
            ])
            .load()
            .unwrap();
        assert_eq!(c.nats.servers, ["nats://e:1", "nats://e:2"]);
        assert_eq!(c.group_id.as_deref(), Some("g2"));
        assert_eq!(c.buffer.overflow, OverflowPolicy::Block);
        assert_eq!(c.nats.user.as_deref(), Some("u"));
    }

    #[test]
    fn file_from_msight_pubsub_config_in_yaml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let y = write(&dir, "c.yaml", "backend: nats\nnats:\n  tls: true\n");
        let c = Config::loader()
            .env(std::collections::HashMap::from([(
                "MSIGHT_PUBSUB_CONFIG".to_string(),
                y.to_str().unwrap().to_string(),
            )]))
            .load()
            .unwrap();
        assert!(c.nats.tls);
        let j = write(&dir, "c.json", r#"{"buffer": {"capacity": 5}}"#);
        assert_eq!(Config::from_file(&j).unwrap().buffer.capacity, 5);
    }

    #[test]
    fn file_errors_give_file_and_line_or_key() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(&dir, "bad.toml", "backend = \"nats\"\n[nats\nservers = 1\n");
        let e = Config::from_file(&bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let msg = e.to_string();
        assert!(msg.contains("bad.toml") && msg.contains("line 2"), "{msg}");

        let wrong_type = write(&dir, "t.toml", "[buffer]\ncapacity = \"many\"\n");
        let msg = Config::from_file(&wrong_type).unwrap_err().to_string();
        assert!(msg.contains("t.toml") && msg.contains("capacity"), "{msg}");

        let unknown = write(&dir, "u.toml", "[nats]\nserver = [\"nats://a:1\"]\n");
        let msg = Config::from_file(&unknown).unwrap_err().to_string();
        assert!(msg.contains("server"), "{msg}");

        let msg = Config::from_file(dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("missing.toml") && msg.contains("does not exist"),
            "{msg}"
        );

        let ini = write(&dir, "c.ini", "x=1");
        assert!(Config::from_file(&ini)
            .unwrap_err()
            .to_string()
            .contains("unknown format"));
    }

    #[test]
    fn env_errors_name_the_variable() {
        for (var, value) in [
            ("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "soon"),
            ("MSIGHT_PUBSUB_BUFFER_CAPACITY", "lots"),
            ("MSIGHT_PUBSUB_OVERFLOW", "explode"),
            ("MSIGHT_NATS_SERVERS", "['a'"),
        ] {
            let e = Config::loader().env([(var, value)]).load().unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
        let e = Config::loader()
            .env([("MSIGHT_PUBSUB_BUFFER_CAPACITY", "0")])
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("buffer.capacity"), "{e}");
        let e = Config::loader()
            .env([("MSIGHT_PUBSUB_GROUP_ID", "a b")])
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("group_id"), "{e}");
    }

    #[test]
    fn redact_userinfo_handles_multibyte_separators() {
        // U+00A0 (no-break space) is whitespace of two bytes.
        assert_eq!(redact_userinfo("a\u{a0}u:pw@h"), "a\u{a0}u:***@h");
        assert_eq!(redact_userinfo("K <x\u{a0}tok@h:1"), "K <x\u{a0}***@h:1");
        assert_eq!(
            redact_userinfo("['u:p@h:1', 't@g:2']"),
            "['u:***@h:1', '***@g:2']"
        );
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let mut c = Config::default();
        c.nats.user = Some("alice".into());
        c.nats.password = Some(Secret::new("hunter2-marker"));
        c.nats.token = Some(Secret::new("token-marker"));
        let dbg = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for out in [&dbg, &json] {
            assert!(
                !out.contains("hunter2-marker") && !out.contains("token-marker"),
                "{out}"
            );
            assert!(out.contains("<redacted>"));
        }
        assert_eq!(
            redact_url("nats://bob:pw@h:4222/x"),
            "nats://bob:***@h:4222/x"
        );
        assert_eq!(redact_url("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("h:4222"), "h:4222");
    }

    #[test]
    fn redact_userinfo_in_free_text() {
        for (text, want) in [
            (
                "['nats://u:pw1@a:1', 'nats://tok2@b:2']",
                "['nats://u:***@a:1', 'nats://***@b:2']",
            ),
            ("u:pw3@h:1,,x", "u:***@h:1,,x"),
            ("got \"redis://:pw4@h:1\"", "got \"redis://:***@h:1\""),
            ("no credentials here", "no credentials here"),
            ("a:b@c@d", "a:***@***@d"),
        ] {
            assert_eq!(redact_userinfo(text), want, "{text}");
        }
    }
}
