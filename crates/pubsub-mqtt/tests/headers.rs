//! Headers as MQTT v5 user properties against a real mosquitto: with a
//! paho-mqtt (v5) Python peer both ways, order and repeated keys kept; what
//! brokers refuse is refused before it is sent; the packet limit counts them.

mod common;

use std::time::Duration;

use common::{config_for, recv_n, start_broker, unique};
use pubsub_mqtt::pubsub_core::Headers;
use pubsub_mqtt::ErrorKind;
use pubsub_testkit::python::PythonPeer;

/// A paho-mqtt v5 peer: `sub` prints each message's payload (hex) and user
/// properties as JSON; `pub` publishes a payload with the user properties
/// given as a JSON list of pairs.
const PAHO_PEER: &str = r#"
import json, sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, mode, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
subscribed, done = threading.Event(), threading.Event()
def on_message(client, userdata, m):
    pairs = getattr(m.properties, "UserProperty", []) if m.properties else []
    print(json.dumps({"data": m.payload.hex(), "headers": pairs}), flush=True)
    done.set()
c.on_message = on_message
c.on_subscribe = lambda *a: subscribed.set()
c.connect("127.0.0.1", port)
c.loop_start()
if mode == "sub":
    c.subscribe(topic, qos=1)
    assert subscribed.wait(20), "no SUBACK"
    print("ready", flush=True)
    assert done.wait(20), "no message"
else:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [tuple(p) for p in json.loads(sys.argv[5])]
    c.publish(topic, bytes.fromhex(sys.argv[4]), qos=1, properties=props).wait_for_publish(20)
    print("sent", flush=True)
c.disconnect()
c.loop_stop()
"#;

fn payload() -> Vec<u8> {
    (0..=255u8).chain([0, 0xff]).collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pairs(h: &Headers) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

fn sample() -> Headers {
    Headers::from([
        ("trace-id", "7f3a"),
        ("hop", "camera"),
        ("note", "spaces, ünïcode, 中文 and 🚗"),
        ("hop", "detector"),
        ("empty", ""),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_to_paho_and_back() {
    let broker = start_broker();
    let port = broker.port().to_string();
    let ps = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect");
    assert!(ps.capabilities().headers);
    let data = payload();

    let to_python = unique("hdr-to-paho");
    let mut py = tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn(PAHO_PEER, &[&port, "sub", &to_python]);
        assert_eq!(py.line(Duration::from_secs(20)), "ready");
        py
    });
    ps.publish_with_headers(&to_python, sample(), data.clone())
        .await
        .expect("publish with headers");
    ps.flush().await.expect("flush");
    let line = tokio::task::block_in_place(|| py.line(Duration::from_secs(20)));
    let got: serde_json::Value = serde_json::from_str(&line).expect("JSON from the peer");
    assert_eq!(
        got["data"],
        to_hex(&data),
        "payload changed on the way to paho"
    );
    let seen: Vec<(String, String)> = serde_json::from_value(got["headers"].clone()).unwrap();
    assert_eq!(seen, pairs(&sample()), "user properties as paho sees them");

    let to_rust = unique("hdr-from-paho");
    ps.subscribe(&to_rust).await.expect("subscribe");
    let json = serde_json::to_string(&pairs(&sample())).unwrap();
    tokio::task::block_in_place(|| {
        let mut py = PythonPeer::spawn(PAHO_PEER, &[&port, "pub", &to_rust, &to_hex(&data), &json]);
        assert_eq!(py.line(Duration::from_secs(20)), "sent");
    });
    let m = ps
        .recv_timeout(Duration::from_secs(20))
        .await
        .expect("recv")
        .expect("the message from paho");
    assert_eq!(&m.payload[..], &data[..]);
    assert_eq!(m.headers, sample(), "user properties from paho, in order");
    ps.close().await.expect("close");
}

/// What brokers refuse in user properties (a tab: mosquitto drops the
/// connection over it) is refused with `InvalidHeader` before anything is
/// sent, and the connection goes on; headers count towards the packet limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_brokers_refuse_are_refused_and_count_towards_the_limit() {
    let broker = start_broker();
    let mut config = config_for(&broker.url(), 1);
    config
        .section_mut::<pubsub_mqtt::MqttConfig>()
        .unwrap()
        .max_packet_size = 64 * 1024;
    let ps = pubsub_mqtt::connect(&config).await.expect("connect");
    let topic = unique("hdr-bad");
    ps.subscribe(&topic).await.expect("subscribe");
    let e = ps
        .publish_with_headers(&topic, Headers::from([("k", "a\ttab")]), "x")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidHeader, "{e}");
    assert!(e.to_string().contains("MQTT"), "{e}");
    let max = ps.capabilities().max_payload.unwrap();
    ps.publish(&topic, vec![1u8; max])
        .await
        .expect("the largest payload alone");
    let e = ps
        .publish_with_headers(
            &topic,
            Headers::from([("k", "v".repeat(2000))]),
            vec![2u8; max],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge, "{e}");
    assert!(e.to_string().contains("headers"), "{e}");
    ps.publish_with_headers(&topic, Headers::from([("k", "v")]), "after")
        .await
        .expect("publish after");
    ps.flush().await.expect("flush");
    let got = recv_n(&ps, 2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].payload.len(), max);
    assert_eq!(&got[1].payload[..], b"after");
    assert_eq!(got[1].headers, Headers::from([("k", "v")]));
    assert_eq!(ps.stats().reconnects, 0, "the connection was never dropped");
}
