//! The async API: [`PubSub`], used on the application's tokio runtime.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::backend::{
    BackendContext, BrokerInfo, Capabilities, Counters, PubSubBackend, Stats, TryPublish,
};
use crate::codec::{Codec, Format};
use crate::config::{AckMode, BufferConfig, Config, OverflowPolicy};
use crate::error::{Error, ErrorKind, Result};
use crate::flight::InFlight;
use crate::inbox::{Inbox, Recv};
use crate::message::Headers;
use crate::message::Message;
use crate::registry::{self, BackendFactory};
use crate::topic::{validate_topic_name, Topic};

/// Anything that names a topic: a [`Topic`], `&str` or `String`.
pub trait TopicName {
    /// The topic name.
    fn topic_name(&self) -> &str;
}

impl TopicName for Topic {
    fn topic_name(&self) -> &str {
        self.name()
    }
}

impl TopicName for str {
    fn topic_name(&self) -> &str {
        self
    }
}

impl TopicName for String {
    fn topic_name(&self) -> &str {
        self
    }
}

impl<T: TopicName + ?Sized> TopicName for &T {
    fn topic_name(&self) -> &str {
        (**self).topic_name()
    }
}

/// A stream of received messages; it ends when the handle is closed or no
/// subscription is left.
pub type MessageStream = BoxStream<'static, Message>;

struct Inner {
    backend: Box<dyn PubSubBackend>,
    /// Unsettled messages in manual ack mode.
    in_flight: Arc<InFlight>,
    /// The backend's registered name.
    name: &'static str,
    inbox: Inbox,
    counters: Arc<Counters>,
    capabilities: Capabilities,
    group_id: Option<String>,
    close_timeout: Duration,
    publish_timeout: Duration,
    codec: Format,
    subscriptions: Mutex<BTreeSet<String>>,
    closed: AtomicBool,
    /// Serialises subscribe / unsubscribe / close.
    control: tokio::sync::Mutex<()>,
}

/// A connection to the configured broker, used with `async`/`.await`.
/// Cheap to clone; clones share the connection, the subscriptions and the
/// receive buffer.
///
/// ```
/// # async fn demo() -> pubsub_core::Result<()> {
/// use pubsub_core::{Config, PubSub};
/// let ps = PubSub::connect(&Config::default()).await?; // `memory` backend
/// ps.subscribe("greetings").await?;
/// ps.publish("greetings", "hello").await?;
/// let msg = ps.recv().await?;
/// assert_eq!(&msg.payload[..], b"hello");
/// ps.close().await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

impl fmt::Debug for PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSub")
            .field("backend", &self.inner.backend)
            .field("group_id", &self.inner.group_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl PubSub {
    /// Connect to the backend named by `config.backend`, looked up in the
    /// registry ([`crate::register`]). Fails within `config.connect_timeout`.
    pub async fn connect(config: &Config) -> Result<PubSub> {
        config.validate()?;
        let factory = registry::lookup(&config.backend)?;
        PubSub::connect_with(&factory, config).await
    }

    /// Connect with backend `B`, whatever `config.backend` says (no
    /// registration needed).
    pub async fn connect_to<B: crate::Backend>(config: &Config) -> Result<PubSub> {
        PubSub::connect_with(&BackendFactory::of::<B>(), config).await
    }

    /// Connect with the given backend, whatever `config.backend` says.
    pub async fn connect_with(factory: &BackendFactory, config: &Config) -> Result<PubSub> {
        config.validate()?;
        registry::warn_unknown_sections(config, factory);
        let counters = Arc::new(Counters::default());
        let inbox = Inbox::new(&receive_buffer(config), counters.clone());
        let in_flight = InFlight::new(
            config.max_in_flight,
            config.max_in_flight_bytes,
            counters.clone(),
        );
        let ctx = BackendContext {
            inbox: inbox.clone(),
            counters: counters.clone(),
            in_flight: in_flight.clone(),
        };
        let timeout = config.connect_timeout;
        let backend =
            match tokio::time::timeout(timeout, factory.connect(config.clone(), ctx)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "connecting to the {} backend took longer than connect_timeout ({})",
                            factory.name(),
                            humantime_serde::re::humantime::format_duration(timeout)
                        ),
                    ))
                }
            };
        let capabilities = backend.capabilities();
        if config.ack == AckMode::Manual && !capabilities.settle.manual_ack() {
            let _ = backend.close().await;
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "ack = \"manual\": the {} backend, as configured, cannot keep a message until it is settled; use ack = \"auto\" or a backend or mode that keeps messages",
                    factory.name()
                ),
            ));
        }
        // A `group_id` on a backend without groups is refused when a
        // subscription would use it, not here: a publisher has no use for
        // it, and a site-wide group id must not stop publishers.
        Ok(PubSub {
            inner: Arc::new(Inner {
                backend,
                in_flight,
                name: factory.name(),
                inbox,
                counters,
                capabilities,
                group_id: config.group_id.clone(),
                close_timeout: config.close_timeout,
                publish_timeout: config.publish_timeout,
                codec: config.codec,
                subscriptions: Mutex::new(BTreeSet::new()),
                closed: AtomicBool::new(false),
                control: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        crate::sync::lock(&self.inner.subscriptions)
    }

    /// Subscribe to `topic`, in the configured `group_id` if there is one.
    /// Subscribing again to a topic already subscribed does nothing.
    pub async fn subscribe(&self, topic: impl TopicName) -> Result<()> {
        let group = self.inner.group_id.clone();
        self.subscribe_in(topic, group.as_deref()).await
    }

    /// Subscribe to `topic` as a member of `group` (`None`: a plain
    /// subscription that receives every message), whatever `group_id` says.
    pub async fn subscribe_in(&self, topic: impl TopicName, group: Option<&str>) -> Result<()> {
        let name = topic.topic_name();
        self.check_open()?;
        validate_topic_name(name)?;
        self.inner.backend.check_subscribe_topic(name)?;
        check_wildcards(name, &self.inner.capabilities, self.inner.name)?;
        if let Some(g) = group {
            self.inner.backend.check_subscribe_group(g)?;
            if !self.inner.capabilities.groups {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "group {g:?}: the {} backend, as configured, has no groups",
                        self.inner.name
                    ),
                ));
            }
            if g.is_empty() || g.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::config(
                    "group_id",
                    format!("{g:?} must be non-empty, without whitespace or control characters"),
                ));
            }
        }
        let _guard = self.inner.control.lock().await;
        self.check_open()?;
        if self.subs().contains(name) {
            return Ok(());
        }
        self.with_close_timeout("subscribe", self.inner.backend.subscribe(name, group))
            .await?;
        self.subs().insert(name.to_string());
        self.inner.inbox.set_subscribed(true);
        Ok(())
    }

    /// Stop receiving `topic`. Messages of it already buffered stay in the buffer.
    pub async fn unsubscribe(&self, topic: impl TopicName) -> Result<()> {
        let name = topic.topic_name();
        self.check_open()?;
        let _guard = self.inner.control.lock().await;
        self.check_open()?;
        if !self.subs().contains(name) {
            return Err(Error::new(
                ErrorKind::NotSubscribed,
                format!("topic {name:?} is not subscribed"),
            ));
        }
        self.with_close_timeout("unsubscribe", self.inner.backend.unsubscribe(name))
            .await?;
        let mut subs = self.subs();
        subs.remove(name);
        self.inner.inbox.set_subscribed(!subs.is_empty());
        Ok(())
    }

    /// Delete what the broker keeps of `topic` (a Redis stream and its
    /// consumer groups; nothing where the broker keeps nothing), within
    /// `close_timeout`. For a program that made a topic for itself (a test,
    /// a benchmark) and is done with it: other programs' messages on it go too.
    pub async fn delete_topic(&self, topic: impl TopicName) -> Result<()> {
        let name = topic.topic_name();
        self.check_open()?;
        validate_topic_name(name)?;
        self.with_close_timeout("delete_topic", self.inner.backend.delete_topic(name))
            .await
    }

    /// The topics subscribed now.
    pub fn subscriptions(&self) -> Vec<String> {
        self.subs().iter().cloned().collect()
    }

    /// Publish `payload` to `topic`. Returns once the client has accepted the
    /// message, without waiting for the broker; [`PubSub::flush`] waits.
    pub async fn publish(&self, topic: impl TopicName, payload: impl Into<Bytes>) -> Result<()> {
        let name = topic.topic_name();
        match self.publish_now(name, payload.into())? {
            None => Ok(()),
            Some(payload) => self.publish_waiting(name, payload).await,
        }
    }

    /// Publish `payload` to `topic` with `headers` (an ordered list of text
    /// pairs, [`Headers`]): NATS headers, MQTT v5 user properties, Redis
    /// Streams fields. A backend or mode without headers (Redis
    /// PUBLISH/SUBSCRIBE, whose bytes stay those of the Python original)
    /// refuses with [`ErrorKind::Unsupported`]; empty headers publish as
    /// [`PubSub::publish`] does.
    pub async fn publish_with_headers(
        &self,
        topic: impl TopicName,
        headers: Headers,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        let name = topic.topic_name();
        let payload = payload.into();
        if headers.is_empty() {
            return self.publish(name, payload).await;
        }
        self.check_headers(&headers)?;
        self.check_publish(name, &payload)?;
        self.with_publish_timeout(
            name,
            self.inner
                .backend
                .publish_with_headers(name, headers, payload),
        )
        .await?;
        self.inner.counters.add_published(1);
        Ok(())
    }

    pub(crate) fn check_headers(&self, headers: &Headers) -> Result<()> {
        headers.validate()?;
        if !self.inner.capabilities.headers {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "headers: the {} backend, as configured, has no message headers; publish without them",
                    self.inner.name
                ),
            ));
        }
        Ok(())
    }

    /// Publish `value` to `topic`, encoded with `codec`
    /// ([`MsgPack`](crate::codec::MsgPack), [`Json`](crate::codec::Json), a
    /// [`Format`], ...). A value the codec cannot write is an
    /// [`ErrorKind::Encode`] error and nothing is published.
    ///
    /// ```
    /// # #[cfg(feature = "msgpack")]
    /// # async fn demo() -> pubsub_core::Result<()> {
    /// use pubsub_core::{codec::MsgPack, Config, PubSub};
    /// let ps = PubSub::connect(&Config::default()).await?;
    /// ps.subscribe("counts").await?;
    /// ps.publish_as("counts", &(1u32, "one"), MsgPack).await?;
    /// let (n, word): (u32, String) = ps.recv().await?.decode(MsgPack)?;
    /// assert_eq!((n, word.as_str()), (1, "one"));
    /// # Ok(()) }
    /// # #[cfg(feature = "msgpack")]
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    pub async fn publish_as<T: serde::Serialize + ?Sized>(
        &self,
        topic: impl TopicName,
        value: &T,
        codec: impl Codec,
    ) -> Result<()> {
        let name = topic.topic_name();
        let payload = crate::codec::encode_for(&codec, name, value)?;
        self.publish(name, payload).await
    }

    /// Publish `value` to `topic`, encoded with this handle's codec (the
    /// `codec` setting, MessagePack by default: [`PubSub::codec`]).
    pub async fn publish_value<T: serde::Serialize + ?Sized>(
        &self,
        topic: impl TopicName,
        value: &T,
    ) -> Result<()> {
        self.publish_as(topic, value, self.inner.codec).await
    }

    /// This handle's codec: the `codec` setting of the configuration it
    /// was connected with. Decode with it: `msg.decode::<T>(ps.codec())`.
    pub fn codec(&self) -> Format {
        self.inner.codec
    }

    /// The publish fast path, synchronous and needing no runtime (the
    /// blocking API calls it on the application's thread): checks, then
    /// [`PubSubBackend::try_publish`]. `Ok(None)`: published; `Ok(Some)`:
    /// the client's queue is full, here is the payload back for
    /// [`PubSub::publish_waiting`].
    pub(crate) fn publish_now(&self, name: &str, payload: Bytes) -> Result<Option<Bytes>> {
        self.check_publish(name, &payload)?;
        match self.inner.backend.try_publish(name, payload) {
            TryPublish::Done(r) => {
                r?;
                self.inner.counters.add_published(1);
                Ok(None)
            }
            TryPublish::WouldWait(payload) => Ok(Some(payload)),
        }
    }

    /// The publish slow path, after [`PubSub::publish_now`] found the
    /// client's queue full: waits for room, at most `publish_timeout`.
    pub(crate) async fn publish_waiting(&self, name: &str, payload: Bytes) -> Result<()> {
        self.with_publish_timeout(name, self.inner.backend.publish(name, payload))
            .await?;
        self.inner.counters.add_published(1);
        Ok(())
    }

    /// Wait for the client to accept a message, at most `publish_timeout`.
    async fn with_publish_timeout(
        &self,
        name: &str,
        accepted: impl Future<Output = Result<()>>,
    ) -> Result<()> {
        let mut accepted = std::pin::pin!(accepted);
        // The first poll needs no timer: it completes at once unless the
        // client's queue is still full. Only then is `publish_timeout` armed.
        let first = std::future::poll_fn(|cx| Poll::Ready(accepted.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(r) => r,
            Poll::Pending => match tokio::time::timeout(self.inner.publish_timeout, accepted).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "publish to {name:?}: the {} client did not accept the message within publish_timeout ({}); the broker may be unreachable",
                        self.inner.name,
                        humantime_serde::re::humantime::format_duration(self.inner.publish_timeout)
                    ),
                )),
            },
        }
    }

    pub(crate) fn check_publish(&self, name: &str, payload: &Bytes) -> Result<()> {
        self.check_open()?;
        validate_topic_name(name)?;
        self.inner.backend.check_publish_topic(name)?;
        if let Some(max) = self.inner.capabilities.max_payload {
            if payload.len() > max {
                return Err(Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "payload of {} bytes for topic {name:?} is over the {} backend's limit of {max} bytes",
                        payload.len(),
                        self.inner.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Wait until every accepted message has been written to the broker
    /// (at most `close_timeout`).
    pub async fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.with_close_timeout("flush", self.inner.backend.flush())
            .await
    }

    async fn with_close_timeout(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<()>>,
    ) -> Result<()> {
        match tokio::time::timeout(self.inner.close_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{what} did not finish within close_timeout ({})",
                    humantime_serde::re::humantime::format_duration(self.inner.close_timeout)
                ),
            )),
        }
    }

    /// Send what was accepted, end the subscriptions and disconnect, within
    /// `close_timeout`. Afterwards every call fails with [`ErrorKind::Closed`];
    /// closing twice is such a call.
    pub async fn close(&self) -> Result<()> {
        let _guard = self.inner.control.lock().await;
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::closed());
        }
        let result = self
            .with_close_timeout("close", self.inner.backend.close())
            .await;
        self.inner.in_flight.close();
        self.inner.inbox.close();
        self.subs().clear();
        result
    }

    /// Whether [`PubSub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The next message from any subscribed topic, waiting for one.
    /// Fails with [`ErrorKind::NotSubscribed`] when nothing is buffered and
    /// no subscription is active, and with [`ErrorKind::Closed`] after close.
    pub async fn recv(&self) -> Result<Message> {
        self.check_open()?;
        recv_result(self.inner.inbox.recv().await)?.ok_or_else(Error::closed)
    }

    /// Like [`PubSub::recv`], but `Ok(None)` when nothing arrives within `timeout`.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        self.check_open()?;
        match tokio::time::timeout(timeout, self.inner.inbox.recv()).await {
            Ok(r) => recv_result(r),
            Err(_) => Ok(None),
        }
    }

    /// Received messages as a [`futures::Stream`]. It ends when the handle is
    /// closed or the last subscription is removed.
    pub fn messages(&self) -> Result<MessageStream> {
        self.check_open()?;
        self.check_subscribed()?;
        let inbox = self.inner.inbox.clone();
        Ok(futures::stream::unfold(inbox, |inbox| async move {
            match inbox.recv().await {
                Recv::Message(m) => Some((m, inbox)),
                _ => None,
            }
        })
        .boxed())
    }

    pub(crate) fn check_subscribed(&self) -> Result<()> {
        if self.subs().is_empty() && self.inner.inbox.is_empty() {
            return Err(not_subscribed());
        }
        Ok(())
    }

    pub(crate) fn is_last_handle(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    pub(crate) fn inbox(&self) -> &Inbox {
        &self.inner.inbox
    }

    /// Counters: published, received, dropped by overflow, reconnects.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// What the backend supports, as connected.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    /// What the connected broker says about itself.
    pub fn broker_info(&self) -> BrokerInfo {
        self.inner.backend.broker_info()
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.inner.name
    }

    /// The configured group, if any.
    pub fn group_id(&self) -> Option<&str> {
        self.inner.group_id.as_deref()
    }
}

/// The receive buffer as configured; in manual ack mode it never drops (a
/// dropped message would only come back after `ack_wait`) and holds every
/// unsettled message the handle may fetch: the backend stops fetching at
/// `max_in_flight` instead.
fn receive_buffer(config: &Config) -> BufferConfig {
    match config.ack {
        AckMode::Auto => config.buffer.clone(),
        AckMode::Manual => BufferConfig {
            capacity: config.buffer.capacity.max(config.max_in_flight),
            max_bytes: config.buffer.max_bytes.max(config.max_in_flight_bytes),
            overflow: OverflowPolicy::Block,
        },
    }
}

/// The wildcards of the two syntaxes: NATS (`*` one token, `>` the rest,
/// tokens separated by `.`) and MQTT (`+` one level, `#` the rest, levels
/// separated by `/`).
const NATS_WILDCARDS: (char, [&str; 2]) = ('.', ["*", ">"]);
const MQTT_WILDCARDS: (char, [&str; 2]) = ('/', ["+", "#"]);

/// Refuse a subscription to `topic` when it holds a wildcard of a syntax
/// the backend does not have (it would be taken as a plain topic name,
/// which is never what was meant), naming the backend's own wildcards.
fn check_wildcards(topic: &str, capabilities: &Capabilities, backend: &str) -> Result<()> {
    let own: Vec<&str> = capabilities
        .wildcards
        .map(|w| w.split_whitespace().collect())
        .unwrap_or_default();
    for (syntax, (separator, tokens)) in [("NATS", NATS_WILDCARDS), ("MQTT", MQTT_WILDCARDS)] {
        if tokens.iter().any(|t| own.contains(t)) {
            continue;
        }
        let Some(found) = topic.split(separator).find(|part| tokens.contains(part)) else {
            continue;
        };
        let instead = if own.contains(&"*") {
            format!("the {backend} backend's wildcards are `*` (one token) and `>` (the rest), tokens separated by `.`")
        } else if own.contains(&"+") {
            format!("the {backend} backend's wildcards are `+` (one level) and `#` (the rest), levels separated by `/`")
        } else if let Some(w) = capabilities.wildcards {
            format!("the {backend} backend's wildcards are {w}")
        } else {
            format!(
                "the {backend} backend has no wildcards: subscribe to each topic by its full name"
            )
        };
        return Err(Error::new(
            ErrorKind::InvalidTopic,
            format!(
                "topic {topic:?}: `{found}` is a {syntax} wildcard, which this backend would take as part of a plain topic name; {instead}"
            ),
        ));
    }
    Ok(())
}

fn not_subscribed() -> Error {
    Error::new(
        ErrorKind::NotSubscribed,
        "no subscription is active: call subscribe(topic) before listening",
    )
}

/// `Ok(Some)` for a message, `Ok(None)` for a timeout, errors otherwise.
pub(crate) fn recv_result(r: Recv) -> Result<Option<Message>> {
    match r {
        Recv::Message(m) => Ok(Some(m)),
        Recv::Timeout => Ok(None),
        Recv::NotSubscribed => Err(not_subscribed()),
        Recv::Closed => Err(Error::closed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(wildcards: Option<&'static str>) -> Capabilities {
        Capabilities {
            wildcards,
            ..Capabilities::default()
        }
    }

    #[test]
    fn wildcards_of_another_syntax_are_refused_naming_the_backends_own() {
        let nats = caps(Some("* >"));
        let mqtt = caps(Some("+ #"));
        let none = caps(None);
        for ok in ["a.*", "a.>", "a.*.c", "a.b"] {
            assert!(check_wildcards(ok, &nats, "nats").is_ok(), "{ok}");
        }
        for ok in ["a/+", "a/#", "a/+/c", "a/b", "a.b"] {
            assert!(check_wildcards(ok, &mqtt, "mqtt").is_ok(), "{ok}");
        }
        // Not a whole token or level: a plain name everywhere.
        for ok in ["a*b", "a.b>", "a+b/c", "x#"] {
            for c in [&nats, &mqtt, &none] {
                assert!(check_wildcards(ok, c, "b").is_ok(), "{ok}");
            }
        }
        let e = check_wildcards("sensors.>", &mqtt, "mqtt").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTopic);
        let msg = e.to_string();
        assert!(msg.contains("`>` is a NATS wildcard"), "{msg}");
        assert!(msg.contains("`+` (one level) and `#`"), "{msg}");
        let msg = check_wildcards("a/#", &nats, "nats")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`#` is a MQTT wildcard") && msg.contains("`*` (one token)"),
            "{msg}"
        );
        for bad in ["a.>", "a.*.c", "a/+/c", "#"] {
            let msg = check_wildcards(bad, &none, "memory")
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("the memory backend has no wildcards"),
                "{bad}: {msg}"
            );
        }
    }
}
