//! Manual ack mode (`ack = "manual"`), with a persistent session at QoS 1
//! or 2 (checked at connect by [`crate::options`]).
//!
//! rumqttc runs with manual acks: the PUBACK (QoS 1) or PUBREC (QoS 2) of a
//! received message is sent when the application calls `ack`, and until
//! then the broker keeps the message in the session, unacknowledged. MQTT
//! has no negative ack and no redelivery timer: a broker sends an
//! unacknowledged message again only when the same session connects again
//! (with the DUP flag). So everything else is done here, from the copy of
//! each unsettled message this handle keeps:
//!
//! - `nak(delay)`, and a message not settled within `ack_wait` (also one
//!   dropped without settling): delivered again **by this handle**, after
//!   the delay, with its attempt counted. The broker still holds it
//!   unacknowledged meanwhile, so if the process dies it is not lost: the
//!   broker sends it again when this client id reconnects. In a group it
//!   comes back to the same member, never to another one.
//! - `in_progress`: restarts this handle's `ack_wait` timer.
//! - `term`, and a message past `max_deliver` attempts: published to the
//!   dead-letter topic (with the `dead-letter-*` headers) and, once the
//!   broker has acknowledged that publish, acknowledged; without a
//!   dead-letter topic, acknowledged and counted as discarded.
//! - `attempt` counts the deliveries this handle made. A message the
//!   broker sends again after a reconnect (DUP) that this handle still
//!   holds is not delivered twice; one it does not hold (the process was
//!   restarted) starts at attempt 2, since MQTT does not say how many times
//!   it was sent before. `max_deliver` therefore bounds the deliveries
//!   within one process, not across restarts.
//!
//! At most `max_in_flight` messages are unsettled at once: the handle
//! tells the broker so with the MQTT v5 receive maximum of its CONNECT, so
//! the broker stops sending (it queues the rest, mosquitto up to
//! `max_queued_messages`) instead of this handle dropping anything; the
//! byte bound `max_in_flight_bytes` is kept by the deliverer task, which
//! waits for room before handing the next message to the application.
//!
//! Two tasks: the deliverer (messages received or due again, to the
//! receive buffer, each with its [`InFlight`] permit) and the clock (due
//! times: redelivery, dead letters). The poll task only records received
//! messages here, never waits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use pubsub_core::sync::{lock, AbortOnDrop};
use pubsub_core::{
    dead_letter, BackendContext, Config, Counters, Error, ErrorKind, Headers, InFlight, Inbox,
    Message, Result, Settle,
};
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ClientError};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::control::Shared;
use crate::options::Options;

/// The longest the clock sleeps without looking at the due times.
const CLOCK_TICK: Duration = Duration::from_secs(1);

/// The unsettled messages of one handle in manual ack mode.
pub(super) struct Acks {
    state: Mutex<State>,
    /// Wakes the deliverer: a message is ready.
    ready: Notify,
    /// Wakes the clock: a due time earlier than it knew was set.
    clock: Notify,
    client: AsyncClient,
    shared: Arc<Shared>,
    opts: Arc<Options>,
    inbox: Inbox,
    in_flight: Arc<InFlight>,
    counters: Arc<Counters>,
    /// For an ack that cannot be queued at once (the client's request
    /// channel is full): it is queued by a task instead, so that settling
    /// never waits, from any thread.
    runtime: tokio::runtime::Handle,
    ack_wait: Duration,
    max_deliver: u32,
    dead_letter_topic: Option<String>,
    /// Most QoS 0 messages waiting for room (the broker's receive maximum
    /// bounds QoS 1 and 2 only).
    qos0_room: usize,
    warned_discard: AtomicBool,
    warned_qos0: AtomicBool,
    /// Messages being given up (dead letter, then ack), which `close`
    /// waits for; woken as each is done.
    giving_up: AtomicUsize,
    given_up: Notify,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    /// The entry of each packet id the broker holds unacknowledged.
    by_pkid: HashMap<u16, u64>,
    /// Entries waiting for the deliverer, in order.
    ready: VecDeque<u64>,
    /// When the clock wakes next (`None`: it sleeps a tick).
    next_wake: Option<Instant>,
    next_token: u64,
    next_delivery: u64,
}

/// One unsettled message.
struct Entry {
    topic: String,
    payload: Bytes,
    headers: Headers,
    /// The packet id and QoS to acknowledge, while the broker holds the
    /// message; `None` for a QoS 0 message (the broker keeps nothing) and
    /// after the broker lost the session.
    ack: Option<(u16, QoS)>,
    /// The delivery out now, or the next one.
    attempt: u32,
    /// The broker sent it with the DUP flag.
    dup: bool,
    stage: Stage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// In the ready queue.
    Ready,
    /// With the application as delivery `delivery`; delivered again (or
    /// given up) at `due` unless settled.
    Out { delivery: u64, due: Instant },
    /// nak'ed, or `term` (given up at `due`).
    Waiting { due: Instant, term: bool },
}

impl Stage {
    fn due(self) -> Option<Instant> {
        match self {
            Stage::Ready => None,
            Stage::Out { due, .. } | Stage::Waiting { due, .. } => Some(due),
        }
    }
}

/// Why a message is given up.
#[derive(Clone, Copy)]
enum GiveUp {
    Term,
    MaxDeliver,
}

impl GiveUp {
    fn reason(self) -> &'static str {
        match self {
            GiveUp::Term => "term",
            GiveUp::MaxDeliver => "max_deliver",
        }
    }
}

impl Acks {
    pub(super) fn new(
        config: &Config,
        client: AsyncClient,
        shared: Arc<Shared>,
        opts: Arc<Options>,
        ctx: &BackendContext,
    ) -> Arc<Acks> {
        Arc::new(Acks {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            clock: Notify::new(),
            client,
            shared,
            opts,
            inbox: ctx.inbox.clone(),
            in_flight: ctx.in_flight.clone(),
            counters: ctx.counters.clone(),
            runtime: tokio::runtime::Handle::current(),
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver.max(1),
            dead_letter_topic: config.dead_letter_topic.clone(),
            qos0_room: config.buffer.capacity.max(config.max_in_flight),
            warned_discard: AtomicBool::new(false),
            warned_qos0: AtomicBool::new(false),
            giving_up: AtomicUsize::new(0),
            given_up: Notify::new(),
        })
    }

    /// Start the deliverer and the clock; they end when their guards drop.
    pub(super) fn start(self: Arc<Self>) -> Vec<AbortOnDrop> {
        vec![
            AbortOnDrop::new(tokio::spawn(self.clone().deliverer())),
            AbortOnDrop::new(tokio::spawn(self.clock())),
        ]
    }

    /// A PUBLISH from the broker (called by the poll task; never waits).
    pub(super) fn received(&self, p: Publish) {
        let ack = (p.qos != QoS::AtMostOnce).then_some((p.pkid, p.qos));
        let mut st = lock(&self.state);
        if let Some((pkid, _)) = ack {
            if st.by_pkid.contains_key(&pkid) {
                // Sent again after a reconnect while this handle still has
                // it: the application settles the delivery it has (the
                // packet id is the same).
                tracing::debug!(
                    pkid,
                    "MQTT: a message this handle still holds was sent again"
                );
                return;
            }
        } else if st.ready.len() >= self.qos0_room {
            drop(st);
            self.counters.add_dropped(1);
            if !self.warned_qos0.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "MQTT manual ack: QoS 0 messages (published at QoS 0) arrive faster than they are settled; the newest are dropped and counted in stats().dropped (logged once per handle)"
                );
            }
            return;
        }
        st.next_token += 1;
        let token = st.next_token;
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        st.entries.insert(
            token,
            Entry {
                topic,
                payload: p.payload,
                headers: crate::headers::from_properties(p.properties),
                ack,
                attempt: if p.dup { 2 } else { 1 },
                dup: p.dup,
                stage: Stage::Ready,
            },
        );
        if let Some((pkid, _)) = ack {
            st.by_pkid.insert(pkid, token);
        }
        st.ready.push_back(token);
        drop(st);
        self.ready.notify_one();
    }

    /// The broker did not keep the session (it expired, or the broker
    /// restarted without persistence): it holds none of the unsettled
    /// messages any more, and their packet ids mean nothing in the new
    /// session. They stay with this handle, to be settled as before, but an
    /// ack no longer reaches the broker and a crash loses them.
    pub(super) fn session_lost(&self) {
        let mut st = lock(&self.state);
        let held = st.by_pkid.len();
        st.by_pkid.clear();
        for e in st.entries.values_mut() {
            e.ack = None;
        }
        drop(st);
        if held > 0 {
            tracing::warn!(
                broker = %self.opts.shown,
                held,
                "MQTT: the broker did not keep the session; it no longer holds the unsettled messages of this handle (they can still be settled, but are lost if the process dies)"
            );
        }
    }

    /// Hand ready messages to the application, each when there is room
    /// among the unsettled ones.
    async fn deliverer(self: Arc<Self>) {
        loop {
            let next = {
                let mut st = lock(&self.state);
                st.ready
                    .pop_front()
                    .map(|t| (t, st.entries.get(&t).map_or(0, |e| e.payload.len())))
            };
            let Some((token, bytes)) = next else {
                self.ready.notified().await;
                continue;
            };
            let permit = self.in_flight.acquire(bytes).await;
            let Some((msg, delivery)) = self.hand_out(token) else {
                continue;
            };
            if msg.redelivered {
                self.counters.add_redelivered(1);
            }
            let settle = MqttSettle {
                acks: Arc::downgrade(&self),
                token,
                delivery,
            };
            self.inbox
                .deliver(msg.with_settle(Box::new(settle), permit))
                .await;
        }
    }

    /// Mark entry `token` as out with the application, its `ack_wait`
    /// timer started; the message to deliver.
    fn hand_out(&self, token: u64) -> Option<(Message, u64)> {
        let mut st = lock(&self.state);
        st.next_delivery += 1;
        let delivery = st.next_delivery;
        let due = Instant::now() + self.ack_wait;
        let e = st.entries.get_mut(&token)?;
        if e.stage != Stage::Ready {
            return None;
        }
        e.stage = Stage::Out { delivery, due };
        let msg = Message::new(e.topic.clone(), e.payload.clone())
            .with_headers(e.headers.clone())
            .with_attempt(e.attempt)
            .with_redelivered(e.dup || e.attempt > 1);
        self.wake_clock_by(&mut st, due);
        Some((msg, delivery))
    }

    /// Make sure the clock wakes by `due`.
    fn wake_clock_by(&self, st: &mut State, due: Instant) {
        if st.next_wake.is_none_or(|w| due < w) {
            st.next_wake = Some(due);
            self.clock.notify_one();
        }
    }

    /// Deliver again or give up what is due, until the handle goes.
    async fn clock(self: Arc<Self>) {
        loop {
            let (due, next) = {
                let mut st = lock(&self.state);
                let now = Instant::now();
                let mut due = Vec::new();
                let mut next = now + CLOCK_TICK;
                for (&token, e) in &st.entries {
                    match e.stage.due() {
                        Some(d) if d <= now => due.push(token),
                        Some(d) => next = next.min(d),
                        None => {}
                    }
                }
                st.next_wake = Some(next);
                (due, next)
            };
            for token in due {
                self.on_due(token);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.clock.notified() => {}
            }
        }
    }

    /// Entry `token` is due: deliver it again, or give it up.
    fn on_due(self: &Arc<Self>, token: u64) {
        let mut st = lock(&self.state);
        let Some(e) = st.entries.get_mut(&token) else {
            return;
        };
        let give_up = match e.stage {
            Stage::Waiting { term: true, .. } => Some(GiveUp::Term),
            Stage::Ready => return,
            _ if e.attempt >= self.max_deliver => Some(GiveUp::MaxDeliver),
            _ => None,
        };
        match give_up {
            None => {
                e.attempt += 1;
                e.stage = Stage::Ready;
                st.ready.push_back(token);
                drop(st);
                self.ready.notify_one();
            }
            Some(why) => {
                let e = st.entries.remove(&token).expect("the entry is there");
                if let Some((pkid, _)) = e.ack {
                    st.by_pkid.remove(&pkid);
                }
                drop(st);
                self.giving_up.fetch_add(1, Ordering::AcqRel);
                let acks = self.clone();
                tokio::spawn(async move {
                    acks.clone().give_up(token, e, why).await;
                    acks.giving_up.fetch_sub(1, Ordering::AcqRel);
                    acks.given_up.notify_waiters();
                });
            }
        }
    }

    /// Wait (at most `within`) until the messages being given up are done:
    /// their dead letters published and acknowledged, and they acknowledged.
    /// The caller stopped the clock first, so no more start.
    pub(super) async fn finish_giving_up(&self, within: Duration) {
        let wait = async {
            loop {
                let notified = self.given_up.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.giving_up.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
    }

    /// Past `max_deliver`, or `term`: to the dead-letter topic, then
    /// acknowledged; or acknowledged and counted as discarded.
    async fn give_up(self: Arc<Self>, token: u64, e: Entry, why: GiveUp) {
        let reason = why.reason();
        let Some(dlq) = self.dead_letter_topic.clone() else {
            self.discard(&e, reason, "set dead_letter_topic to keep such messages");
            return;
        };
        let mut headers = e.headers.clone();
        headers.insert(dead_letter::REASON, reason);
        headers.insert(dead_letter::TOPIC, e.topic.as_str());
        headers.insert(dead_letter::ATTEMPTS, e.attempt.to_string());
        headers.insert(dead_letter::ID, format!("{}:{token}", self.opts.client_id));
        let letter = crate::headers::to_properties(&headers).and_then(|(props, size)| {
            let max = self.opts.mqtt.max_packet_size;
            super::check_packet_size(&dlq, e.payload.len(), size, max).map(|()| props)
        });
        let props = match letter {
            Ok(p) => p,
            Err(err) => {
                tracing::error!(topic = %e.topic, dead_letter_topic = %dlq, "MQTT: the dead letter cannot be published ({err})");
                self.discard(&e, reason, "the dead letter could not be published");
                return;
            }
        };
        // Acknowledged only once the broker has the dead letter, so that a
        // crash in between sends the message again rather than losing it.
        let mark = self.shared.accepted.fetch_add(1, Ordering::AcqRel) + 1;
        let sent = self
            .client
            .publish_with_properties(dlq.as_str(), self.opts.qos, false, e.payload.clone(), props)
            .await;
        if let Err(err) = sent {
            self.shared.add_done(1);
            tracing::warn!(topic = %e.topic, "MQTT: the dead letter was not published ({err}); the broker sends the message again when this client id reconnects");
            return;
        }
        self.counters.add_dead_lettered(1);
        if self.acknowledged(mark).await {
            self.send_ack(e.ack);
        } else {
            tracing::warn!(topic = %e.topic, dead_letter_topic = %dlq, "MQTT: the broker did not acknowledge the dead letter in time; the message stays unacknowledged and is sent again when this client id reconnects");
        }
    }

    /// Whether the broker acknowledged the publishes accepted up to `mark`
    /// (acknowledgements come in order on one connection), waiting at most
    /// `close_timeout`.
    async fn acknowledged(&self, mark: u64) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.progress.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.shared.done.load(Ordering::Acquire) >= mark {
                    return true;
                }
                if self.shared.stopped.load(Ordering::Acquire) {
                    return false;
                }
                notified.await;
            }
        };
        tokio::time::timeout(self.opts.close_timeout, wait)
            .await
            .unwrap_or(false)
    }

    /// Given up with nowhere to go: acknowledged, counted, logged once.
    fn discard(&self, e: &Entry, reason: &str, hint: &str) {
        self.send_ack(e.ack);
        self.counters.add_discarded(1);
        if !self.warned_discard.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                topic = %e.topic,
                reason,
                "MQTT: a message was given up ({reason}) and discarded; {hint} (counted in stats().discarded; logged once per handle)"
            );
        }
    }

    /// Queue the PUBACK (QoS 1) or PUBREC (QoS 2) of `ack`, without waiting.
    fn send_ack(&self, ack: Option<(u16, QoS)>) {
        let Some((pkid, qos)) = ack else { return };
        let mut p = Publish::new("", qos, Bytes::new(), None);
        p.pkid = pkid;
        match self.client.try_ack(&p) {
            Ok(()) => {}
            Err(ClientError::TryRequest(_)) => {
                // The request channel is full (a burst of publishes): queue
                // it from a task.
                let client = self.client.clone();
                self.runtime.spawn(async move {
                    let _ = client.ack(&p).await;
                });
            }
            // The connection task is gone (closed): the broker sends the
            // message again when this client id reconnects.
            Err(_) => {}
        }
    }

    /// Change entry `token` if `delivery` is the one out now; otherwise the
    /// call is about an older delivery, and does nothing.
    fn settle(&self, token: u64, delivery: u64, op: Op) -> Result<()> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                "the MQTT connection of this handle is closed; the broker sends the message again when this client id reconnects",
            ));
        }
        let mut st = lock(&self.state);
        let Some(e) = st.entries.get_mut(&token) else {
            return Ok(());
        };
        if !matches!(e.stage, Stage::Out { delivery: d, .. } if d == delivery) {
            return Ok(());
        }
        let now = Instant::now();
        match op {
            Op::Ack => {
                let e = st.entries.remove(&token).expect("the entry is there");
                if let Some((pkid, _)) = e.ack {
                    st.by_pkid.remove(&pkid);
                }
                drop(st);
                self.send_ack(e.ack);
            }
            Op::Nak(delay) => {
                // The last attempt is given up at once.
                let delay = if e.attempt >= self.max_deliver {
                    Duration::ZERO
                } else {
                    delay
                };
                let due = now + delay;
                e.stage = Stage::Waiting { due, term: false };
                self.wake_clock_by(&mut st, due);
            }
            Op::InProgress => {
                let due = now + self.ack_wait;
                e.stage = Stage::Out { delivery, due };
            }
            Op::Term => {
                e.stage = Stage::Waiting {
                    due: now,
                    term: true,
                };
                self.wake_clock_by(&mut st, now);
            }
        }
        Ok(())
    }
}

enum Op {
    Ack,
    Nak(Duration),
    InProgress,
    Term,
}

/// The settle handle of one delivery.
struct MqttSettle {
    acks: Weak<Acks>,
    token: u64,
    delivery: u64,
}

impl MqttSettle {
    fn op(&self, op: Op) -> Result<()> {
        let acks = self.acks.upgrade().ok_or_else(Error::closed)?;
        acks.settle(self.token, self.delivery, op)
    }
}

impl Settle for MqttSettle {
    fn ack(&self) -> Result<()> {
        self.op(Op::Ack)
    }

    fn nak(&self, delay: Duration) -> Result<()> {
        self.op(Op::Nak(delay))
    }

    fn in_progress(&self) -> Result<()> {
        self.op(Op::InProgress)
    }

    fn term(&self) -> Result<()> {
        self.op(Op::Term)
    }
}
