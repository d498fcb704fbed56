//! Shared by the MQTT integration tests: configs for a test broker, and the
//! conformance harness.
#![allow(dead_code)]

use pubsub_mqtt::MqttConfig;
use pubsub_mqtt::{BackendFactory, Config, Message};
use pubsub_testkit::brokers::{free_port, Mosquitto};
use pubsub_testkit::conformance::Harness;

/// A config for the broker at `url` with `qos`.
pub fn config_for(url: &str, qos: u8) -> Config {
    let mut c = Config::default();
    c.backend = "mqtt".into();
    let mqtt = c.section_mut::<MqttConfig>().unwrap();
    mqtt.url = Some(url.to_string());
    mqtt.qos = qos;
    c
}

/// The conformance harness: one mosquitto per case.
pub struct MqttHarness {
    pub broker: Mosquitto,
    pub qos: u8,
}

#[pubsub_mqtt::pubsub_core::async_trait]
impl Harness for MqttHarness {
    fn factory(&self) -> BackendFactory {
        pubsub_core::BackendFactory::of::<pubsub_mqtt::MqttBackend>()
    }

    fn config(&self) -> Config {
        config_for(&self.broker.url(), self.qos)
    }

    async fn stop_broker(&mut self) {
        tokio::task::block_in_place(|| self.broker.stop());
    }

    async fn start_broker(&mut self) {
        tokio::task::block_in_place(|| self.broker.start_again());
    }

    fn dead_config(&self) -> Option<Config> {
        Some(config_for(
            &format!("mqtt://127.0.0.1:{}", free_port()),
            self.qos,
        ))
    }

    fn label(&self) -> String {
        format!("mqtt qos={}", self.qos)
    }
}

/// Start a default test broker (blocking, from a test runtime).
pub fn start_broker() -> Mosquitto {
    tokio::task::block_in_place(Mosquitto::start)
}

/// Receive until `n` messages arrived or `within` passed (not every test uses it).
#[allow(unused_imports)]
pub use pubsub_testkit::conformance::recv_n;

/// A topic name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "test/{prefix}/{nanos}-{}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn seq(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

pub fn seq_of(m: &Message) -> u32 {
    u32::from_be_bytes(m.payload[..4].try_into().expect("a 4-byte sequence number"))
}
