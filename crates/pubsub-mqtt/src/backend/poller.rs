//! The poll task: the only reader of rumqttc's event loop, polled all the
//! time. It delivers received messages (in manual ack mode it records them
//! in [`super::acks`], which delivers them), counts publishes done, matches
//! SUBACK / UNSUBACK to the waiting callers (see [`super::control`]), and
//! reconnects with back-off.
//!
//! It never waits on the client's request channel (it would deadlock with
//! rumqttc, whose event loop is the only reader of that channel):
//! re-subscribing after a reconnect is done by a separate task. It waits
//! only on the receive buffer, and only with the `block` overflow policy,
//! which is the backpressure that policy asks for.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_core::sync::lock;
use pubsub_core::{BackendContext, Counters, Error, ErrorKind, Inbox, Message, Result};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, DisconnectReasonCode, Filter, Packet, PubAckReason, PubRecReason, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, Request, StateError};
use rumqttc::Outgoing;
use tokio::sync::oneshot;

use super::acks::Acks;
use super::control::{answer_parked, Ack, Expect, Shared, Waiter};
use crate::error::{connection_error, first_connection_error, suback_error};
use crate::options::Options;

/// A connection that lasted this long resets the reconnect back-off.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);

/// The background task that owns the event loop.
pub(super) struct Poller {
    eventloop: EventLoop,
    client: AsyncClient,
    shared: Arc<Shared>,
    inbox: Inbox,
    counters: Arc<Counters>,
    opts: Arc<Options>,
    /// Manual ack mode: where received messages go.
    acks: Option<Arc<Acks>>,
    /// Answered with the first CONNACK, or the error of the first connect.
    first: Option<oneshot::Sender<Result<ConnAck>>>,
    /// The pause before the next reconnect attempt.
    backoff: Duration,
    connected_at: Instant,
    /// Set after a connection loss, until the next CONNACK.
    lost: bool,
    /// Publishes rumqttc held unacknowledged when the connection was lost.
    lost_publishes: u64,
    /// When the DISCONNECT of `close` was written: the connection is read
    /// until the broker ends it, for a while at most (see [`LINGER`]).
    disconnected_at: Option<Instant>,
}

/// How long, after the DISCONNECT of `close`, the connection is read until
/// the broker closes it. Dropping a socket with unread data in it makes the
/// kernel reset the connection, and a reset makes the broker drop what it
/// had not read yet: the PUBACKs of acks made just before `close` (seen
/// with mosquitto 2.0.11: one in ten acks lost about one run in eight).
const LINGER: Duration = Duration::from_millis(500);

impl Poller {
    pub(super) fn new(
        eventloop: EventLoop,
        client: AsyncClient,
        shared: Arc<Shared>,
        ctx: &BackendContext,
        opts: Arc<Options>,
        acks: Option<Arc<Acks>>,
        first: oneshot::Sender<Result<ConnAck>>,
    ) -> Poller {
        Poller {
            eventloop,
            client,
            shared,
            inbox: ctx.inbox.clone(),
            counters: ctx.counters.clone(),
            backoff: opts.mqtt.reconnect_delay_min,
            opts,
            acks,
            first: Some(first),
            connected_at: Instant::now(),
            lost: false,
            lost_publishes: 0,
            disconnected_at: None,
        }
    }

    /// Poll until the handle is closed (or the first connect fails).
    pub(super) async fn run(mut self) {
        loop {
            let polled = match self.disconnected_at {
                Some(at) => {
                    match tokio::time::timeout_at((at + LINGER).into(), self.eventloop.poll()).await
                    {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                }
                None => self.eventloop.poll().await,
            };
            let step = match polled {
                Ok(event) => self.on_event(event).await,
                // After our DISCONNECT: the broker closed the connection.
                Err(_) if self.disconnected_at.is_some() => ControlFlow::Break(()),
                Err(e) => self.on_error(e).await,
            };
            if step.is_break() {
                break;
            }
        }
        self.shared.connected.store(false, Ordering::Release);
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.fail_waiters("the MQTT connection was closed");
        self.shared.progress.notify_waiters();
    }

    async fn on_event(&mut self, event: Event) -> ControlFlow<()> {
        let qos = self.opts.qos;
        match event {
            Event::Incoming(Packet::Publish(p)) => match &self.acks {
                Some(acks) => acks.received(p),
                None => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let msg = Message::new(topic, p.payload)
                        .with_headers(crate::headers::from_properties(p.properties))
                        .with_redelivered(p.dup);
                    if p.dup {
                        // Sent again after a reconnect of a kept session.
                        self.counters.add_redelivered(1);
                    }
                    self.inbox.deliver(msg).await;
                }
            },
            Event::Incoming(Packet::PubAck(a)) => {
                if a.reason != PubAckReason::Success
                    && a.reason != PubAckReason::NoMatchingSubscribers
                {
                    tracing::warn!(broker = %self.opts.shown, reason = ?a.reason, "the MQTT broker refused a publish");
                }
                if qos == QoS::AtLeastOnce {
                    self.shared.add_done(1);
                }
            }
            Event::Incoming(Packet::PubRec(r))
                if r.reason != PubRecReason::Success
                    && r.reason != PubRecReason::NoMatchingSubscribers =>
            {
                // No PUBCOMP will follow.
                tracing::warn!(broker = %self.opts.shown, reason = ?r.reason, "the MQTT broker refused a publish");
                self.shared.add_done(1);
            }
            Event::Incoming(Packet::PubComp(_)) if qos == QoS::ExactlyOnce => {
                self.shared.add_done(1);
            }
            Event::Outgoing(Outgoing::Publish(_)) if qos == QoS::AtMostOnce => {
                self.shared.add_done(1);
            }
            Event::Outgoing(Outgoing::Subscribe(pkid))
            | Event::Outgoing(Outgoing::Unsubscribe(pkid)) => {
                let mut c = lock(&self.shared.control);
                if let Some(e) = c.queued.pop_front() {
                    c.sent.insert(pkid, e);
                }
            }
            Event::Incoming(Packet::SubAck(s)) => self.on_suback(s.pkid, s.return_codes),
            Event::Incoming(Packet::UnsubAck(u)) => {
                let e = lock(&self.shared.control).sent.remove(&u.pkid);
                if let Some(Expect::User(w)) = e {
                    let _ = w.tx.send(Ok(Ack::Unsub(u.reasons)));
                }
            }
            Event::Incoming(Packet::ConnAck(ack)) => self.on_connack(ack),
            Event::Outgoing(Outgoing::Disconnect)
                if self.shared.closing.load(Ordering::Acquire) =>
            {
                self.disconnected_at.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn on_suback(&mut self, pkid: u16, codes: Vec<SubscribeReasonCode>) {
        let e = lock(&self.shared.control).sent.remove(&pkid);
        match e {
            Some(Expect::User(w)) => {
                let _ = w.tx.send(Ok(Ack::Sub(codes)));
            }
            Some(Expect::Resubscribe { filters, waiters }) => {
                for (f, code) in filters.iter().zip(&codes) {
                    if let Some(err) = suback_error(f, std::slice::from_ref(code)) {
                        tracing::error!(broker = %self.opts.shown, "after reconnecting: {err}");
                    }
                }
                answer_parked(waiters, &filters, &codes);
            }
            None => {}
        }
    }

    fn on_connack(&mut self, ack: ConnAck) {
        self.connected_at = Instant::now();
        self.shared.connected.store(true, Ordering::Release);
        if let Some(first) = self.first.take() {
            let _ = first.send(Ok(ack));
            return;
        }
        self.counters.add_reconnect();
        if self.lost {
            self.lost = false;
            self.on_reconnect(&ack);
        }
    }

    /// The event loop failed: the first connect fails the handle's
    /// `connect`; later, the connection is lost and the next poll
    /// reconnects, after a pause that grows while attempts fail.
    async fn on_error(&mut self, e: ConnectionError) -> ControlFlow<()> {
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
            return ControlFlow::Break(());
        }
        let err = connection_error(e, &self.opts.shown, self.opts.tls);
        // While closing, keep trying to deliver what was
        // accepted (close bounds the wait); stop when nothing is left.
        if err.kind() == ErrorKind::Closed
            || (self.shared.closing.load(Ordering::Acquire) && self.shared.outstanding() == 0)
        {
            return ControlFlow::Break(());
        }
        // The pause starts small again only after a connection
        // that lasted: one dropped right after CONNACK (a client
        // id used twice, a broker that refuses us) keeps backing off.
        if !self.lost && self.connected_at.elapsed() >= STABLE_CONNECTION {
            self.backoff = self.opts.mqtt.reconnect_delay_min;
        }
        if self.lost {
            tracing::debug!(broker = %self.opts.shown, "MQTT reconnect failed: {err}");
        } else {
            tracing::warn!(broker = %self.opts.shown, "MQTT connection lost, reconnecting: {err}");
            self.lost = true;
            self.on_connection_lost();
        }
        if taken_over {
            // Two clients with one id take the session from each
            // other on every connect; do not make it a storm.
            tracing::error!(
                broker = %self.opts.shown,
                client_id = %self.opts.client_id,
                "another client connected with the same MQTT client id and took the session over; give each handle its own mqtt.client_id"
            );
            self.backoff = self.opts.mqtt.reconnect_delay_max;
        }
        // rumqttc reconnects on the next poll at once; pause first.
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(self.opts.mqtt.reconnect_delay_max);
        ControlFlow::Continue(())
    }

    /// The first error after a working connection: note what rumqttc set
    /// aside to send again, and which callers will not get their answer.
    fn on_connection_lost(&mut self) {
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
        self.lost_publishes = pending
            .iter()
            .filter(|r| matches!(r, Request::Publish(_)))
            .count() as u64;
        let replayed_control = pending
            .iter()
            .filter(|r| matches!(r, Request::Subscribe(_) | Request::Unsubscribe(_)))
            .count();
        self.shared.connection_lost(replayed_control);
    }

    fn on_reconnect(&mut self, ack: &ConnAck) {
        let lost_publishes = self.lost_publishes;
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
            // A kept session holds its subscriptions, but after a restart
            // with persistence mosquitto 2.0.11 delivered nothing more to a
            // kept session's shared subscriptions (`$share/<group>/...`)
            // while its plain ones went on (test kit's restart under load
            // with sessions: 6,640 of 10,000 lost by the group member). They
            // are subscribed again: a SUBSCRIBE of a filter the session has
            // replaces the subscription and keeps its queued messages.
            let shared: Vec<String> = lock(&self.shared.subs)
                .values()
                .filter(|f| f.starts_with("$share/"))
                .cloned()
                .collect();
            self.resubscribe(shared, Vec::new());
            return;
        }
        if let Some(acks) = &self.acks {
            acks.session_lost();
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
        self.resubscribe(filters, parked);
    }

    /// Subscribe again to `filters` after a reconnect; the SUBACK answers
    /// the `parked` callers too.
    fn resubscribe(&self, filters: Vec<String>, parked: Vec<Waiter>) {
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
