//! A three-master Redis Cluster on loopback: publish on one node (and
//! through the client), receive through the client connected to the
//! cluster; both modes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{recv_n, seq, seq_of, start, unique};
use pubsub_redis::RedisConfig;
use pubsub_redis::{Config, RedisMode};
use pubsub_testkit::brokers::RedisCluster;
use pubsub_testkit::conformance::probe_until_delivered;

const WAIT: Duration = Duration::from_secs(20);

fn cluster_config(cluster: &RedisCluster, mode: RedisMode) -> Config {
    let mut c = Config::default();
    c.backend = "redis".into();
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.cluster = true;
    redis.cluster_nodes = cluster.nodes();
    redis.mode = mode;
    redis.stream_block = Duration::from_millis(100);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_pubsub_mode() {
    let cluster = start(|| RedisCluster::start(3));
    let c = cluster_config(&cluster, RedisMode::PubSub);
    let sub = pubsub_redis::connect(&c)
        .await
        .expect("connect to the cluster");
    let publ = pubsub_redis::connect(&c).await.unwrap();
    let topics: Vec<String> = (0..6).map(|i| unique(&format!("c{i}"))).collect();
    for t in &topics {
        sub.subscribe(t).await.unwrap();
    }
    // Published on each node directly with redis-cli...
    for (i, node) in cluster.servers().iter().enumerate() {
        let n = node.cli(&["PUBLISH", &topics[i], &format!("node-{i}")]);
        assert!(n.trim().parse::<u64>().is_ok(), "{n}");
    }
    let got = recv_n(&sub, 3, WAIT).await;
    let texts: BTreeSet<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(
        texts,
        ["node-0", "node-1", "node-2"].map(String::from).into()
    );
    // ...and through the client, to topics on different slots.
    for (i, t) in topics.iter().enumerate() {
        for j in 0..50u32 {
            publ.publish(t, seq(i as u32 * 1000 + j)).await.unwrap();
        }
    }
    publ.flush().await.unwrap();
    let got: BTreeSet<u32> = recv_n(&sub, 300, WAIT).await.iter().map(seq_of).collect();
    assert_eq!(got.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_streams_mode_with_a_group() {
    let cluster = start(|| RedisCluster::start(3));
    let mut c = cluster_config(&cluster, RedisMode::Streams);
    c.group_id = Some("workers".into());
    let a = pubsub_redis::connect(&c).await.expect("connect");
    let b = pubsub_redis::connect(&c).await.expect("connect");
    let topics: Vec<String> = (0..4).map(|i| unique(&format!("s{i}"))).collect();
    for t in &topics {
        a.subscribe(t).await.unwrap();
        b.subscribe(t).await.unwrap();
    }
    let mut pc = cluster_config(&cluster, RedisMode::Streams);
    pc.group_id = None;
    let publ = pubsub_redis::connect(&pc).await.unwrap();
    for (i, t) in topics.iter().enumerate() {
        for j in 0..250u32 {
            publ.publish(t, seq(i as u32 * 1000 + j)).await.unwrap();
        }
    }
    publ.flush().await.unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while seen.len() < 1000 && std::time::Instant::now() < deadline {
        for m in [&a, &b] {
            while let Some(msg) = m.recv_timeout(Duration::from_millis(20)).await.unwrap() {
                seen.push(seq_of(&msg));
            }
        }
    }
    let distinct: BTreeSet<u32> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 1000, "every message");
    assert_eq!(seen.len(), 1000, "each once");
    // The streams are spread over the nodes.
    let holders = cluster
        .servers()
        .iter()
        .filter(|s| {
            let keys = s.cli(&["--scan"]);
            topics.iter().any(|t| keys.lines().any(|l| l.trim() == t))
        })
        .count();
    println!("streams on {holders} of 3 nodes");
    assert!(holders >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_subscriptions_come_back_after_the_nodes_restart() {
    let mut cluster = start(|| RedisCluster::start(3));
    let c = cluster_config(&cluster, RedisMode::PubSub);
    let sub = pubsub_redis::connect(&c).await.unwrap();
    let publ = pubsub_redis::connect(&c).await.unwrap();
    let topic = unique("crestart");
    sub.subscribe(&topic).await.unwrap();
    publ.publish(&topic, seq(0)).await.unwrap();
    publ.flush().await.unwrap();
    assert_eq!(recv_n(&sub, 1, WAIT).await.len(), 1);
    start(|| {
        for s in &mut cluster.servers {
            s.restart();
        }
        assert!(
            cluster.wait_for_state_ok(),
            "cluster state ok after restart"
        );
    });
    let t0 = std::time::Instant::now();
    assert!(
        probe_until_delivered(&publ, &sub, &topic, Duration::from_secs(30)).await,
        "no message within 30 s of the cluster restart"
    );
    assert!(sub.stats().reconnects >= 1, "{:?}", sub.stats());
    println!(
        "cluster pub/sub back after {:?}; subscriber {:?}",
        t0.elapsed(),
        sub.stats()
    );
}
