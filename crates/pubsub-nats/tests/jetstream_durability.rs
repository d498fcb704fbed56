//! JetStream mode proven by crashes, on real `nats-server -js`: a group
//! member killed with SIGKILL while it holds unsettled messages, the server
//! killed and started again under load, the stream leader of a three-node
//! cluster killed under load. Manual ack mode loses nothing; the figures
//! (redelivery time, gap until delivery resumed, duplicates) are printed.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{js_config, js_manual, raw, seq, seq_of, unique};
use pubsub_nats::{blocking, BackendFactory, Config, NatsBackend, NatsConfig, PubSub};
use pubsub_testkit::brokers::{NatsCluster, NatsServer};
use pubsub_testkit::crash::member_killed_loses_nothing;

/// A group member in its own process takes its share of 2,000 messages,
/// settles none, and is killed with SIGKILL: the other member gets every
/// one of them once `ack_wait` (1 s) has passed.
#[test]
fn group_member_killed_holding_unsettled_messages_loses_none() {
    let mut server = None;
    let report = member_killed_loses_nothing(
        "group_member_killed_holding_unsettled_messages_loses_none",
        BackendFactory::of::<NatsBackend>(),
        || {
            let s = server.insert(NatsServer::start_jetstream());
            js_manual(vec![s.url()], Duration::from_secs(1))
        },
    );
    if let Some(r) = report {
        assert!(r.held_by_the_killed >= 50, "{r:?}");
        assert!(r.redelivered_within < Duration::from_secs(30), "{r:?}");
    }
}

/// What one subscriber saw in a run under load.
#[derive(Default)]
struct Seen {
    /// Sequence -> deliveries, and when the first came.
    received: BTreeMap<u32, (u32, Instant)>,
}

/// A run under load: when each publish returned, the publisher's flush,
/// what each subscriber saw.
struct Run {
    published: Vec<Instant>,
    flushed: Result<(), String>,
    seen: Vec<Seen>,
    /// When the fault ended (the server back, or the leader killed).
    fault_at: Instant,
}

const TOTAL: u32 = 10_000;

/// Publishes [`TOTAL`] messages to `topic` from a blocking handle, one
/// every 200 µs, while `subscribers` (manual ack) acknowledge everything
/// they receive; `fault` runs at one third and returns when it ended.
/// Everything accepted must arrive within 60 s of the last publish.
async fn under_load(
    publisher: Config,
    topic: String,
    subscribers: Vec<PubSub>,
    fault: impl FnOnce() -> Instant + Send + 'static,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let mut collectors = Vec::new();
    for sub in subscribers {
        let stop = stop.clone();
        collectors.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let deadline = Instant::now() + Duration::from_secs(180);
            while Instant::now() < deadline
                && !(stop.load(Ordering::Acquire) && seen.received.len() >= TOTAL as usize)
                && !(stop.load(Ordering::Acquire)
                    && Instant::now() > deadline - Duration::from_secs(100))
            {
                if let Some(m) = sub
                    .recv_timeout(Duration::from_millis(100))
                    .await
                    .expect("recv")
                {
                    let s = seq_of(&m);
                    m.ack().expect("ack");
                    seen.received.entry(s).or_insert((0, Instant::now())).0 += 1;
                }
            }
            // A little longer, for late duplicates.
            while let Ok(Some(m)) = sub.recv_timeout(Duration::from_millis(300)).await {
                let s = seq_of(&m);
                m.ack().expect("ack");
                seen.received.entry(s).or_insert((0, Instant::now())).0 += 1;
            }
            println!("subscriber stats: {:?}", sub.stats());
            sub.close().await.expect("close");
            seen
        }));
    }
    let next = Arc::new(AtomicU32::new(0));
    let n2 = next.clone();
    let publishing = tokio::task::spawn_blocking(move || {
        let ps = blocking::PubSub::connect_with(&BackendFactory::of::<NatsBackend>(), &publisher)
            .expect("connect publisher");
        let mut times = Vec::with_capacity(TOTAL as usize);
        for i in 0..TOTAL {
            ps.publish(topic.as_str(), seq(i))
                .expect("publish accepted");
            times.push(Instant::now());
            n2.store(i + 1, Ordering::Release);
            std::thread::sleep(Duration::from_micros(200));
        }
        let flushed = ps.flush().map_err(|e| e.to_string());
        println!("publisher stats: {:?}", ps.stats());
        ps.close().expect("close publisher");
        (times, flushed)
    });
    let t0 = Instant::now();
    while next.load(Ordering::Acquire) < TOTAL / 3 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fault_at = tokio::task::spawn_blocking(fault).await.expect("fault");
    let (published, flushed) = publishing.await.expect("publisher");
    // Collectors end once they have everything, or 60 s after this.
    let wait_until = Instant::now() + Duration::from_secs(60);
    stop.store(true, Ordering::Release);
    let mut seen = Vec::new();
    for c in collectors {
        let left = wait_until.saturating_duration_since(Instant::now()) + Duration::from_secs(40);
        seen.push(
            tokio::time::timeout(left, c)
                .await
                .expect("collector in time")
                .expect("collector"),
        );
    }
    Run {
        published,
        flushed,
        seen,
        fault_at,
    }
}

impl Run {
    /// How long after the fault ended the first message published after it
    /// was delivered to subscriber `i`, and the longest pause between two
    /// deliveries there.
    fn gaps(&self, i: usize) -> (Duration, Duration) {
        let r = &self.seen[i].received;
        let resumed = r
            .iter()
            .filter(|(s, _)| self.published[**s as usize] > self.fault_at)
            .map(|(_, (_, t))| t.saturating_duration_since(self.fault_at))
            .min()
            .unwrap_or(Duration::MAX);
        let mut times: Vec<Instant> = r.values().map(|(_, t)| *t).collect();
        times.sort();
        let pause = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        (resumed, pause)
    }

    /// Nothing lost at subscriber `i`; its duplicates.
    fn assert_none_lost(&self, i: usize, who: &str) -> usize {
        let r = &self.seen[i].received;
        let lost: Vec<u32> = (0..TOTAL).filter(|s| !r.contains_key(s)).collect();
        assert!(
            lost.is_empty(),
            "{who}: {} of {TOTAL} lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        r.values().filter(|(n, _)| *n > 1).count()
    }
}

/// The messages a stream holds.
async fn stream_messages(url: &str, stream: &str) -> u64 {
    let (_client, js) = raw(url).await;
    let mut s = js.get_stream(stream).await.expect("stream");
    s.info().await.expect("stream info").state.messages
}

/// The server killed (SIGKILL) under load and started again half a second
/// later: in manual ack mode a group member and a plain subscriber get all
/// 10,000 messages; the stream holds each once (`Nats-Msg-Id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_under_load_loses_nothing_in_manual_mode() {
    let server = Arc::new(Mutex::new(tokio::task::block_in_place(
        NatsServer::start_jetstream,
    )));
    let url = server.lock().unwrap().url();
    let topic = unique("durable", "restart");
    let manual = js_manual(vec![url.clone()], Duration::from_secs(5));
    let member = pubsub_nats::connect(&manual).await.unwrap();
    member
        .subscribe_in(topic.as_str(), Some("restart-workers"))
        .await
        .unwrap();
    let plain = pubsub_nats::connect(&manual).await.unwrap();
    plain.subscribe(topic.as_str()).await.unwrap();
    let s = server.clone();
    let run = under_load(
        js_config(vec![url.clone()]),
        topic,
        vec![member, plain],
        move || {
            let mut s = s.lock().unwrap();
            s.stop();
            std::thread::sleep(Duration::from_millis(500));
            s.start_again();
            Instant::now()
        },
    )
    .await;
    assert!(run.flushed.is_ok(), "flush: {:?}", run.flushed);
    for (i, who) in ["group member", "plain subscriber"].iter().enumerate() {
        let dups = run.assert_none_lost(i, who);
        let (resumed, pause) = run.gaps(i);
        println!(
            "server killed for 0.5 s under load, {who}: 0 of {TOTAL} lost, {dups} duplicates; a message published after the restart delivered {resumed:?} after it; longest pause between deliveries {pause:?}"
        );
    }
    let stored = stream_messages(&url, "msight_durable").await;
    println!("the stream holds {stored} messages for {TOTAL} published");
    assert_eq!(stored, u64::from(TOTAL), "each message stored once");
}

/// A three-node JetStream cluster, an R3 stream; its leader killed with
/// SIGKILL while publishing and consuming: in manual ack mode nothing is
/// lost; the gap until delivery resumed is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_killed_in_a_three_node_cluster_loses_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pubsub_nats=info")
        .try_init();
    let cluster = Arc::new(Mutex::new(tokio::task::block_in_place(|| {
        NatsCluster::start_jetstream(3)
    })));
    let urls = cluster.lock().unwrap().urls();
    let r3 = |mut c: Config| {
        c.section_mut::<NatsConfig>().unwrap().stream_replicas = Some(3);
        c
    };
    let topic = unique("cluster", "leader");
    let manual = r3(js_manual(urls.clone(), Duration::from_secs(5)));
    let member = pubsub_nats::connect(&manual).await.unwrap();
    member
        .subscribe_in(topic.as_str(), Some("leader-workers"))
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    // The stream exists now: who leads it?
    let (_client, js) = raw(&urls[0]).await;
    let mut stream = js.get_stream("msight_cluster").await.expect("stream");
    let info = stream.info().await.expect("stream info").clone();
    assert_eq!(info.config.num_replicas, 3, "an R3 stream");
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let victim = cluster
        .lock()
        .unwrap()
        .servers
        .iter()
        .position(|s| s.server_name() == leader)
        .expect("the leader is a member");
    println!("stream leader: {leader} (member {victim})");
    let c = cluster.clone();
    let mut publisher = r3(js_config(urls.clone()));
    // Publishing waits while the stream has no leader, rather than fail.
    publisher.publish_timeout = Duration::from_secs(30);
    let run = under_load(publisher, topic, vec![member], move || {
        c.lock().unwrap().servers[victim].stop();
        Instant::now()
    })
    .await;
    assert!(run.flushed.is_ok(), "flush: {:?}", run.flushed);
    let dups = run.assert_none_lost(0, "group member");
    let (resumed, pause) = run.gaps(0);
    println!(
        "stream leader killed under load: 0 of {TOTAL} lost, {dups} duplicates; a message published after the kill delivered {resumed:?} after it; longest pause between deliveries {pause:?}"
    );
    let survivor = (victim + 1) % 3;
    let url = cluster.lock().unwrap().servers[survivor].url();
    let stored = stream_messages(&url, "msight_cluster").await;
    println!("the stream holds {stored} messages for {TOTAL} published");
    assert_eq!(stored, u64::from(TOTAL), "each message stored once");
    for s in &cluster.lock().unwrap().servers {
        for l in s
            .log_contents()
            .lines()
            .filter(|l| l.contains("new stream leader"))
        {
            println!("{}: {l}", s.server_name());
        }
    }
}
