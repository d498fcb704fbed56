//! One program links NATS, Redis and MQTT and connects to all three over TLS
//! at once. async-nats, redis-rs and rumqttc all build on rustls; with two
//! crypto providers compiled in, every TLS connect would panic ("Could not
//! automatically determine the process-level CryptoProvider"). The
//! workspace uses `ring` only (CI checks that no `aws-lc-rs` is linked),
//! and this test proves the three TLS connections work side by side.

use std::time::Duration;

use pubsub_core::testkit::brokers::{Mosquitto, NatsServer, RedisServer};
use pubsub_core::testkit::certs::TestPki;
use pubsub_core::{Config, PubSub};

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
    n.nats.servers = vec![nats.url()];
    n.nats.tls = true;
    n.nats.tls_ca_cert = Some(pki.ca_cert.clone());
    n.nats.tls_cert = Some(pki.client_cert.clone());
    n.nats.tls_key = Some(pki.client_key.clone());

    let mut r = Config::default();
    r.redis.host = "127.0.0.1".into();
    r.redis.port = redis.port();
    r.redis.tls = true;
    r.redis.tls_ca_cert = Some(pki.ca_cert.clone());
    r.redis.tls_cert = Some(pki.client_cert.clone());
    r.redis.tls_key = Some(pki.client_key.clone());

    let mut m = Config::default();
    m.mqtt.url = Some(mqtt.url());
    m.mqtt.tls_ca_cert = Some(pki.ca_cert.clone());
    m.mqtt.tls_cert = Some(pki.client_cert.clone());
    m.mqtt.tls_key = Some(pki.client_key.clone());

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
