//! Compatibility with the real Python packages (`msight-core` 2.0.0,
//! `msight-base` 0.1.2 in the test venv), for every type, with nested
//! values and `None` fields:
//!
//! - Python to Rust: what `serialize()` wrote decodes to the field values
//!   Rust builds for the same object, and Rust re-encodes it to the same
//!   bytes; Rust's encoding of its own object is the same bytes as well.
//! - Rust to Python: `Data.deserialize()` of what Rust wrote equals the
//!   Python object, and Python re-serializes it to the same bytes.
//! - JSON: Rust writes Python's `to_json()` text byte for byte, reads it
//!   back (bytes from base64), and Python reads Rust's JSON where it can
//!   read its own.

use std::time::Duration;

use msight_data::json::{self, BytesAs};
use msight_data::{
    BytesData, Data, DetectionResult, DetectionResultsData, ImageData, Number, PointCloudData,
    RoadUserListData, RoadUserPoint, SensorData, SensorDataSequence, UnknownData, Value, VideoData,
};
use pubsub_core::codec::MsgPack;
use pubsub_core::{Blob, Bytes, Codec};
use pubsub_testkit::python::{run_script, MSIGHT_DATA_PRELUDE};

/// The same objects on both sides: `cases` below mirrors this script.
const CASES_PY: &str = r#"
import random

def sensor(**kw):
    base = dict(sensor_name="camera.front", capture_timestamp=1700000000.123456,
                creation_timestamp=1700000000.2, frame_id=7533631717965074433, device_name="edge-1")
    base.update(kw)
    return base

def point(i):
    return RoadUserPoint(x=1.5 + i, y=2 + i, speed=10.25, heading=-0.5, width=1.8, length=4.5,
                         category=RoadUserCategory.TRUCK, confidence=0.875, poly_box=[[0.0, 1.0], [2, 3]],
                         traj_id="veh-%d" % i, timestamp=1700000000.5, frame_step=3,
                         sensor_data={"cam": {"bbox": [1, 2, 3, 4]}, "score": 0.5},
                         conf_int_2sigma=[0.1, 0.2], yaw_rate=0.01)

@dataclass
class TrafficLightData(SensorData):
    state: str = "red"
    extra: dict = field(default_factory=dict)
    blob: bytes = b""

det = DetectionResultBase([point(0), point(1)], timestamp=1700000000, sensor_type="camera")
raw = BytesData(data=b"\x00raw\xff", **sensor(sensor_name="raw"))
dets = DetectionResultsData(detection_result=det, raw_sensor_data=raw, sensor_frame_id=42,
                            **sensor(sensor_name="detector"))
jpeg = bytes(range(256)) * 40
pts = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "u1")])
pts["x"] = [1, 2, 3]
pts["i"] = [7, 8, 9]
rng = random.Random(7)
floats = [rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30) for _ in range(300)]
floats += [1e16, 1e-5, 0.1, 123456789.0, 5e-324, 1.7976931348623157e308, -0.0, 1e22, 0.0001]

cases = dict([
    ("image", ImageData(image=jpeg, is_encoded=True, detection_results=dets, size=(480, 640, 3), **sensor())),
    ("image_none_fields", ImageData(image=None, detection_results=None, size=None,
                                    **sensor(sensor_name=None, device_name=None))),
    ("pointcloud", PointCloudData(points=pts, **sensor(sensor_name="lidar"))),
    ("video", VideoData(video=b"\x00\x00\x00\x18ftypmp42", detection_results=dets, frame_ids=[1, 2, 3],
                        capture_timestamps=[1.0, 1.1, 1.2], **sensor())),
    ("video_none_fields", VideoData(**sensor())),
    ("bytes", raw),
    ("sequence", SensorDataSequence(obj_list=[ImageData(image=b"jpg", size=(1, 1, 3), **sensor()), raw,
                                              RoadUserListData(road_user_list=[point(2)], **sensor())],
                                    **sensor(sensor_name="seq"))),
    ("detections_empty", DetectionResultsData(detection_result=DetectionResultBase([], timestamp=5, sensor_type=None),
                                              **sensor())),
    ("detections_none", DetectionResultsData(**sensor())),
    ("road_users", RoadUserListData(road_user_list=[point(0), RoadUserPoint()], **sensor())),
    ("unknown_type", TrafficLightData(state="green", extra={"phase": 2, "timing": [1.5, None]}, blob=b"\x01\x02",
                                      **sensor())),
    ("float_reprs", RoadUserListData(road_user_list=[RoadUserPoint(x=v, y=-v) for v in floats], **sensor())),
])

def reads_own_json(obj):
    try:
        text = obj.to_json()
        return Data.from_json(text).to_json() == text
    except Exception:
        return False

def norm(obj):
    return msgpack.unpackb(msgpack.packb(obj.to_dict(), use_bin_type=True), raw=False)

if sys.argv[1] == "make":
    out = [[name, obj.serialize(), obj.to_json(), reads_own_json(obj)] for name, obj in cases.items()]
    sys.stdout.buffer.write(msgpack.packb(out, use_bin_type=True))
else:
    for name, payload, text, own_json in msgpack.unpackb(sys.stdin.buffer.read(), raw=False):
        want = cases[name]
        try:
            got = Data.deserialize(payload)
            problems = []
            if type(got) is not type(want):
                problems.append("type %s" % type(got).__name__)
            if norm(got) != norm(want):
                problems.append("values differ: %r" % ({k: v for k, v in norm(got).items() if norm(want).get(k) != v},))
            if got.serialize() != payload:
                problems.append("Python re-serializes Rust's payload to other bytes")
            if own_json and Data.from_json(text).to_json() != text:
                problems.append("JSON differs after Python's from_json/to_json")
            print(name, "ok" if not problems else "FAIL " + "; ".join(problems))
        except Exception as e:
            print(name, "FAIL", type(e).__name__, e)
"#;

fn script() -> String {
    format!("{MSIGHT_DATA_PRELUDE}\n{CASES_PY}")
}

fn sensor(name: Option<&str>) -> SensorData {
    SensorData {
        sensor_name: name.map(str::to_string),
        capture_timestamp: 1_700_000_000.123456,
        creation_timestamp: 1_700_000_000.2,
        frame_id: 7_533_631_717_965_074_433,
        device_name: Some("edge-1".into()),
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

fn point(i: i64) -> RoadUserPoint {
    RoadUserPoint {
        x: Some(Number::Float(1.5 + i as f64)),
        y: Some(Number::Int(2 + i)),
        speed: Some(10.25.into()),
        heading: Some((-0.5).into()),
        width: Some(1.8.into()),
        length: Some(4.5.into()),
        category: Some(2),
        confidence: Some(0.875.into()),
        poly_box: Some(Value::Array(vec![
            Value::Array(vec![0.0.into(), 1.0.into()]),
            Value::Array(vec![2i64.into(), 3i64.into()]),
        ])),
        traj_id: Some(format!("veh-{i}").into()),
        timestamp: Some(1_700_000_000.5.into()),
        // `to_dict()` writes the `frame_step` property, which is `None`
        // unless the point belongs to a trajectory frame: the 3 given to
        // the constructor is not written.
        frame_step: None,
        sensor_data: map(vec![
            (
                "cam",
                map(vec![(
                    "bbox",
                    Value::Array((1..=4).map(Value::Int).collect()),
                )]),
            ),
            ("score", 0.5.into()),
        ]),
        conf_int_2sigma: Some(Value::Array(vec![0.1.into(), 0.2.into()])),
        yaw_rate: Some(0.01.into()),
        ..RoadUserPoint::default()
    }
}

fn raw() -> BytesData {
    BytesData {
        sensor: sensor(Some("raw")),
        data: Blob::from(&b"\x00raw\xff"[..]),
    }
}

fn dets() -> DetectionResultsData {
    DetectionResultsData {
        sensor: sensor(Some("detector")),
        detection_result: Some(DetectionResult::new(
            vec![point(0), point(1)],
            1_700_000_000i64,
            Some("camera".into()),
        )),
        raw_sensor_data: Some(Box::new(raw().into())),
        sensor_frame_id: Some(42),
    }
}

/// The Rust side of each Python case; `None` where Rust cannot build it
/// alone (the Zstandard bytes of a point cloud are taken from Python's
/// payload; the random floats are Python's).
fn rust_case(name: &str, python: &Data) -> Option<Data> {
    let cam = || sensor(Some("camera.front"));
    Some(match name {
        "image" => ImageData {
            sensor: cam(),
            image: Some((0..40).flat_map(|_| 0..=255u8).collect::<Vec<u8>>().into()),
            is_encoded: true,
            detection_results: Some(Box::new(dets())),
            size: Some(vec![480, 640, 3]),
        }
        .into(),
        "image_none_fields" => ImageData {
            sensor: SensorData {
                sensor_name: None,
                device_name: None,
                ..cam()
            },
            image: None,
            is_encoded: true,
            detection_results: None,
            size: None,
        }
        .into(),
        "pointcloud" => {
            let Data::PointCloudData(p) = python else {
                return None;
            };
            PointCloudData {
                sensor: sensor(Some("lidar")),
                points: p.points.clone(),
                shape: Some(vec![3]),
                dtype: Some(Blob::from(
                    br#"{"shape": [3], "names": ["x", "y", "z", "i"], "formats": ["<f4", "<f4", "<f4", "|u1"], "offsets": [0, 4, 8, 12], "itemsize": 13}"#
                        .to_vec(),
                )),
                compress_level: 3,
            }
            .into()
        }
        "video" => VideoData {
            sensor: cam(),
            video: Some(Blob::from(&b"\x00\x00\x00\x18ftypmp42"[..])),
            detection_results: Some(Box::new(dets())),
            frame_ids: Some(vec![1, 2, 3]),
            capture_timestamps: Some(vec![1.0, 1.1, 1.2]),
        }
        .into(),
        "video_none_fields" => VideoData {
            sensor: cam(),
            video: None,
            detection_results: None,
            frame_ids: None,
            capture_timestamps: None,
        }
        .into(),
        "bytes" => raw().into(),
        "sequence" => SensorDataSequence {
            sensor: sensor(Some("seq")),
            obj_list: vec![
                ImageData {
                    sensor: cam(),
                    image: Some(Blob::from(&b"jpg"[..])),
                    is_encoded: true,
                    detection_results: None,
                    size: Some(vec![1, 1, 3]),
                }
                .into(),
                raw().into(),
                RoadUserListData {
                    sensor: cam(),
                    road_user_list: vec![point(2)],
                }
                .into(),
            ],
        }
        .into(),
        "detections_empty" => DetectionResultsData {
            sensor: cam(),
            detection_result: Some(DetectionResult::new(vec![], 5i64, None)),
            raw_sensor_data: None,
            sensor_frame_id: None,
        }
        .into(),
        "detections_none" => DetectionResultsData {
            sensor: cam(),
            detection_result: None,
            raw_sensor_data: None,
            sensor_frame_id: None,
        }
        .into(),
        "road_users" => RoadUserListData {
            sensor: cam(),
            road_user_list: vec![point(0), RoadUserPoint::default()],
        }
        .into(),
        "unknown_type" => {
            let s = cam();
            Data::Unknown(UnknownData {
                data_type: "__main__.TrafficLightData".into(),
                fields: vec![
                    ("sensor_name".into(), "camera.front".into()),
                    ("capture_timestamp".into(), s.capture_timestamp.into()),
                    ("creation_timestamp".into(), s.creation_timestamp.into()),
                    ("frame_id".into(), s.frame_id.into()),
                    ("device_name".into(), "edge-1".into()),
                    ("state".into(), "green".into()),
                    (
                        "extra".into(),
                        map(vec![
                            ("phase", 2i64.into()),
                            ("timing", Value::Array(vec![1.5.into(), Value::Nil])),
                        ]),
                    ),
                    ("blob".into(), Value::Bin(Blob::from(&b"\x01\x02"[..]))),
                ],
            })
        }
        _ => return None,
    })
}

/// `got == want`, else a failure that shows where they part.
fn same_text(got: &str, want: &str, what: &str) {
    if got != want {
        let at = got
            .bytes()
            .zip(want.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let from = at.saturating_sub(60);
        panic!(
            "{what}: differs at byte {at}:\n  Rust:   ...{}\n  Python: ...{}",
            &got[from..(at + 40).min(got.len())],
            &want[from..(at + 40).min(want.len())]
        );
    }
}

#[test]
fn python_and_rust_read_and_write_each_others_messages() {
    let out = run_script(&script(), &["make"], &[], Duration::from_secs(120));
    let cases: Value = MsgPack.decode(&Bytes::from(out)).expect("the cases");
    let Value::Array(cases) = cases else {
        panic!("a list of cases")
    };
    assert_eq!(cases.len(), 12);
    let mut to_python = Vec::new();
    for case in &cases {
        let Value::Array(fields) = case else { panic!() };
        let [Value::Str(name), Value::Bin(payload), Value::Str(text), Value::Bool(own_json)] =
            &fields[..]
        else {
            panic!("{case:?}")
        };
        let payload = payload.as_bytes();

        // Python to Rust.
        let decoded = Data::from_msgpack(payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        let built = rust_case(name, &decoded);
        if let Some(built) = &built {
            assert_eq!(&decoded, built, "{name}: field values");
            assert_eq!(
                &built.to_msgpack().unwrap(),
                payload,
                "{name}: Rust's encoding of the same object"
            );
        }
        assert_eq!(
            &decoded.to_msgpack().unwrap(),
            payload,
            "{name}: re-encoding Python's payload"
        );
        if let Data::ImageData(ImageData {
            image: Some(image), ..
        }) = &decoded
        {
            assert!(image.is_slice_of(payload), "{name}: the image was copied");
        }

        // JSON, both ways.
        same_text(
            &json::to_json(&decoded).unwrap(),
            text,
            &format!("{name}: to_json"),
        );
        let from_json = Data::from_json(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Data::Unknown(_) = decoded {
            // Of a type it does not know, JSON cannot tell base64 from a
            // string (nor can Python): bytes stay text, the JSON the same.
            assert_eq!(&from_json.to_json().unwrap(), text, "{name}: from_json");
        } else {
            assert_eq!(from_json, decoded, "{name}: from_json");
        }
        let generic: Value = MsgPack.decode(payload).unwrap();
        assert_eq!(&json::display(&generic, BytesAs::Base64).unwrap(), text);

        // Rust to Python: Rust's own object where it built one.
        let sent = built.unwrap_or(decoded);
        to_python.push(Value::Array(vec![
            name.clone().into(),
            Value::Bin(sent.to_msgpack().unwrap().into()),
            json::to_json(&sent).unwrap().into(),
            Value::Bool(*own_json),
        ]));
    }
    let input = MsgPack.encode(&Value::Array(to_python)).unwrap();
    let report = run_script(&script(), &["check"], &input, Duration::from_secs(120));
    let report = String::from_utf8(report).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 12, "{report}");
    for line in lines {
        assert!(line.ends_with(" ok"), "Python: {line}");
    }
}
