//! Typed publish and decode through both APIs, the per-handle codec from
//! config, and decoders fed random and truncated bytes (they must return
//! errors, never panic).
#![cfg(all(feature = "msgpack", feature = "json", feature = "cbor"))]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use pubsub_core::codec::{Cbor, Json, MsgPack};
use pubsub_core::{blocking, Blob, Bytes, Codec, Config, ErrorKind, Format, Message, PubSub};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Detection {
    label: String,
    score: f64,
    bbox: (i32, i32, u32, u32),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Frame {
    sensor: Option<String>,
    frame_id: i64,
    captured: f64,
    image: Option<Blob>,
    detections: Vec<Detection>,
    tags: BTreeMap<String, String>,
    inner: Option<Box<Frame>>,
}

fn frame(image_len: usize) -> Frame {
    Frame {
        sensor: Some("camera.front".into()),
        frame_id: 7_533_631_717_965_074_433,
        captured: 1_700_000_000.25,
        image: Some(vec![0x5a; image_len].into()),
        detections: vec![Detection {
            label: "car".into(),
            score: 0.9,
            bbox: (-3, 4, 100, 50),
        }],
        tags: BTreeMap::from([("site".to_string(), "ann-arbor".to_string())]),
        inner: Some(Box::new(Frame {
            sensor: None,
            frame_id: 1,
            captured: 0.0,
            image: None,
            detections: vec![],
            tags: BTreeMap::new(),
            inner: None,
        })),
    }
}

fn memory(namespace: &str, codec: Format) -> Config {
    let mut config = Config::default();
    config
        .section_mut::<pubsub_core::MemoryConfig>()
        .unwrap()
        .namespace = namespace.into();
    config.codec = codec;
    config
}

#[test]
fn blocking_typed_publish_and_decode_with_every_codec() {
    let ps = blocking::PubSub::connect(&memory("typed-blocking", Format::MsgPack)).unwrap();
    ps.subscribe("frames").unwrap();
    let sent = frame(64 * 1024);
    ps.publish_as("frames", &sent, MsgPack).unwrap();
    ps.publish_as("frames", &sent, Json).unwrap();
    ps.publish_as("frames", &sent, Cbor).unwrap();
    ps.publish_value("frames", &sent).unwrap(); // the handle's codec: msgpack
    let got: Vec<Message> = (0..4)
        .map(|_| ps.recv_timeout(Duration::from_secs(5)).unwrap().unwrap())
        .collect();
    assert_eq!(got[0].decode::<Frame>(MsgPack).unwrap(), sent);
    assert_eq!(got[1].decode::<Frame>(Json).unwrap(), sent);
    assert_eq!(got[2].decode::<Frame>(Cbor).unwrap(), sent);
    assert_eq!(got[3].decode::<Frame>(ps.codec()).unwrap(), sent);
    assert_eq!(got[0].payload, got[3].payload);
    // The MessagePack image is a slice of the received payload.
    let decoded: Frame = got[0].decode(MsgPack).unwrap();
    assert!(decoded.image.unwrap().is_slice_of(&got[0].payload));
    // The wrong codec is a decode error naming topic, type and codec.
    let e = got[1].decode::<Frame>(MsgPack).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    let text = e.to_string();
    assert!(
        text.contains("\"frames\"") && text.contains("codec::Frame") && text.contains("msgpack"),
        "{text}"
    );
    ps.close().unwrap();
}

#[tokio::test]
async fn async_typed_publish_uses_the_configured_codec() {
    let ps = PubSub::connect(&memory("typed-async", Format::Json))
        .await
        .unwrap();
    assert_eq!(ps.codec(), Format::Json);
    ps.subscribe("frames").await.unwrap();
    let sent = frame(10);
    ps.publish_value("frames", &sent).await.unwrap();
    ps.publish_as("frames", &sent, Cbor).await.unwrap();
    let msg = ps.recv().await.unwrap();
    assert_eq!(msg.payload[0], b'{', "JSON, as configured");
    assert_eq!(msg.decode::<Frame>(ps.codec()).unwrap(), sent);
    let msg = ps.recv().await.unwrap();
    assert_eq!(msg.decode::<Frame>(Cbor).unwrap(), sent);
    ps.close().await.unwrap();
}

#[test]
fn a_value_the_codec_cannot_write_is_an_encode_error_and_nothing_is_sent() {
    let ps = blocking::PubSub::connect(&memory("typed-encode", Format::MsgPack)).unwrap();
    ps.subscribe("t").unwrap();
    // JSON object keys must be strings.
    let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let e = ps.publish_as("t", &bad, Json).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Encode);
    assert!(
        e.to_string().contains("json") && e.to_string().contains("\"t\""),
        "{e}"
    );
    assert_eq!(ps.stats().published, 0);
    assert!(ps
        .recv_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
}

#[test]
fn the_codec_comes_from_config_and_environment() {
    let c = Config::loader()
        .env([("MSIGHT_PUBSUB_CODEC", "cbor")])
        .load()
        .unwrap();
    assert_eq!(c.codec, Format::Cbor);
    let e = Config::loader()
        .env([("MSIGHT_PUBSUB_CODEC", "yaml")])
        .load()
        .unwrap_err();
    assert!(e.to_string().contains("MSIGHT_PUBSUB_CODEC"), "{e}");
    let c: Config = serde_json::from_str(r#"{"codec": "json"}"#).unwrap();
    assert_eq!(c.codec, Format::Json);
    let shown = serde_json::to_string(&c).unwrap();
    assert!(shown.contains(r#""codec":"json""#), "{shown}");
}

#[test]
fn decode_errors_name_the_field_that_failed() {
    #[derive(Serialize)]
    struct Wrong {
        sensor: Option<String>,
        frame_id: &'static str,
    }
    let payload = MsgPack
        .encode(&Wrong {
            sensor: None,
            frame_id: "seven",
        })
        .unwrap();
    let e = Message::new("cam", payload)
        .decode::<Frame>(MsgPack)
        .unwrap_err();
    assert!(e.to_string().contains("field `frame_id`"), "{e}");
    let mut f = frame(3);
    f.detections.push(f.detections[0].clone());
    let mut json: serde_json::Value = serde_json::to_value(&f).unwrap();
    json["detections"][1]["score"] = "high".into();
    let e = Message::new("cam", serde_json::to_vec(&json).unwrap())
        .decode::<Frame>(Json)
        .unwrap_err();
    assert!(e.to_string().contains("field `detections[1].score`"), "{e}");
}

/// Every decoder, on `bytes`, into several types: an error or a value, never a panic.
fn decode_everything(bytes: &[u8]) {
    let payload = Bytes::copy_from_slice(bytes);
    let msg = Message::new("fuzz", payload);
    for codec in [Format::MsgPack, Format::Json, Format::Cbor] {
        let _ = msg.decode::<Frame>(codec);
        let _ = msg.decode::<Blob>(codec);
        let _ = msg.decode::<Vec<Option<Blob>>>(codec);
        let _ = msg.decode::<BTreeMap<String, Vec<f64>>>(codec);
        let _ = msg.decode::<serde::de::IgnoredAny>(codec);
        let _ = msg.decode::<(u8, String, bool)>(codec);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    /// Valid payloads cut short, or with one byte changed: errors (or
    /// another valid value), never a panic.
    #[test]
    fn truncated_and_flipped_payloads_never_panic(cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), xor in 1u8..) {
        let f = frame(40);
        for codec in [Format::MsgPack, Format::Json, Format::Cbor] {
            let whole = codec.encode(&f).unwrap();
            let short = whole.slice(..cut.index(whole.len()));
            let e = Message::new("fuzz", short).decode::<Frame>(codec).unwrap_err();
            prop_assert_eq!(e.kind(), ErrorKind::Decode);
            let mut changed = whole.to_vec();
            changed[flip.index(whole.len())] ^= xor;
            decode_everything(&changed);
        }
    }
}
