//! Manual ack in streams mode against a real `redis-server`, beside the
//! conformance suite's settle cases: a group member killed with SIGKILL
//! while it holds unsettled messages, `max_in_flight` seen on the server
//! (the pending entries list), trimmed pending entries, the blocking API
//! settling from a plain thread, and a Python peer reading entries that
//! carry headers.

mod common;

use std::time::Duration;

use common::{config_for, seq, seq_of, start, unique};
use pubsub_redis::{
    AckMode, BackendFactory, Config, Headers, PubSub, RedisBackend, RedisConfig, RedisMode,
};
use pubsub_testkit::brokers::RedisServer;
use pubsub_testkit::crash::member_killed_loses_nothing;
use pubsub_testkit::python::PythonPeer;

const WAIT: Duration = Duration::from_secs(20);

fn manual(server: &RedisServer) -> Config {
    let mut c = config_for(server, RedisMode::Streams);
    c.section_mut::<RedisConfig>().unwrap().stream_block = Duration::from_millis(100);
    c.ack = AckMode::Manual;
    c.ack_wait = Duration::from_secs(1);
    c
}

/// The number of entries pending at `consumer` (XPENDING extended form:
/// id, consumer, idle time and count of each, a line apiece).
fn pending_at(server: &RedisServer, topic: &str, group: &str, consumer: &str) -> u64 {
    let out = server.cli(&["XPENDING", topic, group, "-", "+", "10000", consumer]);
    out.lines().filter(|l| l.trim() == consumer).count() as u64
}

/// A group member in its own process takes its share of 2,000 messages,
/// settles none, and is killed with SIGKILL: the other member gets every
/// one of them once `ack_wait` (1 s) has passed.
#[test]
fn a_member_killed_holding_unsettled_messages_loses_none() {
    let mut server = None;
    let report = member_killed_loses_nothing(
        "a_member_killed_holding_unsettled_messages_loses_none",
        BackendFactory::of::<RedisBackend>(),
        || manual(server.insert(RedisServer::start())),
    );
    if let Some(r) = report {
        assert!(r.held_by_the_killed >= 50, "{r:?}");
        assert!(r.redelivered_within < Duration::from_secs(30), "{r:?}");
    }
}

/// A group member that closes while it holds unsettled entries, has more
/// in its receive buffer and a read under way releases them all at close:
/// the other member has every one long before `ack_wait` (30 s here), and
/// nothing stays pending at the closed consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_what_the_member_still_has_pending() {
    member_leaving_releases_what_it_has_pending(false).await;
}

/// The same when the member unsubscribes instead (as `pubsub sub --ack
/// manual` does when stopped, before it releases what it buffered): what
/// its ended reader had read goes to the other member at once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_releases_what_the_member_still_has_pending() {
    member_leaving_releases_what_it_has_pending(true).await;
}

async fn member_leaving_releases_what_it_has_pending(unsubscribe: bool) {
    const N: u32 = 300;
    let server = start(RedisServer::start);
    let mut c = manual(&server);
    c.ack_wait = Duration::from_secs(30);
    c.max_in_flight = 100;
    c.group_id = Some("releasing".into());
    let closing_consumer = "closingconsumer";
    let mut closing_config = c.clone();
    closing_config
        .section_mut::<RedisConfig>()
        .unwrap()
        .stream_consumer = Some(closing_consumer.into());
    let topic = unique("release");
    let closing = pubsub_redis::connect(&closing_config).await.unwrap();
    closing.subscribe(&topic).await.unwrap();
    let publ = pubsub_redis::connect(&config_for(&server, RedisMode::Streams))
        .await
        .unwrap();
    for i in 0..N {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    // It takes 10 and settles 5; the rest of its reads wait in its buffer.
    let mut settled = std::collections::BTreeSet::new();
    let mut held = Vec::new();
    for _ in 0..10 {
        let m = closing
            .recv_timeout(WAIT)
            .await
            .unwrap()
            .expect("a message");
        if held.len() < 5 {
            held.push(m);
        } else {
            settled.insert(seq_of(&m));
            m.ack().unwrap();
        }
    }
    let pending =
        tokio::task::block_in_place(|| pending_at(&server, &topic, "releasing", closing_consumer));
    assert!(pending > 5, "it has more than it holds pending: {pending}");
    let other = pubsub_redis::connect(&c).await.unwrap();
    other.subscribe(&topic).await.unwrap();
    let t0 = std::time::Instant::now();
    if unsubscribe {
        closing.unsubscribe(&topic).await.unwrap();
    } else {
        closing.close().await.unwrap();
    }
    drop(held);
    let mut got = settled.clone();
    while got.len() < N as usize && t0.elapsed() < Duration::from_secs(20) {
        if let Some(m) = other.recv_timeout(Duration::from_secs(1)).await.unwrap() {
            got.insert(seq_of(&m));
            m.ack().unwrap();
        }
    }
    let took = t0.elapsed();
    let how = if unsubscribe { "unsubscribe" } else { "close" };
    println!(
        "{how} holding {pending} pending (5 held); all {} at the other member {took:?} after it",
        got.len()
    );
    assert_eq!(got.len(), N as usize, "lost {}", N as usize - got.len());
    assert!(
        took < Duration::from_secs(20),
        "released at {how}: {took:?}"
    );
    let left =
        tokio::task::block_in_place(|| pending_at(&server, &topic, "releasing", closing_consumer));
    assert_eq!(left, 0, "nothing stays pending at the consumer that left");
    other.close().await.unwrap();
    if unsubscribe {
        closing.close().await.unwrap();
    }
}

/// With `max_in_flight = 5`, the server never has more than 5 entries
/// pending at the handle while it holds them; the next is read when one
/// is settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_is_what_redis_has_pending() {
    let server = start(RedisServer::start);
    let mut c = manual(&server);
    c.max_in_flight = 5;
    c.group_id = Some("bounded".into());
    let consumer = "boundedconsumer";
    c.section_mut::<RedisConfig>().unwrap().stream_consumer = Some(consumer.into());
    let sub = pubsub_redis::connect(&c).await.unwrap();
    let topic = unique("bounded");
    sub.subscribe(&topic).await.unwrap();
    let publ = pubsub_redis::connect(&config_for(&server, RedisMode::Streams))
        .await
        .unwrap();
    for i in 0..40 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let mut held = Vec::new();
    let mut max_pending = 0;
    for _ in 0..40 {
        let m = sub.recv_timeout(WAIT).await.unwrap().expect("a message");
        held.push(m);
        let p = tokio::task::block_in_place(|| pending_at(&server, &topic, "bounded", consumer));
        max_pending = max_pending.max(p);
        assert!(
            p <= 5,
            "{p} entries pending at the handle with max_in_flight 5"
        );
        if held.len() == 5 {
            held.remove(0).ack().unwrap();
        }
    }
    for m in held {
        m.ack().unwrap();
    }
    println!("most entries pending at the handle: {max_pending}");
    assert_eq!(max_pending, 5, "the bound was reached");
}

/// One read brings more entries than `max_in_flight_bytes` lets the
/// handle hold: the entries of the read that fit are delivered (as one
/// batch), the next waits until one is settled, and every entry arrives
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bytes_cuts_a_read_and_keeps_the_order() {
    let server = start(RedisServer::start);
    let mut c = manual(&server);
    c.max_in_flight_bytes = 300;
    c.group_id = Some("bytes".into());
    let sub = pubsub_redis::connect(&c).await.unwrap();
    let topic = unique("bytes");
    sub.subscribe(&topic).await.unwrap();
    let publ = pubsub_redis::connect(&config_for(&server, RedisMode::Streams))
        .await
        .unwrap();
    let payload = |i: u32| {
        let mut p = seq(i);
        p.resize(100, b'.');
        p
    };
    for i in 0..20 {
        publ.publish(&topic, payload(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let mut held = Vec::new();
    for i in 0..3 {
        let m = sub.recv_timeout(WAIT).await.unwrap().expect("a message");
        assert_eq!(seq_of(&m), i);
        held.push(m);
    }
    let more = sub.recv_timeout(Duration::from_millis(300)).await.unwrap();
    assert!(
        more.is_none(),
        "a fourth message of 100 bytes with max_in_flight_bytes 300"
    );
    for m in held {
        m.ack().unwrap();
    }
    for i in 3..20 {
        let m = sub.recv_timeout(WAIT).await.unwrap().expect("a message");
        assert_eq!(seq_of(&m), i, "in order");
        assert_eq!(m.attempt, 1);
        m.ack().unwrap();
    }
    let extra = sub.recv_timeout(Duration::from_millis(300)).await.unwrap();
    assert!(extra.is_none(), "each entry once: {extra:?}");
}

/// An entry trimmed away (MAXLEN) while pending is acknowledged and
/// counted as discarded when it would be delivered again, never returned
/// as an empty message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_entry_trimmed_away_is_counted_not_delivered() {
    let server = start(RedisServer::start);
    let mut c = manual(&server);
    c.ack_wait = Duration::from_millis(500);
    let topic = unique("trimmed");
    let sub = pubsub_redis::connect(&c).await.unwrap();
    sub.subscribe_in(&topic, Some("trim")).await.unwrap();
    let publ = pubsub_redis::connect(&config_for(&server, RedisMode::Streams))
        .await
        .unwrap();
    publ.publish(&topic, seq(1)).await.unwrap();
    publ.flush().await.unwrap();
    let m = sub.recv_timeout(WAIT).await.unwrap().expect("the entry");
    drop(m); // unsettled: pending
    tokio::task::block_in_place(|| server.cli(&["XTRIM", &topic, "MAXLEN", "0"]));
    let deadline = std::time::Instant::now() + WAIT;
    while sub.stats().discarded == 0 && std::time::Instant::now() < deadline {
        assert!(
            sub.recv_timeout(Duration::from_millis(100))
                .await
                .unwrap()
                .is_none(),
            "a trimmed entry came back"
        );
    }
    assert_eq!(sub.stats().discarded, 1, "{:?}", sub.stats());
    let pending = tokio::task::block_in_place(|| server.cli(&["XPENDING", &topic, "trim"]));
    assert!(pending.starts_with('0'), "acknowledged: {pending}");
}

/// The blocking API settles from a plain thread: ack, nak (redelivered),
/// term (to the dead letter).
#[test]
fn the_blocking_api_settles_from_a_plain_thread() {
    let server = RedisServer::start();
    let mut c = manual(&server);
    c.dead_letter_topic = Some(unique("blocking-dlq"));
    let topic = unique("blocking");
    std::thread::spawn(move || {
        let ps = pubsub_redis::connect_blocking(&c).unwrap();
        let dead =
            pubsub_redis::connect_blocking(&config_for(&server, RedisMode::Streams)).unwrap();
        dead.subscribe(c.dead_letter_topic.as_deref().unwrap())
            .unwrap();
        ps.subscribe_in(&topic, Some("blocking")).unwrap();
        for i in 0..3 {
            ps.publish(&topic, seq(i)).unwrap();
        }
        ps.flush().unwrap();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let m = ps.recv_timeout(WAIT).unwrap().expect("a message");
            seen.push((seq_of(&m), m.attempt));
            match (seq_of(&m), m.attempt) {
                (0, _) => m.ack().unwrap(),
                (1, 1) => m.nak(Duration::from_millis(200)).unwrap(),
                (1, _) => m.ack().unwrap(),
                _ => m.term().unwrap(),
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, [(0, 1), (1, 1), (1, 2), (2, 1)]);
        let letter = dead.recv_timeout(WAIT).unwrap().expect("the dead letter");
        assert_eq!(seq_of(&letter), 2);
        assert_eq!(letter.headers.get("dead-letter-reason"), Some("term"));
        ps.close().unwrap();
    })
    .join()
    .expect("the plain thread");
}

/// A Python peer reading the stream sees the payload bytes unchanged in the
/// field `payload`, and the headers in `header:<key>` fields after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_peer_reads_payload_and_headers_of_an_entry() {
    let server = start(RedisServer::start);
    let topic = unique("py-headers");
    let publ: PubSub = pubsub_redis::connect(&config_for(&server, RedisMode::Streams))
        .await
        .unwrap();
    let payload: Vec<u8> = (0..=255u8).collect();
    publ.publish_with_headers(
        &topic,
        Headers::from([("trace", "7f"), ("hop", "a"), ("hop", "b")]),
        payload.clone(),
    )
    .await
    .unwrap();
    publ.flush().await.unwrap();
    let script = r#"
import sys, redis
port, topic = int(sys.argv[1]), sys.argv[2]
r = redis.Redis(host="127.0.0.1", port=port)
for _id, fields in r.xrange(topic):
    print("PAYLOAD " + fields[b"payload"].hex(), flush=True)
    for k, v in fields.items():
        if k != b"payload":
            print("FIELD " + k.decode() + "=" + v.decode(), flush=True)
"#;
    let port = server.port().to_string();
    let lines = tokio::task::spawn_blocking(move || {
        let mut py = PythonPeer::spawn(script, &[&port, &topic]);
        (0..3).map(|_| py.line(WAIT)).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(lines[0], format!("PAYLOAD {hex}"), "payload unchanged");
    // redis-py returns the fields as a dict: a repeated key keeps its last value.
    assert!(
        lines[1..].contains(&"FIELD header:trace=7f".to_string()),
        "{lines:?}"
    );
    assert!(
        lines[1..]
            .iter()
            .any(|l| l.starts_with("FIELD header:hop=")),
        "{lines:?}"
    );
}
