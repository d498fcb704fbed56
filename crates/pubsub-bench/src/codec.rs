//! `cargo xtask bench codec`: encode and decode of msight messages in Rust
//! (`msight-data` with MessagePack) beside Python's `serialize()` /
//! `Data.deserialize()` of the same values, measured in the same run.
//!
//! Python builds the values (an `ImageData` with a 16 KiB and a 1 MiB image,
//! a `DetectionResultsData` with 50 objects), times its own calls and hands
//! its payloads over; Rust decodes those payloads, checks that its encoding
//! of them is the same bytes (so both sides time the same value), and times
//! its calls.

use std::hint::black_box;
use std::time::{Duration, Instant};

use msight_data::{Data, ImageData};
use pubsub_core::codec::MsgPack;
use pubsub_core::{Blob, Bytes, Codec};
use serde::{Deserialize, Serialize};

use crate::clients::BoxError;

/// The Python side: the values, their payloads and Python's timings.
const PYTHON: &str = r#"
import time
from msight_base.road_user import RoadUserCategory

def per_op(fn, rounds):
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t > 0.05:
            break
        n *= 2
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t) / n)
    samples.sort()
    return samples[len(samples) // 2]

def sensor(name):
    return dict(sensor_name=name, capture_timestamp=1700000000.123456, creation_timestamp=1700000000.2,
                frame_id=7533631717965074433, device_name="edge-1")

def image(size):
    data = bytes((i * 7919) % 251 for i in range(size))
    return ImageData(image=data, is_encoded=True, size=(480, 640, 3), **sensor("camera.front"))

def point(i):
    return RoadUserPoint(x=42.2 + i * 1e-4, y=-83.7 - i * 1e-4, speed=12.5 + i, acceleration=0.25, heading=1.57,
                         width=1.9, length=4.8, height=1.5, category=RoadUserCategory.SEDAN, confidence=0.9,
                         traj_id=i, timestamp=1700000000.5, poly_box=[[0.0, 0.0], [1.0, 0.0], [1.0, 2.0], [0.0, 2.0]],
                         sensor_data={"camera": {"bbox": [10, 20, 30, 40]}}, heading_confidence=0.8, yaw_rate=0.01)

values = [
    ("ImageData, 16 KiB image", image(16 << 10)),
    ("ImageData, 1 MiB image", image(1 << 20)),
    ("DetectionResultsData, 50 objects",
     DetectionResultsData(detection_result=DetectionResultBase([point(i) for i in range(50)], timestamp=1700000000,
                                                               sensor_type="camera"),
                          sensor_frame_id=7533631717965074433, **sensor("detector"))),
]
rounds = int(sys.argv[1])
out = []
for name, value in values:
    payload = value.serialize()
    encode = per_op(value.serialize, rounds)
    decode = per_op(lambda: Data.deserialize(payload), rounds)
    out.append([name, payload, encode, decode])
sys.stdout.buffer.write(msgpack.packb(out, use_bin_type=True))
"#;

/// One value's figures, seconds per call.
#[derive(Debug, Serialize, Deserialize)]
struct Figures {
    value: String,
    payload_bytes: usize,
    rust_encode_s: f64,
    rust_decode_s: f64,
    python_serialize_s: f64,
    python_deserialize_s: f64,
    rust_decode_copies_image: Option<bool>,
}

/// The median time of one call of `f`, over `rounds` batches of at least 50 ms.
fn per_op(rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut n = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        if t.elapsed() > Duration::from_millis(50) {
            break;
        }
        n *= 2;
    }
    let mut samples: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() / n as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn show(seconds: f64) -> String {
    if seconds < 1e-6 {
        format!("{:.0} ns", seconds * 1e9)
    } else if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else {
        format!("{:.2} ms", seconds * 1e3)
    }
}

/// Run the comparison, print the table, write the figures to `json`.
pub fn run(rounds: usize, json: &std::path::Path) -> Result<(), BoxError> {
    println!("codec: Python's serialize()/deserialize() (msight-core 2.0.0) and Rust's msight-data, same values, same run");
    let script = format!("{}\n{PYTHON}", pubsub_testkit::python::MSIGHT_DATA_PRELUDE);
    let out = pubsub_testkit::python::run_script(
        &script,
        &[&rounds.to_string()],
        &[],
        Duration::from_secs(600),
    );
    let python: Vec<(String, Blob, f64, f64)> = MsgPack.decode(&Bytes::from(out))?;
    let mut figures = Vec::new();
    for (name, payload, py_encode, py_decode) in python {
        let payload = payload.into_bytes();
        let value = Data::from_msgpack(&payload)?;
        if MsgPack.encode(&value)? != payload {
            return Err(format!("{name}: Rust's encoding differs from Python's").into());
        }
        let copies = match &value {
            Data::ImageData(ImageData {
                image: Some(image), ..
            }) => Some(!image.is_slice_of(&payload)),
            _ => None,
        };
        let encode = per_op(rounds, || {
            black_box(MsgPack.encode(black_box(&value)).expect("encodes"));
        });
        let decode = per_op(rounds, || {
            black_box(Data::from_msgpack(black_box(&payload)).expect("decodes"));
        });
        figures.push(Figures {
            value: name,
            payload_bytes: payload.len(),
            rust_encode_s: encode,
            rust_decode_s: decode,
            python_serialize_s: py_encode,
            python_deserialize_s: py_decode,
            rust_decode_copies_image: copies,
        });
    }
    println!();
    println!(
        "| value | payload | Rust encode | Python serialize() | x | Rust decode | Python Data.deserialize() | x | image copied by Rust decode |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for f in &figures {
        println!(
            "| {} | {} B | {} | {} | {:.1} | {} | {} | {:.1} | {} |",
            f.value,
            f.payload_bytes,
            show(f.rust_encode_s),
            show(f.python_serialize_s),
            f.python_serialize_s / f.rust_encode_s,
            show(f.rust_decode_s),
            show(f.python_deserialize_s),
            f.python_deserialize_s / f.rust_decode_s,
            match f.rust_decode_copies_image {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
        );
    }
    println!("\n(x: how many times faster Rust is; medians of {rounds} rounds)");
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(json, serde_json::to_vec_pretty(&figures)?)?;
    println!("figures written to {}", json.display());
    Ok(())
}
