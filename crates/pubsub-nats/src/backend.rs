//! The NATS backend: core NATS publish/subscribe with queue groups and
//! headers ([`crate::headers`]), or, with `nats.mode = "jetstream"`,
//! JetStream ([`crate::jetstream`]), to which every operation is handed.
//! Core NATS keeps no message, so manual ack mode is refused there at
//! connect.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use pubsub_core::sync::{lock, AbortOnDrop};
use pubsub_core::{
    async_trait, AckMode, Backend, BackendContext, BrokerInfo, Capabilities, Config, Error,
    Headers, Inbox, Message, PubSubBackend, Result, TopicCache, TryPublish,
};

use crate::config::NatsMode;
use crate::error::{connect_error, op_error, publish_error};
use crate::headers;
use crate::jetstream::JetStream;
use crate::options::Options;
use crate::NatsConfig;

/// A connection to NATS. Create it through [`crate::connect`],
/// [`crate::connect_blocking`] or the registry ([`crate::register`]).
pub struct NatsBackend {
    client: Client,
    /// The server list as shown in messages (see [`Options::shown`]).
    shown: String,
    /// Whether the connection uses TLS.
    tls: bool,
    inbox: Inbox,
    /// The forwarding task of each subscribed topic; dropping it aborts it.
    subscriptions: Mutex<HashMap<String, AbortOnDrop>>,
    /// Subjects by topic: a `Subject` is a shared `Bytes`, so reusing it
    /// spares an allocation and a copy per publish, and a cached subject
    /// has passed [`check_subject`].
    subjects: TopicCache<Subject>,
    probe: Probe,
    /// Set in JetStream mode, which then does every operation.
    jetstream: Option<JetStream>,
}

/// A round trip through the server on this connection, the equivalent of
/// PING/PONG: async-nats's `flush` only writes to the socket. The server
/// handles one connection's commands in order, so when a message published
/// to our own inbox subject comes back, every SUB, UNSUB and PUB sent
/// before it has been processed.
struct Probe {
    subject: Subject,
    echoes: tokio::sync::Mutex<async_nats::Subscriber>,
    next: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("servers", &self.shown)
            .field("state", &self.client.connection_state().to_string())
            .finish()
    }
}

#[async_trait]
impl Backend for NatsBackend {
    const NAME: &'static str = "nats";
    const CRATE: &'static str = env!("CARGO_PKG_NAME");
    type Config = NatsConfig;

    /// Connect with the `[nats]` section; received messages go to `ctx.inbox`.
    /// In core mode `ack = "manual"` is refused before any network
    /// traffic: core NATS keeps no message that could be delivered again.
    /// In JetStream mode a server without JetStream is an error naming
    /// `nats.mode`.
    async fn connect(
        config: &Config,
        nats: NatsConfig,
        ctx: BackendContext,
    ) -> Result<NatsBackend> {
        if config.ack == AckMode::Manual && nats.mode == NatsMode::Core {
            return Err(Error::config(
                "ack",
                "\"manual\" is not available for core NATS (nats.mode = \"core\", the default): the server keeps no message, so none can be held until settled or delivered again; set nats.mode = \"jetstream\" (MSIGHT_NATS_MODE=jetstream), which keeps messages in a stream, or use ack = \"auto\"",
            ));
        }
        let jetstream_section = (nats.mode == NatsMode::JetStream).then(|| nats.clone());
        let opts = Options::new(config, nats, ctx.counters.clone()).await?;
        let client = opts
            .client_options
            .connect(opts.servers)
            .await
            .map_err(|e| connect_error(&opts.shown, e))?;
        let subject = Subject::from(client.new_inbox());
        let echoes = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| op_error("subscribe to the probe inbox", e))?;
        let probe = Probe {
            subject,
            echoes: tokio::sync::Mutex::new(echoes),
            next: std::sync::atomic::AtomicU64::new(0),
        };
        let info = client.server_info();
        tracing::debug!(
            server = %info.server_name,
            version = %info.version,
            max_payload = info.max_payload,
            "nats: connected"
        );
        let jetstream = match jetstream_section {
            Some(section) => match JetStream::connect(
                client.clone(),
                config,
                section,
                ctx.clone(),
                opts.shown.clone(),
            )
            .await
            {
                Ok(js) => Some(js),
                Err(e) => {
                    let _ = client.drain().await;
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(NatsBackend {
            client,
            shown: opts.shown,
            tls: opts.tls || info.tls_required,
            inbox: ctx.inbox,
            subscriptions: Mutex::new(HashMap::new()),
            subjects: TopicCache::new(SUBJECT_CACHE),
            probe,
            jetstream,
        })
    }
}

impl NatsBackend {
    /// The async-nats client, for what this library does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortOnDrop>> {
        lock(&self.subscriptions)
    }

    /// Wait until the server has processed everything sent before (see [`Probe`]).
    async fn round_trip(&self, what: &str) -> Result<()> {
        let mut echoes = self.probe.echoes.lock().await;
        let n = self
            .probe
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes();
        self.client
            .publish(self.probe.subject.clone(), Bytes::copy_from_slice(&n))
            .await
            .map_err(|e| op_error(what, e))?;
        self.client.flush().await.map_err(|e| op_error(what, e))?;
        // Echoes of earlier probes whose caller gave up are skipped.
        while let Some(m) = echoes.next().await {
            if m.payload[..] == n[..] {
                return Ok(());
            }
        }
        Err(Error::closed())
    }

    /// The subject for publishing to `topic`, checked the first time the
    /// topic is seen.
    fn subject(&self, topic: &str) -> Result<Subject> {
        self.subjects.get_or_make(topic, |t| {
            check_subject(t, true)?;
            Ok(Subject::from(t))
        })
    }

    /// Stop a forwarding task and wait until it is gone: dropping its
    /// subscriber queues the UNSUB before any later command.
    async fn stop(task: AbortOnDrop) {
        task.abort();
        let _ = task.detach().await;
    }
}

/// Checks a subject: dot-separated non-empty tokens; for publishing no
/// wildcard, for subscribing wildcards only as whole tokens and `>` last.
/// Runs once per topic when publishing (the subject cache keeps the result).
pub(crate) fn check_subject(topic: &str, publish: bool) -> Result<()> {
    let mut tokens = topic.split('.').peekable();
    while let Some(t) = tokens.next() {
        if t.is_empty() {
            return Err(Error::topic(
                topic,
                "NATS subjects are dot-separated tokens; a token is empty (leading, trailing or double dot)",
            ));
        }
        let wildcard = t == "*" || t == ">";
        if publish && t.contains(['*', '>']) {
            return Err(Error::topic(
                topic,
                "cannot publish to a subject with a wildcard (`*` or `>`)",
            ));
        }
        if !publish {
            if t == ">" && tokens.peek().is_some() {
                return Err(Error::topic(topic, "`>` must be the last token"));
            }
            if !wildcard && t.contains(['*', '>']) {
                return Err(Error::topic(
                    topic,
                    "wildcards `*` and `>` must be whole tokens",
                ));
            }
        }
    }
    Ok(())
}

/// Most topics whose NATS subject is kept for reuse; a node publishing to
/// more distinct topics than this allocates a subject per publish beyond it.
const SUBJECT_CACHE: usize = 4096;

#[async_trait]
impl PubSubBackend for NatsBackend {
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.groups = true;
        c.ordering = true;
        c.wildcards = Some("* >");
        c.max_payload = Some(self.client.server_info().max_payload);
        c.headers = true;
        match &self.jetstream {
            Some(js) => js.capabilities(c),
            None => c,
        }
    }

    fn broker_info(&self) -> BrokerInfo {
        let i = self.client.server_info();
        let mut info = BrokerInfo::default();
        info.server = Some(format!("nats-server {}", i.server_name));
        info.version = Some(i.version);
        info.max_payload = Some(i.max_payload);
        info.tls = self.tls;
        info.address = Some(self.shown.clone());
        info
    }

    fn check_subscribe_topic(&self, topic: &str) -> Result<()> {
        check_subject(topic, false)
    }

    async fn subscribe(&self, topic: &str, group: Option<&str>) -> Result<()> {
        if let Some(js) = &self.jetstream {
            return js.subscribe(topic, group).await;
        }
        let subject = topic.to_string();
        let mut sub = match group {
            Some(g) => self.client.queue_subscribe(subject, g.to_string()).await,
            None => self.client.subscribe(subject).await,
        }
        .map_err(|e| op_error(&format!("subscribe to {topic:?}"), e))?;
        let inbox = self.inbox.clone();
        let task = AbortOnDrop::new(tokio::spawn(async move {
            // What the client has received already goes into the buffer in
            // one step: one lock and one wake-up per batch, not per message.
            let mut batch = Vec::with_capacity(Inbox::BATCH);
            let message = |m: async_nats::Message| {
                let msg = Message::new(m.subject.into_string(), m.payload);
                match &m.headers {
                    Some(h) if !h.is_empty() => msg.with_headers(headers::from_nats(h)),
                    _ => msg,
                }
            };
            while let Some(m) = sub.next().await {
                let mut bytes = m.payload.len();
                batch.push(message(m));
                while batch.len() < Inbox::BATCH && bytes < Inbox::BATCH_BYTES {
                    match sub.next().now_or_never() {
                        Some(Some(m)) => {
                            bytes += m.payload.len();
                            batch.push(message(m));
                        }
                        _ => break,
                    }
                }
                inbox.deliver_batch(&mut batch).await;
            }
        }));
        let old = self.subs().insert(topic.to_string(), task);
        if let Some(old) = old {
            Self::stop(old).await;
        }
        // Once the server has processed SUB, a message published after this
        // returns (by anyone) is delivered.
        self.round_trip(&format!("subscribe to {topic:?}")).await
    }

    async fn unsubscribe(&self, topic: &str) -> Result<()> {
        if let Some(js) = &self.jetstream {
            return js.unsubscribe(topic).await;
        }
        let task = self.subs().remove(topic);
        if let Some(task) = task {
            Self::stop(task).await;
        }
        self.round_trip(&format!("unsubscribe from {topic:?}"))
            .await
    }

    fn try_publish(&self, topic: &str, payload: Bytes) -> TryPublish {
        if let Some(js) = &self.jetstream {
            return js.try_publish(topic, payload);
        }
        let subject = match self.subject(topic) {
            Ok(s) => s,
            Err(e) => return TryPublish::Done(Err(e)),
        };
        // async-nats has only an async publish; its first poll either
        // queues the message or finds the queue full, and then the future
        // keeps the payload, so a clone is kept here. A clone is a reference
        // count (a `Vec`-backed payload becomes shared by it, as async-nats
        // clones every payload it writes anyway).
        let fut = self.client.publish(subject, payload.clone());
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(fut.as_mut(), &mut cx) {
            // Not done: dropping the future sends nothing (the channel send
            // is cancel-safe) and the caller awaits `publish`.
            std::task::Poll::Pending => TryPublish::WouldWait(payload),
            std::task::Poll::Ready(r) => TryPublish::Done(r.map_err(|e| publish_error(topic, e))),
        }
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        if let Some(js) = &self.jetstream {
            return js.publish(topic, None, payload).await;
        }
        self.client
            .publish(self.subject(topic)?, payload)
            .await
            .map_err(|e| publish_error(topic, e))
    }

    /// NATS headers (`HPUB`); a message without headers takes
    /// [`PubSubBackend::try_publish`] / [`PubSubBackend::publish`] as before.
    async fn publish_with_headers(
        &self,
        topic: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<()> {
        if let Some(js) = &self.jetstream {
            return js.publish(topic, Some(headers), payload).await;
        }
        let map = headers::to_nats(&headers)?;
        self.client
            .publish_with_headers(self.subject(topic)?, map, payload)
            .await
            .map_err(|e| publish_error(topic, e))
    }

    /// JetStream mode: the topic's messages are purged from its stream and
    /// the consumers reading exactly it deleted (the stream stays, as other
    /// topics may share it). Core NATS keeps nothing.
    async fn delete_topic(&self, topic: &str) -> Result<()> {
        match &self.jetstream {
            Some(js) => js.delete_topic(topic).await,
            None => Ok(()),
        }
    }

    async fn flush(&self) -> Result<()> {
        if let Some(js) = &self.jetstream {
            return js.flush().await;
        }
        self.round_trip("flush").await
    }

    async fn close(&self) -> Result<()> {
        if let Some(js) = &self.jetstream {
            let closed = js.close().await;
            let _ = self.client.drain().await;
            return closed;
        }
        let tasks: Vec<AbortOnDrop> = self.subs().drain().map(|(_, t)| t).collect();
        for t in tasks {
            Self::stop(t).await;
        }
        let flushed = self.round_trip("close").await;
        // Closes the connection once what is queued has been written.
        let _ = self.client.drain().await;
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        for ok in ["a", "a.b.c", "sensors.cam-1", "A_b.c9"] {
            check_subject(ok, true).unwrap();
            check_subject(ok, false).unwrap();
        }
        for bad_pub in ["a.*", "a.>", "*", "a.b*"] {
            assert!(check_subject(bad_pub, true).is_err(), "{bad_pub}");
        }
        for ok_sub in ["a.*", "a.>", ">", "*.b"] {
            check_subject(ok_sub, false).unwrap();
        }
        for bad in ["a..b", ".a", "a.", "a.>.b", "a.b*"] {
            assert!(check_subject(bad, false).is_err(), "{bad}");
        }
        let e = check_subject("a.*", true).unwrap_err();
        assert_eq!(e.kind(), pubsub_core::ErrorKind::InvalidTopic);
        assert!(e.to_string().contains("wildcard"));
    }
}
