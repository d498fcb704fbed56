//! The **fetcher** of one subscription: pull requests to its consumer,
//! bounded in messages and in bytes by what the handle may still hold, and
//! the messages they bring, into the receive buffer.
//!
//! - Room: in manual ack mode the handle's unsettled messages
//!   (`max_in_flight`, `max_in_flight_bytes`); in auto mode the messages in
//!   the receive buffer not yet taken (`buffer.capacity`,
//!   `buffer.max_bytes`, shared by the handle's subscriptions). A pull asks
//!   for at most the room left beside what earlier pulls may still bring,
//!   so nothing is ever dropped: what is not fetched waits in the stream.
//! - Each pull asks for idle heartbeats. Missing heartbeats while a pull
//!   is open are a warning, never the end: the consumer is looked up, made
//!   again if it is gone (deleted by hand, lost with a server, or the case
//!   of nats.rs issue 1584, where a pull to a missing consumer gets no
//!   answer at all), and pulled again. A reconnect does the same at once.
//! - A consumer made again starts no later than the oldest message this
//!   subscription still holds unsettled (manual ack) or right after the
//!   last one delivered (auto), so nothing is skipped; if the stream itself
//!   was made again (its sequence went back), from its start.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::{Client, StatusCode, Subject};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use pubsub_core::sync::lock;
use pubsub_core::{BackendContext, InFlight, Inbox, Message};
use serde_json::json;
use tokio::sync::Notify;

use super::api::Api;
use super::consumer::{self, Consumer, ConsumerSpec};
use super::settle::{Acker, GiveUp, JsSettle, Manual, ACK};
use super::stream::{StreamTarget, Streams};
use super::Settings;
use crate::headers;

/// How long a pull request stays open on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Idle heartbeat asked of an open pull request.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence, with a pull open, after which the consumer is looked at.
const SILENCE: Duration = Duration::from_secs(2);
/// The longest a fetcher waits before looking at its state again.
const CHECK: Duration = Duration::from_millis(500);

/// The receive buffer's room in auto ack mode, shared by a handle's
/// subscriptions: messages delivered and not yet taken.
pub(crate) struct AutoWindow {
    held: Mutex<(usize, usize)>,
    freed: Notify,
    max_messages: usize,
    max_bytes: usize,
}

impl AutoWindow {
    pub fn new(max_messages: usize, max_bytes: usize) -> Arc<AutoWindow> {
        Arc::new(AutoWindow {
            held: Mutex::new((0, 0)),
            freed: Notify::new(),
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
        })
    }

    fn take(&self, bytes: usize) {
        let mut h = lock(&self.held);
        h.0 += 1;
        h.1 += bytes;
    }

    fn release(&self, bytes: usize) {
        {
            let mut h = lock(&self.held);
            h.0 = h.0.saturating_sub(1);
            h.1 = h.1.saturating_sub(bytes);
        }
        self.freed.notify_waiters();
    }
}

/// Where a fetcher's room comes from.
#[derive(Clone)]
pub(crate) enum Window {
    Manual(Arc<InFlight>, usize),
    Auto(Arc<AutoWindow>),
}

impl Window {
    /// Messages and payload bytes that may still be held.
    fn room(&self) -> (usize, usize) {
        match self {
            Window::Manual(f, max_bytes) => {
                let (_, bytes) = f.held();
                (f.room(), max_bytes.saturating_sub(bytes))
            }
            Window::Auto(w) => {
                let h = lock(&w.held);
                (
                    w.max_messages.saturating_sub(h.0),
                    w.max_bytes.saturating_sub(h.1),
                )
            }
        }
    }

    /// Nothing held: one message of any size may come.
    fn empty(&self) -> bool {
        match self {
            Window::Manual(f, _) => f.held().0 == 0,
            Window::Auto(w) => lock(&w.held).0 == 0,
        }
    }

    /// Resolves when room may have been freed (or after a while: the
    /// manual window has no byte notification).
    async fn freed(&self) {
        match self {
            Window::Manual(f, _) => {
                if f.room() == 0 {
                    f.wait_for_room().await
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
            }
            Window::Auto(w) => w.freed.notified().await,
        }
    }
}

/// A pull request that may still bring messages.
struct Pull {
    messages: usize,
    /// Server-counted bytes left (0: no byte limit).
    bytes: usize,
    expires: Instant,
}

/// What every fetcher of a handle shares.
pub(crate) struct Shared {
    pub client: Client,
    pub api: Api,
    pub settings: Arc<Settings>,
    pub ctx: BackendContext,
    pub streams: Arc<Streams>,
    pub acker: Arc<Acker>,
    pub window: Window,
    /// Settles and gives up messages (both ack modes: a message past
    /// `max_deliver` is given up in auto mode too).
    pub settler: Arc<Manual>,
    /// `ack = "manual"`: messages carry a settle handle.
    pub manual_ack: bool,
}

/// The consumer a fetcher reads now (it changes when one is made again).
pub(crate) type Current = Arc<Mutex<Consumer>>;

pub(crate) struct Fetcher {
    shared: Arc<Shared>,
    /// When the stream read was made: a consumer made again on a stream
    /// made again (lost with a server on memory storage, or deleted) reads
    /// it from its start.
    stream_created: async_nats::datetime::DateTime,
    spec: ConsumerSpec,
    current: Current,
    next_subject: String,
    inbox: Subject,
    sub: async_nats::Subscriber,
    pulls: VecDeque<Pull>,
    /// Last time anything came for a pull (or one was sent).
    heard: Instant,
    warned_silence: bool,
    /// The largest message seen (as the server counts it), or the byte
    /// budget of a pull that brought nothing because its first message did
    /// not fit: a pull with less room than this waits for room instead.
    largest: usize,
    last_seq: u64,
    held: Arc<Mutex<BTreeSet<u64>>>,
    reconnects: u64,
    /// A lookup of the consumer under way beside the pulls: whether it is
    /// still there (a cluster electing a leader may not answer for a while,
    /// and pulling goes on meanwhile).
    checking: Option<tokio::sync::oneshot::Receiver<bool>>,
}

impl Fetcher {
    pub async fn new(
        shared: Arc<Shared>,
        target: &StreamTarget,
        spec: ConsumerSpec,
        consumer: Consumer,
    ) -> pubsub_core::Result<(Fetcher, Current)> {
        let inbox = Subject::from(shared.client.new_inbox());
        let sub = shared
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| crate::error::op_error("subscribe to the pull inbox", e))?;
        let current = Arc::new(Mutex::new(consumer.clone()));
        let reconnects = shared.ctx.counters.snapshot().reconnects;
        Ok((
            Fetcher {
                next_subject: next_subject(&consumer),
                stream_created: target.created,
                last_seq: consumer.delivered,
                shared,
                spec,
                current: current.clone(),
                inbox,
                sub,
                pulls: VecDeque::new(),
                heard: Instant::now(),
                warned_silence: false,
                largest: 0,
                held: Arc::default(),
                reconnects,
                checking: None,
            },
            current,
        ))
    }

    pub async fn run(mut self) {
        loop {
            self.after_reconnect().await;
            self.expire_pulls();
            self.pull().await;
            let blocked = self.pulls.is_empty();
            let window = self.shared.window.clone();
            let checking = self.checking.is_some();
            tokio::select! {
                biased;
                m = self.sub.next() => match m {
                    Some(m) => self.received(m).await,
                    None => return,
                },
                gone = async {
                    match self.checking.as_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                }, if checking => {
                    self.checking = None;
                    if gone == Ok(false) {
                        tracing::warn!(consumer = %self.consumer().name, stream = %self.spec.stream, "nats jetstream: the consumer is gone; making it again");
                        self.recreate().await;
                    }
                }
                _ = window.freed(), if blocked => {}
                _ = tokio::time::sleep(CHECK) => self.check_silence(),
            }
        }
    }

    /// Ask for what there is room for, unless earlier pulls cover most of it.
    async fn pull(&mut self) {
        let (room_msgs, room_bytes) = self.shared.window.room();
        let out_msgs: usize = self.pulls.iter().map(|p| p.messages).sum();
        let out_bytes: usize = self.pulls.iter().map(|p| p.bytes).sum();
        let batch = self.shared.settings.nats.fetch_batch;
        let want = batch.min(room_msgs.saturating_sub(out_msgs));
        let half = (batch.min(room_msgs) / 2).max(1);
        if want == 0 || (out_msgs > 0 && want < half) {
            return;
        }
        let budget = self
            .shared
            .settings
            .nats
            .fetch_max_bytes
            .min(room_bytes.saturating_sub(out_bytes));
        let (messages, bytes) = if budget > self.largest {
            (want, budget)
        } else if self.pulls.is_empty() && self.shared.window.empty() {
            // Nothing held, nothing asked: one message of any size may
            // come (a frame larger than the byte bound comes alone).
            (1, 0)
        } else {
            // Too little room for the messages seen: wait for a settle.
            return;
        };
        let mut request = json!({
            "batch": messages,
            "expires": PULL_EXPIRES.as_nanos() as u64,
            "idle_heartbeat": HEARTBEAT.as_nanos() as u64,
        });
        if bytes > 0 {
            request["max_bytes"] = json!(bytes);
        }
        let body = Bytes::from(request.to_string());
        let sent = self
            .shared
            .client
            .publish_with_reply(self.next_subject.clone(), self.inbox.clone(), body)
            .await;
        if sent.is_ok() {
            if self.pulls.is_empty() {
                self.heard = Instant::now();
            }
            self.pulls.push_back(Pull {
                messages,
                bytes,
                expires: Instant::now() + PULL_EXPIRES,
            });
        }
    }

    /// Pulls past their expiry whose end the server did not say (lost).
    fn expire_pulls(&mut self) {
        let now = Instant::now();
        while self
            .pulls
            .front()
            .is_some_and(|p| p.expires + Duration::from_secs(2) < now)
        {
            self.pulls.pop_front();
        }
    }

    async fn received(&mut self, first: async_nats::Message) {
        self.heard = Instant::now();
        self.warned_silence = false;
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m.status {
                None | Some(StatusCode::OK) => {
                    if let Some(msg) = self.message(m) {
                        batch.push(msg);
                    }
                }
                Some(status) => {
                    self.deliver(&mut batch).await;
                    self.status(status, &m).await;
                }
            }
            if batch.len() < Inbox::BATCH {
                next = self.sub.next().now_or_never().flatten();
            }
        }
        self.deliver(&mut batch).await;
    }

    /// A stream message: accounted to its pull; given up past
    /// `max_deliver`, else turned into a [`Message`].
    fn message(&mut self, m: async_nats::Message) -> Option<Prepared> {
        self.largest = self.largest.max(m.length);
        if let Some(p) = self.pulls.front_mut() {
            p.messages = p.messages.saturating_sub(1);
            if p.bytes > 0 {
                p.bytes = p.bytes.saturating_sub(m.length);
            }
            if p.messages == 0 {
                self.pulls.pop_front();
            }
        }
        let reply = m.reply?;
        let Some((attempt, seq)) = parse_reply(&reply) else {
            tracing::warn!(subject = %m.subject, "nats jetstream: a message without JetStream metadata on a pull inbox; skipped");
            return None;
        };
        self.last_seq = self.last_seq.max(seq);
        let max_deliver = self.shared.settings.max_deliver;
        let headers = m
            .headers
            .as_ref()
            .map(headers::from_stream)
            .unwrap_or_default();
        let topic = m.subject;
        if attempt > max_deliver {
            // The server's extra delivery: the library gives it up.
            let _ = self.shared.settler.give_up(GiveUp {
                reply,
                topic,
                payload: m.payload,
                headers,
                attempts: max_deliver,
                id: seq,
                reason: "max_deliver",
            });
            return None;
        }
        if attempt > 1 {
            self.shared.ctx.counters.add_redelivered(1);
        }
        let msg = Message::new(topic.as_str(), m.payload.clone())
            .with_headers(headers.clone())
            .with_id(seq.to_string())
            .with_attempt(attempt);
        Some(Prepared {
            msg,
            reply,
            topic,
            payload: m.payload,
            headers,
            attempt,
            seq,
        })
    }

    /// Hand prepared messages to the receive buffer.
    async fn deliver(&mut self, batch: &mut Vec<Prepared>) {
        if batch.is_empty() {
            return;
        }
        match &self.shared.window {
            Window::Manual(flight, _) => {
                let mut ready = Vec::with_capacity(batch.len());
                for p in batch.drain(..) {
                    let len = p.payload.len();
                    let permit = match flight.try_acquire(len) {
                        Some(permit) => permit,
                        None => {
                            self.shared.ctx.inbox.deliver_batch(&mut ready).await;
                            flight.acquire(len).await
                        }
                    };
                    lock(&self.held).insert(p.seq);
                    let settle = JsSettle {
                        manual: self.shared.settler.clone(),
                        reply: p.reply,
                        topic: p.topic,
                        payload: p.payload,
                        headers: p.headers,
                        attempt: p.attempt,
                        id: p.seq,
                        held: self.held.clone(),
                    };
                    ready.push(p.msg.with_settle(Box::new(settle), permit));
                }
                self.shared.ctx.inbox.deliver_batch(&mut ready).await;
            }
            Window::Auto(window) => {
                for p in batch.drain(..) {
                    let len = p.payload.len();
                    window.take(len);
                    let (acker, window, reply) =
                        (self.shared.acker.clone(), window.clone(), p.reply);
                    self.shared
                        .ctx
                        .inbox
                        .deliver_with_ack(
                            p.msg,
                            Box::new(move || {
                                let _ = acker.send(&reply, Bytes::from_static(ACK));
                                window.release(len);
                            }),
                        )
                        .await;
                }
            }
        }
    }

    /// A status message on the pull inbox.
    async fn status(&mut self, status: StatusCode, m: &async_nats::Message) {
        let description = m.description.as_deref().unwrap_or_default();
        match status {
            StatusCode::IDLE_HEARTBEAT => {}
            StatusCode::TIMEOUT | StatusCode::NOT_FOUND => {
                self.pulls.pop_front();
            }
            StatusCode::REQUEST_TERMINATED => {
                if description.contains("Consumer Deleted") {
                    // Looked up first: every open pull says so, and the
                    // consumer may be back already.
                    tracing::warn!(consumer = %self.consumer().name, "nats jetstream: the server says the consumer was deleted; looking it up");
                    self.pulls.clear();
                    self.check_consumer();
                } else if description.contains("Message Size Exceeds MaxBytes") {
                    let pending: usize = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Pending-Messages"))
                        .and_then(|v| v.as_str().parse().ok())
                        .unwrap_or(0);
                    let asked = self.pulls.front().map_or((0, 0), |p| (p.messages, p.bytes));
                    self.pulls.pop_front();
                    // Nothing came for it: the next message is larger than
                    // its budget; ask again once there is more room.
                    if pending >= asked.0 {
                        self.largest = self.largest.max(asked.1 + 1);
                    }
                } else if description.starts_with("Exceeded Max") {
                    tracing::warn!(consumer = %self.consumer().name, description, "nats jetstream: a pull request was refused");
                    self.pulls.pop_back();
                    tokio::time::sleep(CHECK).await;
                } else {
                    // Leadership change, server shutdown, ...: pull again.
                    tracing::debug!(consumer = %self.consumer().name, description, "nats jetstream: pull requests ended");
                    self.pulls.clear();
                }
            }
            StatusCode::NO_RESPONDERS => {
                self.pulls.clear();
                self.check_consumer();
            }
            other => {
                tracing::debug!(status = %other, description, "nats jetstream: unexpected status on a pull inbox");
                self.pulls.pop_front();
            }
        }
    }

    fn consumer(&self) -> Consumer {
        lock(&self.current).clone()
    }

    /// Nothing heard for a while with a pull open: a warning; the consumer
    /// is pulled again at once and looked up beside.
    fn check_silence(&mut self) {
        if self.pulls.is_empty() || self.heard.elapsed() < SILENCE {
            return;
        }
        if !self.warned_silence {
            self.warned_silence = true;
            tracing::warn!(
                consumer = %self.consumer().name,
                stream = %self.spec.stream,
                silent = ?self.heard.elapsed(),
                "nats jetstream: missed heartbeats of a pull request; checking the consumer and pulling again"
            );
        }
        self.pulls.clear();
        self.heard = Instant::now();
        self.check_consumer();
    }

    /// After a reconnect the server may have lost the open pulls (and, when
    /// it restarted, the consumer): look, and pull again.
    async fn after_reconnect(&mut self) {
        let now = self.shared.ctx.counters.snapshot().reconnects;
        if now == self.reconnects {
            return;
        }
        self.reconnects = now;
        self.pulls.clear();
        self.heard = Instant::now();
        self.check_consumer();
    }

    /// Look the consumer up in the background (unless a lookup is under
    /// way); the loop makes it again if it is gone.
    fn check_consumer(&mut self) {
        if self.checking.is_some() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (api, c) = (self.shared.api.clone(), self.consumer());
        tokio::spawn(async move {
            let there = match consumer::exists(&api, &c).await {
                Ok(there) => there,
                Err(e) => {
                    tracing::debug!(consumer = %c.name, error = %e, "nats jetstream: looking up the consumer failed; pulling goes on");
                    true
                }
            };
            let _ = tx.send(there);
        });
        self.checking = Some(rx);
    }

    /// Make the consumer again, starting where nothing is skipped: the
    /// oldest message held unsettled (manual ack), else the one after the
    /// last delivered; on a stream made again, its start.
    async fn recreate(&mut self) {
        let created = match stream_created(&self.shared.api, &self.spec.stream).await {
            Ok(Some(created)) => created,
            Ok(None) => {
                // The stream is gone too: made again as a publish would.
                match self.shared.streams.remake(&self.spec.filter).await {
                    Ok(target) => target.created,
                    Err(e) => {
                        tracing::warn!(stream = %self.spec.stream, error = %e, "nats jetstream: making the stream again failed; trying again");
                        tokio::time::sleep(CHECK).await;
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(stream = %self.spec.stream, error = %e, "nats jetstream: looking the stream up failed; trying again");
                tokio::time::sleep(CHECK).await;
                return;
            }
        };
        let floor = lock(&self.held).first().copied();
        let start = match floor {
            Some(oldest) if self.shared.manual_ack => oldest.min(self.last_seq + 1),
            _ => self.last_seq + 1,
        };
        let deliver = if created != self.stream_created {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            }
        };
        match consumer::ensure(&self.shared.api, &self.spec, deliver).await {
            Ok(c) => {
                tracing::info!(consumer = %c.name, stream = %c.stream, "nats jetstream: consumer made again");
                if created != self.stream_created {
                    // The old sequence numbers mean nothing in a new stream.
                    self.stream_created = created;
                    self.last_seq = 0;
                    lock(&self.held).clear();
                }
                self.next_subject = next_subject(&c);
                *lock(&self.current) = c;
                self.pulls.clear();
            }
            Err(e) => {
                tracing::warn!(stream = %self.spec.stream, error = %e, "nats jetstream: making the consumer again failed; trying again");
                tokio::time::sleep(CHECK).await;
            }
        }
    }
}

/// A message on its way to the buffer, and what settling it needs.
struct Prepared {
    msg: Message,
    reply: Subject,
    topic: Subject,
    payload: Bytes,
    headers: pubsub_core::Headers,
    attempt: u32,
    seq: u64,
}

fn next_subject(c: &Consumer) -> String {
    format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", c.stream, c.name)
}

/// When the stream was made; `None` when it is gone.
async fn stream_created(
    api: &Api,
    stream: &str,
) -> pubsub_core::Result<Option<async_nats::datetime::DateTime>> {
    match api
        .request::<async_nats::jetstream::stream::Info>(
            &format!("STREAM.INFO.{stream}"),
            &json!({}),
        )
        .await?
    {
        Ok(info) => Ok(Some(info.created)),
        Err(e) if super::api::is_not_found(&e) => Ok(None),
        Err(e) => Err(api.server_error("stream info", e)),
    }
}

/// Delivery number and stream sequence from a `$JS.ACK.` reply subject
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
/// seq>.<time>.<pending>`, or with domain and account hash before the
/// stream: 11 or more tokens).
pub(crate) fn parse_reply(reply: &str) -> Option<(u32, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens = [""; 7];
    let mut n = 0;
    for t in rest.split('.') {
        if n < tokens.len() {
            tokens[n] = t;
        }
        n += 1;
    }
    let at = match n {
        7 => 2,
        n if n >= 9 => 4,
        _ => return None,
    };
    let delivered: u64 = tokens[at].parse().ok()?;
    let seq = tokens[at + 1].parse().ok()?;
    Some((u32::try_from(delivered).unwrap_or(u32::MAX), seq))
}

#[cfg(test)]
mod tests {
    use super::parse_reply;

    #[test]
    fn ack_subjects_give_attempt_and_sequence() {
        assert_eq!(
            parse_reply("$JS.ACK.S.c.3.100.7.1796162835453673199.42"),
            Some((3, 100))
        );
        assert_eq!(
            parse_reply("$JS.ACK._.ACCHASH.S.c.2.55.7.1796162835453673199.0.tok"),
            Some((2, 55))
        );
        assert_eq!(parse_reply("_INBOX.x"), None);
        assert_eq!(parse_reply("$JS.ACK.S.c.x.1.1.1.1"), None);
    }
}
