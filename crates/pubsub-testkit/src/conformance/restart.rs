//! The broker restarted under load, judged by what the backend promises.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub_core::sync::lock;
use pubsub_core::{blocking, Delivery, PubSub, Stats};

use super::{connect, connect_cfg, seq, seq_of, unique, Harness, Outcome};

const TOTAL: u32 = 10_000;
const GROUP_MEMBER: &str = "group member";
const THREADS: u32 = 4;
const OUTAGE: Duration = Duration::from_millis(500);
/// A message published this long before the stop was sent before it.
const BEFORE_STOP: Duration = Duration::from_millis(200);
/// A message published this long after delivery resumed was sent after it.
const AFTER_RECOVERY: Duration = Duration::from_millis(500);

/// Four threads publish 10,000 messages in total through one blocking
/// handle (one every 0.8 ms per thread) while the harness stops the broker
/// at one third and starts it again half a second later. What must arrive
/// depends on the backend's promise, as connected:
///
/// - at least once ([`Delivery::AtLeastOnce`]): every publish is accepted and
///   every message reaches a plain subscriber and, where the backend has
///   groups, a group member (for a broker that does not keep group
///   subscriptions across its restart,
///   [`Harness::groups_survive_broker_restart`], the member is held to the
///   at-most-once rule below);
/// - at most once: what is lost was published around the outage; everything
///   published before it and everything published after delivery resumed
///   arrives.
///
/// The subscribers must count a reconnect. Bounded: collectors give up after
/// 90 s, or when nothing arrived for 5 s (15 s for at least once).
pub async fn restart_under_load(h: &mut dyn Harness) -> Outcome {
    if !h.has_broker() {
        return Outcome::Skipped("in-process backend has no broker to restart".into());
    }
    let probe = connect(h).await;
    let caps = probe.capabilities().clone();
    let _ = probe.close().await;
    let keeps_all = caps.delivery == Delivery::AtLeastOnce;
    let topic = unique("load");
    // Each client gets a config of its own (a harness may give each a
    // client id of its own, as MQTT sessions need).
    let config = |h: &dyn Harness| {
        let mut c = h.config();
        c.buffer.capacity = TOTAL as usize * 2;
        c
    };
    let plain = connect_cfg(h, config(h)).await;
    plain.subscribe_in(&topic, None).await.expect("subscribe");
    let mut subscribers = vec![("plain subscriber", plain)];
    if keeps_all && caps.groups {
        let member = connect_cfg(h, config(h)).await;
        member
            .subscribe_in(&topic, Some("load-group"))
            .await
            .expect("subscribe in a group");
        subscribers.push((GROUP_MEMBER, member));
    }
    let quiet = if keeps_all {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(5)
    };
    let collectors: Vec<_> = subscribers
        .iter()
        .map(|(_, s)| collect(s.clone(), quiet))
        .collect();

    // A publish waits for room while the broker is away: at most once, it
    // may give up; at least once, it must not.
    let mut config = config(h);
    config.publish_timeout = if keeps_all {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(2)
    };
    let run = publish_through_an_outage(h, config, topic).await;
    let mut received = Vec::new();
    for (got, task) in collectors {
        task.await.expect("collector task");
        received.push(lock(&got).clone());
    }

    let accepted: BTreeSet<u32> = run.published.iter().filter(|p| p.2).map(|p| p.0).collect();
    for ((who, sub), got) in subscribers.iter().zip(&received) {
        println!(
            "restart under load [{}] ({:?} outage): {} of {TOTAL} accepted, {} received, {} lost; publisher {:?}, flush {:?}; {who} {:?}",
            h.label(),
            run.started_at - run.stopped_at,
            accepted.len(),
            got.len(),
            accepted.difference(got).count(),
            run.stats,
            run.flushed,
            sub.stats()
        );
    }
    if keeps_all {
        assert_eq!(accepted.len(), TOTAL as usize, "every publish was accepted");
        assert!(
            run.flushed.is_ok(),
            "flush after the restart: {:?}",
            run.flushed
        );
        for ((who, _), got) in subscribers.iter().zip(&received) {
            if *who == GROUP_MEMBER && !h.groups_survive_broker_restart() {
                assert_only_the_outage_lost(&run, got);
                continue;
            }
            let lost = accepted.difference(got).count();
            assert_eq!(lost, 0, "the {who} lost {lost} messages");
        }
    } else {
        assert_only_the_outage_lost(&run, &received[0]);
    }
    for (who, sub) in &subscribers {
        assert!(sub.stats().reconnects >= 1, "{who}: {:?}", sub.stats());
        sub.close().await.expect("close");
    }
    Outcome::Passed
}

/// At most once: nothing published well before the stop, nor well after
/// delivery resumed, is lost.
fn assert_only_the_outage_lost(run: &Run, received: &BTreeSet<u32>) {
    let lost: Vec<&(u32, Instant, bool)> = run
        .published
        .iter()
        .filter(|(i, _, ok)| *ok && !received.contains(i))
        .collect();
    let early_loss = lost
        .iter()
        .filter(|(_, at, _)| *at + BEFORE_STOP < run.stopped_at)
        .count();
    assert_eq!(
        early_loss, 0,
        "messages published before the outage were lost"
    );
    let recovered = run
        .published
        .iter()
        .filter(|(i, at, _)| *at > run.started_at && received.contains(i))
        .map(|(_, at, _)| *at - run.started_at)
        .min()
        .expect("delivery resumed after the restart");
    println!("first delivery of a message published after the restart: {recovered:?} after it");
    let late_loss = lost
        .iter()
        .filter(|(_, at, _)| *at > run.started_at + recovered + AFTER_RECOVERY)
        .count();
    assert_eq!(late_loss, 0, "messages published after recovery were lost");
}

/// Distinct sequence numbers received by `sub` until all arrived, nothing
/// arrived for `quiet`, or 90 s passed.
fn collect(
    sub: PubSub,
    quiet: Duration,
) -> (Arc<Mutex<BTreeSet<u32>>>, tokio::task::JoinHandle<()>) {
    let received = Arc::new(Mutex::new(BTreeSet::new()));
    let r = received.clone();
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            match sub.recv_timeout(quiet).await {
                Ok(Some(m)) => {
                    let m = super::settled(m);
                    let mut r = lock(&r);
                    r.insert(seq_of(&m));
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
    stats: Stats,
    flushed: Result<(), String>,
    stopped_at: Instant,
    started_at: Instant,
}

/// [`THREADS`] threads share one blocking handle and publish [`TOTAL`]
/// messages; the broker is stopped at one third and started again after
/// [`OUTAGE`].
async fn publish_through_an_outage(
    h: &mut dyn Harness,
    config: pubsub_core::Config,
    topic: String,
) -> Run {
    let factory = h.factory();
    let next = Arc::new(AtomicU32::new(0));
    let published: Arc<Mutex<Vec<(u32, Instant, bool)>>> = Arc::default();
    let publishers = {
        let (next, published) = (next.clone(), published.clone());
        std::thread::spawn(move || {
            let ps = Arc::new(blocking::PubSub::connect_with(&factory, &config).expect("connect"));
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= TOTAL {
                            break;
                        }
                        let ok = ps.publish(topic.as_str(), seq(i)).is_ok();
                        lock(&published).push((i, Instant::now(), ok));
                        std::thread::sleep(Duration::from_micros(800));
                    });
                }
            });
            let flushed = ps.flush().map_err(|e| e.to_string());
            (flushed, ps.stats())
        })
    };
    let t0 = Instant::now();
    while next.load(Ordering::Relaxed) < TOTAL / 3 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_at = Instant::now();
    h.stop_broker().await;
    tokio::time::sleep(OUTAGE).await;
    h.start_broker().await;
    let started_at = Instant::now();
    let (flushed, stats) = tokio::task::spawn_blocking(move || publishers.join())
        .await
        .expect("join task")
        .expect("publisher threads");
    let published = lock(&published).clone();
    Run {
        published,
        stats,
        flushed,
        stopped_at,
        started_at,
    }
}
