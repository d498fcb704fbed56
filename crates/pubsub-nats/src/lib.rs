#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backend;
mod error;
mod options;

use futures::FutureExt;

pub use backend::NatsBackend;
pub use pubsub_core::{
    self, blocking, BackendFactory, BrokerInfo, Bytes, Capabilities, Config, Delivery, Error,
    ErrorKind, Message, MessageStream, NatsConfig, OverflowPolicy, PubSub, Result, Secret, Stats,
    Topic,
};

/// The registry entry of the `nats` backend.
pub fn factory() -> BackendFactory {
    BackendFactory {
        name: "nats",
        crate_name: "pubsub-nats",
        connect: |config, ctx| {
            async move {
                let b: Box<dyn pubsub_core::PubSubBackend> =
                    Box::new(NatsBackend::connect(&config, ctx).await?);
                Ok(b)
            }
            .boxed()
        },
    }
}

/// Register the `nats` backend, so that `backend = "nats"` (or
/// `MSIGHT_PUBSUB_BACKEND=nats`) works with [`PubSub::connect`] and
/// [`blocking::PubSub::connect`]. Calling it again does no harm.
pub fn register() {
    pubsub_core::register(factory());
}

/// Connect to NATS (async), whatever `config.backend` says.
pub async fn connect(config: &Config) -> Result<PubSub> {
    PubSub::connect_with(&factory(), config).await
}

/// Connect to NATS (blocking), whatever `config.backend` says.
pub fn connect_blocking(config: &Config) -> Result<blocking::PubSub> {
    blocking::PubSub::connect_with(&factory(), config)
}

/// The Python original's `get_nats_config(group_id)`: defaults, then the
/// `MSIGHT_NATS_*` variables (and the other `MSIGHT_*` ones), with
/// `backend = "nats"` and the given group.
pub fn get_nats_config(group_id: Option<&str>) -> Result<Config> {
    Config::from_env_for("nats", group_id)
}

/// The workspace README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadme;
