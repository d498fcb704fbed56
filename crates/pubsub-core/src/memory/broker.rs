//! The in-process broker of one namespace: who receives each topic, and
//! the routing of a published message to plain subscribers and to one
//! member of each group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use bytes::Bytes;

use super::acks::{Acks, Manual, Target};
use crate::inbox::Inbox;
use crate::message::{Headers, Message};
use crate::sync::{lock, read, write};

/// A subscription of one handle.
#[derive(Clone)]
pub(super) struct Member {
    pub handle: u64,
    pub inbox: Inbox,
    /// Set in manual ack mode.
    pub manual: Option<Arc<Manual>>,
}

#[derive(Default)]
pub(super) struct Group {
    pub members: Vec<Member>,
    next: AtomicUsize,
}

impl Group {
    fn with(members: Vec<Member>, next: usize) -> Arc<Group> {
        Arc::new(Group {
            members,
            next: AtomicUsize::new(next),
        })
    }

    /// The members in round-robin order from the next one.
    pub fn turn(&self) -> impl Iterator<Item = &Member> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(move |i| &self.members[(start + i) % n])
    }
}

/// Who receives a topic. Replaced as a whole on every change (copy on
/// write), so publishing never holds a lock while it delivers.
#[derive(Default)]
pub(super) struct Route {
    pub plain: Vec<Member>,
    pub groups: Vec<(String, Arc<Group>)>,
}

impl Route {
    pub fn group(&self, name: &str) -> Option<&Arc<Group>> {
        self.groups.iter().find(|(n, _)| n == name).map(|(_, g)| g)
    }
}

/// A published message, as the broker keeps it for (re)delivery.
#[derive(Clone)]
pub(super) struct Published {
    pub topic: String,
    pub payload: Bytes,
    pub headers: Headers,
    pub id: u64,
}

impl Published {
    pub fn message(&self, attempt: u32) -> Message {
        Message::new(self.topic.as_str(), self.payload.clone())
            .with_headers(self.headers.clone())
            .with_id(self.id.to_string())
            .with_attempt(attempt)
    }
}

#[derive(Default)]
pub(super) struct Broker {
    routes: RwLock<HashMap<String, Arc<Route>>>,
    next_id: AtomicU64,
    /// Deliveries of manual-ack subscribers waiting to be settled.
    pub acks: Acks,
}

impl Broker {
    pub fn for_namespace(ns: &str) -> Arc<Broker> {
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

    pub fn route(&self, topic: &str) -> Option<Arc<Route>> {
        read(&self.routes).get(topic).cloned()
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

    pub fn add(&self, topic: &str, group: Option<&str>, me: Member) {
        self.update(topic, |old| {
            let mut plain = old.plain.clone();
            let mut groups = old.groups.clone();
            match group {
                None => plain.push(me),
                Some(g) => match groups.iter().position(|(n, _)| n == g) {
                    Some(i) => {
                        let old_group = &groups[i].1;
                        let mut members = old_group.members.clone();
                        members.push(me);
                        let next = old_group.next.load(Ordering::Relaxed);
                        groups[i].1 = Group::with(members, next);
                    }
                    None => groups.push((g.to_string(), Group::with(vec![me], 0))),
                },
            }
            Route { plain, groups }
        });
    }

    /// Take `handle` off `topic`. Its unsettled deliveries of a plain
    /// subscription are dropped (no one else would get them); those of a
    /// group go to another member after `ack_wait`.
    pub fn remove(&self, topic: &str, handle: u64) {
        let others = |members: &[Member]| -> Vec<Member> {
            members
                .iter()
                .filter(|m| m.handle != handle)
                .cloned()
                .collect()
        };
        self.update(topic, |old| Route {
            plain: others(&old.plain),
            groups: old
                .groups
                .iter()
                .filter_map(|(name, g)| {
                    let members = others(&g.members);
                    let next = g.next.load(Ordering::Relaxed);
                    (!members.is_empty()).then(|| (name.clone(), Group::with(members, next)))
                })
                .collect(),
        });
        self.acks
            .forget(|t| *t == Target::Plain(topic.to_string(), handle));
    }

    /// Route a published message: to every plain subscriber and to one
    /// member of each group. A manual-ack subscriber at its `max_in_flight`
    /// makes the publisher wait, as a full buffer does under the `block`
    /// policy.
    pub async fn publish(self: &Arc<Self>, topic: &str, payload: Bytes, headers: Headers) {
        let Some(route) = self.route(topic) else {
            return;
        };
        let published = Published {
            topic: topic.to_string(),
            payload,
            headers,
            id: self.next_id(),
        };
        for m in &route.plain {
            let target = Target::Plain(topic.to_string(), m.handle);
            self.deliver(m, target, &published).await;
        }
        for (name, g) in &route.groups {
            if let Some(m) = g.turn().next() {
                let target = Target::Group(topic.to_string(), name.clone());
                self.deliver(m, target, &published).await;
            }
        }
    }

    async fn deliver(self: &Arc<Self>, m: &Member, target: Target, p: &Published) {
        match &m.manual {
            None => m.inbox.deliver(p.message(1)).await,
            Some(manual) => {
                let permit = manual.in_flight.acquire(p.payload.len()).await;
                let msg = self.acks.track(self, manual, target, p.clone(), permit);
                m.inbox.deliver(msg).await;
            }
        }
    }

    /// A new message id of this namespace.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Deliver without waiting (from the acks thread): to `target`'s member
    /// with room, as delivery number `attempt`, tracked under `token`.
    pub fn try_deliver(
        self: &Arc<Self>,
        target: &Target,
        p: &Published,
        attempt: u32,
        token: Option<u64>,
    ) -> Delivered {
        let Some(route) = self.route(target.topic()) else {
            return Delivered::NoOne;
        };
        let members: Vec<&Member> = match target {
            Target::Plain(_, handle) => {
                route.plain.iter().filter(|m| m.handle == *handle).collect()
            }
            Target::Group(_, name) => match route.group(name) {
                Some(g) => g.turn().collect(),
                None => Vec::new(),
            },
        };
        if members.is_empty() {
            return Delivered::NoOne;
        }
        for m in members {
            let Some(manual) = &m.manual else {
                futures::executor::block_on(m.inbox.deliver(p.message(attempt)));
                return Delivered::Yes;
            };
            if let Some(permit) = manual.in_flight.try_acquire(p.payload.len()) {
                if attempt > 1 {
                    manual.counters.add_redelivered(1);
                }
                let msg = self.acks.track_attempt(
                    self,
                    manual,
                    target.clone(),
                    p.clone(),
                    permit,
                    attempt,
                    token,
                );
                // The member holds a permit for it, so its buffer has room.
                futures::executor::block_on(m.inbox.deliver(msg));
                return Delivered::Yes;
            }
        }
        Delivered::NoRoom
    }
}

/// What [`Broker::try_deliver`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Delivered {
    Yes,
    /// The target has members, none with room now.
    NoRoom,
    /// No one subscribes as the target any more.
    NoOne,
}
