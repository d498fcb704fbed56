//! Faults against real `nats-server` processes: a restart under load, a
//! cluster member dying, a broker that is gone, endpoints that never answer.
//! Every loop is bounded in count and time; figures are printed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub_core::testkit::brokers::{NatsCluster, NatsServer};
use pubsub_core::testkit::conformance::{drain, probe_until_delivered};
use pubsub_nats::NatsConfig;
use pubsub_nats::{Config, ErrorKind};

fn config(servers: Vec<String>) -> Config {
    let mut c = Config::default();
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.servers = servers;
    nats.reconnect_delay_max = Duration::from_millis(250);
    c
}

fn seq(m: &pubsub_nats::Message) -> u32 {
    u32::from_be_bytes(m.payload[..4].try_into().unwrap())
}

/// Four threads publish 10,000 messages in total through one blocking
/// handle while the broker is stopped at one third and started again.
/// At most once: what is lost must have been published around the outage.
#[tokio::test(flavor = "multi_thread")]
async fn restart_under_load_loses_only_the_outage() {
    let mut server = tokio::task::block_in_place(NatsServer::start);
    let mut c = config(vec![server.url()]);
    c.publish_timeout = Duration::from_secs(2);
    let sub = pubsub_nats::connect(&c).await.unwrap();
    sub.subscribe("faults.load").await.unwrap();
    let received = Arc::new(Mutex::new(BTreeSet::new()));
    let collector = {
        let sub = sub.clone();
        let received = received.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match sub.recv_timeout(Duration::from_secs(5)).await {
                    Ok(Some(m)) => {
                        received.lock().unwrap().insert(seq(&m));
                        if received.lock().unwrap().len() == 10_000 {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        })
    };

    const TOTAL: u32 = 10_000;
    let next = Arc::new(AtomicU32::new(0));
    let published_at: Arc<Mutex<Vec<(u32, Instant, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let c2 = c.clone();
    let (next2, published2) = (next.clone(), published_at.clone());
    let publishers = std::thread::spawn(move || {
        let ps = Arc::new(pubsub_nats::connect_blocking(&c2).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (ps, next, published) = (ps.clone(), next2.clone(), published2.clone());
                std::thread::spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TOTAL {
                        break;
                    }
                    let ok = ps.publish("faults.load", i.to_be_bytes().to_vec()).is_ok();
                    published.lock().unwrap().push((i, Instant::now(), ok));
                    std::thread::sleep(Duration::from_micros(800));
                })
            })
            .collect();
        for t in threads {
            t.join().expect("publisher thread panicked");
        }
        let _ = ps.flush();
        ps.stats()
    });

    // Stop at one third, start again half a second later.
    let t0 = Instant::now();
    while next.load(Ordering::Relaxed) < TOTAL / 3 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| server.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| server.start_again());
    let started_at = Instant::now();

    let pub_stats = tokio::task::spawn_blocking(move || publishers.join().expect("publishers"))
        .await
        .unwrap();
    collector.await.unwrap();
    let received = received.lock().unwrap().clone();
    let published = published_at.lock().unwrap().clone();
    let accepted = published.iter().filter(|p| p.2).count();
    let lost: Vec<&(u32, Instant, bool)> = published
        .iter()
        .filter(|(i, _, ok)| *ok && !received.contains(i))
        .collect();
    let recovered = published
        .iter()
        .filter(|(i, at, _)| *at > started_at && received.contains(i))
        .map(|(_, at, _)| *at - started_at)
        .min();
    println!(
        "restart under load: {accepted} of {TOTAL} accepted, {} received, {} lost, first delivery {recovered:?} after the restart; publisher {pub_stats:?}; subscriber {:?}",
        received.len(),
        lost.len(),
        sub.stats()
    );
    // Everything published well before the stop arrived...
    let early_loss = lost
        .iter()
        .filter(|(_, at, _)| *at + Duration::from_millis(200) < stopped_at)
        .count();
    assert_eq!(
        early_loss, 0,
        "messages published before the outage were lost"
    );
    // ... and everything published well after recovery.
    let recovered = recovered.expect("delivery resumed after the restart");
    let late_loss = lost
        .iter()
        .filter(|(_, at, _)| *at > started_at + recovered + Duration::from_millis(500))
        .count();
    assert_eq!(late_loss, 0, "messages published after recovery were lost");
    assert!(sub.stats().reconnects >= 1);
    assert!(pub_stats.reconnects >= 1);
}

/// A three-node cluster; the client knows all three URLs. Killing the node
/// it is connected to moves it to another; publishing and subscribing go on.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_failover() {
    let mut cluster = tokio::task::block_in_place(|| NatsCluster::start(3));
    let c = config(cluster.urls());
    let sub = pubsub_nats::connect(&c).await.unwrap();
    let publ = pubsub_nats::connect(&c).await.unwrap();
    sub.subscribe("faults.cluster").await.unwrap();
    publ.publish("faults.cluster", 0u32.to_be_bytes().to_vec())
        .await
        .unwrap();
    publ.flush().await.unwrap();
    assert!(sub
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .is_some());

    let connected_to = sub.broker_info().server.unwrap();
    let victim = cluster
        .servers
        .iter()
        .position(|s| connected_to.ends_with(s.server_name()))
        .expect("the client is connected to a member");
    let t0 = Instant::now();
    tokio::task::block_in_place(|| cluster.servers[victim].stop());

    assert!(
        probe_until_delivered(&publ, &sub, "faults.cluster", Duration::from_secs(30)).await,
        "no delivery within 30 s of the failover"
    );
    let recovered = t0.elapsed();
    drain(&sub, Duration::from_millis(200)).await;
    for j in 0..500u32 {
        publ.publish("faults.cluster", (100_000 + j).to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    publ.flush().await.unwrap();
    let mut got = 0;
    while got < 500 {
        match sub.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            Some(_) => got += 1,
            None => break,
        }
    }
    let now_on = sub.broker_info().server.unwrap();
    println!(
        "cluster failover: moved from {connected_to} to {now_on} in {recovered:?}; {got}/500 after; subscriber {:?}",
        sub.stats()
    );
    assert_eq!(got, 500);
    assert_ne!(now_on, connected_to);
    assert!(sub.stats().reconnects >= 1, "reconnect counted");
}

/// With the broker gone: publishing fails within `publish_timeout` once the
/// client's queue is full, `close` returns within `close_timeout`, dropping
/// an unclosed handle neither hangs nor panics.
#[tokio::test(flavor = "multi_thread")]
async fn broker_gone_calls_stay_bounded() {
    let mut server = tokio::task::block_in_place(NatsServer::start);
    let mut c = config(vec![server.url()]);
    c.publish_timeout = Duration::from_millis(500);
    c.close_timeout = Duration::from_secs(1);
    let ps = pubsub_nats::connect(&c).await.unwrap();
    let dropped = pubsub_nats::connect(&c).await.unwrap();
    tokio::task::block_in_place(|| server.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t0 = Instant::now();
    let mut first_error = None;
    for i in 0..100_000u32 {
        if let Err(e) = ps.publish("faults.gone", i.to_be_bytes().to_vec()).await {
            first_error = Some((i, e));
            break;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let (accepted, e) = first_error.expect("publishing to a dead broker fails eventually");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("publish_timeout"), "{e}");
    println!(
        "broker gone: {accepted} publishes queued, then {e} after {:?}",
        t0.elapsed()
    );

    let t0 = Instant::now();
    let r = ps.close().await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "close took {:?}",
        t0.elapsed()
    );
    assert!(
        r.is_err(),
        "close cannot deliver to a dead broker and says so"
    );
    assert_eq!(
        ps.publish("faults.gone", "x").await.unwrap_err().kind(),
        ErrorKind::Closed
    );

    let t0 = Instant::now();
    drop(dropped);
    let blocking = pubsub_nats::connect_blocking(&{
        let mut c = c.clone();
        c.section_mut::<NatsConfig>().unwrap().servers = vec!["nats://127.0.0.1:1".into()];
        c
    });
    assert!(blocking.is_err());
    assert!(t0.elapsed() < Duration::from_secs(3));
}

/// A port that accepts TCP and never says a word: connect fails with a
/// timeout within the connect timeout (async and blocking).
#[tokio::test(flavor = "multi_thread")]
async fn silent_endpoint_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut c = config(vec![format!("nats://127.0.0.1:{port}")]);
    c.connect_timeout = Duration::from_secs(1);
    let t0 = Instant::now();
    let e = pubsub_nats::connect(&c).await.unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let t0 = Instant::now();
    let e = tokio::task::spawn_blocking(move || pubsub_nats::connect_blocking(&c).unwrap_err())
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    drop(listener);
}

/// A TLS client at a plain server: a clear error, promptly.
#[tokio::test(flavor = "multi_thread")]
async fn tls_client_at_plain_server() {
    let server = tokio::task::block_in_place(NatsServer::start);
    let pki = pubsub_core::testkit::certs::TestPki::generate();
    let mut c = config(vec![server.url()]);
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.tls = true;
    nats.tls_ca_cert = Some(pki.ca_cert.clone());
    c.connect_timeout = Duration::from_secs(2);
    let t0 = Instant::now();
    let e = pubsub_nats::connect(&c).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    println!("TLS client at plain server: {e}");
}
