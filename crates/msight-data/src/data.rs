//! [`Data`]: any msight message, chosen by its `data_type` tag as
//! Python's `Data.deserialize()` does.

use std::fmt;

use pubsub_core::codec::{CodecError, MsgPack};
use pubsub_core::{Bytes, Codec};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::sensor::SensorData;
use crate::types::{
    BytesData, DataType, DetectionResultsData, ImageData, PointCloudData, RoadUserListData,
    SensorDataSequence, Text, VideoData,
};
use crate::value::{Value, ValueDeserializer, RESERVE_LIMIT};

/// Any msight message: what Python's `Data.deserialize(payload)` returns,
/// chosen by the payload's `data_type`. A `data_type` this crate does not
/// know is [`Data::Unknown`], which keeps every field, so a node can pass
/// on what it does not understand (and writes it back byte for byte).
///
/// ```
/// use msight_data::{BytesData, Data, SensorData};
/// let sent = Data::from(BytesData { sensor: SensorData::new("gps"), data: b"$GPGGA"[..].into() });
/// let payload = sent.to_msgpack().unwrap();
/// match Data::from_msgpack(&payload).unwrap() {
///     Data::BytesData(b) => assert_eq!(&b.data[..], b"$GPGGA"),
///     other => panic!("{}", other.data_type()),
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Data {
    /// `msight_core.data.image.ImageData`
    ImageData(ImageData),
    /// `msight_core.data.pointcloud.PointCloudData`
    PointCloudData(PointCloudData),
    /// `msight_core.data.video.VideoData`
    VideoData(VideoData),
    /// `msight_core.data.bytes.BytesData`
    BytesData(BytesData),
    /// `msight_core.data.base.SensorDataSequence`
    SensorDataSequence(SensorDataSequence),
    /// `msight_core.data.detection_result.DetectionResultsData`
    DetectionResultsData(DetectionResultsData),
    /// `msight_core.data.detection_result.RoadUserListData`
    RoadUserListData(RoadUserListData),
    /// Any other `data_type`, with every field kept.
    Unknown(UnknownData),
}

/// A message of a `data_type` this crate does not know: the tag and every
/// other field, in the payload's order.
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownData {
    /// The class path.
    pub data_type: String,
    /// The other fields, in order.
    pub fields: Vec<(String, Value)>,
}

impl UnknownData {
    /// The field named `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

impl Serialize for UnknownData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1 + self.fields.len()))?;
        map.serialize_entry("data_type", &self.data_type)?;
        for (k, v) in &self.fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Data {
    /// The `data_type` tag (the Python class path).
    pub fn data_type(&self) -> &str {
        match self {
            Data::ImageData(_) => ImageData::DATA_TYPE,
            Data::PointCloudData(_) => PointCloudData::DATA_TYPE,
            Data::VideoData(_) => VideoData::DATA_TYPE,
            Data::BytesData(_) => BytesData::DATA_TYPE,
            Data::SensorDataSequence(_) => SensorDataSequence::DATA_TYPE,
            Data::DetectionResultsData(_) => DetectionResultsData::DATA_TYPE,
            Data::RoadUserListData(_) => RoadUserListData::DATA_TYPE,
            Data::Unknown(u) => &u.data_type,
        }
    }

    /// The sensor fields, for the types this crate knows.
    pub fn sensor(&self) -> Option<&SensorData> {
        Some(match self {
            Data::ImageData(d) => &d.sensor,
            Data::PointCloudData(d) => &d.sensor,
            Data::VideoData(d) => &d.sensor,
            Data::BytesData(d) => &d.sensor,
            Data::SensorDataSequence(d) => &d.sensor,
            Data::DetectionResultsData(d) => &d.sensor,
            Data::RoadUserListData(d) => &d.sensor,
            Data::Unknown(_) => return None,
        })
    }

    /// The MessagePack payload Python's `serialize()` writes for it.
    pub fn to_msgpack(&self) -> Result<Bytes, CodecError> {
        MsgPack.encode(self)
    }

    /// The message in a MessagePack payload, as Python's
    /// `Data.deserialize()` reads it. Byte fields are slices of `payload`.
    pub fn from_msgpack(payload: &Bytes) -> Result<Data, CodecError> {
        MsgPack.decode(payload)
    }
}

impl From<UnknownData> for Data {
    fn from(u: UnknownData) -> Self {
        Data::Unknown(u)
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::ImageData(d) => d.serialize(s),
            Data::PointCloudData(d) => d.serialize(s),
            Data::VideoData(d) => d.serialize(s),
            Data::BytesData(d) => d.serialize(s),
            Data::SensorDataSequence(d) => d.serialize(s),
            Data::DetectionResultsData(d) => d.serialize(s),
            Data::RoadUserListData(d) => d.serialize(s),
            Data::Unknown(d) => d.serialize(s),
        }
    }
}

/// Messages inside messages (`raw_sensor_data`, `obj_list`, ...) deeper
/// than this are refused when decoding. Real payloads nest two or three
/// deep; the limit keeps a hostile payload from exhausting the stack of
/// the thread that decodes it (a debug build spends about 10 KiB per level).
pub const MAX_NESTING: usize = 32;

thread_local! {
    static NESTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Level;
        impl Drop for Level {
            fn drop(&mut self) {
                NESTING.with(|n| n.set(n.get() - 1));
            }
        }
        let depth = NESTING.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        let _level = Level;
        if depth > MAX_NESTING {
            return Err(de::Error::custom(format_args!(
                "msight messages nested more than {MAX_NESTING} deep"
            )));
        }
        let human_readable = d.is_human_readable();
        d.deserialize_map(DataVisitor { human_readable })
    }
}

struct DataVisitor {
    human_readable: bool,
}

impl<'de> Visitor<'de> for DataVisitor {
    type Value = Data;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map with a data_type (an msight Data object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
        let Some(Text(first)) = map.next_key::<Text<'de>>()? else {
            return Err(de::Error::missing_field("data_type"));
        };
        if first == "data_type" {
            // As Python and this crate write it: the tag first, so the
            // rest is read straight into the right type.
            let Text(tag) = map.next_value::<Text<'de>>()?;
            return Ok(match &*tag {
                ImageData::DATA_TYPE => Data::ImageData(ImageData::read_fields(&mut map)?),
                PointCloudData::DATA_TYPE => {
                    Data::PointCloudData(PointCloudData::read_fields(&mut map)?)
                }
                VideoData::DATA_TYPE => Data::VideoData(VideoData::read_fields(&mut map)?),
                BytesData::DATA_TYPE => Data::BytesData(BytesData::read_fields(&mut map)?),
                SensorDataSequence::DATA_TYPE => {
                    Data::SensorDataSequence(SensorDataSequence::read_fields(&mut map)?)
                }
                DetectionResultsData::DATA_TYPE => {
                    Data::DetectionResultsData(DetectionResultsData::read_fields(&mut map)?)
                }
                RoadUserListData::DATA_TYPE => {
                    Data::RoadUserListData(RoadUserListData::read_fields(&mut map)?)
                }
                _ => {
                    let mut fields =
                        Vec::with_capacity(map.size_hint().unwrap_or(0).min(RESERVE_LIMIT));
                    while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                        fields.push((key.into_owned(), map.next_value()?));
                    }
                    Data::Unknown(UnknownData {
                        data_type: tag.into_owned(),
                        fields,
                    })
                }
            });
        }
        // The tag comes later: hold the map, then read it as its type.
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(RESERVE_LIMIT) + 1);
        entries.push((Value::Str(first.into_owned()), map.next_value::<Value>()?));
        while let Some(entry) = map.next_entry::<Value, Value>()? {
            entries.push(entry);
        }
        from_entries(entries, self.human_readable).map_err(de::Error::custom)
    }
}

/// The `data_type` tags of the types this crate knows.
pub const KNOWN: [&str; 7] = [
    ImageData::DATA_TYPE,
    PointCloudData::DATA_TYPE,
    VideoData::DATA_TYPE,
    BytesData::DATA_TYPE,
    SensorDataSequence::DATA_TYPE,
    DetectionResultsData::DATA_TYPE,
    RoadUserListData::DATA_TYPE,
];

/// A message from the entries of its map, in any order.
fn from_entries(entries: Vec<(Value, Value)>, human_readable: bool) -> Result<Data, String> {
    let tag = entries
        .iter()
        .find(|(k, _)| k.as_str() == Some("data_type"))
        .map(|(_, v)| v.as_str().map(str::to_string))
        .ok_or("missing field `data_type`")?
        .ok_or("data_type is not a string")?;
    if !KNOWN.contains(&tag.as_str()) {
        let mut fields = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match k {
                Value::Str(k) if k == "data_type" => {}
                Value::Str(k) => fields.push((k, v)),
                other => return Err(format!("a field name is not a string: {other:?}")),
            }
        }
        return Ok(Data::Unknown(UnknownData {
            data_type: tag,
            fields,
        }));
    }
    let de = ValueDeserializer::new(Value::Map(entries), human_readable);
    let typed = match tag.as_str() {
        ImageData::DATA_TYPE => ImageData::deserialize(de).map(Data::ImageData),
        PointCloudData::DATA_TYPE => PointCloudData::deserialize(de).map(Data::PointCloudData),
        VideoData::DATA_TYPE => VideoData::deserialize(de).map(Data::VideoData),
        BytesData::DATA_TYPE => BytesData::deserialize(de).map(Data::BytesData),
        SensorDataSequence::DATA_TYPE => {
            SensorDataSequence::deserialize(de).map(Data::SensorDataSequence)
        }
        DetectionResultsData::DATA_TYPE => {
            DetectionResultsData::deserialize(de).map(Data::DetectionResultsData)
        }
        _ => RoadUserListData::deserialize(de).map(Data::RoadUserListData),
    };
    typed.map_err(|e| e.to_string())
}
