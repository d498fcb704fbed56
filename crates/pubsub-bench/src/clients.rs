//! The three ways each figure is measured: the raw client library used
//! directly, our async API, our blocking API. Raw and async share one enum
//! so that every scenario runs the same loop for both.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use pubsub_core::{blocking, BackendFactory, Config, PubSub};

/// Which API a measurement uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The client library the backend is built on, used directly.
    Raw,
    /// Our async API.
    Async,
    /// Our blocking API.
    Blocking,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::Async => "async",
            Variant::Blocking => "blocking",
        }
    }
}

/// The raw client a backend is built on, with the settings ours uses.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum RawKind {
    /// async-nats with the server list.
    Nats { servers: Vec<String> },
    /// async-nats JetStream (publishes awaited for their PubAck).
    JetStream {
        servers: Vec<String>,
        /// The raw publisher sends a `Nats-Msg-Id` with every message, as
        /// ours does.
        msg_ids: bool,
    },
    /// redis-rs, pipelined, in `PUBLISH` or Streams mode.
    Redis {
        url: String,
        streams: bool,
        maxlen: u64,
        /// `COUNT` of each stream read, as our `redis.stream_read_count`.
        read_count: usize,
    },
    /// rumqttc v5 at a QoS.
    Mqtt { host: String, port: u16, qos: u8 },
}

/// A backend and mode under test, with everything needed to connect.
pub struct Target {
    /// Whether the backend, in this mode, has groups (else no group figures).
    pub groups: bool,
    pub backend: &'static str,
    pub mode: &'static str,
    pub factory: BackendFactory,
    pub config: Config,
    pub raw: Option<RawKind>,
}

/// What a child process needs to rebuild a [`Target`].
#[derive(serde::Serialize, serde::Deserialize)]
pub struct TargetSpec {
    backend: String,
    mode: String,
    config: Config,
    raw: Option<RawKind>,
}

impl TargetSpec {
    pub fn into_target(self) -> Result<Target, BoxError> {
        let (backend, factory): (&'static str, BackendFactory) = match self.backend.as_str() {
            "nats" => ("nats", BackendFactory::of::<pubsub_nats::NatsBackend>()),
            "redis" => ("redis", BackendFactory::of::<pubsub_redis::RedisBackend>()),
            "mqtt" => ("mqtt", BackendFactory::of::<pubsub_mqtt::MqttBackend>()),
            other => return Err(format!("no child process for backend {other:?}").into()),
        };
        let mode = match self.mode.as_str() {
            "core" => "core",
            "pubsub" => "pubsub",
            "streams" => "streams",
            "qos0" => "qos0",
            "qos1" => "qos1",
            other => return Err(format!("unknown mode {other:?}").into()),
        };
        Ok(Target {
            groups: false,
            backend,
            mode,
            factory,
            config: self.config,
            raw: self.raw,
        })
    }
}

impl Target {
    /// What a child process needs to rebuild this target.
    pub fn spec(&self) -> TargetSpec {
        TargetSpec {
            backend: self.backend.into(),
            mode: self.mode.into(),
            config: self.config.clone(),
            raw: self.raw.clone(),
        }
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.backend, self.mode)
    }

    /// Free what a run left in the broker (Redis and JetStream streams
    /// keep their entries).
    pub async fn cleanup(&self, topic: &str) {
        match &self.raw {
            Some(RawKind::Redis {
                url, streams: true, ..
            }) => crate::raw::delete_stream(url, topic).await,
            Some(RawKind::JetStream { servers, .. }) => {
                if let Some(url) = servers.first() {
                    crate::jetstream::purge(url, topic).await;
                }
            }
            _ => {}
        }
    }
}

/// One connection, raw or through our async API, with at most one
/// subscription on the raw side (all a scenario needs).
// A few exist per run; boxing the NATS variant would put an indirection
// on the raw baseline's publish path.
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    Nats {
        client: async_nats::Client,
        sub: Option<async_nats::Subscriber>,
        /// The subject of the first topic published to, built once: the
        /// best a raw user does (a `Subject` clone is a reference count).
        subject: std::sync::OnceLock<(String, async_nats::Subject)>,
    },
    JetStream(Box<crate::jetstream::RawJetStream>),
    Redis(Box<crate::raw::RawRedis>),
    Mqtt(Box<crate::raw::RawMqtt>),
    Ours(PubSub),
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn raw_nats(servers: &[String]) -> Result<async_nats::Client, BoxError> {
    let addrs: Vec<async_nats::ServerAddr> = servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    Ok(async_nats::ConnectOptions::new()
        .subscription_capacity(65_536)
        .connect(addrs)
        .await?)
}

impl Conn {
    pub async fn connect(t: &Target, v: Variant) -> Result<Conn, BoxError> {
        match (v, &t.raw) {
            (Variant::Raw, Some(RawKind::Nats { servers })) => Ok(Conn::Nats {
                client: raw_nats(servers).await?,
                sub: None,
                subject: std::sync::OnceLock::new(),
            }),
            (Variant::Raw, Some(RawKind::JetStream { servers, msg_ids })) => Ok(Conn::JetStream(
                Box::new(crate::jetstream::RawJetStream::connect(servers, *msg_ids).await?),
            )),
            (
                Variant::Raw,
                Some(RawKind::Redis {
                    url,
                    streams,
                    maxlen,
                    read_count,
                }),
            ) => Ok(Conn::Redis(Box::new(
                crate::raw::RawRedis::connect(url, *streams, *maxlen, *read_count).await?,
            ))),
            (Variant::Raw, Some(RawKind::Mqtt { host, port, qos })) => {
                let id = crate::scenarios::unique("raw").replace('.', "-");
                Ok(Conn::Mqtt(Box::new(
                    crate::raw::RawMqtt::connect(host, *port, *qos, &id).await?,
                )))
            }
            (Variant::Raw, None) => Err("no raw client for this backend".into()),
            _ => Ok(Conn::Ours(
                PubSub::connect_with(&t.factory, &t.config).await?,
            )),
        }
    }

    /// Subscribe; returns once the broker has the subscription.
    pub async fn subscribe(&mut self, topic: &str, group: Option<&str>) -> Result<(), BoxError> {
        match self {
            Conn::Nats { client, sub, .. } => {
                *sub = Some(match group {
                    Some(g) => {
                        client
                            .queue_subscribe(topic.to_string(), g.to_string())
                            .await?
                    }
                    None => client.subscribe(topic.to_string()).await?,
                });
                client.flush().await?;
            }
            Conn::JetStream(_) => {
                return Err("the raw JetStream client subscribes only in e2e_ack".into())
            }
            Conn::Redis(r) => r.subscribe(topic, group).await?,
            Conn::Mqtt(m) => m.subscribe(topic, group).await?,
            Conn::Ours(p) => p.subscribe_in(topic, group).await?,
        }
        Ok(())
    }

    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BoxError> {
        match self {
            Conn::Nats {
                client, subject, ..
            } => {
                let (name, s) =
                    subject.get_or_init(|| (topic.to_string(), async_nats::Subject::from(topic)));
                let s = if name == topic {
                    s.clone()
                } else {
                    async_nats::Subject::from(topic)
                };
                client.publish(s, payload).await?
            }
            Conn::JetStream(j) => j.publish(topic, payload).await?,
            Conn::Redis(r) => r.publish(topic, payload).await?,
            Conn::Mqtt(m) => m.publish(topic, payload).await?,
            Conn::Ours(p) => p.publish(topic, payload).await?,
        }
        Ok(())
    }

    /// Publish and put the message on the wire at once: what a latency
    /// test needs. Only the raw Redis client batches publishes into a
    /// pipeline (sent every 256), so it sends its pipeline of one here.
    pub async fn publish_now(&self, topic: &str, payload: Bytes) -> Result<(), BoxError> {
        self.publish(topic, payload).await?;
        if let Conn::Redis(r) = self {
            r.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&self) -> Result<(), BoxError> {
        match self {
            Conn::Nats { client, .. } => client.flush().await?,
            Conn::JetStream(j) => j.flush().await?,
            Conn::Redis(r) => r.flush().await?,
            Conn::Mqtt(m) => m.flush().await?,
            Conn::Ours(p) => p.flush().await?,
        }
        Ok(())
    }

    /// The next payload, or `None` after `timeout` without one.
    pub async fn next(&mut self, timeout: Duration) -> Option<Bytes> {
        match self {
            Conn::Nats { sub, .. } => {
                let s = sub.as_mut()?;
                tokio::time::timeout(timeout, s.next())
                    .await
                    .ok()
                    .flatten()
                    .map(|m| m.payload)
            }
            Conn::JetStream(_) => None,
            Conn::Redis(r) => r.next(timeout).await,
            Conn::Mqtt(m) => m.next(timeout).await,
            Conn::Ours(p) => p
                .recv_timeout(timeout)
                .await
                .ok()
                .flatten()
                .map(|m| m.payload),
        }
    }

    pub async fn close(self) {
        match self {
            Conn::Nats { client, sub, .. } => {
                drop(sub);
                let _ = client.flush().await;
                let _ = client.drain().await;
            }
            Conn::JetStream(j) => (*j).close().await,
            Conn::Redis(r) => {
                let _ = r.flush().await;
            }
            Conn::Mqtt(m) => (*m).close().await,
            Conn::Ours(p) => {
                let _ = p.close().await;
            }
        }
    }
}

/// Our blocking API on `t`.
pub fn connect_blocking(t: &Target) -> Result<blocking::PubSub, BoxError> {
    Ok(blocking::PubSub::connect_with(&t.factory, &t.config)?)
}
