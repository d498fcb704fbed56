//! JetStream mode with Python nodes on one `nats-server -js`: a nats-py
//! JetStream publisher to a Rust subscriber, a Rust publisher to a nats-py
//! pull consumer (payload bytes and headers unchanged both ways), and the
//! Python original's core-NATS subscriber (`msight_core` `NATSPubSub`)
//! receiving what a JetStream-mode Rust node publishes.

mod common;

use std::time::Duration;

use common::{js_config, js_manual, unique};
use pubsub_nats::Headers;
use pubsub_testkit::brokers::NatsServer;
use pubsub_testkit::python::PythonPeer;

const WAIT: Duration = Duration::from_secs(30);

/// nats-py JetStream: `pub` publishes with headers (a JSON dict) and prints
/// the PubAck's stream sequence; `pull` reads `n` messages through a
/// durable pull consumer from the stream's start, prints each (payload in
/// hex, headers, stream sequence) and acknowledges it.
const JS_PEER: &str = r#"
import asyncio, json, sys, nats
from nats.js.api import ConsumerConfig, DeliverPolicy
async def main():
    url, mode, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    nc = await nats.connect(url)
    js = nc.jetstream()
    if mode == "pub":
        ack = await js.publish(topic, bytes.fromhex(sys.argv[4]), headers=json.loads(sys.argv[5]))
        print(json.dumps({"stream": ack.stream, "seq": ack.seq}), flush=True)
    else:
        n = int(sys.argv[4])
        sub = await js.pull_subscribe(topic, durable="python", config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        got = 0
        while got < n:
            for msg in await sub.fetch(n - got, timeout=20):
                print(json.dumps({
                    "data": msg.data.hex(),
                    "headers": list((msg.headers or {}).items()),
                    "seq": msg.metadata.sequence.stream,
                }), flush=True)
                await msg.ack()
                got += 1
    await nc.close()
asyncio.run(main())
"#;

fn payload() -> Vec<u8> {
    let mut p: Vec<u8> = vec![0x82, 0xa4, b'n', b'a', b'm', b'e'];
    p.extend(0..=255u8);
    p.push(0);
    p
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A nats-py JetStream publish (with headers) reaches a Rust subscriber in
/// manual ack mode: payload and headers unchanged (nats-py sends them in
/// its dict's order; they arrive sorted by key), the message id is the
/// stream sequence of the PubAck Python got.
#[tokio::test(flavor = "multi_thread")]
async fn a_nats_py_jetstream_publisher_to_rust() {
    let server = tokio::task::block_in_place(NatsServer::start_jetstream);
    let topic = unique("pyjs", "to_rust");
    let sub = pubsub_nats::connect(&js_manual(vec![server.url()], Duration::from_secs(30)))
        .await
        .unwrap();
    // Subscribing makes the stream (msight_pyjs) that captures the topic.
    sub.subscribe(topic.as_str()).await.unwrap();
    let data = payload();
    let hex = to_hex(&data);
    let json = r#"{"trace-id": "7f3a", "hop": "camera", "note": "ünïcode, spaces inside"}"#;
    let ack = tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn(JS_PEER, &[&server.url(), "pub", &topic, &hex, json]);
        py.line(WAIT)
    });
    let ack: serde_json::Value = serde_json::from_str(&ack).expect("the PubAck as JSON");
    assert_eq!(ack["stream"], "msight_pyjs", "{ack}");
    let m = sub
        .recv_timeout(WAIT)
        .await
        .unwrap()
        .expect("the Python message");
    assert_eq!(
        &m.payload[..],
        &data[..],
        "payload changed on the way from Python"
    );
    assert_eq!(
        m.headers,
        Headers::from([
            ("hop", "camera"),
            ("note", "ünïcode, spaces inside"),
            ("trace-id", "7f3a"),
        ]),
        "headers from nats-py"
    );
    assert_eq!(m.id.as_deref(), Some(ack["seq"].to_string().as_str()));
    assert_eq!(m.attempt, 1);
    m.ack().unwrap();
}

/// A Rust JetStream publisher (headers in order, repeated keys) to a
/// nats-py pull consumer: the payload bytes unchanged, every header there
/// (nats-py keeps one value per key, and sees the two headers this library
/// adds: `Nats-Msg-Id`, and the order of unsorted keys).
#[tokio::test(flavor = "multi_thread")]
async fn rust_to_a_nats_py_pull_consumer() {
    let server = tokio::task::block_in_place(NatsServer::start_jetstream);
    let topic = unique("pyjs", "to_python");
    let ps = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    let data = payload();
    let sent = Headers::from([("trace-id", "7f3a"), ("hop", "camera"), ("hop", "detector")]);
    for i in 0..3u8 {
        let mut p = data.clone();
        p[0] = i;
        ps.publish_with_headers(topic.as_str(), sent.clone(), p)
            .await
            .unwrap();
    }
    ps.flush().await.expect("the stream took all three");
    let lines = tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn(JS_PEER, &[&server.url(), "pull", &topic, "3"]);
        (0..3).map(|_| py.line(WAIT)).collect::<Vec<_>>()
    });
    for (i, line) in lines.iter().enumerate() {
        let got: serde_json::Value = serde_json::from_str(line).expect("JSON from the peer");
        let mut want = data.clone();
        want[0] = i as u8;
        assert_eq!(
            got["data"],
            to_hex(&want),
            "payload {i} changed on the way to Python"
        );
        assert_eq!(got["seq"], i + 1);
        let headers: Vec<(String, String)> =
            serde_json::from_value(got["headers"].clone()).unwrap();
        let get = |k: &str| {
            headers
                .iter()
                .find(|(hk, _)| hk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("trace-id"), Some("7f3a"), "{headers:?}");
        assert_eq!(
            get("hop"),
            Some("detector"),
            "the last value of a repeated key: {headers:?}"
        );
        assert_eq!(
            get("Msight-Header-Order"),
            Some("trace-id hop hop"),
            "{headers:?}"
        );
        assert!(
            get("Nats-Msg-Id").is_some_and(|id| id.starts_with("msight-")),
            "{headers:?}"
        );
    }
}

/// The Python original (`msight_core.pubsub.NATSPubSub`, core NATS, from
/// its own `get_nats_config`) subscribed to a topic still receives what a
/// Rust node in JetStream mode publishes there, bytes unchanged: a
/// JetStream publish is a NATS publish the stream also captures.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_original_core_subscriber_receives_jetstream_publishes() {
    let server = tokio::task::block_in_place(NatsServer::start_jetstream);
    let servers = format!("['{}']", server.url());
    let script = format!(
        "{}{}",
        pubsub_testkit::python::MSIGHT_CORE_PRELUDE,
        r#"
import time
from msight_core.pubsub.nats_pubsub import NATSPubSub
from msight_core.pubsub.utils import get_nats_config
node = NATSPubSub(get_nats_config(None))
node.subscribe(Topic(sys.argv[1]))
time.sleep(0.3)  # the original subscribes without a flush
print("ready", flush=True)
for data in node.listen():
    print(data.hex(), flush=True)
    break
"#
    );
    let topic = unique("pyjs", "original");
    let mut py = tokio::task::block_in_place(|| {
        let mut py =
            PythonPeer::spawn_with_env(&script, &[&topic], &[("MSIGHT_NATS_SERVERS", &servers)]);
        assert_eq!(py.line(WAIT), "ready");
        py
    });
    let ps = pubsub_nats::connect(&js_config(vec![server.url()]))
        .await
        .unwrap();
    let data = payload();
    ps.publish(topic.as_str(), data.clone()).await.unwrap();
    ps.flush().await.expect("stored in the stream too");
    let got = tokio::task::block_in_place(|| py.line(WAIT));
    assert_eq!(
        got,
        to_hex(&data),
        "bytes changed on the way to NATSPubSub.listen()"
    );
}
