//! NATS-specific behaviour against real servers: failover lists, the
//! `MSIGHT_NATS_*` environment, payload limits, topic rules, slow consumers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pubsub_core::Section;
use pubsub_nats::NatsConfig;
use pubsub_nats::{Config, ErrorKind, OverflowPolicy};
use pubsub_testkit::brokers::{free_port, NatsServer};

fn start() -> NatsServer {
    tokio::task::block_in_place(NatsServer::start)
}

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_servers_down_still_connects() {
    let live = start();
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![
        format!("nats://127.0.0.1:{}", free_port()),
        format!("nats://127.0.0.1:{}", free_port()),
        live.url(),
    ];
    let t0 = Instant::now();
    let ps = pubsub_nats::connect(&c)
        .await
        .expect("third server answers");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    ps.subscribe("failover.x").await.unwrap();
    ps.publish("failover.x", "hi").await.unwrap();
    assert!(ps
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn python_style_environment_connects() {
    let a = start();
    let b = start();
    let vars = env(&[
        ("MSIGHT_PUBSUB_BACKEND", "nats".into()),
        (
            "MSIGHT_NATS_SERVERS",
            format!("['{}', '{}']", a.url(), b.url()),
        ),
        ("MSIGHT_NATS_USE_TLS", "no".into()),
    ]);
    let c = Config::loader().env(vars).no_default_file().load().unwrap();
    assert_eq!(
        c.section::<NatsConfig>().unwrap().servers,
        [a.url(), b.url()]
    );
    pubsub_nats::register();
    let ps = pubsub_nats::PubSub::connect(&c)
        .await
        .expect("registry connect");
    assert_eq!(ps.backend_name(), "nats");
    ps.close().await.unwrap();

    let vars = env(&[("MSIGHT_NATS_SERVERS", format!("{},{}", a.url(), b.url()))]);
    let c = Config::loader().env(vars).no_default_file().load().unwrap();
    pubsub_nats::connect(&c)
        .await
        .expect("comma-separated list");

    for (var, value, fragment) in [
        (
            "MSIGHT_NATS_SERVERS",
            format!("['{}'", a.url()),
            "Python list literal",
        ),
        (
            "MSIGHT_NATS_SERVERS",
            "http://x:1".to_string(),
            "unknown URL scheme",
        ),
        (
            "MSIGHT_NATS_USE_TLS",
            "perhaps".to_string(),
            "MSIGHT_NATS_USE_TLS",
        ),
    ] {
        let r = Config::loader()
            .env(env(&[(var, value.clone())]))
            .no_default_file()
            .load()
            .and_then(|c| {
                c.section::<NatsConfig>()?.validate()?;
                Ok(c)
            });
        let e = r.expect_err(&value);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains(fragment), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_limit_comes_from_the_server() {
    let s = tokio::task::block_in_place(|| NatsServer::builder().max_payload(4096).start());
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![s.url()];
    let ps = pubsub_nats::connect(&c).await.unwrap();
    assert_eq!(ps.capabilities().max_payload, Some(4096));
    ps.subscribe("limit.x").await.unwrap();
    ps.publish("limit.x", vec![7u8; 4096])
        .await
        .expect("exactly at the limit");
    let e = ps.publish("limit.x", vec![7u8; 4097]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge);
    assert!(e.to_string().contains("4096"), "{e}");
    let m = ps
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload.len(), 4096);
    assert_eq!(ps.stats().published, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn subjects_nats_cannot_publish_to_are_refused() {
    let s = start();
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![s.url()];
    let ps = pubsub_nats::connect(&c).await.unwrap();
    for bad in ["", " ", "a b", "a.*", "a.>", ">", "a..b", ".a", "a."] {
        let e = ps.publish(bad, "x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTopic, "{bad:?}: {e}");
    }
    // Wildcard subscriptions work.
    ps.subscribe("wild.*.end").await.unwrap();
    ps.subscribe("deep.>").await.unwrap();
    ps.publish("wild.x.end", "1").await.unwrap();
    ps.publish("deep.a.b.c", "2").await.unwrap();
    let mut topics = vec![];
    for _ in 0..2 {
        topics.push(
            ps.recv_timeout(Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap()
                .topic,
        );
    }
    topics.sort();
    assert_eq!(topics, ["deep.a.b.c", "wild.x.end"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_consumer_overflow_is_bounded_and_counted() {
    let s = start();
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![s.url()];
    c.buffer.capacity = 100;
    c.buffer.overflow = OverflowPolicy::DropOldest;
    let sub = pubsub_nats::connect(&c).await.unwrap();
    let publ = pubsub_nats::connect(&c).await.unwrap();
    sub.subscribe("slow.x").await.unwrap();
    const N: u32 = 10_000;
    for i in 0..N {
        let mut p = vec![0u8; 1024];
        p[..4].copy_from_slice(&i.to_be_bytes());
        publ.publish("slow.x", p).await.unwrap();
    }
    publ.flush().await.unwrap();
    // Wait (bounded) until every message reached the subscriber's buffer.
    let t0 = Instant::now();
    while sub.stats().received < N as u64 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = sub.stats();
    assert_eq!(stats.received, N as u64, "{stats:?}");
    assert_eq!(stats.dropped, N as u64 - 100, "{stats:?}");
    // drop_oldest: the buffer holds the newest 100, in order.
    let mut got = vec![];
    while let Some(m) = sub.recv_timeout(Duration::from_millis(100)).await.unwrap() {
        got.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
    }
    assert_eq!(got, (N - 100..N).collect::<Vec<_>>());
}

/// `block`: a full buffer holds the forwarding task back (whole batches
/// wait), nothing is dropped, and order is kept, while the application
/// reads slower than messages arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_loses_nothing_and_keeps_order() {
    let s = start();
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![s.url()];
    c.buffer.capacity = 50;
    c.buffer.overflow = OverflowPolicy::Block;
    let sub = pubsub_nats::connect(&c).await.unwrap();
    let publ = pubsub_nats::connect(&c).await.unwrap();
    sub.subscribe("block.x").await.unwrap();
    const N: u32 = 20_000;
    for i in 0..N {
        publ.publish("block.x", i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    publ.flush().await.unwrap();
    let mut got = Vec::with_capacity(N as usize);
    let t0 = Instant::now();
    while got.len() < N as usize && t0.elapsed() < Duration::from_secs(30) {
        match sub.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            Some(m) => got.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap())),
            None => break,
        }
        // Slower than the arrivals at first: the buffer stays full.
        if got.len() < 200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(got.len(), N as usize, "lost messages: {:?}", sub.stats());
    assert!(got.iter().copied().eq(0..N), "order changed");
    assert_eq!(sub.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_info_describes_the_server() {
    let s = start();
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![s.url()];
    let ps = pubsub_nats::connect(&c).await.unwrap();
    let info = ps.broker_info();
    assert!(info.server.unwrap().starts_with("nats-server"));
    assert!(info.version.unwrap().starts_with("2."), "nats-server 2.x");
    assert_eq!(info.max_payload, Some(1024 * 1024));
    assert!(!info.tls);
    assert!(info.address.unwrap().contains(&s.port().to_string()));
}

/// Core NATS keeps no message: `ack = "manual"` is refused at connect with
/// what to use instead (JetStream mode), before any network traffic (a dead address gives
/// the same error, not a connect error).
#[tokio::test(flavor = "multi_thread")]
async fn manual_ack_is_refused_with_what_to_use_instead() {
    let server = start();
    for url in [server.url(), format!("nats://127.0.0.1:{}", free_port())] {
        let mut c = Config::default();
        c.section_mut::<NatsConfig>().unwrap().servers = vec![url];
        c.ack = pubsub_core::AckMode::Manual;
        let e = pubsub_nats::connect(&c)
            .await
            .expect_err("manual ack on core NATS");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        let text = e.to_string();
        for hint in [
            "ack",
            "core NATS",
            "nats.mode = \"jetstream\"",
            "MSIGHT_NATS_MODE",
        ] {
            assert!(text.contains(hint), "{hint:?} missing from: {text}");
        }
        let e = pubsub_nats::connect_blocking(&c).expect_err("blocking too");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    }
}

/// Headers: order across keys and repeated keys kept (whatever order
/// async-nats's hash map gives), values NATS would trim refused, the
/// reserved order header refused, and a message with headers too large for
/// the server's `max_payload` refused as such.
#[tokio::test(flavor = "multi_thread")]
async fn headers_keep_their_order_and_bad_ones_are_refused() {
    use pubsub_core::Headers;
    let server = start();
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![server.url()];
    let ps = pubsub_nats::connect(&c).await.unwrap();
    assert!(ps.capabilities().headers);
    ps.subscribe("headers.order").await.unwrap();
    let sent: Vec<Headers> = (0..20)
        .map(|i| {
            Headers::from([
                ("z-last", format!("{i}")),
                ("hop", "camera".into()),
                ("a-first", "x".into()),
                ("hop", "detector".into()),
                ("Mixed-Case", "Ünïcode inside".into()),
            ])
        })
        .collect();
    for h in &sent {
        ps.publish_with_headers("headers.order", h.clone(), "p")
            .await
            .unwrap();
    }
    ps.flush().await.unwrap();
    for h in &sent {
        let m = ps
            .recv_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("a message with headers");
        assert_eq!(&m.headers, h);
        assert!(m.headers.get(pubsub_nats::HEADER_ORDER).is_none());
    }
    for bad in [
        Headers::from([("k", "trailing ")]),
        Headers::from([(pubsub_nats::HEADER_ORDER, "k")]),
    ] {
        let e = ps
            .publish_with_headers("headers.order", bad, "p")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidHeader, "{e}");
    }
    let max = ps.capabilities().max_payload.unwrap();
    let e = ps
        .publish_with_headers(
            "headers.order",
            Headers::from([("k", "v".repeat(100))]),
            vec![0u8; max - 10],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge, "{e}");
    assert!(ps
        .recv_timeout(Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
}
