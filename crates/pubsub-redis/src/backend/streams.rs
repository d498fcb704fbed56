//! `streams` mode: one reader per subscribed topic on a connection of its
//! own (`XREAD` / `XREADGROUP ... BLOCK`, its response timeout longer than
//! the block time), plus one acker that sends `XACK` for group messages
//! once the application has taken them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pubsub_core::sync::{lock, AbortOnDrop};
use pubsub_core::{BackendContext, Error, Message, Result};
use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

use super::connection::{open, Conn};
use super::{RedisBackend, PAYLOAD_FIELD};
use crate::error::is_connection_error;
use crate::options::{Options, PushCallback, COMMAND_TIMEOUT};

/// A stream entry to acknowledge: (stream key, group, entry id).
type AckItem = (Arc<str>, Arc<str>, String);

pub(super) enum AckMsg {
    Ack(AckItem),
    /// Answered once every acknowledgement queued before it was sent.
    Flush(oneshot::Sender<()>),
}

impl RedisBackend {
    pub(super) async fn subscribe_stream(&self, topic: &str, group: Option<&str>) -> Result<()> {
        let mut conn = self.conn()?;
        let r = &self.opts.redis;
        let start = match group {
            Some(g) => {
                let created: RedisResult<Value> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(topic)
                    .arg(g)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                match created {
                    Ok(_) => {}
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) => {
                        return Err(self.err(
                            &format!("XGROUP CREATE {topic:?} {g:?} (stream group subscribe)"),
                            e,
                        ))
                    }
                }
                ">".to_string()
            }
            None => {
                let last: Vec<StreamId> = self
                    .bounded(
                        &format!("XREVRANGE {topic:?} (stream subscribe)"),
                        redis::cmd("XREVRANGE")
                            .arg(topic)
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(1)
                            .query_async::<redis::streams::StreamRangeReply>(&mut conn),
                    )
                    .await?
                    .ids;
                last.first()
                    .map(|e| e.id.clone())
                    .unwrap_or_else(|| "0-0".to_string())
            }
        };
        let read_timeout = r.stream_block + COMMAND_TIMEOUT;
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
        let reader_conn = open(&self.opts, Some(on_push), read_timeout).await?;
        let ack_tx = lock(&self.ack_tx).clone().ok_or_else(Error::closed)?;
        let reader = StreamReader {
            topic: Arc::from(topic),
            group: group.map(Arc::from),
            consumer: self.opts.consumer.clone(),
            conn: reader_conn,
            ctx: self.ctx.clone(),
            opts: self.opts.clone(),
            ack_tx,
            last_id: start,
            dropped,
        };
        let task = AbortOnDrop::new(tokio::spawn(reader.run()));
        lock(&self.readers).insert(topic.to_string(), task);
        Ok(())
    }
}

pub(super) async fn acker(mut rx: mpsc::UnboundedReceiver<AckMsg>, mut conn: Conn, shown: String) {
    while let Some(first) = rx.recv().await {
        let mut items = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                AckMsg::Ack(i) => items.push(i),
                AckMsg::Flush(tx) => flushes.push(tx),
            }
            if items.len() < 1000 {
                next = rx.try_recv().ok();
            }
        }
        let mut by_stream: HashMap<(Arc<str>, Arc<str>), Vec<String>> = HashMap::new();
        for (key, group, id) in items {
            by_stream.entry((key, group)).or_default().push(id);
        }
        for ((key, group), ids) in by_stream {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(&*key).arg(&*group).arg(&ids);
            let xack = cmd.query_async::<Value>(&mut conn);
            let r = match tokio::time::timeout(COMMAND_TIMEOUT, xack).await {
                Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                Err(_) => Err("no answer in time".to_string()),
            };
            if let Err(e) = r {
                // Unacknowledged entries stay pending and are claimed again later.
                tracing::warn!(address = %shown, stream = %key, group = %group, error = %e, "XACK failed; the entries will be delivered again");
            }
        }
        for tx in flushes {
            let _ = tx.send(());
        }
    }
}

struct StreamReader {
    topic: Arc<str>,
    group: Option<Arc<str>>,
    consumer: String,
    conn: Conn,
    ctx: BackendContext,
    opts: Arc<Options>,
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
        let claim_every = (self.opts.redis.stream_claim_idle / 2).max(Duration::from_millis(50));
        let mut next_claim = Instant::now() + claim_every;
        if self.group.is_some() && self.opts.redis.stream_consumer.is_some() {
            // A fixed consumer name: first take back what this consumer had
            // read but not acknowledged in a previous run.
            self.read_own_pending().await;
        }
        loop {
            let result = if self.group.is_some() && Instant::now() >= next_claim {
                next_claim = Instant::now() + claim_every;
                self.claim().await
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
                        // already buffered may come twice).
                        self.read_own_pending().await;
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

    async fn read(&mut self) -> RedisResult<()> {
        let count = self.opts.redis.stream_read_count;
        let mut cmd = match &self.group {
            Some(g) => {
                let mut c = redis::cmd("XREADGROUP");
                c.arg("GROUP").arg(&**g).arg(&self.consumer);
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
        let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn).await?;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                if self.group.is_none() {
                    self.last_id = entry.id.clone();
                }
                self.deliver(entry).await;
            }
        }
        Ok(())
    }

    async fn read_own_pending(&mut self) {
        let Some(g) = self.group.clone() else { return };
        let mut from = "0".to_string();
        for _ in 0..1000 {
            let r: RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*g)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(self.opts.redis.stream_read_count)
                .arg("STREAMS")
                .arg(&*self.topic)
                .arg(&from)
                .query_async(&mut self.conn)
                .await;
            let entries: Vec<StreamId> = match r {
                Ok(reply) => reply
                    .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                    .unwrap_or_default(),
                Err(_) => return,
            };
            let Some(last) = entries.last() else { return };
            from = last.id.clone();
            for e in entries {
                self.deliver(e).await;
            }
        }
    }

    /// Take over entries pending longer than `stream_claim_idle` at *other*
    /// members of the group (typically one that went away): `XPENDING ...
    /// IDLE`, then `XCLAIM`. Entries pending at this consumer are left
    /// alone (they are in this handle's buffer, or were dropped by its
    /// overflow policy), so a slow application does not get its own
    /// messages twice.
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
            let theirs: Vec<&str> = page
                .ids
                .iter()
                .filter(|p| p.consumer != self.consumer)
                .map(|p| p.id.as_str())
                .collect();
            if !theirs.is_empty() {
                let claimed: StreamClaimReply = redis::cmd("XCLAIM")
                    .arg(&*self.topic)
                    .arg(&*g)
                    .arg(&self.consumer)
                    .arg(idle)
                    .arg(&theirs)
                    .query_async(&mut self.conn)
                    .await?;
                if !claimed.ids.is_empty() {
                    tracing::info!(stream = %self.topic, group = %g, claimed = claimed.ids.len(), "claimed entries left pending by another group member");
                }
                for e in claimed.ids {
                    self.deliver(e).await;
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    async fn deliver(&self, entry: StreamId) {
        let StreamId { id, mut map, .. } = entry;
        let value = match map.remove(PAYLOAD_FIELD) {
            Some(v) => Some(v),
            None if map.len() == 1 => map.into_values().next(),
            None => None,
        };
        let payload = match value {
            Some(Value::BulkString(b)) => Bytes::from(b),
            Some(Value::SimpleString(s)) => Bytes::from(s.into_bytes()),
            _ => {
                tracing::warn!(stream = %self.topic, id = %id, "stream entry without a {PAYLOAD_FIELD:?} field skipped");
                if let Some(g) = &self.group {
                    let _ = self
                        .ack_tx
                        .send(AckMsg::Ack((self.topic.clone(), g.clone(), id)));
                }
                return;
            }
        };
        let msg = Message::new(&*self.topic, payload);
        match &self.group {
            None => self.ctx.inbox.deliver(msg).await,
            Some(g) => {
                let ack_tx = self.ack_tx.clone();
                let item = (self.topic.clone(), g.clone(), id);
                self.ctx
                    .inbox
                    .deliver_with_ack(
                        msg,
                        Box::new(move || {
                            let _ = ack_tx.send(AckMsg::Ack(item));
                        }),
                    )
                    .await;
            }
        }
    }
}
