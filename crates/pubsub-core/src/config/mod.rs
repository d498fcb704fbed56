//! Configuration: one document with the chosen `backend`, the `group_id`,
//! the common settings, and one section per backend.
//!
//! Sources, weakest first: defaults, an optional file (TOML, YAML or JSON,
//! chosen by extension), then environment variables (the `MSIGHT_*` names of
//! the Python original, plus `MSIGHT_PUBSUB_*` for settings it did not have).
//!
//! Core owns the common settings; each backend crate owns its section
//! (`[nats]` is `pubsub_nats::NatsConfig`), a type that implements
//! [`Section`], read with [`Config::section`]. One file serves every node
//! of a deployment: the table of a backend this program does not link is
//! kept and ignored.
//!
//! ```
//! use pubsub_core::{Config, MemoryConfig};
//! let config = Config::loader()
//!     .env([("MSIGHT_PUBSUB_BACKEND", "nats"), ("MSIGHT_PUBSUB_GROUP_ID", "cameras")])
//!     .load()?;
//! assert_eq!(config.backend, "nats");
//! assert_eq!(config.group_id.as_deref(), Some("cameras"));
//! assert_eq!(config.section::<MemoryConfig>()?.namespace, "default");
//! # Ok::<(), pubsub_core::Error>(())
//! ```

pub mod duration;
pub mod env;
mod secret;
mod section;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use env::{Env, EnvSource, ProcessEnv};
pub use secret::{
    redact_url, redact_userinfo, serialize_redacted_url, serialize_redacted_urls, Secret,
};
pub(crate) use section::Sections;
pub use section::{Section, SectionType};

use crate::backend::Backend;
use crate::codec::Format;
use crate::error::{Error, Result};
use section::AnySection;

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

/// Who settles a received message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// A message counts as handled when the application takes it (the
    /// Python original's behaviour). A process that dies while handling it
    /// loses it.
    #[default]
    Auto,
    /// The application settles each message ([`crate::Message::ack`],
    /// `nak`, `term`); one not settled within `ack_wait` is delivered again.
    Manual,
}

impl std::str::FromStr for AckMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(AckMode::Auto),
            "manual" => Ok(AckMode::Manual),
            _ => Err("expected \"auto\" or \"manual\"".into()),
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

/// The whole configuration document: the common settings as fields, the
/// backend sections through [`Config::section`].
#[derive(Clone)]
pub struct Config {
    /// Backend name: `memory` (default), `nats`, `redis`, `mqtt`, or any
    /// registered one.
    pub backend: String,
    /// Group of this node: subscribers of one group share the messages.
    pub group_id: Option<String>,
    /// Limit for connecting (default 5 s).
    pub connect_timeout: Duration,
    /// Limit for the calls that wait for the broker: `subscribe`,
    /// `unsubscribe`, `flush` and `close` (default 10 s).
    pub close_timeout: Duration,
    /// Limit for one `publish` to be accepted by the client (default 5 s).
    /// Publishing normally returns at once; it waits only when the client's
    /// queue is full, e.g. while the broker is unreachable.
    pub publish_timeout: Duration,
    /// The receive buffer.
    pub buffer: BufferConfig,
    /// Who settles received messages: `auto` (default) or `manual`.
    pub ack: AckMode,
    /// Manual ack: a message not settled within this is delivered again
    /// (default 30 s).
    pub ack_wait: Duration,
    /// Manual ack: the most deliveries of one message (default 5); past
    /// them it goes to the dead letter. Never unbounded, so that a message
    /// that always fails cannot be redelivered forever.
    pub max_deliver: u32,
    /// Manual ack: where messages go after `max_deliver` attempts or
    /// `term`, with headers giving the reason, the original topic, the
    /// attempts and the broker id. None (default): they are discarded,
    /// counted and logged.
    pub dead_letter_topic: Option<String>,
    /// Manual ack: the most unsettled messages one handle holds (default
    /// 1,000); the backend stops fetching there.
    pub max_in_flight: usize,
    /// Manual ack: the most payload bytes of unsettled messages one handle
    /// holds (default 64 MiB).
    pub max_in_flight_bytes: usize,
    /// The codec of [`PubSub::publish_value`](crate::PubSub::publish_value)
    /// and [`PubSub::codec`](crate::PubSub::codec) (default MessagePack, the
    /// format of the Python nodes). A codec whose cargo feature is off is an
    /// `Unsupported` error when used.
    pub codec: Format,
    sections: Sections,
}

/// The common keys of a document, as a file writes them.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Common {
    backend: String,
    group_id: Option<String>,
    #[serde(with = "duration")]
    connect_timeout: Duration,
    #[serde(with = "duration")]
    close_timeout: Duration,
    #[serde(with = "duration")]
    publish_timeout: Duration,
    buffer: BufferConfig,
    ack: AckMode,
    #[serde(with = "duration")]
    ack_wait: Duration,
    max_deliver: u32,
    dead_letter_topic: Option<String>,
    max_in_flight: usize,
    max_in_flight_bytes: usize,
    codec: Format,
}

/// Top-level keys that are common settings, not backend sections.
const COMMON_KEYS: &[&str] = &[
    "backend",
    "group_id",
    "connect_timeout",
    "close_timeout",
    "publish_timeout",
    "buffer",
    "ack",
    "ack_wait",
    "max_deliver",
    "dead_letter_topic",
    "max_in_flight",
    "max_in_flight_bytes",
    "codec",
];

impl Default for Common {
    fn default() -> Self {
        Common {
            backend: "memory".to_string(),
            group_id: None,
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(5),
            buffer: BufferConfig::default(),
            ack: AckMode::Auto,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            dead_letter_topic: None,
            max_in_flight: 1000,
            max_in_flight_bytes: 64 * 1024 * 1024,
            codec: Format::default(),
        }
    }
}

impl Config {
    fn from_common(c: Common, sections: Sections) -> Config {
        Config {
            backend: c.backend,
            group_id: c.group_id,
            connect_timeout: c.connect_timeout,
            close_timeout: c.close_timeout,
            publish_timeout: c.publish_timeout,
            buffer: c.buffer,
            ack: c.ack,
            ack_wait: c.ack_wait,
            max_deliver: c.max_deliver,
            dead_letter_topic: c.dead_letter_topic,
            max_in_flight: c.max_in_flight,
            max_in_flight_bytes: c.max_in_flight_bytes,
            codec: c.codec,
            sections,
        }
    }

    /// A document (the tables of a file, or what `Deserialize` was given):
    /// the common keys are read strictly, every other table is a section.
    fn from_document(
        doc: BTreeMap<String, config::Value>,
        origin: Option<String>,
    ) -> Result<Config> {
        let mut sections = Sections {
            origin,
            ..Sections::default()
        };
        let mut common = config::Map::new();
        for (key, value) in doc {
            let is_table = matches!(value.kind, config::ValueKind::Table(_));
            if COMMON_KEYS.contains(&key.as_str()) || !is_table {
                common.insert(key, value);
            } else {
                sections.raw.insert(key, value);
            }
        }
        let common: Common = config::Value::new(None, config::ValueKind::Table(common))
            .try_deserialize()
            .map_err(|e| sections.document_error(e))?;
        Ok(Config::from_common(common, sections))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_common(Common::default(), Sections::default())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("backend", &self.backend)
            .field("group_id", &self.group_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("buffer", &self.buffer)
            .field("ack", &self.ack)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .field("codec", &self.codec)
            .field("sections", &self.sections)
            .finish()
    }
}

/// The document as it is written out: common settings, then the section of
/// every registered backend and every section set in code, by name.
/// Secrets are redacted (each section's `Serialize` does it). Tables of
/// backends this program does not link are left out: only their section
/// type knows which of their values are secret. [`Config::view`] writes
/// fewer sections.
impl Serialize for Config {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.view(None)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

/// The document with some of its sections, as [`Config::view`] makes it:
/// `Serialize` writes the common settings, then those sections by name.
pub struct ConfigView<'a> {
    config: &'a Config,
    sections: BTreeMap<&'static str, Box<dyn AnySection>>,
}

impl fmt::Debug for ConfigView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigView")
            .field("backend", &self.config.backend)
            .field("sections", &self.sections.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Serialize for ConfigView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            backend: &'a str,
            group_id: &'a Option<String>,
            #[serde(with = "humantime_serde")]
            connect_timeout: Duration,
            #[serde(with = "humantime_serde")]
            close_timeout: Duration,
            #[serde(with = "humantime_serde")]
            publish_timeout: Duration,
            buffer: &'a BufferConfig,
            ack: AckMode,
            #[serde(with = "humantime_serde")]
            ack_wait: Duration,
            max_deliver: u32,
            dead_letter_topic: &'a Option<String>,
            max_in_flight: usize,
            max_in_flight_bytes: usize,
            codec: Format,
            #[serde(flatten)]
            sections: &'a BTreeMap<&'static str, Box<dyn AnySection>>,
        }
        let c = self.config;
        View {
            backend: &c.backend,
            group_id: &c.group_id,
            connect_timeout: c.connect_timeout,
            close_timeout: c.close_timeout,
            publish_timeout: c.publish_timeout,
            buffer: &c.buffer,
            ack: c.ack,
            ack_wait: c.ack_wait,
            max_deliver: c.max_deliver,
            dead_letter_topic: &c.dead_letter_topic,
            max_in_flight: c.max_in_flight,
            max_in_flight_bytes: c.max_in_flight_bytes,
            codec: c.codec,
            sections: &self.sections,
        }
        .serialize(s)
    }
}

/// Read as a file is: the common keys strictly, every other table a
/// section, read by its type when asked for. No environment is applied.
impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let doc = BTreeMap::<String, config::Value>::deserialize(d)?;
        Config::from_document(doc, None).map_err(serde::de::Error::custom)
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
    ("MSIGHT_PUBSUB_ACK", "ack"),
    ("MSIGHT_PUBSUB_ACK_WAIT", "ack_wait"),
    ("MSIGHT_PUBSUB_MAX_DELIVER", "max_deliver"),
    ("MSIGHT_PUBSUB_DEAD_LETTER_TOPIC", "dead_letter_topic"),
    ("MSIGHT_PUBSUB_MAX_IN_FLIGHT", "max_in_flight"),
    ("MSIGHT_PUBSUB_MAX_IN_FLIGHT_BYTES", "max_in_flight_bytes"),
    ("MSIGHT_PUBSUB_CODEC", "codec"),
];

impl Config {
    /// Defaults, then the file named by `MSIGHT_PUBSUB_CONFIG` if set, then
    /// the process environment.
    pub fn load() -> Result<Config> {
        Config::loader().load()
    }

    /// The Python original's `get_nats_config(group_id)`, for any backend
    /// `B`: defaults, then the `MSIGHT_*` environment variables (not the
    /// `MSIGHT_PUBSUB_CONFIG` file), with `backend = B::NAME` and the given
    /// group; the common settings and `B`'s section checked. Each backend
    /// crate's `get_<name>_config` is this.
    pub fn from_env_for<B: Backend>(group_id: Option<&str>) -> Result<Config> {
        let mut config = Config::loader().no_default_file().load()?;
        config.backend = B::NAME.to_string();
        if let Some(g) = group_id {
            config.group_id = Some(g.to_string());
        }
        config.validate()?;
        config.section_mut::<B::Config>()?.validate()?;
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

    /// Section `T` (`[nats]` for `pubsub_nats::NatsConfig`): as set in code,
    /// else its table of the document, then the environment the document
    /// was loaded with, over its defaults. Not validated: the backend does
    /// that when it connects ([`Section::validate`]).
    ///
    /// Fails when the table has a key `T` does not know or a value of the
    /// wrong type (naming the key and the file), or when one of its
    /// environment variables is malformed (naming the variable).
    pub fn section<T: Section>(&self) -> Result<T> {
        self.sections.read::<T>()
    }

    /// Section `T`, to change in code (read first as by
    /// [`Config::section`]). What is set here is final: the environment is
    /// not applied over it again.
    ///
    /// ```
    /// use pubsub_core::{Config, MemoryConfig};
    /// let mut config = Config::default();
    /// config.section_mut::<MemoryConfig>()?.namespace = "test".into();
    /// assert_eq!(config.section::<MemoryConfig>()?.namespace, "test");
    /// # Ok::<(), pubsub_core::Error>(())
    /// ```
    pub fn section_mut<T: Section>(&mut self) -> Result<&mut T> {
        self.sections.get_mut::<T>()
    }

    /// Replace section `T` with `section` (final, as with [`Config::section_mut`]).
    pub fn set_section<T: Section>(&mut self, section: T) {
        self.sections.typed.insert(T::NAME, Box::new(section));
    }

    /// [`Config::set_section`], by value: `Config::default().with_section(nats)`.
    pub fn with_section<T: Section>(mut self, section: T) -> Config {
        self.set_section(section);
        self
    }

    /// The names of the document's sections and of those set in code, sorted.
    pub fn section_names(&self) -> Vec<String> {
        self.sections.names().map(str::to_string).collect()
    }

    /// The document to write out (secrets redacted) with the common
    /// settings and, of the sections `Serialize` writes (every registered
    /// backend's and every one set in code), those named in `sections`;
    /// `None`: all of them. `pubsub check` shows the chosen backend's alone:
    ///
    /// ```
    /// use pubsub_core::Config;
    /// let config = Config::default();
    /// let json = serde_json::to_value(config.view(Some(&["memory"]))?).unwrap();
    /// assert_eq!(json["backend"], "memory");
    /// assert_eq!(json["memory"]["namespace"], "default");
    /// let json = serde_json::to_value(config.view(Some(&[]))?).unwrap();
    /// assert!(json.get("memory").is_none());
    /// # Ok::<(), pubsub_core::Error>(())
    /// ```
    pub fn view(&self, sections: Option<&[&str]>) -> Result<ConfigView<'_>> {
        let mut shown = self.shown_sections()?;
        if let Some(names) = sections {
            shown.retain(|name, _| names.contains(name));
        }
        Ok(ConfigView {
            config: self,
            sections: shown,
        })
    }

    /// The sections written out by `Serialize`: every registered backend's
    /// and every one set in code.
    fn shown_sections(&self) -> Result<BTreeMap<&'static str, Box<dyn AnySection>>> {
        let mut shown: BTreeMap<&'static str, Box<dyn AnySection>> = self
            .sections
            .typed
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for ty in crate::registry::section_types() {
            if !shown.contains_key(ty.name()) {
                shown.insert(ty.name(), ty.read(&self.sections)?);
            }
        }
        Ok(shown)
    }

    /// Override the common settings from the `MSIGHT_PUBSUB_*` variables ([`PUBSUB_ENV`]).
    fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
        let env = Env(source);
        env.string_req("MSIGHT_PUBSUB_BACKEND", &mut self.backend);
        env.string("MSIGHT_PUBSUB_GROUP_ID", &mut self.group_id);
        env.duration("MSIGHT_PUBSUB_CONNECT_TIMEOUT", &mut self.connect_timeout)?;
        env.duration("MSIGHT_PUBSUB_CLOSE_TIMEOUT", &mut self.close_timeout)?;
        env.duration("MSIGHT_PUBSUB_PUBLISH_TIMEOUT", &mut self.publish_timeout)?;
        env.number("MSIGHT_PUBSUB_BUFFER_CAPACITY", &mut self.buffer.capacity)?;
        env.number("MSIGHT_PUBSUB_BUFFER_MAX_BYTES", &mut self.buffer.max_bytes)?;
        env.parse("MSIGHT_PUBSUB_OVERFLOW", &mut self.buffer.overflow)?;
        env.parse("MSIGHT_PUBSUB_ACK", &mut self.ack)?;
        env.duration("MSIGHT_PUBSUB_ACK_WAIT", &mut self.ack_wait)?;
        env.number("MSIGHT_PUBSUB_MAX_DELIVER", &mut self.max_deliver)?;
        env.string(
            "MSIGHT_PUBSUB_DEAD_LETTER_TOPIC",
            &mut self.dead_letter_topic,
        );
        env.number("MSIGHT_PUBSUB_MAX_IN_FLIGHT", &mut self.max_in_flight)?;
        env.number(
            "MSIGHT_PUBSUB_MAX_IN_FLIGHT_BYTES",
            &mut self.max_in_flight_bytes,
        )?;
        env.parse("MSIGHT_PUBSUB_CODEC", &mut self.codec)?;
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
        if self.ack_wait.is_zero() {
            return Err(Error::config("ack_wait", "must be more than zero"));
        }
        if self.max_deliver == 0 {
            return Err(Error::config(
                "max_deliver",
                "must be at least 1 (the first delivery counts)",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Error::config("max_in_flight", "must be at least 1"));
        }
        if self.max_in_flight_bytes == 0 {
            return Err(Error::config("max_in_flight_bytes", "must be at least 1"));
        }
        if let Some(t) = &self.dead_letter_topic {
            crate::validate_topic_name(t)
                .map_err(|e| Error::config("dead_letter_topic", e.message()))?;
        }
        Ok(())
    }
}

/// Builds a [`Config`] from defaults, an optional file and the environment.
#[derive(Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    no_file_from_env: bool,
    env: Option<section::SharedEnv>,
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
    pub fn env(mut self, source: impl EnvSource + Send + Sync + 'static) -> Self {
        self.env = Some(Arc::new(source));
        self
    }

    /// Ignore environment variables (also `MSIGHT_PUBSUB_CONFIG`).
    pub fn no_env(mut self) -> Self {
        self.no_env = true;
        self
    }

    /// Load and validate the common settings, and read the section of every
    /// registered backend (so that its mistakes show now). Sections of
    /// backends registered later are read when asked for, from the same
    /// file and environment.
    pub fn load(self) -> Result<Config> {
        let source: Option<section::SharedEnv> = match (self.no_env, self.env) {
            (true, _) => None,
            (false, Some(s)) => Some(s),
            (false, None) => Some(Arc::new(ProcessEnv)),
        };
        let file = match (&self.file, &source, self.no_file_from_env) {
            (Some(f), _, _) => Some(f.clone()),
            (None, Some(env), false) => env.var("MSIGHT_PUBSUB_CONFIG").map(PathBuf::from),
            _ => None,
        };
        let mut config = match &file {
            Some(path) => read_file(path)?,
            None => Config::default(),
        };
        if let Some(env) = &source {
            config.apply_env(env.as_ref())?;
        }
        config.sections.env = source;
        config.validate()?;
        for ty in crate::registry::section_types() {
            config.sections.resolve(&ty)?;
        }
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
    let doc = config::Config::builder()
        .add_source(config::File::from_str(&text, format))
        .build()
        .and_then(|built| built.try_deserialize::<BTreeMap<String, config::Value>>())
        .map_err(|e| Error::config("config file", format!("{shown}: {e}")))?;
    Config::from_document(doc, Some(shown.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, MemoryConfig};

    /// A section as an outside backend crate would write it.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Kafka {
        brokers: Vec<String>,
        user: Option<String>,
        password: Option<Secret>,
        #[serde(with = "humantime_serde")]
        retry: Duration,
    }

    impl Section for Kafka {
        const NAME: &'static str = "kafka";
        const ENV: &'static [(&'static str, &'static str)] = &[
            ("MSIGHT_KAFKA_BROKERS", "kafka.brokers"),
            ("MSIGHT_KAFKA_PASSWORD", "kafka.password"),
        ];
        fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
            let env = Env(source);
            env.list("MSIGHT_KAFKA_BROKERS", &["h:9092"], &mut self.brokers)?;
            env.secret("MSIGHT_KAFKA_PASSWORD", &mut self.password);
            Ok(())
        }
    }

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
            "backend = \"kafka\"\ngroup_id = \"g1\"\nconnect_timeout = \"2s\"\n[kafka]\nbrokers = [\"f:9092\"]\nuser = \"u\"\npassword = \"p\"\n[buffer]\noverflow = \"drop_newest\"\n",
        );
        let c = Config::loader().file(&f).no_env().load().unwrap();
        assert_eq!(c.backend, "kafka");
        assert_eq!(c.group_id.as_deref(), Some("g1"));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.section::<Kafka>().unwrap().brokers, ["f:9092"]);
        assert_eq!(c.buffer.overflow, OverflowPolicy::DropNewest);
        assert_eq!(c.buffer.capacity, 10_000);

        let c = Config::loader()
            .file(&f)
            .env([
                ("MSIGHT_KAFKA_BROKERS", "e:1,e:2"),
                ("MSIGHT_PUBSUB_GROUP_ID", "g2"),
                ("MSIGHT_PUBSUB_OVERFLOW", "block"),
            ])
            .load()
            .unwrap();
        let kafka = c.section::<Kafka>().unwrap();
        assert_eq!(kafka.brokers, ["e:1", "e:2"]);
        assert_eq!(c.group_id.as_deref(), Some("g2"));
        assert_eq!(c.buffer.overflow, OverflowPolicy::Block);
        assert_eq!(c.codec, Format::MsgPack);
        assert_eq!(kafka.user.as_deref(), Some("u"));
        assert_eq!(kafka.password.unwrap().expose(), "p");
    }

    #[test]
    fn sections_set_in_code_win_over_file_and_env() {
        let mut c = Config::loader()
            .env([("MSIGHT_KAFKA_BROKERS", "env:1")])
            .load()
            .unwrap();
        assert_eq!(c.section::<Kafka>().unwrap().brokers, ["env:1"]);
        c.section_mut::<Kafka>().unwrap().brokers = vec!["code:1".into()];
        assert_eq!(c.section::<Kafka>().unwrap().brokers, ["code:1"]);
        let c = c.with_section(Kafka {
            brokers: vec!["code:2".into()],
            ..Kafka::default()
        });
        assert_eq!(c.section::<Kafka>().unwrap().brokers, ["code:2"]);
        assert_eq!(c.section_names(), ["kafka", "memory"]);
    }

    #[test]
    fn tables_of_unlinked_backends_are_kept_and_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            &dir,
            "all.toml",
            "backend = \"memory\"\n[kafka]\nbrokers = [\"k:1\"]\n[zookeeper]\nanything = { nested = 1 }\npassword = \"zk-secret-marker\"\n",
        );
        let c = Config::from_file(&f).unwrap();
        assert_eq!(c.section_names(), ["kafka", "memory", "zookeeper"]);
        // Read when asked for, whenever its type shows up.
        assert_eq!(c.section::<Kafka>().unwrap().brokers, ["k:1"]);
        // Unread tables are never shown: only their type knows their secrets.
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("zk-secret-marker"), "{shown}");
        assert!(shown.contains("zookeeper"), "{shown}");
    }

    #[test]
    fn registered_sections_are_checked_strictly_at_load() {
        let dir = tempfile::tempdir().unwrap();
        // `memory` is always registered.
        let f = write(
            &dir,
            "m.toml",
            "[memory]\nnamespace = \"x\"\nnamspace = \"y\"\n",
        );
        let e = Config::from_file(&f).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let msg = e.to_string();
        assert!(
            msg.contains("m.toml") && msg.contains("namspace") && msg.contains("memory"),
            "{msg}"
        );
        // An unregistered section is as strict when it is read.
        let f = write(&dir, "k.toml", "[kafka]\nbroker = [\"k:1\"]\n");
        let c = Config::from_file(&f).unwrap();
        let msg = c.section::<Kafka>().unwrap_err().to_string();
        assert!(
            msg.contains("k.toml") && msg.contains("broker") && msg.contains("kafka"),
            "{msg}"
        );
        let f = write(&dir, "t.toml", "[kafka]\nbrokers = 3\n");
        let msg = Config::from_file(&f)
            .unwrap()
            .section::<Kafka>()
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("t.toml") && msg.contains("kafka.brokers"),
            "{msg}"
        );
    }

    #[test]
    fn file_from_msight_pubsub_config_in_yaml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let y = write(
            &dir,
            "c.yaml",
            "backend: kafka\nkafka:\n  brokers: [\"y:1\"]\n",
        );
        let c = Config::loader()
            .env(std::collections::HashMap::from([(
                "MSIGHT_PUBSUB_CONFIG".to_string(),
                y.to_str().unwrap().to_string(),
            )]))
            .load()
            .unwrap();
        assert_eq!(c.section::<Kafka>().unwrap().brokers, ["y:1"]);
        let j = write(&dir, "c.json", r#"{"buffer": {"capacity": 5}}"#);
        assert_eq!(Config::from_file(&j).unwrap().buffer.capacity, 5);
    }

    #[test]
    fn a_number_where_a_duration_belongs_says_so_and_shows_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "n.toml", "connect_timeout = 5\n");
        let msg = Config::from_file(&f).unwrap_err().to_string();
        assert!(msg.contains("connect_timeout"), "{msg}");
        assert!(msg.contains("the number 5 is not a duration"), "{msg}");
        assert!(msg.contains("\"5s\""), "{msg}");
        assert!(!msg.contains("string"), "{msg}");
        let f = write(&dir, "w.toml", "ack_wait = \"soon\"\n");
        let msg = Config::from_file(&f).unwrap_err().to_string();
        assert!(
            msg.contains("ack_wait") && msg.contains("\"soon\" is not a duration"),
            "{msg}"
        );
        // In a backend's section too, whatever its own deserializer.
        let f = write(&dir, "s.toml", "[kafka]\nretry = 30\n");
        let msg = Config::from_file(&f)
            .unwrap()
            .section::<Kafka>()
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("kafka.retry: the number 30 is not a duration") && msg.contains("\"30s\""),
            "{msg}"
        );
        let f = write(&dir, "ok.toml", "close_timeout = \"1m 30s\"\n");
        assert_eq!(
            Config::from_file(&f).unwrap().close_timeout,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn env_durations_say_what_to_write_without_parser_jargon() {
        let e = Config::loader()
            .env([("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "fast")])
            .load()
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("MSIGHT_PUBSUB_CONNECT_TIMEOUT"), "{msg}");
        assert!(msg.ends_with("got \"fast\""), "{msg}");
        assert!(!msg.contains("expected number at"), "{msg}");
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
        assert!(
            msg.contains("t.toml") && msg.contains("buffer.capacity"),
            "{msg}"
        );

        let unknown = write(&dir, "u.toml", "bakend = \"nats\"\n");
        let msg = Config::from_file(&unknown).unwrap_err().to_string();
        assert!(msg.contains("u.toml") && msg.contains("bakend"), "{msg}");

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
        ] {
            let e = Config::loader().env([(var, value)]).load().unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
        let c = Config::loader()
            .env([("MSIGHT_KAFKA_BROKERS", "['a'")])
            .load()
            .unwrap();
        let e = c.section::<Kafka>().unwrap_err();
        assert!(e.to_string().contains("MSIGHT_KAFKA_BROKERS"), "{e}");
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
    fn secrets_are_redacted_everywhere() {
        let mut c = Config::default();
        let kafka = c.section_mut::<Kafka>().unwrap();
        kafka.user = Some("alice".into());
        kafka.password = Some(Secret::new("hunter2-marker"));
        let dbg = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for out in [&dbg, &json] {
            assert!(!out.contains("hunter2-marker"), "{out}");
            assert!(out.contains("<redacted>") && out.contains("alice"), "{out}");
        }
        let c = Config::loader()
            .env([("MSIGHT_KAFKA_PASSWORD", "env-secret-marker")])
            .load()
            .unwrap();
        let c = c.clone().with_section(c.section::<Kafka>().unwrap());
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("env-secret-marker"), "{shown}");
        assert_eq!(
            redact_url("nats://bob:pw@h:4222/x"),
            "nats://bob:***@h:4222/x"
        );
        assert_eq!(redact_url("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("h:4222"), "h:4222");
    }

    #[test]
    fn serialized_config_reads_back() {
        let mut c = Config {
            backend: "kafka".into(),
            group_id: Some("g".into()),
            connect_timeout: Duration::from_millis(1500),
            ..Config::default()
        };
        c.section_mut::<Kafka>().unwrap().brokers = vec!["k:1".into()];
        c.section_mut::<MemoryConfig>().unwrap().namespace = "ns".into();
        let json = serde_json::to_string(&c).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back.backend, "kafka");
        assert_eq!(back.group_id.as_deref(), Some("g"));
        assert_eq!(back.connect_timeout, Duration::from_millis(1500));
        assert_eq!(back.section::<Kafka>().unwrap().brokers, ["k:1"]);
        assert_eq!(back.section::<MemoryConfig>().unwrap().namespace, "ns");
        let e = serde_json::from_str::<Config>(r#"{"bakend": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("bakend"), "{e}");
    }
}
