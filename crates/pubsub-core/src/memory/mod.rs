//! The in-process backend `memory`: no broker, same semantics (fan-out to
//! plain subscribers, one member per group, close). Handles in one process
//! with the same `memory.namespace` see each other's messages.
//!
//! Delivery is immediate and ordered; nothing is kept for a subscriber that
//! is not there (at most once), like core NATS. Headers and message ids
//! are carried, and manual ack mode is emulated in full (see `acks.rs`):
//! redelivery after `ack_wait` or a nak's delay, attempts, `max_deliver`,
//! the dead-letter topic, groups.

mod acks;
mod broker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{
    Backend, BackendContext, BrokerInfo, Capabilities, PubSubBackend, SettleSupport, Support,
};
use crate::config::{AckMode, Config, Section};
use crate::error::{Error, Result};
use crate::inbox::Inbox;
use crate::message::Headers;
use crate::sync::lock;
use acks::Manual;
use broker::{Broker, Member};

/// The `[memory]` section: settings of the in-process backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Handles with the same namespace in one process see each other's messages.
    pub namespace: String,
    /// Largest payload accepted (default 8 MiB).
    pub max_payload: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            namespace: "default".to_string(),
            max_payload: 8 * 1024 * 1024,
        }
    }
}

impl Section for MemoryConfig {
    const NAME: &'static str = "memory";

    fn validate(&self) -> Result<()> {
        if self.namespace.is_empty() {
            return Err(Error::config("memory.namespace", "must not be empty"));
        }
        if self.max_payload == 0 {
            return Err(Error::config("memory.max_payload", "must be at least 1"));
        }
        Ok(())
    }
}

/// The in-process backend.
pub struct MemoryBackend {
    broker: Arc<Broker>,
    namespace: String,
    handle: u64,
    inbox: Inbox,
    /// Set in manual ack mode.
    manual: Option<Arc<Manual>>,
    max_payload: usize,
    topics: Mutex<Vec<String>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("namespace", &self.namespace)
            .field("handle", &self.handle)
            .finish()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    const NAME: &'static str = "memory";
    const CRATE: &'static str = env!("CARGO_PKG_NAME");
    type Config = MemoryConfig;

    /// Join the namespace `memory.namespace`.
    async fn connect(
        config: &Config,
        m: MemoryConfig,
        ctx: BackendContext,
    ) -> Result<MemoryBackend> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let manual = (config.ack == AckMode::Manual).then(|| {
            Arc::new(Manual::new(
                config,
                ctx.in_flight.clone(),
                ctx.counters.clone(),
            ))
        });
        Ok(MemoryBackend {
            broker: Broker::for_namespace(&m.namespace),
            namespace: m.namespace,
            handle: NEXT.fetch_add(1, Ordering::Relaxed),
            inbox: ctx.inbox,
            manual,
            max_payload: m.max_payload,
            topics: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }
}

impl MemoryBackend {
    /// Leave every topic this handle subscribed to.
    fn leave_all(&self) {
        let topics = std::mem::take(&mut *lock(&self.topics));
        for t in topics {
            self.remove(&t);
        }
    }

    fn remove(&self, topic: &str) {
        self.broker.remove(topic, self.handle);
    }

    async fn publish_headers(&self, topic: &str, headers: Headers, payload: Bytes) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        self.broker.publish(topic, payload, headers).await;
        Ok(())
    }
}

#[async_trait]
impl PubSubBackend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            groups: true,
            ordering: true,
            max_payload: Some(self.max_payload),
            headers: true,
            message_ids: true,
            settle: SettleSupport {
                ack: Support::Emulated,
                nak: Support::Emulated,
                in_progress: Support::Emulated,
                term: Support::Emulated,
                redeliver_after_ack_wait: Support::Emulated,
                dead_letter: Support::Emulated,
            },
            ..Capabilities::default()
        }
    }

    fn broker_info(&self) -> BrokerInfo {
        BrokerInfo {
            server: Some(format!("in-process (namespace {:?})", self.namespace)),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            max_payload: Some(self.max_payload),
            ..BrokerInfo::default()
        }
    }

    async fn subscribe(&self, topic: &str, group: Option<&str>) -> Result<()> {
        let me = Member {
            handle: self.handle,
            inbox: self.inbox.clone(),
            manual: self.manual.clone(),
        };
        self.broker.add(topic, group, me);
        lock(&self.topics).push(topic.to_string());
        Ok(())
    }

    async fn unsubscribe(&self, topic: &str) -> Result<()> {
        self.remove(topic);
        lock(&self.topics).retain(|t| t != topic);
        Ok(())
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        self.publish_headers(topic, Headers::new(), payload).await
    }

    async fn publish_with_headers(
        &self,
        topic: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<()> {
        self.publish_headers(topic, headers, payload).await
    }

    async fn flush(&self) -> Result<()> {
        // Delivery happens inside publish; nothing is in flight.
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.leave_all();
        Ok(())
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        self.leave_all();
    }
}
