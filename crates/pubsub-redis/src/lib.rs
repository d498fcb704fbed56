#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backend;
mod error;
mod options;

use futures::FutureExt;

pub use backend::{RedisBackend, PAYLOAD_FIELD};
pub use pubsub_core::{
    self, blocking, BackendFactory, BrokerInfo, Bytes, Capabilities, Config, Delivery, Error,
    ErrorKind, Message, MessageStream, OverflowPolicy, PubSub, RedisConfig, RedisMode, Result,
    Secret, Stats, Topic,
};

/// The registry entry of the `redis` backend.
pub fn factory() -> BackendFactory {
    BackendFactory {
        name: "redis",
        crate_name: "pubsub-redis",
        connect: |config, ctx| {
            async move {
                let b: Box<dyn pubsub_core::PubSubBackend> =
                    Box::new(RedisBackend::connect(&config, ctx).await?);
                Ok(b)
            }
            .boxed()
        },
    }
}

/// Register the `redis` backend, so that `backend = "redis"` (or
/// `MSIGHT_PUBSUB_BACKEND=redis`) works with [`PubSub::connect`] and
/// [`blocking::PubSub::connect`]. Calling it again does no harm.
pub fn register() {
    pubsub_core::register(factory());
}

/// Connect to Redis (async), whatever `config.backend` says.
pub async fn connect(config: &Config) -> Result<PubSub> {
    PubSub::connect_with(&factory(), config).await
}

/// Connect to Redis (blocking), whatever `config.backend` says.
pub fn connect_blocking(config: &Config) -> Result<blocking::PubSub> {
    blocking::PubSub::connect_with(&factory(), config)
}

/// Like the Python original, which builds its Redis client from the
/// `MSIGHT_REDIS_MESSAGE_BROKER_*` variables: defaults, then the
/// `MSIGHT_*` environment variables (not the `MSIGHT_PUBSUB_CONFIG` file),
/// with `backend = "redis"` and the given group (which needs
/// `redis.mode = "streams"`).
pub fn get_redis_config(group_id: Option<&str>) -> Result<Config> {
    let config = Config::from_env_for("redis", group_id)?;
    config.redis.validate()?;
    Ok(config)
}
