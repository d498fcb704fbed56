//! The msight topic registry: the Redis hash `MSIGHT:TOPICS`, where the
//! Python nodes keep every topic (field: the topic name; value: the JSON
//! `{"name", "description", "data_type"}` of `msight_core.topics.Topic`).
//! It is used whichever pub/sub backend carries the messages; its Redis is
//! configured by the `[redis]` section and its `MSIGHT_REDIS_MESSAGE_BROKER_*`
//! variables, as the Python `get_redis_client()` is (TLS, Unix socket,
//! cluster and ACL user included).
//!
//! Python resolves `data_type` by importing it (`Topic.from_dict`): an entry
//! whose type Python cannot import (a Rust-only type name, or none) makes
//! Python's `get_topic` raise for that topic, while this registry reads it
//! as it is. A Rust node that shares topics with Python nodes registers the
//! dotted path of an `msight_core.data` class (e.g.
//! `msight_core.data.image.ImageData`); registering without a data type is
//! refused for that reason.

use std::sync::Arc;

use pubsub_core::{Config, Error, ErrorKind, Result, Topic};
use redis::Value;

use crate::backend::connection::{open, Conn};
use crate::config::RedisConfig;
use crate::error::redis_error;
use crate::options::{Options, COMMAND_TIMEOUT};

/// The hash of the registry, as the Python original names it.
pub const TOPICS_KEY: &str = "MSIGHT:TOPICS";

/// A connection to the topic registry.
#[derive(Clone)]
pub struct TopicRegistry {
    conn: Conn,
    opts: Arc<Options>,
}

impl std::fmt::Debug for TopicRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicRegistry")
            .field("address", &self.opts.shown)
            .finish()
    }
}

/// One entry of a listing: the topic, or why its entry could not be read.
pub type Entry = std::result::Result<Topic, Error>;

impl TopicRegistry {
    /// Connect to the Redis of `config`'s `[redis]` section.
    pub async fn connect(config: &Config) -> Result<TopicRegistry> {
        let section = config.section::<RedisConfig>()?;
        pubsub_core::Section::validate(&section)?;
        let opts = Arc::new(Options::new(config, section)?);
        let limit = config.connect_timeout;
        let conn = match tokio::time::timeout(limit, open(&opts, None, COMMAND_TIMEOUT)).await {
            Ok(c) => c?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "topic registry: connecting to redis {} took longer than connect_timeout",
                        opts.shown
                    ),
                ))
            }
        };
        Ok(TopicRegistry { conn, opts })
    }

    /// The topic registered under `name`, if any. A malformed entry is an
    /// [`ErrorKind::Decode`] error that names the topic.
    pub async fn get(&self, name: &str) -> Result<Option<Topic>> {
        let raw: Option<Vec<u8>> = self
            .query("HGET", redis::cmd("HGET").arg(TOPICS_KEY).arg(name))
            .await?;
        raw.map(|json| parse(name, &json)).transpose()
    }

    /// Every registered topic, sorted by name. A malformed entry does not
    /// stop the listing: it is there as an error naming its topic.
    pub async fn list(&self) -> Result<Vec<Entry>> {
        let all: Vec<(String, Vec<u8>)> = self
            .query("HGETALL", redis::cmd("HGETALL").arg(TOPICS_KEY))
            .await?;
        let mut entries: Vec<(String, Entry)> = all
            .into_iter()
            .map(|(name, json)| {
                let entry = parse(&name, &json);
                (name, entry)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries.into_iter().map(|(_, e)| e).collect())
    }

    /// Register `topic`, or update it if it is there (as Python's
    /// `Topic.register()`). It needs a data type (see the module docs).
    pub async fn register(&self, topic: &Topic) -> Result<()> {
        let json = to_python_json(topic)?;
        self.query::<Value>(
            "HSET",
            redis::cmd("HSET")
                .arg(TOPICS_KEY)
                .arg(topic.name())
                .arg(json),
        )
        .await
        .map(|_| ())
    }

    /// Python's `get_topic(..., register_if_not_exist=True)` in one step
    /// and without a lost update: registers `topic` unless an entry of its
    /// name exists (`HSETNX`), then returns the stored entry, which is
    /// another node's if it was first.
    pub async fn get_or_register(&self, topic: &Topic) -> Result<Topic> {
        let json = to_python_json(topic)?;
        self.query::<Value>(
            "HSETNX",
            redis::cmd("HSETNX")
                .arg(TOPICS_KEY)
                .arg(topic.name())
                .arg(json),
        )
        .await?;
        self.get(topic.name()).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Backend,
                format!(
                    "topic registry: the entry of {:?} was deleted right after it was registered",
                    topic.name()
                ),
            )
        })
    }

    async fn query<T: redis::FromRedisValue>(&self, what: &str, cmd: &mut redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        let fut = cmd.query_async::<T>(&mut conn);
        match tokio::time::timeout(self.opts.connect_timeout + COMMAND_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|e| self.err(what, e)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "topic registry: {what} {TOPICS_KEY} got no answer from redis {}",
                    self.opts.shown
                ),
            )),
        }
    }

    fn err(&self, what: &str, e: redis::RedisError) -> Error {
        redis_error(
            &self.opts.shown,
            &format!("topic registry: {what} {TOPICS_KEY}"),
            e,
        )
    }
}

/// An entry as Python's `Topic.from_dict` reads it; errors name the topic.
fn parse(name: &str, json: &[u8]) -> Result<Topic> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::Decode,
            format!("topic registry: the entry of {name:?} in {TOPICS_KEY} is not a topic: {why}"),
        )
    };
    let topic: Topic = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    topic.validate().map_err(|e| bad(e.message().to_string()))?;
    if topic.name() != name {
        return Err(bad(format!("it is named {:?}", topic.name())));
    }
    Ok(topic)
}

/// The JSON Python's `json.dumps(topic.to_dict())` writes: keys in its
/// order, `", "` and `": "` between them, non-ASCII escaped.
fn to_python_json(topic: &Topic) -> Result<String> {
    let Some(data_type) = topic.data_type() else {
        return Err(Error::config(
            "data_type",
            format!(
                "topic {:?} has no data type: Python nodes import it when they read the entry (msight_core.topics.Topic.from_dict); give the dotted path of its msight_core.data class",
                topic.name()
            ),
        ));
    };
    let text = |s: Option<&str>| s.map_or_else(|| "null".to_string(), python_string);
    Ok(format!(
        "{{\"name\": {}, \"description\": {}, \"data_type\": {}}}",
        python_string(topic.name()),
        text(topic.description()),
        python_string(data_type),
    ))
}

/// A JSON string as Python's `json.dumps` writes it (`ensure_ascii`).
fn python_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The blocking form of [`TopicRegistry`], from a plain `fn main()`.
#[derive(Clone, Debug)]
pub struct BlockingTopicRegistry(TopicRegistry);

impl BlockingTopicRegistry {
    /// [`TopicRegistry::connect`].
    pub fn connect(config: &Config) -> Result<BlockingTopicRegistry> {
        pubsub_core::blocking::block_on_runtime(TopicRegistry::connect(config))?
            .map(BlockingTopicRegistry)
    }

    /// [`TopicRegistry::get`].
    pub fn get(&self, name: &str) -> Result<Option<Topic>> {
        pubsub_core::blocking::block_on_runtime(self.0.get(name))?
    }

    /// [`TopicRegistry::list`].
    pub fn list(&self) -> Result<Vec<Entry>> {
        pubsub_core::blocking::block_on_runtime(self.0.list())?
    }

    /// [`TopicRegistry::register`].
    pub fn register(&self, topic: &Topic) -> Result<()> {
        pubsub_core::blocking::block_on_runtime(self.0.register(topic))?
    }

    /// [`TopicRegistry::get_or_register`].
    pub fn get_or_register(&self, topic: &Topic) -> Result<Topic> {
        pubsub_core::blocking::block_on_runtime(self.0.get_or_register(topic))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_as_python_writes_it() {
        let t = Topic::new("cam.front")
            .unwrap()
            .with_description("front camera — \"wide\"")
            .with_data_type("msight_core.data.image.ImageData");
        assert_eq!(
            to_python_json(&t).unwrap(),
            r#"{"name": "cam.front", "description": "front camera \u2014 \"wide\"", "data_type": "msight_core.data.image.ImageData"}"#
        );
        let t = Topic::new("x").unwrap().with_data_type("d.T");
        assert_eq!(
            to_python_json(&t).unwrap(),
            r#"{"name": "x", "description": null, "data_type": "d.T"}"#
        );
        assert_eq!(python_string("😀"), r#""\ud83d\ude00""#);
        let e = to_python_json(&Topic::new("x").unwrap()).unwrap_err();
        assert!(e.to_string().contains("data_type"), "{e}");
    }

    #[test]
    fn malformed_entries_name_their_topic() {
        for (json, fragment) in [
            (&b"not json"[..], "expected"),
            (&br#"{"description": "no name"}"#[..], "name"),
            (&br#"{"name": "other", "data_type": "d"}"#[..], "\"other\""),
            (&br#"{"name": "", "data_type": "d"}"#[..], "empty"),
        ] {
            let e = parse("t1", json).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode);
            let msg = e.to_string();
            assert!(msg.contains("\"t1\"") && msg.contains(fragment), "{msg}");
        }
        let t = parse(
            "t2",
            br#"{"name": "t2", "description": null, "data_type": "a.B"}"#,
        )
        .unwrap();
        assert_eq!(
            (t.name(), t.description(), t.data_type()),
            ("t2", None, Some("a.B"))
        );
    }
}
