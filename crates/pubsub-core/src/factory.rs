//! The registry of backends: a name (`nats`, `redis`, `mqtt`, `memory`) to a constructor.
//!
//! `memory` is always registered. Each backend crate registers itself with
//! its `register()` function (the typed `connect` helpers of a backend crate
//! do not need the registry at all).

use std::sync::{OnceLock, RwLock};

use futures::future::BoxFuture;

use crate::backend::{BackendContext, PubSubBackend};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};

/// The constructor of a backend: connect with `config`, deliver into the context's inbox.
pub type ConnectFn =
    fn(Config, BackendContext) -> BoxFuture<'static, Result<Box<dyn PubSubBackend>>>;

/// A backend's entry in the registry.
#[derive(Clone, Copy)]
pub struct BackendFactory {
    /// The name used in `backend = "..."` / `MSIGHT_PUBSUB_BACKEND`.
    pub name: &'static str,
    /// The crate that provides it, named in errors.
    pub crate_name: &'static str,
    /// The constructor.
    pub connect: ConnectFn,
}

impl std::fmt::Debug for BackendFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendFactory")
            .field("name", &self.name)
            .field("crate_name", &self.crate_name)
            .finish()
    }
}

/// Backends this project provides, for the error that names the crate to add.
const KNOWN: &[(&str, &str)] = &[
    ("nats", "pubsub-nats"),
    ("redis", "pubsub-redis"),
    ("mqtt", "pubsub-mqtt"),
];

fn registry() -> &'static RwLock<Vec<BackendFactory>> {
    static REGISTRY: OnceLock<RwLock<Vec<BackendFactory>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(vec![crate::memory::factory()]))
}

/// Add (or replace) a backend in the process-wide registry.
pub fn register(factory: BackendFactory) {
    let mut r = registry().write().unwrap_or_else(|p| p.into_inner());
    r.retain(|f| f.name != factory.name);
    r.push(factory);
}

/// Names of the registered backends, sorted.
pub fn registered() -> Vec<&'static str> {
    let r = registry().read().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<_> = r.iter().map(|f| f.name).collect();
    names.sort_unstable();
    names
}

/// The factory registered under `name`. The error lists what is registered
/// and, for a backend of this project, names the crate to add.
pub fn lookup(name: &str) -> Result<BackendFactory> {
    let wanted = name.trim().to_ascii_lowercase();
    {
        let r = registry().read().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = r.iter().find(|f| f.name == wanted) {
            return Ok(*f);
        }
    }
    let known = registered().join(", ");
    let hint = match KNOWN.iter().find(|(n, _)| *n == wanted) {
        Some((_, krate)) => format!(
            "; add the crate `{krate}` to Cargo.toml and call `{}::register()` before connecting",
            krate.replace('-', "_")
        ),
        None => format!(
            "; this project provides {}",
            KNOWN
                .iter()
                .map(|(n, c)| format!("`{n}` ({c})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(Error::new(
        ErrorKind::InvalidConfig,
        format!("backend: {name:?} is not registered (registered: {known}){hint}"),
    ))
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
        assert_eq!(lookup("Memory").unwrap().name, "memory");
        assert!(registered().contains(&"memory"));
    }
}
