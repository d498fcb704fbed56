//! The stream of a topic: its name and subjects from `nats.stream` /
//! `nats.stream_subjects`, created when missing or bound when present, and
//! then checked: an existing stream whose settings differ from those the
//! configuration sets is an `InvalidConfig` error naming the key and both
//! values; this library never changes a stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, Info as StreamInfo, RetentionPolicy, StorageType,
};
use pubsub_core::sync::{read, write};
use pubsub_core::{Error, ErrorKind, Result, TopicCache};
use serde::Deserialize;
use serde_json::json;

use super::api::{is_not_found, is_transient, Api, ServerError, RETRIES, RETRY_PAUSE};
use super::Settings;
use crate::config::{bad_name, StreamDiscard, StreamStorage};
use crate::NatsConfig;

/// Defaults of a stream this library creates (the keys left unset).
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// See [`DEFAULT_MAX_AGE`].
pub(crate) const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// See [`DEFAULT_MAX_AGE`].
pub(crate) const DEFAULT_MAX_MSGS: u64 = 1_000_000;

/// A stream this handle uses, checked against the configuration.
#[derive(Debug)]
pub(crate) struct StreamTarget {
    /// Its name.
    pub name: String,
    /// The subjects it captures.
    pub subjects: Vec<String>,
    /// When the server made it (a stream made again has another time).
    pub created: async_nats::datetime::DateTime,
    /// Cleared when a publish found no stream (deleted, or lost with a
    /// server on memory storage): the next [`Streams::ensure`] asks again.
    present: AtomicBool,
}

impl StreamTarget {
    /// Whether the stream captures `topic` (a subject or a subscription
    /// pattern: its wildcards must be covered by the stream's).
    pub fn captures(&self, topic: &str) -> bool {
        self.subjects.iter().any(|s| covers(s, topic))
    }

    /// A publish found no stream: ask the server again before the next.
    pub fn lost(&self) {
        self.present.store(false, Ordering::Release);
    }
}

/// The streams of one handle, by name, and the stream of each topic
/// published to (the publishing fast path looks there, without a round trip).
pub(crate) struct Streams {
    api: Api,
    settings: Arc<Settings>,
    ensured: RwLock<HashMap<String, Arc<StreamTarget>>>,
    by_topic: TopicCache<Arc<StreamTarget>>,
    /// One creation or check at a time.
    ensuring: tokio::sync::Mutex<()>,
}

/// What the configuration says of the stream of one topic.
#[derive(Debug)]
pub(crate) struct Plan {
    pub name: String,
    pub subjects: Vec<String>,
}

/// The stream's name and subjects for `topic` from the `[nats]` section.
pub(crate) fn plan(nats: &NatsConfig, topic: &str) -> Result<Plan> {
    let templated = nats.stream.contains("{token}");
    let token = topic.split('.').next().unwrap_or(topic);
    if templated && (token == "*" || token == ">") {
        return Err(Error::topic(
            topic,
            format!(
                "nats.stream = {:?} names a stream after the topic's first token, and this one is a wildcard; subscribe below a first token (\"sensors.>\") or set a fixed nats.stream",
                nats.stream
            ),
        ));
    }
    // Tokens cannot hold '.', '*', '>' or whitespace; path separators
    // are allowed in subjects but not in stream names.
    let token_name = token.replace(['/', '\\'], "_");
    let name = nats.stream.replace("{token}", &token_name);
    if let Some(why) = bad_name(&name) {
        return Err(Error::config(
            "nats.stream",
            format!("the stream name {name:?} (for topic {topic:?}) {why}"),
        ));
    }
    let subjects = if !nats.stream_subjects.is_empty() {
        nats.stream_subjects
            .iter()
            .map(|s| s.replace("{token}", token))
            .collect()
    } else if templated {
        vec![token.to_string(), format!("{token}.>")]
    } else {
        Vec::new()
    };
    Ok(Plan { name, subjects })
}

impl Streams {
    pub fn new(api: Api, settings: Arc<Settings>) -> Streams {
        Streams {
            api,
            settings,
            ensured: RwLock::new(HashMap::new()),
            by_topic: TopicCache::new(4096),
            ensuring: tokio::sync::Mutex::new(()),
        }
    }

    /// The stream of `topic` if it was checked already (no round trip).
    pub fn cached(&self, topic: &str) -> Option<Arc<StreamTarget>> {
        self.by_topic
            .get_or_make(topic, |t| {
                let plan = self.plan(t)?;
                match read(&self.ensured).get(&plan.name) {
                    Some(s) if s.captures(t) => Ok(s.clone()),
                    _ => Err(Error::new(ErrorKind::Backend, "not checked yet")),
                }
            })
            .ok()
    }

    /// The stream of `topic`: created when missing, checked when present.
    pub async fn ensure(&self, topic: &str) -> Result<Arc<StreamTarget>> {
        let plan = self.plan(topic)?;
        if let Some(s) = self.known(&plan.name, topic) {
            return Ok(s);
        }
        let _one = self.ensuring.lock().await;
        if let Some(s) = self.known(&plan.name, topic) {
            return Ok(s);
        }
        let info = self.bind_or_create(&plan, topic).await?;
        let target = Arc::new(StreamTarget {
            name: info.config.name.clone(),
            subjects: info.config.subjects.clone(),
            created: info.created,
            present: AtomicBool::new(true),
        });
        if !target.captures(topic) {
            return Err(Error::config(
                "nats.stream_subjects",
                format!(
                    "stream {:?} captures {:?}, not topic {topic:?}; add the topic's subject to the stream, or choose another nats.stream",
                    target.name, target.subjects
                ),
            ));
        }
        tracing::debug!(stream = %target.name, subjects = ?target.subjects, "nats jetstream: stream ready");
        let mut ensured = write(&self.ensured);
        if target.name != plan.name {
            ensured.insert(target.name.clone(), target.clone());
        }
        ensured.insert(plan.name, target.clone());
        Ok(target)
    }

    /// The stream of `topic` looked up again (made again if it is gone),
    /// whatever was known of it.
    pub async fn remake(&self, topic: &str) -> Result<Arc<StreamTarget>> {
        let plan = self.plan(topic)?;
        if let Some(s) = read(&self.ensured).get(&plan.name) {
            s.lost();
        }
        self.ensure(topic).await
    }

    fn known(&self, name: &str, topic: &str) -> Option<Arc<StreamTarget>> {
        read(&self.ensured)
            .get(name)
            .filter(|s| s.present.load(Ordering::Acquire) && s.captures(topic))
            .cloned()
    }

    /// The stream's name and subjects for `topic` from the configuration.
    fn plan(&self, topic: &str) -> Result<Plan> {
        plan(&self.settings.nats, topic)
    }

    async fn bind_or_create(&self, plan: &Plan, topic: &str) -> Result<StreamInfo> {
        let info_subject = format!("STREAM.INFO.{}", plan.name);
        match self
            .api
            .request::<StreamInfo>(&info_subject, &json!({}))
            .await?
        {
            Ok(info) => {
                self.check_existing(&info.config)?;
                return Ok(info);
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(self.api.server_error(&format!("stream {:?}", plan.name), e)),
        }
        if plan.subjects.is_empty() {
            return Err(Error::config(
                "nats.stream_subjects",
                format!(
                    "stream {:?} does not exist and nats.stream_subjects does not say what it should capture (e.g. [\"{topic}\"]); set it, or create the stream",
                    plan.name
                ),
            ));
        }
        let asked = self.create_config(plan);
        let subject = format!("STREAM.CREATE.{}", plan.name);
        let mut created = self.api.request::<StreamInfo>(&subject, &asked).await?;
        for _ in 1..RETRIES {
            match &created {
                Err(e) if is_transient(e) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    created = self.api.request::<StreamInfo>(&subject, &asked).await?;
                }
                _ => break,
            }
        }
        match created {
            Ok(info) => {
                tracing::info!(stream = %plan.name, subjects = ?plan.subjects, "nats jetstream: created stream");
                self.check_created(&asked, &info.config)?;
                Ok(info)
            }
            // Created meanwhile by another node: check it as found.
            Err(e) if e.error_code().0 == 10058 => {
                let info = self
                    .api
                    .call::<StreamInfo>("stream info", &info_subject, &json!({}))
                    .await?;
                self.check_existing(&info.config)?;
                Ok(info)
            }
            // Another stream captures these subjects: bind to it when the
            // name was derived from the topic; a fixed name conflicts.
            Err(e) if e.error_code().0 == 10065 => self.bind_by_subject(plan, topic, e).await,
            Err(e) => Err(self.create_error(plan, e)),
        }
    }

    /// The stream that captures `topic`, found by subject, checked.
    async fn bind_by_subject(
        &self,
        plan: &Plan,
        topic: &str,
        e: ServerError,
    ) -> Result<StreamInfo> {
        #[derive(Deserialize)]
        struct Names {
            #[serde(default)]
            streams: Option<Vec<String>>,
        }
        let overlap = || {
            Error::config(
                "nats.stream",
                format!(
                    "stream {:?} cannot be created: its subjects {:?} overlap those of an existing stream ({e}); bind to that stream with nats.stream, or change nats.stream_subjects",
                    plan.name, plan.subjects
                ),
            )
        };
        if !self.settings.nats.stream.contains("{token}") {
            return Err(overlap());
        }
        let names = self
            .api
            .call::<Names>("stream names", "STREAM.NAMES", &json!({ "subject": topic }))
            .await?;
        let Some(name) = names.streams.unwrap_or_default().into_iter().next() else {
            return Err(overlap());
        };
        let info = self
            .api
            .call::<StreamInfo>("stream info", &format!("STREAM.INFO.{name}"), &json!({}))
            .await?;
        tracing::info!(stream = %name, topic, "nats jetstream: bound to the existing stream that captures the topic");
        self.check_existing(&info.config)?;
        Ok(info)
    }

    /// The stream config to create, the unset keys at their defaults.
    fn create_config(&self, plan: &Plan) -> StreamConfig {
        let n = &self.settings.nats;
        let limit = |v: Option<u64>, default: u64| match v.unwrap_or(default) {
            0 => -1,
            v => v as i64,
        };
        StreamConfig {
            name: plan.name.clone(),
            subjects: plan.subjects.clone(),
            retention: RetentionPolicy::Limits,
            storage: match n.stream_storage.unwrap_or(StreamStorage::File) {
                StreamStorage::File => StorageType::File,
                StreamStorage::Memory => StorageType::Memory,
            },
            num_replicas: n.stream_replicas.unwrap_or(1),
            max_age: n.stream_max_age.unwrap_or(DEFAULT_MAX_AGE),
            max_bytes: limit(n.stream_max_bytes, DEFAULT_MAX_BYTES),
            max_messages: limit(n.stream_max_msgs, DEFAULT_MAX_MSGS),
            max_messages_per_subject: -1,
            max_consumers: -1,
            discard: match n.stream_discard.unwrap_or(StreamDiscard::Old) {
                StreamDiscard::Old => DiscardPolicy::Old,
                StreamDiscard::New => DiscardPolicy::New,
            },
            description: Some("created by msight pubsub".to_string()),
            ..Default::default()
        }
    }

    /// A stream found on the server against the keys the configuration sets.
    fn check_existing(&self, got: &StreamConfig) -> Result<()> {
        let n = &self.settings.nats;
        let name = &got.name;
        let conflict = |key: &str, theirs: String, ours: String| {
            Error::config(
                key,
                format!(
                    "stream {name:?} exists with {theirs}, the configuration says {ours}; this library never changes an existing stream: change {key} to match, or change the stream (nats stream edit {name})"
                ),
            )
        };
        if let Some(want) = n.stream_storage {
            let has = match got.storage {
                StorageType::File => StreamStorage::File,
                StorageType::Memory => StreamStorage::Memory,
            };
            if has != want {
                return Err(conflict(
                    "nats.stream_storage",
                    format!("storage {has:?}").to_lowercase(),
                    format!("{want:?}").to_lowercase(),
                ));
            }
        }
        if let Some(want) = n.stream_replicas {
            if got.num_replicas.max(1) != want {
                return Err(conflict(
                    "nats.stream_replicas",
                    format!("{} replicas", got.num_replicas.max(1)),
                    want.to_string(),
                ));
            }
        }
        if let Some(want) = n.stream_max_age {
            if got.max_age != want {
                return Err(conflict(
                    "nats.stream_max_age",
                    format!("max_age {}", show_age(got.max_age)),
                    show_age(want),
                ));
            }
        }
        for (key, has, want) in [
            ("nats.stream_max_bytes", got.max_bytes, n.stream_max_bytes),
            ("nats.stream_max_msgs", got.max_messages, n.stream_max_msgs),
        ] {
            let Some(want) = want else { continue };
            let has = u64::try_from(has).unwrap_or(0);
            if has != want {
                let field = key.trim_start_matches("nats.stream_");
                return Err(conflict(
                    key,
                    format!("{field} {}", show_limit(has)),
                    show_limit(want),
                ));
            }
        }
        if let Some(want) = n.stream_discard {
            let has = match got.discard {
                DiscardPolicy::Old => StreamDiscard::Old,
                DiscardPolicy::New => StreamDiscard::New,
            };
            if has != want {
                return Err(conflict(
                    "nats.stream_discard",
                    format!("discard {has:?}").to_lowercase(),
                    format!("{want:?}").to_lowercase(),
                ));
            }
        }
        if !n.stream_subjects.is_empty() && !n.stream.contains("{token}") {
            let mut has = got.subjects.clone();
            let mut want = n.stream_subjects.clone();
            has.sort();
            want.sort();
            if has != want {
                return Err(conflict(
                    "nats.stream_subjects",
                    format!("subjects {:?}", got.subjects),
                    format!("{:?}", n.stream_subjects),
                ));
            }
        }
        if got.retention == RetentionPolicy::WorkQueue {
            tracing::warn!(stream = %name, "nats jetstream: the stream has work-queue retention: plain subscribers of a topic do not each get every message there");
        }
        Ok(())
    }

    /// What the server made against what was asked: a setting it did not
    /// keep (an older server ignoring a field) is refused, not used.
    fn check_created(&self, asked: &StreamConfig, got: &StreamConfig) -> Result<()> {
        let differs = [
            ("nats.stream_subjects", asked.subjects != got.subjects),
            ("nats.stream_storage", asked.storage != got.storage),
            (
                "nats.stream_replicas",
                asked.num_replicas.max(1) != got.num_replicas.max(1),
            ),
            ("nats.stream_max_age", asked.max_age != got.max_age),
            ("nats.stream_max_bytes", asked.max_bytes != got.max_bytes),
            (
                "nats.stream_max_msgs",
                asked.max_messages != got.max_messages,
            ),
            ("nats.stream_discard", asked.discard != got.discard),
        ];
        match differs.iter().find(|(_, d)| *d) {
            None => Ok(()),
            Some((key, _)) => Err(Error::config(
                key,
                format!(
                    "the server created stream {:?} with other settings than asked ({got:?} for {asked:?}); it may not support them",
                    got.name
                ),
            )),
        }
    }

    /// A refused creation, naming the key at fault where the server says.
    fn create_error(&self, plan: &Plan, e: ServerError) -> Error {
        let code = e.error_code().0;
        let key = match code {
            // Replicas > 1 without a cluster; no suitable peers for placement.
            10074 | 10005 => Some("nats.stream_replicas"),
            // Insufficient resources; storage or memory limits of the account.
            10023 | 10047 | 10028 | 10002 => Some("nats.stream_max_bytes"),
            10052 if e.to_string().to_lowercase().contains("replica") => {
                Some("nats.stream_replicas")
            }
            10052 | 10058 => Some("nats.stream"),
            10039 | 10076 => Some("nats.mode"),
            _ => None,
        };
        let what = format!(
            "creating stream {:?} (subjects {:?}, {} replica(s)) was refused: {e}",
            plan.name,
            plan.subjects,
            self.settings.nats.stream_replicas.unwrap_or(1)
        );
        match key {
            Some(key) => Error::config(key, what),
            None => Error::new(
                ErrorKind::Backend,
                format!("nats jetstream {}: {what}", self.api.shown()),
            ),
        }
    }
}

fn show_age(d: Duration) -> String {
    if d.is_zero() {
        "0s (no limit)".into()
    } else {
        humantime_serde::re::humantime::format_duration(d).to_string()
    }
}

fn show_limit(v: u64) -> String {
    if v == 0 {
        "0 (no limit)".into()
    } else {
        v.to_string()
    }
}

/// Whether the stream subject `pattern` covers `topic` (a subject, or a
/// subscription pattern whose wildcards the stream's must cover).
pub(crate) fn covers(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(tok)) => {
                if tok == ">" {
                    return false;
                }
            }
            (Some(a), Some(b)) => {
                if a != b {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn stream_subjects_cover_topics_and_patterns() {
        assert!(covers("a.>", "a.b"));
        assert!(covers("a.>", "a.b.c"));
        assert!(covers("a.>", "a.*"));
        assert!(covers("a.>", "a.>"));
        assert!(!covers("a.>", "a"));
        assert!(covers("a", "a"));
        assert!(covers("a.*", "a.b"));
        assert!(covers("a.*", "a.*"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("b.>", "a.b"));
    }
}
