#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backend;
mod error;
mod options;

use futures::FutureExt;

pub use backend::MqttBackend;
pub use pubsub_core::{
    self, blocking, config::MqttBroker, BackendFactory, BrokerInfo, Bytes, Capabilities, Config,
    Delivery, Error, ErrorKind, Message, MessageStream, MqttConfig, OverflowPolicy, PubSub, Result,
    Secret, Stats, Topic,
};

/// The registry entry of the `mqtt` backend.
pub fn factory() -> BackendFactory {
    BackendFactory {
        name: backend::NAME,
        crate_name: "pubsub-mqtt",
        connect: |config, ctx| {
            async move {
                let b: Box<dyn pubsub_core::PubSubBackend> =
                    Box::new(MqttBackend::connect(&config, ctx).await?);
                Ok(b)
            }
            .boxed()
        },
    }
}

/// Register the `mqtt` backend, so that `PubSub::connect` with
/// `backend = "mqtt"` (or `MSIGHT_PUBSUB_BACKEND=mqtt`) finds it.
pub fn register() {
    pubsub_core::register(factory());
}

/// Connect to the MQTT broker of `config.mqtt`, whatever `config.backend` says.
pub async fn connect(config: &Config) -> Result<PubSub> {
    PubSub::connect_with(&factory(), config).await
}

/// [`connect`] for the blocking API: works from a plain `fn main()`.
pub fn connect_blocking(config: &Config) -> Result<blocking::PubSub> {
    blocking::PubSub::connect_with(&factory(), config)
}

/// Like the NATS crate's `get_nats_config(group_id)`: defaults, then the
/// `MSIGHT_MQTT_*` variables (and the other `MSIGHT_*` ones), with
/// `backend = "mqtt"` and the given group.
pub fn get_mqtt_config(group_id: Option<&str>) -> Result<Config> {
    let config = Config::from_env_for(backend::NAME, group_id)?;
    config.mqtt.validate()?;
    Ok(config)
}
