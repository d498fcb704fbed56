//! The bound on unsettled messages one handle holds in manual ack mode
//! (`max_in_flight` messages and `max_in_flight_bytes` of payload). A
//! backend takes a [`Permit`] for each message it delivers and stops
//! fetching while none is to be had; the permit goes back when the
//! application settles the message or drops it. Nothing is dropped to stay
//! within the bound: the broker keeps what is not fetched.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::backend::Counters;
use crate::sync::lock;

#[derive(Default)]
struct Held {
    messages: usize,
    bytes: usize,
}

/// The unsettled messages of one handle, and their bound.
pub struct InFlight {
    held: Mutex<Held>,
    closed: std::sync::atomic::AtomicBool,
    freed: Notify,
    max_messages: usize,
    max_bytes: usize,
    counters: Arc<Counters>,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (messages, bytes) = self.held();
        f.debug_struct("InFlight")
            .field("messages", &messages)
            .field("bytes", &bytes)
            .field("max_messages", &self.max_messages)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl InFlight {
    /// At most `max_messages` unsettled messages of at most `max_bytes`
    /// payload bytes together (one message alone may be larger).
    pub fn new(max_messages: usize, max_bytes: usize, counters: Arc<Counters>) -> Arc<InFlight> {
        Arc::new(InFlight {
            held: Mutex::new(Held::default()),
            closed: std::sync::atomic::AtomicBool::new(false),
            freed: Notify::new(),
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
            counters,
        })
    }

    /// A place for one more unsettled message of `bytes` payload bytes,
    /// waiting until one is free.
    pub async fn acquire(self: &Arc<Self>, bytes: usize) -> Permit {
        loop {
            let freed = self.freed.notified();
            if let Some(p) = self.try_acquire(bytes) {
                return p;
            }
            freed.await;
        }
    }

    /// Wait until at least one more message may be held (by count), for a
    /// backend that fetches several at a time ([`InFlight::room`]).
    pub async fn wait_for_room(&self) {
        loop {
            let freed = self.freed.notified();
            if self.room() > 0 {
                return;
            }
            freed.await;
        }
    }

    /// A place for one more unsettled message, if one is free now.
    pub fn try_acquire(self: &Arc<Self>, bytes: usize) -> Option<Permit> {
        let mut held = lock(&self.held);
        let fits = held.messages < self.max_messages
            && (held.messages == 0 || held.bytes + bytes <= self.max_bytes);
        if !fits {
            return None;
        }
        held.messages += 1;
        held.bytes += bytes;
        Some(Permit {
            flight: self.clone(),
            bytes,
        })
    }

    /// How many more messages may be fetched now (by count; the byte bound
    /// is checked per message).
    pub fn room(&self) -> usize {
        self.max_messages.saturating_sub(lock(&self.held).messages)
    }

    /// Unsettled messages and their payload bytes now.
    pub fn held(&self) -> (usize, usize) {
        let held = lock(&self.held);
        (held.messages, held.bytes)
    }

    /// The bound on messages.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// The handle was closed: settling its messages fails from now on.
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// One unsettled message's place; given back when dropped.
pub struct Permit {
    flight: Arc<InFlight>,
    bytes: usize,
}

impl Permit {
    /// The handle's counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.flight.counters
    }

    /// Whether the handle that received the message was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.flight
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut held = lock(&self.flight.held);
            held.messages -= 1;
            held.bytes -= self.bytes;
        }
        self.flight.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fetching_waits_at_the_bound_and_resumes_when_settled() {
        let f = InFlight::new(2, 1000, Arc::default());
        let a = f.acquire(10).await;
        let b = f.acquire(10).await;
        assert_eq!(f.held(), (2, 20));
        assert_eq!(f.room(), 0);
        assert!(f.try_acquire(1).is_none());
        let f2 = f.clone();
        let waiter = tokio::spawn(async move { f2.acquire(5).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no room: the third waits");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("room after a settle")
            .unwrap();
        assert_eq!(f.held(), (2, 15));
        drop((b, c));
        assert_eq!(f.held(), (0, 0));
    }

    #[test]
    fn bytes_bound_but_one_large_message_passes() {
        let f = InFlight::new(10, 100, Arc::default());
        let big = f.try_acquire(500).expect("alone, a large message fits");
        assert!(f.try_acquire(1).is_none(), "over the byte bound");
        drop(big);
        let a = f.try_acquire(60).unwrap();
        assert!(f.try_acquire(50).is_none());
        let _b = f.try_acquire(40).unwrap();
        drop(a);
    }
}
