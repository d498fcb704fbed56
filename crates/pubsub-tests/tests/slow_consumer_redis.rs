//! Redis, `pubsub` and `streams` mode: a subscriber that stops reading while
//! 200,000 messages of 1 KiB are published (the same test as `slow_consumer.rs`). Its process's memory must stay under the buffer bound plus a
//! documented constant, overflow must be counted, and when it reads again it
//! gets what the policy (`drop_oldest`) promises: the newest messages, in order.
//!
//! The subscriber runs in a child process (this test binary, re-executed),
//! so that its peak resident memory is its own.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use pubsub_core::config::RedisMode;
use pubsub_core::testkit::brokers::RedisServer;
use pubsub_core::{Config, OverflowPolicy};

const TOTAL: u32 = 200_000;
const SIZE: usize = 1024;
const CAPACITY: usize = 10_000;
/// Documented in the README: what a subscribing process may use beyond its
/// buffer bound (the client library's own buffers, allocator slack).
const CONSTANT_MIB: u64 = 48;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn redis_config(port: u16, mode: RedisMode) -> Config {
    let mut c = Config::default();
    c.redis.host = "127.0.0.1".into();
    c.redis.port = port;
    c.redis.mode = mode;
    // Keep every entry: this test is about the subscriber's memory, and a
    // stream trimmed under a lagging reader would lose entries in Redis.
    c.redis.stream_maxlen = 0;
    c
}

fn mode_named(name: &str) -> RedisMode {
    if name == "streams" {
        RedisMode::Streams
    } else {
        RedisMode::PubSub
    }
}

fn child(port: u16, mode: RedisMode) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = redis_config(port, mode);
        c.buffer.capacity = CAPACITY;
        c.buffer.overflow = OverflowPolicy::DropOldest;
        let ps = pubsub_redis::connect(&c).await.unwrap();
        ps.subscribe("slow.consumer").await.unwrap();
        println!("ready {}", status_kib("VmRSS:"));
        let mut line = String::new();
        tokio::task::block_in_place(|| std::io::stdin().lock().read_line(&mut line).unwrap());
        // The client may still be parsing what Redis wrote (a debug build
        // is slow at it): wait, bounded, until every message was counted.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while ps.stats().received < u64::from(TOTAL) && std::time::Instant::now() < deadline {
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

const CHILD_PORT: &str = "PUBSUB_SLOW_CONSUMER_REDIS_CHILD";
const CHILD_MODE: &str = "PUBSUB_SLOW_CONSUMER_REDIS_MODE";

#[test]
fn redis_slow_consumer_memory_is_bounded() {
    run("redis_slow_consumer_memory_is_bounded", "pubsub");
}

#[test]
fn redis_streams_slow_consumer_memory_is_bounded() {
    run("redis_streams_slow_consumer_memory_is_bounded", "streams");
}

/// The parent side of test `name`, or the child when re-executed for it.
fn run(name: &str, mode_name: &str) {
    if let Ok(port) = std::env::var(CHILD_PORT) {
        let mode = std::env::var(CHILD_MODE).unwrap_or_default();
        child(port.parse().unwrap(), mode_named(&mode));
        return;
    }
    let mode = mode_named(mode_name);
    let server = RedisServer::start();
    let mut sub = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--quiet"])
        .env(CHILD_PORT, server.port().to_string())
        .env(CHILD_MODE, mode_name)
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
            .recv_timeout(Duration::from_secs(60))
            .expect("the subscriber answers");
        if let Some(rest) = l.strip_prefix(prefix) {
            return rest.to_string();
        }
    };
    let baseline_kib: u64 = next_line("ready ").trim().parse().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ps = pubsub_redis::connect(&redis_config(server.port(), mode))
            .await
            .unwrap();
        let mut payload = vec![0u8; SIZE];
        // Paced at about 50,000 messages/s: this test is about a subscriber
        // whose *application* does not read. A subscribing *process* that
        // cannot even parse what Redis sends is cut off by Redis at its
        // output-buffer limit; that shows as a reconnect (see the crate docs).
        for i in 0..TOTAL {
            payload[..4].copy_from_slice(&i.to_be_bytes());
            ps.publish("slow.consumer", payload.clone()).await.unwrap();
            if i % 2_000 == 1_999 {
                ps.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
        ps.flush().await.unwrap();
        ps.close().await.unwrap();
        // Let the server finish writing to the subscriber.
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
    println!("child: {report}");
    println!(
        "redis {mode_name} slow consumer: baseline {baseline_kib} KiB, peak {peak_kib} KiB (+{} MiB; bound {} MiB + {CONSTANT_MIB} MiB), received {received}, dropped {dropped}, drained {drained}, last {last}",
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
        "Redis did not cut the subscriber off: {report}"
    );
}
