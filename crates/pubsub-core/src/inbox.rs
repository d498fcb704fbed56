//! The bounded receive buffer between a backend and the application.
//!
//! Backends push received messages with [`Inbox::deliver`]; the application
//! takes them through `listen()`, `recv()` or the message stream. The buffer
//! holds at most `buffer.capacity` messages and `buffer.max_bytes` payload
//! bytes; when full, the configured [`OverflowPolicy`] decides, and every
//! dropped message is counted in [`Stats::dropped`](crate::Stats).
//! Overflow is logged once when a burst starts and once when it ends, never
//! once per message.
//!
//! A backend that must acknowledge a message only once the application has
//! it (Redis Streams groups) delivers with [`Inbox::deliver_with_ack`]: the
//! callback runs when the message is taken by `recv`/`listen`/the stream,
//! and never for a message that is dropped by overflow or discarded by close.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::backend::Counters;
use crate::config::{BufferConfig, OverflowPolicy};
use crate::Message;

/// Called once when the application takes a message from the inbox, after
/// the buffer's lock is released; it must not block (send to a channel).
pub type OnTaken = Box<dyn FnOnce() + Send + 'static>;

/// A buffered message and its acknowledgement callback, if any.
struct Entry {
    msg: Message,
    on_taken: Option<OnTaken>,
}

/// Result of taking a message from the inbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// A message.
    Message(Message),
    /// Nothing arrived before the timeout.
    Timeout,
    /// The buffer is empty and no subscription is active.
    NotSubscribed,
    /// The handle was closed.
    Closed,
}

struct State {
    queue: VecDeque<Entry>,
    bytes: usize,
    closed: bool,
    subscribed: bool,
    dropped_in_burst: u64,
    blocking_waiters: usize,
    /// Deliveries waiting for room under the `block` policy. Only an upper
    /// bound (a cancelled wait is not subtracted): it spares the wake-up
    /// call on every take when no one waits.
    waiting_senders: usize,
}

struct Shared {
    state: Mutex<State>,
    readable: Notify,
    writable: Notify,
    cond: Condvar,
    capacity: usize,
    max_bytes: usize,
    policy: OverflowPolicy,
    counters: Arc<Counters>,
}

/// A cheap, cloneable handle to one receive buffer.
#[derive(Clone)]
pub struct Inbox {
    shared: Arc<Shared>,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("capacity", &self.shared.capacity)
            .field("max_bytes", &self.shared.max_bytes)
            .field("policy", &self.shared.policy)
            .field("len", &self.len())
            .finish()
    }
}

impl Inbox {
    /// A new empty buffer with the given bounds, counting into `counters`.
    pub fn new(config: &BufferConfig, counters: Arc<Counters>) -> Inbox {
        Inbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::with_capacity(config.capacity.min(1024)),
                    bytes: 0,
                    closed: false,
                    subscribed: false,
                    dropped_in_burst: 0,
                    blocking_waiters: 0,
                    waiting_senders: 0,
                }),
                readable: Notify::new(),
                writable: Notify::new(),
                cond: Condvar::new(),
                capacity: config.capacity.max(1),
                max_bytes: config.max_bytes.max(1),
                policy: config.overflow,
                counters,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent
        // (every update is a single push/pop), so poisoning is ignored.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The counters this inbox counts into.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.shared.counters
    }

    /// The overflow policy.
    pub fn policy(&self) -> OverflowPolicy {
        self.shared.policy
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn full(&self, st: &State, incoming: usize) -> bool {
        !st.queue.is_empty()
            && (st.queue.len() >= self.shared.capacity
                || st.bytes + incoming > self.shared.max_bytes)
    }

    /// Add a received message, applying the overflow policy. With
    /// [`OverflowPolicy::Block`] this waits until there is room (or the
    /// inbox is closed, when the message is discarded).
    pub async fn deliver(&self, msg: Message) {
        self.deliver_inner(msg, None).await
    }

    /// Like [`Inbox::deliver`], and `on_taken` runs when the application
    /// takes the message. It does not run if the message is dropped by the
    /// overflow policy or discarded by close, or if this future is dropped
    /// before the message was buffered.
    pub async fn deliver_with_ack(&self, msg: Message, on_taken: OnTaken) {
        self.deliver_inner(msg, Some(on_taken)).await
    }

    /// Most messages a backend should gather for one [`Inbox::deliver_batch`].
    pub const BATCH: usize = 64;
    /// Most payload bytes a backend should gather for one batch: under the
    /// `block` policy, what waits outside the buffer's bound.
    pub const BATCH_BYTES: usize = 1 << 20;

    /// Add the messages of `batch`, in order, emptying it: while they fit,
    /// under one lock and with one wake-up for all of them; the rest (when
    /// the buffer fills) one by one as with [`Inbox::deliver`]. For a
    /// backend that reads several messages from its client at once.
    pub async fn deliver_batch(&self, batch: &mut Vec<Message>) {
        let mut rest = batch.drain(..);
        let mut overflow = None;
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            let mut pushed = 0u64;
            for msg in rest.by_ref() {
                if self.full(&st, msg.payload.len()) {
                    overflow = Some(msg);
                    break;
                }
                self.push_quiet(&mut st, msg, None);
                pushed += 1;
            }
            self.shared.counters.add_received(pushed);
            self.wake_readers(st, pushed);
        }
        for msg in overflow.into_iter().chain(rest) {
            self.deliver(msg).await;
        }
    }

    async fn deliver_inner(&self, msg: Message, mut on_taken: Option<OnTaken>) {
        self.shared.counters.add_received(1);
        let size = msg.payload.len();
        loop {
            let notified = {
                let mut st = self.lock();
                if st.closed {
                    return;
                }
                if !self.full(&st, size) {
                    self.push(st, msg, on_taken.take());
                    return;
                }
                match self.shared.policy {
                    OverflowPolicy::DropNewest => {
                        self.note_drop(&mut st);
                        return;
                    }
                    OverflowPolicy::DropOldest => {
                        while self.full(&st, size) {
                            if let Some(old) = st.queue.pop_front() {
                                st.bytes -= old.msg.payload.len();
                                self.note_drop(&mut st);
                            }
                        }
                        // The burst goes on: push without logging its end.
                        st.bytes += size;
                        st.queue.push_back(Entry {
                            msg,
                            on_taken: on_taken.take(),
                        });
                        self.wake_readers(st, 1);
                        return;
                    }
                    OverflowPolicy::Block => {
                        st.waiting_senders += 1;
                        let notified = self.shared.writable.notified();
                        drop(st);
                        notified
                    }
                }
            };
            notified.await;
            let mut st = self.lock();
            st.waiting_senders = st.waiting_senders.saturating_sub(1);
        }
    }

    fn push(&self, mut st: MutexGuard<'_, State>, msg: Message, on_taken: Option<OnTaken>) {
        self.push_quiet(&mut st, msg, on_taken);
        self.wake_readers(st, 1);
    }

    /// Push without waking a reader (the caller wakes them).
    fn push_quiet(&self, st: &mut State, msg: Message, on_taken: Option<OnTaken>) {
        // A burst of drops ends once the reader has caught up to half the
        // buffer, not as soon as one slot frees: a reader just slower than
        // the arrivals would otherwise start a new "burst" (and a warning)
        // for nearly every message.
        if st.dropped_in_burst > 0
            && st.queue.len() <= self.shared.capacity / 2
            && st.bytes <= self.shared.max_bytes / 2
        {
            tracing::info!(
                dropped = st.dropped_in_burst,
                "receive buffer has room again; {} messages were dropped during the overflow",
                st.dropped_in_burst
            );
            st.dropped_in_burst = 0;
        }
        st.bytes += msg.payload.len();
        st.queue.push_back(Entry { msg, on_taken });
    }

    /// Unlock, then wake a reader for one new message, every waiting
    /// reader for more. Woken with the lock still held, a reader (on
    /// another thread) would find it taken and sleep on the mutex: a futex
    /// wait and wake more per message, about one per round trip in the
    /// latency benchmark. No wake-up is lost after the unlock: a reader
    /// checks the queue under the lock before it waits and makes its
    /// `Notified` there (`notify_one` keeps a permit, `notify_waiters`
    /// reaches a `Notified` made before it), and a thread in
    /// `Condvar::wait` was counted in `blocking_waiters`.
    fn wake_readers(&self, st: MutexGuard<'_, State>, pushed: u64) {
        let blocking = st.blocking_waiters > 0;
        drop(st);
        match pushed {
            0 => {}
            1 => {
                if blocking {
                    self.shared.cond.notify_one();
                }
                self.shared.readable.notify_one();
            }
            _ => {
                if blocking {
                    self.shared.cond.notify_all();
                }
                self.shared.readable.notify_waiters();
            }
        }
    }

    fn note_drop(&self, st: &mut State) {
        if st.dropped_in_burst == 0 {
            tracing::warn!(
                capacity = self.shared.capacity,
                max_bytes = self.shared.max_bytes,
                policy = ?self.shared.policy,
                "receive buffer full: the application reads slower than messages arrive; dropping messages (counted in stats().dropped)"
            );
        }
        st.dropped_in_burst += 1;
        self.shared.counters.add_dropped(1);
    }

    /// Pop the next entry and unlock, or give the lock back when the
    /// queue is empty. Deliveries waiting for room are woken after the
    /// unlock (see [`Inbox::wake_readers`]; a waiting delivery made its
    /// `Notified` under the lock, and `notify_waiters` reaches it even if
    /// it is not polled yet); the entry's callback runs unlocked too.
    fn take<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
    ) -> std::result::Result<Recv, MutexGuard<'a, State>> {
        let Some(entry) = st.queue.pop_front() else {
            return Err(st);
        };
        st.bytes -= entry.msg.payload.len();
        let wake_senders = self.shared.policy == OverflowPolicy::Block && st.waiting_senders > 0;
        drop(st);
        if wake_senders {
            self.shared.writable.notify_waiters();
        }
        if let Some(f) = entry.on_taken {
            f();
        }
        Ok(Recv::Message(entry.msg))
    }

    /// Take the next message, waiting for one.
    pub async fn recv(&self) -> Recv {
        loop {
            let notified = {
                let st = self.lock();
                if st.closed {
                    return Recv::Closed;
                }
                let st = match self.take(st) {
                    Ok(r) => return r,
                    Err(st) => st,
                };
                if !st.subscribed {
                    return Recv::NotSubscribed;
                }
                let notified = self.shared.readable.notified();
                drop(st);
                notified
            };
            notified.await;
        }
    }

    /// Take the next message, blocking the calling thread for at most
    /// `timeout` (forever with `None`). Needs no async runtime.
    pub fn recv_blocking(&self, timeout: Option<Duration>) -> Recv {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if st.closed {
                return Recv::Closed;
            }
            st = match self.take(st) {
                Ok(r) => return r,
                Err(st) => st,
            };
            if !st.subscribed {
                return Recv::NotSubscribed;
            }
            st.blocking_waiters += 1;
            st = match deadline {
                None => self.shared.cond.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        st.blocking_waiters -= 1;
                        return Recv::Timeout;
                    }
                    self.shared
                        .cond
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            st.blocking_waiters -= 1;
        }
    }

    /// Mark whether any subscription is active. With none, and an empty
    /// buffer, receivers get [`Recv::NotSubscribed`] instead of waiting forever.
    pub fn set_subscribed(&self, subscribed: bool) {
        let mut st = self.lock();
        st.subscribed = subscribed;
        if !subscribed {
            self.wake_all(&st);
        }
    }

    fn wake_all(&self, _st: &State) {
        self.shared.cond.notify_all();
        self.shared.readable.notify_waiters();
        self.shared.writable.notify_waiters();
    }

    /// Close: discard waiting messages and wake every waiter.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue.clear();
        st.bytes = 0;
        self.wake_all(&st);
    }

    /// Whether [`Inbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(capacity: usize, max_bytes: usize, overflow: OverflowPolicy) -> Inbox {
        let c = BufferConfig {
            capacity,
            max_bytes,
            overflow,
        };
        let inbox = Inbox::new(&c, Arc::new(Counters::default()));
        inbox.set_subscribed(true);
        inbox
    }

    fn msg(i: u32) -> Message {
        Message::new("t", i.to_be_bytes().to_vec())
    }

    fn id(r: Recv) -> u32 {
        match r {
            Recv::Message(m) => u32::from_be_bytes(m.payload[..].try_into().unwrap()),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn batch(ids: std::ops::Range<u32>) -> Vec<Message> {
        ids.map(msg).collect()
    }

    #[tokio::test]
    async fn a_batch_applies_the_policy_from_the_message_that_overflows() {
        for (policy, kept) in [
            (OverflowPolicy::DropOldest, [7, 8, 9]),
            (OverflowPolicy::DropNewest, [0, 1, 2]),
        ] {
            let ib = inbox(3, 1 << 20, policy);
            let mut b = batch(0..10);
            ib.deliver_batch(&mut b).await;
            assert!(b.is_empty(), "the batch is emptied");
            let got: Vec<u32> = (0..3).map(|_| id(ib.recv_blocking(None))).collect();
            assert_eq!(got, kept, "{policy:?}");
            let s = ib.counters().snapshot();
            assert_eq!((s.received, s.dropped), (10, 7), "{policy:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_under_block_waits_for_room_and_keeps_order() {
        let ib = inbox(2, 1 << 20, OverflowPolicy::Block);
        let reader = {
            let ib = ib.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..6 {
                    match tokio::time::timeout(Duration::from_secs(5), ib.recv()).await {
                        Ok(r) => got.push(id(r)),
                        Err(_) => break,
                    }
                }
                got
            })
        };
        let mut b = batch(0..6);
        tokio::time::timeout(Duration::from_secs(5), ib.deliver_batch(&mut b))
            .await
            .expect("the batch went in as the reader made room");
        assert_eq!(reader.await.unwrap(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(ib.counters().snapshot().dropped, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_wakes_every_waiting_reader() {
        let ib = inbox(16, 1 << 20, OverflowPolicy::DropOldest);
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let ib = ib.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(5), ib.recv())
                        .await
                        .map(id)
                })
            })
            .collect();
        // Let all three wait on the empty buffer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        ib.deliver_batch(&mut batch(0..3)).await;
        let mut got = Vec::new();
        for r in readers {
            got.push(r.await.unwrap().expect("a reader was left asleep"));
        }
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_batch_into_a_closed_inbox_is_discarded() {
        let ib = inbox(4, 1 << 20, OverflowPolicy::Block);
        ib.close();
        let mut b = batch(0..3);
        ib.deliver_batch(&mut b).await;
        assert!(b.is_empty());
        assert_eq!(ib.len(), 0);
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest() {
        let ib = inbox(3, 1 << 20, OverflowPolicy::DropOldest);
        for i in 0..10 {
            ib.deliver(msg(i)).await;
        }
        assert_eq!(ib.len(), 3);
        let got: Vec<u32> = (0..3).map(|_| id(ib.recv_blocking(None))).collect();
        assert_eq!(got, [7, 8, 9]);
        let s = ib.counters().snapshot();
        assert_eq!((s.received, s.dropped), (10, 7));
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_oldest() {
        let ib = inbox(3, 1 << 20, OverflowPolicy::DropNewest);
        for i in 0..10 {
            ib.deliver(msg(i)).await;
        }
        let got: Vec<u32> = (0..3).map(|_| id(ib.recv_blocking(None))).collect();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(ib.counters().snapshot().dropped, 7);
    }

    #[tokio::test]
    async fn byte_bound_applies() {
        let ib = inbox(1000, 10, OverflowPolicy::DropNewest);
        for i in 0..5 {
            ib.deliver(msg(i)).await; // 4 bytes each: two fit in 10 bytes
        }
        assert_eq!(ib.len(), 2);
        // One message larger than the whole bound still gets through an empty buffer.
        let big = inbox(10, 4, OverflowPolicy::DropNewest);
        big.deliver(Message::new("t", vec![0u8; 100])).await;
        assert_eq!(big.len(), 1);
    }

    #[tokio::test]
    async fn block_waits_for_room_and_loses_nothing() {
        let ib = inbox(2, 1 << 20, OverflowPolicy::Block);
        let tx = ib.clone();
        let producer = tokio::spawn(async move {
            for i in 0..100 {
                tx.deliver(msg(i)).await;
            }
        });
        let mut got = Vec::new();
        while got.len() < 100 {
            match tokio::time::timeout(Duration::from_secs(5), ib.recv()).await {
                Ok(r) => got.push(id(r)),
                Err(_) => panic!("stalled after {} messages", got.len()),
            }
        }
        producer.await.unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(ib.counters().snapshot().dropped, 0);
    }

    #[test]
    fn blocking_recv_times_out_and_sees_close_and_unsubscribe() {
        let ib = inbox(10, 1 << 20, OverflowPolicy::DropOldest);
        let t0 = Instant::now();
        assert_eq!(
            ib.recv_blocking(Some(Duration::from_millis(50))),
            Recv::Timeout
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));

        let ib2 = ib.clone();
        let waiter = std::thread::spawn(move || ib2.recv_blocking(None));
        std::thread::sleep(Duration::from_millis(50));
        ib.set_subscribed(false);
        assert_eq!(waiter.join().unwrap(), Recv::NotSubscribed);

        ib.set_subscribed(true);
        let ib3 = ib.clone();
        let waiter = std::thread::spawn(move || ib3.recv_blocking(None));
        std::thread::sleep(Duration::from_millis(50));
        ib.close();
        assert_eq!(waiter.join().unwrap(), Recv::Closed);
    }

    #[tokio::test]
    async fn on_taken_runs_when_taken_never_for_dropped_messages() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let ib = inbox(2, 1 << 20, OverflowPolicy::DropOldest);
        let acked = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3u32 {
            let acked = acked.clone();
            ib.deliver_with_ack(msg(i), Box::new(move || acked.lock().unwrap().push(i)))
                .await;
        }
        assert!(acked.lock().unwrap().is_empty(), "nothing taken yet");
        assert_eq!(id(ib.recv().await), 1);
        assert_eq!(*acked.lock().unwrap(), [1], "0 was dropped, not acked");
        assert_eq!(id(ib.recv_blocking(None)), 2);
        assert_eq!(*acked.lock().unwrap(), [1, 2]);
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        ib.deliver_with_ack(
            msg(9),
            Box::new(move || {
                c.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .await;
        ib.close();
        assert_eq!(
            count.load(Ordering::Relaxed),
            0,
            "discarded by close, not acked"
        );
    }

    #[tokio::test]
    async fn async_recv_wakes_on_delivery_from_another_thread() {
        let ib = inbox(10, 1 << 20, OverflowPolicy::DropOldest);
        let tx = ib.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            futures::executor::block_on(tx.deliver(msg(42)));
        });
        let r = tokio::time::timeout(Duration::from_secs(5), ib.recv())
            .await
            .expect("woken");
        assert_eq!(id(r), 42);
    }
}
