//! The registry of backends: a name (`nats`, `redis`, `mqtt`, `memory`, a
//! user's `kafka`) to its entry, made from the backend type by
//! [`register::<B>()`](register).
//!
//! `memory` is always registered. Each backend crate has a `register()`
//! that calls [`register`] with its type (its typed `connect` helpers do
//! not need the registry at all).

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock, RwLock};

use futures::future::BoxFuture;

use crate::backend::{Backend, BackendContext, PubSubBackend};
use crate::config::{Config, Section, SectionType};
use crate::error::{Error, ErrorKind, Result};
use crate::sync::{lock, read, write};

type ConnectFn = fn(Config, BackendContext) -> BoxFuture<'static, Result<Box<dyn PubSubBackend>>>;

/// A backend's entry in the registry: its name, crate, config section and
/// constructor, made from the backend type by [`BackendFactory::of`].
#[derive(Clone, Copy)]
pub struct BackendFactory {
    name: &'static str,
    crate_name: &'static str,
    section: SectionType,
    connect: ConnectFn,
}

impl BackendFactory {
    /// The entry of backend `B`.
    pub fn of<B: Backend>() -> BackendFactory {
        BackendFactory {
            name: B::NAME,
            crate_name: B::CRATE,
            section: SectionType::of::<B::Config>(),
            connect: connect_boxed::<B>,
        }
    }

    /// The name used in `backend = "..."` / `MSIGHT_PUBSUB_BACKEND`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The crate that provides it, named in errors.
    pub fn crate_name(&self) -> &'static str {
        self.crate_name
    }

    /// Its config section.
    pub fn section(&self) -> SectionType {
        self.section
    }

    /// Connect: read and check the section, then [`Backend::connect`].
    pub(crate) fn connect(
        &self,
        config: Config,
        ctx: BackendContext,
    ) -> BoxFuture<'static, Result<Box<dyn PubSubBackend>>> {
        (self.connect)(config, ctx)
    }
}

fn connect_boxed<B: Backend>(
    config: Config,
    ctx: BackendContext,
) -> BoxFuture<'static, Result<Box<dyn PubSubBackend>>> {
    Box::pin(async move {
        let section = config.section::<B::Config>()?;
        section.validate()?;
        let backend = B::connect(&config, section, ctx).await?;
        Ok(Box::new(backend) as Box<dyn PubSubBackend>)
    })
}

impl std::fmt::Debug for BackendFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendFactory")
            .field("name", &self.name)
            .field("crate_name", &self.crate_name)
            .field("section", &self.section.name())
            .finish()
    }
}

fn registry() -> &'static RwLock<Vec<BackendFactory>> {
    static REGISTRY: OnceLock<RwLock<Vec<BackendFactory>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(vec![BackendFactory::of::<crate::memory::MemoryBackend>()]))
}

fn entries() -> Vec<BackendFactory> {
    read(registry()).clone()
}

/// Add (or replace) backend `B` in the process-wide registry, so that
/// `backend = "<B::NAME>"` connects with it. Calling it again does no harm.
pub fn register<B: Backend>() {
    let factory = BackendFactory::of::<B>();
    let mut r = write(registry());
    r.retain(|f| f.name != factory.name);
    r.push(factory);
}

/// Names of the registered backends, sorted.
pub fn registered() -> Vec<&'static str> {
    let mut names: Vec<_> = entries().iter().map(|f| f.name).collect();
    names.sort_unstable();
    names
}

/// The config sections of the registered backends.
pub(crate) fn section_types() -> Vec<SectionType> {
    entries().iter().map(|f| f.section).collect()
}

/// The factory registered under `name`. The error lists what is registered
/// and names the crate to add, by the convention that backend `x` comes
/// from the crate `pubsub-x`.
pub fn lookup(name: &str) -> Result<BackendFactory> {
    let wanted = name.trim().to_ascii_lowercase();
    let all = entries();
    if let Some(f) = all.iter().find(|f| f.name == wanted) {
        return Ok(*f);
    }
    let known = registered().join(", ");
    let krate = format!("pubsub-{wanted}");
    Err(Error::new(
        ErrorKind::InvalidConfig,
        format!(
            "backend: {name:?} is not registered (registered: {known}); add the crate `{krate}` \
             (or the crate that provides it, if it is not one of this project's) to Cargo.toml \
             and call `{}::register()` before connecting",
            krate.replace('-', "_")
        ),
    ))
}

/// Warn, once per name and process, about each table of `config` that is
/// the section of no registered backend (nor of `connecting`): a misspelt
/// `[nat]` must not pass unnoticed. The warning names a close registered
/// name where there is one. Such tables are kept and ignored, so that one
/// file serves nodes that link different backends.
pub(crate) fn warn_unknown_sections(config: &Config, connecting: &BackendFactory) {
    static WARNED: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    let mut known: Vec<&str> = section_types().iter().map(|s| s.name()).collect();
    known.push(connecting.section.name());
    known.sort_unstable();
    known.dedup();
    for (name, hint) in unknown_sections(config, &known) {
        let mut warned = lock(WARNED.get_or_init(Default::default));
        if warned.insert(name.clone()) {
            tracing::warn!(
                "config section [{name}] is the section of no registered backend (registered: {}); it is ignored{hint}",
                known.join(", ")
            );
        }
    }
}

/// The tables of `config` that no name of `known` claims, each with a
/// "did you mean" hint (empty when no known name is close).
pub fn unknown_sections(config: &Config, known: &[&str]) -> Vec<(String, String)> {
    let candidates: Vec<&str> = known.iter().copied().chain(["buffer"]).collect();
    config
        .section_names()
        .into_iter()
        .filter(|n| !known.contains(&n.as_str()))
        .map(|n| {
            let hint = closest(&n, &candidates)
                .map(|c| format!("; did you mean [{c}]?"))
                .unwrap_or_default();
            (n, hint)
        })
        .collect()
}

/// The candidate within an edit distance of 2 (1 for names of up to 3
/// letters) of `name`, the closest first.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = if name.chars().count() <= 3 { 1 } else { 2 };
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters, case-insensitive.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backend_lists_registered_and_names_crate() {
        let e = lookup("kafka").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let msg = e.to_string();
        assert!(msg.contains("\"kafka\"") && msg.contains("memory"), "{msg}");
        let msg = lookup("mqtt").unwrap_err().to_string();
        assert!(
            msg.contains("pubsub-mqtt") && msg.contains("pubsub_mqtt::register()"),
            "{msg}"
        );
        assert_eq!(lookup("Memory").unwrap().name(), "memory");
        assert!(registered().contains(&"memory"));
    }

    #[test]
    fn close_names_are_suggested() {
        assert_eq!(edit_distance("nat", "nats"), 1);
        assert_eq!(edit_distance("redsi", "redis"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        let known = ["memory", "nats", "redis", "mqtt"];
        assert_eq!(closest("nat", &known), Some("nats"));
        assert_eq!(closest("Redsi", &known), Some("redis"));
        assert_eq!(closest("mqt", &known), Some("mqtt"));
        assert_eq!(closest("kafka", &known), None);
        assert_eq!(closest("abc", &known), None);

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[nat]\nservers = []\n[kafka]\nx = 1\n[bufer]\ncapacity = 1\n",
        )
        .unwrap();
        let config = Config::from_file(&f).unwrap();
        let unknown = unknown_sections(&config, &known);
        assert_eq!(
            unknown,
            [
                ("bufer".to_string(), "; did you mean [buffer]?".to_string()),
                ("kafka".to_string(), String::new()),
                ("nat".to_string(), "; did you mean [nats]?".to_string()),
            ]
        );
    }
}
