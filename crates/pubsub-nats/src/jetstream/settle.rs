//! Settling JetStream messages. `ack`, `nak(delay)` and `in_progress` are
//! JetStream's own (`+ACK`, `-NAK {"delay": ns}`, `+WPI` on the message's
//! reply subject), handed to the client without waiting, from any thread:
//! the first poll of the client's publish queues them, and when its queue
//! is full the **acker** task sends them instead. `close` waits for the
//! acker to have written what it holds ([`Acker::flush`]): async-nats ends
//! its connection without writing what it still buffers when its last
//! `Client` goes, and the acker's is often the last.
//!
//! Giving a message up (`term`, a `nak` of its last attempt, or its
//! delivery number `max_deliver + 1`, which the library takes instead of
//! the application) is the **giver**'s task: the dead letter is published
//! to `dead_letter_topic` with the `dead-letter-*` headers, and once the
//! stream has confirmed it the message is terminated (`+TERM`); without a
//! dead-letter topic it is terminated, counted as discarded and logged
//! once. A crash between the two delivers the message again after
//! `ack_wait`, and it is dead-lettered again: twice, never lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Subject};
use bytes::Bytes;
use pubsub_core::{dead_letter, Counters, Error, Headers, Result, Settle};
use tokio::sync::{mpsc, oneshot};

use super::publish::{Outgoing, Publisher};
use super::stream::Streams;

pub(crate) const ACK: &[u8] = b"+ACK";
const PROGRESS: &[u8] = b"+WPI";
const TERM: &[u8] = b"+TERM";

/// Sends acknowledgements to the server without waiting.
pub(crate) struct Acker {
    client: Client,
    later: mpsc::UnboundedSender<Later>,
}

/// What the acker task is given.
enum Later {
    /// An acknowledgement the client's queue had no room for.
    Send(Subject, Bytes),
    /// Answered once everything given before is written to the server.
    Flush(oneshot::Sender<()>),
}

impl Acker {
    /// The acker and its task (which ends when the acker is dropped).
    pub fn start(client: Client) -> Arc<Acker> {
        let (later, mut rx) = mpsc::unbounded_channel::<Later>();
        let c = client.clone();
        tokio::spawn(async move {
            while let Some(l) = rx.recv().await {
                match l {
                    Later::Send(reply, body) => {
                        if let Err(e) = c.publish(reply, body).await {
                            tracing::debug!(error = %e, "nats jetstream: an acknowledgement could not be sent");
                        }
                    }
                    Later::Flush(done) => {
                        let _ = c.flush().await;
                        let _ = done.send(());
                    }
                }
            }
        });
        Arc::new(Acker { client, later })
    }

    /// Wait until every acknowledgement handed over so far is written to
    /// the server (those queued by the client, and those the acker task
    /// holds).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.later.send(Later::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Hand `body` for `reply` to the client now, or to the acker task when
    /// the client's queue is full.
    pub fn send(&self, reply: &Subject, body: Bytes) -> Result<()> {
        let fut = self.client.publish(reply.clone(), body.clone());
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(fut.as_mut(), &mut cx) {
            std::task::Poll::Ready(Ok(())) => Ok(()),
            std::task::Poll::Ready(Err(e)) => Err(crate::error::op_error("acknowledge", e)),
            std::task::Poll::Pending => self
                .later
                .send(Later::Send(reply.clone(), body))
                .map_err(|_| Error::closed()),
        }
    }
}

/// What the giver needs of a message it gives up.
pub(crate) struct GiveUp {
    pub reply: Subject,
    pub topic: Subject,
    pub payload: Bytes,
    pub headers: Headers,
    pub attempts: u32,
    pub id: u64,
    pub reason: &'static str,
}

pub(crate) enum GiverMsg {
    GiveUp(Box<GiveUp>),
    /// Answered once everything sent before it is done.
    Flush(oneshot::Sender<()>),
}

/// The manual-ack settings of a handle, shared by its messages.
pub(crate) struct Manual {
    pub acker: Arc<Acker>,
    pub giver: mpsc::UnboundedSender<GiverMsg>,
    pub max_deliver: u32,
}

impl Manual {
    /// Hand `g` to the giver.
    pub fn give_up(&self, g: GiveUp) -> Result<()> {
        self.giver
            .send(GiverMsg::GiveUp(Box::new(g)))
            .map_err(|_| Error::closed())
    }
}

/// The giver's settings.
pub(crate) struct Giver {
    pub acker: Arc<Acker>,
    pub publisher: Arc<Publisher>,
    pub streams: Arc<Streams>,
    pub dead_letter_topic: Option<String>,
    pub counters: Arc<Counters>,
    /// How long a dead letter may wait for the stream's PubAck.
    pub confirm_within: Duration,
    pub warned_discard: AtomicBool,
}

impl Giver {
    /// The giver task: gives messages up in the order asked.
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<GiverMsg>) {
        while let Some(m) = rx.recv().await {
            match m {
                GiverMsg::GiveUp(g) => self.give_up(*g).await,
                GiverMsg::Flush(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }

    async fn give_up(&self, g: GiveUp) {
        let Some(dlq) = &self.dead_letter_topic else {
            if self.acker.send(&g.reply, Bytes::from_static(TERM)).is_ok() {
                self.counters.add_discarded(1);
            }
            if !self.warned_discard.swap(true, Ordering::Relaxed) {
                tracing::warn!(topic = %g.topic, reason = g.reason, "nats jetstream: a message was given up ({}) and discarded; set dead_letter_topic to keep such messages (counted in stats().discarded; logged once per handle)", g.reason);
            }
            return;
        };
        match self.dead_letter(dlq, &g).await {
            Ok(()) => {
                if self.acker.send(&g.reply, Bytes::from_static(TERM)).is_ok() {
                    self.counters.add_dead_lettered(1);
                }
            }
            Err(e) => {
                tracing::warn!(topic = %g.topic, dead_letter = %dlq, error = %e, "nats jetstream: writing a dead letter failed; the message stays unacknowledged and comes back after ack_wait");
            }
        }
    }

    /// Publish the dead letter and wait until the stream has it.
    async fn dead_letter(&self, dlq: &str, g: &GiveUp) -> Result<()> {
        let mut headers = g.headers.clone();
        headers.insert(dead_letter::REASON, g.reason);
        headers.insert(dead_letter::TOPIC, g.topic.to_string());
        headers.insert(dead_letter::ATTEMPTS, g.attempts.to_string());
        headers.insert(dead_letter::ID, g.id.to_string());
        let target = self.streams.ensure(dlq).await?;
        let out = Outgoing {
            target,
            topic: Arc::from(dlq),
            subject: Subject::from(dlq),
            payload: g.payload.clone(),
            headers: Some(crate::headers::to_nats(&headers)?),
        };
        let confirmed = self.publisher.publish_confirmed(out).await?;
        match tokio::time::timeout(self.confirm_within, confirmed).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::closed()),
            Err(_) => Err(Error::new(
                pubsub_core::ErrorKind::Timeout,
                "the dead letter was not confirmed in time",
            )),
        }
    }
}

/// The settle handle of one delivered message.
pub(crate) struct JsSettle {
    pub manual: Arc<Manual>,
    pub reply: Subject,
    pub topic: Subject,
    pub payload: Bytes,
    pub headers: Headers,
    pub attempt: u32,
    pub id: u64,
    /// Stream sequences this subscription holds unsettled (see the fetcher).
    pub held: Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>,
}

impl JsSettle {
    fn settled(&self) {
        pubsub_core::sync::lock(&self.held).remove(&self.id);
    }

    fn give_up(&self, reason: &'static str) -> Result<()> {
        self.manual.give_up(GiveUp {
            reply: self.reply.clone(),
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            attempts: self.attempt,
            id: self.id,
            reason,
        })?;
        self.settled();
        Ok(())
    }
}

impl Settle for JsSettle {
    fn ack(&self) -> Result<()> {
        self.manual
            .acker
            .send(&self.reply, Bytes::from_static(ACK))?;
        self.settled();
        Ok(())
    }

    fn nak(&self, delay: Duration) -> Result<()> {
        if self.attempt >= self.manual.max_deliver {
            // The last attempt: to the dead letter now, holding up nothing.
            return self.give_up("max_deliver");
        }
        let body = if delay.is_zero() {
            Bytes::from_static(b"-NAK")
        } else {
            Bytes::from(format!("-NAK {{\"delay\":{}}}", delay.as_nanos()))
        };
        // Still held: it comes back, unless its consumer is lost first,
        // when the consumer made again starts no later than it.
        self.manual.acker.send(&self.reply, body)
    }

    fn in_progress(&self) -> Result<()> {
        self.manual
            .acker
            .send(&self.reply, Bytes::from_static(PROGRESS))
    }

    fn term(&self) -> Result<()> {
        self.give_up("term")
    }
}
