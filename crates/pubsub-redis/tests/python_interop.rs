//! A Python node (redis-py, the client of the Python original, which
//! publishes and subscribes on a channel named after the topic) and a Rust
//! node exchange messages both ways on the same Redis, bytes unchanged.
//!
//! Python: `PUBSUB_TEST_PYTHON` if set, else `<workspace>/target/py-venv/bin/python`
//! (made by `cargo xtask install-brokers`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{config_for, recv_n, start, unique};
use pubsub_redis::RedisMode;
use pubsub_testkit::brokers::RedisServer;

const WAIT: Duration = Duration::from_secs(20);

/// Payloads that show any change: empty, every byte value, invalid UTF-8, 64 KiB.
fn payloads() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        (0..=255u8).collect(),
        b"\xff\xfe\x00msgpack\x93\x01\x02\x03".to_vec(),
        (0..65_536u32).map(|i| (i * 7 % 256) as u8).collect(),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Kills the Python process if the test fails half way.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `script` with the Python peer; lines of its stdout arrive on the channel.
fn spawn_python(script: &str, port: u16, topic: &str) -> (Kill, mpsc::Receiver<String>) {
    let mut child = Command::new(pubsub_testkit::python::interpreter())
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(topic)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python peer");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Kill(child), rx)
}

const PY_PUBLISHER: &str = r#"
import sys, redis
port, topic = int(sys.argv[1]), sys.argv[2]
r = redis.Redis(host="127.0.0.1", port=port)
for line in sys.stdin:
    r.publish(topic, bytes.fromhex(line.strip()))
print("DONE", flush=True)
"#;

const PY_SUBSCRIBER: &str = r#"
import sys, time, redis
port, topic, n = int(sys.argv[1]), sys.argv[2], int(sys.stdin.readline())
r = redis.Redis(host="127.0.0.1", port=port)
p = r.pubsub()
p.subscribe(topic)
deadline = time.time() + 20
while time.time() < deadline:
    m = p.get_message(timeout=1.0)
    if m and m["type"] == "subscribe":
        break
print("READY", flush=True)
got = 0
while got < n and time.time() < deadline:
    m = p.get_message(timeout=1.0)
    if m and m["type"] == "message":
        print("MSG " + m["channel"].decode() + " " + m["data"].hex(), flush=True)
        got += 1
print("DONE", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_publishes_rust_receives_bytes_unchanged() {
    let server = start(RedisServer::start);
    let topic = unique("py2rs");
    let sub = pubsub_redis::connect(&config_for(&server, RedisMode::PubSub))
        .await
        .unwrap();
    sub.subscribe(&topic).await.unwrap();
    let (mut py, lines) = spawn_python(PY_PUBLISHER, server.port(), &topic);
    {
        let mut stdin = py.0.stdin.take().expect("stdin");
        for p in payloads() {
            writeln!(stdin, "{}", hex(&p)).unwrap();
        }
    } // closing stdin ends the Python loop
    let done = tokio::task::spawn_blocking(move || lines.recv_timeout(WAIT))
        .await
        .unwrap();
    assert_eq!(done.as_deref(), Ok("DONE"), "the Python publisher finished");
    let got = recv_n(&sub, payloads().len(), WAIT).await;
    assert_eq!(got.len(), payloads().len());
    for (m, p) in got.iter().zip(payloads()) {
        assert_eq!(m.topic, topic);
        assert!(
            m.payload[..] == p[..],
            "payload of {} bytes changed",
            p.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_publishes_python_receives_bytes_unchanged() {
    let server = start(RedisServer::start);
    let topic = unique("rs2py");
    let (mut py, lines) = spawn_python(PY_SUBSCRIBER, server.port(), &topic);
    {
        let mut stdin = py.0.stdin.take().expect("stdin");
        writeln!(stdin, "{}", payloads().len()).unwrap();
    }
    let (first, lines) = tokio::task::spawn_blocking(move || (lines.recv_timeout(WAIT), lines))
        .await
        .unwrap();
    assert_eq!(
        first.as_deref(),
        Ok("READY"),
        "the Python subscriber is ready"
    );
    let publ = pubsub_redis::connect_blocking(&config_for(&server, RedisMode::PubSub)).unwrap();
    let received = tokio::task::spawn_blocking(move || {
        for p in payloads() {
            publ.publish(topic.as_str(), p).unwrap();
        }
        publ.flush().unwrap();
        publ.close().unwrap();
        let mut out = Vec::new();
        while let Ok(line) = lines.recv_timeout(WAIT) {
            if line == "DONE" {
                break;
            }
            out.push(line);
        }
        (out, topic)
    })
    .await
    .unwrap();
    let (out, topic) = received;
    let expected: Vec<String> = payloads()
        .iter()
        .map(|p| format!("MSG {topic} {}", hex(p)))
        .collect();
    assert_eq!(out.len(), expected.len(), "messages the Python node got");
    assert!(out == expected, "bytes changed on the way to Python");
}

/// The Python original itself: `msight_core.pubsub.RedisPubSub` on the
/// client of its own `get_redis_client()`, configured from the same
/// `MSIGHT_REDIS_MESSAGE_BROKER_*` variables as the Rust node.
const MSIGHT: &str = r#"
import sys, time
from msight_core.utils import get_redis_client
from msight_core.pubsub.redis_pubsub import RedisPubSub
mode, topic = sys.argv[1], sys.argv[2]
node = RedisPubSub(get_redis_client())
if mode == "sub":
    node.subscribe(Topic(topic))
    print("ready", flush=True)
    for data in node.listen():
        print(data.hex(), flush=True)
        break
else:
    node.publish(Topic(topic), bytes.fromhex(sys.argv[3]))
    print("sent", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_python_original_msight_core() {
    use pubsub_testkit::python::{PythonPeer, MSIGHT_CORE_PRELUDE};
    let server = start(RedisServer::start);
    let port = server.port().to_string();
    let env = [
        ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "127.0.0.1"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", port.as_str()),
    ];
    // msight_core.utils imports yaml for what is not used here.
    let script = format!(
        "import sys, types\nsys.modules.setdefault('yaml', types.ModuleType('yaml'))\n{MSIGHT_CORE_PRELUDE}{MSIGHT}"
    );
    let config = pubsub_redis::Config::loader()
        .env(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .no_default_file()
        .load()
        .unwrap();
    let ps = pubsub_redis::connect(&config).await.unwrap();
    let data: Vec<u8> = (0..=255u8)
        .chain(b"\x00msgpack\xff".iter().copied())
        .collect();

    // Rust -> RedisPubSub.listen()
    let mut py = start(|| {
        let mut py = PythonPeer::spawn_with_env(&script, &["sub", "msight.to_python"], &env);
        assert_eq!(py.line(WAIT), "ready");
        py
    });
    // The original subscribes without waiting for the confirmation: wait
    // until Redis has it.
    let deadline = std::time::Instant::now() + WAIT;
    let subscribed = || {
        start(|| server.cli(&["PUBSUB", "NUMSUB", "msight.to_python"]))
            .lines()
            .nth(1)
            .map(str::trim)
            == Some("1")
    };
    while !subscribed() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(subscribed(), "RedisPubSub.subscribe() reached Redis");
    ps.publish("msight.to_python", data.clone()).await.unwrap();
    ps.flush().await.unwrap();
    let got = start(|| py.line(WAIT));
    assert_eq!(
        got,
        hex(&data),
        "bytes changed on the way to RedisPubSub.listen()"
    );

    // RedisPubSub.publish() -> Rust
    ps.subscribe("msight.to_rust").await.unwrap();
    start(|| {
        let mut py =
            PythonPeer::spawn_with_env(&script, &["pub", "msight.to_rust", &hex(&data)], &env);
        assert_eq!(py.line(WAIT), "sent");
    });
    let m = ps
        .recv_timeout(WAIT)
        .await
        .unwrap()
        .expect("the message from RedisPubSub.publish()");
    assert_eq!(m.topic, "msight.to_rust");
    assert_eq!(&m.payload[..], &data[..]);
}
