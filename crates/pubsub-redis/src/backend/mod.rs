//! The [`PubSubBackend`] of Redis, in its two modes.
//!
//! Tasks of one handle:
//! - the **publisher** ([`publisher`]) drains a bounded queue of publishes
//!   into pipelines (one round trip per batch, never per message), retries
//!   a batch when the connection is lost, and answers `flush`/`close`
//!   markers in order;
//! - `pubsub` mode ([`pubsub`]): the **pump** moves the messages that
//!   redis-rs reads from the socket (RESP3 pushes, read continuously) into
//!   the inbox. The connection manager (or the cluster client) reconnects
//!   and re-subscribes by itself;
//! - `streams` mode ([`streams`]): one **reader** per subscribed topic on a
//!   connection of its own (`XREAD`/`XREADGROUP ... BLOCK`, its response
//!   timeout longer than the block time), plus one **acker** that sends
//!   `XACK` for group messages once the application has taken them.
//!
//! [`connection`] opens the connections they use.

pub(crate) mod connection;
mod entries;
mod publisher;
mod pubsub;
mod settle;
mod streams;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pubsub_core::sync::{lock, read, write, AbortOnDrop};
use pubsub_core::{
    Backend, BackendContext, BrokerInfo, Capabilities, Config, Delivery, Error, ErrorKind, Headers,
    PubSubBackend, Result, Support, TopicCache, TryPublish,
};
use redis::RedisResult;
use tokio::sync::{mpsc, oneshot};

use crate::config::{RedisConfig, RedisMode};
use crate::error::redis_error;
use crate::options::{Options, COMMAND_TIMEOUT};
use connection::{broker_info, open, Conn};
use publisher::{publisher, Outgoing, PubCmd, PUBLISH_QUEUE};
use settle::{acker, AckMsg, Manual};
use streams::Subscription;

/// Most topics whose shared name is kept for reuse.
const TOPIC_CACHE: usize = 4096;
/// The field of a stream entry that holds the payload.
pub const PAYLOAD_FIELD: &str = "payload";

/// The Redis backend: see the crate documentation for the two modes.
pub struct RedisBackend {
    opts: Arc<Options>,
    ctx: BackendContext,
    conn: Mutex<Option<Conn>>,
    publish_tx: mpsc::Sender<PubCmd>,
    /// Topic names shared with the publisher task: no allocation per publish.
    topics: TopicCache<Arc<str>>,
    /// pubsub mode: channels subscribed now (late messages of others are discarded).
    active: Arc<RwLock<HashSet<String>>>,
    /// streams mode: reader task of each subscribed topic.
    readers: Mutex<HashMap<String, Subscription>>,
    /// Set in manual ack mode (streams mode only).
    manual: Option<Arc<Manual>>,
    ack_tx: Mutex<Option<mpsc::UnboundedSender<AckMsg>>>,
    tasks: Mutex<Vec<AbortOnDrop>>,
    closed: AtomicBool,
    info: BrokerInfo,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.opts.shown)
            .field("mode", &self.opts.redis.mode)
            .field("cluster", &self.opts.redis.cluster)
            .field("consumer", &self.opts.consumer)
            .finish()
    }
}

#[async_trait]
impl Backend for RedisBackend {
    const NAME: &'static str = "redis";
    const CRATE: &'static str = env!("CARGO_PKG_NAME");
    type Config = RedisConfig;

    /// Connect as the `[redis]` section says.
    async fn connect(
        config: &Config,
        redis: RedisConfig,
        ctx: BackendContext,
    ) -> Result<RedisBackend> {
        let opts = Arc::new(Options::new(config, redis)?);
        // A group_id in pubsub mode is refused by `subscribe`, not here: a
        // publisher never uses it (Python nodes set one per node).
        let manual = match (streams::is_manual(config), opts.redis.mode) {
            (false, _) => None,
            (true, RedisMode::Streams) => Some(Arc::new(Manual::new(config, ctx.counters.clone()))),
            (true, RedisMode::PubSub) => return Err(pubsub_mode_keeps_nothing()),
        };
        let mut tasks = Vec::new();
        let active: Arc<RwLock<HashSet<String>>> = Arc::default();
        let push = if opts.redis.mode == RedisMode::PubSub {
            let (push, pump) = pubsub::receiver(config, &opts, &ctx, &active);
            tasks.push(pump);
            Some(push)
        } else {
            None
        };
        let mut conn = open(&opts, push, COMMAND_TIMEOUT).await?;
        let info = broker_info(&mut conn, &opts).await;
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        // Not aborted on drop: a handle dropped without close still sends
        // what it accepted (giving up after close_timeout if Redis is away).
        tokio::spawn(publisher(publish_rx, conn.clone(), opts.clone()));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        if opts.redis.mode == RedisMode::Streams {
            // Not aborted on drop: it ends when the last acknowledgement
            // callback is gone, so that messages taken just before a drop
            // are still acknowledged.
            tokio::spawn(acker(ack_rx, conn.clone(), opts.clone(), manual.clone()));
        }
        tracing::debug!(address = %opts.shown, mode = ?opts.redis.mode, "connected to redis");
        Ok(RedisBackend {
            opts,
            ctx,
            conn: Mutex::new(Some(conn)),
            publish_tx,
            topics: TopicCache::new(TOPIC_CACHE),
            active,
            readers: Mutex::new(HashMap::new()),
            manual,
            ack_tx: Mutex::new(Some(ack_tx)),
            tasks: Mutex::new(tasks),
            closed: AtomicBool::new(false),
            info,
        })
    }
}

impl RedisBackend {
    /// The shared name of `topic` for the publisher task.
    fn topic(&self, topic: &str) -> Result<Arc<str>> {
        self.topics.get_or_make(topic, |t| Ok(Arc::from(t)))
    }

    /// The consumer name this handle uses in stream groups.
    pub fn consumer_name(&self) -> &str {
        &self.opts.consumer
    }

    /// The mode this handle was connected in.
    pub fn mode(&self) -> RedisMode {
        self.opts.redis.mode
    }

    fn conn(&self) -> Result<Conn> {
        lock(&self.conn).clone().ok_or_else(Error::closed)
    }

    fn err(&self, what: &str, e: redis::RedisError) -> Error {
        redis_error(&self.opts.shown, what, e)
    }

    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        let limit = self.opts.connect_timeout + COMMAND_TIMEOUT;
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(|e| self.err(what, e)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "redis {}: {what} got no answer within {} s",
                    self.opts.shown,
                    limit.as_secs()
                ),
            )),
        }
    }
}

fn pubsub_mode_keeps_nothing() -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        "ack = \"manual\": Redis PUBLISH/SUBSCRIBE (redis.mode = \"pubsub\") keeps no message to settle; \
         set redis.mode = \"streams\" (MSIGHT_REDIS_MESSAGE_BROKER_MODE=streams), or use ack = \"auto\"",
    )
}

pub(crate) fn pubsub_mode_has_no_groups(group: Option<&str>) -> Error {
    let g = group.map(|g| format!(" {g:?}")).unwrap_or_default();
    Error::new(
        ErrorKind::InvalidConfig,
        format!(
            "group_id{g}: Redis PUBLISH/SUBSCRIBE (redis.mode = \"pubsub\") has no groups and would give every message to every member; \
             set redis.mode = \"streams\" (MSIGHT_REDIS_MESSAGE_BROKER_MODE=streams) to share messages in a consumer group, or remove group_id"
        ),
    )
}

#[async_trait]
impl PubSubBackend for RedisBackend {
    fn broker_info(&self) -> BrokerInfo {
        self.info.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let streams = self.opts.redis.mode == RedisMode::Streams;
        let mut c = Capabilities::default();
        c.groups = streams;
        c.persistence = streams;
        c.ordering = true;
        c.max_payload = Some(self.opts.redis.max_payload);
        c.delivery = if streams {
            Delivery::AtLeastOnce
        } else {
            Delivery::AtMostOnce
        };
        if streams {
            // Fields beside the payload; the entry id.
            c.headers = true;
            c.message_ids = true;
            let s = &mut c.settle;
            s.ack = Support::Native;
            s.nak = Support::Emulated;
            s.in_progress = Support::Emulated;
            s.term = Support::Emulated;
            s.redeliver_after_ack_wait = Support::Emulated;
            s.dead_letter = Support::Emulated;
        }
        c
    }

    fn check_subscribe_group(&self, group: &str) -> Result<()> {
        match self.opts.redis.mode {
            RedisMode::PubSub => Err(pubsub_mode_has_no_groups(Some(group))),
            RedisMode::Streams => Ok(()),
        }
    }

    /// Streams mode: `DEL` the stream, which takes its consumer groups
    /// with it. Pubsub mode keeps nothing.
    async fn delete_topic(&self, topic: &str) -> Result<()> {
        if self.opts.redis.mode == RedisMode::PubSub {
            return Ok(());
        }
        let mut conn = self.conn()?;
        self.bounded(
            &format!("DEL {topic:?} (delete_topic)"),
            redis::cmd("DEL")
                .arg(topic)
                .query_async::<redis::Value>(&mut conn),
        )
        .await
        .map(|_| ())
    }

    async fn subscribe(&self, topic: &str, group: Option<&str>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        match self.opts.redis.mode {
            RedisMode::PubSub => {
                if group.is_some() {
                    return Err(pubsub_mode_has_no_groups(group));
                }
                let mut conn = self.conn()?;
                write(&self.active).insert(topic.to_string());
                let r = self
                    .bounded(&format!("SUBSCRIBE {topic:?}"), conn.subscribe(topic))
                    .await;
                if r.is_err() {
                    write(&self.active).remove(topic);
                }
                r
            }
            RedisMode::Streams => {
                let limit = self.opts.connect_timeout + COMMAND_TIMEOUT;
                match tokio::time::timeout(limit, self.subscribe_stream(topic, group)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "redis {}: subscribing to stream {topic:?} got no answer within {} s",
                            self.opts.shown,
                            limit.as_secs()
                        ),
                    )),
                }
            }
        }
    }

    async fn unsubscribe(&self, topic: &str) -> Result<()> {
        match self.opts.redis.mode {
            RedisMode::PubSub => {
                let mut conn = self.conn()?;
                self.bounded(&format!("UNSUBSCRIBE {topic:?}"), conn.unsubscribe(topic))
                    .await?;
                write(&self.active).remove(topic);
                Ok(())
            }
            RedisMode::Streams => {
                // Dropping the task aborts the reader and closes its connection.
                let Some(sub) = lock(&self.readers).remove(topic) else {
                    return Ok(());
                };
                let streams::Subscription {
                    reader,
                    private_group,
                    shared_group,
                } = sub;
                drop(reader);
                if let Some(g) = private_group {
                    self.destroy_private_group(topic, &g).await;
                }
                // Manual ack in a group: what is pending here (held, buffered,
                // or in a read the abort cut off) goes to the other members
                // at once, as at close.
                if let Some(g) = shared_group {
                    self.release_pending(topic, &g).await;
                }
                Ok(())
            }
        }
    }

    fn try_publish(&self, topic: &str, payload: Bytes) -> TryPublish {
        let topic = match self.topic(topic) {
            Ok(t) => t,
            Err(e) => return TryPublish::Done(Err(e)),
        };
        let out = Outgoing {
            topic,
            payload,
            headers: Headers::new(),
        };
        match self.publish_tx.try_send(PubCmd::Publish(out)) {
            Ok(()) => TryPublish::Done(Ok(())),
            Err(mpsc::error::TrySendError::Full(PubCmd::Publish(out))) => {
                TryPublish::WouldWait(out.payload)
            }
            Err(_) => TryPublish::Done(Err(Error::closed())),
        }
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        // Called when the queue is full (Redis slower than the application,
        // or away); core's `publish_timeout` bounds the wait.
        self.publish_with_headers(topic, Headers::new(), payload)
            .await
    }

    /// Streams mode only (core refuses headers in pubsub mode, whose bytes
    /// stay those of the Python original).
    async fn publish_with_headers(
        &self,
        topic: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<()> {
        let out = Outgoing {
            topic: self.topic(topic)?,
            payload,
            headers,
        };
        self.publish_tx
            .send(PubCmd::Publish(out))
            .await
            .map_err(|_| Error::closed())
    }

    async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.publish_tx
            .send(PubCmd::Flush(tx))
            .await
            .map_err(|_| Error::closed())?;
        rx.await.map_err(|_| Error::closed())?
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + self.opts.close_timeout;
        let (tx, rx) = oneshot::channel();
        // Everything accepted before this marker is sent first.
        let limit = self
            .opts
            .close_timeout
            .saturating_sub(Duration::from_millis(500));
        let drained = async {
            match self.publish_tx.send(PubCmd::Close(tx)).await {
                Ok(()) => rx.await.unwrap_or(Ok(())),
                Err(_) => Ok(()),
            }
        };
        let sent = match tokio::time::timeout(limit, drained).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "redis {}: close: queued messages could not all be sent within close_timeout",
                    self.opts.shown
                ),
            )),
        };
        let subs: Vec<(String, Subscription)> = lock(&self.readers).drain().collect();
        let ack_tx = lock(&self.ack_tx).take();
        if let Some(ack_tx) = ack_tx {
            // Send the settlements asked for before the close (a sub
            // releasing a hundred held messages asks for a hundred), within
            // what is left of close_timeout, and at least half a second.
            let (tx, rx) = oneshot::channel();
            if ack_tx.send(AckMsg::Flush(tx)).is_ok() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let _ = tokio::time::timeout(left.max(Duration::from_millis(500)), rx).await;
            }
        }
        for (topic, sub) in subs {
            drop(sub.reader);
            if let Some(g) = sub.private_group {
                self.destroy_private_group(&topic, &g).await;
            }
            if let Some(g) = sub.shared_group {
                self.release_pending(&topic, &g).await;
            }
        }
        if self.opts.redis.mode == RedisMode::PubSub {
            let topics: Vec<String> = read(&self.active).iter().cloned().collect();
            write(&self.active).clear();
            if let (Ok(mut conn), false) = (self.conn(), topics.is_empty()) {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), conn.unsubscribe(&topics)).await;
            }
        }
        lock(&self.tasks).clear();
        lock(&self.conn).take();
        sent
    }
}
