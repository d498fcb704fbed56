//! JetStream mode against a real `nats-server -js`, beside the conformance
//! suite: a subscriber away gets what was published meanwhile, a stream or
//! consumer made by hand that conflicts is refused naming both settings, a
//! consumer deleted by hand (or lost with a server on memory storage) is
//! made again, missed heartbeats are a warning, fetches are bounded in
//! bytes, `flush` says what the stream refused, the deliver policies, and
//! bad input (stream name, replicas, JetStream off) named in the error.

mod common;

use std::time::{Duration, Instant};

use common::{js_config, js_manual, raw, seq, seq_of, unique};
use pubsub_nats::{
    AckMode, Config, DeliverFrom, ErrorKind, NatsConfig, PubSub, StreamDiscard, StreamStorage,
};
use pubsub_testkit::brokers::NatsServer;

const WAIT: Duration = Duration::from_secs(20);

fn start() -> NatsServer {
    tokio::task::block_in_place(NatsServer::start_jetstream)
}

fn nats(c: &mut Config) -> &mut NatsConfig {
    c.section_mut::<NatsConfig>().unwrap()
}

/// Receive `n` messages (acknowledged when they are to be settled) or
/// what came within `within`.
async fn take(ps: &PubSub, n: usize, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        if let Some(m) = ps
            .recv_timeout(Duration::from_millis(100))
            .await
            .expect("recv")
        {
            got.push(seq_of(&m));
            m.ack().expect("ack");
        }
    }
    got
}

async fn publish_range(ps: &PubSub, topic: &str, range: std::ops::Range<u32>) {
    for i in range {
        ps.publish(topic, seq(i)).await.expect("publish");
    }
    ps.flush().await.expect("flush");
}

/// A plain subscriber with a consumer name (`nats.consumer`) closes; what
/// is published while it is away arrives when it subscribes again, and
/// nothing it had acknowledged comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_subscriber_away_gets_everything_when_back() {
    let server = start();
    let topic = unique("away", "named");
    let mut c = js_manual(vec![server.url()], Duration::from_secs(5));
    nats(&mut c).consumer = Some("reader".into());
    let publ = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    let sub = pubsub_nats::connect(&c).await.unwrap();
    sub.subscribe(topic.as_str()).await.unwrap();
    publish_range(&publ, &topic, 0..10).await;
    assert_eq!(take(&sub, 10, WAIT).await, (0..10).collect::<Vec<_>>());
    sub.close().await.unwrap();
    publish_range(&publ, &topic, 10..110).await;
    let back = pubsub_nats::connect(&c).await.unwrap();
    back.subscribe(topic.as_str()).await.unwrap();
    // A pull the closed handle left open on the server (up to its expiry)
    // may have taken some of them: those come after ack_wait, out of order.
    let got = take(&back, 100, WAIT).await;
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (10..110).collect::<Vec<_>>(),
        "what was published while away, each once"
    );
    assert!(
        back.recv_timeout(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none(),
        "nothing acknowledged before comes back"
    );
}

/// A stream made by hand whose settings differ from those the
/// configuration sets is refused, naming the key and both values; one the
/// configuration says nothing about is used as it is (bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_stream_made_by_hand_is_refused_naming_both() {
    let server = start();
    let (_client, js) = raw(&server.url()).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "msight_hand".into(),
        subjects: vec!["hand.>".into()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .expect("stream made by hand");
    let topic = unique("hand", "made");
    for (key, set, values) in [
        (
            "nats.stream_max_age",
            (|n: &mut NatsConfig| n.stream_max_age = Some(Duration::from_secs(24 * 3600)))
                as fn(&mut NatsConfig),
            ["1h", "1day"],
        ),
        (
            "nats.stream_storage",
            |n: &mut NatsConfig| n.stream_storage = Some(StreamStorage::File),
            ["memory", "file"],
        ),
        (
            "nats.stream_max_msgs",
            |n: &mut NatsConfig| n.stream_max_msgs = Some(500),
            ["no limit", "500"],
        ),
    ] {
        let mut c = js_config(vec![server.url()]);
        set(nats(&mut c));
        let ps = pubsub_nats::connect(&c).await.unwrap();
        let e = ps.subscribe(topic.as_str()).await.expect_err(key);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        let text = e.to_string();
        assert!(text.contains(key) && text.contains("msight_hand"), "{text}");
        for v in values {
            assert!(text.contains(v), "{v:?} missing from: {text}");
        }
        let e = ps
            .publish(topic.as_str(), "x")
            .await
            .expect_err("publish too");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        println!("{key}: {text}");
    }
    // Nothing set: the stream is used as it is.
    let c = js_config(vec![server.url()]);
    let ps = pubsub_nats::connect(&c).await.unwrap();
    ps.subscribe(topic.as_str()).await.expect("bound");
    publish_range(&ps, &topic, 0..3).await;
    assert_eq!(take(&ps, 3, WAIT).await, [0, 1, 2]);
    // A fixed stream name whose subjects overlap the stream made by hand.
    let mut c = js_config(vec![server.url()]);
    nats(&mut c).stream = "MINE".into();
    nats(&mut c).stream_subjects = vec!["hand.>".into()];
    let ps = pubsub_nats::connect(&c).await.unwrap();
    let e = ps.subscribe(topic.as_str()).await.expect_err("overlap");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(
        e.to_string().contains("nats.stream") && e.to_string().contains("overlap"),
        "{e}"
    );
}

/// A fixed stream (`nats.stream` without `{token}`) takes only the topics
/// its subjects capture; another topic is refused naming the subjects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_stream_takes_only_its_subjects() {
    let server = start();
    let mut c = js_config(vec![server.url()]);
    nats(&mut c).stream = "EVENTS".into();
    nats(&mut c).stream_subjects = vec!["events.>".into()];
    let ps = pubsub_nats::connect(&c).await.unwrap();
    ps.subscribe("events.a").await.unwrap();
    publish_range(&ps, "events.a", 0..2).await;
    assert_eq!(take(&ps, 2, WAIT).await, [0, 1]);
    let e = ps.publish("other.a", "x").await.expect_err("outside");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("nats.stream_subjects"), "{e}");
    let (_client, js) = raw(&server.url()).await;
    let mut s = js.get_stream("EVENTS").await.unwrap();
    assert_eq!(s.info().await.unwrap().config.subjects, ["events.>"]);
}

/// A consumer deleted by hand (the raw client, as `nats consumer rm`
/// would): the subscription notices (the server says so, or its pulls go
/// silent), makes it again and delivers what follows; a group's durable
/// and a plain subscription's ephemeral consumer alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_by_hand_is_made_again() {
    let server = start();
    let (_client, js) = raw(&server.url()).await;
    let publ = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    for group in [Some("deleted"), None] {
        let topic = unique("gone", "consumer");
        let sub = pubsub_nats::connect(&js_manual(vec![server.url()], Duration::from_secs(5)))
            .await
            .unwrap();
        sub.subscribe_in(topic.as_str(), group).await.unwrap();
        publish_range(&publ, &topic, 0..5).await;
        assert_eq!(take(&sub, 5, WAIT).await.len(), 5);
        let mut stream = js.get_stream("msight_gone").await.unwrap();
        let names: Vec<String> = {
            use futures::StreamExt;
            stream
                .consumer_names()
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .map(|n| n.unwrap())
                .collect()
        };
        let name = names
            .iter()
            .find(|n| n.starts_with("deleted") == group.is_some())
            .expect("its consumer")
            .clone();
        // nats-server 2.9.10 sometimes fails a deletion racing with the
        // consumer's own writes ("directory not empty"): tried again.
        let mut deleted = Err(String::new());
        for _ in 0..10 {
            deleted = stream
                .delete_consumer(&name)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            if deleted.is_ok() || stream.consumer_info(&name).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Err(e) = &deleted {
            assert!(
                stream.consumer_info(&name).await.is_err(),
                "not deleted: {e}"
            );
        }
        let t0 = Instant::now();
        publish_range(&publ, &topic, 5..25).await;
        let got = take(&sub, 20, Duration::from_secs(30)).await;
        let back = t0.elapsed();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, (5..25).collect::<Vec<_>>(), "after the deletion");
        let info = stream.info().await.unwrap().clone();
        println!(
            "{} consumer {name} deleted by hand: the 20 messages after it delivered within {back:?}; the stream has {} consumer(s)",
            if group.is_some() { "group" } else { "ephemeral" },
            info.state.consumer_count
        );
        sub.close().await.unwrap();
    }
}

/// With the stream on memory storage, a server restart loses the stream
/// and its consumers: the publisher makes the stream again, the subscriber
/// its consumer, and what is published afterwards arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_memory_storage_lost_with_the_server_is_made_again() {
    let mut server = start();
    let topic = unique("memory", "lost");
    let mut c = js_manual(vec![server.url()], Duration::from_secs(5));
    nats(&mut c).stream_storage = Some(StreamStorage::Memory);
    // The default 1 GiB is more than the test server's memory store.
    nats(&mut c).stream_max_bytes = Some(64 << 20);
    let sub = pubsub_nats::connect(&c).await.unwrap();
    sub.subscribe_in(topic.as_str(), Some("mem")).await.unwrap();
    let mut pc = js_config(vec![server.url()]);
    nats(&mut pc).stream_storage = Some(StreamStorage::Memory);
    nats(&mut pc).stream_max_bytes = Some(64 << 20);
    let publ = pubsub_nats::connect(&pc).await.unwrap();
    publish_range(&publ, &topic, 0..5).await;
    assert_eq!(take(&sub, 5, WAIT).await.len(), 5);
    tokio::task::block_in_place(|| server.restart());
    let t0 = Instant::now();
    // Publishes during the recovery: the stream comes back with the first.
    for i in 5..25u32 {
        publ.publish(topic.as_str(), seq(i)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publ.flush()
        .await
        .expect("flush after the stream was made again");
    let got = take(&sub, 20, Duration::from_secs(30)).await;
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (5..25).collect::<Vec<_>>(), "after the restart");
    println!(
        "memory stream lost with the server: 20 later messages within {:?}",
        t0.elapsed()
    );
}

/// The server hangs (SIGSTOP) for longer than a pull's heartbeats may be
/// missed: a warning is logged, the subscription is not ended, and once
/// the server goes on, so does delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeats_are_a_warning_and_delivery_goes_on() {
    pubsub_testkit::logs::capture();
    let server = start();
    let topic = unique("hb", "missed");
    let sub = pubsub_nats::connect(&js_manual(vec![server.url()], Duration::from_secs(30)))
        .await
        .unwrap();
    sub.subscribe_in(topic.as_str(), Some("hb")).await.unwrap();
    let publ = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    publish_range(&publ, &topic, 0..3).await;
    assert_eq!(take(&sub, 3, WAIT).await.len(), 3);
    let pid = server.pid().expect("running").to_string();
    let signal = |s: &str| {
        let ok = std::process::Command::new("kill")
            .args([s, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {s} {pid}");
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal("-CONT");
    let logs = pubsub_testkit::logs::captured();
    assert!(logs.contains("missed heartbeats"), "no warning logged");
    publish_range(&publ, &topic, 3..13).await;
    let got = take(&sub, 10, WAIT).await;
    assert_eq!(got, (3..13).collect::<Vec<_>>(), "delivery went on");
}

/// Fetches are bounded in bytes: with frames of 700 KiB and
/// `max_in_flight_bytes` of 2 MiB, the handle holds at most two unsettled
/// frames and the consumer has no more than that delivered and
/// unacknowledged; in auto ack mode `buffer.max_bytes` bounds the
/// buffer the same way and nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_are_bounded_in_bytes() {
    let server = start();
    let (_client, js) = raw(&server.url()).await;
    let frame = vec![7u8; 700 << 10];
    let publ = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    for manual in [true, false] {
        let topic = unique("frames", if manual { "manual" } else { "auto" });
        let mut c = js_config(vec![server.url()]);
        if manual {
            c.ack = AckMode::Manual;
            c.max_in_flight_bytes = 2 << 20;
        } else {
            c.buffer.max_bytes = 2 << 20;
        }
        let sub = pubsub_nats::connect(&c).await.unwrap();
        sub.subscribe_in(topic.as_str(), Some("frames"))
            .await
            .unwrap();
        for i in 0..12u32 {
            let mut f = frame.clone();
            f[..4].copy_from_slice(&i.to_be_bytes());
            publ.publish(topic.as_str(), f).await.unwrap();
        }
        publ.flush().await.unwrap();
        let consumer_name = format!("frames_{}", topic.replace('.', "_"));
        let mut held = Vec::new();
        let mut most_pending = 0;
        let mut seen = Vec::new();
        while seen.len() < 12 {
            // Let the fetcher fill what it may, then look.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let pending = js
                .get_stream("msight_frames")
                .await
                .unwrap()
                .consumer_info(&consumer_name)
                .await
                .unwrap_or_else(|e| panic!("consumer info {consumer_name}: {e:?}"))
                .num_ack_pending;
            most_pending = most_pending.max(pending);
            assert!(
                pending <= 2,
                "{pending} frames delivered and unacknowledged"
            );
            let m = sub.recv_timeout(WAIT).await.unwrap().expect("a frame");
            seen.push(seq_of(&m));
            held.push(m);
            if manual {
                while let Some(m) = sub.recv_timeout(Duration::from_millis(100)).await.unwrap() {
                    seen.push(seq_of(&m));
                    held.push(m);
                }
                assert!(held.len() <= 2, "{} unsettled frames held", held.len());
                held.remove(0).ack().unwrap();
            } else {
                held.clear();
            }
        }
        for m in held {
            m.ack().unwrap();
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
        assert_eq!(sub.stats().dropped, 0, "{:?}", sub.stats());
        println!(
            "{} ack: most frames of 700 KiB delivered and unacknowledged at once: {most_pending}",
            if manual { "manual" } else { "auto" }
        );
        sub.close().await.unwrap();
    }
}

/// `flush` fails when the stream refused messages (`discard = "new"` at
/// its `max_msgs`), saying how many and why; the next flush is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_says_how_many_the_stream_refused_and_why() {
    let server = start();
    let mut c = js_config(vec![server.url()]);
    nats(&mut c).stream_max_msgs = Some(5);
    nats(&mut c).stream_discard = Some(StreamDiscard::New);
    let ps = pubsub_nats::connect(&c).await.unwrap();
    let topic = unique("full", "refused");
    for i in 0..8 {
        ps.publish(topic.as_str(), seq(i)).await.expect("accepted");
    }
    let e = ps.flush().await.expect_err("3 refused");
    let text = e.to_string();
    println!("{text}");
    assert!(text.contains("3 message(s)"), "{text}");
    assert!(
        text.contains("msight_full") && text.contains("maximum messages"),
        "{text}"
    );
    ps.flush().await.expect("nothing new refused");
}

/// Where a new consumer starts: `all` replays the stream, `by_start_sequence`
/// from a sequence, `by_start_time` from a time, `new` (default) only
/// what comes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliver_policy_says_where_a_consumer_starts() {
    let server = start();
    let topic = unique("replay", "policy");
    let publ = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    publish_range(&publ, &topic, 0..5).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish_range(&publ, &topic, 5..8).await;
    let start_time = humantime_serde::re::humantime::format_rfc3339(between).to_string();
    for (policy, set, want) in [
        (
            "new",
            Box::new(|_: &mut NatsConfig| {}) as Box<dyn Fn(&mut NatsConfig)>,
            vec![],
        ),
        (
            "all",
            Box::new(|n: &mut NatsConfig| n.deliver_policy = DeliverFrom::All),
            (0..8).collect(),
        ),
        (
            "by_start_sequence",
            Box::new(|n: &mut NatsConfig| {
                n.deliver_policy = DeliverFrom::ByStartSequence;
                n.deliver_start_sequence = Some(4);
            }),
            (3..8).collect(),
        ),
        (
            "by_start_time",
            Box::new(move |n: &mut NatsConfig| {
                n.deliver_policy = DeliverFrom::ByStartTime;
                n.deliver_start_time = Some(start_time.clone());
            }),
            (5..8).collect(),
        ),
        (
            "last",
            Box::new(|n: &mut NatsConfig| n.deliver_policy = DeliverFrom::Last),
            vec![7],
        ),
    ] {
        let mut c = js_config(vec![server.url()]);
        set(nats(&mut c));
        let sub = pubsub_nats::connect(&c).await.unwrap();
        sub.subscribe(topic.as_str()).await.unwrap();
        let got = take(&sub, want.len() + 1, Duration::from_millis(1500)).await;
        assert_eq!(got, want, "deliver_policy = {policy}");
        sub.close().await.unwrap();
    }
}

/// A consumer made by hand under the name a group would use, with another
/// filter or another `ack_wait`: the subscription is refused, naming the
/// key and both values, instead of reading the wrong messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_consumer_is_refused_naming_both() {
    let server = start();
    let topic = unique("chk", "consumer");
    let publ = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    publish_range(&publ, &topic, 0..1).await;
    let (_client, js) = raw(&server.url()).await;
    let stream = js.get_stream("msight_chk").await.unwrap();
    let name = format!("g_{}", topic.replace('.', "_"));
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: "chk.other".into(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let sub = pubsub_nats::connect(&js_manual(vec![server.url()], Duration::from_secs(1)))
        .await
        .unwrap();
    let e = sub
        .subscribe_in(topic.as_str(), Some("g"))
        .await
        .expect_err("other filter");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("group_id") && text.contains("chk.other") && text.contains(&topic),
        "{text}"
    );
    stream.delete_consumer(&name).await.unwrap();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: topic.clone(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 6,
            max_ack_pending: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let e = sub
        .subscribe_in(topic.as_str(), Some("g"))
        .await
        .expect_err("other ack_wait");
    let text = e.to_string();
    assert!(
        text.contains("ack_wait") && text.contains("30s") && text.contains("1s"),
        "{text}"
    );
}

/// nats-server 2.9.10 does not know `filter_subjects` (2.10): it answers a
/// consumer creation that asks for it with a consumer without it. This is
/// why the consumer config the server answers with is checked against
/// what was asked (this library asks for `filter_subject` alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_drops_filter_subjects_it_does_not_know() {
    let server = start();
    let publ = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    publish_range(&publ, "quirk.a", 0..1).await;
    let (client, _js) = raw(&server.url()).await;
    let body = serde_json::json!({
        "stream_name": "msight_quirk",
        "config": {
            "durable_name": "multi",
            "ack_policy": "explicit",
            "filter_subjects": ["quirk.a", "quirk.b"],
        }
    });
    let reply = client
        .request(
            "$JS.API.CONSUMER.DURABLE.CREATE.msight_quirk.multi",
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let config = &answer["config"];
    println!("asked filter_subjects, got: {config}");
    if config.get("filter_subjects").is_some() {
        println!("this server keeps filter_subjects (2.10 or newer)");
    } else {
        assert!(answer.get("error").is_none(), "{answer}");
        assert_eq!(config.get("filter_subject"), None, "{config}");
    }
}

/// Bad input, each named in its error: a stream name JetStream refuses, a
/// replica count above the cluster size (a single server), JetStream not
/// enabled on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_key() {
    let server = start();
    for bad in ["a.b", "has space", "a*", "x>"] {
        let mut c = js_config(vec![server.url()]);
        nats(&mut c).stream = bad.into();
        let e = pubsub_nats::connect(&c).await.expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        assert!(e.to_string().contains("nats.stream"), "{e}");
    }
    let mut c = js_config(vec![server.url()]);
    nats(&mut c).stream_replicas = Some(3);
    let ps = pubsub_nats::connect(&c).await.unwrap();
    let e = ps
        .subscribe("replicas.a")
        .await
        .expect_err("3 replicas on one server");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("nats.stream_replicas"), "{e}");
    println!("{e}");
    let e = ps
        .publish("replicas.a", "x")
        .await
        .expect_err("publish too");
    assert!(e.to_string().contains("nats.stream_replicas"), "{e}");
    let plain = tokio::task::block_in_place(NatsServer::start);
    let e = pubsub_nats::connect(&js_config(vec![plain.url()]))
        .await
        .expect_err("JetStream off");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(
        e.to_string().contains("nats.mode") && e.to_string().contains("-js"),
        "{e}"
    );
    println!("{e}");
    let e = pubsub_nats::connect_blocking(&js_config(vec![plain.url()])).expect_err("blocking");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
}
