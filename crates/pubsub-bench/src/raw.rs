//! The raw client libraries, used the way a careful user of each would:
//! redis-rs with pipelined commands, rumqttc with its event loop polled by a
//! task of its own. Same settings as our backends (buffer sizes, QoS,
//! MAXLEN, packet size).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use crate::clients::BoxError;

/// A pipeline is sent at 256 commands or 1 MiB of payload, whichever comes
/// first: large enough that a round trip is spent on many messages.
const PIPELINE: usize = 256;
const PIPELINE_BYTES: usize = 1 << 20;

/// Redis, `PUBLISH`/`SUBSCRIBE` or Streams.
pub struct RawRedis {
    client: redis::Client,
    conn: redis::aio::MultiplexedConnection,
    streams: bool,
    maxlen: u64,
    read_count: usize,
    /// The pipeline being filled, its command count and payload bytes.
    pending: Mutex<(redis::Pipeline, usize, usize)>,
    sub: Option<RedisSub>,
}

enum RedisSub {
    /// In a mutex only to be `Sync` (reached through `&mut`, never locked).
    PubSub(Mutex<futures::stream::BoxStream<'static, redis::Msg>>),
    Stream {
        conn: redis::aio::MultiplexedConnection,
        key: String,
        group: Option<String>,
        last: String,
        ready: VecDeque<(String, Bytes)>,
    },
}

impl RawRedis {
    pub async fn connect(
        url: &str,
        streams: bool,
        maxlen: u64,
        read_count: usize,
    ) -> Result<RawRedis, BoxError> {
        let client = redis::Client::open(url)?;
        // A pipeline of large payloads can take longer than the default
        // 500 ms response timeout on a busy machine.
        let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        Ok(RawRedis {
            client,
            conn,
            streams,
            maxlen,
            read_count,
            pending: Mutex::new((redis::pipe(), 0, 0)),
            sub: None,
        })
    }

    pub async fn subscribe(&mut self, topic: &str, group: Option<&str>) -> Result<(), BoxError> {
        if !self.streams {
            let mut ps = self.client.get_async_pubsub().await?;
            ps.subscribe(topic).await?;
            self.sub = Some(RedisSub::PubSub(Mutex::new(ps.into_on_message().boxed())));
            return Ok(());
        }
        // Blocking reads must not be cut by the default response timeout.
        let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let last = if let Some(g) = group {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(topic)
                .arg(g)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                if e.code() != Some("BUSYGROUP") {
                    return Err(e.into());
                }
            }
            ">".to_string()
        } else {
            // The id of the newest entry now, so only later ones are read.
            let r: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(topic)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            r.ids.first().map_or("0-0".to_string(), |e| e.id.clone())
        };
        self.sub = Some(RedisSub::Stream {
            conn,
            key: topic.to_string(),
            group: group.map(str::to_string),
            last,
            ready: VecDeque::new(),
        });
        Ok(())
    }

    fn command(&self, topic: &str, payload: &Bytes) -> redis::Cmd {
        if self.streams {
            let mut c = redis::cmd("XADD");
            c.arg(topic)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*")
                .arg("d")
                .arg(payload.as_ref());
            c
        } else {
            let mut c = redis::cmd("PUBLISH");
            c.arg(topic).arg(payload.as_ref());
            c
        }
    }

    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BoxError> {
        let full = {
            let mut p = self.pending.lock().map_err(|_| "poisoned")?;
            p.0.add_command(self.command(topic, &payload)).ignore();
            p.1 += 1;
            p.2 += payload.len();
            if p.1 >= PIPELINE || p.2 >= PIPELINE_BYTES {
                Some(std::mem::replace(&mut *p, (redis::pipe(), 0, 0)).0)
            } else {
                None
            }
        };
        if let Some(pipe) = full {
            pipe.query_async::<()>(&mut self.conn.clone()).await?;
        }
        Ok(())
    }

    pub async fn flush(&self) -> Result<(), BoxError> {
        let (pipe, count, _) = std::mem::replace(
            &mut *self.pending.lock().map_err(|_| "poisoned")?,
            (redis::pipe(), 0, 0),
        );
        if count > 0 {
            pipe.query_async::<()>(&mut self.conn.clone()).await?;
        }
        Ok(())
    }

    pub async fn next(&mut self, timeout: Duration) -> Option<Bytes> {
        let deadline = Instant::now() + timeout;
        let read_count = self.read_count;
        match self.sub.as_mut()? {
            RedisSub::PubSub(s) => tokio::time::timeout(timeout, s.get_mut().ok()?.next())
                .await
                .ok()
                .flatten()
                .map(|m| Bytes::copy_from_slice(m.get_payload_bytes())),
            RedisSub::Stream {
                conn,
                key,
                group,
                last,
                ready,
            } => loop {
                if let Some((_, p)) = ready.pop_front() {
                    return Some(p);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                let block = left.as_millis().clamp(1, 1000) as u64;
                let mut c = match group {
                    Some(g) => {
                        let mut c = redis::cmd("XREADGROUP");
                        c.arg("GROUP").arg(g.as_str()).arg("bench-consumer");
                        c
                    }
                    None => redis::cmd("XREAD"),
                };
                c.arg("COUNT")
                    .arg(read_count)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(key.as_str())
                    .arg(last.as_str());
                let reply: Option<redis::streams::StreamReadReply> =
                    c.query_async(conn).await.ok()?;
                let Some(reply) = reply else { continue };
                let mut ids = Vec::new();
                for k in reply.keys {
                    for e in k.ids {
                        let payload = match e.map.get("d") {
                            Some(redis::Value::BulkString(b)) => Bytes::copy_from_slice(b),
                            _ => Bytes::new(),
                        };
                        if group.is_none() {
                            *last = e.id.clone();
                        }
                        ids.push(e.id.clone());
                        ready.push_back((e.id, payload));
                    }
                }
                if let (Some(g), false) = (group.as_deref(), ids.is_empty()) {
                    let _: redis::RedisResult<()> = redis::cmd("XACK")
                        .arg(key.as_str())
                        .arg(g)
                        .arg(&ids)
                        .query_async(conn)
                        .await;
                }
            },
        }
    }
}

/// MQTT v5 with rumqttc, its event loop polled by a task.
pub struct RawMqtt {
    client: rumqttc::v5::AsyncClient,
    qos: rumqttc::v5::mqttbytes::QoS,
    published: AtomicU64,
    done: Arc<AtomicU64>,
    subacks: Arc<AtomicU64>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl RawMqtt {
    pub async fn connect(host: &str, port: u16, qos: u8, id: &str) -> Result<RawMqtt, BoxError> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{Event, MqttOptions};
        use rumqttc::Outgoing;
        let mut opts = MqttOptions::new(id, host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(Some(16 << 20));
        opts.set_outgoing_inflight_upper_limit(1000);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 1000);
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(65_536);
        let done = Arc::new(AtomicU64::new(0));
        let subacks = Arc::new(AtomicU64::new(0));
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let (d, s) = (done.clone(), subacks.clone());
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
                        if tx.send(p.payload).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_)))
                    | Ok(Event::Incoming(Packet::PubComp(_))) => {
                        if qos != QoS::AtMostOnce {
                            d.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                        if qos == QoS::AtMostOnce {
                            d.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected_rx)
            .await
            .map_err(|_| "MQTT connect timed out")?
            .map_err(|_| "MQTT connection failed")?;
        Ok(RawMqtt {
            client,
            qos,
            published: AtomicU64::new(0),
            done,
            subacks,
            rx,
            task,
        })
    }

    pub async fn subscribe(&mut self, topic: &str, group: Option<&str>) -> Result<(), BoxError> {
        let filter = match group {
            Some(g) => format!("$share/{g}/{topic}"),
            None => topic.to_string(),
        };
        let before = self.subacks.load(Ordering::Relaxed);
        self.client.subscribe(filter, self.qos).await?;
        let t0 = Instant::now();
        while self.subacks.load(Ordering::Relaxed) == before {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("no SUBACK".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BoxError> {
        self.client.publish(topic, self.qos, false, payload).await?;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Until every publish was written (QoS 0) or acknowledged (QoS 1, 2).
    pub async fn flush(&self) -> Result<(), BoxError> {
        let t0 = Instant::now();
        while self.done.load(Ordering::Relaxed) < self.published.load(Ordering::Relaxed) {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err("flush timed out".into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Ok(())
    }

    pub async fn next(&mut self, timeout: Duration) -> Option<Bytes> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    pub async fn close(self) {
        let _ = self.flush().await;
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Remove a benchmark's stream: Redis keeps up to MAXLEN entries per key,
/// and every run writes its own key.
pub async fn delete_stream(url: &str, key: &str) {
    if let Ok(client) = redis::Client::open(url) {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query_async(&mut c).await;
        }
    }
}
