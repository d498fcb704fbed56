#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod headers;
mod options;

pub use backend::MqttBackend;
pub use config::{MqttBroker, MqttConfig, MQTT_ENV, MQTT_MAX_PACKET_SIZE, MQTT_PACKET_OVERHEAD};
pub use pubsub_core::{
    self, blocking, AckMode, Backend, BackendFactory, BrokerInfo, Bytes, Capabilities, Config,
    Delivery, Error, ErrorKind, Headers, Message, MessageStream, OverflowPolicy, PubSub, Result,
    Secret, Stats, Topic,
};

/// Register the `mqtt` backend, so that `backend = "mqtt"` (or
/// `MSIGHT_PUBSUB_BACKEND=mqtt`) works with [`PubSub::connect`] and
/// [`blocking::PubSub::connect`]. Calling it again does no harm.
pub fn register() {
    pubsub_core::register::<MqttBackend>();
}

/// Connect to the MQTT broker (async), whatever `config.backend` says.
pub async fn connect(config: &Config) -> Result<PubSub> {
    PubSub::connect_to::<MqttBackend>(config).await
}

/// Connect to the MQTT broker (blocking), whatever `config.backend` says.
pub fn connect_blocking(config: &Config) -> Result<blocking::PubSub> {
    blocking::PubSub::connect_to::<MqttBackend>(config)
}

/// Like the NATS crate's `get_nats_config(group_id)`: defaults, then the
/// `MSIGHT_MQTT_*` variables (and the other `MSIGHT_*` ones), with
/// `backend = "mqtt"` and the given group, checked.
pub fn get_mqtt_config(group_id: Option<&str>) -> Result<Config> {
    Config::from_env_for::<MqttBackend>(group_id)
}
