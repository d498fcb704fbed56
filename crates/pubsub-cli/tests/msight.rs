//! msight messages on the command line, across processes through a real
//! nats-server: `pub --msight-json` to `sub --format msight`, and a Python
//! msight node (msight-core's `NATSPubSub` and `Data.deserialize()`)
//! decoding every frame of `pubsub demo`.
#![cfg(feature = "nats")]

mod common;

use std::time::Duration;

use common::*;
use pubsub_testkit::brokers::NatsServer;
use pubsub_testkit::python::{PythonPeer, MSIGHT_CORE_PRELUDE, MSIGHT_DATA_PRELUDE};

fn nats_env(server: &NatsServer) -> Vec<(&'static str, String)> {
    vec![
        ("MSIGHT_PUBSUB_BACKEND", "nats".to_string()),
        ("MSIGHT_NATS_SERVERS", server.url()),
    ]
}

/// An `ImageData` as Python's `to_json()` writes it (a 12-byte "image").
const IMAGE_JSON: &str = r#"{"data_type": "msight_core.data.image.ImageData", "sensor_name": "camera.front", "capture_timestamp": 1700000000.123456, "creation_timestamp": 1700000000.2, "frame_id": 7533631717965074433, "device_name": "edge-1", "image": "/9j/4AAQSkZJRgABAQ==", "is_encoded": true, "detection_results": null, "size": [480, 640, 3]}"#;

/// A `BytesData` with only some fields: the rest get Python's defaults.
const BYTES_JSON: &str = r#"{"data_type": "msight_core.data.bytes.BytesData", "sensor_name": "gps", "data": "JEdQR0dB"}"#;

#[test]
fn pub_msight_json_to_sub_format_msight() {
    let server = NatsServer::start();
    let vars = nats_env(&server);
    let env = as_refs(&vars);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.json");
    std::fs::write(&file, format!("{IMAGE_JSON}\n{BYTES_JSON}\n")).unwrap();

    for base64 in [false, true] {
        let topic = format!("cli.msight.{base64}");
        let mut cmd = pubsub(&env);
        cmd.args([
            "sub",
            &topic,
            "--count",
            "4",
            "--timeout",
            "30",
            "--format",
            "msight",
        ]);
        if base64 {
            cmd.arg("--base64");
        }
        let sub = start_sub(cmd, &[&topic]);
        // Two from the file, then the image again from standard input;
        // and a payload that is no msight message, reported on stderr.
        let o = run(pubsub(&env)
            .args(["pub", &topic, "--msight-json"])
            .arg(&file));
        assert_code(&o, 0);
        assert_code(&run(pubsub(&env).args(["pub", &topic, "not msight"])), 0);
        let stdin_pub = Background::spawn_with_input(
            "pubsub pub --msight-json -",
            pubsub(&env).args(["pub", &topic, "--msight-json", "-"]),
            IMAGE_JSON.as_bytes(),
        );
        let (status, _, err) = stdin_pub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");

        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        assert!(
            err.contains(&format!("{topic}: not an msight message (10 bytes)")),
            "{err}"
        );
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        if base64 {
            // Python's to_json(), exactly as it went in.
            assert_eq!(lines[0], IMAGE_JSON);
            assert_eq!(lines[2], IMAGE_JSON);
            assert!(lines[1].contains(r#""data": "JEdQR0dB""#), "{}", lines[1]);
        } else {
            assert_eq!(
                lines[0],
                IMAGE_JSON.replace(r#""/9j/4AAQSkZJRgABAQ==""#, r#""<13 bytes>""#)
            );
            assert!(lines[1].contains(r#""data": "<6 bytes>""#), "{}", lines[1]);
        }
        // Fields left out of the JSON got Python's defaults.
        let bytes: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(bytes["data_type"], "msight_core.data.bytes.BytesData");
        assert_eq!(bytes["sensor_name"], "gps");
        assert!(bytes["frame_id"].as_i64().unwrap() > 0, "{bytes}");
        assert!(
            bytes["capture_timestamp"].as_f64().unwrap() > 1.7e9,
            "{bytes}"
        );
    }
}

#[test]
fn msight_json_that_is_not_an_msight_message_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for (text, fragment) in [
        ("{\"sensor_name\": \"x\"}", "data_type"),
        (
            "{\"data_type\": \"msight_core.data.bytes.BytesData\"}",
            "missing field `data`",
        ),
        ("", "no JSON object"),
        ("{\"data_type\": ", "EOF"),
    ] {
        let file = dir.path().join("bad.json");
        std::fs::write(&file, text).unwrap();
        let o = run(pubsub(&[]).args(["pub", "t", "--msight-json"]).arg(&file));
        assert_code(&o, 2);
        assert!(stderr(&o).contains(fragment), "{text}: {}", stderr(&o));
    }
    let o = run(pubsub(&[]).args(["sub", "t", "--base64"]));
    assert_code(&o, 2);
    assert!(stderr(&o).contains("--format msight"), "{}", stderr(&o));
}

/// A Python msight node as msight-core writes one: `NATSPubSub` from its
/// own `get_nats_config`, every message through `Data.deserialize()`.
const PYTHON_NODE: &str = r#"
import time
from msight_core.pubsub.nats_pubsub import NATSPubSub
from msight_core.pubsub.utils import get_nats_config
topic, count = sys.argv[1], int(sys.argv[2])
node = NATSPubSub(get_nats_config(None))
node.subscribe(Topic(topic))
time.sleep(0.3)  # the original subscribes without a flush
print("ready", flush=True)
for n, payload in enumerate(node.listen()):
    data = Data.deserialize(payload)
    pixels = data.to_ndarray()
    print(type(data).__name__, data.sensor_name, data.frame_id, len(data.image),
          "x".join(map(str, pixels.shape)), round(time.time() - data.capture_timestamp, 3), flush=True)
    if n + 1 == count:
        break
"#;

#[test]
fn a_python_msight_node_decodes_every_demo_frame() {
    let server = NatsServer::start();
    let vars = nats_env(&server);
    let frames = 50;
    let script = format!("{MSIGHT_CORE_PRELUDE}{MSIGHT_DATA_PRELUDE}{PYTHON_NODE}");
    // The demo's topics are new each run: the node takes every run's frames.
    let mut node = PythonPeer::spawn_with_env(
        &script,
        &["pubsub-demo.*.frames", &frames.to_string()],
        &[("MSIGHT_NATS_SERVERS", &format!("['{}']", server.url()))],
    );
    assert_eq!(node.line(Duration::from_secs(60)), "ready");
    let o = run(pubsub(&as_refs(&vars)).args([
        "demo",
        "--frames",
        &frames.to_string(),
        "--rate",
        "200",
        "--payload-size",
        "3000",
    ]));
    assert_clean_demo(&o, frames, 3);
    let mut ids = Vec::new();
    for _ in 0..frames {
        let line = node.line(Duration::from_secs(30));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&words[..2], ["ImageData", "roadside-cam-01"], "{line}");
        assert_eq!(&words[3..5], ["3000", "1x3000x1"], "{line}");
        let age: f64 = words[5].parse().unwrap();
        assert!((0.0..60.0).contains(&age), "capture time is now: {line}");
        ids.push(words[2].parse::<i64>().unwrap());
    }
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), frames as usize, "one frame id per frame");
    assert!(
        node.wait(Duration::from_secs(10)),
        "the Python node exits cleanly"
    );
}
