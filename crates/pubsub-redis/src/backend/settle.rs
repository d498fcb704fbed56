//! Settling stream entries. The **acker** task of a handle sends, in the
//! order they were asked for: `XACK` (batched per stream), the resets of an
//! entry's idle time that `nak` and `in_progress` are made of, and dead
//! letters. Redis Streams have no negative acknowledgement and no delivery
//! limit: both are this library's, over the pending entries list.
//!
//! - `nak(delay)`: the entry stays pending at this consumer with its idle
//!   time set (`XCLAIM ... IDLE ... JUSTID`) so that the readers' claim of
//!   entries idle for `ack_wait` takes it exactly `delay` from now; a delay
//!   longer than `ack_wait` is reached by setting it again on the way.
//! - `in_progress`: its idle time back to zero, so it is not claimed for
//!   another `ack_wait`.
//! - `term`, and past `max_deliver`: the entry is written to the dead-letter
//!   topic and acknowledged in one `MULTI`/`EXEC` (in a cluster, where the
//!   two streams may live on different nodes, written first and then
//!   acknowledged: a crash in between writes it twice, never loses it).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_core::{dead_letter, Counters, Error, Result, Settle};
use redis::{RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

use super::connection::Conn;
use super::entries::Body;
use super::publisher::xadd;
use crate::options::{Options, COMMAND_TIMEOUT};

/// The id of a stream entry, `<ms>-<seq>`, as two numbers: an
/// acknowledgement copies it from the reader through the application's
/// `ack` to the acker's `XACK` without a `String` (and its allocation, and
/// its release on another thread) at each step. An id of another form,
/// which Redis does not give out, is kept as text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum EntryId {
    Seq(u64, u64),
    Text(Box<str>),
}

impl EntryId {
    pub fn new(id: &str) -> EntryId {
        let parsed = id
            .split_once('-')
            .and_then(|(ms, seq)| Some(EntryId::Seq(ms.parse().ok()?, seq.parse().ok()?)));
        parsed.unwrap_or_else(|| EntryId::Text(id.into()))
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryId::Seq(ms, seq) => write!(f, "{ms}-{seq}"),
            EntryId::Text(id) => f.write_str(id),
        }
    }
}

impl redis::ToRedisArgs for EntryId {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        match self {
            EntryId::Seq(ms, seq) => {
                // Two u64 and the dash: at most 41 bytes.
                let mut buf = [0u8; 41];
                let mut at = digits(&mut buf, 0, *ms);
                buf[at] = b'-';
                at = digits(&mut buf, at + 1, *seq);
                out.write_arg(&buf[..at]);
            }
            EntryId::Text(id) => out.write_arg(id.as_bytes()),
        }
    }
}

/// Write the decimal digits of `n` into `buf` from `at`; returns the end.
fn digits(buf: &mut [u8; 41], at: usize, mut n: u64) -> usize {
    let mut tmp = [0u8; 20];
    let mut len = 0;
    loop {
        tmp[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in tmp[..len].iter().rev().enumerate() {
        buf[at + i] = *d;
    }
    at + len
}

/// A stream and a group of it: one per reader, shared by the
/// acknowledgements of its entries.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct StreamGroup {
    pub stream: Arc<str>,
    pub group: Arc<str>,
}

/// A stream entry to settle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct AckItem {
    pub key: Arc<StreamGroup>,
    pub id: EntryId,
}

pub(super) enum AckMsg {
    Ack(AckItem),
    /// Deliver again `delay` from now (set its idle time).
    Retry(AckItem, Duration),
    /// Still in progress: its idle time back to zero.
    Touch(AckItem),
    /// To the dead letter (or discarded), and acknowledged.
    GiveUp(Box<GiveUp>),
    /// Answered once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

pub(super) struct GiveUp {
    item: AckItem,
    body: Body,
    attempts: u32,
    reason: &'static str,
}

/// The manual-ack settings of one handle.
pub(super) struct Manual {
    pub ack_wait: Duration,
    pub max_deliver: u32,
    pub dead_letter_topic: Option<String>,
    counters: Arc<Counters>,
    warned_discard: AtomicBool,
}

impl Manual {
    pub fn new(config: &pubsub_core::Config, counters: Arc<Counters>) -> Manual {
        Manual {
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
            dead_letter_topic: config.dead_letter_topic.clone(),
            counters,
            warned_discard: AtomicBool::new(false),
        }
    }

    /// Past `max_deliver` or `term`: to the acker, which writes the dead
    /// letter and acknowledges the entry.
    pub fn give_up(
        &self,
        tx: &mpsc::UnboundedSender<AckMsg>,
        item: AckItem,
        body: Body,
        attempts: u32,
        reason: &'static str,
    ) {
        let _ = tx.send(AckMsg::GiveUp(Box::new(GiveUp {
            item,
            body,
            attempts,
            reason,
        })));
    }
}

/// What the settle handles of one reader's messages share, made once per
/// subscription: a delivered message clones one `Arc` for all of it.
pub(super) struct Settler {
    pub manual: Arc<Manual>,
    pub tx: mpsc::UnboundedSender<AckMsg>,
    pub key: Arc<StreamGroup>,
}

/// The settle handle of one delivered entry.
pub(super) struct StreamSettle {
    settler: Arc<Settler>,
    id: EntryId,
    attempt: u32,
    /// Kept for a dead letter (shares the payload's bytes, no copy).
    body: Body,
}

impl StreamSettle {
    pub fn new(settler: Arc<Settler>, id: EntryId, attempt: u32, body: Body) -> StreamSettle {
        StreamSettle {
            settler,
            id,
            attempt,
            body,
        }
    }

    fn item(&self) -> AckItem {
        AckItem {
            key: self.settler.key.clone(),
            id: self.id.clone(),
        }
    }

    fn send(&self, msg: AckMsg) -> Result<()> {
        self.settler.tx.send(msg).map_err(|_| Error::closed())
    }

    fn give_up(&self, reason: &'static str) -> Result<()> {
        if self.settler.tx.is_closed() {
            return Err(Error::closed());
        }
        let body = Body {
            payload: self.body.payload.clone(),
            headers: self.body.headers.clone(),
        };
        self.settler
            .manual
            .give_up(&self.settler.tx, self.item(), body, self.attempt, reason);
        Ok(())
    }
}

impl Settle for StreamSettle {
    fn ack(&self) -> Result<()> {
        self.send(AckMsg::Ack(self.item()))
    }

    fn nak(&self, delay: Duration) -> Result<()> {
        if self.attempt >= self.settler.manual.max_deliver {
            // The last attempt: to the dead letter at once, holding up nothing.
            return self.give_up("max_deliver");
        }
        self.send(AckMsg::Retry(self.item(), delay))
    }

    fn in_progress(&self) -> Result<()> {
        self.send(AckMsg::Touch(self.item()))
    }

    fn term(&self) -> Result<()> {
        self.give_up("term")
    }
}

/// The acker of one handle: see the module documentation. It ends when
/// every sender is gone (the handle and the messages it delivered).
pub(super) async fn acker(
    mut rx: mpsc::UnboundedReceiver<AckMsg>,
    mut conn: Conn,
    opts: Arc<Options>,
    manual: Option<Arc<Manual>>,
) {
    // Retries whose delay is longer than ack_wait: set again on the way.
    let mut later: BTreeMap<(Instant, AckItem), Duration> = BTreeMap::new();
    loop {
        let first = match later.keys().next().map(|(at, _)| *at) {
            Some(at) => tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(at.into()) => {
                    let ((_, item), left) = later.pop_first().expect("an entry is due");
                    retry(&mut conn, &opts, manual.as_deref(), item, left, &mut later).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(first) = first else { return };
        let mut acks = Acks::default();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            taken += 1;
            match msg {
                AckMsg::Ack(i) => acks.add(i),
                // Acknowledgements asked for before it go first.
                other => {
                    send_acks(&mut conn, &opts, std::mem::take(&mut acks)).await;
                    match other {
                        AckMsg::Retry(item, delay) => {
                            retry(&mut conn, &opts, manual.as_deref(), item, delay, &mut later)
                                .await
                        }
                        AckMsg::Touch(item) => set_idle(&mut conn, &opts, &item, 0).await,
                        AckMsg::GiveUp(g) => {
                            if let Some(m) = &manual {
                                give_up(&mut conn, &opts, m, *g).await;
                            }
                        }
                        AckMsg::Flush(tx) => flushes.push(tx),
                        AckMsg::Ack(_) => unreachable!("handled above"),
                    }
                }
            }
            if taken < 1000 {
                next = rx.try_recv().ok();
            }
        }
        send_acks(&mut conn, &opts, acks).await;
        for tx in flushes {
            let _ = tx.send(());
        }
    }
}

/// Acknowledgements gathered for one `XACK` per stream and group.
#[derive(Default)]
struct Acks(Vec<(Arc<StreamGroup>, Vec<EntryId>)>);

impl Acks {
    fn add(&mut self, item: AckItem) {
        // Nearly always the reader of the last one (one per subscription).
        let found = self
            .0
            .iter_mut()
            .rev()
            .find(|(k, _)| Arc::ptr_eq(k, &item.key) || *k == item.key);
        match found {
            Some((_, ids)) => ids.push(item.id),
            None => self.0.push((item.key, vec![item.id])),
        }
    }
}

async fn send_acks(conn: &mut Conn, opts: &Options, acks: Acks) {
    for (key, ids) in acks.0 {
        let StreamGroup { stream, group } = &*key;
        // Room for every id at once, instead of growing the buffer as it fills.
        let mut cmd = redis::Cmd::with_capacity(
            3 + ids.len(),
            4 + stream.len() + group.len() + 24 * ids.len(),
        );
        cmd.arg("XACK").arg(&**stream).arg(&**group).arg(&ids);
        if let Err(e) = bounded(cmd.query_async::<Value>(conn)).await {
            // Unacknowledged entries stay pending and are claimed again later.
            tracing::warn!(address = %opts.shown, stream = %stream, group = %group, error = %e, "XACK failed; the entries will be delivered again");
        }
    }
}

/// Make `item` claimable `delay` from now: its idle time set to
/// `ack_wait - delay`; a longer delay is set again on the way.
async fn retry(
    conn: &mut Conn,
    opts: &Options,
    manual: Option<&Manual>,
    item: AckItem,
    delay: Duration,
    later: &mut BTreeMap<(Instant, AckItem), Duration>,
) {
    let Some(m) = manual else { return };
    if delay <= m.ack_wait {
        let idle = m.ack_wait - delay;
        set_idle(conn, opts, &item, idle.as_millis() as u64).await;
    } else {
        set_idle(conn, opts, &item, 0).await;
        // Halfway through ack_wait, what is left of the delay is shorter by that much.
        let step = m.ack_wait / 2;
        later.insert((Instant::now() + step, item), delay - step);
    }
}

/// `XCLAIM` the entry to itself with the given idle time (`JUSTID`: its
/// delivery count stays as it is).
async fn set_idle(conn: &mut Conn, opts: &Options, item: &AckItem, idle_ms: u64) {
    let cmd = redis::cmd("XCLAIM")
        .arg(&*item.key.stream)
        .arg(&*item.key.group)
        .arg(&opts.consumer)
        .arg(0)
        .arg(&item.id)
        .arg("IDLE")
        .arg(idle_ms)
        .arg("JUSTID")
        .to_owned();
    if let Err(e) = bounded(cmd.query_async::<Value>(conn)).await {
        tracing::warn!(address = %opts.shown, stream = %item.key.stream, id = %item.id, error = %e, "XCLAIM to set an entry's idle time failed; it is delivered again after ack_wait");
    }
}

/// Write the dead letter and acknowledge the entry, in one transaction
/// where both streams are on one server; without a dead-letter topic,
/// acknowledge, count and log (once per handle).
async fn give_up(conn: &mut Conn, opts: &Options, m: &Manual, g: GiveUp) {
    let GiveUp {
        item,
        body,
        attempts,
        reason,
    } = g;
    let mut ack = redis::cmd("XACK");
    ack.arg(&*item.key.stream)
        .arg(&*item.key.group)
        .arg(&item.id);
    let Some(dlq) = &m.dead_letter_topic else {
        if bounded(ack.query_async::<Value>(conn)).await.is_ok() {
            m.counters.add_discarded(1);
        }
        if !m.warned_discard.swap(true, Ordering::Relaxed) {
            tracing::warn!(stream = %item.key.stream, reason, "redis: a message was given up ({reason}) and discarded; set dead_letter_topic to keep such messages (counted in stats().discarded; logged once per handle)");
        }
        return;
    };
    let mut headers = body.headers;
    headers.insert(dead_letter::REASON, reason);
    headers.insert(dead_letter::TOPIC, &*item.key.stream);
    headers.insert(dead_letter::ATTEMPTS, attempts.to_string());
    headers.insert(dead_letter::ID, item.id.to_string());
    let add = xadd(opts, dlq, &body.payload, &headers);
    let written: RedisResult<()> = match conn {
        Conn::Single(_) => {
            let mut tx = redis::pipe();
            tx.atomic().add_command(add).add_command(ack);
            bounded(tx.query_async::<Value>(conn)).await.map(|_| ())
        }
        // The two streams may be on different nodes: no transaction.
        Conn::Cluster(_) => match bounded(add.query_async::<Value>(conn)).await {
            Ok(_) => bounded(ack.query_async::<Value>(conn)).await.map(|_| ()),
            Err(e) => Err(e),
        },
    };
    match written {
        Ok(()) => m.counters.add_dead_lettered(1),
        Err(e) => {
            tracing::warn!(address = %opts.shown, stream = %item.key.stream, dead_letter = %dlq, error = %e, "writing a dead letter failed; the entry stays pending and is tried again after ack_wait");
        }
    }
}

async fn bounded<T>(fut: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer from Redis",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ToRedisArgs;

    #[test]
    fn entry_ids_are_numbers_and_written_back_as_redis_gave_them() {
        for id in [
            "0-0",
            "1-2",
            "1700000000123-0",
            "18446744073709551615-18446744073709551615",
        ] {
            let e = EntryId::new(id);
            assert!(matches!(e, EntryId::Seq(..)), "{id}");
            assert_eq!(e.to_string(), id);
            assert_eq!(e.to_redis_args(), vec![id.as_bytes().to_vec()]);
        }
        // Not the form Redis gives out: kept as it is.
        for id in [
            "",
            "5",
            "a-1",
            "1-",
            "-1",
            "1-2-3",
            "18446744073709551616-0",
        ] {
            let e = EntryId::new(id);
            assert_eq!(e, EntryId::Text(id.into()), "{id}");
            assert_eq!(e.to_redis_args(), vec![id.as_bytes().to_vec()]);
        }
        assert!(
            EntryId::new("1-9") < EntryId::new("1-10"),
            "ordered as numbers"
        );
    }

    #[test]
    fn acknowledgements_are_gathered_per_stream_and_group() {
        let key = |s: &str, g: &str| {
            Arc::new(StreamGroup {
                stream: s.into(),
                group: g.into(),
            })
        };
        let (a, b) = (key("s", "g"), key("s", "h"));
        let mut acks = Acks::default();
        for (k, id) in [(&a, "1-1"), (&b, "1-2"), (&a, "1-3")] {
            acks.add(AckItem {
                key: k.clone(),
                id: EntryId::new(id),
            });
        }
        // An equal key made elsewhere joins the same XACK.
        acks.add(AckItem {
            key: key("s", "g"),
            id: EntryId::new("1-4"),
        });
        let ids: Vec<(String, Vec<String>)> = acks
            .0
            .iter()
            .map(|(k, ids)| {
                (
                    k.group.to_string(),
                    ids.iter().map(|i| i.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("g".into(), vec!["1-1".into(), "1-3".into(), "1-4".into()]),
                ("h".into(), vec!["1-2".into()]),
            ]
        );
    }
}
