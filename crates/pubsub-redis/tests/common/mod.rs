//! Shared by the integration tests: configs for a test server, waiting helpers.
#![allow(dead_code)]

use pubsub_redis::RedisConfig;
use pubsub_redis::{Config, Message, RedisMode};
use pubsub_testkit::brokers::RedisServer;

/// A config for `server` in `mode`.
pub fn config_for(server: &RedisServer, mode: RedisMode) -> Config {
    config_port(server.port(), mode)
}

/// A config for `127.0.0.1:port` in `mode`.
pub fn config_port(port: u16, mode: RedisMode) -> Config {
    let mut c = Config::default();
    c.backend = "redis".into();
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.host = "127.0.0.1".into();
    redis.port = port;
    redis.mode = mode;
    c
}

/// A topic name unique in this process.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t.{prefix}.{nanos}.{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Receive until `n` messages arrived or `within` passed (not every test uses it).
#[allow(unused_imports)]
pub use pubsub_testkit::conformance::recv_n;

/// A 4-byte big-endian sequence number.
pub fn seq(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

/// The sequence number at the start of a payload.
pub fn seq_of(m: &Message) -> u32 {
    u32::from_be_bytes(m.payload[..4].try_into().expect("4-byte sequence"))
}

/// Start a broker from async code without blocking the runtime's other tasks.
pub fn start<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
