//! The publisher task: drains the queue of publishes into pipelines (one
//! round trip per batch, never per message), retries a batch while the
//! connection is lost, and answers `flush` / `close` markers in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pubsub_core::{Error, Headers, Result};
use redis::{Cmd, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

use super::connection::Conn;
use super::entries::add_fields;
use crate::config::RedisMode;
use crate::error::{is_connection_error, redis_error};
use crate::options::{Options, COMMAND_TIMEOUT};

/// Most messages queued for publishing before `publish` waits.
pub(super) const PUBLISH_QUEUE: usize = 16_384;
/// Most commands in one pipeline.
const MAX_BATCH: usize = 1_024;
/// Most payload bytes in one pipeline. Measured with 16 KiB messages
/// (`pubsub-bench --backends redis --sizes 16384 --bytes 268435456`):
/// 8 MiB pipelines published at 0.87x the raw client, 1 MiB at 1.2x, and
/// end to end 0.75x against 0.85x.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

pub(super) enum PubCmd {
    Publish(Outgoing),
    Flush(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// A message to publish.
pub(super) struct Outgoing {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// Streams mode only (fields beside the payload); empty in pubsub mode.
    pub headers: Headers,
}

#[derive(Default)]
struct Failures {
    count: u64,
    first: Option<Error>,
}

impl Failures {
    fn add(&mut self, n: u64, e: impl FnOnce() -> Error) {
        if n == 0 {
            return;
        }
        self.count += n;
        if self.first.is_none() {
            self.first = Some(e());
        }
    }

    fn take(&mut self) -> Result<()> {
        let count = std::mem::take(&mut self.count);
        match self.first.take() {
            None => Ok(()),
            Some(first) => Err(Error::new(
                first.kind(),
                format!(
                    "{count} message(s) published since the last flush failed; the first: {}",
                    first.message()
                ),
            )
            .with_source(first)),
        }
    }
}

pub(super) async fn publisher(mut rx: mpsc::Receiver<PubCmd>, mut conn: Conn, opts: Arc<Options>) {
    let mut failures = Failures::default();
    let mut batch: Vec<Outgoing> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut control = None;
        let mut bytes = 0;
        match first {
            PubCmd::Publish(out) => {
                bytes += out.payload.len();
                batch.push(out);
            }
            other => control = Some(other),
        }
        while control.is_none() && batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(PubCmd::Publish(out)) => {
                    bytes += out.payload.len();
                    batch.push(out);
                }
                Ok(other) => control = Some(other),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            send_batch(&mut conn, &opts, &batch, &mut failures, &rx).await;
            batch.clear();
        }
        match control {
            Some(PubCmd::Flush(tx)) => {
                let _ = tx.send(failures.take());
            }
            Some(PubCmd::Close(tx)) => {
                let _ = tx.send(failures.take());
                return;
            }
            _ => {}
        }
    }
}

fn publish_cmd(opts: &Options, out: &Outgoing) -> Cmd {
    match opts.redis.mode {
        RedisMode::PubSub => {
            let mut c = redis::cmd("PUBLISH");
            c.arg(&*out.topic).arg(out.payload.as_ref());
            c
        }
        RedisMode::Streams => xadd(opts, &out.topic, &out.payload, &out.headers),
    }
}

/// `XADD topic [MAXLEN ~ n] * payload <bytes> header:<k> <v> ...`
pub(super) fn xadd(opts: &Options, topic: &str, payload: &[u8], headers: &Headers) -> Cmd {
    let mut c = redis::cmd("XADD");
    c.arg(topic);
    if opts.redis.stream_maxlen > 0 {
        c.arg("MAXLEN").arg("~").arg(opts.redis.stream_maxlen);
    }
    c.arg("*");
    add_fields(&mut c, payload, headers);
    c
}

/// Send one batch as pipelines (in a cluster, one per run of the same topic,
/// since a pipeline goes to one node). Retried while the connection is down.
async fn send_batch(
    conn: &mut Conn,
    opts: &Options,
    batch: &[Outgoing],
    failures: &mut Failures,
    rx: &mpsc::Receiver<PubCmd>,
) {
    let runs: Vec<&[Outgoing]> = if matches!(conn, Conn::Cluster(_)) {
        batch.chunk_by(|a, b| a.topic == b.topic).collect()
    } else {
        vec![batch]
    };
    for run in runs {
        send_run(conn, opts, run, failures, rx).await;
    }
}

/// Send one run as a pipeline, again and again while the connection is
/// down (until the handle is dropped and `close_timeout` has passed).
async fn send_run(
    conn: &mut Conn,
    opts: &Options,
    run: &[Outgoing],
    failures: &mut Failures,
    rx: &mpsc::Receiver<PubCmd>,
) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for out in run {
        pipe.add_command(publish_cmd(opts, out));
    }
    let mut delay = Duration::from_millis(50);
    let mut warned = false;
    let mut abandoned_since: Option<Instant> = None;
    let limit = opts.connect_timeout + COMMAND_TIMEOUT;
    loop {
        let sent = tokio::time::timeout(limit, pipe.query_async::<Vec<RedisResult<Value>>>(conn))
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from Redis",
                )))
            });
        match sent {
            Ok(results) => {
                count_refused(opts, run, results, failures);
                if warned {
                    tracing::info!(address = %opts.shown, "redis is back; queued messages sent");
                }
                return;
            }
            Err(e) if is_connection_error(&e) => {
                // The handle was dropped: stop retrying after close_timeout.
                if rx.is_closed()
                    && abandoned_since.get_or_insert_with(Instant::now).elapsed()
                        > opts.close_timeout
                {
                    tracing::warn!(address = %opts.shown, messages = run.len(), "redis publish: handle dropped while Redis is unreachable; messages discarded");
                    failures.add(run.len() as u64, || redis_error(&opts.shown, "publish", e));
                    return;
                }
                if !warned {
                    tracing::warn!(address = %opts.shown, error = %e, "redis publish: connection lost; retrying the batch until it is back");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                let topic = run.first().map(|r| r.topic.to_string()).unwrap_or_default();
                failures.add(run.len() as u64, || {
                    redis_error(&opts.shown, &format!("publish to {topic:?}"), e)
                });
                return;
            }
        }
    }
}

/// Count the commands of a sent pipeline that Redis refused.
fn count_refused(
    opts: &Options,
    run: &[Outgoing],
    results: Vec<RedisResult<Value>>,
    failures: &mut Failures,
) {
    let mut failed = 0;
    let mut first = None;
    for (r, Outgoing { topic, .. }) in results.into_iter().zip(run.iter()) {
        if let Err(e) = r {
            failed += 1;
            if first.is_none() {
                first = Some(redis_error(
                    &opts.shown,
                    &format!("publish to {topic:?}"),
                    e,
                ));
            }
        }
    }
    if let Some(first) = first {
        failures.add(failed, || first);
    }
}
