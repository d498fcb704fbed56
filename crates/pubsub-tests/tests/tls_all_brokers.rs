//! One program links NATS, Redis and MQTT and connects to all three over TLS
//! at once. async-nats, redis-rs and rumqttc all build on rustls; with two
//! crypto providers compiled in, every TLS connect would panic ("Could not
//! automatically determine the process-level CryptoProvider"). The
//! workspace uses `ring` only (CI checks that no `aws-lc-rs` is linked),
//! and this test proves the three TLS connections work side by side.

use std::time::Duration;

use pubsub_core::{Config, PubSub};
use pubsub_mqtt::MqttConfig;
use pubsub_nats::NatsConfig;
use pubsub_redis::RedisConfig;
use pubsub_testkit::brokers::{Mosquitto, NatsServer, RedisServer};
use pubsub_testkit::certs::TestPki;

async fn round_trip(ps: &PubSub, topic: &str) {
    ps.subscribe(topic).await.unwrap();
    ps.publish(topic, "over tls").await.unwrap();
    let m = ps
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{}: no message", ps.backend_name()));
    assert_eq!(&m.payload[..], b"over tls");
    assert!(ps.broker_info().tls, "{}: TLS in use", ps.backend_name());
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_redis_and_mqtt_over_tls_in_one_process() {
    let pki = TestPki::generate();
    let (nats, redis, mqtt) = tokio::task::block_in_place(|| {
        (
            NatsServer::builder().tls(&pki, true).start(),
            RedisServer::builder()
                .tls(&pki)
                .require_client_cert(true)
                .start(),
            Mosquitto::builder().tls(&pki, true).start(),
        )
    });

    let mut n = Config::default();
    let section = n.section_mut::<NatsConfig>().unwrap();
    section.servers = vec![nats.url()];
    section.tls = true;
    section.tls_ca_cert = Some(pki.ca_cert.clone());
    section.tls_cert = Some(pki.client_cert.clone());
    section.tls_key = Some(pki.client_key.clone());

    let mut r = Config::default();
    let section = r.section_mut::<RedisConfig>().unwrap();
    section.host = "127.0.0.1".into();
    section.port = redis.port();
    section.tls = true;
    section.tls_ca_cert = Some(pki.ca_cert.clone());
    section.tls_cert = Some(pki.client_cert.clone());
    section.tls_key = Some(pki.client_key.clone());

    let mut m = Config::default();
    let section = m.section_mut::<MqttConfig>().unwrap();
    section.url = Some(mqtt.url());
    section.tls_ca_cert = Some(pki.ca_cert.clone());
    section.tls_cert = Some(pki.client_cert.clone());
    section.tls_key = Some(pki.client_key.clone());

    // Connect all three concurrently, then use them side by side.
    let (n, r, m) = tokio::join!(
        pubsub_nats::connect(&n),
        pubsub_redis::connect(&r),
        pubsub_mqtt::connect(&m)
    );
    let (n, r, m) = (n.unwrap(), r.unwrap(), m.unwrap());
    tokio::join!(
        round_trip(&n, "tls.all.nats"),
        round_trip(&r, "tls.all.redis"),
        round_trip(&m, "tls/all/mqtt")
    );
    for ps in [n, r, m] {
        ps.close().await.unwrap();
    }
}
