//! Redis restarted under load: four threads publish 10,000 messages in
//! total through one blocking handle while `redis-server` is killed at one
//! third and started again half a second later. In `streams` mode (at least
//! once; the server keeps its data in an append-only file synced on every
//! write) every message arrives, to a plain subscriber and to a group
//! member. In `pubsub` mode (at most once) what is lost was published around
//! the outage. Every loop is bounded in count and time; figures are printed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::config_for;
use pubsub_core::testkit::brokers::RedisServer;
use pubsub_redis::RedisConfig;
use pubsub_redis::{PubSub, RedisMode, Stats};

const TOTAL: u32 = 10_000;
const TOPIC: &str = "faults.load";

fn seq(m: &pubsub_redis::Message) -> u32 {
    u32::from_be_bytes(m.payload[..4].try_into().unwrap())
}

/// Collects distinct sequence numbers until all `TOTAL` arrived, nothing
/// arrived for 10 s, or 90 s passed.
fn collector(sub: PubSub) -> (Arc<Mutex<BTreeSet<u32>>>, tokio::task::JoinHandle<()>) {
    let received = Arc::new(Mutex::new(BTreeSet::new()));
    let r = received.clone();
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            match sub.recv_timeout(Duration::from_secs(10)).await {
                Ok(Some(m)) => {
                    let mut r = r.lock().unwrap();
                    r.insert(seq(&m));
                    if r.len() == TOTAL as usize {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    (received, task)
}

struct Run {
    /// (sequence, when publish returned, accepted)
    published: Vec<(u32, Instant, bool)>,
    publisher: Stats,
    stopped_at: Instant,
    started_at: Instant,
    outage: Duration,
}

/// Four threads, one blocking handle, `TOTAL` messages; the server is
/// killed at one third and started again 500 ms later.
async fn publish_through_a_restart(server: &mut RedisServer, mode: RedisMode) -> Run {
    let c = config_for(server, mode);
    let next = Arc::new(AtomicU32::new(0));
    let published: Arc<Mutex<Vec<(u32, Instant, bool)>>> = Arc::default();
    let (next2, published2) = (next.clone(), published.clone());
    let publishers = std::thread::spawn(move || {
        let ps = Arc::new(pubsub_redis::connect_blocking(&c).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (ps, next, published) = (ps.clone(), next2.clone(), published2.clone());
                std::thread::spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TOTAL {
                        break;
                    }
                    let ok = ps.publish(TOPIC, i.to_be_bytes().to_vec()).is_ok();
                    published.lock().unwrap().push((i, Instant::now(), ok));
                    std::thread::sleep(Duration::from_micros(800));
                })
            })
            .collect();
        for t in threads {
            t.join().expect("publisher thread panicked");
        }
        let flushed = ps.flush();
        assert!(flushed.is_ok(), "flush after the restart: {flushed:?}");
        ps.stats()
    });

    let t0 = Instant::now();
    while next.load(Ordering::Relaxed) < TOTAL / 3 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| server.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| server.start_again());
    let started_at = Instant::now();
    let publisher = tokio::task::spawn_blocking(move || publishers.join().expect("publishers"))
        .await
        .unwrap();
    let published = published.lock().unwrap().clone();
    Run {
        published,
        publisher,
        stopped_at,
        started_at,
        outage: started_at - stopped_at,
    }
}

/// At least once: every accepted message reaches a plain subscriber and a
/// member of a group, although the server died in the middle.
#[tokio::test(flavor = "multi_thread")]
async fn streams_restart_under_load_loses_nothing() {
    let mut server = tokio::task::block_in_place(|| {
        RedisServer::builder()
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .start()
    });
    let mut c = config_for(&server, RedisMode::Streams);
    c.buffer.capacity = TOTAL as usize + 1;
    c.section_mut::<RedisConfig>().unwrap().stream_claim_idle = Duration::from_secs(2);
    let plain = pubsub_redis::connect(&c).await.unwrap();
    plain.subscribe(TOPIC).await.unwrap();
    let member = pubsub_redis::connect(&c).await.unwrap();
    member.subscribe_in(TOPIC, Some("g")).await.unwrap();
    let (plain_got, plain_task) = collector(plain.clone());
    let (member_got, member_task) = collector(member.clone());

    let run = publish_through_a_restart(&mut server, RedisMode::Streams).await;
    plain_task.await.unwrap();
    member_task.await.unwrap();
    let accepted: BTreeSet<u32> = run.published.iter().filter(|p| p.2).map(|p| p.0).collect();
    let plain_got = plain_got.lock().unwrap().clone();
    let member_got = member_got.lock().unwrap().clone();
    let plain_lost = accepted.difference(&plain_got).count();
    let member_lost = accepted.difference(&member_got).count();
    println!(
        "redis streams restart under load ({:?} outage): {} of {TOTAL} accepted; plain subscriber {} received, {plain_lost} lost, {:?}; group member {} received, {member_lost} lost, {:?}; publisher {:?}",
        run.outage,
        accepted.len(),
        plain_got.len(),
        plain.stats(),
        member_got.len(),
        member.stats(),
        run.publisher
    );
    assert_eq!(accepted.len(), TOTAL as usize, "publishing never failed");
    assert_eq!(plain_lost, 0, "plain subscriber lost messages");
    assert_eq!(member_lost, 0, "group member lost messages");
    assert!(plain.stats().reconnects >= 1, "{:?}", plain.stats());
    plain.close().await.unwrap();
    member.close().await.unwrap();
}

/// At most once: what is lost was published around the outage; everything
/// before it and everything after recovery arrives.
#[tokio::test(flavor = "multi_thread")]
async fn pubsub_restart_under_load_loses_only_the_outage() {
    let mut server = tokio::task::block_in_place(RedisServer::start);
    let mut c = config_for(&server, RedisMode::PubSub);
    c.buffer.capacity = TOTAL as usize + 1;
    let sub = pubsub_redis::connect(&c).await.unwrap();
    sub.subscribe(TOPIC).await.unwrap();
    let (got, task) = collector(sub.clone());

    let run = publish_through_a_restart(&mut server, RedisMode::PubSub).await;
    task.await.unwrap();
    let received = got.lock().unwrap().clone();
    let accepted = run.published.iter().filter(|p| p.2).count();
    let lost: Vec<&(u32, Instant, bool)> = run
        .published
        .iter()
        .filter(|(i, _, ok)| *ok && !received.contains(i))
        .collect();
    let recovered = run
        .published
        .iter()
        .filter(|(i, at, _)| *at > run.started_at && received.contains(i))
        .map(|(_, at, _)| *at - run.started_at)
        .min();
    println!(
        "redis pubsub restart under load ({:?} outage): {accepted} of {TOTAL} accepted, {} received, {} lost, first delivery of a message published after the restart {recovered:?} after it; publisher {:?}; subscriber {:?}",
        run.outage,
        received.len(),
        lost.len(),
        run.publisher,
        sub.stats()
    );
    let early_loss = lost
        .iter()
        .filter(|(_, at, _)| *at + Duration::from_millis(200) < run.stopped_at)
        .count();
    assert_eq!(
        early_loss, 0,
        "messages published before the outage were lost"
    );
    let recovered = recovered.expect("delivery resumed after the restart");
    let late_loss = lost
        .iter()
        .filter(|(_, at, _)| *at > run.started_at + recovered + Duration::from_millis(500))
        .count();
    assert_eq!(late_loss, 0, "messages published after recovery were lost");
    assert!(sub.stats().reconnects >= 1, "{:?}", sub.stats());
    sub.close().await.unwrap();
}
