//! The in-process backend `memory`: no broker, same semantics (fan-out to
//! plain subscribers, one member per group, close). Handles in one process
//! with the same `memory.namespace` see each other's messages.
//!
//! Delivery is immediate and ordered; nothing is kept for a subscriber that
//! is not there (at most once), like core NATS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendContext, BrokerInfo, Capabilities, PubSubBackend};
use crate::config::{Config, Section};
use crate::error::{Error, Result};
use crate::inbox::Inbox;
use crate::sync::{lock, read, write};
use crate::Message;

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

#[derive(Clone)]
struct Member {
    handle: u64,
    inbox: Inbox,
}

#[derive(Default)]
struct Group {
    members: Vec<Member>,
    next: AtomicUsize,
}

/// Who receives a topic. Replaced as a whole on every change (copy on
/// write), so publishing never holds a lock while it delivers.
#[derive(Default)]
struct Route {
    plain: Vec<Member>,
    groups: Vec<(String, Arc<Group>)>,
}

#[derive(Default)]
struct Broker {
    routes: RwLock<HashMap<String, Arc<Route>>>,
}

impl Broker {
    fn for_namespace(ns: &str) -> Arc<Broker> {
        static NAMESPACES: OnceLock<Mutex<HashMap<String, Weak<Broker>>>> = OnceLock::new();
        let mut map = lock(NAMESPACES.get_or_init(Default::default));
        if let Some(b) = map.get(ns).and_then(Weak::upgrade) {
            return b;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let b = Arc::new(Broker::default());
        map.insert(ns.to_string(), Arc::downgrade(&b));
        b
    }

    fn update(&self, topic: &str, f: impl FnOnce(&Route) -> Route) {
        let mut routes = write(&self.routes);
        let old = routes.get(topic).cloned().unwrap_or_default();
        let new = f(&old);
        if new.plain.is_empty() && new.groups.is_empty() {
            routes.remove(topic);
        } else {
            routes.insert(topic.to_string(), Arc::new(new));
        }
    }

    fn route(&self, topic: &str) -> Option<Arc<Route>> {
        read(&self.routes).get(topic).cloned()
    }
}

/// The in-process backend.
pub struct MemoryBackend {
    broker: Arc<Broker>,
    namespace: String,
    handle: u64,
    inbox: Inbox,
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
    async fn connect(_: &Config, m: MemoryConfig, ctx: BackendContext) -> Result<MemoryBackend> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ok(MemoryBackend {
            broker: Broker::for_namespace(&m.namespace),
            namespace: m.namespace,
            handle: NEXT.fetch_add(1, Ordering::Relaxed),
            inbox: ctx.inbox,
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
        let handle = self.handle;
        self.broker.update(topic, |old| Route {
            plain: old
                .plain
                .iter()
                .filter(|m| m.handle != handle)
                .cloned()
                .collect(),
            groups: old
                .groups
                .iter()
                .filter_map(|(name, g)| {
                    let members: Vec<Member> = g
                        .members
                        .iter()
                        .filter(|m| m.handle != handle)
                        .cloned()
                        .collect();
                    (!members.is_empty()).then(|| {
                        (
                            name.clone(),
                            Arc::new(Group {
                                members,
                                next: AtomicUsize::new(g.next.load(Ordering::Relaxed)),
                            }),
                        )
                    })
                })
                .collect(),
        });
    }
}

#[async_trait]
impl PubSubBackend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            groups: true,
            ordering: true,
            max_payload: Some(self.max_payload),
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
        };
        self.broker.update(topic, |old| {
            let mut plain = old.plain.clone();
            let mut groups = old.groups.clone();
            match group {
                None => plain.push(me),
                Some(g) => match groups.iter().position(|(n, _)| n == g) {
                    Some(i) => {
                        let old_group = &groups[i].1;
                        let mut members = old_group.members.clone();
                        members.push(me);
                        groups[i].1 = Arc::new(Group {
                            members,
                            next: AtomicUsize::new(old_group.next.load(Ordering::Relaxed)),
                        });
                    }
                    None => groups.push((
                        g.to_string(),
                        Arc::new(Group {
                            members: vec![me],
                            next: AtomicUsize::new(0),
                        }),
                    )),
                },
            }
            Route { plain, groups }
        });
        lock(&self.topics).push(topic.to_string());
        Ok(())
    }

    async fn unsubscribe(&self, topic: &str) -> Result<()> {
        self.remove(topic);
        lock(&self.topics).retain(|t| t != topic);
        Ok(())
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        let Some(route) = self.broker.route(topic) else {
            return Ok(());
        };
        for m in &route.plain {
            m.inbox.deliver(Message::new(topic, payload.clone())).await;
        }
        for (_, g) in &route.groups {
            let i = g.next.fetch_add(1, Ordering::Relaxed) % g.members.len();
            g.members[i]
                .inbox
                .deliver(Message::new(topic, payload.clone()))
                .await;
        }
        Ok(())
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
