//! The demo's wire formats. A frame is an msight `ImageData` in the
//! MessagePack form of Python's `Data.serialize()` (so a Python msight node
//! can subscribe to the demo's frames and decode them with
//! `Data.deserialize()`): the sensor name, the capture and creation
//! timestamps, a Snowflake frame id, and the payload as a raw image of
//! 1 x N x 1 pixels (`is_encoded` false, `size` [1, N, 1]). A worker's
//! result is a small fixed big-endian record:
//!
//! ```text
//! result: "MSR1" | frame_id u64 | capture_us u64 | worker u16 | payload_len u32 | checksum u64
//! ```
//! `capture_us` is the capture time in microseconds since the Unix epoch.

use bytes::{BufMut, Bytes, BytesMut};
use msight_data::{ImageData, SensorData};
use pubsub_core::codec::MsgPack;
use pubsub_core::Codec;

const RESULT_MAGIC: &[u8; 4] = b"MSR1";
const RESULT_LEN: usize = 4 + 8 + 8 + 2 + 4 + 8;

/// A sensor frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The msight frame id: a Snowflake id (`msight_data::next_frame_id`).
    pub frame_id: i64,
    /// Capture time, microseconds since the Unix epoch.
    pub capture_us: u64,
    /// Which sensor took it.
    pub sensor: String,
    /// The image bytes.
    pub payload: Bytes,
}

/// What a worker computed from a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameResult {
    /// The frame's msight frame id.
    pub frame_id: i64,
    /// The frame's capture time, carried through for the end-to-end latency.
    pub capture_us: u64,
    /// Which worker processed it (from 1).
    pub worker: u16,
    /// Length of the frame's payload.
    pub payload_len: u32,
    /// [`checksum`] of the frame's payload.
    pub checksum: u64,
}

impl Frame {
    /// A frame of `payload` from `sensor` captured now, with a new frame id.
    pub fn new(sensor: &str, payload: Bytes) -> Frame {
        Frame {
            frame_id: msight_data::next_frame_id(),
            capture_us: now_us(),
            sensor: sensor.to_string(),
            payload,
        }
    }

    /// The frame as an msight `ImageData`.
    pub fn to_image(&self) -> ImageData {
        let sensor = SensorData {
            sensor_name: Some(self.sensor.clone()),
            capture_timestamp: self.capture_us as f64 / 1e6,
            creation_timestamp: msight_data::timestamp_now(),
            frame_id: self.frame_id,
            device_name: std::env::var(msight_data::DEVICE_NAME_ENV).ok(),
        };
        ImageData {
            sensor,
            image: Some(self.payload.clone().into()),
            is_encoded: false,
            detection_results: None,
            size: Some(vec![1, self.payload.len() as u64, 1]),
        }
    }

    /// The wire form: the `ImageData`'s MessagePack.
    pub fn encode(&self) -> Bytes {
        MsgPack
            .encode(&self.to_image())
            .expect("an ImageData always encodes")
    }

    /// Parse the wire form; `None` if it is not an `ImageData` with an
    /// image. The payload is a slice of `bytes` (no copy).
    pub fn decode(bytes: &Bytes) -> Option<Frame> {
        let image: ImageData = MsgPack.decode(bytes).ok()?;
        Some(Frame {
            frame_id: image.sensor.frame_id,
            capture_us: (image.sensor.capture_timestamp * 1e6).round().max(0.0) as u64,
            sensor: image.sensor.sensor_name.unwrap_or_default(),
            payload: image.image?.into_bytes(),
        })
    }

    /// The size of the wire form of a frame from `sensor` with
    /// `payload_len` bytes of payload.
    pub fn wire_len(sensor: &str, payload_len: usize) -> usize {
        Frame::new(sensor, Bytes::from(vec![0; payload_len]))
            .encode()
            .len()
    }
}

impl FrameResult {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(RESULT_LEN);
        b.put_slice(RESULT_MAGIC);
        b.put_u64(self.frame_id as u64);
        b.put_u64(self.capture_us);
        b.put_u16(self.worker);
        b.put_u32(self.payload_len);
        b.put_u64(self.checksum);
        b.freeze()
    }

    /// Parse the wire form; `None` if it is not a result.
    pub fn decode(bytes: &[u8]) -> Option<FrameResult> {
        if bytes.len() != RESULT_LEN {
            return None;
        }
        let rest = bytes.strip_prefix(RESULT_MAGIC)?;
        let u64_at = |i: usize| rest[i..i + 8].try_into().ok().map(u64::from_be_bytes);
        Some(FrameResult {
            frame_id: u64_at(0)? as i64,
            capture_us: u64_at(8)?,
            worker: u16::from_be_bytes(rest[16..18].try_into().ok()?),
            payload_len: u32::from_be_bytes(rest[18..22].try_into().ok()?),
            checksum: u64_at(22)?,
        })
    }
}

/// FNV-1a (64 bit) of `data`: the workers' "computation".
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The payload of frame `id`: `len` pseudo-random bytes (xorshift seeded
/// with the id), the same on every call, so a sink can check results.
pub fn synthetic_payload(id: u64, len: usize) -> Bytes {
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = BytesMut::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.put_u64(state);
    }
    out.truncate(len);
    out.freeze()
}

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_as_image_data() {
        let f = Frame::new("roadside-cam-01", synthetic_payload(42, 4096));
        let wire = f.encode();
        assert_eq!(wire.len(), Frame::wire_len("roadside-cam-01", 4096));
        let back = Frame::decode(&wire).unwrap();
        assert_eq!(back, f);
        let image: ImageData = MsgPack.decode(&wire).unwrap();
        assert_eq!(image.sensor.sensor_name.as_deref(), Some("roadside-cam-01"));
        assert_eq!(image.size, Some(vec![1, 4096, 1]));
        assert!(!image.is_encoded);
        let (ms, _, _) = msight_data::frame_id_parts(f.frame_id);
        assert!(
            ms.abs_diff(f.capture_us / 1000) < 60_000,
            "the id is made now"
        );
        let empty = Frame::new("", Bytes::new());
        assert_eq!(Frame::decode(&empty.encode()), Some(empty));
    }

    #[test]
    fn garbage_is_not_a_frame_or_result() {
        for bad in [
            &b""[..],
            b"MSR1",
            b"\x81\xa9data_type\xa3abc",
            b"hello world, not a frame",
        ] {
            assert_eq!(Frame::decode(&Bytes::copy_from_slice(bad)), None);
            assert_eq!(FrameResult::decode(bad), None);
        }
        let mut truncated = Frame::new("abc", Bytes::from_static(b"xyz")).encode();
        truncated.truncate(truncated.len() - 1);
        assert_eq!(Frame::decode(&truncated), None);
    }

    #[test]
    fn result_round_trips() {
        let r = FrameResult {
            frame_id: 7_533_631_717_965_074_433,
            capture_us: 123_456,
            worker: 3,
            payload_len: 4096,
            checksum: checksum(b"abc"),
        };
        assert_eq!(FrameResult::decode(&r.encode()), Some(r));
    }

    #[test]
    fn payloads_are_deterministic_and_differ_by_id() {
        assert_eq!(synthetic_payload(5, 100), synthetic_payload(5, 100));
        assert_ne!(synthetic_payload(5, 100), synthetic_payload(6, 100));
        assert_eq!(synthetic_payload(5, 3).len(), 3);
        assert_eq!(checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
