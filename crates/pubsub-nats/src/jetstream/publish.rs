//! Publishing to a stream without waiting for each PubAck.
//!
//! Every publish carries a reply subject of this handle (`<inbox>.<n>`) and
//! a `Nats-Msg-Id` (`<handle id>-<n>`, or the application's own
//! `Nats-Msg-Id` header), and waits in the **pending** table until the
//! stream's PubAck comes back on one wildcard subscription. The table is
//! bounded (`nats.publish_max_pending` messages, `_bytes` of payload):
//! `publish` waits for room beyond, so a publisher never outruns the stream
//! by more than that.
//!
//! The **confirmer** task reads the PubAcks and, on a clock, sends again
//! (same `Nats-Msg-Id`, so the stream stores it once) what has no PubAck:
//! everything pending after a reconnect (a publish or its PubAck may have
//! been lost with the connection), a publish the server answered with "no
//! responders" (its stream is gone, or has no leader yet: made again
//! first), and a publish unanswered for a while. What is refused by the
//! stream (limits, `discard = new`) or unconfirmed after
//! `nats.publish_ack_timeout` is counted by reason, and the next `flush`
//! fails with an error that says how many and why.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::header::{HeaderMap, HeaderValue};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;
use pubsub_core::sync::lock;
use pubsub_core::{Counters, Error, ErrorKind, Result, TryPublish};
use serde::Deserialize;
use tokio::sync::{oneshot, Notify};

use super::stream::{StreamTarget, Streams};
use crate::error::publish_error;

/// The message id header JetStream deduplicates on.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// The start of the message ids this library makes (a receiving Rust node
/// removes such a `Nats-Msg-Id` header; others are kept).
pub(crate) const OWN_ID_PREFIX: &str = "msight-";

/// Bytes kept free of `max_payload` for the `Nats-Msg-Id` header this
/// handle adds (`NATS/1.0`, the header line of an id of at most 50
/// characters, and the line ends).
pub(crate) const MSG_ID_RESERVE: usize = 96;

/// How often the confirmer looks at the pending table.
const TICK: Duration = Duration::from_millis(100);
/// A publish answered with "no responders" is sent again after this (the
/// stream may have no leader for a while: a cluster electing one).
const NO_STREAM_RETRY: Duration = Duration::from_millis(500);

pub(crate) struct Publisher {
    client: Client,
    /// `<inbox>.`: a publish's reply subject is this and its number.
    reply_prefix: String,
    /// `<unique>-`: a publish's message id is this and its number.
    id_prefix: String,
    state: Mutex<State>,
    /// A place in the pending table was freed.
    room: Notify,
    /// A pending publish was settled (confirmed or failed).
    settled: Notify,
    max_pending: usize,
    max_bytes: usize,
    ack_timeout: Duration,
    /// A publish without an answer for this long is sent again.
    resend_after: Duration,
    counters: Arc<Counters>,
    /// The reconnect count the confirmer saw last.
    reconnects_seen: AtomicU64,
    /// Streams being looked up or made again, in the background.
    ensuring: Mutex<std::collections::HashSet<String>>,
}

#[derive(Default)]
struct State {
    next: u64,
    pending: BTreeMap<u64, Pending>,
    bytes: usize,
    /// Publishes given up since the last `flush`, by reason.
    failed: BTreeMap<String, u64>,
}

struct Pending {
    target: Arc<StreamTarget>,
    topic: Arc<str>,
    subject: Subject,
    payload: Bytes,
    /// The application's headers, to send again.
    headers: Option<HeaderMap>,
    /// The application's own `Nats-Msg-Id`, if it set one.
    own_id: bool,
    first: Instant,
    last: Instant,
    /// The server said no one serves the subject: its stream is made again
    /// before the publish is sent again.
    no_stream: bool,
    /// Told the outcome (dead letters wait for it).
    confirm: Option<oneshot::Sender<Result<()>>>,
}

/// A publish as the application gave it, for the pending table.
pub(crate) struct Outgoing {
    pub target: Arc<StreamTarget>,
    pub topic: Arc<str>,
    pub subject: Subject,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
}

/// The server's answer to a publish.
#[derive(Deserialize)]
struct PubAck {
    #[serde(default)]
    error: Option<async_nats::jetstream::Error>,
}

impl Publisher {
    pub fn new(client: Client, nats: &crate::NatsConfig, counters: Arc<Counters>) -> Publisher {
        let unique = client.new_inbox();
        let id = unique.rsplit('.').next().unwrap_or(&unique).to_string();
        Publisher {
            reply_prefix: format!("{unique}."),
            id_prefix: format!("{OWN_ID_PREFIX}{id}-"),
            client,
            state: Mutex::new(State::default()),
            room: Notify::new(),
            settled: Notify::new(),
            max_pending: nats.publish_max_pending,
            max_bytes: nats.publish_max_pending_bytes,
            ack_timeout: nats.publish_ack_timeout,
            resend_after: (nats.publish_ack_timeout / 5).max(Duration::from_millis(500)),
            reconnects_seen: AtomicU64::new(counters.snapshot().reconnects),
            ensuring: Mutex::new(std::collections::HashSet::new()),
            counters,
        }
    }

    /// Start the confirmer (see the module documentation); it ends when
    /// the returned task is dropped or the connection closes.
    pub async fn start(
        self: &Arc<Self>,
        streams: Arc<Streams>,
    ) -> Result<pubsub_core::sync::AbortOnDrop> {
        let acks = self
            .client
            .subscribe(format!("{}*", self.reply_prefix))
            .await
            .map_err(|e| crate::error::op_error("subscribe to the PubAck inbox", e))?;
        let me = self.clone();
        Ok(pubsub_core::sync::AbortOnDrop::new(tokio::spawn(
            me.confirmer(acks, streams),
        )))
    }

    /// Whether one more publish of `len` bytes fits the pending table.
    fn fits(&self, st: &State, len: usize) -> bool {
        st.pending.len() < self.max_pending
            && (st.pending.is_empty() || st.bytes + len <= self.max_bytes)
    }

    /// The headers a publish is sent with: the application's and the
    /// message id.
    fn headers_for(&self, n: u64, p: &Pending) -> HeaderMap {
        let mut h = p.headers.clone().unwrap_or_default();
        if !p.own_id {
            h.insert(MSG_ID, HeaderValue::from(format!("{}{n}", self.id_prefix)));
        }
        h
    }

    fn reply(&self, n: u64) -> Subject {
        Subject::from(format!("{}{n}", self.reply_prefix))
    }

    /// Put `out` into the pending table under a new number, if it fits
    /// (then `out` and `confirm` are taken).
    fn enter(
        &self,
        st: &mut State,
        out: &mut Option<Outgoing>,
        confirm: &mut Option<oneshot::Sender<Result<()>>>,
    ) -> Option<u64> {
        let len = out.as_ref()?.payload.len();
        if !self.fits(st, len) {
            return None;
        }
        let out = out.take()?;
        let confirm = confirm.take();
        let n = st.next;
        st.next += 1;
        st.bytes += out.payload.len();
        let now = Instant::now();
        let own_id = out
            .headers
            .as_ref()
            .is_some_and(|h| h.get(MSG_ID).is_some());
        st.pending.insert(
            n,
            Pending {
                target: out.target,
                topic: out.topic,
                subject: out.subject,
                payload: out.payload,
                headers: out.headers,
                own_id,
                first: now,
                last: now,
                no_stream: false,
                confirm,
            },
        );
        Some(n)
    }

    /// Take entry `n` out of the table (it was not sent after all, or it is settled).
    fn leave(&self, st: &mut State, n: u64) -> Option<Pending> {
        let p = st.pending.remove(&n)?;
        st.bytes -= p.payload.len();
        Some(p)
    }

    /// The publishing fast path: no runtime needed, nothing awaited.
    pub fn try_publish(&self, out: Outgoing) -> TryPublish {
        let mut st = lock(&self.state);
        let mut out = Some(out);
        let Some(n) = self.enter(&mut st, &mut out, &mut None) else {
            let payload = out.map(|o| o.payload).unwrap_or_default();
            return TryPublish::WouldWait(payload);
        };
        let p = &st.pending[&n];
        let fut = self.client.publish_with_reply_and_headers(
            p.subject.clone(),
            self.reply(n),
            self.headers_for(n, p),
            p.payload.clone(),
        );
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(fut.as_mut(), &mut cx) {
            std::task::Poll::Ready(Ok(())) => TryPublish::Done(Ok(())),
            std::task::Poll::Ready(Err(e)) => {
                let p = self.leave(&mut st, n).expect("entered above");
                TryPublish::Done(Err(publish_error(&p.topic, e)))
            }
            // The client's queue is full: nothing was sent.
            std::task::Poll::Pending => {
                let p = self.leave(&mut st, n).expect("entered above");
                TryPublish::WouldWait(p.payload)
            }
        }
    }

    /// Publish, waiting for room in the pending table and in the client's
    /// queue (the caller bounds the wait).
    pub async fn publish(&self, out: Outgoing) -> Result<()> {
        self.send(out, None).await.map(|_| ())
    }

    /// Publish and learn when the stream has it (for dead letters).
    pub async fn publish_confirmed(&self, out: Outgoing) -> Result<oneshot::Receiver<Result<()>>> {
        let (tx, rx) = oneshot::channel();
        self.send(out, Some(tx)).await?;
        Ok(rx)
    }

    async fn send(
        &self,
        out: Outgoing,
        confirm: Option<oneshot::Sender<Result<()>>>,
    ) -> Result<u64> {
        let mut out = Some(out);
        let mut confirm = confirm;
        let n = loop {
            let room = self.room.notified();
            if let Some(n) = self.enter(&mut lock(&self.state), &mut out, &mut confirm) {
                break n;
            }
            room.await;
        };
        let (subject, reply, headers, payload) = {
            let st = lock(&self.state);
            let p = &st.pending[&n];
            (
                p.subject.clone(),
                self.reply(n),
                self.headers_for(n, p),
                p.payload.clone(),
            )
        };
        if let Err(e) = self
            .client
            .publish_with_reply_and_headers(subject, reply, headers, payload)
            .await
        {
            let p = self.leave(&mut lock(&self.state), n);
            self.room.notify_waiters();
            return Err(publish_error(p.as_ref().map_or("", |p| &p.topic), e));
        }
        Ok(n)
    }

    /// Wait until every publish accepted before this call is settled; fail
    /// when any publish was given up since the last `flush`.
    pub async fn flush(&self) -> Result<()> {
        let mark = lock(&self.state).next;
        loop {
            let settled = self.settled.notified();
            {
                let st = lock(&self.state);
                if st.pending.keys().next().is_none_or(|first| *first >= mark) {
                    break;
                }
            }
            settled.await;
        }
        let failed = std::mem::take(&mut lock(&self.state).failed);
        if failed.is_empty() {
            return Ok(());
        }
        let total: u64 = failed.values().sum();
        let reasons: Vec<String> = failed.iter().map(|(why, n)| format!("{n} {why}")).collect();
        Err(Error::new(
            ErrorKind::Backend,
            format!(
                "nats jetstream: {total} message(s) published since the last flush were not stored: {}",
                reasons.join("; ")
            ),
        ))
    }

    /// Settle entry `n` with `outcome`.
    fn settle(&self, n: u64, outcome: std::result::Result<(), String>) {
        let p = {
            let mut st = lock(&self.state);
            let Some(p) = self.leave(&mut st, n) else {
                return;
            };
            if let Err(why) = &outcome {
                *st.failed.entry(why.clone()).or_insert(0) += 1;
            }
            p
        };
        if let Err(why) = &outcome {
            tracing::warn!(topic = %p.topic, stream = %p.target.name, "nats jetstream: a publish was not stored: {why} (reported by the next flush)");
        }
        if let Some(tx) = p.confirm {
            let _ = tx.send(outcome.map_err(|why| Error::new(ErrorKind::Backend, why)));
        }
        self.room.notify_waiters();
        self.settled.notify_waiters();
    }

    /// The confirmer: reads PubAcks, and on a clock sends again what needs it.
    async fn confirmer(self: Arc<Self>, mut acks: async_nats::Subscriber, streams: Arc<Streams>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = acks.next() => match m {
                    Some(m) => self.on_answer(m),
                    None => return,
                },
                _ = tick.tick() => self.sweep(&streams).await,
            }
        }
    }

    fn on_answer(&self, m: async_nats::Message) {
        let Some(n) = m
            .subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            // No stream for the subject (deleted, lost with a server on
            // memory storage, or no leader yet): made again, then sent again.
            let mut st = lock(&self.state);
            if let Some(p) = st.pending.get_mut(&n) {
                p.no_stream = true;
                p.target.lost();
            }
            return;
        }
        match serde_json::from_slice::<PubAck>(&m.payload) {
            Ok(PubAck { error: None }) => self.settle(n, Ok(())),
            // JetStream temporarily unavailable: sent again later. (A
            // stream at its limits answers 503 too, with its own error code.)
            Ok(PubAck { error: Some(e) })
                if e.error_code().0 == 10008 || (e.code() == 503 && e.error_code().0 == 0) => {}
            Ok(PubAck { error: Some(e) }) => {
                let stream = lock(&self.state)
                    .pending
                    .get(&n)
                    .map(|p| p.target.name.clone())
                    .unwrap_or_default();
                self.settle(n, Err(format!("refused by stream {stream:?}: {e}")));
            }
            Err(e) => self.settle(
                n,
                Err(format!("answered with something other than a PubAck ({e})")),
            ),
        }
    }

    /// Give up what is too old; send again what waited long enough, or
    /// everything after a reconnect.
    async fn sweep(self: &Arc<Self>, streams: &Arc<Streams>) {
        let now = Instant::now();
        let reconnects = self.counters.snapshot().reconnects;
        let reconnected = self.reconnects_seen.swap(reconnects, Ordering::AcqRel) != reconnects;
        let mut expired = Vec::new();
        let mut again = Vec::new();
        let mut lost_streams: HashMap<String, Arc<str>> = HashMap::new();
        {
            let st = lock(&self.state);
            for (n, p) in &st.pending {
                if now.duration_since(p.first) > self.ack_timeout {
                    expired.push(*n);
                } else if p.no_stream {
                    lost_streams
                        .entry(p.target.name.clone())
                        .or_insert_with(|| p.topic.clone());
                    if now.duration_since(p.last) > NO_STREAM_RETRY {
                        again.push(*n);
                    }
                } else if reconnected || now.duration_since(p.last) > self.resend_after {
                    again.push(*n);
                }
            }
        }
        let why = format!(
            "not confirmed by the stream within publish_ack_timeout ({})",
            humantime_serde::re::humantime::format_duration(self.ack_timeout)
        );
        for n in expired {
            self.settle(n, Err(why.clone()));
        }
        for (stream, topic) in lost_streams {
            // Looked up (made again if it is gone) beside the confirmer,
            // which goes on reading PubAcks meanwhile.
            if !lock(&self.ensuring).insert(stream.clone()) {
                continue;
            }
            let (me, streams) = (self.clone(), streams.clone());
            tokio::spawn(async move {
                if let Err(e) = streams.ensure(&topic).await {
                    tracing::warn!(stream, error = %e, "nats jetstream: a publish found no stream (no leader, or gone), and looking it up failed; trying again");
                }
                lock(&me.ensuring).remove(&stream);
            });
        }
        if reconnected && !again.is_empty() {
            tracing::info!(pending = again.len(), "nats jetstream: reconnected; sending the unconfirmed publishes again (deduplicated by Nats-Msg-Id)");
        }
        for n in again {
            let send = {
                let mut st = lock(&self.state);
                let Some(p) = st.pending.get_mut(&n) else {
                    continue;
                };
                p.last = Instant::now();
                p.no_stream = false;
                (p.subject.clone(), self.headers_for(n, p), p.payload.clone())
            };
            let (subject, headers, payload) = send;
            if self
                .client
                .publish_with_reply_and_headers(subject, self.reply(n), headers, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
