//! JetStream mode (`nats.mode = "jetstream"`): messages are kept in a
//! stream and read through pull consumers, at least once, with manual ack.
//!
//! - [`stream`]: the stream of a topic, created or bound and checked;
//! - [`publish`]: publishing without waiting for each PubAck, a bounded
//!   table of unconfirmed publishes, resending with `Nats-Msg-Id`, and
//!   `flush` reporting what the stream did not take;
//! - [`consumer`]: the pull consumer of a subscription (group, named,
//!   ephemeral), created or found and checked against the server's answer;
//! - [`fetch`]: the fetcher of a subscription: pulls bounded in messages
//!   and bytes, heartbeats, and putting back a consumer that went away;
//! - [`settle`]: ack / nak / in_progress / term, and dead letters;
//! - [`report`]: the account, streams and consumers, for `pubsub check`.

mod api;
mod consumer;
mod fetch;
mod publish;
pub(crate) mod report;
mod settle;
mod stream;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, Subject};
use bytes::Bytes;
use pubsub_core::sync::{lock, AbortOnDrop};
use pubsub_core::{
    AckMode, BackendContext, Capabilities, Config, Delivery, Error, Headers, Result, Support,
    TopicCache, TryPublish,
};
use tokio::sync::{mpsc, oneshot};

use crate::NatsConfig;
use api::Api;
use consumer::{Consumer, ConsumerSpec};
use fetch::{AutoWindow, Current, Fetcher, Shared, Window};
use publish::{Outgoing, Publisher, MSG_ID_RESERVE};
use settle::{Acker, Giver, GiverMsg, Manual};
use stream::{StreamTarget, Streams};

pub(crate) use publish::{MSG_ID, OWN_ID_PREFIX};

/// The settings JetStream mode works with: the `[nats]` section and the
/// common settings it uses.
pub(crate) struct Settings {
    pub nats: NatsConfig,
    pub ack_wait: Duration,
    pub max_deliver: u32,
    pub max_in_flight: usize,
    pub max_in_flight_bytes: usize,
}

impl Settings {
    fn new(config: &Config, nats: NatsConfig) -> Settings {
        Settings {
            nats,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver.max(1),
            max_in_flight: config.max_in_flight.max(1),
            max_in_flight_bytes: config.max_in_flight_bytes.max(1),
        }
    }
}

/// Where a topic's publishes go: its subject and its stream (checked).
struct Route {
    topic: Arc<str>,
    subject: Subject,
    target: Arc<StreamTarget>,
}

/// A subscribed topic: its fetcher and the consumer it reads.
struct Subscription {
    _task: AbortOnDrop,
    current: Current,
}

/// JetStream mode of one handle.
pub(crate) struct JetStream {
    client: Client,
    shared: Arc<Shared>,
    publisher: Arc<Publisher>,
    streams: Arc<Streams>,
    routes: TopicCache<Arc<Route>>,
    subscriptions: Mutex<HashMap<String, Subscription>>,
    giver: mpsc::UnboundedSender<GiverMsg>,
    _confirmer: AbortOnDrop,
    max_payload: usize,
}

impl JetStream {
    /// JetStream over a connected client; fails with `InvalidConfig`
    /// (naming `nats.mode`) when the server has JetStream off.
    pub async fn connect(
        client: Client,
        config: &Config,
        nats: NatsConfig,
        ctx: BackendContext,
        shown: String,
    ) -> Result<JetStream> {
        let settings = Arc::new(Settings::new(config, nats));
        let api = Api::new(client.clone(), api_timeout(config), shown.clone());
        let account = api
            .request::<serde_json::Value>("INFO", &serde_json::json!({}))
            .await?;
        if let Err(e) = account {
            return Err(match e.error_code().0 {
                10039 | 10076 => api::not_enabled(&shown),
                _ => api.server_error("account info", e),
            });
        }
        let streams = Arc::new(Streams::new(api.clone(), settings.clone()));
        let publisher = Arc::new(Publisher::new(
            client.clone(),
            &settings.nats,
            ctx.counters.clone(),
        ));
        let confirmer = publisher.start(streams.clone()).await?;
        let acker = Acker::start(client.clone());
        let (giver, giver_rx) = mpsc::unbounded_channel();
        tokio::spawn(
            Giver {
                acker: acker.clone(),
                publisher: publisher.clone(),
                streams: streams.clone(),
                dead_letter_topic: config.dead_letter_topic.clone(),
                counters: ctx.counters.clone(),
                confirm_within: settings.nats.publish_ack_timeout,
                warned_discard: AtomicBool::new(false),
            }
            .run(giver_rx),
        );
        let manual_ack = config.ack == AckMode::Manual;
        let window = if manual_ack {
            Window::Manual(ctx.in_flight.clone(), settings.max_in_flight_bytes)
        } else {
            Window::Auto(AutoWindow::new(
                config.buffer.capacity,
                config.buffer.max_bytes,
            ))
        };
        let settler = Arc::new(Manual {
            acker: acker.clone(),
            giver: giver.clone(),
            max_deliver: settings.max_deliver,
        });
        let max_payload = client
            .server_info()
            .max_payload
            .saturating_sub(MSG_ID_RESERVE);
        Ok(JetStream {
            shared: Arc::new(Shared {
                client: client.clone(),
                api,
                settings,
                ctx,
                streams: streams.clone(),
                acker,
                window,
                settler,
                manual_ack,
            }),
            client,
            publisher,
            streams,
            routes: TopicCache::new(4096),
            subscriptions: Mutex::new(HashMap::new()),
            giver,
            _confirmer: confirmer,
            max_payload,
        })
    }

    /// What JetStream mode adds to the NATS capabilities.
    pub fn capabilities(&self, mut c: Capabilities) -> Capabilities {
        c.persistence = true;
        c.delivery = Delivery::AtLeastOnce;
        c.message_ids = true;
        c.max_payload = Some(self.max_payload);
        let s = &mut c.settle;
        s.ack = Support::Native;
        s.nak = Support::Native;
        s.in_progress = Support::Native;
        s.term = Support::Native;
        s.redeliver_after_ack_wait = Support::Native;
        s.dead_letter = Support::Emulated;
        c
    }

    pub async fn subscribe(&self, topic: &str, group: Option<&str>) -> Result<()> {
        let target = self.streams.ensure(topic).await?;
        let spec = ConsumerSpec::new(&self.shared.settings, &target.name, topic, group)?;
        let deliver = consumer::configured_deliver(&self.shared.settings);
        let made = consumer::ensure(&self.shared.api, &spec, deliver).await?;
        let (fetcher, current) =
            match Fetcher::new(self.shared.clone(), &target, spec, made.clone()).await {
                Ok(f) => f,
                Err(e) => {
                    self.forget(&made).await;
                    return Err(e);
                }
            };
        let task = AbortOnDrop::new(tokio::spawn(fetcher.run()));
        let old = lock(&self.subscriptions).insert(
            topic.to_string(),
            Subscription {
                _task: task,
                current,
            },
        );
        if let Some(old) = old {
            self.end(old).await;
        }
        Ok(())
    }

    pub async fn unsubscribe(&self, topic: &str) -> Result<()> {
        let sub = lock(&self.subscriptions).remove(topic);
        if let Some(sub) = sub {
            self.end(sub).await;
        }
        Ok(())
    }

    /// Stop a fetcher; an ephemeral consumer is deleted with it.
    async fn end(&self, sub: Subscription) {
        let Subscription { _task, current } = sub;
        drop(_task);
        let c = lock(&current).clone();
        self.forget(&c).await;
    }

    async fn forget(&self, c: &Consumer) {
        if !c.durable {
            consumer::delete(&self.shared.api, c).await;
        }
    }

    /// The route of `topic` if its stream was checked already.
    fn route(&self, topic: &str) -> Option<Arc<Route>> {
        self.routes
            .get_or_make(topic, |t| {
                crate::backend::check_subject(t, true)?;
                let target = self.streams.cached(t).ok_or_else(|| {
                    Error::new(pubsub_core::ErrorKind::Backend, "not checked yet")
                })?;
                Ok(Arc::new(Route {
                    topic: Arc::from(t),
                    subject: Subject::from(t),
                    target,
                }))
            })
            .ok()
    }

    fn outgoing(route: &Route, headers: Option<async_nats::HeaderMap>, payload: Bytes) -> Outgoing {
        Outgoing {
            target: route.target.clone(),
            topic: route.topic.clone(),
            subject: route.subject.clone(),
            payload,
            headers,
        }
    }

    /// The fast path: a topic whose stream is known, room in the pending table.
    pub fn try_publish(&self, topic: &str, payload: Bytes) -> TryPublish {
        match self.route(topic) {
            Some(route) => self
                .publisher
                .try_publish(Self::outgoing(&route, None, payload)),
            None => TryPublish::WouldWait(payload),
        }
    }

    /// Publish, making or checking the topic's stream the first time.
    pub async fn publish(
        &self,
        topic: &str,
        headers: Option<Headers>,
        payload: Bytes,
    ) -> Result<()> {
        let headers = match headers {
            Some(h) => Some(crate::headers::to_nats(&h)?),
            None => None,
        };
        let route = match self.route(topic) {
            Some(r) => r,
            None => {
                crate::backend::check_subject(topic, true)?;
                self.streams.ensure(topic).await?;
                self.route(topic).ok_or_else(|| {
                    Error::new(
                        pubsub_core::ErrorKind::Backend,
                        format!("nats jetstream: no stream for topic {topic:?}"),
                    )
                })?
            }
        };
        self.publisher
            .publish(Self::outgoing(&route, headers, payload))
            .await
    }

    pub async fn flush(&self) -> Result<()> {
        self.publisher.flush().await
    }

    /// What the stream of `topic` keeps of it: this handle's subscription
    /// to it ended, the consumers reading exactly `topic` deleted (a
    /// group's durable among them) and its messages purged. The stream
    /// stays: other topics may share it.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        crate::backend::check_subject(topic, false)?;
        self.unsubscribe(topic).await?;
        let api = &self.shared.api;
        let names = api
            .call::<serde_json::Value>(
                "stream names",
                "STREAM.NAMES",
                &serde_json::json!({ "subject": topic }),
            )
            .await?;
        let Some(stream) = names["streams"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
        else {
            return Ok(());
        };
        let consumers = report::list(api, &format!("CONSUMER.LIST.{stream}"), "consumers").await?;
        for c in consumers {
            if c["config"]["filter_subject"].as_str() == Some(topic) {
                if let Some(name) = c["name"].as_str() {
                    let subject = format!("CONSUMER.DELETE.{stream}.{name}");
                    match api
                        .request::<serde_json::Value>(&subject, &serde_json::json!({}))
                        .await?
                    {
                        Ok(_) => {}
                        Err(e) if api::is_not_found(&e) => {}
                        Err(e) => {
                            return Err(api.server_error(&format!("deleting consumer {name:?}"), e))
                        }
                    }
                }
            }
        }
        api.call::<serde_json::Value>(
            &format!("purging {topic:?} from stream {stream:?}"),
            &format!("STREAM.PURGE.{stream}"),
            &serde_json::json!({ "filter": topic }),
        )
        .await?;
        Ok(())
    }

    pub async fn close(&self) -> Result<()> {
        let flushed = self.publisher.flush().await;
        let (tx, rx) = oneshot::channel();
        if self.giver.send(GiverMsg::Flush(tx)).is_ok() {
            // Dead letters under way are finished first.
            let _ = tokio::time::timeout(self.shared.settings.nats.publish_ack_timeout, rx).await;
        }
        let subs: Vec<Subscription> = lock(&self.subscriptions).drain().map(|(_, s)| s).collect();
        for s in subs {
            self.end(s).await;
        }
        // Acknowledgements the acker task holds are written before the
        // handle goes (the client's own queue is flushed with them).
        // (Bounded like the giver's flush; the caller bounds close itself.)
        let _ = tokio::time::timeout(
            self.shared.settings.nats.publish_ack_timeout,
            self.shared.acker.flush(),
        )
        .await;
        let _ = self.client.flush().await;
        flushed
    }
}

/// The limit of one JetStream API request.
fn api_timeout(config: &Config) -> Duration {
    config
        .close_timeout
        .clamp(Duration::from_secs(1), Duration::from_secs(10))
}
