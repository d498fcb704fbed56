//! A received message: its topic, payload and headers, what the broker says
//! about its delivery (id, attempt), and, in manual ack mode, how the
//! application settles it.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::flight::Permit;

/// Headers of a message: an ordered list of text keys and values; a key may
/// repeat. Native where the broker has them: NATS headers, MQTT v5 user
/// properties, Redis Streams fields beside the payload.
///
/// ```
/// use pubsub_core::Headers;
/// let mut h = Headers::new();
/// h.append("trace-id", "7f3a");
/// h.append("hop", "camera");
/// h.append("hop", "detector");
/// assert_eq!(h.get("hop"), Some("camera"));
/// assert_eq!(h.get_all("hop").collect::<Vec<_>>(), ["camera", "detector"]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// Add `key: value` after the others (a key may repeat).
    pub fn append(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.push((key.into(), value.into()));
        self
    }

    /// Set `key` to `value` alone: earlier values of `key` are removed.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let key = key.into();
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, value.into()));
        self
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Remove every value of `key`; whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != key);
        self.0.len() != before
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Check every pair: a key is 1 to 256 printable ASCII characters other
    /// than `:`; a value has no control characters other than tab. A
    /// backend refuses with [`ErrorKind::InvalidHeader`] what its broker
    /// would not carry unchanged (NATS trims whitespace at either end of a
    /// value; MQTT brokers refuse a tab), never sends it altered.
    pub fn validate(&self) -> Result<()> {
        for (k, v) in &self.0 {
            if k.is_empty()
                || k.len() > 256
                || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            {
                return Err(Error::new(
                    ErrorKind::InvalidHeader,
                    format!(
                        "header key {k:?}: expected 1 to 256 printable ASCII characters other than ':'"
                    ),
                ));
            }
            if v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(Error::new(
                    ErrorKind::InvalidHeader,
                    format!("header {k:?}: its value has a control character (a line break?)"),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Headers {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.0
            .extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl IntoIterator for Headers {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The headers a dead letter carries beside the message's own, the same on
/// every backend.
pub mod dead_letter {
    /// Why: `max_deliver` or `term`.
    pub const REASON: &str = "dead-letter-reason";
    /// The topic the message was published to.
    pub const TOPIC: &str = "dead-letter-topic";
    /// How many times it was delivered.
    pub const ATTEMPTS: &str = "dead-letter-attempts";
    /// The broker's id of the message.
    pub const ID: &str = "dead-letter-id";
}

/// How a backend settles one delivery in manual ack mode. A backend gives
/// each message it delivers one of these ([`Message::with_settle`]); the
/// application settles through [`Message::ack`], [`Message::nak`],
/// [`Message::term`] and [`Message::in_progress`], which call it at most
/// once each for `ack`, `nak` and `term` together. The calls must not wait
/// for the broker (hand the request to the client, as `publish` does).
pub trait Settle: Send + Sync + 'static {
    /// Done: never deliver it again.
    fn ack(&self) -> Result<()>;
    /// Deliver it again, not before `delay`.
    fn nak(&self, delay: Duration) -> Result<()>;
    /// Still working on it: restart its ack timer.
    fn in_progress(&self) -> Result<()>;
    /// Never deliver it again: to the dead-letter topic, or discarded.
    fn term(&self) -> Result<()>;
}

/// How a message is settled.
enum Settlement {
    /// `ack = "auto"`: settled when the application took it.
    Auto,
    /// `ack = "manual"`: the application settles it with this.
    Manual(Box<dyn Settle>, Permit),
    /// A copy made with `clone`: the original settles.
    Copy,
}

/// A received message: the topic it arrived on, the payload bytes untouched,
/// its headers, and what the broker says about this delivery.
///
/// In manual ack mode (`ack = "manual"`) the application settles each
/// message once it has handled it: [`Message::ack`], [`Message::nak`] or
/// [`Message::term`], which take the message, so that a second settle of
/// one delivery does not compile; [`Message::in_progress`] while it is still
/// working. A message dropped without settling is delivered again after
/// `ack_wait`. In auto mode (the default) a message counts as handled when
/// it is taken; `ack` is then a no-op and the others are `Unsupported`.
#[non_exhaustive]
pub struct Message {
    /// The concrete topic the message was published to (for a wildcard
    /// subscription, the matching topic, not the pattern).
    pub topic: String,
    /// The payload, exactly as published.
    pub payload: Bytes,
    /// The headers, in the order they were published.
    pub headers: Headers,
    /// The broker's id of the message, where it has one: the Redis stream
    /// entry id, the JetStream sequence, the memory backend's sequence.
    pub id: Option<String>,
    /// Which delivery of the message this is: 1 the first time.
    pub attempt: u32,
    /// Whether the message was delivered before (also where the broker
    /// says so without counting, as MQTT's DUP flag).
    pub redelivered: bool,
    settlement: Settlement,
}

impl Message {
    /// A message on `topic` carrying `payload`, first delivery, no headers.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            headers: Headers::new(),
            id: None,
            attempt: 1,
            redelivered: false,
            settlement: Settlement::Auto,
        }
    }

    /// With these headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// With the broker's id of the message.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// As delivery number `attempt` (1 the first time; 0 is taken as 1).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt.max(1);
        self.redelivered |= self.attempt > 1;
        self
    }

    /// Marked as delivered before.
    pub fn with_redelivered(mut self, redelivered: bool) -> Self {
        self.redelivered = redelivered;
        self
    }

    /// To be settled by the application through `settle` (manual ack mode).
    /// `permit` is the message's place among the handle's unsettled ones
    /// ([`crate::InFlight::acquire`]); it is given back when the message is
    /// settled or dropped.
    pub fn with_settle(mut self, settle: Box<dyn Settle>, permit: Permit) -> Self {
        self.settlement = Settlement::Manual(settle, permit);
        self
    }

    /// The payload as a `T`, read with `codec` ([`MsgPack`](crate::codec::MsgPack),
    /// [`Json`](crate::codec::Json), a handle's
    /// [`codec()`](crate::PubSub::codec), ...). A payload that is not a `T`
    /// is an [`ErrorKind::Decode`](crate::ErrorKind::Decode) error naming
    /// this topic, the type and where decoding failed; it never panics.
    /// [`Blob`](crate::Blob) fields of `T` share the payload's buffer where
    /// the codec allows (MessagePack).
    pub fn decode<T: serde::de::DeserializeOwned>(&self, codec: impl crate::Codec) -> Result<T> {
        crate::codec::decode_from(&codec, &self.topic, &self.payload)
    }

    /// Whether the application must settle this message (manual ack mode).
    pub fn needs_settling(&self) -> bool {
        matches!(self.settlement, Settlement::Manual(..))
    }

    /// Done: the broker does not deliver it again. In auto mode it was
    /// settled when taken, and this does nothing.
    pub fn ack(self) -> Result<()> {
        self.settle("ack", |s, permit| {
            s.ack()?;
            permit.counters().add_acked(1);
            Ok(())
        })
    }

    /// Deliver it again, not before `delay` (to this handle or, in a group,
    /// to any member). Past `max_deliver` attempts it goes to the dead
    /// letter instead.
    pub fn nak(self, delay: Duration) -> Result<()> {
        self.settle("nak", |s, _| s.nak(delay))
    }

    /// Never deliver it again: it goes to the dead-letter topic when one is
    /// configured, else it is discarded and counted.
    pub fn term(self) -> Result<()> {
        self.settle("term", |s, _| s.term())
    }

    /// Still working on it: restart its ack timer, so that a handler slower
    /// than `ack_wait` is not redelivered while it runs.
    pub fn in_progress(&self) -> Result<()> {
        match &self.settlement {
            Settlement::Manual(_, permit) if permit.is_closed() => {
                Err(closed_handle("in_progress"))
            }
            Settlement::Manual(s, _) => s.in_progress(),
            Settlement::Auto => Err(auto_settled("in_progress")),
            Settlement::Copy => Err(copy_settled("in_progress")),
        }
    }

    fn settle(
        mut self,
        what: &str,
        op: impl FnOnce(&dyn Settle, &Permit) -> Result<()>,
    ) -> Result<()> {
        match std::mem::replace(&mut self.settlement, Settlement::Copy) {
            // Its unsettled messages are delivered again after ack_wait.
            Settlement::Manual(_, permit) if permit.is_closed() => Err(closed_handle(what)),
            // The permit is given back when it drops, after the operation.
            Settlement::Manual(s, permit) => op(s.as_ref(), &permit),
            Settlement::Auto if what == "ack" => Ok(()),
            Settlement::Auto => Err(auto_settled(what)),
            Settlement::Copy => Err(copy_settled(what)),
        }
    }
}

fn closed_handle(what: &str) -> Error {
    Error::new(
        ErrorKind::Closed,
        format!("{what}: the pub/sub handle that received this message is closed; the message is delivered again after ack_wait"),
    )
}

fn auto_settled(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("{what}: with ack = \"auto\" a message is settled when it is taken; set ack = \"manual\" (MSIGHT_PUBSUB_ACK=manual) to settle it yourself"),
    )
}

fn copy_settled(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("{what}: this message is a copy (clone); settle the message as it was received"),
    )
}

/// A copy of the message without its settle handle: only the message as
/// received can be settled.
impl Clone for Message {
    fn clone(&self) -> Self {
        Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            id: self.id.clone(),
            attempt: self.attempt,
            redelivered: self.redelivered,
            settlement: match self.settlement {
                Settlement::Auto => Settlement::Auto,
                _ => Settlement::Copy,
            },
        }
    }
}

/// Equal topic, payload, headers, id and attempt (how it is settled aside).
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.payload == other.payload
            && self.headers == other.headers
            && self.id == other.id
            && self.attempt == other.attempt
            && self.redelivered == other.redelivered
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settle = match self.settlement {
            Settlement::Auto => "auto",
            Settlement::Manual(..) => "manual, unsettled",
            Settlement::Copy => "copy",
        };
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload", &self.payload)
            .field("headers", &self.headers)
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("redelivered", &self.redelivered)
            .field("settle", &settle)
            .finish()
    }
}
