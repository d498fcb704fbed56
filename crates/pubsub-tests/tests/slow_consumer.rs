//! A subscriber that stops reading while 200,000 messages of 1 KiB are
//! published, on every backend and mode. Its process's memory must stay
//! under the buffer bound plus a documented constant, overflow must be
//! counted, and when it reads again it gets what the policy (`drop_oldest`)
//! promises: the newest messages, in order. The Python original's unbounded
//! queue is the defect this test exists for.
//!
//! The subscriber runs in a child process (this test binary, re-executed
//! for the same test), so that its peak resident memory is its own.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pubsub_core::{Config, OverflowPolicy, PubSub};
use pubsub_mqtt::MqttConfig;
use pubsub_nats::NatsConfig;
use pubsub_redis::RedisConfig;
use pubsub_redis::RedisMode;
use pubsub_testkit::brokers::{Mosquitto, NatsServer, RedisServer};

const TOTAL: u32 = 200_000;
const SIZE: usize = 1024;
const CAPACITY: usize = 10_000;
/// Documented in the README: what a subscribing process may use beyond its
/// buffer bound (the client library's own buffers, allocator slack).
const CONSTANT_MIB: u64 = 48;
/// The child learns its backend, mode and broker address from these.
const CHILD_BACKEND: &str = "PUBSUB_SLOW_CONSUMER_BACKEND";
const CHILD_ADDRESS: &str = "PUBSUB_SLOW_CONSUMER_ADDRESS";

#[test]
fn nats_slow_consumer_memory_is_bounded() {
    run("nats_slow_consumer_memory_is_bounded", "nats", || {
        let s = NatsServer::start();
        (s.url(), Box::new(s))
    });
}

#[test]
fn redis_slow_consumer_memory_is_bounded() {
    run("redis_slow_consumer_memory_is_bounded", "redis", || {
        let s = RedisServer::start();
        (s.port().to_string(), Box::new(s))
    });
}

#[test]
fn redis_streams_slow_consumer_memory_is_bounded() {
    run(
        "redis_streams_slow_consumer_memory_is_bounded",
        "redis-streams",
        || {
            let s = RedisServer::start();
            (s.port().to_string(), Box::new(s))
        },
    );
}

#[test]
fn mqtt_slow_consumer_memory_is_bounded() {
    run("mqtt_slow_consumer_memory_is_bounded", "mqtt", || {
        let s = Mosquitto::start();
        (s.port().to_string(), Box::new(s))
    });
}

/// The config of `backend` ("nats", "redis", "redis-streams", "mqtt") for
/// the broker at `address` (a NATS URL, else a port on 127.0.0.1).
fn config(backend: &str, address: &str) -> Config {
    let mut c = Config::default();
    match backend {
        "nats" => {
            c.backend = "nats".into();
            c.section_mut::<NatsConfig>().unwrap().servers = vec![address.to_string()];
        }
        "mqtt" => {
            c.backend = "mqtt".into();
            let mqtt = c.section_mut::<MqttConfig>().unwrap();
            mqtt.url = Some(format!("mqtt://127.0.0.1:{address}"));
            mqtt.qos = 1;
        }
        redis => {
            c.backend = "redis".into();
            let section = c.section_mut::<RedisConfig>().unwrap();
            section.host = "127.0.0.1".into();
            section.port = address.parse().unwrap();
            if redis == "redis-streams" {
                section.mode = RedisMode::Streams;
                // Keep every entry: a stream trimmed under a lagging reader
                // would lose entries in Redis, which is not what this tests.
                section.stream_maxlen = 0;
            }
        }
    }
    c
}

fn topic(backend: &str) -> &'static str {
    if backend == "mqtt" {
        "slow/consumer"
    } else {
        "slow.consumer"
    }
}

async fn connect(c: &Config) -> PubSub {
    pubsub_nats::register();
    pubsub_redis::register();
    pubsub_mqtt::register();
    PubSub::connect(c).await.unwrap()
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn child(backend: &str, address: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = config(backend, address);
        c.buffer.capacity = CAPACITY;
        c.buffer.overflow = OverflowPolicy::DropOldest;
        let ps = connect(&c).await;
        ps.subscribe(topic(backend)).await.unwrap();
        println!("ready {}", status_kib("VmRSS:"));
        let mut line = String::new();
        tokio::task::block_in_place(|| std::io::stdin().lock().read_line(&mut line).unwrap());
        // The client may still be parsing what the broker wrote (a debug
        // build is slow at it): wait, bounded, until every message was counted.
        let deadline = Instant::now() + Duration::from_secs(60);
        while ps.stats().received < u64::from(TOTAL) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let peak = status_kib("VmHWM:");
        let stats = ps.stats();
        let mut drained = Vec::new();
        while let Some(m) = ps.recv_timeout(Duration::from_millis(300)).await.unwrap() {
            drained.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
        }
        let ordered = drained.windows(2).all(|w| w[0] < w[1]);
        println!(
            "peak {peak} received {} dropped {} drained {} first {} last {} reconnects {} ordered {ordered}",
            stats.received,
            stats.dropped,
            drained.len(),
            drained.first().copied().unwrap_or(0),
            drained.last().copied().unwrap_or(0),
            stats.reconnects,
        );
    });
}

/// The parent side of test `name` for `backend`, or the child when this
/// binary was re-executed for it. `start` starts the broker and returns its
/// address and a guard that stops it.
fn run(name: &str, backend: &str, start: impl FnOnce() -> (String, Box<dyn Send>)) {
    if let (Ok(b), Ok(address)) = (std::env::var(CHILD_BACKEND), std::env::var(CHILD_ADDRESS)) {
        child(&b, &address);
        return;
    }
    let (address, _broker) = start();
    let mut sub = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--quiet"])
        .env(CHILD_BACKEND, backend)
        .env(CHILD_ADDRESS, &address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = |prefix: &str| loop {
        let l = rx
            .recv_timeout(Duration::from_secs(90))
            .expect("the subscriber answers");
        if let Some(rest) = l.strip_prefix(prefix) {
            return rest.to_string();
        }
    };
    let baseline_kib: u64 = next_line("ready ").trim().parse().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ps = connect(&config(backend, &address)).await;
        let mut payload = vec![0u8; SIZE];
        // Paced at about 50,000 messages/s: this test is about a subscriber
        // whose *application* does not read. A subscribing *process* that
        // cannot even parse what the broker sends is cut off by Redis at its
        // output-buffer limit; that shows as a reconnect (see the crate docs).
        for i in 0..TOTAL {
            payload[..4].copy_from_slice(&i.to_be_bytes());
            ps.publish(topic(backend), payload.clone()).await.unwrap();
            if i % 2_000 == 1_999 {
                ps.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
        ps.flush().await.unwrap();
        ps.close().await.unwrap();
        // Let the broker finish writing to the subscriber.
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    sub.stdin.take().unwrap().write_all(b"read\n").unwrap();
    let report = next_line("peak ");
    let _ = sub.wait();
    let f: Vec<&str> = report.split_whitespace().collect();
    let num = |key: &str| -> u64 {
        f.iter()
            .position(|w| *w == key)
            .map(|i| f[i + 1].parse().unwrap())
            .unwrap_or(0)
    };
    let peak_kib: u64 = f[0].parse().unwrap();
    let (received, dropped, drained, last) =
        (num("received"), num("dropped"), num("drained"), num("last"));
    let bound_kib = (CAPACITY * SIZE) as u64 / 1024;
    let grew_kib = peak_kib.saturating_sub(baseline_kib);
    println!(
        "{backend} slow consumer: baseline {baseline_kib} KiB, peak {peak_kib} KiB (+{} MiB; bound {} MiB + {CONSTANT_MIB} MiB), received {received}, dropped {dropped}, drained {drained}, last {last}",
        grew_kib / 1024,
        bound_kib / 1024
    );
    assert!(
        grew_kib <= bound_kib + CONSTANT_MIB * 1024,
        "memory grew by {grew_kib} KiB"
    );
    assert_eq!(received, TOTAL as u64, "every message reached the process");
    assert_eq!(dropped, TOTAL as u64 - CAPACITY as u64, "overflow counted");
    assert_eq!(
        drained, CAPACITY as u64,
        "the buffer held exactly its capacity"
    );
    assert_eq!(last, TOTAL as u64 - 1, "drop_oldest keeps the newest");
    assert!(report.contains("ordered true"), "{report}");
    assert!(
        report.contains("reconnects 0 "),
        "the broker did not cut the subscriber off: {report}"
    );
}
