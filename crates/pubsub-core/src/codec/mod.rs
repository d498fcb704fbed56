//! Typed payloads: serde codecs that turn a value into the bytes of a
//! message and a received message back into a value.
//!
//! A codec is a small type that implements [`Codec`]: [`MsgPack`] (feature
//! `msgpack`, the format of the Python nodes' `Data.serialize()`), [`Json`]
//! (feature `json`) and [`Cbor`] (feature `cbor`). None is compiled unless
//! its feature is on, so a program that moves raw bytes links none of them.
//! [`Format`] names one at run time: it is the `codec` setting of the
//! configuration, each handle's default for
//! [`PubSub::publish_value`](crate::PubSub::publish_value).
//!
//! The codec is chosen per call, by value:
//!
//! ```
//! # #[cfg(feature = "msgpack")] {
//! use pubsub_core::codec::MsgPack;
//! use pubsub_core::{blocking::PubSub, Config};
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Reading { sensor: String, value: f64 }
//!
//! let ps = PubSub::connect(&Config::default())?;
//! ps.subscribe("readings")?;
//! ps.publish_as("readings", &Reading { sensor: "t1".into(), value: 20.5 }, MsgPack)?;
//! let msg = ps.recv()?;
//! let reading: Reading = msg.decode(MsgPack)?;
//! assert_eq!(reading.value, 20.5);
//! // A payload that is not a `Reading` is an `ErrorKind::Decode` error that
//! // names the topic, the type and where decoding failed:
//! let err = msg.decode::<Vec<u8>>(MsgPack).unwrap_err();
//! assert_eq!(err.kind(), pubsub_core::ErrorKind::Decode);
//! # }
//! # Ok::<(), pubsub_core::Error>(())
//! ```
//!
//! Large byte fields decode without a copy where the codec allows it (MessagePack):
//! a field of type [`Blob`] is then a slice of the received payload, sharing
//! its buffer.

mod blob;
#[cfg(feature = "cbor")]
mod cbor;
#[cfg(feature = "json")]
mod json;
#[cfg(feature = "msgpack")]
mod msgpack;

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use blob::{with_source, Blob};

use crate::error::{Error, ErrorKind, Result};

/// MessagePack, as the Python `msgpack.packb(..., use_bin_type=True)` of
/// `Data.serialize()` writes it: structs as maps keyed by field name (in
/// declaration order), `Option::None` as nil, bytes ([`Blob`])
/// as `bin`, tuples and sequences as arrays, integers and strings in their
/// smallest form, `f64` as float 64.
///
/// Decoding lends out slices of the payload: [`Blob`] fields
/// share the received buffer (no copy). A payload must hold exactly one
/// value; its structure is checked first, so that a truncated or corrupt
/// payload is reported with the byte where it goes wrong.
///
/// Implements [`Codec`] with the `msgpack` feature of pubsub-core; without
/// it, using it does not compile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MsgPack;

/// JSON, compact (serde_json). [`Blob`] fields are base64
/// strings, as in the Python `Data.to_json()`. Nesting deeper than 128 is
/// refused (serde_json's limit).
///
/// Implements [`Codec`] with the `json` feature of pubsub-core; without
/// it, using it does not compile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Json;

/// CBOR (RFC 8949) with ciborium. Byte strings decode into a copy:
/// ciborium reads through a buffer, so [`Blob`] fields are
/// not slices of the payload.
///
/// Implements [`Codec`] with the `cbor` feature of pubsub-core; without
/// it, using it does not compile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cbor;

/// Nesting deeper than this (maps and arrays inside each other) is refused
/// by every built-in decoder, before the stack could run out.
pub const MAX_DEPTH: usize = 128;

/// Turns values into payload bytes and payloads back into values.
///
/// Implemented by unit types ([`MsgPack`], [`Json`], [`Cbor`]) and by
/// [`Format`], which picks one at run time. A codec of one's own implements
/// it the same way; its `decode` should run the deserializer inside
/// [`with_source`] so that [`Blob`] fields can share the payload's buffer.
pub trait Codec {
    /// The codec's name, used in errors: `"msgpack"`, `"json"`, `"cbor"`.
    fn name(&self) -> &'static str;

    /// The payload bytes of `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError>;

    /// The value of type `T` in `payload`, which must hold exactly one value.
    fn decode<T: DeserializeOwned>(&self, payload: &Bytes) -> Result<T, CodecError>;
}

/// Why a value could not be encoded or a payload could not be decoded, and
/// where: the byte offset or line and column in the payload, and the path
/// of the field (`detection_result.object_list[3].x`) when the codec can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError {
    message: String,
    location: Option<String>,
    path: Option<String>,
}

impl CodecError {
    /// An error with `message` and nothing known about where.
    pub fn new(message: impl fmt::Display) -> Self {
        CodecError {
            message: message.to_string(),
            location: None,
            path: None,
        }
    }

    /// Where in the payload it happened, as text: `"byte 57"`, `"line 1 column 12"`.
    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// The path of the field being decoded; `"."` (the top) is not kept.
    pub fn in_field(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        if !path.is_empty() && path != "." {
            self.path = Some(path);
        }
        self
    }

    /// What went wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where in the payload, if known.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The field path, if known.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.location, &self.path) {
            (Some(l), Some(p)) => write!(f, "at {l}, field `{p}`: ")?,
            (Some(l), None) => write!(f, "at {l}: ")?,
            (None, Some(p)) => write!(f, "field `{p}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodecError {}

/// A codec named at run time: the `codec` setting of the configuration
/// (`MSIGHT_PUBSUB_CODEC`). Every variant exists whatever the features; one
/// whose feature is off fails with [`ErrorKind::Unsupported`] when used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// MessagePack (feature `msgpack`), the format of the Python nodes. The default.
    #[default]
    MsgPack,
    /// JSON (feature `json`).
    Json,
    /// CBOR (feature `cbor`).
    Cbor,
}

impl Format {
    /// The name used in configuration and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::MsgPack => "msgpack",
            Format::Json => "json",
            Format::Cbor => "cbor",
        }
    }

    /// Whether this program was built with the codec's feature.
    pub fn is_available(self) -> bool {
        match self {
            Format::MsgPack => cfg!(feature = "msgpack"),
            Format::Json => cfg!(feature = "json"),
            Format::Cbor => cfg!(feature = "cbor"),
        }
    }

    fn not_built(self) -> CodecError {
        CodecError::new(format!(
            "the {0} codec is not built into this program: enable the `{0}` feature of pubsub-core",
            self.as_str()
        ))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "msgpack" | "messagepack" => Ok(Format::MsgPack),
            "json" => Ok(Format::Json),
            "cbor" => Ok(Format::Cbor),
            _ => Err("expected msgpack, json or cbor".into()),
        }
    }
}

impl Codec for Format {
    fn name(&self) -> &'static str {
        self.as_str()
    }

    #[allow(unreachable_patterns)]
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        match self {
            #[cfg(feature = "msgpack")]
            Format::MsgPack => MsgPack.encode(value),
            #[cfg(feature = "json")]
            Format::Json => Json.encode(value),
            #[cfg(feature = "cbor")]
            Format::Cbor => Cbor.encode(value),
            other => {
                let _ = value;
                Err(other.not_built())
            }
        }
    }

    #[allow(unreachable_patterns)]
    fn decode<T: DeserializeOwned>(&self, payload: &Bytes) -> Result<T, CodecError> {
        match self {
            #[cfg(feature = "msgpack")]
            Format::MsgPack => MsgPack.decode(payload),
            #[cfg(feature = "json")]
            Format::Json => Json.decode(payload),
            #[cfg(feature = "cbor")]
            Format::Cbor => Cbor.decode(payload),
            other => {
                let _ = payload;
                Err(other.not_built())
            }
        }
    }
}

/// Encode `value` for `topic` with `codec`; the error is an
/// [`ErrorKind::Encode`] (or [`ErrorKind::Unsupported`] for a codec not
/// built in) that names the topic, the type and the codec.
pub fn encode_for<C: Codec, T: Serialize + ?Sized>(
    codec: &C,
    topic: &str,
    value: &T,
) -> Result<Bytes> {
    codec.encode(value).map_err(|e| {
        let kind = if is_not_built(codec) {
            ErrorKind::Unsupported
        } else {
            ErrorKind::Encode
        };
        Error::new(
            kind,
            format!(
                "topic {topic:?}: a {} cannot be encoded as {}: {e}",
                std::any::type_name::<T>(),
                codec.name()
            ),
        )
    })
}

/// Decode a `T` from the `payload` received on `topic` with `codec`; the
/// error is an [`ErrorKind::Decode`] (or [`ErrorKind::Unsupported`] for a
/// codec not built in) that names the topic, the expected type, the codec
/// and where decoding failed.
pub fn decode_from<C: Codec, T: DeserializeOwned>(
    codec: &C,
    topic: &str,
    payload: &Bytes,
) -> Result<T> {
    codec.decode(payload).map_err(|e| {
        let kind = if is_not_built(codec) {
            ErrorKind::Unsupported
        } else {
            ErrorKind::Decode
        };
        Error::new(
            kind,
            format!(
                "topic {topic:?}: the payload of {} bytes is not a {} in {}: {e}",
                payload.len(),
                std::any::type_name::<T>(),
                codec.name()
            ),
        )
    })
}

fn is_not_built<C: Codec>(codec: &C) -> bool {
    codec
        .name()
        .parse::<Format>()
        .map(|f| !f.is_available())
        .unwrap_or(false)
}

/// The text of a serde path (`a.b[3]`; `.` for the top).
#[cfg(any(feature = "msgpack", feature = "json", feature = "cbor"))]
fn path_text(path: &serde_path_to_error::Path) -> String {
    path.to_string()
}

#[cfg(feature = "cbor")]
thread_local! {
    /// The field path of the last failure of a [`Tracked`] decode.
    static FAILED_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A `T` decoded through `serde_path_to_error`, for formats whose
/// deserializer is not public: on failure the field path is left in
/// [`FAILED_AT`].
#[cfg(feature = "cbor")]
struct Tracked<T>(T);

#[cfg(feature = "cbor")]
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tracked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut track = serde_path_to_error::Track::new();
        T::deserialize(serde_path_to_error::Deserializer::new(d, &mut track))
            .map(Tracked)
            .inspect_err(|_| {
                let path = path_text(&track.path());
                FAILED_AT.with(|f| *f.borrow_mut() = Some(path));
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_parse_and_show() {
        for f in [Format::MsgPack, Format::Json, Format::Cbor] {
            assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string(), f.as_str());
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
        }
        assert_eq!(" MessagePack ".parse::<Format>(), Ok(Format::MsgPack));
        assert!("yaml".parse::<Format>().unwrap_err().contains("msgpack"));
        assert_eq!(Format::default(), Format::MsgPack);
    }

    #[test]
    fn codec_error_text_says_where() {
        let e = CodecError::new("invalid type")
            .at("byte 7")
            .in_field("a.b[1]");
        assert_eq!(e.to_string(), "at byte 7, field `a.b[1]`: invalid type");
        assert_eq!(
            CodecError::new("x").in_field(".").to_string(),
            "x",
            "the top is no path"
        );
    }

    #[test]
    fn a_codec_that_is_not_built_is_unsupported() {
        for f in [Format::MsgPack, Format::Json, Format::Cbor] {
            if f.is_available() {
                continue;
            }
            let e = encode_for(&f, "t", &1u8).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.to_string().contains("feature"), "{e}");
            let e = decode_from::<_, u8>(&f, "t", &Bytes::from_static(b"\x01")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
        }
    }
}
