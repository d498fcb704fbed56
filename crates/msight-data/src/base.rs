//! The `msight_base` structures the msight messages embed, in their
//! `to_dict()` forms: [`DetectionResult`] (`DetectionResultBase`) and
//! [`RoadUserPoint`].

use serde::{Deserialize, Serialize};

use crate::value::{Number, Value};

/// The class path `DetectionResultBase.to_dict()` writes as
/// `object_data_type` for a list of [`RoadUserPoint`]s.
pub const ROAD_USER_POINT: &str = "msight_base.road_user.RoadUserPoint";
/// The class path it writes for an empty list.
pub const DETECTED_OBJECT_BASE: &str = "msight_base.detection.DetectedObjectBase";

/// `msight_base.DetectionResultBase`: the objects one sensor detected at
/// one time. Keys in the order of its `to_dict()`: `object_list`,
/// `timestamp`, `sensor_type`, `object_data_type`.
///
/// `object_data_type` is the Python class of the objects, which
/// `from_dict` imports to read them back; objects of another class than
/// [`RoadUserPoint`] are refused when decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawDetectionResult")]
pub struct DetectionResult {
    /// The detected objects.
    pub object_list: Vec<RoadUserPoint>,
    /// The result's time (an `int` in Python's annotation; any number is kept).
    pub timestamp: Option<Number>,
    /// The kind of sensor (`"camera"`, `"lidar"`, ...).
    pub sensor_type: Option<String>,
    /// The Python class path of the objects: [`ROAD_USER_POINT`], or
    /// [`DETECTED_OBJECT_BASE`] for an empty list.
    pub object_data_type: String,
}

impl DetectionResult {
    /// A result of `objects` at `timestamp`, with the `object_data_type`
    /// Python would write for them.
    pub fn new(
        objects: Vec<RoadUserPoint>,
        timestamp: impl Into<Number>,
        sensor_type: Option<String>,
    ) -> Self {
        let object_data_type = if objects.is_empty() {
            DETECTED_OBJECT_BASE
        } else {
            ROAD_USER_POINT
        };
        DetectionResult {
            object_list: objects,
            timestamp: Some(timestamp.into()),
            sensor_type,
            object_data_type: object_data_type.to_string(),
        }
    }
}

/// As the payload has it, before the object class is checked.
#[derive(Deserialize)]
struct RawDetectionResult {
    object_list: Option<Vec<RoadUserPoint>>,
    timestamp: Option<Number>,
    sensor_type: Option<String>,
    object_data_type: String,
}

impl TryFrom<RawDetectionResult> for DetectionResult {
    type Error = String;
    fn try_from(raw: RawDetectionResult) -> Result<Self, String> {
        let objects = raw.object_list.unwrap_or_default();
        if !objects.is_empty() && raw.object_data_type != ROAD_USER_POINT {
            return Err(format!(
                "detected objects of class {:?} are not supported (only {ROAD_USER_POINT})",
                raw.object_data_type
            ));
        }
        Ok(DetectionResult {
            object_list: objects,
            timestamp: raw.timestamp,
            sensor_type: raw.sensor_type,
            object_data_type: raw.object_data_type,
        })
    }
}

/// `msight_base.RoadUserPoint`: one road user (vehicle, pedestrian, ...)
/// at one time, in the form and key order of its `to_dict()`. Every key is
/// optional when reading, as in its `from_dict()`.
///
/// Numbers keep Python's int-or-float ([`Number`]); fields whose Python type
/// is free (`traj_id`, `poly_box`, `map_info`, the confidence intervals,
/// `sensor_data`) are [`Value`]s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoadUserPoint {
    /// The trajectory's id (an int, or a string id).
    pub traj_id: Option<Value>,
    /// The frame's step in its trajectory.
    pub frame_step: Option<Number>,
    /// The time of the point.
    pub timestamp: Option<Number>,
    /// Position x (or latitude).
    pub x: Option<Number>,
    /// Position y (or longitude).
    pub y: Option<Number>,
    /// Speed.
    pub speed: Option<Number>,
    /// Acceleration.
    pub acceleration: Option<Number>,
    /// Heading.
    pub heading: Option<Number>,
    /// Width.
    pub width: Option<Number>,
    /// Length.
    pub length: Option<Number>,
    /// Height.
    pub height: Option<Number>,
    /// The category, a `RoadUserCategory` number ([`RoadUserCategory`]).
    pub category: Option<i64>,
    /// Detection confidence.
    pub confidence: Option<Number>,
    /// Turning signal.
    pub turning_signal: Option<Value>,
    /// Polygon of the bounding box (a list of points).
    pub poly_box: Option<Value>,
    /// `MapInfo.to_dict()`, if any.
    pub map_info: Option<Value>,
    /// Behaviour names (`str(BehaviorType.STOP)` is `"stop"`).
    pub behaviors: Vec<String>,
    /// Sensor id to sensor data.
    pub sensor_data: Value,
    /// 2-sigma confidence interval of the position.
    pub conf_int_2sigma: Option<Value>,
    /// 2-sigma confidence interval of the velocity.
    pub conf_int_vel_2sigma: Option<Value>,
    /// Confidence of the heading.
    pub heading_confidence: Option<Number>,
    /// Yaw rate.
    pub yaw_rate: Option<Number>,
}

impl Default for RoadUserPoint {
    /// What `RoadUserPoint()` is in Python: everything `None`, no
    /// behaviours, empty `sensor_data`.
    fn default() -> Self {
        RoadUserPoint {
            traj_id: None,
            frame_step: None,
            timestamp: None,
            x: None,
            y: None,
            speed: None,
            acceleration: None,
            heading: None,
            width: None,
            length: None,
            height: None,
            category: None,
            confidence: None,
            turning_signal: None,
            poly_box: None,
            map_info: None,
            behaviors: Vec::new(),
            sensor_data: Value::map(),
            conf_int_2sigma: None,
            conf_int_vel_2sigma: None,
            heading_confidence: None,
            yaw_rate: None,
        }
    }
}

impl RoadUserPoint {
    /// The category as a [`RoadUserCategory`], if it is one.
    pub fn category_kind(&self) -> Option<RoadUserCategory> {
        self.category.and_then(RoadUserCategory::from_number)
    }
}

/// `msight_base.RoadUserCategory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum RoadUserCategory {
    Unknown = -1,
    Sedan = 0,
    Suv = 1,
    Truck = 2,
    Bus = 3,
    Pedestrian = 4,
    Bicycle = 5,
    Motorcycle = 6,
    Trailer = 7,
    Van = 8,
    Pickup = 9,
}

impl RoadUserCategory {
    /// The category of `n`, as `RoadUserCategory(n)` in Python.
    pub fn from_number(n: i64) -> Option<Self> {
        use RoadUserCategory::*;
        Some(match n {
            -1 => Unknown,
            0 => Sedan,
            1 => Suv,
            2 => Truck,
            3 => Bus,
            4 => Pedestrian,
            5 => Bicycle,
            6 => Motorcycle,
            7 => Trailer,
            8 => Van,
            9 => Pickup,
            _ => return None,
        })
    }

    /// Its number, what the payload holds.
    pub fn number(self) -> i64 {
        self as i64
    }
}
