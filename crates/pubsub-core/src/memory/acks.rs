//! Manual ack mode of the memory backend, emulated in-process as a broker
//! does it: every delivery to a manual-ack subscriber waits in a table
//! until it is settled; one not settled within `ack_wait`, or nak'ed, is
//! delivered again (to the same subscriber, or to any member of its group)
//! with its attempt counted; past `max_deliver` attempts, or on `term`, it
//! goes to the dead-letter topic with headers saying why, or is discarded
//! and counted. A thread per namespace keeps the time; it never waits for
//! a subscriber, so that no message is held up behind another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::broker::{Broker, Delivered, Published};
use crate::backend::Counters;
use crate::error::{Error, Result};
use crate::flight::{InFlight, Permit};
use crate::message::{dead_letter, Message, Settle};
use crate::sync::lock;

/// Where a delivery goes again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// The plain subscription of `topic` by handle `.1`.
    Plain(String, u64),
    /// Any member of group `.1` of `topic`.
    Group(String, String),
}

impl Target {
    pub fn topic(&self) -> &str {
        match self {
            Target::Plain(t, _) | Target::Group(t, _) => t,
        }
    }
}

/// The manual-ack settings of one handle.
pub(super) struct Manual {
    pub in_flight: Arc<InFlight>,
    pub counters: Arc<Counters>,
    pub ack_wait: Duration,
    pub max_deliver: u32,
    pub dead_letter_topic: Option<String>,
    warned_discard: AtomicBool,
}

impl Manual {
    pub fn new(config: &crate::Config, in_flight: Arc<InFlight>, counters: Arc<Counters>) -> Self {
        Manual {
            in_flight,
            counters,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
            dead_letter_topic: config.dead_letter_topic.clone(),
            warned_discard: AtomicBool::new(false),
        }
    }
}

/// Why an entry is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Not settled in time, or nak'ed: deliver again.
    Redeliver,
    /// `term`: to the dead letter.
    Term,
}

struct Entry {
    published: Published,
    target: Target,
    /// The attempt of the delivery out now (0: not delivered yet).
    attempt: u32,
    due: Instant,
    why: Due,
    /// Settings of the handle that has it.
    manual: Arc<Manual>,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    next_token: u64,
    thread: bool,
}

/// The deliveries waiting to be settled, in one namespace.
#[derive(Default)]
pub(super) struct Acks {
    state: Mutex<State>,
    wake: Condvar,
}

impl Acks {
    /// A first delivery to a manual-ack subscriber, tracked until settled.
    pub fn track(
        &self,
        broker: &Arc<Broker>,
        manual: &Arc<Manual>,
        target: Target,
        published: Published,
        permit: Permit,
    ) -> Message {
        self.track_attempt(broker, manual, target, published, permit, 1, None)
    }

    /// Delivery number `attempt`, tracked under `token` (a new one if `None`).
    #[allow(clippy::too_many_arguments)]
    pub fn track_attempt(
        &self,
        broker: &Arc<Broker>,
        manual: &Arc<Manual>,
        target: Target,
        published: Published,
        permit: Permit,
        attempt: u32,
        token: Option<u64>,
    ) -> Message {
        let msg = published.message(attempt);
        let token = self.insert(
            broker,
            token,
            Entry {
                published,
                target,
                attempt,
                due: Instant::now() + manual.ack_wait,
                why: Due::Redeliver,
                manual: manual.clone(),
            },
        );
        let settle = MemorySettle {
            broker: Arc::downgrade(broker),
            token,
            attempt,
        };
        msg.with_settle(Box::new(settle), permit)
    }

    fn insert(&self, broker: &Arc<Broker>, token: Option<u64>, entry: Entry) -> u64 {
        let mut st = lock(&self.state);
        let token = token.unwrap_or_else(|| {
            st.next_token += 1;
            st.next_token
        });
        st.entries.insert(token, entry);
        if !st.thread {
            st.thread = true;
            let weak = Arc::downgrade(broker);
            std::thread::Builder::new()
                .name("pubsub-memory-acks".into())
                .spawn(move || run(weak))
                .expect("spawn the memory backend's ack thread");
        }
        drop(st);
        self.wake.notify_all();
        token
    }

    /// Drop the entries whose target `gone` says is gone.
    pub fn forget(&self, gone: impl Fn(&Target) -> bool) {
        lock(&self.state).entries.retain(|_, e| !gone(&e.target));
    }

    /// Change entry `token` if its delivery `attempt` is the one out now
    /// (a settle of an older delivery does nothing).
    fn update(&self, token: u64, attempt: u32, f: impl FnOnce(&mut Entry) -> bool) {
        let mut st = lock(&self.state);
        let remove = match st.entries.get_mut(&token) {
            Some(e) if e.attempt == attempt => f(e),
            _ => false,
        };
        if remove {
            st.entries.remove(&token);
        }
        drop(st);
        self.wake.notify_all();
    }
}

struct MemorySettle {
    broker: Weak<Broker>,
    token: u64,
    attempt: u32,
}

impl MemorySettle {
    fn update(&self, f: impl FnOnce(&mut Entry) -> bool) -> Result<()> {
        let broker = self.broker.upgrade().ok_or_else(Error::closed)?;
        broker.acks.update(self.token, self.attempt, f);
        Ok(())
    }
}

impl Settle for MemorySettle {
    fn ack(&self) -> Result<()> {
        self.update(|_| true)
    }

    fn nak(&self, delay: Duration) -> Result<()> {
        self.update(|e| {
            // The last attempt goes to the dead letter at once.
            let delay = if e.attempt >= e.manual.max_deliver {
                Duration::ZERO
            } else {
                delay
            };
            e.due = Instant::now() + delay;
            false
        })
    }

    fn in_progress(&self) -> Result<()> {
        self.update(|e| {
            e.due = Instant::now() + e.manual.ack_wait;
            false
        })
    }

    fn term(&self) -> Result<()> {
        self.update(|e| {
            e.due = Instant::now();
            e.why = Due::Term;
            false
        })
    }
}

/// The clock of one namespace: hands out what is due until the broker goes.
fn run(broker: Weak<Broker>) {
    loop {
        let Some(b) = broker.upgrade() else { return };
        let next = {
            let mut st = lock(&b.acks.state);
            let now = Instant::now();
            match st.entries.iter().min_by_key(|(_, e)| e.due) {
                Some((&token, e)) if e.due <= now => st.entries.remove(&token).map(|e| (token, e)),
                soonest => {
                    let wait = soonest
                        .map(|(_, e)| e.due - now)
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1));
                    drop(b.acks.wake.wait_timeout(st, wait));
                    None
                }
            }
        };
        if let Some((token, entry)) = next {
            due(&b, token, entry);
        }
    }
}

/// Act on an entry whose time has come.
fn due(broker: &Arc<Broker>, token: u64, mut e: Entry) {
    if e.why == Due::Term {
        return dead_letter(broker, &e, "term");
    }
    if e.attempt >= e.manual.max_deliver {
        return dead_letter(broker, &e, "max_deliver");
    }
    let attempt = e.attempt + 1;
    match broker.try_deliver(&e.target, &e.published, attempt, Some(token)) {
        Delivered::Yes => {}
        Delivered::NoRoom => {
            // Its subscribers are at max_in_flight: look again soon.
            e.due = Instant::now() + Duration::from_millis(10);
            broker.acks.insert(broker, Some(token), e);
        }
        Delivered::NoOne => {
            // A group may get members again; a plain subscriber is gone.
            if let Target::Group(..) = e.target {
                e.due = Instant::now() + e.manual.ack_wait;
                broker.acks.insert(broker, Some(token), e);
            }
        }
    }
}

/// Past `max_deliver`, or `term`: to the dead-letter topic, or discarded.
fn dead_letter(broker: &Arc<Broker>, e: &Entry, reason: &str) {
    let counters = &e.manual.counters;
    let Some(dlq) = &e.manual.dead_letter_topic else {
        counters.add_discarded(1);
        if !e.manual.warned_discard.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                topic = %e.published.topic,
                reason,
                "memory: a message was given up ({reason}) and discarded; set dead_letter_topic to keep such messages (counted in stats().discarded; logged once per handle)"
            );
        }
        return;
    };
    let mut headers = e.published.headers.clone();
    headers.insert(dead_letter::REASON, reason);
    headers.insert(dead_letter::TOPIC, e.published.topic.as_str());
    headers.insert(dead_letter::ATTEMPTS, e.attempt.to_string());
    headers.insert(dead_letter::ID, e.published.id.to_string());
    let letter = Published {
        topic: dlq.clone(),
        payload: e.published.payload.clone(),
        headers,
        id: broker.next_id(),
    };
    counters.add_dead_lettered(1);
    let Some(route) = broker.route(dlq) else {
        return;
    };
    let targets = route
        .plain
        .iter()
        .map(|m| (Target::Plain(dlq.clone(), m.handle), Some(m)))
        .chain(
            route
                .groups
                .iter()
                .map(|(g, group)| (Target::Group(dlq.clone(), g.clone()), group.members.first())),
        );
    for (target, member) in targets {
        if broker.try_deliver(&target, &letter, 1, None) == Delivered::NoRoom {
            // Held for a manual-ack subscriber at its bound.
            if let Some(manual) = member.and_then(|m| m.manual.clone()) {
                let entry = Entry {
                    published: letter.clone(),
                    target,
                    attempt: 0,
                    due: Instant::now() + Duration::from_millis(10),
                    why: Due::Redeliver,
                    manual,
                };
                broker.acks.insert(broker, None, entry);
            }
        }
    }
}
