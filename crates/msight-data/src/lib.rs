#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod base;
mod data;
pub mod json;
mod sensor;
mod types;
mod value;

pub use base::{
    DetectionResult, RoadUserCategory, RoadUserPoint, DETECTED_OBJECT_BASE, ROAD_USER_POINT,
};
pub use data::{Data, UnknownData, KNOWN, MAX_NESTING};
pub use pubsub_core::Blob;
pub use sensor::{frame_id_parts, next_frame_id, timestamp_now, SensorData, DEVICE_NAME_ENV};
pub use types::{
    BytesData, DataType, DetectionResultsData, ImageData, PointCloudData, RoadUserListData,
    SensorDataSequence, VideoData,
};
pub use value::{Number, Value};

impl Data {
    /// Python's `to_json()` of this message ([`json::to_json`]).
    pub fn to_json(&self) -> Result<String, pubsub_core::codec::CodecError> {
        json::to_json(self)
    }

    /// The message in a JSON text as Python's `to_json()` writes it
    /// (bytes in base64; [`json::from_json`]).
    pub fn from_json(text: &str) -> Result<Data, pubsub_core::codec::CodecError> {
        json::from_json(text)
    }
}
