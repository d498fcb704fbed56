//! What `pubsub check` shows of JetStream: the account's limits and usage
//! (`$JS.API.INFO`), and the streams and consumers the configuration uses,
//! read from the server and never changed.
//!
//! Without topics, the streams are those whose name fits `nats.stream`
//! (`msight_{token}` fits `msight_sensors`; a fixed name fits itself),
//! each with its consumers. With topics, each topic's stream (the one that
//! captures its subject, or the one the library would create), the
//! consumer a subscription of this configuration would read, and the
//! consumers of that stream that read the topic.
//!
//! Every listing is bounded: at most [`MAX_STREAMS`] streams and
//! [`MAX_CONSUMERS`] consumers per stream are shown, the rest counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use pubsub_core::{Config, Counters, Error, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::api::{self, is_not_found, Api};
use super::consumer::durable_name;
use super::stream::plan;
use crate::config::NatsMode;
use crate::options::Options;
use crate::NatsConfig;

/// Most streams a report shows.
pub const MAX_STREAMS: usize = 32;
/// Most consumers a report shows per stream.
pub const MAX_CONSUMERS: usize = 32;
/// Most pages of a stream or consumer listing asked for (the server sends
/// up to 256 per page).
const MAX_PAGES: usize = 8;

/// The JetStream account limits and usage, and the streams and consumers
/// of the configuration; see [`jetstream_report`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct JetStreamReport {
    /// The account: what it uses, and its limits.
    pub account: AccountReport,
    /// `nats.stream`, the name or template the streams were looked up by.
    pub stream_template: String,
    /// The topics asked about (empty: the streams fitting the template).
    pub topics: Vec<TopicReport>,
    /// The streams found, by name, at most [`MAX_STREAMS`].
    pub streams: Vec<StreamReport>,
    /// Streams that fit but are not shown (over [`MAX_STREAMS`]).
    pub streams_not_shown: usize,
}

/// `$JS.API.INFO`: the account's usage and limits. A limit of -1 is no
/// limit of the account (the server's store limits still apply).
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct AccountReport {
    /// Bytes held in memory storage.
    pub memory: u64,
    /// Bytes held in file storage.
    pub storage: u64,
    /// Streams of the account.
    pub streams: u64,
    /// Consumers of the account.
    pub consumers: u64,
    /// Most memory storage bytes (-1: no account limit).
    pub max_memory: i64,
    /// Most file storage bytes (-1: no account limit).
    pub max_storage: i64,
    /// Most streams (-1: no account limit).
    pub max_streams: i64,
    /// Most consumers (-1: no account limit).
    pub max_consumers: i64,
    /// Most unacknowledged messages per consumer (-1: no account limit).
    pub max_ack_pending: i64,
    /// The JetStream domain, if the server has one.
    pub domain: Option<String>,
    /// JetStream API requests the account made.
    pub api_requests: u64,
    /// Those that failed.
    pub api_errors: u64,
}

/// One topic asked about.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct TopicReport {
    /// The topic (a subject, or a subscription pattern).
    pub topic: String,
    /// The stream that captures it, if one does.
    pub stream: Option<String>,
    /// When none does: the stream the library would create at the first
    /// publish or subscribe.
    pub would_create: Option<PlannedStream>,
    /// The durable consumer a subscription of this configuration reads
    /// (`None`: an ephemeral consumer made per subscription).
    pub consumer: Option<String>,
    /// The key the consumer is named after: `group_id` or `nats.consumer`.
    pub consumer_named_by: Option<String>,
    /// Whether that durable consumer exists on the server.
    pub consumer_exists: bool,
}

/// A stream the library would create.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PlannedStream {
    /// Its name.
    pub name: String,
    /// The subjects it would capture.
    pub subjects: Vec<String>,
}

/// A stream, as the server describes it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct StreamReport {
    /// Its name.
    pub name: String,
    /// The subjects it captures.
    pub subjects: Vec<String>,
    /// `file` or `memory`.
    pub storage: String,
    /// Copies in a cluster.
    pub replicas: u64,
    /// `limits`, `interest` or `workqueue`.
    pub retention: String,
    /// Oldest message kept, in seconds (0: no limit).
    pub max_age_seconds: f64,
    /// Most bytes kept (-1: no limit).
    pub max_bytes: i64,
    /// Most messages kept (-1: no limit).
    pub max_msgs: i64,
    /// `old` or `new`: what goes at a limit.
    pub discard: String,
    /// Its description (`created by msight pubsub` when this library made it).
    pub description: Option<String>,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Messages it holds.
    pub messages: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Its first sequence.
    pub first_seq: u64,
    /// Its last sequence.
    pub last_seq: u64,
    /// Its consumers, all of them.
    pub consumer_count: u64,
    /// Those shown: all, or those reading the topics asked about; at most
    /// [`MAX_CONSUMERS`].
    pub consumers: Vec<ConsumerReport>,
    /// Those that would be shown but are over [`MAX_CONSUMERS`].
    pub consumers_not_shown: usize,
}

/// A consumer of a stream, as the server describes it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ConsumerReport {
    /// Its name.
    pub name: String,
    /// Durable (kept when no one reads it) or ephemeral.
    pub durable: bool,
    /// The subject it reads (empty: the whole stream).
    pub filter_subject: String,
    /// Where it started: `new`, `all`, `last`, ...
    pub deliver_policy: String,
    /// `explicit`, `all` or `none`.
    pub ack_policy: String,
    /// Seconds a delivered message may stay unacknowledged.
    pub ack_wait_seconds: f64,
    /// Most deliveries of a message (-1: no limit).
    pub max_deliver: i64,
    /// Most unacknowledged messages (-1: no limit).
    pub max_ack_pending: i64,
    /// Messages of the stream it has not delivered yet.
    pub num_pending: u64,
    /// Messages delivered and not acknowledged.
    pub num_ack_pending: u64,
    /// Messages delivered more than once.
    pub num_redelivered: u64,
    /// Pull requests waiting.
    pub num_waiting: u64,
    /// The last stream sequence it delivered.
    pub delivered_stream_seq: u64,
    /// The stream sequence below which everything is acknowledged.
    pub ack_floor_stream_seq: u64,
}

/// The JetStream account limits and usage, and the streams and consumers
/// the configuration uses, read through a connection of its own (with the
/// configuration's servers, credentials and TLS): for `pubsub check`.
///
/// Without `topics`, every stream whose name fits `nats.stream` with all
/// its consumers; with `topics`, each topic's stream, the consumer a
/// subscription of this configuration (its `group_id` or `nats.consumer`)
/// reads, and the consumers of the stream that read the topic. Nothing is
/// created or changed.
///
/// Fails with `InvalidConfig` naming `nats.mode` when the configuration is
/// not in JetStream mode or the server has JetStream off, with
/// `InvalidTopic` for a topic that is not a NATS subject.
pub async fn jetstream_report(config: &Config, topics: &[String]) -> Result<JetStreamReport> {
    let nats: NatsConfig = config.section()?;
    if nats.mode != NatsMode::JetStream {
        return Err(Error::config(
            "nats.mode",
            "is \"core\": the JetStream report needs nats.mode = \"jetstream\" (MSIGHT_NATS_MODE=jetstream)",
        ));
    }
    for t in topics {
        crate::backend::check_subject(t, false)?;
    }
    let opts = Options::new(config, nats.clone(), Arc::new(Counters::default())).await?;
    let shown = opts.shown.clone();
    let client = opts
        .client_options
        .connect(opts.servers)
        .await
        .map_err(|e| crate::error::connect_error(&shown, e))?;
    let api = Api::new(client.clone(), super::api_timeout(config), shown.clone());
    let report = collect(&api, config, &nats, topics).await;
    let _ = client.drain().await;
    report
}

async fn collect(
    api: &Api,
    config: &Config,
    nats: &NatsConfig,
    topics: &[String],
) -> Result<JetStreamReport> {
    let account = match api.request::<Value>("INFO", &json!({})).await? {
        Ok(v) => account(&v),
        Err(e) => {
            return Err(match e.error_code().0 {
                10039 | 10076 => api::not_enabled(api.shown()),
                _ => api.server_error("account info", e),
            })
        }
    };
    let mut report = JetStreamReport {
        account,
        stream_template: nats.stream.clone(),
        topics: Vec::new(),
        streams: Vec::new(),
        streams_not_shown: 0,
    };
    if topics.is_empty() {
        let mut fitting = Vec::new();
        for info in list(api, "STREAM.LIST", "streams").await? {
            let name = text(&info, &["config", "name"]);
            if fits(&nats.stream, &name) {
                fitting.push(info);
            }
        }
        report.streams_not_shown = fitting.len().saturating_sub(MAX_STREAMS);
        for info in fitting.into_iter().take(MAX_STREAMS) {
            report.streams.push(stream(api, &info, None).await?);
        }
        return Ok(report);
    }
    // Each topic's stream, once, with the consumers reading the topics.
    let mut by_stream: BTreeMap<String, (Value, Vec<String>)> = BTreeMap::new();
    for topic in topics {
        let found = api
            .call::<Value>("stream names", "STREAM.NAMES", &json!({ "subject": topic }))
            .await?;
        let name = found["streams"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string);
        let (consumer, named_by) = match (&config.group_id, &nats.consumer) {
            (Some(g), _) => (Some(durable_name(g, topic)), Some("group_id")),
            (None, Some(c)) => (Some(durable_name(c, topic)), Some("nats.consumer")),
            (None, None) => (None, None),
        };
        let mut t = TopicReport {
            topic: topic.clone(),
            stream: name.clone(),
            would_create: None,
            consumer: consumer.clone(),
            consumer_named_by: named_by.map(str::to_string),
            consumer_exists: false,
        };
        match name {
            Some(name) => {
                if let Some(c) = &consumer {
                    let subject = format!("CONSUMER.INFO.{name}.{c}");
                    t.consumer_exists = match api.request::<Value>(&subject, &json!({})).await? {
                        Ok(_) => true,
                        Err(e) if is_not_found(&e) => false,
                        Err(e) => return Err(api.server_error("consumer info", e)),
                    };
                }
                if !by_stream.contains_key(&name) {
                    let info = api
                        .call::<Value>("stream info", &format!("STREAM.INFO.{name}"), &json!({}))
                        .await?;
                    by_stream.insert(name.clone(), (info, Vec::new()));
                }
                if let Some((_, reading)) = by_stream.get_mut(&name) {
                    reading.push(topic.clone());
                }
            }
            None => {
                let p = plan(nats, topic)?;
                t.would_create = Some(PlannedStream {
                    name: p.name,
                    subjects: p.subjects,
                });
            }
        }
        report.topics.push(t);
    }
    report.streams_not_shown = by_stream.len().saturating_sub(MAX_STREAMS);
    for (info, reading) in by_stream.into_values().take(MAX_STREAMS) {
        report
            .streams
            .push(stream(api, &info, Some(&reading)).await?);
    }
    Ok(report)
}

/// Whether stream `name` fits `template` (`{token}` standing for one or
/// more characters; a name without it fits only itself).
fn fits(template: &str, name: &str) -> bool {
    let parts: Vec<&str> = template.split("{token}").collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return name == template;
    }
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    // Each `{token}` takes at least one character; the middle parts in order.
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        let skip = rest.chars().next().map_or(0, char::len_utf8);
        let Some(at) = rest[skip..].find(middle) else {
            return false;
        };
        rest = &rest[skip + at + middle.len()..];
    }
    !rest.is_empty()
}

/// Every item of a paged listing (`streams` or `consumers`), at most
/// [`MAX_PAGES`] pages.
pub(crate) async fn list(api: &Api, subject: &str, key: &str) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = api
            .call::<Value>(subject, subject, &json!({ "offset": all.len() }))
            .await?;
        let items = page[key].as_array().cloned().unwrap_or_default();
        let total = page["total"].as_u64().unwrap_or(0) as usize;
        let empty = items.is_empty();
        all.extend(items);
        if empty || all.len() >= total {
            break;
        }
    }
    Ok(all)
}

/// A stream and its consumers (those reading `topics`, if given).
async fn stream(api: &Api, info: &Value, topics: Option<&[String]>) -> Result<StreamReport> {
    let c = &info["config"];
    let name = text(c, &["name"]);
    let mut consumers: Vec<ConsumerReport> =
        list(api, &format!("CONSUMER.LIST.{name}"), "consumers")
            .await?
            .iter()
            .map(consumer)
            .filter(|c| topics.is_none_or(|t| t.contains(&c.filter_subject)))
            .collect();
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    let consumers_not_shown = consumers.len().saturating_sub(MAX_CONSUMERS);
    consumers.truncate(MAX_CONSUMERS);
    Ok(StreamReport {
        subjects: c["subjects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        storage: text(c, &["storage"]),
        replicas: uint(c, &["num_replicas"]).max(1),
        retention: text(c, &["retention"]),
        max_age_seconds: uint(c, &["max_age"]) as f64 / 1e9,
        max_bytes: int(c, &["max_bytes"]),
        max_msgs: int(c, &["max_msgs"]),
        discard: text(c, &["discard"]),
        description: c["description"].as_str().map(str::to_string),
        created: text(info, &["created"]),
        messages: uint(info, &["state", "messages"]),
        bytes: uint(info, &["state", "bytes"]),
        first_seq: uint(info, &["state", "first_seq"]),
        last_seq: uint(info, &["state", "last_seq"]),
        consumer_count: uint(info, &["state", "consumer_count"]),
        name,
        consumers,
        consumers_not_shown,
    })
}

fn consumer(info: &Value) -> ConsumerReport {
    let c = &info["config"];
    ConsumerReport {
        name: text(info, &["name"]),
        durable: c["durable_name"].as_str().is_some_and(|d| !d.is_empty()),
        filter_subject: text(c, &["filter_subject"]),
        deliver_policy: text(c, &["deliver_policy"]),
        ack_policy: text(c, &["ack_policy"]),
        ack_wait_seconds: uint(c, &["ack_wait"]) as f64 / 1e9,
        max_deliver: int(c, &["max_deliver"]),
        max_ack_pending: int(c, &["max_ack_pending"]),
        num_pending: uint(info, &["num_pending"]),
        num_ack_pending: uint(info, &["num_ack_pending"]),
        num_redelivered: uint(info, &["num_redelivered"]),
        num_waiting: uint(info, &["num_waiting"]),
        delivered_stream_seq: uint(info, &["delivered", "stream_seq"]),
        ack_floor_stream_seq: uint(info, &["ack_floor", "stream_seq"]),
    }
}

fn account(v: &Value) -> AccountReport {
    let limit = |key: &str| v["limits"][key].as_i64().unwrap_or(-1);
    AccountReport {
        memory: uint(v, &["memory"]),
        storage: uint(v, &["storage"]),
        streams: uint(v, &["streams"]),
        consumers: uint(v, &["consumers"]),
        max_memory: limit("max_memory"),
        max_storage: limit("max_storage"),
        max_streams: limit("max_streams"),
        max_consumers: limit("max_consumers"),
        max_ack_pending: limit("max_ack_pending"),
        domain: v["domain"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        api_requests: uint(v, &["api", "total"]),
        api_errors: uint(v, &["api", "errors"]),
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn text(v: &Value, path: &[&str]) -> String {
    at(v, path).as_str().unwrap_or_default().to_string()
}

fn uint(v: &Value, path: &[&str]) -> u64 {
    at(v, path).as_u64().unwrap_or(0)
}

fn int(v: &Value, path: &[&str]) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::fits;

    #[test]
    fn stream_names_fit_the_template() {
        assert!(fits("msight_{token}", "msight_sensors"));
        assert!(fits("msight_{token}", "msight_pubsub-check"));
        assert!(!fits("msight_{token}", "msight_"));
        assert!(!fits("msight_{token}", "other_sensors"));
        assert!(fits("EVENTS", "EVENTS"));
        assert!(!fits("EVENTS", "EVENTS2"));
        assert!(fits("{token}_s", "cams_s"));
        assert!(!fits("{token}_s", "_s"));
        assert!(fits("a_{token}_b_{token}", "a_x_b_y"));
        assert!(!fits("a_{token}_b_{token}", "a_x_b_"));
        assert!(!fits("a_{token}_b_{token}", "a__b_y"));
    }
}
