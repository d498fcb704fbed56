//! The manual-ack scenarios: one publisher, one consumer in a group that
//! acknowledges every message after counting it (our APIs with
//! `ack = "manual"`, `Message::ack`), against the raw client library doing
//! the same work on the same broker.
//!
//! - `e2e_ack`: every target whose backend and mode keep messages: Redis
//!   streams (raw: `XREADGROUP`, each entry counted, then one `XACK` for the
//!   entries of the read), MQTT at QoS 1 with a persistent session (raw:
//!   rumqttc with `set_manual_acks(true)`, `client.ack(&publish)` after
//!   each message), NATS JetStream (raw: an async-nats pull consumer,
//!   `ack()` after each message; see [`crate::jetstream`]), and `memory`
//!   (no raw client).
//! - `e2e_ack_each`: Redis streams, the raw consumer sending an `XACK` per
//!   entry and waiting for its answer before the next: what a redis-rs user
//!   who acknowledges message by message writes. Ours is the same code as
//!   in `e2e_ack` (the application acks each message; the backend batches
//!   the `XACK`s).
//!
//! Rate: messages counted and acknowledged per second, from the first
//! publish to the last `ack` call returning (raw Redis: `XACK` answered;
//! raw MQTT and ours: the acknowledgement queued for the connection). After
//! every run the broker is asked what it still holds unacknowledged
//! (Redis: `XPENDING`; JetStream: the consumer's pending and unacknowledged
//! messages) and ours is asked how many it acknowledged: a run in which
//! fewer messages were counted than published, or whose acknowledgements
//! did not all take effect, is an error, not a figure.
//!
//! Adding a backend (JetStream, say): implement [`RawAckClient`] for its
//! raw client library in a module of its own, return it from
//! [`raw_client`] for its target, and add what its manual ack mode needs
//! to [`manual_config`]. The publisher is the target's raw client
//! ([`Conn`]) or our API with the target's own settings, as in the other
//! end-to-end scenarios.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use pubsub_core::{blocking, AckMode, Config, PubSub};
use pubsub_mqtt::MqttConfig;

use crate::clients::{connect_blocking, BoxError, Conn, RawKind, Target, Variant};
use crate::scenarios::{payload, unique, Arrivals, Sample, LOOK};

/// Acknowledged one by one, the raw consumer batching per read.
pub const ACK: &str = "e2e_ack";
/// As [`ACK`], the raw consumer acknowledging each message and waiting for
/// the answer (Redis streams only).
pub const ACK_EACH: &str = "e2e_ack_each";

/// How long a persistent MQTT session outlives its connection, both sides.
const SESSION_EXPIRY: Duration = Duration::from_secs(60);

/// The manual-ack scenarios `t` has.
pub fn scenarios(t: &Target) -> Vec<&'static str> {
    if t.backend == "memory" {
        return vec![ACK];
    }
    [ACK, ACK_EACH]
        .into_iter()
        .filter(|s| raw_client(t, s).is_some())
        .collect()
}

/// A raw client library that consumes through a group and acknowledges
/// what it consumed.
pub trait RawAckClient: Send + Sync {
    /// Join group `group` of `topic` (made if missing) as a consumer of
    /// its own; returns once the broker routes messages to it.
    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn RawAckConsumer>, BoxError>>;

    /// How many messages of `group` the broker still holds unacknowledged,
    /// where it says (`None`: it does not).
    fn unacked<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, BoxError>>;
}

/// One raw consumer.
pub trait RawAckConsumer: Send {
    /// Wait at most `wait` for messages; hand each one that came to
    /// `handle` (the application), then acknowledge it. Returns how many
    /// were handled and acknowledged.
    fn take<'a>(
        &'a mut self,
        wait: Duration,
        handle: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<u64, BoxError>>;

    /// Disconnect.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The raw client of `t` for `scenario`, if it has one.
pub fn raw_client(t: &Target, scenario: &str) -> Option<Box<dyn RawAckClient>> {
    match &t.raw {
        Some(RawKind::Redis {
            url,
            streams: true,
            read_count,
            ..
        }) => Some(Box::new(RedisAck {
            url: url.clone(),
            read_count: *read_count,
            per_message: scenario == ACK_EACH,
        })),
        Some(RawKind::JetStream { .. }) if scenario == ACK => {
            let raw: Box<dyn RawAckClient> = Box::new(crate::jetstream::JsAck::of(t)?);
            Some(raw)
        }
        Some(RawKind::Mqtt { host, port, qos }) if *qos >= 1 && scenario == ACK => {
            Some(Box::new(MqttAck {
                host: host.clone(),
                port: *port,
                qos: *qos,
                receive_maximum: u16::try_from(t.config.max_in_flight.max(1)).unwrap_or(u16::MAX),
            }))
        }
        _ => None,
    }
}

/// Our settings for the consumer connection `name`: `ack = "manual"`,
/// and what the backend needs for it (MQTT: a persistent session and a
/// fixed client id).
pub fn manual_config(t: &Target, name: &str) -> Result<Config, BoxError> {
    let mut config = t.config.clone();
    config.ack = AckMode::Manual;
    if t.backend == "mqtt" {
        let mqtt = config.section_mut::<MqttConfig>()?;
        mqtt.session_expiry = Some(SESSION_EXPIRY);
        mqtt.client_id = Some(name.to_string());
    }
    Ok(config)
}

/// One run of a manual-ack scenario: `count` messages of `size` bytes.
pub async fn end_to_end(
    t: &Target,
    v: Variant,
    scenario: &'static str,
    size: usize,
    count: u64,
) -> Result<Sample, BoxError> {
    let topic = unique("ack");
    let run = Run {
        t,
        raw: raw_client(t, scenario),
        topic: &topic,
        group: &unique("ackgrp").replace('.', "-"),
        body: payload(size),
        count,
        received: Arc::new(AtomicU64::new(0)),
        start: Instant::now(),
    };
    let result = match v {
        Variant::Raw => run.raw().await,
        Variant::Async => run.ours().await,
        Variant::Blocking => run.blocking(),
    };
    let unacked = match (&result, &run.raw) {
        (Ok(_), Some(raw)) => raw.unacked(&topic, run.group).await,
        _ => Ok(None),
    };
    t.cleanup(&topic).await;
    let last = result?;
    if let Some(n) = unacked?.filter(|&n| n > 0) {
        return Err(
            format!("{n} messages still unacknowledged on the broker after the run").into(),
        );
    }
    let received = run.received.load(Ordering::Relaxed);
    if received < count {
        return Err(
            format!("only {received} of {count} messages were counted and acknowledged").into(),
        );
    }
    let mut s = Sample::new(t, scenario, size, v);
    s.sent = count;
    s.received = received;
    Ok(s.rate(received, last.unwrap_or(Duration::from_secs(1))))
}

/// What the publisher and the consumer of one run share.
struct Run<'a> {
    t: &'a Target,
    raw: Option<Box<dyn RawAckClient>>,
    topic: &'a str,
    group: &'a str,
    body: Bytes,
    count: u64,
    /// Messages counted and acknowledged.
    received: Arc<AtomicU64>,
    start: Instant,
}

impl Run<'_> {
    fn consumer_name(&self) -> String {
        unique("ack-sub").replace('.', "-")
    }

    /// Publish every message through `publ` (raw, or our async API) and
    /// wait for the consumer: the time from the first publish to its last
    /// acknowledgement.
    async fn publish_and_wait(
        &self,
        publ: Conn,
        consumer: tokio::task::JoinHandle<Result<Option<Instant>, BoxError>>,
    ) -> Result<Option<Duration>, BoxError> {
        let t0 = Instant::now();
        for _ in 0..self.count {
            publ.publish(self.topic, self.body.clone()).await?;
        }
        publ.flush().await?;
        let last = consumer
            .await
            .map_err(|e| format!("consumer task: {e}"))??;
        publ.close().await;
        Ok(last.map(|l| l - t0))
    }

    /// The raw client library on both sides.
    async fn raw(&self) -> Result<Option<Duration>, BoxError> {
        let raw = self.raw.as_ref().ok_or("no raw client for this backend")?;
        let mut consumer = raw.consumer(self.topic, self.group).await?;
        let mut arrivals = Arrivals::new(self.received.clone(), self.count, self.start);
        let task = tokio::spawn(async move {
            // The application: counting is all it does.
            let mut handle = |_: &[u8]| {};
            let mut result = Ok(());
            while arrivals.want_more() {
                match consumer.take(LOOK, &mut handle).await {
                    Ok(0) => {
                        if !arrivals.note(false) {
                            break;
                        }
                    }
                    Ok(n) => (0..n).for_each(|_| {
                        arrivals.note(true);
                    }),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            consumer.close().await;
            result.map(|()| arrivals.last)
        });
        let publ = Conn::connect(self.t, Variant::Raw).await?;
        self.publish_and_wait(publ, task).await
    }

    /// Our async API on both sides; the consumer with `ack = "manual"`.
    async fn ours(&self) -> Result<Option<Duration>, BoxError> {
        let config = manual_config(self.t, &self.consumer_name())?;
        let ps = PubSub::connect_with(&self.t.factory, &config).await?;
        ps.subscribe_in(self.topic, Some(self.group)).await?;
        let mut arrivals = Arrivals::new(self.received.clone(), self.count, self.start);
        let received = self.received.clone();
        let task = tokio::spawn(async move {
            let mut result = Ok(());
            while arrivals.want_more() {
                match ps.recv_timeout(LOOK).await {
                    Ok(Some(m)) => {
                        if let Err(e) = m.ack() {
                            result = Err(e.into());
                            break;
                        }
                        arrivals.note(true);
                    }
                    Ok(None) => {
                        if !arrivals.note(false) {
                            break;
                        }
                    }
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
            let acked = ps.stats().acked;
            let _ = ps.close().await;
            result
                .and(all_acked(acked, received.load(Ordering::Relaxed)))
                .map(|()| arrivals.last)
        });
        let publ = Conn::connect(self.t, Variant::Async).await?;
        self.publish_and_wait(publ, task).await
    }

    /// Our blocking API on both sides, the consumer on a plain thread.
    fn blocking(&self) -> Result<Option<Duration>, BoxError> {
        let config = manual_config(self.t, &self.consumer_name())?;
        let ps = blocking::PubSub::connect_with(&self.t.factory, &config)?;
        ps.subscribe_in(self.topic, Some(self.group))?;
        let publ = connect_blocking(self.t)?;
        let t0 = Instant::now();
        let last = std::thread::scope(|scope| {
            let consumer = scope.spawn(|| {
                let mut arrivals = Arrivals::new(self.received.clone(), self.count, self.start);
                while arrivals.want_more() {
                    match ps.recv_timeout(LOOK)? {
                        Some(m) => {
                            m.ack()?;
                            arrivals.note(true);
                        }
                        None => {
                            if !arrivals.note(false) {
                                break;
                            }
                        }
                    }
                }
                let counted = self.received.load(Ordering::Relaxed);
                all_acked(ps.stats().acked, counted).map(|()| arrivals.last)
            });
            for _ in 0..self.count {
                publ.publish(self.topic, self.body.clone())?;
            }
            publ.flush()?;
            consumer
                .join()
                .map_err(|_| "the consumer thread panicked")?
        });
        let _ = publ.close();
        let _ = ps.close();
        Ok(last?.map(|l| l - t0))
    }
}

/// Ours acknowledged every message it counted (`stats().acked`).
fn all_acked(acked: u64, counted: u64) -> Result<(), BoxError> {
    if acked < counted {
        return Err(format!("{counted} messages counted but only {acked} acknowledged").into());
    }
    Ok(())
}

/// Redis streams through redis-rs: `XREADGROUP` of `read_count` entries,
/// each handed to the application, then one `XACK` for the read
/// (`per_message`: an `XACK` per entry, its answer awaited).
struct RedisAck {
    url: String,
    read_count: usize,
    per_message: bool,
}

impl RedisAck {
    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, BoxError> {
        // Blocking reads must not be cut by the default response timeout.
        let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(redis::Client::open(self.url.as_str())?
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }
}

impl RawAckClient for RedisAck {
    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn RawAckConsumer>, BoxError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let made: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(topic)
                .arg(group)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            if let Err(e) = made {
                if e.code() != Some("BUSYGROUP") {
                    return Err(e.into());
                }
            }
            let consumer: Box<dyn RawAckConsumer> = Box::new(RedisAckConsumer {
                conn,
                key: topic.to_string(),
                group: group.to_string(),
                name: unique("raw-consumer"),
                read_count: self.read_count,
                per_message: self.per_message,
            });
            Ok(consumer)
        })
    }

    fn unacked<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, BoxError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let summary: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg(topic)
                .arg(group)
                .query_async(&mut conn)
                .await?;
            Ok(Some(summary.count() as u64))
        })
    }
}

struct RedisAckConsumer {
    conn: redis::aio::MultiplexedConnection,
    key: String,
    group: String,
    name: String,
    read_count: usize,
    per_message: bool,
}

impl RedisAckConsumer {
    async fn xack(&mut self, ids: &[String]) -> Result<(), BoxError> {
        let _: u64 = redis::cmd("XACK")
            .arg(&self.key)
            .arg(&self.group)
            .arg(ids)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}

impl RawAckConsumer for RedisAckConsumer {
    fn take<'a>(
        &'a mut self,
        wait: Duration,
        handle: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<u64, BoxError>> {
        Box::pin(async move {
            let block = wait.as_millis().clamp(1, 1000) as u64;
            let reply: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&self.name)
                .arg("COUNT")
                .arg(self.read_count)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(">")
                .query_async(&mut self.conn)
                .await?;
            let entries = stream_entries(reply);
            let n = entries.len() as u64;
            let mut ids = Vec::with_capacity(entries.len());
            for (id, payload) in entries {
                handle(&payload);
                ids.push(id);
                if self.per_message {
                    self.xack(&ids).await?;
                    ids.clear();
                }
            }
            if !ids.is_empty() {
                self.xack(&ids).await?;
            }
            Ok(n)
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { drop(self) })
    }
}

/// The entries of an `XREADGROUP` reply of one stream: id and the `d`
/// field (empty if missing), moved out of the reply. redis-rs'
/// `StreamReadReply` clones the whole reply before parsing it (every
/// payload copied once more: at 1 MiB it halved this reader's rate), which
/// a careful user avoids, as our backend does.
fn stream_entries(reply: redis::Value) -> Vec<(String, Vec<u8>)> {
    use redis::Value;
    fn text(v: Value) -> Option<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b).ok(),
            Value::SimpleString(s) => Some(s),
            _ => None,
        }
    }
    let streams: Vec<Value> = match reply {
        // RESP2: [[key, entries], ...]; RESP3: {key: entries}.
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|kv| match kv {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut entry) = entry else {
                continue;
            };
            let (Some(fields), Some(id)) = (entry.pop(), entry.pop()) else {
                continue;
            };
            let Some(id) = text(id) else { continue };
            let pairs: Vec<(Value, Value)> = match fields {
                Value::Array(f) => {
                    let mut it = f.into_iter();
                    std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
                }
                Value::Map(m) => m,
                _ => Vec::new(),
            };
            let payload = pairs
                .into_iter()
                .find_map(|(k, v)| match (k, v) {
                    (Value::BulkString(k), Value::BulkString(v)) if k == b"d" => Some(v),
                    _ => None,
                })
                .unwrap_or_default();
            out.push((id, payload));
        }
    }
    out
}

/// MQTT v5 through rumqttc with manual acknowledgements: a persistent
/// session (`clean_start = false`, the session expiry and receive maximum
/// ours sets), a shared subscription for the group, each PUBACK sent by
/// `client.ack(&publish)` after the message was handled. The event loop is
/// polled by a task of its own, as in the other scenarios.
struct MqttAck {
    host: String,
    port: u16,
    qos: u8,
    receive_maximum: u16,
}

impl RawAckClient for MqttAck {
    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn RawAckConsumer>, BoxError>> {
        Box::pin(async move {
            let consumer: Box<dyn RawAckConsumer> =
                Box::new(MqttAckConsumer::connect(self, topic, group).await?);
            Ok(consumer)
        })
    }

    fn unacked<'a>(
        &'a self,
        _topic: &'a str,
        _group: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, BoxError>> {
        // mosquitto does not say what a session holds.
        Box::pin(async { Ok(None) })
    }
}

struct MqttAckConsumer {
    client: rumqttc::v5::AsyncClient,
    rx: tokio::sync::mpsc::Receiver<rumqttc::v5::mqttbytes::v5::Publish>,
    task: tokio::task::JoinHandle<()>,
}

/// Most messages one `take` hands over without waiting.
const TAKE_MAX: u64 = 1000;

impl MqttAckConsumer {
    async fn connect(a: &MqttAck, topic: &str, group: &str) -> Result<MqttAckConsumer, BoxError> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let id = unique("raw-ack").replace('.', "-");
        let mut opts = MqttOptions::new(id, a.host.as_str(), a.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(Some(16 << 20));
        opts.set_outgoing_inflight_upper_limit(1000);
        opts.set_clean_start(false);
        opts.set_session_expiry_interval(Some(SESSION_EXPIRY.as_secs() as u32));
        opts.set_manual_acks(true);
        opts.set_receive_maximum(Some(a.receive_maximum));
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let qos = if a.qos >= 2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        let (tx, rx) = tokio::sync::mpsc::channel(65_536);
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let suback = subscribed.clone();
        let task = tokio::spawn(async move {
            let mut connected = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(c) = connected.take() {
                            let _ = c.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => suback.notify_one(),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected_rx)
            .await
            .map_err(|_| "MQTT connect timed out")?
            .map_err(|_| "MQTT connection failed")?;
        client
            .subscribe(format!("$share/{group}/{topic}"), qos)
            .await?;
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .map_err(|_| "no SUBACK")?;
        Ok(MqttAckConsumer { client, rx, task })
    }
}

impl RawAckConsumer for MqttAckConsumer {
    fn take<'a>(
        &'a mut self,
        wait: Duration,
        handle: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<u64, BoxError>> {
        Box::pin(async move {
            let Ok(Some(first)) = tokio::time::timeout(wait, self.rx.recv()).await else {
                return Ok(0);
            };
            let mut n = 0;
            let mut next = Some(first);
            while let Some(p) = next.take() {
                handle(&p.payload);
                self.client.ack(&p).await?;
                n += 1;
                if n < TAKE_MAX {
                    next = self.rx.try_recv().ok();
                }
            }
            Ok(n)
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        })
    }
}
