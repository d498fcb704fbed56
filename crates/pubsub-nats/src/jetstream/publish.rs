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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::header::{HeaderMap, HeaderValue, NATS_MESSAGE_ID};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
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
/// Most PubAcks the confirmer settles under one lock of the state.
const ANSWERS_PER_LOCK: usize = 256;
/// The pending table spans at most this many times
/// `nats.publish_max_pending` numbers (holes included).
const SPAN_FACTOR: usize = 64;

pub(crate) struct Publisher {
    client: Client,
    /// `<inbox>.`: a publish's reply subject is this and its number.
    reply_prefix: String,
    /// `<unique>-`: a publish's message id is this and its number.
    id_prefix: String,
    state: Mutex<State>,
    /// The pending table fell to its low-water mark (publishers waiting
    /// for room wake once per batch of PubAcks, not once per PubAck).
    room: Notify,
    /// Publishers waiting for room.
    room_waiters: AtomicUsize,
    /// A pending publish was settled (confirmed or failed).
    settled: Notify,
    /// Callers of `flush` waiting.
    flush_waiters: AtomicUsize,
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
    pending: Table,
    bytes: usize,
    /// Publishes given up since the last `flush`, by reason.
    failed: BTreeMap<String, u64>,
}

/// The pending publishes by number. Numbers are given in order and mostly
/// settled in order: a queue whose front is the oldest number still
/// pending (settled entries behind it are holes until it goes). Its
/// [`span`](Table::span) is bounded by the publisher (see
/// [`Publisher::fits`]). Generic over the entry for its unit tests.
struct Table<T = Pending> {
    /// The number of `entries[0]`.
    base: u64,
    entries: VecDeque<Option<T>>,
    /// Entries still pending (not holes).
    len: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            base: 0,
            entries: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Table<T> {
    /// The number the next entry gets.
    fn next(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Entries still pending.
    fn len(&self) -> usize {
        self.len
    }

    /// From the oldest pending number to the newest given: the slots the
    /// table holds in memory, holes included.
    fn span(&self) -> usize {
        self.entries.len()
    }

    /// Enter `p` under the next number, which is returned.
    fn push(&mut self, p: T) -> u64 {
        let n = self.next();
        self.entries.push_back(Some(p));
        self.len += 1;
        n
    }

    fn index(&self, n: u64) -> Option<usize> {
        usize::try_from(n.checked_sub(self.base)?).ok()
    }

    fn get(&self, n: u64) -> Option<&T> {
        self.entries.get(self.index(n)?)?.as_ref()
    }

    fn get_mut(&mut self, n: u64) -> Option<&mut T> {
        let i = self.index(n)?;
        self.entries.get_mut(i)?.as_mut()
    }

    /// Take entry `n` out (`None`: not pending); the settled front goes.
    fn remove(&mut self, n: u64) -> Option<T> {
        let i = self.index(n)?;
        let p = self.entries.get_mut(i)?.take()?;
        self.len -= 1;
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.base += 1;
        }
        Some(p)
    }

    /// The oldest number still pending.
    fn oldest(&self) -> Option<u64> {
        (self.len > 0).then_some(self.base)
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let base = self.base;
        self.entries
            .iter()
            .enumerate()
            .filter_map(move |(i, p)| p.as_ref().map(|p| (base + i as u64, p)))
    }
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

/// What to send for an entry just made in the pending table.
struct Send {
    n: u64,
    subject: Subject,
    reply: Subject,
    headers: HeaderMap,
    payload: Bytes,
}

/// A settled publish, with what is done once the state is unlocked.
struct Settled {
    p: Pending,
    outcome: std::result::Result<(), String>,
}

/// Counts a waiter while it waits (also when its future is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
            room_waiters: AtomicUsize::new(0),
            settled: Notify::new(),
            flush_waiters: AtomicUsize::new(0),
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

    /// Whether one more publish of `len` bytes fits the pending table: its
    /// bounds in messages and bytes, and a bound on its span (the oldest
    /// unconfirmed publish to the newest), so that one publish left
    /// unconfirmed while thousands behind it are confirmed does not make
    /// the table grow with holes until it times out.
    fn fits(&self, st: &State, len: usize) -> bool {
        st.pending.len() < self.max_pending
            && st.pending.span() < self.max_pending.saturating_mul(SPAN_FACTOR)
            && (st.pending.len() == 0 || st.bytes + len <= self.max_bytes)
    }

    /// Whether the table is down to its low-water mark (7/8 of its bounds),
    /// where publishers waiting for room are woken.
    fn low(&self, st: &State) -> bool {
        st.pending.len() <= self.max_pending - self.max_pending / 8
            && st.bytes <= self.max_bytes - self.max_bytes / 8
    }

    /// The headers a publish is sent with: the application's and the
    /// message id.
    fn headers_for(&self, n: u64, p: &Pending) -> HeaderMap {
        self.headers_of(n, p.headers.as_ref(), p.own_id)
    }

    /// [`Self::headers_for`] from the parts.
    fn headers_of(&self, n: u64, headers: Option<&HeaderMap>, own_id: bool) -> HeaderMap {
        let mut h = headers.cloned().unwrap_or_default();
        if !own_id {
            h.insert(
                NATS_MESSAGE_ID,
                HeaderValue::from(format!("{}{n}", self.id_prefix)),
            );
        }
        h
    }

    fn reply(&self, n: u64) -> Subject {
        Subject::from(format!("{}{n}", self.reply_prefix))
    }

    /// Put `out` into the pending table under a new number, if it fits
    /// (then `out` and `confirm` are taken); returns what to send.
    fn enter(
        &self,
        st: &mut State,
        out: &mut Option<Outgoing>,
        confirm: &mut Option<oneshot::Sender<Result<()>>>,
    ) -> Option<Send> {
        let len = out.as_ref()?.payload.len();
        if !self.fits(st, len) {
            return None;
        }
        let out = out.take()?;
        let confirm = confirm.take();
        st.bytes += out.payload.len();
        let now = Instant::now();
        let own_id = out
            .headers
            .as_ref()
            .is_some_and(|h| h.get(MSG_ID).is_some());
        let n = st.pending.next();
        let send = Send {
            n,
            subject: out.subject.clone(),
            reply: self.reply(n),
            headers: self.headers_of(n, out.headers.as_ref(), own_id),
            payload: out.payload.clone(),
        };
        st.pending.push(Pending {
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
        });
        Some(send)
    }

    /// Take entry `n` out of the table (it was not sent after all, or it is settled).
    fn leave(&self, st: &mut State, n: u64) -> Option<Pending> {
        let p = st.pending.remove(n)?;
        st.bytes -= p.payload.len();
        Some(p)
    }

    /// The publishing fast path: no runtime needed, nothing awaited.
    pub fn try_publish(&self, out: Outgoing) -> TryPublish {
        let mut st = lock(&self.state);
        let mut out = Some(out);
        let Some(send) = self.enter(&mut st, &mut out, &mut None) else {
            let payload = out.map(|o| o.payload).unwrap_or_default();
            return TryPublish::WouldWait(payload);
        };
        let n = send.n;
        let fut = self.client.publish_with_reply_and_headers(
            send.subject,
            send.reply,
            send.headers,
            send.payload,
        );
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // The entry was made under this lock, so `leave` finds it.
        match std::future::Future::poll(fut.as_mut(), &mut cx) {
            std::task::Poll::Ready(Ok(())) => TryPublish::Done(Ok(())),
            std::task::Poll::Ready(Err(e)) => {
                let p = self.leave(&mut st, n);
                TryPublish::Done(Err(publish_error(p.as_ref().map_or("", |p| &p.topic), e)))
            }
            // The client's queue is full: nothing was sent.
            std::task::Poll::Pending => match self.leave(&mut st, n) {
                Some(p) => TryPublish::WouldWait(p.payload),
                None => TryPublish::Done(Err(Error::new(
                    ErrorKind::Backend,
                    "nats jetstream: a publish left the pending table while being sent",
                ))),
            },
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
        // Counted as waiting before looking (under the state's lock), so
        // that the confirmer, which looks at the count after settling under
        // that lock, never misses it.
        self.room_waiters.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(&self.room_waiters);
        let send = loop {
            let room = self.room.notified();
            if let Some(send) = self.enter(&mut lock(&self.state), &mut out, &mut confirm) {
                break send;
            }
            room.await;
        };
        drop(waiting);
        let n = send.n;
        if let Err(e) = self
            .client
            .publish_with_reply_and_headers(send.subject, send.reply, send.headers, send.payload)
            .await
        {
            let p = self.leave(&mut lock(&self.state), n);
            self.room.notify_waiters();
            self.settled.notify_waiters();
            return Err(publish_error(p.as_ref().map_or("", |p| &p.topic), e));
        }
        Ok(n)
    }

    /// Wait until every publish accepted before this call is settled; fail
    /// when any publish was given up since the last `flush`.
    pub async fn flush(&self) -> Result<()> {
        let mark = lock(&self.state).pending.next();
        self.flush_waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.flush_waiters);
        loop {
            let settled = self.settled.notified();
            if lock(&self.state)
                .pending
                .oldest()
                .is_none_or(|oldest| oldest >= mark)
            {
                break;
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

    /// Settle entry `n` with `outcome` (the state locked); what is left to
    /// do unlocked goes into `done`.
    fn settle(
        &self,
        st: &mut State,
        n: u64,
        outcome: std::result::Result<(), String>,
        done: &mut Vec<Settled>,
    ) {
        let Some(p) = self.leave(st, n) else { return };
        if let Err(why) = &outcome {
            *st.failed.entry(why.clone()).or_insert(0) += 1;
        }
        if outcome.is_err() || p.confirm.is_some() {
            done.push(Settled { p, outcome });
        }
    }

    /// After a batch of settles: warnings, confirmations, and the waiters
    /// woken (publishers only at the low-water mark).
    fn after_settling(&self, low: bool, done: Vec<Settled>) {
        for Settled { p, outcome } in done {
            if let Err(why) = &outcome {
                tracing::warn!(topic = %p.topic, stream = %p.target.name, "nats jetstream: a publish was not stored: {why} (reported by the next flush)");
            }
            if let Some(tx) = p.confirm {
                let _ = tx.send(outcome.map_err(|why| Error::new(ErrorKind::Backend, why)));
            }
        }
        if low && self.room_waiters.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
        if self.flush_waiters.load(Ordering::Acquire) > 0 {
            self.settled.notify_waiters();
        }
    }

    /// The confirmer: reads PubAcks, and on a clock sends again what needs it.
    async fn confirmer(self: Arc<Self>, mut acks: async_nats::Subscriber, streams: Arc<Streams>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = acks.next() => match m {
                    Some(m) => {
                        // What has arrived is settled under one lock.
                        let mut done = Vec::new();
                        let mut closed = false;
                        let mut st = lock(&self.state);
                        self.on_answer(&mut st, m, &mut done);
                        for _ in 0..ANSWERS_PER_LOCK {
                            match acks.next().now_or_never() {
                                Some(Some(m)) => self.on_answer(&mut st, m, &mut done),
                                Some(None) => {
                                    closed = true;
                                    break;
                                }
                                None => break,
                            }
                        }
                        let low = self.low(&st);
                        drop(st);
                        self.after_settling(low, done);
                        if closed {
                            return;
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => self.sweep(&streams).await,
            }
        }
    }

    fn on_answer(&self, st: &mut State, m: async_nats::Message, done: &mut Vec<Settled>) {
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
            if let Some(p) = st.pending.get_mut(n) {
                p.no_stream = true;
                p.target.lost();
            }
            return;
        }
        match serde_json::from_slice::<PubAck>(&m.payload) {
            Ok(PubAck { error: None }) => self.settle(st, n, Ok(()), done),
            // JetStream temporarily unavailable: sent again later. (A
            // stream at its limits answers 503 too, with its own error code.)
            Ok(PubAck { error: Some(e) })
                if e.error_code().0 == 10008 || (e.code() == 503 && e.error_code().0 == 0) => {}
            Ok(PubAck { error: Some(e) }) => {
                let stream = st
                    .pending
                    .get(n)
                    .map(|p| p.target.name.clone())
                    .unwrap_or_default();
                self.settle(
                    st,
                    n,
                    Err(format!("refused by stream {stream:?}: {e}")),
                    done,
                );
            }
            Err(e) => self.settle(
                st,
                n,
                Err(format!("answered with something other than a PubAck ({e})")),
                done,
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
            for (n, p) in st.pending.iter() {
                if now.duration_since(p.first) > self.ack_timeout {
                    expired.push(n);
                } else if p.no_stream {
                    lost_streams
                        .entry(p.target.name.clone())
                        .or_insert_with(|| p.topic.clone());
                    if now.duration_since(p.last) > NO_STREAM_RETRY {
                        again.push(n);
                    }
                } else if reconnected || now.duration_since(p.last) > self.resend_after {
                    again.push(n);
                }
            }
        }
        let why = format!(
            "not confirmed by the stream within publish_ack_timeout ({})",
            humantime_serde::re::humantime::format_duration(self.ack_timeout)
        );
        if !expired.is_empty() {
            let mut done = Vec::new();
            let mut st = lock(&self.state);
            for n in expired {
                self.settle(&mut st, n, Err(why.clone()), &mut done);
            }
            let low = self.low(&st);
            drop(st);
            self.after_settling(low, done);
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
                let Some(p) = st.pending.get_mut(n) else {
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

#[cfg(test)]
mod tests {
    use super::Table;

    fn pending(t: &Table<&'static str>) -> Vec<(u64, &'static str)> {
        t.iter().map(|(n, p)| (n, *p)).collect()
    }

    #[test]
    fn numbers_are_given_in_order_and_settled_in_order() {
        let mut t = Table::default();
        assert_eq!(t.oldest(), None);
        assert_eq!((t.push("a"), t.push("b"), t.push("c")), (0, 1, 2));
        assert_eq!(
            (t.len(), t.span(), t.oldest(), t.next()),
            (3, 3, Some(0), 3)
        );
        assert_eq!(t.get(1), Some(&"b"));
        assert_eq!(t.remove(0), Some("a"));
        assert_eq!((t.len(), t.span(), t.oldest()), (2, 2, Some(1)));
        assert_eq!(t.remove(1), Some("b"));
        assert_eq!(t.remove(2), Some("c"));
        assert_eq!((t.len(), t.span(), t.oldest(), t.next()), (0, 0, None, 3));
        // Numbers go on after the table emptied.
        assert_eq!(t.push("d"), 3);
        assert_eq!(t.oldest(), Some(3));
    }

    #[test]
    fn settled_out_of_order_leaves_holes_until_the_oldest_goes() {
        let mut t = Table::default();
        for p in ["a", "b", "c", "d", "e"] {
            t.push(p);
        }
        assert_eq!(t.remove(2), Some("c"));
        assert_eq!(t.remove(3), Some("d"));
        // Holes at 2 and 3: still spanned, not pending.
        assert_eq!((t.len(), t.span(), t.oldest()), (3, 5, Some(0)));
        assert_eq!(t.get(2), None);
        assert_eq!(pending(&t), vec![(0, "a"), (1, "b"), (4, "e")]);
        assert_eq!(t.remove(1), Some("b"));
        assert_eq!(t.oldest(), Some(0));
        // The oldest goes: the holes behind it go with it.
        assert_eq!(t.remove(0), Some("a"));
        assert_eq!((t.len(), t.span(), t.oldest()), (1, 1, Some(4)));
        assert_eq!(pending(&t), vec![(4, "e")]);
        // A hole at the back (a publish taken out again) is not given again.
        assert_eq!(t.push("f"), 5);
        assert_eq!(t.remove(5), Some("f"));
        assert_eq!((t.len(), t.span(), t.next()), (1, 2, 6));
        assert_eq!(t.remove(4), Some("e"));
        assert_eq!((t.len(), t.span(), t.oldest(), t.next()), (0, 0, None, 6));
    }

    #[test]
    fn unknown_and_settled_numbers_are_nothing() {
        let mut t = Table::default();
        t.push("a");
        t.push("b");
        assert_eq!(t.remove(0), Some("a"));
        // Settled twice (a PubAck for a publish sent again), before the
        // base, beyond the end, far beyond: nothing, and nothing changes.
        assert_eq!(t.remove(0), None);
        assert_eq!(t.remove(7), None);
        assert_eq!(t.remove(u64::MAX), None);
        assert_eq!(t.get(u64::MAX), None);
        assert!(t.get_mut(0).is_none());
        assert_eq!((t.len(), t.span(), t.oldest()), (1, 1, Some(1)));
        if let Some(p) = t.get_mut(1) {
            *p = "B";
        }
        assert_eq!(t.get(1), Some(&"B"));
    }
}
