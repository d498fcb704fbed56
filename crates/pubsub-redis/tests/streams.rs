//! Streams mode: consumer groups share exactly once, a dead member's
//! pending entries are claimed by another, a restarted member continues
//! where it stopped, and acknowledgement happens only when the application
//! takes a message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{config_for, recv_n, seq, seq_of, start, unique};
use pubsub_redis::RedisConfig;
use pubsub_redis::{Config, OverflowPolicy, PubSub, RedisMode};
use pubsub_testkit::brokers::RedisServer;
use pubsub_testkit::conformance::{drain, probe_until_delivered};

const WAIT: Duration = Duration::from_secs(20);

fn streams(server: &RedisServer) -> Config {
    let mut c = config_for(server, RedisMode::Streams);
    c.section_mut::<RedisConfig>().unwrap().stream_block = Duration::from_millis(100);
    c
}

async fn connect(c: &Config) -> PubSub {
    pubsub_redis::connect(c).await.expect("connect")
}

/// XPENDING summary count of `group` on `topic`.
fn pending(server: &RedisServer, topic: &str, group: &str) -> u64 {
    let out = server.cli(&["XPENDING", topic, group]);
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("XPENDING output: {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_three_shares_3000_exactly_once() {
    let server = start(RedisServer::start);
    let topic = unique("share");
    let mut c = streams(&server);
    c.group_id = Some("workers".into());
    let mut members = Vec::new();
    for _ in 0..3 {
        let m = connect(&c).await;
        m.subscribe(&topic).await.expect("subscribe");
        members.push(m);
    }
    let publ = connect(&streams(&server)).await;
    for i in 0..3000u32 {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    let mut per_member = [0usize; 3];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.values().sum::<usize>() < 3000 && Instant::now() < deadline {
        for (i, m) in members.iter().enumerate() {
            while let Some(msg) = m.recv_timeout(Duration::from_millis(20)).await.unwrap() {
                per_member[i] += 1;
                *seen.entry(seq_of(&msg)).or_default() += 1;
            }
        }
    }
    // Nothing more (no duplicates) arrives afterwards.
    for m in &members {
        assert!(m
            .recv_timeout(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(seen.len(), 3000, "distinct messages");
    assert!(seen.values().all(|c| *c == 1), "a message arrived twice");
    assert!(per_member.iter().all(|c| *c > 0), "{per_member:?}");
    println!("share per member: {per_member:?}");
    // Everything taken was acknowledged.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pending(&server, &topic, "workers") > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending(&server, &topic, "workers"), 0, "all acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_taken_messages_are_acknowledged() {
    let server = start(RedisServer::start);
    let topic = unique("ack");
    let mut c = streams(&server);
    c.group_id = Some("g".into());
    let sub = connect(&c).await;
    sub.subscribe(&topic).await.unwrap();
    let publ = connect(&streams(&server)).await;
    for i in 0..10 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    // Wait until all 10 are read from Redis (pending at this member).
    let deadline = Instant::now() + WAIT;
    while pending(&server, &topic, "g") < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pending(&server, &topic, "g"), 10);
    let got = recv_n(&sub, 4, WAIT).await;
    assert_eq!(got.len(), 4);
    let deadline = Instant::now() + WAIT;
    while pending(&server, &topic, "g") > 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pending(&server, &topic, "g"), 6, "4 taken, 4 acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_members_pending_messages_go_to_another_member() {
    let server = start(RedisServer::start);
    let topic = unique("claim");
    let mut c = streams(&server);
    c.group_id = Some("g".into());
    c.section_mut::<RedisConfig>().unwrap().stream_claim_idle = Duration::from_millis(500);
    // The doomed member reads everything into its buffer but its
    // application never takes anything.
    let doomed = connect(&c).await;
    doomed.subscribe(&topic).await.unwrap();
    let publ = connect(&streams(&server)).await;
    for i in 0..50 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while pending(&server, &topic, "g") < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pending(&server, &topic, "g"),
        50,
        "all read by the doomed member"
    );
    let taken = recv_n(&doomed, 5, WAIT).await;
    assert_eq!(taken.len(), 5);
    drop(doomed); // dies with 45 pending, never acknowledged

    let survivor = connect(&c).await;
    survivor.subscribe(&topic).await.unwrap();
    for i in 50..60 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let got: BTreeSet<u32> = recv_n(&survivor, 55, WAIT)
        .await
        .iter()
        .map(seq_of)
        .collect();
    let taken: BTreeSet<u32> = taken.iter().map(seq_of).collect();
    let expected: BTreeSet<u32> = (0..60).filter(|i| !taken.contains(i)).collect();
    assert_eq!(
        got, expected,
        "the survivor gets the dead member's pending and the new ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_subscriber_continues_where_it_stopped() {
    let server = start(RedisServer::start);
    let topic = unique("resume");
    let mut c = streams(&server);
    c.group_id = Some("g".into());
    c.section_mut::<RedisConfig>().unwrap().stream_consumer = Some("node-1".into());
    let publ = connect(&streams(&server)).await;

    let first = connect(&c).await;
    first.subscribe(&topic).await.unwrap();
    for i in 0..100 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let before: Vec<u32> = recv_n(&first, 60, WAIT).await.iter().map(seq_of).collect();
    assert_eq!(before.len(), 60);
    first.close().await.unwrap();

    // Published while the subscriber is away.
    for i in 100..200 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();

    let second = connect(&c).await;
    second.subscribe(&topic).await.unwrap();
    let after: Vec<u32> = recv_n(&second, 140, WAIT)
        .await
        .iter()
        .map(seq_of)
        .collect();
    let all: BTreeSet<u32> = before.iter().chain(after.iter()).copied().collect();
    assert_eq!(all.len(), 200, "nothing lost across the restart");
    assert_eq!(before.len() + after.len(), 200, "nothing delivered twice");
    assert!(second
        .recv_timeout(Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_reads_no_more_than_the_buffer_holds() {
    let server = start(RedisServer::start);
    let topic = unique("block");
    let mut c = streams(&server);
    c.buffer.capacity = 10;
    c.buffer.overflow = OverflowPolicy::Block;
    c.section_mut::<RedisConfig>().unwrap().stream_read_count = 5;
    let sub = connect(&c).await;
    sub.subscribe(&topic).await.unwrap();
    let publ = connect(&streams(&server)).await;
    for i in 0..2000 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let got: Vec<u32> = recv_n(&sub, 2000, WAIT).await.iter().map(seq_of).collect();
    assert_eq!(got, (0..2000).collect::<Vec<_>>(), "in order, none lost");
    assert_eq!(sub.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_trimmed_to_about_maxlen() {
    let server = start(RedisServer::start);
    let topic = unique("trim");
    let mut c = streams(&server);
    c.section_mut::<RedisConfig>().unwrap().stream_maxlen = 1000;
    let publ = connect(&c).await;
    for i in 0..5000 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let len: u64 = server.cli(&["XLEN", &topic]).trim().parse().unwrap();
    assert!((1000..2000).contains(&len), "XLEN {len}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_comes_back_after_a_redis_restart() {
    let mut server = start(RedisServer::start);
    let topic = unique("regroup");
    let mut c = streams(&server);
    c.group_id = Some("g".into());
    let sub = connect(&c).await;
    sub.subscribe(&topic).await.unwrap();
    let publ = connect(&streams(&server)).await;
    publ.publish(&topic, seq(0)).await.unwrap();
    publ.flush().await.unwrap();
    assert_eq!(recv_n(&sub, 1, WAIT).await.len(), 1);
    // Persistence is off: the stream and the group are gone after this.
    start(|| server.restart());
    let t0 = Instant::now();
    assert!(
        probe_until_delivered(&publ, &sub, &topic, WAIT).await,
        "nothing arrived after the restart"
    );
    // Everything published after the group was re-created arrives, once.
    drain(&sub, Duration::from_millis(300)).await;
    for j in 0..100 {
        publ.publish(&topic, seq(1_000_000 + j)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let got: BTreeSet<u32> = recv_n(&sub, 100, WAIT).await.iter().map(seq_of).collect();
    assert_eq!(got.len(), 100);
    assert!(sub.stats().reconnects >= 1, "{:?}", sub.stats());
    println!("group back {:?} after the restart", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_subscriber_with_a_generated_name_loses_nothing() {
    let server = start(RedisServer::start);
    let topic = unique("resume2");
    let mut c = streams(&server);
    c.group_id = Some("g".into());
    c.section_mut::<RedisConfig>().unwrap().stream_claim_idle = Duration::from_millis(500);
    let publ = connect(&streams(&server)).await;
    let first = connect(&c).await;
    first.subscribe(&topic).await.unwrap();
    for i in 0..100 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    let before: Vec<u32> = recv_n(&first, 30, WAIT).await.iter().map(seq_of).collect();
    assert_eq!(before.len(), 30);
    first.close().await.unwrap(); // 70 read from Redis but never taken
    for i in 100..150 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    // A new process: a new consumer name; the old name's pending entries
    // are claimed once they are idle for stream_claim_idle.
    let second = connect(&c).await;
    second.subscribe(&topic).await.unwrap();
    let after: Vec<u32> = recv_n(&second, 120, WAIT)
        .await
        .iter()
        .map(seq_of)
        .collect();
    let all: BTreeSet<u32> = before.iter().chain(after.iter()).copied().collect();
    assert_eq!(all.len(), 150, "nothing lost");
    assert_eq!(before.len() + after.len(), 150, "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_reports_messages_redis_refused() {
    let server = start(RedisServer::start);
    let topic = unique("wrongtype");
    server.cli(&["SET", &topic, "not a stream"]);
    let publ = connect(&streams(&server)).await;
    for i in 0..3 {
        publ.publish(&topic, seq(i)).await.unwrap(); // accepted: queued
    }
    let e = publ.flush().await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("3 message(s)") && msg.contains(&topic),
        "{msg}"
    );
    assert!(msg.contains("WRONGTYPE"), "{msg}");
    // Reported once: the next flush has nothing to report.
    publ.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_member_does_not_claim_its_own_buffered_messages_again() {
    let server = start(RedisServer::start);
    let topic = unique("selfclaim");
    let mut c = streams(&server);
    c.group_id = Some("g".into());
    c.section_mut::<RedisConfig>().unwrap().stream_claim_idle = Duration::from_millis(200);
    let sub = connect(&c).await;
    sub.subscribe(&topic).await.unwrap();
    let publ = connect(&streams(&server)).await;
    for i in 0..20 {
        publ.publish(&topic, seq(i)).await.unwrap();
    }
    publ.flush().await.unwrap();
    // The application is slow: the messages wait in the buffer through
    // several claim rounds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got: Vec<u32> = recv_n(&sub, 40, Duration::from_secs(2))
        .await
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>(), "each once, in order");
}

/// A group read whose reply is lost with the connection leaves its entry
/// pending at this consumer, where claiming never looks. After the
/// reconnect the reader takes back what is pending at it: the entry arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_read_but_lost_with_the_connection_still_arrives() {
    let server = start(RedisServer::start);
    let topic = unique("lostreply");
    let mut c = streams(&server);
    c.section_mut::<RedisConfig>().unwrap().stream_consumer = Some("c1".into());
    let sub = connect(&c).await;
    sub.subscribe_in(&topic, Some("g"))
        .await
        .expect("subscribe");
    // Add an entry and read it as this consumer in one step (a script runs
    // atomically, so the blocked reader of the handle never sees it): the
    // entry is pending at `c1` and nobody delivered it, exactly as when a
    // reply is lost with the connection.
    let script = "redis.call('XADD', KEYS[1], '*', 'payload', 'swallowed'); \
                  return redis.call('XREADGROUP', 'GROUP', 'g', 'c1', 'COUNT', '10', 'STREAMS', KEYS[1], '>')";
    let out = server.cli(&["EVAL", script, "1", &topic]);
    assert!(out.contains("swallowed"), "{out}");
    assert_eq!(pending(&server, &topic, "g"), 1);
    assert!(
        sub.recv_timeout(Duration::from_millis(500))
            .await
            .expect("recv")
            .is_none(),
        "not delivered before the connection is lost"
    );
    // Cut every connection of the handle; it reconnects by itself.
    server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let m = sub
        .recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("the swallowed entry arrives after the reconnect");
    assert_eq!(&m.payload[..], b"swallowed");
    assert!(sub.stats().reconnects >= 1, "{:?}", sub.stats());
    sub.close().await.expect("close");
}
