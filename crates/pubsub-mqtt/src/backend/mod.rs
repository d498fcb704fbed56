//! The MQTT backend: one rumqttc v5 connection per handle, its event loop
//! polled all the time by a background task ([`poller`]); subscribe and
//! unsubscribe wait for the broker's acknowledgement ([`control`]); in
//! manual ack mode, received messages are held until settled ([`acks`]).
//!
//! Publishes are counted when the client accepts them and
//! again when they are done (QoS 0: written; QoS 1: PUBACK; QoS 2:
//! PUBCOMP; or dropped with a lost clean session), which is what `flush`
//! waits for.

mod acks;
mod control;
mod poller;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use pubsub_core::sync::{lock, AbortOnDrop};
use pubsub_core::{
    AckMode, Backend, BackendContext, BrokerInfo, Capabilities, Config, Delivery, Error, ErrorKind,
    Headers, PubSubBackend, Result, SettleSupport, Support, TryPublish,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ClientError, Request};
use tokio::sync::oneshot;

use crate::config::{MqttConfig, MQTT_PACKET_OVERHEAD};
use crate::error::{suback_error, unsuback_error};
use crate::options::Options;
use acks::Acks;
use control::{Ack, Shared};
use poller::Poller;

/// The MQTT v5 backend. Made by [`crate::connect`], [`crate::connect_blocking`] or the registry ([`crate::register`]).
pub struct MqttBackend {
    client: AsyncClient,
    shared: Arc<Shared>,
    /// The poll task; dropping the handle aborts it.
    task: Mutex<Option<AbortOnDrop>>,
    /// Manual ack mode: the unsettled messages, and the tasks that deliver
    /// them and keep their time (aborted on close or drop).
    acks: Option<(Arc<Acks>, Vec<AbortOnDrop>)>,
    opts: Arc<Options>,
    max_packet_size: usize,
    /// The broker's own packet limit from its CONNACK, if it gave one.
    broker_max_packet: Option<usize>,
}

impl fmt::Debug for MqttBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttBackend")
            .field("broker", &self.opts.shown)
            .field("tls", &self.opts.tls)
            .field("client_id", &self.opts.client_id)
            .field("qos", &self.opts.qos)
            .field("persistent", &self.opts.persistent)
            .field("connected", &self.shared.connected.load(Ordering::Relaxed))
            .finish()
    }
}

#[async_trait]
impl Backend for MqttBackend {
    const NAME: &'static str = "mqtt";
    const CRATE: &'static str = env!("CARGO_PKG_NAME");
    type Config = MqttConfig;

    /// Connect with the `[mqtt]` section and wait for the broker's first
    /// CONNACK. Received messages go to `ctx.inbox`.
    async fn connect(
        config: &Config,
        mqtt: MqttConfig,
        ctx: BackendContext,
    ) -> Result<MqttBackend> {
        pubsub_core::tls::install_default_provider();
        let opts = Arc::new(Options::new(config, mqtt)?);
        let (client, eventloop) = AsyncClient::new(
            opts.client_options.clone(),
            opts.mqtt.request_channel_capacity,
        );
        let shared = Arc::new(Shared::new());
        let acks = (config.ack == AckMode::Manual)
            .then(|| Acks::new(config, client.clone(), shared.clone(), opts.clone(), &ctx));
        let (first_tx, first_rx) = oneshot::channel();
        let poller = Poller::new(
            eventloop,
            client.clone(),
            shared.clone(),
            &ctx,
            opts.clone(),
            acks.clone(),
            first_tx,
        );
        // Aborts the poll task if `connect` is cancelled (core's connect
        // timeout) or fails.
        let guard = AbortOnDrop::new(tokio::spawn(poller.run()));
        let connack = match first_rx.await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Connect,
                    format!(
                        "the MQTT connection task for {} ended before connecting",
                        opts.shown
                    ),
                ))
            }
        };
        let broker_max_packet = connack
            .properties
            .as_ref()
            .and_then(|p| p.max_packet_size)
            .map(|n| n as usize);
        let broker_max = broker_max_packet.unwrap_or(usize::MAX);
        let max_packet_size = opts.mqtt.max_packet_size.min(broker_max);
        if broker_max < opts.mqtt.max_packet_size {
            tracing::info!(
                broker = %opts.shown,
                broker_max,
                "the broker accepts smaller packets than mqtt.max_packet_size; using its limit"
            );
        }
        tracing::debug!(broker = %opts.shown, client_id = %opts.client_id, session_present = connack.session_present, "MQTT connected");
        let acks = acks.map(|a| {
            let tasks = a.clone().start();
            (a, tasks)
        });
        Ok(MqttBackend {
            client,
            shared,
            task: Mutex::new(Some(guard)),
            acks,
            opts,
            max_packet_size,
            broker_max_packet,
        })
    }
}

impl MqttBackend {
    /// Whether a message of `len` bytes for `topic`, with `headers` bytes
    /// of user properties, may be published now.
    fn admit(&self, topic: &str, len: usize, headers: usize) -> Result<()> {
        check_packet_size(topic, len, headers, self.max_packet_size)?;
        self.check_running()
    }

    /// Count a message as accepted; until the guard is marked queued,
    /// dropping it counts the message as done (so `flush` does not wait).
    fn accept(&self) -> Accepted<'_> {
        self.shared.accepted.fetch_add(1, Ordering::AcqRel);
        Accepted {
            shared: &self.shared,
            queued: false,
        }
    }

    pub(super) fn check_running(&self) -> Result<()> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("the MQTT connection to {} is closed", self.opts.shown),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl PubSubBackend for MqttBackend {
    fn capabilities(&self) -> Capabilities {
        let persistence = self.opts.persistent && self.opts.qos != QoS::AtMostOnce;
        let mut c = Capabilities::default();
        c.headers = true;
        if persistence {
            c.settle = settle_support();
        }
        c.groups = true;
        c.persistence = persistence;
        c.ordering = true;
        c.wildcards = Some("+ #");
        c.max_payload = Some(self.max_packet_size.saturating_sub(MQTT_PACKET_OVERHEAD));
        c.delivery = if persistence {
            Delivery::AtLeastOnce
        } else {
            Delivery::AtMostOnce
        };
        c
    }

    fn broker_info(&self) -> BrokerInfo {
        // MQTT v5 brokers do not name their software or version in CONNACK.
        let scheme = if self.opts.tls { "mqtts" } else { "mqtt" };
        let mut info = BrokerInfo::default();
        info.server = Some("MQTT v5 broker".to_string());
        info.max_payload = self
            .broker_max_packet
            .map(|n| n.saturating_sub(MQTT_PACKET_OVERHEAD));
        info.tls = self.opts.tls;
        info.address = Some(format!("{scheme}://{}", self.opts.shown));
        info
    }

    fn check_publish_topic(&self, topic: &str) -> Result<()> {
        if topic.contains(['+', '#']) {
            return Err(Error::topic(
                topic,
                "MQTT wildcards `+` and `#` can be used in subscriptions only, not to publish",
            ));
        }
        Ok(())
    }

    fn check_subscribe_topic(&self, topic: &str) -> Result<()> {
        check_filter(topic)
    }

    async fn subscribe(&self, topic: &str, group: Option<&str>) -> Result<()> {
        let filter = match group {
            Some(g) => {
                if g.contains(['/', '+', '#']) {
                    return Err(Error::config(
                        "group_id",
                        format!("{g:?}: an MQTT share name cannot contain '/', '+' or '#'"),
                    ));
                }
                format!("$share/{g}/{topic}")
            }
            None => topic.to_string(),
        };
        // Recorded first, so a reconnect while waiting restores it too.
        lock(&self.shared.subs).insert(topic.to_string(), filter.clone());
        let result = match self.request(&filter, true).await {
            Ok(Ack::Sub(codes)) => suback_error(&filter, &codes).map_or(Ok(()), Err),
            Ok(Ack::Unsub(_)) => Err(Error::new(
                ErrorKind::Backend,
                "the MQTT broker answered SUBSCRIBE with UNSUBACK",
            )),
            Err(e) => Err(e),
        };
        if result.is_err() {
            lock(&self.shared.subs).remove(topic);
        }
        result
    }

    async fn unsubscribe(&self, topic: &str) -> Result<()> {
        let Some(filter) = lock(&self.shared.subs).remove(topic) else {
            return Ok(());
        };
        let result = match self.request(&filter, false).await {
            Ok(Ack::Unsub(codes)) => unsuback_error(&filter, &codes).map_or(Ok(()), Err),
            Ok(Ack::Sub(_)) => Err(Error::new(
                ErrorKind::Backend,
                "the MQTT broker answered UNSUBSCRIBE with SUBACK",
            )),
            Err(e) => Err(e),
        };
        if result.is_err() {
            lock(&self.shared.subs).insert(topic.to_string(), filter);
        }
        result
    }

    fn try_publish(&self, topic: &str, payload: Bytes) -> TryPublish {
        if let Err(e) = self.admit(topic, payload.len(), 0) {
            return TryPublish::Done(Err(e));
        }
        let mut guard = self.accept();
        match self
            .client
            .try_publish(topic, self.opts.qos, self.opts.mqtt.retain, payload)
        {
            Ok(()) => {
                guard.queued = true;
                TryPublish::Done(Ok(()))
            }
            // The request queue is full (or the event loop is gone, which
            // `publish` then reports): the payload comes back in the packet.
            // The packet built for the try is lost work, measured at most
            // ~300 ns per message when the broker is the bottleneck (QoS 1
            // finds the queue full about half the time); in return, a publish
            // that finds room boxes no future.
            Err(ClientError::TryRequest(Request::Publish(p))) => TryPublish::WouldWait(p.payload),
            Err(e) => TryPublish::Done(Err(refused(topic, e))),
        }
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        self.admit(topic, payload.len(), 0)?;
        // Core gives up on a publish the client does not take within
        // publish_timeout (its queue stays full while the broker is away)
        // by dropping this future; the guard then counts the message as
        // done, so that `flush` does not wait for it.
        let mut guard = self.accept();
        self.client
            .publish(topic, self.opts.qos, self.opts.mqtt.retain, payload)
            .await
            .map_err(|e| refused(topic, e))?;
        guard.queued = true;
        Ok(())
    }

    /// Headers as MQTT v5 user properties (see the crate README); a message
    /// without headers takes [`PubSubBackend::try_publish`] /
    /// [`PubSubBackend::publish`] as before.
    async fn publish_with_headers(
        &self,
        topic: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<()> {
        let (properties, size) = crate::headers::to_properties(&headers)?;
        self.admit(topic, payload.len(), size)?;
        let mut guard = self.accept();
        self.client
            .publish_with_properties(
                topic,
                self.opts.qos,
                self.opts.mqtt.retain,
                payload,
                properties,
            )
            .await
            .map_err(|e| refused(topic, e))?;
        guard.queued = true;
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = self.shared.outstanding();
            if left == 0 {
                return Ok(());
            }
            if self.shared.stopped.load(Ordering::Acquire) {
                return Err(Error::new(
                    ErrorKind::Closed,
                    format!("the MQTT connection ended with {left} publishes not acknowledged"),
                ));
            }
            notified.await;
        }
    }

    async fn close(&self) -> Result<()> {
        self.shared.closing.store(true, Ordering::Release);
        // Leave time for the disconnect within core's close_timeout.
        let budget = self.opts.close_timeout.mul_f64(0.8);
        let t0 = tokio::time::Instant::now();
        // Unsettled messages stay unacknowledged in the broker's session:
        // it sends them again when this client id connects again. Messages
        // already being given up get their dead letter and their ack.
        if let Some((acks, tasks)) = &self.acks {
            for t in tasks {
                t.abort();
            }
            acks.finish_giving_up(budget / 2).await;
        }
        let budget = budget.saturating_sub(t0.elapsed());
        let flushed = match tokio::time::timeout(budget, self.flush()).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "close: {} publishes were not acknowledged by the MQTT broker at {} in time",
                    self.shared.outstanding(),
                    self.opts.shown
                ),
            )),
        };
        let _ = self.client.try_disconnect();
        let task = lock(&self.task).take();
        if let Some(mut h) = task.map(AbortOnDrop::detach) {
            let rest = self.opts.close_timeout.saturating_sub(t0.elapsed());
            if tokio::time::timeout(rest, &mut h).await.is_err() {
                h.abort();
            }
        }
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.fail_waiters("the handle was closed");
        self.shared.progress.notify_waiters();
        flushed
    }
}

/// How manual ack mode is done with a persistent session at QoS 1 or 2:
/// the broker holds each message until its PUBACK / PUBREC, which is sent
/// on `ack`; everything else is done by this backend ([`acks`]).
fn settle_support() -> SettleSupport {
    let mut s = SettleSupport::default();
    s.ack = Support::Native;
    s.nak = Support::Emulated;
    s.in_progress = Support::Emulated;
    s.term = Support::Emulated;
    s.redeliver_after_ack_wait = Support::Emulated;
    s.dead_letter = Support::Emulated;
    s
}

/// Whether a PUBLISH of `len` payload bytes to `topic` with `headers`
/// bytes of user properties fits in `max_packet_size`.
pub(crate) fn check_packet_size(
    topic: &str,
    len: usize,
    headers: usize,
    max_packet_size: usize,
) -> Result<()> {
    let packet = len + headers + topic.len() + 16;
    if packet > max_packet_size {
        let with_headers = if headers > 0 {
            format!(" and {headers} bytes of headers")
        } else {
            String::new()
        };
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "payload of {len} bytes{with_headers} for topic {topic:?} makes an MQTT packet over the limit of {max_packet_size} bytes (mqtt.max_packet_size or the broker's maximum)"
            ),
        ));
    }
    Ok(())
}

fn refused(topic: &str, e: ClientError) -> Error {
    Error::topic(topic, "the MQTT client refused the publish").with_source(e)
}

/// Counts a publish as done when it never reached the client's queue
/// (refused, or cancelled while waiting for room).
struct Accepted<'a> {
    shared: &'a Shared,
    queued: bool,
}

impl Drop for Accepted<'_> {
    fn drop(&mut self) {
        if !self.queued {
            self.shared.add_done(1);
        }
    }
}

/// Checks a topic filter for subscribing: wildcards fill whole levels,
/// `#` comes last, and no `$share/` prefix (groups use `group_id`).
pub(crate) fn check_filter(filter: &str) -> Result<()> {
    for level in filter.split('/') {
        if level.len() > 1 && level.contains(['+', '#']) {
            return Err(Error::topic(
                filter,
                "MQTT wildcards `+` and `#` must fill a whole topic level (e.g. \"a/+/c\", \"a/#\")",
            ));
        }
    }
    if let Some(pos) = filter.find('#') {
        if pos != filter.len() - 1 {
            return Err(Error::topic(
                filter,
                "the MQTT wildcard `#` must be the last level (e.g. \"sensors/#\")",
            ));
        }
    }
    if filter.starts_with("$share/") {
        return Err(Error::new(
            ErrorKind::InvalidTopic,
            format!("topic {filter:?}: use group_id for shared subscriptions instead of a $share/ filter"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["a", "a/b", "a/+/c", "a/#", "#", "+", "+/+"] {
            check_filter(ok).unwrap();
        }
        for bad in ["a/b#", "a/#/c", "a+/b", "$share/g/a"] {
            assert_eq!(
                check_filter(bad).unwrap_err().kind(),
                ErrorKind::InvalidTopic,
                "{bad}"
            );
        }
    }
}
