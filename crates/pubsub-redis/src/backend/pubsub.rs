//! `pubsub` mode: from the socket to the inbox. redis-rs reads the socket
//! continuously and hands each RESP3 push to our callback; the connection
//! manager (or the cluster client) reconnects and re-subscribes by itself.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::FutureExt;
use pubsub_core::sync::{read, AbortOnDrop};
use pubsub_core::{BackendContext, Config, Inbox, Message, OverflowPolicy};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::options::{Options, PushCallback};

/// The receiving side: the push callback to give the connection, and the
/// pump task behind it (see [`push_callback`]). `active` holds the
/// channels subscribed now.
pub(super) fn receiver(
    config: &Config,
    opts: &Options,
    ctx: &BackendContext,
    active: &Arc<RwLock<HashSet<String>>>,
) -> (PushCallback, AbortOnDrop) {
    let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
    let queued = Arc::new(AtomicUsize::new(0));
    let limit = config.buffer.max_bytes.max(opts.redis.max_payload);
    let push = push_callback(
        push_tx,
        queued.clone(),
        limit,
        ctx.clone(),
        active.clone(),
        opts.shown.clone(),
    );
    let pump = AbortOnDrop::new(tokio::spawn(pump(
        push_rx,
        queued,
        active.clone(),
        ctx.clone(),
        opts.shown.clone(),
    )));
    (push, pump)
}

/// The push sender given to redis-rs. It runs on the task that reads the
/// socket and must not block:
/// - with `drop_oldest` / `drop_newest` it puts each message straight into
///   the inbox (that never waits under those policies), so nothing queues
///   between the socket and the application's buffer;
/// - with `block` it queues for the pump, which waits for room in the inbox;
///   messages beyond `limit` queued bytes are dropped and counted, so memory
///   stays bounded (Redis cannot be paused without cutting us off).
fn push_callback(
    tx: mpsc::UnboundedSender<PushInfo>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    ctx: BackendContext,
    active: Arc<RwLock<HashSet<String>>>,
    shown: String,
) -> PushCallback {
    let direct = ctx.inbox.policy() != OverflowPolicy::Block;
    let warned = Arc::new(AtomicBool::new(false));
    Arc::new(move |info: PushInfo| {
        if direct {
            match info.kind {
                PushKind::Message => {
                    if let Some(msg) = to_message(info, &active) {
                        // Never pending under the drop policies.
                        let _ = ctx.inbox.deliver(msg).now_or_never();
                    }
                }
                PushKind::Disconnection => lost_connection(&ctx, &shown),
                _ => {}
            }
            return Ok(());
        }
        if info.kind == PushKind::Message {
            let size = message_size(&info);
            let now = queued.load(Ordering::Relaxed);
            if now > 0 && now + size > limit {
                ctx.counters.add_received(1);
                ctx.counters.add_dropped(1);
                if !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        queued_bytes = now,
                        "redis pubsub: messages arrive faster than the receive buffer takes them; dropping (counted in stats().dropped)"
                    );
                }
                return Ok(());
            }
            warned.store(false, Ordering::Relaxed);
            queued.fetch_add(size, Ordering::Relaxed);
        }
        tx.send(info).map_err(|_| ())
    })
}

fn lost_connection(ctx: &BackendContext, shown: &str) {
    ctx.counters.add_reconnect();
    tracing::warn!(address = %shown, "redis connection lost; reconnecting and re-subscribing");
}

/// The message of a `message` push, if its channel is still subscribed
/// (one may arrive just after `unsubscribe`).
fn to_message(info: PushInfo, active: &RwLock<HashSet<String>>) -> Option<Message> {
    let mut data = info.data.into_iter();
    let (channel, payload) = (data.next()?, data.next()?);
    let channel = match channel {
        Value::BulkString(b) => String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Value::SimpleString(s) => s,
        _ => return None,
    };
    let payload = match payload {
        Value::BulkString(b) => Bytes::from(b),
        Value::SimpleString(s) => Bytes::from(s.into_bytes()),
        _ => return None,
    };
    if !read(active).contains(&channel) {
        return None;
    }
    Some(Message::new(channel, payload))
}

/// Bytes a queued push message holds: payload, channel name and the
/// bookkeeping around them (so that tiny messages are bounded too).
fn message_size(info: &PushInfo) -> usize {
    const OVERHEAD: usize = 128;
    let len = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => b.len(),
        _ => 0,
    };
    OVERHEAD + len(info.data.first()) + len(info.data.get(1))
}

/// `block` policy only: from the queue into the inbox, waiting for room.
async fn pump(
    mut rx: mpsc::UnboundedReceiver<PushInfo>,
    queued: Arc<AtomicUsize>,
    active: Arc<RwLock<HashSet<String>>>,
    ctx: BackendContext,
    shown: String,
) {
    // What is queued already goes into the buffer in one step (one lock and
    // one wake-up per batch). The batch's bytes count as queued until it is
    // in the buffer, so the bound of the push callback still holds.
    let mut batch = Vec::with_capacity(Inbox::BATCH);
    while let Some(first) = rx.recv().await {
        let mut held = 0;
        let mut next = Some(first);
        while let Some(info) = next {
            match info.kind {
                PushKind::Message => {
                    held += message_size(&info);
                    batch.extend(to_message(info, &active));
                }
                PushKind::Disconnection => lost_connection(&ctx, &shown),
                _ => {}
            }
            next = if batch.len() < Inbox::BATCH && held < Inbox::BATCH_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        ctx.inbox.deliver_batch(&mut batch).await;
        queued.fetch_sub(held, Ordering::Relaxed);
    }
}
