//! A Rust node and a Python node (nats-py, the client the Python original
//! uses) on one `nats-server` exchange messages both ways, bytes unchanged.

use std::time::Duration;

use pubsub_nats::Config;
use pubsub_nats::NatsConfig;
use pubsub_testkit::brokers::NatsServer;
use pubsub_testkit::python::PythonPeer;

const PEER: &str = r#"
import asyncio, sys, nats
async def main():
    url, mode, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    nc = await nats.connect(url)
    if mode == "sub":
        got = asyncio.get_running_loop().create_future()
        async def cb(msg):
            if not got.done():
                got.set_result(msg.data)
        await nc.subscribe(topic, cb=cb)
        await nc.flush()
        print("ready", flush=True)
        data = await asyncio.wait_for(got, 20)
        print(data.hex(), flush=True)
    else:
        await nc.publish(topic, bytes.fromhex(sys.argv[4]))
        await nc.flush()
        print("sent", flush=True)
    await nc.close()
asyncio.run(main())
"#;

fn payload() -> Vec<u8> {
    // Every byte value, a MessagePack-looking prefix, and a NUL at the end.
    let mut p: Vec<u8> = vec![0x82, 0xa4, b'n', b'a', b'm', b'e'];
    p.extend(0..=255u8);
    p.push(0);
    p
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_to_python_and_back() {
    let server = tokio::task::block_in_place(NatsServer::start);
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![server.url()];
    let ps = pubsub_nats::connect(&c).await.unwrap();
    let data = payload();

    // Rust publishes, Python receives.
    let mut py = tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn(PEER, &[&server.url(), "sub", "interop.to_python"]);
        assert_eq!(py.line(Duration::from_secs(20)), "ready");
        py
    });
    ps.publish("interop.to_python", data.clone()).await.unwrap();
    ps.flush().await.unwrap();
    let got = tokio::task::block_in_place(|| py.line(Duration::from_secs(20)));
    assert_eq!(got, to_hex(&data), "bytes changed on the way to Python");

    // Python publishes, Rust receives.
    ps.subscribe("interop.to_rust").await.unwrap();
    let hex = to_hex(&data);
    tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn(PEER, &[&server.url(), "pub", "interop.to_rust", &hex]);
        assert_eq!(py.line(Duration::from_secs(20)), "sent");
    });
    let m = ps
        .recv_timeout(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the Python message");
    assert_eq!(m.topic, "interop.to_rust");
    assert_eq!(
        &m.payload[..],
        &data[..],
        "bytes changed on the way from Python"
    );
}

/// The Python original itself (`msight_core.pubsub.NATSPubSub`, configured
/// by its own `get_nats_config` from the same `MSIGHT_NATS_SERVERS` in
/// list-literal form) and a Rust node configured from that variable.
const MSIGHT: &str = r#"
import sys, time
from msight_core.pubsub.nats_pubsub import NATSPubSub
from msight_core.pubsub.utils import get_nats_config
mode, topic = sys.argv[1], sys.argv[2]
node = NATSPubSub(get_nats_config(None))
if mode == "sub":
    node.subscribe(Topic(topic))
    time.sleep(0.3)  # the original subscribes without a flush
    print("ready", flush=True)
    for data in node.listen():
        print(data.hex(), flush=True)
        break
else:
    node.publish(Topic(topic), bytes.fromhex(sys.argv[3]))
    time.sleep(0.5)  # the original has no flush or close
    print("sent", flush=True)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn with_the_python_original_msight_core() {
    let server = tokio::task::block_in_place(NatsServer::start);
    let servers = format!("['{}']", server.url());
    let script = format!("{}{MSIGHT}", pubsub_testkit::python::MSIGHT_CORE_PRELUDE);
    let config = Config::loader()
        .env(std::collections::HashMap::from([(
            "MSIGHT_NATS_SERVERS".to_string(),
            servers.clone(),
        )]))
        .no_default_file()
        .load()
        .unwrap();
    let ps = pubsub_nats::connect(&config).await.unwrap();
    let data = payload();

    let mut py = tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn_with_env(
            &script,
            &["sub", "msight.to_python"],
            &[("MSIGHT_NATS_SERVERS", &servers)],
        );
        assert_eq!(py.line(Duration::from_secs(30)), "ready");
        py
    });
    ps.publish("msight.to_python", data.clone()).await.unwrap();
    ps.flush().await.unwrap();
    let got = tokio::task::block_in_place(|| py.line(Duration::from_secs(20)));
    assert_eq!(
        got,
        to_hex(&data),
        "bytes changed on the way to NATSPubSub.listen()"
    );

    ps.subscribe("msight.to_rust").await.unwrap();
    let hex = to_hex(&data);
    tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn_with_env(
            &script,
            &["pub", "msight.to_rust", &hex],
            &[("MSIGHT_NATS_SERVERS", &servers)],
        );
        assert_eq!(py.line(Duration::from_secs(30)), "sent");
    });
    let m = ps
        .recv_timeout(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the message from NATSPubSub.publish()");
    assert_eq!(&m.payload[..], &data[..]);
}

/// A nats-py peer that prints the headers it receives as JSON, or publishes
/// the headers given as JSON (a dict: one value per key, in order).
const HEADERS_PEER: &str = r#"
import asyncio, json, sys, nats
async def main():
    url, mode, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    nc = await nats.connect(url)
    if mode == "sub":
        got = asyncio.get_running_loop().create_future()
        async def cb(msg):
            if not got.done():
                got.set_result(msg)
        await nc.subscribe(topic, cb=cb)
        await nc.flush()
        print("ready", flush=True)
        msg = await asyncio.wait_for(got, 20)
        print(json.dumps({"data": msg.data.hex(), "headers": list((msg.headers or {}).items())}), flush=True)
    else:
        await nc.publish(topic, bytes.fromhex(sys.argv[4]), headers=json.loads(sys.argv[5]))
        await nc.flush()
        print("sent", flush=True)
    await nc.close()
asyncio.run(main())
"#;

/// Headers reach a nats-py peer, and headers from it reach Rust. nats-py
/// keeps headers in a dict: of a repeated key it sees the last value, and
/// it sees the order header that keeps the order of unsorted keys (see
/// `pubsub_nats::HEADER_ORDER`). What it publishes arrives sorted by key,
/// since its order between keys cannot be told from async-nats's map.
#[tokio::test(flavor = "multi_thread")]
async fn headers_to_python_and_back() {
    use pubsub_core::Headers;
    let server = tokio::task::block_in_place(NatsServer::start);
    let mut c = Config::default();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![server.url()];
    let ps = pubsub_nats::connect(&c).await.unwrap();
    let data = payload();

    let mut py = tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn(HEADERS_PEER, &[&server.url(), "sub", "hdr.to_python"]);
        assert_eq!(py.line(Duration::from_secs(20)), "ready");
        py
    });
    let sent = Headers::from([
        ("trace-id", "7f3a"),
        ("hop", "camera"),
        ("note", "ünïcode, spaces inside"),
        ("hop", "detector"),
    ]);
    ps.publish_with_headers("hdr.to_python", sent, data.clone())
        .await
        .unwrap();
    ps.flush().await.unwrap();
    let line = tokio::task::block_in_place(|| py.line(Duration::from_secs(20)));
    let got: serde_json::Value = serde_json::from_str(&line).expect("JSON from the peer");
    assert_eq!(
        got["data"],
        to_hex(&data),
        "payload changed on the way to Python"
    );
    let mut seen: Vec<(String, String)> = serde_json::from_value(got["headers"].clone()).unwrap();
    seen.sort();
    let mut want = vec![
        (
            "Msight-Header-Order".to_string(),
            "trace-id hop note hop".to_string(),
        ),
        ("hop".into(), "detector".into()),
        ("note".into(), "ünïcode, spaces inside".into()),
        ("trace-id".into(), "7f3a".into()),
    ];
    want.sort();
    assert_eq!(seen, want, "headers as nats-py sees them");

    ps.subscribe("hdr.to_rust").await.unwrap();
    let hex = to_hex(&data);
    let json = r#"{"trace-id": "7f3a", "hop": "camera", "note": "ünïcode, spaces inside"}"#;
    tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn(
            HEADERS_PEER,
            &[&server.url(), "pub", "hdr.to_rust", &hex, json],
        );
        assert_eq!(py.line(Duration::from_secs(20)), "sent");
    });
    let m = ps
        .recv_timeout(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the Python message");
    assert_eq!(&m.payload[..], &data[..]);
    assert_eq!(
        m.headers,
        Headers::from([
            ("hop", "camera"),
            ("note", "ünïcode, spaces inside"),
            ("trace-id", "7f3a"),
        ]),
        "headers from nats-py, sorted by key"
    );
}
