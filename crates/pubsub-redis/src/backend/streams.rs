//! `streams` mode: one reader per subscribed topic on a connection of its
//! own (`XREAD` / `XREADGROUP ... BLOCK`, its response timeout longer than
//! the block time), plus the acker ([`super::settle`]).
//!
//! In auto ack mode a group entry is acknowledged once the application has
//! taken it. In manual ack mode every subscription reads through a consumer
//! group (a plain one through a group of its own, `pubsub-plain-<consumer>`,
//! so that it still gets every entry), the application settles each entry,
//! and entries left pending longer than `ack_wait` (at any member, this one
//! included) are claimed again with `XAUTOCLAIM` and delivered with the
//! attempt Redis counted; past `max_deliver` they go to the dead letter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_core::sync::{lock, AbortOnDrop};
use pubsub_core::{AckMode, BackendContext, Error, Inbox, Message, Result};
use redis::streams::StreamPendingCountReply;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc;

use super::connection::{open, Conn};
use super::entries::{autoclaim_reply, entries, read_reply, Body, Entry};
use super::settle::{AckItem, AckMsg, EntryId, Manual, Settler, StreamGroup, StreamSettle};
use super::RedisBackend;
use crate::error::is_connection_error;
use crate::options::{Options, PushCallback, COMMAND_TIMEOUT};

/// A subscribed stream: its reader, and the group made for it alone (a
/// plain subscription in manual ack mode), deleted when it ends, or, in
/// manual ack mode, the caller's group, where what is still pending at
/// this consumer is released at unsubscribe and close.
pub(super) struct Subscription {
    pub reader: AbortOnDrop,
    pub private_group: Option<Arc<str>>,
    pub shared_group: Option<Arc<str>>,
}

impl RedisBackend {
    pub(super) async fn subscribe_stream(&self, topic: &str, group: Option<&str>) -> Result<()> {
        let mut conn = self.conn()?;
        let manual = self.manual.clone();
        // Manual ack needs a pending list: a plain subscription gets a group
        // of its own.
        let private_group: Option<Arc<str>> = match (group, &manual) {
            (None, Some(_)) => Some(Arc::from(format!("pubsub-plain-{}", self.opts.consumer))),
            _ => None,
        };
        let shared_group: Option<Arc<str>> = group.filter(|_| manual.is_some()).map(Arc::from);
        let group: Option<Arc<str>> = group.map(Arc::from).or_else(|| private_group.clone());
        let start = match &group {
            Some(g) => {
                self.create_group(&mut conn, topic, g).await?;
                ">".to_string()
            }
            None => self.last_id(&mut conn, topic).await?,
        };
        // The connection manager reconnects by itself, often without the
        // reader seeing an error: its disconnection notice is the signal.
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let on_push: PushCallback = Arc::new(move |info: PushInfo| {
            if info.kind == PushKind::Disconnection {
                flag.store(true, Ordering::Release);
            }
            Ok(())
        });
        let read_timeout = self.opts.redis.stream_block + COMMAND_TIMEOUT;
        let reader_conn = open(&self.opts, Some(on_push), read_timeout).await?;
        let ack_tx = lock(&self.ack_tx).clone().ok_or_else(Error::closed)?;
        let topic: Arc<str> = Arc::from(topic);
        let key = group.clone().map(|group| {
            Arc::new(StreamGroup {
                stream: topic.clone(),
                group,
            })
        });
        let settler = match (&key, &manual) {
            (Some(key), Some(manual)) => Some(Arc::new(Settler {
                manual: manual.clone(),
                tx: ack_tx.clone(),
                key: key.clone(),
            })),
            _ => None,
        };
        let reader = StreamReader {
            topic: topic.clone(),
            group,
            key,
            settler,
            conn: reader_conn,
            ctx: self.ctx.clone(),
            opts: self.opts.clone(),
            manual,
            ack_tx,
            last_id: start,
            dropped,
        };
        let sub = Subscription {
            reader: AbortOnDrop::new(tokio::spawn(reader.run())),
            private_group,
            shared_group,
        };
        lock(&self.readers).insert(topic.to_string(), sub);
        Ok(())
    }

    async fn create_group(&self, conn: &mut Conn, topic: &str, g: &str) -> Result<()> {
        let created: RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(topic)
            .arg(g)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.err(
                &format!("XGROUP CREATE {topic:?} {g:?} (stream group subscribe)"),
                e,
            )),
        }
    }

    /// The id of the newest entry: a plain reader reads what comes after it.
    async fn last_id(&self, conn: &mut Conn, topic: &str) -> Result<String> {
        let last: Value = self
            .bounded(
                &format!("XREVRANGE {topic:?} (stream subscribe)"),
                redis::cmd("XREVRANGE")
                    .arg(topic)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async::<Value>(conn),
            )
            .await?;
        Ok(entries(last)
            .into_iter()
            .next()
            .map(|e| e.id)
            .unwrap_or_else(|| "0-0".to_string()))
    }

    /// At unsubscribe and close in manual ack mode: the entries still
    /// pending at this consumer in `group` (held unsettled by the
    /// application, in the receive buffer, or in a read the reader's end
    /// cut off) are released at once, as `nak(0)` would
    /// release them (idle time set to `ack_wait`, which the other members'
    /// claim takes), instead of waiting out `ack_wait`. Best effort and
    /// bounded: a failure leaves them to be claimed after `ack_wait`.
    pub(super) async fn release_pending(&self, topic: &str, group: &str) {
        let (Some(m), Ok(mut conn)) = (&self.manual, self.conn()) else {
            return;
        };
        let idle = m.ack_wait.as_millis() as u64;
        let consumer = &self.opts.consumer;
        let release = async {
            let mut from = "-".to_string();
            for _ in 0..100 {
                let page: StreamPendingCountReply = redis::cmd("XPENDING")
                    .arg(topic)
                    .arg(group)
                    .arg(&from)
                    .arg("+")
                    .arg(1000)
                    .arg(consumer)
                    .query_async(&mut conn)
                    .await?;
                let Some(last) = page.ids.last() else { break };
                from = format!("({}", last.id);
                let ids: Vec<&str> = page.ids.iter().map(|p| p.id.as_str()).collect();
                redis::cmd("XCLAIM")
                    .arg(topic)
                    .arg(group)
                    .arg(consumer)
                    .arg(0)
                    .arg(&ids)
                    .arg("IDLE")
                    .arg(idle)
                    .arg("JUSTID")
                    .query_async::<Value>(&mut conn)
                    .await?;
                if ids.len() < 1000 {
                    break;
                }
            }
            RedisResult::Ok(())
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, release).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(stream = topic, group, error = %e, "releasing pending entries failed; they are claimed after ack_wait")
            }
            Err(_) => {
                tracing::warn!(
                    stream = topic,
                    group,
                    "releasing pending entries timed out; they are claimed after ack_wait"
                )
            }
        }
    }

    /// Delete the group made for a plain subscription in manual ack mode
    /// (best effort: a process that dies leaves it, and its pending entries).
    pub(super) async fn destroy_private_group(&self, topic: &str, group: &str) {
        if let Ok(mut conn) = self.conn() {
            let cmd = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(topic)
                .arg(group)
                .to_owned();
            let destroy = cmd.query_async::<Value>(&mut conn);
            if let Ok(Err(e)) = tokio::time::timeout(COMMAND_TIMEOUT, destroy).await {
                tracing::debug!(stream = topic, group, error = %e, "XGROUP DESTROY failed");
            }
        }
    }
}

struct StreamReader {
    topic: Arc<str>,
    group: Option<Arc<str>>,
    /// The stream and group, when reading through a group.
    key: Option<Arc<StreamGroup>>,
    /// What the settle handles share, in manual ack mode.
    settler: Option<Arc<Settler>>,
    conn: Conn,
    ctx: BackendContext,
    opts: Arc<Options>,
    /// Set in manual ack mode.
    manual: Option<Arc<Manual>>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    /// Plain reader: the last id read. Group reader: `>`.
    last_id: String,
    /// Set when the connection was lost (it may come back unnoticed).
    dropped: Arc<AtomicBool>,
}

impl StreamReader {
    async fn run(mut self) {
        let mut disconnected = false;
        let mut delay = Duration::from_millis(50);
        let claim_every = match &self.manual {
            // Redelivery after ack_wait or a nak is as late as this, at most.
            Some(m) => (m.ack_wait / 10).clamp(Duration::from_millis(20), Duration::from_secs(1)),
            None => (self.opts.redis.stream_claim_idle / 2).max(Duration::from_millis(50)),
        };
        let mut next_claim = Instant::now() + claim_every;
        if self.group.is_some()
            && self.manual.is_none()
            && self.opts.redis.stream_consumer.is_some()
        {
            // A fixed consumer name: first take back what this consumer had
            // read but not acknowledged in a previous run.
            self.read_own_pending().await;
        }
        loop {
            if self.manual.is_some() {
                // At max_in_flight: fetch nothing until the application
                // settles one; the entries wait in Redis.
                self.ctx.in_flight.wait_for_room().await;
            }
            let result = if self.group.is_some() && Instant::now() >= next_claim {
                next_claim = Instant::now() + claim_every;
                match self.manual.clone() {
                    Some(m) => self.claim_expired(&m).await,
                    None => self.claim().await,
                }
            } else {
                self.read().await
            };
            match result {
                Ok(()) => {
                    let dropped = self.dropped.swap(false, Ordering::AcqRel);
                    if disconnected || dropped {
                        disconnected = false;
                        self.ctx.counters.add_reconnect();
                        tracing::info!(address = %self.opts.shown, stream = %self.topic, "redis stream reader reconnected");
                        // A group read whose reply the lost connection
                        // swallowed left its entries pending at this
                        // consumer, where `claim` never looks: take back
                        // everything pending here (at least once: entries
                        // already buffered may come twice). In manual ack
                        // mode they are claimed after ack_wait instead.
                        if self.manual.is_none() {
                            self.read_own_pending().await;
                        }
                    }
                    delay = Duration::from_millis(50);
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The stream or group is gone (server restarted without
                    // persistence, or deleted): everything in a new stream is new.
                    self.create_group("0").await;
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        if !disconnected {
                            tracing::warn!(address = %self.opts.shown, stream = %self.topic, error = %e, "redis stream reader lost its connection; retrying");
                        }
                        disconnected = true;
                    } else {
                        tracing::warn!(address = %self.opts.shown, stream = %self.topic, error = %e, "redis stream read failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn create_group(&mut self, id: &str) {
        let Some(group) = &self.group else { return };
        let r: RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&*self.topic)
            .arg(&**group)
            .arg(id)
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        if let Err(e) = r {
            if e.code() != Some("BUSYGROUP") {
                tracing::warn!(address = %self.opts.shown, stream = %self.topic, error = %e, "XGROUP CREATE failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn block_ms(&self) -> u64 {
        self.opts.redis.stream_block.as_millis().max(1) as u64
    }

    /// `XREAD` / `XREADGROUP ... BLOCK` of new entries; in manual ack mode
    /// no more than the handle may still hold.
    async fn read(&mut self) -> RedisResult<()> {
        let mut count = self.opts.redis.stream_read_count;
        if self.manual.is_some() {
            count = count.min(self.ctx.in_flight.room()).max(1);
        }
        let mut cmd = match &self.group {
            Some(g) => {
                let mut c = redis::cmd("XREADGROUP");
                c.arg("GROUP").arg(&**g).arg(&self.opts.consumer);
                c
            }
            None => redis::cmd("XREAD"),
        };
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.block_ms())
            .arg("STREAMS")
            .arg(&*self.topic)
            .arg(&self.last_id);
        let reply: Value = cmd.query_async(&mut self.conn).await?;
        let entries = read_reply(reply);
        if let (None, Some(last)) = (&self.group, entries.last()) {
            self.last_id = last.id.clone();
        }
        self.deliver_all(entries.into_iter().map(|e| (e, 1))).await;
        Ok(())
    }

    /// Auto ack mode: this consumer's pending entries, read again.
    async fn read_own_pending(&mut self) {
        let Some(g) = self.group.clone() else { return };
        let mut from = "0".to_string();
        for _ in 0..1000 {
            let r: RedisResult<Value> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*g)
                .arg(&self.opts.consumer)
                .arg("COUNT")
                .arg(self.opts.redis.stream_read_count)
                .arg("STREAMS")
                .arg(&*self.topic)
                .arg(&from)
                .query_async(&mut self.conn)
                .await;
            let entries = match r {
                Ok(reply) => read_reply(reply),
                Err(_) => return,
            };
            let Some(last) = entries.last() else { return };
            from = last.id.clone();
            self.deliver_all(entries.into_iter().map(|e| (e, 2))).await;
        }
    }

    /// Auto ack mode: take over entries pending longer than
    /// `stream_claim_idle` at *other* members of the group (typically one
    /// that went away): `XPENDING ... IDLE`, then `XCLAIM`. Entries pending
    /// at this consumer are left alone (they are in this handle's buffer, or
    /// were dropped by its overflow policy), so a slow application does not
    /// get its own messages twice.
    async fn claim(&mut self) -> RedisResult<()> {
        let Some(g) = self.group.clone() else {
            return Ok(());
        };
        let idle = self.opts.redis.stream_claim_idle.as_millis() as u64;
        let mut from = "-".to_string();
        for _ in 0..100 {
            let page: StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&*self.topic)
                .arg(&*g)
                .arg("IDLE")
                .arg(idle)
                .arg(&from)
                .arg("+")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            let Some(last) = page.ids.last() else { break };
            from = format!("({}", last.id);
            let full = page.ids.len() == 1000;
            let theirs: Vec<(&str, usize)> = page
                .ids
                .iter()
                .filter(|p| p.consumer != self.opts.consumer)
                .map(|p| (p.id.as_str(), p.times_delivered))
                .collect();
            if !theirs.is_empty() {
                let ids: Vec<&str> = theirs.iter().map(|t| t.0).collect();
                let claimed: Value = redis::cmd("XCLAIM")
                    .arg(&*self.topic)
                    .arg(&*g)
                    .arg(&self.opts.consumer)
                    .arg(idle)
                    .arg(&ids)
                    .query_async(&mut self.conn)
                    .await?;
                let claimed = entries(claimed);
                if !claimed.is_empty() {
                    tracing::info!(stream = %self.topic, group = %g, claimed = claimed.len(), "claimed entries left pending by another group member");
                }
                let delivered: HashMap<&str, usize> = theirs.into_iter().collect();
                let claimed: Vec<(Entry, u32)> = claimed
                    .into_iter()
                    .map(|e| {
                        let attempt = delivered.get(e.id.as_str()).map_or(2, |n| n + 1);
                        (e, attempt as u32)
                    })
                    .collect();
                self.deliver_all(claimed).await;
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// Manual ack mode: claim what was not settled within `ack_wait`, at
    /// any member (this one included), or was nak'ed: `XAUTOCLAIM`, then
    /// the delivery counts (`XPENDING`). Past `max_deliver` an entry goes
    /// to the dead letter; an entry whose body was trimmed away is
    /// acknowledged and counted as discarded.
    async fn claim_expired(&mut self, manual: &Manual) -> RedisResult<()> {
        let Some(g) = self.group.clone() else {
            return Ok(());
        };
        let mut cursor = "0-0".to_string();
        for _ in 0..100 {
            let room = self.ctx.in_flight.room();
            if room == 0 {
                break;
            }
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&*self.topic)
                .arg(&*g)
                .arg(&self.opts.consumer)
                .arg(manual.ack_wait.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(room.min(100))
                .query_async(&mut self.conn)
                .await?;
            let Some((next, claimed, deleted)) = autoclaim_reply(reply) else {
                break;
            };
            if let Some(key) = &self.key {
                for id in deleted {
                    self.discard_trimmed(key, &id);
                }
            }
            let counts = self.delivery_counts(&g, &claimed).await?;
            let mut again = Vec::with_capacity(claimed.len());
            for e in claimed {
                let times = counts.get(&e.id).copied().unwrap_or(1);
                if times > manual.max_deliver as usize {
                    if let (Some(body), Some(key)) = (e.body, &self.key) {
                        let item = item(key, &e.id);
                        manual.give_up(&self.ack_tx, item, body, times as u32 - 1, "max_deliver");
                    }
                    continue;
                }
                again.push((e, times as u32));
            }
            self.deliver_all(again).await;
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        Ok(())
    }

    /// How many times each of `claimed` was delivered (`XPENDING` extended
    /// form over their range, at this consumer).
    async fn delivery_counts(
        &mut self,
        g: &str,
        claimed: &[Entry],
    ) -> RedisResult<HashMap<String, usize>> {
        let (Some(first), Some(last)) = (claimed.first(), claimed.last()) else {
            return Ok(HashMap::new());
        };
        let page: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&*self.topic)
            .arg(g)
            .arg(&first.id)
            .arg(&last.id)
            .arg(claimed.len().max(1) * 4)
            .arg(&self.opts.consumer)
            .query_async(&mut self.conn)
            .await?;
        Ok(page
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect())
    }

    /// An entry whose body Redis no longer has (trimmed by `MAXLEN`):
    /// acknowledged, counted as discarded, never returned as an empty message.
    fn discard_trimmed(&self, key: &Arc<StreamGroup>, id: &str) {
        tracing::warn!(stream = %self.topic, id = %id, "a pending stream entry was trimmed away before it was settled; acknowledged and counted as discarded");
        self.ctx.counters.add_discarded(1);
        let _ = self.ack_tx.send(AckMsg::Ack(item(key, id)));
    }

    /// Entries read together, each with its delivery attempt, to the
    /// receive buffer in order. They go in batches, each under one lock
    /// and with one wake-up of the reader ([`Inbox::deliver_batch`]):
    /// delivered one by one, every entry of a read woke a reader that
    /// waits (a futex wake-up and a context switch per message, the most
    /// of what the blocking API spent receiving). In manual ack mode each
    /// message first takes its place among the unsettled ones; where none
    /// is free, the batch gathered so far goes in first, then it waits. A
    /// group in auto ack mode delivers one by one (each is acknowledged
    /// when taken).
    async fn deliver_all(&self, entries: impl IntoIterator<Item = (Entry, u32)>) {
        let mut batch = Batch::default();
        for (Entry { id, body }, attempt) in entries {
            let Some(Body { payload, headers }) = body else {
                match &self.key {
                    Some(key) => self.discard_trimmed(key, &id),
                    None => {
                        tracing::warn!(stream = %self.topic, id = %id, "stream entry without a payload field skipped")
                    }
                }
                continue;
            };
            if attempt > 1 {
                self.ctx.counters.add_redelivered(1);
            }
            // Settled by its id as numbers; the text goes to the message.
            let entry_id = self.key.as_ref().map(|_| EntryId::new(&id));
            let msg = Message::new(&*self.topic, payload.clone())
                .with_headers(headers.clone())
                .with_id(id)
                .with_attempt(attempt);
            let msg = match (&self.key, &self.settler, entry_id) {
                (Some(_), Some(settler), Some(entry_id)) => {
                    let permit = match self.ctx.in_flight.try_acquire(payload.len()) {
                        Some(permit) => permit,
                        None => {
                            batch.deliver(&self.ctx.inbox).await;
                            self.ctx.in_flight.acquire(payload.len()).await
                        }
                    };
                    let settle = StreamSettle::new(
                        settler.clone(),
                        entry_id,
                        attempt,
                        Body { payload, headers },
                    );
                    msg.with_settle(Box::new(settle), permit)
                }
                (Some(key), None, Some(id)) => {
                    batch.deliver(&self.ctx.inbox).await;
                    let ack_tx = self.ack_tx.clone();
                    let item = AckItem {
                        key: key.clone(),
                        id,
                    };
                    self.ctx
                        .inbox
                        .deliver_with_ack(
                            msg,
                            Box::new(move || {
                                let _ = ack_tx.send(AckMsg::Ack(item));
                            }),
                        )
                        .await;
                    continue;
                }
                // A plain subscription (no group, no id to settle): as it is.
                _ => msg,
            };
            batch.push(msg, &self.ctx.inbox).await;
        }
        batch.deliver(&self.ctx.inbox).await;
    }
}

/// Messages gathered for one [`Inbox::deliver_batch`], at most
/// [`Inbox::BATCH`] of them and [`Inbox::BATCH_BYTES`] of payload.
#[derive(Default)]
struct Batch {
    messages: Vec<Message>,
    bytes: usize,
}

impl Batch {
    /// Add `msg`; a full batch goes to the buffer.
    async fn push(&mut self, msg: Message, inbox: &Inbox) {
        self.bytes += msg.payload.len();
        self.messages.push(msg);
        if self.messages.len() >= Inbox::BATCH || self.bytes >= Inbox::BATCH_BYTES {
            self.deliver(inbox).await;
        }
    }

    /// What was gathered, to the buffer.
    async fn deliver(&mut self, inbox: &Inbox) {
        if !self.messages.is_empty() {
            inbox.deliver_batch(&mut self.messages).await;
        }
        self.bytes = 0;
    }
}

/// The entry `id` of the reader's stream and group, to settle.
fn item(key: &Arc<StreamGroup>, id: &str) -> AckItem {
    AckItem {
        key: key.clone(),
        id: EntryId::new(id),
    }
}

/// Whether `config` asks for manual ack.
pub(super) fn is_manual(config: &pubsub_core::Config) -> bool {
    config.ack == AckMode::Manual
}
