//! A backend's own section of the configuration document (`[nats]`,
//! `[redis]`, a user's `[kafka]`): the [`Section`] trait it implements, and
//! how a [`Config`](super::Config) keeps the sections of its document.
//!
//! A section is read from the document when it is asked for
//! ([`Config::section`](super::Config::section)), so the order of loading
//! and registering does not matter: the table of the file, then the
//! environment the document was loaded with. Sections of registered
//! backends are also read when the document is loaded, so that their
//! mistakes show at once. A table of a backend this program does not link
//! is kept as it is and ignored.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::env::EnvSource;
use crate::error::{Error, Result};

/// The config section of one backend.
///
/// ```
/// use pubsub_core::config::{Env, EnvSource, Section};
/// use pubsub_core::{Error, Result};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// #[serde(default, deny_unknown_fields)]
/// #[non_exhaustive]
/// pub struct KafkaConfig {
///     pub brokers: Vec<String>,
/// }
///
/// impl Default for KafkaConfig {
///     fn default() -> Self {
///         KafkaConfig { brokers: vec!["localhost:9092".into()] }
///     }
/// }
///
/// impl Section for KafkaConfig {
///     const NAME: &'static str = "kafka";
///     const ENV: &'static [(&'static str, &'static str)] =
///         &[("MSIGHT_KAFKA_BROKERS", "kafka.brokers")];
///
///     fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
///         Env(source).list("MSIGHT_KAFKA_BROKERS", &["host:9092"], &mut self.brokers)
///     }
///
///     fn validate(&self) -> Result<()> {
///         if self.brokers.is_empty() {
///             return Err(Error::config("kafka.brokers", "at least one broker is required"));
///         }
///         Ok(())
///     }
/// }
///
/// let config = pubsub_core::Config::loader()
///     .env([("MSIGHT_KAFKA_BROKERS", "['a:9092', 'b:9092']")])
///     .load()?;
/// assert_eq!(config.section::<KafkaConfig>()?.brokers, ["a:9092", "b:9092"]);
/// # Ok::<(), Error>(())
/// ```
pub trait Section:
    Clone + fmt::Debug + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The table's name in the document: `"nats"` for `[nats]`.
    const NAME: &'static str;

    /// The environment variables this section reads, each with the key it
    /// sets (`("MSIGHT_NATS_SERVERS", "nats.servers")`), for documentation
    /// and `pubsub check`.
    const ENV: &'static [(&'static str, &'static str)] = &[];

    /// Override fields from the environment. A malformed value is an
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) error
    /// that names the variable ([`Env`](super::Env) does that).
    fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
        let _ = source;
        Ok(())
    }

    /// Checks that need no network, run before the backend connects. Errors
    /// name the key at fault (`nats.servers[1]`).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// A section with its type erased, as the document keeps it.
pub(crate) trait AnySection: erased_serde::Serialize + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn clone_box(&self) -> Box<dyn AnySection>;
}

erased_serde::serialize_trait_object!(AnySection);

impl<T: Section> AnySection for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clone_box(&self) -> Box<dyn AnySection> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn AnySection> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// A section type, known without its type parameter: what the registry
/// keeps for each backend so that documents can read its section.
#[derive(Clone, Copy)]
pub struct SectionType {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
    read: fn(&Sections) -> Result<Box<dyn AnySection>>,
}

impl SectionType {
    /// The section type `T`.
    pub fn of<T: Section>() -> SectionType {
        SectionType {
            name: T::NAME,
            env: T::ENV,
            read: |s| Ok(Box::new(s.read::<T>()?)),
        }
    }

    /// The table's name, `"nats"` for `[nats]`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The environment variables of the section, with the key each sets.
    pub fn env(&self) -> &'static [(&'static str, &'static str)] {
        self.env
    }

    pub(crate) fn read(&self, sections: &Sections) -> Result<Box<dyn AnySection>> {
        (self.read)(sections)
    }
}

impl fmt::Debug for SectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SectionType")
            .field("name", &self.name)
            .finish()
    }
}

/// The environment a document was loaded with, kept to read sections later.
pub(crate) type SharedEnv = Arc<dyn EnvSource + Send + Sync>;

/// The backend sections of one document.
#[derive(Clone, Default)]
pub(crate) struct Sections {
    /// Tables of the document not read yet (or of backends not linked), by name.
    pub raw: BTreeMap<String, config::Value>,
    /// Where the document came from (a file path), for errors.
    pub origin: Option<String>,
    /// The environment of the document; `None` when it was loaded without.
    pub env: Option<SharedEnv>,
    /// Sections read (table, then environment) or set in code. They win
    /// over `raw`.
    pub typed: BTreeMap<&'static str, Box<dyn AnySection>>,
}

impl Sections {
    /// Section `T`: as set or read before, else from its table and the
    /// environment (defaults where there is neither).
    pub fn read<T: Section>(&self) -> Result<T> {
        if let Some(s) = self.typed.get(T::NAME) {
            return s
                .as_any()
                .downcast_ref::<T>()
                .cloned()
                .ok_or_else(|| conflict::<T>());
        }
        let mut section = match self.raw.get(T::NAME) {
            Some(table) => self.deserialize::<T>(table)?,
            None => T::default(),
        };
        if let Some(env) = &self.env {
            section.apply_env(env.as_ref())?;
        }
        Ok(section)
    }

    /// `&mut` to section `T`, read first if it was not.
    pub fn get_mut<T: Section>(&mut self) -> Result<&mut T> {
        if !self.typed.contains_key(T::NAME) {
            let section = self.read::<T>()?;
            self.typed.insert(T::NAME, Box::new(section));
        }
        self.typed
            .get_mut(T::NAME)
            .and_then(|s| s.as_any_mut().downcast_mut::<T>())
            .ok_or_else(|| conflict::<T>())
    }

    /// Read the section of `ty` now and keep it (errors show at load).
    pub fn resolve(&mut self, ty: &SectionType) -> Result<()> {
        if !self.typed.contains_key(ty.name()) {
            let section = ty.read(self)?;
            self.typed.insert(ty.name(), section);
        }
        Ok(())
    }

    /// The table, strictly: a key `T` does not know is an error that names
    /// the key, the section and the file.
    fn deserialize<T: Section>(&self, table: &config::Value) -> Result<T> {
        self.check_duration_numbers::<T>(table)?;
        // Wrapped in a one-entry map, so errors give the whole key path
        // (`nats.servers`), not the key inside the table.
        let wrapped = config::Value::new(
            None,
            config::ValueKind::Table([(T::NAME.to_string(), table.clone())].into()),
        );
        let mut map: BTreeMap<String, T> = wrapped
            .try_deserialize()
            .map_err(|e| self.document_error(e))?;
        Ok(map.remove(T::NAME).unwrap_or_default())
    }

    /// A number where the section has a duration (its default is written
    /// as one, `"30s"`) is refused saying so, with the text to write: the
    /// file parser would turn `30` into the string "30" and the duration
    /// parser then calls it an invalid string. Whatever the section's own
    /// deserializer, so every backend's durations read alike.
    fn check_duration_numbers<T: Section>(&self, table: &config::Value) -> Result<()> {
        let config::ValueKind::Table(entries) = &table.kind else {
            return Ok(());
        };
        let Ok(serde_json::Value::Object(defaults)) = serde_json::to_value(T::default()) else {
            return Ok(());
        };
        for (key, value) in entries {
            let number = match &value.kind {
                config::ValueKind::I64(n) => n.to_string(),
                config::ValueKind::I128(n) => n.to_string(),
                config::ValueKind::U64(n) => n.to_string(),
                config::ValueKind::U128(n) => n.to_string(),
                config::ValueKind::Float(n) => n.to_string(),
                _ => continue,
            };
            let is_duration = defaults
                .get(key)
                .and_then(serde_json::Value::as_str)
                .is_some_and(|d| humantime_serde::re::humantime::parse_duration(d).is_ok());
            if is_duration {
                return Err(self.document_error(format!(
                    "{}.{key}: the number {number} is not a duration: write it as text with a unit, \"{number}s\" for {number} seconds (or \"{number}ms\")",
                    T::NAME
                )));
            }
        }
        Ok(())
    }

    pub fn document_error(&self, e: impl fmt::Display) -> Error {
        match &self.origin {
            Some(file) => Error::config("config file", format!("{file}: {e}")),
            None => Error::config("config", e),
        }
    }

    /// Names of the tables in the document and of the sections set in code.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self
            .raw
            .keys()
            .map(String::as_str)
            .chain(self.typed.keys().copied())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter()
    }
}

fn conflict<T: Section>() -> Error {
    Error::config(
        T::NAME,
        format!(
            "the section [{}] is held by another type than {}; two backends use the same section name",
            T::NAME,
            std::any::type_name::<T>()
        ),
    )
}

impl fmt::Debug for Sections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Unread tables are not shown: they may hold secrets that only
        // their section type knows how to redact.
        let mut m = f.debug_map();
        for (name, s) in &self.typed {
            m.entry(name, s);
        }
        for name in self
            .raw
            .keys()
            .filter(|n| !self.typed.contains_key(n.as_str()))
        {
            m.entry(name, &format_args!("<not read>"));
        }
        m.finish()
    }
}
