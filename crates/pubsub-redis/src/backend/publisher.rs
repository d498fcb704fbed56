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
use crate::error::{is_connection_error, is_transient, redis_error};
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
/// down or Redis answers that it cannot take writes yet (`LOADING` its
/// data after a restart, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`: then only
/// the commands it refused are sent again), until the handle is dropped and
/// `close_timeout` has passed. What is refused for good is counted.
async fn send_run(
    conn: &mut Conn,
    opts: &Options,
    run: &[Outgoing],
    failures: &mut Failures,
    rx: &mpsc::Receiver<PubCmd>,
) {
    let mut pending: Vec<&Outgoing> = run.iter().collect();
    let mut delay = Duration::from_millis(50);
    let mut warned = false;
    let mut abandoned_since: Option<Instant> = None;
    let limit = opts.connect_timeout + COMMAND_TIMEOUT;
    loop {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for out in &pending {
            pipe.add_command(publish_cmd(opts, out));
        }
        let sent = tokio::time::timeout(limit, pipe.query_async::<Vec<RedisResult<Value>>>(conn))
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from Redis",
                )))
            });
        let wait = match sent {
            Ok(results) => {
                pending = refused(opts, pending, results, failures);
                if pending.is_empty() {
                    if warned {
                        tracing::info!(address = %opts.shown, "redis is back; queued messages sent");
                    }
                    return;
                }
                "redis publish: Redis cannot take writes yet; sending what it refused again"
            }
            Err(e) if is_connection_error(&e) => {
                "redis publish: connection lost; retrying the batch until it is back"
            }
            Err(e) => {
                let topic = run.first().map(|r| r.topic.to_string()).unwrap_or_default();
                failures.add(pending.len() as u64, || {
                    redis_error(&opts.shown, &format!("publish to {topic:?}"), e)
                });
                return;
            }
        };
        // The handle was dropped: stop retrying after close_timeout.
        if rx.is_closed()
            && abandoned_since.get_or_insert_with(Instant::now).elapsed() > opts.close_timeout
        {
            tracing::warn!(address = %opts.shown, messages = pending.len(), "redis publish: handle dropped while Redis cannot take them; messages discarded");
            failures.add(pending.len() as u64, || {
                Error::new(
                    pubsub_core::ErrorKind::Connect,
                    format!(
                        "redis {}: publish: Redis was unreachable until the handle was dropped",
                        opts.shown
                    ),
                )
            });
            return;
        }
        if !warned {
            tracing::warn!(address = %opts.shown, "{wait}");
            warned = true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Of a sent pipeline: count the commands Redis refused for good, and
/// return those it refused for now, to send again.
fn refused<'a>(
    opts: &Options,
    sent: Vec<&'a Outgoing>,
    results: Vec<RedisResult<Value>>,
    failures: &mut Failures,
) -> Vec<&'a Outgoing> {
    let mut again = Vec::new();
    for (r, out) in results.into_iter().zip(sent) {
        match r {
            Ok(_) => {}
            Err(e) if is_transient(&e) => again.push(out),
            Err(e) => failures.add(1, || {
                redis_error(&opts.shown, &format!("publish to {:?}", &*out.topic), e)
            }),
        }
    }
    again
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisConfig;

    fn out(topic: &str) -> Outgoing {
        Outgoing {
            topic: Arc::from(topic),
            payload: Bytes::from_static(b"x"),
            headers: Headers::new(),
        }
    }

    fn server_error(kind: redis::ServerErrorKind) -> redis::RedisError {
        redis::RedisError::from((redis::ErrorKind::Server(kind), "refused"))
    }

    /// Redis answers LOADING to every write while it reads its data after a
    /// restart: those messages are sent again, not counted as failed (the
    /// test kit's restart under load with an append-only file lost 401 of
    /// 10,000 that way); a command refused for good is counted.
    #[test]
    fn refused_for_now_is_sent_again_refused_for_good_is_counted() {
        let opts = Options::new(&pubsub_core::Config::default(), RedisConfig::default()).unwrap();
        let batch = [out("a"), out("b"), out("c"), out("d")];
        let results = vec![
            Ok(Value::Okay),
            Err(server_error(redis::ServerErrorKind::BusyLoading)),
            Err(server_error(redis::ServerErrorKind::ResponseError)),
            Err(server_error(redis::ServerErrorKind::TryAgain)),
        ];
        let mut failures = Failures::default();
        let again = refused(&opts, batch.iter().collect(), results, &mut failures);
        let again: Vec<&str> = again.iter().map(|o| &*o.topic).collect();
        assert_eq!(again, ["b", "d"]);
        assert_eq!(failures.count, 1);
        assert!(failures.take().unwrap_err().to_string().contains("\"c\""));
    }
}
