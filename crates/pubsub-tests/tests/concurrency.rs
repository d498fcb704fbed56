//! One blocking handle shared by eight threads publishing 8 x 5,000
//! messages: with a healthy broker every message arrives, on every backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_core::MemoryConfig;
use pubsub_core::{blocking, BackendFactory, Config, PubSub};
use pubsub_mqtt::MqttConfig;
use pubsub_nats::NatsConfig;
use pubsub_redis::RedisConfig;
use pubsub_testkit::brokers::{Mosquitto, NatsServer, RedisServer};

const THREADS: u32 = 8;
const EACH: u32 = 5_000;

async fn eight_threads_one_handle(factory: BackendFactory, mut config: Config, topic: &str) {
    config.buffer.capacity = (THREADS * EACH) as usize + 1;
    let sub = PubSub::connect_with(&factory, &config).await.unwrap();
    sub.subscribe(topic).await.unwrap();
    let t = topic.to_string();
    let elapsed = tokio::task::spawn_blocking(move || {
        let ps = Arc::new(blocking::PubSub::connect_with(&factory, &config).unwrap());
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for thread in 0..THREADS {
                let (ps, t) = (&ps, &t);
                s.spawn(move || {
                    for i in 0..EACH {
                        ps.publish(t.as_str(), (thread * 1_000_000 + i).to_be_bytes().to_vec())
                            .unwrap();
                    }
                });
            }
        });
        ps.flush().unwrap();
        assert_eq!(ps.stats().published, (THREADS * EACH) as u64);
        ps.close().unwrap();
        t0.elapsed()
    })
    .await
    .unwrap();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < (THREADS * EACH) as usize && Instant::now() < deadline {
        match sub.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            Some(m) => {
                seen.insert(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
            }
            None => break,
        }
    }
    println!(
        "{}: 8 threads x 5,000 published in {elapsed:?}; {} distinct received; {:?}",
        sub.backend_name(),
        seen.len(),
        sub.stats()
    );
    assert_eq!(seen.len(), (THREADS * EACH) as usize);
    assert_eq!(sub.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory() {
    let mut c = Config::default();
    c.section_mut::<MemoryConfig>().unwrap().namespace = "concurrency".into();
    eight_threads_one_handle(
        pubsub_core::BackendFactory::of::<pubsub_core::memory::MemoryBackend>(),
        c,
        "conc.memory",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats() {
    let server = tokio::task::block_in_place(NatsServer::start);
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![server.url()];
    eight_threads_one_handle(
        pubsub_core::BackendFactory::of::<pubsub_nats::NatsBackend>(),
        c,
        "conc.nats",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_pubsub_mode() {
    let server = tokio::task::block_in_place(RedisServer::start);
    let mut c = Config::default();
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.host = "127.0.0.1".into();
    redis.port = server.port();
    eight_threads_one_handle(
        pubsub_core::BackendFactory::of::<pubsub_redis::RedisBackend>(),
        c,
        "conc.redis.pubsub",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_streams_mode() {
    let server = tokio::task::block_in_place(RedisServer::start);
    let mut c = Config::default();
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.host = "127.0.0.1".into();
    redis.port = server.port();
    redis.mode = pubsub_redis::RedisMode::Streams;
    eight_threads_one_handle(
        pubsub_core::BackendFactory::of::<pubsub_redis::RedisBackend>(),
        c,
        "conc.redis.streams",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_qos1() {
    let broker = tokio::task::block_in_place(Mosquitto::start);
    let mut c = Config::default();
    let mqtt = c.section_mut::<MqttConfig>().unwrap();
    mqtt.url = Some(broker.url());
    mqtt.qos = 1;
    eight_threads_one_handle(
        pubsub_core::BackendFactory::of::<pubsub_mqtt::MqttBackend>(),
        c,
        "conc/mqtt/qos1",
    )
    .await;
}
