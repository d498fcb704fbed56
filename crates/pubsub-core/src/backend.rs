//! The contract every backend implements.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::inbox::Inbox;

/// What a backend promises about delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// A message may be lost (broker restart, slow consumer, no subscriber).
    #[default]
    AtMostOnce,
    /// A message accepted by the broker is delivered at least once, also
    /// across restarts of the subscriber.
    AtLeastOnce,
}

/// What a backend supports. The conformance suite runs the cases a backend
/// claims; the README shows the table.
///
/// New fields may be added: a backend starts from `Capabilities::default()`
/// (nothing claimed, at most once) and sets what it has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Subscribers with a `group_id` share messages, each going to one member.
    pub groups: bool,
    /// Messages published while a subscriber is away are kept for it.
    pub persistence: bool,
    /// Order is kept from one publisher to one subscriber.
    pub ordering: bool,
    /// Subscriptions may use wildcards; the syntax, e.g. `"* >"` for NATS.
    pub wildcards: Option<&'static str>,
    /// Largest payload, in bytes, if the backend knows it.
    pub max_payload: Option<usize>,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Messages carry headers, published and received unchanged.
    pub headers: bool,
    /// Received messages carry the broker's id ([`crate::Message::id`]).
    pub message_ids: bool,
    /// How the settle operations of manual ack mode (`ack = "manual"`) are
    /// done. All [`Support::Unsupported`]: manual ack is refused at connect.
    pub settle: SettleSupport,
}

/// How a backend does a feature: natively (the broker does it), emulated
/// (this library does it with what the broker has), or not at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Support {
    /// Not available: asking for it is an error.
    #[default]
    Unsupported,
    /// Done by this library over what the broker offers.
    Emulated,
    /// Done by the broker.
    Native,
}

impl Support {
    /// Whether it is available at all.
    pub fn is_supported(self) -> bool {
        self != Support::Unsupported
    }
}

/// How each settle operation of manual ack mode is done by a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SettleSupport {
    /// Acknowledge: the message is not delivered again.
    pub ack: Support,
    /// Negative acknowledge: delivered again, not before a delay.
    pub nak: Support,
    /// Restart the ack timer of a message still being worked on.
    pub in_progress: Support,
    /// Never deliver again: to the dead letter.
    pub term: Support,
    /// Redelivery of a message not settled within `ack_wait`.
    pub redeliver_after_ack_wait: Support,
    /// The dead-letter topic after `max_deliver` attempts or `term`.
    pub dead_letter: Support,
}

impl SettleSupport {
    /// Whether manual ack mode is available at all.
    pub fn manual_ack(&self) -> bool {
        self.ack.is_supported()
    }
}

/// What the connected broker says about itself, for diagnostics (`pubsub
/// check`). A backend starts from `BrokerInfo::default()` and sets what it knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerInfo {
    /// Broker software and name, e.g. `"nats-server my-node"`.
    pub server: Option<String>,
    /// Broker version.
    pub version: Option<String>,
    /// Largest payload the broker accepts, if it says.
    pub max_payload: Option<usize>,
    /// Whether the connection uses TLS.
    pub tls: bool,
    /// The address connected to (credentials removed).
    pub address: Option<String>,
}

/// Live counters of one handle; read them with [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    acked: AtomicU64,
    redelivered: AtomicU64,
    dead_lettered: AtomicU64,
    discarded: AtomicU64,
}

impl Counters {
    /// Count `n` messages accepted for publishing.
    pub fn add_published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
    }
    /// Count `n` messages received from the broker.
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }
    /// Count `n` messages dropped because a buffer was full.
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
    /// Count one reconnect to the broker.
    pub fn add_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    /// Count `n` messages acknowledged by the application (manual ack).
    pub fn add_acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }
    /// Count `n` messages received again (a later delivery of one seen before).
    pub fn add_redelivered(&self, n: u64) {
        self.redelivered.fetch_add(n, Ordering::Relaxed);
    }
    /// Count `n` messages sent to the dead-letter topic.
    pub fn add_dead_lettered(&self, n: u64) {
        self.dead_lettered.fetch_add(n, Ordering::Relaxed);
    }
    /// Count `n` messages given up (past `max_deliver` or `term`) with no
    /// dead-letter topic configured, or whose body the broker no longer had.
    pub fn add_discarded(&self, n: u64) {
        self.discarded.fetch_add(n, Ordering::Relaxed);
    }
    /// A copy of the current values.
    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            published: get(&self.published),
            received: get(&self.received),
            dropped: get(&self.dropped),
            reconnects: get(&self.reconnects),
            acked: get(&self.acked),
            redelivered: get(&self.redelivered),
            dead_lettered: get(&self.dead_lettered),
            discarded: get(&self.discarded),
        }
    }
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages accepted by `publish`.
    pub published: u64,
    /// Messages received from the broker (before any drop by overflow).
    pub received: u64,
    /// Messages dropped because a receive buffer was full (ours or the client library's).
    pub dropped: u64,
    /// Times the connection to the broker was re-established.
    pub reconnects: u64,
    /// Messages acknowledged by the application (manual ack mode).
    pub acked: u64,
    /// Messages received that had been delivered before.
    pub redelivered: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages given up with no dead-letter topic, or whose body the
    /// broker no longer had.
    pub discarded: u64,
}

/// Result of [`PubSubBackend::try_publish`].
#[derive(Debug)]
pub enum TryPublish {
    /// The client took the message (or refused it): this is the result.
    Done(Result<()>),
    /// The client cannot take it without waiting: here is the payload back;
    /// the caller then awaits [`PubSubBackend::publish`].
    WouldWait(Bytes),
}

/// What a backend keeps per topic for publishing (a prepared subject, a
/// shared name), made and checked once per topic instead of once per
/// message: a cache hit costs one hash of the name (foldhash, seeded per
/// process) under a read lock. Values are cached only when `make` succeeds,
/// so a hit also means the topic passed the backend's checks. At most
/// `limit` topics are kept; beyond that `make` runs for every publish.
pub struct TopicCache<V> {
    map: std::sync::RwLock<std::collections::HashMap<Box<str>, V, foldhash::fast::RandomState>>,
    limit: usize,
}

impl<V: Clone> TopicCache<V> {
    /// An empty cache of at most `limit` topics.
    pub fn new(limit: usize) -> Self {
        TopicCache {
            map: std::sync::RwLock::default(),
            limit,
        }
    }

    /// The value for `topic`, made by `make` the first time.
    pub fn get_or_make(&self, topic: &str, make: impl FnOnce(&str) -> Result<V>) -> Result<V> {
        if let Some(v) = crate::sync::read(&self.map).get(topic) {
            return Ok(v.clone());
        }
        let v = make(topic)?;
        let mut map = crate::sync::write(&self.map);
        if map.len() < self.limit {
            map.insert(topic.into(), v.clone());
        }
        Ok(v)
    }
}

impl<V> fmt::Debug for TopicCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.map.read().map_or(0, |m| m.len());
        f.debug_struct("TopicCache")
            .field("topics", &len)
            .field("limit", &self.limit)
            .finish()
    }
}

/// What a backend is given when it connects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BackendContext {
    /// Where to put received messages; it applies the overflow policy and counts.
    pub inbox: Inbox,
    /// The handle's counters (also reachable through the inbox).
    pub counters: Arc<Counters>,
    /// In manual ack mode, the bound on unsettled messages: take a permit
    /// for each message delivered ([`crate::Message::with_settle`]) and
    /// stop fetching while none is free.
    pub in_flight: Arc<crate::InFlight>,
}

/// The async, object-safe contract of a backend, named as in the Python
/// original. Backends are created through [`Backend::connect`] (by the
/// registry, [`crate::register`], or a [`crate::BackendFactory`]) and used
/// through [`crate::PubSub`] or [`crate::blocking::PubSub`], which check
/// topics, track subscriptions and the closed state, and count publishes;
/// a backend only talks to its broker.
///
/// Received messages go into the [`BackendContext::inbox`]; the message
/// stream the user reads is that inbox.
#[async_trait]
pub trait PubSubBackend: Send + Sync + fmt::Debug + 'static {
    /// What this backend supports, as connected (the max payload may come from the server).
    fn capabilities(&self) -> Capabilities;

    /// What the broker says about itself (name, version, limits, TLS).
    fn broker_info(&self) -> BrokerInfo {
        BrokerInfo::default()
    }

    /// Extra checks of a topic name for publishing (wildcards, backend rules).
    /// The core rules of [`crate::validate_topic_name`] have been checked already.
    /// A backend may instead make these checks in `try_publish` / `publish`
    /// (NATS does, once per topic, with its subject cache); either way a bad
    /// topic fails the publish with [`crate::ErrorKind::InvalidTopic`].
    fn check_publish_topic(&self, topic: &str) -> Result<()> {
        let _ = topic;
        Ok(())
    }

    /// Extra checks of a topic name (or pattern) for subscribing.
    fn check_subscribe_topic(&self, topic: &str) -> Result<()> {
        let _ = topic;
        Ok(())
    }

    /// Start delivering messages of `topic` into the inbox. With `group`, the
    /// subscription joins that group: each message goes to one member.
    /// Never called twice for the same topic without `unsubscribe` between.
    /// When it returns, the broker has the subscription: a message published
    /// afterwards, by any client, is delivered.
    async fn subscribe(&self, topic: &str, group: Option<&str>) -> Result<()>;

    /// Stop delivering messages of `topic`. When this returns, the broker
    /// will send no more messages of it.
    async fn unsubscribe(&self, topic: &str) -> Result<()>;

    /// Hand `payload` to the client without waiting, if it can take it now.
    /// This is the publish fast path: no future is boxed. The blocking API
    /// calls it on the application's thread, outside the runtime, so it
    /// must not need one (no `tokio::spawn`, no timer; a channel's
    /// `try_send` is fine). The default says [`TryPublish::WouldWait`], so
    /// [`PubSubBackend::publish`] is used.
    fn try_publish(&self, topic: &str, payload: Bytes) -> TryPublish {
        let _ = topic;
        TryPublish::WouldWait(payload)
    }

    /// Hand `payload` to the client for `topic`. Must not wait for a network
    /// round trip. The payload size has been checked against
    /// [`Capabilities::max_payload`] already.
    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()>;

    /// [`PubSubBackend::publish`] with headers (not empty, checked by
    /// [`crate::Headers::validate`]). Called only when the backend claims
    /// [`Capabilities::headers`]; the default refuses.
    async fn publish_with_headers(
        &self,
        topic: &str,
        headers: crate::Headers,
        payload: Bytes,
    ) -> Result<()> {
        let _ = (topic, headers, payload);
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            "this backend does not publish headers",
        ))
    }

    /// Delete what the broker keeps of `topic` for this library (a Redis
    /// stream with its consumer groups), for a program that made the topic
    /// for itself and is done with it. The default does nothing, right for
    /// a broker that keeps nothing.
    async fn delete_topic(&self, topic: &str) -> Result<()> {
        let _ = topic;
        Ok(())
    }

    /// Extra checks of subscribing in `group`, before
    /// [`Capabilities::groups`] is looked at: a backend without groups (in
    /// some mode) can say here what to do instead. The default accepts.
    fn check_subscribe_group(&self, group: &str) -> Result<()> {
        let _ = group;
        Ok(())
    }

    /// Wait until the broker has received everything accepted by `publish`.
    async fn flush(&self) -> Result<()>;

    /// Flush, stop all subscriptions, and disconnect. Called once.
    async fn close(&self) -> Result<()>;
}

/// A backend type: its name, its config section and how it connects. This
/// is all the registry needs: [`crate::register::<B>()`](crate::register)
/// makes `backend = "<NAME>"` work, and [`crate::BackendFactory::of`] gives
/// the entry to connect with directly. A backend crate of its own needs no
/// change in this crate; see the workspace README, "Writing a backend".
#[async_trait]
pub trait Backend: PubSubBackend + Sized {
    /// The name in `backend = "..."` and `MSIGHT_PUBSUB_BACKEND`, lower case.
    const NAME: &'static str;
    /// The crate that provides it, named in the error for a backend that is
    /// not registered (`env!("CARGO_PKG_NAME")`).
    const CRATE: &'static str;
    /// Its config section (`[NAME]` by convention).
    type Config: crate::config::Section;

    /// Connect with the common settings of `config` and the backend's own
    /// `section` (read from `config` and checked with
    /// [`Section::validate`](crate::config::Section::validate) already).
    /// Received messages go into `ctx.inbox`. Bounded by
    /// `config.connect_timeout` by the caller.
    async fn connect(
        config: &crate::Config,
        section: Self::Config,
        ctx: BackendContext,
    ) -> Result<Self>;
}
