//! Faults against real `nats-server` processes: a cluster member dying, a
//! broker that is gone, endpoints that never answer. (A restart under load
//! is a conformance case of the test kit, run by `tests/conformance.rs`.)
//! Every loop is bounded in count and time; figures are printed.

use std::time::{Duration, Instant};

use pubsub_nats::NatsConfig;
use pubsub_nats::{Config, ErrorKind};
use pubsub_testkit::brokers::{NatsCluster, NatsServer};
use pubsub_testkit::conformance::{drain, probe_until_delivered};

fn config(servers: Vec<String>) -> Config {
    let mut c = Config::default();
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.servers = servers;
    nats.reconnect_delay_max = Duration::from_millis(250);
    c
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
    let pki = pubsub_testkit::certs::TestPki::generate();
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
