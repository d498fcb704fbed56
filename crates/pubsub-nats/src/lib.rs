#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod headers;
mod jetstream;
mod options;

pub use backend::NatsBackend;
pub use config::{
    validate_server_url, DeliverFrom, NatsConfig, NatsMode, StreamDiscard, StreamStorage,
    DEFAULT_STREAM, NATS_ENV,
};
pub use headers::HEADER_ORDER;
pub use jetstream::report::{
    jetstream_report, AccountReport, ConsumerReport, JetStreamReport, PlannedStream, StreamReport,
    TopicReport, MAX_CONSUMERS, MAX_STREAMS,
};
pub use pubsub_core::{
    self, blocking, AckMode, Backend, BackendFactory, BrokerInfo, Bytes, Capabilities, Config,
    Delivery, Error, ErrorKind, Headers, Message, MessageStream, OverflowPolicy, PubSub, Result,
    Secret, Stats, Topic,
};

/// Register the `nats` backend, so that `backend = "nats"` (or
/// `MSIGHT_PUBSUB_BACKEND=nats`) works with [`PubSub::connect`] and
/// [`blocking::PubSub::connect`]. Calling it again does no harm.
pub fn register() {
    pubsub_core::register::<NatsBackend>();
}

/// Connect to NATS (async), whatever `config.backend` says.
pub async fn connect(config: &Config) -> Result<PubSub> {
    PubSub::connect_to::<NatsBackend>(config).await
}

/// Connect to NATS (blocking), whatever `config.backend` says.
pub fn connect_blocking(config: &Config) -> Result<blocking::PubSub> {
    blocking::PubSub::connect_to::<NatsBackend>(config)
}

/// The Python original's `get_nats_config(group_id)`: defaults, then the
/// `MSIGHT_NATS_*` variables (and the other `MSIGHT_*` ones), with
/// `backend = "nats"` and the given group, checked.
pub fn get_nats_config(group_id: Option<&str>) -> Result<Config> {
    Config::from_env_for::<NatsBackend>(group_id)
}

/// The workspace README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadme;
