//! The demo's wire formats: a sensor frame and a worker's result, each a
//! small fixed big-endian header (a 4-byte magic first) and, for a frame,
//! the payload bytes after it.
//!
//! ```text
//! frame:  "MSF1" | frame_id u64 | capture_us u64 | sensor_len u8 | sensor | payload
//! result: "MSR1" | frame_id u64 | capture_us u64 | worker u16 | payload_len u32 | checksum u64
//! ```
//! `capture_us` is the capture time in microseconds since the Unix epoch.

use bytes::{BufMut, Bytes, BytesMut};

const FRAME_MAGIC: &[u8; 4] = b"MSF1";
const RESULT_MAGIC: &[u8; 4] = b"MSR1";
const RESULT_LEN: usize = 4 + 8 + 8 + 2 + 4 + 8;

/// Longest sensor name, in bytes.
pub const MAX_SENSOR_LEN: usize = u8::MAX as usize;

/// A sensor frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Sequence number, from 0.
    pub id: u64,
    /// Capture time, microseconds since the Unix epoch.
    pub capture_us: u64,
    /// Which sensor took it.
    pub sensor: String,
    /// The image (or point cloud, ...) bytes.
    pub payload: Bytes,
}

/// What a worker computed from a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameResult {
    /// The frame's id.
    pub id: u64,
    /// The frame's capture time, carried through for the end-to-end latency.
    pub capture_us: u64,
    /// Which worker processed it (from 1).
    pub worker: u16,
    /// Length of the frame's payload.
    pub payload_len: u32,
    /// [`checksum`] of the frame's payload.
    pub checksum: u64,
}

/// Header size of a frame from `sensor`.
pub fn frame_overhead(sensor: &str) -> usize {
    4 + 8 + 8 + 1 + sensor.len()
}

impl Frame {
    /// The wire form. The sensor name must be at most [`MAX_SENSOR_LEN`] bytes.
    pub fn encode(&self) -> Bytes {
        let sensor = &self.sensor.as_bytes()[..self.sensor.len().min(MAX_SENSOR_LEN)];
        let mut b = BytesMut::with_capacity(frame_overhead(&self.sensor) + self.payload.len());
        b.put_slice(FRAME_MAGIC);
        b.put_u64(self.id);
        b.put_u64(self.capture_us);
        b.put_u8(sensor.len() as u8);
        b.put_slice(sensor);
        b.put_slice(&self.payload);
        b.freeze()
    }

    /// Parse the wire form; `None` if it is not a frame.
    pub fn decode(bytes: &Bytes) -> Option<Frame> {
        let rest = bytes.strip_prefix(FRAME_MAGIC)?;
        let id = u64::from_be_bytes(rest.get(0..8)?.try_into().ok()?);
        let capture_us = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
        let sensor_len = usize::from(*rest.get(16)?);
        let sensor = std::str::from_utf8(rest.get(17..17 + sensor_len)?).ok()?;
        let start = FRAME_MAGIC.len() + 17 + sensor_len;
        Some(Frame {
            id,
            capture_us,
            sensor: sensor.to_string(),
            payload: bytes.slice(start..),
        })
    }
}

impl FrameResult {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(RESULT_LEN);
        b.put_slice(RESULT_MAGIC);
        b.put_u64(self.id);
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
            id: u64_at(0)?,
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
    fn frame_round_trips() {
        let f = Frame {
            id: 42,
            capture_us: now_us(),
            sensor: "roadside-cam-01".into(),
            payload: synthetic_payload(42, 4096),
        };
        let wire = f.encode();
        assert_eq!(wire.len(), frame_overhead(&f.sensor) + 4096);
        assert_eq!(Frame::decode(&wire), Some(f));
        let empty = Frame {
            id: 0,
            capture_us: 1,
            sensor: String::new(),
            payload: Bytes::new(),
        };
        assert_eq!(Frame::decode(&empty.encode()), Some(empty));
    }

    #[test]
    fn garbage_is_not_a_frame_or_result() {
        for bad in [
            &b""[..],
            b"MSF1",
            b"MSF1\0\0\0\0\0\0\0\x01",
            b"hello world, not a frame",
        ] {
            assert_eq!(Frame::decode(&Bytes::copy_from_slice(bad)), None);
            assert_eq!(FrameResult::decode(bad), None);
        }
        let mut truncated = Frame {
            id: 1,
            capture_us: 2,
            sensor: "abc".into(),
            payload: Bytes::new(),
        }
        .encode();
        truncated.truncate(truncated.len() - 1);
        assert_eq!(Frame::decode(&truncated), None);
    }

    #[test]
    fn result_round_trips() {
        let r = FrameResult {
            id: 7,
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
