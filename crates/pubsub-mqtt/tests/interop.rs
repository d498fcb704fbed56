//! Interoperability with clients no one here wrote: `mosquitto_pub` and
//! `mosquitto_sub` exchange binary messages with the Rust backend, both ways,
//! bytes unchanged.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_for, recv_n, start_broker, unique};
use pubsub_testkit::brokers::{find_binary, run_command};

fn binary_payload() -> Vec<u8> {
    // Every byte value, including NUL, newline and invalid UTF-8.
    (0..=255u8).chain((0..=255u8).rev()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_to_rust_subscriber() {
    let broker = start_broker();
    let ps = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    let topic = unique("from-mosquitto-pub");
    ps.subscribe(&topic).await.expect("subscribe");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, binary_payload()).expect("write payload");
    for qos in ["0", "1", "2"] {
        let out = tokio::task::block_in_place(|| {
            run_command(
                Command::new(find_binary("mosquitto_pub"))
                    .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
                    .args(["-V", "5", "-q", qos, "-t", &topic, "-f"])
                    .arg(&file),
                Duration::from_secs(10),
            )
        })
        .expect("mosquitto_pub ran");
        assert!(
            out.status.success(),
            "mosquitto_pub -q {qos}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let got = recv_n(&ps, 3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "one message per QoS");
    for m in &got {
        assert_eq!(m.topic, topic);
        assert!(m.payload[..] == binary_payload()[..], "bytes changed");
    }
    ps.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_publisher_to_mosquitto_sub() {
    let broker = start_broker();
    let topic = unique("to-mosquitto-sub");
    let mut child = Command::new(find_binary("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args([
            "-V", "5", "-q", "1", "-t", &topic, "-C", "1", "-N", "-W", "20",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_sub");
    let ps = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    // mosquitto_sub has no "subscribed" signal: publish until it has one
    // message and exits (-C 1), at most 15 s.
    let t0 = Instant::now();
    let status = loop {
        ps.publish(&topic, binary_payload()).await.expect("publish");
        ps.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(status) = child.try_wait().expect("mosquitto_sub status") {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("mosquitto_sub received nothing within 15 s");
        }
    };
    let out = child.wait_with_output().expect("mosquitto_sub output");
    assert!(
        status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == binary_payload(),
        "bytes changed: got {} bytes",
        out.stdout.len()
    );
    ps.close().await.expect("close");
}

/// A shared subscription made by mosquitto_sub and one made by the Rust
/// backend with the same group split the messages between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_shared_with_mosquitto_sub() {
    let broker = start_broker();
    let topic = unique("shared-interop");
    let child = Command::new(find_binary("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-V", "5", "-q", "1", "-t", &format!("$share/mixed/{topic}")])
        .args(["-W", "8"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_sub");
    let mut c = config_for(&broker.url(), 1);
    c.group_id = Some("mixed".into());
    let member = pubsub_mqtt::connect(&c).await.expect("connect");
    member.subscribe(&topic).await.expect("subscribe");
    let publ = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    // Give mosquitto_sub time to subscribe (it has no signal for it).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..100 {
        publ.publish(&topic, format!("m{i}"))
            .await
            .expect("publish");
    }
    publ.flush().await.expect("flush");
    let ours = recv_n(&member, 100, Duration::from_secs(3)).await.len();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("mosquitto_sub output");
    let theirs = String::from_utf8_lossy(&out.stdout).lines().count();
    println!("shared between the Rust member ({ours}) and mosquitto_sub ({theirs})");
    assert_eq!(ours + theirs, 100, "each message to exactly one member");
    assert!(ours > 0 && theirs > 0, "both members get some");
}
