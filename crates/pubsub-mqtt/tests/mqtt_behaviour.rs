//! MQTT-specific behaviour against a real `mosquitto`: one handle that both
//! subscribes and publishes at QoS 1, large payloads, persistent sessions,
//! reconnect backoff, shared subscriptions, wildcards, and config from the
//! environment.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{config_for, recv_n, seq, seq_of, start_broker, unique};
use pubsub_mqtt::MqttConfig;
use pubsub_mqtt::{Config, ErrorKind, PubSub};
use pubsub_testkit::brokers::Mosquitto;

/// The setup that stalled with rumqttc 0.25.1 (see shared/DESIGN.md): one
/// handle, subscribed to the topic it publishes to, QoS 1, one message in
/// flight at a time. Run against mosquitto's default inflight window (20)
/// and an unlimited one.
async fn round_trips(broker: &Mosquitto, n: u32) -> Duration {
    let ps = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    let topic = unique("roundtrip");
    ps.subscribe(&topic).await.expect("subscribe");
    let t0 = Instant::now();
    for i in 0..n {
        ps.publish(&topic, seq(i)).await.expect("publish");
        let m = ps
            .recv_timeout(Duration::from_secs(5))
            .await
            .expect("recv")
            .unwrap_or_else(|| panic!("stalled: round trip {i} of {n} got no message within 5 s"));
        assert_eq!(seq_of(&m), i, "round trip {i}");
        assert_eq!(m.topic, topic);
    }
    let took = t0.elapsed();
    ps.flush().await.expect("flush");
    let stats = ps.stats();
    assert_eq!(stats.published, u64::from(n));
    assert_eq!(stats.received, u64::from(n));
    ps.close().await.expect("close");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handle_subscribing_and_publishing_at_qos1_does_5000_round_trips() {
    let broker = start_broker();
    let took = round_trips(&broker, 5000).await;
    println!(
        "5000 QoS 1 round trips on one handle (unlimited inflight): {took:?} ({:.0}/s)",
        5000.0 / took.as_secs_f64()
    );
    let default_window = tokio::task::block_in_place(|| {
        Mosquitto::builder()
            .config("max_inflight_messages 20")
            .start()
    });
    let took = round_trips(&default_window, 5000).await;
    println!(
        "5000 QoS 1 round trips on one handle (mosquitto's default inflight 20): {took:?} ({:.0}/s)",
        5000.0 / took.as_secs_f64()
    );
}

/// The same with the blocking API from a plain thread, the seed-style use
/// (a node that listens and publishes what it computes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_handle_subscribing_and_publishing_at_qos1_does_5000_round_trips() {
    let broker = tokio::task::block_in_place(|| {
        Mosquitto::builder()
            .config("max_inflight_messages 20")
            .start()
    });
    let config = config_for(&broker.url(), 1);
    let took = tokio::task::spawn_blocking(move || {
        let ps = pubsub_mqtt::connect_blocking(&config).expect("connect");
        let topic = unique("blocking-roundtrip");
        ps.subscribe(&topic).expect("subscribe");
        let t0 = Instant::now();
        for i in 0..5000u32 {
            ps.publish(&topic, seq(i)).expect("publish");
            let m = ps
                .recv_timeout(Duration::from_secs(5))
                .expect("recv")
                .unwrap_or_else(|| panic!("stalled after {i} round trips"));
            assert_eq!(seq_of(&m), i);
        }
        let took = t0.elapsed();
        ps.close().expect("close");
        took
    })
    .await
    .expect("blocking thread");
    println!("5000 QoS 1 round trips on one blocking handle: {took:?}");
}

/// The burst form of the same setup: one handle publishes 5,000 QoS 1
/// messages to a topic it is subscribed to while it reads them, so the
/// event loop has received messages waiting and publishes queued at once
/// (the case of rumqtt#1025).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handle_publishing_a_burst_to_itself_at_qos1_does_not_stall() {
    let broker = tokio::task::block_in_place(|| {
        Mosquitto::builder()
            .config("max_inflight_messages 20")
            .start()
    });
    let mut config = config_for(&broker.url(), 1);
    // A small request channel makes a stall, if there is one, certain.
    config
        .section_mut::<MqttConfig>()
        .unwrap()
        .request_channel_capacity = 10;
    let ps = pubsub_mqtt::connect(&config).await.expect("connect");
    let topic = unique("burst");
    ps.subscribe(&topic).await.expect("subscribe");
    const N: u32 = 5000;
    let t0 = Instant::now();
    let publisher = {
        let ps = ps.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for i in 0..N {
                ps.publish(&topic, seq(i)).await.expect("publish");
            }
            ps.flush().await.expect("flush");
        })
    };
    let got = recv_n(&ps, N as usize, Duration::from_secs(60)).await;
    tokio::time::timeout(Duration::from_secs(30), publisher)
        .await
        .expect("publisher finished in time")
        .expect("publisher task");
    let took = t0.elapsed();
    assert_eq!(got.len(), N as usize, "messages received");
    let seqs: Vec<u32> = got.iter().map(seq_of).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order kept");
    println!("burst of {N} QoS 1 messages to itself: {took:?}");
    ps.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_payload_round_trip_and_over_the_max_is_payload_too_large() {
    let broker = start_broker();
    let mut config = config_for(&broker.url(), 1);
    config.section_mut::<MqttConfig>().unwrap().max_packet_size = 2 * 1024 * 1024;
    let ps = pubsub_mqtt::connect(&config).await.expect("connect");
    let topic = unique("big");
    ps.subscribe(&topic).await.expect("subscribe");
    let mib: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    let small_but_over_10k = vec![7u8; 11 * 1024];
    ps.publish(&topic, mib.clone())
        .await
        .expect("publish 1 MiB");
    ps.publish(&topic, small_but_over_10k.clone())
        .await
        .expect("publish 11 KiB");
    ps.flush().await.expect("flush");
    let got = recv_n(&ps, 2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    assert!(got[0].payload[..] == mib[..], "1 MiB payload changed");
    assert!(got[1].payload[..] == small_but_over_10k[..]);
    let max = ps.capabilities().max_payload.expect("a max payload");
    assert_eq!(max, 2 * 1024 * 1024 - pubsub_mqtt::MQTT_PACKET_OVERHEAD);
    let e = ps
        .publish(&topic, vec![0u8; 2 * 1024 * 1024])
        .await
        .expect_err("over the max");
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge, "{e}");
    // At the limit it still goes through.
    ps.publish(&topic, vec![1u8; max])
        .await
        .expect("at the max");
    ps.flush().await.expect("flush");
    let got = recv_n(&ps, 1, Duration::from_secs(20)).await;
    assert_eq!(got.first().map(|m| m.payload.len()), Some(max));
    ps.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_receives_what_was_published_while_away() {
    // More than mosquitto's default queue of 1,000 is set by the test kit
    // (max_queued_messages 100000); 500 fit either way.
    let broker = start_broker();
    let topic = unique("session");
    let mut sub_config = config_for(&broker.url(), 1);
    sub_config.section_mut::<MqttConfig>().unwrap().client_id =
        Some(format!("persistent-{}", std::process::id()));
    sub_config
        .section_mut::<MqttConfig>()
        .unwrap()
        .session_expiry = Some(Duration::from_secs(300));
    let sub = pubsub_mqtt::connect(&sub_config).await.expect("connect");
    assert!(sub.capabilities().persistence);
    assert_eq!(
        sub.capabilities().delivery,
        pubsub_mqtt::Delivery::AtLeastOnce
    );
    sub.subscribe(&topic).await.expect("subscribe");
    sub.close().await.expect("close subscriber");

    let publ = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect publisher");
    assert!(!publ.capabilities().persistence, "clean start by default");
    const N: u32 = 500;
    for i in 0..N {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    publ.close().await.expect("close publisher");

    let sub = pubsub_mqtt::connect(&sub_config).await.expect("reconnect");
    sub.subscribe(&topic).await.expect("subscribe again");
    let got: BTreeSet<u32> = recv_n(&sub, N as usize, Duration::from_secs(20))
        .await
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(got.len(), N as usize, "messages kept by the broker");
    sub.close().await.expect("close");

    // A clean-start subscriber with the same id gets nothing queued.
    let mut clean = sub_config.clone();
    clean.section_mut::<MqttConfig>().unwrap().session_expiry = None;
    let c = pubsub_mqtt::connect(&clean).await.expect("connect clean");
    c.subscribe(&topic).await.expect("subscribe");
    let publ = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    c.close().await.expect("close");
    publ.publish(&topic, seq(1)).await.expect("publish");
    publ.flush().await.expect("flush");
    let c = pubsub_mqtt::connect(&clean).await.expect("connect clean");
    c.subscribe(&topic).await.expect("subscribe");
    assert!(
        c.recv_timeout(Duration::from_millis(500))
            .await
            .expect("recv")
            .is_none(),
        "a clean session must not receive what was published while away"
    );
}

/// A persistent broker restarted gracefully keeps the session: the
/// subscriber reconnects with `session_present`, needs no re-subscription,
/// and gets the QoS 1 messages published after the restart and those
/// published while it was reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_survives_a_persistent_broker_restart() {
    let mut broker = tokio::task::block_in_place(|| Mosquitto::builder().persistence(true).start());
    let topic = unique("kept");
    let mut sub_config = config_for(&broker.url(), 1);
    sub_config.section_mut::<MqttConfig>().unwrap().client_id =
        Some(format!("kept-{}", std::process::id()));
    sub_config
        .section_mut::<MqttConfig>()
        .unwrap()
        .session_expiry = Some(Duration::from_secs(300));
    sub_config
        .section_mut::<MqttConfig>()
        .unwrap()
        .reconnect_delay_max = Duration::from_millis(500);
    let sub = pubsub_mqtt::connect(&sub_config).await.expect("connect");
    sub.subscribe(&topic).await.expect("subscribe");
    tokio::task::block_in_place(|| broker.restart());
    let publ = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect publisher");
    const N: u32 = 300;
    for i in 0..N {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    let got: BTreeSet<u32> = recv_n(&sub, N as usize, Duration::from_secs(20))
        .await
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(got.len(), N as usize, "messages after a persistent restart");
    assert!(sub.stats().reconnects >= 1, "{:?}", sub.stats());
    // Subscribing and unsubscribing still match their acknowledgements.
    let other = unique("kept-other");
    sub.subscribe(&other).await.expect("subscribe after resume");
    sub.unsubscribe(&topic)
        .await
        .expect("unsubscribe after resume");
    publ.publish(&topic, seq(9)).await.expect("publish");
    publ.publish(&other, seq(10)).await.expect("publish");
    publ.flush().await.expect("flush");
    let got = recv_n(&sub, 1, Duration::from_secs(10)).await;
    assert_eq!(got.first().map(|m| m.topic.as_str()), Some(other.as_str()));
    sub.close().await.expect("close");
}

/// While the broker is down, reconnect attempts back off (a listener in its
/// place counts them); when it is back, subscriptions are restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_backs_off_and_resubscribes() {
    let mut broker = start_broker();
    let port = broker.port();
    let mut config = config_for(&broker.url(), 1);
    config
        .section_mut::<MqttConfig>()
        .unwrap()
        .reconnect_delay_min = Duration::from_millis(100);
    config
        .section_mut::<MqttConfig>()
        .unwrap()
        .reconnect_delay_max = Duration::from_millis(800);
    let sub = pubsub_mqtt::connect(&config).await.expect("connect");
    let topic = unique("backoff");
    let wild = format!("{topic}/+");
    sub.subscribe(&wild).await.expect("subscribe");

    tokio::task::block_in_place(|| broker.stop());
    // A subscription asked for while the broker is down completes once it is back.
    let late_topic = format!("{topic}-late");
    let late = {
        let sub = sub.clone();
        let t = late_topic.clone();
        tokio::spawn(async move { sub.subscribe(&t).await })
    };
    // Accept and drop every connection attempt for 3 s.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind broker port");
    listener.set_nonblocking(true).expect("nonblocking");
    let t0 = Instant::now();
    let mut attempts = 0u32;
    while t0.elapsed() < Duration::from_secs(3) {
        match listener.accept() {
            Ok((s, _)) => {
                attempts += 1;
                drop(s);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        assert!(attempts < 1000, "reconnecting without pause");
    }
    drop(listener);
    println!("reconnect attempts during 3 s down: {attempts}");
    // 100, 200, 400, 800, 800 ms ... : about 6 in 3 s.
    assert!((2..=12).contains(&attempts), "attempts in 3 s: {attempts}");

    tokio::task::block_in_place(|| broker.start_again());
    let publ = pubsub_mqtt::connect(&config)
        .await
        .expect("connect publisher");
    let t0 = Instant::now();
    let mut through = false;
    while t0.elapsed() < Duration::from_secs(15) {
        publ.publish(format!("{topic}/probe"), seq(0))
            .await
            .expect("publish");
        if sub
            .recv_timeout(Duration::from_millis(200))
            .await
            .expect("recv")
            .is_some()
        {
            through = true;
            break;
        }
    }
    assert!(through, "subscription not restored within 15 s");
    tokio::time::timeout(Duration::from_secs(15), late)
        .await
        .expect("the late subscribe returned")
        .expect("join")
        .expect("subscribed after the broker came back");
    publ.publish(&late_topic, "late").await.expect("publish");
    publ.flush().await.expect("flush");
    let mut late_seen = false;
    let t1 = Instant::now();
    while !late_seen && t1.elapsed() < Duration::from_secs(10) {
        if let Some(m) = sub
            .recv_timeout(Duration::from_millis(200))
            .await
            .expect("recv")
        {
            late_seen = m.topic == late_topic;
        }
    }
    assert!(late_seen, "message on the subscription made while down");
    while sub
        .recv_timeout(Duration::from_millis(200))
        .await
        .expect("recv")
        .is_some()
    {}
    for i in 0..200 {
        publ.publish(format!("{topic}/after"), seq(i))
            .await
            .expect("publish");
    }
    publ.flush().await.expect("flush");
    let got = recv_n(&sub, 200, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 200, "messages after the restart");
    assert!(got.iter().all(|m| m.topic == format!("{topic}/after")));
    assert!(sub.stats().reconnects >= 1, "{:?}", sub.stats());
}

/// Three members of a group share 3,000 messages sent to a wildcard
/// subscription: each exactly once, and each message carries the real topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_with_wildcard_splits_and_keeps_real_topics() {
    let broker = start_broker();
    let base = unique("shared");
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut c = config_for(&broker.url(), 1);
        c.group_id = Some("workers".into());
        let m = pubsub_mqtt::connect(&c).await.expect("connect");
        m.subscribe(format!("{base}/#")).await.expect("subscribe");
        members.push(m);
    }
    let publ = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    const N: u32 = 3000;
    for i in 0..N {
        publ.publish(format!("{base}/k{}", i % 3), seq(i))
            .await
            .expect("publish");
    }
    publ.flush().await.expect("flush");
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    let mut per_member = [0u32; 3];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < N as usize && Instant::now() < deadline {
        for (i, m) in members.iter().enumerate() {
            while let Some(msg) = m
                .recv_timeout(Duration::from_millis(20))
                .await
                .expect("recv")
            {
                let s = seq_of(&msg);
                assert_eq!(msg.topic, format!("{base}/k{}", s % 3), "real topic");
                *seen.entry(s).or_default() += 1;
                per_member[i] += 1;
            }
        }
    }
    for m in &members {
        while let Some(msg) = m
            .recv_timeout(Duration::from_millis(300))
            .await
            .expect("recv")
        {
            *seen.entry(seq_of(&msg)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), N as usize, "distinct messages");
    assert!(seen.values().all(|c| *c == 1), "each exactly once");
    assert!(per_member.iter().all(|c| *c > 0), "{per_member:?}");
    println!("shared subscription split: {per_member:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_subscribe_but_never_publish() {
    let broker = start_broker();
    let ps = pubsub_mqtt::connect(&config_for(&broker.url(), 0))
        .await
        .expect("connect");
    assert_eq!(ps.capabilities().wildcards, Some("+ #"));
    let base = unique("wild");
    for bad in [
        format!("{base}/+"),
        format!("{base}/#"),
        format!("{base}/a+"),
    ] {
        let e = ps.publish(&bad, "x").await.expect_err("wildcard publish");
        assert_eq!(e.kind(), ErrorKind::InvalidTopic, "{bad}: {e}");
    }
    for bad in [format!("{base}/a#"), format!("{base}/#/x")] {
        let e = ps.subscribe(&bad).await.expect_err("malformed filter");
        assert_eq!(e.kind(), ErrorKind::InvalidTopic, "{bad}: {e}");
    }
    ps.subscribe(format!("{base}/+/temp"))
        .await
        .expect("subscribe +");
    ps.publish(format!("{base}/room1/temp"), "21")
        .await
        .expect("publish");
    ps.publish(format!("{base}/room1/hum"), "40")
        .await
        .expect("publish");
    ps.publish(format!("{base}/room2/temp"), "19")
        .await
        .expect("publish");
    ps.flush().await.expect("flush");
    let got = recv_n(&ps, 2, Duration::from_secs(10)).await;
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            format!("{base}/room1/temp").as_str(),
            format!("{base}/room2/temp").as_str()
        ]
    );
    assert!(ps
        .recv_timeout(Duration::from_millis(300))
        .await
        .expect("recv")
        .is_none());
    ps.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_from_environment_variables() {
    let broker = start_broker();
    let port = broker.port().to_string();
    let config = Config::loader()
        .no_default_file()
        .env(std::collections::HashMap::from([
            ("MSIGHT_PUBSUB_BACKEND".to_string(), "mqtt".to_string()),
            ("MSIGHT_MQTT_HOST".to_string(), "127.0.0.1".to_string()),
            ("MSIGHT_MQTT_PORT".to_string(), port),
            ("MSIGHT_MQTT_CLIENT_ID".to_string(), "from-env".to_string()),
            ("MSIGHT_MQTT_QOS".to_string(), "2".to_string()),
            ("MSIGHT_MQTT_KEEP_ALIVE".to_string(), "5s".to_string()),
        ]))
        .load()
        .expect("config from env");
    assert_eq!(config.section::<MqttConfig>().unwrap().qos, 2);
    pubsub_mqtt::register();
    let ps = PubSub::connect(&config).await.expect("connect by name");
    assert_eq!(ps.backend_name(), "mqtt");
    let topic = unique("env");
    ps.subscribe(&topic).await.expect("subscribe");
    for i in 0..100 {
        ps.publish(&topic, seq(i)).await.expect("publish");
    }
    ps.flush().await.expect("flush at QoS 2");
    let got = recv_n(&ps, 100, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 100);
    ps.close().await.expect("close");
    let log = broker.log_contents();
    assert!(log.contains("from-env"), "client id reached the broker");

    let e = Config::loader()
        .no_default_file()
        .env([("MSIGHT_MQTT_QOS", "3")])
        .load()
        .expect_err("qos 3");
    assert!(e.to_string().contains("MSIGHT_MQTT_QOS"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_is_off_by_default_and_on_when_configured() {
    let broker = start_broker();
    let topic = unique("retain");
    let publ = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    publ.publish(&topic, "not kept").await.expect("publish");
    publ.flush().await.expect("flush");
    let late = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    late.subscribe(&topic).await.expect("subscribe");
    assert!(late
        .recv_timeout(Duration::from_millis(300))
        .await
        .expect("recv")
        .is_none());
    let mut retaining = config_for(&broker.url(), 1);
    retaining.section_mut::<MqttConfig>().unwrap().retain = true;
    let publ2 = pubsub_mqtt::connect(&retaining).await.expect("connect");
    let topic2 = unique("retain");
    publ2.publish(&topic2, "kept").await.expect("publish");
    publ2.flush().await.expect("flush");
    let late2 = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    late2.subscribe(&topic2).await.expect("subscribe");
    let m = late2
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("recv")
        .expect("the retained message");
    assert_eq!(&m.payload[..], b"kept");
}

/// Two handles configured with one client id take the session from each
/// other on every connect (mosquitto 2.0 just closes the old connection);
/// connections that drop right after CONNACK keep backing off, so this
/// slows down instead of becoming a storm (29 reconnects in 3 s before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_client_id_twice_does_not_make_a_reconnect_storm() {
    let broker = start_broker();
    let mut config = config_for(&broker.url(), 1);
    config.section_mut::<MqttConfig>().unwrap().client_id = Some("twice".into());
    config
        .section_mut::<MqttConfig>()
        .unwrap()
        .reconnect_delay_max = Duration::from_secs(2);
    let a = pubsub_mqtt::connect(&config).await.expect("connect a");
    let b = pubsub_mqtt::connect(&config).await.expect("connect b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ra, rb) = (a.stats().reconnects, b.stats().reconnects);
    println!("reconnects in 3 s with a shared client id: a {ra}, b {rb}");
    assert!(ra + rb <= 10, "takeover storm: a {ra}, b {rb}");
    assert!(ra >= 1, "a was taken over and came back: {ra}");
}

/// While the broker is away, publishes queue in the client up to
/// `request_channel_capacity`; beyond that `publish` fails with `Timeout`
/// after `publish_timeout` instead of hanging, and `flush` does not wait
/// for the publish given up. After the broker is back the handle works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_the_broker_away_times_out_instead_of_hanging() {
    let mut broker = start_broker();
    let mut config = config_for(&broker.url(), 1);
    config
        .section_mut::<MqttConfig>()
        .unwrap()
        .request_channel_capacity = 20;
    config
        .section_mut::<MqttConfig>()
        .unwrap()
        .reconnect_delay_max = Duration::from_millis(300);
    config.publish_timeout = Duration::from_secs(1);
    let ps = pubsub_mqtt::connect(&config).await.expect("connect");
    let topic = unique("away");
    tokio::task::block_in_place(|| broker.stop());
    let t0 = Instant::now();
    let mut first_error = None;
    for i in 0..100u32 {
        if let Err(e) = ps.publish(&topic, seq(i)).await {
            first_error = Some((i, e));
            break;
        }
    }
    let (i, e) = first_error.expect("a publish fails while the queue is full");
    assert_eq!(e.kind(), pubsub_mqtt::ErrorKind::Timeout, "{e}");
    assert!(i >= 20, "queued before failing: {i}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    tokio::task::block_in_place(|| broker.start_again());
    // What was queued is sent after the reconnect; the publish given up is
    // not waited for.
    ps.flush().await.expect("flush after the broker is back");
    ps.subscribe(&topic)
        .await
        .expect("subscribe after the broker is back");
    let t1 = Instant::now();
    let mut back = false;
    while !back && t1.elapsed() < Duration::from_secs(10) {
        ps.publish(&topic, seq(1000)).await.expect("publish");
        while let Some(m) = ps
            .recv_timeout(Duration::from_millis(200))
            .await
            .expect("recv")
        {
            back |= seq_of(&m) == 1000;
        }
    }
    assert!(back, "the handle works again after the broker came back");
}
