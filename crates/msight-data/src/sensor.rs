//! [`SensorData`]: the fields every sensor message shares, with the
//! Python definitions of its timestamps and frame ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::MapAccess;
use serde::ser::SerializeMap;

/// The environment variable a Python node reads its device name from.
pub const DEVICE_NAME_ENV: &str = "MSIGHT_EDGE_DEVICE_NAME";

/// The fields of Python's `SensorData`, shared by every sensor message, in
/// the order it writes them (after `data_type`).
///
/// `SensorData::default()` is what Python fills in for fields it is not
/// given: no sensor name, both timestamps now ([`timestamp_now`]), a new
/// frame id ([`next_frame_id`]) and the device name from
/// `MSIGHT_EDGE_DEVICE_NAME`. A payload that lacks a field gets the same
/// default when it is decoded, as in Python.
#[derive(Clone, Debug, PartialEq)]
pub struct SensorData {
    /// The sensor that produced the measurement (a camera or lidar name).
    pub sensor_name: Option<String>,
    /// When the sensor captured it: POSIX seconds as a float, like
    /// Python's `time.time()`.
    pub capture_timestamp: f64,
    /// When the message object was made: POSIX seconds, like `time.time()`.
    pub creation_timestamp: f64,
    /// The frame's id, a Snowflake id ([`next_frame_id`]).
    pub frame_id: i64,
    /// The device that produced the data (`MSIGHT_EDGE_DEVICE_NAME`).
    pub device_name: Option<String>,
}

impl Default for SensorData {
    fn default() -> Self {
        let now = timestamp_now();
        SensorData {
            sensor_name: None,
            capture_timestamp: now,
            creation_timestamp: now,
            frame_id: next_frame_id(),
            device_name: std::env::var(DEVICE_NAME_ENV)
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }
}

impl SensorData {
    /// The fields of a measurement `sensor_name` made now: both timestamps
    /// now, a new frame id, the device name from the environment.
    pub fn new(sensor_name: impl Into<String>) -> Self {
        SensorData {
            sensor_name: Some(sensor_name.into()),
            ..SensorData::default()
        }
    }

    /// The same with the capture time set (POSIX seconds).
    pub fn captured_at(mut self, capture_timestamp: f64) -> Self {
        self.capture_timestamp = capture_timestamp;
        self
    }

    pub(crate) const KEYS: [&'static str; 5] = [
        "sensor_name",
        "capture_timestamp",
        "creation_timestamp",
        "frame_id",
        "device_name",
    ];

    pub(crate) fn serialize_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("sensor_name", &self.sensor_name)?;
        map.serialize_entry("capture_timestamp", &self.capture_timestamp)?;
        map.serialize_entry("creation_timestamp", &self.creation_timestamp)?;
        map.serialize_entry("frame_id", &self.frame_id)?;
        map.serialize_entry("device_name", &self.device_name)
    }
}

/// The sensor fields of a map being read, each as found (or not yet).
#[derive(Default)]
pub(crate) struct SensorFields {
    sensor_name: Option<Option<String>>,
    capture_timestamp: Option<f64>,
    creation_timestamp: Option<f64>,
    frame_id: Option<i64>,
    device_name: Option<Option<String>>,
}

impl SensorFields {
    /// Read the value of `key` if it is a sensor field; `Ok(false)` if it is not.
    pub(crate) fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "sensor_name" => self.sensor_name = Some(map.next_value()?),
            "capture_timestamp" => self.capture_timestamp = Some(map.next_value()?),
            "creation_timestamp" => self.creation_timestamp = Some(map.next_value()?),
            "frame_id" => self.frame_id = Some(map.next_value()?),
            "device_name" => self.device_name = Some(map.next_value()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The fields, with Python's defaults for those not found.
    pub(crate) fn finish(self) -> SensorData {
        match self {
            // The usual case: every field there, no clock read, no frame id drawn.
            SensorFields {
                sensor_name: Some(sensor_name),
                capture_timestamp: Some(capture_timestamp),
                creation_timestamp: Some(creation_timestamp),
                frame_id: Some(frame_id),
                device_name: Some(device_name),
            } => SensorData {
                sensor_name,
                capture_timestamp,
                creation_timestamp,
                frame_id,
                device_name,
            },
            partial => {
                let d = SensorData::default();
                SensorData {
                    sensor_name: partial.sensor_name.unwrap_or(d.sensor_name),
                    capture_timestamp: partial.capture_timestamp.unwrap_or(d.capture_timestamp),
                    creation_timestamp: partial.creation_timestamp.unwrap_or(d.creation_timestamp),
                    frame_id: partial.frame_id.unwrap_or(d.frame_id),
                    device_name: partial.device_name.unwrap_or(d.device_name),
                }
            }
        }
    }
}

/// Now, as Python's `time.time()`: POSIX seconds as a float.
pub fn timestamp_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Bits of the instance (worker) number in a frame id.
const INSTANCE_BITS: u32 = 10;
/// Bits of the sequence number in a frame id.
const SEQ_BITS: u32 = 12;
const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// The last frame id this process made, as (milliseconds << 12 | sequence).
static LAST: AtomicU64 = AtomicU64::new(0);

/// A new frame id, the same kind the Python `generate_frame_id()` makes: a
/// Snowflake id (the `snowflake-id` package's layout, epoch 0) of
///
/// - bits 63-22: the time in milliseconds since 1970-01-01 UTC,
/// - bits 21-12: the instance, the process id modulo 1024 (as in Python),
/// - bits 11-0: a sequence number within the millisecond.
///
/// `snowflake.Snowflake.parse(frame_id)` in Python reads it back. Unlike
/// Python's (which makes a new generator per call, so two frames of one
/// process in the same millisecond get the same id), the sequence here is
/// shared by the whole process: ids from one process are unique and
/// increasing, up to 4,096 per millisecond (past that the next
/// millisecond's ids are used).
pub fn next_frame_id() -> i64 {
    let instance = u64::from(std::process::id()) % (1 << INSTANCE_BITS);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    let next = loop {
        let (ms, seq) = (last >> SEQ_BITS, last & MAX_SEQ);
        let next = if now_ms > ms {
            now_ms << SEQ_BITS
        } else if seq < MAX_SEQ {
            last + 1
        } else {
            (ms + 1) << SEQ_BITS
        };
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(current) => last = current,
        }
    };
    let (ms, seq) = (next >> SEQ_BITS, next & MAX_SEQ);
    ((ms << (INSTANCE_BITS + SEQ_BITS)) | (instance << SEQ_BITS) | seq) as i64
}

/// The parts of a frame id made by [`next_frame_id`] or Python's
/// `generate_frame_id()`: (milliseconds since 1970, instance, sequence).
pub fn frame_id_parts(frame_id: i64) -> (u64, u16, u16) {
    let id = frame_id as u64;
    (
        id >> (INSTANCE_BITS + SEQ_BITS),
        ((id >> SEQ_BITS) & ((1 << INSTANCE_BITS) - 1)) as u16,
        (id & MAX_SEQ) as u16,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids_are_snowflakes_of_now_and_unique() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ids: Vec<i64> = (0..10_000).map(|_| next_frame_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing");
        let (ms, instance, _) = frame_id_parts(ids[0]);
        assert!(ms >= before && ms < before + 60_000, "{ms} vs {before}");
        assert_eq!(u32::from(instance), std::process::id() % 1024);
        // Python's `Snowflake.parse` of the id it logged in a real run.
        assert_eq!(
            frame_id_parts(7_533_631_717_965_074_433),
            (1_796_157_769_671, 713, 1)
        );
    }

    #[test]
    fn threads_get_distinct_ids() {
        let ids: Vec<i64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..5_000).map(|_| next_frame_id()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }

    #[test]
    fn defaults_are_now() {
        let d = SensorData::new("cam");
        assert!((d.capture_timestamp - timestamp_now()).abs() < 5.0);
        assert_eq!(d.capture_timestamp, d.creation_timestamp);
        assert_eq!(d.sensor_name.as_deref(), Some("cam"));
        assert_eq!(d.captured_at(1.5).capture_timestamp, 1.5);
    }
}
