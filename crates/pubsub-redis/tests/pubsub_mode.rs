//! `pubsub` mode: a burst of large messages reaches a live subscriber with
//! none lost, publishing is pipelined, groups are refused with a clear
//! error, and channels are named exactly like the topic.

mod common;

use std::time::{Duration, Instant};

use common::{config_for, recv_n, seq, seq_of, start, unique};
use pubsub_redis::RedisConfig;
use pubsub_redis::{ErrorKind, PubSub, RedisMode};
use pubsub_testkit::brokers::RedisServer;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_2000_messages_of_64k_reaches_a_live_subscriber_none_lost() {
    let server = start(RedisServer::start);
    let c = config_for(&server, RedisMode::PubSub);
    let sub = pubsub_redis::connect(&c).await.unwrap();
    let publ = pubsub_redis::connect(&c).await.unwrap();
    let topic = unique("burst");
    sub.subscribe(&topic).await.unwrap();
    const N: u32 = 2000;
    const SIZE: usize = 64 * 1024;
    // The application reads as it can, concurrently.
    let reader = {
        let sub = sub.clone();
        tokio::spawn(async move {
            let mut got = Vec::with_capacity(N as usize);
            let deadline = Instant::now() + WAIT;
            while got.len() < N as usize && Instant::now() < deadline {
                match sub.recv_timeout(Duration::from_secs(5)).await.unwrap() {
                    Some(m) => {
                        assert_eq!(m.payload.len(), SIZE);
                        got.push(seq_of(&m));
                    }
                    None => break,
                }
            }
            got
        })
    };
    let t0 = Instant::now();
    for i in 0..N {
        let mut p = vec![(i % 251) as u8; SIZE];
        p[..4].copy_from_slice(&seq(i));
        publ.publish(&topic, p).await.unwrap();
    }
    publ.flush().await.unwrap();
    let published = t0.elapsed();
    let got = reader.await.unwrap();
    let received = t0.elapsed();
    let stats = sub.stats();
    println!(
        "burst: published {N} x 64 KiB in {published:?}, all received in {received:?}; lost {}; subscriber {stats:?}",
        N as usize - got.len()
    );
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every message, in order");
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.reconnects, 0, "Redis did not cut the subscriber off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_publish_is_pipelined() {
    let server = start(RedisServer::start);
    let c = config_for(&server, RedisMode::PubSub);
    let topic = unique("rate");
    let mut sub_config = c.clone();
    sub_config.buffer.capacity = 100_000; // holds all of them: read after publishing
    let sub = pubsub_redis::connect(&sub_config).await.unwrap();
    sub.subscribe(&topic).await.unwrap();
    const N: u32 = 50_000;
    let (elapsed, publ_stats) = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || {
            let publ = pubsub_redis::connect_blocking(&c).unwrap();
            let t0 = Instant::now();
            for i in 0..N {
                publ.publish(&topic, seq(i)).unwrap();
            }
            publ.flush().unwrap();
            let elapsed = t0.elapsed();
            let stats = publ.stats();
            publ.close().unwrap();
            (elapsed, stats)
        }
    })
    .await
    .unwrap();
    let got = recv_n(&sub, N as usize, WAIT).await;
    let rate = f64::from(N) / elapsed.as_secs_f64();
    println!("blocking publish: {N} messages in {elapsed:?} = {rate:.0} msg/s");
    assert_eq!(publ_stats.published, u64::from(N));
    assert_eq!(got.len(), N as usize, "subscriber {:?}", sub.stats());
    // A floor that holds on a loaded machine; the proof that publish does
    // not wait for Redis is `publish_returns_while_redis_is_paused`.
    assert!(rate > 2_000.0, "{rate:.0} msg/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_returns_while_redis_is_paused_and_flush_waits() {
    let server = start(RedisServer::start);
    let c = config_for(&server, RedisMode::PubSub);
    let topic = unique("paused");
    let sub = pubsub_redis::connect(&c).await.unwrap();
    sub.subscribe(&topic).await.unwrap();
    let publ = pubsub_redis::connect_blocking(&c).unwrap();
    publ.publish(&topic, seq(0)).unwrap();
    publ.flush().unwrap();
    // Redis answers no write command (PUBLISH included) for 1.5 s.
    server.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    let paused = Instant::now();
    let (publish_took, flush_took) = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || {
            let t0 = Instant::now();
            for i in 1..=1000 {
                publ.publish(&topic, seq(i)).unwrap();
            }
            let publish_took = t0.elapsed();
            publ.flush().unwrap();
            let flush_took = t0.elapsed();
            publ.close().unwrap();
            (publish_took, flush_took)
        }
    })
    .await
    .unwrap();
    println!(
        "while paused: 1000 publishes took {publish_took:?}, flush returned after {flush_took:?}"
    );
    assert!(
        publish_took < Duration::from_millis(500),
        "publish waited for Redis: {publish_took:?}"
    );
    assert!(
        paused.elapsed() >= Duration::from_millis(1400),
        "flush waited for the answers"
    );
    assert_eq!(recv_n(&sub, 1001, WAIT).await.len(), 1001);
}

/// A site-wide group id (Python nodes set one per node) does not stop a
/// publisher: the group applies to subscriptions, and subscribing in a
/// group is what pubsub mode refuses, naming streams mode. Async API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_in_pubsub_mode_is_refused_by_subscribe_not_by_connect() {
    let server = start(RedisServer::start);
    let mut c = config_for(&server, RedisMode::PubSub);
    let listener: PubSub = pubsub_redis::connect(&c).await.unwrap();
    listener.subscribe("grouped.t").await.unwrap();
    c.group_id = Some("workers".into());
    let ps = pubsub_redis::connect(&c)
        .await
        .expect("a publisher with a group_id connects");
    assert!(!ps.capabilities().groups);
    ps.publish("grouped.t", "from a node with a group id")
        .await
        .unwrap();
    ps.flush().await.unwrap();
    let got = recv_n(&listener, 1, WAIT).await;
    assert_eq!(&got[0].payload[..], b"from a node with a group id");
    for e in [
        ps.subscribe("grouped.t").await.unwrap_err(),
        ps.subscribe_in("grouped.t", Some("g")).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("group_id") && msg.contains("mode = \"streams\""),
            "{msg}"
        );
    }
    // A plain subscription of the same handle is fine.
    ps.subscribe_in("grouped.t", None).await.unwrap();
    ps.close().await.unwrap();
    listener.close().await.unwrap();
}

/// The same with the blocking API.
#[test]
fn a_group_in_pubsub_mode_is_refused_by_subscribe_not_by_connect_blocking() {
    let server = start(RedisServer::start);
    let mut c = config_for(&server, RedisMode::PubSub);
    c.group_id = Some("workers".into());
    let ps = pubsub_redis::connect_blocking(&c).expect("a publisher with a group_id connects");
    ps.publish("grouped.b", "x").unwrap();
    ps.flush().unwrap();
    let e = ps.subscribe("grouped.b").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("mode = \"streams\""), "{e}");
    ps.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_is_named_exactly_like_the_topic() {
    let server = start(RedisServer::start);
    let c = config_for(&server, RedisMode::PubSub);
    let sub: PubSub = pubsub_redis::connect(&c).await.unwrap();
    let info = sub.broker_info();
    assert!(
        info.version
            .as_deref()
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())),
        "{info:?}"
    );
    assert_eq!(info.server.as_deref(), Some("redis-server (standalone)"));
    assert!(!info.tls);
    let topic = "camera.front/raw:1";
    sub.subscribe(topic).await.unwrap();
    let out = server.cli(&["PUBSUB", "CHANNELS"]);
    assert!(out.lines().any(|l| l.trim() == topic), "{out}");
    let receivers = server.cli(&["PUBLISH", topic, "from-redis-cli"]);
    assert_eq!(receivers.trim(), "1");
    let m = sub.recv_timeout(WAIT).await.unwrap().expect("message");
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        (topic, &b"from-redis-cli"[..])
    );
    sub.unsubscribe(topic).await.unwrap();
    let out = server.cli(&["PUBSUB", "NUMSUB", topic]);
    assert!(out.lines().nth(1).map(str::trim) == Some("0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_application_drops_are_counted_not_silent() {
    let server = start(RedisServer::start);
    let mut c = config_for(&server, RedisMode::PubSub);
    c.buffer.capacity = 100;
    let sub = pubsub_redis::connect(&c).await.unwrap();
    let publ = pubsub_redis::connect(&c).await.unwrap();
    let topic = unique("slow");
    sub.subscribe(&topic).await.unwrap();
    for i in 0..1000 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while sub.stats().received < 1000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = sub.stats();
    assert_eq!(s.received, 1000, "{s:?}");
    assert_eq!(s.dropped, 900, "{s:?}");
    // The default policy keeps the newest.
    let got = recv_n(&sub, 100, WAIT).await;
    assert_eq!(seq_of(&got[0]), 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_dropped_without_close_still_sends_what_it_accepted() {
    let server = start(RedisServer::start);
    let c = config_for(&server, RedisMode::PubSub);
    let sub = pubsub_redis::connect(&c).await.unwrap();
    let topic = unique("dropped");
    sub.subscribe(&topic).await.unwrap();
    {
        let publ = pubsub_redis::connect(&c).await.unwrap();
        for i in 0..1000 {
            publ.publish(&topic, seq(i)).await.unwrap();
        }
    } // dropped, never flushed or closed
    let got = recv_n(&sub, 1000, WAIT).await;
    assert_eq!(got.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_in_pubsub_mode_stays_bounded_and_counts_drops() {
    let server = start(RedisServer::start);
    let mut c = config_for(&server, RedisMode::PubSub);
    c.buffer.capacity = 10;
    c.buffer.max_bytes = 1000;
    c.buffer.overflow = pubsub_redis::OverflowPolicy::Block;
    c.section_mut::<RedisConfig>().unwrap().max_payload = 1000; // the queue in front of the buffer: 1000 bytes
    let sub = pubsub_redis::connect(&c).await.unwrap();
    let publ = pubsub_redis::connect(&config_for(&server, RedisMode::PubSub))
        .await
        .unwrap();
    let topic = unique("blockps");
    sub.subscribe(&topic).await.unwrap();
    for i in 0..1000 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    // Wait until the client has read everything from Redis (the counters
    // stop moving); a few messages wait in the queue, uncounted until taken.
    let deadline = Instant::now() + WAIT;
    let mut last = sub.stats();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sub.stats();
        if now == last && now.received > 900 {
            break;
        }
        last = now;
    }
    let got = recv_n(&sub, 1000, Duration::from_secs(2)).await;
    let s = sub.stats();
    assert_eq!(s.received, 1000, "{s:?}");
    assert!(got.len() < 100, "bounded: {} buffered", got.len());
    assert_eq!(got.len() as u64 + s.dropped, 1000, "{s:?}");
    assert_eq!(s.reconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_while_redis_is_down_returns_in_time() {
    let mut server = start(RedisServer::start);
    for mode in [RedisMode::PubSub, RedisMode::Streams] {
        start(|| server.start_again());
        let mut c = config_for(&server, mode);
        c.close_timeout = Duration::from_secs(2);
        let ps = pubsub_redis::connect(&c).await.unwrap();
        let topic = unique("down");
        ps.subscribe(&topic).await.unwrap();
        start(|| server.stop());
        for i in 0..10 {
            ps.publish(&topic, seq(i)).await.unwrap(); // queued
        }
        let t0 = Instant::now();
        let e = ps.close().await.unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{mode:?}: {e}");
        assert!(
            took < Duration::from_secs(3),
            "{mode:?}: close took {took:?}"
        );
        assert_eq!(
            ps.publish(&topic, "x").await.unwrap_err().kind(),
            ErrorKind::Closed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_redis_is_down_fails_in_time_once_the_queue_is_full() {
    let mut server = start(RedisServer::start);
    let mut c = config_for(&server, RedisMode::PubSub);
    c.publish_timeout = Duration::from_millis(500);
    c.close_timeout = Duration::from_secs(1);
    let ps = pubsub_redis::connect(&c).await.unwrap();
    start(|| server.stop());
    let t0 = Instant::now();
    let mut accepted = 0u32;
    let mut error = None;
    for i in 0..100_000u32 {
        match ps.publish("down", seq(i)).await {
            Ok(()) => accepted += 1,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let took = t0.elapsed();
    let e = error.expect("the queue fills up while Redis is down");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(accepted >= 16_000, "queued before failing: {accepted}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    println!("Redis down: {accepted} accepted, then {e} after {took:?}");
}
