//! Topics and received messages.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, Result};

/// The longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;

/// A named channel of messages.
///
/// Serialises to and from the JSON object `{"name", "description", "data_type"}`
/// that the Python `msight_core` keeps in its Redis hash `MSIGHT:TOPICS`, so
/// both sides can read each other's topic registry.
///
/// ```
/// use pubsub_core::Topic;
/// let t = Topic::new("camera.front")?.with_data_type("msight_core.data.ImageData");
/// let json = serde_json::to_string(&t).unwrap();
/// assert_eq!(json, r#"{"name":"camera.front","description":null,"data_type":"msight_core.data.ImageData"}"#);
/// # Ok::<(), pubsub_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Topic {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    data_type: Option<String>,
}

impl Topic {
    /// A topic named `name`, checked with [`validate_topic_name`].
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_topic_name(&name)?;
        Ok(Topic {
            name,
            description: None,
            data_type: None,
        })
    }

    /// Set the human-readable description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Set the data type (in the Python original, the dotted class path of the payload type).
    pub fn with_data_type(mut self, data_type: impl Into<String>) -> Self {
        self.data_type = Some(data_type.into());
        self
    }

    /// The topic name: the NATS subject, Redis channel or stream key, or MQTT topic.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The data type, if any.
    pub fn data_type(&self) -> Option<&str> {
        self.data_type.as_deref()
    }

    /// Check the name again; used for topics that came from deserialisation.
    pub fn validate(&self) -> Result<()> {
        validate_topic_name(&self.name)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl TryFrom<&str> for Topic {
    type Error = Error;
    fn try_from(name: &str) -> Result<Self> {
        Topic::new(name)
    }
}

impl TryFrom<String> for Topic {
    type Error = Error;
    fn try_from(name: String) -> Result<Self> {
        Topic::new(name)
    }
}

/// The rules every backend shares, so that one topic name works on all of them:
/// not empty, at most [`MAX_TOPIC_LEN`] bytes, no whitespace and no control
/// characters (NUL included). Backends add their own rules on top (wildcards
/// cannot be published to, for example).
pub fn validate_topic_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::topic(name, "must not be empty"));
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(Error::topic(
            name,
            format!("is {} bytes long; the limit is {MAX_TOPIC_LEN}", name.len()),
        ));
    }
    // Fast path for the usual ASCII names: printable, no space. It runs on
    // every publish.
    if all_ascii_graphic(name.as_bytes()) {
        return Ok(());
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::topic(
            name,
            format!("must not contain whitespace or control characters (found {c:?})"),
        ));
    }
    Ok(())
}

/// Whether every byte of `bytes` is printable ASCII (`!` to `~`: no space,
/// control character, DEL or byte of a multi-byte character). It runs on
/// every publish, so it has no per-byte branch: 16-byte blocks (which the
/// compiler turns into vector instructions), the tail as the last 16 bytes,
/// and names of 8 to 15 bytes as two overlapping `u64` words. About 30
/// instructions for names of 3 to 32 bytes, where a loop over the bytes
/// after the last whole block took up to 156 (callgrind).
#[inline]
fn all_ascii_graphic(bytes: &[u8]) -> bool {
    #[inline(always)]
    fn block_ok(block: &[u8]) -> bool {
        block
            .iter()
            .fold(0u8, |bad, &b| bad | !b.is_ascii_graphic() as u8)
            == 0
    }
    #[inline(always)]
    fn word_ok(w: &[u8]) -> bool {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        let x = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        // The high bit of a byte below 0x21 (and of nothing when there is
        // none: a borrow starts only at such a byte).
        let below = x.wrapping_sub(ONES * 0x21) & !x;
        // The high bit of a byte of 0x7f or more (masked first, so that no
        // carry crosses into the next byte).
        let above = (x & !HIGH).wrapping_add(ONES) | x;
        (below | above) & HIGH == 0
    }
    let n = bytes.len();
    if n >= 16 {
        let mut blocks = bytes.chunks_exact(16);
        // The tail is tested as the last 16 bytes, overlapping.
        blocks.all(block_ok) && (blocks.remainder().is_empty() || block_ok(&bytes[n - 16..]))
    } else if n >= 8 {
        word_ok(&bytes[..8]) && word_ok(&bytes[n - 8..])
    } else {
        bytes.iter().all(u8::is_ascii_graphic)
    }
}

/// A received message: the topic it arrived on and the payload bytes, untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The concrete topic the message was published to (for a wildcard
    /// subscription, the matching topic, not the pattern).
    pub topic: String,
    /// The payload, exactly as published.
    pub payload: Bytes,
}

impl Message {
    /// A message on `topic` carrying `payload`.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
        }
    }

    /// The payload as a `T`, read with `codec` ([`MsgPack`](crate::codec::MsgPack),
    /// [`Json`](crate::codec::Json), a handle's
    /// [`codec()`](crate::PubSub::codec), ...). A payload that is not a `T`
    /// is an [`ErrorKind::Decode`](crate::ErrorKind::Decode) error naming
    /// this topic, the type and where decoding failed; it never panics.
    /// [`Blob`](crate::Blob) fields of `T` share the payload's buffer where
    /// the codec allows (MessagePack).
    pub fn decode<T: DeserializeOwned>(&self, codec: impl Codec) -> Result<T> {
        crate::codec::decode_from(&codec, &self.topic, &self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// The branch-free scan agrees with a plain one for every byte value at
    /// every position of names up to 40 bytes (every path: short, words,
    /// blocks with and without a tail), among bytes at either end of the
    /// printable range and in its middle.
    #[test]
    fn scan_agrees_with_a_plain_loop() {
        for around in [b'!', b'a', b'~'] {
            for len in 0..=40 {
                for at in 0..len.max(1) {
                    for byte in 0..=255u8 {
                        let mut b = vec![around; len];
                        if at < len {
                            b[at] = byte;
                        }
                        assert_eq!(
                            all_ascii_graphic(&b),
                            b.iter().all(|c| c.is_ascii_graphic()),
                            "length {len}, byte {byte:#04x} at {at} among {around:#04x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn python_registry_json_round_trips() {
        let json = r#"{"name":"lidar.points","description":"raw points","data_type":"msight_core.data.LidarData"}"#;
        let t: Topic = serde_json::from_str(json).unwrap();
        assert_eq!(t.name(), "lidar.points");
        assert_eq!(t.description(), Some("raw points"));
        assert_eq!(t.data_type(), Some("msight_core.data.LidarData"));
        assert_eq!(serde_json::to_string(&t).unwrap(), json);
        // The Python side may omit the optional fields.
        let t: Topic = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(t.description(), None);
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        for (name, fragment) in [
            ("", "must not be empty"),
            ("a b", "whitespace"),
            ("a\0b", "control"),
            ("tab\there", "whitespace"),
        ] {
            let e = Topic::new(name).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidTopic);
            assert!(e.to_string().contains(fragment), "{name:?}: {e}");
        }
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert!(Topic::new(long).unwrap_err().to_string().contains("limit"));
        assert!(Topic::new("a".repeat(MAX_TOPIC_LEN)).is_ok());
        assert!(Topic::new("sensors.cam-1/front_π").is_ok());
    }
}
