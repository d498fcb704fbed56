//! Faults against a real `mosquitto`: the broker killed and restarted while
//! a publisher sends at a steady rate, and calls while the broker is gone.

mod common;

use std::time::{Duration, Instant};

use common::{config_for, seq, seq_of, start_broker, unique, SessionsHarness};
use pubsub_mqtt::MqttConfig;
use pubsub_testkit::conformance::{restart_under_load, Outcome};

/// With clean sessions (the default) and one publisher, what is lost is one
/// stretch of its sequence around the outage: everything before it and
/// everything after both clients are back arrives, in order. (The test
/// kit's restart-under-load case, run by the conformance suite at every
/// QoS, checks the outage with four publishing threads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_keeps_order_and_loses_one_stretch() {
    let mut broker = start_broker();
    let mut config = config_for(&broker.url(), 1);
    config
        .section_mut::<MqttConfig>()
        .unwrap()
        .reconnect_delay_max = Duration::from_millis(200);
    let sub = pubsub_mqtt::connect(&config)
        .await
        .expect("connect subscriber");
    let topic = unique("outage");
    sub.subscribe(&topic).await.expect("subscribe");
    let mut pub_config = config.clone();
    pub_config
        .section_mut::<MqttConfig>()
        .unwrap()
        .request_channel_capacity = 20_000;
    let publ = pubsub_mqtt::connect(&pub_config)
        .await
        .expect("connect publisher");

    const N: u32 = 8000;
    let publisher = {
        let publ = publ.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            // About 4,000 messages a second for 2 s.
            for i in 0..N {
                publ.publish(&topic, seq(i)).await.expect("publish");
                if i % 40 == 39 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    let receiver = {
        let sub = sub.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = sub
                .recv_timeout(Duration::from_secs(5))
                .await
                .expect("recv")
            {
                let s = seq_of(&m);
                got.push((s, Instant::now()));
                if s == N - 1 {
                    break;
                }
            }
            got
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::block_in_place(|| broker.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| broker.start_again());
    let restarted = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("publisher finished")
        .expect("publisher task");
    publ.flush().await.expect("flush after the outage");
    let got = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("receiver finished")
        .expect("receiver task");

    let seqs: Vec<u32> = got.iter().map(|(s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order kept");
    assert_eq!(seqs.last(), Some(&(N - 1)), "the last message arrives");
    let gaps: Vec<(u32, u32)> = seqs
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0] + 1, w[1] - 1))
        .collect();
    assert!(
        seqs.first() == Some(&0),
        "messages before the outage arrive"
    );
    assert!(gaps.len() <= 1, "one stretch lost, not several: {gaps:?}");
    let lost: u32 = gaps.iter().map(|(a, b)| b - a + 1).sum();
    let back = got
        .iter()
        .find(|(_, t)| *t > restarted)
        .map(|(_, t)| t.duration_since(restarted));
    println!(
        "lost {lost} of {N} for a 0.5 s outage at ~4,000 msg/s (stretch {gaps:?}); delivery back {back:?} after the restart; subscriber {:?}",
        sub.stats()
    );
    assert!(sub.stats().reconnects >= 1);
}

/// With the broker gone for good, every call returns within its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_gone_calls_stay_bounded() {
    let mut broker = start_broker();
    let mut config = config_for(&broker.url(), 1);
    config.close_timeout = Duration::from_secs(2);
    config.publish_timeout = Duration::from_secs(1);
    config
        .section_mut::<MqttConfig>()
        .unwrap()
        .request_channel_capacity = 5;
    let ps = pubsub_mqtt::connect(&config).await.expect("connect");
    let topic = unique("gone");
    ps.subscribe(&topic).await.expect("subscribe");
    tokio::task::block_in_place(|| broker.stop());
    let limit = Duration::from_secs(4);

    let t0 = Instant::now();
    let mut errors = 0;
    for i in 0..20 {
        if ps.publish(&topic, seq(i)).await.is_err() {
            errors += 1;
            break;
        }
    }
    assert_eq!(errors, 1, "a publish fails once the queue is full");
    assert!(t0.elapsed() < limit, "publish took {:?}", t0.elapsed());

    let t0 = Instant::now();
    let e = ps.flush().await.expect_err("flush without a broker");
    assert_eq!(e.kind(), pubsub_mqtt::ErrorKind::Timeout, "{e}");
    assert!(t0.elapsed() < limit, "flush took {:?}", t0.elapsed());

    let t0 = Instant::now();
    let e = ps
        .subscribe(unique("gone2"))
        .await
        .expect_err("subscribe without a broker");
    assert!(matches!(e.kind(), pubsub_mqtt::ErrorKind::Timeout), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "subscribe took {:?}",
        t0.elapsed()
    );

    let t0 = Instant::now();
    let r = ps.close().await;
    assert!(t0.elapsed() < limit, "close took {:?}", t0.elapsed());
    let e = r.expect_err("close with unacknowledged publishes");
    assert_eq!(e.kind(), pubsub_mqtt::ErrorKind::Timeout, "{e}");
    assert_eq!(
        ps.publish(&topic, "x").await.unwrap_err().kind(),
        pubsub_mqtt::ErrorKind::Closed
    );
}

/// At least once: QoS 1 with sessions (`session_expiry` and a client id of
/// its own for every client) and a broker that keeps them across its
/// restart (persistence). The test kit's restart-under-load scenario: four
/// threads publish 10,000 messages through one blocking handle, the broker
/// restarts at one third; every message reaches a plain subscriber. A
/// member of a shared subscription loses only what was published around
/// the outage (see `SessionsHarness::groups_survive_broker_restart`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_with_sessions_loses_nothing() {
    let mut h = SessionsHarness::start(1);
    assert_eq!(
        restart_under_load(&mut h).await,
        Outcome::Passed,
        "a broker with sessions keeps everything"
    );
}
