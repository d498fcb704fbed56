//! NATS JetStream (`nats.mode = "jetstream"`): ours against raw async-nats
//! JetStream doing the same work on the same `nats-server -js`.
//!
//! - `publish`: `count` messages, then every PubAck awaited. Raw
//!   ([`RawJetStream`]): the JetStream context's `publish`, its PubAck
//!   futures kept in a window of 1,024 messages and 64 MiB and awaited
//!   oldest first, the rest at `flush`, as a careful async-nats user
//!   does. Ours: `publish` (at most `nats.publish_max_pending` = 1,024
//!   and `nats.publish_max_pending_bytes` = 64 MiB unconfirmed), then
//!   `flush`, which waits for every PubAck. Ours also sends a
//!   `Nats-Msg-Id` header with every message (its publishes are sent again
//!   after a reconnect and must be stored once), which the stream
//!   deduplicates on; the raw publisher sends none, or, with
//!   `--jetstream-raw-msg-id`, one of the same length.
//! - `e2e_ack` (through [`crate::manual_ack`], its [`RawAckClient`]
//!   [`JsAck`]): one publisher, one consumer in a group that acknowledges
//!   every message after counting it. Raw: a durable pull consumer with
//!   the settings ours gives its own (explicit ack, `ack_wait`,
//!   `MaxDeliver`, `MaxAckPending` = `max_in_flight`, the same durable
//!   name), read through async-nats' `stream()` in pulls of 256 messages
//!   and 8 MiB, expiring after 5 s with 1 s heartbeats (ours: `fetch_batch`,
//!   `fetch_max_bytes` and its pulls' own expiry and heartbeat), `ack()`
//!   per message. Afterwards the consumer must hold nothing undelivered or
//!   unacknowledged, or the run is an error, not a figure.
//!
//! Both sides use the stream `msight_bench` (`bench` and `bench.>`), made
//! once by our library with its defaults (file storage) before the
//! measurements; every run's messages are purged from it afterwards.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use pubsub_core::{BackendFactory, Config, PubSub};
use pubsub_nats::{NatsBackend, NatsConfig, NatsMode};
use pubsub_testkit::brokers::NatsServer;

use crate::clients::{BoxError, RawKind, Target};
use crate::manual_ack::{RawAckClient, RawAckConsumer};

/// The stream of every `bench.*` topic, as our library names it.
const STREAM: &str = "msight_bench";
/// Unconfirmed raw publishes, as ours' `nats.publish_max_pending` default.
const WINDOW: usize = 1024;
/// Their payload bytes, as ours' `nats.publish_max_pending_bytes` default.
const WINDOW_BYTES: usize = 64 << 20;
/// Most messages one raw `take` hands over without waiting.
const TAKE_MAX: u64 = 1000;
/// How long the acknowledgements of a run may take to reach the server.
const SETTLE: Duration = Duration::from_secs(3);

/// Whether `t` is a JetStream target (only `publish` and the manual-ack
/// scenarios are measured there).
pub fn is_target(t: &Target) -> bool {
    matches!(t.raw, Some(RawKind::JetStream { .. }))
}

/// A `nats-server -js` (frames of 1 MiB and headers fit its
/// `max_payload`) and its target, the stream made by our library.
pub fn start(msg_ids: bool) -> Result<(NatsServer, Target), BoxError> {
    let server = NatsServer::builder()
        .max_payload(8 << 20)
        .jetstream()
        .start();
    let mut config = Config::default();
    let nats = config.section_mut::<NatsConfig>()?;
    nats.servers = vec![server.url()];
    nats.mode = NatsMode::JetStream;
    let t = Target {
        groups: true,
        backend: "nats",
        mode: "jetstream",
        factory: BackendFactory::of::<NatsBackend>(),
        config,
        raw: Some(RawKind::JetStream {
            servers: vec![server.url()],
            msg_ids,
        }),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Our library makes the stream on its first publish to `bench.*`.
        let ps = PubSub::connect_with(&t.factory, &t.config).await?;
        ps.publish("bench.setup", Bytes::from_static(b"setup"))
            .await?;
        ps.flush().await?;
        ps.close().await?;
        purge(&server.url(), "bench.setup").await;
        Ok::<_, BoxError>(())
    })?;
    Ok((server, t))
}

async fn context(url: &str) -> Result<(async_nats::Client, jetstream::Context), BoxError> {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(65_536)
        .connect(url)
        .await?;
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(WINDOW)
        .build(client.clone());
    Ok((client, js))
}

/// Remove what a run left in the stream (runs take turns, so all of it;
/// file storage would fill the disk of a long run).
pub async fn purge(url: &str, _topic: &str) {
    let Ok((client, js)) = context(url).await else {
        return;
    };
    if let Ok(mut stream) = js.get_stream(STREAM).await {
        let _ = stream.purge().await;
        let _ = stream.info().await;
    }
    let _ = client.drain().await;
}

/// Raw async-nats JetStream publishing, PubAcks awaited in a bounded window.
pub struct RawJetStream {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The subject of the first topic published to, built once.
    subject: std::sync::OnceLock<(String, async_nats::Subject)>,
    /// PubAcks not awaited yet, oldest first, with their payload sizes.
    window: Mutex<Window>,
    /// `Some`: a `Nats-Msg-Id` of this prefix and a number goes with every
    /// message.
    msg_ids: Option<String>,
    sent: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Window {
    acks: VecDeque<(PublishAckFuture, usize)>,
    bytes: usize,
}

impl Window {
    /// The oldest PubAck, if one more publish of `len` bytes would not fit.
    fn make_room(&mut self, len: usize) -> Option<PublishAckFuture> {
        let full =
            self.acks.len() >= WINDOW || (!self.acks.is_empty() && self.bytes + len > WINDOW_BYTES);
        if !full {
            return None;
        }
        let (ack, len) = self.acks.pop_front()?;
        self.bytes -= len;
        Some(ack)
    }
}

fn lock(w: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl RawJetStream {
    pub async fn connect(servers: &[String], msg_ids: bool) -> Result<RawJetStream, BoxError> {
        let url = servers.first().ok_or("no server")?;
        let (client, js) = context(url).await?;
        // Unique to this connection, and as long as ours' (`msight-` and
        // an inbox id).
        let inbox = client.new_inbox();
        let prefix = format!("msight-{}-", inbox.rsplit('.').next().unwrap_or(&inbox));
        Ok(RawJetStream {
            client,
            js,
            subject: std::sync::OnceLock::new(),
            window: Mutex::new(Window::default()),
            msg_ids: msg_ids.then_some(prefix),
            sent: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BoxError> {
        let len = payload.len();
        loop {
            let oldest = lock(&self.window).make_room(len);
            match oldest {
                Some(ack) => stored(ack).await?,
                None => break,
            }
        }
        let (name, s) = self
            .subject
            .get_or_init(|| (topic.to_string(), async_nats::Subject::from(topic)));
        let s = if name == topic {
            s.clone()
        } else {
            async_nats::Subject::from(topic)
        };
        let ack = match &self.msg_ids {
            None => self.js.publish(s, payload).await?,
            Some(prefix) => {
                let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    async_nats::HeaderValue::from(format!("{prefix}{n}")),
                );
                self.js.publish_with_headers(s, headers, payload).await?
            }
        };
        let mut w = lock(&self.window);
        w.acks.push_back((ack, len));
        w.bytes += len;
        Ok(())
    }

    /// Wait for every PubAck.
    pub async fn flush(&self) -> Result<(), BoxError> {
        loop {
            let oldest = {
                let mut w = lock(&self.window);
                let next = w.acks.pop_front();
                if let Some((_, len)) = &next {
                    w.bytes -= len;
                }
                next
            };
            let Some((ack, _)) = oldest else {
                break;
            };
            stored(ack).await?;
        }
        self.client.flush().await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.flush().await;
        let _ = self.client.drain().await;
    }
}

/// Wait for a PubAck; one that says the stream had the message already
/// (a duplicate `Nats-Msg-Id`: nothing stored) is an error.
async fn stored(ack: PublishAckFuture) -> Result<(), BoxError> {
    if ack.await?.duplicate {
        return Err("the stream took a publish for a duplicate and did not store it".into());
    }
    Ok(())
}

/// Raw async-nats JetStream consumption for the manual-ack scenarios.
pub struct JsAck {
    pub url: String,
    pub ack_wait: Duration,
    pub max_deliver: i64,
    pub max_ack_pending: i64,
    pub fetch_batch: usize,
    pub fetch_max_bytes: usize,
}

impl JsAck {
    /// The raw consumer of `t` (its settings those ours gives its own).
    pub fn of(t: &Target) -> Option<JsAck> {
        let Some(RawKind::JetStream { servers, .. }) = &t.raw else {
            return None;
        };
        let nats = t.config.section::<NatsConfig>().ok()?;
        Some(JsAck {
            url: servers.first()?.clone(),
            ack_wait: t.config.ack_wait,
            max_deliver: i64::from(t.config.max_deliver.max(1)) + 1,
            max_ack_pending: t.config.max_in_flight.max(1) as i64,
            fetch_batch: nats.fetch_batch,
            fetch_max_bytes: nats.fetch_max_bytes,
        })
    }
}

/// The durable name our library gives group `group`'s consumer of `topic`.
fn durable(group: &str, topic: &str) -> String {
    format!("{group}_{topic}").replace(['.', '*', '>'], "_")
}

impl RawAckClient for JsAck {
    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn RawAckConsumer>, BoxError>> {
        Box::pin(async move {
            let (client, js) = context(&self.url).await?;
            let stream = js.get_stream(STREAM).await?;
            let c: consumer::PullConsumer = stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(durable(group, topic)),
                    filter_subject: topic.to_string(),
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: self.max_deliver,
                    max_ack_pending: self.max_ack_pending,
                    replay_policy: consumer::ReplayPolicy::Instant,
                    ..Default::default()
                })
                .await?;
            let messages = c
                .stream()
                .max_messages_per_batch(self.fetch_batch)
                .max_bytes_per_batch(self.fetch_max_bytes)
                .expires(Duration::from_secs(5))
                .heartbeat(Duration::from_secs(1))
                .messages()
                .await?;
            let consumer: Box<dyn RawAckConsumer> = Box::new(JsAckConsumer { client, messages });
            Ok(consumer)
        })
    }

    fn unacked<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, BoxError>> {
        Box::pin(async move {
            let (client, js) = context(&self.url).await?;
            let mut stream = js.get_stream(STREAM).await?;
            let name = durable(group, topic);
            // Acks are sent without an answer, on another connection:
            // give them a moment to arrive.
            let deadline = Instant::now() + SETTLE;
            let left = loop {
                let info = stream.consumer_info(&name).await?;
                let left = info.num_ack_pending as u64 + info.num_pending;
                if left == 0 || Instant::now() >= deadline {
                    break left;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let _ = stream.delete_consumer(&name).await;
            let _ = stream.info().await;
            let _ = client.drain().await;
            Ok(Some(left))
        })
    }
}

struct JsAckConsumer {
    client: async_nats::Client,
    messages: consumer::pull::Stream,
}

impl RawAckConsumer for JsAckConsumer {
    fn take<'a>(
        &'a mut self,
        wait: Duration,
        handle: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<u64, BoxError>> {
        Box::pin(async move {
            let first = match tokio::time::timeout(wait, self.messages.next()).await {
                Ok(Some(m)) => m?,
                Ok(None) => return Err("the pull consumer's stream ended".into()),
                Err(_) => return Ok(0),
            };
            let mut n = 0;
            let mut next = Some(first);
            while let Some(m) = next.take() {
                handle(&m.payload);
                m.ack().await?;
                n += 1;
                if n < TAKE_MAX {
                    next = match self.messages.next().now_or_never() {
                        Some(Some(m)) => Some(m?),
                        _ => None,
                    };
                }
            }
            Ok(n)
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let JsAckConsumer { client, messages } = *self;
            drop(messages);
            let _ = client.flush().await;
            let _ = client.drain().await;
        })
    }
}
