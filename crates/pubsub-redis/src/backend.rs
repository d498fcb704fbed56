//! The [`PubSubBackend`] of Redis, in its two modes.
//!
//! Tasks of one handle:
//! - the **publisher** drains a bounded queue of publishes into pipelines
//!   (one round trip per batch, never per message), retries a batch when the
//!   connection is lost, and answers `flush`/`close` markers in order;
//! - `pubsub` mode: the **pump** moves the messages that redis-rs reads from
//!   the socket (RESP3 pushes, read continuously) into the inbox. The
//!   connection manager (or the cluster client) reconnects and re-subscribes
//!   by itself;
//! - `streams` mode: one **reader** per subscribed topic on a connection of
//!   its own (`XREAD`/`XREADGROUP ... BLOCK`, its response timeout longer
//!   than the block time), plus one **acker** that sends `XACK` for group
//!   messages once the application has taken them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use pubsub_core::sync::{lock, read, write, AbortOnDrop};
use pubsub_core::{
    Backend, BackendContext, BrokerInfo, Capabilities, Config, Delivery, Error, ErrorKind, Inbox,
    Message, OverflowPolicy, PubSubBackend, Result, TopicCache, TryPublish,
};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::{Cmd, PushInfo, PushKind, RedisFuture, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config::{RedisConfig, RedisMode};
use crate::error::{is_connection_error, kind_of, redis_error};
use crate::options::{Options, PushCallback, COMMAND_TIMEOUT};

/// Most messages queued for publishing before `publish` waits.
const PUBLISH_QUEUE: usize = 16_384;
/// Most commands in one pipeline.
const MAX_BATCH: usize = 1_024;
/// Most payload bytes in one pipeline. Measured with 16 KiB messages
/// (`pubsub-bench --backends redis --sizes 16384 --bytes 268435456`):
/// 8 MiB pipelines published at 0.87x the raw client, 1 MiB at 1.2x, and
/// end to end 0.75x against 0.85x.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Most topics whose shared name is kept for reuse.
const TOPIC_CACHE: usize = 4096;
/// The field of a stream entry that holds the payload.
pub const PAYLOAD_FIELD: &str = "payload";

/// A connection for commands: standalone (reconnecting manager) or cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.subscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channels: impl redis::ToRedisArgs + Send) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(channels).await,
            Conn::Cluster(c) => c.unsubscribe(channels).await,
        }
    }
}

/// Open a connection: first one plain attempt, so that a wrong password,
/// TLS trouble or a dead port fail at once with the right kind (the manager
/// would retry them), then the reconnecting manager / cluster connection.
async fn open(
    opts: &Options,
    push: Option<PushCallback>,
    response_timeout: Duration,
) -> Result<Conn> {
    if opts.redis.cluster {
        let client = opts.cluster_client(push, response_timeout)?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| redis_error(&opts.shown, "cannot connect to the cluster", e))?;
        return Ok(Conn::Cluster(conn));
    }
    let client = opts.client()?;
    let probe_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(opts.connect_timeout))
        .set_response_timeout(Some(opts.connect_timeout));
    let probe = client
        .get_multiplexed_async_connection_with_config(&probe_config)
        .await
        .map_err(|e| first_connect_error(opts, e))?;
    drop(probe);
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.connect_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
        // Keep trying while the server is away: subscriptions come back when it does.
        .set_number_of_retries(usize::MAX / 2);
    if let Some(push) = push {
        config = config
            .set_push_sender(move |info| push(info))
            .set_automatic_resubscription();
    }
    let manager = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| redis_error(&opts.shown, "cannot connect", e))?;
    Ok(Conn::Single(manager))
}

/// The error of the first connect. A plain client at a TLS-only port is
/// hung up on without a word (OpenSSL sends no alert to what does not look
/// like TLS): say so, instead of a bare "connection closed".
fn first_connect_error(opts: &Options, e: redis::RedisError) -> Error {
    let hung_up = !opts.tls
        && opts.redis.unix_socket_path.is_none()
        && !e.is_connection_refusal()
        && !e.is_timeout()
        // A server that answered with an error code speaks Redis.
        && e.code().is_none()
        && matches!(kind_of(&e), ErrorKind::Connect | ErrorKind::Backend);
    if !hung_up {
        return redis_error(&opts.shown, "cannot connect", e);
    }
    Error::new(
        ErrorKind::Connect,
        format!(
            "redis {}: cannot connect: the server closed the connection or did not answer in the Redis protocol; \
             if it serves TLS only, set redis.tls = true (MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS)",
            opts.shown
        ),
    )
    .with_source(e)
}

enum PubCmd {
    Publish { topic: Arc<str>, payload: Bytes },
    Flush(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// A stream entry to acknowledge: (stream key, group, entry id).
type AckItem = (Arc<str>, Arc<str>, String);

enum AckMsg {
    Ack(AckItem),
    /// Answered once every acknowledgement queued before it was sent.
    Flush(oneshot::Sender<()>),
}

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
    readers: Mutex<HashMap<String, AbortOnDrop>>,
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
        if config.group_id.is_some() && opts.redis.mode == RedisMode::PubSub {
            return Err(pubsub_mode_has_no_groups(config.group_id.as_deref()));
        }
        let mut tasks = Vec::new();
        let active: Arc<RwLock<HashSet<String>>> = Arc::default();
        let push = if opts.redis.mode == RedisMode::PubSub {
            let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
            let queued = Arc::new(AtomicUsize::new(0));
            let limit = config.buffer.max_bytes.max(opts.redis.max_payload);
            let cb = push_callback(
                push_tx,
                queued.clone(),
                limit,
                ctx.clone(),
                active.clone(),
                opts.shown.clone(),
            );
            tasks.push(AbortOnDrop::new(tokio::spawn(pump(
                push_rx,
                queued,
                active.clone(),
                ctx.clone(),
                opts.shown.clone(),
            ))));
            Some(cb)
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
            tokio::spawn(acker(ack_rx, conn.clone(), opts.shown.clone()));
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

    async fn subscribe_stream(&self, topic: &str, group: Option<&str>) -> Result<()> {
        let mut conn = self.conn()?;
        let r = &self.opts.redis;
        let start = match group {
            Some(g) => {
                let created: RedisResult<Value> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(topic)
                    .arg(g)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                match created {
                    Ok(_) => {}
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) => {
                        return Err(self.err(
                            &format!("XGROUP CREATE {topic:?} {g:?} (stream group subscribe)"),
                            e,
                        ))
                    }
                }
                ">".to_string()
            }
            None => {
                let last: Vec<StreamId> = self
                    .bounded(
                        &format!("XREVRANGE {topic:?} (stream subscribe)"),
                        redis::cmd("XREVRANGE")
                            .arg(topic)
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(1)
                            .query_async::<redis::streams::StreamRangeReply>(&mut conn),
                    )
                    .await?
                    .ids;
                last.first()
                    .map(|e| e.id.clone())
                    .unwrap_or_else(|| "0-0".to_string())
            }
        };
        let read_timeout = r.stream_block + COMMAND_TIMEOUT;
        // The connection manager reconnects by itself, often without the
        // reader seeing an error: its disconnection notice is the signal.
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let on_push: PushCallback = Arc::new(move |info: PushInfo| {
            if info.kind == PushKind::Disconnection {
                flag.store(true, Ordering::Release);
            }
            Ok(())
        });
        let reader_conn = open(&self.opts, Some(on_push), read_timeout).await?;
        let ack_tx = lock(&self.ack_tx).clone().ok_or_else(Error::closed)?;
        let reader = StreamReader {
            topic: Arc::from(topic),
            group: group.map(Arc::from),
            consumer: self.opts.consumer.clone(),
            conn: reader_conn,
            ctx: self.ctx.clone(),
            opts: self.opts.clone(),
            ack_tx,
            last_id: start,
            dropped,
        };
        let task = AbortOnDrop::new(tokio::spawn(reader.run()));
        lock(&self.readers).insert(topic.to_string(), task);
        Ok(())
    }
}

/// `INFO server`: version and mode (standalone / cluster). Best effort: an
/// ACL user may not be allowed to run it.
async fn broker_info(conn: &mut Conn, opts: &Options) -> BrokerInfo {
    let text = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("INFO").arg("server").query_async::<Value>(conn),
    )
    .await
    .ok()
    .and_then(|r| r.ok())
    .and_then(|v| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::VerbatimString { text, .. } => Some(text),
        Value::SimpleString(s) => Some(s),
        // A cluster answers per node: take the first.
        Value::Map(m) => m.into_iter().find_map(|(_, v)| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Value::VerbatimString { text, .. } => Some(text),
            _ => None,
        }),
        _ => None,
    })
    .unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let mut info = BrokerInfo::default();
    info.server = Some(match field("redis_mode") {
        Some(mode) => format!("redis-server ({mode})"),
        None => "redis-server".to_string(),
    });
    info.version = field("redis_version");
    info.max_payload = Some(opts.redis.max_payload);
    info.tls = opts.tls;
    info.address = Some(opts.shown.clone());
    info
}

fn pubsub_mode_has_no_groups(group: Option<&str>) -> Error {
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
        c
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
                drop(lock(&self.readers).remove(topic));
                Ok(())
            }
        }
    }

    fn try_publish(&self, topic: &str, payload: Bytes) -> TryPublish {
        let topic = match self.topic(topic) {
            Ok(t) => t,
            Err(e) => return TryPublish::Done(Err(e)),
        };
        match self.publish_tx.try_send(PubCmd::Publish { topic, payload }) {
            Ok(()) => TryPublish::Done(Ok(())),
            Err(mpsc::error::TrySendError::Full(PubCmd::Publish { payload, .. })) => {
                TryPublish::WouldWait(payload)
            }
            Err(_) => TryPublish::Done(Err(Error::closed())),
        }
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        // Called when the queue is full (Redis slower than the application,
        // or away); core's `publish_timeout` bounds the wait.
        let topic = self.topic(topic)?;
        self.publish_tx
            .send(PubCmd::Publish { topic, payload })
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
        lock(&self.readers).clear();
        let ack_tx = lock(&self.ack_tx).take();
        if let Some(ack_tx) = ack_tx {
            // Send the acknowledgements of messages already taken.
            let (tx, rx) = oneshot::channel();
            if ack_tx.send(AckMsg::Flush(tx)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
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

// ---------------------------------------------------------------------------
// pubsub mode: from the socket to the inbox
// ---------------------------------------------------------------------------

/// The push sender given to redis-rs. It runs on the task that reads the
/// socket and must not block:
/// - with `drop_oldest` / `drop_newest` it puts each message straight into
///   the inbox (that never waits under those policies), so nothing queues
///   between the socket and the application's buffer;
/// - with `block` it queues for the pump, which waits for room in the inbox;
///   messages beyond `limit` queued bytes are dropped and counted, so memory
///   stays bounded (Redis cannot be paused without cutting us off).
fn push_callback(
    tx: mpsc::UnboundedSender<PushInfo>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    ctx: BackendContext,
    active: Arc<RwLock<HashSet<String>>>,
    shown: String,
) -> PushCallback {
    let direct = ctx.inbox.policy() != OverflowPolicy::Block;
    let warned = Arc::new(AtomicBool::new(false));
    Arc::new(move |info: PushInfo| {
        if direct {
            match info.kind {
                PushKind::Message => {
                    if let Some(msg) = to_message(info, &active) {
                        // Never pending under the drop policies.
                        let _ = ctx.inbox.deliver(msg).now_or_never();
                    }
                }
                PushKind::Disconnection => lost_connection(&ctx, &shown),
                _ => {}
            }
            return Ok(());
        }
        if info.kind == PushKind::Message {
            let size = message_size(&info);
            let now = queued.load(Ordering::Relaxed);
            if now > 0 && now + size > limit {
                ctx.counters.add_received(1);
                ctx.counters.add_dropped(1);
                if !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        queued_bytes = now,
                        "redis pubsub: messages arrive faster than the receive buffer takes them; dropping (counted in stats().dropped)"
                    );
                }
                return Ok(());
            }
            warned.store(false, Ordering::Relaxed);
            queued.fetch_add(size, Ordering::Relaxed);
        }
        tx.send(info).map_err(|_| ())
    })
}

fn lost_connection(ctx: &BackendContext, shown: &str) {
    ctx.counters.add_reconnect();
    tracing::warn!(address = %shown, "redis connection lost; reconnecting and re-subscribing");
}

/// The message of a `message` push, if its channel is still subscribed
/// (one may arrive just after `unsubscribe`).
fn to_message(info: PushInfo, active: &RwLock<HashSet<String>>) -> Option<Message> {
    let mut data = info.data.into_iter();
    let (channel, payload) = (data.next()?, data.next()?);
    let channel = match channel {
        Value::BulkString(b) => String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Value::SimpleString(s) => s,
        _ => return None,
    };
    let payload = match payload {
        Value::BulkString(b) => Bytes::from(b),
        Value::SimpleString(s) => Bytes::from(s.into_bytes()),
        _ => return None,
    };
    if !read(active).contains(&channel) {
        return None;
    }
    Some(Message::new(channel, payload))
}

/// Bytes a queued push message holds: payload, channel name and the
/// bookkeeping around them (so that tiny messages are bounded too).
fn message_size(info: &PushInfo) -> usize {
    const OVERHEAD: usize = 128;
    let len = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => b.len(),
        _ => 0,
    };
    OVERHEAD + len(info.data.first()) + len(info.data.get(1))
}

/// `block` policy only: from the queue into the inbox, waiting for room.
async fn pump(
    mut rx: mpsc::UnboundedReceiver<PushInfo>,
    queued: Arc<AtomicUsize>,
    active: Arc<RwLock<HashSet<String>>>,
    ctx: BackendContext,
    shown: String,
) {
    // What is queued already goes into the buffer in one step (one lock and
    // one wake-up per batch). The batch's bytes count as queued until it is
    // in the buffer, so the bound of the push callback still holds.
    let mut batch = Vec::with_capacity(Inbox::BATCH);
    while let Some(first) = rx.recv().await {
        let mut held = 0;
        let mut next = Some(first);
        while let Some(info) = next {
            match info.kind {
                PushKind::Message => {
                    held += message_size(&info);
                    batch.extend(to_message(info, &active));
                }
                PushKind::Disconnection => lost_connection(&ctx, &shown),
                _ => {}
            }
            next = if batch.len() < Inbox::BATCH && held < Inbox::BATCH_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        ctx.inbox.deliver_batch(&mut batch).await;
        queued.fetch_sub(held, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// publishing
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Failures {
    count: u64,
    first: Option<Error>,
}

impl Failures {
    fn add(&mut self, n: u64, e: impl FnOnce() -> Error) {
        if n == 0 {
            return;
        }
        self.count += n;
        if self.first.is_none() {
            self.first = Some(e());
        }
    }

    fn take(&mut self) -> Result<()> {
        let count = std::mem::take(&mut self.count);
        match self.first.take() {
            None => Ok(()),
            Some(first) => Err(Error::new(
                first.kind(),
                format!(
                    "{count} message(s) published since the last flush failed; the first: {}",
                    first.message()
                ),
            )
            .with_source(first)),
        }
    }
}

async fn publisher(mut rx: mpsc::Receiver<PubCmd>, mut conn: Conn, opts: Arc<Options>) {
    let mut failures = Failures::default();
    let mut batch: Vec<(Arc<str>, Bytes)> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut control = None;
        let mut bytes = 0;
        match first {
            PubCmd::Publish { topic, payload } => {
                bytes += payload.len();
                batch.push((topic, payload));
            }
            other => control = Some(other),
        }
        while control.is_none() && batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(PubCmd::Publish { topic, payload }) => {
                    bytes += payload.len();
                    batch.push((topic, payload));
                }
                Ok(other) => control = Some(other),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            send_batch(&mut conn, &opts, &batch, &mut failures, &rx).await;
            batch.clear();
        }
        match control {
            Some(PubCmd::Flush(tx)) => {
                let _ = tx.send(failures.take());
            }
            Some(PubCmd::Close(tx)) => {
                let _ = tx.send(failures.take());
                return;
            }
            _ => {}
        }
    }
}

fn publish_cmd(opts: &Options, topic: &str, payload: &Bytes) -> Cmd {
    match opts.redis.mode {
        RedisMode::PubSub => {
            let mut c = redis::cmd("PUBLISH");
            c.arg(topic).arg(payload.as_ref());
            c
        }
        RedisMode::Streams => {
            let mut c = redis::cmd("XADD");
            c.arg(topic);
            if opts.redis.stream_maxlen > 0 {
                c.arg("MAXLEN").arg("~").arg(opts.redis.stream_maxlen);
            }
            c.arg("*").arg(PAYLOAD_FIELD).arg(payload.as_ref());
            c
        }
    }
}

/// Send one batch as pipelines (in a cluster, one per run of the same topic,
/// since a pipeline goes to one node). Retried while the connection is down.
async fn send_batch(
    conn: &mut Conn,
    opts: &Options,
    batch: &[(Arc<str>, Bytes)],
    failures: &mut Failures,
    rx: &mpsc::Receiver<PubCmd>,
) {
    let runs: Vec<&[(Arc<str>, Bytes)]> = if matches!(conn, Conn::Cluster(_)) {
        batch.chunk_by(|a, b| a.0 == b.0).collect()
    } else {
        vec![batch]
    };
    for run in runs {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (topic, payload) in run {
            pipe.add_command(publish_cmd(opts, topic, payload));
        }
        let mut delay = Duration::from_millis(50);
        let mut warned = false;
        let mut abandoned_since: Option<Instant> = None;
        let limit = opts.connect_timeout + COMMAND_TIMEOUT;
        loop {
            let sent =
                tokio::time::timeout(limit, pipe.query_async::<Vec<RedisResult<Value>>>(conn))
                    .await
                    .unwrap_or_else(|_| {
                        Err(redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer from Redis",
                        )))
                    });
            match sent {
                Ok(results) => {
                    let mut failed = 0;
                    let mut first = None;
                    for (r, (topic, _)) in results.into_iter().zip(run.iter()) {
                        if let Err(e) = r {
                            failed += 1;
                            if first.is_none() {
                                first = Some(redis_error(
                                    &opts.shown,
                                    &format!("publish to {topic:?}"),
                                    e,
                                ));
                            }
                        }
                    }
                    if let Some(first) = first {
                        failures.add(failed, || first);
                    }
                    if warned {
                        tracing::info!(address = %opts.shown, "redis is back; queued messages sent");
                    }
                    break;
                }
                Err(e) if is_connection_error(&e) => {
                    // The handle was dropped: stop retrying after close_timeout.
                    if rx.is_closed()
                        && abandoned_since.get_or_insert_with(Instant::now).elapsed()
                            > opts.close_timeout
                    {
                        tracing::warn!(address = %opts.shown, messages = run.len(), "redis publish: handle dropped while Redis is unreachable; messages discarded");
                        failures.add(run.len() as u64, || redis_error(&opts.shown, "publish", e));
                        break;
                    }
                    if !warned {
                        tracing::warn!(address = %opts.shown, error = %e, "redis publish: connection lost; retrying the batch until it is back");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    let topic = run.first().map(|r| r.0.to_string()).unwrap_or_default();
                    failures.add(run.len() as u64, || {
                        redis_error(&opts.shown, &format!("publish to {topic:?}"), e)
                    });
                    break;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// streams mode: readers and acknowledgements
// ---------------------------------------------------------------------------

async fn acker(mut rx: mpsc::UnboundedReceiver<AckMsg>, mut conn: Conn, shown: String) {
    while let Some(first) = rx.recv().await {
        let mut items = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                AckMsg::Ack(i) => items.push(i),
                AckMsg::Flush(tx) => flushes.push(tx),
            }
            if items.len() < 1000 {
                next = rx.try_recv().ok();
            }
        }
        let mut by_stream: HashMap<(Arc<str>, Arc<str>), Vec<String>> = HashMap::new();
        for (key, group, id) in items {
            by_stream.entry((key, group)).or_default().push(id);
        }
        for ((key, group), ids) in by_stream {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(&*key).arg(&*group).arg(&ids);
            let xack = cmd.query_async::<Value>(&mut conn);
            let r = match tokio::time::timeout(COMMAND_TIMEOUT, xack).await {
                Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                Err(_) => Err("no answer in time".to_string()),
            };
            if let Err(e) = r {
                // Unacknowledged entries stay pending and are claimed again later.
                tracing::warn!(address = %shown, stream = %key, group = %group, error = %e, "XACK failed; the entries will be delivered again");
            }
        }
        for tx in flushes {
            let _ = tx.send(());
        }
    }
}

struct StreamReader {
    topic: Arc<str>,
    group: Option<Arc<str>>,
    consumer: String,
    conn: Conn,
    ctx: BackendContext,
    opts: Arc<Options>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    /// Plain reader: the last id read. Group reader: `>`.
    last_id: String,
    /// Set when the connection was lost (it may come back unnoticed).
    dropped: Arc<AtomicBool>,
}

impl StreamReader {
    async fn run(mut self) {
        let mut disconnected = false;
        let mut delay = Duration::from_millis(50);
        let claim_every = (self.opts.redis.stream_claim_idle / 2).max(Duration::from_millis(50));
        let mut next_claim = Instant::now() + claim_every;
        if self.group.is_some() && self.opts.redis.stream_consumer.is_some() {
            // A fixed consumer name: first take back what this consumer had
            // read but not acknowledged in a previous run.
            self.read_own_pending().await;
        }
        loop {
            let result = if self.group.is_some() && Instant::now() >= next_claim {
                next_claim = Instant::now() + claim_every;
                self.claim().await
            } else {
                self.read().await
            };
            match result {
                Ok(()) => {
                    let dropped = self.dropped.swap(false, Ordering::AcqRel);
                    if disconnected || dropped {
                        disconnected = false;
                        self.ctx.counters.add_reconnect();
                        tracing::info!(address = %self.opts.shown, stream = %self.topic, "redis stream reader reconnected");
                        // A group read whose reply the lost connection
                        // swallowed left its entries pending at this
                        // consumer, where `claim` never looks: take back
                        // everything pending here (at least once: entries
                        // already buffered may come twice).
                        self.read_own_pending().await;
                    }
                    delay = Duration::from_millis(50);
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The stream or group is gone (server restarted without
                    // persistence, or deleted): everything in a new stream is new.
                    self.create_group("0").await;
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        if !disconnected {
                            tracing::warn!(address = %self.opts.shown, stream = %self.topic, error = %e, "redis stream reader lost its connection; retrying");
                        }
                        disconnected = true;
                    } else {
                        tracing::warn!(address = %self.opts.shown, stream = %self.topic, error = %e, "redis stream read failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn create_group(&mut self, id: &str) {
        let Some(group) = &self.group else { return };
        let r: RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&*self.topic)
            .arg(&**group)
            .arg(id)
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        if let Err(e) = r {
            if e.code() != Some("BUSYGROUP") {
                tracing::warn!(address = %self.opts.shown, stream = %self.topic, error = %e, "XGROUP CREATE failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn block_ms(&self) -> u64 {
        self.opts.redis.stream_block.as_millis().max(1) as u64
    }

    async fn read(&mut self) -> RedisResult<()> {
        let count = self.opts.redis.stream_read_count;
        let mut cmd = match &self.group {
            Some(g) => {
                let mut c = redis::cmd("XREADGROUP");
                c.arg("GROUP").arg(&**g).arg(&self.consumer);
                c
            }
            None => redis::cmd("XREAD"),
        };
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.block_ms())
            .arg("STREAMS")
            .arg(&*self.topic)
            .arg(&self.last_id);
        let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn).await?;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                if self.group.is_none() {
                    self.last_id = entry.id.clone();
                }
                self.deliver(entry).await;
            }
        }
        Ok(())
    }

    async fn read_own_pending(&mut self) {
        let Some(g) = self.group.clone() else { return };
        let mut from = "0".to_string();
        for _ in 0..1000 {
            let r: RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*g)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(self.opts.redis.stream_read_count)
                .arg("STREAMS")
                .arg(&*self.topic)
                .arg(&from)
                .query_async(&mut self.conn)
                .await;
            let entries: Vec<StreamId> = match r {
                Ok(reply) => reply
                    .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                    .unwrap_or_default(),
                Err(_) => return,
            };
            let Some(last) = entries.last() else { return };
            from = last.id.clone();
            for e in entries {
                self.deliver(e).await;
            }
        }
    }

    /// Take over entries pending longer than `stream_claim_idle` at *other*
    /// members of the group (typically one that went away): `XPENDING ...
    /// IDLE`, then `XCLAIM`. Entries pending at this consumer are left
    /// alone (they are in this handle's buffer, or were dropped by its
    /// overflow policy), so a slow application does not get its own
    /// messages twice.
    async fn claim(&mut self) -> RedisResult<()> {
        let Some(g) = self.group.clone() else {
            return Ok(());
        };
        let idle = self.opts.redis.stream_claim_idle.as_millis() as u64;
        let mut from = "-".to_string();
        for _ in 0..100 {
            let page: StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&*self.topic)
                .arg(&*g)
                .arg("IDLE")
                .arg(idle)
                .arg(&from)
                .arg("+")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            let Some(last) = page.ids.last() else { break };
            from = format!("({}", last.id);
            let full = page.ids.len() == 1000;
            let theirs: Vec<&str> = page
                .ids
                .iter()
                .filter(|p| p.consumer != self.consumer)
                .map(|p| p.id.as_str())
                .collect();
            if !theirs.is_empty() {
                let claimed: StreamClaimReply = redis::cmd("XCLAIM")
                    .arg(&*self.topic)
                    .arg(&*g)
                    .arg(&self.consumer)
                    .arg(idle)
                    .arg(&theirs)
                    .query_async(&mut self.conn)
                    .await?;
                if !claimed.ids.is_empty() {
                    tracing::info!(stream = %self.topic, group = %g, claimed = claimed.ids.len(), "claimed entries left pending by another group member");
                }
                for e in claimed.ids {
                    self.deliver(e).await;
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    async fn deliver(&self, entry: StreamId) {
        let StreamId { id, mut map, .. } = entry;
        let value = match map.remove(PAYLOAD_FIELD) {
            Some(v) => Some(v),
            None if map.len() == 1 => map.into_values().next(),
            None => None,
        };
        let payload = match value {
            Some(Value::BulkString(b)) => Bytes::from(b),
            Some(Value::SimpleString(s)) => Bytes::from(s.into_bytes()),
            _ => {
                tracing::warn!(stream = %self.topic, id = %id, "stream entry without a {PAYLOAD_FIELD:?} field skipped");
                if let Some(g) = &self.group {
                    let _ = self
                        .ack_tx
                        .send(AckMsg::Ack((self.topic.clone(), g.clone(), id)));
                }
                return;
            }
        };
        let msg = Message::new(&*self.topic, payload);
        match &self.group {
            None => self.ctx.inbox.deliver(msg).await,
            Some(g) => {
                let ack_tx = self.ack_tx.clone();
                let item = (self.topic.clone(), g.clone(), id);
                self.ctx
                    .inbox
                    .deliver_with_ack(
                        msg,
                        Box::new(move || {
                            let _ = ack_tx.send(AckMsg::Ack(item));
                        }),
                    )
                    .await;
            }
        }
    }
}
