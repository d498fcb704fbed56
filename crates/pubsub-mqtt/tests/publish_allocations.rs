//! Heap allocations per publish, counted by a global allocator: our async
//! and blocking APIs against rumqttc used directly (its event loop polled
//! by a task), on the same broker, at QoS 0 and 1.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{config_for, unique};
use pubsub_testkit::alloc::{
    allocations, per_message, per_publish, per_publish_blocking, Counting,
};
use pubsub_testkit::brokers::Mosquitto;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::Outgoing;

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: u64 = 10_000;
/// Publishes between flushes: fewer than the request queue holds, so every
/// publish of ours takes the fast path.
const BATCH: u64 = 500;

/// rumqttc with its event loop polled by a task; counts publishes done
/// (QoS 0: written, QoS 1: acknowledged).
async fn raw(port: u16, qos: QoS, payload: &Bytes) -> f64 {
    let mut opts = MqttOptions::new(unique("raw").replace('.', "-"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1_000);
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let topic = unique("alloc/raw").replace('.', "/");
    let wait_done = |n: u64| {
        let done = done.clone();
        async move {
            let t0 = Instant::now();
            while done.load(Ordering::Relaxed) < n && t0.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(done.load(Ordering::Relaxed) >= n, "raw publishes not done");
        }
    };
    client
        .publish(&topic, qos, false, payload.clone())
        .await
        .unwrap();
    wait_done(1).await;
    let before = allocations();
    for i in 0..N {
        client
            .publish(&topic, qos, false, payload.clone())
            .await
            .unwrap();
        if i % BATCH == BATCH - 1 {
            wait_done(i + 2).await;
        }
    }
    let per = per_message(before, N);
    poller.abort();
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_per_publish() {
    let broker = tokio::task::block_in_place(Mosquitto::start);
    let payload = Bytes::from(vec![7u8; 128]);
    for (qos, level) in [(QoS::AtMostOnce, 0u8), (QoS::AtLeastOnce, 1)] {
        let raw = raw(broker.port(), qos, &payload).await;
        let config = config_for(&broker.url(), level);

        let ps = pubsub_mqtt::connect(&config).await.unwrap();
        let topic = unique("alloc/async").replace('.', "/");
        let ours_async = per_publish(&ps, &topic, || payload.clone(), N, BATCH).await;
        ps.close().await.unwrap();

        let blocking = tokio::task::block_in_place(|| {
            let ps = pubsub_mqtt::connect_blocking(&config).unwrap();
            let topic = unique("alloc/blocking").replace('.', "/");
            let per = per_publish_blocking(&ps, &topic, || payload.clone(), N, BATCH);
            ps.close().unwrap();
            per
        });
        println!(
            "mqtt QoS {level}: allocations per publish of a 128-byte payload (whole process): raw rumqttc {raw:.2}, ours async {ours_async:.2}, ours blocking {blocking:.2}"
        );
        // The packets are rumqttc's either way; ours adds none per message.
        assert!(
            ours_async <= raw + 0.1,
            "QoS {level}: async adds allocations: {ours_async:.2} vs raw {raw:.2}"
        );
        assert!(
            blocking <= raw + 0.1,
            "QoS {level}: blocking adds allocations: {blocking:.2} vs raw {raw:.2}"
        );
    }
}
