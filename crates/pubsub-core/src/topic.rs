//! Topics and received messages.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

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
    if !any_byte(name.as_bytes(), |b| !b.is_ascii_graphic()) {
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

/// Whether `pred` holds for any byte of `bytes`: 16 bytes at a time with
/// no branch inside a block, which the compiler turns into vector
/// instructions. For the checks that run on every publish (a topic name is
/// scanned in a few dozen instructions instead of a few hundred).
#[inline]
fn any_byte(bytes: &[u8], pred: impl Fn(u8) -> bool) -> bool {
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(0u8, |hit, &b| hit | pred(b) as u8) != 0 {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| pred(b))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// The block-wise scan agrees with a plain one for every length around
    /// the 16-byte block and every position of a hit.
    #[test]
    fn scan_agrees_with_a_plain_loop() {
        for len in 0..50 {
            for hit in 0..=len {
                let mut b = vec![b'a'; len];
                if hit < len {
                    b[hit] = b' ';
                }
                let space = |c: u8| c == b' ';
                assert_eq!(
                    any_byte(&b, space),
                    b.iter().any(|&c| space(c)),
                    "{len} {hit}"
                );
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
