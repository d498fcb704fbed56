//! Decoding rules of the msight types without Python: the tag, Python's
//! defaults, keys in any order, errors that say where, and decoders fed
//! random, truncated and altered bytes (errors, never a panic).

use msight_data::{
    BytesData, Data, DataType, DetectionResult, DetectionResultsData, ImageData, RoadUserPoint,
    SensorData, Value, MAX_NESTING,
};
use proptest::prelude::*;
use pubsub_core::codec::{Json, MsgPack};
use pubsub_core::{Blob, Bytes, Codec, ErrorKind, Message};

fn sensor() -> SensorData {
    SensorData {
        sensor_name: Some("camera.front".into()),
        capture_timestamp: 1.5,
        creation_timestamp: 2.0,
        frame_id: 7,
        device_name: None,
    }
}

fn detections(points: usize) -> DetectionResultsData {
    DetectionResultsData {
        sensor: sensor(),
        detection_result: Some(DetectionResult::new(
            (0..points)
                .map(|i| RoadUserPoint {
                    x: Some((i as f64).into()),
                    y: Some((i as i64).into()),
                    category: Some(4),
                    ..RoadUserPoint::default()
                })
                .collect(),
            17i64,
            Some("camera".into()),
        )),
        raw_sensor_data: Some(Box::new(
            BytesData {
                sensor: sensor(),
                data: Blob::from(&b"raw"[..]),
            }
            .into(),
        )),
        sensor_frame_id: Some(7),
    }
}

fn image() -> ImageData {
    ImageData {
        detection_results: Some(Box::new(detections(3))),
        ..ImageData::new(sensor(), vec![0xffu8; 2000], [10, 20, 3])
    }
}

/// A map payload with the given (key, value) entries, in that order.
fn payload(entries: Vec<(&str, Value)>) -> Bytes {
    MsgPack
        .encode(&Value::Map(
            entries.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        ))
        .unwrap()
}

#[test]
fn a_type_read_directly_checks_the_tag() {
    let bytes = MsgPack.encode(&image()).unwrap();
    let e = Message::new("camera.front", bytes)
        .decode::<BytesData>(MsgPack)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    let text = e.to_string();
    assert!(
        text.contains("\"camera.front\"")
            && text.contains("BytesData")
            && text.contains(&format!("data_type is {:?}", ImageData::DATA_TYPE)),
        "{text}"
    );
}

#[test]
fn missing_fields_get_python_defaults_or_are_errors() {
    // Only the tag: every ImageData field has a default in Python.
    let p = payload(vec![("data_type", ImageData::DATA_TYPE.into())]);
    let img: ImageData = MsgPack.decode(&p).unwrap();
    assert!(img.is_encoded && img.image.is_none() && img.sensor.sensor_name.is_none());
    assert!((img.sensor.capture_timestamp - msight_data::timestamp_now()).abs() < 60.0);
    assert!(img.sensor.frame_id > 0);
    // BytesData.data has none.
    let p = payload(vec![("data_type", BytesData::DATA_TYPE.into())]);
    let e = Message::new("t", p).decode::<Data>(MsgPack).unwrap_err();
    assert!(e.to_string().contains("missing field `data`"), "{e}");
}

#[test]
fn keys_in_any_order_and_unknown_keys_are_ignored() {
    let p = payload(vec![
        ("data", Value::Bin(Blob::from(&b"abc"[..]))),
        ("future_field", Value::Int(1)),
        ("frame_id", Value::Int(9)),
        ("data_type", BytesData::DATA_TYPE.into()),
    ]);
    let Data::BytesData(b) = Data::from_msgpack(&p).unwrap() else {
        panic!("BytesData")
    };
    assert_eq!(&b.data[..], b"abc");
    assert!(b.data.is_slice_of(&p), "still not copied");
    assert_eq!(b.sensor.frame_id, 9);
    let e = Data::from_msgpack(&payload(vec![("frame_id", Value::Int(9))])).unwrap_err();
    assert!(e.to_string().contains("data_type"), "{e}");
}

#[test]
fn an_unknown_type_keeps_every_field_and_its_bytes() {
    let p = payload(vec![
        ("data_type", "acme.data.RadarData".into()),
        ("sensor_name", "radar".into()),
        ("blob", Value::Bin(Blob::from(vec![1u8; 100]))),
        (
            "nested",
            Value::Map(vec![(Value::Int(1), Value::Array(vec![Value::Nil]))]),
        ),
    ]);
    let d = Data::from_msgpack(&p).unwrap();
    assert_eq!(d.data_type(), "acme.data.RadarData");
    assert!(d.sensor().is_none());
    let Data::Unknown(u) = &d else { panic!() };
    assert_eq!(u.get("sensor_name").and_then(Value::as_str), Some("radar"));
    assert_eq!(d.to_msgpack().unwrap(), p, "passed on byte for byte");
}

#[test]
fn errors_name_the_field_that_failed() {
    let mut value: Value = MsgPack.decode(&MsgPack.encode(&image()).unwrap()).unwrap();
    // detection_results.detection_result.object_list[1].x = "far"
    let Value::Map(top) = &mut value else {
        panic!()
    };
    let (_, dr) = top
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("detection_results"))
        .unwrap();
    let Value::Map(dr) = dr else { panic!() };
    let (_, res) = dr
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("detection_result"))
        .unwrap();
    let Value::Map(res) = res else { panic!() };
    let (_, list) = res
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("object_list"))
        .unwrap();
    let Value::Array(list) = list else { panic!() };
    let Value::Map(p1) = &mut list[1] else {
        panic!()
    };
    p1.iter_mut()
        .find(|(k, _)| k.as_str() == Some("x"))
        .unwrap()
        .1 = "far".into();
    let bad = MsgPack.encode(&value).unwrap();
    for e in [
        Message::new("cam", bad.clone())
            .decode::<Data>(MsgPack)
            .unwrap_err(),
        Message::new("cam", bad)
            .decode::<ImageData>(MsgPack)
            .unwrap_err(),
    ] {
        assert!(
            e.to_string()
                .contains("field `detection_results.detection_result.object_list[1].x`"),
            "{e}"
        );
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let nest = |levels: usize| {
        let mut d: Data = BytesData {
            sensor: sensor(),
            data: Blob::from(&b"x"[..]),
        }
        .into();
        for _ in 0..levels {
            d = DetectionResultsData {
                sensor: sensor(),
                detection_result: None,
                raw_sensor_data: Some(Box::new(d)),
                sensor_frame_id: None,
            }
            .into();
        }
        d
    };
    // MAX_NESTING messages inside each other decode; one more, or a
    // hundred more, is refused. In a thread with a small stack (a quarter
    // of tokio's and the test runner's), to show the limit keeps well
    // within it, also on the error path (which decodes twice).
    std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || {
            let ok = nest(MAX_NESTING - 1);
            assert_eq!(Data::from_msgpack(&ok.to_msgpack().unwrap()).unwrap(), ok);
            // Plain values nest up to the codec's limit (128), as cheaply.
            let mut v = Value::Nil;
            for _ in 0..pubsub_core::codec::MAX_DEPTH - 1 {
                v = Value::Array(vec![v]);
            }
            let bytes = MsgPack.encode(&v).unwrap();
            assert_eq!(MsgPack.decode::<Value>(&bytes).unwrap(), v);
            assert!(Data::from_msgpack(&bytes).is_err());
            for levels in [MAX_NESTING, 120] {
                let deep = nest(levels).to_msgpack().unwrap();
                let e = Data::from_msgpack(&deep).unwrap_err();
                assert!(e.to_string().contains("nested more than 32"), "{e}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn json_and_msgpack_give_the_same_message() {
    let d: Data = image().into();
    let from_json: Data = Json.decode(&Json.encode(&d).unwrap()).unwrap();
    assert_eq!(from_json, d);
    assert_eq!(Data::from_json(&d.to_json().unwrap()).unwrap(), d);
}

fn decode_all(bytes: &[u8]) {
    let msg = Message::new("fuzz", Bytes::copy_from_slice(bytes));
    for codec in [pubsub_core::Format::MsgPack, pubsub_core::Format::Json] {
        let _ = msg.decode::<Data>(codec);
        let _ = msg.decode::<ImageData>(codec);
        let _ = msg.decode::<DetectionResultsData>(codec);
        let _ = msg.decode::<Value>(codec);
    }
    let _ = Data::from_json(&String::from_utf8_lossy(bytes));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_all(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_start_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<prop::sample::Index>()) {
        let whole = MsgPack.encode(&image()).unwrap();
        let mut bytes = whole[..cut.index(whole.len())].to_vec();
        bytes.extend(tail);
        decode_all(&bytes);
    }

    #[test]
    fn truncated_or_altered_messages_never_panic(cut in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), xor in 1u8..) {
        let d: Data = image().into();
        for whole in [d.to_msgpack().unwrap(), Bytes::from(d.to_json().unwrap())] {
            let codec = if whole[0] == b'{' { pubsub_core::Format::Json } else { pubsub_core::Format::MsgPack };
            let short = whole.slice(..cut.index(whole.len()));
            let e = Message::new("fuzz", short).decode::<Data>(codec).unwrap_err();
            prop_assert_eq!(e.kind(), ErrorKind::Decode);
            let mut changed = whole.to_vec();
            changed[at.index(whole.len())] ^= xor;
            decode_all(&changed);
        }
    }
}
