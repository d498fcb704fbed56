//! The msight message types: one Rust struct per Python `SensorData`
//! subclass, written and read as `Data.to_dict()` / `from_dict()` do.

use std::borrow::Cow;
use std::fmt;

use pubsub_core::Blob;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::base::{DetectionResult, RoadUserPoint};
use crate::data::Data;
use crate::sensor::{SensorData, SensorFields};

/// A Python `Data` class this crate knows: its `data_type` tag, the class
/// path `Data.to_dict()` writes first in every payload.
pub trait DataType {
    /// The class path, e.g. `msight_core.data.image.ImageData`.
    const DATA_TYPE: &'static str;
}

/// A map key or tag, borrowed from the payload when it can be.
pub(crate) struct Text<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Checks a `data_type` found inside a map read as type `tag`.
pub(crate) fn check_tag<E: de::Error>(found: &str, tag: &str) -> Result<(), E> {
    if found == tag {
        Ok(())
    } else {
        Err(E::custom(format_args!(
            "data_type is {found:?}, expected {tag:?}"
        )))
    }
}

/// The value of a field that was not in the payload: its Python default,
/// or an error for a field that has none.
macro_rules! missing {
    ($name:expr) => {
        return Err(de::Error::missing_field($name))
    };
    ($name:expr, $default:expr) => {
        $default
    };
}

macro_rules! count {
    () => { 0usize };
    ($head:ident $($tail:ident)*) => { 1usize + count!($($tail)*) };
}

/// One msight message type: the struct (the shared [`SensorData`] fields,
/// then its own in Python's declaration order), its [`DataType`] tag, and
/// `Serialize` / `Deserialize` as the Python `to_dict()` / `from_dict()`:
/// a map of `data_type`, the sensor fields and the own fields in that
/// order; when reading, keys in any order, unknown keys ignored, missing
/// keys given Python's defaults (a field without one is an error).
macro_rules! msight_type {
    (
        $(#[$meta:meta])*
        $name:ident = $tag:literal {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty $(= $default:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            /// The fields every sensor message has.
            pub sensor: SensorData,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl DataType for $name {
            const DATA_TYPE: &'static str = $tag;
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(1 + SensorData::KEYS.len() + count!($($field)*)))?;
                map.serialize_entry("data_type", $tag)?;
                self.sensor.serialize_fields(&mut map)?;
                $( map.serialize_entry(stringify!($field), &self.$field)?; )*
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a map of a ", $tag))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        $name::read_fields(&mut map)
                    }
                }
                d.deserialize_map(V)
            }
        }

        impl $name {
            /// Read the rest of a map (after the `data_type`, if the
            /// caller took it).
            pub(crate) fn read_fields<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Self, A::Error> {
                let mut sensor = SensorFields::default();
                $( let mut $field: Option<$ty> = None; )*
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        "data_type" => {
                            let Text(tag) = map.next_value::<Text<'de>>()?;
                            check_tag(&tag, $tag)?;
                        }
                        $( stringify!($field) => $field = Some(map.next_value()?), )*
                        other => {
                            if !sensor.read(other, map)? {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                }
                Ok($name {
                    sensor: sensor.finish(),
                    $( $field: match $field {
                        Some(v) => v,
                        None => missing!(stringify!($field) $(, $default)?),
                    }, )*
                })
            }
        }

        impl From<$name> for Data {
            fn from(v: $name) -> Data {
                Data::$name(v)
            }
        }

        impl TryFrom<Data> for $name {
            type Error = Data;
            /// The message if it is of this type, else the message back.
            fn try_from(d: Data) -> Result<Self, Data> {
                match d {
                    Data::$name(v) => Ok(v),
                    other => Err(other),
                }
            }
        }
    };
}

msight_type! {
    /// `msight_core.data.ImageData`: an image (usually JPEG) and the
    /// sensor fields.
    ///
    /// ```
    /// use msight_data::{ImageData, SensorData};
    /// use pubsub_core::{codec::MsgPack, Codec};
    /// let frame = ImageData::new(SensorData::new("camera.front"), &b"\xff\xd8..."[..], [480, 640, 3]);
    /// let payload = MsgPack.encode(&frame).unwrap(); // what Python's `frame.serialize()` is
    /// let back: ImageData = MsgPack.decode(&payload).unwrap();
    /// assert_eq!(back, frame);
    /// assert!(back.image.unwrap().is_slice_of(&payload)); // not copied
    /// ```
    ImageData = "msight_core.data.image.ImageData" {
        /// The encoded image (JPEG or other) or raw pixel bytes.
        image: Option<Blob> = None,
        /// Whether `image` is an encoded format (`true`) or raw pixels.
        is_encoded: bool = true,
        /// Detections made on this image, if any.
        detection_results: Option<Box<DetectionResultsData>> = None,
        /// The shape of the pixel array: (height, width, channels).
        size: Option<Vec<u64>> = None,
    }
}

impl ImageData {
    /// An encoded image (`is_encoded` true) of `shape` (height, width, channels).
    pub fn new(sensor: SensorData, image: impl Into<Blob>, shape: [u64; 3]) -> Self {
        ImageData {
            sensor,
            image: Some(image.into()),
            is_encoded: true,
            detection_results: None,
            size: Some(shape.to_vec()),
        }
    }
}

msight_type! {
    /// `msight_core.data.PointCloudData`: a point cloud as Python packs
    /// it: `points` is the Zstandard-compressed bytes of a NumPy structured
    /// array, `dtype` a JSON header (UTF-8 bytes) of its layout and shape.
    PointCloudData = "msight_core.data.pointcloud.PointCloudData" {
        /// Zstandard-compressed array bytes.
        points: Blob,
        /// The array's shape.
        shape: Option<Vec<u64>> = None,
        /// The JSON header of the array's structured dtype
        /// (`{"shape", "names", "formats", "offsets", "itemsize"}`).
        dtype: Option<Blob> = None,
        /// The Zstandard level used to compress.
        compress_level: i64 = 3,
    }
}

msight_type! {
    /// `msight_core.data.VideoData`: encoded video (MP4, H.264, ...) of
    /// several frames.
    VideoData = "msight_core.data.video.VideoData" {
        /// The encoded video.
        video: Option<Blob> = None,
        /// Detections for the video, if any.
        detection_results: Option<Box<DetectionResultsData>> = None,
        /// The frame ids of the frames in the video, in order.
        frame_ids: Option<Vec<i64>> = None,
        /// The capture timestamps of those frames.
        capture_timestamps: Option<Vec<f64>> = None,
    }
}

msight_type! {
    /// `msight_core.data.BytesData`: opaque bytes with the sensor fields.
    BytesData = "msight_core.data.bytes.BytesData" {
        /// The payload.
        data: Blob,
    }
}

msight_type! {
    /// `msight_core.data.SensorDataSequence`: an ordered list of messages,
    /// of any types.
    SensorDataSequence = "msight_core.data.base.SensorDataSequence" {
        /// The messages.
        obj_list: Vec<Data> = Vec::new(),
    }
}

msight_type! {
    /// `msight_core.data.DetectionResultsData`: the detections made for a
    /// frame, and optionally the raw sensor message they come from.
    DetectionResultsData = "msight_core.data.detection_result.DetectionResultsData" {
        /// `DetectionResultBase.to_dict()`.
        detection_result: Option<DetectionResult> = None,
        /// The message the detections were made on (any type).
        raw_sensor_data: Option<Box<Data>> = None,
        /// The frame id of that message.
        sensor_frame_id: Option<i64> = None,
    }
}

msight_type! {
    /// `msight_core.data.RoadUserListData`: a list of road users.
    RoadUserListData = "msight_core.data.detection_result.RoadUserListData" {
        /// The road users (`RoadUserPoint.to_dict()` each).
        road_user_list: Vec<RoadUserPoint>,
    }
}
