//! The MQTT backend: one rumqttc v5 connection per handle, its event loop
//! polled all the time by a background task.
//!
//! The poll task never waits on the client's request channel (it would
//! deadlock with rumqttc, whose event loop is the only reader of that
//! channel): re-subscribing after a reconnect is done by a separate task.
//! It waits only on the receive buffer, and only with the `block` overflow
//! policy, which is the backpressure that policy asks for.
//!
//! Acknowledgements are matched to requests by order: rumqttc reports each
//! SUBSCRIBE / UNSUBSCRIBE it writes (`Outgoing::Subscribe(pkid)`) in the
//! order the requests were queued, and the broker's SUBACK / UNSUBACK name
//! that packet id. A request caught by a connection loss is answered after
//! the reconnect: by rumqttc's replay when the broker kept the session, or
//! by the re-subscription of everything when it did not. Publishes are
//! counted when the client accepts them and
//! again when they are done (QoS 0: written; QoS 1: PUBACK; QoS 2:
//! PUBCOMP; or dropped with a lost clean session), which is what `flush`
//! waits for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pubsub_core::inbox::Inbox;
use pubsub_core::sync::{lock, AbortOnDrop};
use pubsub_core::{
    Backend, BackendContext, BrokerInfo, Capabilities, Config, Counters, Delivery, Error,
    ErrorKind, Message, PubSubBackend, Result, TryPublish,
};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, DisconnectReasonCode, Filter, Packet, PubAckReason, PubRecReason, SubscribeReasonCode,
    UnsubAckReason,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, Request, StateError,
};
use rumqttc::Outgoing;
use tokio::sync::{oneshot, Notify};

use crate::config::{MqttConfig, MQTT_PACKET_OVERHEAD};
use crate::error::{connection_error, first_connection_error, suback_error, unsuback_error};
use crate::options::Options;

/// A connection that lasted this long resets the reconnect back-off.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);

enum Ack {
    Sub(Vec<SubscribeReasonCode>),
    Unsub(Vec<UnsubAckReason>),
}

/// A caller of `subscribe` / `unsubscribe` waiting for the broker's answer.
struct Waiter {
    id: u64,
    filter: String,
    subscribe: bool,
    tx: oneshot::Sender<Result<Ack>>,
}

/// Who waits for the acknowledgement of a queued SUBSCRIBE / UNSUBSCRIBE.
enum Expect {
    /// A caller's own request.
    User(Waiter),
    /// The re-subscription after a reconnect, with its filters, and the
    /// callers whose requests the connection loss swallowed: it answers them.
    Resubscribe {
        filters: Vec<String>,
        waiters: Vec<Waiter>,
    },
}

impl Expect {
    /// The callers waiting on this.
    fn into_waiters(self) -> Vec<Waiter> {
        match self {
            Expect::User(w) => vec![w],
            Expect::Resubscribe { waiters, .. } => waiters,
        }
    }
}

#[derive(Default)]
struct Control {
    /// Queued in the request channel, not yet written, in order.
    queued: VecDeque<Expect>,
    /// Written, waiting for SUBACK / UNSUBACK, by packet id.
    sent: HashMap<u16, Expect>,
    /// After a connection loss: the queued requests rumqttc moved to its
    /// replay list, in order (sent again only if the session is resumed).
    carried: Vec<Expect>,
    /// After a connection loss: callers whose request will not be answered
    /// as such (written before the loss, or dropped with the session).
    parked: Vec<Waiter>,
    next_id: u64,
}

/// Answer callers whose requests were swallowed by a connection loss, from
/// the re-subscription after it: a subscribe gets the code of its filter; an
/// unsubscribe succeeded, since the new session has only what is restored.
fn answer_parked(waiters: Vec<Waiter>, filters: &[String], codes: &[SubscribeReasonCode]) {
    for w in waiters {
        let r = if w.subscribe {
            match filters.iter().position(|f| *f == w.filter) {
                Some(i) => Ok(Ack::Sub(vec![codes
                    .get(i)
                    .copied()
                    .unwrap_or(SubscribeReasonCode::Unspecified)])),
                None => Err(Error::new(
                    ErrorKind::Connect,
                    format!(
                        "the connection to the MQTT broker was lost while subscribing to {:?}",
                        w.filter
                    ),
                )),
            }
        } else {
            Ok(Ack::Unsub(Vec::new()))
        };
        let _ = w.tx.send(r);
    }
}

/// State shared by the handle and its poll task.
struct Shared {
    /// Publishes accepted by the client.
    accepted: AtomicU64,
    /// Publishes done: written (QoS 0), acknowledged (QoS 1, 2), refused,
    /// or dropped with a session the broker did not keep.
    done: AtomicU64,
    /// Woken when `done` grows or the poll task ends.
    progress: Notify,
    /// What to restore after a reconnect: topic -> MQTT filter.
    subs: Mutex<BTreeMap<String, String>>,
    control: Mutex<Control>,
    /// Keeps "register the waiter, queue the request" atomic, so that the
    /// order of waiters is the order of requests.
    control_order: tokio::sync::Mutex<()>,
    connected: AtomicBool,
    closing: AtomicBool,
    stopped: AtomicBool,
}

impl Shared {
    fn add_done(&self, n: u64) {
        if n > 0 {
            self.done.fetch_add(n, Ordering::AcqRel);
            self.progress.notify_waiters();
        }
    }

    fn outstanding(&self) -> u64 {
        self.accepted
            .load(Ordering::Acquire)
            .saturating_sub(self.done.load(Ordering::Acquire))
    }

    /// The connection was lost. Requests written before (in `sent`) will
    /// get no acknowledgement: their callers are parked. The first
    /// `in_pending` queued requests are in rumqttc's replay list (the
    /// request channel is first in, first out): they are carried until the
    /// reconnect tells whether the session, and so the replay, survived.
    /// Requests queued after the loss are sent after the reconnect as usual.
    fn connection_lost(&self, in_pending: usize) {
        let mut c = lock(&self.control);
        let sent: Vec<Expect> = c.sent.drain().map(|(_, e)| e).collect();
        for e in sent {
            let waiters = e.into_waiters();
            c.parked.extend(waiters);
        }
        let k = in_pending.min(c.queued.len());
        let carried: Vec<Expect> = c.queued.drain(..k).collect();
        c.carried.extend(carried);
    }

    /// Fail every caller waiting for an acknowledgement; the connection is gone.
    fn fail_waiters(&self, why: &str) {
        let mut c = lock(&self.control);
        let mut all: Vec<Waiter> = std::mem::take(&mut c.parked);
        let queued = std::mem::take(&mut c.queued);
        let sent = std::mem::take(&mut c.sent);
        let carried = std::mem::take(&mut c.carried);
        drop(c);
        for e in queued.into_iter().chain(sent.into_values()).chain(carried) {
            all.extend(e.into_waiters());
        }
        for w in all {
            let _ = w.tx.send(Err(Error::new(
                ErrorKind::Connect,
                format!("{why} before the broker acknowledged the request"),
            )));
        }
    }
}

/// The MQTT v5 backend. Made by [`crate::connect`], [`crate::connect_blocking`] or the registry ([`crate::register`]).
pub struct MqttBackend {
    client: AsyncClient,
    shared: Arc<Shared>,
    /// The poll task; dropping the handle aborts it.
    task: Mutex<Option<AbortOnDrop>>,
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
        let shared = Arc::new(Shared {
            accepted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            progress: Notify::new(),
            subs: Mutex::new(BTreeMap::new()),
            control: Mutex::new(Control::default()),
            control_order: tokio::sync::Mutex::new(()),
            connected: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let poller = Poller {
            eventloop,
            client: client.clone(),
            shared: shared.clone(),
            inbox: ctx.inbox.clone(),
            counters: ctx.counters.clone(),
            opts: opts.clone(),
            first: Some(first_tx),
        };
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
        Ok(MqttBackend {
            client,
            shared,
            task: Mutex::new(Some(guard)),
            opts,
            max_packet_size,
            broker_max_packet,
        })
    }
}

impl MqttBackend {
    /// Whether a message of `len` bytes for `topic` may be published now.
    fn admit(&self, topic: &str, len: usize) -> Result<()> {
        let packet = len + topic.len() + 16;
        if packet > self.max_packet_size {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "payload of {len} bytes for topic {topic:?} makes an MQTT packet over the limit of {} bytes (mqtt.max_packet_size or the broker's maximum)",
                    self.max_packet_size
                ),
            ));
        }
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

    fn check_running(&self) -> Result<()> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("the MQTT connection to {} is closed", self.opts.shown),
            ));
        }
        Ok(())
    }

    /// How long to wait for a SUBACK / UNSUBACK.
    fn ack_timeout(&self) -> Duration {
        self.opts.close_timeout.max(self.opts.connect_timeout)
    }

    /// Queue a SUBSCRIBE (`subscribe`) or UNSUBSCRIBE of `filter` and wait
    /// for the broker's answer, each step bounded by [`Self::ack_timeout`].
    async fn request(&self, filter: &str, subscribe: bool) -> Result<Ack> {
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.shared.control_order.lock().await;
            self.check_running()?;
            let id = {
                let mut c = lock(&self.shared.control);
                c.next_id += 1;
                let id = c.next_id;
                c.queued.push_back(Expect::User(Waiter {
                    id,
                    filter: filter.to_string(),
                    subscribe,
                    tx,
                }));
                id
            };
            let queue = async {
                if subscribe {
                    self.client.subscribe(filter, self.opts.qos).await
                } else {
                    self.client.unsubscribe(filter).await
                }
            };
            // The queue is full only while the broker is slow or away.
            let sent = tokio::time::timeout(self.ack_timeout(), queue).await;
            if !matches!(sent, Ok(Ok(()))) {
                lock(&self.shared.control)
                    .queued
                    .retain(|x| !matches!(x, Expect::User(w) if w.id == id));
                self.check_running()?;
                return Err(match sent {
                    Ok(Err(e)) => {
                        Error::topic(filter, "the MQTT client refused the filter").with_source(e)
                    }
                    _ => Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the MQTT client's request queue stayed full for {:?} (is the broker at {} reachable?)",
                            self.ack_timeout(),
                            self.opts.shown
                        ),
                    ),
                });
            }
        }
        let what = if subscribe { "SUBACK" } else { "UNSUBACK" };
        match tokio::time::timeout(self.ack_timeout(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Closed,
                "the MQTT connection task ended before the broker answered",
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no {what} for {filter:?} from the MQTT broker at {} within {:?}",
                    self.opts.shown,
                    self.ack_timeout()
                ),
            )),
        }
    }
}

#[async_trait]
impl PubSubBackend for MqttBackend {
    fn capabilities(&self) -> Capabilities {
        let persistence = self.opts.persistent && self.opts.qos != QoS::AtMostOnce;
        let mut c = Capabilities::default();
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
        if let Err(e) = self.admit(topic, payload.len()) {
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
        self.admit(topic, payload.len())?;
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
            let rest = self.opts.close_timeout.saturating_sub(budget);
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

/// The background task that owns the event loop.
struct Poller {
    eventloop: EventLoop,
    client: AsyncClient,
    shared: Arc<Shared>,
    inbox: Inbox,
    counters: Arc<Counters>,
    opts: Arc<Options>,
    first: Option<oneshot::Sender<Result<ConnAck>>>,
}

impl Poller {
    async fn run(mut self) {
        let mut backoff = self.opts.mqtt.reconnect_delay_min;
        let mut connected_at = Instant::now();
        // Set after a connection loss, until the next CONNACK.
        let mut lost = false;
        let mut lost_publishes = 0u64;
        let qos = self.opts.qos;
        loop {
            let event = self.eventloop.poll().await;
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    self.inbox.deliver(Message::new(topic, p.payload)).await;
                }
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    if a.reason != PubAckReason::Success
                        && a.reason != PubAckReason::NoMatchingSubscribers
                    {
                        tracing::warn!(broker = %self.opts.shown, reason = ?a.reason, "the MQTT broker refused a publish");
                    }
                    if qos == QoS::AtLeastOnce {
                        self.shared.add_done(1);
                    }
                }
                Ok(Event::Incoming(Packet::PubRec(r))) => {
                    if r.reason != PubRecReason::Success
                        && r.reason != PubRecReason::NoMatchingSubscribers
                    {
                        // No PUBCOMP will follow.
                        tracing::warn!(broker = %self.opts.shown, reason = ?r.reason, "the MQTT broker refused a publish");
                        self.shared.add_done(1);
                    }
                }
                Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => {
                    self.shared.add_done(1);
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                    self.shared.add_done(1);
                }
                Ok(Event::Outgoing(Outgoing::Subscribe(pkid)))
                | Ok(Event::Outgoing(Outgoing::Unsubscribe(pkid))) => {
                    let mut c = lock(&self.shared.control);
                    if let Some(e) = c.queued.pop_front() {
                        c.sent.insert(pkid, e);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    let e = lock(&self.shared.control).sent.remove(&s.pkid);
                    match e {
                        Some(Expect::User(w)) => {
                            let _ = w.tx.send(Ok(Ack::Sub(s.return_codes)));
                        }
                        Some(Expect::Resubscribe { filters, waiters }) => {
                            for (f, code) in filters.iter().zip(&s.return_codes) {
                                if let Some(err) = suback_error(f, std::slice::from_ref(code)) {
                                    tracing::error!(broker = %self.opts.shown, "after reconnecting: {err}");
                                }
                            }
                            answer_parked(waiters, &filters, &s.return_codes);
                        }
                        None => {}
                    }
                }
                Ok(Event::Incoming(Packet::UnsubAck(u))) => {
                    let e = lock(&self.shared.control).sent.remove(&u.pkid);
                    if let Some(Expect::User(w)) = e {
                        let _ = w.tx.send(Ok(Ack::Unsub(u.reasons)));
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connected_at = Instant::now();
                    self.shared.connected.store(true, Ordering::Release);
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Ok(ack));
                        continue;
                    }
                    self.counters.add_reconnect();
                    if lost {
                        lost = false;
                        self.on_reconnect(&ack, lost_publishes);
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    if self.shared.closing.load(Ordering::Acquire) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.shared.connected.store(false, Ordering::Release);
                    let taken_over = matches!(
                        &e,
                        ConnectionError::MqttState(StateError::ServerDisconnect {
                            reason_code: DisconnectReasonCode::SessionTakenOver,
                            ..
                        })
                    );
                    if let Some(first) = self.first.take() {
                        let err = first_connection_error(e, &self.opts.shown, self.opts.tls);
                        let _ = first.send(Err(err));
                        break;
                    }
                    let err = connection_error(e, &self.opts.shown, self.opts.tls);
                    // While closing, keep trying to deliver what was
                    // accepted (close bounds the wait); stop when nothing is left.
                    if err.kind() == ErrorKind::Closed
                        || (self.shared.closing.load(Ordering::Acquire)
                            && self.shared.outstanding() == 0)
                    {
                        break;
                    }
                    // The pause starts small again only after a connection
                    // that lasted: one dropped right after CONNACK (a client
                    // id used twice, a broker that refuses us) keeps backing off.
                    if !lost && connected_at.elapsed() >= STABLE_CONNECTION {
                        backoff = self.opts.mqtt.reconnect_delay_min;
                    }
                    if lost {
                        tracing::debug!(broker = %self.opts.shown, "MQTT reconnect failed: {err}");
                    } else {
                        tracing::warn!(broker = %self.opts.shown, "MQTT connection lost, reconnecting: {err}");
                        lost = true;
                        // A publish rumqttc set aside because its packet id
                        // was still in use stops all further requests until
                        // that id is acknowledged, which never happens once
                        // the session is gone: the client would send nothing
                        // but pings forever (rumqtt#1056, in 0.25.1). It goes
                        // with the other unacknowledged ones instead.
                        if let Some(p) = self.eventloop.state.collision.take() {
                            self.eventloop.pending.push_back(Request::Publish(p));
                        }
                        // rumqttc moved what was unacknowledged or still
                        // queued into `pending`: sent again if the broker
                        // kept the session, dropped if not.
                        let pending = &self.eventloop.pending;
                        lost_publishes = pending
                            .iter()
                            .filter(|r| matches!(r, Request::Publish(_)))
                            .count() as u64;
                        let replayed_control = pending
                            .iter()
                            .filter(|r| {
                                matches!(r, Request::Subscribe(_) | Request::Unsubscribe(_))
                            })
                            .count();
                        self.shared.connection_lost(replayed_control);
                    }
                    if taken_over {
                        // Two clients with one id take the session from each
                        // other on every connect; do not make it a storm.
                        tracing::error!(
                            broker = %self.opts.shown,
                            client_id = %self.opts.client_id,
                            "another client connected with the same MQTT client id and took the session over; give each handle its own mqtt.client_id"
                        );
                        backoff = self.opts.mqtt.reconnect_delay_max;
                    }
                    // rumqttc reconnects on the next poll at once; pause first.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.opts.mqtt.reconnect_delay_max);
                }
            }
        }
        self.shared.connected.store(false, Ordering::Release);
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.fail_waiters("the MQTT connection was closed");
        self.shared.progress.notify_waiters();
    }

    fn on_reconnect(&mut self, ack: &ConnAck, lost_publishes: u64) {
        let parked = {
            let mut c = lock(&self.shared.control);
            let carried = std::mem::take(&mut c.carried);
            if ack.session_present {
                // rumqttc sends the carried requests again, first: their
                // acknowledgements come in that order.
                for e in carried.into_iter().rev() {
                    c.queued.push_front(e);
                }
            } else {
                // Dropped with the session; the re-subscription answers them.
                for e in carried {
                    let waiters = e.into_waiters();
                    c.parked.extend(waiters);
                }
            }
            std::mem::take(&mut c.parked)
        };
        if ack.session_present {
            tracing::info!(broker = %self.opts.shown, "MQTT reconnected; the broker kept the session");
            // Written before the loss; whether the broker acted on them is
            // unknown and a kept session restores nothing.
            for w in parked {
                let _ = w.tx.send(Err(Error::new(
                    ErrorKind::Connect,
                    format!(
                        "the connection to the MQTT broker was lost before it acknowledged the request for {:?}; try again",
                        w.filter
                    ),
                )));
            }
            return;
        }
        if lost_publishes > 0 {
            tracing::warn!(
                broker = %self.opts.shown,
                lost_publishes,
                "MQTT reconnected with a new session: publishes not acknowledged before the connection was lost are dropped"
            );
            self.shared.add_done(lost_publishes);
        }
        let filters: Vec<String> = lock(&self.shared.subs).values().cloned().collect();
        tracing::info!(broker = %self.opts.shown, subscriptions = filters.len(), "MQTT reconnected with a new session; subscribing again");
        if filters.is_empty() {
            answer_parked(parked, &[], &[]);
            return;
        }
        // Never from this task: queueing may wait for room in the request
        // channel, which only this task empties.
        let client = self.client.clone();
        let shared = self.shared.clone();
        let qos = self.opts.qos;
        tokio::spawn(async move {
            let _order = shared.control_order.lock().await;
            lock(&shared.control).queued.push_back(Expect::Resubscribe {
                filters: filters.clone(),
                waiters: parked,
            });
            let list: Vec<Filter> = filters.into_iter().map(|f| Filter::new(f, qos)).collect();
            if let Err(e) = client.subscribe_many(list).await {
                tracing::warn!("re-subscribing after reconnect failed: {e}");
                // Dropping the entry drops its callers' senders: they learn
                // that the connection task is gone.
                lock(&shared.control).queued.pop_back();
            }
        });
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
