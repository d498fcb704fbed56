//! Shared by the JetStream test files: configs for a JetStream server, the
//! raw client to look at what the server holds, sequence payloads.

#![allow(dead_code)]

use std::time::Duration;

use pubsub_nats::{AckMode, Config, NatsConfig, NatsMode};

/// A JetStream-mode config for `servers`.
pub fn js_config(servers: Vec<String>) -> Config {
    let mut c = Config::default();
    c.backend = "nats".into();
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.servers = servers;
    nats.mode = NatsMode::JetStream;
    nats.reconnect_delay_max = Duration::from_millis(250);
    c
}

/// [`js_config`] in manual ack mode with `ack_wait`.
pub fn js_manual(servers: Vec<String>, ack_wait: Duration) -> Config {
    let mut c = js_config(servers);
    c.ack = AckMode::Manual;
    c.ack_wait = ack_wait;
    c
}

/// The raw async-nats client and its JetStream context.
pub async fn raw(url: &str) -> (async_nats::Client, async_nats::jetstream::Context) {
    let client = async_nats::connect(url).await.expect("raw connect");
    let js = async_nats::jetstream::new(client.clone());
    (client, js)
}

/// A unique topic under `first` (its first token names the stream).
pub fn unique(first: &str, what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{first}.{what}.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn seq(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

pub fn seq_of(m: &pubsub_nats::Message) -> u32 {
    u32::from_be_bytes(m.payload[..4].try_into().expect("a 4-byte sequence"))
}
