//! The cases of the suite. Each takes a fresh harness (a fresh broker) and
//! panics on failure; a case that does not apply says why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pubsub_core::{blocking, ErrorKind, Message, PubSub};

use super::{
    assert_quiet, connect, drain, probe_until_delivered, seq, seq_of, settled, take_n, unique,
    Harness, Outcome, WAIT,
};

/// Empty, binary (all 256 byte values) and max-size payloads arrive
/// unchanged; one byte over the max is `PayloadTooLarge`.
pub async fn round_trip_payloads(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    let publ = connect(h).await;
    let topic = unique("payloads");
    sub.subscribe(&topic).await.expect("subscribe");
    let max = sub.capabilities().max_payload.unwrap_or(1 << 20);
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let payloads = [Vec::new(), all_bytes, big];
    for p in &payloads {
        publ.publish(&topic, p.clone()).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    let got = take_n(&sub, payloads.len(), WAIT).await;
    assert_eq!(got.len(), payloads.len(), "payloads received");
    let mut got: Vec<Vec<u8>> = got.into_iter().map(|m| m.payload.to_vec()).collect();
    got.sort_by_key(Vec::len);
    for (g, p) in got.iter().zip(payloads.iter()) {
        assert!(g == p, "payload of {} bytes changed in transit", p.len());
    }
    let over = publ
        .publish(&topic, vec![0u8; max + 1])
        .await
        .expect_err("one byte over the max payload");
    assert_eq!(over.kind(), ErrorKind::PayloadTooLarge, "{over}");
    assert!(over.to_string().contains(&max.to_string()), "{over}");
    publ.close().await.expect("close");
    sub.close().await.expect("close");
    Outcome::Passed
}

/// Two plain subscribers of one topic each receive every message.
pub async fn two_plain_subscribers_each_get_everything(h: &mut dyn Harness) -> Outcome {
    let a = connect(h).await;
    let b = connect(h).await;
    let publ = connect(h).await;
    let topic = unique("fanout");
    a.subscribe_in(&topic, None).await.expect("subscribe a");
    b.subscribe_in(&topic, None).await.expect("subscribe b");
    for i in 0..200 {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    for (name, s) in [("a", &a), ("b", &b)] {
        let got: BTreeSet<u32> = take_n(s, 200, WAIT).await.iter().map(seq_of).collect();
        assert_eq!(got.len(), 200, "subscriber {name} got {} of 200", got.len());
    }
    Outcome::Passed
}

/// A group of three shares 3,000 messages: each delivered exactly once,
/// every member gets some.
pub async fn group_of_three_shares_messages_exactly_once(h: &mut dyn Harness) -> Outcome {
    let probe = connect(h).await;
    if !probe.capabilities().groups {
        return Outcome::Skipped("backend declares no groups".into());
    }
    let topic = unique("group");
    let group = unique("workers").replace('.', "-");
    let mut members = Vec::new();
    for _ in 0..3 {
        let m = connect(h).await;
        m.subscribe_in(&topic, Some(&group))
            .await
            .expect("subscribe");
        members.push(m);
    }
    const N: u32 = 3000;
    for i in 0..N {
        probe.publish(&topic, seq(i)).await.expect("publish");
    }
    probe.flush().await.expect("flush");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut per_member = vec![0usize; 3];
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    while seen.values().sum::<usize>() < N as usize && Instant::now() < deadline {
        for (i, m) in members.iter().enumerate() {
            while let Some(msg) = m
                .recv_timeout(Duration::from_millis(20))
                .await
                .expect("recv")
            {
                per_member[i] += 1;
                *seen.entry(seq_of(&settled(msg))).or_default() += 1;
            }
        }
    }
    for m in &members {
        while let Some(msg) = m
            .recv_timeout(Duration::from_millis(300))
            .await
            .expect("recv")
        {
            *seen.entry(seq_of(&settled(msg))).or_default() += 1;
        }
    }
    let dups: Vec<_> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(k, _)| *k)
        .collect();
    assert!(
        dups.is_empty(),
        "delivered more than once: {} messages, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
    assert_eq!(
        seen.len(),
        N as usize,
        "distinct messages received by the group"
    );
    assert!(
        per_member.iter().all(|c| *c > 0),
        "every member gets some: {per_member:?}"
    );
    println!("group share per member: {per_member:?}");
    Outcome::Passed
}

/// A subscriber of one topic receives nothing published to another.
pub async fn topics_are_isolated(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    let publ = connect(h).await;
    let mine = unique("mine");
    let other = unique("other");
    sub.subscribe(&mine).await.expect("subscribe");
    publ.publish(&other, "not for you").await.expect("publish");
    publ.publish(&mine, "for you").await.expect("publish");
    publ.flush().await.expect("flush");
    let got = take_n(&sub, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, mine);
    assert_eq!(&got[0].payload[..], b"for you");
    assert_quiet(&sub, Duration::from_millis(300), "topic isolation").await;
    Outcome::Passed
}

/// Several subscriptions on one connection; each message says its topic.
pub async fn several_subscriptions_tag_messages_by_topic(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    let publ = connect(h).await;
    let topics: Vec<String> = (0..3).map(|i| unique(&format!("multi{i}"))).collect();
    for t in &topics {
        sub.subscribe(t).await.expect("subscribe");
    }
    assert_eq!(sub.subscriptions().len(), 3);
    for round in 0..20u32 {
        for (i, t) in topics.iter().enumerate() {
            publ.publish(t, format!("{i}:{round}"))
                .await
                .expect("publish");
        }
    }
    publ.flush().await.expect("flush");
    let got = take_n(&sub, 60, WAIT).await;
    assert_eq!(got.len(), 60);
    for m in &got {
        let text = std::str::from_utf8(&m.payload).expect("utf8");
        let i: usize = text.split(':').next().unwrap().parse().unwrap();
        assert_eq!(
            m.topic, topics[i],
            "message {text} tagged with the wrong topic"
        );
    }
    Outcome::Passed
}

/// After `unsubscribe` returns, nothing more of that topic arrives.
pub async fn unsubscribe_stops_delivery(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    let publ = connect(h).await;
    let t1 = unique("unsub");
    let t2 = unique("stay");
    sub.subscribe(&t1).await.expect("subscribe");
    sub.subscribe(&t2).await.expect("subscribe");
    publ.publish(&t1, "before").await.expect("publish");
    publ.flush().await.expect("flush");
    assert_eq!(take_n(&sub, 1, WAIT).await.len(), 1);
    sub.unsubscribe(&t1).await.expect("unsubscribe");
    for _ in 0..10 {
        publ.publish(&t1, "after").await.expect("publish");
    }
    publ.publish(&t2, "still here").await.expect("publish");
    publ.flush().await.expect("flush");
    let got = take_n(&sub, 1, WAIT).await;
    assert_eq!(got.len(), 1, "the other topic still delivers");
    assert_eq!(
        got[0].topic, t2,
        "a message of the unsubscribed topic arrived"
    );
    assert_quiet(&sub, Duration::from_millis(500), "after unsubscribe").await;
    let e = sub.unsubscribe(&t1).await.expect_err("unsubscribe twice");
    assert_eq!(e.kind(), ErrorKind::NotSubscribed);
    sub.unsubscribe(&t2).await.expect("unsubscribe");
    let e = sub.recv().await.expect_err("recv with no subscription");
    assert_eq!(e.kind(), ErrorKind::NotSubscribed, "{e}");
    Outcome::Passed
}

/// Publish N, then close without flushing: a live subscriber gets all N.
pub async fn publish_then_close_delivers_everything(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    let publ = connect(h).await;
    let topic = unique("close");
    sub.subscribe(&topic).await.expect("subscribe");
    const N: u32 = 2000;
    for i in 0..N {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.close().await.expect("close");
    let got: BTreeSet<u32> = take_n(&sub, N as usize, WAIT)
        .await
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(got.len(), N as usize, "messages delivered after close");
    Outcome::Passed
}

/// After close, every call fails with `Closed`.
pub async fn every_call_after_close_fails_closed(h: &mut dyn Harness) -> Outcome {
    let ps = connect(h).await;
    let topic = unique("closed");
    ps.subscribe(&topic).await.expect("subscribe");
    ps.close().await.expect("close");
    assert!(ps.is_closed());
    let results = [
        ("subscribe", ps.subscribe(&topic).await.err()),
        ("unsubscribe", ps.unsubscribe(&topic).await.err()),
        ("publish", ps.publish(&topic, "x").await.err()),
        ("flush", ps.flush().await.err()),
        ("recv", ps.recv().await.err()),
        (
            "recv_timeout",
            ps.recv_timeout(Duration::from_millis(10)).await.err(),
        ),
        ("messages", ps.messages().err()),
        ("close", ps.close().await.err()),
    ];
    for (call, err) in results {
        let e = err.unwrap_or_else(|| panic!("{call} after close succeeded"));
        assert_eq!(e.kind(), ErrorKind::Closed, "{call}: {e}");
    }
    Outcome::Passed
}

/// One publisher to one subscriber keeps order, where the backend claims it.
pub async fn order_is_kept(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    if !sub.capabilities().ordering {
        return Outcome::Skipped("backend does not claim ordering".into());
    }
    let publ = connect(h).await;
    let topic = unique("order");
    sub.subscribe(&topic).await.expect("subscribe");
    const N: u32 = 2000;
    for i in 0..N {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    let got: Vec<u32> = take_n(&sub, N as usize, WAIT)
        .await
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(got.len(), N as usize);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "order broken");
    Outcome::Passed
}

/// The blocking API from a plain thread: connect, subscribe, publish,
/// listen, recv_timeout, unsubscribe, close; `listen` with no subscription
/// is an error.
pub async fn blocking_api_from_a_plain_thread(h: &mut dyn Harness) -> Outcome {
    let factory = h.factory();
    let config = h.config();
    let topic = unique("blocking");
    tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            let ps = blocking::PubSub::connect_with(&factory, &config).expect("connect");
            let e = ps.listen().expect_err("listen before subscribe");
            assert_eq!(e.kind(), ErrorKind::NotSubscribed, "{e}");
            ps.subscribe(&topic).expect("subscribe");
            for i in 0..100 {
                ps.publish(&topic, seq(i)).expect("publish");
            }
            ps.flush().expect("flush");
            let got: Vec<Message> = ps
                .listen()
                .expect("listen")
                .take(100)
                .map(settled)
                .collect();
            assert_eq!(got.len(), 100);
            assert!(got.iter().all(|m| m.topic == topic));
            assert_eq!(
                ps.recv_timeout(Duration::from_millis(50)).expect("recv"),
                None
            );
            let stats = ps.stats();
            assert_eq!(stats.published, 100);
            assert!(stats.received >= 100, "{stats:?}");
            ps.unsubscribe(&topic).expect("unsubscribe");
            ps.close().expect("close");
            assert_eq!(
                ps.publish(&topic, "x").unwrap_err().kind(),
                ErrorKind::Closed
            );
        })
        .join()
        .expect("plain thread");
    })
    .await
    .expect("blocking task");
    Outcome::Passed
}

/// One blocking handle shared by eight threads, 500 messages each; all arrive.
pub async fn blocking_handle_shared_by_eight_threads(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    let topic = unique("threads");
    sub.subscribe(&topic).await.expect("subscribe");
    let factory = h.factory();
    let config = h.config();
    let t = topic.clone();
    tokio::task::spawn_blocking(move || {
        let ps = Arc::new(blocking::PubSub::connect_with(&factory, &config).expect("connect"));
        std::thread::scope(|s| {
            for thread in 0..8u32 {
                let ps = &ps;
                let t = &t;
                s.spawn(move || {
                    for i in 0..500u32 {
                        ps.publish(t, seq(thread * 1000 + i)).expect("publish");
                    }
                });
            }
        });
        ps.flush().expect("flush");
        assert_eq!(ps.stats().published, 4000);
        ps.close().expect("close");
    })
    .await
    .expect("publisher threads");
    let got: BTreeSet<u32> = take_n(&sub, 4000, WAIT).await.iter().map(seq_of).collect();
    assert_eq!(got.len(), 4000, "messages from eight threads");
    Outcome::Passed
}

/// The blocking API called on a tokio worker thread works and does not panic.
pub async fn blocking_api_inside_tokio_runtime(h: &mut dyn Harness) -> Outcome {
    // This async fn runs on the test's runtime: calling blocking methods
    // here is exactly the misuse that must not panic.
    let ps = blocking::PubSub::connect_with(&h.factory(), &h.config()).expect("connect");
    let topic = unique("nested");
    ps.subscribe(&topic).expect("subscribe");
    // Well past tokio's cooperative budget (128 operations per task poll):
    // a bridge that ignored it would spin forever here.
    for i in 0..2000 {
        ps.publish(&topic, seq(i)).expect("publish");
    }
    ps.publish(&topic, "inside").expect("publish");
    ps.flush().expect("flush");
    let mut last = None;
    for _ in 0..2001 {
        last = ps.recv_timeout(WAIT).expect("recv").map(settled);
        assert!(last.is_some(), "a message within the wait");
    }
    let m = last.expect("the last message");
    assert_eq!(&m.payload[..], b"inside");
    ps.close().expect("close");
    drop(ps);
    // Dropping an unclosed handle inside the runtime must not panic either.
    let ps = blocking::PubSub::connect_with(&h.factory(), &h.config()).expect("connect");
    ps.publish(&topic, "dropped").expect("publish");
    drop(ps);
    Outcome::Passed
}

/// Connecting where nothing listens fails within the connect timeout,
/// from the async and the blocking API.
pub async fn connect_to_dead_port_fails_in_time(h: &mut dyn Harness) -> Outcome {
    let Some(mut config) = h.dead_config() else {
        return Outcome::Skipped("in-process backend has no address".into());
    };
    config.connect_timeout = Duration::from_secs(2);
    let limit = config.connect_timeout + Duration::from_millis(1500);
    let t0 = Instant::now();
    let e = PubSub::connect_with(&h.factory(), &config)
        .await
        .expect_err("connect to a dead port");
    let took = t0.elapsed();
    assert!(took <= limit, "async connect took {took:?}");
    assert!(
        matches!(e.kind(), ErrorKind::Connect | ErrorKind::Timeout),
        "kind {:?}: {e}",
        e.kind()
    );
    let factory = h.factory();
    let t0 = Instant::now();
    let e = tokio::task::spawn_blocking(move || {
        blocking::PubSub::connect_with(&factory, &config)
            .expect_err("blocking connect to a dead port")
    })
    .await
    .expect("blocking task");
    let took = t0.elapsed();
    assert!(took <= limit, "blocking connect took {took:?}");
    assert!(
        matches!(e.kind(), ErrorKind::Connect | ErrorKind::Timeout),
        "{e}"
    );
    println!("dead port error: {e}");
    Outcome::Passed
}

/// After the broker restarts on the same port, the backend reconnects and
/// resubscribes by itself; messages published afterwards arrive.
pub async fn resubscribes_after_broker_restart(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    let publ = connect(h).await;
    let topic = unique("restart");
    sub.subscribe(&topic).await.expect("subscribe");
    publ.publish(&topic, seq(0)).await.expect("publish");
    publ.flush().await.expect("flush");
    assert_eq!(take_n(&sub, 1, WAIT).await.len(), 1, "before restart");
    if !super::restart_broker(h).await {
        return Outcome::Skipped("in-process backend has no broker to restart".into());
    }
    let t0 = Instant::now();
    assert!(
        probe_until_delivered(&publ, &sub, &topic, Duration::from_secs(30)).await,
        "no message arrived within 30 s of the restart"
    );
    let recovered = t0.elapsed();
    drain(&sub, Duration::from_millis(200)).await;
    for j in 0..100u32 {
        publ.publish(&topic, seq(1_000_000 + j))
            .await
            .expect("publish after restart");
    }
    publ.flush().await.expect("flush after restart");
    let got = take_n(&sub, 100, WAIT).await;
    assert_eq!(got.len(), 100, "messages published after the restart");
    let stats = sub.stats();
    println!("recovered in {recovered:?}; subscriber stats {stats:?}");
    assert!(stats.reconnects >= 1, "reconnect counted: {stats:?}");
    // The stream API sees the same connection.
    publ.publish(&topic, seq(7)).await.expect("publish");
    publ.flush().await.expect("flush");
    let mut stream = sub.messages().expect("stream");
    let m = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("stream item in time")
        .map(settled)
        .expect("stream not ended");
    assert_eq!(seq_of(&m), 7);
    Outcome::Passed
}

/// The broker stopped and started again while four threads publish: the
/// backend keeps what it promises ([`super::restart_under_load`]).
pub async fn restart_under_load_keeps_what_the_backend_promises(h: &mut dyn Harness) -> Outcome {
    super::restart_under_load(h).await
}
