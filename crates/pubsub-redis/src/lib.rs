#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod options;
mod topics;

pub use backend::{RedisBackend, PAYLOAD_FIELD};
pub use config::{parse_node, RedisConfig, RedisMode, REDIS_ENV};
pub use pubsub_core::{
    self, blocking, AckMode, Backend, BackendFactory, BrokerInfo, Bytes, Capabilities, Config,
    Delivery, Error, ErrorKind, Headers, Message, MessageStream, OverflowPolicy, PubSub, Result,
    Secret, Stats, Topic,
};
pub use topics::{BlockingTopicRegistry, TopicRegistry, TOPICS_KEY};

/// Register the `redis` backend, so that `backend = "redis"` (or
/// `MSIGHT_PUBSUB_BACKEND=redis`) works with [`PubSub::connect`] and
/// [`blocking::PubSub::connect`]. Calling it again does no harm.
pub fn register() {
    pubsub_core::register::<RedisBackend>();
}

/// Connect to Redis (async), whatever `config.backend` says.
pub async fn connect(config: &Config) -> Result<PubSub> {
    PubSub::connect_to::<RedisBackend>(config).await
}

/// Connect to Redis (blocking), whatever `config.backend` says.
pub fn connect_blocking(config: &Config) -> Result<blocking::PubSub> {
    blocking::PubSub::connect_to::<RedisBackend>(config)
}

/// Like the Python original, which builds its Redis client from the
/// `MSIGHT_REDIS_MESSAGE_BROKER_*` variables: defaults, then the
/// `MSIGHT_*` environment variables (not the `MSIGHT_PUBSUB_CONFIG` file),
/// with `backend = "redis"` and the given group (which needs
/// `redis.mode = "streams"`), checked.
pub fn get_redis_config(group_id: Option<&str>) -> Result<Config> {
    Config::from_env_for::<RedisBackend>(group_id)
}
